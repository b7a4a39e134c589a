//! End-to-end tests of health checks that authenticate (issue 14), on the real OpenCode image with
//! `OPENCODE_SERVER_PASSWORD` from a file: the app answers 401 without `opencode:<password>`, so every
//! probe (health gate, preflight, `apply`'s last look, the monitor behind `/health`) must carry it from
//! `spec.health.basicAuth`, and neither the password nor a header value read from a file may reach any
//! output.

use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use dockop_e2e::images::*;
use dockop_e2e::*;

/// The secrets of one test: random, so that a grep for them finds only real leaks.
struct Secrets {
    password: String,
    token: String,
    password_file: PathBuf,
    token_file: PathBuf,
}

impl Secrets {
    fn new(env: &TestEnv) -> Self {
        let password = format!("pw-{:016x}", fastrand::u64(..));
        let token = format!("tok-{:016x}", fastrand::u64(..));
        let password_file = env.write("secrets/opencode-password", &format!("{password}\n"));
        let token_file = env.write("secrets/probe-token", &format!("{token}\n"));
        Secrets {
            password,
            token,
            password_file,
            token_file,
        }
    }

    /// `Authorization` value the app accepts.
    fn basic(&self) -> String {
        basic(&self.password)
    }
}

fn basic(password: &str) -> String {
    let pair = base64::engine::general_purpose::STANDARD.encode(format!("opencode:{password}"));
    format!("Basic {pair}")
}

/// The secure OpenCode setup: the password from one file, used both as the app's
/// `OPENCODE_SERVER_PASSWORD` and by `basicAuth` (which may point at `auth_file` instead, for the
/// wrong-password case), plus a header whose value comes from a file.
fn opencode_spec(
    env: &TestEnv,
    name: &str,
    image: &str,
    port: u16,
    s: &Secrets,
    auth_file: &Path,
    preflight: bool,
) -> String {
    env.object_yaml(
        name,
        image,
        &format!(
            "  command: [/usr/local/bin/opencode, serve, --port, \"{OPENCODE_PORT}\", --hostname, 0.0.0.0]
  env:
    - {{name: OPENCODE_SERVER_PASSWORD, valueFrom: {{file: {pw}}}}}
  ports:
    - {{containerPort: {OPENCODE_PORT}, hostPort: {port}, hostIP: 127.0.0.1}}
  health:
    path: {HEALTH_PATH}
    port: {OPENCODE_PORT}
    intervalSeconds: 1
    # OpenCode on a busy 2-core machine can take over 2 s to answer: room, so the test is about
    # credentials, not speed.
    timeoutSeconds: 5
    startupDeadlineSeconds: 60
    basicAuth: {{username: opencode, passwordFile: {auth}}}
    httpHeaders:
      - {{name: X-Probe-Token, valueFrom: {{file: {token}}}}}
      - {{name: X-Probe, value: dockop-e2e}}
  update:
    preflight: {preflight}
  init: true
  stopTimeoutSeconds: 5
",
        pw = s.password_file.display(),
        auth = auth_file.display(),
        token = s.token_file.display(),
        ),
    )
}

/// (status, version) the app serves on 127.0.0.1:`port` with `authorization` (if any).
fn served(port: u16, authorization: Option<&str>) -> (u16, Option<String>) {
    let url = format!("http://127.0.0.1:{port}{HEALTH_PATH}");
    let headers: Vec<(&str, &str)> = authorization
        .map(|a| vec![("Authorization", a)])
        .unwrap_or_default();
    match http_get_with(&url, &headers, Duration::from_secs(3)) {
        Ok((code, body)) => {
            let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            (code, v["version"].as_str().map(str::to_owned))
        }
        Err(e) => panic!("GET {url}: {e}"),
    }
}

/// Everything dockop printed or stored, for the secret grep.
#[derive(Default)]
struct Transcript(String);

impl Transcript {
    fn run(&mut self, env: &TestEnv, args: &[&str]) -> RunOutput {
        let out = env.dockop().timeout(Duration::from_secs(240)).run(args);
        self.0.push_str(&out.stdout);
        self.0.push_str(&out.stderr);
        out
    }

