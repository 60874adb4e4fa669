//! Keys that live in GitLab: with `gitlab.url` set, a key faultline does not know is checked by
//! asking GitLab (here a stand-in on loopback that counts its questions), and the answer is
//! remembered. Lifetimes are crossed with a clock the test moves, not by sleeping.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use common::gitlab::{new_key, FakeGitlab, SHARED_TOKEN};
use common::{eventually, sdk, spawn_app_with_clock, Auth, Body, Resp, TestApp};
use faultline::clock::ManualClock;
use faultline::config::Secret;
use serde_json::json;

/// A server whose unknown keys are GitLab's (the stand-in's) to judge, and the clock it reads.
async fn app_for(gitlab: &FakeGitlab, token: &str) -> (TestApp, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new());
    let url = gitlab.url.clone();
    let token = token.to_owned();
    let app = spawn_app_with_clock(
        move |c| {
            c.gitlab.url = Some(url);
            c.gitlab.error_tracking_token = Some(Secret(token));
        },
        clock.clone(),
    )
    .await;
    (app, clock)
}

fn envelope(message: &str) -> Vec<u8> {
    let event = json!({"message": message, "level": "error", "platform": "python"});
    format!("{{}}\n{{\"type\":\"event\"}}\n{event}\n").into_bytes()
}

/// Posts one event for `project` with `key`, the way SDKs do with GitLab's DSN.
async fn send(app: &TestApp, project: i64, key: &str, message: &str) -> Resp {
    post_event(&app.client, &app.base, project, key, message).await
}

async fn post_event(
    client: &reqwest::Client,
    base: &str,
    project: i64,
    key: &str,
    message: &str,
) -> Resp {
    let resp = client
        .post(format!(
            "{base}/errortracking/api/v1/projects/api/{project}/envelope/"
        ))
        .header(
            "X-Sentry-Auth",
            format!("Sentry sentry_key={key}, sentry_version=7, sentry_client=test/1.0"),
        )
        .body(envelope(message))
        .send()
        .await
        .expect("sent");
    common::read_resp(resp).await
}

async fn status_of(app: &TestApp, project: i64, key: &str) -> u16 {
    send(app, project, key, "hello").await.status
}

/// The shared-token GET GitLab's pages make.
async fn gitlab_get(app: &TestApp, path: &str) -> Resp {
    let resp = app
        .client
        .get(app.url(path))
        .header("Gitlab-Error-Tracking-Token", SHARED_TOKEN)
        .header("Content-Type", "application/json")
        .send()
        .await
        .expect("sent");
    common::read_resp(resp).await
}

