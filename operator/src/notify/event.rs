//! What is worth telling people: the events, derived in one place by a pure function from what a
//! reconcile (or the controller) saw and the object's previous verdict, and the dedupe memory that keeps
//! a flapping object from flooding.

use std::collections::HashMap;

use serde::Serialize;

use crate::execute::Outcome;
use crate::plan::{Action, short};
use crate::reconcile::Report;

/// A kind of notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A new digest was rolled out and passed the health gate.
    Updated,
    /// An update failed and the previous version serves again.
    RolledBack,
    /// The candidate failed preflight; nothing was touched.
    PreflightRejected,
    /// The registry offers a digest that policy monitor/manual or the update window keeps back.
    UpdateAvailable,
    /// The object went from fine to failing (a failed change, an engine or spec error, a conflict).
    Degraded,
    /// The object is fine again after being degraded.
    Recovered,
    /// The object's source is invalid; its last valid version stays in force.
    InvalidSpec,
    /// A managed container whose object left the source (left running, not pruned).
    Orphaned,
}

impl EventKind {
    /// Every kind.
    pub const ALL: [EventKind; 8] = [
        EventKind::Updated,
        EventKind::RolledBack,
        EventKind::PreflightRejected,
        EventKind::UpdateAvailable,
        EventKind::Degraded,
        EventKind::Recovered,
        EventKind::InvalidSpec,
        EventKind::Orphaned,
    ];

    /// The name in payloads, `?events=` and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Updated => "updated",
            EventKind::RolledBack => "rolled_back",
            EventKind::PreflightRejected => "preflight_rejected",
            EventKind::UpdateAvailable => "update_available",
            EventKind::Degraded => "degraded",
            EventKind::Recovered => "recovered",
            EventKind::InvalidSpec => "invalid_spec",
            EventKind::Orphaned => "orphaned",
        }
    }

    /// The kind named `s` (as in [`EventKind::as_str`]).
    pub fn parse(s: &str) -> Option<EventKind> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// True for the kinds that report something wrong.
    pub fn is_problem(self) -> bool {
        matches!(
            self,
            EventKind::RolledBack
                | EventKind::PreflightRejected
                | EventKind::Degraded
                | EventKind::InvalidSpec
                | EventKind::Orphaned
        )
    }
}

/// One thing that happened to one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// What.
    pub kind: EventKind,
    /// The object (for an invalid file with no object in force yet: the file).
    pub object: String,
    /// The digest the event is about (the new, failed, or offered one; else the running one).
    pub digest: Option<String>,
    /// The digest before (what served before an update, what serves again after a rollback).
    pub previous_digest: Option<String>,
    /// The app version the active container reports.
    pub version: Option<String>,
    /// Why (a failure's reason, the invalid input's errors with file:line).
    pub reason: String,
    /// A short line for people.
    pub message: String,
}

impl Event {
    /// The value that, with (kind, object), identifies a repeat of this event.
    fn dedupe_value(&self) -> String {
        let extra = match self.kind {
            EventKind::InvalidSpec => self.reason.as_str(),
            _ => "",
        };
        format!(
            "{}|{}|{extra}",
            self.digest.as_deref().unwrap_or_default(),
            self.previous_digest.as_deref().unwrap_or_default()
        )
    }
}

/// What happened, as the controller or `apply` saw it.
#[derive(Debug, Clone, Copy)]
pub enum Observation<'a> {
    /// A reconcile ran.
    Reconciled {
        /// Its report.
        report: &'a Report,
        /// The errors of the object's input when it is held at its last valid version.
        invalid: Option<&'a str>,
    },
    /// A reconcile could not even plan (engine unreachable, env file missing, state unwritable).
    Failed {
        /// The object.
        object: &'a str,
        /// The error.
        error: &'a str,
    },
    /// The object left the source; its container is left running.
    Orphaned {
        /// The object.
        object: &'a str,
    },
    /// A file of desired state does not validate and nothing of it is in force (`apply`).
    InvalidInput {
        /// The file.
        file: &'a str,
        /// Its errors, file:line:col each.
        errors: &'a str,
    },
}

/// An object's health as the notifications last saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Converged (or deliberately kept back).
    Fine,
    /// Failing, rolled back or rejected.
    Degraded,
}

