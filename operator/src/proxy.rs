//! `dockop proxy`: the traffic switch for start-first objects, a separate long-running process that owns
//! their host ports. The operator is never in the data path: it only sets routes through the admin API
//! on a root-only unix socket (`<state-dir>/proxy.sock`, protocol in [`crate::switch`]); killing or
//! restarting `dockop run` leaves every connection alone, and the proxy serves its persisted routes again
//! after its own restart.
//!
//! Per request (HTTP/1.1, keep-alive): the route's current upstream is read when each request arrives, so
//! a keep-alive client moves to the new container at its next request without an error. Upstream
//! connections are pooled. A request with `Upgrade` (WebSocket) gets its own upstream connection and the
//! two upgraded streams are copied both ways. A switch (kamal-proxy's shape) swaps the upstream under a
//! lock, then waits until the previous upstream has no request or stream left, at most `drainSeconds`;
//! what is still open then (an SSE stream, a WebSocket) is cut, and the switch returns so the caller can
//! stop the old container.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::{Body, Bytes, Frame, Incoming};
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Request, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::{Mutex, Notify, watch};
use tokio::task::JoinHandle;

use crate::switch::{self, Route, RouteTable, SwitchReport};

/// Time to read a request head from a client.
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// Connections accepted at once at most, over every listener.
const MAX_CONNECTIONS: usize = 10_000;

