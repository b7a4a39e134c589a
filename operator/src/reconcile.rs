//! One reconcile of one object: build the desired state, observe, ask the registry, plan, execute, and
//! write status. Shared by `plan`, `apply`, `rollback` and the controller.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use serde::Serialize;

use crate::desired::{DesiredContainer, DesiredError};
use crate::engine::{ContainerInfo, Engine, EngineError, auth};
use crate::execute::{Executor, Outcome, Phase, Reporter};
use crate::health::{ProbeResult, probe_container};
use crate::observe::{Observed, digest_of};
use crate::plan::{BlockReason, Inputs, Plan, RegistryAnswer, plan};
use crate::spec::Container;
use crate::status::{ConditionType, ObjectStatus, Reason, Store, StoreError};
use crate::switch::{SwitchClient, SwitchError};
use crate::telemetry::Metrics;

/// What a reconcile needs.
#[derive(Clone)]
pub struct Ctx {
    /// The engine.
    pub engine: Arc<dyn Engine>,
    /// The state directory.
    pub store: Store,
    /// Where progress lines go.
    pub reporter: Arc<dyn Reporter>,
    /// Where reconciles, engine calls and probes are counted (one registry, built by the front end).
    pub metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Ctx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ctx")
            .field("engine", &self.engine)
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

/// Options of one reconcile.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Plan only.
    pub dry_run: bool,
    /// Reuse a registry answer younger than this (`None`: always ask).
    pub registry_max_age: Option<Duration>,
    /// Source revision being applied.
    pub revision: Option<String>,
}

/// Why a reconcile could not even plan.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ReconcileError {
    /// Building the desired state (env files).
    #[error("{0}")]
    Desired(#[from] DesiredError),
    /// Observing the engine.
    #[error("observe: {0}")]
    Observe(EngineError),
    /// Writing status (shared: reports are cloned).
    #[error("{0}")]
    State(Arc<StoreError>),
    /// Asking `dockop proxy` for a start-first object's route.
    #[error("{0}")]
    Proxy(#[from] SwitchError),
}

impl From<StoreError> for ReconcileError {
    fn from(e: StoreError) -> Self {
        ReconcileError::State(Arc::new(e))
    }
}

/// The result of one reconcile.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Object name.
    pub name: String,
    /// The plan.
    pub plan: Plan,
    /// How execution ended (`None` for a dry run).
    pub outcome: Option<Outcome>,
    /// Seconds taken.
    pub seconds: f64,
    /// The desired target failed before and something else runs (rolled back, restored, held off).
    pub target_failed: bool,
    /// The app version the active container reports (status `appVersion`), after the reconcile.
    pub app_version: Option<String>,
}

impl Report {
    /// True when the object ends converged: nothing failed and nothing is blocked by a failure.
    pub fn converged(&self) -> bool {
        if self.target_failed {
            return false;
        }
        match &self.outcome {
            Some(Outcome::Converged | Outcome::Changed { .. }) => true,
            Some(Outcome::Blocked { reason, .. }) => *reason == BlockReason::MonitorOnly,
            _ => false,
        }
    }
}

async fn registry_answer(
    ctx: &Ctx,
    d: &DesiredContainer,
    status: &mut ObjectStatus,
    max_age: Option<Duration>,
) -> RegistryAnswer {
    if d.spec.digest.is_some() {
        return RegistryAnswer::NotAsked;
    }
    let tag = d.tag_reference().to_owned();
    if let (Some(age), Some(at), Some(dg)) =
        (max_age, status.registry_checked_at, &status.registry_digest)
        && status.registry_reference.as_deref() == Some(tag.as_str())
        && Utc::now()
            .signed_duration_since(at)
            .to_std()
            .is_ok_and(|a| a < age)
    {
        return RegistryAnswer::Digest(dg.clone());
    }
    let creds = match auth::credentials_for_host(d.registry_host()).await {
        Ok(c) => c,
        Err(e) => return RegistryAnswer::Error(e.to_string()),
    };
    let m = ctx.metrics.as_ref();
    match ctx.engine.registry_digest(&tag, creds.as_ref()).await {
        Ok(dg) => {
            m.registry_checks_total
                .get_or_create(&vec![("result", "success".to_owned())])
                .inc();
            status.registry_digest = Some(dg.clone());
            status.registry_reference = Some(tag.clone());
            status.registry_checked_at = Some(Utc::now());
            RegistryAnswer::Digest(dg)
        }
        Err(e) => {
            let result = match &e {
                EngineError::Unauthorized { .. } => "unauthorized",
                EngineError::NotFound { .. } => "not_found",
                _ => "error",
            };
            m.registry_checks_total
                .get_or_create(&vec![("result", result.to_owned())])
                .inc();
            let host = d.registry_host();
            let msg = match e {
                EngineError::Unauthorized { message, .. } => format!(
                    "registry {host} refused access ({message}); fix: `docker login {host}` as the user dockop runs as (dockop reads $DOCKER_CONFIG/config.json or ~/.docker/config.json, with credential helpers)"
                ),
                EngineError::NotFound { message, .. } => format!(
                    "{tag} is not in the registry ({message}); check the image name and tag"
                ),
                other => other.to_string(),
            };
            RegistryAnswer::Error(msg)
        }
    }
}

