//! What ingestion makes of request bodies, seen from a raw HTTP client: every content encoding,
//! decompression bombs, legacy `/store/` bodies, envelope framing as the SDKs write it, every
//! kind of item, event ids and duplicates, and grouping of the stored events.

mod common;
mod ingest_support;

use std::time::{Duration, Instant};

use base64::Engine;
use common::{spawn_app, spawn_app_with, Db, TestApp};
use ingest_support::*;
use serde_json::{json, Value};

/// A server with one working project.
struct Fixture {
    app: TestApp,
    pid: i64,
    key: String,
}

async fn fixture() -> Fixture {
    fixture_with(|_| {}).await
}

async fn fixture_with(tweak: impl FnOnce(&mut faultline::config::Config)) -> Fixture {
    let app = spawn_app_with(tweak).await;
    let (pid, key, _) = app.project_with_key("bodies").await;
    Fixture { app, pid, key }
}

impl Fixture {
    async fn post(&self, path: &str, extra: &[(&str, &str)], body: Vec<u8>) -> common::Resp {
        let auth = sentry_auth(&self.key);
        let mut headers = vec![("x-sentry-auth", auth.as_str())];
        headers.extend_from_slice(extra);
        send(&self.app, "POST", path, &headers, body).await
    }

    async fn post_envelope(&self, extra: &[(&str, &str)], body: Vec<u8>) -> common::Resp {
        self.post(&envelope_path(self.pid), extra, body).await
    }

    async fn post_store(&self, extra: &[(&str, &str)], body: Vec<u8>) -> common::Resp {
        self.post(&store_path(self.pid), extra, body).await
    }

    /// The stored event JSON of event `id`, decoded as the read API decodes it.
    async fn payload(&self, id: &str) -> Vec<u8> {
        let rows = Db::of(&self.app)
            .await
            .rows(&format!(
                "SELECT payload, payload_codec FROM events WHERE project_id = {} AND event_id = '{id}'",
                self.pid
            ))
            .await;
        assert_eq!(rows.len(), 1, "event {id} stored");
        let (stored, codec) = (rows[0][0].bytes(), rows[0][1].int());
        faultline::store::payload::event_json(codec, stored).expect("stored payload decodes")
    }

    /// How event `id`'s payload is stored (`PayloadCodec::code`).
    async fn payload_codec(&self, id: &str) -> i64 {
        let rows = Db::of(&self.app)
            .await
            .rows(&format!(
                "SELECT payload_codec FROM events WHERE project_id = {} AND event_id = '{id}'",
                self.pid
            ))
            .await;
        assert_eq!(rows.len(), 1, "event {id} stored");
        rows[0][0].int()
    }

    async fn events(&self) -> i64 {
        count(
            &self.app,
            &format!(
                "SELECT COUNT(*) FROM events WHERE project_id = {}",
                self.pid
            ),
        )
        .await
    }
}

/// A body encoder, by `Content-Encoding` value.
type Encoder = fn(&[u8]) -> Vec<u8>;

fn identity(b: &[u8]) -> Vec<u8> {
    b.to_vec()
}

fn raw_deflate(b: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(b).expect("deflate");
    e.finish().expect("deflate")
}

/// Sends one event per encoding to both endpoints and checks that each is stored with the
/// payload exactly as it was before compression.
#[tokio::test]
async fn every_content_encoding_is_decoded() {
    let fx = fixture().await;
    let cases: [(Option<&str>, Encoder); 11] = [
        (Some("gzip"), gzip),
        (Some("x-gzip"), gzip),
        (Some("GZIP"), gzip),
        (Some("deflate"), zlib),
        (Some("deflate"), raw_deflate),
        (Some("br"), brotli),
        (Some("zstd"), zstd),
        (Some("identity"), identity),
        (Some("UTF-8"), identity),
        (Some(""), identity),
        (None, identity),
    ];
    for (encoding, encode) in cases {
        let headers: Vec<(&str, &str)> = encoding
            .map(|e| ("content-encoding", e))
            .into_iter()
            .collect();
        let what = format!("content-encoding {encoding:?}");

        let id = new_id();
        let event = message_event(&id, &format!("envelope, {what}"));
        let r = fx
            .post_envelope(&headers, encode(&event_envelope(&event)))
            .await;
        assert_accepted(&r, &id, &format!("envelope, {what}"));
        assert_eq!(
            fx.payload(&id).await,
            event.to_string().into_bytes(),
            "envelope, {what}"
        );
        // A gzip envelope holding only the event is kept compressed, as it came; any other
        // event's JSON is compressed with LZ4 only when that is smaller, which this short event
        // is not (see `an_uncompressed_envelope_is_stored_compactly`).
        let gzip_body = encoding.is_some_and(|e| e.eq_ignore_ascii_case("gzip") || e == "x-gzip");
        assert_eq!(
            fx.payload_codec(&id).await,
            i64::from(gzip_body),
            "envelope, {what}"
        );

        let id = new_id();
        let event = message_event(&id, &format!("store, {what}"));
        let r = fx
            .post_store(&headers, encode(event.to_string().as_bytes()))
            .await;
        assert_accepted(&r, &id, &format!("store, {what}"));
        assert_eq!(
            fx.payload(&id).await,
            event.to_string().into_bytes(),
            "store, {what}"
        );
    }
}

