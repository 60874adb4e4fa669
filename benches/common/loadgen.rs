//! The load generator: N keep-alive HTTP/1.1 connections (hyper's connection-level client over
//! hyper-util's tokio adapter) posting envelope bodies for a fixed duration.
//!
//! Two modes. Closed loop: every connection sends its next request as soon as the previous answer
//! arrived, which finds the maximum rate. Open loop: requests are due at a fixed rate on a global
//! schedule, and latency is measured from the time a request was *due*, not from when a free
//! connection got round to sending it; a slow server therefore shows up as latency instead of
//! silently lowering the offered rate (no coordinated omission, as in wrk2).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{HeaderValue, CONTENT_ENCODING, CONTENT_TYPE, HOST, USER_AGENT};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::payloads::BodyFactory;

#[derive(Debug, Clone, Copy)]
pub enum Mode {
    Closed,
    /// Requests per second offered, spread evenly over time.
    Open {
        rate: f64,
    },
}

/// What one run of the generator saw.
#[derive(Debug, Default, Clone)]
pub struct RunStats {
    pub ok: u64,
    /// Non-200 answers by status code.
    pub other_status: Vec<(u16, u64)>,
    /// Connection or protocol failures (each followed by a reconnect).
    pub io_errors: u64,
    /// Latencies of the 200 answers, microseconds, sorted ascending.
    pub latencies_us: Vec<u32>,
    pub elapsed: Duration,
    /// Responses whose body did not contain `"id"` (a 200 must name the event).
    pub bad_bodies: u64,
}

impl RunStats {
    pub fn rate(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64()
    }

    pub fn percentile_ms(&self, p: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return f64::NAN;
        }
        let idx = ((p / 100.0) * (self.latencies_us.len() - 1) as f64).round() as usize;
        self.latencies_us[idx] as f64 / 1000.0
    }

    pub fn non_ok(&self) -> u64 {
        self.other_status.iter().map(|(_, n)| n).sum::<u64>() + self.io_errors
    }
}

/// Where to send and what.
#[derive(Clone)]
pub struct Target {
    pub addr: SocketAddr,
    pub path: String,
    pub auth: HeaderValue,
    pub bodies: Arc<BodyFactory>,
    /// High half of every event id: distinct per bench run, so ids never repeat across runs.
    pub nonce: u64,
    /// Shared request counter: the low half of the event id, unique per request.
    pub counter: Arc<AtomicU64>,
}

struct ConnStats {
    ok: u64,
    statuses: Vec<(u16, u64)>,
    io_errors: u64,
    bad_bodies: u64,
    latencies_us: Vec<u32>,
    last_done: Instant,
}

/// Runs `conns` connections for `duration`, spread evenly over `targets` (connection `i` goes to
/// `targets[i % len]`), e.g. several gateway nodes behind one imagined load balancer. The figures
/// are those of all connections together; an open loop's schedule is shared by all of them.
pub async fn run(targets: &[Target], conns: usize, duration: Duration, mode: Mode) -> RunStats {
    assert!(!targets.is_empty(), "at least one target");
    let start = Instant::now() + Duration::from_millis(5);
    let end = start + duration;
    let slot = Arc::new(AtomicU64::new(0));
    let sent_at = super::payloads::rfc3339(super::payloads::now_unix());
    let mut tasks = Vec::with_capacity(conns);
    for i in 0..conns {
        let t = targets[i % targets.len()].clone();
        let slot = slot.clone();
        let sent_at = sent_at.clone();
        tasks.push(tokio::spawn(async move {
            connection(t, start, end, mode, slot, sent_at).await
        }));
    }
    let mut stats = RunStats::default();
    let mut last_done = start;
    for task in tasks {
        let c = task.await.expect("a connection task panicked");
        stats.ok += c.ok;
        stats.io_errors += c.io_errors;
        stats.bad_bodies += c.bad_bodies;
        for (code, n) in c.statuses {
            match stats.other_status.iter_mut().find(|(s, _)| *s == code) {
                Some(e) => e.1 += n,
                None => stats.other_status.push((code, n)),
            }
        }
        stats.latencies_us.extend_from_slice(&c.latencies_us);
        last_done = last_done.max(c.last_done);
    }
    stats.latencies_us.sort_unstable();
    stats.elapsed = last_done.saturating_duration_since(start);
    stats
}

