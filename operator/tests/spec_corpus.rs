//! The validation corpus: every bad input with its exact diagnostics (text, line, column), good inputs
//! that must load without findings, and inputs that must load with exactly the expected warnings.
//!
//! Expected outputs live next to the inputs (`NAME.expected`). After an intended change of messages,
//! regenerate them with `DOCKOP_UPDATE_FIXTURES=1 cargo test -p dockop --test spec_corpus` and review the
//! diff.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use dockop::spec::load::{Loaded, Severity, load_paths, load_str};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn yaml_files(dir: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(fixtures().join(dir))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

/// Loads `dir/NAME.yaml` under the display name `dir/NAME.yaml` and renders every diagnostic.
fn render(dir: &str, file: &Path) -> (Loaded, String) {
    let text = std::fs::read_to_string(file).unwrap();
    let shown = Path::new(dir).join(file.file_name().unwrap());
    let loaded = load_str(&shown, &text);
    let mut out = String::new();
    for d in &loaded.diagnostics {
        out.push_str(&d.to_string());
        out.push('\n');
    }
    (loaded, out)
}

fn check_expected(dir: &str, file: &Path, actual: &str) -> Result<(), String> {
    let expected_path = file.with_extension("expected");
    if std::env::var_os("DOCKOP_UPDATE_FIXTURES").is_some() {
        std::fs::write(&expected_path, actual).unwrap();
        return Ok(());
    }
    let expected = std::fs::read_to_string(&expected_path).map_err(|e| {
        format!(
            "{}: {e} (run with DOCKOP_UPDATE_FIXTURES=1 to create it)",
            expected_path.display()
        )
    })?;
    if expected != actual {
        return Err(format!(
            "{dir}/{}: diagnostics differ\n--- expected\n{expected}--- actual\n{actual}",
            file.file_name().unwrap().to_string_lossy()
        ));
    }
    Ok(())
}

