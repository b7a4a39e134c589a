//! The planner, pure: (desired, observed, memory, registry answer, clock) -> [`Plan`]. No I/O; every case
//! is a row in the table tests below. The executor ([`crate::execute`]) walks the steps.
//!
//! Recovery is the same code as normal work: a plan always starts from what is observed, so a dockop killed
//! between any two steps of an update finds `<name>-previous` without `<name>` (resume: create the new one,
//! roll back to the previous on failure), or both (finish: health-gate the new one, then drop the previous).

use std::fmt;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::desired::DesiredContainer;
use crate::engine::ContainerInfo;
use crate::observe::{Observed, digest_of, spec_hash_of};
use crate::spec::UpdatePolicy;
use crate::spec::window::Window;
use crate::status::{ObjectStatus, Reason};

/// What kind of drift was found (the `kind` label of `dockop_drift_detected_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DriftKind {
    /// The image digest differs from the target.
    Digest,
    /// The spec hash differs.
    Spec,
    /// No container.
    Missing,
    /// The container is not running.
    Stopped,
    /// Users inside the container differ (found by the executor).
    Users,
}

impl DriftKind {
    /// Metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            DriftKind::Digest => "digest",
            DriftKind::Spec => "spec",
            DriftKind::Missing => "missing",
            DriftKind::Stopped => "stopped",
            DriftKind::Users => "users",
        }
    }
}

/// One step of a plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum Step {
    /// Remove a leftover (preflight candidate or stray) container and its anonymous volumes.
    RemoveLeftover {
        /// Container ID.
        id: String,
        /// Its name.
        container: String,
    },
    /// Create missing named volumes and user-defined networks.
    EnsureVolumes,
    /// Pull `repo@digest` unless present.
    Pull {
        /// Reference.
        reference: String,
    },
    /// Run the candidate in a throwaway container and probe it; failure rejects the digest.
    Preflight {
        /// Digest.
        digest: String,
    },
    /// Stop the active container.
    StopActive {
        /// Container ID.
        id: String,
    },
    /// Rename the (stopped) active container to `<name>-previous`.
    RenameToPrevious {
        /// Container ID.
        id: String,
    },
    /// Remove an active container that is not worth keeping (an unproven one when a previous exists).
    RemoveActive {
        /// Container ID.
        id: String,
    },
    /// Create the new container as `<name>-next` while the old one still serves: only stop + start
    /// remain between the old version going away and the new one starting.
    CreateNext {
        /// Digest.
        digest: String,
    },
    /// Rename the started `<name>-next` to `<name>`.
    RenameNext,
    /// Create the new active container.
    Create {
        /// Digest.
        digest: String,
    },
    /// Start the (new or existing) active container.
    Start,
    /// Reconcile users inside the active container.
    ApplyUsers,
    /// Probe until healthy or the startup deadline; on failure the change is rolled back.
    HealthGate,
    /// Start-first: point `dockop proxy`'s route at the new (or active) container's bridge address and wait
    /// until the old one has drained (at most `update.drainSeconds`).
    SwitchRoute,
    /// Start-first, after the switch: stop the old container and remove it.
    RetireOld {
        /// Container ID.
        id: String,
    },
    /// Start-first, after an interrupted switch: the proxy already routes to `<name>-next`; rename it to
    /// `<name>`.
    AdoptNext {
        /// Container ID.
        id: String,
    },
    /// Remove `<name>-previous` after a successful change.
    RemovePrevious {
        /// Container ID.
        id: String,
    },
    /// Rename `<name>-previous` back to `<name>` and start it.
    RestorePrevious {
        /// Container ID.
        id: String,
    },
}

impl Step {
    /// The step's kind in kebab case (`pull`, `stop-active`, `create-next`, ...), without its data: the
    /// name of its fault point `after-<kind>` ([`crate::fault`]).
    pub fn kind(&self) -> &'static str {
        match self {
            Step::RemoveLeftover { .. } => "remove-leftover",
            Step::EnsureVolumes => "ensure-volumes",
            Step::Pull { .. } => "pull",
            Step::Preflight { .. } => "preflight",
            Step::StopActive { .. } => "stop-active",
            Step::RenameToPrevious { .. } => "rename-to-previous",
            Step::RemoveActive { .. } => "remove-active",
            Step::CreateNext { .. } => "create-next",
            Step::RenameNext => "rename-next",
            Step::Create { .. } => "create",
            Step::Start => "start",
            Step::ApplyUsers => "apply-users",
            Step::HealthGate => "health-gate",
            Step::SwitchRoute => "switch-route",
            Step::RetireOld { .. } => "retire-old",
            Step::AdoptNext { .. } => "adopt-next",
            Step::RemovePrevious { .. } => "remove-previous",
            Step::RestorePrevious { .. } => "restore-previous",
        }
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::RemoveLeftover { container, .. } => {
                write!(f, "remove leftover container {container}")
            }
            Step::EnsureVolumes => f.write_str("ensure named volumes and networks"),
            Step::Pull { reference } => write!(f, "pull {reference}"),
            Step::Preflight { digest } => write!(f, "preflight {}", short(digest)),
            Step::StopActive { .. } => f.write_str("stop the running container"),
            Step::RenameToPrevious { .. } => f.write_str("rename it to <name>-previous"),
            Step::RemoveActive { .. } => f.write_str("remove the unproven active container"),
            Step::CreateNext { digest } => {
                write!(
                    f,
                    "create the new container from {} as <name>-next",
                    short(digest)
                )
            }
            Step::RenameNext => f.write_str("rename <name>-next to <name>"),
            Step::Create { digest } => write!(f, "create the container from {}", short(digest)),
            Step::Start => f.write_str("start it"),
            Step::ApplyUsers => f.write_str("apply users"),
            Step::HealthGate => f.write_str("wait until healthy (roll back on failure)"),
            Step::SwitchRoute => {
                f.write_str("switch dockop proxy's route to it, drain the old one")
            }
            Step::RetireOld { .. } => f.write_str("stop and remove the old container"),
            Step::AdoptNext { .. } => f.write_str("rename the serving <name>-next to <name>"),
            Step::RemovePrevious { .. } => f.write_str("remove <name>-previous"),
            Step::RestorePrevious { .. } => {
                f.write_str("restore <name>-previous as <name> and start it")
            }
        }
    }
}

