//! The health gate: probes a new (or restored, or preflight) container until it answers healthy, its
//! startup deadline passes, `failureThreshold` failures are counted, or it exits. Every wait is on
//! `tokio::time`, so the tests below run on a paused clock with scripted probe answers.

use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use tokio::time::Instant;

use crate::engine::{ContainerInfo, Engine, EngineError, RunState};
use crate::health::{ProbeAuth, ProbeResult, probe_container};
use crate::spec::{Health, Port};
use crate::telemetry::Metrics;

/// Seconds a container without a health check must keep running to count as started.
pub const NO_HEALTH_SETTLE: Duration = Duration::from_secs(2);
/// Poll period while the app is not listening yet.
pub const STARTUP_POLL: Duration = Duration::from_millis(200);
/// Probes in flight at most while the app has not answered HTTP yet.
const MAX_STARTUP_PROBES: usize = 8;

/// Why the gate said no. The app's own verdicts (an exit, unhealthy answers, no health in time) make the
/// target remembered as failed; the others (the engine, a container never started) do not.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GateError {
    /// The engine could not be asked about the container.
    #[error("{0}")]
    Inspect(EngineError),
    /// The container is gone.
    #[error("the container disappeared")]
    Disappeared,
    /// The container was created but never started.
    #[error("the container was never started")]
    NeverStarted,
    /// The container exited (or restarts after an exit).
    #[error("{}", exited_message(*.code, *.oom_killed, *.restarting, .logs))]
    Exited {
        /// Exit code.
        code: i64,
        /// Killed for memory.
        oom_killed: bool,
        /// The engine restarts it (a restart policy).
        restarting: bool,
        /// The last log lines, joined with ` | ` (may be empty).
        logs: String,
    },
    /// `failureThreshold` failures in a row.
    #[error("{failures} unhealthy answers in a row on {path}: {why}")]
    Unhealthy {
        /// Failures counted.
        failures: u32,
        /// The health path.
        path: String,
        /// The last answer, and the last real answer when a timeout was the last straw.
        why: String,
    },
    /// Not healthy within `startupDeadlineSeconds`.
    #[error("not healthy within startupDeadlineSeconds={seconds} (last probe: {last})")]
    Deadline {
        /// The deadline.
        seconds: u32,
        /// The last probe's answer.
        last: String,
    },
}

impl GateError {
    /// True when the app itself said no (so the target is not retried until something changes).
    pub fn is_app_verdict(&self) -> bool {
        matches!(
            self,
            GateError::Exited { .. } | GateError::Unhealthy { .. } | GateError::Deadline { .. }
        )
    }
}

fn exited_message(code: i64, oom: bool, restarting: bool, logs: &str) -> String {
    let oom = if oom { " (killed: out of memory)" } else { "" };
    let mut message = if restarting {
        format!("the container is restarting after exiting with code {code}{oom}")
    } else {
        format!("the container exited with code {code}{oom}")
    };
    if !logs.is_empty() {
        message.push_str(&format!("; last log lines: {logs}"));
    }
    message
}

/// How the gate passed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Passed {
    /// The app answered healthy, reporting this version (if its body named one).
    Healthy(Option<String>),
    /// No health check: the container kept running for [`NO_HEALTH_SETTLE`].
    Settled,
}

/// Asks a container's health path. The executor's is [`HttpProber`]; tests script the answers.
#[async_trait]
pub trait Prober: Send + Sync {
    /// One probe of container `info` by check `h`.
    async fn probe(&self, info: &ContainerInfo, h: &Health) -> ProbeResult;
}

/// Probes over HTTP with the object's ports and credentials ([`probe_container`]).
#[derive(Debug, Clone, Copy)]
pub struct HttpProber<'a> {
    /// The object's ports (for a remote engine or a container without a bridge address).
    pub ports: &'a [Port],
    /// The object's credentials.
    pub auth: &'a ProbeAuth,
}

