//! dockop: a Kubernetes-style operator for plain Docker hosts. Desired state in YAML, a reconcile loop
//! against the Docker engine, health-gated updates with preflight and automatic rollback.

#![warn(missing_docs)]

pub mod backoff;
pub mod child;
pub mod cli;
pub mod controller;
pub mod convert;
pub mod desired;
pub mod engine;
pub mod execute;
pub mod export;
pub mod fault;
pub mod fleet;
pub mod health;
pub mod http;
pub mod lock;
pub mod memory;
pub mod monitor;
pub mod notify;
pub mod observe;
pub mod plan;
pub mod proxy;
pub mod reconcile;
pub mod sdnotify;
pub mod shared;
pub mod signal;
pub mod source;
pub mod spec;
pub mod status;
pub mod switch;
pub mod telemetry;
#[cfg(test)]
pub(crate) mod testing;
pub mod users;
pub mod valuefile;
