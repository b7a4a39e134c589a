//! End-to-end tests of the HTTP server of `dockop run` (`/health`, `/livez`, `/readyz`, `/status`,
//! `POST /reconcile/{name}`, `POST /hooks/git`): the real binary, the real engine and the test-bed
//! images. Apps are made unhealthy for real: the health file of the busybox web image is replaced with
//! `docker exec`, the container is paused, or its HTTP server is swapped for a tarpit that never answers.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use dockop_e2e::images::*;
use dockop_e2e::*;

const TOKEN: &str = "e2e-reconcile-token-1f3a";
const HOOK_SECRET: &str = "e2e-webhook-secret-9c2e";

/// A web object without published ports; health every second. `command` keeps the container alive while
/// its httpd is swapped (`httpd` daemonizes, `sleep` holds PID 2 under the init).
fn web_spec(env: &TestEnv, name: &str, image: &str) -> String {
    format!(
        "apiVersion: dockop.dev/v1alpha1
kind: Container
metadata:
  name: {name}
  labels: {labels}
spec:
  image: {image}
  command: [\"sh\", \"-c\", \"httpd -p {WEB_PORT} -h /www && exec sleep 2147483647\"]
  health:
    path: {HEALTH_PATH}
    port: {WEB_PORT}
    intervalSeconds: 1
    timeoutSeconds: 2
    startupDeadlineSeconds: 30
  stopTimeoutSeconds: 2
",
        labels = env.labels_yaml()
    )
}

/// `dockop run` on a spec dir with its own listen port; stopped on drop (before the [`TestEnv`]).
struct Operator {
    port: u16,
    run: Running,
}

impl Operator {
    fn start(env: &TestEnv, spec_dir: &str, secrets: bool) -> Self {
        let port = env.free_port();
        let listen = format!("127.0.0.1:{port}");
        let mut args: Vec<String> = [
            "run",
            "-f",
            env.dir().join(spec_dir).to_str().expect("utf-8 path"),
            "--listen",
            &listen,
            "--resync-seconds",
            "600",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        if secrets {
            let token: PathBuf = env.write("secrets/token", &format!("{TOKEN}\n"));
            let hook: PathBuf = env.write("secrets/hook", &format!("{HOOK_SECRET}\n"));
            args.extend([
                "--reconcile-token-file".to_owned(),
                token.display().to_string(),
                "--webhook-secret-file".to_owned(),
                hook.display().to_string(),
            ]);
        }
        let run = env.dockop().spawn(&args, env.dir());
        let op = Operator { port, run };
        let up = wait_until(Duration::from_secs(60), || {
            op.request("GET", "/readyz", &[], b"")
                .is_ok_and(|r| r.status == 200)
        });
        assert!(up, "dockop run never became ready\n{}", op.run.stderr());
        op
    }

    fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<Reply, String> {
        request(self.port, method, path, headers, body)
    }

    fn get(&self, path: &str) -> Reply {
        self.request("GET", path, &[], b"")
            .unwrap_or_else(|e| panic!("GET {path}: {e}\n{}", self.run.stderr()))
    }

    fn health(&self, name: &str) -> (u16, serde_json::Value) {
        let r = self.get(&format!("/health/{name}"));
        (r.status, r.json())
    }

    /// Waits until `/health/{name}` answers `status`; returns the seconds it took and the body.
    fn wait_health(&self, name: &str, status: u16, within: Duration) -> (f64, serde_json::Value) {
        let started = Instant::now();
        let mut last = serde_json::Value::Null;
        while started.elapsed() < within {
            let (code, body) = self.health(name);
            if code == status {
                return (started.elapsed().as_secs_f64(), body);
            }
            last = body;
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "/health/{name} not {status} within {within:?}; last: {last}\n{}",
            self.run.stderr()
        );
    }
}

/// An HTTP answer with its headers.
#[derive(Debug)]
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
}

/// One HTTP/1.1 exchange (`Connection: close`) with headers; reads to EOF.
fn request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<Reply, String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes())
        .map_err(|e| format!("write: {e}"))?;
    s.write_all(body).map_err(|e| format!("write body: {e}"))?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).map_err(|e| format!("read: {e}"))?;
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| format!("no header end: {}", String::from_utf8_lossy(&raw)))?;
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("bad status line: {head}"))?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    Ok(Reply {
        status,
        headers,
        body: raw[end + 4..].to_vec(),
    })
}

