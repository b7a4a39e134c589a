//! The executor: walks a [`Plan`] step by step through the [`Engine`] — the only code that changes
//! anything on the engine — with the health gate, preflight and automatic rollback.
//!
//! Failure handling follows the update sequence of the guide: a failure before the running container is
//! stopped (pull, preflight) touches nothing; a failure after it (create, start, users, health gate) removes
//! the new container and restores `<name>-previous` — the same container, same ID — and records the target
//! (digest + spec hash) as failed when the app itself said no (health, exit), so it is not retried until the
//! spec or the registry digest changes.

use std::time::{Duration, Instant};

use chrono::Utc;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use serde::Serialize;

use crate::desired::DesiredContainer;
use crate::engine::{ContainerInfo, Engine, EngineError, RunState, auth};
use crate::health::{ProbeResult, probe, probe_address};
use crate::observe::{NEXT_SUFFIX, Observed, PREVIOUS_SUFFIX};
use crate::plan::{Action, Plan, Step, short};
use crate::spec::{Health, RollbackPolicy};
use crate::status::{Change, ConditionType, ObjectStatus, Store};
use crate::switch::SwitchClient;
use crate::telemetry::{Metrics, metrics};
use crate::users;

/// Seconds a container without a health check must keep running to count as started.
const NO_HEALTH_SETTLE: Duration = Duration::from_secs(2);
/// Poll period while the app is not listening yet.
const STARTUP_POLL: Duration = Duration::from_millis(200);

/// The phase of an update that failed (error messages and `rollbacks_total{reason}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
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
}

/// How a plan's execution ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    /// Nothing needed doing.
    Converged,
    /// A change was made and passed the health gate.
    Changed {
        /// What was done.
        action: String,
    },
    /// The change failed and the previous container serves again.
    RolledBack {
        /// Phase that failed.
        phase: Phase,
        /// Why.
        reason: String,
    },
    /// The candidate failed preflight; nothing was touched.
    Rejected {
        /// Why.
        reason: String,
    },
    /// The plan could not be carried out (and could not be rolled back, or there was nothing to roll back to).
    Failed {
        /// Phase that failed.
        phase: Phase,
        /// Why.
        reason: String,
    },
    /// Drift not acted on.
    Blocked {
        /// Reason code.
        reason: String,
        /// Why.
        message: String,
    },
}

impl Outcome {
    /// True when the object ends converged (or deliberately blocked without error).
    pub fn is_success(&self) -> bool {
        matches!(self, Outcome::Converged | Outcome::Changed { .. })
    }
    /// Metric label for `reconcile_total{result}`.
    pub fn result_label(&self) -> &'static str {
        match self {
            Outcome::Converged => "converged",
            Outcome::Changed { .. } => "changed",
            Outcome::RolledBack { .. } => "rolled_back",
            Outcome::Rejected { .. } => "rejected_preflight",
            Outcome::Failed { .. } => "failed",
            Outcome::Blocked { .. } => "blocked",
        }
    }
}

/// Receives progress lines meant for a person (the `apply` terminal output).
pub trait Reporter: Send + Sync {
    /// A line about object `name`.
    fn line(&self, name: &str, text: &str);
    /// Pull progress: bytes done and total of the layers seen so far.
    fn pull_progress(&self, name: &str, done: u64, total: u64) {
        let _ = (name, done, total);
    }
}

/// A reporter that only logs.
#[derive(Debug, Default)]
pub struct LogReporter;

impl Reporter for LogReporter {
    fn line(&self, name: &str, text: &str) {
        tracing::info!(object = name, "{text}");
    }
}

/// Why a gate or preflight said no.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Verdict {
    /// The app's own verdict (health answer, exit): the target is remembered as failed.
    app: bool,
    message: String,
}

/// Executes `plan` for `desired`; updates `status` (conditions, history, failed targets) in place.
pub struct Executor<'a> {
    engine: &'a dyn Engine,
    desired: &'a DesiredContainer,
    observed: &'a Observed,
    status: &'a mut ObjectStatus,
    reporter: &'a dyn Reporter,
    /// The container under test (new, or the unproven active one when resuming).
    candidate: Option<String>,
    /// The container kept for rollback.
    previous: Option<String>,
    /// The active container stopped by this run and not yet renamed.
    stopped_active: Option<String>,
    /// A passed preflight candidate, removed concurrently with the next step.
    pending_removal: Option<String>,
    /// Where status is saved at the points a crash must not lose (a target recorded as failed).
    store: Option<&'a Store>,
    /// The admin client of `dockop proxy`, for start-first objects.
    switch: Option<&'a SwitchClient>,
    /// Something serving was changed (stopped, renamed, removed) or no active container exists while a
    /// previous one does: a failure from here on must restore the previous container.
    touched: bool,
    version: Option<String>,
}

impl std::fmt::Debug for Executor<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Executor")
            .field("object", &self.desired.name)
            .field("candidate", &self.candidate)
            .finish_non_exhaustive()
    }
}

type StepResult = Result<(), (Phase, String, bool)>;

fn engine_err(phase: Phase) -> impl Fn(EngineError) -> (Phase, String, bool) {
    move |e| (phase, e.to_string(), false)
}

impl<'a> Executor<'a> {
    /// An executor for one object.
    pub fn new(
        engine: &'a dyn Engine,
        desired: &'a DesiredContainer,
        observed: &'a Observed,
        status: &'a mut ObjectStatus,
        reporter: &'a dyn Reporter,
    ) -> Self {
        Self {
            engine,
            desired,
            observed,
            status,
            reporter,
            candidate: None,
            previous: None,
            stopped_active: None,
            touched: false,
            store: None,
            switch: None,
            pending_removal: None,
            version: None,
        }
    }

    /// Saves status to `store` whenever a target is recorded as failed, before anything else happens, so a
    /// crash during the rollback that follows cannot make dockop retry that target.
    pub fn with_store(mut self, store: &'a Store) -> Self {
        self.store = Some(store);
        self
    }

    /// Switches start-first routes through `client`.
    pub fn with_switch(mut self, client: &'a SwitchClient) -> Self {
        self.switch = Some(client);
        self
    }

    fn remember_failed(&mut self, target: &str, reason: &str) {
        self.status
            .record_failed(target, &self.desired.spec_hash, reason, Utc::now());
        if let Some(store) = self.store
            && let Err(e) = store.save(self.status)
        {
            tracing::warn!(object = %self.desired.name, error = %e, "cannot persist the failed target");
        }
    }

