//! The `Container` resource (`apiVersion: dockop.dev/v1alpha1`): the Rust types are the source of truth
//! for the YAML users write, the JSON Schema in `crds/` and the spec hash that drives recreation.

use std::collections::BTreeMap;
use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The only API version this build understands.
pub const API_VERSION: &str = "dockop.dev/v1alpha1";
/// The only kind this build understands.
pub const KIND: &str = "Container";

/// A container on a plain Docker host, declared like a Kubernetes resource and reconciled by dockop.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(title = "Container")]
pub struct Container {
    /// API group and version of the resource. Always `dockop.dev/v1alpha1`.
    pub api_version: ApiVersion,
    /// Kind of the resource. Always `Container`.
    pub kind: Kind,
    /// Name and labels of the object.
    pub metadata: Metadata,
    /// The desired state of the container.
    pub spec: ContainerSpec,
    /// Accepted for compatibility with Kubernetes tooling and ignored: dockop never reads status from
    /// files; it writes status to its state directory (`dockop status`).
    #[serde(default, skip_serializing)]
    pub status: Option<serde_json::Value>,
}

/// API group and version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ApiVersion {
    /// The first, alpha version of the `dockop.dev` API.
    #[serde(rename = "dockop.dev/v1alpha1")]
    V1Alpha1,
}

/// Resource kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Kind {
    /// A single managed Docker container.
    Container,
}

/// Object metadata.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Metadata {
    /// Name of the object and of the Docker container: a DNS label (`[a-z0-9]([-a-z0-9]*[a-z0-9])?`, at most
    /// 63 characters). Must be unique across every file dockop reads.
    #[schemars(
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"),
        length(min = 1, max = 63)
    )]
    pub name: String,
    /// Labels copied onto the container and the named volumes dockop creates for it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Free-form notes for people and tools; not copied anywhere.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// The desired state of one container.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ContainerSpec {
    /// Image reference to run, e.g. `127.0.0.1:5000/opencode:1.18.34`. Without `digest`, dockop follows
    /// this tag: it checks the registry every `update.checkIntervalSeconds` and updates when the tag moves.
    #[schemars(length(min = 1))]
    pub image: String,
    /// Pin the image to this manifest digest (`sha256:` + 64 hex digits). The tag in `image` is then for
    /// display only and the registry is never asked where it points.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// Replaces the image's command (`CMD`). Exec form: the program and its arguments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    /// Replaces the image's entrypoint (`ENTRYPOINT`). Exec form.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    /// Environment variables set in the container.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,
    /// Container ports published on the host.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<Port>,
    /// Named volumes and bind mounts. Named volumes are created when missing and never removed by dockop.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<Volume>,
    /// Linux accounts dockop keeps inside the container (created, password set, locked), re-applied after
    /// every recreate and rollback.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub users: Vec<User>,
    /// What happens to an account dockop created earlier once it is removed from `users`.
    #[serde(default, skip_serializing_if = "is_default")]
    pub users_prune: UsersPrune,
    /// HTTP health check that gates every change. Without it, a change succeeds once the container has
    /// been running for a few seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<Health>,
    /// How and when the image is updated.
    #[serde(default, skip_serializing_if = "is_default")]
    pub update: Update,
    /// Run an init process as PID 1 (Docker's `--init`), which forwards signals and reaps zombies. Many
    /// apps ignore SIGTERM as PID 1, which turns every stop into a full `stopTimeoutSeconds` wait.
    #[serde(default = "default_true", skip_serializing_if = "is_true")]
    pub init: bool,
    /// Seconds Docker waits after SIGTERM before it kills the container.
    #[serde(
        default = "default_stop_timeout",
        skip_serializing_if = "is_default_stop_timeout"
    )]
    #[schemars(range(max = 3600))]
    pub stop_timeout_seconds: u32,
    /// Docker restart policy.
    #[serde(default, skip_serializing_if = "is_default")]
    pub restart: RestartPolicy,
    /// User (name or UID[:GID]) the container's process runs as.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Working directory inside the container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    /// User-defined bridge networks the container joins, each with its DNS aliases. A missing network
    /// is created (labelled `dockop.dev/managed=true`) and never removed by dockop. Without networks the
    /// container is on Docker's default bridge. A preflight candidate joins the same networks without
    /// the aliases, so no other container reaches it by alias.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub networks: Vec<NetworkAttachment>,
    /// Share the host's network stack (Docker's `--network host`). Excludes `ports`, `networks` and
    /// `hostname`; health probes go to 127.0.0.1.
    #[serde(default, skip_serializing_if = "is_default")]
    pub host_network: bool,
    /// Objects that must be Ready before this one is created or updated (`apply` and `run` follow the
    /// order; `run --prune` removes in reverse order).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<String>,
    /// Resource limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,
    /// Log driver and options. Absent: `json-file` with `max-size: 10m` and `max-file: "3"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logging: Option<Logging>,
    /// Mount the container's root filesystem read-only (write to `tmpfs` or `volumes`).
    #[serde(default, skip_serializing_if = "is_default")]
    pub read_only_root_filesystem: bool,
    /// In-memory file systems.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tmpfs: Vec<Tmpfs>,
    /// Linux capabilities added to or dropped from Docker's default set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<Capabilities>,
    /// Forbid the process to gain privileges (setuid, file capabilities): `no-new-privileges`.
    #[serde(default, skip_serializing_if = "is_default")]
    pub no_new_privileges: bool,
    /// Extra `/etc/hosts` entries, `HOST:IP`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_hosts: Vec<String>,
    /// Host name inside the container (an RFC 1123 host name). Default: Docker's (the container ID).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
}