#[async_trait]
impl Prober for HttpProber<'_> {
    async fn probe(&self, info: &ContainerInfo, h: &Health) -> ProbeResult {
        probe_container(info, self.ports, h, self.auth).await
    }
}

/// One run of the health gate on one container.
pub struct Gate<'a> {
    /// The engine, to see the container's state between probes.
    pub engine: &'a dyn Engine,
    /// The object's check; `None`: the container must keep running for [`NO_HEALTH_SETTLE`].
    pub health: Option<&'a Health>,
    /// Who probes.
    pub prober: &'a dyn Prober,
    /// The object's name, for `health_probe_failures_total`.
    pub name: &'a str,
    /// Where the failures are counted.
    pub metrics: &'a Metrics,
}

impl std::fmt::Debug for Gate<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gate")
            .field("object", &self.name)
            .finish_non_exhaustive()
    }
}

impl Gate<'_> {
    /// Probes container `id` until healthy, the startup deadline, `failureThreshold` counted failures
    /// (see [`ProbeSchedule`]), or the container exiting.
    pub async fn run(&self, id: &str) -> Result<Passed, GateError> {
        let started = Instant::now();
        let Some(h) = self.health else {
            return self.settle(id, started).await.map(|()| Passed::Settled);
        };
        let deadline = started + Duration::from_secs(u64::from(h.startup_deadline_seconds));
        let mut schedule = ProbeSchedule::new(h, started);
        let mut in_flight = FuturesUnordered::new();
        let mut last: Option<ProbeResult> = None;
        // The last real answer (not a timeout), for the verdict's message.
        let mut answered: Option<ProbeResult> = None;
        loop {
            if schedule.due(Instant::now(), in_flight.len()) {
                // One look at the container per probe: an exit fails the gate at once.
                let info = self.running(id).await?;
                let now = Instant::now();
                schedule.launched(now);
                let prober = self.prober;
                in_flight.push(async move { (now, prober.probe(&info, h).await) });
            }
            let wake = schedule
                .next_launch(Instant::now(), in_flight.len())
                .map_or(deadline, |t| t.min(deadline));
            let done = tokio::select! {
                Some(done) = in_flight.next() => Some(done),
                () = tokio::time::sleep_until(wake) => None,
            };
            if let Some((launched, result)) = done {
                match schedule.record(launched, &result) {
                    Tally::Healthy => {
                        return Ok(Passed::Healthy(match result {
                            ProbeResult::Healthy { version } => version,
                            _ => None,
                        }));
                    }
                    Tally::Counted(failures) => {
                        Metrics::inc_name(&self.metrics.health_probe_failures_total, self.name);
                        if failures >= h.failure_threshold {
                            // An answer (401, 500) says more than a timeout: name it even when a
                            // slow probe was the last straw.
                            let why = match (&result, &answered) {
                                (ProbeResult::Timeout, Some(a)) => {
                                    format!("{} (last: {})", a.describe(), result.describe())
                                }
                                _ => result.describe(),
                            };
                            return Err(GateError::Unhealthy {
                                failures,
                                path: h.path.clone(),
                                why,
                            });
                        }
                    }
                    Tally::Uncounted => {}
                }
                if matches!(
                    result,
                    ProbeResult::Unhealthy { .. } | ProbeResult::Denied { .. }
                ) {
                    answered = Some(result.clone());
                }
                last = Some(result);
            }
            if Instant::now() >= deadline {
                return Err(GateError::Deadline {
                    seconds: h.startup_deadline_seconds,
                    last: last.map_or_else(|| "none finished".to_owned(), |r| r.describe()),
                });
            }
        }
    }

    /// Without a health check: the container must keep running for [`NO_HEALTH_SETTLE`].
    async fn settle(&self, id: &str, started: Instant) -> Result<(), GateError> {
        loop {
            self.running(id).await?;
            if started.elapsed() >= NO_HEALTH_SETTLE {
                return Ok(());
            }
            tokio::time::sleep(STARTUP_POLL).await;
        }
    }

    /// Inspects container `id`: its state while it runs, the verdict when it is gone or exited.
    async fn running(&self, id: &str) -> Result<ContainerInfo, GateError> {
        let info = self
            .engine
            .inspect(id)
            .await
            .map_err(GateError::Inspect)?
            .ok_or(GateError::Disappeared)?;
        match exited(self.engine, &info).await {
            Some(v) => Err(v),
            None => Ok(info),
        }
    }
}

