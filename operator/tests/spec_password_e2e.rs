//! Real-password proof: a hash made by `dockop::spec::password::hash_password` is set with `chpasswd -e`
//! in a real Debian container, and `su` — run by an unprivileged user through a pty, so PAM and
//! libcrypt really check the yescrypt hash — accepts the right password and refuses a wrong one.
//!
//! Needs the Docker engine and the `dockop-testbed/debian:bookworm` image; without them the test says
//! so and passes, unless `DOCKOP_REQUIRE_E2E=1` makes that a failure.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::process::{Command, Output, Stdio};

const IMAGE: &str = "dockop-testbed/debian:bookworm";

/// Removes the container however the test ends.
struct ContainerGuard(String);

impl Drop for ContainerGuard {
    fn drop(&mut self) {
        let _ = Command::new("docker").args(["rm", "-f", &self.0]).output();
    }
}

fn docker(args: &[&str]) -> Output {
    Command::new("docker")
        .args(args)
        .output()
        .expect("docker runs")
}

fn docker_stdin(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new("docker")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("docker runs");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    child.wait_with_output().expect("docker finishes")
}

fn ok(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed: {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `su alice -c 'echo AUTH-OK'` as the unprivileged user `bob` on a pty (util-linux `script`),
/// typing `password` once su has asked for it. Returns everything the terminal showed.
fn su_as_bob(container: &str, password: &str) -> String {
    // The pause lets su turn echo off (which flushes pending input) before the password arrives.
    let shell = "(sleep 1; printf '%s\\n' \"$PW\") | script -qec \"su alice -c 'echo AUTH-OK'\" /dev/null; echo \"exit=$?\"";
    let out = docker(&[
        "exec",
        "-u",
        "bob",
        "-e",
        &format!("PW={password}"),
        container,
        "sh",
        "-c",
        shell,
    ]);
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn yescrypt_hash_works_with_the_real_system_crypt_and_pam() {
    let available = Command::new("docker")
        .args(["image", "inspect", IMAGE])
        .output()
        .is_ok_and(|o| o.status.success());
    if !available {
        assert!(
            std::env::var_os("DOCKOP_REQUIRE_E2E").is_none(),
            "the Docker engine or the image {IMAGE} is not available"
        );
        eprintln!("SKIPPED: the Docker engine or the image {IMAGE} is not available");
        return;
    }

    let password = "c0rrect horse $battery";
    let hash = dockop::spec::password::hash_password(password).unwrap();
    assert!(hash.starts_with("$y$j9T$"), "{hash}");

    let name = format!("dockop-e2e-spec-password-{}", std::process::id());
    let run = docker(&[
        "run",
        "-d",
        "--rm",
        "--name",
        &name,
        "--label",
        "dockop-e2e=spec-password",
        IMAGE,
        "sleep",
        "300",
    ]);
    ok(&run, "docker run");
    let _guard = ContainerGuard(name.clone());

    ok(
        &docker(&["exec", &name, "useradd", "-m", "alice"]),
        "useradd alice",
    );
    ok(
        &docker(&["exec", &name, "useradd", "-m", "bob"]),
        "useradd bob",
    );
    ok(
        &docker_stdin(
            &["exec", "-i", &name, "chpasswd", "-e"],
            &format!("alice:{hash}\n"),
        ),
        "chpasswd -e",
    );

    let shadow = docker(&["exec", &name, "getent", "shadow", "alice"]);
    ok(&shadow, "getent shadow");
    assert!(
        String::from_utf8_lossy(&shadow.stdout).starts_with(&format!("alice:{hash}:")),
        "the hash is stored verbatim"
    );

    let right = su_as_bob(&name, password);
    assert!(
        right.contains("AUTH-OK") && right.contains("exit=0"),
        "the right password was refused:\n{right}"
    );

    let wrong = su_as_bob(&name, "wrong horse");
    assert!(
        !wrong.contains("AUTH-OK"),
        "a wrong password was accepted:\n{wrong}"
    );
    assert!(
        wrong.contains("Authentication failure"),
        "unexpected output for a wrong password:\n{wrong}"
    );
    assert!(!wrong.contains("exit=0"), "{wrong}");
}
