//! The connection layer of the HTTP server: accepts under a connection cap and serves each connection
//! with hyper's HTTP/1 builder under time limits, so slow or idle clients cannot hold the server.
//!
//! - At most [`Limits::max_connections`] connections at once (a semaphore); one more is closed at once.
//! - A client must send a whole request head within [`Limits::header_read_timeout`]; the same timer runs
//!   while a kept-alive connection waits for its next request, so it is the idle limit too.
//! - A request (its body read included) must be answered within [`Limits::request_timeout`] (503 past it).
//! - Request heads over [`Limits::max_head_bytes`] are refused by hyper (431).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::Request;
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::Response;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// Time and size limits of the server.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections served at once; more are closed at once.
    pub max_connections: usize,
    /// Time to receive a whole request head (and the idle limit between requests of a connection).
    pub header_read_timeout: Duration,
    /// Time to answer one request, its body read included.
    pub request_timeout: Duration,
    /// Largest request head (request line and headers) in bytes.
    pub max_head_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 512,
            header_read_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            max_head_bytes: 64 * 1024,
        }
    }
}

/// At most one log line per period for a repeated event, with the count of the ones not logged.
#[derive(Debug)]
pub struct WarnLimiter {
    period: Duration,
    last: std::sync::Mutex<Option<Instant>>,
    suppressed: AtomicU64,
}

impl WarnLimiter {
    /// A limiter allowing one line per `period`.
    pub fn new(period: Duration) -> Self {
        WarnLimiter {
            period,
            last: std::sync::Mutex::new(None),
            suppressed: AtomicU64::new(0),
        }
    }

    /// Records one event at `now`: `Some(n)` when a line should be logged (`n` events were not logged
    /// since the last line), `None` when this one is suppressed.
    pub fn hit(&self, now: Instant) -> Option<u64> {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        match *last {
            Some(t) if now.saturating_duration_since(t) < self.period => {
                self.suppressed.fetch_add(1, Ordering::Relaxed);
                None
            }
            _ => {
                *last = Some(now);
                Some(self.suppressed.swap(0, Ordering::Relaxed))
            }
        }
    }
}

/// Serves `app` on `listener` under `limits` until the process ends.
pub async fn serve(listener: TcpListener, app: Router, limits: Limits) {
    let request_timeout = limits.request_timeout;
    let app = app.layer(middleware::from_fn(move |req: Request, next: Next| {
        answer_within(request_timeout, req, next)
    }));
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let over_cap = WarnLimiter::new(Duration::from_secs(10));
    let accept_errors = WarnLimiter::new(Duration::from_secs(10));
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _peer)) => stream,
            Err(e) => {
                // Out of file descriptors and the like: wait a little instead of spinning.
                if let Some(suppressed) = accept_errors.hit(Instant::now()) {
                    tracing::warn!(error = %e, suppressed, "HTTP accept failed");
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
            drop(stream);
            if let Some(suppressed) = over_cap.hit(Instant::now()) {
                tracing::warn!(
                    max = limits.max_connections,
                    suppressed,
                    "HTTP connection refused: too many connections"
                );
            }
            continue;
        };
        let service = TowerToHyperService::new(app.clone());
        tokio::spawn(async move {
            let _ = stream.set_nodelay(true);
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_read_timeout)
                .keep_alive(true)
                .max_buf_size(limits.max_head_bytes.max(8192));
            if let Err(e) = builder
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(error = %e, "HTTP connection ended with an error");
            }
            drop(permit);
        });
    }
}