/// Shortens a digest for display: `sha256:3c54a1b2c3d4`.
pub fn short(digest: &str) -> String {
    let (alg, hex) = digest.split_once(':').unwrap_or(("", digest));
    let cut: String = hex.chars().take(12).collect();
    if alg.is_empty() {
        cut
    } else {
        format!("{alg}:{cut}")
    }
}

/// Why drift is not acted on (also the Degraded/Ready condition reason).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum BlockReason {
    /// A container with the object's name belongs to someone else (not dockop, or another instance).
    NameConflict,
    /// The registry could not resolve the followed tag.
    RegistryUnavailable,
    /// No image digest to run.
    NoTarget,
    /// The target failed before; not retried until the spec or the registry digest changes.
    FailedTarget,
    /// `update.policy: monitor` changes nothing.
    MonitorOnly,
}

impl BlockReason {
    /// The condition reason.
    pub fn reason(self) -> Reason {
        match self {
            BlockReason::NameConflict => Reason::NameConflict,
            BlockReason::RegistryUnavailable => Reason::RegistryUnavailable,
            BlockReason::NoTarget => Reason::NoTarget,
            BlockReason::FailedTarget => Reason::FailedTarget,
            BlockReason::MonitorOnly => Reason::MonitorOnly,
        }
    }
}

impl fmt::Display for BlockReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.reason().as_str())
    }
}

/// What the plan does, in one word and its reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    /// Converged; nothing to do (users are still checked).
    Nothing,
    /// No container: create it.
    Create,
    /// The container exists but is stopped: start it.
    Start,
    /// Recreate (digest or spec drift), stop-first, health-gated, rolled back on failure.
    Update,
    /// An update was interrupted: finish it (the new container exists) or resume it (only the previous).
    Resume,
    /// Put the previous container back (the target failed before).
    Restore,
    /// Start-first: the proxy's route is not the active container: point it there.
    Switch,
    /// Drift found but not acted on (policy monitor, outside the window, a failed target, a foreign container).
    Blocked {
        /// Why not.
        reason: BlockReason,
        /// Why, for people.
        message: String,
    },
}

/// A plan for one object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Plan {
    /// Object name.
    pub name: String,
    /// The action.
    #[serde(flatten)]
    pub action: Action,
    /// Target digest, when known.
    pub target_digest: Option<String>,
    /// Digest running now.
    pub current_digest: Option<String>,
    /// Drift found.
    pub drift: Vec<DriftKind>,
    /// Human notes (why).
    pub notes: Vec<String>,
    /// Steps, in order.
    pub steps: Vec<Step>,
    /// A `dockop rollback` hold is in force (false: any stored hold is released).
    pub held: bool,
    /// A digest the registry offers that this plan deliberately does not run (policy monitor or manual,
    /// outside the update window): what an `update_available` notification names.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub available_digest: Option<String>,
}

impl Plan {
    /// True when the plan would change something on the engine (for `dockop plan`'s exit code). Leftover
    /// clean-up and user checks alone are not reported as changes.
    pub fn changes(&self) -> bool {
        matches!(
            self.action,
            Action::Create
                | Action::Start
                | Action::Update
                | Action::Resume
                | Action::Restore
                | Action::Switch
        )
    }
}

/// The registry's answer for a followed tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistryAnswer {
    /// Pinned digest: the registry was not asked.
    NotAsked,
    /// The tag points to this digest.
    Digest(String),
    /// The registry could not be asked or refused.
    Error(String),
}

/// Everything the planner looks at.
#[derive(Debug, Clone)]
pub struct Inputs<'a> {
    /// Desired state.
    pub desired: &'a DesiredContainer,
    /// Observed state.
    pub observed: &'a Observed,
    /// Memory: failed targets, hold.
    pub memory: &'a ObjectStatus,
    /// Registry answer for the followed tag.
    pub registry: &'a RegistryAnswer,
    /// The clock.
    pub now: DateTime<Utc>,
    /// True for a spec edit or a one-shot command (windows only gate registry-driven updates).
    pub window_applies: bool,
}

fn matches_target(c: &ContainerInfo, digest: &str, hash: &str) -> bool {
    digest_of(c) == Some(digest) && spec_hash_of(c) == Some(hash)
}

