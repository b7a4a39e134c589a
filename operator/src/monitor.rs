//! The background health monitor of `dockop run`. It publishes what it saw on a [`Board`] that `/health`,
//! `/health/{name}` and `/metrics` read without ever waiting on an app or the engine, and keeps
//! `dockop_ready{name}` and `dockop_health_probe_failures_total{name}` current between reconciles.
//!
//! Demand-driven: the monitor works at full rate only while someone watches.
//!
//! - **Watched** (`/health`, `/health/{name}` or `/metrics` requested within the last [`WATCH_WINDOW`]):
//!   each object with a health section is probed every `health.intervalSeconds`, and the container list
//!   is refreshed every [`Tuning::list_period`]. Memory usage (engine stats) is refreshed at most every
//!   [`MEMORY_INTERVAL`] per object, and only while `/health` or `/health/{name}` is watched (`/metrics`
//!   does not show it).
//! - **Idle** (nobody asked): each object is probed every [`Tuning::idle_period`] (30 s, or 10× its
//!   interval when that is longer), the container list is refreshed every 30 s, and stats are never
//!   called: `memoryUsageMb` keeps its last value.
//! - **Waking up**: a request wakes the monitor: the list is refreshed and every object probed right
//!   away. A request that finds a look made while idle and older than two intervals waits for that
//!   fresh look ([`Board::fresh_looks`], at most [`fresh_look_limit`]), so a load balancer polling every
//!   few minutes gets 200 for a healthy app and 503 for one that hung meanwhile, never 503 because the
//!   monitor was resting.
//!
//! No engine call per probe: the containers' state and IP come from one shared list call for all objects
//! ([`Engine::list_brief`]), refreshed as above and on demand when a probe finds nothing listening or
//! runs longer than an interval (the container may be gone, paused or replaced). A container is
//! inspected once per new container ID (for its start time), and again when it is seen running after
//! not running (a restart keeps the ID).
//!
//! `dockop_ready{name}` follows every look. A look counts as current for two probe periods of the mode it
//! was made in (two intervals while watched, two idle periods while idle), so an idle monitor does not
//! flip every object to not ready, and a probe that hangs while watched still drops `ready` within two
//! intervals.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};

use crate::engine::{ContainerInfo, Engine, LABEL_NAME};
use crate::health::{ProbeAuth, ProbeResult, probe_container};
use crate::observe::digest_of;
use crate::shared::Shared;
use crate::spec::{Container, ContainerSpec, Health, Port};
use crate::telemetry::Metrics;

/// How often an object without a health section is looked at (while watched).
pub const NO_HEALTH_INTERVAL: Duration = Duration::from_secs(2);
/// How often memory usage is refreshed per object at most (only while `/health` is watched).
pub const MEMORY_INTERVAL: Duration = Duration::from_secs(10);
/// How long a request to `/health`, `/health/{name}` or `/metrics` keeps the monitor at full rate.
pub const WATCH_WINDOW: Duration = Duration::from_secs(30);
/// How often the monitor looks for objects that came or went.
const SUPERVISE_INTERVAL: Duration = Duration::from_millis(500);
/// Least time between two list calls asked for on demand.
const LIST_SPACING: Duration = Duration::from_millis(250);
/// The first look of each task, and the looks after a wake-up, are spread over this much time (or the
/// interval when shorter): 200 probes at the same instant hold megabytes of connection buffers at once,
/// and the allocator keeps that peak.
const SPREAD: Duration = Duration::from_millis(500);

/// The monitor's periods; [`Tuning::default`] in production, shorter ones in tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tuning {
    /// Shortest probe period while idle, also the list period while idle (30 s).
    pub idle_floor: Duration,
    /// While idle an object is probed every `idle_factor` intervals when that is longer than the floor.
    pub idle_factor: u32,
    /// List period while watched (1 s: a paused or stopped container shows within one interval).
    pub list_period: Duration,
    /// Least time between two stats calls of one object.
    pub memory_interval: Duration,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            idle_floor: Duration::from_secs(30),
            idle_factor: 10,
            list_period: Duration::from_secs(1),
            memory_interval: MEMORY_INTERVAL,
        }
    }
}

impl Tuning {
    /// The probe period of an object with `interval` while nobody watches.
    pub fn idle_period(&self, interval: Duration) -> Duration {
        self.idle_floor.max(interval * self.idle_factor)
    }
}
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
    /// Time to the next look, as planned when this one was written: the interval while watched, the
    /// idle period otherwise ([`Duration::ZERO`] when unknown). A look stays current for two of these.
    pub period: Duration,
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
            period: Duration::ZERO,
        }
    }
}

