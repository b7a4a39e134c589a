//! The file source: `-f FILE|DIR` (one or more). Watches the parent directory of each file and each
//! directory itself (editors save by rename; Kubernetes ConfigMaps swap a `..data` symlink), acts only when
//! the bytes change (the revision is a short hash of them), and keeps the last valid version of the
//! objects of a file that turns invalid.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::event::{AccessKind, AccessMode};
use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use super::{DesiredState, count_invalid, files_label, log_diagnostics, summarize};
use crate::spec::load::{Loaded, SourcedObject, load_paths};
use crate::telemetry::Metrics;

/// The file source. [`FileSource::scan`] is the pure-ish step; [`FileSource::run`] drives it.
#[derive(Debug)]
pub struct FileSource {
    paths: Vec<PathBuf>,
    label: String,
    debounce: Duration,
    last_hash: Option<String>,
    in_force: Vec<SourcedObject>,
    metrics: Arc<Metrics>,
}

impl FileSource {
    /// A source over `paths`; filesystem events are debounced by `debounce`; refused inputs are counted
    /// in `metrics`.
    pub fn new(paths: Vec<PathBuf>, debounce: Duration, metrics: Arc<Metrics>) -> Self {
        Self {
            label: files_label(&paths),
            paths,
            debounce,
            last_hash: None,
            in_force: Vec::new(),
            metrics,
        }
    }

    /// The `source` metric label.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// Reads the files. `Some` when their content changed since the last scan (always on the first).
    pub fn scan(&mut self) -> Option<DesiredState> {
        let hash = content_hash(&self.paths);
        if self.last_hash.as_deref() == Some(hash.as_str()) {
            return None;
        }
        let loaded = load_paths(&self.paths);
        log_diagnostics(&self.label, &hash, &loaded.diagnostics);
        let state = self.merge(&loaded, &hash);
        if !state.complete {
            count_invalid(&self.metrics, &self.label);
            tracing::warn!(
                source = %self.label,
                revision = %hash,
                held = state.invalid.len(),
                "desired state has errors: the objects of the invalid files keep their last valid version"
            );
        }
        self.last_hash = Some(hash);
        Some(state)
    }

    /// Builds what is in force from a load: objects of valid files as loaded, objects of invalid files at
    /// their last valid version.
    fn merge(&mut self, loaded: &Loaded, hash: &str) -> DesiredState {
        let bad: BTreeSet<&Path> = loaded.errors().map(|d| d.file.as_path()).collect();
        let is_bad = |file: &Path| bad.iter().any(|b| file.starts_with(b));
        let mut names = BTreeSet::new();
        let mut objects = Vec::new();
        let mut invalid = BTreeMap::new();
        for o in &loaded.objects {
            if !is_bad(&o.file) && names.insert(o.object.metadata.name.clone()) {
                objects.push(o.clone());
            }
        }
        for o in &self.in_force {
            if is_bad(&o.file) && names.insert(o.object.metadata.name.clone()) {
                let errors = summarize(
                    loaded
                        .errors()
                        .filter(|d| o.file.starts_with(&d.file) || d.file == o.file),
                );
                invalid.insert(o.object.metadata.name.clone(), errors);
                objects.push(o.clone());
            }
        }
        self.in_force = objects;
        DesiredState {
            revision: hash.to_owned(),
            objects: self.in_force.iter().map(|o| o.object.clone()).collect(),
            invalid,
            complete: bad.is_empty(),
        }
    }

    /// Watches, rescans on change or on `rescan`, and sends every new state to `tx` until `tx` closes.
    pub async fn run(
        mut self,
        tx: mpsc::Sender<DesiredState>,
        mut rescan: mpsc::UnboundedReceiver<()>,
    ) {
        let (fs_tx, mut fs_rx) = mpsc::unbounded_channel::<()>();
        let _watcher = self.watch(fs_tx);
        loop {
            // Reading and validating is blocking work (a hostile file may be 1 MiB of bad keys): off the
            // runtime, so /livez and the controller never wait on it.
            let scanned = tokio::task::spawn_blocking(move || {
                let state = self.scan();
                (self, state)
            })
            .await;
            let Ok((me, state)) = scanned else {
                tracing::error!("the file source's scan failed; it stops");
                return;
            };
            self = me;
            if let Some(state) = state
                && tx.send(state).await.is_err()
            {
                return;
            }
            tokio::select! {
                got = fs_rx.recv() => {
                    if got.is_none() {
                        // No watcher: rescans only.
                        if rescan.recv().await.is_none() { return; }
                        continue;
                    }
                    // Editors write several events per save: wait for quiet, then read once.
                    tokio::time::sleep(self.debounce).await;
                    while fs_rx.try_recv().is_ok() {}
                }
                got = rescan.recv() => if got.is_none() { return },
            }
        }
    }

