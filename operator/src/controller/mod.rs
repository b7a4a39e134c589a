//! The long-running controller (`dockop run`): merges source changes, Docker events, HTTP triggers, a
//! jittered resync timer and per-object requeues (registry checks, error backoff) into per-object work on
//! a [`queue::WorkQueue`] (dedupe, debounce, one in flight per object, bounded parallelism), and runs the
//! work with [`worker::Worker`] — in the manner of kube-runtime's controller.
//!
//! The loop is the only owner of the desired state and the queue; sources, the events watcher and HTTP
//! talk to it over channels; reconciles run on spawned tasks and report back.

pub mod events;
pub mod queue;
pub mod worker;

pub use crate::{backoff, lock, shared};

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep_until};

use self::backoff::{Backoff, jitter};
use self::events::{EngineSignal, RELEVANT_ACTIONS};
use self::queue::{NextRun, Request, WorkQueue};
use self::worker::{Job, JobResult, Worker};
use crate::execute::Outcome;
use crate::notify::Notifier;
use crate::notify::event::Observation;
use crate::reconcile::{Ctx, ReconcileError};
use crate::shared::{Shared, Trigger};
use crate::source::DesiredState;
use crate::spec::Container;

/// Extra time past the largest `stopTimeoutSeconds` a shutdown may take.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(4);
/// Objects whose only change is the source revision are reconciled this long after the changed ones.
const REVISION_ONLY_DELAY: Duration = Duration::from_secs(1);
/// How long a shutdown waits for queued notifications.
/// A shared container list is reused for at most this long.
const SNAPSHOT_MAX_AGE: Duration = Duration::from_secs(30);

/// Settings of the loop.
#[derive(Debug, Clone)]
pub struct Config {
    /// Debounce of changes.
    pub debounce: Duration,
    /// Full resync period (jittered ±10 %).
    pub resync: Duration,
    /// Reconciles in parallel.
    pub max_concurrent: usize,
    /// Remove objects that left the source.
    pub prune: bool,
    /// `source` label of the metrics.
    pub source_label: String,
}

/// The controller loop's state.
#[derive(Debug)]
pub struct Controller {
    cfg: Config,
    shared: Arc<Shared>,
    worker: Arc<Worker>,
    queue: WorkQueue,
    /// Desired objects in force.
    desired: BTreeMap<String, Arc<Container>>,
    /// Objects held at their last valid version: name -> errors.
    invalid: BTreeMap<String, String>,
    /// Revision in force.
    revision: Option<String>,
    /// The last source state was complete (removals are real).
    complete: bool,
    /// Objects this state directory manages or managed (status files, objects seen in the source).
    known: BTreeSet<String>,
    /// Objects already reported orphaned.
    orphaned: BTreeSet<String>,
    /// When each object was last changed by us or by someone else (engine events).
    touched: HashMap<String, Instant>,
    /// Error backoff per object.
    backoffs: HashMap<String, Backoff>,
    /// Objects whose last reconcile converged: a dependent (`dependsOn`) waits until its dependencies are
    /// in here.
    ready: BTreeSet<String>,
    /// Objects held back until their dependencies are ready; requested again when one becomes ready.
    waiting: BTreeSet<String>,
    /// Objects that left the source and are not pruned yet, as last seen: `--prune` removes a dependent
    /// before what it depends on. Empty after a restart (then the order is by name).
    departed: BTreeMap<String, Arc<Container>>,
    /// Objects still to reconcile once before `first_sync_done`; `None` before the source's first state.
    first_pending: Option<BTreeSet<String>>,
    tasks: JoinSet<(String, JobResult)>,
    rescan: mpsc::UnboundedSender<()>,
    is_git: bool,
    notifier: Notifier,
}

