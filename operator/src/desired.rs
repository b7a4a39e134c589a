//! Spec -> [`DesiredContainer`]: everything a container should be, with `valueFrom.file` env values read
//! (at every reconcile, so rotating a file recreates the container), the health probe's credentials read
//! (so an unreadable file stops the reconcile before the engine is touched) and the spec hash computed.
//! The only I/O before planning; [`DesiredContainer::load`] does it on a blocking thread.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Serialize;

use crate::engine::{
    CreateRequest, LABEL_DIGEST, LABEL_GENERATION, LABEL_IMAGE, LABEL_NAME, LABEL_ROLE,
    LABEL_SPEC_HASH, MountSpec, PortBinding,
};
use crate::health::{AuthError, ProbeAuth};
use crate::spec::hash::spec_hash;
use crate::spec::{Container, ContainerSpec, Protocol, UpdateStrategy};
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
    /// Image repository without tag or digest (`127.0.0.1:5000/web`).
    pub repository: String,
    /// Credentials the health probes send (read from their files at this reconcile; never hashed).
    pub probe_auth: ProbeAuth,
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
    /// Reading the files took too long (a hung file system).
    #[error("reading the spec's value files: {0}")]
    Blocked(#[source] ValueFileError),
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
    strategy: &'a str,
}

/// Splits `repo[:tag][@digest]` into the repository.
pub fn repository_of(image: &str) -> &str {
    let no_digest = image.split('@').next().unwrap_or(image);
    match no_digest.rfind(':') {
        Some(i) if !no_digest[i..].contains('/') => &no_digest[..i],
        _ => no_digest,
    }
}

impl DesiredContainer {
    /// [`DesiredContainer::build`] on a blocking thread, given up after [`valuefile::READ_LIMIT`].
    pub async fn load(obj: &Container) -> Result<Self, DesiredError> {
        let obj = obj.clone();
        valuefile::in_blocking(move || Self::build(&obj))
            .await
            .map_err(DesiredError::Blocked)?
    }

    /// Builds the desired container for `obj`, reading env and credential files (blocking).
    pub fn build(obj: &Container) -> Result<Self, DesiredError> {
        let spec = &obj.spec;
        let probe_auth = match &spec.health {
            Some(h) => ProbeAuth::load(h)?,
            None => ProbeAuth::default(),
        };
        let mut env = Vec::with_capacity(spec.env.len());
        for (index, e) in spec.env.iter().enumerate() {
            let value = match (&e.value, &e.value_from) {
                (_, Some(from)) => {
                    let file = PathBuf::from(&from.file);
                    valuefile::read(&file).map_err(|source| DesiredError::EnvFile {
                        index,
                        var: e.name.clone(),
                        file: file.clone(),
                        source,
                    })?
                }
                (Some(v), None) => v.clone(),
                (None, None) => String::new(),
            };
            env.push(format!("{}={value}", e.name));
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
        let shape = Shape {
            image: &spec.image,
            env: &env,
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
            strategy: spec.update.strategy.as_str(),
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
        };
        Ok(Self {
            name: obj.metadata.name.clone(),
            spec: spec.clone(),
            user_labels: obj.metadata.labels.clone(),
            spec_hash: hash,
            repository: repository_of(&spec.image).to_owned(),
            probe_auth,
            template,
        })
    }

    /// `repository@digest`: what is pulled and run.
    pub fn pinned_reference(&self, digest: &str) -> String {
        format!("{}@{digest}", self.repository)
    }

    /// The tag reference the registry is asked about (`image` without any `@digest`).
    pub fn tag_reference(&self) -> &str {
        self.spec
            .image
            .split('@')
            .next()
            .unwrap_or(&self.spec.image)
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
mod tests {
    use super::*;

    #[test]
    fn repository_parsing() {
        assert_eq!(repository_of("127.0.0.1:5000/web:v1"), "127.0.0.1:5000/web");
        assert_eq!(repository_of("127.0.0.1:5000/web"), "127.0.0.1:5000/web");
        assert_eq!(
            repository_of("127.0.0.1:5000/web@sha256:ab"),
            "127.0.0.1:5000/web"
        );
        assert_eq!(
            repository_of("127.0.0.1:5000/web:v1@sha256:ab"),
            "127.0.0.1:5000/web"
        );
        assert_eq!(repository_of("nginx"), "nginx");
    }
}
