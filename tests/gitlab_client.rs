//! The read API as GitLab's own Error Tracking pages use it: only the shared
//! `Gitlab-Error-Tracking-Token` header, GitLab's generated client's other headers, its way of
//! paging (a regular expression over the `Link` header, then the cursor passed back with the
//! same parameters), and the fields it reads from each answer.

mod common;

use common::gitlab::SHARED_TOKEN;
use common::{spawn_app_with, Auth, Body, Resp, TestApp};
use faultline::config::Secret;
use regex::Regex;
use serde_json::{json, Value};

async fn app_with_token() -> TestApp {
    spawn_app_with(|c| c.gitlab.error_tracking_token = Some(Secret(SHARED_TOKEN.into()))).await
}

/// A request as GitLab's client sends it: the shared token only, JSON content type even
/// without a body, its accept header and user agent.
async fn gitlab(app: &TestApp, method: &str, path: &str, token: &str, body: Option<&str>) -> Resp {
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    let accept = if body.is_some() {
        "application/json"
    } else {
        "*/*"
    };
    let mut req = app
        .client
        .request(method, app.url(path))
        .header("Gitlab-Error-Tracking-Token", token)
        .header("Content-Type", "application/json")
        .header("Accept", accept)
        .header("User-Agent", "OpenAPI-Generator/1.0.0/ruby");
    if let Some(b) = body {
        req = req.body(b.to_owned());
    }
    common::read_resp(req.send().await.expect("sent")).await
}

async fn get(app: &TestApp, path: &str) -> Resp {
    let r = gitlab(app, "GET", path, SHARED_TOKEN, None).await;
    assert_eq!(r.status, 200, "{path}: {}", r.body);
    assert!(
        r.header("content-type")
            .is_some_and(|c| c.starts_with("application/json")),
        "{path}: JSON content type"
    );
    r
}

