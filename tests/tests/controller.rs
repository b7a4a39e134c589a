//! End-to-end tests of the long-running controller (`dockop run`): file and git sources, Docker events,
//! the state-dir lock and shutdown — the real binary against the real engine and the test bed's images.
//! Each test has its own names, ports and state dir; `TestEnv` removes what they made, also on failure.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::path::Path;
use std::time::{Duration, Instant};

use dockop_e2e::images::*;
use dockop_e2e::*;

/// `dockop run ARGS... --listen 127.0.0.1:<free port>`, stopped on drop.
fn run(env: &TestEnv, args: &[&str]) -> Running {
    let listen = format!("127.0.0.1:{}", env.free_port());
    let mut all: Vec<&str> = vec!["-v", "run", "--listen", &listen];
    all.extend_from_slice(args);
    env.dockop().spawn(all, env.dir())
}

#[track_caller]
fn wait_version(d: &Running, port: u16, version: &str, within: Duration) {
    let ok = wait_until(within, || served_version(port).as_deref() == Some(version));
    assert!(
        ok,
        "port {port} did not serve version {version} within {within:?}; serving {:?}\ndockop log:\n{}",
        served_version(port),
        d.stderr()
    );
}

fn status_json(env: &TestEnv, name: &str) -> Option<serde_json::Value> {
    let out = env.dockop().run(["status", name, "-o", "json"]);
    if !out.success() {
        return None;
    }
    serde_json::from_str(&out.stdout).ok()
}

#[track_caller]
fn wait_degraded(env: &TestEnv, d: &Running, name: &str, reason: &str) -> String {
    let mut message = String::new();
    let ok = wait_until(Duration::from_secs(30), || {
        match status_json(env, name).and_then(|s| try_condition(&s, "Degraded")) {
            Some((true, r, m)) if r == reason => {
                message = m;
                true
            }
            _ => false,
        }
    });
    assert!(
        ok,
        "{name} not Degraded/{reason}: {:#?}\ndockop log:\n{}",
        status_json(env, name),
        d.stderr()
    );
    message
}

fn container_id(name: &str) -> Option<String> {
    let out = docker(["inspect", "-f", "{{.Id}} {{.State.Running}}", name]);
    let s = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let (id, running) = s.split_once(' ')?;
    (out.status.success() && running == "true").then(|| id.to_owned())
}

/// Vim's save: write a new file next to it, rename it over.
fn rename_save(path: &Path, contents: &str) {
    let tmp = path.with_extension("yaml.swp");
    std::fs::write(&tmp, contents).expect("write temp");
    std::fs::rename(&tmp, path).expect("rename over");
}

#[test]
fn file_edits_converge_and_invalid_edits_keep_the_old_container() {
    let env = TestEnv::new("ctl-file-edit");
    let name = env.name("web");
    let port = env.free_port();
    let file = env.write("spec/web.yaml", &env.web_spec(&name, WEB_V1, port));
    let d = run(&env, &["-f", file.to_str().expect("utf8")]);
    wait_version(&d, port, "1", Duration::from_secs(60));

    // In-place edit.
    std::fs::write(&file, env.web_spec(&name, WEB_V2, port)).expect("edit");
    wait_version(&d, port, "2", Duration::from_secs(30));

    // Vim-style save: temp file renamed over the original.
    rename_save(&file, &env.web_spec(&name, WEB_V3, port));
    wait_version(&d, port, "3", Duration::from_secs(30));
    let revision = status_json(&env, &name).expect("status")["revision"].clone();
    assert!(
        revision.as_str().is_some_and(|r| r.len() == 12),
        "content hash revision: {revision}"
    );

    // Invalid edit: the old container keeps serving, status says SpecInvalid with file:line:col.
    let id_before = container_id(&name).expect("running");
    let broken = env
        .web_spec(&name, WEB_V1, port)
        .replace("  image:", "  imagee:");
    std::fs::write(&file, broken).expect("break");
    let message = wait_degraded(&env, &d, &name, "SpecInvalid");
    assert!(message.contains("web.yaml:"), "file:line:col in {message}");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        served_version(port).as_deref(),
        Some("3"),
        "old container serves"
    );
    assert_eq!(
        container_id(&name).as_deref(),
        Some(id_before.as_str()),
        "not touched"
    );

    // Fixed again: converges and the condition clears.
    std::fs::write(&file, env.web_spec(&name, WEB_V2, port)).expect("fix");
    wait_version(&d, port, "2", Duration::from_secs(30));
    let cleared = wait_until(Duration::from_secs(20), || {
        status_json(&env, &name)
            .and_then(|s| try_condition(&s, "Degraded"))
            .is_some_and(|(on, _, _)| !on)
    });
    assert!(cleared, "Degraded cleared: {:#?}", status_json(&env, &name));
}

