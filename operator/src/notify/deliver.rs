//! Delivery: one bounded queue and one sender task per target (a slow or dead service never holds up
//! another, nor a reconcile), retries with exponential backoff for at least ten minutes, and the
//! transports (HTTP POST over hyper, SMTP over plain TCP).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use http_body_util::Full;
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::format::{Message, email, render};
use super::smtp;
use super::target::{Endpoint, Target};
use crate::telemetry::Metrics;

/// Messages waiting per target at most; past it the oldest is dropped (and counted).
pub const QUEUE_CAPACITY: usize = 1024;

/// Why one delivery attempt failed. Never carries the URL (it holds tokens).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// Building the request (a header the URL set is not valid HTTP).
    #[error("building the request: {0}")]
    Build(String),
    /// Connecting or talking HTTP.
    #[error("request: {0}")]
    Request(String),
    /// The service answered with an error status.
    #[error("the service answered HTTP {0}")]
    Status(u16),
    /// No answer in time.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The SMTP conversation failed.
    #[error("smtp: {0}")]
    Smtp(#[from] smtp::SmtpError),
}

impl SendError {
    /// True when trying again cannot help (a malformed request, a 4xx other than 408/429).
    pub fn is_permanent(&self) -> bool {
        match self {
            SendError::Build(_) => true,
            SendError::Status(c) => (400..500).contains(c) && *c != 408 && *c != 429,
            _ => false,
        }
    }
}

/// Sends one message to one target.
#[async_trait]
pub trait Transport: Send + Sync + std::fmt::Debug {
    /// One attempt.
    async fn send(&self, target: &Target, msg: &Message) -> Result<(), SendError>;
}

/// How long and how often to retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Wait after the first failure.
    pub first: Duration,
    /// Longest wait between attempts.
    pub max: Duration,
    /// Keep trying until this long after the first attempt, then drop.
    pub give_up_after: Duration,
    /// Limit of one attempt.
    pub attempt_timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            first: Duration::from_secs(1),
            max: Duration::from_secs(60),
            give_up_after: Duration::from_secs(600),
            attempt_timeout: Duration::from_secs(10),
        }
    }
}

/// What became of one message, for `dockop_notifications_total{result}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Delivered.
    Sent,
    /// An attempt failed; another follows.
    Retried,
    /// Given up (retries exhausted, permanent error, queue full).
    Dropped,
    /// Not sent: the target's `?events=` leaves it out.
    Filtered,
}

impl Delivery {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Delivery::Sent => "sent",
            Delivery::Retried => "retried",
            Delivery::Dropped => "dropped",
            Delivery::Filtered => "filtered",
        }
    }
}

/// Counts one result for `target`'s service in `metrics`.
pub fn count(metrics: &Metrics, target: &Target, result: Delivery) {
    metrics
        .notifications_total
        .get_or_create(&vec![
            ("service", target.service.as_str().to_owned()),
            ("result", result.as_str().to_owned()),
        ])
        .inc();
}

#[derive(Debug, Default)]
struct LaneState {
    queue: VecDeque<Arc<Message>>,
    in_flight: Option<Arc<Message>>,
}

/// One target's queue; its sender task runs [`Lane::run`].
#[derive(Debug)]
pub struct Lane {
    /// Where the messages go.
    pub target: Target,
    state: Mutex<LaneState>,
    wake: Notify,
    capacity: usize,
    /// Where deliveries are counted.
    metrics: Arc<Metrics>,
}

impl Lane {
    /// An empty lane for `target` holding at most `capacity` messages, counting in `metrics`.
    pub fn new(target: Target, capacity: usize, metrics: Arc<Metrics>) -> Self {
        Lane {
            target,
            state: Mutex::default(),
            wake: Notify::new(),
            capacity: capacity.max(1),
            metrics,
        }
    }

    /// Counts one result for this lane's target.
    pub fn count(&self, result: Delivery) {
        count(&self.metrics, &self.target, result);
    }

    /// Queues `msg` without waiting; when full, drops the oldest waiting message.
    pub fn push(&self, msg: Arc<Message>) {
        let dropped = match self.state.lock() {
            Ok(mut s) => {
                let old = (s.queue.len() >= self.capacity)
                    .then(|| s.queue.pop_front())
                    .flatten();
                s.queue.push_back(msg);
                old
            }
            Err(_) => None,
        };
        if let Some(old) = dropped {
            self.count(Delivery::Dropped);
            tracing::warn!(
                service = self.target.service.as_str(),
                host = %self.target.host,
                event = old.event.as_str(),
                object = %old.object,
                "notification queue full: dropped the oldest message"
            );
        }
        self.wake.notify_one();
    }

