//! The engine seam: the [`Engine`] trait in dockop's own terms, the bollard implementation
//! ([`docker::DockerEngine`]) and, in test builds only, a scripted fake for unit tests (`fake::FakeEngine`).

pub mod auth;
pub mod docker;
pub mod endpoint;
#[cfg(test)]
pub mod fake;
pub mod instance;

pub use instance::LABEL_INSTANCE;

use std::collections::BTreeMap;
use std::fmt;
use std::pin::Pin;

use async_trait::async_trait;
use futures_util::Stream;
use serde::Serialize;

/// Labels dockop puts on what it creates. A container without [`LABEL_NAME`] is never touched.
pub const LABEL_NAME: &str = "dockop.dev/name";
/// `active` or `preflight` at creation. Docker labels are immutable, so a renamed container's role is read
/// from its name (`<name>-previous`), see [`crate::observe`].
pub const LABEL_ROLE: &str = "dockop.dev/role";
/// Hash of everything in the spec that shapes the container.
pub const LABEL_SPEC_HASH: &str = "dockop.dev/spec-hash";
/// Manifest digest the container was created from.
pub const LABEL_DIGEST: &str = "dockop.dev/digest";
/// Image reference as written in the spec (display).
pub const LABEL_IMAGE: &str = "dockop.dev/image";
/// On networks dockop created (`true`).
pub const LABEL_MANAGED: &str = "dockop.dev/managed";
/// Counter of changes dockop made to this object.
pub const LABEL_GENERATION: &str = "dockop.dev/generation";

/// Lifecycle state of a container as the engine reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RunState {
    /// Created, never started.
    Created,
    /// Running.
    Running,
    /// Paused.
    Paused,
    /// Restarting (restart policy).
    Restarting,
    /// Being removed.
    Removing,
    /// Exited.
    Exited,
    /// Dead.
    Dead,
}

impl fmt::Display for RunState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = serde_json::to_value(self)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned));
        f.write_str(s.as_deref().unwrap_or("unknown"))
    }
}

/// What dockop needs to know about one container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerInfo {
    /// Full container ID.
    pub id: String,
    /// Name without the leading `/`.
    pub name: String,
    /// All labels.
    pub labels: BTreeMap<String, String>,
    /// Lifecycle state.
    pub state: RunState,
    /// Exit code of the last run (meaningful when exited).
    pub exit_code: i64,
    /// Killed by the OOM killer.
    pub oom_killed: bool,
    /// RFC 3339 start time of the current/last run.
    pub started_at: Option<String>,
    /// Local image ID (config digest).
    pub image_id: String,
    /// IP address on the first network it is attached to (bridge), used for probing.
    pub ip_address: Option<String>,
    /// The engine's host when it runs on another machine (`None`: this one): health probes then go to
    /// the published port there, see [`crate::health::probe_address`].
    pub engine_host: Option<String>,
}

impl ContainerInfo {
    /// A label's value.
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels.get(key).map(String::as_str)
    }
    /// True while running.
    pub fn is_running(&self) -> bool {
        matches!(self.state, RunState::Running | RunState::Restarting)
    }
}

/// A published port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PortBinding {
    /// Port inside the container.
    pub container_port: u16,
    /// `tcp` or `udp`.
    pub protocol: String,
    /// Host address.
    pub host_ip: String,
    /// Host port.
    pub host_port: u16,
}

/// A mount.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MountSpec {
    /// Named volume (true) or bind mount (false).
    pub named_volume: bool,
    /// Volume name or host path.
    pub source: String,
    /// Path in the container.
    pub target: String,
    /// Read-only.
    pub read_only: bool,
}

/// A user-defined network the container joins at create.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NetworkEndpoint {
    /// Network name.
    pub name: String,
    /// DNS aliases on that network.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
}

/// Log driver and options.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LogConfig {
    /// Driver name (`json-file`).
    pub driver: String,
    /// Driver options.
    pub options: BTreeMap<String, String>,
}

/// Networking, limits and hardening of a container. Serialized (defaults skipped) into the spec hash, so
/// a container created before these settings existed keeps its hash; the log config is hashed from the
/// spec instead (its default applies at the next recreate).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct HostSettings {
    /// User-defined networks, joined at create (none: Docker's default bridge).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub networks: Vec<NetworkEndpoint>,
    /// `--network host`.
    #[serde(skip_serializing_if = "is_false")]
    pub host_network: bool,
    /// Memory limit in bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory: Option<i64>,
    /// CPU limit in billionths of a CPU.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nano_cpus: Option<i64>,
    /// Process limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pids_limit: Option<i64>,
    /// Log driver and options.
    #[serde(skip)]
    pub log: LogConfig,
    /// Read-only root filesystem.
    #[serde(skip_serializing_if = "is_false")]
    pub readonly_rootfs: bool,
    /// tmpfs mounts: path -> options (`size=67108864`).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub tmpfs: BTreeMap<String, String>,
    /// Capabilities added.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cap_add: Vec<String>,
    /// Capabilities dropped.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cap_drop: Vec<String>,
    /// `no-new-privileges`.
    #[serde(skip_serializing_if = "is_false")]
    pub no_new_privileges: bool,
    /// `/etc/hosts` entries, `HOST:IP`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub extra_hosts: Vec<String>,
    /// Host name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// Everything needed to create a container. Built from the spec by [`crate::desired::DesiredContainer`]
