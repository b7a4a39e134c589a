//! Per-object status and memory (conditions, digests, history, failed digests, rollback holds), persisted
//! atomically in the state directory: `objects/<name>.json`. A corrupt file is moved aside with a warning,
//! never fatal. Read-only commands (`status`, `plan`) open the directory with [`Store::open_read_only`]:
//! nothing is created, chmodded, renamed or written, and a corrupt file is an error to report.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::spec::hash::{KEY_FILE, SpecHashKey};

/// Changes kept in history.
pub const HISTORY_LEN: usize = 20;
/// Failed (digest, spec hash) pairs remembered.
pub const FAILED_LEN: usize = 20;

/// A condition type, as in Kubernetes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConditionType {
    /// The container runs the desired version and answers healthy.
    Ready,
    /// A change is under way.
    Progressing,
    /// The last change failed, was rolled back, or cannot be made.
    Degraded,
}

/// The phase of an update that failed (error messages, `rollbacks_total{reason}`, the `<Phase>Failed`
/// condition reason).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Registry credentials.
    Credentials,
    /// Pull.
    Pull,
    /// Preflight.
    Preflight,
    /// Stopping the running container.
    Stop,
    /// Creating the new container.
    Create,
    /// Starting.
    Start,
    /// Users inside the container.
    Users,
    /// Health gate.
    Health,
    /// Cleaning up.
    Cleanup,
    /// Restoring the previous container.
    Restore,
    /// Switching `dockop proxy`'s route (start-first).
    Switch,
}

impl Phase {
    /// Label / reason text.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Credentials => "credentials",
            Phase::Pull => "pull",
            Phase::Preflight => "preflight",
            Phase::Stop => "stop",
            Phase::Create => "create",
            Phase::Start => "start",
            Phase::Users => "users",
            Phase::Health => "health",
            Phase::Cleanup => "cleanup",
            Phase::Restore => "restore",
            Phase::Switch => "switch",
        }
    }

    /// The condition reason of a change that failed in this phase (`PullFailed`, ...).
    fn failed_reason(self) -> &'static str {
        match self {
            Phase::Credentials => "CredentialsFailed",
            Phase::Pull => "PullFailed",
            Phase::Preflight => "PreflightFailed",
            Phase::Stop => "StopFailed",
            Phase::Create => "CreateFailed",
            Phase::Start => "StartFailed",
            Phase::Users => "UsersFailed",
            Phase::Health => "HealthFailed",
            Phase::Cleanup => "CleanupFailed",
            Phase::Restore => "RestoreFailed",
            Phase::Switch => "SwitchFailed",
        }
    }
}

const PHASES: [Phase; 11] = [
    Phase::Credentials,
    Phase::Pull,
    Phase::Preflight,
    Phase::Stop,
    Phase::Create,
    Phase::Start,
    Phase::Users,
    Phase::Health,
    Phase::Cleanup,
    Phase::Restore,
    Phase::Switch,
];

/// The CamelCase reason of a condition, as in Kubernetes. Stored as its text; a text this version does not
/// know (written by a newer dockop) reads back as [`Reason::Other`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// Ready: the active container answers healthy.
    Healthy,
    /// Not ready: it does not.
    Unhealthy,
    /// Progressing: a change is under way.
    Reconciling,
    /// Progressing ended.
    Idle,
    /// Not degraded.
    AsExpected,
    /// The last change failed and the previous version serves again.
    RolledBack,
    /// The change failed in this phase and could not be rolled back (`PullFailed`, ...), or preflight
    /// rejected it (`PreflightFailed`).
    Failed(Phase),
    /// A container with the object's name is not this instance's.
    NameConflict,
    /// The registry could not resolve the tag.
    RegistryUnavailable,
    /// No image digest to run.
    NoTarget,
    /// The target failed before and is not retried.
    FailedTarget,
    /// Drift found; `update.policy: monitor` changes nothing.
    MonitorOnly,
    /// The desired state could not be built (env files, secrets).
    SpecUnresolvable,
    /// The engine could not be observed.
    EngineUnavailable,
    /// The state directory could not be written.
    StateUnwritable,
    /// `dockop proxy` could not be asked.
    ProxyUnavailable,
    /// The object's file is invalid; its last valid version is kept.
    SpecInvalid,
    /// The object is no longer in the source; its container is left running.
    Orphaned,
    /// A `dependsOn` object is not Ready yet.
    WaitingForDependency,
    /// A reason this version does not know.
    Other(String),
}