    /// Starts the watcher; `None` (logged) when it cannot: resyncs still rescan.
    fn watch(&self, tx: mpsc::UnboundedSender<()>) -> Option<RecommendedWatcher> {
        let handler = move |res: notify::Result<notify::Event>| {
            if let Ok(ev) = res
                && relevant(&ev.kind)
            {
                let _ = tx.send(());
            }
        };
        let mut watcher = match notify::recommended_watcher(handler) {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch files; changes are seen at the next resync only");
                return None;
            }
        };
        for dir in watch_dirs(&self.paths) {
            if let Err(e) = watcher.watch(&dir, RecursiveMode::NonRecursive) {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot watch directory; changes are seen at the next resync only");
            }
        }
        Some(watcher)
    }
}

/// Filesystem events that may change content (not our own reads).
fn relevant(kind: &EventKind) -> bool {
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        _ => true,
    }
}

/// The directories to watch: each directory given, and the parent of each file given.
fn watch_dirs(paths: &[PathBuf]) -> BTreeSet<PathBuf> {
    paths
        .iter()
        .map(|p| {
            if p.is_dir() {
                p.clone()
            } else {
                match p.parent() {
                    Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
                    _ => PathBuf::from("."),
                }
            }
        })
        .collect()
}

/// The files `paths` name (directories expanded to `*.yaml`/`*.yml`, sorted), as the loader sees them.
fn expand(paths: &[PathBuf]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(p)
                .map(|rd| {
                    rd.filter_map(Result::ok)
                        .map(|e| e.path())
                        .filter(|f| {
                            matches!(f.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"))
                                && f.is_file()
                        })
                        .collect()
                })
                .unwrap_or_default();
            found.sort();
            out.extend(found);
        } else {
            out.push(p.clone());
        }
    }
    out
}

