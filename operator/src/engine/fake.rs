//! An in-memory engine for unit tests of observe, plan, execute, the monitor and the controller:
//! containers, a registry and local images as plain data, a log of every mutating call, and failures
//! injected per operation. Compiled only into test builds (`#[cfg(test)]`): release and debug binaries
//! do not contain it.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;

use super::{
    ContainerInfo, CreateRequest, Credentials, Engine, EngineError, EventStream, ExecOutput,
    LocalImage, Op, ProgressSink, RunState,
};

/// Answers exec calls: `(container id, argv, stdin) -> output`.
pub type ExecHandler = Arc<dyn Fn(&str, &[String], Option<&[u8]>) -> ExecOutput + Send + Sync>;

/// The fake engine's whole state; tests read and change it through [`FakeEngine::state`].
#[derive(Default)]
pub struct FakeState {
    /// Containers by ID.
    pub containers: BTreeMap<String, ContainerInfo>,
    /// Create requests by container ID.
    pub requests: BTreeMap<String, CreateRequest>,
    /// Registry: image reference (tag) -> manifest digest.
    pub registry: BTreeMap<String, String>,
    /// References pulled or present locally.
    pub images: BTreeSet<String>,
    /// Volumes.
    pub volumes: BTreeSet<String>,
    /// Networks.
    pub networks: BTreeSet<String>,
    /// Every mutating call, e.g. `create web`, `stop web`, `rename web -> web-previous`.
    pub calls: Vec<String>,
    /// Errors returned by the next calls of an operation, in order.
    pub failures: BTreeMap<Op, VecDeque<EngineError>>,
    /// State a started container enters (default running); per image reference.
    pub start_state: BTreeMap<String, RunState>,
    /// Exec answers; default: exit 0, no output.
    pub exec: Option<ExecHandler>,
    /// Every call so far (mutating or not, failed or not), counted per operation.
    pub ops: BTreeMap<Op, u64>,
    next_id: u64,
}

impl std::fmt::Debug for FakeState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeState")
            .field("containers", &self.containers)
            .field("calls", &self.calls)
            .finish_non_exhaustive()
    }
}

/// The fake engine.
#[derive(Debug, Default, Clone)]
pub struct FakeEngine {
    state: Arc<Mutex<FakeState>>,
}

impl FakeEngine {
    /// An empty engine.
    pub fn new() -> Self {
        Self::default()
    }

    /// The state, for arranging and asserting.
    pub fn state(&self) -> MutexGuard<'_, FakeState> {
        match self.state.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Publishes `digest` for `tag` in the fake registry.
    pub fn push(&self, tag: &str, digest: &str) {
        self.state()
            .registry
            .insert(tag.to_owned(), digest.to_owned());
    }

    /// Makes the next call of `op` fail with `err`.
    pub fn fail_next(&self, op: Op, err: EngineError) {
        self.state().failures.entry(op).or_default().push_back(err);
    }

    /// The mutating calls so far, then clears the log.
    pub fn take_calls(&self) -> Vec<String> {
        std::mem::take(&mut self.state().calls)
    }

    /// Container by name.
    pub fn by_name(&self, name: &str) -> Option<ContainerInfo> {
        self.state()
            .containers
            .values()
            .find(|c| c.name == name)
            .cloned()
    }

    /// How many calls of `op` were made so far.
    pub fn count(&self, op: Op) -> u64 {
        self.state().ops.get(&op).copied().unwrap_or(0)
    }

    fn check(&self, op: Op) -> Result<MutexGuard<'_, FakeState>, EngineError> {
        let mut s = self.state();
        *s.ops.entry(op).or_default() += 1;
        if let Some(e) = s.failures.get_mut(&op).and_then(VecDeque::pop_front) {
            return Err(e);
        }
        Ok(s)
    }
}

fn resolve<'a>(s: &'a mut FakeState, id_or_name: &str) -> Option<&'a mut ContainerInfo> {
    let key = s
        .containers
        .iter()
        .find(|(id, c)| *id == id_or_name || c.name == id_or_name)
        .map(|(id, _)| id.clone())?;
    s.containers.get_mut(&key)
}

fn not_found(op: Op, what: &str) -> EngineError {
    EngineError::NotFound {
        op,
        message: format!("no such container: {what}"),
    }
}

#[async_trait]
impl Engine for FakeEngine {
    async fn ping(&self) -> Result<(), EngineError> {
        self.check(Op::Ping).map(|_| ())
    }

    async fn list_managed(&self) -> Result<Vec<ContainerInfo>, EngineError> {
        let s = self.check(Op::List)?;
        Ok(s.containers
            .values()
            .filter(|c| c.labels.contains_key(super::LABEL_NAME))
            .cloned()
            .collect())
    }

    async fn list_brief(&self) -> Result<Vec<ContainerInfo>, EngineError> {
        let s = self.check(Op::List)?;
        Ok(s.containers
            .values()
            .filter(|c| c.labels.contains_key(super::LABEL_NAME))
            .map(|c| ContainerInfo {
                started_at: None,
                exit_code: 0,
                oom_killed: false,
                ..c.clone()
            })
            .collect())
    }

    async fn inspect(&self, id_or_name: &str) -> Result<Option<ContainerInfo>, EngineError> {
        let mut s = self.check(Op::Inspect)?;
        Ok(resolve(&mut s, id_or_name).cloned())
    }

    async fn registry_digest(
        &self,
        image: &str,
        _auth: Option<&Credentials>,
    ) -> Result<String, EngineError> {
        let s = self.check(Op::RegistryDigest)?;
        s.registry
            .get(image)
            .cloned()
            .ok_or_else(|| EngineError::NotFound {
                op: Op::RegistryDigest,
                message: format!("manifest unknown: {image}"),
            })
    }