impl Reason {
    /// The reason's text.
    pub fn as_str(&self) -> &str {
        match self {
            Reason::Healthy => "Healthy",
            Reason::Unhealthy => "Unhealthy",
            Reason::Reconciling => "Reconciling",
            Reason::Idle => "Idle",
            Reason::AsExpected => "AsExpected",
            Reason::RolledBack => "RolledBack",
            Reason::Failed(p) => p.failed_reason(),
            Reason::NameConflict => "NameConflict",
            Reason::RegistryUnavailable => "RegistryUnavailable",
            Reason::NoTarget => "NoTarget",
            Reason::FailedTarget => "FailedTarget",
            Reason::MonitorOnly => "MonitorOnly",
            Reason::SpecUnresolvable => "SpecUnresolvable",
            Reason::EngineUnavailable => "EngineUnavailable",
            Reason::StateUnwritable => "StateUnwritable",
            Reason::ProxyUnavailable => "ProxyUnavailable",
            Reason::SpecInvalid => "SpecInvalid",
            Reason::Orphaned => "Orphaned",
            Reason::WaitingForDependency => "WaitingForDependency",
            Reason::Other(s) => s,
        }
    }

    /// The reason named by `text`.
    pub fn parse(text: &str) -> Reason {
        const KNOWN: [Reason; 18] = [
            Reason::Healthy,
            Reason::Unhealthy,
            Reason::Reconciling,
            Reason::Idle,
            Reason::AsExpected,
            Reason::RolledBack,
            Reason::NameConflict,
            Reason::RegistryUnavailable,
            Reason::NoTarget,
            Reason::FailedTarget,
            Reason::MonitorOnly,
            Reason::SpecUnresolvable,
            Reason::EngineUnavailable,
            Reason::StateUnwritable,
            Reason::ProxyUnavailable,
            Reason::SpecInvalid,
            Reason::Orphaned,
            Reason::WaitingForDependency,
        ];
        KNOWN
            .into_iter()
            .chain(PHASES.map(Reason::Failed))
            .find(|r| r.as_str() == text)
            .unwrap_or_else(|| Reason::Other(text.to_owned()))
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Reason {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Reason {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = std::borrow::Cow::<'de, str>::deserialize(d)?;
        Ok(Reason::parse(&text))
    }
}

/// What a recorded change did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeAction {
    /// Created the container.
    Create,
    /// Started the stopped container.
    Start,
    /// Replaced it (digest or spec drift).
    Update,
    /// Finished an interrupted update.
    Resume,
    /// Put the previous container back.
    Restore,
    /// Pointed `dockop proxy` at the active container.
    Switch,
    /// Nothing planned (a users check that failed).
    None,
}

impl ChangeAction {
    /// Text (`create`, `update`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeAction::Create => "create",
            ChangeAction::Start => "start",
            ChangeAction::Update => "update",
            ChangeAction::Resume => "resume",
            ChangeAction::Restore => "restore",
            ChangeAction::Switch => "switch",
            ChangeAction::None => "none",
        }
    }
}

impl std::fmt::Display for ChangeAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a recorded change ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeResult {
    /// It passed the health gate.
    Succeeded,
    /// It failed and the previous version serves again.
    RolledBack,
    /// It failed and could not be rolled back.
    Failed,
    /// Preflight rejected it; nothing was touched.
    RejectedPreflight,
}

