//! The ingestion HTTP contract seen from a raw HTTP client: every row of the status table in
//! docs/protocol.md, "Answers" (status, `{"detail": ...}` body, `X-Sentry-Error`, CORS, nothing
//! stored, and the server still serving the next good event), the places an SDK may put its key, the route
//! families with their CORS preflight, and access changes made through the management API.

mod common;
mod ingest_support;

use common::{spawn_app_with, TestApp};
use ingest_support::*;
use serde_json::json;

/// A refused request: what it is, where it goes, its headers and body, the expected status,
/// and the event id inside it that must not be stored anywhere.
struct Case {
    what: &'static str,
    path: String,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
    status: u16,
    id: Option<String>,
}

/// One server with small limits and a project for every way a key can be refused.
struct Fixture {
    app: TestApp,
    /// A project with a working key.
    pid: i64,
    key: String,
    /// Another working project.
    other_pid: i64,
    other_key: String,
    /// A key of `pid` deleted through the management API.
    deleted_key: String,
    /// A project with a key but no settings row.
    no_setting: (i64, String),
    /// A project whose setting is `active=false`.
    inactive: (i64, String),
    /// A project whose setting is `integrated=false`.
    not_integrated: (i64, String),
}

const MAX_EVENT: usize = 10_000;
const MAX_ENVELOPE: usize = 40_000;
const MAX_COMPRESSED: usize = 30_000;
const MAX_ATTACHMENT: usize = 20_000;

async fn fixture() -> Fixture {
    let app = spawn_app_with(|c| {
        c.ingest.max_event_bytes = MAX_EVENT;
        c.ingest.max_envelope_bytes = MAX_ENVELOPE;
        c.ingest.max_compressed_bytes = MAX_COMPRESSED;
        c.ingest.max_attachment_bytes = MAX_ATTACHMENT;
    })
    .await;
    let (pid, key, _) = app.project_with_key("main").await;
    let (other_pid, other_key, _) = app.project_with_key("other").await;

    let doomed = app.create_key(pid).await;
    let deleted_key = doomed["public_key"].as_str().expect("key").to_owned();
    app.delete_key_by_public_key(pid, &deleted_key).await;

    let bare = app.project_id("bare", "errors").await;
    let bare_key = app.create_key(bare).await["public_key"]
        .as_str()
        .expect("key")
        .to_owned();

    let inactive = app.project_with_key("inactive").await;
    app.set_setting(inactive.0, "PUT", "active=false&integrated=true")
        .await;
    let not_integrated = app.project_with_key("external").await;
    app.set_setting(not_integrated.0, "PUT", "active=true&integrated=false")
        .await;

    Fixture {
        app,
        pid,
        key,
        other_pid,
        other_key,
        deleted_key,
        no_setting: (bare, bare_key),
        inactive: (inactive.0, inactive.1),
        not_integrated: (not_integrated.0, not_integrated.1),
    }
}

/// Sends the case, checks the refusal and that nothing of it was stored, then checks that the
/// server still accepts and stores a good event.
async fn check(fx: &Fixture, case: &Case) {
    let headers: Vec<(&str, &str)> = case.headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
    let r = send(&fx.app, "POST", &case.path, &headers, case.body.clone()).await;
    assert_refused(&r, case.status, case.what);
    if let Some(id) = &case.id {
        let n = count(
            &fx.app,
            &format!("SELECT COUNT(*) FROM events WHERE event_id = '{}'", id),
        )
        .await;
        assert_eq!(n, 0, "{}: refused event not stored", case.what);
    }
    assert_serves(&fx.app, fx.pid, &fx.key, case.what).await;
}

/// An event envelope with a fresh id, returned with the id.
fn event_body() -> (String, Vec<u8>) {
    let id = new_id();
    let body = event_envelope(&message_event(&id, "refused"));
    (id, body)
}