    fn name(&self) -> &str {
        &self.desired.name
    }

    fn say(&self, text: &str) {
        self.reporter.line(&self.desired.name, text);
    }

    /// Runs the plan.
    #[tracing::instrument(skip_all, fields(object = %self.desired.name))]
    pub async fn run(mut self, plan: &Plan) -> Outcome {
        let started = Instant::now();
        self.previous = self.observed.previous.as_ref().map(|c| c.id.clone());
        // Resuming or restoring means the object is already mid-change: a failure must roll back.
        self.touched = matches!(plan.action, Action::Resume | Action::Restore)
            || (self.observed.active.is_none() && self.previous.is_some());
        if matches!(plan.action, Action::Resume | Action::Start | Action::Switch) {
            self.candidate = self.observed.active.as_ref().map(|c| c.id.clone());
        }
        let m = metrics();
        for kind in &plan.drift {
            Metrics::inc(&m.drift_detected_total, self.name(), "kind", kind.as_str());
        }
        if let Action::Blocked { reason, message } = &plan.action {
            self.cleanup_leftovers(plan).await;
            return Outcome::Blocked {
                reason: reason.clone(),
                message: message.clone(),
            };
        }
        if plan.changes() {
            let what = match &plan.action {
                Action::Create => "creating".to_owned(),
                Action::Start => "starting".to_owned(),
                Action::Update => format!("updating ({})", plan.notes.join("; ")),
                Action::Resume => "resuming an interrupted update".to_owned(),
                Action::Restore => "restoring the previous container".to_owned(),
                Action::Switch => "pointing dockop proxy at the active container".to_owned(),
                _ => String::new(),
            };
            self.say(&what);
            self.status.set_condition(
                ConditionType::Progressing,
                true,
                "Reconciling",
                &what,
                Utc::now(),
            );
        }
        let mut result: StepResult = Ok(());
        for (n, step) in plan.steps.iter().enumerate() {
            tracing::debug!(step = %step, "step");
            result = match self.pending_removal.take() {
                Some(id) => {
                    let engine = self.engine;
                    let (removed, r) = tokio::join!(engine.remove(&id, true), self.step(step));
                    if let Err(e) = removed {
                        tracing::warn!(container = %id, error = %e, "cannot remove the preflight container; removed at the next reconcile");
                    }
                    r
                }
                None => self.step(step).await,
            };
            crate::fault::after_step(n + 1, step);
            if result.is_err() {
                break;
            }
        }
        if let Some(id) = self.pending_removal.take() {
            self.remove_preflight(&id).await;
        }
        let elapsed = started.elapsed().as_secs_f64();
        let outcome = match result {
            Ok(()) if plan.changes() => {
                let action = action_word(&plan.action);
                if matches!(plan.action, Action::Update | Action::Resume) {
                    Metrics::inc(&m.updates_total, self.name(), "result", "succeeded");
                }
                self.record(plan, action, "succeeded", plan.notes.join("; "), elapsed);
                Outcome::Changed {
                    action: action.to_owned(),
                }
            }
            Ok(()) => Outcome::Converged,
            Err((Phase::Preflight, reason, _)) => {
                let target = plan.target_digest.clone().unwrap_or_default();
                self.status
                    .record_failed(&target, &self.desired.spec_hash, &reason, Utc::now());
                Metrics::inc(
                    &m.updates_total,
                    self.name(),
                    "result",
                    "rejected_preflight",
                );
                self.record(
                    plan,
                    "update",
                    "rejected_preflight",
                    reason.clone(),
                    elapsed,
                );
                self.say(&format!(
                    "preflight rejected {}: {reason}; the running container was not touched",
                    short(&target)
                ));
                Outcome::Rejected { reason }
            }
            Err((phase, reason, app_verdict)) => {
                self.fail(plan, phase, reason, app_verdict, elapsed).await
            }
        };
        self.status
            .set_condition(ConditionType::Progressing, false, "Idle", "", Utc::now());
        outcome
    }

    fn record(&mut self, plan: &Plan, action: &str, result: &str, message: String, seconds: f64) {
        self.status.record_change(Change {
            at: Utc::now(),
            action: action.to_owned(),
            from_digest: plan.current_digest.clone(),
            to_digest: plan.target_digest.clone(),
            result: result.to_owned(),
            message,
            seconds: (seconds * 1000.0).round() / 1000.0,
        });
        if result == "succeeded"
            && matches!(plan.action, Action::Update | Action::Resume)
            && plan.current_digest.is_some()
            && plan.current_digest != plan.target_digest
        {
            self.status.previous_digest = plan.current_digest.clone();
        }
    }

    async fn cleanup_leftovers(&mut self, plan: &Plan) {
        for step in &plan.steps {
            if let Step::RemoveLeftover { .. } | Step::RemovePrevious { .. } = step {
                let _ = self.step(step).await;
            }
        }
    }

    async fn fail(
        &mut self,
        plan: &Plan,
        phase: Phase,
        reason: String,
        app_verdict: bool,
        elapsed: f64,
    ) -> Outcome {
        let m = metrics();
        let target = plan.target_digest.clone().unwrap_or_default();
        if app_verdict {
            self.remember_failed(&target, &reason);
        }
        if self.desired.start_first()
            && !self.touched
            && matches!(plan.action, Action::Update)
            && let Some(id) = self.candidate.take()
        {
            // Start-first, before the switch: the old container never stopped serving. Drop the candidate.
            if let Err(e) = self.engine.remove(&id, true).await {
                tracing::warn!(object = %self.desired.name, error = %e, "cannot remove the failed candidate; removed at the next reconcile");
            }
            self.say(&format!(
                "{} failed: {reason}; start-first: traffic never left the running container, the candidate is removed",
                phase.as_str()
            ));
            return self.rolled_back(plan, phase, reason, elapsed);
        }
        let can_roll_back = self.previous.is_some() || self.stopped_active.is_some();
        if !self.touched
            || !can_roll_back
            || !matches!(
                plan.action,
                Action::Update | Action::Resume | Action::Restore
            )
        {
            if matches!(plan.action, Action::Update | Action::Resume) {
                Metrics::inc(&m.updates_total, self.name(), "result", "failed");
            }
            self.record(
                plan,
                action_word(&plan.action),
                "failed",
                format!("{}: {reason}", phase.as_str()),
                elapsed,
            );
            self.say(&format!("{} failed: {reason}", phase.as_str()));
            return Outcome::Failed { phase, reason };
        }
        if self.desired.spec.update.rollback == RollbackPolicy::Never {
            Metrics::inc(&m.updates_total, self.name(), "result", "failed");
            let msg = format!(
                "{}: {reason}; rollback is off (update.rollback: never), the failed container is left for inspection",
                phase.as_str()
            );
            self.record(plan, "update", "failed", msg.clone(), elapsed);
            self.say(&msg);
            return Outcome::Failed { phase, reason: msg };
        }
        self.say(&format!(
            "{} failed: {reason}; rolling back",
            phase.as_str()
        ));
        match self.roll_back().await {
            Ok(()) => {
                self.say("rolled back: the previous container serves again");
                self.rolled_back(plan, phase, reason, elapsed)
            }
            Err(e) => {
                Metrics::inc(&m.updates_total, self.name(), "result", "failed");
                let msg = format!("{}: {reason}; rollback failed too: {e}", phase.as_str());
                self.record(plan, "update", "failed", msg.clone(), elapsed);
                Outcome::Failed {
                    phase: Phase::Restore,
                    reason: msg,
                }
            }
        }
    }

