//! Spec -> [`DesiredContainer`]: everything a container should be, with `valueFrom.file` env values read
//! (at every reconcile, so rotating a file recreates the container), the health probe's credentials read
//! (so an unreadable file stops the reconcile before the engine is touched) and the spec hash computed.
//! The only I/O before planning; [`DesiredContainer::load`] does it on a blocking thread.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Serialize;

use crate::engine::{
    CreateRequest, HostSettings, LABEL_DIGEST, LABEL_GENERATION, LABEL_IMAGE, LABEL_NAME,
    LABEL_ROLE, LABEL_SPEC_HASH, LogConfig, MountSpec, NetworkEndpoint, PortBinding,
};
use crate::health::{AuthError, ProbeAuth};
use crate::spec::hash::{SpecHashKey, secret_for_hash, spec_hash};
use crate::spec::quantity::{QuantityError, parse_bytes};
use crate::spec::{
    Container, ContainerSpec, ImageRef, ImageRefError, Logging, Protocol, UpdateStrategy,
};
use crate::valuefile::{self, ValueFileError};

/// What the container should be, minus the image digest (resolved later).
#[derive(Debug, Clone, PartialEq)]
pub struct DesiredContainer {
    /// Object (and container) name.
    pub name: String,
    /// The spec.
    pub spec: ContainerSpec,
    /// Labels from `metadata.labels`.
    pub user_labels: BTreeMap<String, String>,
    /// Hash of the container's shape.
    pub spec_hash: String,
    /// `spec.image`, parsed.
    pub image: ImageRef,
    /// Credentials the health probes send (read from their files at this reconcile; never hashed).
    pub probe_auth: ProbeAuth,
    /// `image` without any `@digest` ([`DesiredContainer::tag_reference`]).
    tag_reference: String,
    /// The create request, image and labels still to fill in ([`DesiredContainer::request`]).
    template: CreateRequest,
}

/// Why the desired state could not be built.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DesiredError {
    /// An env file could not be read.
    #[error("spec.env[{index}] ({var}): cannot read valueFrom.file {file}: {source}")]
    EnvFile {
        /// Index in `env`.
        index: usize,
        /// Variable.
        var: String,
        /// File.
        file: PathBuf,
        /// Why.
        #[source]
        source: ValueFileError,
    },
    /// The health probe's credentials could not be read.
    #[error("{0}")]
    ProbeAuth(#[from] AuthError),
    /// A size in the spec does not parse (validation catches this first).
    #[error("{field}: {source}")]
    Quantity {
        /// Field path.
        field: String,
        /// Why.
        #[source]
        source: QuantityError,
    },
    /// Reading the files took too long (a hung file system).
    #[error("reading the spec's value files: {0}")]
    Blocked(#[source] ValueFileError),
    /// `spec.image` is not an image reference (validation catches this first).
    #[error("spec.image \"{image}\" is not a valid image reference: {source}")]
    Image {
        /// The text.
        image: String,
        /// Why.
        #[source]
        source: ImageRefError,
    },
}

/// The part of the spec that shapes the container, hashed for `dockop.dev/spec-hash`.
#[derive(Serialize)]
struct Shape<'a> {
    image: &'a str,
    env: &'a [String],
    cmd: &'a Option<Vec<String>>,
    entrypoint: &'a Option<Vec<String>>,
    user: &'a Option<String>,
    working_dir: &'a Option<String>,
    ports: &'a [PortBinding],
    mounts: &'a [MountSpec],
    init: bool,
    stop_timeout: u32,
    restart: &'a str,
    labels: &'a BTreeMap<String, String>,
    /// Start-first containers publish nothing (the proxy owns the ports): a change of strategy recreates.
    /// Absent for stop-first, the default, so older hashes stay valid.
    #[serde(skip_serializing_if = "Option::is_none")]
    strategy: Option<&'a str>,
    /// Networking, limits, hardening (defaults skipped, so older hashes stay valid).
    #[serde(flatten)]
    host: &'a HostSettings,
    /// As written: an absent `logging` is not hashed (its default applies at the next recreate).
    #[serde(skip_serializing_if = "Option::is_none")]
    logging: Option<&'a Logging>,
}