    /// Messages not delivered yet (waiting or being sent).
    pub fn pending(&self) -> Vec<Arc<Message>> {
        self.state
            .lock()
            .map(|s| s.in_flight.iter().chain(s.queue.iter()).cloned().collect())
            .unwrap_or_default()
    }

    fn next(&self) -> Option<Arc<Message>> {
        let mut s = self.state.lock().ok()?;
        let m = s.queue.pop_front()?;
        s.in_flight = Some(m.clone());
        Some(m)
    }

    fn finish(&self) {
        if let Ok(mut s) = self.state.lock() {
            s.in_flight = None;
        }
    }

    /// Sends the queue's messages in order, forever.
    pub async fn run(self: Arc<Self>, transport: Arc<dyn Transport>, policy: RetryPolicy) {
        loop {
            match self.next() {
                Some(m) => {
                    deliver(transport.as_ref(), &self.target, &m, policy, &self.metrics).await;
                    self.finish();
                }
                None => self.wake.notified().await,
            }
        }
    }
}

/// Delivers `msg`, retrying with exponential backoff until `policy.give_up_after`; true when sent. Log
/// lines carry the service and host, never the URL.
#[tracing::instrument(skip_all, fields(
    service = target.service.as_str(),
    host = %target.host,
    event = msg.event.as_str(),
    object = %msg.object,
))]
pub async fn deliver(
    transport: &dyn Transport,
    target: &Target,
    msg: &Message,
    policy: RetryPolicy,
    metrics: &Metrics,
) -> bool {
    let started = Instant::now();
    let mut wait = policy.first;
    let mut attempt = 1u32;
    loop {
        let result =
            match tokio::time::timeout(policy.attempt_timeout, transport.send(target, msg)).await {
                Ok(r) => r,
                Err(_) => Err(SendError::Timeout(policy.attempt_timeout)),
            };
        let err = match result {
            Ok(()) => {
                count(metrics, target, Delivery::Sent);
                tracing::debug!(attempt, "notification sent");
                return true;
            }
            Err(e) => e,
        };
        if err.is_permanent() || started.elapsed() >= policy.give_up_after {
            count(metrics, target, Delivery::Dropped);
            tracing::warn!(
                attempts = attempt,
                error = %err,
                "notification dropped"
            );
            return false;
        }
        count(metrics, target, Delivery::Retried);
        tracing::info!(
            attempt,
            retry_in = ?wait,
            error = %err,
            "notification not delivered yet"
        );
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(policy.max);
        attempt += 1;
    }
}

/// The real transport: HTTP POST for web services, SMTP for email.
#[derive(Debug)]
pub struct NetTransport {
    client: Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl Default for NetTransport {
    fn default() -> Self {
        Self::new()
    }
}

impl NetTransport {
    /// A transport with its own connection pool, speaking HTTP and HTTPS (rustls; the system's trusted
    /// roots, or the bundle named by `SSL_CERT_FILE`).
    pub fn new() -> Self {
        let mut http = HttpConnector::new();
        http.set_connect_timeout(Some(Duration::from_secs(5)));
        http.enforce_http(false);
        let builder = hyper_rustls::HttpsConnectorBuilder::new();
        let connector = match builder.with_native_roots() {
            Ok(b) => b.https_or_http().enable_http1().wrap_connector(http),
            Err(e) => {
                tracing::warn!(
                    "notifications: no trusted TLS roots on this machine ({e}); https:// targets will fail (install ca-certificates or set SSL_CERT_FILE)"
                );
                hyper_rustls::HttpsConnectorBuilder::new()
                    .with_tls_config(
                        rustls::ClientConfig::builder()
                            .with_root_certificates(rustls::RootCertStore::empty())
                            .with_no_client_auth(),
                    )
                    .https_or_http()
                    .enable_http1()
                    .wrap_connector(http)
            }
        };
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        NetTransport { client }
    }
}

#[async_trait]
impl Transport for NetTransport {
    async fn send(&self, target: &Target, msg: &Message) -> Result<(), SendError> {
        match &target.endpoint {
            Endpoint::Http { url, headers, .. } => {
                let r = render(target, msg);
                let mut req = hyper::Request::post(url.as_str())
                    .header(hyper::header::CONTENT_TYPE, r.content_type)
                    .header(
                        hyper::header::USER_AGENT,
                        concat!("dockop/", env!("CARGO_PKG_VERSION")),
                    );
                for (k, v) in headers.iter().chain(&r.headers) {
                    req = req.header(k.as_str(), v.as_str());
                }
                // The builder's error text names the bad part, never the URL's token.
                let req = req
                    .body(Full::new(Bytes::from(r.body)))
                    .map_err(|_| SendError::Build("invalid header or address".into()))?;
                let resp = self
                    .client
                    .request(req)
                    .await
                    .map_err(|e| SendError::Request(error_chain(&e)))?;
                let code = resp.status().as_u16();
                if resp.status().is_success() {
                    Ok(())
                } else {
                    Err(SendError::Status(code))
                }
            }
            Endpoint::Smtp {
                host,
                port,
                auth,
                from,
                to,
                subject,
            } => {
                let (subject, body) = email(subject, msg);
                smtp::send(
                    host,
                    *port,
                    auth.as_ref(),
                    from,
                    to,
                    &subject,
                    &body,
                    &msg.host,
                )
                .await?;
                Ok(())
            }
        }
    }
}

/// An error and its sources on one line (hyper's own text is terse: "client error (Connect)").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        out.push_str(": ");
        out.push_str(&s.to_string());
        src = s.source();
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::notify::event::{Event, EventKind};