    /// Counts and records a change that failed in `phase` while the previous version kept or got back
    /// the traffic.
    fn rolled_back(&mut self, plan: &Plan, phase: Phase, reason: String, elapsed: f64) -> Outcome {
        let m = metrics();
        Metrics::inc(&m.updates_total, self.name(), "result", "rolled_back");
        Metrics::inc(&m.rollbacks_total, self.name(), "reason", phase.as_str());
        self.record(
            plan,
            "update",
            "rolled_back",
            format!("{}: {reason}", phase.as_str()),
            elapsed,
        );
        Outcome::RolledBack { phase, reason }
    }

    /// Removes the candidate and brings the previous container back under the object's name.
    async fn roll_back(&mut self) -> Result<(), String> {
        if let Some(id) = self.candidate.take() {
            self.engine
                .remove(&id, false)
                .await
                .map_err(|e| e.to_string())?;
        }
        crate::fault::point("rollback-1");
        let id = match (self.previous.take(), self.stopped_active.take()) {
            (Some(prev), _) => {
                self.engine
                    .rename(&prev, self.name())
                    .await
                    .map_err(|e| e.to_string())?;
                prev
            }
            (None, Some(active)) => active,
            (None, None) => return Err("nothing to roll back to".into()),
        };
        crate::fault::point("rollback-2");
        self.engine.start(&id).await.map_err(|e| e.to_string())?;
        crate::fault::point("rollback-3");
        if let Err((_, e, _)) = self.apply_users(&id).await {
            tracing::warn!(object = %self.desired.name, error = %e, "users after rollback");
        }
        crate::fault::point("rollback-4");
        match self.gate(&id).await {
            Ok(()) => Ok(()),
            Err(v) => {
                tracing::warn!(object = %self.desired.name, "restored container is not healthy: {}", v.message);
                Ok(())
            }
        }
    }

    async fn step(&mut self, step: &Step) -> StepResult {
        let e = self.engine;
        match step {
            Step::RemoveLeftover { id, container } => {
                if let Err(err) = e.remove(id, true).await {
                    tracing::warn!(container = %container, error = %err, "cannot remove leftover");
                }
                Ok(())
            }
            Step::EnsureVolumes => {
                for (v, labels) in self.desired.volumes() {
                    e.ensure_volume(&v, &labels)
                        .await
                        .map_err(engine_err(Phase::Create))?;
                }
                for n in self.desired.networks() {
                    e.ensure_network(n)
                        .await
                        .map_err(engine_err(Phase::Create))?;
                }
                Ok(())
            }
            Step::Pull { reference } => self.pull(reference).await,
            Step::Preflight { digest } => self.preflight(digest).await,
            Step::StopActive { id } => {
                self.say("stopping the running container");
                self.touched = true;
                self.stopped_active = Some(id.clone());
                e.stop(id, self.desired.spec.stop_timeout_seconds)
                    .await
                    .map_err(engine_err(Phase::Stop))?;
                Ok(())
            }
            Step::RenameToPrevious { id } => {
                let new = format!("{}{PREVIOUS_SUFFIX}", self.name());
                e.rename(id, &new).await.map_err(engine_err(Phase::Stop))?;
                self.stopped_active = None;
                self.previous = Some(id.clone());
                Ok(())
            }
            Step::RemoveActive { id } => {
                self.touched = true;
                e.remove(id, false)
                    .await
                    .map_err(engine_err(Phase::Cleanup))
            }
            Step::CreateNext { digest } => {
                let generation = self.status.generation + 1;
                let mut req = self.desired.request(digest, generation);
                req.name = format!("{}{NEXT_SUFFIX}", self.name());
                let id = e.create(&req).await.map_err(engine_err(Phase::Create))?;
                self.status.generation = generation;
                self.candidate = Some(id);
                Ok(())
            }
            Step::RenameNext => {
                let id = self.target_id()?;
                match e.rename(&id, self.name()).await {
                    Ok(()) => Ok(()),
                    // Docker cannot rename a container that is crash-looping ("sandbox not found"): when
                    // the candidate has exited, that exit is the verdict, not the rename.
                    Err(err) => match e.inspect(&id).await.ok().flatten() {
                        Some(info) => match self.exited(&info).await {
                            Some(v) => Err((Phase::Health, v.message, v.app)),
                            None => Err((Phase::Start, err.to_string(), false)),
                        },
                        None => Err((Phase::Start, err.to_string(), false)),
                    },
                }
            }
            Step::Create { digest } => {
                let generation = self.status.generation + 1;
                let req = self.desired.request(digest, generation);
                let id = e.create(&req).await.map_err(engine_err(Phase::Create))?;
                self.status.generation = generation;
                self.candidate = Some(id);
                Ok(())
            }
            Step::Start => {
                let id = self.target_id()?;
                e.start(&id).await.map_err(engine_err(Phase::Start))
            }
            Step::ApplyUsers => {
                let id = self.target_id()?;
                self.apply_users(&id).await
            }
            Step::HealthGate => {
                let id = self.target_id()?;
                self.gate(&id)
                    .await
                    .map_err(|v| (Phase::Health, v.message, v.app))
            }
            Step::SwitchRoute => self.switch_route().await,
            Step::RetireOld { id } => {
                e.stop(id, self.desired.spec.stop_timeout_seconds)
                    .await
                    .map_err(engine_err(Phase::Cleanup))?;
                e.remove(id, false)
                    .await
                    .map_err(engine_err(Phase::Cleanup))
            }
            Step::AdoptNext { id } => {
                self.candidate = Some(id.clone());
                e.rename(id, self.name())
                    .await
                    .map_err(engine_err(Phase::Cleanup))
            }
            Step::RemovePrevious { id } => {
                e.remove(id, false)
                    .await
                    .map_err(engine_err(Phase::Cleanup))?;
                if self.previous.as_deref() == Some(id.as_str()) {
                    self.previous = None;
                }
                Ok(())
            }
            Step::RestorePrevious { id } => {
                e.rename(id, self.name())
                    .await
                    .map_err(engine_err(Phase::Restore))?;
                e.start(id).await.map_err(engine_err(Phase::Restore))?;
                self.previous = None;
                self.candidate = Some(id.clone());
                Ok(())
            }
        }
    }

