//! The traffic switch's admin protocol: the route of a start-first object (host listeners -> the active
//! container's bridge IP), the routes file `dockop proxy` persists, and the client the executor uses to
//! read and switch routes over the proxy's root-only unix socket (`<state-dir>/proxy.sock`).
//!
//! `dockop proxy` ([`crate::proxy`]) serves this protocol; everything here is shared by both sides and
//! sits below the executor, so the executor never depends on the proxy process's code.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};

/// File name of the admin socket in the state directory.
pub const SOCKET_NAME: &str = "proxy.sock";
/// File name of the persisted routes in the state directory.
pub const ROUTES_NAME: &str = "proxy-routes.json";
/// Time an admin call may take, beyond the drain it waits for.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest admin answer read.
const ANSWER_LIMIT: usize = 1024 * 1024;

/// One host listener of a route: `listen` (host address and port) forwards to `containerPort`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Listener {
    /// Host address and port the proxy binds (`127.0.0.1:4096`).
    pub listen: String,
    /// Port of the app inside the container.
    pub container_port: u16,
}

/// Where an object's traffic goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Route {
    /// Host listeners (from `spec.ports`).
    pub listeners: Vec<Listener>,
    /// Bridge IP of the container that receives new requests.
    pub upstream: String,
    /// ID of that container (for status and crash recovery).
    pub container_id: String,
    /// How long the previous upstream keeps its requests and streams after a switch.
    pub drain_seconds: u32,
}

/// The routes file: every route by object name, written atomically by the proxy.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteTable {
    /// Routes by object name.
    pub routes: BTreeMap<String, Route>,
}

/// What a switch did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SwitchReport {
    /// The upstream that served before (none for a new route).
    pub previous: Option<String>,
    /// Requests and streams still open on the previous upstream when the drain ended (0: drained).
    pub left_open: u64,
    /// Seconds the drain took.
    pub drain_seconds: f64,
}

/// Why an admin call failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SwitchError {
    /// No proxy listens on the socket.
    #[error(
        "no `dockop proxy` answers on {0}: start-first objects need it (start it with `dockop proxy`, \
         or the dockop-proxy systemd unit), or set update.strategy: stop-first"
    )]
    NotRunning(PathBuf),
    /// The call failed on the way.
    #[error("dockop proxy on {path}: {message}")]
    Call {
        /// The socket.
        path: PathBuf,
        /// What failed.
        message: String,
    },
    /// The proxy refused the call.
    #[error("dockop proxy refused: HTTP {status}: {message}")]
    Refused {
        /// HTTP status.
        status: u16,
        /// Its message.
        message: String,
    },
}

/// The admin client of one proxy.
#[derive(Debug, Clone)]
pub struct SwitchClient {
    socket: PathBuf,
}

impl SwitchClient {
    /// The client of the proxy whose state directory is `state_dir`.
    pub fn in_state_dir(state_dir: &Path) -> Self {
        Self {
            socket: state_dir.join(SOCKET_NAME),
        }
    }

    /// The socket it talks to.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The route of `name`, `None` when the proxy has none.
    pub async fn route(&self, name: &str) -> Result<Option<Route>, SwitchError> {
        let (status, body) = self
            .call("GET", &format!("/routes/{name}"), None, CALL_TIMEOUT)
            .await?;
        match status {
            200 => serde_json::from_slice(&body)
                .map(Some)
                .map_err(|e| self.failed(format!("bad answer: {e}"))),
            404 => Ok(None),
            _ => Err(refused(status, &body)),
        }
    }

    /// Points `name` at `route` (binding its listeners when new) and waits until the previous upstream
    /// has drained, at most `route.drain_seconds`.
    pub async fn switch(&self, name: &str, route: &Route) -> Result<SwitchReport, SwitchError> {
        let body = serde_json::to_vec(route).map_err(|e| self.failed(e.to_string()))?;
        let limit = CALL_TIMEOUT + Duration::from_secs(u64::from(route.drain_seconds));
        let (status, answer) = self
            .call("PUT", &format!("/routes/{name}"), Some(body), limit)
            .await?;
        if status != 200 {
            return Err(refused(status, &answer));
        }
        serde_json::from_slice(&answer).map_err(|e| self.failed(format!("bad answer: {e}")))
    }