/// Computes the plan: leftovers and name conflicts, the target digest, the update window, a target that
/// failed before, then the comparison (start-first or stop-first), and policy monitor last.
pub fn plan(i: &Inputs<'_>) -> Plan {
    let mut p = Plan {
        name: i.desired.name.clone(),
        action: Action::Nothing,
        target_digest: None,
        current_digest: i
            .observed
            .active
            .as_ref()
            .and_then(digest_of)
            .map(str::to_owned),
        drift: Vec::new(),
        notes: Vec::new(),
        steps: Vec::new(),
        held: false,
        available_digest: None,
    };
    for c in i.observed.preflight.iter().chain(&i.observed.strays) {
        p.steps.push(Step::RemoveLeftover {
            id: c.id.clone(),
            container: c.name.clone(),
        });
    }
    match decide(&mut p, i) {
        Ok(()) => p,
        Err(Stop::Blocked(reason, message)) => blocked(p, reason, message),
        Err(Stop::Planned) => p,
    }
}

/// Why planning ended early.
enum Stop {
    /// Drift is not acted on.
    Blocked(BlockReason, String),
    /// The plan is complete (a restore or a start of what runs).
    Planned,
}

fn decide(p: &mut Plan, i: &Inputs<'_>) -> Result<(), Stop> {
    if let Some(message) = name_conflict(i.observed) {
        return Err(Stop::Blocked(BlockReason::NameConflict, message));
    }
    let target = choose_target(p, i)?;
    let target = wait_for_window(p, i, target);
    let Some(target) = target else {
        return Err(Stop::Blocked(
            BlockReason::NoTarget,
            "no image digest to run".into(),
        ));
    };
    p.target_digest = Some(target.clone());
    failed_before(p, i, &target)?;
    let d = i.desired;
    let pull = Step::Pull {
        reference: d.pinned_reference(&target),
    };
    let preflight = d.spec.update.preflight;
    if d.start_first() {
        start_first(p, d, i.observed, &target, pull, preflight);
    } else {
        stop_first(p, d, i, &target, pull, preflight);
    }
    monitor_only(p, i, &target)
}

/// A container with the object's name that this instance must not touch.
fn name_conflict(o: &Observed) -> Option<String> {
    if let Some(f) = &o.foreign {
        return Some(format!(
            "a container named {} (id {}) exists and is not managed by dockop; dockop never touches it. Rename or remove it, or choose another metadata.name",
            f.name,
            short(&f.id)
        ));
    }
    let other = o.other_instance.as_ref()?;
    let owner = match &other.instance {
        Some(i) => format!("dockop instance {i:?}"),
        None => {
            "an older dockop without an instance label (only the host's default instance adopts it)"
                .to_owned()
        }
    };
    Some(format!(
        "a container named {} (id {}) belongs to {owner}; this instance never touches it. Remove the object from one instance's desired state, or run this one with that --instance",
        other.container.name,
        short(&other.container.id)
    ))
}

/// The digest to run: a `dockop rollback` hold, the pinned digest, or the registry's answer for the tag
/// unless the update policy keeps what runs.
fn choose_target(p: &mut Plan, i: &Inputs<'_>) -> Result<Option<String>, Stop> {
    let d = i.desired;
    let hash = d.spec_hash.as_str();
    let active = i.observed.active.as_ref();
    let active_digest = active.and_then(digest_of).map(str::to_owned);
    let active_spec_same = active.is_some_and(|a| spec_hash_of(a) == Some(hash));
    let registry_digest = match i.registry {
        RegistryAnswer::Digest(dg) => Some(dg.clone()),
        _ => None,
    };
    let hold = i.memory.hold.as_ref().filter(|h| {
        h.spec_hash == hash
            && (matches!(i.registry, RegistryAnswer::Error(_))
                || h.registry_digest == registry_digest.clone().or_else(|| d.spec.digest.clone()))
    });
    p.held = hold.is_some();
    if let Some(h) = hold {
        p.notes.push(format!(
            "held at {} by `dockop rollback` until the spec or the registry changes",
            short(&h.digest)
        ));
        return Ok(Some(h.digest.clone()));
    }
    if let Some(pin) = &d.spec.digest {
        return Ok(Some(pin.clone()));
    }
    let keep_running = match d.spec.update.policy {
        UpdatePolicy::Auto => false,
        UpdatePolicy::Manual => active_spec_same,
        UpdatePolicy::Monitor => active.is_some(),
    };
    match (keep_running, &active_digest, &registry_digest) {
        (true, Some(cur), reg) => {
            if let Some(reg) = reg.as_ref().filter(|r| *r != cur) {
                p.drift.push(DriftKind::Digest);
                p.available_digest = Some(reg.clone());
                let policy = if d.spec.update.policy == UpdatePolicy::Monitor {
                    "monitor"
                } else {
                    "manual"
                };
                p.notes.push(format!(
                    "registry has {} for {}; policy {policy} keeps {}",
                    short(reg),
                    d.tag_reference(),
                    short(cur)
                ));
            }
            Ok(Some(cur.clone()))
        }
        (_, _, Some(reg)) => Ok(Some(reg.clone())),
        (_, cur, None) => {
            let err = match i.registry {
                RegistryAnswer::Error(e) => e.clone(),
                _ => "no digest".to_owned(),
            };
            let kept = if cur.is_some() && active_spec_same {
                "; the running container is kept"
            } else {
                ""
            };
            Err(Stop::Blocked(
                BlockReason::RegistryUnavailable,
                format!("cannot resolve {}: {err}{kept}", d.tag_reference()),
            ))
        }
    }
}