    /// Points the proxy's route at the candidate (or active) container and waits for the drain.
    async fn switch_route(&mut self) -> StepResult {
        let id = self.target_id()?;
        let Some(client) = self.switch else {
            return Err((
                Phase::Switch,
                "start-first needs dockop proxy, and this command has no proxy client".into(),
                false,
            ));
        };
        let ip = self
            .engine
            .inspect(&id)
            .await
            .map_err(engine_err(Phase::Switch))?
            .and_then(|c| c.ip_address)
            .ok_or((
                Phase::Switch,
                "the new container has no bridge IP address to route to".to_owned(),
                false,
            ))?;
        let route = self.desired.route(&id, &ip);
        let report = client
            .switch(self.name(), &route)
            .await
            .map_err(|e| (Phase::Switch, e.to_string(), false))?;
        // From here the new container serves: a later failure must not remove it.
        self.touched = true;
        let left = if report.left_open == 0 {
            "drained".to_owned()
        } else {
            format!("{} still open were cut", report.left_open)
        };
        self.say(&format!(
            "switched traffic to {ip} (previous upstream {left} after {:.1} s)",
            report.drain_seconds
        ));
        Ok(())
    }

    fn target_id(&self) -> Result<String, (Phase, String, bool)> {
        self.candidate
            .clone()
            .or_else(|| self.observed.active.as_ref().map(|c| c.id.clone()))
            .ok_or((Phase::Start, "no container to act on".to_owned(), false))
    }

    async fn apply_users(&mut self, id: &str) -> StepResult {
        if self.desired.spec.users.is_empty() && !users::may_have_managed(self.status) {
            return Ok(());
        }
        match users::apply(self.engine, id, self.desired, self.status).await {
            Ok(report) => {
                if report.changed {
                    Metrics::inc(
                        &metrics().drift_detected_total,
                        self.name(),
                        "kind",
                        "users",
                    );
                    self.say(&format!("users: {}", report.summary));
                }
                if let Some(err) = report.error {
                    return Err((Phase::Users, err, false));
                }
                Ok(())
            }
            Err(e) => Err((Phase::Users, e.to_string(), false)),
        }
    }

    async fn pull(&mut self, reference: &str) -> StepResult {
        if self
            .engine
            .local_image(reference)
            .await
            .map_err(engine_err(Phase::Pull))?
            .is_some()
        {
            return Ok(());
        }
        let creds = auth::credentials_for(reference)
            .await
            .map_err(|e| (Phase::Credentials, e.to_string(), false))?;
        self.say(&format!("pulling {reference}"));
        let name = self.desired.name.clone();
        let reporter = self.reporter;
        let layers = std::sync::Mutex::new(std::collections::BTreeMap::<String, (u64, u64)>::new());
        let sink = |p: crate::engine::PullProgress| {
            if let (Some(cur), Some(total)) = (p.current, p.total)
                && let Ok(mut l) = layers.lock()
            {
                l.insert(p.layer.clone(), (cur, total));
                let (done, all) = l.values().fold((0, 0), |(a, b), (c, t)| (a + c, b + t));
                reporter.pull_progress(&name, done, all);
            }
        };
        let started = Instant::now();
        self.engine
            .pull(reference, creds.as_ref(), &sink)
            .await
            .map_err(engine_err(Phase::Pull))?;
        self.say(&format!(
            "pulled in {:.1} s",
            started.elapsed().as_secs_f64()
        ));
        Ok(())
    }

    async fn preflight(&mut self, digest: &str) -> StepResult {
        let suffix = format!("{:04x}", fastrand::u16(..));
        let req = self.desired.preflight_request(digest, &suffix);
        self.say(&format!(
            "preflight: trying {} in a throwaway container",
            short(digest)
        ));
        let started = Instant::now();
        let id = self
            .engine
            .create(&req)
            .await
            .map_err(engine_err(Phase::Preflight))?;
        let verdict = match self.engine.start(&id).await {
            Ok(()) => {
                crate::fault::point("preflight-started");
                self.gate(&id).await
            }
            Err(e) => Err(Verdict {
                app: false,
                message: e.to_string(),
            }),
        };
        match verdict {
            Ok(()) => {
                // Removed while the next step runs (stopping the old container): preflight then costs
                // only the candidate's start-to-healthy.
                self.pending_removal = Some(id);
                self.say(&format!(
                    "preflight passed in {:.1} s",
                    started.elapsed().as_secs_f64()
                ));
                Ok(())
            }
            Err(v) => {
                self.remove_preflight(&id).await;
                Err((Phase::Preflight, v.message, v.app))
            }
        }
    }

    async fn remove_preflight(&self, id: &str) {
        if let Err(e) = self.engine.remove(id, true).await {
            tracing::warn!(container = %id, error = %e, "cannot remove the preflight container; removed at the next reconcile");
        }
    }