/// A user-defined bridge network the container joins.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NetworkAttachment {
    /// Network name (`[a-zA-Z0-9][a-zA-Z0-9_.-]*`; not `bridge`, `host` or `none`).
    #[schemars(length(min = 1, max = 128))]
    pub name: String,
    /// DNS names other containers on this network reach the container by (besides its own name).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
}

/// Resource limits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Resources {
    /// Memory limit as a Kubernetes quantity: `512Mi`, `1Gi`, `256M`, `1000000` (bytes); at least 6Mi.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<String>,
    /// CPU limit in CPUs, e.g. `1.5` (Docker's `--cpus`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.01, max = 1024.0))]
    pub cpus: Option<f64>,
    /// Most processes and threads the container may run (`--pids-limit`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 4194304))]
    pub pids: Option<i64>,
}

/// Log driver and its options.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Logging {
    /// Docker log driver, e.g. `json-file`, `local`, `journald`, `syslog`, `none`.
    #[serde(default = "default_log_driver")]
    pub driver: String,
    /// Driver options, e.g. `{max-size: 10m, max-file: "3"}` (values are strings).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub options: BTreeMap<String, String>,
}

/// An in-memory file system.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Tmpfs {
    /// Absolute path inside the container.
    pub mount_path: String,
    /// Size limit as a Kubernetes quantity, e.g. `64Mi`. Default: Docker's (half the host's memory).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<String>,
}

/// Linux capabilities, by name without the `CAP_` prefix (`NET_BIND_SERVICE`), or `ALL`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Capabilities {
    /// Capabilities added to Docker's default set.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub add: Vec<String>,
    /// Capabilities removed from Docker's default set (`ALL` drops every one; `add` then grants back).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub drop: Vec<String>,
}

/// The log driver used when `logging` is absent.
pub const DEFAULT_LOG_DRIVER: &str = "json-file";
fn default_log_driver() -> String {
    DEFAULT_LOG_DRIVER.to_owned()
}

impl Logging {
    /// `json-file` with `max-size: 10m` and `max-file: "3"`: what a container gets when `logging` is absent.
    pub fn rotated_default() -> Self {
        Self {
            driver: DEFAULT_LOG_DRIVER.to_owned(),
            options: BTreeMap::from([
                ("max-size".to_owned(), "10m".to_owned()),
                ("max-file".to_owned(), "3".to_owned()),
            ]),
        }
    }
}