/// Reconciles one object.
#[tracing::instrument(skip_all, fields(object = %obj.metadata.name))]
pub async fn reconcile(
    ctx: &Ctx,
    obj: &Container,
    all: Option<&[ContainerInfo]>,
    opts: &Options,
) -> Result<Report, ReconcileError> {
    let started = Instant::now();
    let name = obj.metadata.name.clone();
    let m = ctx.metrics.as_ref();
    let mut status = ctx.store.load(&name);
    let result: Result<_, ReconcileError> = async {
        let desired = DesiredContainer::load(obj, ctx.store.spec_hash_key()).await?;
        let mut observed = Observed::read(ctx.engine.as_ref(), &name, all)
            .await
            .map_err(ReconcileError::Observe)?;
        let switch = SwitchClient::in_state_dir(ctx.store.dir());
        if desired.start_first() {
            // Without a proxy nothing is touched: the error says how to start one.
            observed.route = switch.route(&name).await?;
        }
        let registry = registry_answer(ctx, &desired, &mut status, opts.registry_max_age).await;
        let p = plan(&Inputs {
            desired: &desired,
            observed: &observed,
            memory: &status,
            registry: &registry,
            now: Utc::now(),
            window_applies: true,
        });
        if opts.dry_run {
            return Ok((desired, p, None));
        }
        if !p.held {
            status.hold = None;
        }
        let outcome = Executor::new(
            ctx.engine.as_ref(),
            &desired,
            &observed,
            &mut status,
            ctx.reporter.as_ref(),
            &ctx.metrics,
        )
        .with_store(&ctx.store)
        .with_switch(&switch)
        .run(&p)
        .await;
        Ok((desired, p, Some(outcome)))
    }
    .await;
    let seconds = started.elapsed().as_secs_f64();
    m.reconcile_duration_seconds
        .get_or_create(&vec![("name", name.clone())])
        .observe(seconds);
    let (desired, p, outcome) = match result {
        Ok(v) => v,
        Err(e) => {
            Metrics::inc(&m.reconcile_total, &name, "result", "error");
            if !opts.dry_run {
                let now = Utc::now();
                status.last_error = Some(e.to_string());
                status.last_reconcile = Some(now);
                let reason = match &e {
                    ReconcileError::Desired(_) => Reason::SpecUnresolvable,
                    ReconcileError::Observe(_) => Reason::EngineUnavailable,
                    ReconcileError::State(_) => Reason::StateUnwritable,
                    ReconcileError::Proxy(_) => Reason::ProxyUnavailable,
                };
                status.set_condition(ConditionType::Degraded, true, reason, &e.to_string(), now);
                ctx.store.save(&status)?;
            }
            return Err(e);
        }
    };
    let Some(outcome) = outcome else {
        return Ok(Report {
            name,
            plan: p,
            outcome: None,
            seconds,
            target_failed: false,
            app_version: None,
        });
    };
    Metrics::inc(&m.reconcile_total, &name, "result", outcome.result_label());
    let target_failed = finish_status(ctx, obj, &desired, &p, &outcome, &mut status, opts).await;
    ctx.store.save(&status)?;
    Ok(Report {
        name,
        plan: p,
        outcome: Some(outcome),
        seconds,
        target_failed,
        app_version: status.app_version.clone(),
    })
}

