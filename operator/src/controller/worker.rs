//! One unit of per-object work, as the queue hands it out: reconcile a desired object, mark an object
//! that left the source `Orphaned`, or prune it. Also the shared engine snapshot that lets a resync of
//! many objects cost one container list instead of one per object.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chrono::Utc;
use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::engine::{ContainerInfo, Engine, EngineError, LABEL_NAME};
use crate::execute::Reporter;
use crate::reconcile::{Ctx, Options, ReconcileError, Report, reconcile};
use crate::spec::Container;
use crate::status::{ConditionType, Reason, Store};

/// What to do for one object.
#[derive(Debug, Clone)]
pub enum Job {
    /// Reconcile it towards `object`.
    Reconcile {
        /// The desired object.
        object: Arc<Container>,
        /// Source revision.
        revision: Option<String>,
        /// The errors of its input, when it is held at its last valid version.
        invalid: Option<String>,
    },
    /// It left the source: report it, leave it running.
    Orphan {
        /// Source revision without it.
        revision: Option<String>,
    },
    /// It left the source and `--prune` is on: remove its containers (never volumes) and its status.
    Prune,
    /// A dependency (`dependsOn`) is not Ready: say so in its status (Progressing, WaitingForDependency)
    /// and change nothing.
    Wait {
        /// The dependency waited for.
        dependency: String,
    },
}

/// How a job ended.
#[derive(Debug)]
pub enum JobResult {
    /// A reconcile ran.
    Reconciled(Box<Report>),
    /// A reconcile could not even plan.
    Failed(ReconcileError),
    /// Marked orphaned.
    Orphaned,
    /// Containers and status removed.
    Pruned {
        /// Containers removed.
        removed: usize,
    },
    /// Pruning failed part-way (retried).
    PruneFailed(EngineError),
    /// Held back until its dependencies are Ready.
    Waiting,
}

/// Progress lines of the executor go to debug: the controller logs one line per change.
#[derive(Debug, Default)]
pub struct QuietReporter;

impl Reporter for QuietReporter {
    fn line(&self, name: &str, text: &str) {
        tracing::debug!(object = name, "{text}");
    }
}

#[derive(Debug)]
struct Snap {
    at: Instant,
    epoch: u64,
    all: Arc<Vec<ContainerInfo>>,
}

/// A shared `list_managed` result. Reused for an object when taken after the object was last touched (by
/// our own change or an engine event) and younger than `max_age`; otherwise refreshed, once for every
/// job waiting on it.
#[derive(Debug)]
pub struct Snapshots {
    engine: Arc<dyn Engine>,
    cell: Mutex<Option<Snap>>,
    epoch: AtomicU64,
    max_age: Duration,
}

impl Snapshots {
    /// Snapshots of `engine`'s managed containers.
    pub fn new(engine: Arc<dyn Engine>, max_age: Duration) -> Self {
        Self {
            engine,
            cell: Mutex::new(None),
            epoch: AtomicU64::new(0),
            max_age,
        }
    }

    /// A list valid for an object last touched at `touched`.
    pub async fn get(
        &self,
        touched: Option<Instant>,
    ) -> Result<Arc<Vec<ContainerInfo>>, EngineError> {
        let mut cell = self.cell.lock().await;
        let epoch = self.epoch.load(Ordering::Acquire);
        if let Some(s) = cell.as_ref()
            && s.epoch == epoch
            && s.at.elapsed() < self.max_age
            && touched.is_none_or(|t| s.at > t)
        {
            return Ok(s.all.clone());
        }
        let at = Instant::now();
        let all = Arc::new(self.engine.list_managed().await?);
        *cell = Some(Snap {
            at,
            epoch,
            all: all.clone(),
        });
        Ok(all)
    }

    /// Drops the cached list (every managed container's inspect data) once it is too old to be used
    /// again, unless a job holds the cache right now.
    pub fn release_expired(&self) {
        if let Ok(mut cell) = self.cell.try_lock()
            && cell
                .as_ref()
                .is_some_and(|s| s.at.elapsed() >= self.max_age)
        {
            *cell = None;
        }
    }

    /// Forgets the snapshot (after an engine reconnect).
    pub fn invalidate(&self) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
    }
}

/// Runs jobs.
#[derive(Debug)]
pub struct Worker {
    ctx: Ctx,
    snapshots: Snapshots,
}

impl Worker {
    /// A worker over `ctx`.
    pub fn new(ctx: Ctx, snapshot_max_age: Duration) -> Self {
        Self {
            snapshots: Snapshots::new(ctx.engine.clone(), snapshot_max_age),
            ctx,
        }
    }

    /// The snapshot cache.
    pub fn snapshots(&self) -> &Snapshots {
        &self.snapshots
    }

