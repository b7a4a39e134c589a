//! End-to-end tests of hostile or careless input (issue #19): the real binary on its state directory,
//! its logs and its HTTP server. docs/reliability.md ("Hostile input") lists each case and its test.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use dockop_e2e::*;

fn mode(p: &std::path::Path) -> u32 {
    std::fs::metadata(p).expect("stat").permissions().mode() & 0o7777
}

/// `dockop status` reads: it leaves a shared (1777) state directory's mode and a corrupt status file
/// as they are, and reports the corrupt file as an error.
#[test]
fn status_changes_nothing_in_the_state_dir() {
    let env = TestEnv::new("status-read-only");
    let state = env.state_dir();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o1777)).expect("chmod");
    let objects = state.join("objects");
    std::fs::create_dir_all(&objects).expect("mkdir");
    let corrupt = objects.join("web.json");
    std::fs::write(&corrupt, b"{not json").expect("write");
    let listing = || {
        let mut names: Vec<String> = std::fs::read_dir(&objects)
            .expect("ls")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    let before = listing();

    let out = env.dockop().run(["status"]);
    out.assert_code(1);
    assert!(
        out.stderr.contains("web.json is corrupt"),
        "the corrupt file is reported\n{out}"
    );
    let named = env.dockop().run(["status", "web", "-o", "json"]);
    named.assert_code(1);

    assert_eq!(mode(&state), 0o1777, "the mode is left alone\n{out}");
    assert_eq!(std::fs::read(&corrupt).expect("still there"), b"{not json");
    assert_eq!(listing(), before, "nothing renamed or added");
    assert!(!state.join("dockop.lock").exists(), "no lock taken");
}

/// Writes `spec/web.yaml`: web object `name` whose env `APP_TOKEN` comes from the secret `file`.
fn web_with_secret_env(env: &TestEnv, name: &str, file: &std::path::Path) -> std::path::PathBuf {
    let spec = env
        .web_spec(name, images::WEB_V1, env.free_port())
        .replacen(
            "spec:\n",
            &format!(
                "spec:\n  env:\n    - {{name: APP_TOKEN, valueFrom: {{file: {}}}}}\n",
                file.display()
            ),
            1,
        );
    env.write("spec/web.yaml", &spec)
}

/// At `-vvv` the engine client and the HTTP libraries stay at `info`: their debug lines print create
/// requests, whose environment holds the values of `valueFrom` files.
#[test]
fn secrets_stay_out_of_the_logs_at_vvv() {
    let env = TestEnv::new("secret-logs");
    let secret = format!("s3cr3t-{:016x}", fastrand::u64(..));
    let file = env.write("secrets/app-token", &secret);
    let name = env.name("web");
    let spec = web_with_secret_env(&env, &name, &file);

    // RUST_LOG blank: the level comes from -vvv alone, whatever the caller's environment says.
    let out = env.dockop().env("RUST_LOG", "").run([
        "-vvv",
        "apply",
        "-f",
        spec.to_str().expect("utf-8 path"),
    ]);
    out.assert_success();
    assert!(
        out.stderr.contains("DEBUG") || out.stderr.contains("TRACE"),
        "-vvv logs at debug and below\n{out}"
    );
    let env_of = docker_ok([
        "inspect",
        "-f",
        "{{range .Config.Env}}{{println .}}{{end}}",
        &name,
    ]);
    assert!(
        env_of.contains(&format!("APP_TOKEN={secret}")),
        "the secret reached the container: {env_of}"
    );
    assert!(
        !out.stderr.contains(&secret) && !out.stdout.contains(&secret),
        "the secret is in dockop's output\n{out}"
    );
}