/// Sends one event through `/store/` with a local key.
async fn store(app: &TestApp, project: i64, key: &str, event: Value) {
    let r = app
        .send(
            "POST",
            &format!("/api/{project}/store/?sentry_key={key}&sentry_version=7"),
            Auth::None,
            Body::Json(event),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
}

/// The cursors of a `Link` header as GitLab reads them: split on `", "`, match each part with
/// GitLab's expression, URL-unescape the cursor.
fn gitlab_cursors(r: &Resp) -> Vec<(String, String)> {
    let re = Regex::new(r#"cursor=(?<cursor>[^&]+).*; rel="(?<direction>\w+)""#).expect("regex");
    let Some(link) = r.header("link") else {
        return Vec::new();
    };
    link.split(", ")
        .map(|part| {
            let c = re
                .captures(part)
                .unwrap_or_else(|| panic!("GitLab cannot read {part}"));
            let cursor: String = form_urlencoded::parse(format!("c={}", &c["cursor"]).as_bytes())
                .next()
                .expect("pair")
                .1
                .into_owned();
            assert!(!cursor.contains('>'), "a clean cursor: {cursor}");
            (c["direction"].to_owned(), cursor)
        })
        .collect()
}

fn cursor_of(r: &Resp, direction: &str) -> Option<String> {
    gitlab_cursors(r)
        .into_iter()
        .find(|(d, _)| d == direction)
        .map(|(_, c)| c)
}

fn names(r: &Resp) -> Vec<String> {
    r.body
        .as_array()
        .expect("array")
        .iter()
        .map(|e| e["name"].as_str().expect("name").to_owned())
        .collect()
}

fn errors(project: i64) -> String {
    format!("/errortracking/api/v1/projects/{project}/errors")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shared_token_reads_every_project_and_nothing_else_does() {
    // Without a configured token, the header opens nothing, however it is sent.
    let plain = spawn_app_with(|_| {}).await;
    let (p, _, _) = plain.project_with_key("plain").await;
    for token in [SHARED_TOKEN, "", " "] {
        let r = gitlab(&plain, "GET", &errors(p), token, None).await;
        assert_eq!(
            (r.status, &r.body),
            (401, &common::unauthorized()),
            "{token:?}"
        );
    }

    let app = app_with_token().await;
    let (project, _, _) = app.project_with_key("shop").await;
    for token in [
        "wrong",
        "",
        "shared-error-tracking-secre",
        "shared-error-tracking-secrets",
    ] {
        let r = gitlab(&app, "GET", &errors(project), token, None).await;
        assert_eq!(r.status, 401, "{token:?}");
    }
    // The right token, on a project no user made the caller a member of.
    let r = get(&app, &errors(project)).await;
    assert_eq!(r.body, json!([]));
    // Personal access tokens keep working, members only.
    let stranger = app.create_user("stranger", false).await;
    let r = app
        .send(
            "GET",
            &errors(project),
            Auth::Private(&stranger.token),
            Body::None,
        )
        .await;
    assert_eq!(r.status, 404);
    let r = app
        .send(
            "GET",
            &errors(project),
            Auth::Private(&app.admin_token),
            Body::None,
        )
        .await;
    assert_eq!(r.status, 200);
    // A GitLab project with no event yet: empty lists, not errors GitLab would log.
    let r = get(&app, &errors(77_777)).await;
    assert_eq!(r.body, json!([]));
    let r = get(
        &app,
        "/errortracking/api/v1/projects/77777/messages?limit=20",
    )
    .await;
    assert_eq!(r.body, json!([]));
    let r = gitlab(
        &app,
        "GET",
        &format!("{}/12", errors(77_777)),
        SHARED_TOKEN,
        None,
    )
    .await;
    assert_eq!(r.status, 404);
    let r = gitlab(
        &app,
        "PUT",
        &format!("{}/12", errors(77_777)),
        SHARED_TOKEN,
        Some(r#"{"status":"resolved"}"#),
    )
    .await;
    assert_eq!(r.status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gitlab_pages_forward_by_next_and_back_by_prev_in_every_sort() {
    let app = app_with_token().await;
    let (project, key, _) = app.project_with_key("paging").await;
    // Seven errors with different counts and times, so the three orders differ.
    let now = chrono::Utc::now().timestamp() as f64;
    for i in 0..7i64 {
        for j in 0..=(i * 3 % 7) {
            store(
                &app,
                project,
                &key,
                json!({
                    "exception": {"values": [{"type": format!("Error{i}"), "value": "boom"}]},
                    "timestamp": now - ((i * 5 + j * 11) % 40) as f64 * 60.0,
                    "platform": "python",
                }),
            )
            .await;
        }
    }
    for sort in ["last_seen_desc", "first_seen_desc", "frequency_desc"] {
        let params = format!("sort={sort}&status=unresolved&limit=3");
        let all = names(
            &get(
                &app,
                &format!(
                    "{}?sort={sort}&status=unresolved&limit=100",
                    errors(project)
                ),
            )
            .await,
        );
        assert_eq!(all.len(), 7);
        // Forward: GitLab passes the cursor back with its own parameters.
        let mut pages = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let path = match &cursor {
                None => format!("{}?{params}", errors(project)),
                Some(c) => format!(
                    "{}?{params}&cursor={}",
                    errors(project),
                    form_urlencoded::byte_serialize(c.as_bytes()).collect::<String>()
                ),
            };
            let r = get(&app, &path).await;
            let prev = cursor_of(&r, "prev");
            assert_eq!(
                prev.is_some(),
                !pages.is_empty(),
                "{sort}: prev on every page but the first"
            );
            cursor = cursor_of(&r, "next");
            pages.push((names(&r), prev));
            if cursor.is_none() {
                break;
            }
            assert!(pages.len() < 10, "paging ends");
        }
        let flat: Vec<String> = pages.iter().flat_map(|(n, _)| n.clone()).collect();
        assert_eq!(flat, all, "{sort}: the pages are the list");
        assert_eq!(
            pages.len(),
            3,
            "{sort}: 3 + 3 + 1, and no next after the last"
        );
        // Back: prev from page 3 is page 2 exactly, and from there page 1.
        let mut back = pages[2].1.clone();
        for expected in [1usize, 0] {
            let c = back.expect("a prev cursor");
            let r = get(
                &app,
                &format!(
                    "{}?{params}&cursor={}",
                    errors(project),
                    form_urlencoded::byte_serialize(c.as_bytes()).collect::<String>()
                ),
            )
            .await;
            assert_eq!(
                names(&r),
                pages[expected].0,
                "{sort}: back to page {}",
                expected + 1
            );
            assert!(
                cursor_of(&r, "next").is_some(),
                "{sort}: a page before has a next"
            );
            back = cursor_of(&r, "prev");
        }
        assert_eq!(back, None, "{sort}: the first page has no prev");
    }
    // A full last page has no next (GitLab would show a dead button).
    let r = get(
        &app,
        &format!("{}?status=unresolved&limit=7", errors(project)),
    )
    .await;
    assert_eq!(gitlab_cursors(&r), Vec::<(String, String)>::new());
    // The query parameter, carried into the links too.
    let r = get(
        &app,
        &format!("{}?status=unresolved&query=Error3&limit=1", errors(project)),
    )
    .await;
    assert_eq!(names(&r), ["Error3"]);
    assert_eq!(r.header("link"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn detail_stack_trace_status_and_messages_as_gitlab_reads_them() {
    let app = app_with_token().await;
    let (project, key, _) = app.project_with_key("detail").await;
    let now = chrono::Utc::now().timestamp() as f64;
    let frames = json!([{
        "filename": "app/models/order.py",
        "abs_path": "/srv/app/models/order.py",
        "function": "total",
        "module": "app.models.order",
        "lineno": 42,
        "context_line": "    return sum(line.price for line in self.lines)",
        "pre_context": ["def total(self):"],
        "post_context": [""],
        "in_app": true
    }]);
    // Sent out of order: the middle release last, the newest second.
    for (release, mins_ago) in [
        ("shop@1.0.0", 30.0),
        ("shop@2.0.0", 1.0),
        ("shop@1.5.0", 10.0),
    ] {
        store(
            &app,
            project,
            &key,
            json!({
                "exception": {"values": [{
                    "type": "TypeError",
                    "value": "unsupported operand",
                    "stacktrace": {"frames": frames},
                }]},
                "release": release,
                "environment": "production",
                "platform": "python",
                "timestamp": now - mins_ago * 60.0,
            }),
        )
        .await;
    }
    let list = get(
        &app,
        &format!(
            "{}?status=unresolved&sort=last_seen_desc&limit=20",
            errors(project)
        ),
    )
    .await;
    let error = list.body[0].clone();
    // GitLab reads the fingerprint with to_i, timestamps as ISO-8601 strings.
    let fp = error["fingerprint"].as_i64().expect("integer fingerprint");
    assert_eq!(error["project_id"], project);
    assert_eq!(error["event_count"], 3);
    assert_eq!(error["status"], "unresolved");
    for t in ["first_seen_at", "last_seen_at"] {
        let s = error[t].as_str().expect("a string");
        chrono::DateTime::parse_from_rfc3339(s).expect("ISO-8601");
    }
    assert_eq!(
        error["stats"]["frequency"]["24h"].as_array().map(Vec::len),
        Some(24)
    );

    let detail = get(&app, &format!("{}/{fp}", errors(project))).await;
    assert_eq!(detail.body["fingerprint"], fp);
    // First and last release: `.first.payload` of each order with limit=1.
    let release_of = |r: &Resp| {
        let first = &r.body[0];
        assert_eq!(first["projectId"], project, "GitLab reads projectId");
        let payload: Value =
            serde_json::from_str(first["payload"].as_str().expect("payload is a string"))
                .expect("payload is JSON");
        (
            payload["release"].as_str().expect("release").to_owned(),
            payload,
        )
    };
    let events = |order: &str| {
        format!(
            "{}/{fp}/events?sort=occurred_at_{order}&limit=1",
            errors(project)
        )
    };
    let asc = get(&app, &events("asc")).await;
    let desc = get(&app, &events("desc")).await;
    assert_eq!(release_of(&asc).0, "shop@1.0.0");
    let (newest_release, newest) = release_of(&desc);
    assert_eq!(newest_release, "shop@2.0.0");
    // The events page both ways too: oldest first, one per page, and back.
    let mut path = events("asc");
    let mut seen = Vec::new();
    let mut prevs = Vec::new();
    loop {
        let r = get(&app, &path).await;
        seen.push(release_of(&r).0);
        prevs.push(cursor_of(&r, "prev"));
        let Some(next) = cursor_of(&r, "next") else {
            break;
        };
        path = format!("{}&cursor={next}", events("asc"));
    }
    assert_eq!(seen, ["shop@1.0.0", "shop@1.5.0", "shop@2.0.0"]);
    let back = prevs[2].clone().expect("the last page has a prev");
    let r = get(&app, &format!("{}&cursor={back}", events("asc"))).await;
    assert_eq!(release_of(&r).0, "shop@1.5.0", "prev from page 3 is page 2");
    assert_eq!(prevs[0], None);
    // The stack trace GitLab shows: the newest event's first exception with frames.
    let frame = &newest["exception"]["values"][0]["stacktrace"]["frames"][0];
    for field in [
        "lineno",
        "context_line",
        "pre_context",
        "post_context",
        "filename",
        "abs_path",
        "function",
    ] {
        assert!(!frame[field].is_null(), "{field} in {frame}");
    }

    // Status changes with GitLab's exact body; any 2xx with a JSON body is success.
    for status in ["resolved", "ignored", "unresolved"] {
        let body = format!(r#"{{"status":"{status}"}}"#);
        let r = gitlab(
            &app,
            "PUT",
            &format!("{}/{fp}", errors(project)),
            SHARED_TOKEN,
            Some(&body),
        )
        .await;
        assert_eq!(
            (r.status, r.body["status"].as_str()),
            (200, Some(status)),
            "{}",
            r.body
        );
        for listed in ["unresolved", "resolved", "ignored"] {
            let r = get(
                &app,
                &format!("{}?status={listed}&limit=20", errors(project)),
            )
            .await;
            let n = r.body.as_array().map(Vec::len);
            assert_eq!(
                n,
                Some(usize::from(listed == status)),
                "{status} listed as {listed}"
            );
        }
    }

    // Messages, with the keys GitLab's MessageEvent reads.
    for (text, mins_ago) in [("cache warmed", 5.0), ("shutting down", 2.0)] {
        store(
            &app,
            project,
            &key,
            json!({"message": text, "level": "info", "release": "shop@2.0.0",
                   "environment": "production", "platform": "python",
                   "timestamp": now - mins_ago * 60.0}),
        )
        .await;
    }
    let r = get(
        &app,
        &format!("/errortracking/api/v1/projects/{project}/messages?limit=1"),
    )
    .await;
    let m = &r.body[0];
    assert_eq!(m["message"], "shutting down", "newest first");
    assert_eq!(m["projectId"], project);
    assert_eq!(m["eventId"].as_str().map(str::len), Some(32));
    chrono::DateTime::parse_from_rfc3339(m["timestamp"].as_str().expect("timestamp string"))
        .expect("ISO-8601");
    for (field, value) in [
        ("level", "info"),
        ("release", "shop@2.0.0"),
        ("environment", "production"),
        ("platform", "python"),
    ] {
        assert_eq!(m[field], value, "{field}");
    }
    assert!(cursor_of(&r, "next").is_some());
}
