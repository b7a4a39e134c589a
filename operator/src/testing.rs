//! Fixture builders shared by the unit tests (compiled only into test builds): a `Container` object (and
//! its YAML document and [`DesiredContainer`]), an engine [`ContainerInfo`], and a fake engine holding
//! containers. Each starts from what most tests want and has one method per thing a test varies.
//!
//! ```ignore
//! let obj = object("web").health("/h", 8080).spec("update: {preflight: false}").build();
//! let c = info("c1", "web").digest(D1).ip("127.0.0.1").build();
//! ```

#![allow(clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::Path;

use crate::desired::DesiredContainer;
use crate::engine::fake::FakeEngine;
use crate::engine::{
    ContainerInfo, LABEL_DIGEST, LABEL_NAME, LABEL_ROLE, LABEL_SPEC_HASH, RunState,
};
use crate::spec::{ApiVersion, Container, ContainerSpec, Kind, Metadata};

/// The image an [`object`] runs unless told otherwise.
pub(crate) const IMAGE: &str = "127.0.0.1:5000/web:v1";

/// A `Container` object being built: see [`object`].
#[derive(Debug, Clone)]
pub(crate) struct ObjectBuilder {
    name: String,
    image: String,
    /// YAML lines of the spec after `image`, as written under `spec:` (not indented).
    lines: Vec<String>,
}

/// Object `name` running [`IMAGE`], nothing else in its spec.
pub(crate) fn object(name: &str) -> ObjectBuilder {
    ObjectBuilder {
        name: name.to_owned(),
        image: IMAGE.to_owned(),
        lines: Vec::new(),
    }
}

impl ObjectBuilder {
    /// Runs `image` instead of [`IMAGE`].
    pub(crate) fn image(mut self, image: &str) -> Self {
        image.clone_into(&mut self.image);
        self
    }

    /// Adds spec YAML as written under `spec:`, not indented, one or more lines
    /// (`"update: {preflight: false}"`, `"users:\n  - name: a"`). A key given twice is a parse error.
    pub(crate) fn spec(mut self, yaml: &str) -> Self {
        self.lines.extend(yaml.lines().map(str::to_owned));
        self
    }

    /// Adds each key of a JSON object as a spec line (JSON is YAML too).
    pub(crate) fn spec_json(mut self, spec: &serde_json::Value) -> Self {
        if let Some(map) = spec.as_object() {
            for (k, v) in map {
                self.lines.push(format!("{k}: {}", flow(v)));
            }
        }
        self
    }

    /// `health: {path, port}` plus `more` (`"intervalSeconds: 1, timeoutSeconds: 1"`, or empty).
    pub(crate) fn health(self, path: &str, port: u16, more: &str) -> Self {
        let more = if more.is_empty() {
            String::new()
        } else {
            format!(", {more}")
        };
        self.spec(&format!("health: {{path: {path}, port: {port}{more}}}"))
    }

    /// `ports:` publishing each `(container port, host port)`.
    pub(crate) fn ports(self, ports: &[(u16, u16)]) -> Self {
        let mut yaml = String::from("ports:");
        for (c, h) in ports {
            yaml.push_str(&format!("\n  - {{containerPort: {c}, hostPort: {h}}}"));
        }
        self.spec(&yaml)
    }

    /// `dependsOn: [..]`.
    pub(crate) fn depends_on(self, names: &[&str]) -> Self {
        self.spec(&format!("dependsOn: [{}]", names.join(", ")))
    }

    /// The spec's YAML, not indented.
    fn spec_yaml(&self) -> String {
        let mut s = format!("image: {}\n", self.image);
        for l in &self.lines {
            s.push_str(l);
            s.push('\n');
        }
        s
    }

    /// The whole YAML document, as a file holds it.
    pub(crate) fn yaml(&self) -> String {
        let spec: String = self
            .spec_yaml()
            .lines()
            .map(|l| format!("  {l}\n"))
            .collect();
        format!(
            "apiVersion: dockop.dev/v1alpha1\nkind: Container\nmetadata:\n  name: {}\nspec:\n{spec}",
            self.name
        )
    }

    /// The object, its spec parsed as serde does (no validation: tests of what validation would refuse
    /// can build it).
    pub(crate) fn build(&self) -> Container {
        let spec: ContainerSpec = serde_saphyr::from_str(&self.spec_yaml()).expect("spec YAML");
        Container {
            api_version: ApiVersion::V1Alpha1,
            kind: Kind::Container,
            metadata: Metadata {
                name: self.name.clone(),
                labels: BTreeMap::new(),
                annotations: BTreeMap::new(),
            },
            spec,
            status: None,
        }
    }

    /// The object as loading a file gives it: its document parsed and validated (panics with the
    /// findings when it is not valid).
    pub(crate) fn validated(&self) -> Container {
        let loaded = crate::spec::load::load_str(Path::new("t.yaml"), &self.yaml());
        assert!(loaded.is_valid(), "{:?}", loaded.diagnostics);
        loaded
            .objects
            .into_iter()
            .next()
            .expect("one object")
            .object
    }

