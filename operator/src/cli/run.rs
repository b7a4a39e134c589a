//! `dockop run`: the wiring of the operator, the one place that knows every part: the source (files or
//! git), the HTTP server (with the monitor), the Docker events watcher, notifications and the controller
//! loop. Each part only points down; this front end starts them and hands them their channels.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::mpsc;

use super::commands::{connect, open_store};
use super::{GlobalArgs, RunArgs};
use crate::controller::{Config, Controller, events, worker};
use crate::http::{HttpConfig, serve};
use crate::lock;
use crate::reconcile::Ctx;
use crate::shared::Shared;
use crate::source::file::FileSource;
use crate::source::git::{GitConfig, GitSource};
use crate::telemetry::Metrics;

/// How long a shutting-down `dockop run` waits for notifications still queued.
const NOTIFY_SHUTDOWN_WAIT: Duration = Duration::from_secs(3);

/// Runs the operator until SIGTERM/SIGINT.
pub async fn run(global: GlobalArgs, args: RunArgs, metrics: Arc<Metrics>) -> ExitCode {
    if args.files.is_empty() && args.git.is_none() {
        eprintln!(
            "error: dockop run needs a source\n  fix: pass -f FILE|DIR (one or more) or --git URL --branch B --path P"
        );
        return ExitCode::FAILURE;
    }
    let notifier = match super::commands::start_notifier(&args.notify, &metrics).await {
        Ok(n) => n,
        Err(c) => return c,
    };
    let store = match open_store(&global) {
        Ok(s) => s,
        Err(c) => return c,
    };
    let lock = match lock::acquire(store.dir()) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let engine = match connect(&global, &metrics).await {
        Ok(e) => e,
        Err(c) => return c,
    };
    let (shared, triggers) = Shared::new(store.clone(), engine.clone(), Arc::clone(&metrics));
    shared.engine_reachable.store(true, Ordering::Relaxed);
    let http = match serve(
        HttpConfig {
            listen: args.listen.clone(),
            token_file: args.reconcile_token_file.clone(),
            webhook_secret_file: args.webhook_secret_file.clone(),
        },
        shared.clone(),
    )
    .await
    {
        Ok(h) => h,
        Err(e) => {
            eprintln!("error: {e}\n  fix: pass --listen ADDR:PORT with a free port");
            return ExitCode::FAILURE;
        }
    };

    let debounce = Duration::from_millis(args.debounce_ms);
    let (source_tx, source_rx) = mpsc::channel(4);
    let (rescan_tx, rescan_rx) = mpsc::unbounded_channel();
    let (source_label, source_task, is_git) = match &args.git {
        Some(url) => {
            let src = GitSource::new(
                GitConfig {
                    url: url.clone(),
                    branch: args.branch.clone(),
                    paths: args.paths.clone(),
                    dir: store.dir().join("git"),
                    poll: Duration::from_secs(args.git_poll_seconds.max(1)),
                },
                Arc::clone(&metrics),
            );
            let label = src.label().to_owned();
            (label, tokio::spawn(src.run(source_tx, rescan_rx)), true)
        }
        None => {
            let src = FileSource::new(args.files.clone(), debounce, Arc::clone(&metrics));
            let label = src.label().to_owned();
            (label, tokio::spawn(src.run(source_tx, rescan_rx)), false)
        }
    };
    let (engine_tx, engine_rx) = mpsc::channel(256);
    let events_task = tokio::spawn(events::watch(engine.clone(), shared.clone(), engine_tx));

    let ctx = Ctx {
        engine,
        store,
        reporter: Arc::new(worker::QuietReporter),
        metrics,
    };
    let controller = Controller::new(
        Config {
            debounce,
            resync: Duration::from_secs(args.resync_seconds.max(1)),
            max_concurrent: args.max_concurrent,
            prune: args.prune,
            source_label,
        },
        ctx,
        shared,
        rescan_tx,
        is_git,
    )
    .with_notifier(notifier.clone());
    tracing::info!(
        listen = %args.listen,
        lock = %lock.path().display(),
        "dockop run started"
    );
    controller
        .run(source_rx, engine_rx, triggers, crate::signal::shutdown())
        .await;
    source_task.abort();
    events_task.abort();
    http.abort();
    let unsent = notifier.flush(NOTIFY_SHUTDOWN_WAIT).await;
    if !unsent.is_empty() {
        tracing::warn!(
            unsent = unsent.len(),
            "shutting down with notifications not delivered"
        );
    }
    drop(lock);
    ExitCode::SUCCESS
}
