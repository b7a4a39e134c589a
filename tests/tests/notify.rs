//! End-to-end tests of notifications (issue 18): real rollbacks, preflight rejections, updates and invalid
//! edits reach local receivers (small HTTP servers on free 127.0.0.1 ports that record every request) in
//! the documented payloads; a receiver that is down at first still gets its message; `?events=` filters;
//! no token in logs, `/status`, `/metrics` or the state directory.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dockop_e2e::images::*;
use dockop_e2e::*;

/// One request a receiver saw.
#[derive(Debug, Clone)]
struct Seen {
    at: Instant,
    path: String,
    headers: Vec<(String, String)>,
    body: String,
}

impl Seen {
    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or(serde_json::Value::Null)
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A small HTTP server recording requests; answers 200 to each.
struct Receiver {
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Receiver {
    fn start(port: u16) -> Self {
        let listener = TcpListener::bind(("127.0.0.1", port)).expect("bind receiver");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let s = s.clone();
                std::thread::spawn(move || serve(conn, &s));
            }
        });
        Receiver { seen }
    }

    fn all(&self) -> Vec<Seen> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Generic messages with `event`.
    fn events(&self, event: &str) -> Vec<Seen> {
        self.all()
            .into_iter()
            .filter(|s| s.json()["event"] == event)
            .collect()
    }

    fn wait_for(&self, timeout: Duration, cond: impl Fn(&[Seen]) -> bool) -> bool {
        wait_until(timeout, || cond(&self.all()))
    }
}

fn serve(conn: TcpStream, seen: &Mutex<Vec<Seen>>) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(30)));
    let mut w = conn.try_clone().expect("clone");
    let mut r = BufReader::new(conn);
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let path = line
            .split_whitespace()
            .nth(1)
            .unwrap_or_default()
            .to_owned();
        let mut headers = Vec::new();
        loop {
            let mut h = String::new();
            if r.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
            }
        }
        let len: usize = headers
            .iter()
            .find(|(k, _)| k == "content-length")
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0; len];
        if r.read_exact(&mut body).is_err() {
            return;
        }
        seen.lock().unwrap_or_else(|e| e.into_inner()).push(Seen {
            at: Instant::now(),
            path,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        });
        if w.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
            .is_err()
        {
            return;
        }
    }
}

/// A web spec with preflight on or off.
fn spec(env: &TestEnv, name: &str, image: &str, port: u16, preflight: bool) -> String {
    env.web_spec(name, image, port)
        .replace("preflight: false", &format!("preflight: {preflight}"))
}

/// Writes a root-only notify file.
fn notify_file(env: &TestEnv, lines: &[String]) -> String {
    let path = env.write("notify", &(lines.join("\n") + "\n"));
    std::process::Command::new("chmod")
        .args(["600", path.to_str().expect("utf8")])
        .status()
        .expect("chmod");
    path.to_str().expect("utf8").to_owned()
}

/// Every file under `dir` as text.
fn read_tree(dir: &Path) -> String {
    let mut out = String::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.push_str(&read_tree(&p));
            } else if let Ok(b) = std::fs::read(&p) {
                out.push_str(&String::from_utf8_lossy(&b));
            }
        }
    }
    out
}

const TOKEN: &str = "S3CRETT0KEN";