/// The verdict on a container that is not running (with its last log lines), `None` while it runs.
pub async fn exited(engine: &dyn Engine, info: &ContainerInfo) -> Option<GateError> {
    match info.state {
        RunState::Running => None,
        RunState::Created => Some(GateError::NeverStarted),
        _ => {
            let logs = engine.logs_tail(&info.id, 5).await.unwrap_or_default();
            Some(GateError::Exited {
                code: info.exit_code,
                oom_killed: info.oom_killed,
                restarting: matches!(info.state, RunState::Restarting),
                logs: logs.trim().replace('\n', " | "),
            })
        }
    }
}

/// What a finished probe did to the health gate's count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tally {
    /// Healthy: the gate passes.
    Healthy,
    /// A failure that counts; the number in a row so far.
    Counted(u32),
    /// Not counted: not listening yet, or a failure within `intervalSeconds` of the last counted one.
    Uncounted,
}

/// When the health gate probes and how it counts what comes back.
///
/// Until the app first answers HTTP, a new probe starts every [`STARTUP_POLL`] even while earlier ones
/// still wait (at most [`MAX_STARTUP_PROBES`]): some apps, OpenCode among them, accept a connection early in
/// startup and never answer it, and waiting out that probe's `timeoutSeconds` would add it to every update.
/// Once the app has answered, probes run one at a time at a fixed rate of `intervalSeconds`. A timeout or an
/// unhealthy answer counts at most once per `intervalSeconds` (by launch time), so `failureThreshold` keeps
/// meaning that many intervals of failure however many probes overlap; "not listening" is still starting
/// and ends a run of failures.
#[derive(Debug)]
struct ProbeSchedule {
    interval: Duration,
    answered: bool,
    last_launch: Option<Instant>,
    failures: u32,
    /// Launch time of the last counted failure.
    last_counted: Option<Instant>,
    /// Results of probes launched before this are stale for the count (a later probe saw "not listening").
    epoch: Instant,
}

impl ProbeSchedule {
    fn new(h: &Health, started: Instant) -> Self {
        Self {
            interval: Duration::from_secs(u64::from(h.interval_seconds)),
            answered: false,
            last_launch: None,
            failures: 0,
            last_counted: None,
            epoch: started,
        }
    }

    fn gap(&self) -> Duration {
        if self.answered {
            self.interval
        } else {
            STARTUP_POLL
        }
    }

    /// Whether to launch a probe at `now` with `in_flight` running.
    fn due(&self, now: Instant, in_flight: usize) -> bool {
        self.next_launch(now, in_flight).is_some_and(|t| t <= now)
    }

    /// When the next probe may start (`now` or later); none until one of the `in_flight` finishes.
    fn next_launch(&self, now: Instant, in_flight: usize) -> Option<Instant> {
        let cap = if self.answered { 1 } else { MAX_STARTUP_PROBES };
        (in_flight < cap).then(|| self.last_launch.map_or(now, |t| (t + self.gap()).max(now)))
    }

    fn launched(&mut self, at: Instant) {
        self.last_launch = Some(at);
    }