/// Fills status from the outcome and a final look at the container; updates the per-object metrics.
async fn finish_status(
    ctx: &Ctx,
    obj: &Container,
    desired: &DesiredContainer,
    p: &Plan,
    outcome: &Outcome,
    status: &mut ObjectStatus,
    opts: &Options,
) -> bool {
    let now = Utc::now();
    let m = ctx.metrics.as_ref();
    let name = desired.name.as_str();
    status.image = obj.spec.image.clone();
    status.spec_hash = Some(desired.spec_hash.clone());
    status.desired_digest = p.target_digest.clone();
    status.last_reconcile = Some(now);
    if opts.revision.is_some() {
        status.revision = opts.revision.clone();
    }
    // status.users is written by the users pass (what the container really has).
    let active = ctx
        .engine
        .inspect(name)
        .await
        .ok()
        .flatten()
        .filter(|c| c.label(crate::engine::LABEL_NAME) == Some(name));
    status.container_id = active.as_ref().map(|c| c.id.clone());
    status.container_state = active.as_ref().map(|c| c.state.to_string());
    status.current_digest = active.as_ref().and_then(digest_of).map(str::to_owned);
    // Ready: the active container answers healthy now.
    let probe = match (&active, &obj.spec.health) {
        (Some(c), Some(h)) if c.is_running() => {
            probe_container(c, &desired.spec.ports, h, &desired.probe_auth).await
        }
        (Some(c), None) if c.is_running() => ProbeResult::Healthy { version: None },
        (Some(c), _) => ProbeResult::NotListening {
            message: format!("container is {}", c.state),
        },
        (None, _) => ProbeResult::NotListening {
            message: "no container".into(),
        },
    };
    if let ProbeResult::Healthy { version: Some(v) } = &probe {
        status.app_version = Some(v.clone());
    }
    let healthy = probe.is_healthy();
    let ready = if healthy {
        Reason::Healthy
    } else {
        Reason::Unhealthy
    };
    status.set_condition(ConditionType::Ready, healthy, ready, &probe.describe(), now);
    // A target that failed before while something else serves (restored after a crash mid-rollback,
    // or kept): the object is not where the spec wants it.
    let failed_target = p
        .target_digest
        .as_ref()
        .filter(|t| status.current_digest.as_ref() != Some(*t))
        .and_then(|t| status.failed_for(t, &desired.spec_hash))
        .map(|f| {
            format!(
                "{} failed: {}; the previous version serves",
                crate::plan::short(&f.digest),
                f.reason
            )
        });
    let kept = status
        .condition(ConditionType::Degraded)
        .filter(|c| c.status)
        .map(|c| &c.reason);
    let Degraded {
        degraded,
        reason,
        message,
    } = degraded(outcome, kept, failed_target.as_deref());
    status.set_condition(ConditionType::Degraded, degraded, reason, &message, now);
    status.last_error = degraded.then(|| message.clone());
    // Same rule as the health monitor: ready = the active container answers healthy now.
    m.set_ready(name, healthy);
    let info_labels = vec![
        ("name", name.to_owned()),
        ("image", obj.spec.image.clone()),
        ("digest", status.current_digest.clone().unwrap_or_default()),
        (
            "app_version",
            status.app_version.clone().unwrap_or_default(),
        ),
    ];
    m.set_object_info(&info_labels);
    if outcome.is_success() {
        m.last_successful_reconcile
            .get_or_create(&vec![("name", name.to_owned())])
            .set(now.timestamp_millis() as f64 / 1000.0);
    }
    failed_target.is_some()
}

/// The Degraded condition an outcome sets.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Degraded {
    degraded: bool,
    reason: Reason,
    message: String,
}

