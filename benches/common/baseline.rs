//! The baseline: a bare hyper HTTP/1.1 server that reads each request body to the end and answers
//! `200 {"id":"<32 hex>"}`, on the same kind of tokio runtime faultline uses (multi-threaded, one
//! worker per core). It is the ceiling of the HTTP stack on this machine; faultline's rates are
//! reported as a fraction of it. It runs as its own process, like faultline, so that the load
//! generator competes with both servers for the CPU in the same way.

use std::convert::Infallible;
use std::io::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use super::payloads::event_id_hex;

pub fn main() -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(serve())
}

async fn serve() -> anyhow::Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "baseline listening on {addr}")?;
        out.flush()?;
    }
    // The parent holds our stdin; its end (the bench finished or died) is our signal to exit.
    std::thread::spawn(|| {
        let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
        std::process::exit(0);
    });
    let counter = Arc::new(AtomicU64::new(0));
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let counter = counter.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let counter = counter.clone();
                async move {
                    // Read the whole body, as faultline must before it can decode it.
                    let _body = req.into_body().collect().await.map(|c| c.to_bytes());
                    let id = event_id_hex(0, counter.fetch_add(1, Ordering::Relaxed));
                    let mut json = Vec::with_capacity(42);
                    json.extend_from_slice(b"{\"id\":\"");
                    json.extend_from_slice(&id);
                    json.extend_from_slice(b"\"}");
                    let resp = Response::builder()
                        .header("content-type", "application/json")
                        .body(Full::new(Bytes::from(json)))
                        .expect("a valid response");
                    Ok::<_, Infallible>(resp)
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