impl Controller {
    /// A controller; `known` starts as the objects with a status in the state directory.
    pub fn new(
        cfg: Config,
        ctx: Ctx,
        shared: Arc<Shared>,
        rescan: mpsc::UnboundedSender<()>,
        is_git: bool,
    ) -> Self {
        let known = ctx.store.list().into_iter().map(|s| s.name).collect();
        Self {
            queue: WorkQueue::new(cfg.debounce, cfg.max_concurrent),
            worker: Arc::new(Worker::new(ctx.clone(), SNAPSHOT_MAX_AGE)),
            cfg,
            shared,
            desired: BTreeMap::new(),
            invalid: BTreeMap::new(),
            revision: None,
            complete: false,
            known,
            orphaned: BTreeSet::new(),
            touched: HashMap::new(),
            backoffs: HashMap::new(),
            ready: BTreeSet::new(),
            waiting: BTreeSet::new(),
            departed: BTreeMap::new(),
            first_pending: None,
            tasks: JoinSet::new(),
            rescan,
            is_git,
            notifier: Notifier::disabled(),
        }
    }

    /// Sends notifications of what the reconciles do through `notifier`.
    pub fn with_notifier(mut self, notifier: Notifier) -> Self {
        self.notifier = notifier;
        self
    }

    /// Hands a job's result to the notifications (which only queue).
    fn notify(&self, name: &str, result: &JobResult) {
        match result {
            JobResult::Reconciled(report) => self.notifier.observe(Observation::Reconciled {
                report,
                invalid: self.invalid.get(name).map(String::as_str),
            }),
            JobResult::Failed(e) => self.notifier.observe(Observation::Failed {
                object: name,
                error: &e.to_string(),
            }),
            JobResult::Orphaned => self
                .notifier
                .observe(Observation::Orphaned { object: name }),
            JobResult::Pruned { .. } => self.notifier.forget(name),
            JobResult::PruneFailed(_) | JobResult::Waiting => {}
        }
    }

    /// Runs until `shutdown` resolves, then lets the reconciles in flight finish (within the largest
    /// `stopTimeoutSeconds` + a few seconds; past that they are abandoned between steps, which an update
    /// survives by design).
    pub async fn run(
        mut self,
        mut source: mpsc::Receiver<DesiredState>,
        mut engine: mpsc::Receiver<EngineSignal>,
        mut triggers: mpsc::UnboundedReceiver<Trigger>,
        shutdown: impl Future<Output = ()>,
    ) {
        tokio::pin!(shutdown);
        let mut resync_at = Instant::now() + jitter(self.cfg.resync, 0.1);
        let far = Duration::from_secs(365 * 24 * 3600);
        loop {
            self.spawn_ready();
            let deadline = self.queue.next_deadline();
            tokio::select! {
                () = &mut shutdown => break,
                Some(done) = self.tasks.join_next(), if !self.tasks.is_empty() => {
                    match done {
                        Ok((name, result)) => self.finished(&name, result),
                        Err(e) => tracing::error!(error = %e, "reconcile task failed"),
                    }
                    if self.tasks.is_empty() {
                        // A burst of reconciles is over: hand its freed heap back (crate::memory).
                        crate::memory::release_free_memory();
                    }
                }
                Some(state) = source.recv() => self.apply_source(state).await,
                Some(signal) = engine.recv() => self.engine_signal(signal),
                Some(t) = triggers.recv() => self.trigger(t),
                () = sleep_until(resync_at) => {
                    self.worker.snapshots().release_expired();
                    self.resync("periodic");
                    crate::memory::release_free_memory();
                    resync_at = Instant::now() + jitter(self.cfg.resync, 0.1);
                }
                () = sleep_until(deadline.unwrap_or_else(|| Instant::now() + far)), if deadline.is_some() => {}
            }
        }
        self.shutdown().await;
    }

    async fn shutdown(&mut self) {
        crate::sdnotify::notify_logged(crate::sdnotify::State::Stopping);
        let largest_stop = self
            .desired
            .values()
            .map(|o| o.spec.stop_timeout_seconds)
            .max()
            .unwrap_or(10);
        let limit = Duration::from_secs(u64::from(largest_stop)) + SHUTDOWN_GRACE;
        let n = self.tasks.len();
        if n == 0 {
            tracing::info!("shutting down");
            return;
        }
        tracing::info!(in_flight = n, limit = ?limit, "shutting down: letting the reconciles in flight finish");
        let drain = async {
            while let Some(done) = self.tasks.join_next().await {
                if let Ok((name, result)) = done {
                    log_result(&name, &result);
                }
            }
        };
        let second = crate::signal::shutdown();
        tokio::select! {
            _ = tokio::time::timeout(limit, drain) => {}
            () = second => {}
        }
        if !self.tasks.is_empty() {
            tracing::warn!(
                abandoned = self.tasks.len(),
                "shutdown limit reached: abandoning reconciles between steps; the next start resumes them"
            );
            self.tasks.abort_all();
            while self.tasks.join_next().await.is_some() {}
        }
    }

