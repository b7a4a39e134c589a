//! Every example in `deploy/examples/` validates without errors.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use dockop::spec::load::load_paths;

#[test]
fn every_example_validates() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    assert!(files.len() >= 3, "{files:?}");
    for file in &files {
        let loaded = load_paths(std::slice::from_ref(file));
        let all: Vec<String> = loaded.diagnostics.iter().map(|d| d.to_string()).collect();
        assert!(
            loaded.is_valid() && all.is_empty(),
            "{}:\n{}",
            file.display(),
            all.join("\n")
        );
        assert!(!loaded.objects.is_empty(), "{}", file.display());
    }
    // All of them together: names and host ports do not clash.
    let loaded = load_paths(&[dir]);
    assert!(loaded.is_valid(), "{:?}", loaded.diagnostics);
    let names: Vec<&str> = loaded.objects.iter().map(|o| o.object.name()).collect();
    assert_eq!(
        names,
        [
            "demo-web",
            "stack-opencode",
            "stack-caddy",
            "opencode",
            "web"
        ]
    );
}

#[test]
fn opencode_example_has_the_deployment_shape() {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples/opencode.yaml");
    let loaded = load_paths(&[file]);
    let o = &loaded.objects[0].object;
    assert_eq!(o.spec.image, "127.0.0.1:5000/opencode:1.18.34");
    assert_eq!(o.spec.digest, None);
    let mounts: Vec<&str> = o
        .spec
        .volumes
        .iter()
        .map(|v| v.mount_path.as_str())
        .collect();
    assert_eq!(
        mounts,
        [
            "/root/.local/share/opencode",
            "/root/.local/state/opencode",
            "/root/.cache/opencode",
            "/workspace",
            "/root/.config/opencode"
        ]
    );
    let hash = o.spec.users[0].password_hash.as_ref().unwrap();
    assert!(dockop::spec::password::verify(
        "opencode-demo",
        hash.expose()
    ));
    assert_eq!(
        (
            o.spec.ports[0].container_port,
            o.spec.ports[0].effective_host_port()
        ),
        (4096, 4096)
    );
    assert_eq!(o.spec.ports[0].host_ip, "127.0.0.1");
    assert_eq!(
        o.spec.health.as_ref().map(|h| (h.path.as_str(), h.port)),
        Some(("/global/health", 4096))
    );
    // The secure setup: one password file, used by the app and by the probes.
    const PASSWORD_FILE: &str = "/etc/dockop/secrets/opencode-password";
    let env = o
        .spec
        .env
        .iter()
        .find(|e| e.name == "OPENCODE_SERVER_PASSWORD")
        .unwrap();
    assert_eq!(env.value_from.as_ref().unwrap().file, PASSWORD_FILE);
    let auth = o.spec.health.as_ref().unwrap().basic_auth.as_ref().unwrap();
    assert_eq!(
        (auth.username.as_str(), auth.password_file.as_str()),
        ("opencode", PASSWORD_FILE)
    );
    assert!(o.spec.init);
    assert_eq!(o.spec.stop_timeout_seconds, 10);
}
