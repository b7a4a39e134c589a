//! `dockop export kubernetes` end to end, without the Docker engine: every example and every corpus
//! file in `tests/data/export/corpus/` is exported by the real binary and each document is checked by
//! `kubernetes-validate --strict` (installed by `tests/testbed/up`); two golden files are compared
//! exactly (`DOCKOP_UPDATE_GOLDEN=1` rewrites them); the warnings on stderr are asserted; a secret
//! file's content never reaches stdout or stderr.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use dockop_e2e::{Dockop, RunOutput, workspace_root};

/// The Kubernetes version the documents are validated against (one the validator bundles).
const KUBERNETES_VERSION: &str = "1.34.0";
/// Where `tests/testbed/up` installs the validator when it is not on `PATH`.
const VALIDATOR_VENV: &str = "/var/lib/dockop-testbed/venv/bin/kubernetes-validate";

const CORPUS: &str = "tests/data/export/corpus";
const GOLDEN: &str = "tests/data/export/golden";

/// Runs `dockop ARGS` from the workspace root (so paths in messages are relative and stable).
fn dockop(args: &[&str], stdin: Option<&str>) -> RunOutput {
    let state = tempfile::tempdir().unwrap();
    let mut cmd = Dockop::new(state.path()).command(args);
    cmd.current_dir(workspace_root())
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let started = std::time::Instant::now();
    let mut child = cmd.spawn().expect("spawn dockop");
    if let Some(text) = stdin {
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }
    let out = child.wait_with_output().unwrap();
    RunOutput {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        timed_out: false,
        elapsed: started.elapsed(),
    }
}

fn export(files: &[&str]) -> RunOutput {
    let mut args = vec!["export", "kubernetes"];
    for f in files {
        args.extend(["-f", f]);
    }
    dockop(&args, None)
}

/// `kubernetes-validate` from `PATH`, else from the test bed's venv.
fn validator() -> PathBuf {
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join("kubernetes-validate"))
            .find(|p| p.is_file())
    });
    on_path
        .or_else(|| Some(PathBuf::from(VALIDATOR_VENV)).filter(|p| p.is_file()))
        .unwrap_or_else(|| {
            panic!(
                "kubernetes-validate not found on PATH nor at {VALIDATOR_VENV}; run tests/testbed/up (as root) or `pip install kubernetes-validate`"
            )
        })
}

/// Validates every document of every file; returns how many documents passed.
fn validate(files: &[PathBuf]) -> usize {
    let out = Command::new(validator())
        .args(["--strict", "-k", KUBERNETES_VERSION])
        .args(files)
        .output()
        .expect("run kubernetes-validate");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "kubernetes-validate failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    let text = format!("{stdout}{stderr}");
    assert!(
        !text.contains("ERROR") && !text.contains("WARN"),
        "kubernetes-validate:\n{text}"
    );
    text.lines().filter(|l| l.contains(" passed for ")).count()
}

/// Documents in a YAML stream.
fn documents(yaml: &str) -> usize {
    yaml.matches("---\n").count()
}

/// `(object, field)` of every export warning line on stderr (validation warnings, `fix:` lines and
/// the summary are not export warnings).
fn warnings(stderr: &str) -> Vec<(String, String)> {
    stderr
        .lines()
        .filter(|l| !l.starts_with("  fix:") && !l.starts_with("exported "))
        .filter_map(|line| {
            let mut parts: Vec<&str> = line.splitn(4, ": ").collect();
            if parts.first().is_some_and(|p| p.contains(".yaml:")) {
                parts.remove(0);
            }
            match parts.as_slice() {
                ["warning", ..] => None,
                [object, field, ..] => Some((object.to_string(), field.to_string())),
                _ => None,
            }
        })
        .collect()
}

/// The `*.yaml` files of `dir` (relative to the workspace root), sorted, as relative paths.
fn yaml_files(dir: &str) -> Vec<String> {
    let mut files: Vec<String> = std::fs::read_dir(workspace_root().join(dir))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml"))
        .map(|n| format!("{dir}/{n}"))
        .collect();
    files.sort();
    files
}

