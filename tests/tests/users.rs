//! End-to-end tests of `spec.users`: the real dockop binary reconciles Linux accounts inside real OpenCode
//! containers (Debian, shadow-utils) through exec: create, change hash, lock, unlock, prune (lock or delete),
//! repair of a hand-made `userdel`, survival across an update and a rollback, and a real password check
//! through PAM (`su` on a pty). Each test has its own names, ports and registry repository.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use dockop_e2e::images::*;
use dockop_e2e::*;
use wait_timeout::ChildExt;

/// An OpenCode Container spec; `users` is the YAML under `spec:` for users (and `usersPrune`).
fn oc_spec(env: &TestEnv, name: &str, image: &str, port: u16, users: &str, extra: &str) -> String {
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
  health:
    path: {HEALTH_PATH}
    port: {OPENCODE_PORT}
    startupDeadlineSeconds: 60
  init: true
{users}{extra}",
        labels = env.labels_yaml()
    )
}

fn apply(env: &TestEnv, file: &Path) -> RunOutput {
    let out = env
        .dockop()
        .run([OsArg::from("apply"), "-f".into(), file.into()]);
    assert!(
        !out.stdout.contains("$y$") && !out.stderr.contains("$y$"),
        "a hash reached dockop's output:\n{out}"
    );
    out
}

/// Everything a run printed.
fn said(out: &RunOutput) -> String {
    format!("{}\n{}", out.stdout, out.stderr)
}

/// `Into<OsString>` for the mixed `run` arguments above.
type OsArg = std::ffi::OsString;

/// `dockop hash-password`, password on stdin.
fn hash(env: &TestEnv, password: &str) -> String {
    let out = env
        .dockop()
        .run_with_stdin(["hash-password"], &format!("{password}\n"));
    out.assert_success();
    let h = out.stdout.trim().to_owned();
    assert!(h.starts_with("$y$"), "not a yescrypt hash: {out}");
    h
}

/// `getent DB NAME` inside the container, split into fields; `None` when absent.
fn getent(container: &str, db: &str, user: &str) -> Option<Vec<String>> {
    let out = docker(["exec", container, "getent", db, user]);
    out.status.success().then(|| {
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .split(':')
            .map(str::to_owned)
            .collect()
    })
}

fn shadow_field(container: &str, user: &str) -> Option<String> {
    getent(container, "shadow", user).map(|f| f[1].clone())
}

/// Inode + nanosecond mtime + ctime of the account files: changes whenever a tool rewrites them.
fn account_files_stamp(container: &str) -> String {
    docker_ok([
        "exec",
        container,
        "stat",
        "-c",
        "%n %i %y %z",
        "/etc/passwd",
        "/etc/shadow",
        "/etc/group",
    ])
}

