//! The read API end to end: events go in through the real `sentry` crate (or a raw `/store/`
//! request where the exact bytes matter), and come back through
//! `/errortracking/api/v1/projects/:id/...` as GitLab's error-tracking backend shows them.

mod common;

use std::collections::HashSet;
use std::time::{Duration, SystemTime};

use common::{eventually, sdk, spawn_app, spawn_on_dir, Auth, Body, Db, Resp, TestApp};
use sentry::protocol::{Event, Exception, User};
use serde_json::{json, Value};

/// Sends the events in order through the SDK and waits until the gateway answered them all
/// (ingestion answers after the commit, so they are readable afterwards).
async fn send(dsn: &str, events: Vec<Event<'static>>) -> Vec<String> {
    let dsn = dsn.to_owned();
    tokio::task::spawn_blocking(move || {
        let (hub, client) = sdk(&dsn);
        let mut ids = Vec::new();
        // The SDK's transport queue holds 30 envelopes and drops what does not fit; flushing
        // every ten events keeps every event.
        for chunk in events.chunks(10) {
            for e in chunk {
                ids.push(hub.capture_event(e.clone()).simple().to_string());
            }
            assert!(client.flush(Some(Duration::from_secs(10))), "SDK flushed");
        }
        ids
    })
    .await
    .expect("sdk thread")
}

/// An exception event; errors with different types are different groups.
fn exception(ty: &str, value: &str) -> Event<'static> {
    Event {
        exception: vec![Exception {
            ty: ty.to_owned(),
            value: Some(value.to_owned()),
            ..Default::default()
        }]
        .into(),
        level: sentry::Level::Error,
        ..Default::default()
    }
}

/// The same, `hours_ago` hours (plus `secs_ago` seconds) in the past by its SDK timestamp.
fn exception_at(ty: &str, hours_ago: u64, secs_ago: u64) -> Event<'static> {
    Event {
        timestamp: SystemTime::now() - Duration::from_secs(hours_ago * 3600 + secs_ago),
        ..exception(ty, "boom")
    }
}

fn message(text: &str, level: sentry::Level) -> Event<'static> {
    Event {
        message: Some(text.to_owned()),
        level,
        ..Default::default()
    }
}

fn api(project: i64, rest: &str) -> String {
    format!("/errortracking/api/v1/projects/{project}{rest}")
}

async fn get(app: &TestApp, path: &str, token: &str) -> Resp {
    app.send("GET", path, Auth::Private(token), Body::None)
        .await
}

/// GETs a list and returns it, checking the status.
async fn list(app: &TestApp, path: &str) -> Vec<Value> {
    let r = get(app, path, &app.admin_token).await;
    assert_eq!(r.status, 200, "{path}: {}", r.body);
    r.body.as_array().expect("a JSON array").clone()
}

fn names(errors: &[Value]) -> Vec<String> {
    errors
        .iter()
        .map(|e| e["name"].as_str().expect("name").to_owned())
        .collect()
}

/// The error named `name` in the project's default (unresolved) list.
async fn find(app: &TestApp, project: i64, name: &str) -> Value {
    let all = list(app, &api(project, "/errors?limit=100")).await;
    all.into_iter()
        .find(|e| e["name"] == name)
        .unwrap_or_else(|| panic!("{name} listed"))
}

/// The path and query of the `<url>; rel="next"` part of the `Link` header, which must be
/// absolute and on the gateway's own address.
fn next_of(app: &TestApp, r: &Resp) -> Option<String> {
    rel_of(app, r, "next")
}

/// The path and query of the `Link` header's part with `rel`.
fn rel_of(app: &TestApp, r: &Resp, rel: &str) -> Option<String> {
    let link = r.header("link")?;
    let suffix = format!(">; rel=\"{rel}\"");
    let url = link
        .split(", ")
        .find_map(|part| part.strip_suffix(&suffix))
        .map(|part| {
            part.strip_prefix('<')
                .unwrap_or_else(|| panic!("Link header shape: {link}"))
        })?;
    let rest = url
        .strip_prefix(&app.base)
        .unwrap_or_else(|| panic!("absolute link on the gateway: {url}"));
    assert!(rest.contains("cursor="), "link carries a cursor: {url}");
    Some(rest.to_owned())
}

/// Walks every page from `first`, running `between` after each page, and returns the names in
/// the order they were returned.
async fn walk<F, Fut>(app: &TestApp, first: &str, mut between: F) -> (Vec<String>, usize)
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut seen = Vec::new();
    let mut next = Some(first.to_owned());
    let mut pages = 0;
    while let Some(path) = next {
        let r = get(app, &path, &app.admin_token).await;
        assert_eq!(r.status, 200, "{path}: {}", r.body);
        let page = r.body.as_array().expect("array").clone();
        next = next_of(app, &r);
        assert!(
            next.is_none() || !page.is_empty(),
            "a next link only after a non-empty page"
        );
        seen.extend(names(&page));
        pages += 1;
        assert!(pages < 50, "paging terminates");
        between(pages).await;
    }
    (seen, pages)
}

fn assert_no_duplicates(seen: &[String]) {
    let mut unique = HashSet::new();
    for n in seen {
        assert!(unique.insert(n), "{n} returned twice in {seen:?}");
    }
}

async fn count(db: &Db, sql: &str) -> i64 {
    db.int(sql).await
}

