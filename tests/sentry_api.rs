//! Sentry's web API at `/api/0/` as GitLab's "Sentry" error tracking and Grafana's Sentry data
//! source read it. Events go in through the real `sentry` crate; every request is made the way
//! GitLab's client makes it: `Authorization: Bearer <token>` and `Content-Type: application/json`
//! on every call, its regular expression over the `Link` header, `\A\d+\z` on the ids, and the
//! project-id check before the detail, latest-event and update calls.

mod common;

use std::time::Duration;

use common::{sdk, spawn_app, spawn_on_dir, Resp, TestApp};
use regex::Regex;
use sentry::protocol::{Breadcrumb, Event, Exception, Frame, Request, Stacktrace, User};
use serde_json::{json, Value};

// ---------------------------------------------------------------------------------------------
// GitLab's client

/// One request exactly as GitLab's `ErrorTracking::SentryClient` sends it. Also checks what it
/// relies on in every answer: a JSON content type and a JSON body.
async fn gitlab(app: &TestApp, method: &str, path: &str, token: &str, body: Option<Value>) -> Resp {
    let url = app.parsed_url(path);
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    let mut req = app
        .client
        .request(method, url)
        .header("Authorization", format!("Bearer {token}"))
        .header("Content-Type", "application/json");
    if let Some(b) = body {
        req = req.body(b.to_string());
    }
    let r = common::read_resp(req.send().await.expect("request sent")).await;
    let ct = r.header("content-type").unwrap_or_default().to_owned();
    assert!(
        ct.starts_with("application/json"),
        "{path}: content type {ct:?}"
    );
    assert!(
        r.body.is_object() || r.body.is_array(),
        "{path}: a JSON body, got {}",
        r.body
    );
    r
}

/// GET that must answer 200.
async fn ok(app: &TestApp, path: &str, token: &str) -> Resp {
    let r = gitlab(app, "GET", path, token, None).await;
    assert_eq!(r.status, 200, "{path}: {}", r.body);
    r
}

/// `\A\d+\z`, which GitLab checks on issue, event-group and project ids.
fn assert_digits(v: &Value, what: &str) {
    let s = v
        .as_str()
        .unwrap_or_else(|| panic!("{what} is a string, got {v}"));
    assert!(
        Regex::new(r"\A\d+\z").expect("regex").is_match(s),
        "{what}: {s:?}"
    );
}

