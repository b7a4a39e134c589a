//! `validate` of a directory of 1,000 objects (one file each, generated into a temp dir), and of one
//! hostile 1 MiB file of about 43,000 unknown keys: prints the wall-clock figures. Run with
//! `cargo bench -p dockop --bench validate`; the targets are under 1 s each.

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
    let file = dir.path().join("hostile.yaml");
    std::fs::write(&file, &hostile).unwrap();
    let mut times: Vec<Duration> = (0..runs)
        .map(|_| {
            let t = Instant::now();
            let loaded = dockop::spec::load::load_paths(std::slice::from_ref(&file));
            let t = t.elapsed();
            assert!(!loaded.is_valid());
            t
        })
        .collect();
    times.sort();
    let median = times[runs / 2];
    println!(
        "hostile file: {} KiB, {keys} unknown keys: median of {runs} runs {:.1} ms (target < 1000 ms -> {})",
        hostile.len() / 1024,
        median.as_secs_f64() * 1e3,
        if median < Duration::from_secs(1) {
            "met"
        } else {
            "MISSED"
        }
    );
}
