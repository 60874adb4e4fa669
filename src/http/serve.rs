//! The accept loop: HTTP/1.1 connections served by hyper with the protections an endpoint on the
//! internet needs, which a plain `axum::serve` does not offer: a deadline for request headers
//! (slow-header clients), a cap on concurrent connections, and a graceful shutdown that lets
//! in-flight requests finish while idle keep-alive connections are closed.

use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

#[derive(Debug, Clone, Copy)]
pub struct ServeConfig {
    /// Time a client has to send complete request headers, on a new connection and between
    /// requests on a kept-alive one.
    pub header_timeout: Duration,
    /// Connections served at once; further clients wait in the kernel's accept backlog.
    pub max_connections: usize,
    /// How long in-flight requests may take to finish once shutdown starts.
    pub shutdown_timeout: Duration,
}

/// Serves `gateway` until `shutdown` turns true, then waits (up to the shutdown timeout) for open
/// connections to finish their current request.
pub async fn serve(
    listener: TcpListener,
    gateway: super::Gateway,
    cfg: ServeConfig,
    mut shutdown: watch::Receiver<bool>,
) {
    let permits = Arc::new(Semaphore::new(cfg.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    loop {
        // Waiting for a permit before accepting leaves excess clients in the backlog instead of
        // accepting connections we would not serve.
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            _ = stopped(&mut shutdown) => break,
        };
        let stream = tokio::select! {
            r = listener.accept() => match r {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Usually EMFILE or a connection reset before accept; back off briefly
                    // rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
            _ = stopped(&mut shutdown) => break,
        };
        // Event requests are small and latency matters more than packet count.
        let _ = stream.set_nodelay(true);
        let service = gateway.clone();
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(cfg.header_timeout)
            .serve_connection(TokioIo::new(stream), service);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    if tokio::time::timeout(cfg.shutdown_timeout, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("shutdown timeout reached with requests still in flight");
    }
}

/// Resolves once shutdown is requested (or the sender is gone). The borrowed value is dropped
/// here, so callers' futures stay `Send`.
async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}
