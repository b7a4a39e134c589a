//! End-to-end tests of preflight (issue 5): a bad candidate is rejected in a throwaway container while a
//! client probing the served port every 50 ms sees zero failures; a good one passes and updates.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use dockop_e2e::images::*;
use dockop_e2e::*;

/// Probes `port` every 50 ms on its own thread until stopped; counts probes and failures.
struct Prober {
    stop: Arc<AtomicBool>,
    probes: Arc<AtomicUsize>,
    failures: Arc<AtomicUsize>,
    handle: Option<JoinHandle<()>>,
}

impl Prober {
    fn start(port: u16) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let probes = Arc::new(AtomicUsize::new(0));
        let failures = Arc::new(AtomicUsize::new(0));
        let (s, p, f) = (stop.clone(), probes.clone(), failures.clone());
        let handle = std::thread::spawn(move || {
            let url = format!("http://127.0.0.1:{port}{HEALTH_PATH}");
            while !s.load(Ordering::SeqCst) {
                let ok = matches!(http_get(&url, Duration::from_millis(500)), Ok((200, _)));
                p.fetch_add(1, Ordering::SeqCst);
                if !ok {
                    f.fetch_add(1, Ordering::SeqCst);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        Self {
            stop,
            probes,
            failures,
            handle: Some(handle),
        }
    }

    /// Stops probing; returns (probes, failures).
    fn finish(mut self) -> (usize, usize) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
        (
            self.probes.load(Ordering::SeqCst),
            self.failures.load(Ordering::SeqCst),
        )
    }
}

fn spec(env: &TestEnv, name: &str, image: &str, port: u16, container_port: u16) -> String {
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
    startupDeadlineSeconds: 30
  init: true
",
        labels = env.labels_yaml()
    )
}

/// Deploys `good`, then offers `bad` under the same tag while probing: rejected, zero failed probes.
fn rejected_with_zero_downtime(test: &str, good: &str, bad: &str, container_port: u16, seen: &str) {
    let env = TestEnv::new(test);
    let (tag, _) = env.push_as(good, "live");
    let name = env.name("app");
    let port = env.free_port();
    let file = env.write("app.yaml", &spec(&env, &name, &tag, port, container_port));
    let file = file.to_str().expect("utf8");
    env.dockop().run(["apply", "-f", file]).assert_success();
    let id = docker_ok(["inspect", "-f", "{{.Id}} {{.State.StartedAt}}", &name]);
    env.push_as(bad, "live");
    let prober = Prober::start(port);
    std::thread::sleep(Duration::from_millis(300));
    let out = env.dockop().run(["apply", "-f", file]);
    std::thread::sleep(Duration::from_millis(300));
    let (probes, failures) = prober.finish();
    out.assert_code(1);
    assert!(out.stdout.contains("REJECTED by preflight"), "{out}");
    assert!(
        out.stdout.contains(seen),
        "the rejection says what was seen ({seen}): {out}"
    );
    assert!(probes > 5, "the prober ran ({probes} probes)");
    assert_eq!(
        failures, 0,
        "{failures} of {probes} probes failed during a rejected update"
    );
    assert_eq!(
        docker_ok(["inspect", "-f", "{{.Id}} {{.State.StartedAt}}", &name]),
        id,
        "running container untouched"
    );
    assert_eq!(
        env.containers(),
        vec![name.clone()],
        "no preflight container left"
    );
    let st = env.status(&name);
    let degraded = st["conditions"]
        .as_array()
        .and_then(|a| a.iter().find(|c| c["type"] == "Degraded"))
        .cloned()
        .expect("Degraded");
    assert_eq!(degraded["status"], true);
    assert_eq!(degraded["reason"], "PreflightFailed", "{st:#}");
    assert_eq!(st["history"][0]["result"], "rejected_preflight");
    // Remembered as failed: not tried again.
    let again = env.dockop().run(["apply", "-f", file]);
    assert!(again.stdout.contains("failed before"), "{again}");
    assert_eq!(env.containers(), vec![name]);
}

#[test]
fn preflight_rejects_real_opencode_bad_release_with_zero_downtime() {
    rejected_with_zero_downtime(
        "pf-opencode",
        OPENCODE_1_18_34,
        OPENCODE_BAD,
        OPENCODE_PORT,
        "HTTP 401",
    );
}

#[test]
fn preflight_rejects_crash_with_zero_downtime() {
    rejected_with_zero_downtime("pf-crash", WEB_V1, WEB_CRASH, WEB_PORT, "code 3");
}

#[test]
fn preflight_rejects_unhealthy_with_zero_downtime() {
    rejected_with_zero_downtime("pf-unhealthy", WEB_V1, WEB_UNHEALTHY, WEB_PORT, "HTTP 500");
}

#[test]
fn preflight_rejects_tarpit_with_zero_downtime() {
    rejected_with_zero_downtime(
        "pf-tarpit",
        WEB_V1,
        WEB_TARPIT,
        WEB_PORT,
        "no answer within the probe timeout",
    );
}

#[test]
fn good_image_passes_preflight_then_updates() {
    let env = TestEnv::new("pf-good");
    let (tag, _) = env.push_as(WEB_V1, "live");
    let name = env.name("app");
    let port = env.free_port();
    let file = env.write("app.yaml", &spec(&env, &name, &tag, port, WEB_PORT));
    let file = file.to_str().expect("utf8");
    env.dockop().run(["apply", "-f", file]).assert_success();
    env.push_as(WEB_V2, "live");
    let out = env.dockop().run(["apply", "-f", file]);
    out.assert_success();
    assert!(out.stderr.contains("preflight passed"), "{out}");
    let (_, body) = http_get(
        &format!("http://127.0.0.1:{port}{HEALTH_PATH}"),
        Duration::from_secs(2),
    )
    .expect("served");
    assert!(body.contains("\"2\""), "{body}");
    assert_eq!(env.containers(), vec![name]);
}

#[test]
fn leftover_preflight_container_is_removed_at_next_reconcile() {
    let env = TestEnv::new("pf-leftover");
    let (tag, _) = env.push_as(WEB_V1, "live");
    let name = env.name("app");
    let port = env.free_port();
    let file = env.write("app.yaml", &spec(&env, &name, &tag, port, WEB_PORT));
    let file = file.to_str().expect("utf8");
    env.dockop().run(["apply", "-f", file]).assert_success();
    // What a dockop killed in the middle of a preflight leaves behind.
    let leftover = format!("{name}-preflight-dead");
    docker_ok([
        "run",
        "-d",
        "--label",
        &env.label(),
        "--label",
        &format!("dockop.dev/name={name}"),
        "--label",
        "dockop.dev/role=preflight",
        "--name",
        &leftover,
        WEB_V1,
    ]);
    env.dockop().run(["apply", "-f", file]).assert_success();
    assert_eq!(env.containers(), vec![name]);
}