/// Who asked the HTTP server for what the monitor saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Watcher {
    /// `/health` or `/health/{name}`: probes at the interval and memory usage.
    Health,
    /// `/metrics` (Prometheus watches `dockop_ready`): probes at the interval.
    Metrics,
}

/// The monitor's findings, by object name, and when they were last asked for. Cheap to read: a lock held
/// for a snapshot copy at most.
#[derive(Debug)]
pub struct Board {
    inner: RwLock<BTreeMap<String, Snapshot>>,
    epoch: Instant,
    window: Duration,
    /// Milliseconds since `epoch` (plus one; 0: never) of the last request, per [`Watcher`].
    asked: [AtomicU64; 2],
    /// Changed when a request arrives after an idle spell: wakes the monitor's tasks.
    wake: watch::Sender<()>,
    /// Changed at every write: requests waiting for a fresh look ([`Board::fresh_looks`]) wake on it.
    written: watch::Sender<()>,
}

impl Default for Board {
    fn default() -> Self {
        Board {
            inner: RwLock::default(),
            epoch: Instant::now(),
            window: WATCH_WINDOW,
            asked: [AtomicU64::new(0), AtomicU64::new(0)],
            wake: watch::Sender::new(()),
            written: watch::Sender::new(()),
        }
    }
}

impl Board {
    /// An empty board, watched for [`WATCH_WINDOW`] after each request.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// An empty board watched for `window` after each request (tests).
    pub fn with_window(window: Duration) -> Arc<Self> {
        Arc::new(Board {
            window,
            ..Self::default()
        })
    }

    /// Records a request: the monitor works at full rate for the next watch window. The first request
    /// after an idle spell wakes it at once.
    pub fn requested(&self, who: Watcher) {
        let now = self.millis(Instant::now());
        let before = self.asked[who as usize].swap(now, Ordering::Relaxed);
        if !self.fresh(before, now) {
            self.wake.send_replace(());
        }
    }

    /// True while `who` asked within the watch window.
    pub fn watched_by(&self, who: Watcher) -> bool {
        let now = self.millis(Instant::now());
        self.fresh(self.asked[who as usize].load(Ordering::Relaxed), now)
    }

    /// True while anyone watches (probes run at the interval).
    pub fn watched(&self) -> bool {
        self.watched_by(Watcher::Health) || self.watched_by(Watcher::Metrics)
    }

    /// Changes whenever a request ends an idle spell.
    pub fn wakes(&self) -> watch::Receiver<()> {
        self.wake.subscribe()
    }

    fn millis(&self, t: Instant) -> u64 {
        u64::try_from(t.saturating_duration_since(self.epoch).as_millis()).unwrap_or(u64::MAX - 1)
            + 1
    }

    fn fresh(&self, asked: u64, now: u64) -> bool {
        asked != 0 && u128::from(now.saturating_sub(asked)) <= self.window.as_millis()
    }

    /// The snapshot of one object.
    pub fn get(&self, name: &str) -> Option<Snapshot> {
        self.read().get(name).cloned()
    }

    /// Replaces the snapshot of one object.
    pub fn set(&self, name: &str, snap: Snapshot) {
        self.write().insert(name.to_owned(), snap);
        self.written.send_replace(());
    }

    /// Changes the snapshot of one object in place, creating it when missing.
    pub fn update(&self, name: &str, f: impl FnOnce(&mut Snapshot)) {
        {
            let mut g = self.write();
            let snap = g
                .entry(name.to_owned())
                .or_insert_with(|| Snapshot::empty(Instant::now()));
            f(snap);
        }
        self.written.send_replace(());
    }

    /// Waits until each of `names` has a look that began at `since` or later, at most until `deadline`
    /// (a look that does not come leaves the snapshot as it was, and [`evaluate`] says why).
    pub async fn fresh_looks(&self, names: &[&str], since: Instant, deadline: Instant) {
        let mut written = self.written.subscribe();
        loop {
            let done = {
                let g = self.read();
                names
                    .iter()
                    .all(|n| g.get(*n).is_none_or(|s| s.observed_at >= since))
            };
            if done {
                return;
            }
            tokio::select! {
                r = written.changed() => if r.is_err() { return },
                () = tokio::time::sleep_until(deadline) => return,
            }
        }
    }

    /// True when the last look at `name` is older than two of its periods (and two intervals): it must
    /// not count as ready any more (a probe that hangs).
    pub fn is_outdated(&self, name: &str, interval: Duration, now: Instant) -> bool {
        self.read().get(name).is_some_and(|s| {
            now.saturating_duration_since(s.observed_at) > interval.max(s.period) * 2
        })
    }