/// The events of one observation, given the object's previous verdict; and its new verdict (`None`: no
/// verdict, keep the previous one). Pure: the whole event policy is here.
pub fn derive(prev: Option<Verdict>, obs: Observation<'_>) -> (Vec<Event>, Option<Verdict>) {
    let mut out = Vec::new();
    match obs {
        Observation::Failed { object, error } => {
            if prev != Some(Verdict::Degraded) {
                out.push(Event {
                    kind: EventKind::Degraded,
                    object: object.to_owned(),
                    digest: None,
                    previous_digest: None,
                    version: None,
                    reason: error.to_owned(),
                    message: format!("reconcile failed: {error}"),
                });
            }
            (out, Some(Verdict::Degraded))
        }
        Observation::Orphaned { object } => {
            out.push(Event {
                kind: EventKind::Orphaned,
                object: object.to_owned(),
                digest: None,
                previous_digest: None,
                version: None,
                reason: "Orphaned".into(),
                message: "no longer in the source; its container is left running (dockop run --prune removes it)".into(),
            });
            (out, None)
        }
        Observation::InvalidInput { file, errors } => {
            out.push(invalid(file, errors, None));
            (out, None)
        }
        Observation::Reconciled {
            report,
            invalid: bad,
        } => {
            if let Some(errors) = bad {
                out.push(invalid(
                    &report.name,
                    errors,
                    report.plan.current_digest.clone(),
                ));
            }
            let verdict = reconciled(prev, report, &mut out);
            (out, verdict)
        }
    }
}

fn invalid(object: &str, errors: &str, digest: Option<String>) -> Event {
    Event {
        kind: EventKind::InvalidSpec,
        object: object.to_owned(),
        digest,
        previous_digest: None,
        version: None,
        reason: errors.to_owned(),
        message: format!("invalid desired state, the last valid version stays in force: {errors}"),
    }
}

/// The outcome's events; the new verdict.
fn reconciled(prev: Option<Verdict>, r: &Report, out: &mut Vec<Event>) -> Option<Verdict> {
    let p = &r.plan;
    let ev =
        |kind, digest: Option<&String>, previous: Option<&String>, reason: String, message| Event {
            kind,
            object: r.name.clone(),
            digest: digest.cloned(),
            previous_digest: previous.cloned(),
            version: r.app_version.clone(),
            reason,
            message,
        };
    let sh = |d: Option<&String>| d.map(|d| short(d).to_owned()).unwrap_or_else(|| "-".into());
    let (target, current) = (p.target_digest.as_ref(), p.current_digest.as_ref());
    let degraded = |out: &mut Vec<Event>, reason: String| {
        if prev != Some(Verdict::Degraded) {
            out.push(ev(
                EventKind::Degraded,
                current.or(target),
                None,
                reason.clone(),
                format!("degraded: {reason}"),
            ));
        }
        Some(Verdict::Degraded)
    };
    let offered = |out: &mut Vec<Event>| {
        if let Some(a) = &p.available_digest {
            out.push(ev(
                EventKind::UpdateAvailable,
                Some(a),
                current,
                "UpdateAvailable".into(),
                format!(
                    "{} is available; {} keeps running ({})",
                    short(a),
                    sh(current),
                    p.notes.join("; ")
                ),
            ));
        }
    };
    let fine = |out: &mut Vec<Event>| {
        if r.target_failed {
            // A target that failed before while the previous version serves: reported when it failed.
            return Some(Verdict::Degraded);
        }
        if prev == Some(Verdict::Degraded) && out.is_empty() {
            out.push(ev(
                EventKind::Recovered,
                current.or(target),
                None,
                "Recovered".into(),
                "converged and healthy again".into(),
            ));
        }
        Some(Verdict::Fine)
    };
    match &r.outcome {
        None => None,
        Some(Outcome::Converged) => {
            offered(out);
            fine(out)
        }
        Some(Outcome::Changed { .. }) => {
            if matches!(p.action, Action::Update | Action::Resume) && target != current {
                out.push(ev(
                    EventKind::Updated,
                    target,
                    current,
                    "Updated".into(),
                    format!(
                        "updated {} -> {} in {:.1} s{}",
                        sh(current),
                        sh(target),
                        r.seconds,
                        r.app_version
                            .as_ref()
                            .map(|v| format!(", version {v}"))
                            .unwrap_or_default()
                    ),
                ));
            }
            fine(out)
        }
        Some(Outcome::RolledBack { phase, reason }) => {
            let why = format!("{}: {reason}", phase.as_str());
            out.push(ev(
                EventKind::RolledBack,
                target,
                current,
                why.clone(),
                format!(
                    "update to {} failed ({why}); rolled back to {}",
                    sh(target),
                    sh(current)
                ),
            ));
            Some(Verdict::Degraded)
        }
        Some(Outcome::Rejected { reason }) => {
            out.push(ev(
                EventKind::PreflightRejected,
                target,
                current,
                reason.clone(),
                format!(
                    "preflight rejected {} ({reason}); {} keeps running, untouched",
                    sh(target),
                    sh(current)
                ),
            ));
            Some(Verdict::Degraded)
        }
        Some(Outcome::Failed { phase, reason }) => {
            degraded(out, format!("{}: {reason}", phase.as_str()))
        }
        Some(Outcome::Blocked { message, .. }) => {
            if r.converged() {
                // Policy monitor: drift is reported, never acted on.
                offered(out);
                fine(out)
            } else if r.target_failed {
                Some(Verdict::Degraded)
            } else {
                degraded(out, message.clone())
            }
        }
    }
}