#[test]
fn rollback_sends_one_rolled_back_message_before_apply_exits() {
    let env = TestEnv::new("nt-rollback");
    let (tag, good) = env.push_as(WEB_V1, "live");
    let name = env.name("app");
    let port = env.free_port();
    let file = env.write("app.yaml", &spec(&env, &name, &tag, port, false));
    let file = file.to_str().expect("utf8");
    let rport = env.free_port();
    let rx = Receiver::start(rport);
    let url = format!("generic+http://127.0.0.1:{rport}/hook/{TOKEN}");
    env.dockop()
        .run(["apply", "-f", file, "--notify", &url])
        .assert_success();
    let (_, bad) = env.push_as(WEB_UNHEALTHY, "live");
    let out = env
        .dockop()
        .run(["-vvv", "apply", "-f", file, "--notify", &url]);
    let ended = Instant::now();
    out.assert_code(1);
    assert!(out.stdout.contains("ROLLED BACK"), "{out}");
    assert!(
        rx.wait_for(Duration::from_secs(3), |s| !s.is_empty()),
        "no message within 3 s of apply's end: {out}"
    );
    std::thread::sleep(Duration::from_millis(500));
    let all = rx.all();
    assert_eq!(all.len(), 1, "exactly one message: {all:?}");
    let m = all[0].json();
    assert_eq!(m["event"], "rolled_back", "{m:#}");
    assert_eq!(m["object"], name.as_str());
    assert_eq!(m["digest"], bad.as_str(), "{m:#}");
    assert_eq!(m["previousDigest"], good.as_str(), "{m:#}");
    assert!(
        m["reason"].as_str().unwrap_or_default().contains("500"),
        "{m:#}"
    );
    assert!(
        m["time"].as_str().unwrap_or_default().ends_with('Z'),
        "{m:#}"
    );
    assert!(!m["host"].as_str().unwrap_or_default().is_empty());
    assert_eq!(all[0].path, format!("/hook/{TOKEN}"));
    // Delivered before apply returned (it waits for its messages).
    let lead = ended.saturating_duration_since(all[0].at);
    eprintln!(
        "figure: rolled_back delivered {:.3} s before apply exited (apply took {:.1} s)",
        lead.as_secs_f64(),
        out.elapsed.as_secs_f64()
    );
    assert!(!out.stderr.contains(TOKEN), "token in -vvv stderr");
    assert!(!out.stdout.contains(TOKEN), "token in stdout");
    assert!(
        !read_tree(&env.state_dir()).contains(TOKEN),
        "token in the state dir"
    );
    // apply of an invalid file: invalid_spec naming the file, with file:line.
    let broken = env.write(
        "broken.yaml",
        &spec(&env, &name, &tag, port, false)
            .replace("stopTimeoutSeconds: 2", "stopTimeoutSeconds: lots"),
    );
    let broken = broken.to_str().expect("utf8");
    env.dockop()
        .run(["apply", "-f", broken, "--notify", &url])
        .assert_code(1);
    let inv = rx.events("invalid_spec");
    assert_eq!(inv.len(), 1, "{:?}", rx.all());
    let m = inv[0].json();
    assert_eq!(m["object"], broken, "{m:#}");
    assert!(
        m["reason"]
            .as_str()
            .unwrap_or_default()
            .starts_with(&format!("{broken}:")),
        "{m:#}"
    );
}