/// GitLab's parse of the `Link` header: split on `,`, match each part with its pattern, keep the
/// parts whose `results` is `true`. Returns (direction, cursor) of those, and checks that the
/// header had both a previous and a next part.
fn gitlab_pagination(r: &Resp) -> Vec<(String, String)> {
    let link = r.header("link").expect("a Link header");
    let pattern = Regex::new(r#"rel="(\w+)";\sresults="(\w+)";\scursor="(.+)""#).expect("regex");
    let parts: Vec<&str> = link.split(',').collect();
    assert_eq!(parts.len(), 2, "exactly two parts: {link}");
    let mut rels = Vec::new();
    let mut kept = Vec::new();
    for part in parts {
        let m = pattern
            .captures(part)
            .unwrap_or_else(|| panic!("GitLab's pattern matches {part:?}"));
        rels.push(m[1].to_owned());
        // The cursor in the URL is the cursor GitLab will send back.
        let url = part
            .trim()
            .strip_prefix('<')
            .and_then(|p| p.split_once('>'))
            .map(|(u, _)| u)
            .expect("a <url> part");
        let in_url = reqwest::Url::parse(url)
            .expect("absolute URL")
            .query_pairs()
            .find(|(k, _)| k == "cursor")
            .map(|(_, v)| v.into_owned());
        assert_eq!(in_url.as_deref(), Some(&m[3]), "same cursor in {part}");
        if &m[2] == "true" {
            kept.push((m[1].to_owned(), m[3].to_owned()));
        } else {
            assert_eq!(&m[2], "false", "{part}");
        }
    }
    assert_eq!(rels, ["previous", "next"], "{link}");
    kept
}

fn cursor_of(pages: &[(String, String)], rel: &str) -> Option<String> {
    pages.iter().find(|(r, _)| r == rel).map(|(_, c)| c.clone())
}

/// GitLab's `projects` call and the lookup it makes before detail, latest event and update:
/// the project whose `name` and `organization.name` match what it stored.
async fn gitlab_project_id(app: &TestApp, token: &str, name: &str, org_name: &str) -> String {
    let r = ok(app, "/api/0/projects/", token).await;
    let found: Vec<&Value> = r
        .body
        .as_array()
        .expect("array")
        .iter()
        .filter(|p| p["name"] == name && p["organization"]["name"] == org_name)
        .collect();
    assert_eq!(found.len(), 1, "{name} in {org_name}: {}", r.body);
    for key in ["id", "name", "slug", "status"] {
        assert!(found[0].get(key).is_some(), "project has {key}");
    }
    for key in ["id", "name", "slug"] {
        assert!(
            found[0]["organization"].get(key).is_some(),
            "organization has {key}"
        );
    }
    assert_digits(&found[0]["id"], "project id");
    found[0]["id"].as_str().expect("id").to_owned()
}

/// The stack trace as GitLab builds it from the latest event: the first `exception` entry, its
/// first value with a stack trace, that trace's frames, each read as GitLab's GraphQL type reads
/// it: (filename, function, lineNo, colNo, context as [line, code] pairs).
type GitlabFrame = (String, String, i64, Option<i64>, Vec<(i64, String)>);

fn gitlab_stack_trace(event: &Value) -> Vec<GitlabFrame> {
    let entries = event["entries"].as_array().expect("entries");
    let Some(exception) = entries.iter().find(|e| e["type"] == "exception") else {
        return Vec::new();
    };
    let values = exception["data"]["values"].as_array().expect("values");
    let Some(with_trace) = values
        .iter()
        .find(|v| v["stacktrace"].as_object().is_some_and(|s| !s.is_empty()))
    else {
        return Vec::new();
    };
    with_trace["stacktrace"]["frames"]
        .as_array()
        .expect("frames")
        .iter()
        .map(|f| {
            let context: Vec<(i64, String)> = f["context"]
                .as_array()
                .expect("context is a list")
                .iter()
                .map(|pair| {
                    (
                        pair[0].as_i64().expect("line number"),
                        pair[1].as_str().expect("code").to_owned(),
                    )
                })
                .collect();
            if !context.is_empty() {
                assert!(f["filename"].is_string(), "filename with context: {f}");
            }
            (
                f["filename"].as_str().unwrap_or_default().to_owned(),
                f["function"].as_str().unwrap_or_default().to_owned(),
                f["lineNo"].as_i64().expect("lineNo is an integer"),
                f["colNo"].as_i64(),
                context,
            )
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Events, through the real SDK

async fn send(dsn: &str, events: Vec<Event<'static>>) {
    let dsn = dsn.to_owned();
    tokio::task::spawn_blocking(move || {
        let (hub, client) = sdk(&dsn);
        for chunk in events.chunks(10) {
            for e in chunk {
                hub.capture_event(e.clone());
            }
            assert!(client.flush(Some(Duration::from_secs(10))), "SDK flushed");
        }
    })
    .await
    .expect("sdk thread");
}

fn frame(function: &str, file: &str, line: u64, col: Option<u64>) -> Frame {
    Frame {
        function: Some(function.into()),
        module: Some("app.pricing".into()),
        filename: Some(file.into()),
        abs_path: Some(format!("/srv/{file}")),
        lineno: Some(line),
        colno: col,
        pre_context: vec![format!("# before {line}"), "x = 1".into()],
        context_line: Some(format!("{function}()")),
        post_context: vec!["# after".into()],
        in_app: Some(true),
        ..Default::default()
    }
}

/// `NoMethodError` raised in `parse_price`, called from `checkout`, called from `handle`: frames
/// oldest call first, as the protocol sends them.
fn crash(user: &str) -> Event<'static> {
    Event {
        exception: vec![Exception {
            ty: "NoMethodError".into(),
            value: Some("undefined method `price' for nil".into()),
            module: Some("app.pricing".into()),
            stacktrace: Some(Stacktrace {
                frames: vec![
                    frame("handle", "app/server.rb", 10, Some(3)),
                    frame("checkout", "app/cart.rb", 42, None),
                    frame("parse_price", "app/pricing.rb", 7, Some(12)),
                ],
                ..Default::default()
            }),
            ..Default::default()
        }]
        .into(),
        user: Some(User {
            id: Some(user.into()),
            ..Default::default()
        }),
        breadcrumbs: vec![Breadcrumb {
            category: Some("http".into()),
            message: Some("GET /cart".into()),
            ..Default::default()
        }]
        .into(),
        request: Some(Request {
            url: Some("https://shop.example/cart?id=5".parse().expect("url")),
            method: Some("GET".into()),
            ..Default::default()
        }),
        level: sentry::Level::Error,
        ..Default::default()
    }
}

fn plain(ty: &str, value: &str) -> Event<'static> {
    Event {
        exception: vec![Exception {
            ty: ty.into(),
            value: Some(value.into()),
            ..Default::default()
        }]
        .into(),
        level: sentry::Level::Error,
        ..Default::default()
    }
}

fn message(text: &str) -> Event<'static> {
    Event {
        message: Some(text.into()),
        level: sentry::Level::Warning,
        ..Default::default()
    }
}

/// A project `name` in `namespace` with error tracking on; returns (id, DSN).
async fn project_in(app: &TestApp, name: &str, namespace: &str) -> (i64, String) {
    let id = app.project_id(name, namespace).await;
    app.set_setting(id, "PUT", "active=true&integrated=true")
        .await;
    let keys = app.keys(id).await;
    (id, keys[0]["sentry_dsn"].as_str().expect("dsn").to_owned())
}

fn issues_of(r: &Resp) -> Vec<Value> {
    r.body.as_array().expect("a list of issues").clone()
}

fn titles(issues: &[Value]) -> Vec<String> {
    issues
        .iter()
        .map(|i| i["title"].as_str().expect("title").to_owned())
        .collect()
}

fn rfc3339(v: &Value, what: &str) -> chrono::DateTime<chrono::FixedOffset> {
    chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap_or_else(|| panic!("{what}: {v}")))
        .unwrap_or_else(|e| panic!("{what} is RFC 3339: {v}: {e}"))
}