/// (the active container and a preflight candidate); contains resolved env values (possibly secret), so
/// it is never logged or serialized whole.
#[derive(Clone, PartialEq, Eq)]
pub struct CreateRequest {
    /// Container name.
    pub name: String,
    /// Image to run: `repo@sha256:...`.
    pub image: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// `NAME=value` entries.
    pub env: Vec<String>,
    /// Command override.
    pub cmd: Option<Vec<String>>,
    /// Entrypoint override.
    pub entrypoint: Option<Vec<String>>,
    /// User to run as.
    pub user: Option<String>,
    /// Working directory.
    pub working_dir: Option<String>,
    /// Container ports to expose (`8080/tcp`), also those not published.
    pub exposed: Vec<String>,
    /// Published ports.
    pub ports: Vec<PortBinding>,
    /// Mounts.
    pub mounts: Vec<MountSpec>,
    /// Docker's `--init`.
    pub init: bool,
    /// Seconds between SIGTERM and SIGKILL.
    pub stop_timeout: u32,
    /// Restart policy name.
    pub restart: String,
    /// Networking, limits and hardening.
    pub host: HostSettings,
}

impl fmt::Debug for CreateRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CreateRequest")
            .field("name", &self.name)
            .field("image", &self.image)
            .field("env", &format_args!("[{} entries]", self.env.len()))
            .field("ports", &self.ports)
            .field("mounts", &self.mounts)
            .field("host", &self.host)
            .finish_non_exhaustive()
    }
}

/// Output of a command run with exec.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ExecOutput {
    /// Exit code.
    pub exit_code: i64,
    /// Standard output (lossy UTF-8, capped).
    pub stdout: String,
    /// Standard error (lossy UTF-8, capped).
    pub stderr: String,
}

/// A container event dockop cares about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineEvent {
    /// `die`, `destroy`, `stop`, `oom`, `health_status`, `start`, `rename`, ...
    pub action: String,
    /// Container ID.
    pub id: String,
    /// The object named by the container's `dockop.dev/name` label.
    pub object: String,
    /// The container's `dockop.dev/instance` label (`None` when it has none: made by an older dockop).
    pub instance: Option<String>,
}

/// Registry credentials, never logged.
#[derive(Clone)]
pub struct Credentials {
    /// User name.
    pub username: String,
    /// Password or token.
    pub secret: secrecy::SecretString,
    /// Registry host.
    pub server: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Credentials({}@{}, [redacted])",
            self.username, self.server
        )
    }
}

/// Pull progress, reported per layer.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PullProgress {
    /// Layer id.
    pub layer: String,
    /// `Downloading`, `Extracting`, `Pull complete`, ...
    pub status: String,
    /// Bytes done, when known.
    pub current: Option<u64>,
    /// Bytes total, when known.
    pub total: Option<u64>,
}

/// Receives pull progress.
pub type ProgressSink<'a> = &'a (dyn Fn(PullProgress) + Send + Sync);

/// A stream of engine events.
pub type EventStream = Pin<Box<dyn Stream<Item = Result<EngineEvent, EngineError>> + Send>>;

/// Which engine operation failed, for errors and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    /// Ping / version negotiation.
    Ping,
    /// List containers.
    List,
    /// Inspect a container.
    Inspect,
    /// Registry manifest HEAD through the distribution endpoint.
    RegistryDigest,
    /// Inspect a local image.
    ImageInspect,
    /// Pull.
    Pull,
    /// Create a volume.
    VolumeCreate,
    /// Inspect or create a network.
    NetworkCreate,
    /// Connect a container to a network.
    NetworkConnect,
    /// Create a container.
    Create,
    /// Start.
    Start,
    /// Stop.
    Stop,
    /// Rename.
    Rename,
    /// Remove.
    Remove,
    /// Exec.
    Exec,
    /// Logs.
    Logs,
    /// Stats.
    Stats,
    /// Events.
    Events,
}

