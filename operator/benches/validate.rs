//! `validate` of a directory of 1,000 objects (one file each, generated into a temp dir), and of hostile
//! 1 MiB files: about 43,000 unknown keys; about 20,000 ports each with a float port, a custom tag and a
//! NUL; about 22,000 valid ports on distinct addresses. Prints the wall-clock figures (docs/comparison.md,
//! "Hostile input"). Run with `cargo bench -p dockop --bench validate`; the targets are under 1 s each.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

const OBJECTS: usize = 1_000;

fn object(i: usize) -> String {
    format!(
        r#"apiVersion: dockop.dev/v1alpha1
kind: Container
metadata:
  name: app-{i}
  labels: {{team: tools, tier: "{tier}"}}
spec:
  image: 127.0.0.1:5000/app-{i}:v1
  command: ["/usr/local/bin/app", "serve", "--port", "8080"]
  env:
    - {{name: TZ, value: UTC}}
    - {{name: API_KEY, valueFrom: {{file: /etc/dockop/secrets/api-key-{i}}}}}
  ports:
    - {{containerPort: 8080, hostPort: {port}, hostIP: 127.0.0.1}}
  volumes:
    - {{name: app-{i}-data, mountPath: /data}}
    - {{hostPath: /srv/app-{i}, mountPath: /workspace, readOnly: true}}
  users:
    - {{name: alice, passwordHash: "$y$j9T$lUR8QwwT0jEoZn7XKRPEr.$s0CRUev4ny1s3qq6YmpNbLUsiIybckwxG.gxZBGMohD"}}
    - {{name: bob, passwordFile: /etc/dockop/secrets/bob}}
  health:
    path: /global/health
    port: 8080
  update:
    policy: auto
    window: "Mon-Fri 02:00-04:00 UTC"
  stopTimeoutSeconds: 10
"#,
        tier = i % 3,
        port = 20_000 + i,
    )
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    for i in 0..OBJECTS {
        std::fs::write(dir.path().join(format!("app-{i:04}.yaml")), object(i)).unwrap();
    }
    let paths: Vec<PathBuf> = vec![dir.path().to_path_buf()];

    // Warm up (schema compilation happens once per process; count it in the first run).
    let first = Instant::now();
    let loaded = dockop::spec::load::load_paths(&paths);
    let first = first.elapsed();
    assert!(loaded.is_valid(), "{:?}", loaded.diagnostics.first());
    assert_eq!(loaded.objects.len(), OBJECTS);

    let runs = 5;
    let mut times: Vec<Duration> = (0..runs)
        .map(|_| {
            let t = Instant::now();
            let loaded = dockop::spec::load::load_paths(&paths);
            let t = t.elapsed();
            assert_eq!(loaded.objects.len(), OBJECTS);
            t
        })
        .collect();
    times.sort();
    let median = times[runs / 2];
    println!("validate: {OBJECTS} objects in {OBJECTS} files");
    println!(
        "  first run (incl. schema compile): {:>8.1} ms",
        first.as_secs_f64() * 1e3
    );
    println!(
        "  median of {runs} runs:               {:>8.1} ms",
        median.as_secs_f64() * 1e3
    );
    println!(
        "  best:                              {:>8.1} ms",
        times[0].as_secs_f64() * 1e3
    );
    println!(
        "  per object:                        {:>8.1} µs",
        median.as_secs_f64() * 1e6 / OBJECTS as f64
    );
    println!(
        "  target: < 1000 ms -> {}",
        if median < Duration::from_secs(1) {
            "met"
        } else {
            "MISSED"
        }
    );

    // A hostile file: 1 MiB of unknown keys under spec (issue 19: it took 25-33 s).
    let mut hostile = String::from(
        "apiVersion: dockop.dev/v1alpha1\nkind: Container\nmetadata: {name: web}\nspec:\n  image: 127.0.0.1:5000/web:v1\n",
    );
    let mut keys = 0;
    while hostile.len() < 1024 * 1024 - 40 {
        hostile.push_str(&format!("  unknownkey{keys}: {keys}\n"));
        keys += 1;
    }
    hostile_case(
        &dir.path().join("hostile.yaml"),
        &hostile,
        &format!("{keys} unknown keys"),
    );

    // Another: 1 MiB of tagged strings with NUL and floats where whole numbers belong (the node walk).
    let mut tagged = String::from(
        "apiVersion: dockop.dev/v1alpha1\nkind: Container\nmetadata: {name: web}\nspec:\n  image: 127.0.0.1:5000/web:v1\n  ports:\n",
    );
    let mut items = 0;
    while tagged.len() < 1024 * 1024 - 80 {
        tagged.push_str(&format!(
            "    - {{containerPort: {items}.5, hostIP: !x \"a\\0{items}\"}}\n"
        ));
        items += 1;
    }
    hostile_case(
        &dir.path().join("tagged.yaml"),
        &tagged,
        &format!("{items} ports with a float, a custom tag and a NUL"),
    );
    ports_case(dir.path());
}

/// 1 MiB of ports on distinct addresses: the clash check must stay linear.
fn ports_case(dir: &std::path::Path) {
    let mut text = String::from(
        "apiVersion: dockop.dev/v1alpha1\nkind: Container\nmetadata: {name: web}\nspec:\n  image: 127.0.0.1:5000/web:v1\n  users: [{name: u}]\n  ports:\n",
    );
    let mut n = 0u32;
    while text.len() < 1024 * 1024 - 80 {
        text.push_str(&format!(
            "    - {{containerPort: 80, hostIP: 10.{}.{}.{}}}\n",
            n >> 16,
            (n >> 8) & 255,
            n & 255
        ));
        n += 1;
    }
    let file = dir.join("ports.yaml");
    std::fs::write(&file, &text).unwrap();
    let t = Instant::now();
    let loaded = dockop::spec::load::load_paths(&[file]);
    let t = t.elapsed();
    assert!(loaded.is_valid(), "{:?}", loaded.diagnostics.first());
    println!(
        "hostile file: {} KiB, {n} ports on distinct addresses (valid): {:.1} ms (target < 1000 ms -> {})",
        text.len() / 1024,
        t.as_secs_f64() * 1e3,
        if t < Duration::from_secs(1) {
            "met"
        } else {
            "MISSED"
        }
    );
}

/// Validates one hostile file 5 times and prints the median (target < 1 s).
fn hostile_case(file: &std::path::Path, text: &str, what: &str) {
    std::fs::write(file, text).unwrap();
    let runs = 5;
    let mut times: Vec<Duration> = (0..runs)
        .map(|_| {
            let t = Instant::now();
            let loaded = dockop::spec::load::load_paths(&[file.to_path_buf()]);
            let t = t.elapsed();
            assert!(!loaded.is_valid());
            assert!(
                loaded.diagnostics.len() <= 101,
                "{}",
                loaded.diagnostics.len()
            );
            t
        })
        .collect();
    times.sort();
    let median = times[runs / 2];
    println!(
        "hostile file: {} KiB, {what}: median of {runs} runs {:.1} ms (target < 1000 ms -> {})",
        text.len() / 1024,
        median.as_secs_f64() * 1e3,
        if median < Duration::from_secs(1) {
            "met"
        } else {
            "MISSED"
        }
    );
}
