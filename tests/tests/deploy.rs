//! dockop itself in a container (issue 10): `deploy/compose.yaml` builds the image on the local Debian base
//! from the built binary, runs `dockop run` with the Docker socket and a directory of desired-state files,
//! and that dockop reconciles an example, rejects a bad image in preflight and rolls back a bad update —
//! health probing and preflight work from inside its container.

use std::process::{Command, Output};
use std::time::Duration;

use dockop_e2e::images::*;
use dockop_e2e::*;

/// `docker-compose -p <project> -f deploy/compose.yaml ...` with the test's settings; `down` on drop.
struct Compose {
    project: String,
    envs: Vec<(String, String)>,
}

impl Compose {
    fn run(&self, args: &[&str]) -> Output {
        let compose = workspace_root().join("deploy/compose.yaml");
        let mut cmd = Command::new("docker-compose");
        cmd.arg("-p")
            .arg(&self.project)
            .arg("-f")
            .arg(&compose)
            .args(args)
            .current_dir(workspace_root());
        for (k, v) in &self.envs {
            cmd.env(k, v);
        }
        cmd.output()
            .expect("docker-compose (Debian package docker-compose; the test bed installs it)")
    }

    fn container(&self) -> String {
        format!("{}_dockop_1", self.project)
    }
}

impl Drop for Compose {
    fn drop(&mut self) {
        let _ = self.run(&["down", "-v", "--rmi", "local", "--timeout", "5"]);
    }
}

fn spec(
    env: &TestEnv,
    name: &str,
    image: &str,
    digest: Option<&str>,
    port: u16,
    preflight: bool,
) -> String {
    let digest = digest
        .map(|d| format!("  digest: {d}\n"))
        .unwrap_or_default();
    format!(
        "apiVersion: dockop.dev/v1alpha1
kind: Container
metadata:
  name: {name}
  labels: {labels}
spec:
  image: {image}
{digest}  ports:
    - {{containerPort: {WEB_PORT}, hostPort: {port}}}
  volumes:
    - {{name: {name}-data, mountPath: /data}}
  health:
    path: {HEALTH_PATH}
    port: {WEB_PORT}
    startupDeadlineSeconds: 20
  update: {{preflight: {preflight}}}
  init: true
",
        labels = env.labels_yaml()
    )
}

/// The Degraded reason dockop (inside its container) reports for `name`.
fn degraded_reason(compose: &Compose, name: &str) -> Option<String> {
    let out = docker([
        "exec",
        &compose.container(),
        "dockop",
        "status",
        name,
        "-o",
        "json",
    ]);
    let st: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    let c = st["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == "Degraded")?
        .clone();
    (c["status"] == true).then(|| c["reason"].as_str().unwrap_or_default().to_owned())
}

#[test]
fn dockop_in_compose_reconciles_rejects_and_rolls_back() {
    let env = TestEnv::new("compose");
    let desired = env.dir().join("desired");
    std::fs::create_dir_all(&desired).expect("mkdir");
    let (tag, _) = env.push_as(WEB_V1, "live");
    let (_, bad_500) = env.push_as(WEB_UNHEALTHY, "bad500");
    let (_, bad_crash) = env.push_as(WEB_CRASH, "badcrash");
    let name = env.name("web");
    let port = env.free_port();
    let file = desired.join("web.yaml");
    std::fs::write(&file, spec(&env, &name, &tag, None, port, true)).expect("write spec");

    let listen = format!("127.0.0.1:{}", env.free_port());
    let secrets = env.dir().join("secrets");
    let docker_cfg = env.dir().join("docker-config");
    std::fs::create_dir_all(&secrets).expect("mkdir");
    std::fs::create_dir_all(&docker_cfg).expect("mkdir");
    let bin = dockop_bin();
    let rel_bin = bin
        .strip_prefix(workspace_root())
        .expect("binary inside the workspace (target/...)");
    let compose = Compose {
        project: env.id().replace('-', ""),
        envs: vec![
            ("DOCKOP_DESIRED_DIR".into(), desired.display().to_string()),
            ("DOCKOP_BASE".into(), DEBIAN_BASE.into()),
            ("DOCKOP_BIN_PATH".into(), rel_bin.display().to_string()),
            ("DOCKOP_IMAGE".into(), format!("dockop-e2e:{}", env.id())),
            ("DOCKOP_LISTEN".into(), listen.clone()),
            ("DOCKOP_SECRETS_DIR".into(), secrets.display().to_string()),
            ("DOCKER_CONFIG_DIR".into(), docker_cfg.display().to_string()),
        ],
    };
    let up = compose.run(&["up", "-d", "--build"]);
    assert!(
        up.status.success(),
        "compose up failed:\n{}\n{}",
        String::from_utf8_lossy(&up.stdout),
        String::from_utf8_lossy(&up.stderr)
    );
    let logs =
        || String::from_utf8_lossy(&docker(["logs", &compose.container()]).stderr).into_owned();

    // 1. Reconciles the example.
    assert!(
        wait_until(Duration::from_secs(60), || served_version(port).as_deref()
            == Some("1")),
        "v1 served\n{}",
        logs()
    );
    let id = docker_ok(["inspect", "-f", "{{.Id}}", &name]);

    // 2. A bad image is rejected by preflight, run and probed from inside dockop's container.
    std::fs::write(&file, spec(&env, &name, &tag, Some(&bad_500), port, true)).expect("edit spec");
    assert!(
        wait_until(Duration::from_secs(60), || degraded_reason(&compose, &name)
            .as_deref()
            == Some("PreflightFailed")),
        "preflight rejection\n{}",
        logs()
    );
    assert_eq!(
        docker_ok(["inspect", "-f", "{{.Id}}", &name]),
        id,
        "untouched"
    );
    assert_eq!(served_version(port).as_deref(), Some("1"));

    // 3. With preflight off, a crashing image fails the health gate and is rolled back.
    std::fs::write(
        &file,
        spec(&env, &name, &tag, Some(&bad_crash), port, false),
    )
    .expect("edit spec");
    assert!(
        wait_until(Duration::from_secs(60), || degraded_reason(&compose, &name)
            .as_deref()
            == Some("RolledBack")),
        "rollback\n{}",
        logs()
    );
    assert!(wait_until(Duration::from_secs(20), || served_version(port)
        .as_deref()
        == Some("1")));
    assert_eq!(
        docker_ok(["inspect", "-f", "{{.Id}}", &name]),
        id,
        "the same container serves again"
    );
    let names = docker_ok([
        "ps",
        "-a",
        "--filter",
        &format!("label={}", env.label()),
        "--format",
        "{{.Names}}",
    ]);
    assert_eq!(
        names.trim(),
        name,
        "no previous or preflight containers left"
    );
    // Its HTTP server answers on the host network.
    assert!(matches!(
        http_get(&format!("http://{listen}/livez"), Duration::from_secs(2)),
        Ok((200, _))
    ));
}