/// A secret (`valueFrom.file`) enters the spec-hash label only as a digest under the install's key: the
/// key is made 0600 by `apply` (never by `plan`), stays across runs, and the object is not recreated
/// again by later runs with the same value; rotating the file recreates it once.
#[test]
fn secret_values_are_keyed_in_the_spec_hash() {
    let env = TestEnv::new("secret-hash");
    let file = env.write("secrets/app-token", "tok-1");
    let name = env.name("web");
    let spec = web_with_secret_env(&env, &name, &file);
    let spec = spec.to_str().expect("utf-8 path");
    let key = env.state_dir().join("spec-hash.key");

    let plan = env.dockop().run(["plan", "-f", spec]);
    assert!(!key.exists(), "plan made no key\n{plan}");
    env.dockop().run(["apply", "-f", spec]).assert_success();
    assert_eq!(mode(&key), 0o600);
    let key_text = std::fs::read_to_string(&key).expect("key");
    let id_hash = || {
        docker_ok([
            "inspect",
            "-f",
            "{{.Id}} {{index .Config.Labels \"dockop.dev/spec-hash\"}}",
            &name,
        ])
    };
    let first = id_hash();
    for _ in 0..2 {
        let out = env.dockop().run(["apply", "-f", spec]);
        out.assert_success();
        assert_eq!(id_hash(), first, "not recreated again\n{out}");
    }
    env.dockop().run(["plan", "-f", spec]).assert_code(0);
    assert_eq!(
        std::fs::read_to_string(&key).expect("key"),
        key_text,
        "the key stays"
    );

    std::fs::write(&file, "tok-2").expect("rotate");
    env.dockop().run(["apply", "-f", spec]).assert_success();
    let rotated = id_hash();
    assert_ne!(rotated, first, "a rotated secret recreates the container");
    env.dockop().run(["apply", "-f", spec]).assert_success();
    assert_eq!(id_hash(), rotated, "once");
}

/// A file of thousands of mistakes dropped into the directory `dockop run` watches costs a handful of
/// warning lines per change (the first few whole, then a count), not one per mistake, and `/livez`
/// answers throughout.
#[test]
fn a_hostile_file_costs_a_few_log_lines_per_change() {
    let env = TestEnv::new("hostile-log");
    let dir = env.dir().join("desired");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let listen_port = env.free_port();
    let listen = format!("127.0.0.1:{listen_port}");
    let d = env.dockop().spawn(
        [
            "run",
            "--listen",
            listen.as_str(),
            "-f",
            dir.to_str().expect("utf8"),
        ],
        env.dir(),
    );
    let url = format!("http://{listen}/livez");
    let livez = || matches!(http_get(&url, Duration::from_secs(2)), Ok((200, _)));
    assert!(wait_until(Duration::from_secs(20), livez), "{}", d.stderr());
    let keys: String = (0..5_000).map(|i| format!("  unknown{i}: 1\n")).collect();
    let hostile = format!(
        "apiVersion: dockop.dev/v1alpha1\nkind: Container\nmetadata:\n  name: {}\nspec:\n  image: web\n{keys}",
        env.name("bad")
    );
    std::fs::write(dir.join("bad.yaml"), hostile).expect("write");
    let counted = || d.stderr().contains("more problem(s)");
    assert!(
        wait_until(Duration::from_secs(30), counted),
        "no summary line:\n{}",
        d.stderr()
    );
    // One more change of the same file: again a handful of lines.
    std::fs::write(
        dir.join("bad.yaml"),
        format!(
            "apiVersion: dockop.dev/v1alpha1\nkind: Container\nmetadata:\n  name: {}\nspec:\n  image: web\n{keys}  other: 2\n",
            env.name("bad")
        ),
    )
    .expect("write");
    let two = || d.stderr().matches("more problem(s)").count() >= 2;
    assert!(wait_until(Duration::from_secs(30), two), "{}", d.stderr());
    let log = d.stderr();
    let warnings = log.lines().filter(|l| l.contains("WARN")).count();
    assert!(
        warnings <= 20,
        "{warnings} warning lines for two changes of one bad file:\n{log}"
    );
    assert!(livez());
}