#[test]
fn chat_services_get_their_documented_bodies_on_a_preflight_rejection() {
    let env = TestEnv::new("nt-chat");
    let (tag, _) = env.push_as(WEB_V1, "live");
    let name = env.name("app");
    let port = env.free_port();
    let file = env.write("app.yaml", &spec(&env, &name, &tag, port, true));
    let file = file.to_str().expect("utf8");
    env.dockop().run(["apply", "-f", file]).assert_success();
    env.push_as(WEB_CRASH, "live");
    let (sp, dp, np, dead) = (
        env.free_port(),
        env.free_port(),
        env.free_port(),
        env.free_port(),
    );
    let (slack, discord, ntfy) = (
        Receiver::start(sp),
        Receiver::start(dp),
        Receiver::start(np),
    );
    let nf = notify_file(
        &env,
        &[
            "# chat services, each on a local receiver".into(),
            format!("slack://hook:T000-B000-{TOKEN}@webhook?base=http://127.0.0.1:{sp}"),
            format!("discord://{TOKEN}@123456789?base=http://127.0.0.1:{dp}"),
            format!("ntfy://127.0.0.1:{np}/dockop-alerts?scheme=http&token={TOKEN}"),
            // Nothing listens here: apply waits 10 s, then says what it could not send.
            format!("generic+http://127.0.0.1:{dead}/{TOKEN}"),
        ],
    );
    let out = env
        .dockop()
        .env("DOCKOP_NOTIFY_FILE", &nf)
        .run(["-vvv", "apply", "-f", file]);
    out.assert_code(1);
    assert!(out.stdout.contains("REJECTED by preflight"), "{out}");
    assert!(
        out.stderr.contains(&format!(
            "notifications: 1 preflight_rejected message(s) to generic (127.0.0.1:{dead}) not sent within 10s"
        )),
        "{out}"
    );
    assert!(
        out.elapsed >= Duration::from_secs(10) && out.elapsed < Duration::from_secs(30),
        "apply waited {:?}",
        out.elapsed
    );
    for r in [&slack, &discord, &ntfy] {
        assert!(
            r.wait_for(Duration::from_secs(3), |s| s.len() == 1),
            "{out}"
        );
    }
    let s = &slack.all()[0];
    assert_eq!(s.path, format!("/services/T000/B000/{TOKEN}"));
    assert_eq!(s.header("content-type"), Some("application/json"));
    let text = s.json()["text"].as_str().unwrap_or_default().to_owned();
    assert!(
        text.contains("preflight_rejected") && text.contains(&name),
        "{s:?}"
    );
    let d = &discord.all()[0];
    assert_eq!(d.path, format!("/api/webhooks/123456789/{TOKEN}"));
    let content = d.json()["content"].as_str().unwrap_or_default().to_owned();
    assert!(content.contains("preflight_rejected"), "{d:?}");
    let n = &ntfy.all()[0];
    assert_eq!(n.path, "/dockop-alerts");
    assert_eq!(
        n.header("title"),
        Some(format!("dockop: {name} preflight_rejected").as_str())
    );
    assert_eq!(n.header("tags"), Some("no_entry,dockop"));
    assert_eq!(n.header("priority"), Some("4"));
    assert_eq!(
        n.header("authorization"),
        Some(format!("Bearer {TOKEN}").as_str())
    );
    assert!(
        n.body.contains("preflight_rejected") && n.body.contains("code 3"),
        "{n:?}"
    );
    assert!(!out.stderr.contains(TOKEN), "token in -vvv stderr");
    // A bad line in the file: file:line, never the token.
    let bad = notify_file(&env, &["".into(), format!("slack://hook:{TOKEN}@webhook")]);
    let out = env
        .dockop()
        .run(["apply", "-f", file, "--notify-file", &bad]);
    out.assert_code(1);
    assert!(
        out.stderr.contains(&format!("{bad}:2: slack: expected")),
        "{out}"
    );
    assert!(!out.stderr.contains(TOKEN), "{out}");
}