/// Update windows gate registry-driven updates only: outside the window the running digest stays.
fn wait_for_window(p: &mut Plan, i: &Inputs<'_>, target: Option<String>) -> Option<String> {
    let d = i.desired;
    let active = i.observed.active.as_ref();
    let active_spec_same = active.is_some_and(|a| spec_hash_of(a) == Some(d.spec_hash.as_str()));
    if let (Some(w), Some(t), Some(cur)) =
        (&d.spec.update.window, &target, active.and_then(digest_of))
        && i.window_applies
        && t != cur
        && active_spec_same
        && !p.held
        && d.spec.digest.is_none()
        && let Ok(win) = Window::parse(w)
        && !win.contains(i.now)
    {
        p.drift.push(DriftKind::Digest);
        p.notes
            .push(format!("update to {} waits for the window {w}", short(t)));
        p.available_digest = Some(t.clone());
        return Some(cur.to_owned());
    }
    target
}

/// A target that failed before is not retried until the spec or the registry changes: restore the
/// previous container, start what runs, or block.
fn failed_before(p: &mut Plan, i: &Inputs<'_>, target: &str) -> Result<(), Stop> {
    let hash = i.desired.spec_hash.as_str();
    let Some(f) = i.memory.failed_for(target, hash) else {
        return Ok(());
    };
    let why = format!(
        "{} failed before ({}); not retried until the spec or the registry digest changes",
        short(target),
        f.reason
    );
    match (i.observed.active.as_ref(), i.observed.previous.as_ref()) {
        (None, Some(prev)) => {
            p.action = Action::Restore;
            p.notes.push(why);
            p.steps.push(Step::RestorePrevious {
                id: prev.id.clone(),
            });
            p.steps.push(Step::ApplyUsers);
            p.steps.push(Step::HealthGate);
            Err(Stop::Planned)
        }
        (Some(a), previous) if !matches_target(a, target, hash) => {
            // Keep what runs; make sure it runs.
            if !a.is_running() {
                p.drift.push(DriftKind::Stopped);
                p.action = Action::Start;
                p.notes.push(why);
                p.steps
                    .extend([Step::Start, Step::ApplyUsers, Step::HealthGate]);
                return Err(Stop::Planned);
            }
            if let Some(prev) = previous {
                p.steps.push(Step::RemovePrevious {
                    id: prev.id.clone(),
                });
            }
            Err(Stop::Blocked(BlockReason::FailedTarget, why))
        }
        (None, None) => Err(Stop::Blocked(BlockReason::FailedTarget, why)),
        // The active container is the failed target itself (no rollback possible or policy never):
        // keep it as it is.
        _ => {
            p.notes.push(why);
            Ok(())
        }
    }
}

/// Policy monitor never changes a running object: an update becomes a note.
fn monitor_only(p: &mut Plan, i: &Inputs<'_>, target: &str) -> Result<(), Stop> {
    if i.desired.spec.update.policy != UpdatePolicy::Monitor || !matches!(p.action, Action::Update)
    {
        return Ok(());
    }
    let why = format!(
        "drift found ({}); policy monitor changes nothing",
        p.notes.join("; ")
    );
    p.steps.clear();
    let active_digest = i.observed.active.as_ref().and_then(digest_of);
    if active_digest != Some(target) {
        p.available_digest = Some(target.to_owned());
    }
    Err(Stop::Blocked(BlockReason::MonitorOnly, why))
}

/// The start of every update: ensure volumes, pull, and preflight the target when it is on.
fn pull_then_preflight(p: &mut Plan, pull: Step, preflight: bool, target: &str) {
    p.steps.extend([Step::EnsureVolumes, pull]);
    if preflight {
        p.steps.push(Step::Preflight {
            digest: target.to_owned(),
        });
    }
}

/// Notes the digest and spec drift of the active container `a` against the target.
fn note_drift(p: &mut Plan, a: &ContainerInfo, target: &str, hash: &str) {
    if digest_of(a) != Some(target) {
        p.drift.push(DriftKind::Digest);
        p.notes.push(format!(
            "digest {} -> {}",
            short(digest_of(a).unwrap_or("none")),
            short(target)
        ));
    }
    if spec_hash_of(a) != Some(hash) {
        p.drift.push(DriftKind::Spec);
        p.notes.push("spec changed".into());
    }
}

