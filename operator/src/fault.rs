//! Test-only fault injection: with `DOCKOP_FAULT_ABORT_AFTER_STEP=N` (and optionally
//! `DOCKOP_FAULT_OBJECT=name`), dockop aborts hard right after step N of a plan, as if killed. Honoured only
//! in debug builds or with the `fault-injection` feature; release builds compile it away.

use crate::plan::Step;

/// Called by the executor after each step (1-based).
pub fn after_step(n: usize, step: &Step) {
    #[cfg(any(debug_assertions, feature = "fault-injection"))]
    {
        let Some(want) = std::env::var("DOCKOP_FAULT_ABORT_AFTER_STEP")
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
        else {
            return;
        };
        if want == n {
            eprintln!("dockop: fault injection: aborting after step {n} ({step})");
            std::process::abort();
        }
    }
    #[cfg(not(any(debug_assertions, feature = "fault-injection")))]
    let _ = (n, step);
}
