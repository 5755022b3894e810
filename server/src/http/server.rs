//! The listener: accept loop, connection limit, HTTP/1.1 keep-alive, and
//! graceful shutdown.
//!
//! - At most `MAX_CONNECTIONS` connections: the loop takes a permit before
//!   it accepts, so past the limit new clients wait in the kernel's backlog
//!   instead of costing memory here.
//! - Accept errors (for example out of file descriptors) back off from 1 ms
//!   to 1 s instead of spinning or exiting.
//! - A client must send its request head within `HEADER_READ_TIMEOUT_SECS`
//!   (slow-loris), enforced by hyper with tokio's timer.
//! - On shutdown the loop stops accepting, every connection is told to finish
//!   its in-flight request and close, and the whole drain is bounded by
//!   `SHUTDOWN_GRACE_SECS`.
//!
//! - With lanes ([`super::lanes`]), each accepted connection is handed, in
//!   turn, to one lane and answered there for its whole life; the handler is
//!   told which (`Some(i)`, the index of its lane's runtime).
//!
//! It knows nothing of the application: it takes a function from request to
//! response.

use crate::config::Config;
use crate::http::Resp;
use hyper::Request;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Handle;
use tokio::sync::Semaphore;

/// The listener's settings.
#[derive(Clone, Copy, Debug)]
pub struct ServeOptions {
    /// A client must send its request head within this.
    pub header_read_timeout: Duration,
    /// Open connections at once.
    pub max_connections: usize,
    /// Longest drain on shutdown.
    pub shutdown_grace: Duration,
}

impl From<&Config> for ServeOptions {
    /// `HEADER_READ_TIMEOUT_SECS`, `MAX_CONNECTIONS` and
    /// `SHUTDOWN_GRACE_SECS`: one mapping for the server and for whatever
    /// must serve exactly as it does (the bench's bare baseline).
    fn from(config: &Config) -> Self {
        Self {
            header_read_timeout: config.header_read_timeout,
            max_connections: config.max_connections,
            shutdown_grace: config.shutdown_grace,
        }
    }
}

/// Serves `listener` with `handler` until `shutdown` completes, then drains.
pub async fn serve<H, F>(listener: TcpListener, opts: ServeOptions, handler: H, shutdown: impl Future<Output = ()>)
where
    H: Fn(Request<Incoming>) -> F + Clone + Send + 'static,
    F: Future<Output = Resp> + Send + 'static,
{
    serve_on(listener, opts, &[], move |req, _| handler(req), shutdown).await;
}

/// [`serve`], answering each connection on one of `lanes` in turn (on the
/// accepting runtime when there are none); `handler` gets the lane's index.
pub async fn serve_on<H, F>(
    listener: TcpListener,
    opts: ServeOptions,
    lanes: &[Handle],
    handler: H,
    shutdown: impl Future<Output = ()>,
) where
    H: Fn(Request<Incoming>, Option<usize>) -> F + Clone + Send + 'static,
    F: Future<Output = Resp> + Send + 'static,
{
    let mut http = hyper::server::conn::http1::Builder::new();
    // half_close: a client that sends a whole request and then closes its
    // side (or hangs up) has still asked for it. Without it, hyper drops a
    // request whose connection reads EOF before its handler first ran, so
    // whether a write sent that way happened would depend on how soon the
    // connection was polled (later on a lane, after the hand-over).
    http.timer(TokioTimer::new()).header_read_timeout(opts.header_read_timeout).keep_alive(true).half_close(true);
    let graceful = GracefulShutdown::new();
    let limit = Arc::new(Semaphore::new(opts.max_connections));
    let mut backoff = Duration::from_millis(1);
    let mut next_lane = 0;
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            p = limit.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(s) => { backoff = Duration::from_millis(1); s }
                Err(e) => {
                    tracing::warn!(error = %e, ?backoff, "accept failed; backing off");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let lane = (!lanes.is_empty()).then(|| {
            let i = next_lane;
            next_lane = (next_lane + 1) % lanes.len();
            i
        });
        let (h, http, watcher) = (handler.clone(), http.clone(), graceful.watcher());
        let answer = move |stream: TcpStream| async move {
            let svc = service_fn(move |req| {
                let fut = h(req, lane);
                async move { Ok::<_, Infallible>(fut.await) }
            });
            if let Err(e) = watcher.watch(http.serve_connection(TokioIo::new(stream), svc)).await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
            drop(permit);
        };
        match lane {
            None => drop(tokio::spawn(answer(stream))),
            Some(i) => {
                // The socket moves to the lane's reactor: out of this
                // runtime's here, into the lane's there.
                let std = match stream.into_std() {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::warn!(%peer, error = %e, "cannot hand the connection to a lane");
                        continue;
                    }
                };
                drop(lanes[i].spawn(async move {
                    match TcpStream::from_std(std) {
                        Ok(stream) => answer(stream).await,
                        Err(e) => tracing::warn!(%peer, error = %e, "a lane cannot take the connection"),
                    }
                }));
            }
        }
    }
    drop(listener);
    let grace = opts.shutdown_grace;
    tracing::info!(?grace, "shutting down: draining in-flight requests");
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("all connections drained"),
        () = tokio::time::sleep(grace) => tracing::warn!("grace period over; closing remaining connections"),
    }
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("Ctrl-C received"),
        () = term => tracing::info!("SIGTERM received"),
    }
}