/// Networking, limits and hardening from the spec; sizes converted to bytes.
fn host_settings(spec: &ContainerSpec) -> Result<HostSettings, DesiredError> {
    let bytes = |field: &str, text: &str| {
        parse_bytes(text)
            .map_err(|source| DesiredError::Quantity {
                field: field.to_owned(),
                source,
            })
            .map(|b| i64::try_from(b).unwrap_or(i64::MAX))
    };
    let resources = spec.resources.as_ref();
    let memory = match resources.and_then(|r| r.memory.as_deref()) {
        Some(m) => Some(bytes("spec.resources.memory", m)?),
        None => None,
    };
    let mut tmpfs = BTreeMap::new();
    for (i, t) in spec.tmpfs.iter().enumerate() {
        let options = match &t.size {
            Some(size) => format!("size={}", bytes(&format!("spec.tmpfs[{i}].size"), size)?),
            None => String::new(),
        };
        tmpfs.insert(t.mount_path.clone(), options);
    }
    let logging = spec
        .logging
        .clone()
        .unwrap_or_else(Logging::rotated_default);
    let caps = spec.capabilities.clone().unwrap_or_default();
    Ok(HostSettings {
        networks: spec
            .networks
            .iter()
            .map(|n| NetworkEndpoint {
                name: n.name.clone(),
                aliases: n.aliases.clone(),
            })
            .collect(),
        host_network: spec.host_network,
        memory,
        // Whole billionths of a CPU; validation bounds cpus to 0.01..=1024.
        nano_cpus: resources
            .and_then(|r| r.cpus)
            .map(|c| (c * 1e9).round() as i64),
        pids_limit: resources.and_then(|r| r.pids),
        log: LogConfig {
            driver: logging.driver,
            options: logging.options,
        },
        readonly_rootfs: spec.read_only_root_filesystem,
        tmpfs,
        cap_add: caps.add,
        cap_drop: caps.drop,
        no_new_privileges: spec.no_new_privileges,
        extra_hosts: spec.extra_hosts.clone(),
        hostname: spec.hostname.clone(),
    })
}

impl DesiredContainer {
    /// [`DesiredContainer::build`] on a blocking thread, given up after [`valuefile::READ_LIMIT`].
    pub async fn load(obj: &Container, key: Option<&SpecHashKey>) -> Result<Self, DesiredError> {
        let obj = obj.clone();
        let key = key.cloned();
        valuefile::in_blocking(move || Self::build(&obj, key.as_ref()))
            .await
            .map_err(DesiredError::Blocked)?
    }

    /// Builds the desired container for `obj`, reading env and credential files (blocking). Env values
    /// read from `valueFrom.file` enter the spec hash as their digest under `key` (the state directory's
    /// spec-hash key; `None` when a read-only command finds none).
    pub fn build(obj: &Container, key: Option<&SpecHashKey>) -> Result<Self, DesiredError> {
        let spec = &obj.spec;
        let image = ImageRef::parse(&spec.image).map_err(|source| DesiredError::Image {
            image: spec.image.clone(),
            source,
        })?;
        let probe_auth = match &spec.health {
            Some(h) => ProbeAuth::load(h)?,
            None => ProbeAuth::default(),
        };
        let mut env = Vec::with_capacity(spec.env.len());
        // What the hash sees: `env`, with each secret value (from a file) as its keyed digest.
        let mut hashed_env = Vec::with_capacity(spec.env.len());
        for (index, e) in spec.env.iter().enumerate() {
            let value = match (&e.value, &e.value_from) {
                (_, Some(from)) => {
                    let file = PathBuf::from(&from.file);
                    let secret =
                        valuefile::read(&file).map_err(|source| DesiredError::EnvFile {
                            index,
                            var: e.name.clone(),
                            file: file.clone(),
                            source,
                        })?;
                    hashed_env.push(format!("{}={}", e.name, secret_for_hash(key, &secret)));
                    env.push(format!("{}={secret}", e.name));
                    continue;
                }
                (Some(v), None) => v.clone(),
                (None, None) => String::new(),
            };
            env.push(format!("{}={value}", e.name));
            hashed_env.push(format!("{}={value}", e.name));
        }
        let ports: Vec<PortBinding> = spec
            .ports
            .iter()
            .map(|p| PortBinding {
                container_port: p.container_port,
                protocol: p.protocol.to_string(),
                host_ip: p.host_ip.clone(),
                host_port: p.effective_host_port(),
            })
            .collect();
        let mounts: Vec<MountSpec> = spec
            .volumes
            .iter()
            .map(|v| MountSpec {
                named_volume: v.name.is_some(),
                source: v
                    .name
                    .clone()
                    .or_else(|| v.host_path.clone())
                    .unwrap_or_default(),
                target: v.mount_path.clone(),
                read_only: v.read_only,
            })
            .collect();
        let mut exposed: Vec<String> = ports
            .iter()
            .map(|p| format!("{}/{}", p.container_port, p.protocol))
            .collect();
        if let Some(h) = &spec.health {
            exposed.push(format!("{}/tcp", h.port));
        }
        exposed.sort();
        exposed.dedup();
        let restart = spec.restart.as_docker();
        let host = host_settings(spec)?;
        let shape = Shape {
            image: &spec.image,
            env: &hashed_env,
            cmd: &spec.command,
            entrypoint: &spec.entrypoint,
            user: &spec.user,
            working_dir: &spec.working_dir,
            ports: &ports,
            mounts: &mounts,
            init: spec.init,
            stop_timeout: spec.stop_timeout_seconds,
            restart,
            labels: &obj.metadata.labels,
            strategy: (spec.update.strategy != UpdateStrategy::StopFirst)
                .then(|| spec.update.strategy.as_str()),
            host: &host,
            logging: spec.logging.as_ref(),
        };
        let hash = spec_hash(&shape);
        let template = CreateRequest {
            name: obj.metadata.name.clone(),
            image: String::new(),
            labels: BTreeMap::new(),
            env,
            cmd: spec.command.clone(),
            entrypoint: spec.entrypoint.clone(),
            user: spec.user.clone(),
            working_dir: spec.working_dir.clone(),
            exposed,
            // Start-first: `dockop proxy` owns the host ports and forwards to the bridge address.
            ports: if spec.update.strategy == UpdateStrategy::StartFirst {
                Vec::new()
            } else {
                ports
            },
            mounts,
            init: spec.init,
            stop_timeout: spec.stop_timeout_seconds,
            restart: restart.to_owned(),
            host,
        };
        Ok(Self {
            name: obj.metadata.name.clone(),
            spec: spec.clone(),
            user_labels: obj.metadata.labels.clone(),
            spec_hash: hash,
            tag_reference: image.tag_reference(),
            image,
            probe_auth,
            template,
        })
    }