#[test]
fn every_example_and_corpus_file_exports_to_valid_kubernetes() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = yaml_files(CORPUS);
    assert!(corpus.len() >= 10, "corpus too small: {corpus:?}");
    let mut outputs = Vec::new();
    let mut expected_documents = 0;
    for file in yaml_files("deploy/examples").iter().chain(&corpus) {
        let out = export(&[file]);
        out.assert_success();
        assert!(
            out.stderr.contains("exported "),
            "{file}: no summary line: {out}"
        );
        expected_documents += documents(&out.stdout);
        let path = dir
            .path()
            .join(Path::new(file).file_name().unwrap())
            .with_extension("k8s.yaml");
        std::fs::write(&path, &out.stdout).unwrap();
        outputs.push(path);
    }
    // Namespace and size flags, and every example in one run.
    let mut args = vec![
        "export",
        "kubernetes",
        "--namespace",
        "team-a",
        "--volume-size",
        "500Mi",
    ];
    args.extend(["-f", "deploy/examples"]);
    let out = dockop(&args, None);
    out.assert_success();
    assert_eq!(
        out.stdout.matches("  namespace: team-a\n").count(),
        documents(&out.stdout)
    );
    assert!(out.stdout.contains("storage: 500Mi"), "{out}");
    expected_documents += documents(&out.stdout);
    let path = dir.path().join("examples-namespaced.k8s.yaml");
    std::fs::write(&path, &out.stdout).unwrap();
    outputs.push(path);

    let passed = validate(&outputs);
    assert_eq!(passed, expected_documents, "every document validated");
    eprintln!(
        "validated {passed} documents from {} files ({} corpus) against Kubernetes {KUBERNETES_VERSION}",
        outputs.len(),
        corpus.len()
    );
}

#[test]
fn golden_files() {
    let update = std::env::var_os("DOCKOP_UPDATE_GOLDEN").is_some_and(|v| v == "1");
    for (name, file) in [
        ("opencode", "deploy/examples/opencode.yaml".to_owned()),
        ("everything", format!("{CORPUS}/13-everything.yaml")),
    ] {
        let out = export(&[&file]);
        out.assert_success();
        for (ext, got) in [("yaml", &out.stdout), ("stderr", &out.stderr)] {
            let golden = workspace_root().join(GOLDEN).join(format!("{name}.{ext}"));
            if update {
                std::fs::write(&golden, got).unwrap();
                continue;
            }
            let want = std::fs::read_to_string(&golden).unwrap_or_else(|e| {
                panic!(
                    "{}: {e}; create it with DOCKOP_UPDATE_GOLDEN=1",
                    golden.display()
                )
            });
            assert!(
                *got == want,
                "{} differs from `dockop export kubernetes -f {file}` (rewrite with DOCKOP_UPDATE_GOLDEN=1 if intended):\n--- got ---\n{got}",
                golden.display()
            );
        }
    }
}

#[test]
fn warnings_per_corpus_file() {
    let defaults = ["spec.update.preflight", "spec.update.rollback", "spec.init"];
    let following = ["spec.update.policy"];
    let table: &[(&str, &[&str])] = &[
        ("01-minimal.yaml", &[&following[..], &defaults[..]].concat()),
        ("02-pinned.yaml", &[]),
        ("03-command.yaml", &[]),
        (
            "04-env.yaml",
            &[&["spec.env[4].valueFrom.file"][..], &following, &defaults].concat(),
        ),
        (
            "05-ports.yaml",
            &[&["spec.ports"][..], &following, &defaults, &["spec.users"]].concat(),
        ),
        (
            "06-volumes.yaml",
            &[
                &[
                    "spec.volumes[1].name",
                    "spec.volumes[3].hostPath",
                    "spec.volumes[4].hostPath",
                ][..],
                &following,
                &defaults,
            ]
            .concat(),
        ),
        (
            "07-users.yaml",
            &[&following[..], &defaults, &["spec.users"]].concat(),
        ),
        (
            "08-health.yaml",
            &[&["spec.ports"][..], &following, &defaults].concat(),
        ),
        (
            "09-update.yaml",
            &[&following[..], &["spec.update.window"], &defaults].concat(),
        ),
        (
            "10-restart.yaml",
            &[&["spec.user"][..], &defaults, &["spec.restart"]].concat(),
        ),
        (
            "11-metadata.yaml",
            &[&["metadata.labels"][..], &following, &defaults].concat(),
        ),
        (
            "14-second-wave.yaml",
            &[
                "spec.ports",
                "spec.dependsOn",
                "spec.networks",
                "spec.logging",
                "spec.resources.pids",
            ],
        ),
    ];
    for (file, fields) in table {
        let out = export(&[&format!("{CORPUS}/{file}")]);
        out.assert_success();
        let got: Vec<String> = warnings(&out.stderr).into_iter().map(|(_, f)| f).collect();
        assert_eq!(got, *fields, "{file}: {}", out.stderr);
    }
    // Two objects: one claim, the second object told it shares it; restart on-failure.
    let out = export(&[&format!("{CORPUS}/12-shared.yaml")]);
    out.assert_success();
    let got = warnings(&out.stderr);
    assert!(
        got.contains(&("shared-reader".into(), "spec.volumes[0].name".into())),
        "{got:?}"
    );
    assert!(
        got.contains(&("shared-reader".into(), "spec.restart".into())),
        "{got:?}"
    );
    assert_eq!(out.stdout.matches("kind: PersistentVolumeClaim").count(), 1);
    // Positions point at the written key; defaulted fields have none.
    let out = export(&[&format!("{CORPUS}/09-update.yaml")]);
    assert!(
        out.stderr.contains(
            "tests/data/export/corpus/09-update.yaml:13:5: update: spec.update.window: no Kubernetes equivalent ("
        ),
        "{out}"
    );
    let out = export(&[&format!("{CORPUS}/01-minimal.yaml")]);
    assert!(
        out.stderr
            .lines()
            .any(|l| l.starts_with("minimal: spec.init: no Kubernetes equivalent (")),
        "{out}"
    );
    // Everything mapped: no export warning, a summary without a warning count (only `dockop
    // validate`'s own warning about `init: false`).
    let out = export(&[&format!("{CORPUS}/03-command.yaml")]);
    assert!(
        out.stderr.ends_with(
            "warning: spec.init: init is off: many apps ignore SIGTERM when they run as PID 1, so every stop (each update and rollback) waits the full stopTimeoutSeconds (10 s) before Docker kills the app\n  fix: remove `init: false` unless the image runs its own init (tini, dumb-init) or handles SIGTERM as PID 1\nexported 1 object as 1 Kubernetes document\n"
        ),
        "{out}"
    );
}

