//! HTTP probe of an app's health path. Healthy: HTTP 2xx and, when the body is JSON with a `healthy`
//! field, that field is true. A `version` field is reported as the app version. Probes carry the app's
//! credentials from `spec.health` ([`ProbeAuth`]): read from their files off the runtime, sent as headers
//! marked sensitive, and never written anywhere.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use base64::Engine as _;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper::header::{HeaderName, HeaderValue};
use hyper_util::rt::TokioIo;
use serde::Serialize;

use crate::engine::ContainerInfo;
use crate::spec::{Health, Port};
use crate::valuefile::{self, ValueFileError};

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
    /// The app answered 401 or 403: it wants credentials, or refused the ones sent.
    Denied {
        /// HTTP status.
        status: u16,
        /// Where the credentials sent came from (field and file, never the value); `None` when the probe
        /// carried none.
        sent: Option<String>,
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
            ProbeResult::Denied { status, sent: None } => format!(
                "HTTP {status}: the app asks for credentials: set spec.health.basicAuth or \
                 spec.health.httpHeaders"
            ),
            ProbeResult::Denied {
                status,
                sent: Some(from),
            } => format!("HTTP {status}: the credentials from {from} were refused"),
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

/// The credentials every probe of one object sends: `Authorization: Basic` from `basicAuth` and the
/// `httpHeaders`, values marked sensitive. Its `Debug` shows header names only.
#[derive(Clone, Default, PartialEq)]
pub struct ProbeAuth {
    headers: Vec<(HeaderName, HeaderValue)>,
    /// Where the secret parts came from, for the message of a refused probe.
    source: Option<String>,
}

impl fmt::Debug for ProbeAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProbeAuth")
            .field(
                "headers",
                &self.headers.iter().map(|(n, _)| n).collect::<Vec<_>>(),
            )
            .field("source", &self.source)
            .finish()
    }
}

/// Why the probe credentials could not be loaded. Names the field and the file, never a value.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AuthError {
    /// `basicAuth.passwordFile` could not be read.
    #[error("spec.health.basicAuth.passwordFile {path}: cannot read it: {source}")]
    PasswordFile {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: ValueFileError,
    },
    /// A header's `valueFrom.file` could not be read.
    #[error(
        "spec.health.httpHeaders[{index}] ({name}): cannot read valueFrom.file {path}: {source}"
    )]
    HeaderFile {
        /// Index in `httpHeaders`.
        index: usize,
        /// Header name.
        name: String,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: ValueFileError,
    },
    /// A header name or value that HTTP cannot carry (a value read from a file with a line break).
    #[error(
        "spec.health.httpHeaders[{index}] ({name}): the {what} is not usable in an HTTP header \
         (line breaks or control characters); fix the {what}"
    )]
    BadHeader {
        /// Index in `httpHeaders`.
        index: usize,
        /// Header name.
        name: String,
        /// `name`, `value`, or the file the value came from.
        what: String,
    },
    /// The password holds characters a basic-auth pair cannot carry.
    #[error(
        "spec.health.basicAuth.passwordFile {0}: the password holds a line break or control character; \
         write it on one line"
    )]
    BadPassword(PathBuf),
    /// The read did not finish in time.
    #[error("spec.health: reading the credential files: {0}")]
    Blocked(#[source] ValueFileError),
}

impl ProbeAuth {
    /// True when the probes carry nothing extra.
    pub fn is_empty(&self) -> bool {
        self.headers.is_empty()
    }