/// Computes the Degraded condition from `outcome`. `kept` is the reason of the Degraded condition now
/// true, if any; `failed_target` says why the target failed before while something else serves.
fn degraded(outcome: &Outcome, kept: Option<&Reason>, failed_target: Option<&str>) -> Degraded {
    let (degraded, reason, message) = match outcome {
        Outcome::Converged | Outcome::Changed { .. } => (false, Reason::AsExpected, String::new()),
        Outcome::RolledBack { phase, reason } => (
            true,
            Reason::RolledBack,
            format!("{}: {reason}", phase.as_str()),
        ),
        Outcome::Rejected { reason } => (true, Reason::Failed(Phase::Preflight), reason.clone()),
        Outcome::Failed { phase, reason } => (true, Reason::Failed(*phase), reason.clone()),
        Outcome::Blocked {
            reason: BlockReason::MonitorOnly,
            message,
        } => (false, Reason::MonitorOnly, message.clone()),
        Outcome::Blocked {
            reason: BlockReason::FailedTarget,
            message,
        } => {
            // Keep the reason of the failure that put the target on the list (RolledBack,
            // PreflightFailed); the message (which names that failure) is rebuilt each time, never
            // appended to, so it stays the same across resyncs.
            let reason = kept
                .filter(|r| **r != Reason::FailedTarget)
                .cloned()
                .unwrap_or(Reason::FailedTarget);
            (true, reason, message.clone())
        }
        Outcome::Blocked { reason, message } => (true, reason.reason(), message.clone()),
    };
    match (failed_target, degraded) {
        (Some(msg), false) => Degraded {
            degraded: true,
            reason: Reason::RolledBack,
            message: msg.to_owned(),
        },
        _ => Degraded {
            degraded,
            reason,
            message,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::fake::FakeEngine;
    use crate::execute::LogReporter;
    use crate::testing;

    const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const D2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

    fn object(image: &str) -> Container {
        testing::object("web").image(image).build()
    }

    #[tokio::test]
    async fn cached_registry_digest_is_only_reused_for_its_own_reference() {
        let engine = FakeEngine::new();
        engine.push("reg/web:1", D1);
        engine.push("reg/web:2", D2);
        let dir = tempfile::tempdir().expect("tempdir");
        let ctx = Ctx {
            engine: Arc::new(engine),
            store: Store::open(dir.path()).expect("store"),
            reporter: Arc::new(LogReporter),
            metrics: Arc::default(),
        };
        let cached = Options {
            registry_max_age: Some(Duration::from_secs(300)),
            ..Default::default()
        };
        let r = reconcile(&ctx, &object("reg/web:1"), None, &cached)
            .await
            .expect("reconcile");
        assert_eq!(r.plan.target_digest.as_deref(), Some(D1));
        // The image is edited: the cached answer for reg/web:1 must not be used for reg/web:2.
        let dry = Options {
            dry_run: true,
            ..cached
        };
        let r = reconcile(&ctx, &object("reg/web:2"), None, &dry)
            .await
            .expect("plan");
        assert_eq!(r.plan.target_digest.as_deref(), Some(D2));
        // Same reference within the interval: the cache answers (the registry moved, the cache did not).
        let r = reconcile(&ctx, &object("reg/web:1"), None, &dry)
            .await
            .expect("plan");
        assert_eq!(r.plan.target_digest.as_deref(), Some(D1));
    }

    #[test]
    fn degraded_is_computed_from_the_outcome() {
        let blocked = |reason| Outcome::Blocked {
            reason,
            message: "m".into(),
        };
        let d = degraded(&blocked(BlockReason::MonitorOnly), None, None);
        assert_eq!((d.degraded, d.reason), (false, Reason::MonitorOnly));
        // A failed target keeps the reason of the failure that put it on the list.
        let d = degraded(
            &blocked(BlockReason::FailedTarget),
            Some(&Reason::RolledBack),
            None,
        );
        assert_eq!((d.degraded, d.reason), (true, Reason::RolledBack));
        let d = degraded(&blocked(BlockReason::FailedTarget), None, None);
        assert_eq!(d.reason, Reason::FailedTarget);
        let failed = Outcome::Failed {
            phase: Phase::Pull,
            reason: "down".into(),
        };
        assert_eq!(degraded(&failed, None, None).reason.as_str(), "PullFailed");
        // Converged, but a failed target while the previous version serves is still degraded.
        let d = degraded(&Outcome::Converged, None, Some("x failed"));
        assert_eq!((d.degraded, d.reason), (true, Reason::RolledBack));
    }
}
