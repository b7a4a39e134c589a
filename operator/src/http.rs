//! The HTTP server of `dockop run`: `/metrics`, `/health`, `/health/{name}`, `/livez`, `/readyz`,
//! `/status`, `POST /hooks/git`, `POST /reconcile/{name}`.
//!
//! Open: metrics, health, livez, readyz. `/status` and `POST /reconcile/{name}` need the bearer token of
//! `--reconcile-token-file`; `POST /hooks/git` needs a GitHub (`X-Hub-Signature-256`) or Gitea
//! (`X-Gitea-Signature`) HMAC-SHA256 signature made with the secret of `--webhook-secret-file`. Without its
//! secret an endpoint is off (404). Secrets are read once at start, compared in constant time and never
//! logged. `/health` reads what the background [`crate::monitor`] saw, so it answers at once even when an
//! app hangs. `/health`, `/health/{name}` and `/metrics` also tell the monitor that someone watches: it
//! probes at each object's interval for the next 30 s and slows down to an idle period otherwise. The
//! first answer after an idle spell comes from the cache, judged by the usual staleness rule (503 when
//! older than two intervals), and wakes the monitor so that the next answers are fresh.
//!
//! Hostile clients: connections are capped and timed ([`server`]); refused credentials are logged at most
//! once per 10 s with the count of the refusals not logged; a webhook delivery id already seen
//! (`X-GitHub-Delivery`, `X-Gitea-Delivery`, among the last [`REMEMBERED_DELIVERIES`]) is answered 200
//! and ignored.

pub mod server;

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{DefaultBodyLimit, Path as UrlPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::Utc;
use hmac::{Hmac, KeyInit, Mac};
use serde::Serialize;
use sha2::Sha256;
use tokio::time::Instant;

use crate::monitor::{self, Board, ObjectHealth, Watcher, evaluate};
use crate::shared::{Shared, Trigger};
use crate::spec::Container;
use crate::telemetry::OPENMETRICS_CONTENT_TYPE;

type HmacSha256 = Hmac<Sha256>;

/// Largest webhook body accepted.
pub const WEBHOOK_BODY_LIMIT: usize = 1024 * 1024;

/// Webhook delivery ids remembered to ignore replays.
pub const REMEMBERED_DELIVERIES: usize = 1024;

/// At most one warning line per this period about refused credentials.
const AUTH_WARNING_PERIOD: Duration = Duration::from_secs(10);

pub use server::{Limits, WarnLimiter};

/// HTTP settings.
#[derive(Debug, Clone, Default)]
pub struct HttpConfig {
    /// Listen address, e.g. `127.0.0.1:9400`.
    pub listen: String,
    /// File holding the bearer token for `POST /reconcile/{name}`; the endpoint is off without it.
    pub token_file: Option<PathBuf>,
    /// File holding the shared secret of the git webhook; the endpoint is off without it.
    pub webhook_secret_file: Option<PathBuf>,
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// Bind failed.
    #[error("cannot listen on {addr}: {message}")]
    Bind {
        /// Address.
        addr: String,
        /// Detail.
        message: String,
    },
    /// A secret file could not be read or is empty.
    #[error("cannot use the secret in {path}: {message}")]
    Secret {
        /// File.
        path: PathBuf,
        /// Detail (never the secret).
        message: String,
    },
}

/// A secret read from a file; its `Debug` never shows it.
#[derive(Clone)]
pub struct Secret(Vec<u8>);

impl Secret {
    /// A secret from bytes.
    pub fn new(bytes: impl Into<Vec<u8>>) -> Self {
        Secret(bytes.into())
    }

    /// Reads a secret file, dropping one trailing newline (`\n` or `\r\n`). An empty secret is refused.
    pub fn from_file(path: &Path) -> Result<Self, HttpError> {
        let err = |message: String| HttpError::Secret {
            path: path.to_owned(),
            message,
        };
        let mut bytes = std::fs::read(path).map_err(|e| err(e.to_string()))?;
        if bytes.last() == Some(&b'\n') {
            bytes.pop();
            if bytes.last() == Some(&b'\r') {
                bytes.pop();
            }
        }
        if bytes.is_empty() {
            return Err(err(
                "the file is empty; fix: write a long random value into it, e.g. `openssl rand -hex 32`"
                    .into(),
            ));
        }
        Ok(Secret(bytes))
    }

    fn mac(&self) -> HmacSha256 {
        // HMAC accepts keys of any length.
        match HmacSha256::new_from_slice(&self.0) {
            Ok(m) => m,
            Err(_) => unreachable_mac(),
        }
    }
}

#[allow(clippy::panic)]
fn unreachable_mac() -> HmacSha256 {
    panic!("HMAC-SHA256 takes keys of any length")
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

/// A bearer token, kept as its HMAC under a per-process random key so that comparing a presented token
/// takes the same time whatever its content or length (`Mac::verify_slice`).
#[derive(Clone)]
struct TokenCheck {
    key: Secret,
    expected: Vec<u8>,
}

impl TokenCheck {
    fn new(token: &Secret) -> Self {
        let key = Secret((0..32).map(|_| fastrand::u8(..)).collect::<Vec<u8>>());
        let mut mac = key.mac();
        mac.update(&token.0);
        let expected = mac.finalize().into_bytes().to_vec();
        TokenCheck { key, expected }
    }

    fn matches(&self, presented: &[u8]) -> bool {
        let mut mac = self.key.mac();
        mac.update(presented);
        mac.verify_slice(&self.expected).is_ok()
    }
}

/// The last ids seen, bounded: the oldest is forgotten when a new one comes past the capacity.
#[derive(Debug)]
pub struct RecentIds {
    capacity: usize,
    order: VecDeque<String>,
    seen: HashSet<String>,
}

impl RecentIds {
    /// Remembers at most `capacity` ids.
    pub fn new(capacity: usize) -> Self {
        RecentIds {
            capacity,
            order: VecDeque::new(),
            seen: HashSet::new(),
        }
    }

    /// Records `id`; false when it was already among the remembered ones.
    pub fn insert(&mut self, id: &str) -> bool {
        if self.seen.contains(id) {
            return false;
        }
        if self.order.len() >= self.capacity
            && let Some(oldest) = self.order.pop_front()
        {
            self.seen.remove(&oldest);
        }
        self.order.push_back(id.to_owned());
        self.seen.insert(id.to_owned());
        true
    }
}

/// What the handlers share.
#[derive(Clone)]
pub struct HttpState {
    shared: Arc<Shared>,
    board: Arc<Board>,
    token: Option<TokenCheck>,
    webhook_secret: Option<Secret>,
    /// Rate limit of the "credentials refused" warnings.
    refused: Arc<WarnLimiter>,
    /// Webhook deliveries seen.
    deliveries: Arc<std::sync::Mutex<RecentIds>>,
}

impl fmt::Debug for HttpState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpState")
            .field("token", &self.token.as_ref().map(|_| "[redacted]"))
            .field("webhook_secret", &self.webhook_secret)
            .finish_non_exhaustive()
    }
}