fn case(
    what: &'static str,
    path: String,
    headers: Vec<(&'static str, String)>,
    (id, body): (String, Vec<u8>),
    status: u16,
) -> Case {
    Case {
        what,
        path,
        headers,
        body,
        status,
        id: Some(id),
    }
}

fn auth(key: &str) -> Vec<(&'static str, String)> {
    vec![("x-sentry-auth", sentry_auth(key))]
}

#[tokio::test]
async fn authentication_and_access_refusals() {
    let fx = fixture().await;
    let (pid, key) = (fx.pid, fx.key.as_str());
    let env = envelope_path(pid);
    let unknown = "glet_00000000000000000000000000000000";
    let with_dsn = |dsn_key: &str| {
        let id = new_id();
        let dsn = format!("http://{dsn_key}@localhost/errortracking/api/v1/projects/{pid}");
        let body = envelope(
            json!({"event_id": id, "dsn": dsn}),
            &[(
                json!({"type": "event"}),
                message_event(&id, "x").to_string().into_bytes(),
            )],
        );
        (id, body)
    };
    let cases = [
        // 401: no key anywhere.
        case("no key, envelope", env.clone(), vec![], event_body(), 401),
        case(
            "no key, store",
            store_path(pid),
            vec![],
            {
                let id = new_id();
                (id.clone(), message_event(&id, "x").to_string().into_bytes())
            },
            401,
        ),
        // 401: malformed auth.
        case(
            "pair without '='",
            env.clone(),
            vec![(
                "x-sentry-auth",
                format!("Sentry sentry_key={key}, sentry_version"),
            )],
            event_body(),
            401,
        ),
        case(
            "x-sentry-auth of another scheme",
            env.clone(),
            vec![("x-sentry-auth", "Bearer abc".into())],
            event_body(),
            401,
        ),
        case(
            "version not a number",
            env.clone(),
            vec![(
                "authorization",
                format!("Sentry sentry_key={key}, sentry_version=seven"),
            )],
            event_body(),
            401,
        ),
        // 401: conflicting keys.
        case(
            "header and query disagree",
            format!("{env}?sentry_key={}&sentry_version=7", fx.other_key),
            auth(key),
            event_body(),
            401,
        ),
        case(
            "x-sentry-auth and authorization disagree",
            env.clone(),
            vec![
                ("x-sentry-auth", sentry_auth(key)),
                ("authorization", sentry_auth(&fx.other_key)),
            ],
            event_body(),
            401,
        ),
        // 401: unknown key.
        case("unknown key", env.clone(), auth(unknown), event_body(), 401),
        case(
            "key not shaped like ours",
            env.clone(),
            auth("abc"),
            event_body(),
            401,
        ),
        case(
            "unknown key in the envelope dsn",
            env.clone(),
            vec![],
            with_dsn(unknown),
            401,
        ),
        // 403: the key exists but may not send here.
        case(
            "deleted key",
            env.clone(),
            auth(&fx.deleted_key),
            event_body(),
            403,
        ),
        case(
            "key of another project",
            env.clone(),
            auth(&fx.other_key),
            event_body(),
            403,
        ),
        case(
            "key of another project in the envelope dsn",
            env.clone(),
            vec![],
            with_dsn(&fx.other_key),
            403,
        ),
        case(
            "setting missing",
            envelope_path(fx.no_setting.0),
            auth(&fx.no_setting.1),
            event_body(),
            403,
        ),
        case(
            "setting not active",
            envelope_path(fx.inactive.0),
            auth(&fx.inactive.1),
            event_body(),
            403,
        ),
        case(
            "setting not integrated",
            envelope_path(fx.not_integrated.0),
            auth(&fx.not_integrated.1),
            event_body(),
            403,
        ),
        // 400: the request names no project or a protocol we do not speak.
        case(
            "project id not a number",
            envelope_path("abc"),
            auth(key),
            event_body(),
            400,
        ),
        case(
            "project id with a sign",
            envelope_path(format!("+{pid}")),
            auth(key),
            event_body(),
            400,
        ),
        case(
            "project id too large",
            envelope_path("99999999999999999999"),
            auth(key),
            event_body(),
            400,
        ),
        case(
            "project id with trailing letters",
            envelope_path(format!("{pid}x")),
            auth(key),
            event_body(),
            400,
        ),
        case(
            "project id not a number, store",
            store_path("my-project"),
            auth(key),
            event_body(),
            400,
        ),
        case(
            "sentry_version=8 in the header",
            env.clone(),
            vec![(
                "x-sentry-auth",
                format!("Sentry sentry_key={key}, sentry_version=8"),
            )],
            event_body(),
            400,
        ),
        case(
            "sentry_version=8 in the query",
            format!("{env}?sentry_key={key}&sentry_version=8"),
            vec![],
            event_body(),
            400,
        ),
    ];
    for c in &cases {
        check(&fx, c).await;
    }
    // Nothing reached the other projects either.
    for project in [
        fx.other_pid,
        fx.no_setting.0,
        fx.inactive.0,
        fx.not_integrated.0,
    ] {
        assert_eq!(
            count(
                &fx.app,
                &format!("SELECT COUNT(*) FROM events WHERE project_id = {}", project)
            )
            .await,
            0,
            "project {project} received nothing"
        );
    }
}

#[tokio::test]
async fn body_refusals() {
    let fx = fixture().await;
    let (pid, key) = (fx.pid, fx.key.as_str());
    let env = envelope_path(pid);
    let store = store_path(pid);
    let with_encoding = |encoding: &str| {
        let mut h = auth(key);
        h.push(("content-encoding", encoding.to_owned()));
        h
    };
    let raw = |body: &[u8]| (new_id(), body.to_vec());
    // An envelope whose single event item is `payload`.
    let event_item = |payload: &[u8]| {
        let id = new_id();
        let body = envelope(
            json!({"event_id": id}),
            &[(json!({"type": "event"}), payload.to_vec())],
        );
        (id, body)
    };
    let big_message = |size: usize| {
        let id = new_id();
        let event = message_event(&id, &"m".repeat(size));
        (id, event)
    };

    let (store_big_id, store_big) = big_message(MAX_EVENT);
    let (item_big_id, item_big) = big_message(MAX_EVENT);
    // An envelope under the compressed limit whose decoded size is over the envelope limit.
    let (unpacked_id, unpacked) = {
        let id = new_id();
        let body = envelope(
            json!({"event_id": id}),
            &[
                (
                    json!({"type": "event"}),
                    message_event(&id, "x").to_string().into_bytes(),
                ),
                (
                    json!({"type": "attachment", "filename": "a.bin"}),
                    vec![0; MAX_ATTACHMENT - 1],
                ),
                (
                    json!({"type": "attachment", "filename": "b.bin"}),
                    vec![0; MAX_ATTACHMENT - 1],
                ),
            ],
        );
        assert!(body.len() > MAX_ENVELOPE);
        (id, gzip(&body))
    };
    let (attachment_big_id, attachment_big) = {
        let id = new_id();
        let body = envelope(
            json!({"event_id": id}),
            &[
                (
                    json!({"type": "event"}),
                    message_event(&id, "x").to_string().into_bytes(),
                ),
                (
                    json!({"type": "attachment", "filename": "a.bin"}),
                    vec![b'a'; MAX_ATTACHMENT + 1],
                ),
            ],
        );
        (id, body)
    };
    let compressed_big = {
        let (id, mut body) = event_body();
        // Whitespace after the last item is framing-neutral but still counts as sent bytes.
        body.resize(MAX_COMPRESSED + 1, b'\n');
        (id, body)
    };

    let cases = [
        // 400: nothing to read.
        case("empty envelope body", env.clone(), auth(key), raw(b""), 400),
        case("empty store body", store.clone(), auth(key), raw(b""), 400),
        case(
            "empty gzip body",
            env.clone(),
            with_encoding("gzip"),
            raw(&gzip(b"")),
            400,
        ),
        // 400: envelope framing.
        case(
            "envelope header not JSON",
            env.clone(),
            auth(key),
            raw(b"not json\n{\"type\":\"event\"}\n{}\n"),
            400,
        ),
        case(
            "item header not JSON",
            env.clone(),
            auth(key),
            raw(b"{}\nnot an item header\n{}\n"),
            400,
        ),
        case(
            "length past the end",
            env.clone(),
            auth(key),
            raw(b"{}\n{\"type\":\"event\",\"length\":500}\n{\"message\":\"short\"}\n"),
            400,
        ),
        case(
            "length not followed by a newline",
            env.clone(),
            auth(key),
            raw(b"{}\n{\"type\":\"event\",\"length\":2}\n{}x\n"),
            400,
        ),
        // 400: the event is not JSON.
        case(
            "invalid JSON event item",
            env.clone(),
            auth(key),
            event_item(b"{\"message\": "),
            400,
        ),
        case(
            "event item not an object",
            env.clone(),
            auth(key),
            event_item(b"[1, 2]"),
            400,
        ),
        case(
            "invalid JSON store body",
            store.clone(),
            auth(key),
            raw(b"{\"message\": "),
            400,
        ),
        case(
            "store body not an object",
            store.clone(),
            auth(key),
            raw(b"[1, 2]"),
            400,
        ),
        // 400: corrupt compression.
        case(
            "corrupt gzip",
            env.clone(),
            with_encoding("gzip"),
            raw(b"\x1f\x8b\x08\x00garbage that is not deflate"),
            400,
        ),
        case(
            "truncated gzip",
            env.clone(),
            with_encoding("gzip"),
            {
                let (id, body) = event_body();
                let z = gzip(&body);
                (id, z[..z.len() / 2].to_vec())
            },
            400,
        ),
        case(
            "corrupt deflate",
            env.clone(),
            with_encoding("deflate"),
            raw(b"\x78\x9c\xff\xff\xff\xff"),
            400,
        ),
        case(
            "corrupt brotli",
            env.clone(),
            with_encoding("br"),
            raw(b"\xff\xff\xff\xff not brotli"),
            400,
        ),
        case(
            "corrupt zstd",
            env.clone(),
            with_encoding("zstd"),
            raw(b"\x28\xb5\x2f\xfd garbage"),
            400,
        ),
        case(
            "raven body that is not base64",
            store.clone(),
            auth(key),
            raw(b"!!! not base64 !!!"),
            400,
        ),
        // 415: an encoding we cannot decode.
        case(
            "content-encoding compress",
            env.clone(),
            with_encoding("compress"),
            event_body(),
            415,
        ),
        case(
            "two stacked encodings",
            env.clone(),
            with_encoding("gzip, br"),
            event_body(),
            415,
        ),
        // 413: over a size limit.
        case(
            "store body over the event limit",
            store.clone(),
            auth(key),
            (store_big_id, store_big.to_string().into_bytes()),
            413,
        ),
        case(
            "store body over the event limit once decompressed",
            store.clone(),
            with_encoding("gzip"),
            (
                new_id(),
                gzip(big_message(MAX_EVENT).1.to_string().as_bytes()),
            ),
            413,
        ),
        case(
            "event item over its limit",
            env.clone(),
            auth(key),
            (item_big_id, event_envelope(&item_big)),
            413,
        ),
        case(
            "attachment item over its limit",
            env.clone(),
            auth(key),
            (attachment_big_id, attachment_big),
            413,
        ),
        case(
            "envelope over its limit once decompressed",
            env.clone(),
            with_encoding("gzip"),
            (unpacked_id, unpacked),
            413,
        ),
        case(
            "body over the compressed limit",
            env.clone(),
            auth(key),
            compressed_big,
            413,
        ),
    ];
    for c in &cases {
        check(&fx, c).await;
    }
}

#[tokio::test]
async fn rate_limit_answers_429_with_retry_headers() {
    let app = spawn_app_with(|c| c.ingest.rate_limit_per_minute = 2).await;
    let (pid, key, _) = app.project_with_key("limited").await;
    let (other_pid, other_key, _) = app.project_with_key("unlimited").await;
    for n in 0..2 {
        let id = new_id();
        let r = post_event(&app, pid, &key, &message_event(&id, "within the limit")).await;
        assert_accepted(&r, &id, &format!("event {n}"));
    }
    let id = new_id();
    let r = post_event(&app, pid, &key, &message_event(&id, "over the limit")).await;
    assert_refused(&r, 429, "third event");
    let retry: u64 = r
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .expect("Retry-After is seconds");
    assert!((1..=60).contains(&retry), "retry after {retry} s");
    assert_eq!(
        r.header("x-sentry-rate-limits"),
        Some(format!("{retry}::key").as_str())
    );
    assert_eq!(stored(&app, pid, &id).await, 0, "limited event not stored");
    // A /store/ event of the same key is limited too.
    let r = send(
        &app,
        "POST",
        &store_path(pid),
        &[("x-sentry-auth", &sentry_auth(&key))],
        message_event(&new_id(), "over the limit")
            .to_string()
            .into_bytes(),
    )
    .await;
    assert_refused(&r, 429, "store event over the limit");
    // Envelopes without events are not counted against the limit.
    let r = send(
        &app,
        "POST",
        &envelope_path(pid),
        &[("x-sentry-auth", &sentry_auth(&key))],
        envelope(json!({}), &[(json!({"type": "session"}), b"{}".to_vec())]),
    )
    .await;
    assert_eq!(
        (r.status, r.body),
        (200, json!({})),
        "session while limited"
    );
    // Other keys have their own budget.
    assert_serves(&app, other_pid, &other_key, "after a 429").await;
}

/// With a queue of one job and batches held open for 2 s, concurrent events find the queue
/// full: those are answered 503 with `Retry-After` and not stored, every 200 is stored. The long
/// window keeps the test independent of how slowly a loaded machine schedules the requests.
#[tokio::test]
async fn full_queue_answers_503_and_every_200_is_stored() {
    let app = spawn_app_with(|c| {
        c.ingest.queue_capacity = 1;
        c.ingest.batch_interval_ms = 2000;
        c.ingest.batch_size = 1000;
    })
    .await;
    let (pid, key, _) = app.project_with_key("busy").await;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..20 {
        let client = app.client.clone();
        let url = app.url(&envelope_path(pid));
        let auth = sentry_auth(&key);
        tasks.spawn(async move {
            let id = new_id();
            let r = client
                .post(url)
                .header("x-sentry-auth", auth)
                .body(event_envelope(&message_event(&id, "burst")))
                .send()
                .await
                .expect("sent");
            let status = r.status().as_u16();
            let retry = r
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().expect("ascii").to_owned());
            let body: serde_json::Value = r.json().await.expect("JSON body");
            (id, status, retry, body)
        });
    }
    let (mut ok, mut busy) = (0, 0);
    while let Some(res) = tasks.join_next().await {
        let (id, status, retry, body) = res.expect("task");
        match status {
            200 => {
                ok += 1;
                assert_eq!(body, json!({ "id": id }));
                assert_eq!(stored(&app, pid, &id).await, 1, "answered 200, so stored");
            }
            503 => {
                busy += 1;
                let secs: u64 = retry.expect("Retry-After on 503").parse().expect("seconds");
                assert!(secs >= 1);
                assert!(body["detail"].as_str().is_some_and(|d| !d.is_empty()));
                assert_eq!(
                    stored(&app, pid, &id).await,
                    0,
                    "answered 503, so not stored"
                );
            }
            other => panic!("unexpected status {other}: {body}"),
        }
    }
    assert!(ok >= 1, "some events were accepted");
    assert!(busy >= 1, "some events found the queue full");
    assert_serves(&app, pid, &key, "after a full queue").await;
}

