//! Lanes: threads that each run a single-threaded tokio runtime of their
//! own and answer the connections handed to them ([`super::server`] deals
//! the accepted connections out in turn).
//!
//! # Why
//! On the work-stealing runtime a request, the Redis connection's task
//! that carries its command, and the wake-up of the reply land on whichever
//! worker is free, so most requests cross threads twice (a futex wake and
//! a cache miss each), and the timer wheel, the pools and the counters are
//! shared by every worker. A lane keeps a connection's requests, their
//! Redis connection (`kv` opens one per lane, on the lane) and their timers
//! on one thread. Measured on 2 cores (wrk -c64, interleaved): the server's
//! CPU per cached `GET /tasks` fell from about 24 to 16 µs, and two lanes
//! answered about 30 % more of them than two work-stealing workers.
//!
//! What a lane does not own: the accept loop, the background loops and the
//! PostgreSQL connections' tasks stay on the main runtime, so nothing but
//! the connections it answers (and what their requests spawn) depends on a
//! lane staying up. Password hashing has its own threads.
//!
//! A lane is stopped after the server has drained and its jobs have
//! finished ([`Lanes::stop`]); dropping [`Lanes`] stops them too, without
//! waiting.

use std::io;
use tokio::runtime::{Builder, Handle};
use tokio::sync::oneshot;

/// The running lanes, in the order connections are dealt to them.
pub struct Lanes {
    handles: Vec<Handle>,
    /// Dropping a sender ends its lane's runtime.
    stops: Vec<oneshot::Sender<()>>,
    /// Each resolves when its lane's runtime has been dropped.
    done: Vec<oneshot::Receiver<()>>,
}

impl Lanes {
    /// Starts `n` lanes (none when `n` is 0: connections are then answered
    /// on the runtime that accepts them).
    pub fn start(n: usize) -> io::Result<Self> {
        let mut lanes = Self { handles: Vec::with_capacity(n), stops: Vec::new(), done: Vec::new() };
        for i in 0..n {
            let runtime = Builder::new_current_thread().enable_all().build()?;
            let (stop_tx, stop_rx) = oneshot::channel::<()>();
            let (done_tx, done_rx) = oneshot::channel::<()>();
            lanes.handles.push(runtime.handle().clone());
            std::thread::Builder::new().name(format!("tollgate-lane-{i}")).spawn(move || {
                runtime.block_on(async {
                    let _ = stop_rx.await;
                });
                // Cancels what is left on the lane (idle connection tasks).
                drop(runtime);
                let _ = done_tx.send(());
            })?;
            lanes.stops.push(stop_tx);
            lanes.done.push(done_rx);
        }
        Ok(lanes)
    }

    /// The lanes' runtimes, to spawn on; empty when there are none.
    pub fn handles(&self) -> &[Handle] {
        &self.handles
    }

    /// Stops every lane and waits until each has dropped its runtime.
    pub async fn stop(mut self) {
        self.stops.clear();
        for done in self.done.drain(..) {
            let _ = done.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn each_lane_runs_its_tasks_on_its_own_thread_until_stopped() {
        let lanes = Lanes::start(2).expect("lanes");
        let mut names = Vec::new();
        for h in lanes.handles() {
            let name = h.spawn(async { std::thread::current().name().map(str::to_owned) }).await.expect("ran");
            names.push(name.expect("named"));
        }
        assert_eq!(names, ["tollgate-lane-0", "tollgate-lane-1"]);
        let h = lanes.handles()[0].clone();
        lanes.stop().await;
        assert!(h.spawn(async {}).await.is_err(), "a stopped lane runs nothing");
    }
}
