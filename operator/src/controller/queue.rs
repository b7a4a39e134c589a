//! The work queue: per-object requests in, ready objects out. Deduplicates, debounces, keeps at most one
//! reconcile in flight per object (a request arriving during one is remembered and runs after it), bounds
//! parallelism, and schedules requeues (`NextRun::requeue`) — in the manner of kube-runtime's scheduler.
//!
//! Pure state stepped by the controller loop with the current time (`tokio::time::Instant`, so tests run
//! on a paused clock): [`WorkQueue::request`], [`WorkQueue::pop_ready`], [`WorkQueue::done`] and
//! [`WorkQueue::next_deadline`]. It does no I/O and owns no timers.

use std::collections::HashMap;
use std::time::Duration;

use tokio::time::Instant;

/// A debounced request is never pushed back further than this many debounce periods after the first one,
/// so a steady stream of changes cannot starve an object.
const MAX_DEBOUNCE_PERIODS: u32 = 5;

/// What a reconcile asks for next (kube-runtime calls it `Action`; here `plan::Action` is what a plan does).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NextRun {
    requeue_after: Option<Duration>,
}

impl NextRun {
    /// Run again after `after` (registry check period, error backoff).
    pub fn requeue(after: Duration) -> Self {
        Self {
            requeue_after: Some(after),
        }
    }
    /// Run again only when something changes (source, engine event, resync).
    pub fn await_change() -> Self {
        Self {
            requeue_after: None,
        }
    }
    /// The requeue delay, if any.
    pub fn requeue_after(&self) -> Option<Duration> {
        self.requeue_after
    }
}

/// Why an object is asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// Something changed (source edit, engine event, HTTP): debounced.
    Changed,
    /// Run as soon as a slot is free (resync): not debounced.
    Now,
    /// Run at this instant unless already due earlier (requeue timers).
    At(Instant),
}

#[derive(Debug, Default)]
struct Entry {
    /// Due because of a change, once the debounce period passes.
    debounced: Option<Instant>,
    /// First change of the current burst (bounds the debounce).
    burst_start: Option<Instant>,
    /// Due because of a timer or an undebounced request.
    timer: Option<Instant>,
    /// A reconcile is running.
    in_flight: bool,
    /// A change arrived while in flight: run again after it (debounced).
    changed_during: bool,
    /// An undebounced request or timer arrived while in flight.
    timer_after: Option<Instant>,
}