fn hmac_sha256_hex(key: &[u8], msg: &[u8]) -> String {
    // HMAC from SHA-256 via `sha256sum`-free pure Rust would need a crate; openssl is on the test bed.
    let out = std::process::Command::new("openssl")
        .args(["dgst", "-sha256", "-hmac"])
        .arg(std::str::from_utf8(key).expect("utf-8 key"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            c.stdin.take().expect("stdin").write_all(msg)?;
            c.wait_with_output()
        })
        .expect("run openssl dgst (package openssl)");
    let text = String::from_utf8_lossy(&out.stdout);
    text.rsplit(' ')
        .next()
        .unwrap_or_default()
        .trim()
        .to_owned()
}

#[test]
fn endpoints_auth_and_signatures_against_the_real_server() {
    let env = TestEnv::new("http-endpoints");
    let name = env.name("web");
    env.write("spec/web.yaml", &web_spec(&env, &name, WEB_V1));
    let op = Operator::start(&env, "spec", true);
    op.wait_health(&name, 200, Duration::from_secs(60));

    // Every answer carries Content-Length.
    for path in ["/livez", "/readyz", "/health", "/metrics", "/nope"] {
        let r = op.get(path);
        let len: usize = r
            .header("content-length")
            .unwrap_or_else(|| panic!("{path}: no Content-Length: {r:?}"))
            .parse()
            .expect("number");
        assert_eq!(len, r.body.len(), "{path}");
    }
    assert_eq!(op.get("/livez").status, 200);
    assert_eq!(op.get("/readyz").json()["ready"], true);

    let all = op.get("/health");
    assert_eq!(all.status, 200, "{}", all.text());
    let obj = &all.json()["objects"][&name];
    assert_eq!(obj["healthy"], true);
    assert_eq!(obj["version"], "1");
    assert_eq!(obj["containerState"], "running");
    assert!(
        obj["digest"]
            .as_str()
            .is_some_and(|d| d.starts_with("sha256:")),
        "{obj}"
    );
    assert!(obj["uptimeSeconds"].is_u64(), "{obj}");
    // Memory comes from engine stats, refreshed in the background.
    assert!(
        wait_until(Duration::from_secs(15), || {
            op.health(&name).1["memoryUsageMb"]
                .as_f64()
                .is_some_and(|m| m > 0.0)
        }),
        "no memoryUsageMb"
    );
    let (code, body) = op.health("nope");
    assert_eq!(code, 404);
    assert!(body["error"].is_string());

    // /status: the token, and the same JSON as `dockop status -o json`.
    assert_eq!(op.get("/status").status, 401);
    let bearer = format!("Bearer {TOKEN}");
    let auth = [("Authorization", bearer.as_str())];
    let same = wait_until(Duration::from_secs(20), || {
        let r = op
            .request("GET", "/status", &auth, b"")
            .expect("GET /status");
        assert_eq!(r.status, 200);
        let cli = env.dockop().run(["status", "-o", "json"]);
        cli.assert_success();
        r.text() == cli.stdout
    });
    assert!(same, "/status differs from `dockop status -o json`");

    // POST /reconcile/{name}.
    let path = format!("/reconcile/{name}");
    assert_eq!(
        op.request("POST", &path, &[], b"").expect("post").status,
        401
    );
    assert_eq!(
        op.request("POST", &path, &[("Authorization", "Bearer wrong")], b"")
            .expect("post")
            .status,
        401
    );
    assert_eq!(
        op.request("POST", "/reconcile/nope", &auth, b"")
            .expect("post")
            .status,
        404
    );
    let r = op.request("POST", &path, &auth, b"").expect("post");
    assert_eq!(r.status, 202, "{}", r.text());

    // POST /hooks/git: GitHub and Gitea signatures.
    let payload = br#"{"ref":"refs/heads/main","after":"0123456789abcdef"}"#;
    let sig = hmac_sha256_hex(HOOK_SECRET.as_bytes(), payload);
    assert_eq!(sig.len(), 64, "openssl output: {sig}");
    let github = format!("sha256={sig}");
    let r = op
        .request(
            "POST",
            "/hooks/git",
            &[("X-Hub-Signature-256", &github), ("X-GitHub-Event", "push")],
            payload,
        )
        .expect("post");
    assert_eq!(r.status, 202, "{}", r.text());
    let r = op
        .request(
            "POST",
            "/hooks/git",
            &[("X-Gitea-Signature", &sig), ("X-Gitea-Event", "push")],
            payload,
        )
        .expect("post");
    assert_eq!(r.status, 202, "{}", r.text());
    let bad = format!("sha256={}", hmac_sha256_hex(b"not-the-secret", payload));
    for headers in [
        vec![("X-Hub-Signature-256", bad.as_str())],
        vec![("X-Gitea-Signature", &bad[7..])],
        vec![],
    ] {
        let r = op
            .request("POST", "/hooks/git", &headers, payload)
            .expect("post");
        assert_eq!(r.status, 401, "{headers:?}: {}", r.text());
    }
    let r = op
        .request(
            "POST",
            "/hooks/git",
            &[("X-Hub-Signature-256", &github)],
            b"{\"ref\":\"tampered\"}",
        )
        .expect("post");
    assert_eq!(r.status, 401);
    // Too large (1 MiB limit).
    let big = vec![b' '; 1024 * 1024 + 16];
    let big_sig = format!("sha256={}", hmac_sha256_hex(HOOK_SECRET.as_bytes(), &big));
    let r = op.request(
        "POST",
        "/hooks/git",
        &[("X-Hub-Signature-256", &big_sig)],
        &big,
    );
    assert!(
        r.is_err() || r.as_ref().is_ok_and(|r| r.status == 413),
        "{r:?}"
    );

    // The secrets never reach the logs.
    let logs = format!("{}{}", op.run.stderr(), op.run.stdout());
    assert!(
        !logs.contains(TOKEN) && !logs.contains(HOOK_SECRET),
        "a secret was logged"
    );
    // The app still runs fine after all that.
    assert_eq!(op.health(&name).0, 200);
}

