//! Just enough HTTP client for the bench's set-up and bookkeeping calls: create a project, turn
//! on error tracking (which creates the first client key), read keys, scrape `/metrics`.

use std::net::SocketAddr;

use anyhow::{bail, Context};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// One request on a fresh connection.
pub async fn call(
    addr: SocketAddr,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<serde_json::Value>,
) -> anyhow::Result<(StatusCode, Bytes)> {
    let stream = TcpStream::connect(addr).await.context("connecting")?;
    let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr.to_string());
    if let Some(t) = token {
        req = req.header("private-token", t);
    }
    let body = match body {
        Some(v) => {
            req = req.header("content-type", "application/json");
            Bytes::from(serde_json::to_vec(&v)?)
        }
        None => Bytes::new(),
    };
    let resp = tx.send_request(req.body(Full::new(body))?).await?;
    let status = resp.status();
    let bytes = resp.into_body().collect().await?.to_bytes();
    Ok((status, bytes))
}

async fn json(
    addr: SocketAddr,
    method: Method,
    path: &str,
    token: &str,
    body: Option<serde_json::Value>,
    expect: StatusCode,
) -> anyhow::Result<serde_json::Value> {
    let (status, bytes) = call(addr, method.clone(), path, Some(token), body).await?;
    if status != expect {
        bail!(
            "{method} {path}: expected {expect}, got {status}: {}",
            String::from_utf8_lossy(&bytes)
        );
    }
    Ok(serde_json::from_slice(&bytes)?)
}

/// Creates a project; returns its id.
pub async fn create_project(addr: SocketAddr, token: &str, name: &str) -> anyhow::Result<i64> {
    let v = json(
        addr,
        Method::POST,
        "/api/v4/projects",
        token,
        Some(serde_json::json!({ "name": name, "namespace_path": "bench" })),
        StatusCode::CREATED,
    )
    .await?;
    v["id"].as_i64().context("project without id")
}

/// Turns integrated error tracking on (which creates the first key); returns that key.
pub async fn enable_tracking(
    addr: SocketAddr,
    token: &str,
    project: i64,
) -> anyhow::Result<String> {
    json(
        addr,
        Method::PUT,
        &format!("/api/v4/projects/{project}/error_tracking/settings?active=true&integrated=true"),
        token,
        None,
        StatusCode::OK,
    )
    .await?;
    let keys = json(
        addr,
        Method::GET,
        &format!("/api/v4/projects/{project}/error_tracking/client_keys"),
        token,
        None,
        StatusCode::OK,
    )
    .await?;
    keys[0]["public_key"]
        .as_str()
        .map(str::to_owned)
        .context("no client key after enabling error tracking")
}

/// Adds one more client key to a project.
pub async fn add_key(addr: SocketAddr, token: &str, project: i64) -> anyhow::Result<()> {
    json(
        addr,
        Method::POST,
        &format!("/api/v4/projects/{project}/error_tracking/client_keys"),
        token,
        None,
        StatusCode::CREATED,
    )
    .await?;
    Ok(())
}

/// The server's Prometheus text, as `(series, value)` pairs (labels kept in the series name).
pub async fn metrics(addr: SocketAddr) -> Vec<(String, f64)> {
    let Ok((StatusCode::OK, bytes)) = call(addr, Method::GET, "/metrics", None, None).await else {
        return Vec::new();
    };
    String::from_utf8_lossy(&bytes)
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

/// The value of `series` in a scrape, 0 when absent.
pub fn metric(m: &[(String, f64)], series: &str) -> f64 {
    m.iter()
        .find(|(k, _)| k == series)
        .map(|(_, v)| *v)
        .unwrap_or(0.0)
}