    /// [`DesiredContainer::build`] of the object.
    pub(crate) fn desired(&self) -> DesiredContainer {
        DesiredContainer::build(&self.build(), None).expect("desired")
    }
}

/// `v` as one line of YAML flow (JSON with a space after each `:` and `,`).
fn flow(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Array(items) => {
            let items: Vec<String> = items.iter().map(flow).collect();
            format!("[{}]", items.join(", "))
        }
        serde_json::Value::Object(map) => {
            let items: Vec<String> = map
                .iter()
                .map(|(k, v)| format!("{}: {}", serde_json::Value::from(k.as_str()), flow(v)))
                .collect();
            format!("{{{}}}", items.join(", "))
        }
        other => other.to_string(),
    }
}

/// An engine container being built: see [`info`].
#[derive(Debug, Clone)]
pub(crate) struct InfoBuilder(ContainerInfo);

/// Container `id` named `name`, running, labelled as object `name`'s (`dockop.dev/name`), nothing else
/// known (no start time, IP or image).
pub(crate) fn info(id: &str, name: &str) -> InfoBuilder {
    InfoBuilder(ContainerInfo {
        id: id.to_owned(),
        name: name.to_owned(),
        labels: BTreeMap::from([(LABEL_NAME.to_owned(), name.to_owned())]),
        state: RunState::Running,
        exit_code: 0,
        oom_killed: false,
        started_at: None,
        image_id: String::new(),
        ip_address: None,
        engine_host: None,
    })
}

impl InfoBuilder {
    /// Sets label `key` to `value`.
    pub(crate) fn label(mut self, key: &str, value: &str) -> Self {
        self.0.labels.insert(key.to_owned(), value.to_owned());
        self
    }

    /// Labelled as object `name`'s (`None`: not dockop's, no `dockop.dev/name`).
    pub(crate) fn object(mut self, name: Option<&str>) -> Self {
        match name {
            Some(n) => self.label(LABEL_NAME, n),
            None => {
                self.0.labels.remove(LABEL_NAME);
                self
            }
        }
    }

    /// `dockop.dev/instance` when given.
    pub(crate) fn instance(self, instance: Option<&str>) -> Self {
        match instance {
            Some(i) => self.label(crate::engine::LABEL_INSTANCE, i),
            None => self,
        }
    }

    /// `dockop.dev/digest`.
    pub(crate) fn digest(self, digest: &str) -> Self {
        self.label(LABEL_DIGEST, digest)
    }

    /// `dockop.dev/spec-hash`.
    pub(crate) fn spec_hash(self, hash: &str) -> Self {
        self.label(LABEL_SPEC_HASH, hash)
    }

    /// `dockop.dev/role` (`active`, `preflight`).
    pub(crate) fn role(self, role: &str) -> Self {
        self.label(LABEL_ROLE, role)
    }

    /// The engine state.
    pub(crate) fn state(mut self, state: RunState) -> Self {
        self.0.state = state;
        self
    }

    /// Start time (RFC 3339).
    pub(crate) fn started_at(mut self, at: &str) -> Self {
        self.0.started_at = Some(at.to_owned());
        self
    }

    /// Bridge IP address.
    pub(crate) fn ip(mut self, ip: &str) -> Self {
        self.0.ip_address = Some(ip.to_owned());
        self
    }

    /// Local image ID.
    pub(crate) fn image_id(mut self, id: &str) -> Self {
        id.clone_into(&mut self.0.image_id);
        self
    }

    /// The container.
    pub(crate) fn build(self) -> ContainerInfo {
        self.0
    }
}

/// A fake engine holding `containers`.
pub(crate) fn engine_with(containers: &[ContainerInfo]) -> FakeEngine {
    let fake = FakeEngine::new();
    {
        let mut st = fake.state();
        for c in containers {
            st.containers.insert(c.id.clone(), c.clone());
        }
    }
    fake
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_parsed_and_validated_objects_agree() {
        let b = object("api")
            .image("reg/api:2")
            .health("/h", 8080, "intervalSeconds: 1")
            .ports(&[(8080, 18080)])
            .spec_json(&serde_json::json!({"update": {"preflight": false}}));
        let built = b.build();
        assert_eq!(built, b.validated());
        assert_eq!(built.metadata.name, "api");
        assert_eq!(built.spec.image, "reg/api:2");
        assert_eq!(built.spec.health.as_ref().map(|h| h.port), Some(8080));
        assert_eq!(b.desired().name, "api");
        let d = b.depends_on(&["db"]).build();
        assert_eq!(d.spec.depends_on, ["db"]);
        let c = info("c1", "api")
            .digest("sha256:d")
            .spec_hash("h1")
            .role("active")
            .state(RunState::Exited)
            .build();
        assert_eq!(c.label(LABEL_NAME), Some("api"));
        assert_eq!(c.label(LABEL_SPEC_HASH), Some("h1"));
        assert_eq!(c.label(LABEL_ROLE), Some("active"));
        assert_eq!(c.label(LABEL_DIGEST), Some("sha256:d"));
        assert!(!c.is_running());
        assert!(engine_with(&[c]).by_name("api").is_some());
    }
}
