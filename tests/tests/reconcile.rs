//! End-to-end tests of the reconcile core (`apply`, `plan`, `status`, `rollback`): the real dockop binary
//! against the real engine, the test bed's registries and images. Each test has its own names, ports and
//! registry repository, so they run in parallel; `TestEnv` removes what they made, also on failure.

use std::time::Duration;

use dockop_e2e::images::*;
use dockop_e2e::*;

/// A Container spec for the busybox web images.
fn web_spec(env: &TestEnv, name: &str, image: &str, host_port: u16, extra: &str) -> String {
    format!(
        "apiVersion: dockop.dev/v1alpha1
kind: Container
metadata:
  name: {name}
  labels: {labels}
spec:
  image: {image}
  env:
    - {{name: TZ, value: UTC}}
  ports:
    - {{containerPort: {WEB_PORT}, hostPort: {host_port}}}
  volumes:
    - {{name: {name}-data, mountPath: /data}}
  health:
    path: {HEALTH_PATH}
    port: {WEB_PORT}
    intervalSeconds: 1
    failureThreshold: 3
    startupDeadlineSeconds: 20
  init: true
  stopTimeoutSeconds: 5
{extra}",
        labels = env.labels_yaml()
    )
}

fn inspect(container: &str, format: &str) -> String {
    docker_ok(["inspect", "-f", format, container])
        .trim()
        .to_owned()
}

fn id_and_started(container: &str) -> String {
    inspect(container, "{{.Id}} {{.State.StartedAt}}")
}

/// Deploys `web:v1` through a per-test tag and returns (spec path, name, host port, tag reference).
fn deploy_v1(env: &TestEnv, extra: &str) -> (std::path::PathBuf, String, u16, String) {
    let (tag, _) = env.push_as(WEB_V1, "live");
    let name = env.name("web");
    let port = env.free_port();
    let file = env.write("web.yaml", &web_spec(env, &name, &tag, port, extra));
    env.dockop()
        .run(["apply", "-f", file.to_str().expect("utf8")])
        .assert_success();
    assert_eq!(served_version(port).as_deref(), Some("1"));
    (file, name, port, tag)
}

fn apply(env: &TestEnv, file: &std::path::Path) -> RunOutput {
    env.dockop()
        .run(["apply", "-f", file.to_str().expect("utf8")])
}

#[test]
fn apply_creates_container_with_ports_env_volumes_labels() {
    let env = TestEnv::new("create");
    let (_, name, port, _) = deploy_v1(&env, "");
    let labels = inspect(&name, "{{json .Config.Labels}}");
    for l in [
        "dockop.dev/name",
        "dockop.dev/spec-hash",
        "dockop.dev/digest",
        "dockop.dev/role",
        "dockop-e2e",
    ] {
        assert!(labels.contains(l), "label {l} missing: {labels}");
    }
    assert!(inspect(&name, "{{json .Config.Env}}").contains("TZ=UTC"));
    assert!(
        inspect(&name, "{{json .HostConfig.PortBindings}}")
            .contains(&format!("\"HostPort\":\"{port}\""))
    );
    assert_eq!(inspect(&name, "{{.HostConfig.Init}}"), "true");
    let mounts = inspect(
        &name,
        "{{range .Mounts}}{{.Type}}:{{.Name}}:{{.Destination}} {{end}}",
    );
    assert!(
        mounts.contains(&format!("volume:{name}-data:/data")),
        "{mounts}"
    );
    // The named volume carries dockop's and the object's labels.
    let vlabels = docker_ok([
        "volume",
        "inspect",
        "-f",
        "{{json .Labels}}",
        &format!("{name}-data"),
    ]);
    assert!(
        vlabels.contains("dockop.dev/name") && vlabels.contains(env.id()),
        "{vlabels}"
    );
    let st = env.status(&name);
    assert!(condition(&st, "Ready").0, "{st:#}");
    assert_eq!(st["appVersion"], "1");
}

#[test]
fn apply_again_changes_nothing() {
    let env = TestEnv::new("noop");
    let (file, name, _, _) = deploy_v1(&env, "");
    let before = id_and_started(&name);
    let out = apply(&env, &file);
    out.assert_success();
    assert!(out.stdout.contains("unchanged"), "{out}");
    assert_eq!(
        id_and_started(&name),
        before,
        "no mutation on a converged object"
    );
    env.dockop()
        .run(["plan", "-f", file.to_str().expect("utf8")])
        .assert_code(0);
}