    /// Removes the route of `name` (its listeners close); a missing route is not an error.
    pub async fn remove(&self, name: &str) -> Result<(), SwitchError> {
        let (status, body) = self
            .call("DELETE", &format!("/routes/{name}"), None, CALL_TIMEOUT)
            .await?;
        match status {
            200 | 204 | 404 => Ok(()),
            _ => Err(refused(status, &body)),
        }
    }

    fn failed(&self, message: String) -> SwitchError {
        SwitchError::Call {
            path: self.socket.clone(),
            message,
        }
    }

    async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<Vec<u8>>,
        limit: Duration,
    ) -> Result<(u16, Bytes), SwitchError> {
        let exchange = async {
            let stream = tokio::net::UnixStream::connect(&self.socket)
                .await
                .map_err(|_| SwitchError::NotRunning(self.socket.clone()))?;
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .map_err(|e| self.failed(e.to_string()))?;
            let driver = tokio::spawn(conn);
            let req = hyper::Request::builder()
                .method(method)
                .uri(path)
                .header(hyper::header::HOST, "dockop-proxy")
                .header(hyper::header::CONTENT_TYPE, "application/json")
                .body(Full::new(Bytes::from(body.unwrap_or_default())))
                .map_err(|e| self.failed(e.to_string()))?;
            let resp = sender
                .send_request(req)
                .await
                .map_err(|e| self.failed(e.to_string()))?;
            let status = resp.status().as_u16();
            let bytes = Limited::new(resp.into_body(), ANSWER_LIMIT)
                .collect()
                .await
                .map_err(|e| self.failed(e.to_string()))?
                .to_bytes();
            driver.abort();
            Ok((status, bytes))
        };
        match tokio::time::timeout(limit, exchange).await {
            Ok(r) => r,
            Err(_) => Err(self.failed(format!("no answer within {} s", limit.as_secs()))),
        }
    }
}

fn refused(status: u16, body: &[u8]) -> SwitchError {
    let message = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_owned))
        .unwrap_or_else(|| String::from_utf8_lossy(body).chars().take(200).collect());
    SwitchError::Refused { status, message }
}

/// Reads the routes file (blocking); a missing file is an empty table.
pub fn load_routes(path: &Path) -> std::io::Result<RouteTable> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(std::io::Error::other),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(RouteTable::default()),
        Err(e) => Err(e),
    }
}

/// Writes the routes file atomically (blocking): a temp file in the same directory, fsync, rename.
pub fn save_routes(path: &Path, table: &RouteTable) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let bytes = serde_json::to_vec_pretty(table).map_err(std::io::Error::other)?;
    let tmp = path.with_extension("json.tmp");
    {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_file_round_trips_atomically() {
        let d = tempfile::tempdir().expect("dir");
        let p = d.path().join(ROUTES_NAME);
        assert_eq!(load_routes(&p).expect("missing"), RouteTable::default());
        let mut t = RouteTable::default();
        t.routes.insert(
            "web".into(),
            Route {
                listeners: vec![Listener {
                    listen: "127.0.0.1:3000".into(),
                    container_port: 8080,
                }],
                upstream: "172.17.0.2".into(),
                container_id: "abc".into(),
                drain_seconds: 30,
            },
        );
        save_routes(&p, &t).expect("save");
        assert_eq!(load_routes(&p).expect("load"), t);
        assert!(!p.with_extension("json.tmp").exists());
    }

    #[tokio::test]
    async fn no_proxy_is_a_clear_error_with_the_fix() {
        let d = tempfile::tempdir().expect("dir");
        let c = SwitchClient::in_state_dir(d.path());
        let e = c.route("web").await.expect_err("nothing listens");
        assert!(matches!(e, SwitchError::NotRunning(_)));
        assert!(
            e.to_string().contains("start it with `dockop proxy`"),
            "{e}"
        );
    }
}
