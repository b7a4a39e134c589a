//! The fleet view: `dockop status --server URL...` reads `/status` of several dockop instances (bearer
//! token from `--token-file`, the one their `--reconcile-token-file` holds) and returns the objects of
//! each, labelled with the server they came from.

use std::time::Duration;

use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;

use crate::status::ObjectStatus;

/// Time allowed for one server's whole answer.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest `/status` body read.
const BODY_LIMIT: usize = 16 * 1024 * 1024;

/// Why one server's status could not be read; each variant names the phase that failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FleetError {
    /// The URL is not `http://HOST:PORT[/prefix]`.
    #[error("{url}: not an http://HOST:PORT URL")]
    Url {
        /// As given.
        url: String,
    },
    /// Connecting failed.
    #[error("{url}: connect: {message}")]
    Connect {
        /// Server.
        url: String,
        /// Detail.
        message: String,
    },
    /// The request or the answer failed on the way.
    #[error("{url}: request: {message}")]
    Request {
        /// Server.
        url: String,
        /// Detail.
        message: String,
    },
    /// No answer in time.
    #[error("{url}: no answer within {seconds} s")]
    Timeout {
        /// Server.
        url: String,
        /// Limit.
        seconds: u64,
    },
    /// The server refused the token (or none was sent), or `/status` is off there.
    #[error(
        "{url}: /status answered {status}; fix: pass --token-file with the token of that instance's --reconcile-token-file (/status is off without one)"
    )]
    Denied {
        /// Server.
        url: String,
        /// HTTP status.
        status: u16,
    },
    /// Any other HTTP status.
    #[error("{url}: /status answered {status}")]
    Status {
        /// Server.
        url: String,
        /// HTTP status.
        status: u16,
    },
    /// The body is not a status list.
    #[error("{url}: /status body: {message}")]
    Body {
        /// Server.
        url: String,
        /// Detail.
        message: String,
    },
}

/// One server of the fleet and what it answered.
#[derive(Debug)]
pub struct ServerStatus {
    /// `HOST:PORT` of the server, shown in the HOST column.
    pub host: String,
    /// Its objects, or why they could not be read.
    pub result: Result<Vec<ObjectStatus>, FleetError>,
}

/// `http://HOST:PORT[/prefix]` -> (`HOST:PORT`, host, port, `/prefix/status`).
fn parse(url: &str) -> Option<(String, String, u16, String)> {
    let rest = url.strip_prefix("http://")?;
    let (authority, prefix) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let (host, port) = match authority.strip_prefix('[') {
        Some(v6) => {
            let (h, p) = v6.split_once("]:")?;
            (h.to_owned(), p)
        }
        None => {
            let (h, p) = authority.rsplit_once(':')?;
            (h.to_owned(), p)
        }
    };
    let port = port.parse().ok()?;
    if host.is_empty() {
        return None;
    }
    let path = format!("{}/status", prefix.trim_end_matches('/'));
    Some((authority.to_owned(), host, port, path))
}

/// Reads every server's `/status` at once.
pub async fn fetch_all(urls: &[String], token: Option<&str>) -> Vec<ServerStatus> {
    let fetches = urls.iter().map(|u| async move {
        let host = parse(u).map_or_else(|| u.clone(), |p| p.0);
        let result = match tokio::time::timeout(FETCH_TIMEOUT, fetch(u, token)).await {
            Ok(r) => r,
            Err(_) => Err(FleetError::Timeout {
                url: u.clone(),
                seconds: FETCH_TIMEOUT.as_secs(),
            }),
        };
        ServerStatus { host, result }
    });
    futures_util::future::join_all(fetches).await
}

async fn fetch(url: &str, token: Option<&str>) -> Result<Vec<ObjectStatus>, FleetError> {
    let (authority, host, port, path) = parse(url).ok_or_else(|| FleetError::Url {
        url: url.to_owned(),
    })?;
    let request_err = |e: &dyn std::fmt::Display| FleetError::Request {
        url: url.to_owned(),
        message: e.to_string(),
    };
    let stream = tokio::net::TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| FleetError::Connect {
            url: url.to_owned(),
            message: e.to_string(),
        })?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| request_err(&e))?;
    let driver = tokio::spawn(conn);
    let mut req = hyper::Request::get(path.as_str())
        .header(hyper::header::HOST, authority)
        .header(
            hyper::header::USER_AGENT,
            concat!("dockop/", env!("CARGO_PKG_VERSION")),
        );
    if let Some(t) = token {
        req = req.header(hyper::header::AUTHORIZATION, format!("Bearer {t}"));
    }
    let req = req
        .body(Empty::<Bytes>::new())
        .map_err(|e| request_err(&e))?;
    let answer = async {
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| request_err(&e))?;
        let status = resp.status().as_u16();
        if matches!(status, 401 | 403 | 404) {
            return Err(FleetError::Denied {
                url: url.to_owned(),
                status,
            });
        }
        if status != 200 {
            return Err(FleetError::Status {
                url: url.to_owned(),
                status,
            });
        }
        let body = Limited::new(resp.into_body(), BODY_LIMIT)
            .collect()
            .await
            .map_err(|e| request_err(&e))?
            .to_bytes();
        serde_json::from_slice::<Vec<ObjectStatus>>(&body).map_err(|e| FleetError::Body {
            url: url.to_owned(),
            message: e.to_string(),
        })
    }
    .await;
    driver.abort();
    answer
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_urls() {
        assert_eq!(
            parse("http://web-1:9400"),
            Some(("web-1:9400".into(), "web-1".into(), 9400, "/status".into()))
        );
        assert_eq!(
            parse("http://[::1]:9400/dockop/"),
            Some((
                "[::1]:9400".into(),
                "::1".into(),
                9400,
                "/dockop/status".into()
            ))
        );
        assert_eq!(parse("https://web-1:9400"), None);
        assert_eq!(parse("http://web-1"), None);
    }

    #[tokio::test]
    async fn an_unreachable_server_is_reported_by_phase() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        drop(listener);
        let urls = [format!("http://127.0.0.1:{port}"), "ftp://x".to_owned()];
        let got = fetch_all(&urls, None).await;
        assert!(matches!(got[0].result, Err(FleetError::Connect { .. })));
        assert_eq!(got[0].host, format!("127.0.0.1:{port}"));
        assert!(matches!(got[1].result, Err(FleetError::Url { .. })));
    }
}
