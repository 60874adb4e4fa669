//! The baseline: a bare hyper HTTP/1.1 server that reads each request body to the end and answers
//! `200 {"id":"<32 hex>"}`, on the same kind of tokio runtime faultline uses (multi-threaded, one
//! worker per core). It is the ceiling of the HTTP stack on this machine; faultline's rates are
//! reported as a fraction of it. It runs as its own process, like faultline, so that the load
//! generator competes with both servers for the CPU in the same way.
//!
//! The same server in [`Work::Parse`] mode also does, per request, the CPU work faultline cannot
//! skip before it can store an event: it inflates the body, frames the envelope, extracts the
//! event's fields and computes its group, with faultline's own functions. It stores nothing. Its
//! rate is the ceiling of any storage design built on this parsing, which tells how much of the gap
//! to the bare baseline is parsing and how much is everything after it.

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

/// What the server does with each body besides reading it.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Work {
    /// Nothing: the HTTP stack alone.
    None,
    /// Inflate, frame, extract and group, as faultline's ingestion does before its writer.
    Parse,
}

pub fn main(work: Work) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(serve(work))
}

/// faultline's per-request parsing, up to the record it would hand to its writer. Returns the
/// number of events parsed; an error means the bench sent something faultline would refuse.
fn parse(encoding: Option<&str>, body: &[u8]) -> anyhow::Result<usize> {
    use faultline::domain::{event, grouping};
    use faultline::protocol::{decode_body, envelope, ContentEncoding, ItemType};
    let encoding = ContentEncoding::from_header(encoding)?;
    let decoded = decode_body(encoding, body, 20 * 1024 * 1024)?;
    let env = envelope::parse(&decoded, &envelope::Limits::default())?;
    let mut events = 0;
    for item in env.items.iter().filter(|i| i.ty == ItemType::Event) {
        let summary = event::extract(item.payload)?;
        std::hint::black_box(grouping::group(&summary));
        events += 1;
    }
    Ok(events)
}

async fn serve(work: Work) -> anyhow::Result<()> {
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
                    let encoding = req
                        .headers()
                        .get("content-encoding")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned);
                    // Read the whole body, as faultline must before it can decode it.
                    let body = req.into_body().collect().await.map(|c| c.to_bytes());
                    if let (Work::Parse, Ok(body)) = (work, &body) {
                        if let Err(e) = parse(encoding.as_deref(), body) {
                            let resp = Response::builder()
                                .status(400)
                                .body(Full::new(Bytes::from(format!("{e:#}"))))
                                .expect("a valid response");
                            return Ok::<_, Infallible>(resp);
                        }
                    }
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