/// A real login check: as `nobody`, `su USER -c 'echo SU-OK'` on a pty (`script`), the password typed
/// once su prompts. Goes through PAM (pam_unix) and libcrypt's yescrypt.
fn su_works(container: &str, user: &str, password: &str) -> bool {
    let inner = format!("su {user} -c 'echo SU-OK'");
    let mut child = Command::new("docker")
        .args([
            "exec",
            "-i",
            "-u",
            "nobody",
            container,
            "script",
            "-qec",
            &inner,
            "/dev/null",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn docker exec");
    let mut stdin = child.stdin.take().expect("stdin");
    // su flushes typed-ahead input when it turns echo off: type after the prompt is up.
    std::thread::sleep(Duration::from_millis(1200));
    stdin
        .write_all(format!("{password}\n").as_bytes())
        .expect("type password");
    stdin.flush().expect("flush");
    let status = child
        .wait_timeout(Duration::from_secs(20))
        .expect("wait su")
        .unwrap_or_else(|| {
            let _ = child.kill();
            panic!("su did not finish within 20 s")
        });
    drop(stdin);
    let out = child.wait_with_output().expect("su output");
    status.success() && String::from_utf8_lossy(&out.stdout).contains("SU-OK")
}

fn status_users(env: &TestEnv, name: &str) -> serde_json::Value {
    let out = env.dockop().run(["status", name, "-o", "json"]);
    out.assert_success();
    assert!(!out.stdout.contains("$y$"), "hash in status: {out}");
    let v: serde_json::Value =
        serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("status JSON: {e}\n{out}"));
    v["users"].clone()
}

/// Status lists these users (among possibly others, e.g. pruned ones), never with a hash.
#[track_caller]
fn assert_status_lists(env: &TestEnv, name: &str, users: &[&str]) {
    let listed = status_users(env, name);
    let names: Vec<&str> = listed
        .as_array()
        .map(|a| a.iter().filter_map(|u| u["name"].as_str()).collect())
        .unwrap_or_default();
    for u in users {
        assert!(names.contains(u), "{u} missing from status users: {listed}");
    }
}

fn timed<T>(what: &str, f: impl FnOnce() -> T) -> T {
    let t = Instant::now();
    let r = f();
    eprintln!("{what}: {:.2} s", t.elapsed().as_secs_f64());
    r
}

#[test]
fn users_lifecycle_on_real_opencode() {
    let env = TestEnv::new("users-life");
    let name = env.name("oc");
    let port = env.free_port();
    let a1 = hash(&env, "alice-pw-1");
    let a2 = hash(&env, "alice-pw-2");
    let b1 = hash(&env, "bob-pw-1");
    let b2 = hash(&env, "bob-pw-2");
    let bob_file = env.write("secrets/bob", &format!("{b1}\n"));
    let write = |users: &str| {
        env.write(
            "oc.yaml",
            &oc_spec(&env, &name, OPENCODE_1_18_34, port, users, ""),
        )
    };
    let bob = format!(
        "    - {{name: bob, passwordFile: {}}}\n",
        bob_file.display()
    );

    // Create: alice (inline hash), bob (hash file), carol (no password).
    let file = write(&format!(
        "  users:\n    - {{name: alice, passwordHash: '{a1}'}}\n{bob}    - {{name: carol}}\n"
    ));
    let out = timed("apply (create container + 3 users)", || apply(&env, &file));
    out.assert_success();
    assert!(said(&out).contains("created alice"), "{out}");
    let pw = getent(&name, "passwd", "alice").expect("alice exists");
    assert_eq!(pw[4], "dockop-managed");
    assert_eq!(pw[5], "/home/alice");
    assert_eq!(shadow_field(&name, "alice"), Some(a1.clone()));
    assert_eq!(shadow_field(&name, "bob"), Some(b1.clone()));
    assert_eq!(shadow_field(&name, "carol").as_deref(), Some("!"));
    assert!(timed("su right password", || su_works(
        &name,
        "alice",
        "alice-pw-1"
    )));
    assert!(!timed("su wrong password", || su_works(
        &name, "alice", "nope"
    )));
    assert!(su_works(&name, "bob", "bob-pw-1"));
    assert_status_lists(&env, &name, &["alice", "bob", "carol"]);

    // Converged: nothing rewritten.
    let stamp = account_files_stamp(&name);
    let out = timed("apply (converged)", || apply(&env, &file));
    out.assert_success();
    assert!(!said(&out).contains("users:"), "{out}");
    assert_eq!(account_files_stamp(&name), stamp);

    // Change alice's hash; rotate bob's file.
    std::fs::write(&bob_file, &b2).unwrap();
    let file = write(&format!(
        "  users:\n    - {{name: alice, passwordHash: '{a2}'}}\n{bob}    - {{name: carol}}\n"
    ));
    let out = timed("apply (change hash, rotate file)", || apply(&env, &file));
    out.assert_success();
    assert!(said(&out).contains("set password of alice"), "{out}");
    assert_eq!(shadow_field(&name, "alice"), Some(a2.clone()));
    assert_eq!(shadow_field(&name, "bob"), Some(b2.clone()));
    assert!(su_works(&name, "alice", "alice-pw-2"));
    assert!(!su_works(&name, "alice", "alice-pw-1"));

    // Lock, then unlock.
    let file = write(&format!(
        "  users:\n    - {{name: alice, passwordHash: '{a2}', locked: true}}\n{bob}    - {{name: carol}}\n"
    ));
    apply(&env, &file).assert_success();
    assert_eq!(shadow_field(&name, "alice"), Some(format!("!{a2}")));
    assert!(
        !su_works(&name, "alice", "alice-pw-2"),
        "a locked account must refuse its password"
    );
    let file = write(&format!(
        "  users:\n    - {{name: alice, passwordHash: '{a2}'}}\n{bob}    - {{name: carol}}\n"
    ));
    apply(&env, &file).assert_success();
    assert_eq!(shadow_field(&name, "alice"), Some(a2.clone()));
    assert!(su_works(&name, "alice", "alice-pw-2"));

    // Remove bob: locked by default, account and home kept.
    let file = write(&format!(
        "  users:\n    - {{name: alice, passwordHash: '{a2}'}}\n    - {{name: carol}}\n"
    ));
    let out = apply(&env, &file);
    out.assert_success();
    assert!(said(&out).contains("locked bob"), "{out}");
    assert_eq!(shadow_field(&name, "bob"), Some(format!("!{b2}")));
    assert!(!su_works(&name, "bob", "bob-pw-2"));
    assert_status_lists(&env, &name, &["alice", "carol"]);

    // Remove carol with usersPrune: delete: bob and carol deleted, homes kept.
    let file = write(&format!(
        "  users:\n    - {{name: alice, passwordHash: '{a2}'}}\n  usersPrune: delete\n"
    ));
    let out = apply(&env, &file);
    out.assert_success();
    assert!(getent(&name, "passwd", "bob").is_none(), "{out}");
    assert!(getent(&name, "passwd", "carol").is_none(), "{out}");
    docker_ok(["exec", &name, "test", "-d", "/home/bob"]);
    assert_status_lists(&env, &name, &["alice"]);

    // A userdel by hand is repaired by the next apply.
    docker_ok(["exec", &name, "userdel", "alice"]);
    assert!(getent(&name, "passwd", "alice").is_none());
    let out = timed("apply (repair userdel)", || apply(&env, &file));
    out.assert_success();
    assert!(said(&out).contains("created alice"), "{out}");
    assert_eq!(shadow_field(&name, "alice"), Some(a2.clone()));
    assert!(su_works(&name, "alice", "alice-pw-2"));

    // A large, odd account database: the read filters in the container (output far above the engine's
    // 64 KiB exec cap), skips odd lines and still finds converged state.
    docker_ok([
        "exec",
        &name,
        "sh",
        "-c",
        "i=0; while [ $i -lt 4000 ]; do echo \"filler$i:x:$((20000+i)):$((20000+i)):filler account number $i:/nonexistent:/usr/sbin/nologin\"; i=$((i+1)); done >> /etc/passwd; \
         printf '%s\\n' '+::::::' 'no colons here' '' 'weird:x:1:1:has dockop-managed inside text:/:/bin/sh' >> /etc/passwd",
    ]);
    let stamp = account_files_stamp(&name);
    let out = timed("apply (converged, 4000 extra accounts)", || {
        apply(&env, &file)
    });
    out.assert_success();
    assert_eq!(account_files_stamp(&name), stamp, "{out}");
    assert_status_lists(&env, &name, &["alice"]);
}

#[test]
fn users_survive_update_and_rollback() {
    let env = TestEnv::new("users-upd");
    let name = env.name("oc");
    let port = env.free_port();
    let (tag, _) = env.push_as(OPENCODE_1_18_33, "live");
    let a = hash(&env, "alice-pw");
    let d = hash(&env, "dave-pw");
    let alice = format!("  users:\n    - {{name: alice, passwordHash: '{a}'}}\n");
    let extra = "  update: {preflight: false}\n";
    let file = env.write("oc.yaml", &oc_spec(&env, &name, &tag, port, &alice, extra));
    timed("apply 1.18.33", || apply(&env, &file)).assert_success();
    assert_eq!(shadow_field(&name, "alice"), Some(a.clone()));
    let id1 = docker_ok(["inspect", "-f", "{{.Id}}", &name]);

    // Update: a new container from 1.18.34 gets alice again.
    env.push_as(OPENCODE_1_18_34, "live");
    timed("apply update to 1.18.34", || apply(&env, &file)).assert_success();
    let id2 = docker_ok(["inspect", "-f", "{{.Id}}", &name]);
    assert_ne!(id1, id2, "the update recreates the container");
    assert_eq!(shadow_field(&name, "alice"), Some(a.clone()));
    assert!(su_works(&name, "alice", "alice-pw"));

    // A bad release with a user added at the same time: rolled back to the 1.18.34 container, which gets
    // the users of the current spec on restore.
    env.push_as(OPENCODE_BAD, "live");
    let users = format!("{alice}    - {{name: dave, passwordHash: '{d}'}}\n");
    let file = env.write("oc.yaml", &oc_spec(&env, &name, &tag, port, &users, extra));
    let out = timed("apply bad release (rollback)", || apply(&env, &file));
    out.assert_code(1);
    assert_eq!(docker_ok(["inspect", "-f", "{{.Id}}", &name]), id2, "{out}");
    assert!(wait_until(Duration::from_secs(30), || {
        docker(["exec", &name, "true"]).status.success()
    }));
    assert_eq!(shadow_field(&name, "alice"), Some(a.clone()), "{out}");
    assert_eq!(shadow_field(&name, "dave"), Some(d.clone()), "{out}");
    assert!(su_works(&name, "dave", "dave-pw"));
}

#[test]
fn user_name_with_shell_metacharacters_is_refused() {
    let env = TestEnv::new("users-bad-name");
    let name = env.name("oc");
    let port = env.free_port();
    let users = "  users:\n    - {name: 'a;rm -rf /', passwordHash: '$y$j9T$abcdefghijklmnopqrstuv$0123456789012345678901234567890123456789012'}\n";
    let file = env.write(
        "oc.yaml",
        &oc_spec(&env, &name, OPENCODE_1_18_34, port, users, ""),
    );
    let out = env
        .dockop()
        .run([OsArg::from("validate"), file.clone().into()]);
    out.assert_code(1);
    assert!(
        out.stdout.contains("name") || out.stderr.contains("name"),
        "{out}"
    );
    apply(&env, &file).assert_code(1);
    let ps = docker_ok(["ps", "-aq", "--filter", &format!("label={}", env.label())]);
    assert!(ps.trim().is_empty(), "a container was created: {ps}");
}

/// The test-bed web image is `FROM scratch` with a static busybox that has no user applets (no adduser,
/// chpasswd) and no /etc/passwd: dockop says so and creates nothing half-way.
#[test]
fn image_without_user_tools_fails_clearly() {
    let env = TestEnv::new("users-notools");
    let name = env.name("web");
    let port = env.free_port();
    let spec = format!(
        "apiVersion: dockop.dev/v1alpha1
kind: Container
metadata:
  name: {name}
  labels: {labels}
spec:
  image: {WEB_V1}
  ports:
    - {{containerPort: {WEB_PORT}, hostPort: {port}}}
  health: {{path: {HEALTH_PATH}, port: {WEB_PORT}, startupDeadlineSeconds: 20}}
  init: true
  users:
    - {{name: alice}}
",
        labels = env.labels_yaml()
    );
    let file = env.write("web.yaml", &spec);
    let out = timed("apply (no user tools)", || apply(&env, &file));
    out.assert_code(1);
    let all = format!("{}{}", out.stdout, out.stderr);
    assert!(all.contains("no useradd/chpasswd"), "{out}");
    let st = env.dockop().run(["status", &name, "-o", "json"]);
    assert!(st.stdout.contains("no useradd/chpasswd"), "{st}");
}
