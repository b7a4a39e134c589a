//! Installing and operating dockop like a real tool (#20): `deploy/install` into a temp root (twice, then
//! `--uninstall`), the units through `systemd-analyze verify`, systemd's readiness protocol, registry
//! credentials without `$HOME` (as under systemd), and the command-line habits (`version`, completions,
//! EX_USAGE, `-f -`, `-o json`, `--quiet`).
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use dockop_e2e::images::*;
use dockop_e2e::*;

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

fn install(args: &[&str]) -> std::process::Output {
    let out = Command::new(workspace_root().join("deploy/install"))
        .args(args)
        .output()
        .expect("run deploy/install");
    assert!(
        out.status.success(),
        "deploy/install {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Every path under `root` with its mode, sorted: the installed tree, for comparing two runs.
fn tree(root: &Path) -> Vec<(String, u32)> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, u32)>) {
        for e in std::fs::read_dir(dir).expect("read dir") {
            let p = e.expect("entry").path();
            let rel = p
                .strip_prefix(root)
                .expect("under root")
                .display()
                .to_string();
            out.push((rel, mode(&p)));
            if p.is_dir() {
                walk(root, &p, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out.sort();
    out
}

/// The program of the unit's `ExecStart=` line (an absolute path on the target system).
fn exec_start_program(unit: &Path) -> String {
    let text = std::fs::read_to_string(unit).expect("read unit");
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("ExecStart= in the unit");
    line.split_whitespace()
        .next()
        .expect("a program")
        .to_owned()
}

#[test]
fn installer_installs_twice_the_same_tree_and_uninstalls() {
    let env = TestEnv::new("install");
    let root = env.dir().join("root");
    let bin = dockop_bin();
    let bin = bin.to_str().unwrap();
    let r = root.to_str().unwrap();
    install(&["--binary", bin, "--root", r]);
    let first = tree(&root);
    // A file the user put in the desired state survives a reinstall and the uninstall.
    let spec = root.join("etc/dockop/desired/web.yaml");
    std::fs::write(&spec, "# mine\n").unwrap();
    let secret = root.join("etc/dockop/secrets/token");
    std::fs::write(&secret, "s3cret\n").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    install(&["--binary", bin, "--root", r]);
    let second: Vec<_> = tree(&root)
        .into_iter()
        .filter(|(p, _)| !p.ends_with("desired/web.yaml") && !p.ends_with("secrets/token"))
        .collect();
    assert_eq!(first, second, "a second install changes nothing");
    assert_eq!(std::fs::read_to_string(&spec).unwrap(), "# mine\n");

    for (path, want) in [
        ("usr/local/bin/dockop", 0o755),
        ("etc/systemd/system/dockop.service", 0o644),
        ("etc/dockop/desired", 0o700),
        ("etc/dockop/secrets", 0o700),
        ("usr/local/share/bash-completion/completions/dockop", 0o644),
        ("usr/local/share/zsh/site-functions/_dockop", 0o644),
        (
            "usr/local/share/fish/vendor_completions.d/dockop.fish",
            0o644,
        ),
        ("usr/local/share/man/man1/dockop.1", 0o644),
        ("usr/local/share/man/man1/dockop-plan.1", 0o644),
        ("usr/local/share/doc/dockop/LICENSE", 0o644),
    ] {
        assert_eq!(mode(&root.join(path)), want, "{path}");
    }
    let proxy_unit = workspace_root().join("deploy/systemd/dockop-proxy.service");
    assert_eq!(
        root.join("etc/systemd/system/dockop-proxy.service")
            .exists(),
        proxy_unit.exists(),
        "dockop-proxy.service is installed exactly when deploy/systemd has it"
    );
    let bash =
        std::fs::read_to_string(root.join("usr/local/share/bash-completion/completions/dockop"))
            .unwrap();
    assert!(
        bash.contains("_dockop") && bash.contains("rollback"),
        "{bash}"
    );
    let man = std::fs::read_to_string(root.join("usr/local/share/man/man1/dockop.1")).unwrap();
    assert!(man.contains(".TH dockop"), "{man}");

    // The unit's program, inside the root, runs.
    let program = exec_start_program(&root.join("etc/systemd/system/dockop.service"));
    assert_eq!(program, "/usr/local/bin/dockop");
    let installed = root.join(program.trim_start_matches('/'));
    let help = Command::new(&installed).arg("--help").output().unwrap();
    assert!(help.status.success() && String::from_utf8_lossy(&help.stdout).contains("rollback"));
    let version = Command::new(&installed)
        .arg("version")
        .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&version.stdout);
    assert!(version.status.success(), "{text}");
    assert!(
        text.starts_with("dockop 0.") && text.contains("commit "),
        "{text}"
    );
    assert!(text.contains("engine: unreachable ("), "{text}");

    let state = root.join("var/lib/dockop");
    std::fs::create_dir_all(&state).unwrap();
    std::fs::write(state.join("keep"), "").unwrap();
    install(&["--uninstall", "--root", r]);
    for gone in [
        "usr/local/bin/dockop",
        "etc/systemd/system/dockop.service",
        "etc/systemd/system/dockop-proxy.service",
        "usr/local/share/bash-completion/completions/dockop",
        "usr/local/share/zsh/site-functions/_dockop",
        "usr/local/share/fish/vendor_completions.d/dockop.fish",
        "usr/local/share/man/man1/dockop.1",
        "usr/local/share/man/man1/dockop-plan.1",
        "usr/local/share/doc/dockop",
    ] {
        assert!(!root.join(gone).exists(), "{gone} left after --uninstall");
    }
    assert_eq!(std::fs::read_to_string(&spec).unwrap(), "# mine\n");
    assert_eq!(std::fs::read_to_string(&secret).unwrap(), "s3cret\n");
    assert_eq!(mode(&root.join("etc/dockop/secrets")), 0o700);
    assert!(state.join("keep").exists(), "the state dir stays");
    // Uninstalling twice is fine too.
    install(&["--uninstall", "--root", r]);
}

#[test]
fn installer_refuses_unknown_flags_and_a_missing_binary() {
    let env = TestEnv::new("install-bad");
    let r = env.dir().join("root");
    let out = Command::new(workspace_root().join("deploy/install"))
        .args(["--frobnicate"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let out = Command::new(workspace_root().join("deploy/install"))
        .args([
            "--binary",
            "/nonexistent/dockop",
            "--root",
            r.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not an executable file"));
}

/// `systemd-analyze verify` of every unit in deploy/systemd, with ExecStart pointing at the binary under
/// test (verify checks the program exists). Skipped with a message where systemd-analyze is missing.
#[test]
fn units_pass_systemd_analyze_verify() {
    if Command::new("systemd-analyze")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_err()
    {
        eprintln!("SKIPPED: systemd-analyze is not installed");
        return;
    }
    let env = TestEnv::new("verify");
    let bin = dockop_bin();
    let units: Vec<PathBuf> = std::fs::read_dir(workspace_root().join("deploy/systemd"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "service"))
        .collect();
    assert!(!units.is_empty());
    for unit in units {
        let text = std::fs::read_to_string(&unit).unwrap();
        assert!(
            text.contains("Type=notify"),
            "{}: Type=notify",
            unit.display()
        );
        let copy = env.write(
            unit.file_name().unwrap().to_str().unwrap(),
            &text.replace("/usr/local/bin/dockop", bin.to_str().unwrap()),
        );
        let out = Command::new("systemd-analyze")
            .args(["verify", "--man=no"])
            .arg(&copy)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && stderr.trim().is_empty(),
            "systemd-analyze verify {}:\n{stderr}",
            unit.display()
        );
    }
}

/// `Type=notify`: READY=1 once the first sync is done, STOPPING=1 on SIGTERM.
#[test]
fn run_notifies_systemd_ready_and_stopping() {
    let env = TestEnv::new("sdnotify");
    let name = env.name("web");
    let dir = env.dir().join("desired");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("web.yaml"),
        env.web_spec(&name, WEB_V1, env.free_port()),
    )
    .unwrap();
    let socket = env.dir().join("notify.sock");
    let server = UnixDatagram::bind(&socket).unwrap();
    server
        .set_read_timeout(Some(Duration::from_secs(90)))
        .unwrap();
    let listen = format!("127.0.0.1:{}", env.free_port());
    let mut run = env
        .dockop()
        .env("NOTIFY_SOCKET", socket.to_str().unwrap())
        .spawn(
            ["run", "-f", dir.to_str().unwrap(), "--listen", &listen],
            env.dir(),
        );
    let mut buf = [0u8; 256];
    let n = server
        .recv(&mut buf)
        .unwrap_or_else(|e| panic!("no READY=1: {e}\n{}", run.stderr()));
    assert_eq!(&buf[..n], b"READY=1");
    // Ready means the first sync is done: the container runs and /readyz says so.
    assert!(docker(["inspect", &name]).status.success());
    let (code, _) = http_get(&format!("http://{listen}/readyz"), Duration::from_secs(5)).unwrap();
    assert_eq!(code, 200);
    run.signal("TERM");
    let n = server
        .recv(&mut buf)
        .unwrap_or_else(|e| panic!("no STOPPING=1: {e}\n{}", run.stderr()));
    assert_eq!(&buf[..n], b"STOPPING=1");
    assert_eq!(run.wait(Duration::from_secs(30)), Some(0));
}

/// A system service has no `$HOME`: dockop finds the home directory of its uid in the passwd file
/// (`DOCKOP_PASSWD_FILE` stands in for /etc/passwd, so root's real ~/.docker is never touched) and reads
/// the `docker login` made there.
#[test]
fn credentials_found_without_home_through_passwd() {
    let env = TestEnv::new("nohome");
    let name = env.name("web");
    let port = env.free_port();
    let file = env.write("web.yaml", &env.web_spec(&name, AUTH_WEB_V1, port));
    let uid = std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .unwrap();
    let run = |home: &Path| {
        let passwd = env.write(
            "passwd",
            &format!(
                "daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\nsomeone:x:{uid}:0:test:{}:/bin/sh\n",
                home.display()
            ),
        );
        let mut cmd = env
            .dockop()
            .command(["apply", "-f", file.to_str().unwrap()]);
        cmd.env_remove("HOME")
            .env_remove("DOCKER_CONFIG")
            .env("DOCKOP_PASSWD_FILE", &passwd);
        let out = cmd.output().unwrap();
        (
            out.status.code(),
            format!(
                "{}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    };
    // A home without a login: the registry refuses (so the next success is the login's doing).
    let empty = env.dir().join("empty-home");
    std::fs::create_dir_all(&empty).unwrap();
    let (code, text) = run(&empty);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("docker login 127.0.0.1:5001"), "{text}");
    let home = env.dir().join("home");
    std::fs::create_dir_all(home.join(".docker")).unwrap();
    docker_login(
        &home.join(".docker"),
        AUTH_REGISTRY,
        AUTH_USER,
        AUTH_PASSWORD,
    );
    let (code, text) = run(&home);
    assert_eq!(code, Some(0), "{text}");
    assert_eq!(served_version(port).as_deref(), Some("1"));
    assert!(!text.contains(AUTH_PASSWORD));
}

#[test]
fn usage_errors_exit_64_never_2() {
    let env = TestEnv::new("usage");
    for args in [
        vec!["plan"],
        vec!["plan", "-f", "x.yaml", "--bogus"],
        vec!["apply", "--nope"],
        vec!["status", "-o", "xml"],
        vec!["frobnicate"],
        vec!["validate"],
        vec!["run", "-f", "-"],
    ] {
        let out = env.dockop().run(&args);
        assert_eq!(out.code, Some(64), "{args:?}: {out}");
        assert!(out.stderr.contains("error:"), "{out}");
    }
    env.dockop().run(["--help"]).assert_success();
    env.dockop().run(["plan", "--help"]).assert_success();
    let out = env.dockop().run(["--version"]);
    out.assert_success();
    assert!(out.stdout.starts_with("dockop "));
}

#[test]
fn completions_for_every_shell() {
    let env = TestEnv::new("completion");
    for (shell, marker) in [
        ("bash", "complete -F"),
        ("zsh", "#compdef dockop"),
        ("fish", "complete -c dockop"),
    ] {
        let out = env.dockop().run(["completion", shell]);
        out.assert_success();
        assert!(
            out.stdout.contains(marker),
            "{shell}: {}",
            &out.stdout[..200.min(out.stdout.len())]
        );
    }
}

#[test]
fn version_reports_the_engine() {
    let out = TestEnv::new("version").dockop().run(["version"]);
    out.assert_success();
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert!(
        lines[0].starts_with("dockop ") && lines[0].contains("(commit "),
        "{out}"
    );
    assert!(
        lines[1].starts_with("engine: Docker ") && lines[1].contains("(API 1."),
        "{out}"
    );
}

#[test]
fn validate_json_stdin_and_quiet() {
    let env = TestEnv::new("validate-json");
    let bad = "apiVersion: dockop.dev/v1alpha1\nkind: Container\nmetadata: {name: Bad_Name}\nspec:\n  image: 127.0.0.1:5000/web:v1\n";
    let out = env
        .dockop()
        .run_with_stdin(["validate", "-o", "json", "-"], bad);
    out.assert_code(1);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).expect("JSON on stdout");
    assert_eq!(v["valid"], false);
    let f = &v["findings"][0];
    assert_eq!(f["file"], "<stdin>");
    assert_eq!(f["severity"], "error");
    assert_eq!(f["line"], 3);
    assert!(f["column"].as_u64().unwrap() > 0);
    assert_eq!(f["field"], "metadata.name");
    assert!(
        f["problem"].as_str().is_some() && f.get("fix").is_some(),
        "{f}"
    );

    let good = env.web_spec(&env.name("web"), WEB_V1, 1);
    let out = env.dockop().run_with_stdin(["validate", "-"], &good);
    out.assert_success();
    let out = env.dockop().run_with_stdin(["validate", "-q", "-"], bad);
    out.assert_code(1);
    assert!(out.stdout.is_empty() && out.stderr.is_empty(), "{out}");
}

#[test]
fn plan_json_quiet_and_field_changes() {
    let env = TestEnv::new("plan-json");
    let name = env.name("web");
    let port = env.free_port();
    let v1 = env.web_spec(&name, WEB_V1, port);
    // Nothing applied yet: a create, exit 2; JSON on stdout.
    let out = env
        .dockop()
        .run_with_stdin(["plan", "-f", "-", "-o", "json"], &v1);
    out.assert_code(2);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).expect("JSON");
    let o = &v["objects"][0];
    assert_eq!(o["name"], name.as_str());
    assert_eq!(o["changes"], true);
    let steps: Vec<&str> = o["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    assert!(
        !steps
            .iter()
            .any(|s| s.contains("named volumes") || s.contains("apply users")),
        "{steps:?}"
    );
    let out = env.dockop().run_with_stdin(["plan", "-q", "-f", "-"], &v1);
    out.assert_code(2);
    assert!(out.stdout.is_empty(), "{out}");

    let file = env.write("web.yaml", &v1);
    env.dockop()
        .run(["apply", "-q", "-f", file.to_str().unwrap()])
        .assert_success();
    env.dockop()
        .run(["plan", "-q", "-f", file.to_str().unwrap()])
        .assert_code(0);
    assert!(
        v1.contains("\n  update: "),
        "the harness spec changed shape: {v1}"
    );
    let v2 = v1.replace(
        "\n  update: ",
        "\n  env:\n    - {name: TZ, value: Europe/Paris}\n  update: ",
    );
    let file = env.write("web.yaml", &v2);
    let out = env.dockop().run(["plan", "-f", file.to_str().unwrap()]);
    out.assert_code(2);
    assert!(out.stdout.contains("+ spec.env[TZ]: "), "{out}");
    assert!(out.stdout.contains("Europe/Paris"), "{out}");

    // An update that changed only the spec: rollback says how to go back instead.
    env.dockop()
        .run(["apply", "-q", "-f", file.to_str().unwrap()])
        .assert_success();
    let out = env.dockop().run(["rollback", &name]);
    out.assert_code(1);
    assert!(
        out.stderr.contains("was to its spec, not its image digest")
            && out.stderr.contains("revert"),
        "{out}"
    );

    // A file named by valueFrom changes: plan says so, never with the content.
    let secret = env.write("api-key", "first-secret-value");
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let v3 = v2.replace(
        "  env:\n",
        &format!(
            "  env:\n    - {{name: API_KEY, valueFrom: {{file: {}}}}}\n",
            secret.display()
        ),
    );
    let file = env.write("web.yaml", &v3);
    let out = env.dockop().run(["plan", "-f", file.to_str().unwrap()]);
    out.assert_code(2);
    assert!(
        out.stdout.contains("+ spec.env[API_KEY]: ") && out.stdout.contains("api-key"),
        "{out}"
    );
    env.dockop()
        .run(["apply", "-q", "-f", file.to_str().unwrap()])
        .assert_success();
    std::fs::write(&secret, "second-secret-value").unwrap();
    let out = env.dockop().run(["plan", "-f", file.to_str().unwrap()]);
    out.assert_code(2);
    assert!(out.stdout.contains("valueFrom.file (changed)"), "{out}");
    assert!(!format!("{out}").contains("secret-value"), "{out}");

    for fmt in ["json", "yaml", "wide", "text"] {
        let out = env.dockop().run(["status", &name, "-o", fmt]);
        out.assert_success();
        assert!(out.stdout.contains(&name), "{fmt}: {out}");
    }
    // The machine formats parse: JSON here, YAML with a YAML parser (PyYAML), to the same name.
    let json: serde_json::Value =
        serde_json::from_str(&env.dockop().run(["status", &name, "-o", "json"]).stdout)
            .expect("status -o json parses");
    assert_eq!(json["name"], name.as_str());
    let yaml = env.dockop().run(["status", &name, "-o", "yaml"]).stdout;
    let parsed = std::process::Command::new("/usr/bin/python3")
        .args([
            "-c",
            "import sys, yaml; print(yaml.safe_load(sys.stdin.read())['name'])",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            if let Some(mut i) = c.stdin.take() {
                i.write_all(yaml.as_bytes())?;
            }
            c.wait_with_output()
        })
        .expect("python3");
    assert!(
        parsed.status.success(),
        "status -o yaml does not parse: {yaml}"
    );
    assert_eq!(String::from_utf8_lossy(&parsed.stdout).trim(), name);
}
