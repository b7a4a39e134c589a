//! Crash safety (issue 9): dockop is aborted hard (`DOCKOP_FAULT_ABORT_AT`, honoured by debug builds) right
//! after each step of an update and of a rollback, then run again. Every case must end with exactly one
//! container, serving the new healthy version or the old one, no leftovers, the volume's data intact, and a
//! status that tells the truth.

use std::time::Duration;

use dockop_e2e::images::*;
use dockop_e2e::*;

fn spec(
    env: &TestEnv,
    name: &str,
    image: &str,
    port: u16,
    container_port: u16,
    preflight: bool,
) -> String {
    format!(
        "apiVersion: dockop.dev/v1alpha1
kind: Container
metadata:
  name: {name}
  labels: {labels}
spec:
  image: {image}
  ports:
    - {{containerPort: {container_port}, hostPort: {port}}}
  volumes:
    - {{name: {name}-data, mountPath: /data}}
  health:
    path: {HEALTH_PATH}
    port: {container_port}
    startupDeadlineSeconds: 60
  update: {{preflight: {preflight}}}
  init: true
",
        labels = env.labels_yaml()
    )
}

struct Case {
    env: TestEnv,
    name: String,
    port: u16,
    file: String,
}

/// Deploys `good` with a file in its volume; returns the case.
fn deploy(test: &str, good: &str, container_port: u16, preflight: bool) -> Case {
    let env = TestEnv::new(test);
    let (tag, _) = env.push_as(good, "live");
    let name = env.name("app");
    let port = env.free_port();
    let file = env.write(
        "app.yaml",
        &spec(&env, &name, &tag, port, container_port, preflight),
    );
    let file = file.to_str().expect("utf8").to_owned();
    env.dockop().run(["apply", "-f", &file]).assert_success();
    docker_ok(["exec", &name, "sh", "-c", "echo precious > /data/file"]);
    Case {
        env,
        name,
        port,
        file,
    }
}

/// Runs `apply` with the fault armed and checks that dockop really died there.
fn apply_and_abort(c: &Case, point: &str) {
    let out = c
        .env
        .dockop()
        .env("DOCKOP_FAULT_ABORT_AT", point)
        .run(["apply", "-f", &c.file]);
    assert!(
        out.code.is_none() || out.code == Some(134),
        "dockop should have aborted at {point}: {out}"
    );
    assert!(
        out.stderr.contains(&format!("aborting at {point}")),
        "{out}"
    );
}

/// The end state every case must reach.
fn assert_converged(c: &Case, want_version: &str) {
    let names: Vec<String> = docker_ok([
        "ps",
        "-a",
        "--filter",
        &format!("label={}", c.env.label()),
        "--format",
        "{{.Names}}",
    ])
    .lines()
    .map(str::to_owned)
    .collect();
    assert_eq!(
        names,
        vec![c.name.clone()],
        "exactly one container, no previous or preflight leftovers"
    );
    assert!(
        wait_until(Duration::from_secs(30), || served_version(c.port)
            .as_deref()
            == Some(want_version)),
        "serving {want_version}"
    );
    assert_eq!(
        docker_ok(["exec", &c.name, "cat", "/data/file"]).trim(),
        "precious",
        "volume data intact"
    );
    let st: serde_json::Value =
        serde_json::from_str(&c.env.dockop().run(["status", &c.name, "-o", "json"]).stdout)
            .expect("status JSON");
    let label = docker_ok([
        "inspect",
        "-f",
        "{{index .Config.Labels \"dockop.dev/digest\"}}",
        &c.name,
    ]);
    assert_eq!(
        st["currentDigest"].as_str(),
        Some(label.trim()),
        "status names the digest that runs: {st:#}"
    );
    assert_eq!(st["containerId"].as_str().map(str::len), Some(64));
    let ready = st["conditions"]
        .as_array()
        .and_then(|a| a.iter().find(|x| x["type"] == "Ready"))
        .expect("Ready");
    assert_eq!(ready["status"], true, "{st:#}");
}

/// Update v1 -> v2 (preflight on), killed after `point`, then run again: the update completes.
fn crash_during_update(point: &str) {
    let c = deploy(&format!("crash-up-{point}"), WEB_V1, WEB_PORT, true);
    c.env.push_as(WEB_V2, "live");
    apply_and_abort(&c, point);
    c.env
        .dockop()
        .run(["apply", "-f", &c.file])
        .assert_success();
    assert_converged(&c, "2");
    let st: serde_json::Value =
        serde_json::from_str(&c.env.dockop().run(["status", &c.name, "-o", "json"]).stdout)
            .expect("status");
    let degraded = st["conditions"]
        .as_array()
        .and_then(|a| a.iter().find(|x| x["type"] == "Degraded"))
        .expect("Degraded");
    assert_eq!(degraded["status"], false, "{st:#}");
}