/// `dockop run`: a rollback while the receiver is down (20 s after the first failed attempt) is
/// delivered later; then a good update, an invalid edit and the object leaving the source each send
/// their event; `?events=` keeps a second target to `updated`; no token in stderr at -vvv, `/status`,
/// `/metrics` or the state dir.
#[test]
fn run_retries_until_the_receiver_is_up_and_reports_updates_and_invalid_edits() {
    let env = TestEnv::new("nt-run");
    let (v1, _) = env.push_as(WEB_V1, "v1");
    let (v2, v2_digest) = env.push_as(WEB_V2, "v2");
    let (bad, bad_digest) = env.push_as(WEB_UNHEALTHY, "bad");
    let name = env.name("app");
    let port = env.free_port();
    let dir = env.dir().join("src");
    std::fs::create_dir_all(&dir).expect("src dir");
    let app = dir.join("app.yaml");
    std::fs::write(&app, spec(&env, &name, &v1, port, false)).expect("write");
    let (late_port, filtered_port) = (env.free_port(), env.free_port());
    let filtered = Receiver::start(filtered_port);
    let nf = notify_file(
        &env,
        &[
            format!("generic+http://127.0.0.1:{late_port}/late/{TOKEN}"),
            format!("generic+http://127.0.0.1:{filtered_port}/only-updates/{TOKEN}?events=updated"),
        ],
    );
    let listen_port = env.free_port();
    let listen = format!("127.0.0.1:{listen_port}");
    let started = Instant::now();
    let mut run = env.dockop().spawn(
        [
            "-vvv",
            "run",
            "--listen",
            &listen,
            "--notify-file",
            &nf,
            "-f",
            dir.to_str().expect("utf8"),
        ],
        env.dir(),
    );
    let health = format!("http://127.0.0.1:{port}{HEALTH_PATH}");
    assert!(
        wait_until(Duration::from_secs(30), || served_version(port).as_deref()
            == Some("1")),
        "v1 never served on {health}: {}",
        run.stderr()
    );
    std::fs::write(&app, spec(&env, &name, &bad, port, false)).expect("write");
    let edited = Instant::now();
    // The rollback happens while nothing listens on late_port.
    assert!(
        wait_until(Duration::from_secs(40), || run
            .stderr()
            .contains("notification not delivered yet")),
        "no failed attempt logged: {}",
        run.stderr()
    );
    // Down for 20 s after the first failed attempt.
    let first_failure = Instant::now();
    std::thread::sleep(Duration::from_secs(20));
    let up = Instant::now();
    let late = Receiver::start(late_port);
    assert!(
        late.wait_for(Duration::from_secs(70), |s| !s.is_empty()),
        "rolled_back never delivered: {}",
        run.stderr()
    );
    let got = late.all();
    assert_eq!(got.len(), 1, "{got:?}");
    let m = got[0].json();
    assert_eq!(m["event"], "rolled_back", "{m:#}");
    assert_eq!(m["digest"], bad_digest.as_str());
    let retries: Vec<String> = run
        .stderr()
        .lines()
        .filter(|l| l.contains("notification not delivered yet") || l.contains("notification sent"))
        .map(|l| l.chars().take(200).collect())
        .collect();
    eprintln!(
        "figure: first failed attempt seen {:.1} s after dockop run started; receiver up {:.1} s after the edit; delivered {:.1} s after it came up, {:.1} s after the edit; attempts:\n{}",
        first_failure.duration_since(started).as_secs_f64(),
        up.duration_since(edited).as_secs_f64(),
        got[0].at.duration_since(up).as_secs_f64(),
        got[0].at.duration_since(edited).as_secs_f64(),
        retries.join("\n")
    );
    assert!(
        filtered.all().is_empty(),
        "the filtered target got {:?}",
        filtered.all()
    );

    // A good update.
    std::fs::write(&app, spec(&env, &name, &v2, port, false)).expect("write");
    assert!(
        late.wait_for(Duration::from_secs(40), |s| s
            .iter()
            .any(|x| x.json()["event"] == "updated")),
        "no updated message: {}",
        run.stderr()
    );
    let up = late.events("updated");
    assert_eq!(up[0].json()["digest"], v2_digest.as_str());
    assert!(filtered.wait_for(Duration::from_secs(5), |s| s.len() == 1));
    assert_eq!(filtered.all()[0].json()["event"], "updated");

    // An invalid edit: file:line in the message; the object keeps v2.
    let text = spec(&env, &name, &v2, port, false)
        .replace("stopTimeoutSeconds: 2", "stopTimeoutSeconds: lots");
    std::fs::write(&app, text).expect("write");
    assert!(
        late.wait_for(Duration::from_secs(30), |s| s
            .iter()
            .any(|x| x.json()["event"] == "invalid_spec")),
        "no invalid_spec message: {}",
        run.stderr()
    );
    let inv = late.events("invalid_spec");
    let reason = inv[0].json()["reason"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(reason.contains("app.yaml:"), "{reason}");
    assert!(
        reason
            .split("app.yaml:")
            .nth(1)
            .and_then(|r| r.split(':').next())
            .is_some_and(|n| n.parse::<u32>().is_ok()),
        "no line number: {reason}"
    );
    assert_eq!(filtered.all().len(), 1, "filter let more through");

    // The object leaves the source (no --prune): orphaned, container left running.
    std::fs::remove_file(&app).expect("rm");
    assert!(
        late.wait_for(Duration::from_secs(30), |s| s
            .iter()
            .any(|x| x.json()["event"] == "orphaned")),
        "no orphaned message: {}",
        run.stderr()
    );
    assert_eq!(late.events("orphaned")[0].json()["object"], name.as_str());
    assert_eq!(
        late.events("rolled_back").len(),
        1,
        "one rolled_back in all"
    );

    // No token anywhere dockop shows things.
    let (_, status) =
        http_get(&format!("http://{listen}/status"), Duration::from_secs(5)).expect("/status");
    let (_, metrics) =
        http_get(&format!("http://{listen}/metrics"), Duration::from_secs(5)).expect("/metrics");
    assert!(
        metrics.contains("dockop_notifications_total{service=\"generic\",result=\"retried\"}"),
        "{metrics}"
    );
    assert!(metrics.contains("result=\"filtered\""), "{metrics}");
    run.stop(Duration::from_secs(10));
    let stderr = run.stderr();
    for (what, text) in [
        ("stderr at -vvv", stderr.as_str()),
        ("/status", status.as_str()),
        ("/metrics", metrics.as_str()),
        ("state dir", read_tree(&env.state_dir()).as_str()),
    ] {
        assert!(!text.contains(TOKEN), "token in {what}");
    }
}

/// A local HTTPS receiver with its own CA: `(ca.pem path, port, file the first POST body is written to)`.
fn https_receiver(env: &TestEnv) -> (String, u16, std::path::PathBuf, std::process::Child) {
    let dir = env.dir().join("tls");
    std::fs::create_dir_all(&dir).expect("tls dir");
    let sh = |script: &str| {
        let ok = std::process::Command::new("sh")
            .args(["-c", script])
            .current_dir(&dir)
            .output()
            .expect("openssl");
        assert!(
            ok.status.success(),
            "{}",
            String::from_utf8_lossy(&ok.stderr)
        );
    };
    sh(
        "openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=dockop-test-ca -keyout ca.key -out ca.pem",
    );
    sh(
        "openssl req -newkey rsa:2048 -nodes -subj /CN=127.0.0.1 -keyout server.key -out server.csr",
    );
    sh(
        "printf 'subjectAltName=IP:127.0.0.1\\n' > san.ext && openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 1 -extfile san.ext -out server.pem",
    );
    let port = env.free_port();
    let got = dir.join("got.json");
    let script = format!(
        r#"
import http.server, ssl
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get('Content-Length', 0)))
        open({got:?}, 'wb').write(body)
        self.send_response(200); self.send_header('Content-Length', '0'); self.end_headers()
    def log_message(self, *a): pass
s = http.server.HTTPServer(('127.0.0.1', {port}), H)
c = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER); c.load_cert_chain('server.pem', 'server.key')
s.socket = c.wrap_socket(s.socket, server_side=True)
s.serve_forever()
"#,
        got = got.display().to_string()
    );
    let child = std::process::Command::new("python3")
        .args(["-c", &script])
        .current_dir(&dir)
        .spawn()
        .expect("python3");
    assert!(
        wait_until(Duration::from_secs(10), || std::net::TcpStream::connect((
            "127.0.0.1",
            port
        ))
        .is_ok()),
        "the HTTPS receiver did not start"
    );
    (dir.join("ca.pem").display().to_string(), port, got, child)
}