    /// Probes container `id` until healthy, the startup deadline, `failureThreshold` counted failures
    /// (see [`ProbeSchedule`]), or the container exiting.
    async fn gate(&mut self, id: &str) -> Result<(), Verdict> {
        let started = Instant::now();
        let Some(h) = self.desired.spec.health.clone() else {
            return self.settle(id, started).await;
        };
        let deadline = started + Duration::from_secs(u64::from(h.startup_deadline_seconds));
        let mut schedule = ProbeSchedule::new(&h, started);
        let mut in_flight = FuturesUnordered::new();
        let mut last: Option<ProbeResult> = None;
        // The last real answer (not a timeout), for the verdict's message.
        let mut answered: Option<ProbeResult> = None;
        loop {
            if schedule.due(Instant::now(), in_flight.len()) {
                // One look at the container per probe: an exit fails the gate at once.
                let info = self.running(id).await?;
                let now = Instant::now();
                schedule.launched(now);
                let (desired, h) = (self.desired, &h);
                in_flight.push(async move { (now, probe_object(desired, &info, h).await) });
            }
            let wake = schedule
                .next_launch(Instant::now(), in_flight.len())
                .map_or(deadline, |t| t.min(deadline));
            let done = tokio::select! {
                Some(done) = in_flight.next() => Some(done),
                () = tokio::time::sleep_until(wake.into()) => None,
            };
            if let Some((launched, result)) = done {
                match schedule.record(launched, &result) {
                    Tally::Healthy => {
                        if let ProbeResult::Healthy { version } = result {
                            self.status.app_version = version.clone();
                            self.version = version;
                        }
                        return Ok(());
                    }
                    Tally::Counted(failures) => {
                        Metrics::inc_name(&metrics().health_probe_failures_total, self.name());
                        if failures >= h.failure_threshold {
                            // An answer (401, 500) says more than a timeout: name it even when a
                            // slow probe was the last straw.
                            let why = match (&result, &answered) {
                                (ProbeResult::Timeout, Some(a)) => {
                                    format!("{} (last: {})", a.describe(), result.describe())
                                }
                                _ => result.describe(),
                            };
                            return Err(Verdict {
                                app: true,
                                message: format!(
                                    "{failures} unhealthy answers in a row on {}: {why}",
                                    h.path
                                ),
                            });
                        }
                    }
                    Tally::Uncounted => {}
                }
                if matches!(
                    result,
                    ProbeResult::Unhealthy { .. } | ProbeResult::Denied { .. }
                ) {
                    answered = Some(result.clone());
                }
                last = Some(result);
            }
            if Instant::now() >= deadline {
                let last = last.map_or_else(|| "none finished".to_owned(), |r| r.describe());
                return Err(Verdict {
                    app: true,
                    message: format!(
                        "not healthy within startupDeadlineSeconds={} (last probe: {last})",
                        h.startup_deadline_seconds
                    ),
                });
            }
        }
    }

    /// Without a health check: the container must keep running for [`NO_HEALTH_SETTLE`].
    async fn settle(&mut self, id: &str, started: Instant) -> Result<(), Verdict> {
        loop {
            self.running(id).await?;
            if started.elapsed() >= NO_HEALTH_SETTLE {
                return Ok(());
            }
            tokio::time::sleep(STARTUP_POLL).await;
        }
    }

    /// Inspects container `id`: its state while it runs, the verdict when it is gone or exited.
    async fn running(&self, id: &str) -> Result<ContainerInfo, Verdict> {
        let info = self.engine.inspect(id).await.map_err(|e| Verdict {
            app: false,
            message: e.to_string(),
        })?;
        let Some(info) = info else {
            return Err(Verdict {
                app: false,
                message: "the container disappeared".into(),
            });
        };
        match self.exited(&info).await {
            Some(v) => Err(v),
            None => Ok(info),
        }
    }

    async fn exited(&self, info: &ContainerInfo) -> Option<Verdict> {
        if matches!(info.state, RunState::Running) {
            return None;
        }
        if matches!(info.state, RunState::Created) {
            return Some(Verdict {
                app: false,
                message: "the container was never started".into(),
            });
        }
        let logs = self.engine.logs_tail(&info.id, 5).await.unwrap_or_default();
        let logs = logs.trim();
        let oom = if info.oom_killed {
            " (killed: out of memory)"
        } else {
            ""
        };
        let mut message = format!("the container exited with code {}{oom}", info.exit_code);
        if matches!(info.state, RunState::Restarting) {
            message = format!(
                "the container is restarting after exiting with code {}{oom}",
                info.exit_code
            );
        }
        if !logs.is_empty() {
            message.push_str(&format!("; last log lines: {}", logs.replace('\n', " | ")));
        }
        Some(Verdict { app: true, message })
    }
}

/// Probes in flight at most while the app has not answered HTTP yet.
const MAX_STARTUP_PROBES: usize = 8;

/// What a finished probe did to the health gate's count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tally {
    /// Healthy: the gate passes.
    Healthy,
    /// A failure that counts; the number in a row so far.
    Counted(u32),
    /// Not counted: not listening yet, or a failure within `intervalSeconds` of the last counted one.
    Uncounted,
}

/// When the health gate probes and how it counts what comes back.
///
/// Until the app first answers HTTP, a new probe starts every [`STARTUP_POLL`] even while earlier ones
/// still wait (at most [`MAX_STARTUP_PROBES`]): some apps, OpenCode among them, accept a connection early in
/// startup and never answer it, and waiting out that probe's `timeoutSeconds` would add it to every update.
/// Once the app has answered, probes run one at a time at a fixed rate of `intervalSeconds`. A timeout or an
/// unhealthy answer counts at most once per `intervalSeconds` (by launch time), so `failureThreshold` keeps
/// meaning that many intervals of failure however many probes overlap; "not listening" is still starting
/// and ends a run of failures.
#[derive(Debug)]
struct ProbeSchedule {
    interval: Duration,
    answered: bool,
    last_launch: Option<Instant>,
    failures: u32,
    /// Launch time of the last counted failure.
    last_counted: Option<Instant>,
    /// Results of probes launched before this are stale for the count (a later probe saw "not listening").
    epoch: Instant,
}

impl ProbeSchedule {
    fn new(h: &Health, started: Instant) -> Self {
        Self {
            interval: Duration::from_secs(u64::from(h.interval_seconds)),
            answered: false,
            last_launch: None,
            failures: 0,
            last_counted: None,
            epoch: started,
        }
    }

    fn gap(&self) -> Duration {
        if self.answered {
            self.interval
        } else {
            STARTUP_POLL
        }
    }

    /// Whether to launch a probe at `now` with `in_flight` running.
    fn due(&self, now: Instant, in_flight: usize) -> bool {
        self.next_launch(now, in_flight).is_some_and(|t| t <= now)
    }

