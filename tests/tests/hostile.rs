//! End-to-end tests of hostile or careless input (issue #19): the real binary on its state directory,
//! its logs and its HTTP server. docs/reliability.md ("Hostile input") lists each case and its test.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt;

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
