//! End-to-end tests of `/metrics`: counters move by exactly what happened around a real update and a real
//! rollback, `object_info` keeps one series per object, a real Prometheus server scrapes dockop, and the
//! alert rules in `deploy/prometheus/rules.yaml` pass `promtool check rules`.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use dockop_e2e::images::*;
use dockop_e2e::*;

const TOKEN: &str = "e2e-metrics-token-77d1";

/// A web object following `image` (a per-test tag), registry checked every 10 s, health every second.
fn web_spec(env: &TestEnv, name: &str, image: &str) -> String {
    format!(
        "apiVersion: dockop.dev/v1alpha1
kind: Container
metadata:
  name: {name}
  labels: {labels}
spec:
  image: {image}
  health:
    path: {HEALTH_PATH}
    port: {WEB_PORT}
    intervalSeconds: 1
    timeoutSeconds: 2
    failureThreshold: 2
    startupDeadlineSeconds: 8
  update:
    checkIntervalSeconds: 10
    preflight: false
  stopTimeoutSeconds: 2
",
        labels = env.labels_yaml()
    )
}

/// `dockop run -f <dir>/spec --listen 127.0.0.1:<port>`, stopped on drop.
struct Operator {
    port: u16,
    run: Running,
}

impl Operator {
    fn start(env: &TestEnv) -> Self {
        let port = env.free_port();
        let token = env.write("secrets/token", TOKEN);
        let spec = env.dir().join("spec");
        let run = env.dockop().spawn(
            [
                "run".as_ref(),
                "-f".as_ref(),
                spec.as_os_str(),
                "--listen".as_ref(),
                format!("127.0.0.1:{port}").as_ref(),
                "--reconcile-token-file".as_ref(),
                token.as_os_str(),
            ] as [&std::ffi::OsStr; 7],
            env.dir(),
        );
        let op = Operator { port, run };
        assert!(
            wait_until(Duration::from_secs(60), || op
                .get("/readyz")
                .is_ok_and(|(c, _)| c == 200)),
            "dockop run never became ready\n{}",
            op.run.stderr()
        );
        op
    }

    fn get(&self, path: &str) -> Result<(u16, String), String> {
        http_get(
            &format!("http://127.0.0.1:{}{path}", self.port),
            Duration::from_secs(5),
        )
    }

    fn metrics(&self) -> String {
        let (code, text) = self.get("/metrics").expect("GET /metrics");
        assert_eq!(code, 200);
        text
    }

    fn health(&self, name: &str) -> serde_json::Value {
        let (_, body) = self.get(&format!("/health/{name}")).expect("GET /health");
        serde_json::from_str(&body).unwrap_or(serde_json::Value::Null)
    }

    /// Nudges the controller (`POST /reconcile/{name}`); the registry answer may be cached up to
    /// `checkIntervalSeconds`, after which the controller's own requeue also asks.
    fn nudge(&self, name: &str) {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).expect("connect");
        let req = format!(
            "POST /reconcile/{name} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        s.write_all(req.as_bytes()).expect("write");
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        assert!(out.starts_with("HTTP/1.1 202"), "{out}");
    }
}