    /// Starts the jobs that are due.
    fn spawn_ready(&mut self) {
        let now = Instant::now();
        for name in self.queue.pop_ready(now) {
            let Some(job) = self.job_for(&name) else {
                self.queue.done(&name, NextRun::await_change(), now);
                self.first_done(&name);
                continue;
            };
            let job = match (self.blocked_by(&name, &job), job) {
                (None, job) => job,
                (Some(dependency), Job::Reconcile { .. }) => {
                    tracing::info!(object = %name, dependency = %dependency, "waiting for a dependency to be Ready");
                    Job::Wait { dependency }
                }
                // A prune waits for the dependents that go first; they request it when they are gone.
                (Some(_), _) => {
                    self.queue.done(&name, NextRun::await_change(), now);
                    self.first_done(&name);
                    continue;
                }
            };
            let touched = self.touched.get(&name).copied();
            let worker = self.worker.clone();
            self.tasks.spawn(async move {
                let result = worker.run(&name, job, touched).await;
                (name, result)
            });
        }
    }

    /// The first dependency that holds `job` back: for a reconcile, one of its `dependsOn` that is in the
    /// source and not ready; for a prune, an object that left the source too, still exists and depends on
    /// `name` (it goes first).
    fn blocked_by(&self, name: &str, job: &Job) -> Option<String> {
        match job {
            Job::Reconcile { object, .. } => self.unready_dependency(object),
            Job::Prune => self
                .departed
                .iter()
                .find(|(other, o)| {
                    other.as_str() != name
                        && self.known.contains(*other)
                        && o.spec.depends_on.iter().any(|d| d == name)
                })
                .map(|(other, _)| other.clone()),
            Job::Orphan { .. } | Job::Wait { .. } => None,
        }
    }

    /// The first `dependsOn` of `object` that is in the source and not Ready.
    fn unready_dependency(&self, object: &Container) -> Option<String> {
        object
            .depends_on_names()
            .find(|d| self.desired.contains_key(*d) && !self.ready.contains(*d))
            .map(str::to_owned)
    }

    /// `name` became ready or was pruned: request what waited for it.
    fn release_waiting(&mut self, name: &str, now: Instant) {
        let released: Vec<String> = self
            .waiting
            .iter()
            .filter(|w| {
                self.desired
                    .get(*w)
                    .is_some_and(|o| o.spec.depends_on.iter().any(|d| d == name))
            })
            .cloned()
            .collect();
        for w in released {
            self.waiting.remove(&w);
            self.queue.request(&w, Request::Now, now);
        }
        // A prune that waited for this one (its dependent) may go now.
        if let Some(gone) = self.departed.remove(name) {
            for d in &gone.spec.depends_on {
                if self.departed.contains_key(d) {
                    self.queue.request(d, Request::Now, now);
                }
            }
        }
    }

    /// What to do for `name` now; `None`: nothing.
    fn job_for(&self, name: &str) -> Option<Job> {
        if let Some(o) = self.desired.get(name) {
            return Some(Job::Reconcile {
                object: Arc::clone(o),
                revision: self.revision.clone(),
                invalid: self.invalid.get(name).cloned(),
            });
        }
        // Removals count only when the source was read completely.
        if !self.known.contains(name) || !self.complete {
            return None;
        }
        if self.cfg.prune {
            Some(Job::Prune)
        } else if self.orphaned.contains(name) {
            None
        } else {
            Some(Job::Orphan {
                revision: self.revision.clone(),
            })
        }
    }