fn now_millis() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grouping_shows_as_counts_in_gitlab_shapes() {
    let app = spawn_app().await;
    let (project, _key, dsn) = app.project_with_key("shapes").await;
    let with_user = |ty: &str, user: &str| Event {
        user: Some(User {
            id: Some(user.to_owned()),
            ..Default::default()
        }),
        ..exception(ty, "user 41 not found")
    };
    send(
        &dsn,
        vec![
            with_user("NotFound", "u1"),
            with_user("NotFound", "u2"),
            with_user("NotFound", "u1"),
            exception("Timeout", "upstream took too long"),
        ],
    )
    .await;

    let before = chrono::Utc::now().timestamp();
    let errors = list(&app, &api(project, "/errors")).await;
    assert_eq!(errors.len(), 2, "two groups: {errors:?}");
    let nf = find(&app, project, "NotFound").await;
    let keys: Vec<&str> = nf
        .as_object()
        .expect("object")
        .keys()
        .map(|k| k.as_str())
        .collect();
    assert_eq!(
        keys,
        [
            "fingerprint",
            "project_id",
            "name",
            "description",
            "actor",
            "event_count",
            "approximated_user_count",
            "first_seen_at",
            "last_seen_at",
            "status",
            "stats"
        ]
    );
    assert_eq!(nf["event_count"], 3);
    assert_eq!(nf["approximated_user_count"], 2, "two distinct users");
    assert_eq!(nf["project_id"], project);
    assert_eq!(nf["status"], "unresolved");
    assert_eq!(nf["description"], "user 41 not found");
    assert!(nf["fingerprint"].as_i64().expect("integer fingerprint") > 0);
    for field in ["first_seen_at", "last_seen_at"] {
        let t = nf[field].as_str().expect("timestamp string");
        assert!(t.ends_with('Z'), "UTC: {t}");
        let parsed = chrono::DateTime::parse_from_rfc3339(t).expect("RFC 3339");
        let age = chrono::Utc::now().signed_duration_since(parsed);
        assert!(age.num_seconds().abs() < 60, "{field} is about now: {t}");
    }
    let buckets = nf["stats"]["frequency"]["24h"]
        .as_array()
        .expect("24h series");
    assert_eq!(buckets.len(), 24);
    let hours: Vec<i64> = buckets.iter().map(|b| b[0].as_i64().expect("ts")).collect();
    assert!(
        hours.windows(2).all(|w| w[1] - w[0] == 3600),
        "hourly: {hours:?}"
    );
    let hour_now = |t: i64| t.div_euclid(3600) * 3600;
    assert!(
        hours[23] == hour_now(before) || hours[23] == hour_now(chrono::Utc::now().timestamp()),
        "ends with the current hour"
    );
    let total: i64 = buckets.iter().map(|b| b[1].as_i64().expect("count")).sum();
    assert_eq!(total, 3, "every event of the last 24h is counted once");

    // The single-error route shows the same thing.
    let fp = nf["fingerprint"].as_i64().expect("fp");
    let one = get(
        &app,
        &api(project, &format!("/errors/{fp}")),
        &app.admin_token,
    )
    .await;
    assert_eq!(one.status, 200);
    assert_eq!(one.body, nf);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_sort_order_and_the_hourly_counts() {
    let app = spawn_app().await;
    let (project, _key, dsn) = app.project_with_key("sorts").await;
    // Alpha: first seen 5h ago, last seen 1h ago, 2 events.
    // Beta: first seen 4h ago, last seen 3h ago, 3 events.
    // Gamma: seen once, 2h ago.
    let now = SystemTime::now();
    let ago = |hours: u64| now - Duration::from_secs(hours * 3600);
    let at = |ty: &str, t: SystemTime| Event {
        timestamp: t,
        ..exception(ty, "boom")
    };
    send(
        &dsn,
        vec![
            at("Alpha", ago(5)),
            at("Alpha", ago(1)),
            at("Beta", ago(4)),
            at("Beta", ago(3)),
            at("Beta", ago(3)),
            at("Gamma", ago(2)),
        ],
    )
    .await;
    let order = |sort: &'static str| {
        let app = &app;
        async move { names(&list(app, &api(project, &format!("/errors?sort={sort}"))).await) }
    };
    assert_eq!(order("last_seen_desc").await, ["Alpha", "Gamma", "Beta"]);
    assert_eq!(
        names(&list(&app, &api(project, "/errors")).await),
        ["Alpha", "Gamma", "Beta"],
        "last_seen_desc is the default"
    );
    assert_eq!(order("first_seen_desc").await, ["Gamma", "Beta", "Alpha"]);
    assert_eq!(order("frequency_desc").await, ["Beta", "Alpha", "Gamma"]);

    // Beta's events sit in the buckets of their hours.
    let beta = find(&app, project, "Beta").await;
    let buckets = beta["stats"]["frequency"]["24h"]
        .as_array()
        .expect("series");
    let bucket = |t: SystemTime| {
        let secs = t
            .duration_since(SystemTime::UNIX_EPOCH)
            .expect("after 1970")
            .as_secs() as i64;
        let hour = secs.div_euclid(3600) * 3600;
        buckets
            .iter()
            .find(|b| b[0] == hour)
            .map(|b| b[1].as_i64().expect("count"))
            .expect("bucket present")
    };
    assert_eq!(bucket(ago(4)), 1);
    assert_eq!(bucket(ago(3)), 2);
    let total: i64 = buckets.iter().map(|b| b[1].as_i64().expect("n")).sum();
    assert_eq!(total, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_filter_query_status_change_and_regression() {
    let app = spawn_app().await;
    let (project, _key, dsn) = app.project_with_key("triage").await;
    send(
        &dsn,
        vec![
            exception("DatabaseError", "connection reset by peer"),
            exception("ParseError", "unexpected token in JSON"),
            exception("QuotaError", "disk quota exceeded"),
        ],
    )
    .await;
    let fp = |e: &Value| e["fingerprint"].as_i64().expect("fp");
    let db_err = fp(&find(&app, project, "DatabaseError").await);
    let quota = fp(&find(&app, project, "QuotaError").await);

    // Free text over name and description, case-insensitive.
    let q = |query: &str| {
        let path = api(project, &format!("/errors?query={query}"));
        let app = &app;
        async move { names(&list(app, &path).await) }
    };
    assert_eq!(q("parse").await, ["ParseError"]);
    assert_eq!(q("RESET%20BY").await, ["DatabaseError"]);
    assert_eq!(
        q("%25").await,
        Vec::<String>::new(),
        "a literal %, not a wildcard"
    );
    assert_eq!(q("Error").await.len(), 3);

    // Resolve one, ignore another (JSON body and query string both work).
    let put = |fingerprint: i64, body: Body, query: &str| {
        let path = api(project, &format!("/errors/{fingerprint}{query}"));
        let app = &app;
        async move {
            app.send("PUT", &path, Auth::Private(&app.admin_token), body)
                .await
        }
    };
    let r = put(db_err, Body::Json(json!({"status": "resolved"})), "").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["status"], "resolved");
    assert_eq!(r.body["name"], "DatabaseError");
    let r = put(quota, Body::None, "?status=ignored").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["status"], "ignored");
    let r = put(quota, Body::Json(json!({"status": "fixed"})), "").await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.body,
        json!({"error": "status does not have a valid value"})
    );
    let r = put(quota, Body::None, "").await;
    assert_eq!(r.status, 400);
    assert_eq!(r.body, json!({"error": "status is missing"}));

    let by_status = |status: &'static str| {
        let app = &app;
        async move { names(&list(app, &api(project, &format!("/errors?status={status}"))).await) }
    };
    assert_eq!(by_status("unresolved").await, ["ParseError"]);
    assert_eq!(by_status("resolved").await, ["DatabaseError"]);
    assert_eq!(by_status("ignored").await, ["QuotaError"]);
    let r = get(&app, &api(project, "/errors?status=open"), &app.admin_token).await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.body,
        json!({"error": "status does not have a valid value"})
    );

    // A new event on the resolved error is a regression: unresolved again, counted. An ignored
    // error stays ignored.
    send(
        &dsn,
        vec![
            exception("DatabaseError", "connection reset by peer"),
            exception("QuotaError", "disk quota exceeded"),
        ],
    )
    .await;
    let mut unresolved = by_status("unresolved").await;
    unresolved.sort();
    assert_eq!(unresolved, ["DatabaseError", "ParseError"]);
    assert_eq!(by_status("resolved").await, Vec::<String>::new());
    assert_eq!(by_status("ignored").await, ["QuotaError"]);
    let again = get(
        &app,
        &api(project, &format!("/errors/{db_err}")),
        &app.admin_token,
    )
    .await;
    assert_eq!(again.body["status"], "unresolved");
    assert_eq!(again.body["event_count"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_of_an_unchanging_list_return_every_error_once() {
    let app = spawn_app().await;
    let (project, _key, dsn) = app.project_with_key("pages").await;
    // Seven errors; some share their sort keys so that ties are broken by id. Timestamps are
    // whole seconds in the past, so two events can share a last_seen_at exactly.
    let mut events = Vec::new();
    for (i, ty) in ["E1", "E2", "E3", "E4", "E5", "E6", "E7"]
        .iter()
        .enumerate()
    {
        let hours = (i % 3) as u64;
        for _ in 0..=(i % 2) {
            events.push(Event {
                timestamp: SystemTime::UNIX_EPOCH
                    + Duration::from_secs(
                        (chrono::Utc::now().timestamp() as u64 / 60) * 60 - hours * 3600,
                    ),
                ..exception(ty, "x")
            });
        }
    }
    send(&dsn, events).await;
    let everyone: HashSet<String> = (1..=7).map(|i| format!("E{i}")).collect();
    for sort in ["last_seen_desc", "first_seen_desc", "frequency_desc"] {
        let unpaged = names(&list(&app, &api(project, &format!("/errors?sort={sort}"))).await);
        let (seen, pages) = walk(
            &app,
            &api(project, &format!("/errors?sort={sort}&limit=2")),
            |_| async {},
        )
        .await;
        assert_eq!(pages, 4, "{sort}: 2 + 2 + 2 + 1");
        assert_eq!(
            seen, unpaged,
            "{sort}: pages concatenate to the one-page list"
        );
        assert_eq!(seen.iter().cloned().collect::<HashSet<_>>(), everyone);
    }
    // Exactly `limit` errors: one page, no link.
    let r = get(&app, &api(project, "/errors?limit=7"), &app.admin_token).await;
    assert_eq!(r.body.as_array().map(Vec::len), Some(7));
    assert_eq!(r.header("link"), None, "no next page, no Link");
    // The query and filter carry over to the next page.
    let r = get(
        &app,
        &api(project, "/errors?limit=1&query=E&sort=frequency_desc"),
        &app.admin_token,
    )
    .await;
    let next = next_of(&app, &r).expect("a next page");
    assert!(
        next.contains("query=E")
            && next.contains("sort=frequency_desc")
            && next.contains("limit=1"),
        "{next}"
    );
    assert!(!next.contains("private_token"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paging_while_events_arrive_never_repeats_an_error() {
    let app = spawn_app().await;
    for sort in ["last_seen_desc", "frequency_desc", "first_seen_desc"] {
        // A project per order, so that one walk's events do not shape the next one's list.
        let (project, _key, dsn) = app.project_with_key(&format!("moving-{sort}")).await;
        // E0 was seen longest ago ... E7 most recently, and E7 has the most events.
        let mut events = Vec::new();
        for i in 0..8u64 {
            for _ in 0..=i {
                events.push(exception_at(&format!("E{i}"), 8 - i, 0));
            }
        }
        send(&dsn, events).await;

        // After every page: a new event for E7 (already returned, except in first_seen order)
        // and a brand-new error; after the first page also twenty events for E1, which then
        // still lies ahead of the cursor in every order.
        let feed = dsn.clone();
        let (seen, _) = walk(
            &app,
            &api(project, &format!("/errors?sort={sort}&limit=2")),
            move |page| {
                let dsn = feed.clone();
                async move {
                    let mut more = vec![
                        exception("E7", "boom"),
                        exception(&format!("New{page}"), "new"),
                    ];
                    if page == 1 {
                        more.extend((0..20).map(|_| exception("E1", "boom")));
                    }
                    send(&dsn, more).await;
                }
            },
        )
        .await;
        assert_no_duplicates(&seen);
        let returned: HashSet<&str> = seen.iter().map(String::as_str).collect();
        // Errors that did not change are all returned.
        for untouched in ["E0", "E2", "E3", "E4", "E5", "E6", "E7"] {
            assert!(
                returned.contains(untouched),
                "{sort}: {untouched} in {seen:?}"
            );
        }
        let fresh = names(
            &list(
                &app,
                &api(project, &format!("/errors?sort={sort}&limit=100")),
            )
            .await,
        );
        let at = |n: &str| fresh.iter().position(|f| f == n).expect("listed");
        let new_ones = seen.iter().filter(|n| n.starts_with("New")).count();
        match sort {
            // E1's key grew past the cursor: it moved towards the front, behind the walk, and
            // is skipped, exactly as documented; a fresh walk shows it ahead of the errors it
            // overtook. New errors are seen last: they sort ahead of the cursor.
            "last_seen_desc" => {
                assert!(!returned.contains("E1"), "{sort}: E1 skipped, {seen:?}");
                assert!(at("E1") < at("E6"), "{sort}: {fresh:?}");
                assert_eq!(new_ones, 0, "{sort}: {seen:?}");
            }
            // Same for E1; new errors have one event and sort at the end, after the cursor,
            // so the walk meets them.
            "frequency_desc" => {
                assert!(!returned.contains("E1"), "{sort}: E1 skipped, {seen:?}");
                assert!(at("E1") < at("E6"), "{sort}: {fresh:?}");
                assert!(new_ones > 0, "{sort}: {seen:?}");
            }
            // New events do not change first_seen_at: E1 keeps its place and is returned.
            _ => {
                assert!(
                    returned.contains("E1"),
                    "{sort}: E1 kept its place, {seen:?}"
                );
                assert_eq!(new_ones, 0, "{sort}: {seen:?}");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_of_an_error_with_their_payload_as_sent() {
    let app = spawn_app().await;
    let (project, key, dsn) = app.project_with_key("events").await;
    let ids = send(
        &dsn,
        vec![
            exception_at("Crash", 3, 0),
            exception_at("Crash", 2, 0),
            exception_at("Crash", 1, 0),
        ],
    )
    .await;
    // One more, sent raw, so that the exact bytes are known: odd spacing and key order (with an
    // event id, which spares `/store/` from adding one).
    let raw = format!(
        "{{ \"exception\" : {{\"values\":[{{\"type\":\"Crash\",\"value\":\"boom\"}}]}},\n  \"platform\":\"python\", \"timestamp\": {}, \"environment\":\"staging\", \"level\":\"error\", \"event_id\": \"0123456789abcdef0123456789abcdef\" }}",
        chrono::Utc::now().timestamp()
    );
    let r = app
        .client
        .post(app.url(&format!("/api/{project}/store/")))
        .header(
            "X-Sentry-Auth",
            format!("Sentry sentry_key={key}, sentry_version=7"),
        )
        .body(raw.clone())
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 200);
    // And one as a gzip-compressed envelope holding only the event, as the Python SDK sends it:
    // stored compressed, it must still read back byte for byte.
    let raw_gz = format!(
        "{{\"event_id\":\"fedcba9876543210fedcba9876543210\", \"timestamp\": {}, \"exception\":{{\"values\":[{{\"type\":\"Crash\",\"value\":\"boom\"}}]}} }}",
        chrono::Utc::now().timestamp() + 1
    );
    let envelope = format!(
        "{{\"event_id\":\"fedcba9876543210fedcba9876543210\"}}\n{{\"type\":\"event\",\"length\":{}}}\n{raw_gz}\n",
        raw_gz.len()
    );
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut gz, envelope.as_bytes()).expect("gzip");
    let r = app
        .client
        .post(app.url(&format!("/api/{project}/envelope/")))
        .header(
            "X-Sentry-Auth",
            format!("Sentry sentry_key={key}, sentry_version=7"),
        )
        .header("Content-Encoding", "gzip")
        .body(gz.finish().expect("gzip"))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 200);

    let crash = find(&app, project, "Crash").await;
    assert_eq!(crash["event_count"], 5);
    let fp = crash["fingerprint"].as_i64().expect("fp");
    let events = list(&app, &api(project, &format!("/errors/{fp}/events"))).await;
    assert_eq!(events.len(), 5);
    let keys: Vec<&str> = events[0]
        .as_object()
        .expect("obj")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        [
            "fingerprint",
            "project_id",
            "projectId",
            "payload",
            "name",
            "description",
            "actor",
            "environment",
            "platform"
        ]
    );
    // Oldest first by default: the three SDK events in order, then the raw ones.
    let event_id = |e: &Value| {
        let p: Value = serde_json::from_str(e["payload"].as_str().expect("payload string"))
            .expect("payload is JSON");
        p["event_id"].as_str().map(|s| s.replace('-', ""))
    };
    for (e, id) in events.iter().zip(&ids) {
        assert_eq!(event_id(e).as_deref(), Some(id.as_str()));
        assert_eq!(e["environment"], "test");
        assert_eq!(e["fingerprint"], fp);
        assert_eq!(e["project_id"], project);
        assert_eq!(e["name"], "Crash");
    }
    assert_eq!(
        events[3]["payload"],
        raw.as_str(),
        "the payload exactly as sent"
    );
    assert_eq!(events[3]["platform"], "python");
    assert_eq!(events[3]["environment"], "staging");
    assert_eq!(
        events[4]["payload"],
        raw_gz.as_str(),
        "a compressed envelope's event exactly as sent"
    );

    // Newest first, one per page, following the links.
    let (mut seen, mut next) = (
        Vec::new(),
        Some(api(
            project,
            &format!("/errors/{fp}/events?sort=occurred_at_desc&limit=1"),
        )),
    );
    while let Some(path) = next {
        let r = get(&app, &path, &app.admin_token).await;
        assert_eq!(r.status, 200, "{}", r.body);
        seen.push(r.body[0]["payload"].clone());
        next = next_of(&app, &r);
    }
    let mut expected: Vec<Value> = events.iter().map(|e| e["payload"].clone()).collect();
    expected.reverse();
    assert_eq!(seen, expected);

    let r = get(
        &app,
        &api(project, "/errors/12345/events"),
        &app.admin_token,
    )
    .await;
    assert_eq!(r.status, 404);
    assert_eq!(r.body, json!({"message": "404 Not Found"}));
    let r = get(
        &app,
        &api(project, &format!("/errors/{fp}/events?sort=newest")),
        &app.admin_token,
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.body, json!({"error": "sort does not have a valid value"}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_newest_first() {
    let app = spawn_app().await;
    let (project, _key, dsn) = app.project_with_key("messages").await;
    let ids = send(
        &dsn,
        vec![
            Event {
                timestamp: SystemTime::now() - Duration::from_secs(30),
                ..message("cache warmed", sentry::Level::Info)
            },
            exception("NotAMessage", "x"),
            Event {
                timestamp: SystemTime::now() - Duration::from_secs(20),
                ..message("disk almost full", sentry::Level::Warning)
            },
            Event {
                timestamp: SystemTime::now() - Duration::from_secs(10),
                // The SDK leaves out `level` when it is `error`, Sentry's default.
                ..message("shutting down", sentry::Level::Error)
            },
        ],
    )
    .await;
    let all = list(&app, &api(project, "/messages")).await;
    let texts: Vec<&str> = all
        .iter()
        .map(|m| m["message"].as_str().expect("text"))
        .collect();
    assert_eq!(texts, ["shutting down", "disk almost full", "cache warmed"]);
    let first = &all[0];
    let keys: Vec<&str> = first
        .as_object()
        .expect("obj")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        [
            "project_id",
            "projectId",
            "event_id",
            "eventId",
            "timestamp",
            "level",
            "message",
            "release",
            "environment",
            "platform"
        ]
    );
    assert_eq!(first["event_id"], ids[3].as_str());
    assert_eq!(first["level"], "error");
    assert_eq!(first["release"], "app@1.2.3");
    assert_eq!(first["environment"], "test");
    assert_eq!(first["project_id"], project);
    assert_eq!(first["projectId"], project);
    assert_eq!(first["eventId"], first["event_id"]);
    assert!(chrono::DateTime::parse_from_rfc3339(first["timestamp"].as_str().expect("ts")).is_ok());

    let r = get(&app, &api(project, "/messages?limit=2"), &app.admin_token).await;
    assert_eq!(r.body.as_array().map(Vec::len), Some(2));
    let next = next_of(&app, &r).expect("a second page");
    let r = get(&app, &next, &app.admin_token).await;
    assert_eq!(r.body.as_array().map(Vec::len), Some(1));
    assert_eq!(r.body[0]["message"], "cache warmed");
    assert_eq!(next_of(&app, &r), None, "the last page has no next");
    let prev = rel_of(&app, &r, "prev").expect("the second page has a prev");
    let r = get(&app, &prev, &app.admin_token).await;
    assert_eq!(
        r.body.as_array().map(Vec::len),
        Some(2),
        "back to the first"
    );
    assert_eq!(r.body[0]["event_id"], first["event_id"]);
    assert_eq!(rel_of(&app, &r, "prev"), None, "the first page has no prev");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_removes_old_events_and_empty_errors() {
    let app = spawn_app().await;
    let (project, _key, dsn) = app.project_with_key("retention").await;
    // Old: an error that gets no newer event, one that does, and an attachment.
    send(
        &dsn,
        vec![
            exception("OnlyOld", "x"),
            exception("Both", "x"),
            exception("Both", "x"),
        ],
    )
    .await;
    {
        let dsn = dsn.clone();
        tokio::task::spawn_blocking(move || {
            let (hub, client) = sdk(&dsn);
            hub.with_scope(
                |scope| {
                    scope.add_attachment(sentry::protocol::Attachment {
                        buffer: b"old log".to_vec(),
                        filename: "old.log".into(),
                        ..Default::default()
                    })
                },
                || hub.capture_event(exception("OnlyOld", "x")),
            );
            assert!(client.flush(Some(Duration::from_secs(10))));
        })
        .await
        .expect("sdk");
    }
    // Retention measures age by the gateway's receive time; this is the boundary.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let boundary = now_millis();
    tokio::time::sleep(Duration::from_millis(20)).await;
    send(
        &dsn,
        vec![exception("Both", "x"), exception("OnlyNew", "x")],
    )
    .await;

    let store = app.server.state.store.clone();
    // One day later than the boundary, with a one-day retention: everything before it goes.
    let report = store
        .retention_pass(boundary + 86_400_000, 1)
        .await
        .expect("pass");
    assert_eq!(report.events, 4);
    assert_eq!(report.errors, 1, "OnlyOld lost its last event");
    assert_eq!(report.attachments, 1);

    let mut left = names(&list(&app, &api(project, "/errors")).await);
    left.sort();
    assert_eq!(left, ["Both", "OnlyNew"]);
    let both = find(&app, project, "Both").await;
    let fp = both["fingerprint"].as_i64().expect("fp");
    let events = list(&app, &api(project, &format!("/errors/{fp}/events"))).await;
    assert_eq!(events.len(), 1, "only the new event of Both is left");
    assert_eq!(
        both["event_count"], 3,
        "event_count counts every event ever seen"
    );
    let db = Db::of(&app).await;
    assert_eq!(count(&db, "SELECT COUNT(*) FROM attachments").await, 0);

    // A pass with nothing old deletes nothing; zero days keeps everything.
    let again = store
        .retention_pass(boundary + 86_400_000, 1)
        .await
        .expect("pass");
    assert_eq!(again.events, 0);
    let keep = store
        .retention_pass(now_millis() + 1000 * 86_400_000, 0)
        .await
        .expect("pass");
    assert_eq!(keep.events, 0);

    // Far in the future everything is old: events, errors and their hourly counts go.
    let all = store
        .retention_pass(now_millis() + 91 * 86_400_000, 90)
        .await
        .expect("pass");
    assert_eq!(all.events, 2);
    assert_eq!(all.errors, 2);
    assert_eq!(
        list(&app, &api(project, "/errors")).await,
        Vec::<Value>::new()
    );
    for table in ["events", "errors", "error_hourly", "error_users"] {
        assert_eq!(
            count(&db, &format!("SELECT COUNT(*) FROM {table}")).await,
            0,
            "{table}"
        );
    }
}

/// A deletion cut short by a stop is finished by the next start: the mark is in the database,
/// and the purge task runs once when the server comes up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deletion_cut_short_is_finished_at_the_next_start() {
    let app = spawn_app().await;
    let (gone, _key, dsn) = app.project_with_key("gone").await;
    send(&dsn, vec![exception("A", "x"), exception("B", "y")]).await;
    // Marked the way the API marks it, but the purge task is never woken: as if the server had
    // stopped right after the 202.
    app.server
        .state
        .store
        .delete_project(gone)
        .await
        .expect("marked");
    let TestApp { server, dir, .. } = app;
    server.shutdown().await.expect("clean stop");
    let db = Db::of_dir(dir.path()).await;
    let rows = |table: &str| {
        let (db, sql) = (
            &db,
            format!("SELECT COUNT(*) FROM {table} WHERE project_id = {gone}"),
        );
        async move { count(db, &sql).await }
    };
    assert_eq!(
        rows("events").await,
        2,
        "nothing was removed before the stop"
    );

    let server = spawn_on_dir(dir.path(), |_| {}).await;
    let project_gone = format!("SELECT COUNT(*) FROM projects WHERE id = {gone}");
    eventually("the restarted server removes the rows", || {
        let (db, sql) = (&db, &project_gone);
        async move { count(db, sql).await == 0 }
    })
    .await;
    for table in ["events", "errors", "client_keys"] {
        assert_eq!(rows(table).await, 0, "{table}");
    }
    server.shutdown().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_project_deletes_its_data() {
    let app = spawn_app().await;
    let (gone, _k1, dsn_gone) = app.project_with_key("gone").await;
    let (kept, _k2, dsn_kept) = app.project_with_key("kept").await;
    send(
        &dsn_gone,
        vec![exception("A", "x"), message("hello", sentry::Level::Info)],
    )
    .await;
    send(&dsn_kept, vec![exception("B", "x")]).await;
    let r = app
        .send(
            "DELETE",
            &format!("/api/v4/projects/{gone}"),
            Auth::Private(&app.admin_token),
            Body::None,
        )
        .await;
    assert!(
        r.status == 202 || r.status == 200 || r.status == 204,
        "delete: {} {}",
        r.status,
        r.body
    );
    // Gone for the API at once; the rows are removed in the background, project row last.
    let r = get(&app, &api(gone, "/errors"), &app.admin_token).await;
    assert_eq!(r.status, 404);
    let db = Db::of(&app).await;
    let project_gone = format!("SELECT COUNT(*) FROM projects WHERE id = {gone}");
    eventually("the deleted project's rows are removed", || {
        let (db, sql) = (&db, &project_gone);
        async move { count(db, sql).await == 0 }
    })
    .await;
    // Counts still in the writer's memory when the project went are written now: the deleted
    // project's must not come back as orphan hourly rows.
    app.settle_counts().await;
    for table in ["events", "errors", "client_keys"] {
        assert_eq!(
            count(
                &db,
                &format!("SELECT COUNT(*) FROM {table} WHERE project_id = {gone}")
            )
            .await,
            0,
            "{table} of the deleted project"
        );
    }
    assert_eq!(
        count(&db, &format!("SELECT COUNT(*) FROM error_hourly h JOIN errors e ON e.id = h.error_id WHERE e.project_id = {kept}")).await,
        1
    );
    assert_eq!(
        count(&db, "SELECT COUNT(*) FROM error_hourly").await,
        1,
        "only the kept project's"
    );
    assert_eq!(names(&list(&app, &api(kept, "/errors")).await), ["B"]);
    let r = get(&app, &api(gone, "/errors"), &app.admin_token).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.body, json!({"message": "404 Project Not Found"}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn who_may_read_and_who_may_change() {
    let app = spawn_app().await;
    let (project, _key, dsn) = app.project_with_key("access").await;
    send(&dsn, vec![exception("Secret", "x")]).await;
    let fp = find(&app, project, "Secret").await["fingerprint"]
        .as_i64()
        .expect("fp");
    let guest = app.member("guest", project, Some(10)).await;
    let reporter = app.member("reporter", project, Some(20)).await;
    let developer = app.member("developer", project, Some(30)).await;
    let stranger = app.member("stranger", project, None).await;
    let error = api(project, &format!("/errors/{fp}"));
    let reads = [
        api(project, "/errors"),
        error.clone(),
        api(project, &format!("/errors/{fp}/events")),
        api(project, "/messages"),
    ];
    let put = |token: &str| {
        let (app, error, token) = (&app, error.clone(), token.to_owned());
        async move {
            app.send(
                "PUT",
                &error,
                Auth::Private(&token),
                Body::Json(json!({"status": "resolved"})),
            )
            .await
        }
    };

    for path in &reads {
        let r = app.send("GET", path, Auth::None, Body::None).await;
        assert_eq!(
            (r.status, r.body.clone()),
            (401, json!({"message": "401 Unauthorized"})),
            "{path}"
        );
        let r = get(&app, path, "glpat-not-a-token").await;
        assert_eq!(r.status, 401, "{path}");
        let r = get(&app, path, &guest.token).await;
        assert_eq!(
            (r.status, r.body.clone()),
            (403, json!({"message": "403 Forbidden"})),
            "{path}"
        );
        let r = get(&app, path, &stranger.token).await;
        assert_eq!(
            (r.status, r.body.clone()),
            (404, json!({"message": "404 Project Not Found"})),
            "{path}"
        );
        let r = get(&app, path, &reporter.token).await;
        assert_eq!(r.status, 200, "{path}: {}", r.body);
        let r = app
            .send("GET", path, Auth::Bearer(&reporter.token), Body::None)
            .await;
        assert_eq!(r.status, 200, "bearer token on {path}");
    }
    let r = put(&reporter.token).await;
    assert_eq!(
        (r.status, r.body.clone()),
        (403, json!({"message": "403 Forbidden"}))
    );
    let r = put(&guest.token).await;
    assert_eq!(r.status, 403);
    let r = put(&stranger.token).await;
    assert_eq!(r.status, 404);
    let r = put(&developer.token).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["status"], "resolved");

    // A read-only token reads but does not change.
    let read_only = app.create_token(developer.id, &["read_api"], None).await;
    assert_eq!(get(&app, &error, &read_only).await.status, 200);
    let r = app
        .send(
            "PUT",
            &error,
            Auth::Private(&read_only),
            Body::Json(json!({"status": "ignored"})),
        )
        .await;
    assert_eq!(r.status, 403);

    // The project by its URL-encoded path.
    let (_, p) = app
        .call(
            "GET",
            &format!("/api/v4/projects/{project}"),
            Some(&app.admin_token),
            None,
        )
        .await;
    let path = p["path_with_namespace"]
        .as_str()
        .expect("path")
        .replace('/', "%2F");
    let r = get(
        &app,
        &format!("/errortracking/api/v1/projects/{path}/errors?status=resolved"),
        &reporter.token,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(names(r.body.as_array().expect("array")), ["Secret"]);

    // Unknown errors.
    for method in ["GET", "PUT"] {
        let r = app
            .send(
                method,
                &api(project, "/errors/987654321"),
                Auth::Private(&developer.token),
                Body::Json(json!({"status": "resolved"})),
            )
            .await;
        assert_eq!(
            (r.status, r.body.clone()),
            (404, json!({"message": "404 Not Found"})),
            "{method}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_parameters_are_refused_with_gitlab_bodies() {
    let app = spawn_app().await;
    let (project, _key, dsn) = app.project_with_key("params").await;
    send(&dsn, vec![exception("A", "x"), exception("B", "x")]).await;
    let r = get(&app, &api(project, "/errors?limit=1"), &app.admin_token).await;
    let next = next_of(&app, &r).expect("next page");
    let cursor = next
        .split("cursor=")
        .nth(1)
        .and_then(|c| c.split('&').next())
        .expect("cursor")
        .to_owned();
    for (query, error) in [
        ("limit=0", "limit does not have a valid value"),
        ("limit=101", "limit does not have a valid value"),
        ("limit=ten", "limit is invalid"),
        ("sort=newest", "sort does not have a valid value"),
        ("cursor=not-a-cursor", "cursor is invalid"),
        ("cursor=%00%FF", "cursor is invalid"),
        // A cursor made for another order.
        (
            &format!("sort=frequency_desc&cursor={cursor}") as &str,
            "cursor is invalid",
        ),
        (
            "status=x&limit=0",
            "status does not have a valid value, limit does not have a valid value",
        ),
    ] {
        let r = get(
            &app,
            &api(project, &format!("/errors?{query}")),
            &app.admin_token,
        )
        .await;
        assert_eq!(
            (r.status, r.body.clone()),
            (400, json!({"error": error})),
            "{query}"
        );
    }
    for query in [
        "limit=1",
        "limit=100",
        "cursor=",
        &format!("cursor={cursor}"),
    ] {
        let r = get(
            &app,
            &api(project, &format!("/errors?{query}")),
            &app.admin_token,
        )
        .await;
        assert_eq!(r.status, 200, "{query}: {}", r.body);
    }
    let r = get(
        &app,
        &api(project, "/messages?cursor=abc"),
        &app.admin_token,
    )
    .await;
    assert_eq!(
        (r.status, r.body),
        (400, json!({"error": "cursor is invalid"}))
    );
    let r = get(
        &app,
        &api(project, "/errors/not-a-number"),
        &app.admin_token,
    )
    .await;
    assert_eq!(
        (r.status, r.body),
        (400, json!({"error": "fingerprint is invalid"}))
    );
}

/// An exception event with the attributes the search finds errors by.
fn tagged(ty: &str, environment: &str, release: &str, tags: &[(&str, &str)]) -> Event<'static> {
    Event {
        environment: Some(environment.to_owned().into()),
        release: Some(release.to_owned().into()),
        tags: tags
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..exception(ty, "it broke")
    }
}

#[tokio::test]
async fn search_by_environment_release_level_user_and_tags() {
    let app = spawn_app().await;
    let (project, _key, dsn) = app.project_with_key("search").await;
    let mut with_user = tagged("UserError", "production", "shop@2.0", &[]);
    with_user.user = Some(User {
        id: Some("42".into()),
        email: Some("ann@example.com".into()),
        username: Some("ann".into()),
        ..Default::default()
    });
    send(
        &dsn,
        vec![
            tagged("ProdError", "production", "shop@1.0", &[("region", "eu")]),
            tagged("StagingError", "staging", "shop@1.0", &[("region", "us")]),
            // One error seen in both environments.
            tagged("BothError", "production", "shop@1.0", &[]),
            tagged("BothError", "staging", "shop@1.1", &[("region", "eu west")]),
            with_user,
            Event {
                environment: Some("production".into()),
                ..message("disk almost full", sentry::Level::Warning)
            },
        ],
    )
    .await;
    let q = |query: &str| {
        let path = api(project, &format!("/errors?{query}"));
        let app = &app;
        async move {
            let mut n = names(&list(app, &path).await);
            n.sort();
            n
        }
    };
    assert_eq!(
        q("environment=staging").await,
        ["BothError", "StagingError"]
    );
    assert_eq!(
        q("query=environment:staging").await,
        ["BothError", "StagingError"]
    );
    assert_eq!(
        q("environment=production&release=shop%401.0").await,
        ["BothError", "ProdError"]
    );
    assert_eq!(q("query=release:shop@1.1").await, ["BothError"]);
    assert_eq!(q("query=region:eu").await, ["ProdError"]);
    assert_eq!(q("query=region:%22eu%20west%22").await, ["BothError"]);
    assert_eq!(q("query=level:warning").await, ["disk almost full"]);
    // The SDK sets `level: error` on exceptions; the message above is a warning.
    assert_eq!(q("query=level:error%20User").await, ["UserError"]);
    for user in ["42", "ann@example.com", "ann"] {
        assert_eq!(
            q(&format!("query=user:{user}")).await,
            ["UserError"],
            "user:{user}"
        );
    }
    assert!(q("query=user:bob").await.is_empty());
    // Terms and free text together, all of them must hold.
    assert_eq!(
        q("query=environment:staging%20region:us%20Staging").await,
        ["StagingError"]
    );
    assert!(q("query=environment:staging%20region:us%20Prod")
        .await
        .is_empty());
    // `is:` in the query chooses the list, as the status parameter does.
    let fp = find(&app, project, "ProdError").await["fingerprint"].clone();
    let r = app
        .send(
            "PUT",
            &api(project, &format!("/errors/{fp}")),
            Auth::Private(&app.admin_token),
            Body::Json(json!({"status": "resolved"})),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(q("query=is:resolved").await, ["ProdError"]);
    assert_eq!(
        q("query=is:resolved%20environment:staging").await,
        Vec::<String>::new()
    );
    assert_eq!(
        q("status=resolved&query=is:unresolved%20region:eu").await,
        Vec::<String>::new()
    );
    assert_eq!(
        q("status=resolved&query=is:unresolved%20environment:production").await,
        ["BothError", "UserError", "disk almost full"]
    );

    // The next page repeats the search.
    let r = get(
        &app,
        &api(
            project,
            "/errors?environment=staging&query=region:%22eu%20west%22&limit=1",
        ),
        &app.admin_token,
    )
    .await;
    assert_eq!(names(r.body.as_array().expect("list")), ["BothError"]);
    assert!(next_of(&app, &r).is_none(), "one match, no next page");
    let r = get(
        &app,
        &api(project, "/errors?environment=production&limit=1"),
        &app.admin_token,
    )
    .await;
    let next = next_of(&app, &r).expect("a next page");
    assert!(next.contains("environment=production"), "{next}");
    let mut seen = names(r.body.as_array().expect("list"));
    let mut path = Some(next);
    while let Some(p) = path {
        let r = get(&app, &p, &app.admin_token).await;
        seen.extend(names(r.body.as_array().expect("list")));
        path = next_of(&app, &r);
    }
    seen.sort();
    assert_eq!(seen, ["BothError", "UserError", "disk almost full"]);
}

#[tokio::test]
async fn unknown_parameters_and_search_keys_are_named_in_a_400() {
    let app = spawn_app().await;
    let (project, _key, _dsn) = app.project_with_key("strict").await;
    for (path, error) in [
        (
            "/errors?environmnet=production",
            "environmnet is not a known parameter",
        ),
        ("/errors?foo=1&bar=2", "foo, bar are not known parameters"),
        (
            "/errors?query=has:user",
            "query has an unsupported search key has",
        ),
        (
            "/errors?query=is:open",
            "query has an unknown status is:open (unresolved, resolved or ignored)",
        ),
        (
            "/errors?query=environment:%22staging",
            "query has an unterminated quote",
        ),
        ("/messages?sort=asc", "sort is not a known parameter"),
        (
            "/errors/1/events?status=resolved",
            "status is not a known parameter",
        ),
    ] {
        let r = get(&app, &api(project, path), &app.admin_token).await;
        assert_eq!(
            (r.status, r.body.clone()),
            (400, json!({"error": error})),
            "{path}"
        );
    }
    // The token may travel as a parameter, as everywhere in the API.
    let r = app
        .send(
            "GET",
            &api(project, "/errors?limit=5"),
            Auth::Query(&app.admin_token),
            Body::None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
}