/// A browser SDK's uncompressed envelope of a few KB is stored as an LZ4 block, a fraction of
/// its size, and read back byte for byte.
#[tokio::test]
async fn an_uncompressed_envelope_is_stored_compactly() {
    let fx = fixture().await;
    for (path, is_envelope) in [(envelope_path(fx.pid), true), (store_path(fx.pid), false)] {
        let id = new_id();
        let mut event = message_event(&id, "a browser's event");
        event["breadcrumbs"] = serde_json::json!({"values": (0..40).map(|i| serde_json::json!({
            "category": "navigation", "message": format!("went to /shop/item/{i}"), "level": "info"
        })).collect::<Vec<_>>()});
        let json = event.to_string().into_bytes();
        assert!(json.len() > 3000, "{} bytes", json.len());
        let body = if is_envelope {
            event_envelope(&event)
        } else {
            json.clone()
        };
        let r = fx.post(&path, &[], body).await;
        assert_accepted(&r, &id, &path);
        assert_eq!(fx.payload_codec(&id).await, 2, "{path}");
        let stored = Db::of(&fx.app)
            .await
            .row(&format!(
                "SELECT payload FROM events WHERE project_id = {} AND event_id = '{id}'",
                fx.pid
            ))
            .await[0]
            .bytes()
            .len();
        assert!(stored < json.len() / 2, "{stored} of {} bytes", json.len());
        assert_eq!(fx.payload(&id).await, json, "{path}");
    }
}

/// `copies` gzip members of `member_size` zeros each: a body of about `copies` KiB per MiB of
/// output. Concatenated members are one valid gzip stream, and repeating one member keeps the
/// test from spending seconds compressing zeros.
fn gzip_bomb(member_size: usize, copies: usize) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    e.write_all(&vec![0; member_size]).expect("gzip");
    e.finish().expect("gzip").repeat(copies)
}

#[tokio::test]
async fn gzip_bomb_is_refused_quickly() {
    let fx = fixture_with(|c| c.ingest.max_envelope_bytes = 4 * 1024 * 1024).await;
    // 1 GiB of zeros in about 1 MiB of gzip.
    let bomb = gzip_bomb(1024 * 1024, 1024);
    assert!(bomb.len() < 2 * 1024 * 1024);
    for path in [store_path(fx.pid), envelope_path(fx.pid)] {
        let started = Instant::now();
        let r = fx
            .post(&path, &[("content-encoding", "gzip")], bomb.clone())
            .await;
        assert_refused(&r, 413, &format!("bomb on {path}"));
        // Decompressing the whole gigabyte would take far longer (and as much memory); stopping
        // at the limit takes milliseconds, even unoptimised.
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{path}: refused after {:?}",
            started.elapsed()
        );
    }
    // Below the limit the body is decoded in full and judged on what it says.
    let inner = gzip_bomb(64 * 1024, 32);
    let r = fx
        .post_envelope(&[("content-encoding", "gzip")], inner)
        .await;
    assert_eq!(r.status, 400, "2 MiB of zeros is no envelope: {}", r.body);
    assert_serves(&fx.app, fx.pid, &fx.key, "after the bombs").await;
}

