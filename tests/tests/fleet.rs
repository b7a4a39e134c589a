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