/// Start-first: the new container starts beside the old one without host ports, is health-gated on its
/// bridge address, and only then does the proxy switch; a failure before the switch touches nothing.
fn start_first(
    p: &mut Plan,
    d: &DesiredContainer,
    o: &Observed,
    target: &str,
    pull: Step,
    preflight: bool,
) {
    let hash = d.spec_hash.as_str();
    let active = o.active.as_ref();
    let next_name = format!("{}{}", d.name, crate::observe::NEXT_SUFFIX);
    // The proxy already routes to <name>-next: a switch was interrupted after it happened. Finish it.
    let serving_next = o
        .strays
        .iter()
        .find(|c| c.name == next_name && o.route.as_ref().is_some_and(|r| r.container_id == c.id));
    if let Some(n) = serving_next {
        p.steps
            .retain(|s| !matches!(s, Step::RemoveLeftover { id, .. } if *id == n.id));
        p.action = Action::Resume;
        p.notes
            .push("an interrupted switch left <name>-next serving: finishing it".into());
        if let Some(a) = active {
            p.steps.push(Step::RetireOld { id: a.id.clone() });
        }
        p.steps.push(Step::AdoptNext { id: n.id.clone() });
        return;
    }
    if let (Some(_), Some(prev)) = (active, o.previous.as_ref()) {
        p.steps.push(Step::RemoveLeftover {
            id: prev.id.clone(),
            container: prev.name.clone(),
        });
    }
    match active {
        Some(a) if matches_target(a, target, hash) => {
            if !a.is_running() {
                p.drift.push(DriftKind::Stopped);
                p.action = Action::Start;
                p.notes.push(format!("container is {}", a.state));
                p.steps.extend([
                    Step::Start,
                    Step::ApplyUsers,
                    Step::HealthGate,
                    Step::SwitchRoute,
                ]);
                return;
            }
            let routed = a
                .ip_address
                .as_deref()
                .is_some_and(|ip| o.route.as_ref() == Some(&d.route(&a.id, ip)));
            if !routed {
                p.action = Action::Switch;
                p.notes
                    .push("dockop proxy does not route to the active container".into());
                p.steps.push(Step::SwitchRoute);
            }
            if !d.spec.users.is_empty() {
                p.steps.push(Step::ApplyUsers);
            }
        }
        Some(a) => {
            note_drift(p, a, target, hash);
            p.action = Action::Update;
            pull_then_preflight(p, pull, preflight, target);
            p.steps.extend([
                Step::CreateNext {
                    digest: target.to_owned(),
                },
                Step::Start,
                Step::ApplyUsers,
                Step::HealthGate,
                Step::SwitchRoute,
                Step::RetireOld { id: a.id.clone() },
                Step::RenameNext,
            ]);
        }
        None => {
            p.drift.push(DriftKind::Missing);
            p.action = Action::Create;
            p.steps.extend([
                Step::EnsureVolumes,
                pull,
                Step::Create {
                    digest: target.to_owned(),
                },
                Step::Start,
                Step::ApplyUsers,
                Step::HealthGate,
                Step::SwitchRoute,
            ]);
        }
    }
}

/// Stop-first (the default): see the module header.
fn stop_first(
    p: &mut Plan,
    d: &DesiredContainer,
    i: &Inputs<'_>,
    target: &str,
    pull: Step,
    preflight: bool,
) {
    let hash = d.spec_hash.as_str();
    let (active, previous) = (i.observed.active.as_ref(), i.observed.previous.as_ref());
    let target = target.to_owned();
    match (active, previous) {
        (Some(a), prev) if matches_target(a, &target, hash) => {
            if a.is_running() {
                if let Some(prev) = prev {
                    p.action = Action::Resume;
                    p.notes
                        .push("an interrupted update left <name>-previous: finishing it".into());
                    p.steps.extend([
                        Step::ApplyUsers,
                        Step::HealthGate,
                        Step::RemovePrevious {
                            id: prev.id.clone(),
                        },
                    ]);
                } else if !d.spec.users.is_empty() || crate::users::may_have_managed(i.memory) {
                    // Users drift is found by reading the container: a no-op when converged.
                    p.steps.push(Step::ApplyUsers);
                }
            } else {
                p.drift.push(DriftKind::Stopped);
                p.action = if prev.is_some() {
                    Action::Resume
                } else {
                    Action::Start
                };
                p.notes.push(format!("container is {}", a.state));
                p.steps
                    .extend([Step::Start, Step::ApplyUsers, Step::HealthGate]);
                if let Some(prev) = prev {
                    p.steps.push(Step::RemovePrevious {
                        id: prev.id.clone(),
                    });
                }
            }
        }
        (Some(a), prev) => {
            note_drift(p, a, &target, hash);
            p.action = Action::Update;
            pull_then_preflight(p, pull, preflight, &target);
            match prev {
                // Both exist and the active one is not the target: the previous one is the proven fallback.
                Some(prev) => {
                    p.steps.push(Step::RemoveActive { id: a.id.clone() });
                    p.notes
                        .push(format!("keeping {} as the fallback", prev.name));
                    p.steps.extend([
                        Step::Create {
                            digest: target.clone(),
                        },
                        Step::Start,
                    ]);
                }
                // Stop-first with the least downtime: the new container exists before the old one stops; it
                // serves as <name>-next through the health gate, and only a proven container is renamed.
                None => p.steps.extend([
                    Step::CreateNext {
                        digest: target.clone(),
                    },
                    Step::StopActive { id: a.id.clone() },
                    Step::Start,
                    Step::ApplyUsers,
                    Step::HealthGate,
                    Step::RenameToPrevious { id: a.id.clone() },
                    Step::RenameNext,
                ]),
            }
            if prev.is_some() {
                p.steps.extend([Step::ApplyUsers, Step::HealthGate]);
            }
            let prev_id = prev.map(|c| c.id.clone()).unwrap_or_else(|| a.id.clone());
            p.steps.push(Step::RemovePrevious { id: prev_id });
        }
        (None, Some(prev)) => {
            p.drift.push(DriftKind::Missing);
            p.action = Action::Resume;
            p.notes
                .push("an interrupted update left only <name>-previous: resuming it".into());
            pull_then_preflight(p, pull, preflight, &target);
            p.steps.extend([
                Step::Create {
                    digest: target.clone(),
                },
                Step::Start,
                Step::ApplyUsers,
                Step::HealthGate,
                Step::RemovePrevious {
                    id: prev.id.clone(),
                },
            ]);
        }
        (None, None) => {
            p.drift.push(DriftKind::Missing);
            p.action = Action::Create;
            p.steps.extend([
                Step::EnsureVolumes,
                pull,
                Step::Create { digest: target },
                Step::Start,
                Step::ApplyUsers,
                Step::HealthGate,
            ]);
        }
    }
}