/// An environment variable: a literal `value` or a value read from a file (`valueFrom.file`), which keeps
/// secrets out of the spec.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EnvVar {
    /// Variable name.
    #[schemars(regex(pattern = r"^[A-Za-z_][A-Za-z0-9_]*$"))]
    pub name: String,
    /// Literal value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// Where to read the value from instead of `value`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_from: Option<EnvSource>,
}

/// Source of an environment variable's value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EnvSource {
    /// Absolute path of a file on the host whose content (without a trailing newline) is the value. Read at
    /// every reconcile, so rotating the file recreates the container.
    pub file: String,
}

/// A published port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Port {
    /// Port the app listens on inside the container.
    #[schemars(range(min = 1, max = 65535))]
    pub container_port: u16,
    /// Port on the host. Defaults to `containerPort`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub host_port: Option<u16>,
    /// Host address to bind. Defaults to `127.0.0.1`: publishing on every interface (`0.0.0.0`) must be
    /// asked for.
    #[serde(
        rename = "hostIP",
        default = "default_host_ip",
        skip_serializing_if = "is_default_host_ip"
    )]
    pub host_ip: String,
    /// Transport protocol.
    #[serde(default, skip_serializing_if = "is_default")]
    pub protocol: Protocol,
}

/// Transport protocol of a port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// TCP.
    #[default]
    Tcp,
    /// UDP.
    Udp,
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        })
    }
}

/// A volume: exactly one of `name` (a named Docker volume) or `hostPath` (a bind mount).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Volume {
    /// Named Docker volume. Created when missing (labelled `dockop.dev/name`), kept across updates and
    /// rollbacks, and never removed by dockop.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Absolute path on the host to bind-mount.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_path: Option<String>,
    /// Absolute path inside the container.
    pub mount_path: String,
    /// Mount read-only.
    #[serde(default, skip_serializing_if = "is_default")]
    pub read_only: bool,
}

/// A Linux account inside the container. Passwords are given as crypt(3) hashes only (`$y$` yescrypt or
/// `$6$` SHA-512), inline (`passwordHash`) or in a file (`passwordFile`); `dockop hash-password` makes one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct User {
    /// Login name: `^[a-z_][a-z0-9_-]{0,31}$`.
    #[schemars(regex(pattern = r"^[a-z_][a-z0-9_-]{0,31}$"))]
    pub name: String,
    /// crypt(3) hash of the password (`$y$...` or `$6$...`). Never a plaintext password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_hash: Option<SecretText>,
    /// Absolute path of a host file holding the crypt(3) hash; read at every reconcile, so rotating the
    /// file rotates the password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<String>,
    /// Lock the account (`usermod -L`): the password stops working, the account stays.
    #[serde(default, skip_serializing_if = "is_default")]
    pub locked: bool,
}

/// What happens to an account dockop manages once it is removed from `users`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum UsersPrune {
    /// Lock the account and keep its home directory.
    #[default]
    Lock,
    /// Delete the account (`userdel`); its home directory stays.
    Delete,
}

/// HTTP health check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Health {
    /// Path to GET. Healthy is HTTP 2xx and, when the body is JSON with a `healthy` field, that field is
    /// true; a `version` field is reported as the app version.
    #[serde(default = "default_health_path")]
    pub path: String,
    /// Container port to probe; must be one of `ports[].containerPort`, or any port when none are published.
    #[schemars(range(min = 1, max = 65535))]
    pub port: u16,
    /// Seconds between probes.
    #[serde(
        default = "default_interval",
        skip_serializing_if = "is_default_interval"
    )]
    #[schemars(range(min = 1, max = 3600))]
    pub interval_seconds: u32,
    /// Seconds one probe may take.
    #[serde(
        default = "default_timeout",
        skip_serializing_if = "is_default_timeout"
    )]
    #[schemars(range(min = 1, max = 3600))]
    pub timeout_seconds: u32,
    /// Consecutive failed probes after which a running (already healthy) container counts as unhealthy.
    #[serde(
        default = "default_failure_threshold",
        skip_serializing_if = "is_default_failure_threshold"
    )]
    #[schemars(range(min = 1, max = 100))]
    pub failure_threshold: u32,
    /// Seconds from start to the first healthy answer; past it the change has failed and is rolled back.
    #[serde(
        default = "default_startup_deadline",
        skip_serializing_if = "is_default_startup_deadline"
    )]
    #[schemars(range(min = 1, max = 86400))]
    pub startup_deadline_seconds: u32,
    /// HTTP basic auth every probe sends (health gate, preflight, `apply`'s last look and the monitor
    /// behind `/health`), for apps that protect their health path. Load balancers keep reaching dockop's
    /// `/health` without credentials: dockop holds the app's, never the load balancer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub basic_auth: Option<BasicAuth>,
    /// Extra request headers every probe sends (Kubernetes' `httpGet.httpHeaders`). Secret values belong in
    /// `valueFrom.file`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub http_headers: Vec<HttpHeader>,
}

