//! A real stack (issue 17): Caddy as the reverse proxy on a host port, OpenCode behind it on a network
//! dockop declares, reached by alias; Caddy `dependsOn` OpenCode and runs hardened (read-only root, /tmp
//! tmpfs, every capability dropped, no-new-privileges, memory and pids limits, log rotation). An OpenCode
//! update keeps Caddy reaching the new container by alias; `apply --prune` on an empty set and `run
//! --prune` once the files are gone remove Caddy before OpenCode and leave the volume and the network
//! alone.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::time::{Duration, Instant};

use dockop_e2e::images::*;
use dockop_e2e::*;

const ALIAS: &str = "opencode-backend";

struct Stack {
    net: String,
    opencode: String,
    caddy: String,
    volume: String,
    port: u16,
}

fn opencode_spec(env: &TestEnv, s: &Stack, image: &str) -> String {
    env.object_yaml(
        &s.opencode,
        image,
        &format!(
            "  networks:
    - {{name: {net}, aliases: [{ALIAS}]}}
  volumes:
    - {{name: {volume}, mountPath: /root/.local/share/opencode}}
  health: {{path: {HEALTH_PATH}, port: {OPENCODE_PORT}, startupDeadlineSeconds: 60}}
  resources: {{memory: 1Gi}}
  stopTimeoutSeconds: 5
",
            net = s.net,
            volume = s.volume,
        ),
    )
}