impl ChangeResult {
    /// Label / text (`updates_total{result}`).
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeResult::Succeeded => "succeeded",
            ChangeResult::RolledBack => "rolled_back",
            ChangeResult::Failed => "failed",
            ChangeResult::RejectedPreflight => "rejected_preflight",
        }
    }
}

impl std::fmt::Display for ChangeResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A condition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// Which condition.
    #[serde(rename = "type")]
    pub type_: ConditionType,
    /// True or false.
    pub status: bool,
    /// Why it has this status.
    pub reason: Reason,
    /// Human message.
    pub message: String,
    /// When `status` last changed.
    pub last_transition_time: DateTime<Utc>,
}

/// One change dockop made.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Change {
    /// When it finished.
    pub at: DateTime<Utc>,
    /// What it did.
    pub action: ChangeAction,
    /// Digest before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_digest: Option<String>,
    /// Digest after (the target).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_digest: Option<String>,
    /// How it ended.
    pub result: ChangeResult,
    /// Why it was made or why it failed.
    pub message: String,
    /// Seconds it took.
    pub seconds: f64,
}

/// A (digest, spec hash) pair whose change failed; not retried until the spec or the registry changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FailedTarget {
    /// Manifest digest.
    pub digest: String,
    /// Spec hash.
    pub spec_hash: String,
    /// Why.
    pub reason: String,
    /// When.
    pub at: DateTime<Utc>,
}

/// `dockop rollback`: hold this digest while the spec hash and the registry digest stay as they were.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Hold {
    /// Digest to run.
    pub digest: String,
    /// Spec hash when the hold was made.
    pub spec_hash: String,
    /// Registry digest of the followed tag when the hold was made (None for pinned specs).
    #[serde(default)]
    pub registry_digest: Option<String>,
}

/// The status and memory of one object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct ObjectStatus {
    /// Object name.
    pub name: String,
    /// Image reference from the spec.
    #[serde(default)]
    pub image: String,
    /// Conditions.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// Spec hash of the desired state last seen.
    #[serde(default)]
    pub spec_hash: Option<String>,
    /// Digest dockop wants to run.
    #[serde(default)]
    pub desired_digest: Option<String>,
    /// Digest the active container runs.
    #[serde(default)]
    pub current_digest: Option<String>,
    /// Digest of the version before the current one (what `dockop rollback` returns to).
    #[serde(default)]
    pub previous_digest: Option<String>,
    /// Digest the followed tag points to in the registry, when last checked.
    #[serde(default)]
    pub registry_digest: Option<String>,
    /// The tag reference `registryDigest` was asked for (the cache is valid for that reference only).
    #[serde(default)]
    pub registry_reference: Option<String>,
    /// When the registry was last asked.
    #[serde(default)]
    pub registry_checked_at: Option<DateTime<Utc>>,
    /// App version from the health answer.
    #[serde(default)]
    pub app_version: Option<String>,
    /// Active container ID.
    #[serde(default)]
    pub container_id: Option<String>,
    /// Active container state.
    #[serde(default)]
    pub container_state: Option<String>,
    /// Last change made.
    #[serde(default)]
    pub last_change: Option<Change>,
    /// Last error, if the last reconcile failed.
    #[serde(default)]
    pub last_error: Option<String>,
    /// When the last reconcile finished.
    #[serde(default)]
    pub last_reconcile: Option<DateTime<Utc>>,
    /// Source revision applied (git commit or file content hash).
    #[serde(default)]
    pub revision: Option<String>,
    /// Users configured, with whether a password is set and whether they are locked (never hashes).
    #[serde(default)]
    pub users: Vec<UserStatus>,
    /// Last changes, newest first.
    #[serde(default)]
    pub history: VecDeque<Change>,
    /// Failed targets, newest first.
    #[serde(default)]
    pub failed: Vec<FailedTarget>,
    /// Active rollback hold.
    #[serde(default)]
    pub hold: Option<Hold>,
    /// Changes made (the container's `dockop.dev/generation`).
    #[serde(default)]
    pub generation: u64,
}