#[test]
fn new_digest_on_followed_tag_recreates_and_keeps_volume_data() {
    let env = TestEnv::new("digest");
    let (file, name, port, _) = deploy_v1(&env, "");
    docker_ok(["exec", &name, "sh", "-c", "echo precious > /data/file"]);
    env.push_as(WEB_V2, "live");
    let plan = env
        .dockop()
        .run(["plan", "-f", file.to_str().expect("utf8")]);
    plan.assert_code(2);
    assert!(plan.stdout.contains("digest"), "{plan}");
    apply(&env, &file).assert_success();
    assert_eq!(served_version(port).as_deref(), Some("2"));
    assert_eq!(
        docker_ok(["exec", &name, "cat", "/data/file"]).trim(),
        "precious"
    );
    assert_eq!(
        env.containers(),
        vec![name.clone()],
        "previous and preflight containers are gone"
    );
    let st = env.status(&name);
    assert_eq!(st["appVersion"], "2");
    assert_eq!(st["history"][0]["result"], "succeeded");
}

#[test]
fn pinned_digest_goes_back() {
    let env = TestEnv::new("pin");
    let (tag, d1) = env.push_as(WEB_V1, "live");
    env.push_as(WEB_V2, "live");
    let name = env.name("web");
    let port = env.free_port();
    let file = env.write("web.yaml", &web_spec(&env, &name, &tag, port, ""));
    apply(&env, &file).assert_success();
    assert_eq!(served_version(port).as_deref(), Some("2"));
    let pinned = web_spec(&env, &name, &tag, port, "").replace(
        &format!("  image: {tag}\n"),
        &format!("  image: {tag}\n  digest: {d1}\n"),
    );
    env.write("web.yaml", &pinned);
    apply(&env, &file).assert_success();
    assert_eq!(served_version(port).as_deref(), Some("1"));
    assert_eq!(
        inspect(&name, "{{index .Config.Labels \"dockop.dev/digest\"}}"),
        d1
    );
}

#[test]
fn env_change_is_planned_then_applied() {
    let env = TestEnv::new("env");
    let (file, name, _, tag) = deploy_v1(&env, "");
    let port = inspect(
        &name,
        "{{(index (index .HostConfig.PortBindings \"8080/tcp\") 0).HostPort}}",
    );
    let edited = web_spec(&env, &name, &tag, port.parse().expect("port"), "")
        .replace("value: UTC", "value: Europe/Paris");
    env.write("web.yaml", &edited);
    let plan = env
        .dockop()
        .run(["plan", "-f", file.to_str().expect("utf8")]);
    plan.assert_code(2);
    assert!(plan.stdout.contains("spec changed"), "{plan}");
    apply(&env, &file).assert_success();
    assert!(inspect(&name, "{{json .Config.Env}}").contains("TZ=Europe/Paris"));
    env.dockop()
        .run(["plan", "-f", file.to_str().expect("utf8")])
        .assert_code(0);
}

#[test]
fn removed_or_stopped_by_hand_is_recreated_or_started() {
    let env = TestEnv::new("byhand");
    let (file, name, port, _) = deploy_v1(&env, "");
    docker_ok(["stop", &name]);
    let id = inspect(&name, "{{.Id}}");
    apply(&env, &file).assert_success();
    assert_eq!(
        inspect(&name, "{{.Id}}"),
        id,
        "a stopped container is started, not replaced"
    );
    assert_eq!(inspect(&name, "{{.State.Running}}"), "true");
    docker_ok(["rm", "-f", &name]);
    apply(&env, &file).assert_success();
    assert_ne!(inspect(&name, "{{.Id}}"), id);
    assert_eq!(served_version(port).as_deref(), Some("1"));
}

