//! A bare hyper server that answers every request with a fixed body: the
//! ceiling any route of Tollgate is compared with in load runs. Same runtime,
//! allocator and HTTP settings as the server, none of its work.
//!
//!     cargo run --release -p tollgate-benches --example bare -- 127.0.0.1:18090 5000
//!
//! The second argument is the body size in bytes (default 15, the size of
//! `/healthz`); give it the size of the response being compared.

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:18090".into());
    let size: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(15);
    let body = Bytes::from(vec![b'x'; size]);
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    eprintln!("bare: {size}-byte body on http://{}", listener.local_addr()?);
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let body = body.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |_req| {
                let body = body.clone();
                async move {
                    let mut r = hyper::Response::new(Full::new(body));
                    r.headers_mut().insert("content-type", hyper::header::HeaderValue::from_static("application/json"));
                    Ok::<_, Infallible>(r)
                }
            });
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
        });
    }
}