    /// `repository@digest`: what is pulled and run.
    pub fn pinned_reference(&self, digest: &str) -> String {
        self.image.pinned(digest)
    }

    /// The tag reference the registry is asked about (`image` without any `@digest`).
    pub fn tag_reference(&self) -> &str {
        &self.tag_reference
    }

    /// The registry host of the image, as Docker keys credentials (`docker.io` for Docker Hub).
    pub fn registry_host(&self) -> &str {
        self.image.registry_host()
    }

    /// Labels every container of this object carries.
    fn labels(&self, role: &str, digest: &str, generation: u64) -> BTreeMap<String, String> {
        let mut l = self.user_labels.clone();
        l.insert(LABEL_NAME.into(), self.name.clone());
        l.insert(LABEL_ROLE.into(), role.into());
        l.insert(LABEL_SPEC_HASH.into(), self.spec_hash.clone());
        l.insert(LABEL_DIGEST.into(), digest.into());
        l.insert(LABEL_IMAGE.into(), self.spec.image.clone());
        l.insert(LABEL_GENERATION.into(), generation.to_string());
        l
    }

    /// The create request of the active container for `digest`.
    pub fn request(&self, digest: &str, generation: u64) -> CreateRequest {
        let mut r = self.template.clone();
        r.image = self.pinned_reference(digest);
        r.labels = self.labels("active", digest, generation);
        r
    }

    /// The create request of a preflight candidate: same image, command and env; no published ports, no
    /// volumes or bind mounts, no restart.
    pub fn preflight_request(&self, digest: &str, suffix: &str) -> CreateRequest {
        let mut r = self.template.clone();
        r.name = format!("{}{}-{suffix}", self.name, crate::observe::PREFLIGHT_SUFFIX);
        r.image = self.pinned_reference(digest);
        r.labels = self.labels("preflight", digest, 0);
        r.ports.clear();
        r.mounts.clear();
        r.restart = "no".into();
        // The same networks (to reach its dependencies) but never the aliases: nothing may route traffic
        // to a candidate. A host-network candidate would clash with the running app's ports: it runs on
        // the default bridge and is probed there.
        for n in &mut r.host.networks {
            n.aliases.clear();
        }
        r.host.host_network = false;
        r
    }

    /// True for `update.strategy: start-first`.
    pub fn start_first(&self) -> bool {
        self.spec.update.strategy == UpdateStrategy::StartFirst
    }

    /// The proxy route of a start-first object pointing at container `id` on bridge IP `ip`: one
    /// listener per TCP port of the spec.
    pub fn route(&self, id: &str, ip: &str) -> crate::switch::Route {
        let listeners = self
            .spec
            .ports
            .iter()
            .filter(|p| p.protocol == Protocol::Tcp)
            .map(|p| crate::switch::Listener {
                listen: if p.host_ip.contains(':') {
                    format!("[{}]:{}", p.host_ip, p.effective_host_port())
                } else {
                    format!("{}:{}", p.host_ip, p.effective_host_port())
                },
                container_port: p.container_port,
            })
            .collect();
        crate::switch::Route {
            listeners,
            upstream: ip.to_owned(),
            container_id: id.to_owned(),
            drain_seconds: self.spec.update.drain_seconds,
        }
    }

