//! Graceful shutdown: the signal future and the `Shutdown` handle (cancellation + the
//! tracker of every task that must finish before the process exits).

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
pub async fn signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler installs");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

/// Cancellation plus the set of tasks to wait for.
#[derive(Clone, Default)]
pub struct Shutdown {
    /// Cancelled when the server starts shutting down (or `/quit` asks it to).
    pub token: CancellationToken,
    /// Connection and session tasks.
    pub tracker: TaskTracker,
}

impl Shutdown {
    /// Waits for tracked tasks for at most `grace`; true when they all finished.
    pub async fn drain(&self, grace: Duration) -> bool {
        self.tracker.close();
        tokio::time::timeout(grace, self.tracker.wait())
            .await
            .is_ok()
    }
}
