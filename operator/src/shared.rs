//! State shared by the controller and the HTTP server: the desired objects in force, readiness flags, the
//! source revision, and the channel through which HTTP asks for work.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::{RwLock, mpsc};

use crate::engine::Engine;
use crate::spec::Container;
use crate::status::Store;
use crate::telemetry::Metrics;

/// Work the HTTP side can ask the controller for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trigger {
    /// Reconcile one object now (`POST /reconcile/{name}`).
    Object(String),
    /// Fetch / re-read the source now (`POST /hooks/git`).
    Source,
}

/// Shared between the controller and HTTP.
#[derive(Debug)]
pub struct Shared {
    /// The state directory (statuses).
    pub store: Store,
    /// The engine.
    pub engine: Arc<dyn Engine>,
    /// Desired objects currently in force, by name (shared with the controller and the monitor's tasks:
    /// one copy of each object).
    pub objects: RwLock<BTreeMap<String, Arc<Container>>>,
    /// Revision of the source in force (git commit SHA, or a content hash for files).
    pub revision: RwLock<Option<String>>,
    /// Set once every object has been reconciled once.
    pub first_sync_done: AtomicBool,
    /// Last engine call succeeded.
    pub engine_reachable: AtomicBool,
    /// Requests from HTTP to the controller.
    pub trigger: mpsc::UnboundedSender<Trigger>,
    /// The metrics registry `/metrics` serves, which the controller, the monitor and the engine count in.
    pub metrics: Arc<Metrics>,
}

impl Shared {
    /// New shared state and the receiving end of the trigger channel.
    pub fn new(
        store: Store,
        engine: Arc<dyn Engine>,
        metrics: Arc<Metrics>,
    ) -> (Arc<Self>, mpsc::UnboundedReceiver<Trigger>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let s = Shared {
            store,
            engine,
            objects: RwLock::new(BTreeMap::new()),
            revision: RwLock::new(None),
            first_sync_done: AtomicBool::new(false),
            engine_reachable: AtomicBool::new(false),
            trigger: tx,
            metrics,
        };
        (Arc::new(s), rx)
    }

    /// `/readyz`: engine reachable and first sync done.
    pub fn is_ready(&self) -> bool {
        self.first_sync_done.load(Ordering::Relaxed)
            && self.engine_reachable.load(Ordering::Relaxed)
    }
}