/// HTTP basic auth for health probes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BasicAuth {
    /// User name (RFC 7617: no `:`).
    #[schemars(length(min = 1, max = 256))]
    pub username: String,
    /// Absolute path of a host file holding the plain password (a trailing newline is dropped). Read when
    /// probing, so rotating it needs no recreate; never copied into status, logs or the state directory.
    pub password_file: String,
}

/// A request header of the health probe: a literal `value` or a value read from a file (`valueFrom.file`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpHeader {
    /// Header name (an RFC 9110 token). `Host` and hop-by-hop headers are refused.
    #[schemars(length(min = 1, max = 256))]
    pub name: String,
    /// Literal value (kept in the spec and the state directory: not for secrets).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// Where to read the value from instead of `value`: read when probing, never copied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_from: Option<ValueSource>,
}

/// Source of a value kept off the spec.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ValueSource {
    /// Absolute path of a host file whose content (without a trailing newline) is the value.
    pub file: String,
}

/// Update behaviour.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Update {
    /// `auto` follows the tag; `monitor` only reports drift; `manual` changes only on spec edits.
    #[serde(default, skip_serializing_if = "is_default")]
    pub policy: UpdatePolicy,
    /// Seconds between registry checks of the followed tag (a manifest HEAD, never a pull).
    #[serde(
        default = "default_check_interval",
        skip_serializing_if = "is_default_check_interval"
    )]
    #[schemars(range(min = 10, max = 604800))]
    pub check_interval_seconds: u32,
    /// Verify the new image in a throwaway container (no ports, no volumes) before the running one is
    /// touched. A candidate that fails is rejected with zero downtime.
    #[serde(default = "default_true", skip_serializing_if = "is_true")]
    pub preflight: bool,
    /// `auto`: a change whose health gate fails is rolled back to the previous container. `never`: the
    /// failed container is left as it is for inspection.
    #[serde(default, skip_serializing_if = "is_default")]
    pub rollback: RollbackPolicy,
    /// When automatic (registry-driven) updates may happen, e.g. `Mon-Fri 02:00-04:00 UTC` or
    /// `Sat,Sun 00:00-06:00 UTC`. Spec edits apply at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<String>,
    /// `stop-first` (default): the old container stops, then the new one starts (an outage of stop +
    /// start). `start-first`: the new one starts beside the old one without host ports, is health-gated on
    /// its bridge address, and `dockop proxy` (which owns the object's host ports) switches new requests to
    /// it; the old one drains, then stops. Needs a running `dockop proxy` and a health check; for a moment
    /// both containers share the volumes.
    #[serde(default, skip_serializing_if = "is_default")]
    pub strategy: UpdateStrategy,
    /// Start-first only: how long the old container keeps its open requests and streams after the switch
    /// before it is stopped.
    #[serde(
        default = "default_drain_seconds",
        skip_serializing_if = "is_default_drain_seconds"
    )]
    #[schemars(range(max = 3600))]
    pub drain_seconds: u32,
}

impl Default for Update {
    fn default() -> Self {
        Self {
            policy: UpdatePolicy::default(),
            check_interval_seconds: default_check_interval(),
            preflight: true,
            rollback: RollbackPolicy::default(),
            window: None,
            strategy: UpdateStrategy::default(),
            drain_seconds: default_drain_seconds(),
        }
    }
}