    fn record(&mut self, launched: Instant, result: &ProbeResult) -> Tally {
        match result {
            ProbeResult::Healthy { .. } => return Tally::Healthy,
            ProbeResult::NotListening { .. } => {
                // Only news newer than the last counted failure ends the run.
                if launched >= self.epoch && self.last_counted.is_none_or(|t| launched >= t) {
                    self.epoch = launched;
                    self.failures = 0;
                    self.last_counted = None;
                }
                return Tally::Uncounted;
            }
            ProbeResult::Unhealthy { .. } | ProbeResult::Denied { .. } => self.answered = true,
            ProbeResult::Timeout => {}
        }
        let too_soon = self
            .last_counted
            .is_some_and(|t| launched < t + self.interval);
        if launched < self.epoch || too_soon {
            return Tally::Uncounted;
        }
        self.failures += 1;
        self.last_counted = Some(launched);
        Tally::Counted(self.failures)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::Mutex;

    use super::*;
    use crate::engine::fake::FakeEngine;
    use crate::testing;

    fn health(interval: u32, timeout: u32, threshold: u32, deadline: u32) -> Health {
        Health {
            path: "/h".into(),
            port: 1,
            interval_seconds: interval,
            timeout_seconds: timeout,
            failure_threshold: threshold,
            startup_deadline_seconds: deadline,
            basic_auth: None,
            http_headers: Vec::new(),
        }
    }

    fn schedule(interval: u32) -> (ProbeSchedule, Instant) {
        let t0 = Instant::now();
        (ProbeSchedule::new(&health(interval, 2, 3, 60), t0), t0)
    }

    const UNHEALTHY: ProbeResult = ProbeResult::Unhealthy {
        status: 500,
        excerpt: String::new(),
    };

    fn refused() -> ProbeResult {
        ProbeResult::NotListening {
            message: "refused".into(),
        }
    }

    #[test]
    fn schedule_overlaps_probes_until_the_app_answers() {
        let (mut s, t0) = schedule(1);
        let ms = |n| t0 + Duration::from_millis(n);
        assert!(s.due(t0, 0));
        s.launched(t0);
        // 200 ms later another starts though the first still waits, up to the cap.
        assert!(!s.due(ms(100), 1));
        assert_eq!(s.next_launch(ms(100), 1), Some(ms(200)));
        assert!(s.due(ms(200), 1));
        assert_eq!(s.next_launch(ms(200), MAX_STARTUP_PROBES), None);
        // Once the app answered: one at a time, one per interval.
        s.launched(ms(200));
        assert_eq!(s.record(ms(200), &UNHEALTHY), Tally::Counted(1));
        assert_eq!(s.next_launch(ms(300), 1), None);
        assert_eq!(s.next_launch(ms(300), 0), Some(ms(1200)));
    }

    #[test]
    fn schedule_counts_one_failure_per_interval() {
        let (mut s, t0) = schedule(1);
        let ms = |n| t0 + Duration::from_millis(n);
        // Timeouts of probes started every 200 ms: only those a full interval apart count.
        let tallies: Vec<Tally> = (0..11)
            .map(|i| s.record(ms(i * 200), &ProbeResult::Timeout))
            .collect();
        let counted: Vec<u32> = tallies
            .iter()
            .filter_map(|t| match t {
                Tally::Counted(n) => Some(*n),
                _ => None,
            })
            .collect();
        assert_eq!(counted, [1, 2, 3]);
        assert_eq!(tallies[5], Tally::Counted(2));
        assert_eq!(tallies[10], Tally::Counted(3));
    }

    #[test]
    fn schedule_not_listening_ends_a_run_but_stale_results_do_not() {
        let (mut s, t0) = schedule(1);
        let ms = |n| t0 + Duration::from_millis(n);
        assert_eq!(s.record(ms(0), &ProbeResult::Timeout), Tally::Counted(1));
        assert_eq!(s.record(ms(1000), &ProbeResult::Timeout), Tally::Counted(2));
        // A probe started later found nothing listening: the run ends.
        assert_eq!(s.record(ms(1400), &refused()), Tally::Uncounted);
        // A timeout of a probe started before that is stale.
        assert_eq!(s.record(ms(1200), &ProbeResult::Timeout), Tally::Uncounted);
        // A not-listening of a probe started before the last counted failure does not end the run.
        assert_eq!(s.record(ms(1600), &UNHEALTHY), Tally::Counted(1));
        assert_eq!(s.record(ms(1500), &refused()), Tally::Uncounted);
        assert_eq!(s.record(ms(2600), &UNHEALTHY), Tally::Counted(2));
        assert_eq!(
            s.record(ms(2800), &ProbeResult::Healthy { version: None }),
            Tally::Healthy
        );
    }

    /// One scripted answer: after `delay` (on the test's paused clock), `result`; `None` never answers.
    type Answer = (Duration, Option<ProbeResult>);

    /// Answers probes from a script (the last answer repeats) and notes when each probe started.
    #[derive(Default)]
    struct Script {
        answers: Mutex<VecDeque<Answer>>,
        started: Mutex<Vec<Duration>>,
        t0: Option<Instant>,
    }

    impl Script {
        fn new(answers: Vec<Answer>) -> Self {
            Self {
                answers: Mutex::new(answers.into()),
                started: Mutex::new(Vec::new()),
                t0: Some(Instant::now()),
            }
        }

        fn starts(&self) -> Vec<u64> {
            let started = self.started.lock().expect("lock");
            started.iter().map(|d| d.as_millis() as u64).collect()
        }
    }

    #[async_trait]
    impl Prober for Script {
        async fn probe(&self, _info: &ContainerInfo, _h: &Health) -> ProbeResult {
            let t0 = self.t0.unwrap_or_else(Instant::now);
            self.started.lock().expect("lock").push(t0.elapsed());
            let (delay, result) = {
                let mut a = self.answers.lock().expect("lock");
                let next = a.front().cloned().unwrap_or((Duration::ZERO, None));
                if a.len() > 1 {
                    a.pop_front();
                }
                next
            };
            tokio::time::sleep(delay).await;
            match result {
                Some(r) => r,
                None => std::future::pending().await,
            }
        }
    }

    /// Puts a container `c001` in `state` (exit code `code`) into the fake engine.
    fn container_in(engine: &FakeEngine, state: RunState, code: i64) -> String {
        let id = "c001".to_owned();
        let mut info = testing::info(&id, "web")
            .state(state)
            .ip("127.0.0.1")
            .build();
        info.exit_code = code;
        engine.state().containers.insert(id.clone(), info);
        id
    }

    async fn running_container(engine: &FakeEngine) -> String {
        container_in(engine, RunState::Running, 0)
    }

    async fn gate(
        engine: &FakeEngine,
        h: Option<&Health>,
        script: &Script,
    ) -> Result<Passed, GateError> {
        let id = running_container(engine).await;
        let metrics = Metrics::new();
        let g = Gate {
            engine,
            health: h,
            prober: script,
            name: "web",
            metrics: &metrics,
        };
        g.run(&id).await
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn healthy() -> Option<ProbeResult> {
        Some(ProbeResult::Healthy {
            version: Some("1.18.34".into()),
        })
    }

    #[tokio::test(start_paused = true)]
    async fn a_probe_that_never_answers_does_not_hold_the_gate() {
        // As OpenCode does early in its start: the first connection is never answered. With a 30 s probe
        // timeout and a 5 s deadline, a gate that waited on it would fail.
        let engine = FakeEngine::new();
        let script = Script::new(vec![(ms(0), None), (ms(10), healthy())]);
        let h = health(1, 30, 3, 5);
        let t0 = Instant::now();
        let out = gate(&engine, Some(&h), &script).await;
        assert_eq!(out, Ok(Passed::Healthy(Some("1.18.34".into()))));
        assert_eq!(script.starts(), [0, 200]);
        assert_eq!(t0.elapsed(), ms(210));
    }

    #[tokio::test(start_paused = true)]
    async fn timeouts_count_once_per_interval_and_fail_at_the_threshold() {
        let engine = FakeEngine::new();
        // Every probe times out after its 1 s.
        let script = Script::new(vec![(ms(1000), Some(ProbeResult::Timeout))]);
        let h = health(1, 1, 2, 30);
        let t0 = Instant::now();
        let out = gate(&engine, Some(&h), &script).await;
        match out {
            Err(GateError::Unhealthy {
                failures: 2,
                ref why,
                ..
            }) => {
                assert!(why.contains("no answer"), "{why}");
            }
            other => panic!("{other:?}"),
        }
        // Probes overlap every 200 ms while the app has never answered; the second counted timeout is
        // the one launched a full interval after the first, finishing at 2 s.
        assert_eq!(t0.elapsed(), ms(2000));
    }

    #[tokio::test(start_paused = true)]
    async fn an_answer_is_named_when_a_timeout_was_the_last_straw() {
        let engine = FakeEngine::new();
        let denied = ProbeResult::Denied {
            status: 401,
            sent: None,
        };
        let script = Script::new(vec![
            (ms(5), Some(denied)),
            (ms(1000), Some(ProbeResult::Timeout)),
        ]);
        let h = health(1, 1, 2, 30);
        let err = gate(&engine, Some(&h), &script).await.expect_err("fails");
        let text = err.to_string();
        assert!(
            text.starts_with("2 unhealthy answers in a row on /h: HTTP 401"),
            "{text}"
        );
        assert!(text.contains("(last: no answer"), "{text}");
        assert!(err.is_app_verdict());
    }

    #[tokio::test(start_paused = true)]
    async fn not_listening_until_the_deadline_fails_with_the_last_probe() {
        let engine = FakeEngine::new();
        let script = Script::new(vec![(ms(1), Some(refused()))]);
        let h = health(1, 1, 3, 5);
        let t0 = Instant::now();
        let err = gate(&engine, Some(&h), &script).await.expect_err("fails");
        assert_eq!(
            err,
            GateError::Deadline {
                seconds: 5,
                last: refused().describe()
            }
        );
        assert_eq!(t0.elapsed(), Duration::from_secs(5));
        // Polled every 200 ms throughout.
        assert_eq!(script.starts().len(), 25);
    }

    #[tokio::test(start_paused = true)]
    async fn an_exit_fails_the_gate_at_once_and_is_the_apps_verdict() {
        let engine = FakeEngine::new();
        let script = Script::new(vec![(ms(1), Some(refused()))]);
        let h = health(1, 1, 3, 60);
        let id = container_in(&engine, RunState::Exited, 3);
        let metrics = Metrics::new();
        let g = Gate {
            engine: &engine,
            health: Some(&h),
            prober: &script,
            name: "web",
            metrics: &metrics,
        };
        let t0 = Instant::now();
        let err = g.run(&id).await.expect_err("fails");
        assert!(
            matches!(
                err,
                GateError::Exited {
                    code: 3,
                    restarting: false,
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(err.is_app_verdict());
        assert_eq!(t0.elapsed(), Duration::ZERO);
        assert!(script.starts().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_check_the_container_must_keep_running_for_the_settle_time() {
        let engine = FakeEngine::new();
        let script = Script::new(Vec::new());
        let t0 = Instant::now();
        assert_eq!(gate(&engine, None, &script).await, Ok(Passed::Settled));
        assert_eq!(t0.elapsed(), NO_HEALTH_SETTLE);
        assert!(script.starts().is_empty());
    }

    #[test]
    fn engine_and_start_failures_are_not_the_apps_verdict() {
        assert!(!GateError::Disappeared.is_app_verdict());
        assert!(!GateError::NeverStarted.is_app_verdict());
        let e = GateError::Exited {
            code: 137,
            oom_killed: true,
            restarting: true,
            logs: "a | b".into(),
        };
        assert_eq!(
            e.to_string(),
            "the container is restarting after exiting with code 137 (killed: out of memory); last log lines: a | b"
        );
    }
}
