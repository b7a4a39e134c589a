//! The background health monitor of `dockop run`: one task per object in force probes its health path at
//! `health.intervalSeconds` (or, without a health section, checks that the container runs), refreshes
//! memory usage now and then, and publishes what it saw on a [`Board`] that `/health` reads without ever
//! waiting on an app or the engine. It also keeps `dockop_ready{name}` and
//! `dockop_health_probe_failures_total{name}` current between reconciles.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

use crate::controller::shared::Shared;
use crate::engine::{ContainerInfo, Engine, LABEL_NAME};
use crate::health::{ProbeResult, probe};
use crate::observe::digest_of;
use crate::spec::{Container, ContainerSpec};
use crate::telemetry::{Metrics, metrics};

/// How often an object without a health section is looked at.
pub const NO_HEALTH_INTERVAL: Duration = Duration::from_secs(2);
/// How often memory usage is refreshed per object.
pub const MEMORY_INTERVAL: Duration = Duration::from_secs(10);
/// How often the monitor looks for objects that came or went.
const SUPERVISE_INTERVAL: Duration = Duration::from_millis(500);

/// What the monitor last saw of one object.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    /// When the last look (inspect, and probe when the object has a health section) began.
    pub observed_at: Instant,
    /// Active container ID, `None` when there is none.
    pub container_id: Option<String>,
    /// Engine state of the active container (`running`, `exited`, ...), `None` when there is none.
    pub container_state: Option<String>,
    /// True while the container runs.
    pub running: bool,
    /// Start of the current run.
    pub started_at: Option<DateTime<Utc>>,
    /// Manifest digest the container was created from.
    pub digest: Option<String>,
    /// Last probe (None without a health section or while the container does not run).
    pub probe: Option<ProbeResult>,
    /// Failed probes in a row.
    pub consecutive_failures: u32,
    /// App version from the last healthy answer of this container.
    pub version: Option<String>,
    /// Memory usage in bytes (engine stats), refreshed every [`MEMORY_INTERVAL`].
    pub memory_bytes: Option<u64>,
    /// Why the engine could not be asked, when it could not.
    pub engine_error: Option<String>,
}

impl Snapshot {
    /// A snapshot seen now with no container.
    pub fn empty(now: Instant) -> Self {
        Snapshot {
            observed_at: now,
            container_id: None,
            container_state: None,
            running: false,
            started_at: None,
            digest: None,
            probe: None,
            consecutive_failures: 0,
            version: None,
            memory_bytes: None,
            engine_error: None,
        }
    }
}

/// The monitor's findings, by object name. Cheap to read: a lock held for a map copy at most.
#[derive(Debug, Default)]
pub struct Board {
    inner: RwLock<BTreeMap<String, Snapshot>>,
}

impl Board {
    /// An empty board.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// The snapshot of one object.
    pub fn get(&self, name: &str) -> Option<Snapshot> {
        self.read().get(name).cloned()
    }

    /// Replaces the snapshot of one object.
    pub fn set(&self, name: &str, snap: Snapshot) {
        self.write().insert(name.to_owned(), snap);
    }

    /// Changes the snapshot of one object in place, creating it when missing.
    pub fn update(&self, name: &str, f: impl FnOnce(&mut Snapshot)) {
        let mut g = self.write();
        let snap = g
            .entry(name.to_owned())
            .or_insert_with(|| Snapshot::empty(Instant::now()));
        f(snap);
    }

