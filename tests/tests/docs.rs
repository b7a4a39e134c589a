//! The docs match the code: every `--flag` written after a `dockop COMMAND` in the docs is a flag of that
//! command (`dockop COMMAND --help`), every documented `GET` endpoint answers on a running `dockop run`
//! (not 404), and every alert's `runbook_url` points to a heading of docs/operations.md. (The
//! `dockop_*` metric names are checked against the registry by an operator unit test.)
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use dockop_e2e::*;

/// Files whose text is checked: the docs, the READMEs, the units, the alert rules and the dashboard.
fn documents() -> Vec<PathBuf> {
    let root = workspace_root();
    let mut files: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .collect();
    for f in [
        "README.md",
        "deploy/systemd/README",
        "deploy/systemd/dockop.service",
        "deploy/systemd/dockop-proxy.service",
        "deploy/prometheus/rules.yaml",
        "deploy/grafana/dashboard.json",
        "deploy/compose.yaml",
    ] {
        if root.join(f).exists() {
            files.push(root.join(f));
        }
    }
    files
}

fn read(p: &PathBuf) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Subcommand names from `dockop --help` (the "Commands:" section).
fn subcommands() -> BTreeSet<String> {
    let out = Dockop::new("/nonexistent").run(["--help"]);
    out.assert_success();
    out.stdout
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .map(str::to_owned)
        .collect()
}

/// The flags (`--name`) of `dockop ARGS... --help`.
fn flags_of(args: &[&str]) -> BTreeSet<String> {
    let mut full: Vec<&str> = args.to_vec();
    full.push("--help");
    let out = Dockop::new("/nonexistent").run(&full);
    out.assert_success();
    long_flags(&out.stdout)
}

fn long_flags(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let b = text.as_bytes();
    let mut i = 0;
    while let Some(at) = text[i..].find("--") {
        let start = i + at;
        let before_ok =
            start == 0 || !(b[start - 1].is_ascii_alphanumeric() || b[start - 1] == b'-');
        let mut end = start + 2;
        while end < b.len()
            && (b[end].is_ascii_lowercase() || b[end].is_ascii_digit() || b[end] == b'-')
        {
            end += 1;
        }
        if before_ok && end > start + 2 && b[start + 2].is_ascii_lowercase() {
            out.insert(text[start..end].trim_end_matches('-').to_owned());
        }
        i = end.max(start + 2);
    }
    out
}

/// Each `dockop COMMAND ...` invocation in a line (up to the end of its code span or line), with the
/// flags written in it.
fn invocations(line: &str, commands: &BTreeSet<String>) -> Vec<(Vec<String>, BTreeSet<String>)> {
    let mut found = Vec::new();
    for (at, _) in line.match_indices("dockop ") {
        if at > 0
            && !matches!(
                line.as_bytes()[at - 1],
                b' ' | b'`' | b'(' | b'/' | b'$' | b'\t' | b'"'
            )
        {
            continue;
        }
        let rest = &line[at + "dockop ".len()..];
        // The invocation ends at a closing backtick, a pipe, `;`, `&&` or a comment.
        let end = rest.find(['`', '|', ';', '#', ')']).unwrap_or(rest.len());
        let span = &rest[..end];
        let words: Vec<&str> = span
            .split_whitespace()
            .filter(|w| !w.starts_with('-'))
            .collect();
        let Some(cmd) = words.first().filter(|w| commands.contains(**w)) else {
            continue;
        };
        let mut path = vec![(*cmd).to_owned()];
        if *cmd == "export" && words.get(1) == Some(&"kubernetes") {
            path.push("kubernetes".into());
        }
        found.push((path, long_flags(span)));
    }
    found
}

