//! Hostile clients and a full disk: slow headers and bodies are cut off, connections are capped,
//! random keys do not grow memory, malformed payloads get a 4xx and the next good request still
//! works, and a database that cannot grow answers 503 (never a 200 it could not keep) and recovers
//! by itself once space returns.

mod common;

use std::time::{Duration, Instant};

use common::{eventually, spawn_app_with, TestApp};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn auth(key: &str) -> String {
    format!("Sentry sentry_key={key}, sentry_version=7")
}

fn envelope_with(event: &str) -> Vec<u8> {
    format!(
        "{{}}\n{{\"type\":\"event\",\"length\":{}}}\n{event}\n",
        event.len()
    )
    .into_bytes()
}

/// Posts an envelope body; returns the status.
async fn post(app: &TestApp, project: i64, key: &str, body: Vec<u8>) -> u16 {
    app.client
        .post(app.url(&format!("/api/{project}/envelope/")))
        .header("X-Sentry-Auth", auth(key))
        .body(body)
        .send()
        .await
        .expect("request")
        .status()
        .as_u16()
}

async fn good(app: &TestApp, project: i64, key: &str) -> u16 {
    post(
        app,
        project,
        key,
        envelope_with(r#"{"message":"all good"}"#),
    )
    .await
}

/// Reads until EOF or timeout; returns what arrived and whether the peer closed.
async fn read_until_close(stream: &mut TcpStream, limit: Duration) -> (Vec<u8>, bool) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (buf, true),
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
            Err(_) => return (buf, false),
        }
    }
}

#[tokio::test]
async fn slow_headers_are_cut_off() {
    let app = spawn_app_with(|c| c.http.header_timeout_secs = 1).await;
    let mut s = TcpStream::connect(app.server.addr).await.expect("connect");
    s.write_all(b"POST /api/1/envelope/ HTTP/1.1\r\nHost: x\r\n")
        .await
        .expect("write");
    let started = Instant::now();
    let (_, closed) = read_until_close(&mut s, Duration::from_secs(5)).await;
    assert!(closed, "connection with unfinished headers is closed");
    assert!(started.elapsed() < Duration::from_secs(4));
}

#[tokio::test]
async fn slow_bodies_are_cut_off() {
    let app = spawn_app_with(|c| c.http.body_timeout_secs = 1).await;
    let (project, key, _) = app.project_with_key("slow").await;
    let mut s = TcpStream::connect(app.server.addr).await.expect("connect");
    let head = format!(
        "POST /api/{project}/envelope/ HTTP/1.1\r\nHost: x\r\nX-Sentry-Auth: {}\r\nContent-Length: 1000\r\n\r\n{{}}\n",
        auth(&key)
    );
    s.write_all(head.as_bytes()).await.expect("write");
    let (resp, _) = read_until_close(&mut s, Duration::from_secs(5)).await;
    let text = String::from_utf8_lossy(&resp);
    assert!(
        text.starts_with("HTTP/1.1 408"),
        "slow body answered 408, got {text:?}"
    );
    assert_eq!(good(&app, project, &key).await, 200);
}

