//! The executor: walks a [`Plan`] step by step through the [`Engine`] — the only code that changes
//! anything on the engine — with preflight, the health gate ([`gate`]) and automatic rollback.
//!
//! Each step either succeeds or fails with a [`StepError`] naming its [`Phase`]. What a failure must undo
//! is one value, [`Fallback`], moved forward by the steps: a failure before anything serving was changed
//! (pull, preflight, a start-first candidate before the switch) touches nothing; a failure after it
//! (create, start, users, health gate) removes the new container and restores the old one — the same
//! container, same ID — and records the target (digest + spec hash) as failed when the app itself said no
//! (an unhealthy answer, an exit), so it is not retried until the spec or the registry digest changes.

pub mod gate;

use std::time::Instant;

use chrono::Utc;
use serde::Serialize;

use crate::desired::DesiredContainer;
use crate::engine::{Engine, EngineError, auth};
use crate::observe::{NEXT_SUFFIX, Observed, PREVIOUS_SUFFIX};
use crate::plan::{Action, BlockReason, Plan, Step, short};
use crate::spec::RollbackPolicy;
use crate::status::{
    Change, ChangeAction, ChangeResult, ConditionType, ObjectStatus, Reason, Store,
};
use crate::switch::{SwitchClient, SwitchError};
use crate::telemetry::Metrics;
use crate::users;

pub use crate::status::Phase;
pub use gate::{Gate, GateError, HttpProber, Passed, Prober};