    /// Runs one job for `name`, last touched at `touched`.
    pub async fn run(&self, name: &str, job: Job, touched: Option<Instant>) -> JobResult {
        match job {
            Job::Reconcile {
                object,
                revision,
                invalid,
            } => self.reconcile(&object, revision, invalid, touched).await,
            Job::Orphan { revision } => {
                mark(
                    &self.ctx.store,
                    name,
                    Reason::Orphaned,
                    &format!(
                        "no longer in the source{}; its container is left running (dockop run --prune removes it)",
                        revision
                            .map(|r| format!(" (revision {r})"))
                            .unwrap_or_default()
                    ),
                );
                tracing::warn!(
                    object = name,
                    "removed from the source: left running and reported Orphaned"
                );
                JobResult::Orphaned
            }
            Job::Prune => self.prune(name).await,
            Job::Wait { dependency } => {
                let mut status = self.ctx.store.load(name);
                status.set_condition(
                    ConditionType::Progressing,
                    true,
                    Reason::WaitingForDependency,
                    &format!("waiting for {dependency} (dependsOn) to be Ready before any change"),
                    Utc::now(),
                );
                if let Err(e) = self.ctx.store.save(&status) {
                    tracing::warn!(object = name, error = %e, "cannot write status");
                }
                JobResult::Waiting
            }
        }
    }

    async fn reconcile(
        &self,
        object: &Container,
        revision: Option<String>,
        invalid: Option<String>,
        touched: Option<Instant>,
    ) -> JobResult {
        let name = object.metadata.name.as_str();
        // On a list failure, reconcile lists itself and reports the engine error in status.
        let all = self.snapshots.get(touched).await.ok();
        // Registry answers are reused for `checkIntervalSeconds` (for the reference they were asked for).
        let opts = Options {
            dry_run: false,
            registry_max_age: Some(Duration::from_secs(u64::from(
                object.spec.update.check_interval_seconds,
            ))),
            revision,
        };
        let result = reconcile(&self.ctx, object, all.as_ref().map(|a| a.as_slice()), &opts).await;
        self.ctx.store.save_last_applied(object);
        if let Some(errors) = invalid {
            mark(
                &self.ctx.store,
                name,
                Reason::SpecInvalid,
                &format!("the source has errors; the last valid version stays in force:\n{errors}"),
            );
        }
        match result {
            Ok(r) => JobResult::Reconciled(Box::new(r)),
            Err(e) => JobResult::Failed(e),
        }
    }

    async fn prune(&self, name: &str) -> JobResult {
        match prune_object(&self.ctx, name).await {
            Ok(removed) => JobResult::Pruned { removed },
            Err(e) => JobResult::PruneFailed(e),
        }
    }
}

/// Removes every container of `name` (never a volume, not even an anonymous one) and its status;
/// returns how many containers went.
pub async fn prune_object(ctx: &Ctx, name: &str) -> Result<usize, EngineError> {
    let all = ctx.engine.list_managed().await?;
    // A start-first object's host ports belong to dockop proxy: close them first. No proxy running
    // means no route to close.
    let switch = crate::switch::SwitchClient::in_state_dir(ctx.store.dir());
    match switch.remove(name).await {
        Ok(()) | Err(crate::switch::SwitchError::NotRunning(_)) => {}
        Err(e) => tracing::warn!(object = name, "cannot remove the proxy route: {e}"),
    }
    let mut removed = 0;
    for c in all.iter().filter(|c| c.label(LABEL_NAME) == Some(name)) {
        if let Err(e) = ctx.engine.remove(&c.id, false).await
            && !e.is_not_found()
        {
            return Err(e);
        }
        removed += 1;
    }
    ctx.store.remove(name);
    ctx.metrics.forget_object(name);
    Ok(removed)
}

/// Sets condition Degraded=True with `reason` on `name`'s status.
fn mark(store: &Store, name: &str, reason: Reason, message: &str) {
    let mut status = store.load(name);
    status.set_condition(ConditionType::Degraded, true, reason, message, Utc::now());
    status.last_error = Some(message.to_owned());
    if let Err(e) = store.save(&status) {
        tracing::warn!(object = name, error = %e, "cannot write status");
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn marks_keep_other_conditions() {
        let dir = tempfile::tempdir().expect("tmp");
        let store = Store::open(dir.path()).expect("store");
        let mut s = crate::status::ObjectStatus::new("web");
        s.set_condition(
            ConditionType::Ready,
            true,
            Reason::Healthy,
            "ok",
            Utc::now(),
        );
        store.save(&s).expect("save");
        mark(&store, "web", Reason::SpecInvalid, "a.yaml:3:1: bad");
        let s = store.load("web");
        assert!(s.is_ready());
        let d = s.condition(ConditionType::Degraded).expect("degraded");
        assert_eq!(d.reason, Reason::SpecInvalid);
        assert!(d.status);
    }
}