#[test]
fn directory_with_two_files_and_three_objects_then_orphan() {
    let env = TestEnv::new("ctl-dir");
    let (a, b, c) = (env.name("a"), env.name("b"), env.name("c"));
    let (pa, pb, pc) = (env.free_port(), env.free_port(), env.free_port());
    let one = format!(
        "{}---\n{}",
        env.web_spec(&a, WEB_V1, pa),
        env.web_spec(&b, WEB_V2, pb)
    );
    env.write("spec/one.yaml", &one);
    env.write("spec/two.yml", &env.web_spec(&c, WEB_V3, pc));
    env.write("spec/notes.txt", "not a spec");
    let dir = env.dir().join("spec");
    let d = run(&env, &["-f", dir.to_str().expect("utf8")]);
    wait_version(&d, pa, "1", Duration::from_secs(90));
    wait_version(&d, pb, "2", Duration::from_secs(30));
    wait_version(&d, pc, "3", Duration::from_secs(30));

    // Remove `b` from the files: left running, reported Orphaned.
    env.write("spec/one.yaml", &env.web_spec(&a, WEB_V1, pa));
    let message = wait_degraded(&env, &d, &b, "Orphaned");
    assert!(message.contains("--prune"), "{message}");
    assert_eq!(
        served_version(pb).as_deref(),
        Some("2"),
        "orphan left running"
    );
}

#[test]
fn prune_removes_containers_and_status_but_not_volumes() {
    let env = TestEnv::new("ctl-prune");
    let (keep, gone) = (env.name("keep"), env.name("gone"));
    let (pk, pg) = (env.free_port(), env.free_port());
    let vol = format!("{gone}-data");
    let gone_spec = env.web_spec(&gone, WEB_V1, pg).replace(
        "  init: true\n",
        &format!("  volumes:\n    - {{name: {vol}, mountPath: /data}}\n  init: true\n"),
    );
    env.write("spec/keep.yaml", &env.web_spec(&keep, WEB_V1, pk));
    let gone_file = env.write("spec/gone.yaml", &gone_spec);
    let dir = env.dir().join("spec");
    let d = run(&env, &["-f", dir.to_str().expect("utf8"), "--prune"]);
    wait_version(&d, pk, "1", Duration::from_secs(60));
    wait_version(&d, pg, "1", Duration::from_secs(30));
    std::fs::remove_file(&gone_file).expect("rm");
    let ok = wait_until(Duration::from_secs(30), || {
        container_id(&gone).is_none() && status_json(&env, &gone).is_none()
    });
    assert!(ok, "pruned\n{}", d.stderr());
    assert!(
        docker(["volume", "inspect", &vol]).status.success(),
        "volume kept"
    );
    docker(["volume", "rm", "-f", &vol]);
    assert_eq!(
        served_version(pk).as_deref(),
        Some("1"),
        "the other object untouched"
    );
}