#[test]
fn control_endpoints_are_off_without_secrets() {
    let env = TestEnv::new("http-nosecrets");
    let name = env.name("web");
    env.write("spec/web.yaml", &web_spec(&env, &name, WEB_V1));
    let op = Operator::start(&env, "spec", false);
    let auth = [("Authorization", "Bearer anything")];
    assert_eq!(
        op.request("GET", "/status", &auth, b"")
            .expect("get")
            .status,
        404
    );
    assert_eq!(
        op.request("POST", &format!("/reconcile/{name}"), &auth, b"")
            .expect("post")
            .status,
        404
    );
    assert_eq!(
        op.request("POST", "/hooks/git", &[("X-Gitea-Signature", "00")], b"{}")
            .expect("post")
            .status,
        404
    );
    for path in ["/metrics", "/livez", "/readyz"] {
        assert_eq!(op.get(path).status, 200, "{path}");
    }
    op.wait_health(&name, 200, Duration::from_secs(60));
}

#[test]
fn health_follows_the_app_within_two_probe_intervals() {
    let env = TestEnv::new("http-health");
    let name = env.name("web");
    let other = env.name("other");
    env.write("spec/web.yaml", &web_spec(&env, &name, WEB_V1));
    env.write("spec/other.yaml", &web_spec(&env, &other, WEB_V1));
    let op = Operator::start(&env, "spec", false);
    op.wait_health(&name, 200, Duration::from_secs(60));
    op.wait_health(&other, 200, Duration::from_secs(60));
    assert_eq!(op.get("/health").status, 200);
    let failures = |op: &Operator| {
        metric_value(
            &op.get("/metrics").text(),
            "dockop_health_probe_failures_total",
            &name,
        )
    };

    // 1. The app says it is unhealthy: HTTP 200 with {"healthy":false}.
    let before = failures(&op);
    docker_ok([
        "exec",
        &name,
        "sh",
        "-c",
        r#"printf '{"healthy":false,"version":"1"}' > /www/global/health"#,
    ]);
    let (secs, body) = op.wait_health(&name, 503, Duration::from_secs(5));
    assert!(secs <= 2.3, "503 after {secs:.2} s (two intervals: 2 s)");
    assert_eq!(body["healthy"], false);
    assert_eq!(body["containerState"], "running");
    let all = op.get("/health");
    assert_eq!(all.status, 503, "one unhealthy object makes /health 503");
    assert_eq!(all.json()["objects"][&other]["healthy"], true);
    assert!(
        wait_until(Duration::from_secs(3), || failures(&op) > before),
        "dockop_health_probe_failures_total did not move"
    );
    assert_eq!(
        metric_value(&op.get("/metrics").text(), "dockop_ready", &name),
        0.0
    );
    docker_ok([
        "exec",
        &name,
        "sh",
        "-c",
        r#"printf '{"healthy":true,"version":"1"}' > /www/global/health"#,
    ]);
    let (secs, _) = op.wait_health(&name, 200, Duration::from_secs(5));
    assert!(secs <= 2.3, "200 again after {secs:.2} s");
    assert_eq!(op.get("/health").status, 200);
    assert!(wait_until(Duration::from_secs(3), || {
        metric_value(&op.get("/metrics").text(), "dockop_ready", &name) == 1.0
    }));

    // 2. The container is paused.
    docker_ok(["pause", &name]);
    let (secs, body) = op.wait_health(&name, 503, Duration::from_secs(5));
    assert!(secs <= 2.3, "503 after {secs:.2} s");
    assert_eq!(body["containerState"], "paused");
    docker_ok(["unpause", &name]);
    op.wait_health(&name, 200, Duration::from_secs(5));

    // 3. The app hangs (accepts, never answers; probe timeout 2 s): 503 within two intervals, and every
    //    /health answer stays immediate.
    hang(&name);
    let started = Instant::now();
    let mut slowest = Duration::ZERO;
    let mut went_503 = None;
    while started.elapsed() < Duration::from_secs(6) {
        let t = Instant::now();
        let (code, _) = op.health(&name);
        slowest = slowest.max(t.elapsed());
        if code == 503 && went_503.is_none() {
            went_503 = Some(started.elapsed());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let went_503 = went_503.expect("/health never went 503 while the app hung");
    assert!(went_503.as_secs_f64() <= 2.5, "503 after {went_503:?}");
    assert!(
        slowest < Duration::from_millis(500),
        "slowest /health answer {slowest:?}"
    );
    assert_eq!(op.health(&name).1["healthy"], false);
    // Back to a real server.
    docker_ok([
        "exec",
        &name,
        "sh",
        "-c",
        // The port is free only once every nc has exited: retry for up to 5 s.
        "kill $(pidof nc); i=0; while [ $i -lt 50 ]; do httpd -p 8080 -h /www && exit 0; i=$((i+1)); sleep 0.1; done; exit 1",
    ]);
    op.wait_health(&name, 200, Duration::from_secs(8));
}

/// Load balancers and uptime monitors poll every 30 s to 5 min, longer than the monitor's watch window
/// (30 s): each of their requests comes after an idle spell. A healthy app must answer 200 every time,
/// and an app that hung while nobody watched must answer 503 at the first request after it, within one
/// probe timeout (2 s) and the wake-up.
#[test]
fn health_after_idle_spells_is_200_for_a_healthy_app_and_503_for_a_hung_one() {
    let env = TestEnv::new("http-idle");
    let name = env.name("web");
    env.write("spec/web.yaml", &web_spec(&env, &name, WEB_V1));
    let op = Operator::start(&env, "spec", false);
    op.wait_health(&name, 200, Duration::from_secs(60));
    for idle in [45, 120] {
        std::thread::sleep(Duration::from_secs(idle));
        let t = Instant::now();
        let all = op.get("/health");
        assert_eq!(
            all.status,
            200,
            "/health after {idle} s without requests: {}",
            all.text()
        );
        eprintln!("/health after {idle} s idle: 200 in {:?}", t.elapsed());
        assert_eq!(all.json()["objects"][&name]["version"], "1");
    }
    // The app hangs (accepts, never answers) during the next idle spell.
    hang(&name);
    std::thread::sleep(Duration::from_secs(45));
    let t = Instant::now();
    let (code, body) = op.health(&name);
    let took = t.elapsed();
    eprintln!("/health/{name} of a hung app after 45 s idle: {code} in {took:?}");
    assert_eq!(code, 503, "{body}");
    assert_eq!(
        body["detail"], "no answer within the probe timeout",
        "{body}"
    );
    assert!(
        took < Duration::from_secs(5),
        "the first request after the idle spell waited {took:?}"
    );
}

/// Makes the web app in container `name` hang: its server is replaced by one that accepts connections
/// and never answers.
fn hang(name: &str) {
    docker_ok(["exec", name, "sh", "-c", "kill $(pidof httpd)"]);
    docker_ok([
        "exec",
        "-d",
        name,
        "nc",
        "-ll",
        "-p",
        &WEB_PORT.to_string(),
        "-e",
        "/srv/tarpit",
    ]);
}

/// The value of `metric{name="<object>"}` (0 when absent).
fn metric_value(text: &str, metric: &str, object: &str) -> f64 {
    let label = format!("name=\"{object}\"");
    text.lines()
        .filter(|l| l.starts_with(&format!("{metric}{{")) && l.contains(&label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