/// What status says of a user: never the hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserStatus {
    /// Login name.
    pub name: String,
    /// A password hash is configured.
    pub password_set: bool,
    /// Locked.
    pub locked: bool,
}

impl ObjectStatus {
    /// A fresh status for `name`.
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            ..Default::default()
        }
    }

    /// Sets a condition, keeping `lastTransitionTime` when the status does not flip.
    pub fn set_condition(
        &mut self,
        type_: ConditionType,
        status: bool,
        reason: Reason,
        message: &str,
        now: DateTime<Utc>,
    ) {
        match self.conditions.iter_mut().find(|c| c.type_ == type_) {
            Some(c) => {
                if c.status != status {
                    c.last_transition_time = now;
                }
                c.status = status;
                c.reason = reason;
                message.clone_into(&mut c.message);
            }
            None => self.conditions.push(Condition {
                type_,
                status,
                reason,
                message: message.to_owned(),
                last_transition_time: now,
            }),
        }
    }

    /// A condition by type.
    pub fn condition(&self, type_: ConditionType) -> Option<&Condition> {
        self.conditions.iter().find(|c| c.type_ == type_)
    }

    /// True when Ready is true.
    pub fn is_ready(&self) -> bool {
        self.condition(ConditionType::Ready)
            .is_some_and(|c| c.status)
    }

    /// Records a change in history (newest first, capped).
    pub fn record_change(&mut self, change: Change) {
        self.last_change = Some(change.clone());
        self.history.push_front(change);
        self.history.truncate(HISTORY_LEN);
    }

    /// Remembers a failed target.
    pub fn record_failed(
        &mut self,
        digest: &str,
        spec_hash: &str,
        reason: &str,
        now: DateTime<Utc>,
    ) {
        self.failed
            .retain(|f| !(f.digest == digest && f.spec_hash == spec_hash));
        self.failed.insert(
            0,
            FailedTarget {
                digest: digest.to_owned(),
                spec_hash: spec_hash.to_owned(),
                reason: reason.to_owned(),
                at: now,
            },
        );
        self.failed.truncate(FAILED_LEN);
    }

    /// The failure recorded for (digest, spec hash).
    pub fn failed_for(&self, digest: &str, spec_hash: &str) -> Option<&FailedTarget> {
        self.failed
            .iter()
            .find(|f| f.digest == digest && f.spec_hash == spec_hash)
    }
}

/// Why the state directory could not be used.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// I/O on a path.
    #[error("state directory: cannot {action} {path}: {source}")]
    Io {
        /// What was attempted.
        action: &'static str,
        /// Where.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// A status file that is not valid status JSON (reported by read-only commands, which leave it).
    #[error("state directory: {path} is corrupt: {source}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Why it does not parse.
        source: serde_json::Error,
    },
    /// The spec-hash key could not be made or read.
    #[error("state directory: spec-hash key {path}: {source}")]
    Key {
        /// The key file.
        path: PathBuf,
        /// Why.
        source: crate::spec::hash::KeyError,
    },
    /// A write through a store opened read-only (a bug in the command).
    #[error("state directory: {path} not written: opened read-only")]
    ReadOnly {
        /// The file.
        path: PathBuf,
    },
}

/// How a [`Store`] was opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    /// `status`, `plan`: nothing on disk changes.
    ReadOnly,
    /// `apply`, `run`, `rollback`, `retry`.
    ReadWrite,
}

/// The state directory.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
    access: Access,
    /// The per-install key secret values enter the spec hash under (`None`: a read-only command found none).
    hash_key: Option<SpecHashKey>,
}

