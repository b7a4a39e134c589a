//! The Docker events watcher: follows the engine's event stream for managed containers, reconnects with
//! backoff when the engine goes away, and tells the controller when it is back so it lists everything
//! again (events missed in between are caught by that full resync). Keeps `engine_reachable` current.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::backoff::Backoff;
use crate::engine::{Engine, EngineEvent};
use crate::shared::Shared;

/// Engine actions that may mean a managed container drifted from its desired state.
pub const RELEVANT_ACTIONS: &[&str] = &["die", "destroy", "stop", "oom", "health_status", "kill"];

/// A stream that ran this long counts as healthy: the reconnect backoff starts over.
const HEALTHY_AFTER: Duration = Duration::from_secs(30);

/// What the watcher tells the controller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EngineSignal {
    /// An event of a managed container.
    Event(EngineEvent),
    /// The stream broke (engine stopped or unreachable).
    Lost(String),
    /// The engine answers again and the stream is open: list everything again.
    Reconnected,
}

/// Runs until `tx` closes.
pub async fn watch(engine: Arc<dyn Engine>, shared: Arc<Shared>, tx: mpsc::Sender<EngineSignal>) {
    let mut backoff = Backoff::for_engine();
    let mut lost = false;
    loop {
        // Wait for the engine.
        loop {
            match engine.ping().await {
                Ok(()) => break,
                Err(e) => {
                    shared.engine_reachable.store(false, Ordering::Relaxed);
                    let wait = backoff.next().unwrap_or(Duration::from_secs(10));
                    tracing::debug!(error = %e, retry_in = ?wait, "engine not answering");
                    if tx.is_closed() {
                        return;
                    }
                    tokio::time::sleep(wait).await;
                }
            }
        }
        shared.engine_reachable.store(true, Ordering::Relaxed);
        let mut stream = engine.events();
        if lost {
            tracing::info!("Docker engine reachable again: resyncing every object");
            if tx.send(EngineSignal::Reconnected).await.is_err() {
                return;
            }
        }
        let opened = Instant::now();
        let why = loop {
            match stream.next().await {
                Some(Ok(ev)) => {
                    if tx.send(EngineSignal::Event(ev)).await.is_err() {
                        return;
                    }
                }
                Some(Err(e)) => break e.to_string(),
                None => break "event stream ended".to_owned(),
            }
        };
        if opened.elapsed() >= HEALTHY_AFTER {
            backoff.reset();
        }
        lost = true;
        shared.engine_reachable.store(false, Ordering::Relaxed);
        tracing::warn!(reason = %why, "lost the Docker event stream; reconnecting");
        if tx.send(EngineSignal::Lost(why)).await.is_err() {
            return;
        }
        tokio::time::sleep(backoff.next().unwrap_or(Duration::from_secs(1))).await;
    }
}