impl HttpState {
    /// State for [`router`]: the shared controller state, the monitor's board, and the secrets that
    /// switch on the control endpoints.
    pub fn new(
        shared: Arc<Shared>,
        board: Arc<Board>,
        token: Option<Secret>,
        webhook_secret: Option<Secret>,
    ) -> Self {
        HttpState {
            shared,
            board,
            token: token.as_ref().map(TokenCheck::new),
            webhook_secret,
            refused: Arc::new(WarnLimiter::new(AUTH_WARNING_PERIOD)),
            deliveries: Arc::new(std::sync::Mutex::new(RecentIds::new(REMEMBERED_DELIVERIES))),
        }
    }

    /// Logs a refused credential, at most once per [`AUTH_WARNING_PERIOD`] (with the count not logged).
    fn warn_refused(&self, what: &'static str) {
        if let Some(suppressed) = self.refused.hit(std::time::Instant::now()) {
            tracing::warn!(
                suppressed,
                "{what} refused: missing or invalid credentials ({suppressed} more refusals not logged in the last {} s)",
                AUTH_WARNING_PERIOD.as_secs()
            );
        }
    }
}

/// Binds and serves until the process ends. Returns once bound (the server runs on a spawned task, the
/// health monitor on another, stopped with the server).
pub async fn serve(
    config: HttpConfig,
    shared: Arc<Shared>,
) -> Result<tokio::task::JoinHandle<()>, HttpError> {
    let token = config
        .token_file
        .as_deref()
        .map(Secret::from_file)
        .transpose()?;
    let webhook_secret = config
        .webhook_secret_file
        .as_deref()
        .map(Secret::from_file)
        .transpose()?;
    let listener = tokio::net::TcpListener::bind(&config.listen)
        .await
        .map_err(|e| HttpError::Bind {
            addr: config.listen.clone(),
            message: e.to_string(),
        })?;
    let local = listener
        .local_addr()
        .map_or_else(|_| config.listen.clone(), |a| a.to_string());
    tracing::info!(
        listen = %local,
        reconcile_endpoint = token.is_some(),
        webhook_endpoint = webhook_secret.is_some(),
        "HTTP server listening"
    );
    let board = Board::new();
    let monitor = monitor::spawn(Arc::clone(&shared), Arc::clone(&board));
    let app = router(HttpState::new(shared, board, token, webhook_secret));
    Ok(tokio::spawn(async move {
        server::serve(listener, app, Limits::default()).await;
        monitor.abort();
    }))
}

/// The routes, for [`serve`] and for tests (`tower::ServiceExt::oneshot`).
pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/health", get(health_all))
        .route("/health/{name}", get(health_one))
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .route("/status", get(status))
        .route("/reconcile/{name}", post(reconcile))
        .route(
            "/hooks/git",
            post(git_hook).layer(DefaultBodyLimit::max(WEBHOOK_BODY_LIMIT)),
        )
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(state.clone(), finish))
        .with_state(state)
}

/// Sets `Content-Length` on every answer with a body of known size (also axum's own rejections, and in
/// tests, where no hyper connection adds it), and counts requests by route.
async fn finish(State(st): State<HttpState>, req: Request, next: Next) -> Response {
    let route = route_label(req.uri().path());
    let mut resp = next.run(req).await;
    if !resp.headers().contains_key(header::CONTENT_LENGTH)
        && let Some(n) = resp.body().size_hint().exact()
    {
        resp.headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from(n));
    }
    st.shared
        .metrics
        .http_requests_total
        .get_or_create(&vec![
            ("path", route.to_owned()),
            ("code", resp.status().as_u16().to_string()),
        ])
        .inc();
    resp
}

/// The route a path belongs to, for the `path` label: never the raw URI (unbounded, may carry names).
fn route_label(path: &str) -> &'static str {
    match path {
        "/metrics" => "/metrics",
        "/health" => "/health",
        "/livez" => "/livez",
        "/readyz" => "/readyz",
        "/status" => "/status",
        "/hooks/git" => "/hooks/git",
        p if p.starts_with("/health/") => "/health/{name}",
        p if p.starts_with("/reconcile/") => "/reconcile/{name}",
        _ => "other",
    }
}

fn respond(status: StatusCode, content_type: &'static str, body: Vec<u8>) -> Response {
    let len = body.len();
    let mut resp = (status, Body::from(body)).into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

fn json<T: Serialize>(status: StatusCode, value: &T) -> Response {
    let mut body = serde_json::to_vec_pretty(value).unwrap_or_default();
    body.push(b'\n');
    respond(status, "application/json", body)
}

fn error(status: StatusCode, message: &str) -> Response {
    json(status, &serde_json::json!({ "error": message }))
}

async fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "not found")
}

