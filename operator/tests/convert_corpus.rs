//! `dockop convert` over real-world-shaped Compose files (`tests/data/compose/*/compose.yaml`, with
//! `compose.override.yaml`, `.env` and env files next to them): every output validates, and what is left
//! out is reported with the file and line.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use dockop::convert::compose::{Env, Input, dotenv_vars};
use dockop::convert::{Converted, Options, convert};
use dockop::spec::load::load_str;

fn corpus() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/compose");
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("compose.yaml").is_file())
        .collect();
    cases.sort();
    cases
}

fn run(case: &Path) -> Converted {
    let mut inputs = Vec::new();
    for f in ["compose.yaml", "compose.override.yaml"] {
        let path = case.join(f);
        if path.is_file() {
            inputs.push(Input {
                text: std::fs::read_to_string(&path).unwrap(),
                path,
            });
        }
    }
    let dotenv: BTreeMap<String, String> = std::fs::read_to_string(case.join(".env"))
        .map(|t| dotenv_vars(&t))
        .unwrap_or_default();
    let read = |p: &Path| std::fs::read_to_string(p);
    let opts = Options {
        project: None,
        env: Env {
            process: BTreeMap::from([("HOME".to_owned(), "/root".to_owned())]),
            dotenv,
        },
        read_file: &read,
    };
    convert(&inputs, &opts).unwrap_or_else(|e| panic!("{}: {e}", case.display()))
}

#[test]
fn every_corpus_file_converts_to_valid_objects() {
    let cases = corpus();
    assert!(cases.len() >= 15, "{} cases", cases.len());
    for case in &cases {
        let out = run(case);
        assert!(!out.objects.is_empty(), "{}", case.display());
        let yaml = out.to_yaml();
        let loaded = load_str(Path::new("converted.yaml"), &yaml);
        let errors: Vec<String> = loaded.errors().map(|d| d.to_string()).collect();
        assert!(
            errors.is_empty(),
            "{}:\n{}\n---\n{yaml}",
            case.display(),
            errors.join("\n")
        );
        for r in &out.reports {
            let text = r.to_string();
            assert!(r.line >= 1, "{text}");
            assert!(
                text.contains(": services.")
                    || text.contains(": networks.")
                    || text.contains(": volumes.")
                    || text.contains(": secrets"),
                "{text}"
            );
        }
    }
}

#[test]
fn known_cases_map_and_report_as_expected() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/compose");
    // Overrides merged; the alias of the service name on the default network.
    let out = run(&dir.join("override"));
    assert!(out.complete(), "{:?}", out.reports);
    let api = &out.objects[0].spec;
    let env: Vec<(&str, Option<&str>)> = api
        .env
        .iter()
        .map(|e| (e.name.as_str(), e.value.as_deref()))
        .collect();
    assert_eq!(
        env,
        [("LOG_LEVEL", Some("debug")), ("FEATURE_X", Some("on"))]
    );
    assert_eq!(api.ports.len(), 2);
    assert_eq!(api.extra_hosts, ["db.internal:10.0.0.5"]);
    assert_eq!(api.image, "registry.example.com/api:latest");
    let h = api.health.as_ref().unwrap();
    assert_eq!((h.path.as_str(), h.port), ("/health", 8080));

    // Secret-looking env_file values move to files, with a report each; others are inlined.
    let out = run(&dir.join("vaultwarden"));
    assert!(!out.complete());
    let vw = &out.objects[0].spec;
    let secret = vw.env.iter().find(|e| e.name == "ADMIN_TOKEN").unwrap();
    assert_eq!(
        secret.value_from.as_ref().unwrap().file,
        "/etc/dockop/secrets/ADMIN_TOKEN"
    );
    assert!(secret.value.is_none());
    assert!(
        vw.env
            .iter()
            .any(|e| e.name == "SMTP_HOST" && e.value.as_deref() == Some("smtp.example.com"))
    );
    let lines: Vec<String> = out.reports.iter().map(|r| r.to_string()).collect();
    assert!(
        lines.iter().any(|l| l.ends_with("vaultwarden/compose.yaml:10: services.vaultwarden.env_file: ADMIN_TOKEN looks secret: not inlined; it reads valueFrom.file /etc/dockop/secrets/ADMIN_TOKEN: put the value in that root-only file (mode 0600)")),
        "{lines:#?}"
    );
    assert!(vw.no_new_privileges);
    assert_eq!(vw.logging.as_ref().unwrap().options["max-file"], "5");

    // Networks with aliases, depends_on, project-prefixed names.
    let out = run(&dir.join("stack-networks"));
    let app = out
        .objects
        .iter()
        .find(|o| o.metadata.name == "app")
        .unwrap();
    let nets: Vec<(&str, &[String])> = app
        .spec
        .networks
        .iter()
        .map(|n| (n.name.as_str(), n.aliases.as_slice()))
        .collect();
    assert_eq!(
        nets,
        [
            ("webstack_front", &["web-backend".to_owned()][..]),
            ("webstack_back", &[][..])
        ]
    );
    let proxy = out
        .objects
        .iter()
        .find(|o| o.metadata.name == "proxy")
        .unwrap();
    assert_eq!(proxy.spec.depends_on, ["app"]);
    assert!(
        out.reports
            .iter()
            .any(|r| r.path == "networks.back.internal" && r.left_out)
    );

    // Host networking, privileged refused; limits and hardening.
    let out = run(&dir.join("homeassistant"));
    assert!(out.objects[0].spec.host_network);
    assert!(
        out.reports
            .iter()
            .any(|r| r.path == "services.homeassistant.privileged")
    );
    let out = run(&dir.join("redis-app"));
    let app = &out.objects[0].spec;
    let r = app.resources.as_ref().unwrap();
    assert_eq!((r.memory.as_deref(), r.cpus), (Some("512Mi"), Some(1.5)));
    assert!(app.read_only_root_filesystem);
    assert_eq!(app.tmpfs[0].size.as_deref(), Some("64Mi"));
    assert_eq!(app.capabilities.as_ref().unwrap().add, ["NET_BIND_SERVICE"]);
    assert_eq!(app.stop_timeout_seconds, 30);
    assert_eq!(
        out.objects[1].spec.command.as_deref().unwrap(),
        ["redis-server", "--save", "60", "1", "--loglevel", "warning"]
    );
}