impl Store {
    /// Opens the state directory for a command that writes. A missing directory is created with mode
    /// 0700; an existing one keeps its mode (a warning when others may read or write it). Refused when
    /// it cannot be written.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            fs::create_dir_all(parent).map_err(io("create", parent))?;
        }
        let objects = dir.join("objects");
        for d in [dir, objects.as_path()] {
            match private_dir().create(d) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && d.is_dir() => {}
                Err(e) => return Err(io("create", d)(e)),
            }
        }
        warn_if_open_to_others(dir);
        // Refuse a state directory that cannot be written before anything on the host is changed: a
        // change whose outcome cannot be recorded would be retried blindly.
        let probe = objects.join(".write-test");
        write_atomic(&probe, b"ok")?;
        let _ = fs::remove_file(&probe);
        let hash_key = Some(load_or_create_key(dir)?);
        Ok(Self {
            dir: dir.to_owned(),
            access: Access::ReadWrite,
            hash_key,
        })
    }

    /// Opens the state directory for a command that only reads (`status`, `plan`): nothing is created,
    /// chmodded, renamed or written. A missing directory reads as empty.
    pub fn open_read_only(dir: &Path) -> Self {
        warn_if_open_to_others(dir);
        let key_path = dir.join(KEY_FILE);
        let hash_key = match fs::read_to_string(&key_path) {
            Ok(text) => SpecHashKey::from_file_text(&text)
                .inspect_err(|e| tracing::warn!(file = %key_path.display(), error = %e, "the spec-hash key does not parse; objects with secret values will show as changing"))
                .ok(),
            Err(_) => None,
        };
        Self {
            dir: dir.to_owned(),
            access: Access::ReadOnly,
            hash_key,
        }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The key secret values enter the spec hash under (always there for a store opened to write).
    pub fn spec_hash_key(&self) -> Option<&SpecHashKey> {
        self.hash_key.as_ref()
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join("objects").join(format!("{name}.json"))
    }

    /// Reads one object's status: `None` when it has none, an error when its file is corrupt. Changes
    /// nothing.
    pub fn read(&self, name: &str) -> Result<Option<ObjectStatus>, StoreError> {
        let path = self.path(name);
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(StoreError::Io {
                    action: "read",
                    path,
                    source,
                });
            }
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|source| StoreError::Corrupt { path, source })
    }

    /// Loads one object's status; a missing file is a fresh status, a corrupt one is moved aside (left
    /// in place, with a warning, when the store is read-only).
    pub fn load(&self, name: &str) -> ObjectStatus {
        let path = self.path(name);
        match fs::read(&path) {
            Ok(bytes) => match serde_json::from_slice::<ObjectStatus>(&bytes) {
                Ok(s) => s,
                Err(e) if self.access == Access::ReadOnly => {
                    tracing::warn!(file = %path.display(), error = %e, "status file is corrupt; read as empty and left as it is (read-only command)");
                    ObjectStatus::new(name)
                }
                Err(e) => {
                    let aside = path.with_extension(format!(
                        "json.corrupt-{}",
                        Utc::now().format("%Y%m%dT%H%M%S")
                    ));
                    tracing::warn!(file = %path.display(), moved_to = %aside.display(), error = %e, "status file is corrupt; moved aside, starting fresh");
                    let _ = fs::rename(&path, &aside);
                    ObjectStatus::new(name)
                }
            },
            Err(_) => ObjectStatus::new(name),
        }
    }

    /// Every stored status, sorted by name.
    pub fn list(&self) -> Vec<ObjectStatus> {
        self.names().iter().map(|n| self.load(n)).collect()
    }

    /// Every stored status, sorted by name, a corrupt file as an error (changes nothing).
    pub fn read_all(&self) -> Vec<Result<ObjectStatus, StoreError>> {
        self.names()
            .iter()
            .filter_map(|n| self.read(n).transpose())
            .collect()
    }

    /// The names of the stored statuses, sorted.
    fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(self.dir.join("objects"))
            .map(|rd| {
                rd.filter_map(Result::ok)
                    .filter_map(|e| {
                        e.file_name()
                            .to_str()
                            .and_then(|n| n.strip_suffix(".json"))
                            .map(str::to_owned)
                    })
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }

    /// Writes one object's status atomically (temp file, fsync, rename, fsync of the directory).
    pub fn save(&self, status: &ObjectStatus) -> Result<(), StoreError> {
        let path = self.path(&status.name);
        if self.access == Access::ReadOnly {
            return Err(StoreError::ReadOnly { path });
        }
        let bytes = serde_json::to_vec_pretty(status).unwrap_or_default();
        write_atomic(&path, &bytes)
    }

    /// Removes one object's status and its last applied spec (after `--prune`).
    pub fn remove(&self, name: &str) {
        if self.access == Access::ReadOnly {
            return;
        }
        let _ = fs::remove_file(self.path(name));
        let _ = fs::remove_file(self.last_applied_path(name));
    }

    fn last_applied_path(&self, name: &str) -> PathBuf {
        self.dir
            .join("objects")
            .join(format!("{name}.spec.json.last"))
    }

    /// Remembers the object last applied, so `dockop rollback NAME` works without `-f`. Mode 0600: the
    /// spec may hold password hashes. An unchanged spec is not rewritten.
    pub fn save_last_applied(&self, o: &crate::spec::Container) {
        if self.access == Access::ReadOnly {
            return;
        }
        let path = self.last_applied_path(&o.metadata.name);
        let Ok(bytes) = serde_json::to_vec(o) else {
            return;
        };
        if fs::read(&path).is_ok_and(|old| old == bytes) {
            return;
        }
        if write_atomic(&path, &bytes).is_ok() {
            use std::os::unix::fs::PermissionsExt;
            let _ = fs::set_permissions(&path, fs::Permissions::from_mode(0o600));
        }
    }

    /// The object last applied, if one was recorded.
    pub fn load_last_applied(&self, name: &str) -> Option<crate::spec::Container> {
        serde_json::from_slice(&fs::read(self.last_applied_path(name)).ok()?).ok()
    }
}