/// Bad update with preflight off: rolled back to the same container, serving, Degraded, volume intact, not
/// retried; then a newer good digest is taken.
fn bad_update_rolls_back(test: &str, bad_image: &str, reason_contains: &str) {
    let env = TestEnv::new(test);
    let (file, name, port, _) = deploy_v1(&env, "  update: {preflight: false}\n");
    docker_ok(["exec", &name, "sh", "-c", "echo precious > /data/file"]);
    let id = inspect(&name, "{{.Id}}");
    env.push_as(bad_image, "live");
    let out = apply(&env, &file);
    out.assert_code(1);
    assert!(out.stdout.contains("ROLLED BACK"), "{out}");
    assert_eq!(
        inspect(&name, "{{.Id}}"),
        id,
        "the same old container serves again"
    );
    assert_eq!(served_version(port).as_deref(), Some("1"));
    assert_eq!(
        docker_ok(["exec", &name, "cat", "/data/file"]).trim(),
        "precious"
    );
    assert_eq!(env.containers(), vec![name.clone()]);
    let st = env.status(&name);
    let (degraded, reason, message) = condition(&st, "Degraded");
    assert!(degraded && reason == "RolledBack", "{st:#}");
    assert!(message.contains(reason_contains), "{message}");
    assert!(
        condition(&st, "Ready").0,
        "the old version is ready: {st:#}"
    );
    // Not retried.
    let again = apply(&env, &file);
    again.assert_code(1);
    assert!(again.stdout.contains("failed before"), "{again}");
    let (_, reason1, msg1) = condition(&env.status(&name), "Degraded");
    apply(&env, &file).assert_code(1);
    let (_, reason2, msg2) = condition(&env.status(&name), "Degraded");
    assert_eq!(
        (reason1, msg1),
        (reason2, msg2),
        "the Degraded condition is stable across reconciles"
    );
    assert_eq!(id_and_started(&name).split(' ').next(), Some(id.as_str()));
    // A newer good digest is taken.
    env.push_as(WEB_V3, "live");
    apply(&env, &file).assert_success();
    assert_eq!(served_version(port).as_deref(), Some("3"));
    let (degraded, _, _) = condition(&env.status(&name), "Degraded");
    assert!(!degraded);
}

#[test]
fn bad_update_unhealthy_rolls_back() {
    bad_update_rolls_back("bad-unhealthy", WEB_UNHEALTHY, "HTTP 500");
}

#[test]
fn bad_update_crash_rolls_back() {
    bad_update_rolls_back("bad-crash", WEB_CRASH, "with code 3");
}

#[test]
fn bad_update_tarpit_rolls_back() {
    bad_update_rolls_back(
        "bad-tarpit",
        WEB_TARPIT,
        "no answer within the probe timeout",
    );
}

#[test]
fn slow_start_within_deadline_succeeds_and_past_it_rolls_back() {
    let env = TestEnv::new("slow");
    let (file, name, port, tag) = deploy_v1(&env, "  update: {preflight: false}\n");
    env.push_as(WEB_SLOW, "live");
    apply(&env, &file).assert_success();
    assert_eq!(served_version(port).as_deref(), Some("slow"));
    // Back to v1, then slow again with a 2 s deadline.
    env.push_as(WEB_V1, "live");
    apply(&env, &file).assert_success();
    let short = web_spec(&env, &name, &tag, port, "  update: {preflight: false}\n")
        .replace("startupDeadlineSeconds: 20", "startupDeadlineSeconds: 2");
    env.write("web.yaml", &short);
    apply(&env, &file).assert_success(); // spec edit (deadline is not part of the container) is a no-op
    env.push_as(WEB_SLOW, "live");
    let out = apply(&env, &file);
    out.assert_code(1);
    assert!(out.stdout.contains("startupDeadlineSeconds=2"), "{out}");
    assert_eq!(served_version(port).as_deref(), Some("1"));
}

#[test]
fn rollback_command_returns_to_previous_digest_and_holds_it() {
    let env = TestEnv::new("rollback");
    let (file, name, port, _) = deploy_v1(&env, "");
    env.push_as(WEB_V2, "live");
    apply(&env, &file).assert_success();
    assert_eq!(served_version(port).as_deref(), Some("2"));
    env.dockop().run(["rollback", &name]).assert_success();
    assert_eq!(served_version(port).as_deref(), Some("1"));
    // Held: the registry still says v2, but apply keeps v1.
    apply(&env, &file).assert_success();
    assert_eq!(served_version(port).as_deref(), Some("1"));
    // The registry moves: the hold ends.
    env.push_as(WEB_V3, "live");
    apply(&env, &file).assert_success();
    assert_eq!(served_version(port).as_deref(), Some("3"));
}

#[test]
fn missing_image_leaves_running_container_untouched() {
    let env = TestEnv::new("missing");
    let (_, name, port, tag) = deploy_v1(&env, "");
    let id = id_and_started(&name);
    let missing = tag.replace(":live", ":does-not-exist");
    let file = env.write("web.yaml", &web_spec(&env, &name, &missing, port, ""));
    let out = apply(&env, &file);
    out.assert_code(1);
    assert!(out.stdout.contains("not in the registry"), "{out}");
    assert_eq!(id_and_started(&name), id);
    assert_eq!(served_version(port).as_deref(), Some("1"));
    let (degraded, reason, _) = condition(&env.status(&name), "Degraded");
    assert!(degraded && reason == "RegistryUnavailable");
}

