//! The HTTP server of `dockop run`: `/metrics`, `/health`, `/health/{name}`, `/livez`, `/readyz`,
//! `/status`, `POST /hooks/git`, `POST /reconcile/{name}`.
//!
//! STUB: being written. Interface: `serve(config, shared)`.

use std::path::PathBuf;
use std::sync::Arc;

use crate::controller::shared::Shared;

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
}

/// Binds and serves until the process ends. Returns once bound (the server runs on a spawned task).
pub async fn serve(config: HttpConfig, shared: Arc<Shared>) -> Result<tokio::task::JoinHandle<()>, HttpError> {
    let _ = (config, shared);
    Ok(tokio::spawn(async {}))
}