type ProxyBody = UnsyncBoxBody<Bytes, hyper::Error>;
type Labels = Vec<(&'static str, String)>;

/// Why `dockop proxy` could not start or serve.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The state directory or the routes file.
    #[error("state: {0}")]
    State(#[source] std::io::Error),
    /// Another proxy answers on the socket.
    #[error("another dockop proxy already answers on {0}")]
    AlreadyRunning(PathBuf),
    /// Binding the admin socket or the metrics address.
    #[error("cannot listen on {what}: {source}")]
    Listen {
        /// What.
        what: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// Why a route could not be switched or removed; the admin API answers with this text.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    /// The route's upstream is not an IP address.
    #[error("upstream {upstream:?} is not an IP address: {source}")]
    Upstream {
        /// The text sent.
        upstream: String,
        /// Why.
        #[source]
        source: std::net::AddrParseError,
    },
    /// A listener of the route could not be bound (nothing was changed).
    #[error("cannot listen on {listen}: {source}")]
    Listen {
        /// `ADDR:PORT`.
        listen: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Writing the routes file failed (the route is live but would not survive a restart).
    #[error("cannot persist the routes: {0}")]
    Persist(#[source] std::io::Error),
    /// The blocking write of the routes file did not finish (a panic or shutdown).
    #[error("{0}")]
    Blocked(#[from] tokio::task::JoinError),
}

/// The proxy's metrics (prefix `dockop_proxy_`).
#[derive(Debug)]
struct ProxyMetrics {
    registry: Registry,
    requests: Family<Labels, Counter>,
    active: Family<Labels, Gauge>,
    switches: Family<Labels, Counter>,
    upstream_errors: Family<Labels, Counter>,
    duration: Family<Labels, Histogram, fn() -> Histogram>,
}

fn duration_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

impl ProxyMetrics {
    fn new() -> Self {
        let mut registry = Registry::with_prefix("dockop_proxy");
        let requests = Family::<Labels, Counter>::default();
        let active = Family::<Labels, Gauge>::default();
        let switches = Family::<Labels, Counter>::default();
        let upstream_errors = Family::<Labels, Counter>::default();
        let duration = Family::<Labels, Histogram, fn() -> Histogram>::new_with_constructor(
            duration_histogram as fn() -> Histogram,
        );
        registry.register(
            "requests",
            "Requests forwarded, by object and HTTP status",
            requests.clone(),
        );
        registry.register(
            "active_connections",
            "Requests and upgraded streams open now, by object",
            active.clone(),
        );
        registry.register("switches", "Route switches, by object", switches.clone());
        registry.register(
            "upstream_errors",
            "Requests the upstream could not answer (502), by object",
            upstream_errors.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Time to the response head, by object",
            duration.clone(),
        );
        ProxyMetrics {
            registry,
            requests,
            active,
            switches,
            upstream_errors,
            duration,
        }
    }
}

/// The proxy's metrics with one series each, encoded (for the test that checks documented names).
#[cfg(test)]
pub(crate) fn metrics_for_tests() -> String {
    let m = ProxyMetrics::new();
    let l = object("x");
    for c in [&m.requests, &m.switches, &m.upstream_errors] {
        c.get_or_create(&l).inc();
    }
    m.active.get_or_create(&l).set(1);
    m.duration.get_or_create(&l).observe(0.1);
    let mut out = String::new();
    let _ = encode(&mut out, &m.registry);
    out
}

fn object(name: &str) -> Labels {
    vec![("object", name.to_owned())]
}

/// One upstream of a route: the container that receives requests while it is current.
#[derive(Debug)]
struct Upstream {
    ip: IpAddr,
    container_id: String,
    /// Requests and streams open on it.
    open: AtomicU64,
    /// Notified whenever `open` drops.
    closed_one: Notify,
    /// Set at the drain deadline: every stream still open is cut.
    cut: watch::Sender<bool>,
}

impl Upstream {
    fn new(ip: IpAddr, container_id: String) -> Arc<Self> {
        Arc::new(Upstream {
            ip,
            container_id,
            open: AtomicU64::new(0),
            closed_one: Notify::new(),
            cut: watch::Sender::new(false),
        })
    }

    /// Resolves once the drain deadline has cut this upstream.
    fn cut_signal(&self) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        let mut rx = self.cut.subscribe();
        Box::pin(async move {
            let _ = rx.wait_for(|c| *c).await;
        })
    }
}

/// Counts one open request or stream on an upstream while it lives.
struct Open {
    upstream: Arc<Upstream>,
    active: Gauge,
}

impl Open {
    fn new(upstream: Arc<Upstream>, active: Gauge) -> Self {
        upstream.open.fetch_add(1, Ordering::SeqCst);
        active.inc();
        Open { upstream, active }
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.upstream.open.fetch_sub(1, Ordering::SeqCst);
        self.active.dec();
        self.upstream.closed_one.notify_waiters();
    }
}

/// A response body that keeps its upstream counted as open until the last byte, and ends when the
/// drain deadline cuts the upstream.
struct Guarded {
    inner: Incoming,
    cut: Pin<Box<dyn Future<Output = ()> + Send>>,
    _open: Open,
}

impl Body for Guarded {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        if self.cut.as_mut().poll(cx).is_ready() {
            return Poll::Ready(None);
        }
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// A route's metric handles, made once: the request path does no label lookups.
struct RouteMetrics {
    active: Gauge,
    ok: Counter,
    duration: Histogram,
    upstream_errors: Counter,
}

/// A route being served: its listeners and its current upstream.
struct Live {
    name: String,
    metrics: RouteMetrics,
    current: RwLock<Arc<Upstream>>,
    listeners: std::sync::Mutex<BTreeMap<switch::Listener, JoinHandle<()>>>,
    /// One switch at a time per route.
    switching: Mutex<()>,
}

impl Live {
    fn current(&self) -> Arc<Upstream> {
        match self.current.read() {
            Ok(g) => Arc::clone(&g),
            Err(p) => Arc::clone(&p.into_inner()),
        }
    }

    fn replace(&self, up: Arc<Upstream>) -> Arc<Upstream> {
        let mut g = match self.current.write() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        std::mem::replace(&mut *g, up)
    }

    fn stop_listeners(&self) {
        let mut l = match self.listeners.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        for (_, task) in std::mem::take(&mut *l) {
            task.abort();
        }
    }
}

/// The proxy's shared state.
struct Proxy {
    routes_path: PathBuf,
    table: Mutex<RouteTable>,
    live: RwLock<HashMap<String, Arc<Live>>>,
    client: Client<HttpConnector, Incoming>,
    metrics: ProxyMetrics,
    connections: Arc<tokio::sync::Semaphore>,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy")
            .field("routes_path", &self.routes_path)
            .finish_non_exhaustive()
    }
}

/// Runs `dockop proxy` until the process is stopped: serves the persisted routes, the admin socket in
/// `state_dir`, and `/livez` + `/metrics` on `metrics_listen`.
pub async fn run(state_dir: &Path, metrics_listen: &str) -> Result<(), ProxyError> {
    let socket = state_dir.join(switch::SOCKET_NAME);
    let routes_path = state_dir.join(switch::ROUTES_NAME);
    let table = {
        let (dir, path) = (state_dir.to_owned(), routes_path.clone());
        tokio::task::spawn_blocking(move || {
            std::fs::create_dir_all(&dir)?;
            switch::load_routes(&path)
        })
        .await
        .map_err(|e| ProxyError::State(std::io::Error::other(e)))?
        .map_err(ProxyError::State)?
    };
    let proxy = Proxy::new(routes_path);
    // Serve what was persisted before anything else: app traffic comes back first.
    for (name, route) in table.routes {
        if let Err(e) = Arc::clone(&proxy).switch(&name, route).await {
            tracing::error!(object = %name, "cannot serve the persisted route: {e}");
        }
    }
    let admin = bind_admin(&socket).await?;
    let metrics_listener =
        TcpListener::bind(metrics_listen)
            .await
            .map_err(|source| ProxyError::Listen {
                what: metrics_listen.to_owned(),
                source,
            })?;
    tracing::info!(socket = %socket.display(), metrics = %metrics_listen, "dockop proxy serving");
    // Routes, admin socket and metrics are bound: systemd (Type=notify) may start what needs them.
    crate::sdnotify::notify_logged(crate::sdnotify::State::Ready);
    let admin_app = axum::Router::new()
        .route("/routes", get(list_routes))
        .route(
            "/routes/{name}",
            get(get_route).put(put_route).delete(delete_route),
        )
        .with_state(Arc::clone(&proxy));
    let metrics_app = axum::Router::new()
        .route("/livez", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics_text))
        .with_state(Arc::clone(&proxy));
    let admin_task = tokio::spawn(async move { axum::serve(admin, admin_app).await });
    let metrics_task =
        tokio::spawn(async move { axum::serve(metrics_listener, metrics_app).await });
    tokio::select! {
        r = admin_task => tracing::error!("admin socket stopped: {r:?}"),
        r = metrics_task => tracing::error!("metrics listener stopped: {r:?}"),
        () = crate::signal::shutdown() => {
            crate::sdnotify::notify_logged(crate::sdnotify::State::Stopping);
            tracing::info!("stopping: open connections are closed");
        }
    }
    let _ = std::fs::remove_file(&socket);
    Ok(())
}

/// Binds the admin socket, root-only. A socket file nobody answers on is a leftover and replaced.
async fn bind_admin(socket: &Path) -> Result<tokio::net::UnixListener, ProxyError> {
    if tokio::net::UnixStream::connect(socket).await.is_ok() {
        return Err(ProxyError::AlreadyRunning(socket.to_owned()));
    }
    let _ = std::fs::remove_file(socket);
    let listen_err = |source| ProxyError::Listen {
        what: socket.display().to_string(),
        source,
    };
    let l = tokio::net::UnixListener::bind(socket).map_err(listen_err)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600)).map_err(listen_err)?;
    Ok(l)
}

impl Proxy {
    /// A proxy with no routes yet that persists them to `routes_path`.
    fn new(routes_path: PathBuf) -> Arc<Self> {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(5)));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        Arc::new(Proxy {
            routes_path,
            table: Mutex::new(RouteTable::default()),
            live: RwLock::new(HashMap::new()),
            client,
            metrics: ProxyMetrics::new(),
            connections: Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS)),
        })
    }

    /// Points `name` at `route`: binds new listeners, swaps the upstream, persists, drains the previous
    /// upstream (at most `drain_seconds`), then cuts what is left on it.
    async fn switch(self: Arc<Self>, name: &str, route: Route) -> Result<SwitchReport, RouteError> {
        let ip: IpAddr = route
            .upstream
            .parse()
            .map_err(|source| RouteError::Upstream {
                upstream: route.upstream.clone(),
                source,
            })?;
        let live = self.live_route(name, ip, &route.container_id);
        let _one = live.switching.lock().await;
        self.bind_listeners(&live, &route.listeners).await?;
        let previous = live.current();
        let changed = previous.ip != ip || previous.container_id != route.container_id;
        if changed {
            live.replace(Upstream::new(ip, route.container_id.clone()));
            self.metrics.switches.get_or_create(&object(name)).inc();
            tracing::info!(object = %name, from = %previous.ip, to = %ip, "switched");
        }
        {
            let mut table = self.table.lock().await;
            if table.routes.get(name) != Some(&route) {
                table.routes.insert(name.to_owned(), route.clone());
                self.persist(&table).await?;
            }
        }
        if !changed {
            return Ok(SwitchReport {
                previous: Some(previous.ip.to_string()),
                left_open: 0,
                drain_seconds: 0.0,
            });
        }
        let started = Instant::now();
        let deadline =
            tokio::time::Instant::now() + Duration::from_secs(u64::from(route.drain_seconds));
        loop {
            let waiting = previous.closed_one.notified();
            if previous.open.load(Ordering::SeqCst) == 0 {
                break;
            }
            tokio::select! {
                () = waiting => {},
                () = tokio::time::sleep_until(deadline) => break,
            }
        }
        let left_open = previous.open.load(Ordering::SeqCst);
        previous.cut.send_replace(true);
        Ok(SwitchReport {
            previous: Some(previous.ip.to_string()),
            left_open,
            drain_seconds: started.elapsed().as_secs_f64(),
        })
    }

    fn live_route(&self, name: &str, ip: IpAddr, container_id: &str) -> Arc<Live> {
        let mut g = match self.live.write() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        Arc::clone(g.entry(name.to_owned()).or_insert_with(|| {
            let labels = object(name);
            let mut ok = labels.clone();
            ok.push(("code", "200".to_owned()));
            Arc::new(Live {
                name: name.to_owned(),
                metrics: RouteMetrics {
                    active: self.metrics.active.get_or_create(&labels).clone(),
                    ok: self.metrics.requests.get_or_create(&ok).clone(),
                    duration: self.metrics.duration.get_or_create(&labels).clone(),
                    upstream_errors: self.metrics.upstream_errors.get_or_create(&labels).clone(),
                },
                current: RwLock::new(Upstream::new(ip, container_id.to_owned())),
                listeners: std::sync::Mutex::new(BTreeMap::new()),
                switching: Mutex::new(()),
            })
        }))
    }

    /// Makes the route's listeners exactly `wanted`: binds the new ones first (a bind failure changes
    /// nothing), then closes those no longer wanted.
    async fn bind_listeners(
        self: &Arc<Self>,
        live: &Arc<Live>,
        wanted: &[switch::Listener],
    ) -> Result<(), RouteError> {
        let have: Vec<switch::Listener> = match live.listeners.lock() {
            Ok(g) => g.keys().cloned().collect(),
            Err(p) => p.into_inner().keys().cloned().collect(),
        };
        let mut bound = Vec::new();
        for l in wanted.iter().filter(|l| !have.contains(l)) {
            let listener =
                TcpListener::bind(&l.listen)
                    .await
                    .map_err(|source| RouteError::Listen {
                        listen: l.listen.clone(),
                        source,
                    })?;
            bound.push((l.clone(), listener));
        }
        let mut g = match live.listeners.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        g.retain(|l, task| {
            let keep = wanted.contains(l);
            if !keep {
                task.abort();
            }
            keep
        });
        for (l, listener) in bound {
            let task = tokio::spawn(accept_loop(
                Arc::clone(self),
                Arc::clone(live),
                listener,
                l.container_port,
            ));
            g.insert(l, task);
        }
        Ok(())
    }

    /// Writes `table` to the routes file on a blocking thread.
    async fn persist(&self, table: &RouteTable) -> Result<(), RouteError> {
        let (path, snapshot) = (self.routes_path.clone(), table.clone());
        tokio::task::spawn_blocking(move || switch::save_routes(&path, &snapshot))
            .await?
            .map_err(RouteError::Persist)
    }

    async fn remove(&self, name: &str) -> Result<bool, RouteError> {
        let live = match self.live.write() {
            Ok(mut g) => g.remove(name),
            Err(p) => p.into_inner().remove(name),
        };
        if let Some(l) = &live {
            l.stop_listeners();
        }
        let mut table = self.table.lock().await;
        if table.routes.remove(name).is_some() {
            self.persist(&table).await?;
        }
        Ok(live.is_some())
    }
}