#[test]
fn documented_flags_exist() {
    let commands = subcommands();
    assert!(
        commands.contains("plan") && commands.contains("run"),
        "{commands:?}"
    );
    let mut known: BTreeMap<Vec<String>, BTreeSet<String>> = BTreeMap::new();
    let mut missing = Vec::new();
    let mut checked = 0;
    for file in documents() {
        for (n, line) in read(&file).lines().enumerate() {
            for (path, flags) in invocations(line, &commands) {
                let have = known.entry(path.clone()).or_insert_with(|| {
                    let args: Vec<&str> = path.iter().map(String::as_str).collect();
                    flags_of(&args)
                });
                for f in flags {
                    checked += 1;
                    if !have.contains(&f) {
                        missing.push(format!(
                            "{}:{}: `dockop {}` has no {f}: {}",
                            file.display(),
                            n + 1,
                            path.join(" "),
                            line.trim()
                        ));
                    }
                }
            }
        }
    }
    assert!(
        checked > 10,
        "only {checked} documented flags found: is the parser broken?"
    );
    assert!(
        missing.is_empty(),
        "documented flags that do not exist:\n{}",
        missing.join("\n")
    );
}

/// Every documented `GET` endpoint answers on a running `dockop run` (not 404). The metrics the docs
/// name are checked against the registry by `telemetry::tests::documented_metrics_are_registered`.
#[test]
fn documented_endpoints_exist() {
    let env = TestEnv::new("docs-endpoints");
    let desired = env.dir().join("desired");
    std::fs::create_dir_all(&desired).unwrap();
    let listen = format!("127.0.0.1:{}", env.free_port());
    // With a token, the authenticated endpoints (`/status`, ...) are on (they answer 401 without it).
    let token = env.write("token", "docs-test-token\n");
    let _run = env.dockop().spawn(
        [
            "run",
            "-f",
            desired.to_str().unwrap(),
            "--listen",
            &listen,
            "--reconcile-token-file",
            token.to_str().unwrap(),
        ],
        env.dir(),
    );
    let base = format!("http://{listen}");
    assert!(
        wait_until(Duration::from_secs(20), || http_get(
            &format!("{base}/readyz"),
            Duration::from_secs(2)
        )
        .is_ok_and(|(c, _)| c == 200)),
        "dockop run did not get ready"
    );
    let mut endpoints = BTreeSet::new();
    for file in documents() {
        // `dockop proxy`'s admin API answers on its unix socket, not on `dockop run`: its sections are
        // left out here (tests/tests/zero_downtime.rs drives it).
        let mut in_proxy_section = false;
        for line in read(&file).lines() {
            if line.starts_with('#') {
                in_proxy_section = line.contains("proxy");
            }
            if in_proxy_section {
                continue;
            }
            for (at, _) in line.match_indices("`GET /") {
                let path: String = line[at + 5..]
                    .chars()
                    .take_while(|c| *c != '`' && *c != ' ')
                    .collect();
                endpoints.insert(path);
            }
        }
    }
    assert!(
        endpoints.contains("/health") && endpoints.contains("/readyz"),
        "{endpoints:?}"
    );
    for path in &endpoints {
        // A name that is not an object may answer 404; the route itself must exist.
        if path.contains('{') || path.contains("NAME") {
            continue;
        }
        let (code, _) = http_get(&format!("{base}{path}"), Duration::from_secs(10)).unwrap();
        assert!(code != 404, "documented GET {path} answers 404");
    }
}

/// GitHub's anchor of a heading: lower case, spaces to `-`, punctuation other than `-` and `_` dropped.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

#[test]
fn runbook_urls_resolve_to_headings() {
    let root = workspace_root();
    let mut anchors: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let rules = read(&root.join("deploy/prometheus/rules.yaml"));
    let mut n = 0;
    for line in rules.lines() {
        let Some(url) = line.trim().strip_prefix("runbook_url:") else {
            continue;
        };
        let url = url.trim().trim_matches('"');
        let (file, frag) = url.split_once('#').unwrap_or((url, ""));
        let headings = anchors.entry(file.to_owned()).or_insert_with(|| {
            read(&root.join(file))
                .lines()
                .filter(|l| l.starts_with('#'))
                .map(|l| anchor(l.trim_start_matches('#')))
                .collect()
        });
        assert!(
            !frag.is_empty() && headings.contains(frag),
            "runbook_url {url}: no such heading in {file}"
        );
        n += 1;
    }
    assert!(n >= 5, "only {n} runbook_urls");
}