#[tokio::test]
async fn success_bodies() {
    let fx = fixture().await;
    let (pid, key) = (fx.pid, fx.key.as_str());
    let id = new_id();
    let r = post_event(&fx.app, pid, key, &message_event(&id, "hello")).await;
    assert_accepted(&r, &id, "event");
    assert_cors(&r, "200");
    // The answer's id is always 32 lowercase hex, whatever form the SDK wrote it in.
    let dashed = uuid::Uuid::parse_str(&new_id())
        .expect("uuid")
        .hyphenated()
        .to_string()
        .to_uppercase();
    let r = post_event(&fx.app, pid, key, &message_event(&dashed, "dashed")).await;
    assert_accepted(&r, &dashed.replace('-', "").to_lowercase(), "dashed id");
    let r = send(
        &fx.app,
        "POST",
        &envelope_path(pid),
        &[("x-sentry-auth", &sentry_auth(key))],
        envelope(
            json!({"sent_at": "2024-01-01T00:00:00Z"}),
            &[(
                json!({"type": "session"}),
                br#"{"sid":"x","status":"ok"}"#.to_vec(),
            )],
        ),
    )
    .await;
    assert_eq!((r.status, &r.body), (200, &json!({})), "no event: {{}}");
    assert_cors(&r, "200 without event");
}