/// Reads the state directory's spec-hash key, or makes one: written 0600 to a temporary file, then
/// linked into place without replacing (two processes racing both end up with the winner's key). The key
/// must stay stable: a new key changes the hash of every object with secret values (one recreate each).
fn load_or_create_key(dir: &Path) -> Result<SpecHashKey, StoreError> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join(KEY_FILE);
    let parse = |text: &str| {
        SpecHashKey::from_file_text(text).map_err(|source| StoreError::Key {
            path: path.clone(),
            source,
        })
    };
    match fs::read_to_string(&path) {
        Ok(text) => return parse(&text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io("read", &path)(e)),
    }
    let key = SpecHashKey::generate().map_err(|source| StoreError::Key {
        path: path.clone(),
        source,
    })?;
    let tmp = dir.join(format!("{KEY_FILE}.tmp-{}", std::process::id()));
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io("create", &tmp))?;
    f.write_all(key.to_file_text().as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(io("write", &tmp))?;
    drop(f);
    let linked = fs::hard_link(&tmp, &path);
    let _ = fs::remove_file(&tmp);
    match linked {
        Ok(()) => {
            if let Ok(d) = File::open(dir) {
                let _ = d.sync_all();
            }
            Ok(key)
        }
        // Another process made it first: use theirs.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            parse(&fs::read_to_string(&path).map_err(io("read", &path))?)
        }
        Err(e) => Err(io("create", &path)(e)),
    }
}

/// A directory builder for mode 0700 (state directories hold digests, specs and password hashes).
fn private_dir() -> fs::DirBuilder {
    use std::os::unix::fs::DirBuilderExt;
    let mut b = fs::DirBuilder::new();
    b.mode(0o700);
    b
}

/// Warns (once per process) when an existing state directory may be read or written by others. Its mode
/// is left alone: it may be shared on purpose (a 1777 directory), and a read-only command changes nothing.
fn warn_if_open_to_others(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    static WARNED: std::sync::Once = std::sync::Once::new();
    let Ok(meta) = fs::metadata(dir) else {
        return;
    };
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        WARNED.call_once(|| {
            tracing::warn!(
                dir = %dir.display(),
                mode = %format!("{mode:04o}"),
                "the state directory is open to other users (it holds specs and status); fix: chmod 700 it, or give dockop its own --state-dir"
            );
        });
    }
}

