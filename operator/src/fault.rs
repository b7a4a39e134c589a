//! Test-only fault injection: with `DOCKOP_FAULT_ABORT_AT=POINT`, dockop aborts hard (as if `kill -9`)
//! when it reaches that point. Points: `step-N` (right after step N of a plan, 1-based), `rollback-N` (right
//! after step N of a rollback: 1 candidate removed, 2 previous renamed back, 3 started, 4 users applied),
//! `preflight-started` (the candidate runs). Honoured only in debug builds or with the `fault-injection`
//! feature; release builds compile it away.

use std::fmt::Display;

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

/// Called by the executor after each plan step (1-based).
pub fn after_step(n: usize, step: &dyn Display) {
    #[cfg(any(debug_assertions, feature = "fault-injection"))]
    if std::env::var_os("DOCKOP_FAULT_ABORT_AT").is_some() {
        tracing::debug!(step = %step, "fault point step-{n}");
        point(&format!("step-{n}"));
    }
    #[cfg(not(any(debug_assertions, feature = "fault-injection")))]
    let _ = (n, step);
}