/// Short hash of every file's path and bytes (a read error counts as content, so it changes the hash).
fn content_hash(paths: &[PathBuf]) -> String {
    let mut h = Sha256::new();
    for f in expand(paths) {
        h.update(f.as_os_str().as_encoded_bytes());
        h.update([0]);
        match std::fs::read(&f) {
            Ok(bytes) => h.update(&bytes),
            Err(e) => h.update(format!("error: {}", e.kind()).as_bytes()),
        }
        h.update([0]);
    }
    hex::encode(h.finalize()).chars().take(12).collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn obj(name: &str, image: &str, port: u16) -> String {
        crate::testing::object(name)
            .image(image)
            .ports(&[(8080, port)])
            .yaml()
    }

    fn names(s: &DesiredState) -> Vec<String> {
        s.objects.iter().map(|o| o.metadata.name.clone()).collect()
    }

    #[test]
    fn acts_only_on_content_change() {
        let dir = tempfile::tempdir().expect("tmp");
        let f = dir.path().join("a.yaml");
        std::fs::write(&f, obj("web", "127.0.0.1:5000/web:v1", 18080)).expect("write");
        let mut src = FileSource::new(vec![f.clone()], Duration::from_millis(10), Arc::default());
        let first = src.scan().expect("first scan");
        assert!(first.is_valid());
        assert_eq!(names(&first), vec!["web"]);
        assert_eq!(first.revision.len(), 12);
        assert!(src.scan().is_none(), "same bytes: nothing to do");
        // Rename-over save with the same content: still nothing.
        let tmp = dir.path().join(".a.yaml.swp");
        std::fs::write(&tmp, obj("web", "127.0.0.1:5000/web:v1", 18080)).expect("write");
        std::fs::rename(&tmp, &f).expect("rename");
        assert!(src.scan().is_none());
        std::fs::write(&f, obj("web", "127.0.0.1:5000/web:v2", 18080)).expect("write");
        let second = src.scan().expect("changed");
        assert_ne!(second.revision, first.revision);
        assert_eq!(second.objects[0].spec.image, "127.0.0.1:5000/web:v2");
    }

    #[test]
    fn invalid_file_keeps_its_objects_at_the_last_valid_version() {
        let dir = tempfile::tempdir().expect("tmp");
        let a = dir.path().join("a.yaml");
        let b = dir.path().join("b.yaml");
        std::fs::write(
            &a,
            format!(
                "{}---\n{}",
                obj("one", "127.0.0.1:5000/web:v1", 18081),
                obj("two", "127.0.0.1:5000/web:v1", 18082)
            ),
        )
        .expect("write");
        std::fs::write(&b, obj("three", "127.0.0.1:5000/web:v1", 18083)).expect("write");
        let mut src = FileSource::new(
            vec![dir.path().to_path_buf()],
            Duration::from_millis(10),
            Arc::default(),
        );
        let s = src.scan().expect("scan");
        assert_eq!(names(&s), vec!["one", "two", "three"]);
        // Break a.yaml, change b.yaml: b applies, a's objects stay at v1 and are reported.
        std::fs::write(&a, "apiVersion: dockop.dev/v1alpha1\nkind: Container\nmetadata:\n  name: one\nspec:\n  imagee: x\n").expect("write");
        std::fs::write(&b, obj("three", "127.0.0.1:5000/web:v2", 18083)).expect("write");
        let s = src.scan().expect("scan");
        assert!(!s.complete);
        let mut n = names(&s);
        n.sort();
        assert_eq!(n, vec!["one", "three", "two"]);
        assert_eq!(
            s.invalid.keys().cloned().collect::<Vec<_>>(),
            vec!["one", "two"]
        );
        let msg = &s.invalid["one"];
        assert!(msg.contains("a.yaml:"), "file:line:col in {msg}");
        let three = s
            .objects
            .iter()
            .find(|o| o.metadata.name == "three")
            .expect("three");
        assert_eq!(three.spec.image, "127.0.0.1:5000/web:v2");
        // Fixed: everything valid again, `two` removed for real.
        std::fs::write(&a, obj("one", "127.0.0.1:5000/web:v3", 18081)).expect("write");
        let s = src.scan().expect("scan");
        assert!(s.is_valid());
        assert_eq!(names(&s), vec!["one", "three"]);
    }

    #[test]
    fn missing_file_is_not_a_deletion() {
        let dir = tempfile::tempdir().expect("tmp");
        let f = dir.path().join("a.yaml");
        std::fs::write(&f, obj("web", "127.0.0.1:5000/web:v1", 18080)).expect("write");
        let mut src = FileSource::new(vec![f.clone()], Duration::from_millis(10), Arc::default());
        src.scan().expect("scan");
        std::fs::remove_file(&f).expect("rm");
        let s = src.scan().expect("scan");
        assert!(!s.complete);
        assert_eq!(names(&s), vec!["web"]);
    }

    #[tokio::test]
    async fn watcher_sees_rename_saves() {
        let dir = tempfile::tempdir().expect("tmp");
        let f = dir.path().join("a.yaml");
        std::fs::write(&f, obj("web", "127.0.0.1:5000/web:v1", 18080)).expect("write");
        let (tx, mut rx) = mpsc::channel(4);
        let (_rescan_tx, rescan_rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(
            FileSource::new(vec![f.clone()], Duration::from_millis(20), Arc::default())
                .run(tx, rescan_rx),
        );
        let first = rx.recv().await.expect("first");
        assert_eq!(first.objects[0].spec.image, "127.0.0.1:5000/web:v1");
        let tmp = dir.path().join("a.yaml~");
        std::fs::write(&tmp, obj("web", "127.0.0.1:5000/web:v2", 18080)).expect("write");
        std::fs::rename(&tmp, &f).expect("rename");
        let next = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("seen within 5 s")
            .expect("state");
        assert_eq!(next.objects[0].spec.image, "127.0.0.1:5000/web:v2");
        task.abort();
    }
}