async fn accept_loop(
    proxy: Arc<Proxy>,
    live: Arc<Live>,
    listener: TcpListener,
    container_port: u16,
) {
    loop {
        let Ok(permit) = Arc::clone(&proxy.connections).acquire_owned().await else {
            return;
        };
        let (stream, peer) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(object = %live.name, "accept: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let (proxy, live) = (Arc::clone(&proxy), Arc::clone(&live));
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let (proxy, live) = (Arc::clone(&proxy), Arc::clone(&live));
                async move {
                    Ok::<_, Infallible>(forward(&proxy, &live, container_port, peer, req).await)
                }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
            let _ = conn.await;
            drop(permit);
        });
    }
}

/// Hop-by-hop headers (RFC 9110 7.6.1): never forwarded.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let listed: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::try_from(n.trim()).ok())
        .collect();
    for n in listed {
        headers.remove(n);
    }
    for n in HOP_BY_HOP {
        headers.remove(*n);
    }
}

fn is_upgrade(req: &Request<Incoming>) -> bool {
    req.headers().contains_key(header::UPGRADE)
        && req
            .headers()
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| {
                v.split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
            })
}

fn plain(status: StatusCode, text: &str) -> hyper::Response<ProxyBody> {
    let mut r = hyper::Response::new(
        Full::new(Bytes::from(format!("{text}\n")))
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// Forwards one request to the route's current upstream.
async fn forward(
    proxy: &Proxy,
    live: &Live,
    container_port: u16,
    peer: SocketAddr,
    mut req: Request<Incoming>,
) -> hyper::Response<ProxyBody> {
    let started = Instant::now();
    let upstream = live.current();
    let open = Open::new(Arc::clone(&upstream), live.metrics.active.clone());
    let addr = SocketAddr::new(upstream.ip, container_port);
    let path = req
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    let forwarded_for = HeaderValue::try_from(peer.ip().to_string()).ok();
    let resp = if is_upgrade(&req) {
        upgrade(req, addr, &path, open, upstream).await
    } else {
        let uri = Uri::try_from(format!("http://{addr}{path}"));
        match uri {
            Err(_) => plain(StatusCode::BAD_REQUEST, "bad request target"),
            Ok(uri) => {
                *req.uri_mut() = uri;
                strip_hop_by_hop(req.headers_mut());
                if let Some(v) = forwarded_for {
                    req.headers_mut().append("x-forwarded-for", v);
                }
                match proxy.client.request(req).await {
                    Ok(resp) => {
                        let cut = upstream.cut_signal();
                        let (mut parts, body) = resp.into_parts();
                        strip_hop_by_hop(&mut parts.headers);
                        let body = Guarded {
                            inner: body,
                            cut,
                            _open: open,
                        };
                        hyper::Response::from_parts(parts, body.boxed_unsync())
                    }
                    Err(e) => {
                        live.metrics.upstream_errors.inc();
                        tracing::debug!(object = %live.name, upstream = %addr, "upstream: {e}");
                        plain(StatusCode::BAD_GATEWAY, "upstream unavailable")
                    }
                }
            }
        }
    };
    if resp.status() == StatusCode::OK {
        live.metrics.ok.inc();
    } else {
        let mut code = object(&live.name);
        code.push(("code", resp.status().as_u16().to_string()));
        proxy.metrics.requests.get_or_create(&code).inc();
    }
    live.metrics
        .duration
        .observe(started.elapsed().as_secs_f64());
    resp
}

/// An `Upgrade` request (WebSocket): its own upstream connection, then both upgraded streams copied
/// until either side ends or the drain deadline cuts the upstream.
async fn upgrade(
    mut req: Request<Incoming>,
    addr: SocketAddr,
    path: &str,
    open: Open,
    upstream: Arc<Upstream>,
) -> hyper::Response<ProxyBody> {
    let exchange = async {
        let stream = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| e.to_string())?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn.with_upgrades());
        let mut up_req = Request::builder()
            .method(req.method().clone())
            .uri(path)
            .body(Empty::<Bytes>::new())
            .map_err(|e| e.to_string())?;
        *up_req.headers_mut() = req.headers().clone();
        sender.send_request(up_req).await.map_err(|e| e.to_string())
    };
    let mut resp = match exchange.await {
        Ok(r) => r,
        Err(e) => {
            tracing::debug!(upstream = %addr, "upgrade: {e}");
            return plain(StatusCode::BAD_GATEWAY, "upstream unavailable");
        }
    };
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        let (parts, body) = resp.into_parts();
        let body = Guarded {
            inner: body,
            cut: upstream.cut_signal(),
            _open: open,
        };
        return hyper::Response::from_parts(parts, body.boxed_unsync());
    }
    let upstream_side = hyper::upgrade::on(&mut resp);
    let client_side = hyper::upgrade::on(&mut req);
    let cut = upstream.cut_signal();
    tokio::spawn(async move {
        let _open = open;
        if let (Ok(a), Ok(b)) = tokio::join!(client_side, upstream_side) {
            let (mut a, mut b) = (TokioIo::new(a), TokioIo::new(b));
            tokio::select! {
                _ = tokio::io::copy_bidirectional(&mut a, &mut b) => {},
                () = cut => {},
            }
        }
    });
    let mut out = hyper::Response::new(
        Empty::<Bytes>::new()
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *out.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    *out.headers_mut() = resp.headers().clone();
    out
}