#[test]
fn secret_values_never_leave_their_file() {
    let dir = tempfile::tempdir().unwrap();
    let value = format!("dockop-secret-{:016x}", fastrand::u64(..));
    let secret = dir.path().join("api-key");
    std::fs::write(&secret, &value).unwrap();
    let spec = format!(
        "apiVersion: dockop.dev/v1alpha1\nkind: Container\nmetadata:\n  name: secretive\nspec:\n  image: 127.0.0.1:5000/web:v1\n  env:\n    - {{name: API_KEY, valueFrom: {{file: {}}}}}\n",
        secret.display()
    );
    // Read from stdin (`-f -`).
    let out = dockop(&["export", "kubernetes", "-f", "-"], Some(&spec));
    out.assert_success();
    assert!(!out.stdout.contains(&value), "secret in stdout: {out}");
    assert!(!out.stderr.contains(&value), "secret in stderr: {out}");
    assert!(
        out.stdout.contains("stringData:\n  API_KEY: \"\"\n"),
        "{out}"
    );
    assert!(
        out.stderr.contains(&format!(
            "<stdin>:8:35: secretive: spec.env[0].valueFrom.file: Secret secretive is exported with empty values; fill it before applying, e.g. replace that document with the output of `kubectl create secret generic secretive --from-file=API_KEY={}",
            secret.display()
        )),
        "{out}"
    );
}

#[test]
fn invalid_input_prints_nothing_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "apiVersion: dockop.dev/v1alpha1\nkind: Container\nmetadata:\n  name: Bad_Name\nspec:\n  image: web:v1\n  imagePullPolicy: Always\n",
    )
    .unwrap();
    let bad = bad.to_string_lossy().into_owned();
    let out = export(&[&bad]);
    out.assert_code(1);
    assert_eq!(out.stdout, "");
    assert!(
        out.stderr.contains(&format!("{bad}:4:9: metadata.name: ")),
        "{out}"
    );
    assert!(out.stderr.contains(&format!("{bad}:7:3: ")), "{out}");
    // Same findings as `dockop validate`.
    let validate = dockop(&["validate", &bad], None);
    validate.assert_code(1);
    assert_eq!(out.stderr, validate.stderr);

    for (flag, value) in [("--namespace", "Team_A"), ("--volume-size", "1GB")] {
        let out = dockop(
            &["export", "kubernetes", flag, value, "-f", "deploy/examples"],
            None,
        );
        out.assert_code(1);
        assert_eq!(out.stdout, "");
        assert!(out.stderr.starts_with("error: "), "{out}");
        assert!(out.stderr.contains(value), "{out}");
    }
}