/// The error for a failed I/O `action` on `path`.
fn io<'p>(action: &'static str, path: &'p Path) -> impl FnOnce(std::io::Error) -> StoreError + 'p {
    move |source| StoreError::Io {
        action,
        path: path.to_owned(),
        source,
    }
}

/// Writes `bytes` to `path` so that a reader sees the old or the new content, never a mix.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)
        .map_err(io("create", &tmp))?;
    f.write_all(bytes).map_err(io("write", &tmp))?;
    f.sync_all().map_err(io("fsync", &tmp))?;
    drop(f);
    fs::rename(&tmp, path).map_err(io("rename into place", path))?;
    if let Some(d) = path.parent().and_then(|p| File::open(p).ok()) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// The default state directory: `/var/lib/dockop` as root, else `$XDG_STATE_HOME/dockop`
/// (`~/.local/state/dockop`).
pub fn default_state_dir() -> PathBuf {
    let is_root = std::env::var("USER").map(|u| u == "root").unwrap_or(false)
        || fs::metadata("/proc/self")
            .map(|m| {
                use std::os::unix::fs::MetadataExt;
                m.uid() == 0
            })
            .unwrap_or(false);
    if is_root {
        return PathBuf::from("/var/lib/dockop");
    }
    if let Some(x) = std::env::var_os("XDG_STATE_HOME") {
        return PathBuf::from(x).join("dockop");
    }
    std::env::var_os("HOME")
        .map(|h| PathBuf::from(h).join(".local/state/dockop"))
        .unwrap_or_else(|| PathBuf::from(".dockop"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_corrupt_moved_aside() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        let mut s = ObjectStatus::new("web");
        s.record_failed("sha256:aa", "h1", "HTTP 500", Utc::now());
        store.save(&s).expect("save");
        assert_eq!(store.load("web"), s);
        fs::write(dir.path().join("objects/web.json"), b"{not json").expect("write");
        assert_eq!(store.load("web"), ObjectStatus::new("web"));
        let aside = fs::read_dir(dir.path().join("objects"))
            .expect("ls")
            .filter_map(Result::ok)
            .any(|e| e.file_name().to_string_lossy().contains("corrupt"));
        assert!(aside, "corrupt file moved aside");
    }

    #[test]
    fn spec_hash_key_is_made_once_private_by_writers_and_only_read_by_readers() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ro = Store::open_read_only(dir.path());
        assert!(ro.spec_hash_key().is_none());
        assert!(
            !dir.path().join(KEY_FILE).exists(),
            "a reader creates no key"
        );
        let w = Store::open(dir.path()).expect("open");
        let key = w.spec_hash_key().expect("a writer has a key").clone();
        assert_eq!(mode(&dir.path().join(KEY_FILE)), 0o600);
        // Stable across restarts, and shared with readers.
        let again = Store::open(dir.path()).expect("open");
        assert_eq!(again.spec_hash_key(), Some(&key));
        assert_eq!(
            Store::open_read_only(dir.path()).spec_hash_key(),
            Some(&key)
        );
        let leftovers: Vec<_> = fs::read_dir(dir.path())
            .expect("ls")
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains(".tmp-"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
        // A damaged key is refused by writers (replacing it would recreate every secret-bearing object).
        fs::write(dir.path().join(KEY_FILE), "garbage").expect("write");
        assert!(matches!(
            Store::open(dir.path()),
            Err(StoreError::Key { .. })
        ));
        assert!(Store::open_read_only(dir.path()).spec_hash_key().is_none());
    }

    fn mode(p: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        fs::metadata(p).expect("stat").permissions().mode() & 0o7777
    }

    #[test]
    fn existing_directory_keeps_its_mode_new_one_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().expect("tempdir");
        let shared = tmp.path().join("shared");
        fs::create_dir(&shared).expect("mkdir");
        fs::set_permissions(&shared, fs::Permissions::from_mode(0o1777)).expect("chmod");
        Store::open(&shared).expect("open");
        assert_eq!(
            mode(&shared),
            0o1777,
            "a writer leaves an existing mode alone"
        );
        let ro = Store::open_read_only(&shared);
        assert!(ro.list().is_empty());
        assert_eq!(mode(&shared), 0o1777);
        let fresh = tmp.path().join("a/b/state");
        Store::open(&fresh).expect("open");
        assert_eq!(mode(&fresh), 0o700);
        assert_eq!(mode(&fresh.join("objects")), 0o700);
        let missing = tmp.path().join("missing");
        assert!(Store::open_read_only(&missing).read_all().is_empty());
        assert!(!missing.exists(), "a reader creates nothing");
    }

    #[test]
    fn read_only_store_reports_corrupt_files_and_leaves_them() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        store.save(&ObjectStatus::new("good")).expect("save");
        let bad = dir.path().join("objects/bad.json");
        fs::write(&bad, b"{not json").expect("write");
        let ro = Store::open_read_only(dir.path());
        let all = ro.read_all();
        assert_eq!(all.len(), 2);
        assert!(
            matches!(&all[0], Err(StoreError::Corrupt { path, .. }) if path == &bad),
            "{all:?}"
        );
        assert_eq!(all[1].as_ref().expect("good").name, "good");
        assert_eq!(ro.load("bad"), ObjectStatus::new("bad"));
        assert!(matches!(
            ro.save(&ObjectStatus::new("bad")),
            Err(StoreError::ReadOnly { .. })
        ));
        assert_eq!(fs::read(&bad).expect("still there"), b"{not json");
        assert_eq!(
            fs::read_dir(dir.path().join("objects"))
                .expect("ls")
                .count(),
            2
        );
    }

    #[test]
    fn conditions_keep_transition_time() {
        let mut s = ObjectStatus::new("x");
        let t0 = Utc::now();
        s.set_condition(ConditionType::Ready, true, Reason::Healthy, "ok", t0);
        let t1 = t0 + chrono::Duration::seconds(5);
        s.set_condition(ConditionType::Ready, true, Reason::Healthy, "still ok", t1);
        assert_eq!(
            s.condition(ConditionType::Ready)
                .map(|c| c.last_transition_time),
            Some(t0)
        );
        s.set_condition(ConditionType::Ready, false, Reason::Unhealthy, "bad", t1);
        assert_eq!(
            s.condition(ConditionType::Ready)
                .map(|c| c.last_transition_time),
            Some(t1)
        );
    }

    #[test]
    fn history_capped() {
        let mut s = ObjectStatus::new("x");
        for i in 0..30 {
            s.record_change(Change {
                at: Utc::now(),
                action: ChangeAction::Update,
                from_digest: None,
                to_digest: None,
                result: ChangeResult::Succeeded,
                message: i.to_string(),
                seconds: 0.0,
            });
        }
        assert_eq!(s.history.len(), HISTORY_LEN);
        assert_eq!(s.history.front().map(|c| c.message.as_str()), Some("29"));
    }

    #[test]
    fn reasons_read_back_as_written_and_unknown_ones_are_kept() {
        for text in [
            "Healthy",
            "PullFailed",
            "PreflightFailed",
            "SwitchFailed",
            "WaitingForDependency",
            "FailedTarget",
        ] {
            let r: Reason = serde_json::from_str(&format!("\"{text}\"")).expect("reason");
            assert!(!matches!(r, Reason::Other(_)), "{text}");
            assert_eq!(
                serde_json::to_string(&r).expect("json"),
                format!("\"{text}\"")
            );
        }
        assert_eq!(
            Reason::parse("PreflightFailed"),
            Reason::Failed(Phase::Preflight)
        );
        assert_eq!(
            Reason::parse("SomethingNewer"),
            Reason::Other("SomethingNewer".into())
        );
        let c: ChangeResult = serde_json::from_str("\"rejected_preflight\"").expect("result");
        assert_eq!(c, ChangeResult::RejectedPreflight);
    }
}