    /// When the next probe may start (`now` or later); none until one of the `in_flight` finishes.
    fn next_launch(&self, now: Instant, in_flight: usize) -> Option<Instant> {
        let cap = if self.answered { 1 } else { MAX_STARTUP_PROBES };
        (in_flight < cap).then(|| self.last_launch.map_or(now, |t| (t + self.gap()).max(now)))
    }

    fn launched(&mut self, at: Instant) {
        self.last_launch = Some(at);
    }

    fn record(&mut self, launched: Instant, result: &ProbeResult) -> Tally {
        match result {
            ProbeResult::Healthy { .. } => return Tally::Healthy,
            ProbeResult::NotListening { .. } => {
                // Only news newer than the last counted failure ends the run.
                if launched >= self.epoch && self.last_counted.is_none_or(|t| launched >= t) {
                    self.epoch = launched;
                    self.failures = 0;
                    self.last_counted = None;
                }
                return Tally::Uncounted;
            }
            ProbeResult::Unhealthy { .. } | ProbeResult::Denied { .. } => self.answered = true,
            ProbeResult::Timeout => {}
        }
        let too_soon = self
            .last_counted
            .is_some_and(|t| launched < t + self.interval);
        if launched < self.epoch || too_soon {
            return Tally::Uncounted;
        }
        self.failures += 1;
        self.last_counted = Some(launched);
        Tally::Counted(self.failures)
    }
}

fn action_word(a: &Action) -> &'static str {
    match a {
        Action::Create => "create",
        Action::Start => "start",
        Action::Update => "update",
        Action::Resume => "resume",
        Action::Restore => "restore",
        Action::Switch => "switch",
        Action::Nothing | Action::Blocked { .. } => "none",
    }
}