// ---------------------------------------------------------------------------------------------
// Tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gitlab_lists_shows_and_resolves_errors() {
    let app = spawn_app().await;
    let (project, dsn) = project_in(&app, "Shop", "acme").await;
    let dev = app.member("dev", project, Some(30)).await;
    send(
        &dsn,
        vec![
            crash("u1"),
            crash("u2"),
            crash("u1"),
            crash("u3"),
            plain("Timeout", "upstream took too long"),
            message("disk almost full"),
        ],
    )
    .await;

    // Setting up: GitLab lists projects, the user picks one, GitLab stores the api_url.
    let project_id = gitlab_project_id(&app, &dev.token, "Shop", "acme").await;
    assert_eq!(project_id, project.to_string());
    let listing = ok(&app, "/api/0/projects/", &dev.token).await;
    let picked = &listing.body[0];
    let api_url = format!(
        "/api/0/projects/{}/{}/",
        picked["organization"]["slug"].as_str().expect("org slug"),
        picked["slug"].as_str().expect("slug")
    );
    assert_eq!(api_url, "/api/0/projects/acme/shop/");

    // The list page.
    let list = ok(
        &app,
        &format!("{api_url}issues/?query=is%3Aunresolved&limit=20"),
        &dev.token,
    )
    .await;
    let issues = issues_of(&list);
    assert_eq!(issues.len(), 3, "{issues:?}");
    let pages = gitlab_pagination(&list);
    assert!(pages.is_empty(), "one page only: {pages:?}");
    let short_id = Regex::new(r"\ASHOP-[0-9A-Z]+\z").expect("regex");
    for issue in &issues {
        assert_digits(&issue["id"], "issue id");
        assert_digits(&issue["count"], "count");
        assert!(issue["userCount"].is_i64());
        rfc3339(&issue["firstSeen"], "firstSeen");
        rfc3339(&issue["lastSeen"], "lastSeen");
        assert_eq!(issue["status"], "unresolved");
        assert_eq!(issue["project"]["id"], project_id.as_str());
        assert!(issue["annotations"].is_array());
        let short = issue["shortId"].as_str().expect("shortId");
        assert!(short_id.is_match(short), "{short}");
        let stats = issue["stats"]["24h"].as_array().expect("24h stats");
        assert_eq!(stats.len(), 24, "hourly buckets");
        assert!(stats
            .windows(2)
            .all(|w| w[1][0].as_i64().expect("ts") - w[0][0].as_i64().expect("ts") == 3600));
        for key in [
            "title",
            "type",
            "culprit",
            "permalink",
            "level",
            "logger",
            "platform",
            "numComments",
            "isBookmarked",
            "metadata",
        ] {
            assert!(issue.get(key).is_some(), "issue has {key}");
        }
    }
    let crash_issue = issues
        .iter()
        .find(|i| i["metadata"]["type"] == "NoMethodError")
        .expect("the crash is listed")
        .clone();
    assert_eq!(crash_issue["type"], "error");
    assert_eq!(crash_issue["count"], "4");
    assert_eq!(crash_issue["userCount"], 3);
    assert_eq!(
        crash_issue["metadata"]["value"],
        "undefined method `price' for nil"
    );
    assert_eq!(
        crash_issue["title"],
        "NoMethodError: undefined method `price' for nil"
    );
    assert_eq!(crash_issue["culprit"], "parse_price(app.pricing)");
    let stats_total: i64 = crash_issue["stats"]["24h"]
        .as_array()
        .expect("stats")
        .iter()
        .map(|b| b[1].as_i64().expect("count"))
        .sum();
    assert_eq!(stats_total, 4);
    let msg = issues
        .iter()
        .find(|i| i["type"] == "default")
        .expect("the message is an issue of type default");
    assert_eq!(msg["title"], "disk almost full");
    assert_eq!(msg["level"], "warning");

    // Search: a status term plus free text, and the sorts.
    let found = issues_of(
        &ok(
            &app,
            &format!("{api_url}issues/?query=is%3Aunresolved%20NoMethodError&limit=20"),
            &dev.token,
        )
        .await,
    );
    assert_eq!(found.len(), 1);
    assert_eq!(found[0]["id"], crash_issue["id"]);
    let by_freq = issues_of(
        &ok(
            &app,
            &format!("{api_url}issues/?query=is%3Aunresolved&limit=20&sort=freq"),
            &dev.token,
        )
        .await,
    );
    assert_eq!(by_freq[0]["id"], crash_issue["id"], "most frequent first");
    let by_new = issues_of(
        &ok(
            &app,
            &format!("{api_url}issues/?query=is%3Aunresolved&limit=20&sort=new"),
            &dev.token,
        )
        .await,
    );
    assert_eq!(
        by_new[0]["type"], "default",
        "the message was first seen last"
    );
    assert_eq!(by_new[2]["id"], crash_issue["id"], "the crash came first");

    // Detail, after GitLab's project check.
    let id = crash_issue["id"].as_str().expect("id").to_owned();
    let detail = ok(&app, &format!("/api/0/issues/{id}/"), &dev.token).await;
    assert_eq!(detail.body["project"]["id"], project_id.as_str());
    assert_eq!(detail.body["shortId"], crash_issue["shortId"]);
    assert_eq!(detail.body["count"], "4");
    assert_eq!(detail.body["firstRelease"]["version"], "app@1.2.3");
    assert_eq!(detail.body["lastRelease"]["shortVersion"], "app@1.2.3");

    // The stack trace, built as GitLab builds it.
    let event = ok(
        &app,
        &format!("/api/0/issues/{id}/events/latest/"),
        &dev.token,
    )
    .await
    .body;
    assert_eq!(event["projectID"], project_id.as_str());
    assert_digits(&event["groupID"], "groupID");
    assert_eq!(event["groupID"], id.as_str());
    rfc3339(&event["dateReceived"], "dateReceived");
    let trace = gitlab_stack_trace(&event);
    let shown: Vec<(&str, &str, i64, Option<i64>)> = trace
        .iter()
        .map(|(file, function, line, col, _)| (file.as_str(), function.as_str(), *line, *col))
        .collect();
    assert_eq!(
        shown,
        [
            ("app/server.rb", "handle", 10, Some(3)),
            ("app/cart.rb", "checkout", 42, None),
            ("app/pricing.rb", "parse_price", 7, Some(12)),
        ],
        "oldest call first, the crashing frame last"
    );
    assert_eq!(
        trace[2].4,
        [
            (5, "# before 7".to_owned()),
            (6, "x = 1".to_owned()),
            (7, "parse_price()".to_owned()),
            (8, "# after".to_owned()),
        ]
    );
    let entry_types: Vec<&str> = event["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| e["type"].as_str().expect("type"))
        .collect();
    assert_eq!(entry_types, ["exception", "breadcrumbs", "request"]);
    let tags = event["tags"].as_array().expect("tags");
    assert!(tags
        .iter()
        .any(|t| t["key"] == "environment" && t["value"] == "test"));
    assert!(event["user"]["id"].is_string(), "{}", event["user"]);

    // A message event has no stack trace, and that is fine.
    let msg_id = msg["id"].as_str().expect("id");
    let msg_event = ok(
        &app,
        &format!("/api/0/issues/{msg_id}/events/latest/"),
        &dev.token,
    )
    .await
    .body;
    assert!(gitlab_stack_trace(&msg_event).is_empty());
    assert_eq!(msg_event["entries"][0]["type"], "message");
    assert_eq!(
        msg_event["entries"][0]["data"]["formatted"],
        "disk almost full"
    );

    // Resolve: GitLab reads the detail (and checks the project) first, then updates.
    let r = gitlab(
        &app,
        "PUT",
        &format!("/api/0/issues/{id}/"),
        &dev.token,
        Some(json!({"status": "resolved"})),
    )
    .await;
    assert_eq!(
        (r.status, r.body),
        (200, json!({"status": "resolved", "statusDetails": {}}))
    );
    let unresolved = issues_of(
        &ok(
            &app,
            &format!("{api_url}issues/?query=is%3Aunresolved&limit=20"),
            &dev.token,
        )
        .await,
    );
    assert!(unresolved.iter().all(|i| i["id"] != id.as_str()));
    let resolved = issues_of(
        &ok(
            &app,
            &format!("{api_url}issues/?query=is%3Aresolved&limit=20"),
            &dev.token,
        )
        .await,
    );
    assert_eq!(
        titles(&resolved),
        [crash_issue["title"].as_str().expect("t")]
    );
    let detail = ok(&app, &format!("/api/0/issues/{id}/"), &dev.token).await;
    assert_eq!(detail.body["status"], "resolved");

    // Ignore another, and undo.
    let timeout_id = issues
        .iter()
        .find(|i| i["metadata"]["type"] == "Timeout")
        .and_then(|i| i["id"].as_str())
        .expect("Timeout listed")
        .to_owned();
    for status in ["ignored", "unresolved"] {
        let r = gitlab(
            &app,
            "PUT",
            &format!("/api/0/issues/{timeout_id}/"),
            &dev.token,
            Some(json!({"status": status})),
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.body["status"], status);
        let ignored = issues_of(
            &ok(
                &app,
                &format!("{api_url}issues/?query=is%3Aignored&limit=20"),
                &dev.token,
            )
            .await,
        );
        assert_eq!(ignored.len(), usize::from(status == "ignored"));
    }
    let bad = gitlab(
        &app,
        "PUT",
        &format!("/api/0/issues/{timeout_id}/"),
        &dev.token,
        Some(json!({"status": "closed"})),
    )
    .await;
    assert_eq!(bad.status, 400);
    assert!(bad.body["detail"].is_string());

    // A regression reopens the resolved error, as everywhere else.
    send(&dsn, vec![crash("u4")]).await;
    let detail = ok(&app, &format!("/api/0/issues/{id}/"), &dev.token).await;
    assert_eq!(detail.body["status"], "unresolved");
    assert_eq!(detail.body["count"], "5");
    assert_eq!(detail.body["userCount"], 4);

    // "Create issue" follow-ups: clean no-ops.
    let repos = ok(&app, "/api/0/organizations/acme/repos/", &dev.token).await;
    assert_eq!(repos.body, json!([]));
    let link = gitlab(
        &app,
        "POST",
        &format!("/api/0/issues/{id}/plugins/gitlab/link/"),
        &dev.token,
        Some(json!({"issueId": 1})),
    )
    .await;
    assert_eq!((link.status, link.body), (200, json!({})));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gitlab_pages_forwards_and_back_through_the_link_header() {
    let app = spawn_app().await;
    let (_, dsn) = project_in(&app, "Shop", "acme").await;
    let token = app.admin_token.clone();
    // Seven errors, one after the other, so last-seen order is the reverse of sending.
    let mut events = Vec::new();
    for n in 0..7 {
        events.push(Event {
            timestamp: std::time::SystemTime::now() - Duration::from_secs(70 - n * 10),
            ..plain(&format!("Error{n}"), "x")
        });
    }
    send(&dsn, events).await;

    let first = "/api/0/projects/acme/shop/issues/?query=is%3Aunresolved&limit=3";
    let mut path = first.to_owned();
    let mut seen = Vec::new();
    let mut cursors = Vec::new();
    loop {
        let r = ok(&app, &path, &token).await;
        seen.extend(titles(&issues_of(&r)));
        let pages = gitlab_pagination(&r);
        if cursors.is_empty() {
            assert_eq!(
                cursor_of(&pages, "previous"),
                None,
                "no page before the first"
            );
        } else {
            assert!(cursor_of(&pages, "previous").is_some(), "a page before");
        }
        let Some(next) = cursor_of(&pages, "next") else {
            break;
        };
        cursors.push(next.clone());
        // GitLab sends the cursor back verbatim as `cursor=`, with its own parameters.
        path = format!("{first}&cursor={next}");
        assert!(cursors.len() < 10, "paging terminates");
    }
    let expected: Vec<String> = (0..7).rev().map(|n| format!("Error{n}: x")).collect();
    assert_eq!(seen, expected, "every error once, in last-seen order");
    assert_eq!(cursors.len(), 2, "three pages of 3, 3 and 1");

    // Back from the last page, through `previous`.
    let last = ok(&app, &format!("{first}&cursor={}", cursors[1]), &token).await;
    let prev = cursor_of(&gitlab_pagination(&last), "previous").expect("previous");
    let middle = ok(&app, &format!("{first}&cursor={prev}"), &token).await;
    assert_eq!(
        titles(&issues_of(&middle)),
        ["Error3: x", "Error2: x", "Error1: x"]
    );
    let pages = gitlab_pagination(&middle);
    let prev = cursor_of(&pages, "previous").expect("the first page is before");
    assert!(
        cursor_of(&pages, "next").is_some(),
        "the last page is after"
    );
    let top = ok(&app, &format!("{first}&cursor={prev}"), &token).await;
    assert_eq!(
        titles(&issues_of(&top)),
        ["Error6: x", "Error5: x", "Error4: x"]
    );
    assert_eq!(
        cursor_of(&gitlab_pagination(&top), "previous"),
        None,
        "nothing before the first page"
    );

    // A cursor of another sort order, or garbage, is refused in Sentry's shape.
    let r = gitlab(
        &app,
        "GET",
        &format!("{first}&sort=freq&cursor={}", cursors[0]),
        &token,
        None,
    )
    .await;
    assert_eq!(r.status, 400);
    assert!(r.body["detail"].is_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_decide_who_reads_and_who_changes() {
    let app = spawn_app().await;
    let (project, dsn) = project_in(&app, "Shop", "acme").await;
    let (other, other_dsn) = project_in(&app, "Ledger", "globex").await;
    send(&dsn, vec![plain("Boom", "x")]).await;
    send(&other_dsn, vec![plain("Secret", "y")]).await;
    let reporter = app.member("reporter", project, Some(20)).await;
    let developer = app.member("developer", project, Some(30)).await;
    let guest = app.member("guest", project, Some(10)).await;
    let stranger = app.member("stranger", other, Some(50)).await;
    let read_only = app.create_token(developer.id, &["read_api"], None).await;

    let issue = ok(&app, "/api/0/projects/acme/shop/issues/", &app.admin_token)
        .await
        .body[0]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let other_issue = ok(
        &app,
        "/api/0/projects/globex/ledger/issues/",
        &app.admin_token,
    )
    .await
    .body[0]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let reads = [
        "/api/0/projects/acme/shop/issues/".to_owned(),
        format!("/api/0/issues/{issue}/"),
        format!("/api/0/issues/{issue}/events/latest/"),
        "/api/0/organizations/acme/projects/".to_owned(),
        "/api/0/organizations/acme/issues/".to_owned(),
        "/api/0/organizations/acme/events-stats/".to_owned(),
    ];
    let update = format!("/api/0/issues/{issue}/");
    let resolve = Some(json!({"status": "resolved"}));
    let not_found = json!({"detail": "The requested resource does not exist"});
    let forbidden = json!({"detail": "You do not have permission to perform this action."});

    for path in &reads {
        for (who, token) in [("reporter", &reporter.token), ("read_api", &read_only)] {
            let r = gitlab(&app, "GET", path, token, None).await;
            assert_eq!(r.status, 200, "{who} reads {path}: {}", r.body);
        }
        for (who, token) in [("guest", &guest.token), ("stranger", &stranger.token)] {
            let r = gitlab(&app, "GET", path, token, None).await;
            assert_eq!((r.status, &r.body), (404, &not_found), "{who} on {path}");
        }
        let r = gitlab(&app, "GET", path, "glpat-unknown", None).await;
        assert_eq!(
            (r.status, &r.body),
            (401, &json!({"detail": "Invalid token"})),
            "{path}"
        );
    }
    for (who, token, status, body) in [
        ("reporter", &reporter.token, 403, &forbidden),
        ("read_api token", &read_only, 403, &forbidden),
        ("guest", &guest.token, 404, &not_found),
        ("stranger", &stranger.token, 404, &not_found),
    ] {
        let r = gitlab(&app, "PUT", &update, token, resolve.clone()).await;
        assert_eq!((r.status, &r.body), (status, body), "{who} resolves");
    }
    let detail = ok(&app, &update, &developer.token).await;
    assert_eq!(detail.body["status"], "unresolved", "nothing changed yet");
    let r = gitlab(&app, "PUT", &update, &developer.token, resolve.clone()).await;
    assert_eq!(r.status, 200, "{}", r.body);

    // Another namespace's project is invisible: not listed, its issue a 404, its organization
    // unknown.
    for token in [&reporter.token, &developer.token, &guest.token] {
        let projects = ok(&app, "/api/0/projects/", token).await.body;
        assert!(
            projects
                .as_array()
                .expect("array")
                .iter()
                .all(|p| p["organization"]["slug"] != "globex"),
            "{projects}"
        );
        let orgs = ok(&app, "/api/0/organizations/", token).await.body;
        assert!(orgs
            .as_array()
            .expect("array")
            .iter()
            .all(|o| o["slug"] != "globex"));
        for path in [
            format!("/api/0/issues/{other_issue}/"),
            format!("/api/0/issues/{other_issue}/events/latest/"),
            "/api/0/projects/globex/ledger/issues/".to_owned(),
            "/api/0/organizations/globex/projects/".to_owned(),
            format!("/api/0/organizations/acme/issues/?project={other}"),
        ] {
            let r = gitlab(&app, "GET", &path, token, None).await;
            assert_eq!((r.status, &r.body), (404, &not_found), "{path}");
        }
    }
    let guest_projects = ok(&app, "/api/0/projects/", &guest.token).await.body;
    assert_eq!(guest_projects, json!([]), "a guest sees no project");

    let r = gitlab(&app, "DELETE", &update, &developer.token, None).await;
    assert_eq!(
        (r.status, &r.body),
        (405, &json!({"detail": "Method not allowed."}))
    );

    // Unknown routes and ids answer in Sentry's shape too.
    for path in [
        "/api/0/nothing/here/",
        "/api/0/issues/12abc/",
        "/api/0/issues/999999/",
    ] {
        let r = gitlab(&app, "GET", path, &app.admin_token, None).await;
        assert_eq!((r.status, &r.body), (404, &not_found), "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nested_namespace_is_one_organization_slug() {
    let app = spawn_app().await;
    let (project, dsn) = project_in(&app, "Shop", "acme/web").await;
    send(&dsn, vec![plain("Boom", "x")]).await;
    let token = app.admin_token.clone();

    let projects = ok(&app, "/api/0/projects/", &token).await.body;
    let p = &projects[0];
    assert_eq!(p["slug"], "shop");
    assert_eq!(p["organization"]["slug"], "acme~web");
    assert_eq!(p["organization"]["name"], "acme/web");
    // GitLab's api_url has exactly one organization segment, and it works.
    let id = gitlab_project_id(&app, &token, "Shop", "acme/web").await;
    assert_eq!(id, project.to_string());
    let issues = ok(&app, "/api/0/projects/acme~web/shop/issues/", &token).await;
    assert_eq!(titles(&issues_of(&issues)), ["Boom: x"]);
    let org_projects = ok(&app, "/api/0/organizations/acme~web/projects/", &token).await;
    assert_eq!(org_projects.body[0]["id"], id.as_str());
    // The parent namespace is another organization, with nothing in it here.
    let r = gitlab(
        &app,
        "GET",
        "/api/0/organizations/acme/projects/",
        &token,
        None,
    )
    .await;
    assert_eq!(r.status, 404);
    let orgs = ok(&app, "/api/0/organizations/", &token).await.body;
    assert_eq!(orgs.as_array().map(Vec::len), Some(1));
    assert_eq!(orgs[0]["slug"], "acme~web");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_ids_and_issue_ids_survive_a_restart() {
    let app = spawn_app().await;
    let (_, dsn) = project_in(&app, "Shop", "acme").await;
    let (_, other_dsn) = project_in(&app, "Cart", "acme").await;
    send(&dsn, vec![plain("First", "x")]).await;
    send(&other_dsn, vec![plain("Elsewhere", "x")]).await;
    send(&dsn, vec![plain("Second", "x")]).await;
    let token = app.admin_token.clone();
    let list = |app_base: String| {
        let token = token.clone();
        async move {
            let r = reqwest::Client::new()
                .get(format!(
                    "{app_base}/api/0/projects/acme/shop/issues/?sort=new"
                ))
                .bearer_auth(token)
                .send()
                .await
                .expect("sent");
            let body: Value = r.json().await.expect("json");
            body.as_array()
                .expect("array")
                .iter()
                .map(|i| {
                    (
                        i["id"].as_str().expect("id").to_owned(),
                        i["shortId"].as_str().expect("shortId").to_owned(),
                    )
                })
                .collect::<Vec<_>>()
        }
    };
    let before = list(app.base.clone()).await;
    let short: Vec<&str> = before.iter().map(|(_, s)| s.as_str()).collect();
    assert_eq!(
        short,
        ["SHOP-2", "SHOP-1"],
        "numbered per project, in order"
    );
    let cart = ok(&app, "/api/0/projects/acme/cart/issues/", &token).await;
    assert_eq!(cart.body[0]["shortId"], "CART-1");

    let TestApp { server, dir, .. } = app;
    server.shutdown().await.expect("clean stop");
    let server = spawn_on_dir(dir.path(), |_| {}).await;
    let after = list(format!("http://{}", server.addr)).await;
    assert_eq!(before, after, "same ids and short ids after a restart");
    server.shutdown().await.expect("clean stop");
}

/// Grafana decodes every answer into typed Go structs: each field must have the declared type.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grafana_reads_typed_fields() {
    let app = spawn_app().await;
    let (shop, dsn) = project_in(&app, "Shop", "acme").await;
    let (cart, cart_dsn) = project_in(&app, "Cart", "acme").await;
    let reporter = app.member("viewer", shop, Some(20)).await;
    app.add_member(cart, reporter.id, 20).await;
    send(
        &dsn,
        vec![crash("u1"), crash("u2"), plain("Timeout", "slow")],
    )
    .await;
    send(&cart_dsn, vec![plain("CartError", "x")]).await;
    let token = reporter.token.clone();

    let orgs = ok(&app, "/api/0/organizations/", &token).await.body;
    let org = &orgs[0];
    assert!(org["id"].is_string() && org["slug"] == "acme" && org["name"].is_string());
    rfc3339(&org["dateCreated"], "dateCreated");
    assert!(org["status"]["id"].is_string() && org["status"]["name"].is_string());
    assert!(org["require2FA"].is_boolean());

    // The health check, following `next` while results are true.
    let r = ok(&app, "/api/0/organizations/acme/projects/", &token).await;
    assert!(cursor_of(&gitlab_pagination(&r), "next").is_none());
    let projects = r.body.as_array().expect("array").clone();
    assert_eq!(projects.len(), 2);
    for p in &projects {
        for key in ["id", "name", "slug"] {
            assert!(p[key].is_string(), "{key}: {p}");
        }
        rfc3339(&p["dateCreated"], "dateCreated");
        for key in ["isMember", "hasAccess", "isBookmarked"] {
            assert!(p[key].is_boolean(), "{key}: {p}");
        }
        assert!(p["environments"]
            .as_array()
            .expect("environments")
            .iter()
            .all(Value::is_string));
        assert!(p["team"].is_object() && p["teams"].is_array());
    }
    assert!(
        projects
            .iter()
            .all(|p| p["environments"] == json!(["test"])),
        "the SDK's environment: {projects:?}"
    );

    // Issues: Grafana's times have no zone; projects are repeated parameters.
    let now = chrono::Utc::now();
    let fmt = |t: chrono::DateTime<chrono::Utc>| t.format("%Y-%m-%dT%H:%M:%S").to_string();
    let window = format!(
        "start={}&end={}",
        fmt(now - chrono::Duration::hours(1)),
        fmt(now + chrono::Duration::minutes(1))
    );
    let path = format!(
        "/api/0/organizations/acme/issues/?query=is%3Aunresolved&{window}&project={shop}&project={cart}&environment=test&sort=freq&limit=10000"
    );
    let issues = issues_of(&ok(&app, &path, &token).await);
    assert_eq!(issues.len(), 3, "both projects: {issues:?}");
    assert_eq!(
        issues[0]["metadata"]["type"], "NoMethodError",
        "by frequency"
    );
    for i in &issues {
        for key in [
            "id",
            "title",
            "culprit",
            "count",
            "status",
            "shortId",
            "level",
            "platform",
            "permalink",
            "type",
        ] {
            assert!(i[key].is_string(), "{key}: {i}");
        }
        assert!(i["userCount"].is_i64() && i["numComments"].is_i64());
        assert!(i["assignedTo"].is_null());
        assert!(i["project"]["id"].is_string() && i["project"]["slug"].is_string());
        rfc3339(&i["firstSeen"], "firstSeen");
        rfc3339(&i["lastSeen"], "lastSeen");
    }
    // Paging an organization-wide list keeps every repeated `project=` in the links.
    let first = ok(
        &app,
        &format!(
            "/api/0/organizations/acme/issues/?{window}&project={shop}&project={cart}&limit=2"
        ),
        &token,
    )
    .await;
    assert_eq!(issues_of(&first).len(), 2);
    let next = cursor_of(&gitlab_pagination(&first), "next").expect("a second page");
    let link = first.header("link").expect("link");
    assert!(
        link.contains(&format!("project={shop}&project={cart}")),
        "{link}"
    );
    let second = ok(
        &app,
        &format!(
            "/api/0/organizations/acme/issues/?{window}&project={shop}&project={cart}&limit=2&cursor={next}"
        ),
        &token,
    )
    .await;
    let mut both: Vec<String> = titles(&issues_of(&first));
    both.extend(titles(&issues_of(&second)));
    both.sort();
    assert_eq!(
        both,
        [
            "CartError: x",
            "NoMethodError: undefined method `price' for nil",
            "Timeout: slow"
        ]
    );
    assert!(cursor_of(&gitlab_pagination(&second), "next").is_none());

    let only_cart = issues_of(
        &ok(
            &app,
            &format!("/api/0/organizations/acme/issues/?{window}&project={cart}"),
            &token,
        )
        .await,
    );
    assert_eq!(titles(&only_cart), ["CartError: x"]);
    let other_env = issues_of(
        &ok(
            &app,
            &format!("/api/0/organizations/acme/issues/?{window}&environment=production"),
            &token,
        )
        .await,
    );
    assert!(other_env.is_empty(), "{other_env:?}");
    let earlier = format!(
        "start={}&end={}",
        fmt(now - chrono::Duration::hours(5)),
        fmt(now - chrono::Duration::hours(4))
    );
    let none = issues_of(
        &ok(
            &app,
            &format!("/api/0/organizations/acme/issues/?{earlier}"),
            &token,
        )
        .await,
    );
    assert!(none.is_empty(), "nothing seen in that window: {none:?}");

    // Event counts per interval.
    let rfc =
        |t: chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    for (interval, step) in [("1h", 3600), ("5m", 300)] {
        let path = format!(
            "/api/0/organizations/acme/events-stats/?query=&start={}&end={}&interval={interval}&yAxis=count()&project={shop}&project={cart}",
            rfc(now - chrono::Duration::hours(2)),
            rfc(now + chrono::Duration::minutes(1)),
        );
        let stats = ok(&app, &path, &token).await.body;
        let data = stats["data"].as_array().expect("data");
        assert!(!data.is_empty());
        let mut total = 0;
        for (i, point) in data.iter().enumerate() {
            let ts = point[0].as_i64().expect("unix seconds");
            assert_eq!(ts % step, 0, "aligned buckets");
            if i > 0 {
                assert_eq!(ts - data[i - 1][0].as_i64().expect("ts"), step);
            }
            total += point[1][0]["count"].as_i64().expect("count is a number");
        }
        assert_eq!(total, 4, "{interval}: every event counted once");
    }
    let shop_only = ok(
        &app,
        &format!(
            "/api/0/organizations/acme/events-stats/?query=NoMethodError&interval=1h&yAxis=count()&project={shop}"
        ),
        &token,
    )
    .await
    .body;
    let total: i64 = shop_only["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|p| p[1][0]["count"].as_i64().expect("count"))
        .sum();
    assert_eq!(total, 2, "the search narrows the count");
    let r = gitlab(
        &app,
        "GET",
        "/api/0/organizations/acme/events-stats/?statsPeriod=30d&interval=30s",
        &token,
        None,
    )
    .await;
    assert_eq!(r.status, 400, "too many buckets");
    assert!(r.body["detail"].is_string());
}