/// Per-object memory: the last verdict, and the last value sent per (object, kind).
#[derive(Debug, Default)]
pub struct Tracker {
    verdicts: HashMap<String, Verdict>,
    sent: HashMap<(String, EventKind), String>,
}

impl Tracker {
    /// Derives the events of `obs`, updates the verdict, and keeps only the events not sent before
    /// with the same (kind, object, digests): a flapping object is reported once until its digest
    /// changes.
    pub fn observe(&mut self, obs: Observation<'_>) -> Vec<Event> {
        let object = match obs {
            Observation::Reconciled { report, .. } => report.name.as_str(),
            Observation::Failed { object, .. } | Observation::Orphaned { object } => object,
            Observation::InvalidInput { file, .. } => file,
        };
        let prev = self.verdicts.get(object).copied();
        let (events, verdict) = derive(prev, obs);
        if let Some(v) = verdict {
            self.verdicts.insert(object.to_owned(), v);
        }
        events
            .into_iter()
            .filter(|e| {
                let value = e.dedupe_value();
                let key = (e.object.clone(), e.kind);
                if self.sent.get(&key) == Some(&value) {
                    return false;
                }
                self.sent.insert(key, value);
                true
            })
            .collect()
    }

    /// Forgets an object (pruned).
    pub fn forget(&mut self, object: &str) {
        self.verdicts.remove(object);
        self.sent.retain(|(o, _), _| o != object);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::execute::Phase;
    use crate::plan::Plan;
    use crate::status::ChangeAction;

    const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const D2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

    /// A report of `web` with `action`, running `cur`, aiming at `target`, ending in `outcome`.
    fn report(action: Action, cur: &str, target: &str, outcome: Outcome) -> Report {
        let plan = Plan {
            name: "web".into(),
            action,
            target_digest: (!target.is_empty()).then(|| target.to_owned()),
            current_digest: (!cur.is_empty()).then(|| cur.to_owned()),
            drift: Vec::new(),
            notes: Vec::new(),
            steps: Vec::new(),
            held: false,
            available_digest: None,
        };
        Report {
            name: "web".into(),
            plan,
            outcome: Some(outcome),
            seconds: 1.5,
            target_failed: false,
            app_version: Some("2".into()),
        }
    }

    fn kinds(events: &[Event]) -> Vec<EventKind> {
        events.iter().map(|e| e.kind).collect()
    }

    /// (case, previous verdict, report, events, new verdict).
    type Row = (
        &'static str,
        Option<Verdict>,
        Report,
        Vec<EventKind>,
        Option<Verdict>,
    );

    #[test]
    fn derivation_table() {
        use EventKind as K;
        use Verdict::{Degraded as Bad, Fine};
        let changed = |action| Outcome::Changed { action };
        let rolled = Outcome::RolledBack {
            phase: Phase::Health,
            reason: "HTTP 500".into(),
        };
        let failed = Outcome::Failed {
            phase: Phase::Pull,
            reason: "no such image".into(),
        };
        let mut monitor = report(Action::Nothing, D1, D1, Outcome::Converged);
        monitor.plan.available_digest = Some(D2.into());
        let mut failed_before = report(Action::Nothing, D1, D2, Outcome::Converged);
        failed_before.target_failed = true;
        let blocked = Outcome::Blocked {
            reason: crate::plan::BlockReason::NameConflict,
            message: "a container named web exists".into(),
        };
        let table: Vec<Row> = vec![
            (
                "update",
                Some(Fine),
                report(Action::Update, D1, D2, changed(ChangeAction::Update)),
                vec![K::Updated],
                Some(Fine),
            ),
            (
                "update after degraded: updated only",
                Some(Bad),
                report(Action::Update, D1, D2, changed(ChangeAction::Update)),
                vec![K::Updated],
                Some(Fine),
            ),
            (
                "create is not an update",
                None,
                report(Action::Create, "", D1, changed(ChangeAction::Create)),
                vec![],
                Some(Fine),
            ),
            (
                "converged",
                Some(Fine),
                report(Action::Nothing, D1, D1, Outcome::Converged),
                vec![],
                Some(Fine),
            ),
            (
                "recovered",
                Some(Bad),
                report(Action::Nothing, D1, D1, Outcome::Converged),
                vec![K::Recovered],
                Some(Fine),
            ),
            (
                "restart heals",
                Some(Bad),
                report(Action::Start, D1, D1, changed(ChangeAction::Start)),
                vec![K::Recovered],
                Some(Fine),
            ),
            (
                "rollback",
                Some(Fine),
                report(Action::Update, D1, D2, rolled.clone()),
                vec![K::RolledBack],
                Some(Bad),
            ),
            (
                "rejected",
                None,
                report(
                    Action::Update,
                    D1,
                    D2,
                    Outcome::Rejected {
                        reason: "exit 3".into(),
                    },
                ),
                vec![K::PreflightRejected],
                Some(Bad),
            ),
            (
                "failed",
                Some(Fine),
                report(Action::Update, D1, D2, failed.clone()),
                vec![K::Degraded],
                Some(Bad),
            ),
            (
                "still failing",
                Some(Bad),
                report(Action::Update, D1, D2, failed),
                vec![],
                Some(Bad),
            ),
            (
                "blocked",
                None,
                report(Action::Nothing, D1, D1, blocked),
                vec![K::Degraded],
                Some(Bad),
            ),
            (
                "monitor offers",
                Some(Fine),
                monitor,
                vec![K::UpdateAvailable],
                Some(Fine),
            ),
            (
                "failed target stays quiet",
                Some(Bad),
                failed_before,
                vec![],
                Some(Bad),
            ),
        ];
        for (what, prev, r, want, verdict) in table {
            let (ev, v) = derive(
                prev,
                Observation::Reconciled {
                    report: &r,
                    invalid: None,
                },
            );
            assert_eq!(kinds(&ev), want, "{what}");
            assert_eq!(v, verdict, "{what}");
        }
    }

    #[test]
    fn event_fields() {
        let r = report(
            Action::Update,
            D1,
            D2,
            Outcome::RolledBack {
                phase: Phase::Health,
                reason: "HTTP 500".into(),
            },
        );
        let (ev, _) = derive(
            None,
            Observation::Reconciled {
                report: &r,
                invalid: Some("a.yaml:3:5: spec.image: bad"),
            },
        );
        assert_eq!(
            kinds(&ev),
            vec![EventKind::InvalidSpec, EventKind::RolledBack]
        );
        assert!(ev[0].reason.contains("a.yaml:3:5"));
        let rb = &ev[1];
        assert_eq!(rb.digest.as_deref(), Some(D2));
        assert_eq!(rb.previous_digest.as_deref(), Some(D1));
        assert!(rb.reason.contains("HTTP 500"), "{rb:?}");
        let (ev, v) = derive(
            Some(Verdict::Degraded),
            Observation::Failed {
                object: "web",
                error: "engine down",
            },
        );
        assert!(ev.is_empty());
        assert_eq!(v, Some(Verdict::Degraded));
        let (ev, v) = derive(None, Observation::Orphaned { object: "old" });
        assert_eq!(kinds(&ev), vec![EventKind::Orphaned]);
        assert_eq!(v, None);
        let (ev, _) = derive(
            None,
            Observation::InvalidInput {
                file: "x.yaml",
                errors: "x.yaml:2:1: bad",
            },
        );
        assert_eq!(ev[0].object, "x.yaml");
    }

    #[test]
    fn fifty_flaps_send_one_message_per_kind() {
        let mut t = Tracker::default();
        let bad = report(
            Action::Update,
            D1,
            D2,
            Outcome::Failed {
                phase: Phase::Start,
                reason: "exit 1".into(),
            },
        );
        let good = report(
            Action::Start,
            D1,
            D1,
            Outcome::Changed {
                action: ChangeAction::Start,
            },
        );
        let mut sent = Vec::new();
        for _ in 0..50 {
            sent.extend(t.observe(Observation::Reconciled {
                report: &bad,
                invalid: None,
            }));
            sent.extend(t.observe(Observation::Reconciled {
                report: &good,
                invalid: None,
            }));
        }
        assert_eq!(
            kinds(&sent),
            vec![EventKind::Degraded, EventKind::Recovered]
        );
        // The same rollback 50 times: one message.
        let rb = report(
            Action::Update,
            D1,
            D2,
            Outcome::RolledBack {
                phase: Phase::Health,
                reason: "HTTP 500".into(),
            },
        );
        let n: usize = (0..50)
            .map(|_| {
                t.observe(Observation::Reconciled {
                    report: &rb,
                    invalid: None,
                })
                .len()
            })
            .sum();
        assert_eq!(n, 1);
        // A new digest is news again.
        let mut rb3 = rb.clone();
        rb3.plan.target_digest = Some("sha256:3".into());
        assert_eq!(
            t.observe(Observation::Reconciled {
                report: &rb3,
                invalid: None
            })
            .len(),
            1
        );
        t.forget("web");
        assert_eq!(
            t.observe(Observation::Reconciled {
                report: &rb3,
                invalid: None
            })
            .len(),
            1
        );
    }

    #[test]
    fn kinds_round_trip() {
        for k in EventKind::ALL {
            assert_eq!(EventKind::parse(k.as_str()), Some(k));
        }
        assert_eq!(EventKind::parse("nope"), None);
    }
}