fn json_error(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(serde_json::json!({ "error": message }))).into_response()
}

async fn list_routes(State(p): State<Arc<Proxy>>) -> Response {
    axum::Json(p.table.lock().await.clone()).into_response()
}

async fn get_route(State(p): State<Arc<Proxy>>, UrlPath(name): UrlPath<String>) -> Response {
    match p.table.lock().await.routes.get(&name) {
        Some(r) => axum::Json(r.clone()).into_response(),
        None => json_error(StatusCode::NOT_FOUND, "no such route"),
    }
}

async fn put_route(
    State(p): State<Arc<Proxy>>,
    UrlPath(name): UrlPath<String>,
    body: axum::body::Bytes,
) -> Response {
    let route: Route = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return json_error(StatusCode::BAD_REQUEST, &format!("bad route: {e}")),
    };
    match p.switch(&name, route).await {
        Ok(report) => axum::Json(report).into_response(),
        Err(e) => json_error(StatusCode::CONFLICT, &e.to_string()),
    }
}

async fn delete_route(State(p): State<Arc<Proxy>>, UrlPath(name): UrlPath<String>) -> Response {
    match p.remove(&name).await {
        Ok(true) => StatusCode::NO_CONTENT.into_response(),
        Ok(false) => json_error(StatusCode::NOT_FOUND, "no such route"),
        Err(e) => json_error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

async fn metrics_text(State(p): State<Arc<Proxy>>) -> Response {
    let mut out = String::new();
    match encode(&mut out, &p.metrics.registry) {
        Ok(()) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            out,
        )
            .into_response(),
        Err(e) => json_error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// An upstream on `ip:port` that names itself: `/v` answers its name, `/sse` streams a line every
    /// 50 ms forever, `/ws` upgrades and echoes.
    async fn upstream(ip: &str, port: u16, me: &'static str) -> u16 {
        let l = TcpListener::bind((ip, port)).await.expect("bind upstream");
        let port = l.local_addr().expect("addr").port();
        tokio::spawn(async move {
            loop {
                let Ok((s, _)) = l.accept().await else { return };
                tokio::spawn(async move {
                    let svc =
                        hyper::service::service_fn(move |mut req: Request<Incoming>| async move {
                            let resp: hyper::Response<ProxyBody> = match req.uri().path() {
                                "/sse" => {
                                    let (tx, rx) = tokio::sync::mpsc::channel::<
                                        Result<Frame<Bytes>, hyper::Error>,
                                    >(4);
                                    tokio::spawn(async move {
                                        loop {
                                            if tx
                                                .send(Ok(Frame::data(Bytes::from_static(
                                                    b"data: tick\n\n",
                                                ))))
                                                .await
                                                .is_err()
                                            {
                                                return;
                                            }
                                            tokio::time::sleep(Duration::from_millis(50)).await;
                                        }
                                    });
                                    let frames =
                                        futures_util::stream::unfold(rx, |mut rx| async move {
                                            rx.recv().await.map(|f| (f, rx))
                                        });
                                    let body = http_body_util::StreamBody::new(frames);
                                    hyper::Response::new(body.boxed_unsync())
                                }
                                "/ws" => {
                                    let up = hyper::upgrade::on(&mut req);
                                    tokio::spawn(async move {
                                        if let Ok(io) = up.await {
                                            let mut io = TokioIo::new(io);
                                            let mut buf = [0u8; 64];
                                            while let Ok(n) = io.read(&mut buf).await {
                                                if n == 0 || io.write_all(&buf[..n]).await.is_err()
                                                {
                                                    return;
                                                }
                                            }
                                        }
                                    });
                                    let mut r = hyper::Response::new(
                                        Empty::<Bytes>::new()
                                            .map_err(|n| match n {})
                                            .boxed_unsync(),
                                    );
                                    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
                                    r.headers_mut().insert(
                                        header::UPGRADE,
                                        HeaderValue::from_static("websocket"),
                                    );
                                    r.headers_mut().insert(
                                        header::CONNECTION,
                                        HeaderValue::from_static("upgrade"),
                                    );
                                    r
                                }
                                _ => plain(StatusCode::OK, me),
                            };
                            Ok::<_, Infallible>(resp)
                        });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(s), svc)
                        .with_upgrades()
                        .await;
                });
            }
        });
        port
    }

    fn route(listen: &str, ip: &str, id: &str, port: u16, drain: u32) -> Route {
        Route {
            listeners: vec![switch::Listener {
                listen: listen.to_owned(),
                container_port: port,
            }],
            upstream: ip.to_owned(),
            container_id: id.to_owned(),
            drain_seconds: drain,
        }
    }

    async fn get(
        sender: &mut hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
        path: &str,
    ) -> String {
        let req = Request::get(path)
            .header(header::HOST, "app")
            .body(Empty::<Bytes>::new())
            .expect("request");
        let resp = sender.send_request(req).await.expect("answer");
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        String::from_utf8_lossy(&body).trim().to_owned()
    }

    #[tokio::test]
    async fn keep_alive_moves_per_request_streams_drain_then_are_cut_websockets_pass() {
        let dir = tempfile::tempdir().expect("dir");
        let port = upstream("127.0.0.1", 0, "A").await;
        upstream("127.0.0.2", port, "B").await;
        let front = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let listen = front.local_addr().expect("addr").to_string();
        drop(front);
        let proxy = Proxy::new(dir.path().join(switch::ROUTES_NAME));
        Arc::clone(&proxy)
            .switch("web", route(&listen, "127.0.0.1", "a", port, 1))
            .await
            .expect("route");

        // One keep-alive connection: its next request after the switch goes to the new upstream.
        let stream = tokio::net::TcpStream::connect(&listen)
            .await
            .expect("connect");
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("handshake");
        tokio::spawn(conn);
        assert_eq!(get(&mut sender, "/v").await, "A");

        // An SSE stream opened on A stays on A through the switch, until the drain deadline cuts it.
        let sse = tokio::net::TcpStream::connect(&listen)
            .await
            .expect("connect");
        let (mut sse_sender, sse_conn) = hyper::client::conn::http1::handshake(TokioIo::new(sse))
            .await
            .expect("handshake");
        tokio::spawn(sse_conn);
        let resp = sse_sender
            .send_request(
                Request::get("/sse")
                    .header(header::HOST, "app")
                    .body(Empty::<Bytes>::new())
                    .expect("req"),
            )
            .await
            .expect("sse answer");
        let mut sse_body = resp.into_body();
        assert!(sse_body.frame().await.is_some(), "the stream flows");

        // A WebSocket to A: upgraded and echoed.
        let mut ws = tokio::net::TcpStream::connect(&listen)
            .await
            .expect("connect");
        ws.write_all(
            b"GET /ws HTTP/1.1\r\nHost: app\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
        )
        .await
        .expect("write");
        let mut head = vec![0u8; 1024];
        let n = ws.read(&mut head).await.expect("read");
        assert!(
            String::from_utf8_lossy(&head[..n]).starts_with("HTTP/1.1 101"),
            "{}",
            String::from_utf8_lossy(&head[..n])
        );
        ws.write_all(b"ping").await.expect("write");
        let mut echo = [0u8; 4];
        ws.read_exact(&mut echo).await.expect("echo");
        assert_eq!(&echo, b"ping");

        let t = Instant::now();
        let report = Arc::clone(&proxy)
            .switch("web", route(&listen, "127.0.0.2", "b", port, 1))
            .await
            .expect("switch");
        assert_eq!(report.previous.as_deref(), Some("127.0.0.1"));
        assert_eq!(
            report.left_open, 2,
            "the stream and the websocket were still open at the deadline"
        );
        assert!(
            t.elapsed() >= Duration::from_millis(900),
            "waited for the drain"
        );

        assert_eq!(
            get(&mut sender, "/v").await,
            "B",
            "same connection, next request: new upstream"
        );
        // Cut at the deadline: the stream ends, the websocket closes.
        let ended = tokio::time::timeout(Duration::from_secs(2), async {
            while let Some(f) = sse_body.frame().await {
                if f.is_err() {
                    break;
                }
            }
        })
        .await;
        assert!(ended.is_ok(), "the SSE stream was cut");
        let closed = tokio::time::timeout(Duration::from_secs(2), ws.read(&mut echo)).await;
        assert!(
            matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
            "the websocket was closed: {closed:?}"
        );

        // Persisted: a new proxy on the same routes file serves B.
        let table = switch::load_routes(&dir.path().join(switch::ROUTES_NAME)).expect("routes");
        assert_eq!(table.routes["web"].upstream, "127.0.0.2");
    }

    #[test]
    fn hop_by_hop_headers_are_not_forwarded() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-private"),
        );
        h.insert("x-private", HeaderValue::from_static("1"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-kept"));
    }
}