/// Samples of `metric` whose labels contain every `key="value"` of `labels`, summed (0 when none).
fn value(text: &str, metric: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{metric}{{")))
        .filter(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn series<'a>(text: &'a str, metric: &str, name: &str) -> Vec<&'a str> {
    let label = format!("name=\"{name}\"");
    text.lines()
        .filter(|l| l.starts_with(&format!("{metric}{{")) && l.contains(&label))
        .collect()
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct Counters {
    succeeded: f64,
    rolled_back: f64,
    failed: f64,
    rollbacks: f64,
}

fn counters(text: &str, name: &str) -> Counters {
    let upd = |r| {
        value(
            text,
            "dockop_updates_total",
            &[("name", name), ("result", r)],
        )
    };
    Counters {
        succeeded: upd("succeeded"),
        rolled_back: upd("rolled_back"),
        failed: upd("failed"),
        rollbacks: value(text, "dockop_rollbacks_total", &[("name", name)]),
    }
}

#[test]
fn update_and_rollback_move_the_counters_by_exactly_one() {
    let env = TestEnv::new("metrics-update");
    let name = env.name("web");
    let (tag, d1) = env.push_as(WEB_V1, "app");
    env.write("spec/web.yaml", &web_spec(&env, &name, &tag));
    let op = Operator::start(&env);
    assert!(
        wait_until(Duration::from_secs(60), || op.health(&name)["healthy"]
            == true),
        "v1 never healthy\n{}",
        op.run.stderr()
    );
    let text = op.metrics();
    let c0 = counters(&text, &name);
    let info = series(&text, "dockop_object_info", &name);
    assert_eq!(info.len(), 1, "{info:?}");
    assert!(info[0].contains(&d1), "{info:?}");

    // A good update: v2 pushed to the followed tag.
    let (_, d2) = env.push_as(WEB_V2, "app");
    op.nudge(&name);
    let updated = wait_until(Duration::from_secs(90), || {
        let h = op.health(&name);
        h["healthy"] == true && h["digest"] == d2.as_str() && h["version"] == "2"
    });
    assert!(
        updated,
        "no update to v2: {}\n{}",
        op.health(&name),
        op.run.stderr()
    );
    let moved = wait_until(Duration::from_secs(10), || {
        counters(&op.metrics(), &name).succeeded == c0.succeeded + 1.0
    });
    let text = op.metrics();
    let c1 = counters(&text, &name);
    assert!(moved, "succeeded did not move by one: {c0:?} -> {c1:?}");
    assert_eq!(
        c1,
        Counters {
            succeeded: c0.succeeded + 1.0,
            ..c0
        }
    );
    let info = series(&text, "dockop_object_info", &name);
    assert_eq!(info.len(), 1, "stale object_info series: {info:?}");
    assert!(
        info[0].contains(&d2) && info[0].contains("app_version=\"2\""),
        "{info:?}"
    );

    // A bad update: an image that answers 500, no preflight -> rolled back to v2.
    let (_, d3) = env.push_as(WEB_UNHEALTHY, "app");
    op.nudge(&name);
    let rolled_back = wait_until(Duration::from_secs(120), || {
        counters(&op.metrics(), &name).rolled_back >= c1.rolled_back + 1.0
    });
    assert!(rolled_back, "no rollback\n{}", op.run.stderr());
    assert!(
        wait_until(Duration::from_secs(30), || {
            let h = op.health(&name);
            h["healthy"] == true && h["digest"] == d2.as_str()
        }),
        "not back on v2: {}",
        op.health(&name)
    );
    // Let any further reconcile of the failed target happen; it must not count again.
    std::thread::sleep(Duration::from_secs(12));
    let text = op.metrics();
    let c2 = counters(&text, &name);
    assert_eq!(
        c2,
        Counters {
            rolled_back: c1.rolled_back + 1.0,
            rollbacks: c1.rollbacks + 1.0,
            ..c1
        },
        "after the rollback"
    );
    let info = series(&text, "dockop_object_info", &name);
    assert_eq!(info.len(), 1, "stale object_info series: {info:?}");
    assert!(info[0].contains(&d2) && !info[0].contains(&d3), "{info:?}");
    // Every metric of the guide is exported with its HELP text by now.
    for m in [
        "reconcile",
        "reconcile_duration_seconds",
        "drift_detected",
        "updates",
        "rollbacks",
        "health_probe_failures",
        "ready",
        "object_info",
        "registry_checks",
        "engine_requests",
        "engine_request_duration_seconds",
        "last_successful_reconcile_timestamp_seconds",
        "source_revision_info",
    ] {
        assert!(
            text.contains(&format!("# HELP dockop_{m} ")),
            "no HELP for dockop_{m}"
        );
    }
    assert!(!text.contains(TOKEN), "the token leaked into a label");
}

/// A Prometheus server of the test's own (temp config and TSDB, free port), killed on drop.
struct Prometheus {
    child: Child,
    port: u16,
}

impl Prometheus {
    fn start(env: &TestEnv, target_port: u16) -> Self {
        let bin = which("prometheus").unwrap_or_else(|| {
            panic!("the `prometheus` binary is missing; fix: apt-get install -y prometheus (the test bed installs it)")
        });
        let port = env.free_port();
        let config = env.write(
            "prometheus/prometheus.yml",
            &format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {rules}\nscrape_configs:\n  - job_name: dockop\n    static_configs:\n      - targets: ['127.0.0.1:{target_port}']\n",
                rules = workspace_root().join("deploy/prometheus/rules.yaml").display()
            ),
        );
        let tsdb = env.dir().join("prometheus/data");
        let log = std::fs::File::create(env.dir().join("prometheus/log")).expect("log file");
        let child = Command::new(bin)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", tsdb.display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start prometheus");
        Prometheus { child, port }
    }

    fn api(&self, path: &str) -> Option<serde_json::Value> {
        let (code, body) = http_get(
            &format!("http://127.0.0.1:{}{path}", self.port),
            Duration::from_secs(5),
        )
        .ok()?;
        (code == 200)
            .then(|| serde_json::from_str(&body).ok())
            .flatten()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn which(bin: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(bin))
        .find(|p| p.is_file())
}

#[test]
fn a_real_prometheus_scrapes_dockop() {
    let env = TestEnv::new("metrics-prometheus");
    let name = env.name("web");
    env.write("spec/web.yaml", &web_spec(&env, &name, WEB_V1));
    let op = Operator::start(&env);
    assert!(wait_until(
        Duration::from_secs(60),
        || op.health(&name)["healthy"] == true
    ));
    let prom = Prometheus::start(&env, op.port);
    let mut last = None;
    let found = wait_until(Duration::from_secs(60), || {
        last = prom.api("/api/v1/query?query=dockop_ready");
        last.as_ref().is_some_and(|v| {
            v["data"]["result"].as_array().is_some_and(|r| {
                r.iter()
                    .any(|s| s["metric"]["name"] == name.as_str() && s["value"][1] == "1")
            })
        })
    });
    let log = std::fs::read_to_string(env.dir().join("prometheus/log")).unwrap_or_default();
    assert!(
        found,
        "dockop_ready{{name={name}}} not in Prometheus: {last:?}\n{log}"
    );
    // The scrape itself is healthy and the rules loaded.
    let targets = prom.api("/api/v1/targets").expect("targets");
    let health = targets["data"]["activeTargets"][0]["health"].clone();
    assert_eq!(health, "up", "{targets}");
    let rules = prom.api("/api/v1/rules").expect("rules");
    let groups = rules["data"]["groups"].as_array().map_or(0, Vec::len);
    assert!(groups > 0, "rules not loaded: {rules}");
    // Every query of the Grafana dashboard is valid PromQL for this server.
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(workspace_root().join("deploy/grafana/dashboard.json"))
            .expect("dashboard"),
    )
    .expect("dashboard JSON");
    let mut exprs: Vec<String> = dashboard["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .filter_map(|t| t["expr"].as_str().map(str::to_owned))
        .collect();
    exprs.extend(
        dashboard["annotations"]["list"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|a| a["expr"].as_str().map(str::to_owned)),
    );
    assert!(exprs.len() >= 10, "{exprs:?}");
    for e in exprs {
        let e = e.replace("$instance", ".*");
        let r = prom
            .api(&format!("/api/v1/query?query={}", url_encode(&e)))
            .unwrap_or_else(|| panic!("query failed: {e}"));
        assert_eq!(r["status"], "success", "{e}: {r}");
    }
    // Counters keep their _total name through OpenMetrics.
    let q = prom
        .api("/api/v1/query?query=dockop_reconcile_total")
        .expect("query");
    assert!(
        q["data"]["result"]
            .as_array()
            .is_some_and(|r| !r.is_empty()),
        "{q}"
    );
}

/// `promtool check WHAT FILE`, asserting success.
#[track_caller]
fn promtool_check(what: &str, file: &Path) {
    let promtool = which("promtool").unwrap_or_else(|| {
        panic!("`promtool` is missing; fix: apt-get install -y prometheus (it ships promtool)")
    });
    let out = Command::new(promtool)
        .args(["check", what])
        .arg(file)
        .output()
        .expect("run promtool");
    assert!(
        out.status.success(),
        "promtool check {what} {}:\n{}{}",
        file.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn promtool_accepts_the_fleet_scrape_config() {
    promtool_check(
        "config",
        &workspace_root().join("deploy/prometheus/scrape-fleet.yaml"),
    );
}

#[test]
fn promtool_accepts_the_alert_rules() {
    let rules = workspace_root().join("deploy/prometheus/rules.yaml");
    promtool_check("rules", &rules);
    // Every alert links to a section of docs/operations.md.
    let text = std::fs::read_to_string(&rules).expect("rules");
    let alerts = text.matches("- alert:").count();
    assert!(alerts >= 5, "{alerts} alerts");
    assert_eq!(
        text.matches("runbook_url:").count(),
        alerts,
        "every alert has a runbook"
    );
}