/// Each way an SDK names its key is accepted, and the event stored.
#[tokio::test]
async fn key_sources() {
    let fx = fixture().await;
    let (pid, key) = (fx.pid, fx.key.clone());
    let env = envelope_path(pid);
    let dsn = format!("http://{key}@localhost/errortracking/api/v1/projects/{pid}");
    struct Source {
        what: &'static str,
        path: String,
        headers: Vec<(&'static str, String)>,
        dsn: Option<String>,
    }
    let src = |what, path: String, headers: Vec<(&'static str, String)>| Source {
        what,
        path,
        headers,
        dsn: None,
    };
    let sources = [
        src("x-sentry-auth", env.clone(), vec![("x-sentry-auth", sentry_auth(&key))]),
        src(
            "authorization: Sentry",
            env.clone(),
            vec![("authorization", sentry_auth(&key))],
        ),
        src(
            "query string only",
            format!("{env}?sentry_key={key}&sentry_version=7&sentry_client=sentry.javascript.browser%2F8.0.0"),
            vec![],
        ),
        Source {
            what: "envelope dsn only",
            path: env.clone(),
            headers: vec![],
            dsn: Some(dsn.clone()),
        },
        Source {
            what: "envelope dsn with a secret",
            path: env.clone(),
            headers: vec![],
            dsn: Some(dsn.replace('@', ":shh@")),
        },
        Source {
            what: "envelope dsn ignored when a header names the key",
            path: env.clone(),
            headers: vec![("x-sentry-auth", sentry_auth(&key))],
            dsn: Some(dsn.replace(&key, &fx.other_key)),
        },
        src(
            "sentry_secret ignored",
            env.clone(),
            vec![(
                "x-sentry-auth",
                format!("Sentry sentry_key={key}, sentry_secret=whatever, sentry_version=7"),
            )],
        ),
        src(
            "lower-case prefix",
            env.clone(),
            vec![("x-sentry-auth", format!("sentry sentry_key={key}, sentry_version=7"))],
        ),
        src(
            "upper-case prefix",
            env.clone(),
            vec![("x-sentry-auth", format!("SENTRY sentry_key={key}"))],
        ),
        src(
            "pairs without spaces, unknown pairs",
            env.clone(),
            vec![(
                "x-sentry-auth",
                format!("Sentry sentry_version=7,sentry_timestamp=1700000000,sentry_key={key},foo=bar"),
            )],
        ),
        src(
            "header and query name the same key",
            format!("{env}?sentry_key={key}&sentry_version=7"),
            vec![("x-sentry-auth", sentry_auth(&key))],
        ),
        src(
            "foreign authorization scheme beside x-sentry-auth",
            env.clone(),
            vec![
                ("x-sentry-auth", sentry_auth(&key)),
                ("authorization", "Bearer glpat-something".into()),
            ],
        ),
        src(
            "version 7.0",
            env.clone(),
            vec![("x-sentry-auth", format!("Sentry sentry_key={key}, sentry_version=7.0"))],
        ),
        src(
            "older version 5",
            env.clone(),
            vec![("x-sentry-auth", format!("Sentry sentry_key={key}, sentry_version=5"))],
        ),
    ];
    for s in &sources {
        let id = new_id();
        let mut header = json!({"event_id": id});
        if let Some(dsn) = &s.dsn {
            header["dsn"] = json!(dsn);
        }
        let body = envelope(
            header,
            &[(
                json!({"type": "event"}),
                message_event(&id, s.what).to_string().into_bytes(),
            )],
        );
        let headers: Vec<(&str, &str)> = s.headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let r = send(&fx.app, "POST", &s.path, &headers, body).await;
        assert_accepted(&r, &id, s.what);
        assert_eq!(stored(&fx.app, pid, &id).await, 1, "{}: stored", s.what);
    }
    // The same sources on /store/ (no envelope header there).
    for (what, path, headers) in [
        (
            "store, x-sentry-auth",
            store_path(pid),
            vec![("x-sentry-auth", sentry_auth(&key))],
        ),
        (
            "store, query",
            format!("{}?sentry_key={key}&sentry_version=7", store_path(pid)),
            vec![],
        ),
    ] {
        let id = new_id();
        let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let r = send(
            &fx.app,
            "POST",
            &path,
            &headers,
            message_event(&id, what).to_string().into_bytes(),
        )
        .await;
        assert_accepted(&r, &id, what);
        assert_eq!(stored(&fx.app, pid, &id).await, 1, "{what}: stored");
    }
}

/// Every route family, with and without the trailing slash, accepts events and answers the
/// CORS preflight.
/// Every route answers the same on both of the gateway's paths: a plain project id is served
/// without the router, a zero-padded one (`0{id}`, the same project) through it. The headers,
/// bodies and stored rows match, and `/metrics` counts both under the one route template.
#[tokio::test]
async fn routes_and_cors_preflight() {
    let fx = fixture().await;
    let (pid, key) = (fx.pid, fx.key.as_str());
    let auth = sentry_auth(key);
    for prefix in [
        "/errortracking/api/v1/projects/api",
        "/errortracking/api/v1/projects/api/api",
        "/api",
        "/api/v4/error_tracking/collector/api",
    ] {
        for endpoint in ["envelope", "store"] {
            for slash in ["", "/"] {
                let template = format!("{prefix}/{{project_id}}/{endpoint}{slash}");
                for project in [pid.to_string(), format!("0{pid}")] {
                    let path = format!("{prefix}/{project}/{endpoint}{slash}");
                    let id = new_id();
                    let event = message_event(&id, &path);
                    let body = if endpoint == "envelope" {
                        event_envelope(&event)
                    } else {
                        event.to_string().into_bytes()
                    };
                    let r = send(&fx.app, "POST", &path, &[("x-sentry-auth", &auth)], body).await;
                    assert_accepted(&r, &id, &path);
                    assert_cors(&r, &path);
                    assert_eq!(stored(&fx.app, pid, &id).await, 1, "{path}: stored");

                    let r = send(
                        &fx.app,
                        "OPTIONS",
                        &path,
                        &[
                            ("origin", "https://app.example.com"),
                            ("access-control-request-method", "POST"),
                            (
                                "access-control-request-headers",
                                "content-type, x-sentry-auth",
                            ),
                        ],
                        Vec::new(),
                    )
                    .await;
                    assert_eq!(r.status, 200, "OPTIONS {path}");
                    assert_cors(&r, &format!("OPTIONS {path}"));

                    // A refusal on the same route carries the CORS headers too.
                    let r = send(&fx.app, "POST", &path, &[], b"{}".to_vec()).await;
                    assert_refused(&r, 401, &format!("{path} without key"));
                }
                let series = |method: &str, status: u16| {
                    format!(
                        "faultline_http_requests_total{{route=\"{template}\",method=\"{method}\",status=\"{status}\"}}"
                    )
                };
                for (method, status) in [("POST", 200), ("POST", 401), ("OPTIONS", 200)] {
                    assert_eq!(
                        metric(&fx.app, &series(method, status)).await,
                        2,
                        "{template}: {method} {status} counted once per path"
                    );
                }
            }
        }
    }
}

/// A key only sends to its own project; switching a project's tracking off through the
/// management API takes effect on the next event, and so does switching it back on.
#[tokio::test]
async fn access_follows_the_management_api() {
    let fx = fixture().await;
    let app = &fx.app;
    let (a, a_key) = (fx.pid, fx.key.as_str());
    let (b, b_key) = (fx.other_pid, fx.other_key.as_str());
    let before = count(app, "SELECT COUNT(*) FROM events").await;

    let id = new_id();
    let r = post_event(app, b, a_key, &message_event(&id, "wrong project")).await;
    assert_refused(&r, 403, "key of A on B's URL");
    assert_eq!(stored(app, a, &id).await + stored(app, b, &id).await, 0);
    assert_eq!(count(app, "SELECT COUNT(*) FROM events").await, before);

    app.set_setting(b, "PATCH", "active=false").await;
    let id = new_id();
    let r = post_event(app, b, b_key, &message_event(&id, "while off")).await;
    assert_refused(&r, 403, "after PATCH active=false");
    assert_eq!(stored(app, b, &id).await, 0);
    // Project A is untouched.
    assert_serves(app, a, a_key, "A while B is off").await;

    app.set_setting(b, "PATCH", "active=true").await;
    let id = new_id();
    let r = post_event(app, b, b_key, &message_event(&id, "back on")).await;
    assert_accepted(&r, &id, "after PATCH active=true");
    assert_eq!(stored(app, b, &id).await, 1);

    // Deleting a key refuses it at once; the project's other keys keep working.
    let spare = app.create_key(b).await["public_key"]
        .as_str()
        .expect("key")
        .to_owned();
    app.delete_key_by_public_key(b, b_key).await;
    let r = post_event(app, b, b_key, &message_event(&new_id(), "deleted")).await;
    assert_refused(&r, 403, "deleted key");
    assert_serves(app, b, &spare, "spare key").await;
}

/// A project deleted while its events wait in the writer's open batch must not fail the other
/// projects' events in that batch: they are answered 200 and stored.
#[tokio::test]
async fn project_deleted_while_its_events_are_queued() {
    let app = spawn_app_with(|c| {
        c.ingest.batch_interval_ms = 500;
        c.ingest.batch_size = 1000;
    })
    .await;
    let (doomed, doomed_key, _) = app.project_with_key("doomed").await;
    let (kept, kept_key, _) = app.project_with_key("kept").await;
    let writer = app.server.state.writer.clone();

    let post = |pid: i64, key: &str| {
        let client = app.client.clone();
        let url = app.url(&envelope_path(pid));
        let auth = sentry_auth(key);
        let id = new_id();
        let body = event_envelope(&message_event(&id, "queued"));
        let task = tokio::spawn(async move {
            let r = client
                .post(url)
                .header("x-sentry-auth", auth)
                .body(body)
                .send()
                .await
                .expect("sent");
            (r.status().as_u16(), r.text().await.expect("body"))
        });
        (id, task)
    };
    let (_, doomed_task) = post(doomed, &doomed_key);
    let (kept_id, kept_task) = post(kept, &kept_key);
    // Both events are in the writer's hands (the batch stays open for 500 ms)...
    while writer.depth() < 2 {
        tokio::task::yield_now().await;
    }
    // ...when one of the projects is deleted.
    let (s, b) = app
        .call(
            "DELETE",
            &format!("/api/v4/projects/{doomed}"),
            Some(&app.admin_token),
            None,
        )
        .await;
    assert_eq!(s, 202, "delete project: {b}");

    let (status, body) = kept_task.await.expect("task");
    assert_eq!(status, 200, "the other project's event: {body}");
    assert_eq!(stored(&app, kept, &kept_id).await, 1);
    let (status, body) = doomed_task.await.expect("task");
    assert_eq!(status, 200, "accepted before the project went away: {body}");
    assert_eq!(
        count(
            &app,
            &format!("SELECT COUNT(*) FROM events WHERE project_id = {}", doomed)
        )
        .await,
        0,
        "nothing stored for a deleted project"
    );
    assert_serves(&app, kept, &kept_key, "after the deletion").await;
}

/// A `/store/` body that is neither JSON nor base64 of zlib says which two forms it could take,
/// whichever of the two decodings failed.
#[tokio::test]
async fn a_store_body_of_neither_form_says_what_it_should_be() {
    let app = common::spawn_app().await;
    let (project, key, _) = app.project_with_key("store-forms").await;
    let url = app.url(&format!(
        "/api/{project}/store/?sentry_key={key}&sentry_version=7"
    ));
    // Not base64 at all; base64 of text that is not zlib.
    for body in ["!!! not base64 !!!", "aGVsbG8gd29ybGQ="] {
        let r = app
            .client
            .post(&url)
            .body(body)
            .send()
            .await
            .expect("answered");
        assert_eq!(r.status(), 400, "{body}");
        let body: serde_json::Value = r.json().await.expect("JSON");
        assert_eq!(
            body,
            json!({"detail": "invalid event: the body is neither JSON nor base64-encoded zlib"})
        );
    }
}