async fn connect(
    addr: SocketAddr,
) -> hyper::Result<Option<hyper::client::conn::http1::SendRequest<Full<Bytes>>>> {
    let Ok(stream) = TcpStream::connect(addr).await else {
        return Ok(None);
    };
    let _ = stream.set_nodelay(true);
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(Some(sender))
}

async fn connection(
    t: Target,
    start: Instant,
    end: Instant,
    mode: Mode,
    slot: Arc<AtomicU64>,
    sent_at: String,
) -> ConnStats {
    let mut s = ConnStats {
        ok: 0,
        statuses: Vec::new(),
        io_errors: 0,
        bad_bodies: 0,
        latencies_us: Vec::with_capacity(16 * 1024),
        last_done: start,
    };
    let host = HeaderValue::from_str(&t.addr.to_string()).expect("an address is a valid header");
    let interval = match mode {
        Mode::Open { rate } => Some(Duration::from_secs_f64(1.0 / rate)),
        Mode::Closed => None,
    };
    let mut sender = None;
    tokio::time::sleep_until(start.into()).await;
    loop {
        // When is this request due? Closed loop: now. Open loop: the next free slot of the
        // global schedule, whoever takes it; waiting for it is part of the latency.
        let due = match interval {
            None => {
                let now = Instant::now();
                if now >= end {
                    break;
                }
                now
            }
            Some(iv) => {
                let i = slot.fetch_add(1, Ordering::Relaxed);
                let due = start + iv.mul_f64(i as f64);
                if due >= end {
                    break;
                }
                tokio::time::sleep_until(due.into()).await;
                due
            }
        };
        if sender.is_none() {
            match connect(t.addr).await {
                Ok(Some(c)) => sender = Some(c),
                _ => {
                    s.io_errors += 1;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            }
        }
        let tx = sender.as_mut().expect("connected above");
        let n = t.counter.fetch_add(1, Ordering::Relaxed);
        let body = t.bodies.body(t.nonce, n, &sent_at);
        let mut req = Request::builder()
            .method(Method::POST)
            .uri(t.path.as_str())
            .header(HOST, host.clone())
            .header("x-sentry-auth", t.auth.clone());
        if t.bodies.is_gzip() {
            req = req.header(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        }
        let req = req
            .header(
                CONTENT_TYPE,
                HeaderValue::from_static("application/x-sentry-envelope"),
            )
            .header(USER_AGENT, HeaderValue::from_static("sentry.python/2.19.0"))
            .body(Full::new(Bytes::from(body)))
            .expect("a valid request");
        let result = async {
            tx.ready().await?;
            let resp = tx.send_request(req).await?;
            let status = resp.status().as_u16();
            let body = resp.into_body().collect().await?.to_bytes();
            Ok::<_, hyper::Error>((status, body))
        }
        .await;
        let done = Instant::now();
        s.last_done = done;
        match result {
            Ok((200, body)) => {
                s.ok += 1;
                if !body.windows(4).any(|w| w == b"\"id\"") {
                    s.bad_bodies += 1;
                }
                let us = done.saturating_duration_since(due).as_micros();
                s.latencies_us.push(us.min(u32::MAX as u128) as u32);
            }
            Ok((code, _)) => match s.statuses.iter_mut().find(|(c, _)| *c == code) {
                Some(e) => e.1 += 1,
                None => s.statuses.push((code, 1)),
            },
            Err(_) => {
                s.io_errors += 1;
                sender = None;
            }
        }
    }
    s
}