async fn metrics_handler(State(st): State<HttpState>) -> Response {
    // Prometheus watches `dockop_ready`: keep it current at the probe intervals.
    st.board.requested(Watcher::Metrics);
    respond(
        StatusCode::OK,
        OPENMETRICS_CONTENT_TYPE,
        st.shared.metrics.encode().into_bytes(),
    )
}

async fn livez() -> Response {
    respond(
        StatusCode::OK,
        "text/plain; charset=utf-8",
        b"ok\n".to_vec(),
    )
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Readiness {
    ready: bool,
    engine_reachable: bool,
    first_sync_done: bool,
}

async fn readyz(State(st): State<HttpState>) -> Response {
    let r = Readiness {
        ready: st.shared.is_ready(),
        engine_reachable: st.shared.engine_reachable.load(Ordering::Relaxed),
        first_sync_done: st.shared.first_sync_done.load(Ordering::Relaxed),
    };
    let code = if r.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    json(code, &r)
}

#[derive(Serialize)]
struct HealthAll {
    healthy: bool,
    objects: BTreeMap<String, ObjectHealth>,
}

fn code_for(healthy: bool) -> StatusCode {
    if healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    }
}

/// Answers from the monitor's board at once (never probes); marks `/health` as watched, which wakes an
/// idle monitor: see [`crate::monitor`].
async fn health_all(State(st): State<HttpState>) -> Response {
    let in_force = st.shared.objects.read().await.clone();
    await_fresh_looks(&st, in_force.values().map(|o| o.as_ref())).await;
    let (now, wall) = (Instant::now(), Utc::now());
    let objects: BTreeMap<String, ObjectHealth> = in_force
        .iter()
        .map(|(name, obj)| {
            (
                name.clone(),
                evaluate(obj, st.board.get(name).as_ref(), now, wall),
            )
        })
        .collect();
    // Before the first sync an empty set means "not loaded yet", not "nothing to run".
    let loaded = !objects.is_empty() || st.shared.first_sync_done.load(Ordering::Relaxed);
    let healthy = loaded && objects.values().all(|o| o.healthy);
    json(code_for(healthy), &HealthAll { healthy, objects })
}

/// As [`health_all`], for one object.
async fn health_one(State(st): State<HttpState>, UrlPath(name): UrlPath<String>) -> Response {
    let Some(obj) = st.shared.objects.read().await.get(&name).cloned() else {
        st.board.requested(Watcher::Health);
        return error(
            StatusCode::NOT_FOUND,
            &format!("no object named {name:?} is in force"),
        );
    };
    await_fresh_looks(&st, std::iter::once(obj.as_ref())).await;
    let h = evaluate(
        &obj,
        st.board.get(&name).as_ref(),
        Instant::now(),
        Utc::now(),
    );
    json(code_for(h.healthy), &h)
}

/// Marks `/health` as watched (waking an idle monitor) and, for the objects whose last look was made
/// while the monitor was idle and is now too old to judge by, waits for the woken monitor's fresh look,
/// at most one probe timeout and a little: see [`crate::monitor::needs_fresh_look`].
async fn await_fresh_looks<'a>(st: &HttpState, objects: impl Iterator<Item = &'a Container>) {
    let since = Instant::now();
    let mut limit = Duration::ZERO;
    let mut names = Vec::new();
    for obj in objects {
        if monitor::needs_fresh_look(obj, st.board.get(&obj.metadata.name).as_ref(), since) {
            limit = limit.max(monitor::fresh_look_limit(obj));
            names.push(obj.metadata.name.as_str());
        }
    }
    st.board.requested(Watcher::Health);
    if !names.is_empty() {
        let deadline = Instant::now() + limit;
        st.board.fresh_looks(&names, since, deadline).await;
    }
}

/// Checks `Authorization: Bearer <token>`; `Err` is the answer to send.
fn authorize(st: &HttpState, headers: &HeaderMap) -> Result<(), Box<Response>> {
    let Some(check) = &st.token else {
        return Err(Box::new(not_found_off()));
    };
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
        .unwrap_or_default();
    if check.matches(presented) {
        Ok(())
    } else {
        st.warn_refused("bearer token");
        let mut resp = error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
        resp.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"dockop\""),
        );
        Err(Box::new(resp))
    }
}

fn not_found_off() -> Response {
    error(StatusCode::NOT_FOUND, "not found")
}

async fn status(State(st): State<HttpState>, headers: HeaderMap) -> Response {
    if let Err(resp) = authorize(&st, &headers) {
        return *resp;
    }
    let store = st.shared.store.clone();
    let all = tokio::task::spawn_blocking(move || store.list())
        .await
        .unwrap_or_default();
    // Exactly what `dockop status -o json` prints.
    let mut body = serde_json::to_string_pretty(&all)
        .unwrap_or_default()
        .into_bytes();
    body.push(b'\n');
    respond(StatusCode::OK, "application/json", body)
}

async fn reconcile(
    State(st): State<HttpState>,
    UrlPath(name): UrlPath<String>,
    headers: HeaderMap,
) -> Response {
    if let Err(resp) = authorize(&st, &headers) {
        return *resp;
    }
    if !st.shared.objects.read().await.contains_key(&name) {
        return error(
            StatusCode::NOT_FOUND,
            &format!("no object named {name:?} is in force"),
        );
    }
    if st
        .shared
        .trigger
        .send(Trigger::Object(name.clone()))
        .is_err()
    {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the controller is not running",
        );
    }
    tracing::info!(object = %name, "reconcile requested over HTTP");
    json(
        StatusCode::ACCEPTED,
        &serde_json::json!({ "accepted": true, "object": name }),
    )
}