    /// Drops an object.
    pub fn remove(&self, name: &str) {
        self.write().remove(name);
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Snapshot>> {
        match self.inner.read() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, Snapshot>> {
        match self.inner.write() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }
}

/// The health of one object as `/health` reports it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ObjectHealth {
    /// Object name.
    pub name: String,
    /// Runs and answers healthy now (a probe no older than two probe intervals).
    pub healthy: bool,
    /// App version from the health answer.
    pub version: Option<String>,
    /// Engine state of the container (`running`, `exited`, `paused`, ...), `null` when there is none.
    pub container_state: Option<String>,
    /// Seconds since the container started, while it runs.
    pub uptime_seconds: Option<u64>,
    /// Memory usage in MiB (engine stats).
    pub memory_usage_mb: Option<f64>,
    /// Manifest digest the container runs.
    pub digest: Option<String>,
    /// One line: why healthy or not.
    pub detail: String,
    /// Seconds since the last probe (or look, without a health section).
    pub checked_seconds_ago: Option<f64>,
    /// Failed probes in a row.
    pub consecutive_failures: u32,
}

/// How often `spec` is looked at.
pub fn interval_of(spec: &ContainerSpec) -> Duration {
    spec.health.as_ref().map_or(NO_HEALTH_INTERVAL, |h| {
        Duration::from_secs(u64::from(h.interval_seconds.max(1)))
    })
}

/// Judges one object from the monitor's snapshot: healthy when its container runs and, with a health
/// section, the last probe answered healthy and is no older than two probe intervals.
pub fn evaluate(
    obj: &Container,
    snap: Option<&Snapshot>,
    now: Instant,
    wall: DateTime<Utc>,
) -> ObjectHealth {
    let name = obj.metadata.name.clone();
    let Some(s) = snap else {
        return ObjectHealth {
            name,
            healthy: false,
            version: None,
            container_state: None,
            uptime_seconds: None,
            memory_usage_mb: None,
            digest: None,
            detail: "not checked yet".to_owned(),
            checked_seconds_ago: None,
            consecutive_failures: 0,
        };
    };
    let max_age = interval_of(&obj.spec) * 2;
    let age = now.saturating_duration_since(s.observed_at);
    let (healthy, detail) = if let Some(e) = &s.engine_error {
        (false, format!("engine: {e}"))
    } else if s.container_id.is_none() {
        (false, "no container".to_owned())
    } else if !s.running {
        (
            false,
            format!(
                "container is {}",
                s.container_state.as_deref().unwrap_or("unknown")
            ),
        )
    } else if age > max_age {
        (
            false,
            format!(
                "no answer for {:.1} s (probe older than two intervals)",
                age.as_secs_f64()
            ),
        )
    } else if obj.spec.health.is_none() {
        (true, "running (no health check)".to_owned())
    } else {
        match &s.probe {
            Some(p) => (p.is_healthy(), p.describe()),
            None => (false, "not probed yet".to_owned()),
        }
    };
    let uptime_seconds = s
        .started_at
        .filter(|_| s.running)
        .and_then(|t| wall.signed_duration_since(t).to_std().ok())
        .map(|d| d.as_secs());
    ObjectHealth {
        name,
        healthy,
        version: s.version.clone(),
        container_state: s.container_state.clone(),
        uptime_seconds,
        memory_usage_mb: s
            .memory_bytes
            .map(|b| (b as f64 / (1024.0 * 1024.0) * 100.0).round() / 100.0),
        digest: s.digest.clone(),
        detail,
        checked_seconds_ago: Some((age.as_secs_f64() * 1000.0).round() / 1000.0),
        consecutive_failures: s.consecutive_failures,
    }
}

/// Where to probe `info`: its bridge IP and the health port, else the published port (as
/// [`crate::execute::probe_object`] does, without reading env files).
fn probe_target(spec: &ContainerSpec, info: &ContainerInfo, port: u16) -> Option<(String, u16)> {
    if let Some(ip) = &info.ip_address {
        return Some((ip.clone(), port));
    }
    spec.ports
        .iter()
        .find(|p| p.container_port == port)
        .map(|p| {
            let host = if p.host_ip == "0.0.0.0" {
                "127.0.0.1".to_owned()
            } else {
                p.host_ip.clone()
            };
            (host, p.effective_host_port())
        })
}

/// The monitor: supervises one task per object in force. Dropping the returned handle does not stop it;
/// abort it.
pub fn spawn(shared: Arc<Shared>, board: Arc<Board>) -> JoinHandle<()> {
    tokio::spawn(supervise(shared, board))
}

async fn supervise(shared: Arc<Shared>, board: Arc<Board>) {
    let mut tasks: BTreeMap<String, (Container, JoinHandle<()>)> = BTreeMap::new();
    let mut tick = tokio::time::interval(SUPERVISE_INTERVAL);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let objects = shared.objects.read().await.clone();
        // Gone or changed objects.
        let stale: Vec<String> = tasks
            .iter()
            .filter(|(name, (obj, _))| objects.get(*name) != Some(obj))
            .map(|(name, _)| name.clone())
            .collect();
        for name in stale {
            if let Some((_, task)) = tasks.remove(&name) {
                task.abort();
            }
            if !objects.contains_key(&name) {
                board.remove(&name);
                metrics().forget_object(&name);
            }
        }
        for (name, obj) in &objects {
            if !tasks.contains_key(name) {
                let task = tokio::spawn(watch(
                    Arc::clone(&shared.engine),
                    Arc::clone(&board),
                    obj.clone(),
                ));
                tasks.insert(name.clone(), (obj.clone(), task));
            }
        }
        // A probe that hangs longer than two intervals must not leave `ready` at 1.
        let now = Instant::now();
        let wall = Utc::now();
        for (name, obj) in &objects {
            if let Some(s) = board.get(name)
                && !evaluate(obj, Some(&s), now, wall).healthy
            {
                metrics().set_ready(name, false);
            }
        }
    }
}