    fn finished(&mut self, name: &str, result: JobResult) {
        let now = Instant::now();
        log_result(name, &result);
        match &result {
            JobResult::Reconciled(report) if report.converged() => {
                if self.ready.insert(name.to_owned()) {
                    self.release_waiting(name, now);
                }
            }
            JobResult::Pruned { .. } => {
                self.ready.remove(name);
                self.release_waiting(name, now);
            }
            _ => {
                self.ready.remove(name);
            }
        }
        self.notify(name, &result);
        let action = match &result {
            JobResult::Reconciled(report) => {
                if report.plan.changes() || !matches!(report.outcome, Some(Outcome::Converged)) {
                    self.touched.insert(name.to_owned(), now);
                }
                if matches!(report.outcome, Some(Outcome::Failed { .. })) {
                    self.retry(name)
                } else {
                    self.backoffs.remove(name);
                    self.shared.engine_reachable.store(true, Ordering::Relaxed);
                    self.requeue_for(name)
                }
            }
            JobResult::Failed(e) => {
                if matches!(e, ReconcileError::Observe(_)) {
                    self.shared.engine_reachable.store(false, Ordering::Relaxed);
                }
                self.touched.insert(name.to_owned(), now);
                self.retry(name)
            }
            JobResult::Orphaned => {
                self.orphaned.insert(name.to_owned());
                NextRun::await_change()
            }
            JobResult::Pruned { .. } => {
                self.known.remove(name);
                self.orphaned.remove(name);
                self.touched.remove(name);
                self.backoffs.remove(name);
                NextRun::await_change()
            }
            JobResult::PruneFailed(_) => self.retry(name),
            JobResult::Waiting => {
                // Ready meanwhile (the release came before this result): go now.
                let still = self
                    .desired
                    .get(name)
                    .and_then(|o| self.unready_dependency(o));
                if still.is_some() {
                    self.waiting.insert(name.to_owned());
                    NextRun::await_change()
                } else {
                    NextRun::requeue(Duration::ZERO)
                }
            }
        };
        self.queue.done(name, action, now);
        self.first_done(name);
    }

    /// Next attempt after a failure, backing off.
    fn retry(&mut self, name: &str) -> NextRun {
        let b = self
            .backoffs
            .entry(name.to_owned())
            .or_insert_with(Backoff::for_reconcile);
        NextRun::requeue(b.next().unwrap_or(Duration::from_secs(60)))
    }

    /// After a success: come back for the registry check of a followed tag.
    fn requeue_for(&self, name: &str) -> NextRun {
        match self.desired.get(name) {
            Some(o) if o.spec.digest.is_none() => NextRun::requeue(Duration::from_secs(u64::from(
                o.spec.update.check_interval_seconds.max(1),
            ))),
            _ => NextRun::await_change(),
        }
    }

    fn first_done(&mut self, name: &str) {
        if let Some(p) = self.first_pending.as_mut() {
            p.remove(name);
            if p.is_empty() && !self.shared.first_sync_done.swap(true, Ordering::Relaxed) {
                tracing::info!(objects = self.desired.len(), "first sync done");
                crate::sdnotify::notify_logged(crate::sdnotify::State::Ready);
            }
        }
    }