/// How a plan's execution ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    /// Nothing needed doing.
    Converged,
    /// A change was made and passed the health gate.
    Changed {
        /// What was done.
        action: ChangeAction,
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
        /// Why not.
        reason: BlockReason,
        /// Why, for people.
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

/// Why a step failed: its [`Phase`] and the cause. Only [`StepError::Gate`] with the app's own verdict
/// makes the target remembered as failed.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    /// An engine call failed.
    #[error("{source}")]
    Engine {
        /// The phase it failed in.
        phase: Phase,
        /// The engine's error.
        source: EngineError,
    },
    /// The health gate (or preflight's gate) said no.
    #[error("{source}")]
    Gate {
        /// [`Phase::Health`] or [`Phase::Preflight`].
        phase: Phase,
        /// The gate's verdict.
        source: GateError,
    },
    /// The registry credentials could not be read.
    #[error("{0}")]
    Credentials(#[from] auth::AuthError),
    /// Users inside the container could not be reconciled at all.
    #[error("{0}")]
    Users(#[from] users::UsersError),
    /// Some users were left unapplied (the others were applied).
    #[error("{0}")]
    UsersLeft(users::UserFailures),
    /// `dockop proxy` did not switch the route.
    #[error("{0}")]
    Switch(#[from] SwitchError),
    /// A start-first step ran without a proxy client.
    #[error("start-first needs dockop proxy, and this command has no proxy client")]
    NoProxyClient,
    /// The container to route to has no bridge address.
    #[error("the new container has no bridge IP address to route to")]
    NoRouteAddress,
    /// A step needs a container and there is none.
    #[error("no container to act on")]
    NoTarget,
}

impl StepError {
    /// The phase that failed.
    pub fn phase(&self) -> Phase {
        match self {
            StepError::Engine { phase, .. } | StepError::Gate { phase, .. } => *phase,
            StepError::Credentials(_) => Phase::Credentials,
            StepError::Users(_) | StepError::UsersLeft(_) => Phase::Users,
            StepError::Switch(_) | StepError::NoProxyClient | StepError::NoRouteAddress => {
                Phase::Switch
            }
            StepError::NoTarget => Phase::Start,
        }
    }

    /// True when the app itself said no (an unhealthy answer, an exit): the target is not retried.
    pub fn is_app_verdict(&self) -> bool {
        matches!(self, StepError::Gate { source, .. } if source.is_app_verdict())
    }
}

fn engine_err(phase: Phase) -> impl Fn(EngineError) -> StepError {
    move |source| StepError::Engine { phase, source }
}

/// Why a rollback failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RollbackError {
    /// An engine call failed while removing the candidate or restoring the old container.
    #[error("{0}")]
    Engine(#[from] EngineError),
    /// Nothing to restore.
    #[error("nothing to roll back to")]
    NothingToRestore,
}

/// The container a rollback brings back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RestoreTo {
    /// `<name>-previous` (kept by this update or an interrupted one): renamed back and started.
    Previous(String),
    /// The active container this run stopped, still under the object's name: started again.
    Stopped(String),
}

/// The executor's rollback state: what a failure from here on must undo. It starts from what was
/// observed and only moves forward with the steps ([`Fallback::touch`], [`Fallback::kept`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fallback {
    /// Nothing that serves has been changed: a failure leaves the running container alone (a start-first
    /// candidate is removed). `previous` is a `<name>-previous` container that exists, if any.
    Untouched {
        /// The container kept as `<name>-previous`.
        previous: Option<String>,
    },
    /// Something serving was changed (stopped, renamed, removed, switched), or the object was already
    /// mid-change when this run began: a failure must bring this container back.
    Restore(RestoreTo),
    /// Something serving was changed and nothing is left to go back to: a failure is final.
    Exposed,
}

impl Fallback {
    /// The state at the start of a run: already mid-change (`resuming`) or not.
    fn at_start(previous: Option<String>, resuming: bool) -> Self {
        match (previous, resuming) {
            (previous, false) => Fallback::Untouched { previous },
            (Some(p), true) => Fallback::Restore(RestoreTo::Previous(p)),
            (None, true) => Fallback::Exposed,
        }
    }

    /// Something serving was changed: a kept previous container becomes the one to restore.
    fn touch(&mut self) {
        if let Fallback::Untouched { previous } = self {
            *self = match previous.take() {
                Some(p) => Fallback::Restore(RestoreTo::Previous(p)),
                None => Fallback::Exposed,
            };
        }
    }

    /// The running container `id` was stopped under its name: restore it unless a previous one is kept.
    fn stopped(&mut self, id: &str) {
        self.touch();
        if *self == Fallback::Exposed {
            *self = Fallback::Restore(RestoreTo::Stopped(id.to_owned()));
        }
    }

    /// Container `id` is now kept as `<name>-previous`.
    fn kept(&mut self, id: &str) {
        *self = match self {
            Fallback::Untouched { .. } => Fallback::Untouched {
                previous: Some(id.to_owned()),
            },
            _ => Fallback::Restore(RestoreTo::Previous(id.to_owned())),
        };
    }

    /// Container `id` (kept as `<name>-previous`) is gone or serves again.
    fn released(&mut self, id: &str) {
        match self {
            Fallback::Untouched { previous } if previous.as_deref() == Some(id) => {
                *previous = None;
            }
            Fallback::Restore(RestoreTo::Previous(p)) if p == id => *self = Fallback::Exposed,
            _ => {}
        }
    }

    fn is_touched(&self) -> bool {
        !matches!(self, Fallback::Untouched { .. })
    }
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
    /// What a failure must undo.
    fallback: Fallback,
    /// A passed preflight candidate, removed concurrently with the next step.
    pending_removal: Option<String>,
    /// Where status is saved at the points a crash must not lose (a target recorded as failed).
    store: Option<&'a Store>,
    /// The admin client of `dockop proxy`, for start-first objects.
    switch: Option<&'a SwitchClient>,
    /// Who probes the health path ([`HttpProber`] unless [`Executor::with_prober`]).
    prober: Option<&'a dyn Prober>,
    /// Where updates, rollbacks, drift and probe failures are counted.
    metrics: &'a Metrics,
}

impl std::fmt::Debug for Executor<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Executor")
            .field("object", &self.desired.name)
            .field("candidate", &self.candidate)
            .field("fallback", &self.fallback)
            .finish_non_exhaustive()
    }
}

type StepResult = Result<(), StepError>;