#[test]
fn git_commits_apply_with_their_sha_and_bad_commits_are_rejected() {
    let env = TestEnv::new("ctl-git");
    let name = env.name("web");
    let port = env.free_port();
    let (url, work) = env.git_repo();
    std::fs::write(work.join("README.md"), "not a spec\n").expect("write");
    let c1 = commit(
        &work,
        "deploy/web.yaml",
        &env.web_spec(&name, WEB_V1, port),
        "v1",
    );
    let d = run(
        &env,
        &[
            "--git",
            &url,
            "--branch",
            "main",
            "--path",
            "deploy",
            "--git-poll-seconds",
            "1",
        ],
    );
    wait_version(&d, port, "1", Duration::from_secs(60));
    let revision = |env: &TestEnv| {
        status_json(env, &name).and_then(|s| s["revision"].as_str().map(str::to_owned))
    };
    assert!(
        wait_until(Duration::from_secs(10), || revision(&env).as_deref()
            == Some(c1.as_str())),
        "revision {c1}: {:?}",
        revision(&env)
    );

    let c2 = commit(
        &work,
        "deploy/web.yaml",
        &env.web_spec(&name, WEB_V2, port),
        "v2",
    );
    wait_version(&d, port, "2", Duration::from_secs(30));
    assert!(
        wait_until(Duration::from_secs(10), || revision(&env).as_deref()
            == Some(c2.as_str())),
        "revision {c2}: {:?}",
        revision(&env)
    );

    // A bad commit (v3 plus an invalid file): rejected whole, v2 stays, SpecInvalid reported.
    commit(
        &work,
        "deploy/web.yaml",
        &env.web_spec(&name, WEB_V3, port),
        "v3",
    );
    let bad = commit(
        &work,
        "deploy/bad.yaml",
        "apiVersion: dockop.dev/v1alpha1\nkind: Container\nmetadata: {name: Bad_Name}\nspec: {image: x}\n",
        "bad",
    );
    let message = wait_degraded(&env, &d, &name, "SpecInvalid");
    assert!(
        message.contains(&bad[..12]),
        "names the rejected commit: {message}"
    );
    assert!(
        message.contains("deploy/bad.yaml:"),
        "file:line:col: {message}"
    );
    assert_eq!(served_version(port).as_deref(), Some("2"));
    assert_eq!(revision(&env).as_deref(), Some(c2.as_str()));
}

#[test]
fn docker_rm_is_recreated_within_two_seconds() {
    let env = TestEnv::new("ctl-events");
    let name = env.name("web");
    let port = env.free_port();
    let file = env.write("web.yaml", &env.web_spec(&name, WEB_V1, port));
    let d = run(&env, &["-f", file.to_str().expect("utf8")]);
    wait_version(&d, port, "1", Duration::from_secs(60));
    // Let the first reconcile's own events settle.
    std::thread::sleep(Duration::from_secs(2));
    let before = container_id(&name).expect("running");
    docker_ok(["rm", "-f", &name]);
    let t0 = Instant::now();
    let ok = wait_until(Duration::from_secs(20), || {
        container_id(&name).is_some_and(|id| id != before)
    });
    let took = t0.elapsed();
    assert!(ok, "recreated\n{}", d.stderr());
    eprintln!("docker rm -f -> recreated and running in {took:?}");
    assert!(took < Duration::from_secs(2), "recreated in {took:?}");
    wait_version(&d, port, "1", Duration::from_secs(20));
}

#[test]
fn second_run_on_the_same_state_dir_is_refused() {
    let env = TestEnv::new("ctl-lock");
    let name = env.name("web");
    let port = env.free_port();
    let file = env.write("web.yaml", &env.web_spec(&name, WEB_V1, port));
    let f = file.to_str().expect("utf8");
    let d = run(&env, &["-f", f]);
    wait_version(&d, port, "1", Duration::from_secs(60));
    let listen = format!("127.0.0.1:{}", env.free_port());
    let second = env.dockop().run(["run", "--listen", &listen, "-f", f]);
    assert_eq!(second.code, Some(1), "{second:?}");
    assert!(
        second.stderr.contains("dockop.lock") && second.stderr.contains("--state-dir"),
        "names the file and the fix: {}",
        second.stderr
    );
}

#[test]
fn sigterm_exits_promptly_and_cleanly() {
    let env = TestEnv::new("ctl-term");
    let name = env.name("web");
    let port = env.free_port();
    let file = env.write("web.yaml", &env.web_spec(&name, WEB_V1, port));
    let mut d = run(&env, &["-f", file.to_str().expect("utf8")]);
    wait_version(&d, port, "1", Duration::from_secs(60));
    // SIGTERM in the middle of an update: it finishes or is abandoned within stopTimeout + 5 s.
    std::fs::write(&file, env.web_spec(&name, WEB_SLOW, port)).expect("edit");
    std::thread::sleep(Duration::from_millis(800));
    let t0 = Instant::now();
    let code = d.stop(Duration::from_secs(10));
    let took = t0.elapsed();
    eprintln!("SIGTERM -> exit {code:?} in {took:?}");
    assert_eq!(code, Some(0), "{}", d.stderr());
    assert!(took < Duration::from_secs(2 + 5), "exited in {took:?}");
    // Nothing left half-way that a restart cannot resume: a new run converges.
    let d2 = run(&env, &["-f", file.to_str().expect("utf8")]);
    let ok = wait_until(Duration::from_secs(60), || served_version(port).is_some());
    assert!(ok, "a restart converges\n{}", d2.stderr());
}