/// One object: look (and probe) every interval; refresh memory every [`MEMORY_INTERVAL`].
async fn watch(engine: Arc<dyn Engine>, board: Arc<Board>, obj: Container) {
    tokio::join!(
        probe_loop(Arc::clone(&engine), Arc::clone(&board), &obj),
        memory_loop(engine, board, &obj.metadata.name),
    );
}

async fn probe_loop(engine: Arc<dyn Engine>, board: Arc<Board>, obj: &Container) {
    let name = obj.metadata.name.as_str();
    let mut tick = tokio::time::interval(interval_of(&obj.spec));
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    // The container that has answered healthy at least once since it started: probe failures of a
    // container still starting belong to the executor's health gate, not to the monitor.
    let mut healthy_once: Option<String> = None;
    loop {
        tick.tick().await;
        // A look counts from when it began: a slow engine or a slow answer does not age a fresh result.
        let began = Instant::now();
        let found = engine.inspect(name).await;
        let info = match found {
            Ok(i) => i.filter(|c| c.label(LABEL_NAME) == Some(name)),
            Err(e) => {
                board.update(name, |s| {
                    s.observed_at = began;
                    s.engine_error = Some(e.to_string());
                });
                metrics().set_ready(name, false);
                continue;
            }
        };
        let Some(info) = info else {
            board.update(name, |s| {
                let memory = s.memory_bytes;
                *s = Snapshot::empty(began);
                s.memory_bytes = memory;
            });
            metrics().set_ready(name, false);
            healthy_once = None;
            continue;
        };
        let running = info.is_running();
        let probe_result = match (&obj.spec.health, running) {
            (Some(h), true) => Some(match probe_target(&obj.spec, &info, h.port) {
                Some((host, port)) => {
                    probe(
                        &host,
                        port,
                        &h.path,
                        Duration::from_secs(u64::from(h.timeout_seconds.max(1))),
                    )
                    .await
                }
                None => ProbeResult::NotListening {
                    message: "the container has no IP address and the health port is not published"
                        .into(),
                },
            }),
            _ => None,
        };
        let healthy = running && probe_result.as_ref().is_none_or(ProbeResult::is_healthy);
        if healthy {
            healthy_once = Some(info.id.clone());
        } else if probe_result.is_some() && healthy_once.as_deref() == Some(info.id.as_str()) {
            Metrics::inc_name(&metrics().health_probe_failures_total, name);
        }
        let started_at = info
            .started_at
            .as_deref()
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&Utc));
        board.update(name, |s| {
            let same_container = s.container_id.as_deref() == Some(info.id.as_str());
            s.observed_at = began;
            s.engine_error = None;
            s.running = running;
            s.container_state = Some(info.state.to_string());
            s.started_at = started_at;
            s.digest = digest_of(&info).map(str::to_owned);
            if !same_container {
                s.version = None;
                s.consecutive_failures = 0;
                s.memory_bytes = None;
            }
            s.container_id = Some(info.id.clone());
            if let Some(ProbeResult::Healthy { version: Some(v) }) = &probe_result {
                s.version = Some(v.clone());
            }
            s.consecutive_failures = if healthy {
                0
            } else {
                s.consecutive_failures.saturating_add(1)
            };
            s.probe = probe_result;
        });
        metrics().set_ready(name, healthy);
    }
}

async fn memory_loop(engine: Arc<dyn Engine>, board: Arc<Board>, name: &str) {
    let mut tick = tokio::time::interval(MEMORY_INTERVAL);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(id) = board
            .get(name)
            .and_then(|s| s.running.then_some(s.container_id).flatten())
        else {
            // Not running (yet): look again soon rather than a full interval later.
            tokio::time::sleep(Duration::from_millis(250)).await;
            tick.reset_immediately();
            continue;
        };
        if let Ok(bytes) = engine.memory_usage(&id).await {
            board.update(name, |s| {
                if s.container_id.as_deref() == Some(id.as_str()) {
                    s.memory_bytes = bytes;
                }
            });
        }
    }
}