    /// True when `name` has a snapshot.
    pub fn contains(&self, name: &str) -> bool {
        self.read().contains_key(name)
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

/// The health of one object as `/health` reports it (camelCase keys, as `/status` and Kubernetes).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
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

/// True when `snap` is a look made while the monitor was idle and is now older than two probe intervals:
/// it is no evidence either way, so a request should wait for the woken monitor's fresh look (at most
/// [`fresh_look_limit`]) before it judges.
pub fn needs_fresh_look(obj: &Container, snap: Option<&Snapshot>, now: Instant) -> bool {
    let interval = interval_of(&obj.spec);
    snap.is_some_and(|s| {
        s.running
            && s.engine_error.is_none()
            && s.period > interval
            && now.saturating_duration_since(s.observed_at) > interval * 2
    })
}

/// How long a request waits for a fresh look of `obj` after an idle spell: the spread of the woken
/// looks, one probe timeout, and a second for the list call.
pub fn fresh_look_limit(obj: &Container) -> Duration {
    let timeout = obj.spec.health.as_ref().map_or(Duration::ZERO, |h| {
        Duration::from_secs(u64::from(h.timeout_seconds.max(1)))
    });
    SPREAD + timeout + Duration::from_secs(1)
}

/// Judges one object from the monitor's snapshot: healthy when its container runs and, with a health
/// section, the last probe answered healthy and is no older than two probe intervals. A request that finds
/// a look made while the monitor was idle first waits for a fresh one ([`needs_fresh_look`]), so a load
/// balancer polling every few minutes sees the app as it is now: 200 for a healthy app, 503 within one
/// probe timeout for an app that hangs.
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
    let interval = interval_of(&obj.spec);
    let max_age = interval * 2;
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
    } else if let Some(p) = s.probe.as_ref().filter(|p| !p.is_healthy()) {
        // A failed probe is evidence, however old: say what it found (a hang shows as the timeout).
        (false, p.describe())
    } else if age > max_age && s.period > interval {
        (
            false,
            format!(
                "stale: last looked at {:.1} s ago while nobody watched /health (idle, every {} s); \
                 looking every {} s again now",
                age.as_secs_f64(),
                s.period.as_secs(),
                interval.as_secs()
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

/// The containers as the last list call saw them, shared by every object's task: no engine call per probe.
#[derive(Debug, Default)]
struct Fleet {
    seen: RwLock<Seen>,
    /// A task asks for a list call now (container gone, replaced or paused?).
    refresh: Notify,
}

#[derive(Debug, Default)]
struct Seen {
    /// The active container of each object (named like it), `started_at` filled in from an inspect.
    active: HashMap<String, ContainerInfo>,
    /// Why the last list call failed, when it did.
    error: Option<String>,
}

impl Fleet {
    /// The active container of `name` as last listed; `Err` when the last list call failed.
    fn get(&self, name: &str) -> Result<Option<ContainerInfo>, String> {
        let seen = match self.seen.read() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        match &seen.error {
            Some(e) => Err(e.clone()),
            None => Ok(seen.active.get(name).cloned()),
        }
    }

    fn set(&self, seen: Seen) {
        match self.seen.write() {
            Ok(mut g) => *g = seen,
            Err(p) => *p.into_inner() = seen,
        }
    }
}

/// Start time and run state of a container when it was last inspected, by container ID.
#[derive(Debug, Clone)]
struct Started {
    started_at: Option<String>,
    running: bool,
}

/// The monitor: supervises one task per object in force. Dropping the returned handle does not stop it;
/// abort it.
pub fn spawn(shared: Arc<Shared>, board: Arc<Board>) -> JoinHandle<()> {
    start(shared, board, Tuning::default(), Prober::Http)
}

/// [`spawn`] with other periods and the apps' answers scripted (tests, on a paused clock).
#[cfg(test)]
pub(crate) fn spawn_scripted(
    shared: Arc<Shared>,
    board: Arc<Board>,
    tuning: Tuning,
    script: Script,
) -> JoinHandle<()> {
    start(shared, board, tuning, Prober::Scripted(script))
}

fn start(shared: Arc<Shared>, board: Arc<Board>, tuning: Tuning, prober: Prober) -> JoinHandle<()> {
    tokio::spawn(supervise(Arc::new(Supervisor {
        engine: Arc::clone(&shared.engine),
        shared,
        board,
        fleet: Fleet::default(),
        tuning,
        prober,
    })))
}

/// A test's stand-in for the apps: given the probed address, how long the answer takes (on the runtime's
/// clock) and what it is.
#[cfg(test)]
pub(crate) type Script = Arc<dyn Fn(&str, u16) -> (Duration, ProbeResult) + Send + Sync>;

/// What answers the monitor's probes.
enum Prober {
    /// The app, over HTTP ([`probe_container`]).
    Http,
    /// A script (tests): no sockets, so a paused clock decides every timing.
    #[cfg(test)]
    Scripted(Script),
}

impl std::fmt::Debug for Prober {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Prober::Http => f.write_str("Http"),
            #[cfg(test)]
            Prober::Scripted(_) => f.write_str("Scripted"),
        }
    }
}

impl Prober {
    /// One probe of container `info` by check `h` (the one address rule: [`probe_container`]).
    async fn probe(
        &self,
        info: &ContainerInfo,
        ports: &[Port],
        h: &Health,
        auth: &ProbeAuth,
    ) -> ProbeResult {
        match self {
            Prober::Http => probe_container(info, ports, h, auth).await,
            #[cfg(test)]
            Prober::Scripted(script) => {
                let _ = ports;
                let (takes, answer) =
                    script(info.ip_address.as_deref().unwrap_or_default(), h.port);
                let timeout = Duration::from_secs(u64::from(h.timeout_seconds.max(1)));
                match tokio::time::timeout(timeout, tokio::time::sleep(takes)).await {
                    Ok(()) => answer,
                    Err(_) => ProbeResult::Timeout,
                }
            }
        }
    }
}

/// What the supervisor and the object tasks share.
#[derive(Debug)]
struct Supervisor {
    shared: Arc<Shared>,
    engine: Arc<dyn Engine>,
    board: Arc<Board>,
    fleet: Fleet,
    tuning: Tuning,
    prober: Prober,
}

/// One object's task and the means to make it look now.
#[derive(Debug)]
struct Task {
    /// Shared with the task itself: one copy of the object per task.
    obj: Arc<Container>,
    poke: Arc<Notify>,
    handle: JoinHandle<()>,
}

impl Drop for Task {
    fn drop(&mut self) {
        self.handle.abort();
    }
}

async fn supervise(ctx: Arc<Supervisor>) {
    let mut tasks: BTreeMap<String, Task> = BTreeMap::new();
    let mut started: HashMap<String, Started> = HashMap::new();
    let mut wakes = ctx.board.wakes();
    let mut tick = tokio::time::interval(SUPERVISE_INTERVAL);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    refresh(&ctx, &mut started).await;
    let mut last_list = Instant::now();
    let mut next_list = last_list + ctx.tuning.idle_floor;
    loop {
        let soonest = last_list + LIST_SPACING;
        let mut list_now = false;
        tokio::select! {
            _ = tick.tick() => {}
            () = tokio::time::sleep_until(next_list) => list_now = true,
            () = ctx.fleet.refresh.notified() => next_list = next_list.min(soonest),
            Ok(()) = wakes.changed() => next_list = next_list.min(soonest),
        }
        let listed = if list_now {
            let began = Instant::now();
            last_list = began;
            let period = if ctx.board.watched() {
                ctx.tuning.list_period
            } else {
                ctx.tuning.idle_floor
            };
            next_list = last_list + period;
            refresh(&ctx, &mut started).await;
            Some((began, period))
        } else {
            None
        };
        // Not held across the list call: the controller writes it.
        let objects = ctx.shared.objects.read().await;
        let pokes = listed.map_or_else(Vec::new, |(began, period)| {
            publish(&ctx, &objects, began, period)
        });
        // Gone or changed objects: their task stops (dropped).
        tasks.retain(|name, t| {
            let keep = objects.get(name) == Some(&t.obj);
            if !objects.contains_key(name) {
                ctx.board.remove(name);
                ctx.shared.metrics.forget_object(name);
            }
            keep
        });
        for (name, obj) in objects.iter() {
            if !tasks.contains_key(name) {
                // A new or changed object: its container is probably new too.
                next_list = next_list.min(soonest);
                let poke = Arc::new(Notify::new());
                let obj = Arc::clone(obj);
                let handle =
                    tokio::spawn(watch(Arc::clone(&ctx), Arc::clone(&obj), Arc::clone(&poke)));
                tasks.insert(name.clone(), Task { obj, poke, handle });
            }
        }
        for name in pokes {
            if let Some(t) = tasks.get(&name) {
                t.poke.notify_one();
            }
        }
        // A look older than two of its periods (a probe that hangs) must not leave `ready` at 1.
        let now = Instant::now();
        for (name, obj) in objects.iter() {
            if ctx.board.is_outdated(name, interval_of(&obj.spec), now) {
                ctx.shared.metrics.set_ready(name, false);
            }
        }
    }
}

/// One list call; inspects the active containers it has not seen start yet. Publishes the result in the
/// fleet.
async fn refresh(ctx: &Supervisor, started: &mut HashMap<String, Started>) {
    let listed = match ctx.engine.list_brief().await {
        Ok(l) => l,
        Err(e) => {
            ctx.fleet.set(Seen {
                active: HashMap::new(),
                error: Some(e.to_string()),
            });
            return;
        }
    };
    let mut active = HashMap::new();
    for mut info in listed {
        let Some(name) = info.label(LABEL_NAME).map(str::to_owned) else {
            continue;
        };
        if info.name != name {
            continue; // `-previous`, preflight: not what /health reports.
        }
        let running = info.is_running();
        let known = started
            .get(&info.id)
            .filter(|k| k.running || !running)
            .cloned();
        let known = match known {
            Some(k) => Some(k),
            // New container, or running again after not running (a restart keeps the ID).
            None => match ctx.engine.inspect(&info.id).await {
                Ok(Some(full)) => Some(Started {
                    running: full.is_running(),
                    started_at: full.started_at,
                }),
                _ => None,
            },
        };
        if let Some(mut k) = known {
            info.started_at = k.started_at.clone();
            k.running = running;
            started.insert(info.id.clone(), k);
        }
        active.insert(name, info);
    }
    let ids: std::collections::HashSet<&str> = active.values().map(|c| c.id.as_str()).collect();
    started.retain(|id, _| ids.contains(id.as_str()));
    ctx.fleet.set(Seen {
        active,
        error: None,
    });
}

/// Writes what the list showed on the board. Objects without a health section are fully looked at here;
/// for the others only a change of state of the same container is written, and the names of those whose
/// container came, went or started/stopped running are returned: their task looks (and probes) now.
fn publish(
    ctx: &Supervisor,
    objects: &BTreeMap<String, Arc<Container>>,
    began: Instant,
    period: Duration,
) -> Vec<String> {
    let mut pokes = Vec::new();
    for (name, obj) in objects {
        let health = obj.spec.health.is_some();
        if health && !ctx.board.contains(name) {
            continue; // Its task has not looked yet and will, from this list.
        }
        let view = ctx.fleet.get(name);
        let mut ready = None;
        ctx.board.update(name, |s| {
            if !health {
                s.period = period;
                ready = Some(look_without_probe(s, &view, began));
                return;
            }
            match &view {
                Err(e) => {
                    s.engine_error = Some(e.clone());
                    ready = Some(false);
                }
                Ok(info) => {
                    let same = s.container_id.as_deref() == info.as_ref().map(|i| i.id.as_str());
                    let running = info.as_ref().is_some_and(ContainerInfo::is_running);
                    if !same || running != s.running {
                        pokes.push(name.clone());
                    }
                    if let (true, Some(info)) = (same, info) {
                        s.engine_error = None;
                        set_container(s, info);
                        if !running {
                            ready = Some(false);
                        }
                    }
                }
            }
        });
        if let Some(r) = ready {
            ctx.shared.metrics.set_ready(name, r);
        }
    }
    pokes
}

/// Copies the container facts of `info` (the same container) into `s`.
fn set_container(s: &mut Snapshot, info: &ContainerInfo) {
    s.running = info.is_running();
    s.container_state = Some(info.state.to_string());
    s.started_at = info
        .started_at
        .as_deref()
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc));
    s.digest = digest_of(info).map(str::to_owned);
}

