//! End-to-end tests of fleets (#21): dockop instances sharing one engine leave each other's containers
//! alone (`--instance`, `--prune` included); remote engine addresses are checked like the Docker CLI does.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use dockop_e2e::images::*;
use dockop_e2e::*;

/// One `dockop run --instance NAME -f DIR --prune` with its own state dir and logs under `env.dir()/NAME`.
fn run_instance(env: &TestEnv, instance: &str, dir: &Path) -> (Dockop, Running) {
    let home = env.dir().join(instance);
    std::fs::create_dir_all(&home).expect("instance dir");
    let dockop = Dockop::new(home.join("state")).env("DOCKOP_INSTANCE", instance);
    let listen = format!("127.0.0.1:{}", env.free_port());
    let running = dockop.spawn(
        [
            "-v",
            "run",
            "--listen",
            &listen,
            "--resync-seconds",
            "2",
            "--prune",
            "-f",
            dir.to_str().expect("utf8"),
        ],
        &home,
    );
    (dockop, running)
}

fn label_of(container: &str, label: &str) -> Option<String> {
    let format = format!("{{{{index .Config.Labels \"{label}\"}}}}");
    let out = docker(["inspect", "-f", &format, container]);
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn running_id(name: &str) -> Option<String> {
    let out = docker(["inspect", "-f", "{{.Id}} {{.State.Running}}", name]);
    let s = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let (id, running) = s.split_once(' ')?;
    (out.status.success() && running == "true").then(|| id.to_owned())
}

fn degraded(dockop: &Dockop, name: &str) -> Option<(bool, String, String)> {
    let out = dockop.run(["status", name, "-o", "json"]);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).ok()?;
    try_condition(&v, "Degraded")
}

fn spec_dir(env: &TestEnv, sub: &str) -> PathBuf {
    let d = env.dir().join(sub);
    std::fs::create_dir_all(&d).expect("spec dir");
    d
}

#[test]
fn instances_on_one_engine_leave_each_other_alone_prune_included() {
    let env = TestEnv::new("fleet-inst");
    let (ia, ib) = (env.name("a"), env.name("b"));
    let (wa, wb) = (env.name("wa"), env.name("wb"));
    let (pa, pb, pc) = (env.free_port(), env.free_port(), env.free_port());
    let (da, db) = (spec_dir(&env, "spec-a"), spec_dir(&env, "spec-b"));
    std::fs::write(da.join("wa.yaml"), env.web_spec(&wa, WEB_V1, pa)).expect("write");
    std::fs::write(db.join("wb.yaml"), env.web_spec(&wb, WEB_V1, pb)).expect("write");
    let (dockop_a, a) = run_instance(&env, &ia, &da);
    let ok = wait_until(Duration::from_secs(60), || {
        served_version(pa).as_deref() == Some("1")
    });
    assert!(ok, "a serves wa\n{}", a.stderr());
    // b also wants wa's name: a NameConflict naming a, and wa untouched.
    std::fs::write(db.join("wa.yaml"), env.web_spec(&wa, WEB_V1, pc)).expect("write");
    let (dockop_b, b) = run_instance(&env, &ib, &db);
    let ok = wait_until(Duration::from_secs(60), || {
        served_version(pb).as_deref() == Some("1")
    });
    assert!(ok, "b serves wb\n{}", b.stderr());
    assert_eq!(label_of(&wa, "dockop.dev/instance").as_deref(), Some(&*ia));
    assert_eq!(label_of(&wb, "dockop.dev/instance").as_deref(), Some(&*ib));
    let mut message = String::new();
    let ok = wait_until(Duration::from_secs(30), || match degraded(&dockop_b, &wa) {
        Some((true, r, m)) if r == "NameConflict" => {
            message = m;
            true
        }
        _ => false,
    });
    assert!(ok, "b reports NameConflict on wa\n{}", b.stderr());
    assert!(message.contains(&ia), "names the other instance: {message}");
    let wa_id = running_id(&wa).expect("wa runs");

    // Both leave the source of b: b prunes its own wb, and never a's wa.
    std::fs::remove_file(db.join("wa.yaml")).expect("rm");
    std::fs::remove_file(db.join("wb.yaml")).expect("rm");
    let ok = wait_until(Duration::from_secs(30), || running_id(&wb).is_none());
    assert!(ok, "b pruned wb\n{}", b.stderr());
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(
        running_id(&wa),
        Some(wa_id),
        "a's wa untouched by b's prune"
    );
    assert_eq!(served_version(pa).as_deref(), Some("1"));
    assert!(
        degraded(&dockop_a, &wa).is_none_or(|(on, _, _)| !on),
        "a's wa healthy\n{}",
        a.stderr()
    );
    drop(b);
    drop(a);
}