fn caddy_spec(env: &TestEnv, s: &Stack) -> String {
    env.object_yaml(
        &s.caddy,
        CADDY,
        &format!(
            "  command: [caddy, reverse-proxy, --from, ':8080', --to, '{ALIAS}:{OPENCODE_PORT}']
  dependsOn: [{opencode}]
  ports:
    - {{containerPort: 8080, hostPort: {port}}}
  networks:
    - {{name: {net}}}
  health: {{path: {HEALTH_PATH}, port: 8080, startupDeadlineSeconds: 30}}
  resources: {{memory: 128Mi, cpus: 0.5, pids: 256}}
  logging: {{driver: json-file, options: {{max-size: 5m, max-file: \"2\"}}}}
  readOnlyRootFilesystem: true
  tmpfs:
    - {{mountPath: /tmp, size: 64Mi}}
  capabilities: {{drop: [ALL]}}
  noNewPrivileges: true
  stopTimeoutSeconds: 5
",
            opencode = s.opencode,
            net = s.net,
            port = s.port,
        ),
    )
}

fn inspect(container: &str, format: &str) -> String {
    docker_ok(["inspect", "-f", format, container])
        .trim()
        .to_owned()
}

#[track_caller]
fn wait_served(port: u16, version: &str) {
    let ok = wait_until(Duration::from_secs(30), || {
        served_version(port).as_deref() == Some(version)
    });
    let answer = http_get(
        &format!("http://127.0.0.1:{port}{HEALTH_PATH}"),
        Duration::from_secs(3),
    );
    assert!(ok, "Caddy on {port} did not serve {version}: {answer:?}");
    let (code, body) = answer.unwrap();
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"healthy\":true"), "{body}");
}

#[test]
fn opencode_behind_caddy_by_alias() {
    let env = TestEnv::new("stack");
    let s = Stack {
        net: env.name("net"),
        opencode: env.name("oc"),
        caddy: env.name("caddy"),
        volume: env.name("oc-data"),
        port: env.free_port(),
    };
    let (tag, _) = env.push_as(OPENCODE_1_18_33, "stack");
    env.write("stack/opencode.yaml", &opencode_spec(&env, &s, &tag));
    env.write("stack/caddy.yaml", &caddy_spec(&env, &s));
    let dir = env.dir().join("stack");
    let dir = dir.to_str().unwrap();

    // Validation across both files, then one apply: OpenCode first, Caddy once OpenCode is Ready.
    env.dockop().run(["validate", dir]).assert_success();
    let started = Instant::now();
    let out = env.dockop().run(["apply", "-f", dir]);
    out.assert_success();
    let converge = started.elapsed();
    eprintln!(
        "stack converged in {:.2} s (apply, both created)",
        converge.as_secs_f64()
    );
    wait_served(s.port, "1.18.33");
    // Caddy was created after OpenCode was proven healthy.
    let oc_started = inspect(&s.opencode, "{{.State.StartedAt}}");
    let caddy_created = inspect(&s.caddy, "{{.Created}}");
    assert!(
        caddy_created > oc_started,
        "caddy created {caddy_created}, opencode started {oc_started}"
    );

    // The hardening reached Docker.
    assert_eq!(
        inspect(&s.caddy, "{{.HostConfig.Memory}}"),
        (128u64 << 20).to_string()
    );
    assert_eq!(inspect(&s.caddy, "{{.HostConfig.NanoCpus}}"), "500000000");
    assert_eq!(inspect(&s.caddy, "{{.HostConfig.PidsLimit}}"), "256");
    assert_eq!(
        inspect(
            &s.caddy,
            "{{.HostConfig.LogConfig.Type}} {{index .HostConfig.LogConfig.Config \"max-size\"}} {{index .HostConfig.LogConfig.Config \"max-file\"}}"
        ),
        "json-file 5m 2"
    );
    assert_eq!(inspect(&s.caddy, "{{.HostConfig.ReadonlyRootfs}}"), "true");
    assert_eq!(inspect(&s.caddy, "{{.HostConfig.CapDrop}}"), "[ALL]");
    assert_eq!(
        inspect(&s.caddy, "{{.HostConfig.SecurityOpt}}"),
        "[no-new-privileges:true]"
    );
    assert!(
        inspect(&s.caddy, "{{json .HostConfig.Tmpfs}}").contains("size=67108864"),
        "{}",
        inspect(&s.caddy, "{{json .HostConfig.Tmpfs}}")
    );
    // Absent logging: rotated json-file.
    assert_eq!(
        inspect(
            &s.opencode,
            "{{.HostConfig.LogConfig.Type}} {{index .HostConfig.LogConfig.Config \"max-size\"}} {{index .HostConfig.LogConfig.Config \"max-file\"}}"
        ),
        "json-file 10m 3"
    );
    let aliases = inspect(
        &s.opencode,
        &format!(
            "{{{{json (index .NetworkSettings.Networks \"{}\").Aliases}}}}",
            s.net
        ),
    );
    assert!(aliases.contains(ALIAS), "{aliases}");
    assert_eq!(
        inspect(&s.net, "{{index .Labels \"dockop.dev/managed\"}}"),
        "true"
    );

    // An OpenCode update: the new container answers Caddy by the same alias.
    env.push_as(OPENCODE_1_18_34, "stack");
    let started = Instant::now();
    let out = env.dockop().run(["apply", "-f", dir]);
    out.assert_success();
    eprintln!(
        "opencode update through apply in {:.2} s",
        started.elapsed().as_secs_f64()
    );
    assert!(
        out.stdout.contains(&format!("{}: updated", s.opencode)),
        "{out}"
    );
    assert!(
        out.stdout.contains(&format!("{}: unchanged", s.caddy)),
        "{out}"
    );
    wait_served(s.port, "1.18.34");

    // `apply --prune` on an empty set: `plan` lists Caddy first, `apply` removes it first; the volume
    // and the network stay.
    let empty = env.dir().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let empty = empty.to_str().unwrap();
    let order = |text: &str| -> Vec<String> {
        text.lines()
            .filter(|l| l.contains("prune"))
            .filter_map(|l| l.split(':').next())
            .map(str::to_owned)
            .collect()
    };
    let plan = env.dockop().run(["plan", "--prune", "-f", empty]);
    plan.assert_code(2);
    assert_eq!(
        order(&plan.stdout),
        [s.caddy.clone(), s.opencode.clone()],
        "{plan}"
    );
    assert!(!env.containers().is_empty(), "plan changed something");
    let out = env.dockop().run(["apply", "--prune", "-f", empty]);
    out.assert_success();
    assert_eq!(
        order(&out.stdout),
        [s.caddy.clone(), s.opencode.clone()],
        "{out}"
    );
    assert!(env.containers().is_empty(), "{:?}", env.containers());
    docker_ok(["volume", "inspect", &s.volume]);
    docker_ok(["network", "inspect", &s.net]);

    // Again under the operator: it follows the directory; both files go; Caddy is removed first.
    env.dockop().run(["apply", "-f", dir]).assert_success();
    wait_served(s.port, "1.18.34");
    let listen = format!("127.0.0.1:{}", env.free_port());
    let mut d = env.dockop().spawn(
        ["run", "--prune", "--listen", &listen, "-f", dir],
        env.dir(),
    );
    let synced = wait_until(Duration::from_secs(30), || {
        http_get(&format!("http://{listen}/readyz"), Duration::from_secs(2))
            .is_ok_and(|(c, _)| c == 200)
    });
    assert!(synced, "dockop run never became ready:\n{}", d.stderr());
    std::fs::remove_file(env.dir().join("stack/caddy.yaml")).unwrap();
    std::fs::remove_file(env.dir().join("stack/opencode.yaml")).unwrap();
    let gone = wait_until(Duration::from_secs(30), || env.containers().is_empty());
    assert!(gone, "left: {:?}\n{}", env.containers(), d.stderr());
    d.stop(Duration::from_secs(10));
    let log = d.stderr();
    let pruned = |name: &str| {
        log.lines()
            .position(|l| l.contains("pruned") && l.contains(&format!("\"{name}\"")))
            .unwrap_or_else(|| panic!("no prune line for {name}:\n{log}"))
    };
    assert!(
        pruned(&s.caddy) < pruned(&s.opencode),
        "Caddy must go first:\n{log}"
    );
    // The volume and the network stay.
    docker_ok(["volume", "inspect", &s.volume]);
    docker_ok(["network", "inspect", &s.net]);
}

/// `hostNetwork: true`: the app listens on the host itself; create, health gate and an update (with
/// preflight, which runs on the default bridge so it does not clash with the running app's port) all
/// probe it at 127.0.0.1.
#[test]
fn host_network_app_is_probed_on_loopback() {
    let env = TestEnv::new("hostnet");
    let name = env.name("web");
    let port = env.free_port();
    let spec = |image: &str| {
        env.object_yaml(
            &name,
            image,
            &format!(
                "  command: [httpd, -f, -p, '{port}', -h, /www]
  hostNetwork: true
  health: {{path: {HEALTH_PATH}, port: {port}, startupDeadlineSeconds: 20}}
  stopTimeoutSeconds: 2
"
            ),
        )
    };
    let file = env.write("web.yaml", &spec(WEB_V1));
    let file = file.to_str().unwrap();
    env.dockop().run(["apply", "-f", file]).assert_success();
    assert_eq!(served_version(port).as_deref(), Some("1"));
    assert_eq!(inspect(&name, "{{.HostConfig.NetworkMode}}"), "host");
    env.write("web.yaml", &spec(WEB_V2));
    let out = env.dockop().run(["apply", "-f", file]);
    out.assert_success();
    assert!(out.stdout.contains("updated"), "{out}");
    assert_eq!(served_version(port).as_deref(), Some("2"));
}