#[tokio::test]
async fn connections_are_capped() {
    let app = spawn_app_with(|c| {
        c.http.max_connections = 2;
        c.http.header_timeout_secs = 30;
    })
    .await;
    // Two idle connections take both slots.
    let idle1 = TcpStream::connect(app.server.addr).await.expect("connect");
    let _idle2 = TcpStream::connect(app.server.addr).await.expect("connect");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut third = TcpStream::connect(app.server.addr)
        .await
        .expect("backlog accepts");
    third
        .write_all(b"GET /-/health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let mut buf = [0u8; 256];
    let waited = tokio::time::timeout(Duration::from_millis(500), third.read(&mut buf)).await;
    assert!(
        waited.is_err(),
        "a third connection is not served while two are open"
    );
    drop(idle1);
    let n = tokio::time::timeout(Duration::from_secs(5), third.read(&mut buf))
        .await
        .expect("served once a slot frees")
        .expect("read");
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
}

#[tokio::test]
async fn random_unknown_keys_do_not_grow_state() {
    let app = spawn_app_with(|_| {}).await;
    let (project, key, _) = app.project_with_key("flood").await;
    let keys_before = app.server.state.keys.key_count();
    let metrics_len = |app: &TestApp| app.server.state.metrics.encode().lines().count();
    // Warm up so every rejection label that can appear has appeared.
    for _ in 0..5 {
        let k = format!("glet_{}", uuid::Uuid::new_v4().simple());
        assert_eq!(post(&app, project, &k, envelope_with("{}")).await, 401);
    }
    let lines_before = metrics_len(&app);
    for _ in 0..500 {
        let k = format!("glet_{}", uuid::Uuid::new_v4().simple());
        assert_eq!(post(&app, project, &k, envelope_with("{}")).await, 401);
    }
    assert_eq!(app.server.state.keys.key_count(), keys_before);
    assert_eq!(metrics_len(&app), lines_before, "no per-key metric labels");
    assert_eq!(good(&app, project, &key).await, 200);
}

#[tokio::test]
async fn malformed_payloads_get_400_and_the_next_request_succeeds() {
    let app = spawn_app_with(|_| {}).await;
    let (project, key, _) = app.project_with_key("bad").await;
    let deep = format!(
        "{{\"extra\":{}{}}}",
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("deeply nested JSON", envelope_with(&deep)),
        (
            "huge item length",
            b"{}\n{\"type\":\"event\",\"length\":18446744073709551615}\n{}\n".to_vec(),
        ),
        ("invalid UTF-8 in event", {
            let mut b = b"{}\n{\"type\":\"event\"}\n{\"message\":\"".to_vec();
            b.extend_from_slice(&[0xff, 0xfe, 0xfd]);
            b.extend_from_slice(b"\"}\n");
            b
        }),
        (
            "NUL bytes in header",
            b"{\0}\n{\"type\":\"event\"}\n{}\n".to_vec(),
        ),
        (
            "NUL bytes as event",
            b"{}\n{\"type\":\"event\",\"length\":3}\n\0\0\0\n".to_vec(),
        ),
    ];
    for (name, body) in cases {
        let status = post(&app, project, &key, body).await;
        assert_eq!(status, 400, "{name}");
        assert_eq!(
            good(&app, project, &key).await,
            200,
            "good request after {name}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_database_answers_503_and_recovers_when_space_returns() {
    // SQLite-only: the full disk is simulated with SQLite's `max_page_count`.
    if common::backend() == common::Backend::Postgres {
        eprintln!("SQLite test (fills the database through SQLite's max_page_count): not run on PostgreSQL");
        return;
    }
    // A page cap makes "the disk is full" reproducible: 4 KiB pages, about 1.2 MB in all.
    let app = spawn_app_with(|c| c.database.max_page_count = Some(300)).await;
    let (filler, filler_key, _) = app.project_with_key("filler").await;
    let (other, other_key, _) = app.project_with_key("other").await;
    // Pseudo-random hex: LZ4, which stores uncompressed events, finds nothing to shrink in it,
    // so every event takes its full 16 KiB.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let padding: String = (0..16 * 1024)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            char::from(b"0123456789abcdef"[(state % 16) as usize])
        })
        .collect();

    let mut acked = Vec::new();
    let mut saw_503 = false;
    for n in 0..400 {
        let id = format!("{:032x}", n + 1);
        let event =
            json!({"event_id": id, "message": format!("filler {n}"), "extra": {"pad": padding}})
                .to_string();
        let resp = app
            .client
            .post(app.url(&format!("/api/{filler}/envelope/")))
            .header("X-Sentry-Auth", auth(&filler_key))
            .body(envelope_with(&event))
            .send()
            .await
            .expect("request");
        match resp.status().as_u16() {
            200 => acked.push(id),
            503 => {
                assert!(resp.headers().contains_key("retry-after"));
                saw_503 = true;
                break;
            }
            s => panic!("unexpected status {s}"),
        }
    }
    assert!(saw_503, "the database filled up");
    assert!(!acked.is_empty());

    // Everything acknowledged is stored.
    let db = common::Db::of(&app).await;
    for id in &acked {
        let n = db
            .int(&format!(
                "SELECT COUNT(*) FROM events WHERE event_id = '{id}'"
            ))
            .await;
        assert_eq!(n, 1, "acknowledged event {id} is stored");
    }
    // Still full for everyone sending an event of that size; the management API still reads.
    let big = |id: &str| {
        envelope_with(
            &json!({"event_id": id, "message": "other", "extra": {"pad": padding}}).to_string(),
        )
    };
    assert_eq!(
        post(
            &app,
            other,
            &other_key,
            big("0000000000000000000000000000aaaa")
        )
        .await,
        503
    );
    let (s, _) = app
        .call(
            "GET",
            &format!("/api/v4/projects/{other}/error_tracking/settings"),
            Some(&app.admin_token),
            None,
        )
        .await;
    assert_eq!(s, 200);
    let (s, _) = app
        .call(
            "GET",
            &format!("/api/v4/projects/{other}/error_tracking/client_keys"),
            Some(&app.admin_token),
            None,
        )
        .await;
    assert_eq!(s, 200);

    // Space returns (the filler project is deleted, its rows removed in the background);
    // ingestion recovers without a restart. Until the rows are gone the answer stays 503.
    let (s, _) = app
        .call(
            "DELETE",
            &format!("/api/v4/projects/{filler}"),
            Some(&app.admin_token),
            None,
        )
        .await;
    assert_eq!(s, 202);
    eventually(
        "space came back once the deleted project's rows were removed",
        || {
            let (app, key, big) = (&app, &other_key, &big);
            async move {
                let status = post(app, other, key, big("0000000000000000000000000000bbbb")).await;
                assert!(
                    status == 200 || status == 503,
                    "refused only for lack of space"
                );
                status == 200
            }
        },
    )
    .await;
}

/// NUL characters in an event's text (its message, exception, tags, environment) are stored,
/// not refused: SQLite keeps them; PostgreSQL's text columns cannot, so they become U+FFFD
/// there. Either way the event is acknowledged, listed, and its payload comes back exactly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nul_characters_in_event_text_are_stored() {
    let app = spawn_app_with(|_| {}).await;
    let (project, key, _) = app.project_with_key("nul").await;
    let event = r#"{"event_id":"0123456789abcdef0123456789abcdef","environment":"prod\u0000x","tags":{"k\u0000":"v\u0000"},"exception":{"values":[{"type":"Nul\u0000Error","value":"a\u0000b"}]}}"#;
    assert_eq!(post(&app, project, &key, envelope_with(event)).await, 200);
    // And a batch-mate without NULs is not lost with it.
    assert_eq!(good(&app, project, &key).await, 200);
    let errors: serde_json::Value = app
        .client
        .get(app.url(&format!("/errortracking/api/v1/projects/{project}/errors")))
        .header("PRIVATE-TOKEN", &app.admin_token)
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("json");
    let names: Vec<&str> = errors
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|e| e["name"].as_str())
        .collect();
    assert_eq!(names.len(), 2, "{errors}");
    assert!(
        names
            .iter()
            .any(|n| n.starts_with("Nul") && n.ends_with("Error")),
        "{names:?}"
    );
    let stored = common::Db::of(&app)
        .await
        .row("SELECT payload, payload_codec FROM events WHERE event_id = '0123456789abcdef0123456789abcdef'")
        .await;
    let json = faultline::store::payload::event_json(stored[1].int(), stored[0].bytes())
        .expect("payload decodes");
    assert_eq!(json, event.as_bytes(), "the payload keeps its NULs");
}