/// The signature a webhook carries: GitHub `X-Hub-Signature-256: sha256=<hex>` or Gitea
/// `X-Gitea-Signature: <hex>`.
fn signature_of(headers: &HeaderMap) -> Option<Vec<u8>> {
    let github = headers
        .get("x-hub-signature-256")
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().strip_prefix("sha256=").unwrap_or("").to_owned());
    let gitea = || {
        headers
            .get("x-gitea-signature")
            .and_then(|v| v.to_str().ok())
            .map(|v| v.trim().to_owned())
    };
    let hex_sig = github.or_else(gitea)?;
    hex::decode(hex_sig.to_ascii_lowercase()).ok()
}

/// True when `signature` is HMAC-SHA256(secret, body).
pub fn verify_signature(secret: &Secret, body: &[u8], signature: &[u8]) -> bool {
    let mut mac = secret.mac();
    mac.update(body);
    mac.verify_slice(signature).is_ok()
}

async fn git_hook(State(st): State<HttpState>, headers: HeaderMap, body: Bytes) -> Response {
    let Some(secret) = &st.webhook_secret else {
        return not_found_off();
    };
    let valid = signature_of(&headers).is_some_and(|sig| verify_signature(secret, &body, &sig));
    if !valid {
        st.warn_refused("git webhook signature");
        return error(
            StatusCode::UNAUTHORIZED,
            "missing or invalid signature (X-Hub-Signature-256 or X-Gitea-Signature)",
        );
    }
    let event = headers
        .get("x-github-event")
        .or_else(|| headers.get("x-gitea-event"))
        .and_then(|v| v.to_str().ok())
        .unwrap_or("push");
    if event == "ping" {
        return json(StatusCode::OK, &serde_json::json!({ "pong": true }));
    }
    let delivery = headers
        .get("x-github-delivery")
        .or_else(|| headers.get("x-gitea-delivery"))
        .and_then(|v| v.to_str().ok());
    if let Some(id) = delivery {
        let fresh = st
            .deliveries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id);
        if !fresh {
            tracing::info!(delivery = %id, "git webhook: delivery already seen; replay ignored");
            return json(
                StatusCode::OK,
                &serde_json::json!({ "accepted": false, "duplicate": true }),
            );
        }
    }
    if st.shared.trigger.send(Trigger::Source).is_err() {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the controller is not running",
        );
    }
    tracing::info!(event, "git webhook: source refresh requested");
    json(
        StatusCode::ACCEPTED,
        &serde_json::json!({ "accepted": true }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::fake::FakeEngine;
    use crate::health::ProbeResult;
    use crate::monitor::Snapshot;
    use crate::spec::Container;
    use crate::status::{ObjectStatus, Store};
    use crate::testing;
    use http_body_util::BodyExt;
    use tokio::sync::mpsc::UnboundedReceiver;
    use tower::ServiceExt;

    const TOKEN: &str = "s3cret-token";
    const HOOK: &str = "hook-secret";

    fn object(name: &str, health: bool) -> Container {
        let o = testing::object(name);
        if health {
            o.health("/global/health", 8080, "").build()
        } else {
            o.build()
        }
    }

    fn running(probe: Option<ProbeResult>) -> Snapshot {
        Snapshot {
            container_id: Some("c1".into()),
            container_state: Some("running".into()),
            running: true,
            started_at: Some(Utc::now() - chrono::Duration::seconds(42)),
            digest: Some("sha256:abc".into()),
            version: Some("1".into()),
            memory_bytes: Some(3 * 1024 * 1024),
            probe,
            ..Snapshot::empty(Instant::now())
        }
    }

    fn healthy() -> Option<ProbeResult> {
        Some(ProbeResult::Healthy {
            version: Some("1".into()),
        })
    }

    struct Fixture {
        app: Router,
        shared: Arc<Shared>,
        board: Arc<Board>,
        rx: UnboundedReceiver<Trigger>,
        _dir: tempfile::TempDir,
    }

    async fn fixture(secrets: bool) -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("store");
        let mut st = ObjectStatus::new("web");
        st.image = "127.0.0.1:5000/web:v1".into();
        store.save(&st).expect("save");
        let (shared, rx) = Shared::new(store, Arc::new(FakeEngine::new()), Arc::default());
        {
            let mut objects = shared.objects.write().await;
            objects.insert("web".into(), Arc::new(object("web", true)));
            objects.insert("plain".into(), Arc::new(object("plain", false)));
        }
        let board = Board::new();
        board.set("web", running(healthy()));
        board.set("plain", running(None));
        let (token, hook) = if secrets {
            (Some(Secret::new(TOKEN)), Some(Secret::new(HOOK)))
        } else {
            (None, None)
        };
        let app = router(HttpState::new(
            Arc::clone(&shared),
            Arc::clone(&board),
            token,
            hook,
        ));
        Fixture {
            app,
            shared,
            board,
            rx,
            _dir: dir,
        }
    }

    async fn call(
        app: &Router,
        req: axum::http::Request<Body>,
    ) -> (StatusCode, HeaderMap, Vec<u8>) {
        let resp = app.clone().oneshot(req).await.expect("infallible");
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes()
            .to_vec();
        let len = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        assert_eq!(len, Some(body.len()), "Content-Length of a {status} answer");
        (status, headers, body)
    }

    fn get_req(uri: &str) -> axum::http::Request<Body> {
        axum::http::Request::get(uri)
            .body(Body::empty())
            .expect("request")
    }

    fn post_req(uri: &str, headers: &[(&str, &str)], body: &[u8]) -> axum::http::Request<Body> {
        let mut b = axum::http::Request::post(uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(Body::from(body.to_vec())).expect("request")
    }

    fn json_of(body: &[u8]) -> serde_json::Value {
        serde_json::from_slice(body).expect("json body")
    }

    fn sign(secret: &str, body: &[u8]) -> String {
        let mut mac = HmacSha256::new_from_slice(secret.as_bytes()).expect("key");
        mac.update(body);
        hex::encode(mac.finalize().into_bytes())
    }

    #[tokio::test]
    async fn health_all_ok_with_fields() {
        let f = fixture(false).await;
        let (code, headers, body) = call(&f.app, get_req("/health")).await;
        assert_eq!(code, StatusCode::OK);
        assert_eq!(headers[header::CONTENT_TYPE], "application/json");
        let v = json_of(&body);
        assert_eq!(v["healthy"], true);
        let web = &v["objects"]["web"];
        assert_eq!(web["healthy"], true);
        assert_eq!(web["version"], "1");
        assert_eq!(web["containerState"], "running");
        assert_eq!(web["digest"], "sha256:abc");
        assert_eq!(web["memoryUsageMb"], 3.0);
        assert!(web["uptimeSeconds"].as_u64().is_some_and(|u| u >= 42));
        assert_eq!(v["objects"]["plain"]["healthy"], true);
    }

    #[tokio::test]
    async fn health_503_when_one_object_is_unhealthy() {
        let f = fixture(false).await;
        f.board.set(
            "web",
            running(Some(ProbeResult::Unhealthy {
                status: 500,
                excerpt: String::new(),
            })),
        );
        let (code, _, body) = call(&f.app, get_req("/health")).await;
        assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
        let v = json_of(&body);
        assert_eq!(v["healthy"], false);
        assert_eq!(v["objects"]["web"]["healthy"], false);
        assert_eq!(v["objects"]["plain"]["healthy"], true);
        let (code, _, body) = call(&f.app, get_req("/health/web")).await;
        assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(json_of(&body)["detail"], "HTTP 500");
        let (code, _, _) = call(&f.app, get_req("/health/plain")).await;
        assert_eq!(code, StatusCode::OK);
    }

    #[tokio::test]
    async fn health_stale_probe_stopped_container_and_unchecked_object() {
        let f = fixture(false).await;
        // Last healthy answer is older than two intervals (1 s each): the app hangs.
        let mut stale = running(healthy());
        stale.observed_at = Instant::now()
            .checked_sub(std::time::Duration::from_secs(3))
            .expect("instant");
        f.board.set("web", stale);
        let (code, _, body) = call(&f.app, get_req("/health/web")).await;
        assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            json_of(&body)["detail"]
                .as_str()
                .is_some_and(|d| d.contains("no answer"))
        );
        // Without a health section: running is enough; stopped is not.
        let mut stopped = running(None);
        stopped.running = false;
        stopped.container_state = Some("exited".into());
        f.board.set("plain", stopped);
        let (code, _, body) = call(&f.app, get_req("/health/plain")).await;
        assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(json_of(&body)["detail"], "container is exited");
        // Not looked at yet.
        f.board.remove("web");
        let (code, _, _) = call(&f.app, get_req("/health/web")).await;
        assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
        drop(f.shared);
    }

    /// A look made while the monitor was idle, 40 s ago (idle period 30 s).
    fn idle_look(probe: Option<ProbeResult>) -> Snapshot {
        let mut s = running(probe);
        s.observed_at = Instant::now()
            .checked_sub(std::time::Duration::from_secs(40))
            .expect("instant");
        s.period = std::time::Duration::from_secs(30);
        s
    }

    /// What the woken monitor writes after `after`: a fresh look with `probe`.
    fn fresh_look_after(board: &Arc<Board>, after: Duration, probe: Option<ProbeResult>) {
        let board = Arc::clone(board);
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            board.update("web", |s| {
                s.observed_at = Instant::now();
                s.period = std::time::Duration::from_secs(1);
                s.probe = probe;
            });
        });
    }

    #[tokio::test(start_paused = true)]
    async fn health_after_an_idle_spell_answers_from_a_fresh_look_not_503() {
        let f = fixture(false).await;
        // Healthy app, last looked at while idle: the request waits for the woken monitor's look.
        f.board.set("web", idle_look(healthy()));
        fresh_look_after(&f.board, Duration::from_millis(300), healthy());
        let (code, _, body) = call(&f.app, get_req("/health")).await;
        assert_eq!(code, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
        f.board.set("web", idle_look(healthy()));
        fresh_look_after(&f.board, Duration::from_millis(300), healthy());
        let (code, _, _) = call(&f.app, get_req("/health/web")).await;
        assert_eq!(code, StatusCode::OK);

        // An app that hung while nobody watched: the fresh look times out, and that is the answer.
        f.board.set("web", idle_look(healthy()));
        fresh_look_after(&f.board, Duration::from_secs(2), Some(ProbeResult::Timeout));
        let (code, _, body) = call(&f.app, get_req("/health/web")).await;
        assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            json_of(&body)["detail"],
            "no answer within the probe timeout"
        );

        // No fresh look at all within the limit (the monitor itself is stuck): still 503, saying why.
        f.board.set("web", idle_look(healthy()));
        let (code, _, body) = call(&f.app, get_req("/health/web")).await;
        assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            json_of(&body)["detail"]
                .as_str()
                .is_some_and(|d| d.starts_with("stale:")),
            "{}",
            String::from_utf8_lossy(&body)
        );
    }

    #[tokio::test]
    async fn health_without_objects_waits_for_the_first_sync() {
        let f = fixture(false).await;
        f.shared.objects.write().await.clear();
        let (code, _, _) = call(&f.app, get_req("/health")).await;
        assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE, "nothing loaded yet");
        f.shared.first_sync_done.store(true, Ordering::Relaxed);
        let (code, _, body) = call(&f.app, get_req("/health")).await;
        assert_eq!(code, StatusCode::OK, "synced, nothing to run");
        assert_eq!(json_of(&body)["objects"], serde_json::json!({}));
    }

    #[tokio::test]
    async fn health_unknown_name_is_404_json() {
        let f = fixture(false).await;
        let (code, headers, body) = call(&f.app, get_req("/health/nope")).await;
        assert_eq!(code, StatusCode::NOT_FOUND);
        assert_eq!(headers[header::CONTENT_TYPE], "application/json");
        assert!(json_of(&body)["error"].as_str().is_some());
    }

    #[tokio::test]
    async fn livez_and_readyz() {
        let f = fixture(false).await;
        let (code, _, body) = call(&f.app, get_req("/livez")).await;
        assert_eq!(
            (code, body.as_slice()),
            (StatusCode::OK, b"ok\n".as_slice())
        );
        let (code, _, body) = call(&f.app, get_req("/readyz")).await;
        assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(json_of(&body)["ready"], false);
        f.shared.first_sync_done.store(true, Ordering::Relaxed);
        let (code, _, _) = call(&f.app, get_req("/readyz")).await;
        assert_eq!(
            code,
            StatusCode::SERVICE_UNAVAILABLE,
            "engine not reachable yet"
        );
        f.shared.engine_reachable.store(true, Ordering::Relaxed);
        let (code, _, body) = call(&f.app, get_req("/readyz")).await;
        assert_eq!(code, StatusCode::OK);
        assert_eq!(json_of(&body)["ready"], true);
    }

    #[tokio::test]
    async fn metrics_are_openmetrics_with_help() {
        let f = fixture(false).await;
        f.shared.metrics.set_ready("web", true);
        let (code, headers, body) = call(&f.app, get_req("/metrics")).await;
        assert_eq!(code, StatusCode::OK);
        assert_eq!(headers[header::CONTENT_TYPE], OPENMETRICS_CONTENT_TYPE);
        let text = String::from_utf8(body).expect("utf-8");
        assert!(text.contains("# HELP dockop_ready "), "{text}");
        assert!(text.contains("dockop_ready{name=\"web\"} 1"), "{text}");
        assert!(text.ends_with("# EOF\n"));
    }

    #[tokio::test]
    async fn control_endpoints_off_without_secrets() {
        let f = fixture(false).await;
        let auth = [("authorization", "Bearer anything")];
        for (req, what) in [
            (post_req("/reconcile/web", &auth, b""), "reconcile"),
            (
                axum::http::Request::get("/status")
                    .header("authorization", "Bearer anything")
                    .body(Body::empty())
                    .expect("req"),
                "status",
            ),
            (
                post_req(
                    "/hooks/git",
                    &[(
                        "x-hub-signature-256",
                        &format!("sha256={}", sign(HOOK, b"{}")),
                    )],
                    b"{}",
                ),
                "hook",
            ),
        ] {
            let (code, _, _) = call(&f.app, req).await;
            assert_eq!(code, StatusCode::NOT_FOUND, "{what}");
        }
        // Open endpoints stay open.
        for uri in ["/metrics", "/health", "/livez"] {
            let (code, _, _) = call(&f.app, get_req(uri)).await;
            assert_eq!(code, StatusCode::OK, "{uri}");
        }
    }

    #[tokio::test]
    async fn reconcile_needs_the_token() {
        let mut f = fixture(true).await;
        let (code, headers, _) = call(&f.app, post_req("/reconcile/web", &[], b"")).await;
        assert_eq!(code, StatusCode::UNAUTHORIZED);
        assert!(headers.contains_key(header::WWW_AUTHENTICATE));
        for bad in [
            "Bearer wrong",
            "Bearer s3cret-token-",
            "Bearer s3cret-toke",
            "s3cret-token",
        ] {
            let (code, _, _) = call(
                &f.app,
                post_req("/reconcile/web", &[("authorization", bad)], b""),
            )
            .await;
            assert_eq!(code, StatusCode::UNAUTHORIZED, "{bad}");
        }
        assert!(f.rx.try_recv().is_err(), "no trigger without the token");
        let auth = [("authorization", "Bearer s3cret-token")];
        // Unknown names: 404 (after auth, so names are not revealed to strangers).
        let (code, _, _) = call(&f.app, post_req("/reconcile/nope", &auth, b"")).await;
        assert_eq!(code, StatusCode::NOT_FOUND);
        let (code, _, body) = call(&f.app, post_req("/reconcile/web", &auth, b"")).await;
        assert_eq!(code, StatusCode::ACCEPTED);
        assert_eq!(json_of(&body)["object"], "web");
        assert_eq!(f.rx.try_recv().ok(), Some(Trigger::Object("web".into())));
        // GET is not a reconcile.
        let (code, _, _) = call(&f.app, get_req("/reconcile/web")).await;
        assert_eq!(code, StatusCode::METHOD_NOT_ALLOWED);
    }

    #[tokio::test]
    async fn status_is_status_json_behind_the_token() {
        let f = fixture(true).await;
        let (code, _, _) = call(&f.app, get_req("/status")).await;
        assert_eq!(code, StatusCode::UNAUTHORIZED);
        let req = axum::http::Request::get("/status")
            .header("authorization", format!("Bearer {TOKEN}"))
            .body(Body::empty())
            .expect("req");
        let (code, _, body) = call(&f.app, req).await;
        assert_eq!(code, StatusCode::OK);
        let expected = format!(
            "{}\n",
            serde_json::to_string_pretty(&f.shared.store.list()).expect("json")
        );
        assert_eq!(String::from_utf8(body).expect("utf-8"), expected);
    }

    #[tokio::test]
    async fn github_signature() {
        let mut f = fixture(true).await;
        let body = br#"{"ref":"refs/heads/main"}"#;
        let good = format!("sha256={}", sign(HOOK, body));
        let (code, _, _) = call(
            &f.app,
            post_req(
                "/hooks/git",
                &[("x-hub-signature-256", &good), ("x-github-event", "push")],
                body,
            ),
        )
        .await;
        assert_eq!(code, StatusCode::ACCEPTED);
        assert_eq!(f.rx.try_recv().ok(), Some(Trigger::Source));
        let wrong_key = format!("sha256={}", sign("other", body));
        let no_prefix = sign(HOOK, body);
        let tampered_sig = format!("sha256={}", sign(HOOK, b"{}"));
        for bad in [
            wrong_key.as_str(),
            no_prefix.as_str(),
            tampered_sig.as_str(),
            "sha256=zz",
            "",
        ] {
            let (code, _, _) = call(
                &f.app,
                post_req("/hooks/git", &[("x-hub-signature-256", bad)], body),
            )
            .await;
            assert_eq!(code, StatusCode::UNAUTHORIZED, "{bad:?}");
        }
        let (code, _, _) = call(&f.app, post_req("/hooks/git", &[], body)).await;
        assert_eq!(code, StatusCode::UNAUTHORIZED, "no signature");
        assert!(f.rx.try_recv().is_err(), "no trigger from a bad signature");
        // A ping is acknowledged without a fetch.
        let (code, _, _) = call(
            &f.app,
            post_req(
                "/hooks/git",
                &[("x-hub-signature-256", &good), ("x-github-event", "ping")],
                body,
            ),
        )
        .await;
        assert_eq!(code, StatusCode::OK);
        assert!(f.rx.try_recv().is_err());
    }

    #[tokio::test]
    async fn gitea_signature() {
        let mut f = fixture(true).await;
        let body = br#"{"ref":"refs/heads/main","after":"abc"}"#;
        let good = sign(HOOK, body);
        let (code, _, _) = call(
            &f.app,
            post_req(
                "/hooks/git",
                &[("x-gitea-signature", &good), ("x-gitea-event", "push")],
                body,
            ),
        )
        .await;
        assert_eq!(code, StatusCode::ACCEPTED);
        assert_eq!(f.rx.try_recv().ok(), Some(Trigger::Source));
        let upper = good.to_uppercase();
        let (code, _, _) = call(
            &f.app,
            post_req("/hooks/git", &[("x-gitea-signature", &upper)], body),
        )
        .await;
        assert_eq!(code, StatusCode::ACCEPTED, "hex case does not matter");
        assert_eq!(f.rx.try_recv().ok(), Some(Trigger::Source));
        let (code, _, _) = call(
            &f.app,
            post_req(
                "/hooks/git",
                &[("x-gitea-signature", &sign("nope", body))],
                body,
            ),
        )
        .await;
        assert_eq!(code, StatusCode::UNAUTHORIZED);
        let (code, _, _) = call(
            &f.app,
            post_req(
                "/hooks/git",
                &[("x-gitea-signature", &good)],
                b"{\"ref\":\"x\"}",
            ),
        )
        .await;
        assert_eq!(code, StatusCode::UNAUTHORIZED, "body changed after signing");
        assert!(f.rx.try_recv().is_err());
    }

    #[tokio::test]
    async fn webhook_body_limit() {
        let f = fixture(true).await;
        let body = vec![b'a'; WEBHOOK_BODY_LIMIT + 1];
        let sig = format!("sha256={}", sign(HOOK, &body));
        let (code, _, _) = call(
            &f.app,
            post_req("/hooks/git", &[("x-hub-signature-256", &sig)], &body),
        )
        .await;
        assert_eq!(code, StatusCode::PAYLOAD_TOO_LARGE);
    }

    #[tokio::test]
    async fn webhook_replay_is_ignored() {
        let mut f = fixture(true).await;
        let body = br#"{"ref":"refs/heads/main"}"#;
        let sig = format!("sha256={}", sign(HOOK, body));
        let hook = |id: &'static str, header: &'static str| {
            post_req(
                "/hooks/git",
                &[("x-hub-signature-256", &sig), (header, id)],
                body,
            )
        };
        let (code, _, _) = call(&f.app, hook("d-1", "x-github-delivery")).await;
        assert_eq!(code, StatusCode::ACCEPTED);
        assert_eq!(f.rx.try_recv().ok(), Some(Trigger::Source));
        let (code, _, resp) = call(&f.app, hook("d-1", "x-github-delivery")).await;
        assert_eq!(code, StatusCode::OK);
        assert_eq!(json_of(&resp)["duplicate"], true);
        assert!(f.rx.try_recv().is_err(), "a replay triggers nothing");
        let (code, _, _) = call(&f.app, hook("d-2", "x-gitea-delivery")).await;
        assert_eq!(code, StatusCode::ACCEPTED);
        let (code, _, _) = call(&f.app, hook("d-2", "x-gitea-delivery")).await;
        assert_eq!(code, StatusCode::OK);
    }

    #[test]
    fn recent_ids_are_bounded() {
        let mut ids = RecentIds::new(2);
        assert!(ids.insert("a"));
        assert!(!ids.insert("a"));
        assert!(ids.insert("b"));
        assert!(ids.insert("c"), "a third id: the oldest is forgotten");
        assert!(ids.insert("a"), "forgotten");
        assert!(!ids.insert("c"));
        assert_eq!(ids.order.len(), 2);
        assert_eq!(ids.seen.len(), 2);
    }

    #[tokio::test]
    async fn unknown_path_is_404() {
        let f = fixture(true).await;
        let (code, _, body) = call(&f.app, get_req("/nope")).await;
        assert_eq!(code, StatusCode::NOT_FOUND);
        assert_eq!(json_of(&body)["error"], "not found");
    }

    #[test]
    fn secret_file_trims_one_newline_and_refuses_empty() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("s");
        std::fs::write(&p, "abc\r\n").expect("write");
        assert_eq!(Secret::from_file(&p).expect("secret").0, b"abc");
        std::fs::write(&p, "abc\n").expect("write");
        assert_eq!(Secret::from_file(&p).expect("secret").0, b"abc");
        std::fs::write(&p, "\n").expect("write");
        assert!(Secret::from_file(&p).is_err());
        let e = Secret::from_file(&dir.path().join("missing")).expect_err("missing");
        assert!(matches!(e, HttpError::Secret { .. }));
        assert_eq!(format!("{:?}", Secret::new("abc")), "Secret([redacted])");
    }

    #[test]
    fn token_check() {
        let t = TokenCheck::new(&Secret::new(TOKEN));
        assert!(t.matches(TOKEN.as_bytes()));
        assert!(!t.matches(b""));
        assert!(!t.matches(b"s3cret-tokem"));
    }

    /// The monitor against the fake engine and a scripted app, on a paused clock: `/health` follows the
    /// app, and every answer is immediate, also while the app hangs.
    #[tokio::test(start_paused = true)]
    async fn monitor_probes_and_health_stays_fast_when_the_app_hangs() {
        use std::sync::atomic::AtomicU8;
        // 0 healthy, 1 answers 500, 2 hangs.
        let mode = Arc::new(AtomicU8::new(0));
        let m2 = Arc::clone(&mode);
        let script: monitor::Script = Arc::new(move |_, _| match m2.load(Ordering::Relaxed) {
            0 => (
                Duration::ZERO,
                crate::health::judge(200, br#"{"healthy":true,"version":"7"}"#),
            ),
            1 => (
                Duration::ZERO,
                crate::health::judge(500, br#"{"healthy":false}"#),
            ),
            _ => (Duration::from_secs(30), ProbeResult::Timeout),
        });
        let port = 8080;
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("store");
        let engine = FakeEngine::new();
        {
            let mut st = engine.state();
            st.containers.insert(
                "c1".into(),
                testing::info("c1", "mon")
                    .digest("sha256:d1")
                    .started_at("2026-01-01T00:00:00.123456789Z")
                    .ip("127.0.0.1")
                    .build(),
            );
        }
        let (shared, _rx) = Shared::new(store, Arc::new(engine), Arc::default());
        let obj = testing::object("mon")
            .health(
                "/global/health",
                port,
                "intervalSeconds: 1, timeoutSeconds: 5",
            )
            .build();
        shared
            .objects
            .write()
            .await
            .insert("mon".into(), Arc::new(obj));
        let board = Board::new();
        let mon = monitor::spawn_scripted(
            Arc::clone(&shared),
            Arc::clone(&board),
            monitor::Tuning::default(),
            script,
        );
        let app = router(HttpState::new(Arc::clone(&shared), board, None, None));

        let wait_for = |want: StatusCode, within: std::time::Duration| {
            let app = app.clone();
            async move {
                let deadline = Instant::now() + within;
                loop {
                    let started = Instant::now();
                    let (code, _, body) = call(&app, get_req("/health")).await;
                    assert!(
                        started.elapsed() < std::time::Duration::from_millis(200),
                        "/health took {:?}",
                        started.elapsed()
                    );
                    if code == want {
                        return json_of(&body);
                    }
                    assert!(
                        Instant::now() < deadline,
                        "no {want} within {within:?}: {body:?}"
                    );
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            }
        };
        let mut v = wait_for(StatusCode::OK, std::time::Duration::from_secs(3)).await;
        for _ in 0..20 {
            if !v["objects"]["mon"]["memoryUsageMb"].is_null() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            v = wait_for(StatusCode::OK, std::time::Duration::from_secs(1)).await;
        }
        assert_eq!(v["objects"]["mon"]["version"], "7");
        assert_eq!(v["objects"]["mon"]["digest"], "sha256:d1");
        assert_eq!(v["objects"]["mon"]["memoryUsageMb"], 10.0);
        assert!(
            shared
                .metrics
                .encode()
                .contains("dockop_ready{name=\"mon\"} 1")
        );

        let failures_before = shared
            .metrics
            .health_probe_failures_total
            .get_or_create(&vec![("name", "mon".to_owned())])
            .get();
        mode.store(1, Ordering::Relaxed);
        let v = wait_for(
            StatusCode::SERVICE_UNAVAILABLE,
            std::time::Duration::from_secs(3),
        )
        .await;
        assert_eq!(
            v["objects"]["mon"]["detail"],
            r#"HTTP 500: {"healthy":false}"#
        );
        assert!(
            shared
                .metrics
                .encode()
                .contains("dockop_ready{name=\"mon\"} 0")
        );
        let failures_after = shared
            .metrics
            .health_probe_failures_total
            .get_or_create(&vec![("name", "mon".to_owned())])
            .get();
        assert!(failures_after > failures_before);

        mode.store(0, Ordering::Relaxed);
        wait_for(StatusCode::OK, std::time::Duration::from_secs(3)).await;

        // The app hangs (probe timeout 5 s): 503 within two intervals, every answer still immediate.
        mode.store(2, Ordering::Relaxed);
        let hung_at = Instant::now();
        let v = wait_for(
            StatusCode::SERVICE_UNAVAILABLE,
            std::time::Duration::from_secs(4),
        )
        .await;
        assert!(hung_at.elapsed() < std::time::Duration::from_millis(3200));
        assert!(
            v["objects"]["mon"]["detail"]
                .as_str()
                .is_some_and(|d| d.contains("no answer")),
            "{v}"
        );
        // The supervisor drops `ready` too while the probe is still pending.
        tokio::time::sleep(std::time::Duration::from_millis(700)).await;
        assert!(
            shared
                .metrics
                .encode()
                .contains("dockop_ready{name=\"mon\"} 0")
        );

        // Object removed from the desired state: its gauges go.
        shared.objects.write().await.clear();
        tokio::time::sleep(std::time::Duration::from_millis(800)).await;
        assert!(
            !shared
                .metrics
                .encode()
                .contains("dockop_ready{name=\"mon\"}")
        );
        mon.abort();
    }
}