#[tokio::test]
async fn legacy_store_bodies() {
    let fx = fixture().await;
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);

    // Plain JSON, stored as sent.
    let id = new_id();
    let event = message_event(&id, "plain");
    let r = fx
        .post_store(
            &[("content-type", "application/json")],
            event.to_string().into_bytes(),
        )
        .await;
    assert_accepted(&r, &id, "plain JSON");
    assert_eq!(fx.payload(&id).await, event.to_string().into_bytes());

    // base64 of zlib (old raven clients), with and without padding.
    for (what, unpadded) in [("base64+zlib", false), ("base64+zlib unpadded", true)] {
        let id = new_id();
        let mut body = b64(&zlib(message_event(&id, what).to_string().as_bytes()));
        if unpadded {
            body = body.trim_end_matches('=').to_owned();
        }
        let r = fx
            .post_store(
                &[("content-type", "application/octet-stream")],
                body.into_bytes(),
            )
            .await;
        assert_accepted(&r, &id, what);
        let json: Value = serde_json::from_slice(&fx.payload(&id).await).expect("JSON");
        assert_eq!(json["message"], what);
    }

    // Python's NaN and Infinity.
    let id = new_id();
    let body = format!(
        r#"{{"event_id":"{id}","message":"not finite","extra":{{"a":NaN,"b":Infinity,"c":-Infinity}}}}"#
    );
    let r = fx.post_store(&[], body.into_bytes()).await;
    assert_accepted(&r, &id, "NaN and Infinity");
    let json: Value = serde_json::from_slice(&fx.payload(&id).await).expect("stored as valid JSON");
    assert_eq!(json["message"], "not finite");

    // No event_id: one is generated, returned and stored.
    let r = fx.post_store(&[], br#"{"message":"no id"}"#.to_vec()).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let id = r.body["id"].as_str().expect("generated id").to_owned();
    assert!(id.len() == 32 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')));
    let json: Value = serde_json::from_slice(&fx.payload(&id).await).expect("JSON");
    assert_eq!(
        json["event_id"],
        id.as_str(),
        "the payload carries the generated id"
    );

    // A dashed, upper-case id is normalised.
    let id = new_id();
    let dashed = uuid::Uuid::parse_str(&id)
        .expect("uuid")
        .hyphenated()
        .to_string()
        .to_uppercase();
    let r = fx
        .post_store(
            &[],
            message_event(&dashed, "dashed").to_string().into_bytes(),
        )
        .await;
    assert_accepted(&r, &id, "dashed id");

    // An envelope on /store/, recognised by its content type (case-insensitive, with or without
    // parameters).
    for content_type in [
        "application/x-sentry-envelope",
        "Application/X-Sentry-Envelope",
        "application/x-sentry-envelope; charset=utf-8",
    ] {
        let id = new_id();
        let r = fx
            .post_store(
                &[("content-type", content_type)],
                event_envelope(&message_event(&id, content_type)),
            )
            .await;
        assert_accepted(&r, &id, content_type);
        assert_eq!(stored(&fx.app, fx.pid, &id).await, 1, "{content_type}");
    }
}

#[tokio::test]
async fn browser_style_envelope() {
    let fx = fixture().await;
    let id = new_id();
    // As the browser SDK sends it: key in the query, text/plain, no length, no final newline.
    let body = format!(
        "{{\"event_id\":\"{id}\",\"sent_at\":\"2024-05-01T10:00:00.000Z\",\"sdk\":{{\"name\":\"sentry.javascript.browser\",\"version\":\"8.0.0\"}}}}\n{{\"type\":\"event\"}}\n{}",
        message_event(&id, "from a browser")
    );
    let path = format!(
        "{}?sentry_key={}&sentry_version=7&sentry_client=sentry.javascript.browser%2F8.0.0",
        envelope_path(fx.pid),
        fx.key
    );
    let r = send(
        &fx.app,
        "POST",
        &path,
        &[
            ("content-type", "text/plain;charset=UTF-8"),
            ("origin", "https://shop.example.com"),
        ],
        body.into_bytes(),
    )
    .await;
    assert_accepted(&r, &id, "browser envelope");
    assert_cors(&r, "browser envelope");
    assert_eq!(stored(&fx.app, fx.pid, &id).await, 1);
}

/// Framing variants: each envelope must be accepted and store the listed events, attachment
/// payloads and user reports.
struct Framing {
    what: &'static str,
    body: Vec<u8>,
    /// Event ids that must be stored, in the order the envelope carries them.
    events: Vec<String>,
    /// Attachment (filename, data) expected for this envelope's first event.
    attachments: Vec<(&'static str, Vec<u8>)>,
}

async fn check(fx: &Fixture, case: &Framing) {
    let r = fx.post_envelope(&[], case.body.clone()).await;
    match case.events.first() {
        Some(first) => assert_accepted(&r, first, case.what),
        None => assert_eq!((r.status, &r.body), (200, &json!({})), "{}", case.what),
    }
    for id in &case.events {
        assert_eq!(
            stored(&fx.app, fx.pid, id).await,
            1,
            "{}: event {id} stored",
            case.what
        );
    }
    if let Some(owner) = case.events.first() {
        let got: Vec<(String, Vec<u8>)> = Db::of(&fx.app)
            .await
            .rows(&format!(
                "SELECT filename, data FROM attachments WHERE event_id = '{owner}' ORDER BY id"
            ))
            .await
            .iter()
            .map(|r| (r[0].text().expect("filename"), r[1].bytes()))
            .collect();
        let want: Vec<(String, Vec<u8>)> = case
            .attachments
            .iter()
            .map(|(n, d)| (n.to_string(), d.clone()))
            .collect();
        assert_eq!(got, want, "{}: attachments", case.what);
    }
}

fn ev(id: &str, what: &str) -> Vec<u8> {
    message_event(id, what).to_string().into_bytes()
}

#[tokio::test]
async fn envelope_framing() {
    let fx = fixture().await;
    let ids: Vec<String> = (0..12).map(|_| new_id()).collect();
    let cases = [
        Framing {
            what: "python style: lengths and a final newline",
            body: envelope(
                json!({"event_id": ids[0]}),
                &[(json!({"type": "event", "content_type": "application/json"}), ev(&ids[0], "py"))],
            ),
            events: vec![ids[0].clone()],
            attachments: vec![],
        },
        Framing {
            what: "js style: no lengths, no final newline",
            body: format!(
                "{{\"event_id\":\"{}\"}}\n{{\"type\":\"event\"}}\n{}\n{{\"type\":\"attachment\",\"filename\":\"a.txt\"}}\nhello",
                ids[1],
                message_event(&ids[1], "js")
            )
            .into_bytes(),
            events: vec![ids[1].clone()],
            attachments: vec![("a.txt", b"hello".to_vec())],
        },
        Framing {
            what: "empty header and empty items",
            body: [
                b"{}\n".as_slice(),
                b"{\"type\":\"attachment\",\"length\":0,\"filename\":\"empty.bin\"}\n\n",
                b"{\"type\":\"client_report\"}\n\n",
                b"{\"type\":\"event\"}\n",
                &ev(&ids[2], "after empty items"),
                b"\n",
            ]
            .concat(),
            events: vec![ids[2].clone()],
            attachments: vec![("empty.bin", vec![])],
        },
        Framing {
            what: "\\r\\n inside payloads is data",
            body: {
                let event = format!("{{\"event_id\":\"{}\",\r\n\"message\":\"crlf\"}}\r\n", ids[3]);
                let attachment = b"line 1\r\nline 2\r\n".to_vec();
                envelope(
                    json!({"event_id": ids[3]}),
                    &[
                        (json!({"type": "event"}), event.into_bytes()),
                        (json!({"type": "attachment", "filename": "crlf.log"}), attachment),
                    ],
                )
            },
            events: vec![ids[3].clone()],
            attachments: vec![("crlf.log", b"line 1\r\nline 2\r\n".to_vec())],
        },
        Framing {
            what: "\\r before the newline of an item without length",
            body: format!(
                "{{\"event_id\":\"{}\"}}\r\n{{\"type\":\"event\"}}\r\n{}\r\n{{\"type\":\"attachment\",\"filename\":\"cr.txt\"}}\nabc\r\n",
                ids[4],
                message_event(&ids[4], "cr")
            )
            .into_bytes(),
            events: vec![ids[4].clone()],
            attachments: vec![("cr.txt", b"abc\r".to_vec())],
        },
        Framing {
            what: "unknown item types are skipped, the next item still read",
            body: envelope(
                json!({"event_id": ids[5]}),
                &[
                    (json!({"type": "something_new"}), b"{\"x\":1}".to_vec()),
                    (json!({"type": "replay_recording"}), vec![0xff, 0x00, b'\n', 0x01]),
                    (json!({"type": "event"}), ev(&ids[5], "after unknown")),
                    (json!({"type": "also_new", "filename": "x"}), b"not json at all".to_vec()),
                ],
            ),
            events: vec![ids[5].clone()],
            attachments: vec![],
        },
        Framing {
            what: "several events in one envelope",
            body: envelope(
                json!({"event_id": ids[6]}),
                &[
                    (json!({"type": "event"}), ev(&ids[6], "first")),
                    (json!({"type": "event"}), ev(&ids[7], "second")),
                    (json!({"type": "event"}), ev(&ids[8], "third")),
                ],
            ),
            events: vec![ids[6].clone(), ids[7].clone(), ids[8].clone()],
            attachments: vec![],
        },
        Framing {
            what: "several events, no header id",
            body: envelope(
                json!({}),
                &[
                    (json!({"type": "event"}), ev(&ids[9], "first")),
                    (json!({"type": "event"}), ev(&ids[10], "second")),
                ],
            ),
            events: vec![ids[9].clone(), ids[10].clone()],
            attachments: vec![],
        },
        Framing {
            what: "blank lines between items",
            body: format!(
                "{{\"event_id\":\"{}\"}}\n\n{{\"type\":\"event\"}}\n{}\n\n\n",
                ids[11],
                message_event(&ids[11], "blank lines")
            )
            .into_bytes(),
            events: vec![ids[11].clone()],
            attachments: vec![],
        },
    ];
    for c in &cases {
        check(&fx, c).await;
    }
    let total: usize = cases.iter().map(|c| c.events.len()).sum();
    assert_eq!(fx.events().await, total as i64, "no other events stored");
}

/// Events without any id get one each, and each is stored.
#[tokio::test]
async fn events_without_ids_get_distinct_ones() {
    let fx = fixture().await;
    let body = envelope(
        json!({}),
        &[
            (json!({"type": "event"}), br#"{"message":"one"}"#.to_vec()),
            (json!({"type": "event"}), br#"{"message":"two"}"#.to_vec()),
        ],
    );
    let r = fx.post_envelope(&[], body).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let id = r.body["id"].as_str().expect("an id").to_owned();
    assert_eq!(
        stored(&fx.app, fx.pid, &id).await,
        1,
        "the answered id is stored"
    );
    assert_eq!(fx.events().await, 2);
}

#[tokio::test]
async fn header_event_id_wins_and_duplicates_are_stored_once() {
    let fx = fixture().await;
    let (header_id, payload_id) = (new_id(), new_id());
    let body = envelope(
        json!({"event_id": header_id}),
        &[(json!({"type": "event"}), ev(&payload_id, "two ids"))],
    );
    let r = fx.post_envelope(&[], body.clone()).await;
    assert_accepted(&r, &header_id, "header id");
    assert_eq!(stored(&fx.app, fx.pid, &header_id).await, 1);
    assert_eq!(stored(&fx.app, fx.pid, &payload_id).await, 0);

    // The same envelope again (an SDK or proxy retry): 200, still one event, one error count.
    let r = fx.post_envelope(&[], body).await;
    assert_accepted(&r, &header_id, "retry");
    assert_eq!(stored(&fx.app, fx.pid, &header_id).await, 1);
    // The same id through /store/ too.
    let r = fx.post_store(&[], ev(&header_id, "two ids")).await;
    assert_accepted(&r, &header_id, "same id on /store/");
    assert_eq!(fx.events().await, 1);
    fx.app.settle_counts().await;
    assert_eq!(
        count(
            &fx.app,
            &format!(
                "SELECT CAST(SUM(event_count) AS BIGINT) FROM errors WHERE project_id = {}",
                fx.pid
            )
        )
        .await,
        1,
        "a duplicate does not count"
    );
}

/// Items that are only acknowledged: 200, nothing stored, counted by type in `/metrics`.
#[tokio::test]
async fn other_items_are_acknowledged_and_counted() {
    let fx = fixture().await;
    let types = [
        "transaction",
        "session",
        "sessions",
        "client_report",
        "check_in",
        "profile",
        "replay_event",
        "span",
        "log",
        "statsd",
    ];
    let series = |ty: &str| format!("faultline_envelope_items_total{{type=\"{ty}\"}}");
    let mut before = Vec::new();
    for ty in types.iter().chain(&["unknown"]) {
        before.push(metric(&fx.app, &series(ty)).await);
    }
    let trace_id = new_id();
    for ty in types {
        let payload = match ty {
            "transaction" => {
                json!({"event_id": new_id(), "type": "transaction", "transaction": "GET /", "spans": [], "contexts": {"trace": {"trace_id": trace_id, "span_id": "0123456789abcdef"}}})
            }
            "session" => {
                json!({"sid": new_id(), "status": "ok", "init": true, "started": "2024-01-01T00:00:00Z", "attrs": {"release": "a@1"}})
            }
            "client_report" => {
                json!({"timestamp": 1_700_000_000, "discarded_events": [{"reason": "queue_overflow", "category": "error", "quantity": 3}]})
            }
            _ => json!({"anything": ty}),
        };
        let body = envelope(
            json!({"sent_at": "2024-01-01T00:00:00Z"}),
            &[(json!({"type": ty}), payload.to_string().into_bytes())],
        );
        let r = fx.post_envelope(&[], body).await;
        assert_eq!((r.status, &r.body), (200, &json!({})), "{ty}");
    }
    let r = fx
        .post_envelope(
            &[],
            envelope(json!({}), &[(json!({"type": "future"}), b"?".to_vec())]),
        )
        .await;
    assert_eq!((r.status, &r.body), (200, &json!({})), "unknown type");
    for (ty, before) in types.iter().chain(&["unknown"]).zip(before) {
        assert_eq!(
            metric(&fx.app, &series(ty)).await,
            before + 1,
            "{ty} counted once"
        );
    }
    assert_eq!(fx.events().await, 0, "none of these is an event");
}

#[tokio::test]
async fn attachments_and_user_reports_are_stored() {
    let fx = fixture().await;
    let id = new_id();
    let report =
        json!({"event_id": id, "name": "Ada", "email": "ada@example.com", "comments": "it broke"});
    let feedback_id = new_id();
    let feedback = json!({
        "event_id": feedback_id,
        "contexts": {"feedback": {"message": "still broken", "contact_email": "bob@example.com", "name": "Bob", "associated_event_id": id}}
    });
    let body = envelope(
        json!({"event_id": id}),
        &[
            (json!({"type": "event"}), ev(&id, "with extras")),
            (
                json!({"type": "attachment", "filename": "dump.bin", "content_type": "application/octet-stream", "attachment_type": "event.minidump"}),
                vec![0, 1, 2, 255, b'\n', 3],
            ),
            (
                json!({"type": "user_report"}),
                report.to_string().into_bytes(),
            ),
            (
                json!({"type": "feedback"}),
                feedback.to_string().into_bytes(),
            ),
        ],
    );
    let r = fx.post_envelope(&[], body).await;
    assert_accepted(&r, &id, "event with extras");
    let db = Db::of(&fx.app).await;
    let r = db
        .row(&format!(
            "SELECT event_id, filename, content_type, attachment_type, data FROM attachments WHERE project_id = {}",
            fx.pid
        ))
        .await;
    let att: (String, String, Option<String>, Option<String>, Vec<u8>) = (
        r[0].text().expect("event_id"),
        r[1].text().expect("filename"),
        r[2].text(),
        r[3].text(),
        r[4].bytes(),
    );
    assert_eq!(
        att,
        (
            id.clone(),
            "dump.bin".into(),
            Some("application/octet-stream".into()),
            Some("event.minidump".into()),
            vec![0, 1, 2, 255, b'\n', 3]
        )
    );
    // (event_id, name, email, comments)
    type Report = [Option<String>; 4];
    let reports: Vec<Report> = db
        .rows(&format!(
            "SELECT event_id, name, email, comments FROM user_reports WHERE project_id = {} ORDER BY id",
            fx.pid
        ))
        .await
        .iter()
        .map(|r| [r[0].text(), r[1].text(), r[2].text(), r[3].text()])
        .collect();
    let s = |v: &str| Some(v.to_owned());
    assert_eq!(
        reports,
        vec![
            [s(&id), s("Ada"), s("ada@example.com"), s("it broke")],
            [s(&id), s("Bob"), s("bob@example.com"), s("still broken")],
        ]
    );

    // A user report on its own, about an earlier event: `{}` (no event in this envelope).
    let later =
        json!({"event_id": id, "name": "Cy", "email": "cy@example.com", "comments": "again"});
    let r = fx
        .post_envelope(
            &[],
            envelope(
                json!({}),
                &[(
                    json!({"type": "user_report"}),
                    later.to_string().into_bytes(),
                )],
            ),
        )
        .await;
    assert_eq!((r.status, &r.body), (200, &json!({})), "report alone");
    assert_eq!(
        count(
            &fx.app,
            &format!(
                "SELECT COUNT(*) FROM user_reports WHERE event_id = '{}'",
                id
            )
        )
        .await,
        3
    );
}

/// The `errors` row an event was grouped into: (id, event_count, status).
async fn error_of(app: &TestApp, project_id: i64, event_id: &str) -> (i64, i64, i64) {
    let rows = Db::of(app)
        .await
        .rows(&format!(
            "SELECT e.id, e.event_count, e.status FROM errors e JOIN events ev ON ev.error_id = e.id
             WHERE ev.project_id = {project_id} AND ev.event_id = '{event_id}'"
        ))
        .await;
    assert_eq!(rows.len(), 1, "event {event_id} grouped");
    (rows[0][0].int(), rows[0][1].int(), rows[0][2].int())
}

#[tokio::test]
async fn grouping_through_http() {
    let fx = fixture().await;
    let send = |event: Value| {
        let fx = &fx;
        async move {
            let id = event["event_id"].as_str().expect("id").to_owned();
            let r = post_event(&fx.app, fx.pid, &fx.key, &event).await;
            assert_accepted(&r, &id, "grouping event");
            // `error_of` reads counts from the database, not through the read API.
            fx.app.settle_counts().await;
            id
        }
    };
    // Same type and value, different in-app crash sites: two errors.
    let a = send(error_event(&new_id(), "KeyError", "'user'", "load_user")).await;
    let b = send(error_event(&new_id(), "KeyError", "'user'", "save_user")).await;
    let (ea, _, _) = error_of(&fx.app, fx.pid, &a).await;
    let (eb, _, _) = error_of(&fx.app, fx.pid, &b).await;
    assert_ne!(ea, eb, "two crash sites, two errors");

    // Same site, ids in the value: one error counting two events.
    let c = send(error_event(
        &new_id(),
        "LookupError",
        "user 41 not found",
        "find",
    ))
    .await;
    let d = send(error_event(
        &new_id(),
        "LookupError",
        "user 1042 not found",
        "find",
    ))
    .await;
    let (ec, _, _) = error_of(&fx.app, fx.pid, &c).await;
    let (ed, n, _) = error_of(&fx.app, fx.pid, &d).await;
    assert_eq!(ec, ed, "one site, one error");
    assert_eq!(n, 2);
    assert_eq!(
        count(
            &fx.app,
            &format!("SELECT COUNT(*) FROM errors WHERE project_id = {}", fx.pid)
        )
        .await,
        3
    );

    // A resolved error that happens again is unresolved again; an ignored one stays ignored.
    let db = Db::of(&fx.app).await;
    db.execute(&format!("UPDATE errors SET status = 1 WHERE id = {ec}"))
        .await;
    db.execute(&format!("UPDATE errors SET status = 2 WHERE id = {ea}"))
        .await;
    let e = send(error_event(
        &new_id(),
        "LookupError",
        "user 7 not found",
        "find",
    ))
    .await;
    assert_eq!(
        error_of(&fx.app, fx.pid, &e).await,
        (ec, 3, 0),
        "regression reopens"
    );
    let f = send(error_event(&new_id(), "KeyError", "'user'", "load_user")).await;
    assert_eq!(
        error_of(&fx.app, fx.pid, &f).await,
        (ea, 2, 2),
        "ignored stays ignored"
    );
}

#[tokio::test]
async fn events_of_one_project_never_group_with_another() {
    let app = spawn_app().await;
    let (p1, k1, _) = app.project_with_key("one").await;
    let (p2, k2, _) = app.project_with_key("two").await;
    let (i1, i2) = (new_id(), new_id());
    let r = post_event(&app, p1, &k1, &error_event(&i1, "E", "v", "f")).await;
    assert_accepted(&r, &i1, "project one");
    let r = post_event(&app, p2, &k2, &error_event(&i2, "E", "v", "f")).await;
    assert_accepted(&r, &i2, "project two");
    assert_ne!(
        error_of(&app, p1, &i1).await.0,
        error_of(&app, p2, &i2).await.0
    );
}