    fn add_dir(&mut self, dir: &Path) {
        for entry in std::fs::read_dir(dir).expect("read dir").flatten() {
            let p = entry.path();
            if p.is_dir() {
                self.add_dir(&p);
            } else if let Ok(bytes) = std::fs::read(&p) {
                self.0.push_str(&String::from_utf8_lossy(&bytes));
            }
        }
    }

    #[track_caller]
    fn assert_clean(&self, s: &Secrets) {
        assert!(!self.0.is_empty());
        for (what, secret) in [
            ("password", s.password.as_str()),
            ("header value", s.token.as_str()),
            ("basic-auth pair", s.basic().as_str()),
        ] {
            assert!(
                !self.0.contains(secret),
                "the {what} leaked into dockop's output or state"
            );
        }
    }
}

/// Create 1.18.33, update to 1.18.34 health-gated; then a wrong password in `basicAuth` with a new
/// image: rejected (by preflight, or by the health gate and rolled back), naming 401 and the field,
/// 1.18.34 still served.
/// What [`update_and_refuse_wrong_password`] leaves: the object runs 1.18.34 with the right password.
struct Case {
    env: TestEnv,
    secrets: Secrets,
    log: Transcript,
    name: String,
    port: u16,
}

fn update_and_refuse_wrong_password(test: &str, preflight: bool) -> Case {
    let env = TestEnv::new(test);
    let s = Secrets::new(&env);
    let mut log = Transcript::default();
    let (old_tag, _) = env.push_as(OPENCODE_1_18_33, "old");
    let (new_tag, _) = env.push_as(OPENCODE_1_18_34, "new");
    let name = env.name("oc");
    let port = env.free_port();
    let write = |image: &str, auth: &Path| {
        env.write(
            "oc.yaml",
            &opencode_spec(&env, &name, image, port, &s, auth, preflight),
        )
    };
    let file = write(&old_tag, &s.password_file);
    let file = file.to_str().expect("utf8").to_owned();

    let out = log.run(&env, &["-vvv", "apply", "-f", &file]);
    out.assert_success();
    assert_eq!(served(port, None).0, 401, "the app wants its password");
    assert_eq!(
        served(port, Some(&s.basic())),
        (200, Some("1.18.33".into()))
    );
    assert_eq!(env.status(&name)["appVersion"], "1.18.33");

    write(&new_tag, &s.password_file);
    let out = log.run(&env, &["-vvv", "apply", "-f", &file]);
    out.assert_success();
    if preflight {
        assert!(out.stderr.contains("preflight passed"), "{out}");
    }
    assert_eq!(
        served(port, Some(&s.basic())),
        (200, Some("1.18.34".into()))
    );

    let wrong = env.write("secrets/wrong-password", "not-the-password\n");
    write(&old_tag, &wrong);
    let out = log.run(&env, &["-vvv", "apply", "-f", &file]);
    out.assert_code(1);
    let text = format!("{}{}", out.stdout, out.stderr);
    assert!(text.contains("HTTP 401"), "{out}");
    assert!(
        text.contains(&format!(
            "the credentials from spec.health.basicAuth.passwordFile {} and ",
            wrong.display()
        )) && text.contains(" were refused"),
        "{out}"
    );
    assert_eq!(
        served(port, Some(&s.basic())),
        (200, Some("1.18.34".into())),
        "the running version is untouched"
    );
    let st = env.status(&name);
    let (degraded, reason, message) = condition(&st, "Degraded");
    assert!(degraded, "{st:#}");
    let want = if preflight {
        "PreflightFailed"
    } else {
        "RolledBack"
    };
    assert_eq!(reason, want, "{st:#}");
    assert!(message.contains("HTTP 401"), "{message}");
    write(&new_tag, &s.password_file);
    Case {
        env,
        secrets: s,
        log,
        name,
        port,
    }
}