fn blocked(mut p: Plan, reason: BlockReason, message: String) -> Plan {
    p.action = Action::Blocked { reason, message };
    p
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{LABEL_ROLE, RunState};
    use crate::spec::Container;
    use crate::testing;

    const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const D2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

    fn desired(f: impl FnOnce(&mut Container)) -> DesiredContainer {
        let mut c = testing::object("web")
            .image("127.0.0.1:5000/web:v1")
            .build();
        f(&mut c);
        DesiredContainer::build(&c, None).expect("desired")
    }

    fn container(name: &str, digest: &str, hash: &str, state: RunState) -> ContainerInfo {
        testing::info(&format!("id-{name}"), name)
            .object(Some("web"))
            .digest(digest)
            .spec_hash(hash)
            .role("active")
            .state(state)
            .build()
    }

    struct Case {
        observed: Observed,
        memory: ObjectStatus,
        registry: RegistryAnswer,
    }

    fn run(d: &DesiredContainer, c: &Case) -> Plan {
        plan(&Inputs {
            desired: d,
            observed: &c.observed,
            memory: &c.memory,
            registry: &c.registry,
            now: Utc::now(),
            window_applies: true,
        })
    }

    fn kinds(p: &Plan) -> Vec<&'static str> {
        p.steps
            .iter()
            .map(|s| match s {
                Step::RemoveLeftover { .. } => "leftover",
                Step::EnsureVolumes => "volumes",
                Step::Pull { .. } => "pull",
                Step::Preflight { .. } => "preflight",
                Step::StopActive { .. } => "stop",
                Step::RenameToPrevious { .. } => "rename",
                Step::RemoveActive { .. } => "remove-active",
                Step::CreateNext { .. } => "create-next",
                Step::RenameNext => "rename-next",
                Step::Create { .. } => "create",
                Step::Start => "start",
                Step::ApplyUsers => "users",
                Step::HealthGate => "gate",
                Step::RemovePrevious { .. } => "remove-previous",
                Step::RestorePrevious { .. } => "restore",
                Step::SwitchRoute => "switch",
                Step::RetireOld { .. } => "retire-old",
                Step::AdoptNext { .. } => "adopt-next",
            })
            .collect()
    }

    fn case(
        active: Option<ContainerInfo>,
        previous: Option<ContainerInfo>,
        registry: &str,
    ) -> Case {
        Case {
            observed: Observed {
                active,
                previous,
                ..Default::default()
            },
            memory: ObjectStatus::new("web"),
            registry: RegistryAnswer::Digest(registry.into()),
        }
    }

    /// Start-first: the candidate is gated before the switch; the route is observed state.
    #[test]
    fn start_first_table() {
        let d = desired(|c| {
            c.spec = serde_saphyr::from_str(
                "image: 127.0.0.1:5000/web:v1\nports: [{containerPort: 8080, hostPort: 3000}]\nhealth: {port: 8080}\nupdate: {strategy: start-first, preflight: false}\n",
            )
            .expect("spec");
        });
        let h = d.spec_hash.clone();
        let mut active = container("web", D1, &h, RunState::Running);
        active.ip_address = Some("172.17.0.2".into());
        let routed = d.route(&active.id, "172.17.0.2");
        let with = |a: Option<ContainerInfo>,
                    strays: Vec<ContainerInfo>,
                    route: Option<crate::switch::Route>,
                    reg: &str| Case {
            observed: Observed {
                active: a,
                strays,
                route,
                ..Default::default()
            },
            memory: ObjectStatus::new("web"),
            registry: RegistryAnswer::Digest(reg.into()),
        };
        let mut next = container("web-next", D2, &h, RunState::Running);
        next.ip_address = Some("172.17.0.3".into());
        let rows: Vec<(&str, Case, Action, Vec<&str>)> = vec![
            (
                "empty host: create, gate, then route",
                with(None, vec![], None, D1),
                Action::Create,
                vec![
                    "volumes", "pull", "create", "start", "users", "gate", "switch",
                ],
            ),
            (
                "converged and routed: nothing",
                with(Some(active.clone()), vec![], Some(routed.clone()), D1),
                Action::Nothing,
                vec![],
            ),
            (
                "converged, proxy lost its route: route again",
                with(Some(active.clone()), vec![], None, D1),
                Action::Switch,
                vec!["switch"],
            ),
            (
                "new digest: next beside the old one, gate, switch, retire the old one",
                with(Some(active.clone()), vec![], Some(routed.clone()), D2),
                Action::Update,
                vec![
                    "volumes",
                    "pull",
                    "create-next",
                    "start",
                    "users",
                    "gate",
                    "switch",
                    "retire-old",
                    "rename-next",
                ],
            ),
            (
                "crash after the switch: the proxy routes to <name>-next: finish",
                with(
                    Some(active.clone()),
                    vec![next.clone()],
                    Some(d.route(&next.id, "172.17.0.3")),
                    D2,
                ),
                Action::Resume,
                vec!["retire-old", "adopt-next"],
            ),
            (
                "crash before the switch: <name>-next is a leftover, the update starts over",
                with(
                    Some(active.clone()),
                    vec![next.clone()],
                    Some(routed.clone()),
                    D2,
                ),
                Action::Update,
                vec![
                    "leftover",
                    "volumes",
                    "pull",
                    "create-next",
                    "start",
                    "users",
                    "gate",
                    "switch",
                    "retire-old",
                    "rename-next",
                ],
            ),
        ];
        for (what, c, action, steps) in rows {
            let p = run(&d, &c);
            assert_eq!(p.action, action, "{what}");
            assert_eq!(kinds(&p), steps, "{what}");
        }
    }

    #[test]
    fn table() {
        let d = desired(|_| {});
        let h = d.spec_hash.clone();
        let running = |dg: &str| Some(container("web", dg, &h, RunState::Running));
        let prev = |dg: &str| Some(container("web-previous", dg, &h, RunState::Exited));
        let rows: Vec<(&str, Case, Action, Vec<&str>)> = vec![
            (
                "empty host creates",
                case(None, None, D1),
                Action::Create,
                vec!["volumes", "pull", "create", "start", "users", "gate"],
            ),
            (
                "converged does nothing",
                case(running(D1), None, D1),
                Action::Nothing,
                vec![],
            ),
            (
                "registry moved updates with preflight",
                case(running(D1), None, D2),
                Action::Update,
                vec![
                    "volumes",
                    "pull",
                    "preflight",
                    "create-next",
                    "stop",
                    "start",
                    "users",
                    "gate",
                    "rename",
                    "rename-next",
                    "remove-previous",
                ],
            ),
            (
                "spec edit updates",
                case(
                    Some(container("web", D1, "oldhash", RunState::Running)),
                    None,
                    D1,
                ),
                Action::Update,
                vec![
                    "volumes",
                    "pull",
                    "preflight",
                    "create-next",
                    "stop",
                    "start",
                    "users",
                    "gate",
                    "rename",
                    "rename-next",
                    "remove-previous",
                ],
            ),
            (
                "stopped container is started",
                case(Some(container("web", D1, &h, RunState::Exited)), None, D1),
                Action::Start,
                vec!["start", "users", "gate"],
            ),
            (
                "crash after rename resumes",
                case(None, prev(D1), D2),
                Action::Resume,
                vec![
                    "volumes",
                    "pull",
                    "preflight",
                    "create",
                    "start",
                    "users",
                    "gate",
                    "remove-previous",
                ],
            ),
            (
                "crash after create finishes",
                case(
                    Some(container("web", D2, &h, RunState::Created)),
                    prev(D1),
                    D2,
                ),
                Action::Resume,
                vec!["start", "users", "gate", "remove-previous"],
            ),
            (
                "crash before previous removed finishes",
                case(running(D2), prev(D1), D2),
                Action::Resume,
                vec!["users", "gate", "remove-previous"],
            ),
        ];
        for (what, c, action, steps) in rows {
            let p = run(&d, &c);
            assert_eq!(p.action, action, "{what}: {p:#?}");
            assert_eq!(kinds(&p), steps, "{what}");
        }
    }

    #[test]
    fn failed_target_not_retried_and_previous_restored() {
        let d = desired(|_| {});
        let h = d.spec_hash.clone();
        let mut c = case(Some(container("web", D1, &h, RunState::Running)), None, D2);
        c.memory.record_failed(D2, &h, "HTTP 500", Utc::now());
        let p = run(&d, &c);
        assert!(
            matches!(&p.action, Action::Blocked { reason, .. } if *reason == BlockReason::FailedTarget),
            "{p:?}"
        );
        assert!(p.steps.is_empty());

        // Crash between removing the failed container and restoring the previous one.
        let mut c = case(
            None,
            Some(container("web-previous", D1, &h, RunState::Exited)),
            D2,
        );
        c.memory.record_failed(D2, &h, "HTTP 500", Utc::now());
        let p = run(&d, &c);
        assert_eq!(p.action, Action::Restore);
        assert_eq!(kinds(&p), vec!["restore", "users", "gate"]);

        // A newer digest is taken.
        let mut c = case(
            Some(container("web", D1, &h, RunState::Running)),
            None,
            "sha256:3333",
        );
        c.memory.record_failed(D2, &h, "HTTP 500", Utc::now());
        assert_eq!(run(&d, &c).action, Action::Update);
    }

    #[test]
    fn pin_wins_over_registry() {
        let d = desired(|c| c.spec.digest = Some(D1.into()));
        let h = d.spec_hash.clone();
        let mut c = case(Some(container("web", D2, &h, RunState::Running)), None, D2);
        c.registry = RegistryAnswer::NotAsked;
        let p = run(&d, &c);
        assert_eq!(p.action, Action::Update);
        assert_eq!(p.target_digest.as_deref(), Some(D1));
    }

    #[test]
    fn policies() {
        let monitor = desired(|c| c.spec.update.policy = UpdatePolicy::Monitor);
        let h = monitor.spec_hash.clone();
        let p = run(
            &monitor,
            &case(Some(container("web", D1, &h, RunState::Running)), None, D2),
        );
        assert_eq!(p.action, Action::Nothing, "{p:?}");
        assert_eq!(p.drift, vec![DriftKind::Digest]);
        assert_eq!(
            p.available_digest.as_deref(),
            Some(D2),
            "update_available names it"
        );

        let manual = desired(|c| c.spec.update.policy = UpdatePolicy::Manual);
        let h = manual.spec_hash.clone();
        let p = run(
            &manual,
            &case(Some(container("web", D1, &h, RunState::Running)), None, D2),
        );
        assert_eq!(p.action, Action::Nothing);
        // A spec edit under manual takes the registry's digest.
        let p = run(
            &manual,
            &case(
                Some(container("web", D1, "old", RunState::Running)),
                None,
                D2,
            ),
        );
        assert_eq!(p.action, Action::Update);
        assert_eq!(p.target_digest.as_deref(), Some(D2));
        assert_eq!(p.available_digest, None, "an update runs it");

        // Outside the update window the registry's digest is kept back, and offered.
        let windowed = desired(|c| c.spec.update.window = Some("Mon 00:00-00:01 UTC".into()));
        let h = windowed.spec_hash.clone();
        let mut c = case(Some(container("web", D1, &h, RunState::Running)), None, D2);
        c.memory.name = "web".into();
        let p = plan(&Inputs {
            desired: &windowed,
            observed: &c.observed,
            memory: &c.memory,
            registry: &c.registry,
            now: chrono::DateTime::parse_from_rfc3339("2026-11-29T12:00:00Z")
                .expect("time")
                .with_timezone(&Utc),
            window_applies: true,
        });
        assert_eq!(p.target_digest.as_deref(), Some(D1), "{p:?}");
        assert_eq!(p.available_digest.as_deref(), Some(D2), "{p:?}");
    }

    #[test]
    fn registry_down_keeps_running_container() {
        let d = desired(|_| {});
        let h = d.spec_hash.clone();
        let mut c = case(Some(container("web", D1, &h, RunState::Running)), None, D1);
        c.registry = RegistryAnswer::Error("connection refused".into());
        let p = run(&d, &c);
        assert!(
            matches!(&p.action, Action::Blocked { reason, .. } if *reason == BlockReason::RegistryUnavailable)
        );
        assert!(p.steps.is_empty());
    }

    #[test]
    fn hold_pins_until_registry_moves() {
        let d = desired(|_| {});
        let h = d.spec_hash.clone();
        let mut c = case(Some(container("web", D2, &h, RunState::Running)), None, D2);
        c.memory.hold = Some(crate::status::Hold {
            digest: D1.into(),
            spec_hash: h.clone(),
            registry_digest: Some(D2.into()),
        });
        let p = run(&d, &c);
        assert_eq!(p.target_digest.as_deref(), Some(D1));
        c.registry = RegistryAnswer::Digest("sha256:3333".into());
        assert_eq!(run(&d, &c).target_digest.as_deref(), Some("sha256:3333"));
    }

    #[test]
    fn foreign_container_is_never_touched() {
        let d = desired(|_| {});
        let mut foreign = container("web", D1, "x", RunState::Running);
        foreign.labels.clear();
        let c = Case {
            observed: Observed {
                foreign: Some(foreign),
                ..Default::default()
            },
            memory: ObjectStatus::new("web"),
            registry: RegistryAnswer::Digest(D1.into()),
        };
        let p = run(&d, &c);
        assert!(
            matches!(&p.action, Action::Blocked { reason, .. } if *reason == BlockReason::NameConflict)
        );
        assert!(p.steps.is_empty());
    }

    #[test]
    fn another_instances_container_is_never_touched() {
        let d = desired(|_| {});
        let theirs = container("web", D1, "x", RunState::Running);
        let c = Case {
            observed: Observed {
                other_instance: Some(crate::observe::OtherInstance {
                    container: theirs,
                    instance: Some("host-b".into()),
                }),
                ..Default::default()
            },
            memory: ObjectStatus::new("web"),
            registry: RegistryAnswer::Digest(D1.into()),
        };
        let p = run(&d, &c);
        assert!(matches!(&p.action, Action::Blocked { reason, message }
            if *reason == BlockReason::NameConflict && message.contains("\"host-b\"")));
        assert!(p.steps.is_empty());
    }

    #[test]
    fn leftovers_removed_first() {
        let d = desired(|_| {});
        let h = d.spec_hash.clone();
        let mut c = case(Some(container("web", D1, &h, RunState::Running)), None, D1);
        let mut pf = container("web-preflight-1", D2, &h, RunState::Running);
        pf.labels.insert(LABEL_ROLE.into(), "preflight".into());
        c.observed.preflight.push(pf);
        let p = run(&d, &c);
        assert_eq!(kinds(&p), vec!["leftover"]);
        assert!(!p.changes());
    }
}