fn default_drain_seconds() -> u32 {
    30
}

fn is_default_drain_seconds(v: &u32) -> bool {
    *v == default_drain_seconds()
}

/// How an update replaces the running container (Docker Swarm's words).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum UpdateStrategy {
    /// Stop the old container, then start the new one.
    #[default]
    StopFirst,
    /// Start the new one beside the old one; `dockop proxy` switches traffic once it is healthy.
    StartFirst,
}

impl UpdateStrategy {
    /// The spelling in the spec.
    pub fn as_str(self) -> &'static str {
        match self {
            UpdateStrategy::StopFirst => "stop-first",
            UpdateStrategy::StartFirst => "start-first",
        }
    }
}

/// Update policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum UpdatePolicy {
    /// Follow the tag: update when the registry digest moves.
    #[default]
    Auto,
    /// Report drift (status, metrics), change nothing.
    Monitor,
    /// Change only when the spec is edited.
    Manual,
}

/// Rollback policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum RollbackPolicy {
    /// Roll back automatically when the health gate fails.
    #[default]
    Auto,
    /// Never roll back; leave the failed container for inspection.
    Never,
}

/// Docker restart policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    /// Never restart.
    No,
    /// Always restart.
    Always,
    /// Restart unless stopped by hand.
    #[default]
    UnlessStopped,
    /// Restart when the process exits non-zero.
    OnFailure,
}

impl RestartPolicy {
    /// The name Docker uses.
    pub fn as_docker(self) -> &'static str {
        match self {
            RestartPolicy::No => "no",
            RestartPolicy::Always => "always",
            RestartPolicy::UnlessStopped => "unless-stopped",
            RestartPolicy::OnFailure => "on-failure",
        }
    }
}

/// A string that never appears in `Debug` output, logs or status: password hashes.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(transparent)]
#[schemars(transparent)]
pub struct SecretText(pub String);

impl SecretText {
    /// The secret itself; call only where it is handed to the engine.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"[redacted]\"")
    }
}

impl From<&str> for SecretText {
    fn from(s: &str) -> Self {
        Self(s.to_owned())
    }
}

fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}
fn default_true() -> bool {
    true
}
fn is_true(v: &bool) -> bool {
    *v
}
/// Default `stopTimeoutSeconds`.
pub const DEFAULT_STOP_TIMEOUT: u32 = 10;
fn default_stop_timeout() -> u32 {
    DEFAULT_STOP_TIMEOUT
}
fn is_default_stop_timeout(v: &u32) -> bool {
    *v == DEFAULT_STOP_TIMEOUT
}
fn default_host_ip() -> String {
    "127.0.0.1".to_owned()
}
fn is_default_host_ip(v: &str) -> bool {
    v == "127.0.0.1"
}
fn default_health_path() -> String {
    "/global/health".to_owned()
}
fn default_interval() -> u32 {
    1
}
fn is_default_interval(v: &u32) -> bool {
    *v == 1
}
fn default_timeout() -> u32 {
    2
}
fn is_default_timeout(v: &u32) -> bool {
    *v == 2
}
fn default_failure_threshold() -> u32 {
    3
}
fn is_default_failure_threshold(v: &u32) -> bool {
    *v == 3
}
fn default_startup_deadline() -> u32 {
    60
}
fn is_default_startup_deadline(v: &u32) -> bool {
    *v == 60
}
fn default_check_interval() -> u32 {
    300
}
fn is_default_check_interval(v: &u32) -> bool {
    *v == 300
}

impl Container {
    /// The object's name (also the container name).
    pub fn name(&self) -> &str {
        &self.metadata.name
    }

    /// The names in `spec.dependsOn`.
    pub fn depends_on_names(&self) -> impl Iterator<Item = &str> {
        self.spec.depends_on.iter().map(String::as_str)
    }
}

impl Port {
    /// The host port, defaulting to the container port.
    pub fn effective_host_port(&self) -> u16 {
        self.host_port.unwrap_or(self.container_port)
    }
}