    /// Reads the credentials of `health` from their files (blocking: call it on a blocking thread, or use
    /// [`ProbeAuth::load_async`]).
    pub fn load(health: &Health) -> Result<Self, AuthError> {
        let mut auth = ProbeAuth::default();
        let mut sources = Vec::new();
        if let Some(b) = &health.basic_auth {
            let path = PathBuf::from(&b.password_file);
            let password = valuefile::read(&path).map_err(|source| AuthError::PasswordFile {
                path: path.clone(),
                source,
            })?;
            if password.chars().any(char::is_control) {
                return Err(AuthError::BadPassword(path));
            }
            let pair = base64::engine::general_purpose::STANDARD
                .encode(format!("{}:{password}", b.username));
            let mut value = HeaderValue::try_from(format!("Basic {pair}"))
                .map_err(|_| AuthError::BadPassword(path.clone()))?;
            value.set_sensitive(true);
            auth.headers.push((hyper::header::AUTHORIZATION, value));
            sources.push(format!(
                "spec.health.basicAuth.passwordFile {}",
                path.display()
            ));
        }
        for (index, h) in health.http_headers.iter().enumerate() {
            let bad = |what: String| AuthError::BadHeader {
                index,
                name: h.name.clone(),
                what,
            };
            let name = HeaderName::try_from(h.name.as_str()).map_err(|_| bad("name".into()))?;
            let mut value = match (&h.value, &h.value_from) {
                (_, Some(from)) => {
                    let path = PathBuf::from(&from.file);
                    let text = valuefile::read(&path).map_err(|source| AuthError::HeaderFile {
                        index,
                        name: h.name.clone(),
                        path: path.clone(),
                        source,
                    })?;
                    sources.push(format!(
                        "spec.health.httpHeaders[{index}].valueFrom.file {}",
                        path.display()
                    ));
                    HeaderValue::try_from(text)
                        .map_err(|_| bad(format!("value read from {}", path.display())))?
                }
                (Some(v), None) => {
                    HeaderValue::try_from(v.as_str()).map_err(|_| bad("value".into()))?
                }
                (None, None) => HeaderValue::from_static(""),
            };
            value.set_sensitive(h.value_from.is_some());
            auth.headers.push((name, value));
        }
        if !sources.is_empty() {
            auth.source = Some(sources.join(" and "));
        } else if !auth.headers.is_empty() {
            let names: Vec<&str> = health
                .http_headers
                .iter()
                .map(|h| h.name.as_str())
                .collect();
            auth.source = Some(format!("spec.health.httpHeaders ({})", names.join(", ")));
        }
        Ok(auth)
    }

    /// [`ProbeAuth::load`] on a blocking thread with a time limit; no credentials configured costs
    /// nothing.
    pub async fn load_async(health: &Health) -> Result<Self, AuthError> {
        if health.basic_auth.is_none() && health.http_headers.is_empty() {
            return Ok(ProbeAuth::default());
        }
        let h = health.clone();
        valuefile::in_blocking(move || ProbeAuth::load(&h))
            .await
            .map_err(AuthError::Blocked)?
    }
}

/// Where to probe a container: its bridge IP and the health `port`, else (no bridge IP, e.g. host
/// networking) the host address that publishes `port` (`0.0.0.0` probed on 127.0.0.1). On a remote engine
/// (`engine_host`), the bridge is not reachable from here: the published port on that host is probed
/// (`0.0.0.0`/`::` on the engine's host name, a specific address as is; loopback cannot be reached).
/// `None` when there is no such address.
pub fn probe_address(
    ip: Option<&str>,
    engine_host: Option<&str>,
    ports: &[Port],
    port: u16,
) -> Option<(String, u16)> {
    if let Some(remote) = engine_host {
        let p = ports.iter().find(|p| p.container_port == port)?;
        let host = match p.host_ip.as_str() {
            "0.0.0.0" | "::" | "" => remote.to_owned(),
            other => match other.parse::<std::net::IpAddr>() {
                Ok(ip) if ip.is_loopback() => return None,
                _ => other.to_owned(),
            },
        };
        return Some((host, p.effective_host_port()));
    }
    if let Some(ip) = ip {
        return Some((ip.to_owned(), port));
    }
    ports.iter().find(|p| p.container_port == port).map(|p| {
        let host = if p.host_ip == "0.0.0.0" {
            "127.0.0.1".to_owned()
        } else {
            p.host_ip.clone()
        };
        (host, p.effective_host_port())
    })
}

