//! Owned background work: every task the server starts after start-up.
//!
//! Two kinds run here, both tracked by one [`TaskTracker`] so shutdown can
//! wait for them:
//! - **loops** (the Redis trust check, the repair of a Redis that fell
//!   behind) run until [`Background::shutdown`] cancels them;
//! - **jobs** (a rebuild of Redis from PostgreSQL, and every request that
//!   writes, see `app`) run to their end: cancelling a job half way is
//!   exactly what must never happen, so shutdown waits for them instead,
//!   bounded by the grace period.
//!
//! Nothing is spawned detached anywhere else in the server.

use std::future::Future;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The server's background tasks. Cheap to clone; clones share the tasks.
#[derive(Clone, Default)]
pub struct Background {
    tracker: TaskTracker,
    cancel: CancellationToken,
}

impl Background {
    /// No tasks yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// A job that runs to its end even if whoever awaits the handle goes
    /// away (a client that disconnects drops the handle, not the job).
    pub fn job<F>(&self, fut: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.tracker.spawn(fut)
    }

    /// A loop, stopped at shutdown. `make` gets the token that is cancelled
    /// then, for loops that want to finish an iteration cleanly.
    pub fn spawn_loop<F>(&self, make: impl FnOnce(CancellationToken) -> F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let token = self.cancel.clone();
        let fut = make(token.clone());
        self.tracker.spawn(async move {
            tokio::select! {
                () = token.cancelled() => {}
                () = fut => {}
            }
        });
    }

    /// Whether shutdown has begun.
    pub fn is_stopping(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// Stops the loops and waits, at most `grace`, for the jobs still
    /// running. Returns whether everything ended in time.
    pub async fn shutdown(&self, grace: Duration) -> bool {
        self.cancel.cancel();
        self.tracker.close();
        tokio::time::timeout(grace, self.tracker.wait()).await.is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    #[tokio::test]
    async fn a_job_survives_its_dropped_handle_and_shutdown_waits_for_it() {
        let bg = Background::new();
        let done = Arc::new(AtomicBool::new(false));
        let d = done.clone();
        drop(bg.job(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            d.store(true, Ordering::SeqCst);
        }));
        assert!(bg.shutdown(Duration::from_secs(5)).await);
        assert!(done.load(Ordering::SeqCst), "the job ran to its end");
    }

    #[tokio::test]
    async fn loops_stop_at_shutdown() {
        let bg = Background::new();
        bg.spawn_loop(|_| std::future::pending::<()>());
        assert!(bg.shutdown(Duration::from_secs(5)).await, "a pending loop is cancelled");
    }
}