/// The image label of container `name` as `docker` (any engine) reports it.
fn image_of(out: std::process::Output) -> Option<String> {
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

const IMAGE_LABEL: &str = "{{index .Config.Labels \"dockop.dev/image\"}} {{.State.Running}}";

#[test]
fn one_repository_drives_two_engines_one_over_tls() {
    let env = TestEnv::new("fleet-two");
    let engine_b = SecondEngine::start(env.id());
    assert_ne!(
        main_dockerd_pid(),
        Some(engine_b.pid()),
        "the main engine is found by its own pid file"
    );
    let (shared, ha, hb) = (env.name("shared"), env.name("ha"), env.name("hb"));
    let (pa, pb) = (env.free_port(), env.free_port());
    // The shared object publishes no port (both engines share this machine's ports): probed on its bridge.
    let shared_spec = |image: &str| {
        env.web_spec(&shared, image, 1)
            .lines()
            .filter(|l| !l.contains("ports:") && !l.contains("containerPort"))
            .map(|l| format!("{l}\n"))
            .collect::<String>()
    };
    let (url, work) = env.git_repo();
    std::fs::create_dir_all(work.join("hosts/a")).expect("mkdir");
    std::fs::write(work.join("hosts/a/a.yaml"), env.web_spec(&ha, WEB_V1, pa)).expect("write");
    std::fs::create_dir_all(work.join("hosts/b")).expect("mkdir");
    std::fs::write(work.join("hosts/b/b.yaml"), env.web_spec(&hb, WEB_V1, pb)).expect("write");
    commit(&work, "common/shared.yaml", &shared_spec(WEB_V1), "v1");

    let token = env.write("token", "fleet-token\n");
    let start = |who: &str, engine_flags: &[String]| {
        let home = env.dir().join(who);
        std::fs::create_dir_all(&home).expect("home");
        let listen = format!("127.0.0.1:{}", env.free_port());
        let mut args: Vec<String> = engine_flags.to_vec();
        args.extend(
            [
                "--instance",
                &env.name(who),
                "-v",
                "run",
                "--listen",
                &listen,
                "--reconcile-token-file",
                token.to_str().expect("utf8"),
                "--git",
                &url,
                "--path",
                "common",
                "--path",
                &format!("hosts/{who}"),
                "--git-poll-seconds",
                "1",
                "--resync-seconds",
                "2",
            ]
            .map(str::to_owned),
        );
        (Dockop::new(home.join("state")).spawn(args, &home), listen)
    };
    let (a, listen_a) = start("a", &[]);
    let (ca, cert, key) = engine_b.client_certs();
    let (b, listen_b) = start(
        "b",
        &[
            "--docker-host".into(),
            engine_b.tcp_host(),
            "--tlsverify".into(),
            "--tlscacert".into(),
            ca.display().to_string(),
            "--tlscert".into(),
            cert.display().to_string(),
            "--tlskey".into(),
            key.display().to_string(),
        ],
    );
    let on_a = || image_of(docker(["inspect", "-f", IMAGE_LABEL, &shared]));
    let on_b = || image_of(engine_b.docker(["inspect", "-f", IMAGE_LABEL, &shared]));
    let running = |image: &str| Some(format!("{image} true"));
    let ok = wait_until(Duration::from_secs(90), || {
        served_version(pa).as_deref() == Some("1")
            && served_version(pb).as_deref() == Some("1")
            && on_a() == running(WEB_V1)
            && on_b() == running(WEB_V1)
    });
    assert!(
        ok,
        "both hosts converged: a {:?} b {:?}\n--- a\n{}\n--- b\n{}",
        on_a(),
        on_b(),
        a.stderr(),
        b.stderr()
    );
    assert!(
        image_of(engine_b.docker(["inspect", "-f", "x", &ha])).is_none(),
        "hosts/a is not on b"
    );
    assert!(
        image_of(docker(["inspect", "-f", "x", &hb])).is_none(),
        "hosts/b is not on a"
    );

    // The fleet view: both instances' /status in one list, each object with its host.
    let fleet_status = |extra: &[&str]| {
        let (sa, sb) = (format!("http://{listen_a}"), format!("http://{listen_b}"));
        let mut args = vec!["status", "--server", &sa, "--server", &sb, "--token-file"];
        args.push(token.to_str().expect("utf8"));
        args.extend_from_slice(extra);
        env.dockop().run(args)
    };
    let view = fleet_status(&["-o", "json"]);
    view.assert_success();
    let rows: Vec<serde_json::Value> = serde_json::from_str(&view.stdout).expect("json");
    let mut seen: Vec<(String, String)> = rows
        .iter()
        .map(|r| {
            (
                r["host"].as_str().unwrap_or_default().to_owned(),
                r["name"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    seen.sort();
    let mut want = vec![
        (listen_a.clone(), ha.clone()),
        (listen_a.clone(), shared.clone()),
        (listen_b.clone(), hb.clone()),
        (listen_b.clone(), shared.clone()),
    ];
    want.sort();
    assert_eq!(seen, want);
    let table = fleet_status(&[]);
    table.assert_success();
    assert!(table.stdout.starts_with("HOST"), "{}", table.stdout);
    let no_token = env
        .dockop()
        .run(["status", "--server", &format!("http://{listen_a}")]);
    no_token.assert_code(1);
    assert!(
        no_token.stderr.contains("--token-file"),
        "{}",
        no_token.stderr
    );

    // A commit to common/ updates both hosts.
    commit(
        &work,
        "common/shared.yaml",
        &shared_spec(WEB_V2),
        "shared v2",
    );
    let ok = wait_until(Duration::from_secs(90), || {
        on_a() == running(WEB_V2) && on_b() == running(WEB_V2)
    });
    assert!(
        ok,
        "common/ reached both: a {:?} b {:?}\n--- b\n{}",
        on_a(),
        on_b(),
        b.stderr()
    );

    // A commit to hosts/b/ updates b only.
    let ha_id = image_of(docker(["inspect", "-f", "{{.Id}}", &ha])).expect("ha");
    commit(
        &work,
        "hosts/b/b.yaml",
        &env.web_spec(&hb, WEB_V3, pb),
        "b v3",
    );
    let ok = wait_until(Duration::from_secs(90), || {
        served_version(pb).as_deref() == Some("3")
    });
    assert!(ok, "b serves v3\n{}", b.stderr());
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(served_version(pa).as_deref(), Some("1"), "a untouched");
    assert_eq!(
        image_of(docker(["inspect", "-f", "{{.Id}}", &ha])),
        Some(ha_id),
        "a's container not recreated"
    );
    drop(b);
    drop(a);
}

#[test]
fn plain_tcp_to_a_remote_engine_is_refused_with_the_fix() {
    let env = TestEnv::new("fleet-plain");
    let spec = env.write("spec/web.yaml", &env.web_spec(&env.name("w"), WEB_V1, 1));
    let out = env.dockop().run([
        "--docker-host",
        "tcp://192.0.2.10:2375",
        "plan",
        "-f",
        spec.to_str().expect("utf8"),
    ]);
    out.assert_code(1);
    assert!(
        out.stderr.contains("refusing plain") && out.stderr.contains("--insecure-engine"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("--tlsverify"), "{}", out.stderr);
}