/// Runs the request, or answers 503 when it takes longer than `limit`.
async fn answer_within(limit: Duration, req: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(resp) => resp,
        Err(_) => super::error(StatusCode::SERVICE_UNAVAILABLE, "request timed out"),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use axum::routing::{get, post};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    async fn start(limits: Limits) -> std::net::SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let app = Router::new()
            .route("/livez", get(super::super::livez))
            .route(
                "/slow",
                post(|body: axum::body::Bytes| async move { body.len().to_string() }),
            );
        tokio::spawn(serve(listener, app, limits));
        addr
    }

    /// One `GET /livez` on a new connection: the status code.
    async fn livez(addr: std::net::SocketAddr) -> Option<u16> {
        let mut s = TcpStream::connect(addr).await.ok()?;
        s.write_all(b"GET /livez HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            .await
            .ok()?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.ok()?;
        let text = String::from_utf8_lossy(&buf);
        text.get(9..12)?.parse().ok()
    }

    /// Waits until the server closes `s` (EOF or reset), trickling a header line now and then.
    async fn until_closed(mut s: TcpStream) {
        let mut buf = [0u8; 512];
        loop {
            tokio::select! {
                got = s.read(&mut buf) => match got {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                },
                () = tokio::time::sleep(Duration::from_millis(300)) => {
                    let _ = s.write_all(b"X-Slow: 1\r\n").await;
                }
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn slow_clients_are_closed_while_livez_answers() {
        let header = Duration::from_secs(2);
        let addr = start(Limits {
            header_read_timeout: header,
            ..Limits::default()
        })
        .await;
        let started = Instant::now();
        let mut slow = tokio::task::JoinSet::new();
        for _ in 0..150 {
            let mut s = TcpStream::connect(addr).await.expect("connect");
            s.write_all(b"GET /livez HTTP/1.1\r\nHost: t\r\n")
                .await
                .expect("partial request");
            slow.spawn(async move {
                until_closed(s).await;
                started.elapsed()
            });
        }
        let mut answers = 0;
        while !slow.is_empty() {
            tokio::select! {
                done = slow.join_next() => { done.expect("task").expect("join"); }
                () = tokio::time::sleep(Duration::from_millis(100)) => {
                    let code = tokio::time::timeout(Duration::from_secs(2), livez(addr)).await;
                    assert_eq!(code, Ok(Some(200)), "/livez answers while 150 clients are slow");
                    answers += 1;
                }
            }
            assert!(
                started.elapsed() < header + Duration::from_secs(2),
                "every slow client closed within the header timeout + 2 s"
            );
        }
        assert!(answers > 0);
    }

    /// Connects to a server started with `limits`, sends `request`, and returns the connection with the
    /// first bytes of the answer (read within 3 s).
    async fn exchange(limits: Limits, request: &[u8]) -> (TcpStream, String) {
        let addr = start(limits).await;
        let mut s = TcpStream::connect(addr).await.expect("connect");
        s.write_all(request).await.expect("write");
        let mut buf = [0u8; 512];
        let n = tokio::time::timeout(Duration::from_secs(3), s.read(&mut buf))
            .await
            .expect("answered in time")
            .expect("read");
        (s, String::from_utf8_lossy(&buf[..n]).into_owned())
    }

    #[tokio::test]
    async fn idle_keep_alive_connection_is_closed() {
        let limits = Limits {
            header_read_timeout: Duration::from_millis(500),
            ..Limits::default()
        };
        let (mut s, answer) = exchange(limits, b"GET /livez HTTP/1.1\r\nHost: t\r\n\r\n").await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        let mut buf = [0u8; 512];
        let closed = tokio::time::timeout(Duration::from_secs(3), s.read(&mut buf)).await;
        assert!(matches!(closed, Ok(Ok(0) | Err(_))), "{closed:?}");
    }

    #[tokio::test]
    async fn slow_body_gets_503_at_the_request_timeout() {
        let limits = Limits {
            request_timeout: Duration::from_millis(500),
            ..Limits::default()
        };
        let request = b"POST /slow HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\nabc";
        let (_s, answer) = exchange(limits, request).await;
        assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    }

    #[tokio::test]
    async fn connections_over_the_cap_are_closed_at_once() {
        let addr = start(Limits {
            max_connections: 3,
            ..Limits::default()
        })
        .await;
        let mut held = Vec::new();
        for _ in 0..3 {
            held.push(TcpStream::connect(addr).await.expect("connect"));
        }
        // Let the server accept them.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut extra = TcpStream::connect(addr).await.expect("connect");
        let mut buf = [0u8; 16];
        let closed = tokio::time::timeout(Duration::from_secs(2), extra.read(&mut buf)).await;
        assert!(matches!(closed, Ok(Ok(0) | Err(_))), "{closed:?}");
        drop(held);
        let code = tokio::time::timeout(Duration::from_secs(2), async {
            loop {
                if let Some(code) = livez(addr).await {
                    return code;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
        assert_eq!(code, Ok(200), "served again once below the cap");
    }

    #[test]
    fn warn_limiter_allows_one_line_per_period_with_the_count() {
        let l = WarnLimiter::new(Duration::from_secs(10));
        let t0 = Instant::now();
        assert_eq!(l.hit(t0), Some(0));
        assert_eq!(l.hit(t0 + Duration::from_secs(1)), None);
        assert_eq!(l.hit(t0 + Duration::from_secs(9)), None);
        assert_eq!(l.hit(t0 + Duration::from_secs(10)), Some(2));
        assert_eq!(l.hit(t0 + Duration::from_secs(11)), None);
        assert_eq!(l.hit(t0 + Duration::from_secs(30)), Some(1));
    }
}