/// A look at an object's container as listed, without probing: `s` now shows it (a new container
/// starts a fresh record). Returns whether it is ready as far as the container goes (runs).
fn look_without_probe(
    s: &mut Snapshot,
    view: &Result<Option<ContainerInfo>, String>,
    began: Instant,
) -> bool {
    s.observed_at = began;
    match view {
        Err(e) => {
            s.engine_error = Some(e.clone());
            false
        }
        Ok(None) => {
            let (memory, period) = (s.memory_bytes, s.period);
            *s = Snapshot::empty(began);
            s.memory_bytes = memory;
            s.period = period;
            false
        }
        Ok(Some(info)) => {
            if s.container_id.as_deref() != Some(info.id.as_str()) {
                s.version = None;
                s.consecutive_failures = 0;
                s.memory_bytes = None;
                s.probe = None;
            }
            s.engine_error = None;
            s.container_id = Some(info.id.clone());
            set_container(s, info);
            s.running
        }
    }
}

/// One object: probes at the interval while watched, at the idle period otherwise, and when poked (its
/// container changed); refreshes memory while `/health` is watched.
async fn watch(ctx: Arc<Supervisor>, obj: Arc<Container>, poke: Arc<Notify>) {
    let name = obj.metadata.name.as_str();
    let interval = interval_of(&obj.spec);
    let mut wakes = ctx.board.wakes();
    // The container that has answered healthy at least once since it started: probe failures of a
    // container still starting belong to the executor's health gate, not to the monitor.
    let mut healthy_once: Option<String> = None;
    // The probe credentials, read again before every look (rotating the file needs no recreate).
    let mut auth = Credentials::default();
    // Container and time of the last stats call.
    let mut memory_at: Option<(String, Instant)> = None;
    let mut spread = true;
    loop {
        if spread {
            let max = u64::try_from(SPREAD.min(interval).as_millis()).unwrap_or(0);
            tokio::time::sleep(Duration::from_millis(fastrand::u64(0..=max))).await;
        }
        wakes.borrow_and_update();
        let period = if ctx.board.watched() {
            interval
        } else {
            ctx.tuning.idle_period(interval)
        };
        // A look counts from when it began: a slow answer does not age a fresh result.
        let began = Instant::now();
        let view = ctx.fleet.get(name);
        let memory_of = view
            .as_ref()
            .ok()
            .and_then(Option::as_ref)
            .filter(|c| c.is_running() && ctx.board.watched_by(Watcher::Health))
            .map(|c| c.id.clone())
            .filter(|id| {
                memory_at.as_ref().is_none_or(|(last, at)| {
                    // Due at the look nearest to the memory interval (timers are not exact).
                    last != id
                        || began.saturating_duration_since(*at) + interval / 2
                            >= ctx.tuning.memory_interval
                })
            });
        let memory = async {
            let id = memory_of?;
            let bytes = ctx.engine.memory_usage(&id).await.ok()?;
            Some((id, bytes))
        };
        // Boxed: the look (an HTTP exchange) is most of this future's size, and 200 idle tasks would
        // each hold room for it between looks.
        let ((), memory) = Box::pin(async {
            tokio::join!(
                look(
                    &ctx,
                    &obj,
                    view,
                    began,
                    period,
                    &mut healthy_once,
                    &mut auth
                ),
                memory
            )
        })
        .await;
        if let Some((id, bytes)) = memory {
            ctx.board.update(name, |s| {
                if s.container_id.as_deref() == Some(id.as_str()) {
                    s.memory_bytes = bytes;
                }
            });
            memory_at = Some((id, began));
        }
        spread = tokio::select! {
            () = tokio::time::sleep_until(began + period) => false,
            Ok(()) = wakes.changed() => true,
            () = poke.notified() => false,
        };
    }
}