    async fn local_image(&self, reference: &str) -> Result<Option<LocalImage>, EngineError> {
        let s = self.check(Op::ImageInspect)?;
        Ok(s.images.contains(reference).then(|| LocalImage {
            id: format!("img-{reference}"),
            repo_digests: vec![reference.to_owned()],
        }))
    }

    async fn pull(
        &self,
        reference: &str,
        _auth: Option<&Credentials>,
        _progress: ProgressSink<'_>,
    ) -> Result<(), EngineError> {
        let mut s = self.check(Op::Pull)?;
        s.calls.push(format!("pull {reference}"));
        s.images.insert(reference.to_owned());
        Ok(())
    }

    async fn ensure_volume(
        &self,
        name: &str,
        _labels: &BTreeMap<String, String>,
    ) -> Result<(), EngineError> {
        let mut s = self.check(Op::VolumeCreate)?;
        if s.volumes.insert(name.to_owned()) {
            s.calls.push(format!("volume {name}"));
        }
        Ok(())
    }

    async fn ensure_network(&self, name: &str) -> Result<(), EngineError> {
        let mut s = self.check(Op::NetworkCreate)?;
        if s.networks.insert(name.to_owned()) {
            s.calls.push(format!("network {name}"));
        }
        Ok(())
    }

    async fn create(&self, req: &CreateRequest) -> Result<String, EngineError> {
        let mut s = self.check(Op::Create)?;
        if let Some(n) = req
            .host
            .networks
            .iter()
            .find(|n| !s.networks.contains(&n.name))
        {
            return Err(EngineError::NotFound {
                op: Op::Create,
                message: format!("network {} not found", n.name),
            });
        }
        if s.containers.values().any(|c| c.name == req.name) {
            return Err(EngineError::Conflict {
                op: Op::Create,
                message: format!("name {} in use", req.name),
            });
        }
        if !s.images.contains(&req.image) {
            return Err(EngineError::NotFound {
                op: Op::Create,
                message: format!("no such image: {}", req.image),
            });
        }
        s.next_id += 1;
        let id = format!("c{:03}", s.next_id);
        s.calls.push(format!("create {}", req.name));
        let info = ContainerInfo {
            id: id.clone(),
            name: req.name.clone(),
            labels: req.labels.clone(),
            state: RunState::Created,
            exit_code: 0,
            oom_killed: false,
            started_at: None,
            image_id: format!("img-{}", req.image),
            ip_address: None,
            engine_host: None,
        };
        s.containers.insert(id.clone(), info);
        s.requests.insert(id.clone(), req.clone());
        Ok(id)
    }

    async fn start(&self, id: &str) -> Result<(), EngineError> {
        let mut s = self.check(Op::Start)?;
        let image = s
            .requests
            .get(id)
            .map(|r| r.image.clone())
            .unwrap_or_default();
        let target = s
            .start_state
            .get(&image)
            .copied()
            .unwrap_or(RunState::Running);
        let n = s.next_id;
        let c = resolve(&mut s, id).ok_or_else(|| not_found(Op::Start, id))?;
        c.state = target;
        c.exit_code = if target == RunState::Exited { 1 } else { 0 };
        c.started_at = Some(format!("2026-01-01T00:00:{:02}Z", n % 60));
        c.ip_address = Some("127.0.0.1".into());
        let name = c.name.clone();
        s.calls.push(format!("start {name}"));
        Ok(())
    }

    async fn stop(&self, id: &str, _timeout_secs: u32) -> Result<(), EngineError> {
        let mut s = self.check(Op::Stop)?;
        let Some(c) = resolve(&mut s, id) else {
            return Ok(());
        };
        c.state = RunState::Exited;
        let name = c.name.clone();
        s.calls.push(format!("stop {name}"));
        Ok(())
    }

    async fn rename(&self, id: &str, new_name: &str) -> Result<(), EngineError> {
        let mut s = self.check(Op::Rename)?;
        if s.containers.values().any(|c| c.name == new_name) {
            return Err(EngineError::Conflict {
                op: Op::Rename,
                message: format!("name {new_name} in use"),
            });
        }
        let c = resolve(&mut s, id).ok_or_else(|| not_found(Op::Rename, id))?;
        let old = std::mem::replace(&mut c.name, new_name.to_owned());
        s.calls.push(format!("rename {old} -> {new_name}"));
        Ok(())
    }

    async fn remove(&self, id: &str, _volumes: bool) -> Result<(), EngineError> {
        let mut s = self.check(Op::Remove)?;
        let Some(c) = resolve(&mut s, id).cloned() else {
            return Ok(());
        };
        s.containers.remove(&c.id);
        s.calls.push(format!("remove {}", c.name));
        Ok(())
    }

    async fn exec(
        &self,
        id: &str,
        cmd: &[String],
        stdin: Option<&[u8]>,
    ) -> Result<ExecOutput, EngineError> {
        let mut s = self.check(Op::Exec)?;
        let c = resolve(&mut s, id).ok_or_else(|| not_found(Op::Exec, id))?;
        let cid = c.id.clone();
        s.calls.push(format!(
            "exec {}",
            cmd.first().map(String::as_str).unwrap_or_default()
        ));
        let handler = s.exec.clone();
        drop(s);
        Ok(handler.map(|h| h(&cid, cmd, stdin)).unwrap_or_default())
    }

    async fn logs_tail(&self, _id: &str, _lines: usize) -> Result<String, EngineError> {
        self.check(Op::Logs).map(|_| String::new())
    }

    async fn memory_usage(&self, _id: &str) -> Result<Option<u64>, EngineError> {
        self.check(Op::Stats).map(|_| Some(10 * 1024 * 1024))
    }

    fn events(&self) -> EventStream {
        Box::pin(futures_util::stream::pending())
    }
}