    /// A new state from the source.
    async fn apply_source(&mut self, state: DesiredState) {
        let now = Instant::now();
        // Unchanged objects keep their Arc, which the monitor's tasks share: below, the same Arc means
        // the same object.
        let new: BTreeMap<String, Arc<Container>> = state
            .objects
            .into_iter()
            .map(|o| {
                let shared = match self.desired.get(&o.metadata.name) {
                    Some(d) if **d == o => Arc::clone(d),
                    _ => Arc::new(o),
                };
                (shared.metadata.name.clone(), shared)
            })
            .collect();
        let revision_changed =
            self.revision.as_deref() != Some(state.revision.as_str()) && !state.revision.is_empty();
        for (name, o) in &self.desired {
            if !new.contains_key(name) {
                self.departed.insert(name.clone(), Arc::clone(o));
            }
        }
        self.departed.retain(|name, _| !new.contains_key(name));
        for (name, o) in &new {
            let changed = !self.desired.get(name).is_some_and(|d| Arc::ptr_eq(d, o))
                || self.invalid.get(name) != state.invalid.get(name);
            if changed {
                // The source debounced its own events already.
                self.queue.request(name, Request::Now, now);
            } else if revision_changed {
                // Only the revision in its status changes: after the objects that really changed.
                let later = now + self.cfg.debounce + REVISION_ONLY_DELAY;
                self.queue.request(name, Request::At(later), now);
            }
            self.known.insert(name.clone());
            self.orphaned.remove(name);
        }
        self.complete = state.complete;
        if state.complete {
            for name in self.known.iter().filter(|n| !new.contains_key(*n)) {
                if !self.orphaned.contains(name) {
                    self.queue.request(name, Request::Now, now);
                }
            }
        }
        if self.first_pending.is_none() {
            let mut pending: BTreeSet<String> = new.keys().cloned().collect();
            if state.complete {
                pending.extend(self.known.iter().filter(|n| !new.contains_key(*n)).cloned());
            }
            if pending.is_empty() && !self.shared.first_sync_done.swap(true, Ordering::Relaxed) {
                tracing::info!("first sync done (no objects)");
                crate::sdnotify::notify_logged(crate::sdnotify::State::Ready);
            }
            self.first_pending = Some(pending);
        }
        if revision_changed {
            let m = self.shared.metrics.as_ref();
            if let Some(old) = &self.revision {
                m.source_revision_info.remove(&vec![
                    ("source", self.cfg.source_label.clone()),
                    ("revision", old.clone()),
                ]);
            }
            m.source_revision_info
                .get_or_create(&vec![
                    ("source", self.cfg.source_label.clone()),
                    ("revision", state.revision.clone()),
                ])
                .set(1);
            tracing::info!(revision = %state.revision, objects = new.len(), "source revision in force");
            self.revision = Some(state.revision.clone());
        }
        self.invalid = state.invalid;
        self.desired = new;
        *self.shared.objects.write().await = self.desired.clone();
        *self.shared.revision.write().await = self.revision.clone();
    }

    fn engine_signal(&mut self, signal: EngineSignal) {
        match signal {
            EngineSignal::Event(ev) => {
                let now = Instant::now();
                if !self.desired.contains_key(&ev.object) && !self.known.contains(&ev.object) {
                    // Another dockop's container (the engine is shared).
                    return;
                }
                self.touched.insert(ev.object.clone(), now);
                if RELEVANT_ACTIONS.contains(&ev.action.as_str())
                    && self.desired.contains_key(&ev.object)
                {
                    tracing::debug!(object = %ev.object, action = %ev.action, "engine event");
                    self.queue.request(&ev.object, Request::Changed, now);
                }
            }
            EngineSignal::Lost(_) => {}
            EngineSignal::Reconnected => {
                self.worker.snapshots().invalidate();
                self.resync("engine reconnected");
            }
        }
    }

    fn trigger(&mut self, t: Trigger) {
        match t {
            Trigger::Object(name) => {
                if self.desired.contains_key(&name) {
                    tracing::info!(object = %name, "reconcile requested over HTTP");
                    self.queue.request(&name, Request::Now, Instant::now());
                } else {
                    tracing::warn!(object = %name, "reconcile requested for an object not in the source");
                }
            }
            Trigger::Source => {
                tracing::info!("source refresh requested over HTTP");
                let _ = self.rescan.send(());
            }
        }
    }

    /// Asks for every object in force.
    fn resync(&mut self, why: &str) {
        tracing::debug!(reason = why, objects = self.desired.len(), "resync");
        let now = Instant::now();
        for name in self.desired.keys() {
            self.queue.request(name, Request::Now, now);
        }
        if !self.is_git {
            // The watcher is the fast path; a rescan catches what it missed (it acts only on new bytes).
            let _ = self.rescan.send(());
        }
    }
}

