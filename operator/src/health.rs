//! HTTP probe of an app's health path. Healthy: HTTP 2xx and, when the body is JSON with a `healthy`
//! field, that field is true. A `version` field is reported as the app version.

use std::time::Duration;

use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use serde::Serialize;

/// Body bytes read at most.
const BODY_LIMIT: usize = 64 * 1024;

/// The result of one probe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum ProbeResult {
    /// 2xx and not `healthy: false`.
    Healthy {
        /// `version` from a JSON body.
        version: Option<String>,
    },
    /// The app answered, and the answer says unhealthy.
    Unhealthy {
        /// HTTP status.
        status: u16,
        /// Start of the body, for messages.
        excerpt: String,
    },
    /// Connected but no answer within the timeout (or the connection broke mid-answer).
    Timeout,
    /// Nothing listening yet (refused, unreachable): the app may still be starting.
    NotListening {
        /// Detail.
        message: String,
    },
}

impl ProbeResult {
    /// True when healthy.
    pub fn is_healthy(&self) -> bool {
        matches!(self, ProbeResult::Healthy { .. })
    }
    /// One line for status messages.
    pub fn describe(&self) -> String {
        match self {
            ProbeResult::Healthy { version } => match version {
                Some(v) => format!("healthy (version {v})"),
                None => "healthy".to_owned(),
            },
            ProbeResult::Unhealthy { status, excerpt } if excerpt.is_empty() => {
                format!("HTTP {status}")
            }
            ProbeResult::Unhealthy { status, excerpt } => format!("HTTP {status}: {excerpt}"),
            ProbeResult::Timeout => "no answer within the probe timeout".to_owned(),
            ProbeResult::NotListening { message } => format!("not listening: {message}"),
        }
    }
}

/// Judges an HTTP answer by the body rules.
pub fn judge(status: u16, body: &[u8]) -> ProbeResult {
    let json: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    let field = |k: &str| {
        json.as_ref()
            .and_then(|v| v.as_object())
            .and_then(|o| o.get(k))
            .cloned()
    };
    let version = field("version").and_then(|v| match v {
        serde_json::Value::String(s) => Some(s),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    });
    let healthy_field = field("healthy");
    let ok_status = (200..300).contains(&status);
    let healthy =
        ok_status && !matches!(healthy_field, Some(ref v) if v != &serde_json::Value::Bool(true));
    if healthy {
        ProbeResult::Healthy { version }
    } else {
        let text = String::from_utf8_lossy(body);
        let excerpt: String = text.trim().chars().take(120).collect();
        ProbeResult::Unhealthy { status, excerpt }
    }
}

/// GETs `http://{host}:{port}{path}` with `timeout` for the whole exchange.
pub async fn probe(host: &str, port: u16, path: &str, timeout: Duration) -> ProbeResult {
    match tokio::time::timeout(timeout, probe_inner(host, port, path)).await {
        Err(_) => ProbeResult::Timeout,
        Ok(r) => r,
    }
}

async fn probe_inner(host: &str, port: u16, path: &str) -> ProbeResult {
    let stream = match tokio::net::TcpStream::connect((host, port)).await {
        Ok(s) => s,
        Err(e) => {
            return ProbeResult::NotListening {
                message: e.to_string(),
            };
        }
    };
    let Ok((mut sender, conn)) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await
    else {
        return ProbeResult::Timeout;
    };
    let driver = tokio::spawn(conn);
    let authority = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let req = match hyper::Request::get(path)
        .header(hyper::header::HOST, authority)
        .header(
            hyper::header::USER_AGENT,
            concat!("dockop/", env!("CARGO_PKG_VERSION")),
        )
        .body(Empty::<Bytes>::new())
    {
        Ok(r) => r,
        Err(e) => {
            return ProbeResult::NotListening {
                message: format!("bad health path {path:?}: {e}"),
            };
        }
    };
    let result = match sender.send_request(req).await {
        Err(e) if e.is_incomplete_message() || e.is_closed() => ProbeResult::NotListening {
            message: "connection closed before an answer".to_owned(),
        },
        Err(_) => ProbeResult::Timeout,
        Ok(resp) => {
            let status = resp.status().as_u16();
            match Limited::new(resp.into_body(), BODY_LIMIT).collect().await {
                Ok(b) => judge(status, &b.to_bytes()),
                // An oversized or broken body: judge by the status alone.
                Err(_) => judge(status, b""),
            }
        }
    };
    driver.abort();
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_rules() {
        assert_eq!(
            judge(200, br#"{"healthy":true,"version":"1.18.34"}"#),
            ProbeResult::Healthy {
                version: Some("1.18.34".into())
            }
        );
        assert!(judge(200, b"ok").is_healthy());
        assert!(judge(204, b"").is_healthy());
        assert!(judge(200, br#"{"status":"up"}"#).is_healthy());
        assert!(!judge(200, br#"{"healthy":false}"#).is_healthy());
        assert!(!judge(200, br#"{"healthy":"yes"}"#).is_healthy());
        assert!(!judge(401, br#"{"healthy":true}"#).is_healthy());
        assert!(!judge(500, b"boom").is_healthy());
        assert_eq!(
            judge(200, br#"{"healthy":true,"version":2}"#),
            ProbeResult::Healthy {
                version: Some("2".into())
            }
        );
        assert_eq!(
            judge(200, br#"[1,2]"#),
            ProbeResult::Healthy { version: None }
        );
    }

    #[test]
    fn excerpt_is_short() {
        let long = "x".repeat(1000);
        match judge(500, long.as_bytes()) {
            ProbeResult::Unhealthy { excerpt, .. } => assert_eq!(excerpt.len(), 120),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[tokio::test]
    async fn refused_is_not_listening() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = l.local_addr().expect("addr").port();
        drop(l);
        let r = probe("127.0.0.1", port, "/", Duration::from_secs(1)).await;
        assert!(matches!(r, ProbeResult::NotListening { .. }), "{r:?}");
    }

    #[tokio::test]
    async fn silent_server_times_out_and_the_connection_is_closed() {
        use tokio::io::AsyncReadExt;
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = l.local_addr().expect("addr").port();
        let server = tokio::spawn(async move {
            let (mut s, _) = l.accept().await.expect("accept");
            // Read the request, never answer, and see whether the prober hangs up.
            let mut buf = [0u8; 1024];
            let mut got = 0;
            loop {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => return got,
                    Ok(n) => got += n,
                }
            }
        });
        let r = probe("127.0.0.1", port, "/", Duration::from_millis(300)).await;
        assert_eq!(r, ProbeResult::Timeout);
        // The health gate drops probes still in flight: their connections must close with them (hyper's
        // connection task ends once its sender and response are dropped), not stay open.
        let got = tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .expect("the timed-out probe left its connection open")
            .expect("server");
        assert!(got > 0, "the request was sent");
    }

    #[tokio::test]
    async fn real_http_answer() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = l.local_addr().expect("addr").port();
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let (mut s, _) = l.accept().await.expect("accept");
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf).await;
            let body = r#"{"healthy":true,"version":"9"}"#;
            let resp = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            s.write_all(resp.as_bytes()).await.expect("write");
        });
        let r = probe("127.0.0.1", port, "/global/health", Duration::from_secs(2)).await;
        assert_eq!(
            r,
            ProbeResult::Healthy {
                version: Some("9".into())
            }
        );
    }
}
