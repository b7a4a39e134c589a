//! One `dockop run` per state directory: an exclusive lock on `<state-dir>/dockop.lock`, held for the
//! life of the process (the kernel releases it when the process dies, so a crash leaves no stale lock).

use std::fs::{File, OpenOptions, TryLockError};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Name of the lock file in the state directory.
pub const LOCK_FILE: &str = "dockop.lock";

/// The held lock; released on drop.
#[derive(Debug)]
pub struct StateLock {
    _file: File,
    path: PathBuf,
}

impl StateLock {
    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Why the lock was not taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another process holds it.
    #[error(
        "another dockop is already running on the state directory {dir} (it holds the lock {path})\n  fix: stop the other `dockop run`, or give this one its own --state-dir"
    )]
    Held {
        /// State directory.
        dir: String,
        /// Lock file.
        path: String,
    },
    /// The file could not be opened or locked.
    #[error(
        "cannot lock {path}: {message}\n  fix: pass --state-dir DIR pointing to a writable directory"
    )]
    Io {
        /// Lock file.
        path: String,
        /// Detail.
        message: String,
    },
}

/// Takes the lock of `state_dir` without waiting.
pub fn acquire(state_dir: &Path) -> Result<StateLock, LockError> {
    let path = state_dir.join(LOCK_FILE);
    let io = |e: std::io::Error| LockError::Io {
        path: path.display().to_string(),
        message: e.to_string(),
    };
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(io)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            return Err(LockError::Held {
                dir: state_dir.display().to_string(),
                path: path.display().to_string(),
            });
        }
        Err(TryLockError::Error(e)) => return Err(io(e)),
    }
    // For people: who holds it.
    let _ = file.set_len(0);
    let _ = writeln!(file, "{}", std::process::id());
    Ok(StateLock { _file: file, path })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_is_refused_with_the_fix() {
        let dir = tempfile::tempdir().expect("tmp");
        let held = acquire(dir.path()).expect("first");
        let err = acquire(dir.path()).expect_err("second");
        let msg = err.to_string();
        assert!(
            msg.contains("dockop.lock") && msg.contains("--state-dir"),
            "{msg}"
        );
        drop(held);
        acquire(dir.path()).expect("free again");
    }
}
