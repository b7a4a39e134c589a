//! The engine-facing commands: `plan`, `apply`, `run`, `status`, `rollback`.

use std::process::ExitCode;

use crate::cli::{Command, GlobalArgs};

/// Runs one of the engine-facing commands.
pub async fn run(global: GlobalArgs, command: Command) -> ExitCode {
    let _ = (global, command);
    ExitCode::FAILURE
}
