//! The shutdown signal of the long-running commands, `dockop run` (the controller) and `dockop proxy`:
//! one small module below both, so neither depends on the other for it.

use tokio::signal::unix::{Signal, SignalKind, signal};

/// Resolves on the first SIGTERM or SIGINT. A signal whose handler cannot be installed is left out (with
/// a warning); when neither can be, this never resolves rather than shutting down at once.
pub async fn shutdown() {
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    match (term, int) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        (Ok(mut one), Err(e)) | (Err(e), Ok(mut one)) => {
            tracing::warn!(
                "cannot listen for one of SIGTERM and SIGINT: {e}; shutting down on the other"
            );
            recv(&mut one).await;
        }
        (Err(e), Err(_)) => {
            tracing::warn!("cannot listen for SIGTERM or SIGINT: {e}; stop dockop with SIGKILL");
            std::future::pending::<()>().await;
        }
    }
}

async fn recv(s: &mut Signal) {
    let _ = s.recv().await;
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    /// SIGTERM to ourselves ends the wait; nothing else does. (The handler stays installed, so the test
    /// process is not terminated.)
    #[tokio::test]
    async fn resolves_on_sigterm() {
        let wait = tokio::spawn(super::shutdown());
        // The task installs its handlers at its first poll (this test runs on one thread).
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert!(!wait.is_finished(), "no signal yet");
        rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::TERM)
            .expect("kill");
        tokio::time::timeout(Duration::from_secs(5), wait)
            .await
            .expect("resolves")
            .expect("task");
    }
}