#[test]
fn registry_down_leaves_running_container_untouched() {
    let env = TestEnv::new("regdown");
    let mut reg = TestRegistry::start(&env);
    let tag = format!("127.0.0.1:{}/{}:live", reg.port, env.id());
    push_as(WEB_V1, &tag);
    let name = env.name("web");
    let port = env.free_port();
    let file = env.write("web.yaml", &web_spec(&env, &name, &tag, port, ""));
    apply(&env, &file).assert_success();
    let id = id_and_started(&name);
    reg.stop();
    let out = apply(&env, &file);
    out.assert_code(1);
    assert!(
        out.stdout.contains("RegistryUnavailable")
            && out.stdout.contains("running container is kept"),
        "{out}"
    );
    assert_eq!(id_and_started(&name), id);
    assert_eq!(served_version(port).as_deref(), Some("1"));
    let (degraded, reason, _) = condition(&env.status(&name), "Degraded");
    assert!(degraded && reason == "RegistryUnavailable");
    docker(["rmi", &tag]);
}

#[test]
fn pull_failure_leaves_running_container_untouched() {
    let env = TestEnv::new("pullfail");
    let reg = TestRegistry::start(&env);
    let tag = format!("127.0.0.1:{}/{}:live", reg.port, env.id());
    push_as(WEB_V1, &tag);
    let name = env.name("web");
    let port = env.free_port();
    let file = env.write("web.yaml", &web_spec(&env, &name, &tag, port, ""));
    apply(&env, &file).assert_success();
    let id = id_and_started(&name);
    // A new image with a layer the engine has never seen; its manifest stays in the registry, the layer's
    // data does not: the registry HEAD works, the pull fails.
    let ctx = env.dir().join("build");
    std::fs::create_dir_all(&ctx).expect("mkdir");
    std::fs::write(ctx.join("nonce"), env.id()).expect("write");
    std::fs::write(
        ctx.join("Dockerfile"),
        format!("FROM {WEB_V2}\nCOPY nonce /nonce\n"),
    )
    .expect("write");
    let built = std::process::Command::new("docker")
        .args(["build", "-q", "-t", &tag, ctx.to_str().expect("utf8")])
        .env("DOCKER_BUILDKIT", "0")
        .output()
        .expect("docker build");
    assert!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );
    let d2 = docker_ok(["push", &tag])
        .split_whitespace()
        .skip_while(|w| *w != "digest:")
        .nth(1)
        .expect("digest")
        .to_owned();
    let blob = |dg: &str| {
        reg.root.join(format!(
            "docker/registry/v2/blobs/sha256/{}/{}",
            &dg[7..9],
            &dg[7..]
        ))
    };
    let manifest: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(blob(&d2).join("data")).expect("manifest blob"),
    )
    .expect("json");
    let last = manifest["layers"]
        .as_array()
        .and_then(|l| l.last())
        .and_then(|l| l["digest"].as_str())
        .expect("layer");
    std::fs::remove_dir_all(blob(last)).expect("remove layer blob");
    docker_ok(["rmi", &tag]);
    let out = apply(&env, &file);
    out.assert_code(1);
    assert!(out.stdout.contains("pull"), "{out}");
    assert_eq!(id_and_started(&name), id);
    assert_eq!(served_version(port).as_deref(), Some("1"));
    let (degraded, reason, _) = condition(&env.status(&name), "Degraded");
    assert!(degraded && reason == "PullFailed", "{reason}");
}

#[test]
fn auth_registry_with_and_without_credentials() {
    let env = TestEnv::new("auth");
    let name = env.name("web");
    let port = env.free_port();
    let file = env.write("web.yaml", &web_spec(&env, &name, AUTH_WEB_V1, port, ""));
    let anon = env.dir().join("anon-docker-config");
    std::fs::create_dir_all(&anon).expect("mkdir");
    let out = env
        .dockop()
        .env("DOCKER_CONFIG", anon.to_str().expect("utf8"))
        .run(["apply", "-f", file.to_str().expect("utf8")]);
    out.assert_code(1);
    assert!(
        out.stdout.contains("refused access") && out.stdout.contains("docker login 127.0.0.1:5001"),
        "{out}"
    );
    assert!(
        docker(["inspect", &name]).status.code() != Some(0),
        "nothing created without credentials"
    );
    let cfg = env.dir().join("docker-config");
    std::fs::create_dir_all(&cfg).expect("mkdir");
    docker_login(&cfg, AUTH_REGISTRY, AUTH_USER, AUTH_PASSWORD);
    let out = env
        .dockop()
        .env("DOCKER_CONFIG", cfg.to_str().expect("utf8"))
        .run(["apply", "-f", file.to_str().expect("utf8")]);
    out.assert_success();
    assert_eq!(served_version(port).as_deref(), Some("1"));
    assert!(!out.stderr.contains(AUTH_PASSWORD) && !out.stdout.contains(AUTH_PASSWORD));
}

