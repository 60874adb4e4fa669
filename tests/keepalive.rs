//! A refused ingestion request must leave its keep-alive connection usable: SDKs (urllib3's pool,
//! Node's agent) send their next event on the same connection, and a connection dropped after
//! the refusal loses that event. These tests speak HTTP/1.1 over one raw TCP connection, so
//! nothing (no client-side retry) hides a dropped connection.

mod common;

use common::{spawn_app_with, TestApp};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One response read off the connection: status, whether it says `Connection: close`.
struct Answer {
    status: u16,
    close: bool,
}

/// Writes a POST with `body` and reads its response.
async fn exchange(stream: &mut TcpStream, path: &str, body: &[u8]) -> std::io::Result<Answer> {
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: test\r\nContent-Type: application/x-sentry-envelope\r\n\
         Content-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body).await?;
    read_answer(stream).await
}

async fn read_answer(stream: &mut TcpStream) -> std::io::Result<Answer> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "connection closed before a response",
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let status = head[9..12].parse().expect("status code");
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map(|v| v.trim().parse().expect("content-length"))
        .expect("responses carry a content-length");
    while buf.len() < head_end + length {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Ok(Answer {
        status,
        close: head.contains("\r\nconnection: close"),
    })
}

/// An envelope carrying one event, padded with an extra-field to about `size` bytes.
fn envelope(size: usize) -> Vec<u8> {
    let pad = "x".repeat(size.saturating_sub(120));
    format!("{{}}\n{{\"type\":\"event\"}}\n{{\"message\":\"keep-alive\",\"extra\":{{\"pad\":\"{pad}\"}}}}\n")
        .into_bytes()
}

fn path(project: i64, key: &str) -> String {
    format!("/api/{project}/envelope/?sentry_key={key}&sentry_version=7")
}

/// Sends a refused request of `size` bytes, then a good one on the same connection (or, if the
/// refusal said `Connection: close`, on a new one, as a client must), and checks both answers.
async fn refused_then_accepted(
    app: &TestApp,
    refused_path: &str,
    size: usize,
    expected: u16,
    good_path: &str,
) {
    let addr = app.server.addr;
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let first = exchange(&mut stream, refused_path, &envelope(size))
        .await
        .expect("the refusal is answered");
    assert_eq!(first.status, expected, "{refused_path} with {size} bytes");
    if first.close {
        stream = TcpStream::connect(addr).await.expect("reconnect");
    }
    let next = exchange(&mut stream, good_path, &envelope(200))
        .await
        .unwrap_or_else(|e| {
            panic!("the request after a {expected} to {size} bytes was not answered: {e}")
        });
    assert_eq!(next.status, 200, "after a {expected} to {size} bytes");
    // Bodies up to a MiB are read and thrown away, so the connection itself stays open.
    assert!(
        !first.close,
        "a {expected} to {size} bytes should keep the connection"
    );
}

const SIZES: [usize; 3] = [100, 100 * 1024, 900 * 1024];

#[tokio::test]
async fn unknown_and_disabled_keys_keep_the_connection_usable() {
    let app = spawn_app_with(|_| {}).await;
    let (project, key, _) = app.project_with_key("keepalive").await;
    let (_, other_key, _) = app.project_with_key("keepalive-other").await;
    let good = path(project, &key);
    let unknown = path(project, "glet_00000000000000000000000000000000");
    let wrong_project = path(project, &other_key);
    for size in SIZES {
        refused_then_accepted(&app, &unknown, size, 401, &good).await;
        refused_then_accepted(&app, &wrong_project, size, 403, &good).await;
    }
}

#[tokio::test]
async fn an_oversized_body_keeps_the_connection_usable() {
    let app = spawn_app_with(|c| c.ingest.max_compressed_bytes = 50 * 1024).await;
    let (project, key, _) = app.project_with_key("keepalive").await;
    let good = path(project, &key);
    for size in [60 * 1024, 100 * 1024, 900 * 1024] {
        refused_then_accepted(&app, &good, size, 413, &good).await;
    }
}

#[tokio::test]
async fn a_rate_limited_sdk_keeps_its_connection() {
    let app = spawn_app_with(|c| c.ingest.rate_limit_per_minute = 1).await;
    let (project, key, _) = app.project_with_key("limited").await;
    let (other, _, _) = app.project_with_key("unlimited").await;
    let limited = path(project, &key);
    let mut stream = TcpStream::connect(app.server.addr).await.expect("connect");
    let first = exchange(&mut stream, &limited, &envelope(100))
        .await
        .expect("answered");
    assert_eq!(first.status, 200);
    for size in SIZES {
        // The limit is per key: each follow-up goes out with a fresh key of its own.
        let fresh = app.create_key(other).await;
        let good = path(other, fresh["public_key"].as_str().expect("key"));
        refused_then_accepted(&app, &limited, size, 429, &good).await;
    }
}

#[tokio::test]
async fn a_body_past_the_drain_bound_is_answered_with_connection_close() {
    let app = spawn_app_with(|_| {}).await;
    let (project, _, _) = app.project_with_key("keepalive").await;
    let unknown = path(project, "glet_00000000000000000000000000000000");
    let mut stream = TcpStream::connect(app.server.addr).await.expect("connect");
    // Only the head is sent: the server answers before the body, and the declared length is
    // more than it will read and throw away, so it tells the client not to reuse this
    // connection.
    let head = format!(
        "POST {unknown} HTTP/1.1\r\nHost: test\r\nContent-Length: {}\r\n\r\n",
        4 * 1024 * 1024
    );
    stream.write_all(head.as_bytes()).await.expect("head");
    let answer = read_answer(&mut stream).await.expect("answered");
    assert_eq!(answer.status, 401);
    assert!(answer.close, "the client is told to open a new connection");
}

#[tokio::test]
async fn a_client_waiting_for_100_continue_is_not_asked_for_its_body() {
    let app = spawn_app_with(|_| {}).await;
    let (project, _, _) = app.project_with_key("keepalive").await;
    let unknown = path(project, "glet_00000000000000000000000000000000");
    let mut stream = TcpStream::connect(app.server.addr).await.expect("connect");
    let head = format!(
        "POST {unknown} HTTP/1.1\r\nHost: test\r\nExpect: 100-continue\r\nContent-Length: 5000\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.expect("head");
    let answer = read_answer(&mut stream).await.expect("answered");
    // The refusal comes straight away, not a `100 Continue` inviting a body that would be
    // thrown away.
    assert_eq!(answer.status, 401);
    assert!(
        answer.close,
        "the unsent body leaves the connection unusable"
    );
}