/// Probes the health path of container `info` with the object's credentials: on its bridge IP and
/// container port, else on the published port ([`probe_address`]).
pub async fn probe_object(
    desired: &DesiredContainer,
    info: &ContainerInfo,
    h: &Health,
) -> ProbeResult {
    let timeout = Duration::from_secs(u64::from(h.timeout_seconds));
    match probe_address(
        info.ip_address.as_deref(),
        info.engine_host.as_deref(),
        &desired.spec.ports,
        h.port,
    ) {
        Some((host, port)) => probe(&host, port, &h.path, timeout, &desired.probe_auth).await,
        None => ProbeResult::NotListening {
            message: "the container has no IP address and the health port is not published".into(),
        },
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU16, Ordering};

    use super::*;
    use crate::engine::fake::FakeEngine;
    use crate::engine::{EngineError, Op};
    use crate::plan::{Inputs, RegistryAnswer, plan};
    use crate::spec::{ApiVersion, Container, Kind, Metadata};

    const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const D2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

    /// A tiny app whose health answer the test controls.
    async fn app(status: Arc<AtomicU16>) -> u16 {
        app_holding(status, 0).await
    }

    /// [`app`], except that the first `hang` connections are held open and never answered.
    async fn app_holding(status: Arc<AtomicU16>, hang: usize) -> u16 {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = l.local_addr().expect("addr").port();
        tokio::spawn(async move {
            let mut held = Vec::new();
            loop {
                let Ok((mut s, _)) = l.accept().await else {
                    return;
                };
                if held.len() < hang {
                    held.push(s);
                    continue;
                }
                let code = status.load(Ordering::SeqCst);
                tokio::spawn(async move {
                    use tokio::io::{AsyncReadExt, AsyncWriteExt};
                    let mut buf = [0u8; 1024];
                    let _ = s.read(&mut buf).await;
                    let body = format!(r#"{{"healthy":{},"version":"t"}}"#, code == 200);
                    let resp = format!(
                        "HTTP/1.1 {code} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = s.write_all(resp.as_bytes()).await;
                });
            }
        });
        port
    }

    fn object(port: u16, preflight: bool) -> Container {
        container(&format!(
            "image: reg/web:live\nhealth: {{path: /h, port: {port}, intervalSeconds: 1, failureThreshold: 2, startupDeadlineSeconds: 5}}\nupdate: {{preflight: {preflight}}}\n"
        ))
    }

    /// Object `web` with spec `yaml`.
    fn container(yaml: &str) -> Container {
        Container {
            api_version: ApiVersion::V1Alpha1,
            kind: Kind::Container,
            metadata: Metadata {
                name: "web".into(),
                labels: BTreeMap::new(),
                annotations: BTreeMap::new(),
            },
            spec: serde_saphyr::from_str(yaml).expect("spec"),
            status: None,
        }
    }

    /// Runs observe + plan + execute once against the fake.
    async fn reconcile_once(
        engine: &FakeEngine,
        obj: &Container,
        status: &mut ObjectStatus,
    ) -> Outcome {
        let desired = DesiredContainer::build(obj, None).expect("desired");
        let observed = Observed::read(engine, "web", None).await.expect("observe");
        let reg = match engine.registry_digest("reg/web:live", None).await {
            Ok(d) => RegistryAnswer::Digest(d),
            Err(e) => RegistryAnswer::Error(e.to_string()),
        };
        let p = plan(&Inputs {
            desired: &desired,
            observed: &observed,
            memory: status,
            registry: &reg,
            now: Utc::now(),
            window_applies: true,
        });
        Executor::new(engine, &desired, &observed, status, &LogReporter)
            .run(&p)
            .await
    }

    /// Engine with `web` running D1, created through the executor itself.
    async fn running_d1(port: u16, preflight: bool) -> (FakeEngine, Container, ObjectStatus) {
        let engine = FakeEngine::new();
        engine.push("reg/web:live", D1);
        let obj = object(port, preflight);
        let mut status = ObjectStatus::new("web");
        let out = reconcile_once(&engine, &obj, &mut status).await;
        assert_eq!(
            out,
            Outcome::Changed {
                action: "create".into()
            }
        );
        assert_eq!(
            engine.take_calls(),
            vec![
                "pull reg/web@".to_owned() + D1,
                "create web".into(),
                "start web".into()
            ]
        );
        (engine, obj, status)
    }

    /// `web` running D1, then an update to D2 in which the engine's `op` call fails with `error`: the
    /// engine, the object, its status, the ID of the container that ran D1, and the outcome.
    async fn update_failing_at(
        op: Op,
        error: EngineError,
    ) -> (FakeEngine, Container, ObjectStatus, String, Outcome) {
        let port = app(Arc::new(AtomicU16::new(200))).await;
        let (engine, obj, mut status) = running_d1(port, false).await;
        let id = engine.by_name("web").expect("web").id;
        engine.push("reg/web:live", D2);
        engine.fail_next(op, error);
        let out = reconcile_once(&engine, &obj, &mut status).await;
        (engine, obj, status, id, out)
    }

    #[tokio::test]
    async fn good_update_runs_the_whole_sequence() {
        let health = Arc::new(AtomicU16::new(200));
        let port = app(health.clone()).await;
        let (engine, obj, mut status) = running_d1(port, true).await;
        let old_id = engine.by_name("web").expect("web").id;
        engine.push("reg/web:live", D2);
        let out = reconcile_once(&engine, &obj, &mut status).await;
        assert_eq!(
            out,
            Outcome::Changed {
                action: "update".into()
            }
        );
        let calls = engine.take_calls();
        let expect_prefix = ["pull reg/web@".to_owned() + D2];
        assert_eq!(calls[..1], expect_prefix);
        assert!(calls[1].starts_with("create web-preflight-"), "{calls:?}");
        assert!(calls[3].starts_with("remove web-preflight-"), "{calls:?}");
        assert_eq!(
            calls[4..],
            [
                "create web-next",
                "stop web",
                "start web-next",
                "rename web -> web-previous",
                "rename web-next -> web",
                "remove web-previous"
            ]
            .map(String::from)
        );
        assert!(
            !engine.state().containers.contains_key(&old_id),
            "previous removed"
        );
        assert_eq!(status.previous_digest.as_deref(), Some(D1));
        // Converged now: no mutating call.
        assert_eq!(
            reconcile_once(&engine, &obj, &mut status).await,
            Outcome::Converged
        );
        assert!(engine.take_calls().is_empty());
    }

    #[tokio::test]
    async fn failed_health_rolls_back_to_the_same_container() {
        let health = Arc::new(AtomicU16::new(200));
        let port = app(health.clone()).await;
        let (engine, obj, mut status) = running_d1(port, false).await;
        let old_id = engine.by_name("web").expect("web").id;
        engine.push("reg/web:live", D2);
        health.store(500, Ordering::SeqCst);
        let out = reconcile_once(&engine, &obj, &mut status).await;
        assert!(
            matches!(&out, Outcome::RolledBack { phase: Phase::Health, reason } if reason.contains("HTTP 500")),
            "{out:?}"
        );
        assert_eq!(
            engine.take_calls()[1..],
            [
                "create web-next",
                "stop web",
                "start web-next",
                "remove web-next",
                "start web"
            ]
            .map(String::from)
        );
        assert_eq!(
            engine.by_name("web").map(|c| c.id),
            Some(old_id),
            "same container restored"
        );
        assert!(
            status
                .failed_for(
                    D2,
                    &DesiredContainer::build(&obj, None).expect("d").spec_hash
                )
                .is_some()
        );
        // Not retried.
        health.store(200, Ordering::SeqCst);
        assert!(matches!(
            reconcile_once(&engine, &obj, &mut status).await,
            Outcome::Blocked { .. }
        ));
        assert!(engine.take_calls().is_empty());
    }

    #[tokio::test]
    async fn preflight_failure_touches_nothing() {
        let health = Arc::new(AtomicU16::new(200));
        let port = app(health.clone()).await;
        let (engine, obj, mut status) = running_d1(port, true).await;
        engine.push("reg/web:live", D2);
        health.store(401, Ordering::SeqCst);
        let out = reconcile_once(&engine, &obj, &mut status).await;
        assert!(matches!(out, Outcome::Rejected { .. }), "{out:?}");
        let calls = engine.take_calls();
        assert!(
            !calls
                .iter()
                .any(|c| c == "stop web" || c.starts_with("rename")),
            "{calls:?}"
        );
        assert!(
            calls
                .last()
                .is_some_and(|c| c.starts_with("remove web-preflight-")),
            "{calls:?}"
        );
        assert!(engine.by_name("web").is_some_and(|c| c.is_running()));
    }

    #[tokio::test]
    async fn pull_failure_touches_nothing_and_is_not_remembered() {
        let (engine, obj, mut status, _, out) = update_failing_at(
            Op::Pull,
            EngineError::Unreachable {
                op: Op::Pull,
                message: "registry down".into(),
            },
        )
        .await;
        assert!(
            matches!(
                &out,
                Outcome::Failed {
                    phase: Phase::Pull,
                    ..
                }
            ),
            "{out:?}"
        );
        assert!(engine.take_calls().is_empty());
        assert!(status.failed.is_empty(), "transient errors are retried");
        // Next time it works.
        assert_eq!(
            reconcile_once(&engine, &obj, &mut status).await,
            Outcome::Changed {
                action: "update".into()
            }
        );
    }

    #[tokio::test]
    async fn create_failure_touches_nothing() {
        let (engine, _, status, id, out) = update_failing_at(
            Op::Create,
            EngineError::Other {
                op: Op::Create,
                message: "no space left on device".into(),
            },
        )
        .await;
        assert!(
            matches!(
                &out,
                Outcome::Failed {
                    phase: Phase::Create,
                    ..
                }
            ),
            "{out:?}"
        );
        // The new container is created before anything stops: nothing was touched.
        assert!(
            !engine
                .take_calls()
                .iter()
                .any(|c| c.starts_with("stop") || c.starts_with("rename"))
        );
        assert_eq!(
            engine.by_name("web").map(|c| (c.is_running(), c.id)),
            Some((true, id))
        );
        assert!(
            status.failed.is_empty(),
            "engine errors are retried, not remembered"
        );
    }

    #[tokio::test]
    async fn start_failure_restarts_the_old_container_without_blacklisting() {
        let (engine, _, status, id, out) = update_failing_at(
            Op::Start,
            EngineError::Other {
                op: Op::Start,
                message: "port is already allocated".into(),
            },
        )
        .await;
        assert!(
            matches!(
                &out,
                Outcome::RolledBack {
                    phase: Phase::Start,
                    ..
                }
            ),
            "{out:?}"
        );
        assert_eq!(
            engine.take_calls()[1..],
            [
                "create web-next",
                "stop web",
                "remove web-next",
                "start web"
            ]
            .map(String::from)
        );
        assert_eq!(
            engine.by_name("web").map(|c| (c.is_running(), c.id)),
            Some((true, id))
        );
        assert!(engine.by_name("web-previous").is_none() && engine.by_name("web-next").is_none());
        assert!(status.failed.is_empty());
    }

    #[tokio::test]
    async fn crash_after_rename_is_resumed() {
        let health = Arc::new(AtomicU16::new(200));
        let port = app(health).await;
        let (engine, obj, mut status) = running_d1(port, false).await;
        // As if dockop died right after step "rename to previous".
        let id = engine.by_name("web").expect("web").id;
        engine.stop(&id, 1).await.expect("stop");
        engine.rename(&id, "web-previous").await.expect("rename");
        engine.take_calls();
        engine.push("reg/web:live", D2);
        let out = reconcile_once(&engine, &obj, &mut status).await;
        assert_eq!(
            out,
            Outcome::Changed {
                action: "resume".into()
            }
        );
        assert_eq!(
            engine.take_calls()[1..],
            ["create web", "start web", "remove web-previous"].map(String::from)
        );
    }

    /// An app that holds its first `hang` connections without an answer and answers the rest healthy.
    async fn hanging_app(hang: usize) -> u16 {
        app_holding(Arc::new(AtomicU16::new(200)), hang).await
    }

    /// Creates `obj` on an empty fake engine.
    async fn create_once(obj: &Container) -> (Outcome, ObjectStatus) {
        let engine = FakeEngine::new();
        engine.push("reg/web:live", D1);
        let mut status = ObjectStatus::new("web");
        let out = reconcile_once(&engine, obj, &mut status).await;
        (out, status)
    }

    #[tokio::test]
    async fn gate_does_not_wait_on_a_connection_that_is_never_answered() {
        // As OpenCode does early in its start. With a 30 s probe timeout and a 5 s deadline, a gate that
        // waited on the first probe would fail.
        let port = hanging_app(1).await;
        let obj = container(&format!(
            "image: reg/web:live\nhealth: {{path: /h, port: {port}, timeoutSeconds: 30, startupDeadlineSeconds: 5}}\n"
        ));
        let (out, status) = create_once(&obj).await;
        assert_eq!(
            out,
            Outcome::Changed {
                action: "create".into()
            }
        );
        assert_eq!(status.app_version.as_deref(), Some("t"));
    }

    #[tokio::test]
    async fn gate_fails_an_app_that_never_answers() {
        let port = hanging_app(usize::MAX).await;
        let obj = container(&format!(
            "image: reg/web:live\nhealth: {{path: /h, port: {port}, timeoutSeconds: 1, failureThreshold: 2, startupDeadlineSeconds: 30}}\n"
        ));
        let (out, _) = create_once(&obj).await;
        assert!(
            matches!(&out, Outcome::Failed { phase: Phase::Health, reason }
                if reason.contains("2 unhealthy answers in a row") && reason.contains("no answer")),
            "{out:?}"
        );
    }

    fn schedule(interval: u32) -> (ProbeSchedule, Instant) {
        let h = Health {
            path: "/h".into(),
            port: 1,
            interval_seconds: interval,
            timeout_seconds: 2,
            failure_threshold: 3,
            startup_deadline_seconds: 60,
            basic_auth: None,
            http_headers: Vec::new(),
        };
        let t0 = Instant::now();
        (ProbeSchedule::new(&h, t0), t0)
    }

    const UNHEALTHY: ProbeResult = ProbeResult::Unhealthy {
        status: 500,
        excerpt: String::new(),
    };

    fn refused() -> ProbeResult {
        ProbeResult::NotListening {
            message: "refused".into(),
        }
    }

    #[test]
    fn schedule_overlaps_probes_until_the_app_answers() {
        let (mut s, t0) = schedule(1);
        let ms = |n| t0 + Duration::from_millis(n);
        assert!(s.due(t0, 0));
        s.launched(t0);
        // 200 ms later another starts though the first still waits, up to the cap.
        assert!(!s.due(ms(100), 1));
        assert_eq!(s.next_launch(ms(100), 1), Some(ms(200)));
        assert!(s.due(ms(200), 1));
        assert_eq!(s.next_launch(ms(200), MAX_STARTUP_PROBES), None);
        // Once the app answered: one at a time, one per interval.
        s.launched(ms(200));
        assert_eq!(s.record(ms(200), &UNHEALTHY), Tally::Counted(1));
        assert_eq!(s.next_launch(ms(300), 1), None);
        assert_eq!(s.next_launch(ms(300), 0), Some(ms(1200)));
    }

    #[test]
    fn schedule_counts_one_failure_per_interval() {
        let (mut s, t0) = schedule(1);
        let ms = |n| t0 + Duration::from_millis(n);
        // Timeouts of probes started every 200 ms: only those a full interval apart count.
        let tallies: Vec<Tally> = (0..11)
            .map(|i| s.record(ms(i * 200), &ProbeResult::Timeout))
            .collect();
        let counted: Vec<u32> = tallies
            .iter()
            .filter_map(|t| match t {
                Tally::Counted(n) => Some(*n),
                _ => None,
            })
            .collect();
        assert_eq!(counted, [1, 2, 3]);
        assert_eq!(tallies[5], Tally::Counted(2));
        assert_eq!(tallies[10], Tally::Counted(3));
    }

    #[test]
    fn schedule_not_listening_ends_a_run_but_stale_results_do_not() {
        let (mut s, t0) = schedule(1);
        let ms = |n| t0 + Duration::from_millis(n);
        assert_eq!(s.record(ms(0), &ProbeResult::Timeout), Tally::Counted(1));
        assert_eq!(s.record(ms(1000), &ProbeResult::Timeout), Tally::Counted(2));
        // A probe started later found nothing listening: the run ends.
        assert_eq!(s.record(ms(1400), &refused()), Tally::Uncounted);
        // A timeout of a probe started before that is stale.
        assert_eq!(s.record(ms(1200), &ProbeResult::Timeout), Tally::Uncounted);
        // A not-listening of a probe started before the last counted failure does not end the run.
        assert_eq!(s.record(ms(1600), &UNHEALTHY), Tally::Counted(1));
        assert_eq!(s.record(ms(1500), &refused()), Tally::Uncounted);
        assert_eq!(s.record(ms(2600), &UNHEALTHY), Tally::Counted(2));
        assert_eq!(
            s.record(ms(2800), &ProbeResult::Healthy { version: None }),
            Tally::Healthy
        );
    }
}