/// Probes the health path of container `info` with `auth`: on its bridge IP and container port, else on
/// the published port ([`probe_address`]); the whole exchange within `h.timeoutSeconds`. The one probe
/// rule the health gate, the monitor and the final status look share.
pub async fn probe_container(
    info: &ContainerInfo,
    ports: &[Port],
    h: &Health,
    auth: &ProbeAuth,
) -> ProbeResult {
    let timeout = Duration::from_secs(u64::from(h.timeout_seconds.max(1)));
    match probe_address(
        info.ip_address.as_deref(),
        info.engine_host.as_deref(),
        ports,
        h.port,
    ) {
        Some((host, port)) => probe(&host, port, &h.path, timeout, auth).await,
        None => ProbeResult::NotListening {
            message: "the container has no IP address and the health port is not published".into(),
        },
    }
}

/// GETs `http://{host}:{port}{path}` with `timeout` for the whole exchange, sending `auth`.
pub async fn probe(
    host: &str,
    port: u16,
    path: &str,
    timeout: Duration,
    auth: &ProbeAuth,
) -> ProbeResult {
    match tokio::time::timeout(timeout, probe_inner(host, port, path, auth)).await {
        Err(_) => ProbeResult::Timeout,
        Ok(r) => r,
    }
}

async fn probe_inner(host: &str, port: u16, path: &str, auth: &ProbeAuth) -> ProbeResult {
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
    let mut req = match hyper::Request::get(path)
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
    for (name, value) in &auth.headers {
        req.headers_mut().append(name.clone(), value.clone());
    }
    let result = match sender.send_request(req).await {
        Err(e) if e.is_incomplete_message() || e.is_closed() => ProbeResult::NotListening {
            message: "connection closed before an answer".to_owned(),
        },
        Err(_) => ProbeResult::Timeout,
        Ok(resp) => {
            let status = resp.status().as_u16();
            if status == 401 || status == 403 {
                driver.abort();
                return ProbeResult::Denied {
                    status,
                    sent: auth.source.clone(),
                };
            }
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
    fn remote_engines_are_probed_on_their_published_ports() {
        let port = |ip: &str| Port {
            container_port: 8080,
            host_port: Some(3000),
            host_ip: ip.to_owned(),
            protocol: crate::spec::Protocol::Tcp,
        };
        let local = probe_address(Some("172.17.0.2"), None, &[port("127.0.0.1")], 8080);
        assert_eq!(local, Some(("172.17.0.2".into(), 8080)));
        let any = probe_address(Some("172.17.0.2"), Some("web-1"), &[port("0.0.0.0")], 8080);
        assert_eq!(any, Some(("web-1".into(), 3000)));
        let one = probe_address(Some("172.17.0.2"), Some("web-1"), &[port("10.0.0.5")], 8080);
        assert_eq!(one, Some(("10.0.0.5".into(), 3000)));
        assert_eq!(
            probe_address(
                Some("172.17.0.2"),
                Some("web-1"),
                &[port("127.0.0.1")],
                8080
            ),
            None,
            "loopback on another machine cannot be reached"
        );
        assert_eq!(probe_address(None, Some("web-1"), &[], 8080), None);
    }

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
        let r = probe(
            "127.0.0.1",
            port,
            "/",
            Duration::from_secs(1),
            &ProbeAuth::default(),
        )
        .await;
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
        let r = probe(
            "127.0.0.1",
            port,
            "/",
            Duration::from_millis(300),
            &ProbeAuth::default(),
        )
        .await;
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
        let r = probe(
            "127.0.0.1",
            port,
            "/global/health",
            Duration::from_secs(2),
            &ProbeAuth::default(),
        )
        .await;
        assert_eq!(
            r,
            ProbeResult::Healthy {
                version: Some("9".into())
            }
        );
    }

    /// An app that answers 200 only to `Authorization: Basic b3BlbmNvZGU6czNjcmV0` (opencode:s3cret) and
    /// `X-Probe-Token: tok-v9`, else 401; returns its port.
    async fn protected_app() -> u16 {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = l.local_addr().expect("addr").port();
        tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = l.accept().await else {
                    return;
                };
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    let n = s.read(&mut buf).await.unwrap_or(0);
                    let head = String::from_utf8_lossy(&buf[..n]).to_ascii_lowercase();
                    let ok = head.contains("authorization: basic b3blbmnvzgu6cznjcmv0\r\n")
                        && head.contains("x-probe-token: tok-v9\r\n");
                    let (code, body) = if ok {
                        (200, r#"{"healthy":true,"version":"1.18.34"}"#)
                    } else {
                        (401, "Unauthorized")
                    };
                    let resp = format!(
                        "HTTP/1.1 {code} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = s.write_all(resp.as_bytes()).await;
                });
            }
        });
        port
    }

    fn health_with(dir: &std::path::Path, password: &str) -> Health {
        let pw = dir.join("pw");
        let tok = dir.join("tok");
        std::fs::write(&pw, format!("{password}\n")).expect("write");
        std::fs::write(&tok, "tok-v9\n").expect("write");
        serde_saphyr::from_str(&format!(
            "{{path: /h, port: 1, basicAuth: {{username: opencode, passwordFile: {}}}, httpHeaders: [{{name: X-Probe-Token, valueFrom: {{file: {}}}}}, {{name: X-Probe, value: dockop}}]}}",
            pw.display(),
            tok.display()
        ))
        .expect("health")
    }

    #[tokio::test]
    async fn credentials_from_files_reach_the_app_and_a_refusal_names_the_file() {
        let port = protected_app().await;
        let dir = tempfile::tempdir().expect("dir");
        let t = Duration::from_secs(2);

        let none = probe("127.0.0.1", port, "/h", t, &ProbeAuth::default()).await;
        assert_eq!(
            none,
            ProbeResult::Denied {
                status: 401,
                sent: None
            }
        );
        assert_eq!(
            none.describe(),
            "HTTP 401: the app asks for credentials: set spec.health.basicAuth or spec.health.httpHeaders"
        );

        let auth = ProbeAuth::load_async(&health_with(dir.path(), "s3cret"))
            .await
            .expect("load");
        assert_eq!(
            probe("127.0.0.1", port, "/h", t, &auth).await,
            ProbeResult::Healthy {
                version: Some("1.18.34".into())
            }
        );

        let wrong = ProbeAuth::load(&health_with(dir.path(), "wrong")).expect("load");
        let refused = probe("127.0.0.1", port, "/h", t, &wrong).await;
        let text = refused.describe();
        assert!(matches!(refused, ProbeResult::Denied { status: 401, .. }));
        assert!(
            text.starts_with("HTTP 401: the credentials from spec.health.basicAuth.passwordFile "),
            "{text}"
        );
        assert!(text.ends_with(" were refused"), "{text}");
        for shown in [text, format!("{wrong:?}"), format!("{refused:?}")] {
            for secret in ["d3Jvbmc", ":wrong", "tok-v9"] {
                assert!(!shown.contains(secret), "{shown}");
            }
        }
    }

    #[test]
    fn unreadable_or_unusable_credential_files_are_errors_that_name_field_and_path() {
        let dir = tempfile::tempdir().expect("dir");
        let mut h = health_with(dir.path(), "s3cret");
        std::fs::write(dir.path().join("tok"), "line1\nline2-secret\n").expect("write");
        let e = ProbeAuth::load(&h).expect_err("line break");
        let text = e.to_string();
        assert!(
            text.starts_with("spec.health.httpHeaders[0] (X-Probe-Token): the value read from "),
            "{text}"
        );
        assert!(!text.contains("line2-secret"), "{text}");
        if let Some(b) = h.basic_auth.as_mut() {
            b.password_file = dir.path().join("missing").display().to_string();
        }
        let text = ProbeAuth::load(&h).expect_err("missing").to_string();
        assert!(
            text.starts_with("spec.health.basicAuth.passwordFile ")
                && text.contains("missing: cannot read it"),
            "{text}"
        );
    }
}