    /// Fails the first `fail` attempts (connection refused), then succeeds; records attempt times.
    #[derive(Debug)]
    struct Flaky {
        fail: usize,
        calls: AtomicUsize,
        at: Mutex<Vec<Duration>>,
        start: Instant,
    }

    #[async_trait]
    impl Transport for Flaky {
        async fn send(&self, _: &Target, _: &Message) -> Result<(), SendError> {
            if let Ok(mut a) = self.at.lock() {
                a.push(self.start.elapsed());
            }
            let n = self.calls.fetch_add(1, Ordering::SeqCst);
            if n < self.fail {
                Err(SendError::Request("connection refused".into()))
            } else {
                Ok(())
            }
        }
    }

    fn flaky(fail: usize) -> Flaky {
        Flaky {
            fail,
            calls: AtomicUsize::new(0),
            at: Mutex::new(Vec::new()),
            start: Instant::now(),
        }
    }

    fn message(object: &str) -> Arc<Message> {
        Arc::new(Message::new(
            Event {
                kind: EventKind::Degraded,
                object: object.into(),
                digest: None,
                previous_digest: None,
                version: None,
                reason: String::new(),
                message: String::new(),
            },
            "box",
            chrono::Utc::now(),
        ))
    }

    fn target() -> Target {
        Target::parse("generic+http://127.0.0.1:9/x").unwrap()
    }

    /// Delivers a message about `web` over `t` with the default policy.
    async fn deliver_web(t: &dyn Transport) -> bool {
        let metrics = Metrics::new();
        deliver(
            t,
            &target(),
            &message("web"),
            RetryPolicy::default(),
            &metrics,
        )
        .await
    }

    #[tokio::test(start_paused = true)]
    async fn retries_back_off_exponentially_then_deliver() {
        let t = flaky(5);
        assert!(deliver_web(&t).await);
        let at: Vec<u64> = t.at.lock().unwrap().iter().map(|d| d.as_secs()).collect();
        assert_eq!(at, vec![0, 1, 3, 7, 15, 31]);
    }

    #[tokio::test(start_paused = true)]
    async fn retries_for_ten_minutes_then_drop() {
        let t = flaky(usize::MAX);
        assert!(!deliver_web(&t).await);
        let at = t.at.lock().unwrap().clone();
        let last = at.last().copied().unwrap_or_default();
        assert!(last >= Duration::from_secs(600), "{last:?}");
        assert!(last < Duration::from_secs(660), "{last:?}");
        // 1, 2, 4, ... 32, then every 60 s: 6 + 9 waits.
        assert_eq!(at.len(), 16, "{at:?}");
    }

    #[test]
    fn permanent_errors() {
        assert!(SendError::Status(404).is_permanent());
        assert!(!SendError::Status(429).is_permanent());
        assert!(!SendError::Status(503).is_permanent());
        assert!(!SendError::Timeout(Duration::from_secs(1)).is_permanent());
    }

    #[test]
    fn full_queue_drops_the_oldest() {
        let lane = Lane::new(target(), 3, Arc::default());
        for i in 0..5 {
            lane.push(message(&format!("o{i}")));
        }
        let left: Vec<String> = lane.pending().iter().map(|m| m.object.clone()).collect();
        assert_eq!(left, vec!["o2", "o3", "o4"]);
    }

    #[tokio::test(start_paused = true)]
    async fn lane_sends_in_order() {
        let lane = Arc::new(Lane::new(target(), QUEUE_CAPACITY, Arc::default()));
        let t = Arc::new(flaky(1));
        tokio::spawn(lane.clone().run(t.clone(), RetryPolicy::default()));
        lane.push(message("a"));
        lane.push(message("b"));
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(lane.pending().is_empty());
        assert_eq!(t.calls.load(Ordering::SeqCst), 3);
    }
}