#[test]
fn bad_inputs_fail_with_exact_diagnostics() {
    let files = yaml_files("bad");
    assert!(
        files.len() >= 30,
        "the bad corpus has {} cases",
        files.len()
    );
    let mut failures = Vec::new();
    for file in &files {
        let (loaded, out) = render("bad", file);
        if loaded.is_valid() {
            failures.push(format!(
                "{}: accepted, but it is in the bad corpus",
                file.display()
            ));
            continue;
        }
        for d in loaded.errors() {
            assert!(d.line >= 1 && d.column >= 1, "{d}");
        }
        if let Err(e) = check_expected("bad", file, &out) {
            failures.push(e);
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn good_inputs_load_without_findings() {
    for file in yaml_files("good") {
        let (loaded, out) = render("good", &file);
        assert!(out.is_empty(), "{}:\n{out}", file.display());
        assert!(!loaded.objects.is_empty(), "{}", file.display());
    }
}

#[test]
fn warning_inputs_are_valid_with_exact_warnings() {
    let mut failures = Vec::new();
    for file in yaml_files("warn") {
        let (loaded, out) = render("warn", &file);
        assert!(loaded.is_valid(), "{}:\n{out}", file.display());
        assert!(
            loaded
                .diagnostics
                .iter()
                .all(|d| d.severity == Severity::Warning)
        );
        assert!(!out.is_empty());
        if let Err(e) = check_expected("warn", &file, &out) {
            failures.push(e);
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn good_corpus_objects_keep_their_source() {
    let file = fixtures().join("good/multi-document.yaml");
    let loaded = load_paths(std::slice::from_ref(&file));
    assert!(loaded.is_valid());
    let names: Vec<&str> = loaded.objects.iter().map(|o| o.object.name()).collect();
    assert_eq!(names, ["one", "two"]);
    assert!(loaded.objects.iter().all(|o| o.file == file));
    assert_eq!(loaded.objects[0].line, 3);
    let full = load_paths(&[fixtures().join("good/full.yaml")]);
    let spec = &full.objects[0].object.spec;
    assert_eq!(spec.users.len(), 4);
    assert_eq!(spec.ports[2].host_ip, "0.0.0.0");
    assert_eq!(
        spec.update.window.as_deref(),
        Some("Sat,Sun 22:00-02:00 +02:00")
    );
}

#[test]
fn defaults_match_the_documented_ones() {
    let text = "apiVersion: dockop.dev/v1alpha1\nkind: Container\nmetadata: {name: d}\nspec:\n  image: web\n  ports: [{containerPort: 80}]\n  volumes: [{name: v, mountPath: /v}]\n  users: [{name: u}]\n  health: {port: 80}\n";
    let loaded = load_str(Path::new("d.yaml"), text);
    assert!(loaded.is_valid(), "{:?}", loaded.diagnostics);
    let spec = &loaded.objects[0].object.spec;
    let health = spec.health.as_ref().unwrap();
    let actual: Vec<(&str, String)> = vec![
        (
            "spec.ports[].hostPort",
            if spec.ports[0].host_port.is_none() {
                "containerPort".into()
            } else {
                "?".into()
            },
        ),
        ("spec.ports[].hostIP", spec.ports[0].host_ip.clone()),
        ("spec.ports[].protocol", spec.ports[0].protocol.to_string()),
        (
            "spec.volumes[].readOnly",
            spec.volumes[0].read_only.to_string(),
        ),
        ("spec.users[].locked", spec.users[0].locked.to_string()),
        (
            "spec.usersPrune",
            format!("{:?}", spec.users_prune).to_lowercase(),
        ),
        ("spec.health.path", health.path.clone()),
        (
            "spec.health.intervalSeconds",
            health.interval_seconds.to_string(),
        ),
        (
            "spec.health.timeoutSeconds",
            health.timeout_seconds.to_string(),
        ),
        (
            "spec.health.failureThreshold",
            health.failure_threshold.to_string(),
        ),
        (
            "spec.health.startupDeadlineSeconds",
            health.startup_deadline_seconds.to_string(),
        ),
        (
            "spec.update.policy",
            format!("{:?}", spec.update.policy).to_lowercase(),
        ),
        (
            "spec.update.checkIntervalSeconds",
            spec.update.check_interval_seconds.to_string(),
        ),
        ("spec.update.preflight", spec.update.preflight.to_string()),
        (
            "spec.update.rollback",
            format!("{:?}", spec.update.rollback).to_lowercase(),
        ),
        ("spec.init", spec.init.to_string()),
        (
            "spec.stopTimeoutSeconds",
            spec.stop_timeout_seconds.to_string(),
        ),
        ("spec.restart", spec.restart.as_docker().to_owned()),
    ];
    for (path, value) in actual {
        let documented = dockop::spec::commands::FIELD_DEFAULTS
            .iter()
            .find(|(p, _)| *p == path)
            .map(|(_, d)| *d);
        assert_eq!(documented, Some(value.as_str()), "{path}");
    }
}

#[test]
fn directories_and_unreadable_paths() {
    let dir = tempfile::tempdir().unwrap();
    let doc = |name: &str, port: u16| {
        format!(
            "apiVersion: dockop.dev/v1alpha1\nkind: Container\nmetadata: {{name: {name}}}\nspec:\n  image: web\n  ports: [{{containerPort: {port}}}]\n"
        )
    };
    std::fs::write(dir.path().join("b.yml"), doc("b", 81)).unwrap();
    std::fs::write(dir.path().join("a.yaml"), doc("a", 80)).unwrap();
    std::fs::write(dir.path().join("c.yaml"), doc("a", 80)).unwrap();
    std::fs::write(dir.path().join("notes.txt"), "not yaml").unwrap();
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    std::fs::write(dir.path().join("sub/d.yaml"), doc("d", 82)).unwrap();
    let loaded = load_paths(&[dir.path().to_path_buf()]);
    let names: Vec<&str> = loaded.objects.iter().map(|o| o.object.name()).collect();
    assert_eq!(
        names,
        ["a", "b"],
        "sorted, non-recursive, the duplicate refused"
    );
    let errors: Vec<String> = loaded.errors().map(|d| d.to_string()).collect();
    let first = dir.path().join("a.yaml");
    let c = dir.path().join("c.yaml");
    assert_eq!(
        errors,
        [
            format!(
                "{}:3:18: metadata.name: name \"a\" is already used by the object at {}:3:18\n  fix: names must be unique across every file: rename one of them",
                c.display(),
                first.display()
            ),
            format!(
                "{}:6:11: spec.ports[0].hostPort: host port 80/tcp on 127.0.0.1 is already published by \"a\" ({}:6)\n  fix: use another hostPort or hostIP",
                c.display(),
                first.display()
            ),
        ]
    );

    let missing = dir.path().join("missing.yaml");
    let loaded = load_paths(std::slice::from_ref(&missing));
    assert!(!loaded.is_valid());
    let d = loaded.errors().next().unwrap();
    assert_eq!(d.file, missing);
    assert!(
        d.problem
            .starts_with(&format!("cannot read {}", missing.display())),
        "{d}"
    );

    let big = dir.path().join("big.yaml");
    std::fs::write(&big, format!("# {}\n", "x".repeat(1024 * 1024))).unwrap();
    let loaded = load_paths(&[big]);
    assert!(
        loaded
            .errors()
            .next()
            .unwrap()
            .problem
            .contains("over 1048576 bytes (1 MiB) are refused")
    );

    let binary = dir.path().join("binary.yaml");
    std::fs::write(&binary, b"a: 1\nb: \xff\xfe\n").unwrap();
    let d = load_paths(&[binary]).diagnostics.remove(0);
    assert_eq!(
        (d.line, d.column, d.problem.as_str()),
        (2, 4, "the file is not UTF-8 text")
    );

    let empty = tempfile::tempdir().unwrap();
    let loaded = load_paths(&[empty.path().to_path_buf()]);
    assert!(loaded.is_valid());
    assert_eq!(loaded.warnings().count(), 1);
}
