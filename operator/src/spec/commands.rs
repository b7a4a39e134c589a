//! The spec-only commands: `validate`, `schema`, `hash-password`.
//!
//! STUB: being written.

use std::path::PathBuf;
use std::process::ExitCode;

/// `dockop validate PATH...`: exit 0 when valid (warnings printed), 1 when not.
pub fn validate(paths: &[PathBuf]) -> ExitCode {
    let _ = paths;
    ExitCode::SUCCESS
}

/// `dockop schema [--crd]`: print the JSON Schema, or a Kubernetes CRD.
pub fn schema(crd: bool) -> ExitCode {
    let _ = crd;
    ExitCode::SUCCESS
}

/// `dockop hash-password`: read a password from stdin (no echo on a terminal), print a yescrypt hash.
pub fn hash_password() -> ExitCode {
    ExitCode::SUCCESS
}