#[test]
fn password_protected_opencode_updates_health_gated_with_preflight() {
    let Case {
        env,
        secrets: s,
        mut log,
        name,
        port,
    } = update_and_refuse_wrong_password("auth-pf", true);
    let file = env.dir().join("oc.yaml");
    let file = file.to_str().expect("utf8");

    // `dockop run`: /health answers 200 without credentials and shows the app's version.
    let listen_port = env.free_port();
    let listen = format!("127.0.0.1:{listen_port}");
    let mut run = env.dockop().spawn(
        [
            "-vvv",
            "run",
            "-f",
            file,
            "--listen",
            &listen,
            "--resync-seconds",
            "600",
        ],
        env.dir(),
    );
    let base = format!("http://{listen}");
    let healthy = wait_until(Duration::from_secs(60), || {
        http_get(&format!("{base}/health"), Duration::from_secs(5)).is_ok_and(|(c, _)| c == 200)
    });
    let (code, body) = http_get(&format!("{base}/health"), Duration::from_secs(5)).expect("health");
    assert!(healthy && code == 200, "{code} {body}\n{}", run.stderr());
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v["objects"][&name]["version"], "1.18.34", "{body}");
    for path in ["/health", &format!("/health/{name}"), "/metrics", "/readyz"] {
        let (_, body) = http_get(&format!("{base}{path}"), Duration::from_secs(5)).expect(path);
        log.0.push_str(&body);
    }
    run.stop(Duration::from_secs(10));
    log.0.push_str(&run.stdout());
    log.0.push_str(&run.stderr());

    // Rotating the password (used by the env and by basicAuth) recreates the container, which comes up
    // healthy with the new one; the old one is refused.
    let before = docker_ok(["inspect", "-f", "{{.Id}}", &name]);
    let rotated = format!("pw-{:016x}", fastrand::u64(..));
    std::fs::write(&s.password_file, format!("{rotated}\n")).expect("rotate");
    let out = log.run(&env, &["-vvv", "apply", "-f", file]);
    out.assert_success();
    let after = docker_ok(["inspect", "-f", "{{.Id}}", &name]);
    assert_ne!(
        before.trim(),
        after.trim(),
        "recreated for the new password"
    );
    assert_eq!(served(port, Some(&basic(&rotated))).0, 200);
    assert_eq!(served(port, Some(&s.basic())).0, 401);
    log.0
        .push_str(&serde_json::to_string(&env.status(&name)).expect("json"));
    log.add_dir(&env.state_dir());
    log.assert_clean(&s);
    assert!(!log.0.contains(&rotated), "the rotated password leaked");
}

#[test]
fn password_protected_opencode_updates_health_gated_without_preflight() {
    let mut c = update_and_refuse_wrong_password("auth-nopf", false);
    let st = c.env.status(&c.name);
    c.log.0.push_str(&serde_json::to_string(&st).expect("json"));
    c.log.add_dir(&c.env.state_dir());
    c.log.assert_clean(&c.secrets);
    assert_eq!(served(c.port, Some(&c.secrets.basic())).0, 200);
}

#[test]
fn unreadable_credential_file_stops_before_the_engine_is_touched() {
    let env = TestEnv::new("auth-missing");
    let s = Secrets::new(&env);
    let name = env.name("oc");
    let port = env.free_port();
    let missing = env.dir().join("secrets/nope");
    let file = env.write(
        "oc.yaml",
        &opencode_spec(&env, &name, OPENCODE_1_18_34, port, &s, &missing, false),
    );
    let out = env
        .dockop()
        .run(["apply", "-f", file.to_str().expect("utf8")]);
    out.assert_code(1);
    let text = format!("{}{}", out.stdout, out.stderr);
    assert!(
        text.contains(&format!(
            "{name}: error: spec.health.basicAuth.passwordFile {}: cannot read it",
            missing.display()
        )),
        "names the object, field and path: {out}"
    );
    assert!(env.containers().is_empty(), "nothing created");
    // A FIFO as the password file is refused at once instead of hanging the reconcile.
    let fifo = env.dir().join("secrets/fifo");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo");
    assert!(made.success());
    let file = env.write(
        "oc.yaml",
        &opencode_spec(&env, &name, OPENCODE_1_18_34, port, &s, &fifo, false),
    );
    let out = env.dockop().timeout(Duration::from_secs(30)).run([
        "plan",
        "-f",
        file.to_str().expect("utf8"),
    ]);
    assert!(
        format!("{}{}", out.stdout, out.stderr).contains("not a regular file (it is a FIFO)"),
        "{out}"
    );
    assert!(env.containers().is_empty(), "nothing created");
}