/// One info line per reconcile that changed something or failed; debug for no-ops.
fn log_result(name: &str, result: &JobResult) {
    match result {
        JobResult::Reconciled(r) => match &r.outcome {
            Some(Outcome::Converged) | None => {
                tracing::debug!(object = name, seconds = r.seconds, "unchanged");
            }
            Some(Outcome::Changed { action }) => {
                tracing::info!(object = name, action = %action, seconds = format!("{:.2}", r.seconds), digest = r.plan.target_digest.as_deref().unwrap_or(""), "changed");
            }
            Some(Outcome::Blocked { reason, message }) => {
                tracing::debug!(object = name, reason = %reason, "{message}");
            }
            Some(o) => {
                tracing::warn!(
                    object = name,
                    result = o.result_label(),
                    seconds = format!("{:.2}", r.seconds),
                    "{o:?}"
                );
            }
        },
        JobResult::Failed(e) => tracing::warn!(object = name, error = %e, "reconcile failed"),
        JobResult::Orphaned => {}
        JobResult::Pruned { removed } => {
            tracing::info!(object = name, containers = removed, "pruned (volumes kept)");
        }
        JobResult::PruneFailed(e) => tracing::warn!(object = name, error = %e, "prune failed"),
        JobResult::Waiting => {}
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use tokio::sync::oneshot;

    use super::*;
    use crate::engine::Engine;
    use crate::engine::fake::FakeEngine;
    use crate::status::{ConditionType, Store};

    const DIGEST: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";

    fn object(name: &str) -> Container {
        crate::testing::object(name)
            .spec("update: {preflight: false}")
            .validated()
    }

    fn state(objects: Vec<Container>, revision: &str, invalid: &[(&str, &str)]) -> DesiredState {
        DesiredState {
            revision: revision.to_owned(),
            objects,
            invalid: invalid
                .iter()
                .map(|(n, m)| ((*n).to_owned(), (*m).to_owned()))
                .collect(),
            complete: invalid.is_empty(),
        }
    }

    struct Harness {
        fake: FakeEngine,
        store: Store,
        shared: Arc<Shared>,
        source: mpsc::Sender<DesiredState>,
        stop: Option<oneshot::Sender<()>>,
        task: tokio::task::JoinHandle<()>,
        _dir: tempfile::TempDir,
    }

    fn start(prune: bool) -> Harness {
        let dir = tempfile::tempdir().expect("tmp");
        let store = Store::open(dir.path()).expect("store");
        let fake = FakeEngine::new();
        fake.push("127.0.0.1:5000/web:v1", DIGEST);
        let engine: Arc<dyn Engine> = Arc::new(fake.clone());
        let (shared, _triggers) = Shared::new(store.clone(), engine.clone(), Arc::default());
        let ctx = Ctx {
            engine,
            store: store.clone(),
            reporter: Arc::new(worker::QuietReporter),
            metrics: Arc::clone(&shared.metrics),
        };
        let (rescan, _rescan_rx) = mpsc::unbounded_channel();
        let c = Controller::new(
            Config {
                debounce: Duration::from_millis(10),
                resync: Duration::from_secs(3600),
                max_concurrent: 2,
                prune,
                source_label: "test".into(),
            },
            ctx,
            shared.clone(),
            rescan,
            false,
        );
        let (source, source_rx) = mpsc::channel(4);
        let (_events_tx, events_rx) = mpsc::channel(4);
        let (_trigger_tx, trigger_rx) = mpsc::unbounded_channel();
        let (stop, stop_rx) = oneshot::channel::<()>();
        let task = tokio::spawn(c.run(source_rx, events_rx, trigger_rx, async move {
            let _ = stop_rx.await;
        }));
        Harness {
            fake,
            store,
            shared,
            source,
            stop: Some(stop),
            task,
            _dir: dir,
        }
    }

    async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
        for _ in 0..500 {
            if cond() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("not within 5 s: {what}");
    }

    fn degraded_reason(store: &Store, name: &str) -> Option<String> {
        store
            .load(name)
            .condition(ConditionType::Degraded)
            .filter(|c| c.status)
            .map(|c| c.reason.to_string())
    }

    #[tokio::test(start_paused = true)]
    async fn applies_marks_invalid_and_orphans() {
        let mut h = start(false);
        h.source
            .send(state(vec![object("web")], "r1", &[]))
            .await
            .expect("send");
        eventually("created and first sync done", || {
            h.fake.by_name("web").is_some_and(|c| c.is_running())
                && h.shared.first_sync_done.load(Ordering::Relaxed)
        })
        .await;
        assert_eq!(h.store.load("web").revision.as_deref(), Some("r1"));
        assert_eq!(h.shared.objects.read().await.len(), 1);

        // Held at its last version with errors: SpecInvalid, container untouched.
        h.fake.take_calls();
        h.source
            .send(state(
                vec![object("web")],
                "r2",
                &[("web", "t.yaml:3:1: bad")],
            ))
            .await
            .expect("send");
        eventually("SpecInvalid", || {
            degraded_reason(&h.store, "web").as_deref() == Some("SpecInvalid")
        })
        .await;
        assert!(
            h.fake.take_calls().is_empty(),
            "nothing changed in the engine"
        );

        // Removed from a complete source: Orphaned, left running.
        h.source.send(state(vec![], "r3", &[])).await.expect("send");
        eventually("Orphaned", || {
            degraded_reason(&h.store, "web").as_deref() == Some("Orphaned")
        })
        .await;
        assert!(h.fake.by_name("web").is_some());

        h.stop.take().map(|s| s.send(()));
        h.task.await.expect("controller ends");
    }

    fn depending(name: &str, on: &str) -> Container {
        crate::testing::object(name)
            .spec("update: {preflight: false}")
            .depends_on(&[on])
            .build()
    }

    fn position(calls: &[String], call: &str) -> usize {
        calls
            .iter()
            .position(|c| c == call)
            .unwrap_or_else(|| panic!("no `{call}` in {calls:?}"))
    }

    #[tokio::test(start_paused = true)]
    async fn dependents_wait_for_ready_and_are_pruned_first() {
        let mut h = start(true);
        // The dependency's first create fails: the dependent is not created meanwhile.
        h.fake.fail_next(
            crate::engine::Op::Create,
            crate::engine::EngineError::Other {
                op: crate::engine::Op::Create,
                message: "boom".into(),
            },
        );
        h.source
            .send(state(
                vec![depending("proxy", "app"), object("app")],
                "r1",
                &[],
            ))
            .await
            .expect("send");
        eventually("app failed once", || {
            h.fake.count(crate::engine::Op::Create) >= 1
        })
        .await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            h.fake.by_name("proxy").is_none(),
            "proxy created before app was Ready"
        );
        let waiting = h.store.load("proxy");
        let c = waiting.condition(ConditionType::Progressing);
        assert!(
            c.is_some_and(|c| c.status && c.reason == crate::status::Reason::WaitingForDependency),
            "{waiting:?}"
        );
        // The retry (backoff, about 1 s) creates app; then proxy follows.
        eventually("both running", || {
            h.fake.by_name("proxy").is_some_and(|c| c.is_running())
                && h.fake.by_name("app").is_some_and(|c| c.is_running())
        })
        .await;
        let calls = h.fake.take_calls();
        assert!(
            position(&calls, "start app") < position(&calls, "create proxy"),
            "{calls:?}"
        );

        // Both leave the source: proxy goes first.
        h.source.send(state(vec![], "r2", &[])).await.expect("send");
        eventually("both pruned", || {
            h.fake.by_name("proxy").is_none() && h.fake.by_name("app").is_none()
        })
        .await;
        let calls = h.fake.take_calls();
        assert!(
            position(&calls, "remove proxy") < position(&calls, "remove app"),
            "{calls:?}"
        );
        h.stop.take().map(|s| s.send(()));
        h.task.await.expect("controller ends");
    }

    #[tokio::test(start_paused = true)]
    async fn prunes_containers_and_status() {
        let mut h = start(true);
        h.source
            .send(state(vec![object("prune-me"), object("db")], "r1", &[]))
            .await
            .expect("send");
        eventually("both created", || {
            h.fake.by_name("prune-me").is_some() && h.fake.by_name("db").is_some()
        })
        .await;
        h.source
            .send(state(vec![object("db")], "r2", &[]))
            .await
            .expect("send");
        eventually("pruned", || {
            h.fake.by_name("prune-me").is_none()
                && !h.store.list().iter().any(|s| s.name == "prune-me")
        })
        .await;
        assert!(h.fake.by_name("db").is_some());
        // Its per-object gauges are gone too (counters keep their history).
        let text = h.shared.metrics.encode();
        for family in ["dockop_ready{", "dockop_object_info{"] {
            assert!(
                !text
                    .lines()
                    .any(|l| l.starts_with(family) && l.contains("name=\"prune-me\"")),
                "{family} series left for a pruned object:\n{text}"
            );
        }
        h.stop.take().map(|s| s.send(()));
        h.task.await.expect("controller ends");
    }
}
