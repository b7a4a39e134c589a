//! Ownership between dockop instances sharing one engine: the `dockop.dev/instance` label, the
//! [`Instance`] a process runs as, and [`ScopedEngine`], the engine as one instance sees it.
//!
//! Every container and named volume an instance creates carries [`LABEL_INSTANCE`] with its name, and every
//! list and event stream it reads is cut down to the containers it owns: those carrying its own name and,
//! for the default instance (named after the host) only, those made by an older dockop that set no
//! instance label at all. `inspect` stays unscoped so that a container holding a wanted name for another
//! instance is seen and reported (never touched), see [`crate::observe`].

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use futures_util::StreamExt;

use super::{
    ContainerInfo, CreateRequest, Credentials, Engine, EngineError, EventStream, ExecOutput,
    LocalImage, ProgressSink,
};

/// Label naming the dockop instance that owns a container or volume.
pub const LABEL_INSTANCE: &str = "dockop.dev/instance";

/// Longest instance name (a Kubernetes label value).
const MAX_LEN: usize = 63;

/// Why an instance name cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InstanceError {
    /// `--instance` is not a valid label value.
    #[error(
        "--instance {name:?} is not a valid label value: at most 63 characters of [A-Za-z0-9._-], starting and ending with a letter or digit"
    )]
    Invalid {
        /// The name given.
        name: String,
    },
    /// No `--instance` and the host name cannot serve as the default.
    #[error(
        "the host name {name:?} cannot be the default instance name (read from {source_path}); pass --instance NAME"
    )]
    BadHostName {
        /// What was read.
        name: String,
        /// Where it was read from.
        source_path: String,
    },
}

/// The instance this process runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    name: String,
    default: bool,
}

impl Instance {
    /// An instance named `name`; `default` when it is the host's default instance (the only one that
    /// adopts containers without an instance label).
    pub fn new(name: &str, default: bool) -> Result<Self, InstanceError> {
        if !is_label_value(name) {
            return Err(InstanceError::Invalid {
                name: name.to_owned(),
            });
        }
        Ok(Self {
            name: name.to_owned(),
            default,
        })
    }

    /// Resolves `--instance` (blocking: reads the host name). Without a flag, or with a flag equal to the
    /// host name, this is the default instance.
    pub fn resolve(flag: Option<&str>) -> Result<Self, InstanceError> {
        let host = host_name();
        match flag {
            Some(name) => {
                let default = host.as_ref().is_some_and(|(h, _)| h == name);
                Self::new(name, default)
            }
            None => match host {
                Some((h, path)) => Self::new(&h, true).map_err(|_| InstanceError::BadHostName {
                    name: h,
                    source_path: path.to_owned(),
                }),
                None => Err(InstanceError::BadHostName {
                    name: String::new(),
                    source_path: "/etc/hostname and /proc/sys/kernel/hostname".to_owned(),
                }),
            },
        }
    }

    /// The name, as written in [`LABEL_INSTANCE`].
    pub fn name(&self) -> &str {
        &self.name
    }

    /// True for the host's default instance.
    pub fn is_default(&self) -> bool {
        self.default
    }

    /// True when this instance owns `c`: its label names this instance, or it has none and this is the
    /// default instance.
    pub fn owns(&self, c: &ContainerInfo) -> bool {
        self.owns_labels(&c.labels)
    }

    fn owns_labels(&self, labels: &BTreeMap<String, String>) -> bool {
        match labels.get(LABEL_INSTANCE) {
            Some(i) => *i == self.name,
            None => self.default,
        }
    }
}

/// The host name as `uname -n` gives it: `/etc/hostname`, else the kernel's; with the file it came from.
fn host_name() -> Option<(String, &'static str)> {
    ["/etc/hostname", "/proc/sys/kernel/hostname"]
        .into_iter()
        .find_map(|p| {
            let s = std::fs::read_to_string(Path::new(p)).ok()?;
            let s = s.trim();
            (!s.is_empty()).then(|| (s.to_owned(), p))
        })
}

/// A Kubernetes label value: at most 63 of `[A-Za-z0-9._-]`, alphanumeric at both ends; not empty here.
pub fn is_label_value(s: &str) -> bool {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    !s.is_empty()
        && s.len() <= MAX_LEN
        && s.chars().all(ok_char)
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.ends_with(|c: char| c.is_ascii_alphanumeric())
}

/// The engine as one instance sees it: lists and events cut down to what it owns, creations labelled.
#[derive(Debug, Clone)]
pub struct ScopedEngine {
    inner: Arc<dyn Engine>,
    instance: Instance,
}

impl ScopedEngine {
    /// Wraps `inner` for `instance`.
    pub fn new(inner: Arc<dyn Engine>, instance: Instance) -> Self {
        Self { inner, instance }
    }

    /// The instance.
    pub fn instance(&self) -> &Instance {
        &self.instance
    }

    fn labelled(&self, labels: &BTreeMap<String, String>) -> BTreeMap<String, String> {
        let mut l = labels.clone();
        l.insert(LABEL_INSTANCE.to_owned(), self.instance.name.clone());
        l
    }
}