const MINUTE: Duration = Duration::from_secs(61);
const NEGATIVE: Duration = Duration::from_secs(11);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_events_costs_one_question_per_key_per_lifetime() {
    let gitlab = FakeGitlab::start().await;
    let key = new_key();
    gitlab.project(4242, &[&key]);
    // A slow GitLab, so that the whole flood waits on the first question.
    gitlab.set_delay(Duration::from_millis(300));
    let (app, clock) = app_for(&gitlab, SHARED_TOKEN).await;

    let mut flood = tokio::task::JoinSet::new();
    for i in 0..40 {
        let (client, base, key) = (app.client.clone(), app.base.clone(), key.clone());
        flood.spawn(async move {
            post_event(&client, &base, 4242, &key, &format!("flood {i}"))
                .await
                .status
        });
    }
    let statuses = flood.join_all().await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert_eq!(gitlab.calls(), 1, "one question for forty waiting events");
    gitlab.set_delay(Duration::ZERO);
    for _ in 0..10 {
        assert_eq!(status_of(&app, 4242, &key).await, 200);
    }
    assert_eq!(
        gitlab.calls(),
        1,
        "answered from memory within the lifetime"
    );
    // What GitLab was sent: the two parameters and the shared token.
    let (project, asked_key) = gitlab.last_questions()[0].clone();
    assert_eq!(
        (project.as_str(), asked_key.as_str()),
        ("4242", key.as_str())
    );
    assert_eq!(
        gitlab.last_header("gitlab-error-tracking-token").as_deref(),
        Some(SHARED_TOKEN)
    );

    clock.advance(MINUTE);
    assert_eq!(status_of(&app, 4242, &key).await, 200);
    assert_eq!(gitlab.calls(), 2, "asked again once the lifetime is over");
    let metrics = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains("faultline_gitlab_key_checks_total{answer=\"allowed\"} 2"),
        "{metrics}"
    );
    assert_eq!(status_of(&app, 4242, &key).await, 200);
    assert_eq!(gitlab.calls(), 2);

    // The first allowed event made the project, under GitLab's id, with tracking on.
    let (s, p) = app
        .call("GET", "/api/v4/projects/4242", Some(&app.admin_token), None)
        .await;
    assert_eq!((s, p["id"].as_i64()), (200, Some(4242)), "{p}");
    let setting = app
        .call(
            "GET",
            "/api/v4/projects/4242/error_tracking/settings",
            Some(&app.admin_token),
            None,
        )
        .await
        .1;
    assert_eq!(setting, common::setting(true, true));
    // Every event is stored and readable the way GitLab reads.
    let r = gitlab_get(&app, "/errortracking/api/v1/projects/4242/errors?limit=100").await;
    assert_eq!(r.status, 200, "{}", r.body);
    let total: i64 = r
        .body
        .as_array()
        .expect("array")
        .iter()
        .map(|e| e["event_count"].as_i64().expect("count"))
        .sum();
    assert_eq!(total, 40 + 10 + 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_are_remembered_for_the_shorter_lifetime() {
    let gitlab = FakeGitlab::start().await;
    let (good, other) = (new_key(), new_key());
    gitlab.project(10, &[&good]);
    gitlab.project(11, &[&other]);
    let (app, clock) = app_for(&gitlab, SHARED_TOKEN).await;

    // A key GitLab does not allow for this project (here: another project's key).
    let r = send(&app, 10, &other, "x").await;
    assert_eq!(r.status, 403, "{}", r.body);
    for _ in 0..20 {
        assert_eq!(status_of(&app, 10, &other).await, 403);
    }
    assert_eq!(gitlab.calls_for(&other), 1, "a refusal is remembered");
    // A project GitLab does not have.
    let unknown = new_key();
    assert_eq!(status_of(&app, 999, &unknown).await, 403);
    assert_eq!(status_of(&app, 999, &unknown).await, 403);
    assert_eq!(gitlab.calls_for(&unknown), 1);
    // Something not even shaped like a key is refused without asking.
    assert_eq!(status_of(&app, 10, "not-a-key").await, 401);
    assert_eq!(gitlab.calls_for("not-a-key"), 0);
    // No project record is made for a refused key.
    let (s, _) = app
        .call("GET", "/api/v4/projects/999", Some(&app.admin_token), None)
        .await;
    assert_eq!(s, 404);

    // Within the positive lifetime but past the negative one, refusals are asked again.
    clock.advance(NEGATIVE);
    assert_eq!(status_of(&app, 10, &other).await, 403);
    assert_eq!(status_of(&app, 999, &unknown).await, 403);
    assert_eq!(
        (gitlab.calls_for(&other), gitlab.calls_for(&unknown)),
        (2, 2)
    );
    // A key allowed meanwhile works at the next question.
    gitlab.project(10, &[&good, &other]);
    clock.advance(NEGATIVE);
    assert_eq!(status_of(&app, 10, &other).await, 200);
    assert_eq!(status_of(&app, 10, &good).await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_revoked_in_gitlab_stops_working_after_its_lifetime() {
    let gitlab = FakeGitlab::start().await;
    let key = new_key();
    gitlab.project(20, &[&key]);
    let (app, clock) = app_for(&gitlab, SHARED_TOKEN).await;
    assert_eq!(status_of(&app, 20, &key).await, 200);
    gitlab.revoke(20, &key);
    clock.advance(Duration::from_secs(30));
    assert_eq!(status_of(&app, 20, &key).await, 200, "still within 60 s");
    assert_eq!(gitlab.calls(), 1);
    clock.advance(Duration::from_secs(31));
    let r = send(&app, 20, &key, "after revocation").await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(gitlab.calls(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_gitlab_is_down_known_keys_get_a_grace_time_and_others_a_503() {
    let gitlab = FakeGitlab::start().await;
    let (known, unknown) = (new_key(), new_key());
    gitlab.project(30, &[&known, &unknown]);
    let (app, clock) = app_for(&gitlab, SHARED_TOKEN).await;
    assert_eq!(status_of(&app, 30, &known).await, 200);

    gitlab.set_down(true);
    clock.advance(MINUTE);
    assert_eq!(status_of(&app, 30, &known).await, 200, "grace time");
    assert_eq!(gitlab.calls(), 2, "GitLab was asked");
    for _ in 0..10 {
        assert_eq!(status_of(&app, 30, &known).await, 200);
    }
    assert_eq!(gitlab.calls(), 2, "not once per event while it is down");

    // A key never confirmed: 503 with Retry-After, so the SDK does not drop its key.
    let r = send(&app, 30, &unknown, "x").await;
    assert_eq!(r.status, 503, "{}", r.body);
    let retry: u64 = r
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .expect("seconds");
    assert!((1..=10).contains(&retry), "{retry}");
    assert_eq!(status_of(&app, 30, &unknown).await, 503);
    assert_eq!(gitlab.calls_for(&unknown), 1, "asked once per interval");

    // Asked again after the interval; the known key still in grace.
    clock.advance(NEGATIVE);
    assert_eq!(status_of(&app, 30, &known).await, 200);
    assert_eq!(gitlab.calls_for(&known), 3);
    // Past lifetime plus grace (60 + 300 s since GitLab last confirmed it): 503.
    clock.advance(Duration::from_secs(300));
    let r = send(&app, 30, &known, "x").await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(r.header("retry-after").is_some());

    // GitLab back: the next question settles both.
    gitlab.set_down(false);
    clock.advance(NEGATIVE);
    assert_eq!(status_of(&app, 30, &known).await, 200);
    assert_eq!(status_of(&app, 30, &unknown).await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_gitlab_is_a_503_not_a_401() {
    // A port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", closed.local_addr().expect("addr"));
    drop(closed);
    let clock = Arc::new(ManualClock::new());
    let app = spawn_app_with_clock(
        move |c| {
            c.gitlab.url = Some(url);
            c.gitlab.error_tracking_token = Some(Secret(SHARED_TOKEN.into()));
        },
        clock,
    )
    .await;
    let r = send(&app, 5, &new_key(), "x").await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(r.header("retry-after").is_some());
    // Keys faultline itself issued do not depend on GitLab.
    let (project, key, _) = app.project_with_key("local").await;
    assert_eq!(status_of(&app, project, &key).await, 200);
}

/// Everything the server logs at WARN and above, for the whole test binary.
fn log_capture() -> Arc<Mutex<Vec<u8>>> {
    static CAPTURE: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    CAPTURE
        .get_or_init(|| {
            let buf = Arc::new(Mutex::new(Vec::new()));
            let sink = buf.clone();
            let _ = tracing_subscriber::fmt()
                .with_env_filter("warn")
                .with_ansi(false)
                .with_writer(move || Sink(sink.clone()))
                .try_init();
            buf
        })
        .clone()
}

struct Sink(Arc<Mutex<Vec<u8>>>);

impl Write for Sink {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn config_errors(capture: &Mutex<Vec<u8>>) -> usize {
    let text = String::from_utf8_lossy(&capture.lock().expect("lock")).into_owned();
    text.lines()
        .filter(|l| l.contains("ERROR") && l.contains("configuration error: GitLab refused"))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_shared_token_is_a_configuration_error_logged_once_per_interval() {
    let capture = log_capture();
    let gitlab = FakeGitlab::start().await;
    let (k1, k2) = (new_key(), new_key());
    gitlab.project(40, &[&k1, &k2]);
    let (app, clock) = app_for(&gitlab, "not-what-gitlab-has").await;
    let before = config_errors(&capture);

    // Not the SDK's fault: 503, so it keeps its key.
    let r = send(&app, 40, &k1, "x").await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(status_of(&app, 40, &k2).await, 503);
    assert_eq!(gitlab.calls(), 2);
    assert_eq!(config_errors(&capture) - before, 1, "logged once");
    let text = String::from_utf8_lossy(&capture.lock().expect("lock")).into_owned();
    assert!(
        !text.contains("not-what-gitlab-has"),
        "the token is never logged"
    );

    clock.advance(MINUTE);
    assert_eq!(status_of(&app, 40, &k1).await, 503);
    assert_eq!(gitlab.calls(), 3);
    assert_eq!(
        config_errors(&capture) - before,
        2,
        "again after the interval"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dsns_gitlab_builds_reach_the_envelope_and_store_routes() {
    let gitlab = FakeGitlab::start().await;
    let key = new_key();
    gitlab.project(50, &[&key]);
    let (app, _clock) = app_for(&gitlab, SHARED_TOKEN).await;
    let port = app.server.addr.port();
    // Today's form, port always written, and the older `/projects/api/:id` form.
    let dsns = [
        format!("http://{key}@127.0.0.1:{port}/errortracking/api/v1/projects/50"),
        format!("http://{key}@127.0.0.1:{port}/errortracking/api/v1/projects/api/50"),
    ];
    for (i, dsn) in dsns.iter().enumerate() {
        let dsn = dsn.clone();
        tokio::task::spawn_blocking(move || {
            let (hub, client) = sdk(&dsn);
            hub.capture_message(&format!("through dsn {i}"), sentry::Level::Error);
            assert!(client.flush(Some(Duration::from_secs(10))), "SDK flushed");
        })
        .await
        .expect("sdk thread");
    }
    // The `/store/` routes of both forms.
    for prefix in [
        "/errortracking/api/v1/projects/api",
        "/errortracking/api/v1/projects/api/api",
    ] {
        let r = app
            .send(
                "POST",
                &format!("{prefix}/50/store/?sentry_key={key}&sentry_version=7"),
                Auth::None,
                Body::Json(json!({"message": format!("store via {prefix}")})),
            )
            .await;
        assert_eq!(r.status, 200, "{prefix}: {}", r.body);
    }
    let r = gitlab_get(&app, "/errortracking/api/v1/projects/50/messages?limit=10").await;
    assert_eq!(r.status, 200, "{}", r.body);
    let mut texts: Vec<String> = r
        .body
        .as_array()
        .expect("array")
        .iter()
        .map(|m| m["message"].as_str().expect("text").to_owned())
        .collect();
    texts.sort();
    assert_eq!(
        texts,
        [
            "store via /errortracking/api/v1/projects/api",
            "store via /errortracking/api/v1/projects/api/api",
            "through dsn 0",
            "through dsn 1",
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gitlab_deleting_a_project_removes_its_data() {
    let gitlab = FakeGitlab::start().await;
    let key = new_key();
    gitlab.project(60, &[&key]);
    let (app, _clock) = app_for(&gitlab, SHARED_TOKEN).await;
    assert_eq!(status_of(&app, 60, &key).await, 200);
    let r = gitlab_get(&app, "/errortracking/api/v1/projects/60/errors").await;
    assert_eq!(r.body.as_array().map(Vec::len), Some(1));

    let delete = |token: Option<&'static str>| {
        let mut req = app
            .client
            .delete(app.url("/errortracking/api/v1/projects/60"));
        if let Some(t) = token {
            req = req.header("Gitlab-Error-Tracking-Token", t);
        }
        req.send()
    };
    let r = common::read_resp(delete(None).await.expect("sent")).await;
    assert_eq!(r.status, 401);
    let r = common::read_resp(delete(Some("wrong")).await.expect("sent")).await;
    assert_eq!((r.status, r.body), (401, common::unauthorized()));
    gitlab.delete_project(60);
    let r = common::read_resp(delete(Some(SHARED_TOKEN)).await.expect("sent")).await;
    assert_eq!(
        (r.status, r.body),
        (202, json!({"message": "202 Accepted"}))
    );
    let db = common::Db::of(&app).await;
    eventually("the project's rows are removed", || async {
        db.int(
            "SELECT (SELECT COUNT(*) FROM events WHERE project_id = 60)
                  + (SELECT COUNT(*) FROM errors WHERE project_id = 60)
                  + (SELECT COUNT(*) FROM projects WHERE id = 60)",
        )
        .await
            == 0
    })
    .await;
    let r = gitlab_get(&app, "/errortracking/api/v1/projects/60/errors").await;
    assert_eq!((r.status, r.body), (200, json!([])));
    // The cached answer went with the project: GitLab is asked again, and says no.
    let calls = gitlab.calls();
    assert_eq!(status_of(&app, 60, &key).await, 403);
    assert_eq!(gitlab.calls(), calls + 1);
    // Deleting a project faultline never saw is no error for GitLab.
    let r = app
        .client
        .delete(app.url("/errortracking/api/v1/projects/123456"))
        .header("Gitlab-Error-Tracking-Token", SHARED_TOKEN)
        .send()
        .await
        .expect("sent");
    assert_eq!(r.status().as_u16(), 202);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn made_up_keys_cannot_grow_the_cache_past_its_capacity() {
    let gitlab = FakeGitlab::start().await;
    let key = new_key();
    gitlab.project(70, &[&key]);
    let clock = Arc::new(ManualClock::new());
    let url = gitlab.url.clone();
    let app = spawn_app_with_clock(
        move |c| {
            c.gitlab.url = Some(url);
            c.gitlab.error_tracking_token = Some(Secret(SHARED_TOKEN.into()));
            c.gitlab.key_cache_capacity = 10;
        },
        clock,
    )
    .await;
    assert_eq!(status_of(&app, 70, &key).await, 200);
    for _ in 0..50 {
        assert_eq!(status_of(&app, 70, &new_key()).await, 403);
    }
    let held = app
        .server
        .state
        .gitlab
        .as_ref()
        .expect("GitLab keys")
        .answers_held();
    assert!(held <= 10, "{held} answers held");
    // Refusals go first: the allowed key is still answered from memory.
    let calls = gitlab.calls_for(&key);
    assert_eq!(status_of(&app, 70, &key).await, 200);
    assert_eq!(gitlab.calls_for(&key), calls);
}