impl<'a> Executor<'a> {
    /// An executor for one object.
    pub fn new(
        engine: &'a dyn Engine,
        desired: &'a DesiredContainer,
        observed: &'a Observed,
        status: &'a mut ObjectStatus,
        reporter: &'a dyn Reporter,
        metrics: &'a Metrics,
    ) -> Self {
        Self {
            metrics,
            engine,
            desired,
            observed,
            status,
            reporter,
            candidate: None,
            fallback: Fallback::Untouched { previous: None },
            store: None,
            switch: None,
            pending_removal: None,
            prober: None,
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

    /// Probes through `prober` instead of HTTP (tests script the app's answers).
    pub fn with_prober(mut self, prober: &'a dyn Prober) -> Self {
        self.prober = Some(prober);
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
        // Resuming or restoring means the object is already mid-change: a failure must roll back.
        let resuming = matches!(plan.action, Action::Resume | Action::Restore)
            || (self.observed.active.is_none() && self.observed.previous.is_some());
        self.fallback = Fallback::at_start(
            self.observed.previous.as_ref().map(|c| c.id.clone()),
            resuming,
        );
        if matches!(plan.action, Action::Resume | Action::Start | Action::Switch) {
            self.candidate = self.observed.active.as_ref().map(|c| c.id.clone());
        }
        let m = self.metrics;
        for kind in &plan.drift {
            Metrics::inc(&m.drift_detected_total, self.name(), "kind", kind.as_str());
        }
        if let Action::Blocked { reason, message } = &plan.action {
            self.cleanup_leftovers(plan).await;
            return Outcome::Blocked {
                reason: *reason,
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
                Reason::Reconciling,
                &what,
                Utc::now(),
            );
        }
        let mut result: StepResult = Ok(());
        for step in &plan.steps {
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
            crate::fault::after_step(step.kind());
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
                let action = change_action(&plan.action);
                if matches!(plan.action, Action::Update | Action::Resume) {
                    Metrics::inc(&m.updates_total, self.name(), "result", "succeeded");
                }
                self.record(
                    plan,
                    action,
                    ChangeResult::Succeeded,
                    plan.notes.join("; "),
                    elapsed,
                );
                Outcome::Changed { action }
            }
            Ok(()) => Outcome::Converged,
            Err(e) if e.phase() == Phase::Preflight => {
                let reason = e.to_string();
                let target = plan.target_digest.clone().unwrap_or_default();
                self.status
                    .record_failed(&target, &self.desired.spec_hash, &reason, Utc::now());
                let result = ChangeResult::RejectedPreflight;
                Metrics::inc(&m.updates_total, self.name(), "result", result.as_str());
                self.record(plan, ChangeAction::Update, result, reason.clone(), elapsed);
                self.say(&format!(
                    "preflight rejected {}: {reason}; the running container was not touched",
                    short(&target)
                ));
                Outcome::Rejected { reason }
            }
            Err(e) => self.fail(plan, e, elapsed).await,
        };
        self.status.set_condition(
            ConditionType::Progressing,
            false,
            Reason::Idle,
            "",
            Utc::now(),
        );
        outcome
    }

    fn record(
        &mut self,
        plan: &Plan,
        action: ChangeAction,
        result: ChangeResult,
        message: String,
        seconds: f64,
    ) {
        self.status.record_change(Change {
            at: Utc::now(),
            action,
            from_digest: plan.current_digest.clone(),
            to_digest: plan.target_digest.clone(),
            result,
            message,
            seconds: (seconds * 1000.0).round() / 1000.0,
        });
        if result == ChangeResult::Succeeded
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

    async fn fail(&mut self, plan: &Plan, error: StepError, elapsed: f64) -> Outcome {
        let m = self.metrics;
        let phase = error.phase();
        let reason = error.to_string();
        let target = plan.target_digest.clone().unwrap_or_default();
        if error.is_app_verdict() {
            self.remember_failed(&target, &reason);
        }
        if self.desired.start_first()
            && !self.fallback.is_touched()
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
        let restore = match &self.fallback {
            Fallback::Restore(to)
                if matches!(
                    plan.action,
                    Action::Update | Action::Resume | Action::Restore
                ) =>
            {
                to.clone()
            }
            _ => {
                if matches!(plan.action, Action::Update | Action::Resume) {
                    Metrics::inc(&m.updates_total, self.name(), "result", "failed");
                }
                self.record(
                    plan,
                    change_action(&plan.action),
                    ChangeResult::Failed,
                    format!("{}: {reason}", phase.as_str()),
                    elapsed,
                );
                self.say(&format!("{} failed: {reason}", phase.as_str()));
                return Outcome::Failed { phase, reason };
            }
        };
        if self.desired.spec.update.rollback == RollbackPolicy::Never {
            Metrics::inc(&m.updates_total, self.name(), "result", "failed");
            let msg = format!(
                "{}: {reason}; rollback is off (update.rollback: never), the failed container is left for inspection",
                phase.as_str()
            );
            self.record(
                plan,
                ChangeAction::Update,
                ChangeResult::Failed,
                msg.clone(),
                elapsed,
            );
            self.say(&msg);
            return Outcome::Failed { phase, reason: msg };
        }
        self.say(&format!(
            "{} failed: {reason}; rolling back",
            phase.as_str()
        ));
        match self.roll_back(restore).await {
            Ok(()) => {
                self.say("rolled back: the previous container serves again");
                self.rolled_back(plan, phase, reason, elapsed)
            }
            Err(e) => {
                Metrics::inc(&m.updates_total, self.name(), "result", "failed");
                let msg = format!("{}: {reason}; rollback failed too: {e}", phase.as_str());
                self.record(
                    plan,
                    ChangeAction::Update,
                    ChangeResult::Failed,
                    msg.clone(),
                    elapsed,
                );
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
        let m = self.metrics;
        let result = ChangeResult::RolledBack;
        Metrics::inc(&m.updates_total, self.name(), "result", result.as_str());
        Metrics::inc(&m.rollbacks_total, self.name(), "reason", phase.as_str());
        self.record(
            plan,
            ChangeAction::Update,
            result,
            format!("{}: {reason}", phase.as_str()),
            elapsed,
        );
        Outcome::RolledBack { phase, reason }
    }

    /// Removes the candidate and brings `to` back under the object's name.
    async fn roll_back(&mut self, to: RestoreTo) -> Result<(), RollbackError> {
        if let Some(id) = self.candidate.take() {
            self.engine.remove(&id, false).await?;
        }
        crate::fault::rollback(crate::fault::Rollback::RemovedCandidate);
        let id = match to {
            RestoreTo::Previous(prev) => {
                self.engine.rename(&prev, self.name()).await?;
                prev
            }
            RestoreTo::Stopped(active) => active,
        };
        self.fallback = Fallback::Exposed;
        crate::fault::rollback(crate::fault::Rollback::RenamedBack);
        self.engine.start(&id).await?;
        crate::fault::rollback(crate::fault::Rollback::Started);
        if let Err(e) = self.apply_users(&id).await {
            tracing::warn!(object = %self.desired.name, error = %e, "users after rollback");
        }
        crate::fault::rollback(crate::fault::Rollback::UsersApplied);
        if let Err(e) = self.gate(&id).await {
            tracing::warn!(object = %self.desired.name, "restored container is not healthy: {e}");
        }
        Ok(())
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
                self.fallback.stopped(id);
                e.stop(id, self.desired.spec.stop_timeout_seconds)
                    .await
                    .map_err(engine_err(Phase::Stop))?;
                Ok(())
            }
            Step::RenameToPrevious { id } => {
                let new = format!("{}{PREVIOUS_SUFFIX}", self.name());
                e.rename(id, &new).await.map_err(engine_err(Phase::Stop))?;
                self.fallback.kept(id);
                Ok(())
            }
            Step::RemoveActive { id } => {
                self.fallback.touch();
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
                    Err(err) => {
                        let exit = match e.inspect(&id).await {
                            Ok(Some(info)) => gate::exited(e, &info).await,
                            _ => None,
                        };
                        Err(match exit {
                            Some(source) => StepError::Gate {
                                phase: Phase::Health,
                                source,
                            },
                            None => StepError::Engine {
                                phase: Phase::Start,
                                source: err,
                            },
                        })
                    }
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
                self.gate(&id).await.map_err(|source| StepError::Gate {
                    phase: Phase::Health,
                    source,
                })
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
                self.fallback.released(id);
                Ok(())
            }
            Step::RestorePrevious { id } => {
                e.rename(id, self.name())
                    .await
                    .map_err(engine_err(Phase::Restore))?;
                e.start(id).await.map_err(engine_err(Phase::Restore))?;
                self.fallback.released(id);
                self.candidate = Some(id.clone());
                Ok(())
            }
        }
    }

    /// Points the proxy's route at the candidate (or active) container and waits for the drain.
    async fn switch_route(&mut self) -> StepResult {
        let id = self.target_id()?;
        let client = self.switch.ok_or(StepError::NoProxyClient)?;
        let ip = self
            .engine
            .inspect(&id)
            .await
            .map_err(engine_err(Phase::Switch))?
            .and_then(|c| c.ip_address)
            .ok_or(StepError::NoRouteAddress)?;
        let route = self.desired.route(&id, &ip);
        let report = client.switch(self.name(), &route).await?;
        // From here the new container serves: a later failure must not remove it.
        self.fallback.touch();
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

    fn target_id(&self) -> Result<String, StepError> {
        self.candidate
            .clone()
            .or_else(|| self.observed.active.as_ref().map(|c| c.id.clone()))
            .ok_or(StepError::NoTarget)
    }

    async fn apply_users(&mut self, id: &str) -> StepResult {
        if self.desired.spec.users.is_empty() && !users::may_have_managed(self.status) {
            return Ok(());
        }
        match users::apply(self.engine, id, self.desired, self.status).await {
            Ok(report) => {
                if report.changed {
                    Metrics::inc(
                        &self.metrics.drift_detected_total,
                        self.name(),
                        "kind",
                        "users",
                    );
                    self.say(&format!("users: {}", report.summary));
                }
                if !report.failures.is_empty() {
                    return Err(StepError::UsersLeft(report.failures));
                }
                Ok(())
            }
            Err(e) => Err(StepError::Users(e)),
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
        let creds = auth::credentials_for_host(self.desired.registry_host()).await?;
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
                self.gate(&id).await.map_err(|source| StepError::Gate {
                    phase: Phase::Preflight,
                    source,
                })
            }
            Err(e) => Err(engine_err(Phase::Preflight)(e)),
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
            Err(e) => {
                self.remove_preflight(&id).await;
                Err(e)
            }
        }
    }

    async fn remove_preflight(&self, id: &str) {
        if let Err(e) = self.engine.remove(id, true).await {
            tracing::warn!(container = %id, error = %e, "cannot remove the preflight container; removed at the next reconcile");
        }
    }

    /// Runs the health gate on container `id`; a healthy answer's version becomes the status's.
    async fn gate(&mut self, id: &str) -> Result<(), GateError> {
        let http = HttpProber {
            ports: &self.desired.spec.ports,
            auth: &self.desired.probe_auth,
        };
        let gate = Gate {
            engine: self.engine,
            health: self.desired.spec.health.as_ref(),
            prober: self.prober.unwrap_or(&http),
            name: &self.desired.name,
            metrics: self.metrics,
        };
        if let Passed::Healthy(version) = gate.run(id).await? {
            self.status.app_version = version;
        }
        Ok(())
    }
}

fn change_action(a: &Action) -> ChangeAction {
    match a {
        Action::Create => ChangeAction::Create,
        Action::Start => ChangeAction::Start,
        Action::Update => ChangeAction::Update,
        Action::Resume => ChangeAction::Resume,
        Action::Restore => ChangeAction::Restore,
        Action::Switch => ChangeAction::Switch,
        Action::Nothing | Action::Blocked { .. } => ChangeAction::None,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU16, Ordering};

    use super::*;
    use crate::engine::fake::FakeEngine;
    use crate::engine::{EngineError, Op};
    use crate::plan::{Inputs, RegistryAnswer, plan};
    use crate::spec::Container;
    use crate::testing;

    const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const D2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

    /// The app's health answer, set by the test: 200 healthy (version `t`), 401/403 denied, else
    /// unhealthy with that status.
    struct App(Arc<AtomicU16>);

    #[async_trait::async_trait]
    impl Prober for App {
        async fn probe(
            &self,
            _info: &crate::engine::ContainerInfo,
            _h: &crate::spec::Health,
        ) -> crate::health::ProbeResult {
            use crate::health::ProbeResult;
            match self.0.load(Ordering::SeqCst) {
                200 => ProbeResult::Healthy {
                    version: Some("t".into()),
                },
                status @ (401 | 403) => ProbeResult::Denied { status, sent: None },
                status => ProbeResult::Unhealthy {
                    status,
                    excerpt: String::new(),
                },
            }
        }
    }

    fn object(preflight: bool) -> Container {
        testing::object("web")
            .image("reg/web:live")
            .health(
                "/h",
                80,
                "intervalSeconds: 1, failureThreshold: 2, startupDeadlineSeconds: 5",
            )
            .spec(&format!("update: {{preflight: {preflight}}}"))
            .build()
    }

    /// Runs observe + plan + execute once against the fake.
    async fn reconcile_once(
        engine: &FakeEngine,
        obj: &Container,
        status: &mut ObjectStatus,
        health: &Arc<AtomicU16>,
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
        let app = App(health.clone());
        let metrics = Metrics::new();
        Executor::new(engine, &desired, &observed, status, &LogReporter, &metrics)
            .with_prober(&app)
            .run(&p)
            .await
    }

    /// Engine with `web` running D1, created through the executor itself.
    async fn running_d1(
        health: &Arc<AtomicU16>,
        preflight: bool,
    ) -> (FakeEngine, Container, ObjectStatus) {
        let engine = FakeEngine::new();
        engine.push("reg/web:live", D1);
        let obj = object(preflight);
        let mut status = ObjectStatus::new("web");
        let out = reconcile_once(&engine, &obj, &mut status, health).await;
        assert_eq!(
            out,
            Outcome::Changed {
                action: ChangeAction::Create
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
        let health = Arc::new(AtomicU16::new(200));
        let (engine, obj, mut status) = running_d1(&health, false).await;
        let id = engine.by_name("web").expect("web").id;
        engine.push("reg/web:live", D2);
        engine.fail_next(op, error);
        let out = reconcile_once(&engine, &obj, &mut status, &health).await;
        (engine, obj, status, id, out)
    }

    #[tokio::test(start_paused = true)]
    async fn good_update_runs_the_whole_sequence() {
        let health = Arc::new(AtomicU16::new(200));
        let (engine, obj, mut status) = running_d1(&health, true).await;
        let old_id = engine.by_name("web").expect("web").id;
        engine.push("reg/web:live", D2);
        let out = reconcile_once(&engine, &obj, &mut status, &health).await;
        assert_eq!(
            out,
            Outcome::Changed {
                action: ChangeAction::Update
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
            reconcile_once(&engine, &obj, &mut status, &health).await,
            Outcome::Converged
        );
        assert!(engine.take_calls().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn failed_health_rolls_back_to_the_same_container() {
        let health = Arc::new(AtomicU16::new(200));
        let (engine, obj, mut status) = running_d1(&health, false).await;
        let old_id = engine.by_name("web").expect("web").id;
        engine.push("reg/web:live", D2);
        health.store(500, Ordering::SeqCst);
        let out = reconcile_once(&engine, &obj, &mut status, &health).await;
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
            reconcile_once(&engine, &obj, &mut status, &health).await,
            Outcome::Blocked { .. }
        ));
        assert!(engine.take_calls().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn preflight_failure_touches_nothing() {
        let health = Arc::new(AtomicU16::new(200));
        let (engine, obj, mut status) = running_d1(&health, true).await;
        engine.push("reg/web:live", D2);
        health.store(401, Ordering::SeqCst);
        let out = reconcile_once(&engine, &obj, &mut status, &health).await;
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

    #[tokio::test(start_paused = true)]
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
        let health = Arc::new(AtomicU16::new(200));
        assert_eq!(
            reconcile_once(&engine, &obj, &mut status, &health).await,
            Outcome::Changed {
                action: ChangeAction::Update
            }
        );
    }

    #[tokio::test(start_paused = true)]
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

    #[tokio::test(start_paused = true)]
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

    #[tokio::test(start_paused = true)]
    async fn crash_after_rename_is_resumed() {
        let health = Arc::new(AtomicU16::new(200));
        let (engine, obj, mut status) = running_d1(&health, false).await;
        // As if dockop died right after step "rename to previous".
        let id = engine.by_name("web").expect("web").id;
        engine.stop(&id, 1).await.expect("stop");
        engine.rename(&id, "web-previous").await.expect("rename");
        engine.take_calls();
        engine.push("reg/web:live", D2);
        let out = reconcile_once(&engine, &obj, &mut status, &health).await;
        assert_eq!(
            out,
            Outcome::Changed {
                action: ChangeAction::Resume
            }
        );
        assert_eq!(
            engine.take_calls()[1..],
            ["create web", "start web", "remove web-previous"].map(String::from)
        );
    }

    #[test]
    fn fallback_moves_forward_with_the_steps() {
        // Stop-first update without a previous container: stop, rename, remove.
        let mut f = Fallback::at_start(None, false);
        assert!(!f.is_touched());
        f.stopped("old");
        assert_eq!(f, Fallback::Restore(RestoreTo::Stopped("old".into())));
        f.kept("old");
        assert_eq!(f, Fallback::Restore(RestoreTo::Previous("old".into())));
        f.released("old");
        assert_eq!(f, Fallback::Exposed);
        // A kept previous container is what a stop restores, not the stopped one.
        let mut f = Fallback::at_start(Some("prev".into()), false);
        f.stopped("active");
        assert_eq!(f, Fallback::Restore(RestoreTo::Previous("prev".into())));
        // Resuming with only the previous container: restore it; without one, nothing to go back to.
        assert_eq!(
            Fallback::at_start(Some("prev".into()), true),
            Fallback::Restore(RestoreTo::Previous("prev".into()))
        );
        assert_eq!(Fallback::at_start(None, true), Fallback::Exposed);
        // Removing a kept previous container before anything is touched leaves nothing to restore.
        let mut f = Fallback::at_start(Some("prev".into()), false);
        f.released("prev");
        f.touch();
        assert_eq!(f, Fallback::Exposed);
    }

    #[test]
    fn step_errors_name_their_phase_and_only_the_app_verdict_is_remembered() {
        let gate = StepError::Gate {
            phase: Phase::Health,
            source: GateError::Deadline {
                seconds: 5,
                last: "none finished".into(),
            },
        };
        assert_eq!(gate.phase(), Phase::Health);
        assert!(gate.is_app_verdict());
        let engine = StepError::Engine {
            phase: Phase::Pull,
            source: EngineError::Other {
                op: Op::Pull,
                message: "registry down".into(),
            },
        };
        assert_eq!(engine.phase(), Phase::Pull);
        assert!(!engine.is_app_verdict());
        let gone = StepError::Gate {
            phase: Phase::Preflight,
            source: GateError::Disappeared,
        };
        assert!(!gone.is_app_verdict());
        assert_eq!(StepError::NoProxyClient.phase(), Phase::Switch);
        assert_eq!(StepError::NoTarget.to_string(), "no container to act on");
    }
}