impl Op {
    /// Metric/log label.
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Ping => "ping",
            Op::List => "list",
            Op::Inspect => "inspect",
            Op::RegistryDigest => "registry_digest",
            Op::ImageInspect => "image_inspect",
            Op::Pull => "pull",
            Op::VolumeCreate => "volume_create",
            Op::NetworkCreate => "network_create",
            Op::NetworkConnect => "network_connect",
            Op::Create => "create",
            Op::Start => "start",
            Op::Stop => "stop",
            Op::Rename => "rename",
            Op::Remove => "remove",
            Op::Exec => "exec",
            Op::Logs => "logs",
            Op::Stats => "stats",
            Op::Events => "events",
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An engine call that failed.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum EngineError {
    /// The engine could not be reached at all.
    #[error("cannot reach the Docker engine ({op}): {message}")]
    Unreachable {
        /// Operation.
        op: Op,
        /// Detail.
        message: String,
    },
    /// The call did not finish in time.
    #[error("Docker engine call {op} timed out after {seconds} s")]
    Timeout {
        /// Operation.
        op: Op,
        /// Limit.
        seconds: u64,
    },
    /// Not found (container, image, manifest).
    #[error("{op}: not found: {message}")]
    NotFound {
        /// Operation.
        op: Op,
        /// Detail.
        message: String,
    },
    /// The registry refused our credentials (or their absence).
    #[error("{op}: registry authentication failed: {message}")]
    Unauthorized {
        /// Operation.
        op: Op,
        /// Detail.
        message: String,
    },
    /// Name already in use, port already allocated, ...
    #[error("{op}: conflict: {message}")]
    Conflict {
        /// Operation.
        op: Op,
        /// Detail.
        message: String,
    },
    /// Any other engine answer.
    #[error("{op}: {message}")]
    Other {
        /// Operation.
        op: Op,
        /// Detail.
        message: String,
    },
}

impl EngineError {
    /// The operation that failed.
    pub fn op(&self) -> Op {
        match self {
            EngineError::Unreachable { op, .. }
            | EngineError::Timeout { op, .. }
            | EngineError::NotFound { op, .. }
            | EngineError::Unauthorized { op, .. }
            | EngineError::Conflict { op, .. }
            | EngineError::Other { op, .. } => *op,
        }
    }
    /// True for "not found".
    pub fn is_not_found(&self) -> bool {
        matches!(self, EngineError::NotFound { .. })
    }
}

/// Local image facts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalImage {
    /// Image ID (config digest).
    pub id: String,
    /// `repo@sha256:...` entries.
    pub repo_digests: Vec<String>,
}

/// Everything dockop asks of a Docker engine. Implementations wrap every call in a timeout, a tracing span
/// and the `dockop_engine_requests_total` / `dockop_engine_request_duration_seconds` metrics.
#[async_trait]
pub trait Engine: Send + Sync + fmt::Debug {
    /// Reachability check.
    async fn ping(&self) -> Result<(), EngineError>;
    /// Every container (any state) carrying [`LABEL_NAME`], inspected.
    async fn list_managed(&self) -> Result<Vec<ContainerInfo>, EngineError>;
    /// Every container (any state) carrying [`LABEL_NAME`], from the list endpoint alone: one engine call,
    /// no inspect. Filled in: ID, name, labels, state, image ID and the IP address (from the list's
    /// `NetworkSettings.Networks`); left empty because the list does not carry them: `started_at` (`None`),
    /// `exit_code` (0) and `oom_killed` (false). For the health monitor's shared refresh.
    async fn list_brief(&self) -> Result<Vec<ContainerInfo>, EngineError>;
    /// One container by ID or name; `None` when it does not exist.
    async fn inspect(&self, id_or_name: &str) -> Result<Option<ContainerInfo>, EngineError>;
    /// Manifest digest a reference points to in its registry (HEAD-style, never a pull).
    async fn registry_digest(
        &self,
        image: &str,
        auth: Option<&Credentials>,
    ) -> Result<String, EngineError>;
    /// A local image, `None` when absent.
    async fn local_image(&self, reference: &str) -> Result<Option<LocalImage>, EngineError>;
    /// Pull `reference` (normally `repo@sha256:...`).
    async fn pull(
        &self,
        reference: &str,
        auth: Option<&Credentials>,
        progress: ProgressSink<'_>,
    ) -> Result<(), EngineError>;
    /// Create the named volume when missing.
    async fn ensure_volume(
        &self,
        name: &str,
        labels: &BTreeMap<String, String>,
    ) -> Result<(), EngineError>;
    /// Create the user-defined bridge network when missing, labelled [`LABEL_MANAGED`]`=true` (an
    /// existing network is used as it is). dockop never removes networks.
    async fn ensure_network(&self, name: &str) -> Result<(), EngineError>;
    /// Create a container; returns its ID. It joins every network of `req.host.networks` with its
    /// aliases before it starts.
    async fn create(&self, req: &CreateRequest) -> Result<String, EngineError>;
    /// Start.
    async fn start(&self, id: &str) -> Result<(), EngineError>;
    /// Stop with a timeout (seconds before SIGKILL).
    async fn stop(&self, id: &str, timeout_secs: u32) -> Result<(), EngineError>;
    /// Rename.
    async fn rename(&self, id: &str, new_name: &str) -> Result<(), EngineError>;
    /// Force-remove; with `volumes`, also its anonymous volumes (never named ones).
    async fn remove(&self, id: &str, volumes: bool) -> Result<(), EngineError>;
    /// Run a command inside a running container, optionally feeding `stdin`.
    async fn exec(
        &self,
        id: &str,
        cmd: &[String],
        stdin: Option<&[u8]>,
    ) -> Result<ExecOutput, EngineError>;
    /// The last `lines` log lines.
    async fn logs_tail(&self, id: &str, lines: usize) -> Result<String, EngineError>;
    /// Memory usage in bytes (one-shot stats), `None` when unknown.
    async fn memory_usage(&self, id: &str) -> Result<Option<u64>, EngineError>;
    /// Events of managed containers.
    fn events(&self) -> EventStream;
}
