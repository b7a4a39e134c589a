//! The long-running controller (`dockop run`).
//!
//! STUB: a plain resync loop until the real controller (sources, events, work queue) lands.

pub mod shared;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use crate::cli::{GlobalArgs, RunArgs};
use crate::commands::{TermReporter, connect, load_valid, open_store};
use crate::reconcile::{Ctx, Options, reconcile};

/// Runs the operator until SIGTERM/SIGINT.
pub async fn run(global: GlobalArgs, args: RunArgs) -> ExitCode {
    let store = match open_store(&global) {
        Ok(s) => s,
        Err(c) => return c,
    };
    let engine = match connect(&global).await {
        Ok(e) => e,
        Err(c) => return c,
    };
    let ctx = Ctx {
        engine,
        store,
        reporter: Arc::new(TermReporter::new()),
    };
    loop {
        if let Some(loaded) = load_valid(&args.files) {
            for o in &loaded.objects {
                let opts = Options {
                    registry_max_age: Some(Duration::from_secs(u64::from(
                        o.object.spec.update.check_interval_seconds,
                    ))),
                    ..Default::default()
                };
                if let Err(e) = reconcile(&ctx, &o.object, None, &opts).await {
                    tracing::warn!(object = %o.object.metadata.name, error = %e, "reconcile failed");
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(args.resync_seconds)) => {}
            _ = tokio::signal::ctrl_c() => return ExitCode::SUCCESS,
        }
    }
}