impl Entry {
    fn due(&self) -> Option<Instant> {
        match (self.debounced, self.timer) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// The queue. See the module documentation.
#[derive(Debug)]
pub struct WorkQueue {
    debounce: Duration,
    max_concurrent: usize,
    entries: HashMap<String, Entry>,
    running: usize,
}

fn earliest(a: Option<Instant>, b: Instant) -> Instant {
    a.map_or(b, |a| a.min(b))
}

impl WorkQueue {
    /// A queue with a debounce period and a parallelism bound (at least 1).
    pub fn new(debounce: Duration, max_concurrent: usize) -> Self {
        Self {
            debounce,
            max_concurrent: max_concurrent.max(1),
            entries: HashMap::new(),
            running: 0,
        }
    }

    /// Asks for `name` to be reconciled.
    pub fn request(&mut self, name: &str, req: Request, now: Instant) {
        let debounce = self.debounce;
        let e = self.entries.entry(name.to_owned()).or_default();
        if e.in_flight {
            match req {
                Request::Changed => e.changed_during = true,
                Request::Now => e.timer_after = Some(earliest(e.timer_after, now)),
                Request::At(t) => e.timer_after = Some(earliest(e.timer_after, t)),
            }
            return;
        }
        match req {
            Request::Changed => {
                let start = *e.burst_start.get_or_insert(now);
                e.debounced = Some((now + debounce).min(start + debounce * MAX_DEBOUNCE_PERIODS));
            }
            Request::Now => e.timer = Some(earliest(e.timer, now)),
            Request::At(t) => e.timer = Some(earliest(e.timer, t)),
        }
    }

    /// Objects due at `now`, marked in flight, earliest first, as many as free slots allow.
    pub fn pop_ready(&mut self, now: Instant) -> Vec<String> {
        let free = self.max_concurrent.saturating_sub(self.running);
        if free == 0 {
            return Vec::new();
        }
        let mut due: Vec<(Instant, &String)> = self
            .entries
            .iter()
            .filter(|(_, e)| !e.in_flight)
            .filter_map(|(n, e)| e.due().filter(|d| *d <= now).map(|d| (d, n)))
            .collect();
        due.sort();
        let names: Vec<String> = due.into_iter().take(free).map(|(_, n)| n.clone()).collect();
        for n in &names {
            if let Some(e) = self.entries.get_mut(n) {
                e.in_flight = true;
                e.debounced = None;
                e.burst_start = None;
                e.timer = None;
            }
        }
        self.running += names.len();
        names
    }

    /// Marks `name` finished; schedules what `action` asks for and what arrived while it ran.
    pub fn done(&mut self, name: &str, action: NextRun, now: Instant) {
        let Some(e) = self.entries.get_mut(name) else {
            return;
        };
        if !e.in_flight {
            return;
        }
        e.in_flight = false;
        self.running = self.running.saturating_sub(1);
        e.timer = e.timer_after.take();
        if std::mem::take(&mut e.changed_during) {
            e.debounced = Some(now + self.debounce);
            e.burst_start = Some(now);
        }
        if let Some(after) = action.requeue_after() {
            e.timer = Some(earliest(e.timer, now + after));
        }
        if e.due().is_none() {
            self.entries.remove(name);
        }
    }

    /// Drops any pending schedule of `name` (not a run in flight).
    pub fn cancel(&mut self, name: &str) {
        if let Some(e) = self.entries.get_mut(name) {
            e.debounced = None;
            e.burst_start = None;
            e.timer = None;
            e.timer_after = None;
            e.changed_during = false;
            if !e.in_flight {
                self.entries.remove(name);
            }
        }
    }

    /// When the controller should next call [`Self::pop_ready`]; `None` when nothing is due or every slot
    /// is busy (a finishing reconcile wakes the loop then).
    pub fn next_deadline(&self) -> Option<Instant> {
        if self.running >= self.max_concurrent {
            return None;
        }
        self.entries
            .values()
            .filter(|e| !e.in_flight)
            .filter_map(Entry::due)
            .min()
    }

    /// Reconciles running.
    pub fn running(&self) -> usize {
        self.running
    }

    /// True when `name` is scheduled (not counting a run in flight).
    pub fn is_scheduled(&self, name: &str) -> bool {
        self.entries
            .get(name)
            .is_some_and(|e| e.due().is_some() || e.changed_during || e.timer_after.is_some())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    const DEBOUNCE: Duration = Duration::from_millis(300);

    fn q(max: usize) -> WorkQueue {
        WorkQueue::new(DEBOUNCE, max)
    }

    #[tokio::test(start_paused = true)]
    async fn changes_are_debounced_and_deduplicated() {
        let mut wq = q(4);
        let t0 = Instant::now();
        wq.request("a", Request::Changed, t0);
        wq.request("a", Request::Changed, t0 + Duration::from_millis(100));
        assert!(wq.pop_ready(t0 + Duration::from_millis(300)).is_empty());
        assert_eq!(
            wq.next_deadline(),
            Some(t0 + Duration::from_millis(400)),
            "the second change extends the wait"
        );
        tokio::time::advance(Duration::from_millis(400)).await;
        assert_eq!(wq.pop_ready(Instant::now()), vec!["a".to_owned()]);
        assert!(wq.pop_ready(Instant::now()).is_empty(), "deduplicated");
    }

    #[tokio::test(start_paused = true)]
    async fn debounce_is_bounded_under_a_steady_stream() {
        let mut wq = q(1);
        let t0 = Instant::now();
        let mut popped = None;
        for i in 0..40u32 {
            let now = t0 + Duration::from_millis(100) * i;
            wq.request("a", Request::Changed, now);
            if !wq.pop_ready(now).is_empty() {
                popped = Some(now - t0);
                break;
            }
        }
        assert_eq!(popped, Some(DEBOUNCE * MAX_DEBOUNCE_PERIODS));
    }

    #[tokio::test(start_paused = true)]
    async fn one_in_flight_per_object_and_rerun_after() {
        let mut wq = q(4);
        let t0 = Instant::now();
        wq.request("a", Request::Now, t0);
        assert_eq!(wq.pop_ready(t0), vec!["a".to_owned()]);
        wq.request("a", Request::Changed, t0 + Duration::from_millis(10));
        wq.request("a", Request::Now, t0 + Duration::from_millis(20));
        assert!(
            wq.pop_ready(t0 + Duration::from_secs(5)).is_empty(),
            "never twice at once"
        );
        assert!(wq.is_scheduled("a"));
        let t1 = t0 + Duration::from_secs(1);
        wq.done("a", NextRun::await_change(), t1);
        // The `Now` request made during the run is already due.
        assert_eq!(wq.pop_ready(t1), vec!["a".to_owned()]);
        wq.done("a", NextRun::await_change(), t1);
        assert!(!wq.is_scheduled("a"));
        assert_eq!(wq.next_deadline(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn change_during_run_is_debounced_after_it() {
        let mut wq = q(4);
        let t0 = Instant::now();
        wq.request("a", Request::Now, t0);
        wq.pop_ready(t0);
        wq.request("a", Request::Changed, t0);
        let t1 = t0 + Duration::from_secs(2);
        wq.done("a", NextRun::await_change(), t1);
        assert!(wq.pop_ready(t1).is_empty());
        assert_eq!(wq.next_deadline(), Some(t1 + DEBOUNCE));
    }

    #[tokio::test(start_paused = true)]
    async fn parallelism_is_bounded() {
        let mut wq = q(2);
        let t0 = Instant::now();
        for n in ["a", "b", "c"] {
            wq.request(n, Request::Now, t0);
        }
        let first = wq.pop_ready(t0);
        assert_eq!(first.len(), 2);
        assert_eq!(wq.running(), 2);
        assert_eq!(
            wq.next_deadline(),
            None,
            "no wake-up while every slot is busy"
        );
        wq.done(&first[0], NextRun::await_change(), t0);
        let next = wq.pop_ready(t0);
        assert_eq!(next.len(), 1);
        assert!(!first.contains(&next[0]));
    }

    #[tokio::test(start_paused = true)]
    async fn requeue_after_and_earliest_wins() {
        let mut wq = q(2);
        let t0 = Instant::now();
        wq.request("a", Request::Now, t0);
        wq.pop_ready(t0);
        wq.done("a", NextRun::requeue(Duration::from_secs(300)), t0);
        assert_eq!(wq.next_deadline(), Some(t0 + Duration::from_secs(300)));
        // A resync before the requeue runs it sooner; the later requeue does not push it back.
        wq.request("a", Request::At(t0 + Duration::from_secs(60)), t0);
        wq.request("a", Request::At(t0 + Duration::from_secs(500)), t0);
        assert_eq!(wq.next_deadline(), Some(t0 + Duration::from_secs(60)));
        // A change is debounced but not delayed by the far timer.
        wq.request("a", Request::Changed, t0);
        assert_eq!(wq.next_deadline(), Some(t0 + DEBOUNCE));
    }

    #[tokio::test(start_paused = true)]
    async fn cancel_drops_schedule() {
        let mut wq = q(2);
        let t0 = Instant::now();
        wq.request("a", Request::Changed, t0);
        wq.cancel("a");
        assert_eq!(wq.next_deadline(), None);
        assert!(wq.pop_ready(t0 + Duration::from_secs(1)).is_empty());
    }
}
