//! Test-only fault injection: with `DOCKOP_FAULT_ABORT_AT=POINT`, dockop aborts hard (as if `kill -9`)
//! when it reaches that point. Points are named after what has just happened:
//!
//! - `after-<step>`: right after a plan step of that kind ([`crate::plan::Step::kind`]): `after-pull`,
//!   `after-preflight`, `after-create-next`, `after-stop-active`, `after-start`, `after-apply-users`,
//!   `after-health-gate`, `after-rename-to-previous`, `after-rename-next`, `after-remove-previous`,
//!   `after-switch-route`, `after-retire-old`, ... (the first step of that kind in the plan);
//! - `rollback-<what>` ([`Rollback`]): right after a step of a rollback: `rollback-removed-candidate`,
//!   `rollback-renamed-back`, `rollback-started`, `rollback-users-applied`;
//! - `preflight-started`: the preflight candidate runs.
//!
//! Honoured only in debug builds or with the `fault-injection` feature; release builds compile it away.

/// The fault points of a rollback, in the order they are passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rollback {
    /// The new container is removed.
    RemovedCandidate,
    /// The old container is back under the object's name (renamed back, or stopped and never renamed).
    RenamedBack,
    /// The old container is started again.
    Started,
    /// Users are applied in it.
    UsersApplied,
}

impl Rollback {
    /// The point's name, as `DOCKOP_FAULT_ABORT_AT` gives it.
    pub fn as_str(self) -> &'static str {
        match self {
            Rollback::RemovedCandidate => "rollback-removed-candidate",
            Rollback::RenamedBack => "rollback-renamed-back",
            Rollback::Started => "rollback-started",
            Rollback::UsersApplied => "rollback-users-applied",
        }
    }
}

/// Aborts when `DOCKOP_FAULT_ABORT_AT` names `point`.
pub fn point(point: &str) {
    #[cfg(any(debug_assertions, feature = "fault-injection"))]
    if std::env::var("DOCKOP_FAULT_ABORT_AT").is_ok_and(|want| want == point) {
        eprintln!("dockop: fault injection: aborting at {point}");
        std::process::abort();
    }
    #[cfg(not(any(debug_assertions, feature = "fault-injection")))]
    let _ = point;
}

/// Called by the executor after each plan step, with the step's [`crate::plan::Step::kind`]: the point
/// `after-<kind>`.
pub fn after_step(kind: &str) {
    #[cfg(any(debug_assertions, feature = "fault-injection"))]
    if std::env::var_os("DOCKOP_FAULT_ABORT_AT").is_some() {
        point(&format!("after-{kind}"));
    }
    #[cfg(not(any(debug_assertions, feature = "fault-injection")))]
    let _ = kind;
}

/// Called by the executor after each step of a rollback.
pub fn rollback(step: Rollback) {
    point(step.as_str());
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::Rollback;
    use crate::plan::Step;

    /// Every point is named once: a name addresses one kind of step.
    #[test]
    fn point_names_are_distinct() {
        let id = || "c1".to_owned();
        let digest = || "sha256:d1".to_owned();
        let steps = [
            Step::RemoveLeftover {
                id: id(),
                container: "web-preflight".into(),
            },
            Step::EnsureVolumes,
            Step::Pull {
                reference: "reg/web@sha256:d1".into(),
            },
            Step::Preflight { digest: digest() },
            Step::StopActive { id: id() },
            Step::RenameToPrevious { id: id() },
            Step::RemoveActive { id: id() },
            Step::CreateNext { digest: digest() },
            Step::RenameNext,
            Step::Create { digest: digest() },
            Step::Start,
            Step::ApplyUsers,
            Step::HealthGate,
            Step::SwitchRoute,
            Step::RetireOld { id: id() },
            Step::AdoptNext { id: id() },
            Step::RemovePrevious { id: id() },
            Step::RestorePrevious { id: id() },
        ];
        let mut names: BTreeSet<String> = steps
            .iter()
            .map(|s| format!("after-{}", s.kind()))
            .collect();
        assert_eq!(names.len(), steps.len());
        let rollback = [
            Rollback::RemovedCandidate,
            Rollback::RenamedBack,
            Rollback::Started,
            Rollback::UsersApplied,
        ];
        names.extend(rollback.iter().map(|r| r.as_str().to_owned()));
        names.insert("preflight-started".into());
        assert_eq!(names.len(), steps.len() + rollback.len() + 1);
        assert!(
            names
                .iter()
                .all(|n| n.bytes().all(|b| b.is_ascii_lowercase() || b == b'-'))
        );
    }
}