/// Probes an object with a health section once, from its listed container; writes the board and
/// `dockop_ready`. Objects without one are looked at by the list refresh.
async fn look(
    ctx: &Supervisor,
    obj: &Container,
    view: Result<Option<ContainerInfo>, String>,
    began: Instant,
    period: Duration,
    healthy_once: &mut Option<String>,
    auth: &mut Credentials,
) {
    let Some(h) = &obj.spec.health else {
        return;
    };
    let name = obj.metadata.name.as_str();
    let info = match view {
        Ok(Some(info)) => info,
        other => {
            ctx.board.update(name, |s| {
                s.period = period;
                look_without_probe(s, &other, began);
            });
            ctx.shared.metrics.set_ready(name, false);
            *healthy_once = None;
            return;
        }
    };
    let running = info.is_running();
    let probe_result = if running {
        let auth = auth.refresh(obj).await;
        let answer = ctx.prober.probe(&info, &obj.spec.ports, h, auth);
        tokio::pin!(answer);
        Some(tokio::select! {
            r = &mut answer => r,
            () = tokio::time::sleep(interval_of(&obj.spec)) => {
                // Slow: paused, or replaced? Let the list tell while we wait.
                ctx.fleet.refresh.notify_one();
                answer.await
            }
        })
    } else {
        None
    };
    if matches!(probe_result, Some(ProbeResult::NotListening { .. })) {
        // Gone or replaced (new IP)? The list will tell, and a new container gets a look at once.
        ctx.fleet.refresh.notify_one();
    }
    let healthy = running && probe_result.as_ref().is_none_or(ProbeResult::is_healthy);
    if healthy {
        *healthy_once = Some(info.id.clone());
    } else if probe_result.is_some() && healthy_once.as_deref() == Some(info.id.as_str()) {
        Metrics::inc_name(&ctx.shared.metrics.health_probe_failures_total, name);
    }
    ctx.board.update(name, |s| {
        let same_container = s.container_id.as_deref() == Some(info.id.as_str());
        s.observed_at = began;
        s.period = period;
        s.engine_error = None;
        if !same_container {
            s.version = None;
            s.consecutive_failures = 0;
            s.memory_bytes = None;
        }
        s.container_id = Some(info.id.clone());
        set_container(s, &info);
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
    ctx.shared.metrics.set_ready(name, healthy);
}

/// One object's probe credentials as the monitor last read them. A file that cannot be read now keeps the
/// last good credentials (a rotation caught mid-write must not flip `/health`), with one warning per
/// distinct problem.
#[derive(Debug, Default)]
struct Credentials {
    auth: ProbeAuth,
    problem: Option<String>,
}

impl Credentials {
    async fn refresh(&mut self, obj: &Container) -> &ProbeAuth {
        let Some(h) = &obj.spec.health else {
            return &self.auth;
        };
        match ProbeAuth::load_async(h).await {
            Ok(a) => {
                self.auth = a;
                self.problem = None;
            }
            Err(e) => {
                let text = e.to_string();
                if self.problem.as_deref() != Some(text.as_str()) {
                    tracing::warn!(object = %obj.metadata.name, "health probe credentials: {text}; probing with the last ones read");
                    self.problem = Some(text);
                }
            }
        }
        &self.auth
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::fake::FakeEngine;
    use crate::engine::{Op, RunState};
    use crate::status::Store;
    use crate::testing;
    use std::sync::atomic::AtomicUsize;

    /// Object `name`, probed on `port` every second (timeout 1 s) when given.
    fn object(name: &str, port: Option<u16>) -> Container {
        let o = testing::object(name);
        match port {
            Some(p) => o.health("/h", p, "intervalSeconds: 1, timeoutSeconds: 1"),
            None => o,
        }
        .build()
    }

    /// A running container of object `name`, started at a known time, on 127.0.0.1.
    fn container(id: &str, name: &str) -> ContainerInfo {
        testing::info(id, name)
            .digest("sha256:d1")
            .started_at("2026-01-01T00:00:00Z")
            .ip("127.0.0.1")
            .build()
    }

    /// A healthy app that answers at once and counts the probes it answers.
    fn app() -> (Script, Arc<AtomicUsize>) {
        let hits = Arc::new(AtomicUsize::new(0));
        let h = Arc::clone(&hits);
        let script: Script = Arc::new(move |_, _| {
            h.fetch_add(1, Ordering::Relaxed);
            (
                Duration::ZERO,
                ProbeResult::Healthy {
                    version: Some("3".into()),
                },
            )
        });
        (script, hits)
    }

    fn calls(engine: &FakeEngine) -> (u64, u64, u64) {
        (
            engine.count(Op::List),
            engine.count(Op::Inspect),
            engine.count(Op::Stats),
        )
    }

    /// Idle: one list call per idle period for all objects, one inspect per container, no stats, probes
    /// at the idle period. Watched: probes at the interval, the list at its period, stats at the memory
    /// interval; a request after an idle spell wakes the monitor at once; a paused container shows
    /// through the list without an engine call of its own.
    #[tokio::test(start_paused = true)]
    async fn idle_is_cheap_and_watched_probes_at_the_interval() {
        let (script, hits) = app();
        let port = 8080;
        let engine = FakeEngine::new();
        let names = ["a", "b", "c", "d"];
        for (i, n) in names.iter().enumerate() {
            engine
                .state()
                .containers
                .insert(format!("c{i}"), container(&format!("c{i}"), n));
        }
        engine
            .state()
            .containers
            .insert("c9".into(), container("c9", "plain"));
        let dir = tempfile::tempdir().expect("tempdir");
        let (shared, _rx) = Shared::new(
            Store::open(dir.path()).expect("store"),
            {
                let e: Arc<dyn Engine> = Arc::new(engine.clone());
                e
            },
            Arc::default(),
        );
        {
            let mut objects = shared.objects.write().await;
            for n in names {
                objects.insert(n.into(), Arc::new(object(n, Some(port))));
            }
            objects.insert("plain".into(), Arc::new(object("plain", None)));
        }
        let board = Board::with_window(Duration::from_millis(600));
        let tuning = Tuning {
            idle_floor: Duration::from_secs(2),
            idle_factor: 2,
            list_period: Duration::from_millis(250),
            memory_interval: Duration::from_secs(1),
        };
        let mon = spawn_scripted(Arc::clone(&shared), Arc::clone(&board), tuning, script);

        // Idle for 3 s: the first look and one more at 2 s.
        tokio::time::sleep(Duration::from_millis(3000)).await;
        let (lists, inspects, stats) = calls(&engine);
        let probes = hits.load(Ordering::Relaxed);
        assert!((2..=3).contains(&lists), "idle: {lists} list calls in 3 s");
        assert_eq!(inspects, 5, "one inspect per container, for its start time");
        assert_eq!(stats, 0, "no stats while idle");
        assert!(
            (names.len()..=2 * names.len()).contains(&probes),
            "idle: {probes} probes in 3 s"
        );
        let a = board.get("a").expect("a");
        assert!(
            a.probe.as_ref().is_some_and(ProbeResult::is_healthy),
            "{a:?}"
        );
        assert_eq!(
            a.started_at.map(|t| t.to_rfc3339()).as_deref(),
            Some("2026-01-01T00:00:00+00:00")
        );
        assert_eq!(a.period, Duration::from_secs(2));
        assert!(board.get("plain").is_some_and(|s| s.running));
        assert!(board.get("a").is_some_and(|s| s.memory_bytes.is_none()));

        // A request wakes the monitor at once: probes and memory within the spread, not at the idle
        // period.
        board.requested(Watcher::Health);
        tokio::time::sleep(SPREAD + Duration::from_millis(200)).await;
        assert_eq!(
            hits.load(Ordering::Relaxed),
            probes + names.len(),
            "woken: one probe each"
        );
        assert!(board.get("a").is_some_and(|s| s.memory_bytes.is_some()));
        assert!(board.get("plain").is_some_and(|s| s.memory_bytes.is_some()));

        // Watched for 3 s (requests every 100 ms): probes every second, the list every 250 ms.
        let (lists0, _, stats0) = calls(&engine);
        let probes0 = hits.load(Ordering::Relaxed);
        for _ in 0..30 {
            board.requested(Watcher::Health);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let (lists, inspects, stats) = calls(&engine);
        let probes = hits.load(Ordering::Relaxed) - probes0;
        assert!(
            (3 * names.len()..=4 * names.len()).contains(&probes),
            "watched: {probes} probes in 3 s"
        );
        assert!(
            (10..=14).contains(&(lists - lists0)),
            "watched: {} lists",
            lists - lists0
        );
        assert_eq!(inspects, 5, "still one inspect per container");
        let stats = stats - stats0;
        assert!(
            (2 * 5..=4 * 5).contains(&stats),
            "stats at the memory interval: {stats}"
        );

        // Paused: the list shows it within its period, no probe or inspect needed.
        engine.state().containers.get_mut("c0").expect("c0").state = RunState::Paused;
        board.requested(Watcher::Metrics);
        tokio::time::sleep(Duration::from_millis(400)).await;
        let a = board.get("a").expect("a");
        assert!(
            !a.running && a.container_state.as_deref() == Some("paused"),
            "{a:?}"
        );
        // Running again after not running: inspected again (a restart keeps the ID).
        engine.state().containers.get_mut("c0").expect("c0").state = RunState::Running;
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(engine.count(Op::Inspect), 6);
        assert!(
            board
                .get("a")
                .is_some_and(|s| s.running && s.probe.is_some())
        );

        // Nobody asks any more: back to idle, no stats.
        tokio::time::sleep(Duration::from_millis(700)).await;
        let (lists0, _, stats0) = calls(&engine);
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let (lists, _, stats) = calls(&engine);
        assert!(lists - lists0 <= 1, "idle again: {} lists", lists - lists0);
        assert_eq!(stats, stats0, "idle again: no stats");
        mon.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn watch_window_and_outdated_looks() {
        let board = Board::with_window(Duration::from_millis(200));
        assert!(!board.watched());
        let mut wakes = board.wakes();
        board.requested(Watcher::Metrics);
        assert!(board.watched() && !board.watched_by(Watcher::Health));
        assert!(
            wakes.has_changed().unwrap_or(false),
            "the first request wakes"
        );
        wakes.borrow_and_update();
        board.requested(Watcher::Metrics);
        assert!(!wakes.has_changed().unwrap_or(true), "later ones do not");
        tokio::time::advance(Duration::from_millis(199)).await;
        assert!(board.watched(), "within the window");
        tokio::time::advance(Duration::from_millis(2)).await;
        assert!(!board.watched(), "past the window");

        // Ready stays meaningful while idle: a look is current for two of its periods.
        let now = Instant::now();
        let Some(old) = now.checked_sub(Duration::from_secs(20)) else {
            return;
        };
        board.set(
            "x",
            Snapshot {
                period: Duration::from_secs(30),
                ..Snapshot::empty(old)
            },
        );
        assert!(!board.is_outdated("x", Duration::from_secs(1), now));
        board.update("x", |s| s.period = Duration::from_secs(1));
        assert!(board.is_outdated("x", Duration::from_secs(1), now));
    }

    #[test]
    fn stale_after_an_idle_spell_says_so() {
        let obj = object("a", Some(8080));
        let now = Instant::now();
        let Some(old) = now.checked_sub(Duration::from_secs(20)) else {
            return;
        };
        let snap = Snapshot {
            container_id: Some("c1".into()),
            container_state: Some("running".into()),
            running: true,
            probe: Some(ProbeResult::Healthy { version: None }),
            period: Duration::from_secs(30),
            ..Snapshot::empty(old)
        };
        let h = evaluate(&obj, Some(&snap), now, Utc::now());
        assert!(!h.healthy);
        assert!(h.detail.starts_with("stale:"), "{}", h.detail);
        let h = evaluate(
            &obj,
            Some(&Snapshot {
                period: Duration::from_secs(1),
                ..snap
            }),
            now,
            Utc::now(),
        );
        assert!(h.detail.contains("no answer"), "{}", h.detail);
    }
}