/// Update v1 -> unhealthy (preflight off) rolls back; killed after rollback `point`, then run again: the old
/// version serves and the bad target is not retried.
fn crash_during_rollback(point: &str) {
    let c = deploy(&format!("crash-rb-{point}"), WEB_V1, WEB_PORT, false);
    c.env.push_as(WEB_UNHEALTHY, "live");
    apply_and_abort(&c, point);
    let out = c.env.dockop().run(["apply", "-f", &c.file]);
    out.assert_code(1);
    assert_converged(&c, "1");
    let again = c.env.dockop().run(["apply", "-f", &c.file]);
    assert!(
        again.stdout.contains("failed before"),
        "the bad target is remembered across the crash: {again}"
    );
}

macro_rules! update_cases {
    ($($test:ident => $point:literal),* $(,)?) => {$(
        #[test]
        fn $test() {
            crash_during_update($point);
        }
    )*};
}

macro_rules! rollback_cases {
    ($($test:ident => $point:literal),* $(,)?) => {$(
        #[test]
        fn $test() {
            crash_during_rollback($point);
        }
    )*};
}

update_cases! {
    update_abort_after_ensure_volumes => "after-ensure-volumes",
    update_abort_after_pull => "after-pull",
    update_abort_while_preflight_runs => "preflight-started",
    update_abort_after_preflight => "after-preflight",
    update_abort_after_create_next => "after-create-next",
    update_abort_after_stop => "after-stop-active",
    update_abort_after_start_of_next => "after-start",
    update_abort_after_users => "after-apply-users",
    update_abort_after_health_gate => "after-health-gate",
    update_abort_after_rename_to_previous => "after-rename-to-previous",
    update_abort_after_rename_next => "after-rename-next",
    update_abort_after_remove_previous => "after-remove-previous",
}

rollback_cases! {
    // With preflight off the update's steps are: volumes, pull, create <name>-next, stop, start
    // <name>-next, users, gate (fails): after users is just before the gate's failure starts the rollback.
    rollback_abort_before_gate_fails => "after-apply-users",
    rollback_abort_after_candidate_removed => "rollback-removed-candidate",
    rollback_abort_after_previous_renamed_back => "rollback-renamed-back",
    rollback_abort_after_previous_started => "rollback-started",
    rollback_abort_after_users => "rollback-users-applied",
}

/// The same on the real OpenCode image, at the two most delicate points.
fn opencode_crash(point: &str, bad: bool) {
    let c = deploy(
        &format!("crash-oc-{point}"),
        OPENCODE_1_18_33,
        OPENCODE_PORT,
        false,
    );
    c.env
        .push_as(if bad { OPENCODE_BAD } else { OPENCODE_1_18_34 }, "live");
    apply_and_abort(&c, point);
    let out = c.env.dockop().run(["apply", "-f", &c.file]);
    if bad {
        out.assert_code(1);
        assert_converged(&c, "1.18.33");
    } else {
        out.assert_success();
        assert_converged(&c, "1.18.34");
    }
}

#[test]
fn opencode_update_abort_after_rename_to_previous() {
    opencode_crash("after-rename-to-previous", false);
}

#[test]
fn opencode_rollback_abort_after_candidate_removed() {
    opencode_crash("rollback-removed-candidate", true);
}

#[test]
fn corrupt_status_file_is_moved_aside_and_state_rebuilt() {
    let c = deploy("crash-corrupt", WEB_V1, WEB_PORT, true);
    let path = c
        .env
        .state_dir()
        .join("objects")
        .join(format!("{}.json", c.name));
    std::fs::write(&path, b"{\"name\": \"half writ").expect("corrupt");
    c.env
        .dockop()
        .run(["apply", "-f", &c.file])
        .assert_success();
    assert_converged(&c, "1");
    let aside = std::fs::read_dir(c.env.state_dir().join("objects"))
        .expect("ls")
        .filter_map(Result::ok)
        .any(|e| e.file_name().to_string_lossy().contains(".corrupt-"));
    assert!(aside, "the corrupt file is kept aside for inspection");
}

#[test]
fn read_only_state_dir_is_a_clear_error_and_service_keeps_running() {
    let c = deploy("crash-rostate", WEB_V1, WEB_PORT, true);
    let ro = c.env.dir().join("ro-state");
    std::fs::create_dir_all(ro.join("objects")).expect("mkdir");
    // A read-only bind of the state dir: even root cannot write there.
    let mounted = std::process::Command::new("mount")
        .args(["--bind", "-o", "ro"])
        .arg(c.env.state_dir())
        .arg(&ro)
        .status();
    if !mounted.is_ok_and(|s| s.success()) {
        panic!("cannot make a read-only bind mount (needs root): this test bed runs as root");
    }
    let remount = std::process::Command::new("mount")
        .args(["-o", "remount,ro,bind"])
        .arg(&ro)
        .status();
    assert!(remount.is_ok_and(|s| s.success()));
    let out = Dockop::new(&ro).run(["apply", "-f", &c.file]);
    let _ = std::process::Command::new("umount").arg(&ro).status();
    out.assert_code(1);
    assert!(
        out.stderr.contains("state directory") || out.stdout.contains("state directory"),
        "{out}"
    );
    assert_eq!(served_version(c.port).as_deref(), Some("1"));
}