    /// User-defined networks to ensure before create.
    pub fn networks(&self) -> impl Iterator<Item = &str> {
        self.spec.networks.iter().map(|n| n.name.as_str())
    }

    /// Named volumes to ensure, with their labels.
    pub fn volumes(&self) -> Vec<(String, BTreeMap<String, String>)> {
        let mut labels = self.user_labels.clone();
        labels.insert(LABEL_NAME.into(), self.name.clone());
        self.spec
            .volumes
            .iter()
            .filter_map(|v| v.name.clone())
            .map(|n| (n, labels.clone()))
            .collect()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn object(spec: serde_json::Value) -> Container {
        crate::testing::object("web").spec_json(&spec).build()
    }

    #[test]
    fn hardening_reaches_the_create_request() {
        let o = object(serde_json::json!({
            "networks": [{"name": "front", "aliases": ["web-backend"]}, {"name": "back"}],
            "resources": {"memory": "512Mi", "cpus": 1.5, "pids": 512},
            "logging": {"driver": "local", "options": {"max-size": "20m"}},
            "readOnlyRootFilesystem": true,
            "tmpfs": [{"mountPath": "/tmp", "size": "64Mi"}, {"mountPath": "/run"}],
            "capabilities": {"add": ["NET_BIND_SERVICE"], "drop": ["ALL"]},
            "noNewPrivileges": true,
            "extraHosts": ["db.internal:10.0.0.5"],
            "hostname": "web-1",
        }));
        let d = DesiredContainer::build(&o, None).unwrap();
        let h = d.request("sha256:ab", 1).host;
        assert_eq!(
            h.networks,
            [
                NetworkEndpoint {
                    name: "front".into(),
                    aliases: vec!["web-backend".into()]
                },
                NetworkEndpoint {
                    name: "back".into(),
                    aliases: vec![]
                }
            ]
        );
        assert_eq!(h.memory, Some(512 << 20));
        assert_eq!(h.nano_cpus, Some(1_500_000_000));
        assert_eq!(h.pids_limit, Some(512));
        assert_eq!(h.log.driver, "local");
        assert_eq!(
            h.log.options.get("max-size").map(String::as_str),
            Some("20m")
        );
        assert!(h.readonly_rootfs && h.no_new_privileges && !h.host_network);
        assert_eq!(
            h.tmpfs.get("/tmp").map(String::as_str),
            Some("size=67108864")
        );
        assert_eq!(h.tmpfs.get("/run").map(String::as_str), Some(""));
        assert_eq!(h.cap_add, ["NET_BIND_SERVICE"]);
        assert_eq!(h.cap_drop, ["ALL"]);
        assert_eq!(h.extra_hosts, ["db.internal:10.0.0.5"]);
        assert_eq!(h.hostname.as_deref(), Some("web-1"));
        let names: Vec<&str> = d.networks().collect();
        assert_eq!(names, ["front", "back"]);
        // The preflight candidate: same networks, no aliases.
        let p = d.preflight_request("sha256:ab", "x").host;
        assert!(p.networks.iter().all(|n| n.aliases.is_empty()));
        assert_eq!(p.networks.len(), 2);
        assert!(p.readonly_rootfs);
    }

    #[test]
    fn absent_logging_rotates_and_host_network_preflights_on_the_bridge() {
        let d = DesiredContainer::build(&object(serde_json::json!({"hostNetwork": true})), None)
            .unwrap();
        let h = d.request("sha256:ab", 1).host;
        assert!(h.host_network);
        assert_eq!(h.log.driver, "json-file");
        assert_eq!(
            h.log.options.get("max-size").map(String::as_str),
            Some("10m")
        );
        assert_eq!(h.log.options.get("max-file").map(String::as_str), Some("3"));
        assert!(!d.preflight_request("sha256:ab", "x").host.host_network);
    }

    #[test]
    fn every_new_field_changes_the_hash_and_defaults_do_not() {
        let base = DesiredContainer::build(&object(serde_json::json!({})), None).unwrap();
        // Defaults add nothing to the hashed shape, so containers made before these fields keep their hash.
        let shape = serde_json::to_value(Shape {
            image: "i",
            env: &[],
            cmd: &None,
            entrypoint: &None,
            user: &None,
            working_dir: &None,
            ports: &[],
            mounts: &[],
            init: true,
            stop_timeout: 10,
            restart: "no",
            labels: &BTreeMap::new(),
            strategy: None,
            host: &base.template.host,
            logging: None,
        })
        .unwrap();
        let keys: Vec<&String> = shape.as_object().unwrap().keys().collect();
        assert_eq!(keys.len(), 12, "{keys:?}");
        for change in [
            serde_json::json!({"networks": [{"name": "web"}]}),
            serde_json::json!({"networks": [{"name": "web", "aliases": ["a"]}]}),
            serde_json::json!({"hostNetwork": true}),
            serde_json::json!({"resources": {"memory": "64Mi"}}),
            serde_json::json!({"resources": {"cpus": 0.5}}),
            serde_json::json!({"resources": {"pids": 64}}),
            serde_json::json!({"logging": {"driver": "json-file"}}),
            serde_json::json!({"readOnlyRootFilesystem": true}),
            serde_json::json!({"tmpfs": [{"mountPath": "/tmp"}]}),
            serde_json::json!({"capabilities": {"drop": ["ALL"]}}),
            serde_json::json!({"noNewPrivileges": true}),
            serde_json::json!({"extraHosts": ["a:10.0.0.1"]}),
            serde_json::json!({"hostname": "h"}),
            serde_json::json!({"update": {"strategy": "start-first"}}),
        ] {
            let d = DesiredContainer::build(&object(change.clone()), None).unwrap();
            assert_ne!(d.spec_hash, base.spec_hash, "{change}");
        }
        // dependsOn orders objects; it does not shape the container.
        let d = DesiredContainer::build(&object(serde_json::json!({"dependsOn": ["db"]})), None)
            .unwrap();
        assert_eq!(d.spec_hash, base.spec_hash);
    }

    #[test]
    fn secret_values_enter_the_hash_keyed_and_other_specs_hash_as_before() {
        // Pinned: the label dockop 1a00bbc (before the key existed) put on this spec's container. A spec
        // without secret values must keep it with or without a key, so upgrading recreates nothing.
        let plain = object(serde_json::json!({
            "env": [{"name": "MODE", "value": "prod"}],
            "ports": [{"containerPort": 80, "hostPort": 18993}],
        }));
        let a = SpecHashKey::from_bytes([7; 32]);
        let b = SpecHashKey::from_bytes([8; 32]);
        for key in [None, Some(&a), Some(&b)] {
            let d = DesiredContainer::build(&plain, key).unwrap();
            assert_eq!(d.spec_hash, "fd48bd848be898240d5f54b748d1b487");
        }

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "s3cret").unwrap();
        let secret = object(serde_json::json!({
            "env": [
                {"name": "MODE", "value": "prod"},
                {"name": "TOKEN", "valueFrom": {"file": file.to_str().unwrap()}},
            ],
        }));
        let hash = |key| DesiredContainer::build(&secret, key).unwrap().spec_hash;
        // Same spec and key: same hash (no recreate loop); another key: another hash.
        assert_eq!(hash(Some(&a)), hash(Some(&a)));
        assert_ne!(hash(Some(&a)), hash(Some(&b)));
        assert_ne!(hash(None), hash(Some(&a)));
        // The container still gets the value itself.
        let d = DesiredContainer::build(&secret, Some(&a)).unwrap();
        assert!(
            d.request("sha256:ab", 1)
                .env
                .contains(&"TOKEN=s3cret".to_owned())
        );
        // Rotating the file still changes the hash (the container is recreated with the new value).
        std::fs::write(&file, "rotated").unwrap();
        let before = DesiredContainer::build(&secret, Some(&a))
            .unwrap()
            .spec_hash;
        std::fs::write(&file, "s3cret").unwrap();
        assert_ne!(before, hash(Some(&a)));
    }

    #[test]
    fn references_come_from_the_parsed_image() {
        let digest = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        let mut obj = object(serde_json::json!({}));
        obj.spec.image = format!("127.0.0.1:5000/web:v1@{digest}");
        let d = DesiredContainer::build(&obj, None).unwrap();
        assert_eq!(d.tag_reference(), "127.0.0.1:5000/web:v1");
        assert_eq!(
            d.pinned_reference("sha256:ff"),
            "127.0.0.1:5000/web@sha256:ff"
        );
        assert_eq!(d.registry_host(), "127.0.0.1:5000");
        obj.spec.image = "Web".to_owned();
        let err = DesiredContainer::build(&obj, None).unwrap_err();
        assert!(err.to_string().contains("must be lowercase"), "{err}");
    }
}
