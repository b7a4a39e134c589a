//! `crds/` and `docs/spec.md` are what the types generate. Regenerate them with
//! `DOCKOP_UPDATE_CRDS=1 cargo test -p dockop --test spec_crds`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use dockop::spec::commands::{crd_yaml, schema_json, spec_reference_markdown};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn check(relative: &str, generated: &str, how: &str) {
    let path = repo().join(relative);
    if std::env::var_os("DOCKOP_UPDATE_CRDS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, generated).unwrap();
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "{relative} is stale: run `{how}` (or `DOCKOP_UPDATE_CRDS=1 cargo test -p dockop --test spec_crds`) and commit the result"
    );
}

#[test]
fn json_schema_is_current() {
    check(
        "crds/container.schema.json",
        &schema_json(),
        "cargo run -p dockop -- schema > crds/container.schema.json",
    );
}

#[test]
fn crd_is_current() {
    check(
        "crds/container.crd.yaml",
        &crd_yaml().unwrap(),
        "cargo run -p dockop -- schema --crd > crds/container.crd.yaml",
    );
}

#[test]
fn spec_reference_is_current() {
    check(
        "docs/spec.md",
        &spec_reference_markdown(),
        "DOCKOP_UPDATE_CRDS=1 cargo test -p dockop --test spec_crds",
    );
}

#[test]
fn committed_crd_parses_back() {
    let text = crd_yaml().unwrap();
    let value: serde_json::Value = serde_saphyr::from_str(&text).unwrap();
    assert_eq!(value["spec"]["group"], "dockop.dev");
    assert_eq!(value["spec"]["names"]["plural"], "containers");
    assert_eq!(value["spec"]["versions"][0]["name"], "v1alpha1");
    assert_eq!(value, dockop::spec::commands::crd());
}