fn opencode_spec(env: &TestEnv, name: &str, image: &str, port: u16, extra: &str) -> String {
    format!(
        "apiVersion: dockop.dev/v1alpha1
kind: Container
metadata:
  name: {name}
  labels: {labels}
spec:
  image: {image}
  ports:
    - {{containerPort: {OPENCODE_PORT}, hostPort: {port}}}
  volumes:
    - {{name: {name}-data, mountPath: /root/.local/share/opencode}}
  health:
    path: {HEALTH_PATH}
    port: {OPENCODE_PORT}
    startupDeadlineSeconds: 60
  init: true
{extra}",
        labels = env.labels_yaml()
    )
}

#[test]
fn real_opencode_update_then_bad_release_rolls_back() {
    let env = TestEnv::new("opencode");
    let (tag, _) = env.push_as(OPENCODE_1_18_33, "live");
    let name = env.name("oc");
    let port = env.free_port();
    let file = env.write(
        "oc.yaml",
        &opencode_spec(&env, &name, &tag, port, "  update: {preflight: false}\n"),
    );
    apply(&env, &file).assert_success();
    assert_eq!(served_version(port).as_deref(), Some("1.18.33"));
    env.push_as(OPENCODE_1_18_34, "live");
    apply(&env, &file).assert_success();
    assert_eq!(served_version(port).as_deref(), Some("1.18.34"));
    assert_eq!(env.status(&name)["appVersion"], "1.18.34");
    let id = inspect(&name, "{{.Id}}");
    env.push_as(OPENCODE_BAD, "live");
    let out = apply(&env, &file);
    out.assert_code(1);
    assert!(out.stdout.contains("HTTP 401"), "{out}");
    assert_eq!(inspect(&name, "{{.Id}}"), id);
    assert!(wait_until(Duration::from_secs(30), || served_version(port)
        .as_deref()
        == Some("1.18.34")));
}

#[test]
fn retry_forgets_a_failed_digest() {
    let env = TestEnv::new("retry");
    let (file, name, port, _) = deploy_v1(&env, "  update: {preflight: false}\n");
    env.push_as(WEB_UNHEALTHY, "live");
    apply(&env, &file).assert_code(1);
    let again = apply(&env, &file);
    assert!(again.stdout.contains("failed before"), "{again}");
    let out = env.dockop().run(["retry", &name]);
    out.assert_success();
    assert!(out.stdout.contains("forgot 1 failed digest"), "{out}");
    // Tried again: it really runs the update (and rolls back again).
    let retried = apply(&env, &file);
    retried.assert_code(1);
    assert!(retried.stdout.contains("ROLLED BACK"), "{retried}");
    assert_eq!(served_version(port).as_deref(), Some("1"));
    env.dockop().run(["retry", "no-such-object"]).assert_code(1);
}

#[test]
fn one_shot_commands_refuse_to_race_a_running_operator() {
    let env = TestEnv::new("lock");
    let (file, name, port, _) = deploy_v1(&env, "");
    let listen = format!("127.0.0.1:{}", env.free_port());
    let mut run = env.dockop().spawn(
        [
            "run",
            "-f",
            file.to_str().expect("utf8"),
            "--listen",
            &listen,
        ],
        env.dir(),
    );
    assert!(wait_until(Duration::from_secs(30), || run
        .stderr()
        .contains("dockop.lock")
        || std::fs::read_to_string(env.state_dir().join("dockop.lock"))
            .is_ok_and(|p| !p.trim().is_empty())));
    for args in [
        vec!["apply", "-f", file.to_str().expect("utf8")],
        vec!["rollback", name.as_str()],
        vec!["retry", name.as_str()],
    ] {
        let out = env.dockop().run(&args);
        out.assert_code(1);
        assert!(
            out.stderr.contains("another dockop holds"),
            "{args:?}: {out}"
        );
    }
    // Read-only commands still work.
    env.dockop().run(["status", &name]).assert_success();
    env.dockop()
        .run(["plan", "-f", file.to_str().expect("utf8")])
        .assert_code(0);
    run.stop(Duration::from_secs(20));
    assert_eq!(served_version(port).as_deref(), Some("1"));
}