#[test]
fn https_targets_are_sent_over_verified_tls() {
    let env = TestEnv::new("nt-https");
    let (ca, port, got, mut child) = https_receiver(&env);
    let broken = env.write(
        "broken.yaml",
        &spec(&env, &env.name("web"), WEB_V1, env.free_port(), false)
            .replace("stopTimeoutSeconds: 2", "stopTimeoutSeconds: lots"),
    );
    let broken = broken.to_str().expect("utf8");
    let url = format!("generic+https://127.0.0.1:{port}/hook");
    // A certificate the machine does not trust: not sent (apply says so after its 10 s wait).
    let out = env
        .dockop()
        .env("SSL_CERT_FILE", "/nonexistent/ca.pem")
        .run(["apply", "-f", broken, "--notify", &url]);
    out.assert_code(1);
    assert!(
        !got.exists(),
        "sent to a server whose certificate is not trusted"
    );
    assert!(out.stderr.contains("not sent within"), "{out}");
    // Trusting the test CA (SSL_CERT_FILE, as for the system's bundle): delivered over TLS.
    let out = env
        .dockop()
        .env("SSL_CERT_FILE", &ca)
        .run(["apply", "-f", broken, "--notify", &url]);
    out.assert_code(1);
    assert!(
        wait_until(Duration::from_secs(5), || got.exists()),
        "nothing arrived over HTTPS\n{out}"
    );
    let body: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&got).expect("body")).expect("json");
    assert_eq!(body["event"], "invalid_spec", "{body:#}");
    let _ = child.kill();
    let _ = child.wait();
}