#[async_trait]
impl Engine for ScopedEngine {
    async fn ping(&self) -> Result<(), EngineError> {
        self.inner.ping().await
    }
    async fn list_managed(&self) -> Result<Vec<ContainerInfo>, EngineError> {
        let mut all = self.inner.list_managed().await?;
        all.retain(|c| self.instance.owns(c));
        Ok(all)
    }
    async fn list_brief(&self) -> Result<Vec<ContainerInfo>, EngineError> {
        let mut all = self.inner.list_brief().await?;
        all.retain(|c| self.instance.owns(c));
        Ok(all)
    }
    async fn inspect(&self, id_or_name: &str) -> Result<Option<ContainerInfo>, EngineError> {
        self.inner.inspect(id_or_name).await
    }
    async fn registry_digest(
        &self,
        image: &str,
        auth: Option<&Credentials>,
    ) -> Result<String, EngineError> {
        self.inner.registry_digest(image, auth).await
    }
    async fn local_image(&self, reference: &str) -> Result<Option<LocalImage>, EngineError> {
        self.inner.local_image(reference).await
    }
    async fn pull(
        &self,
        reference: &str,
        auth: Option<&Credentials>,
        progress: ProgressSink<'_>,
    ) -> Result<(), EngineError> {
        self.inner.pull(reference, auth, progress).await
    }
    async fn ensure_volume(
        &self,
        name: &str,
        labels: &BTreeMap<String, String>,
    ) -> Result<(), EngineError> {
        self.inner.ensure_volume(name, &self.labelled(labels)).await
    }
    async fn ensure_network(&self, name: &str) -> Result<(), EngineError> {
        // Networks are shared between instances (two stacks may join one network): never scoped, and
        // dockop never removes them.
        self.inner.ensure_network(name).await
    }
    async fn create(&self, req: &CreateRequest) -> Result<String, EngineError> {
        let mut req = req.clone();
        req.labels = self.labelled(&req.labels);
        self.inner.create(&req).await
    }
    async fn start(&self, id: &str) -> Result<(), EngineError> {
        self.inner.start(id).await
    }
    async fn stop(&self, id: &str, timeout_secs: u32) -> Result<(), EngineError> {
        self.inner.stop(id, timeout_secs).await
    }
    async fn rename(&self, id: &str, new_name: &str) -> Result<(), EngineError> {
        self.inner.rename(id, new_name).await
    }
    async fn remove(&self, id: &str, volumes: bool) -> Result<(), EngineError> {
        self.inner.remove(id, volumes).await
    }
    async fn exec(
        &self,
        id: &str,
        cmd: &[String],
        stdin: Option<&[u8]>,
    ) -> Result<ExecOutput, EngineError> {
        self.inner.exec(id, cmd, stdin).await
    }
    async fn logs_tail(&self, id: &str, lines: usize) -> Result<String, EngineError> {
        self.inner.logs_tail(id, lines).await
    }
    async fn memory_usage(&self, id: &str) -> Result<Option<u64>, EngineError> {
        self.inner.memory_usage(id).await
    }
    fn events(&self) -> EventStream {
        let instance = self.instance.clone();
        Box::pin(self.inner.events().filter(move |ev| {
            let keep = match ev {
                Ok(e) => match &e.instance {
                    Some(i) => *i == instance.name,
                    None => instance.default,
                },
                Err(_) => true,
            };
            std::future::ready(keep)
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::LABEL_NAME;
    use crate::engine::fake::FakeEngine;
    use crate::testing::{engine_with, info};

    /// A running container of object `name`, labelled for `instance` when given.
    fn container(id: &str, name: &str, instance: Option<&str>) -> ContainerInfo {
        info(id, name).instance(instance).build()
    }

    fn names(cs: &[ContainerInfo]) -> Vec<&str> {
        cs.iter().map(|c| c.name.as_str()).collect()
    }

    #[test]
    fn label_values() {
        for ok in ["a", "host-1", "web.example.com", "A_b-9"] {
            assert!(is_label_value(ok), "{ok}");
        }
        for bad in ["", "-a", "a-", "a b", "a/b", &"x".repeat(64)] {
            assert!(!is_label_value(bad), "{bad}");
        }
        assert!(matches!(
            Instance::new("bad name", false),
            Err(InstanceError::Invalid { .. })
        ));
    }

    #[tokio::test]
    async fn an_instance_lists_only_its_own_and_the_default_adopts_unlabelled() {
        let fake = engine_with(&[
            container("1", "mine", Some("a")),
            container("2", "theirs", Some("b")),
            container("3", "legacy", None),
        ]);
        let inner: Arc<dyn Engine> = Arc::new(fake.clone());
        let a = ScopedEngine::new(inner.clone(), Instance::new("a", false).expect("a"));
        let listed = a.list_managed().await.expect("list");
        assert_eq!(names(&listed), ["mine"]);
        assert_eq!(names(&a.list_brief().await.expect("brief")), ["mine"]);

        let host = ScopedEngine::new(inner.clone(), Instance::new("host", true).expect("host"));
        assert_eq!(names(&host.list_managed().await.expect("list")), ["legacy"]);

        let b = ScopedEngine::new(inner, Instance::new("b", true).expect("b"));
        assert_eq!(
            names(&b.list_managed().await.expect("list")),
            ["theirs", "legacy"]
        );
    }

    #[tokio::test]
    async fn creations_carry_the_instance_label() {
        let fake = FakeEngine::new();
        fake.state().images.insert("img@sha256:1".to_owned());
        let e = ScopedEngine::new(
            Arc::new(fake.clone()),
            Instance::new("a", false).expect("a"),
        );
        let req = crate::engine::CreateRequest {
            name: "web".into(),
            image: "img@sha256:1".into(),
            labels: BTreeMap::from([(LABEL_NAME.to_owned(), "web".to_owned())]),
            env: vec![],
            cmd: None,
            entrypoint: None,
            user: None,
            working_dir: None,
            exposed: vec![],
            ports: vec![],
            mounts: vec![],
            init: true,
            stop_timeout: 10,
            restart: "no".into(),
            host: Default::default(),
        };
        e.create(&req).await.expect("create");
        let c = fake.by_name("web").expect("created");
        assert_eq!(c.label(LABEL_INSTANCE), Some("a"));
    }
}
