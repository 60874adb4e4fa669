//! Helpers shared by the raw-HTTP ingestion tests (`ingest_status.rs`, `ingest_bodies.rs`):
//! building envelopes and events by hand, sending bytes with exactly the headers a test names,
//! and looking into the database.
#![allow(dead_code)]

use std::io::Write;

use serde_json::{json, Value};

use crate::common::{read_resp, Db, Resp, TestApp};

/// The CORS headers every ingestion answer carries (docs/protocol.md, "CORS").
pub const CORS: [(&str, &str); 5] = [
    ("access-control-allow-origin", "*"),
    ("access-control-allow-methods", "POST, OPTIONS"),
    (
        "access-control-allow-headers",
        "x-sentry-auth, x-requested-with, origin, accept, content-type, content-encoding, authorization",
    ),
    (
        "access-control-expose-headers",
        "x-sentry-error, x-sentry-rate-limits, retry-after",
    ),
    ("access-control-max-age", "3600"),
];

/// A fresh event id: 32 lowercase hex.
pub fn new_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// `X-Sentry-Auth` value as the SDKs write it.
pub fn sentry_auth(key: &str) -> String {
    format!("Sentry sentry_key={key}, sentry_version=7, sentry_client=faultline-tests/1.0")
}

pub fn envelope_path(project_id: impl std::fmt::Display) -> String {
    format!("/api/{project_id}/envelope/")
}

pub fn store_path(project_id: impl std::fmt::Display) -> String {
    format!("/api/{project_id}/store/")
}

/// A message event with the given id.
pub fn message_event(id: &str, message: &str) -> Value {
    json!({
        "event_id": id,
        "message": message,
        "level": "error",
        "platform": "python",
        "timestamp": 1_700_000_000.5,
    })
}

/// An error event: one exception of `ty` with `value`, raised in the in-app function `function`.
pub fn error_event(id: &str, ty: &str, value: &str, function: &str) -> Value {
    json!({
        "event_id": id,
        "platform": "python",
        "level": "error",
        "exception": {"values": [{
            "type": ty,
            "value": value,
            "stacktrace": {"frames": [
                {"function": "main", "module": "app", "filename": "app.py", "lineno": 1, "in_app": true},
                {"function": function, "module": "app.handlers", "filename": "app/handlers.py", "lineno": 10, "in_app": true}
            ]}
        }]}
    })
}

/// An envelope written as the Python SDK writes it: every item with `length`, every line ending
/// in `\n`, including the last.
pub fn envelope(header: Value, items: &[(Value, Vec<u8>)]) -> Vec<u8> {
    let mut out = serde_json::to_vec(&header).expect("header");
    out.push(b'\n');
    for (item_header, payload) in items {
        let mut h = item_header.clone();
        h["length"] = json!(payload.len());
        out.extend(serde_json::to_vec(&h).expect("item header"));
        out.push(b'\n');
        out.extend(payload);
        out.push(b'\n');
    }
    out
}

/// An envelope with a single event item carrying `event`, header `{"event_id": ...}`.
pub fn event_envelope(event: &Value) -> Vec<u8> {
    envelope(
        json!({"event_id": event["event_id"]}),
        &[(json!({"type": "event"}), event.to_string().into_bytes())],
    )
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).expect("gzip");
    e.finish().expect("gzip")
}

pub fn zlib(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).expect("zlib");
    e.finish().expect("zlib")
}

pub fn brotli(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut w = brotli::CompressorWriter::new(&mut out, 4096, 5, 22);
        w.write_all(data).expect("brotli");
    }
    out
}

pub fn zstd(data: &[u8]) -> Vec<u8> {
    zstd::stream::encode_all(data, 3).expect("zstd")
}

/// Sends `body` with exactly `headers` (plus what reqwest adds: `content-length`, `accept`).
pub async fn send(
    app: &TestApp,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> Resp {
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    let mut req = app.client.request(method, app.parsed_url(path));
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    read_resp(req.body(body).send().await.expect("request sent")).await
}

/// POSTs a one-event envelope for `project_id` under `key` and returns the answer.
pub async fn post_event(app: &TestApp, project_id: i64, key: &str, event: &Value) -> Resp {
    let auth = sentry_auth(key);
    send(
        app,
        "POST",
        &envelope_path(project_id),
        &[("x-sentry-auth", &auth)],
        event_envelope(event),
    )
    .await
}

/// Asserts the CORS headers of docs/protocol.md ("CORS") on any ingestion answer.
pub fn assert_cors(r: &Resp, what: &str) {
    for (name, value) in CORS {
        assert_eq!(r.header(name), Some(value), "{what}: header {name}");
    }
}

/// Asserts a 200 `{"id": id}` answer.
pub fn assert_accepted(r: &Resp, id: &str, what: &str) {
    assert_eq!(
        (r.status, &r.body),
        (200, &json!({ "id": id })),
        "{what}: accepted with the event id"
    );
}

/// Asserts a Sentry-style refusal: `status`, a body of exactly `{"detail": "<non-empty>"}`, the
/// same text in `X-Sentry-Error`, and the CORS headers (browsers must be able to read it).
pub fn assert_refused(r: &Resp, status: u16, what: &str) {
    assert_eq!(r.status, status, "{what}: status (body {})", r.body);
    let obj = r
        .body
        .as_object()
        .unwrap_or_else(|| panic!("{what}: JSON object body, got {}", r.body));
    assert_eq!(
        obj.keys().collect::<Vec<_>>(),
        vec!["detail"],
        "{what}: only a detail key"
    );
    let detail = obj["detail"]
        .as_str()
        .unwrap_or_else(|| panic!("{what}: detail is a string"));
    assert!(!detail.is_empty(), "{what}: detail is not empty");
    assert_eq!(
        r.header("x-sentry-error"),
        Some(detail),
        "{what}: X-Sentry-Error repeats the detail"
    );
    assert_cors(r, what);
}

/// The number of rows `sql` counts (portable SQL, values written into it).
pub async fn count(app: &TestApp, sql: &str) -> i64 {
    Db::of(app).await.int(sql).await
}

/// How many times the event `id` is stored for `project_id`.
pub async fn stored(app: &TestApp, project_id: i64, id: &str) -> i64 {
    count(
        app,
        &format!(
            "SELECT COUNT(*) FROM events WHERE project_id = {project_id} AND event_id = '{id}'"
        ),
    )
    .await
}

/// Sends a good event and asserts it is answered 200 and stored: the server still works.
pub async fn assert_serves(app: &TestApp, project_id: i64, key: &str, what: &str) {
    let id = new_id();
    let r = post_event(app, project_id, key, &message_event(&id, "still serving")).await;
    assert_accepted(&r, &id, &format!("{what}: following good event"));
    assert_eq!(
        stored(app, project_id, &id).await,
        1,
        "{what}: following event stored"
    );
}

/// The value of the counter `name{labels}` in `/metrics`, 0 when absent.
pub async fn metric(app: &TestApp, series: &str) -> u64 {
    let text = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics body");
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| v.trim().parse::<f64>().expect("metric value") as u64)
        .unwrap_or(0)
}
