//! Alerts end to end, with real receivers on loopback: a real SDK's first event of a new error
//! gives one message per channel, a regression one, a frequency threshold one per quiet period;
//! the webhook's signature verifies with the README's own check; a failing receiver gets the
//! alert on a later try and its failure shows on the channel; a flood past a rule's rate is
//! summarised; internal targets are refused; the rule routes keep to the role matrix.

mod common;
mod ingest_support;

use std::time::Duration;

use common::receiver::{Receiver, Recorded};
use common::{check, forbidden, sdk, spawn_app_with, unauthorized, Auth, Body, TestApp};
use faultline::config::Config;
use ingest_support::{error_event, new_id, post_event};
use serde_json::{json, Value};

#[derive(Debug)]
struct PaymentDeclined(u32);
impl std::fmt::Display for PaymentDeclined {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "card {} declined", self.0)
    }
}
impl std::error::Error for PaymentDeclined {}

/// A server that may alert loopback receivers, retrying quickly.
async fn alert_app(tweak: impl FnOnce(&mut Config)) -> TestApp {
    spawn_app_with(|c| {
        c.alerts.allow_internal_targets = true;
        c.alerts.retry_base_ms = 50;
        c.alerts.poll_interval_ms = 50;
        c.alerts.request_timeout_ms = 2000;
        tweak(c);
    })
    .await
}

async fn create_rule(app: &TestApp, project_id: i64, body: Value) -> Value {
    let (s, r) = app
        .call(
            "POST",
            &format!("/api/v4/projects/{project_id}/error_tracking/alert_rules"),
            Some(&app.admin_token),
            Some(body),
        )
        .await;
    assert_eq!(s, 201, "create rule: {r}");
    r
}

/// The rule's channels route.
fn channels_path(project_id: i64, rule: &Value) -> String {
    format!(
        "/api/v4/projects/{project_id}/error_tracking/alert_rules/{}/channels",
        rule["id"]
    )
}

/// Asks for a test notification on the channel; returns the status.
async fn send_test(app: &TestApp, project_id: i64, rule: &Value, channel: &Value) -> u16 {
    let path = format!("{}/{}/test", channels_path(project_id, rule), channel["id"]);
    app.call("POST", &path, Some(&app.admin_token), None)
        .await
        .0
}

async fn add_channel(app: &TestApp, project_id: i64, rule: &Value, kind: &str, url: &str) -> Value {
    let (s, c) = app
        .call(
            "POST",
            &channels_path(project_id, rule),
            Some(&app.admin_token),
            Some(json!({"type": kind, "url": url})),
        )
        .await;
    assert_eq!(s, 201, "add channel: {c}");
    c
}

async fn get_rule(app: &TestApp, project_id: i64, rule: &Value) -> Value {
    let (s, r) = app
        .call(
            "GET",
            &format!(
                "/api/v4/projects/{project_id}/error_tracking/alert_rules/{}",
                rule["id"]
            ),
            Some(&app.admin_token),
            None,
        )
        .await;
    assert_eq!(s, 200, "get rule: {r}");
    r
}

/// Checks a webhook's signature the way the README tells receivers to, in Python's standard
/// library, so the check does not share code with the server.
fn verify_with_python(secret: &str, request: &Recorded) -> bool {
    let dir = tempfile::tempdir().expect("temp dir");
    let body = dir.path().join("body");
    std::fs::write(&body, &request.body).expect("body written");
    let script = r#"
import hashlib, hmac, sys
secret, timestamp, signature, path = sys.argv[1:5]
body = open(path, "rb").read()
expected = "sha256=" + hmac.new(secret.encode(), timestamp.encode() + b"." + body,
                                hashlib.sha256).hexdigest()
print("ok" if hmac.compare_digest(expected, signature) else "bad")
"#;
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(secret)
        .arg(request.header("x-faultline-timestamp"))
        .arg(request.header("x-faultline-signature"))
        .arg(&body)
        .output()
        .expect("python3 runs");
    assert!(out.status.success(), "python3: {out:?}");
    String::from_utf8_lossy(&out.stdout).trim() == "ok"
}

/// Waits long enough that a second message would have arrived.
async fn settle() {
    tokio::time::sleep(Duration::from_millis(1500)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_error_from_the_sdk_notifies_every_channel_once() {
    let app = alert_app(|_| {}).await;
    let recv = Receiver::start().await;
    let (pid, _key, dsn) = app.project_with_key("shop").await;
    let rule = create_rule(&app, pid, json!({"name": "new errors", "new_error": true})).await;
    let hook = add_channel(&app, pid, &rule, "webhook", &recv.url("/hook/s3cr3t-path")).await;
    let secret = hook["secret"]
        .as_str()
        .expect("secret shown once")
        .to_owned();
    add_channel(&app, pid, &rule, "slack", &recv.url("/slack")).await;
    add_channel(&app, pid, &rule, "discord", &recv.url("/discord")).await;
    add_channel(&app, pid, &rule, "teams", &recv.url("/teams")).await;

    let ids = tokio::task::spawn_blocking(move || {
        let (hub, client) = sdk(&dsn);
        let first = hub.capture_error(&PaymentDeclined(4242));
        assert!(client.flush(Some(Duration::from_secs(10))), "SDK flushed");
        // The same error again: no new error, no new alert.
        let second = hub.capture_error(&PaymentDeclined(1111));
        assert!(client.flush(Some(Duration::from_secs(10))), "SDK flushed");
        (first, second)
    })
    .await
    .expect("sdk thread");

    let hooks = recv.wait_for("/hook/s3cr3t-path", 1).await;
    for path in ["/slack", "/discord", "/teams"] {
        recv.wait_for(path, 1).await;
    }
    settle().await;
    for path in ["/hook/s3cr3t-path", "/slack", "/discord", "/teams"] {
        assert_eq!(recv.requests_to(path).len(), 1, "{path} notified once");
    }
    assert_eq!(recv.requests().len(), 4);

    let h = &hooks[0];
    assert!(verify_with_python(&secret, h), "the signature verifies");
    assert!(
        !verify_with_python("another secret", h),
        "a wrong secret fails"
    );
    let p = h.json();
    assert_eq!(p["version"], 1);
    assert_eq!(p["trigger"], "new_error");
    assert_eq!(
        p["project"],
        json!({"id": pid, "path_with_namespace": "errors/shop"})
    );
    assert_eq!(p["rule"]["name"], "new errors");
    let e = &p["error"];
    assert_eq!(e["status"], "unresolved");
    assert!(
        e["title"]
            .as_str()
            .expect("title")
            .contains("PaymentDeclined"),
        "{e}"
    );
    let count = e["count"].as_i64().expect("count");
    assert!(
        (1..=2).contains(&count),
        "the count includes the event that created it: {e}"
    );
    assert!(e["first_seen"].is_string() && e["last_seen"].is_string());
    let link = e["url"].as_str().expect("url");
    assert!(
        link.starts_with(&format!(
            "{}/errortracking/api/v1/projects/{pid}/errors/",
            app.base
        )),
        "{link}"
    );
    let latest = &e["latest_event"];
    // The newest event when the message was built: the first, or already the second.
    let latest_id = latest["event_id"].as_str().expect("event id");
    assert!(
        [ids.0.simple().to_string(), ids.1.simple().to_string()].contains(&latest_id.to_owned()),
        "{latest}"
    );
    assert_eq!(latest["environment"], "test");
    assert_eq!(latest["release"], "app@1.2.3");
    assert_eq!(latest["level"], "error");
    assert!(latest["culprit"].is_string());
    // The link leads to the error.
    let r = app
        .client
        .get(link)
        .header("PRIVATE-TOKEN", &app.admin_token)
        .send()
        .await
        .expect("link");
    assert_eq!(r.status(), 200);

    let slack = recv.requests_to("/slack")[0].json();
    assert!(
        slack["text"].as_str().expect("text").contains("New error"),
        "{slack}"
    );
    let discord = recv.requests_to("/discord")[0].json();
    assert!(discord["embeds"][0]["title"].is_string(), "{discord}");
    assert_eq!(discord["embeds"][0]["url"], link);
    let teams = recv.requests_to("/teams")[0].json();
    assert_eq!(teams["type"], "message");
    let card = &teams["attachments"][0];
    assert_eq!(
        card["contentType"],
        "application/vnd.microsoft.card.adaptive"
    );
    assert_eq!(card["content"]["type"], "AdaptiveCard");
    assert_eq!(card["content"]["actions"][0]["url"], link);
    // Only the generic webhook is signed.
    assert!(recv.requests_to("/slack")[0]
        .headers
        .get("x-faultline-signature")
        .is_none());

    // After creation neither the full URL nor the secret is shown, and each channel reports
    // its success.
    let shown = get_rule(&app, pid, &rule).await;
    let text = shown.to_string();
    assert!(
        !text.contains("s3cr3t-path") && !text.contains(&secret),
        "{shown}"
    );
    for c in shown["channels"].as_array().expect("channels") {
        assert_eq!(c["url"], format!("http://127.0.0.1/…"));
        assert!(c["last_success_at"].is_string(), "{c}");
        assert_eq!(c["last_failure"], Value::Null);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_regression_notifies_once() {
    let app = alert_app(|_| {}).await;
    let recv = Receiver::start().await;
    let (pid, key, _dsn) = app.project_with_key("shop").await;
    let rule = create_rule(&app, pid, json!({"name": "back again", "regression": true})).await;
    add_channel(&app, pid, &rule, "webhook", &recv.url("/hook")).await;

    let event = |id: &str| error_event(id, "KeyError", "'sku'", "lookup");
    assert_eq!(
        post_event(&app, pid, &key, &event(&new_id())).await.status,
        200
    );
    settle().await;
    assert!(recv.requests().is_empty(), "a new error is no regression");

    let (s, list) = app
        .call(
            "GET",
            &format!("/errortracking/api/v1/projects/{pid}/errors"),
            Some(&app.admin_token),
            None,
        )
        .await;
    assert_eq!(s, 200);
    let fingerprint = list[0]["fingerprint"].clone();
    let (s, b) = app
        .call(
            "PUT",
            &format!("/errortracking/api/v1/projects/{pid}/errors/{fingerprint}"),
            Some(&app.admin_token),
            Some(json!({"status": "resolved"})),
        )
        .await;
    assert_eq!(s, 200, "{b}");

    // Two events of the resolved error: it reopens once.
    assert_eq!(
        post_event(&app, pid, &key, &event(&new_id())).await.status,
        200
    );
    assert_eq!(
        post_event(&app, pid, &key, &event(&new_id())).await.status,
        200
    );
    let got = recv.wait_for("/hook", 1).await;
    settle().await;
    assert_eq!(recv.requests().len(), 1, "one regression, one message");
    let p = got[0].json();
    assert_eq!(p["trigger"], "regression");
    assert_eq!(p["error"]["status"], "unresolved");
    assert_eq!(p["error"]["fingerprint"], fingerprint);
}

/// An event of the frequency test's error at `at_ms`.
fn timed_event(at_ms: i64) -> Value {
    let mut e = error_event(&new_id(), "TimeoutError", "upstream", "fetch");
    e["timestamp"] = json!(at_ms as f64 / 1000.0);
    e
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frequency_threshold_fires_once_then_again_after_its_quiet_period() {
    let app = alert_app(|_| {}).await;
    let recv = Receiver::start().await;
    let (pid, key, _dsn) = app.project_with_key("shop").await;
    let rule = create_rule(
        &app,
        pid,
        json!({"name": "spike", "frequency_count": 3, "frequency_minutes": 10, "quiet_minutes": 30}),
    )
    .await;
    assert_eq!(
        rule["frequency"],
        json!({"count": 3, "minutes": 10, "quiet_minutes": 30})
    );
    add_channel(&app, pid, &rule, "webhook", &recv.url("/hook")).await;
    let clock = app.server.state.alert_clock.clone();
    let send = |at: i64| {
        let app = &app;
        let key = key.clone();
        async move {
            let r = post_event(app, pid, &key, &timed_event(at)).await;
            assert_eq!(r.status, 200);
            app.settle_counts().await;
        }
    };

    // Two events: below the threshold.
    send(clock.now_millis()).await;
    send(clock.now_millis()).await;
    settle().await;
    assert!(recv.requests().is_empty(), "two events are not three");
    // The third fires; more within the quiet period do not.
    send(clock.now_millis()).await;
    let got = recv.wait_for("/hook", 1).await;
    assert_eq!(got[0].json()["trigger"], "frequency");
    for _ in 0..4 {
        send(clock.now_millis()).await;
    }
    settle().await;
    assert_eq!(recv.requests().len(), 1, "quiet for 30 minutes");

    // Twenty minutes on: the old events have left the window, and it is still quiet.
    clock.advance(Duration::from_secs(20 * 60));
    for _ in 0..3 {
        send(clock.now_millis()).await;
    }
    settle().await;
    assert_eq!(recv.requests().len(), 1, "still within the quiet period");

    // Past the quiet period, a window with too few events stays quiet...
    clock.advance(Duration::from_secs(11 * 60));
    send(clock.now_millis()).await;
    send(clock.now_millis()).await;
    settle().await;
    assert_eq!(recv.requests().len(), 1, "two events in the window");
    // ...and the third fires again.
    send(clock.now_millis()).await;
    recv.wait_for("/hook", 2).await;
    settle().await;
    assert_eq!(recv.requests().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_failing_three_times_gets_the_alert_on_the_fourth_try() {
    let app = alert_app(|_| {}).await;
    let recv = Receiver::start().await;
    recv.fail_next(3);
    let (pid, key, _dsn) = app.project_with_key("shop").await;
    let rule = create_rule(&app, pid, json!({"name": "new", "new_error": true})).await;
    add_channel(&app, pid, &rule, "webhook", &recv.url("/hook")).await;

    assert_eq!(
        post_event(&app, pid, &key, &error_event(&new_id(), "E", "v", "f"))
            .await
            .status,
        200
    );
    let got = recv.wait_for("/hook", 4).await;
    settle().await;
    assert_eq!(
        recv.requests().len(),
        4,
        "delivered on the fourth try, then no more"
    );
    let ids: Vec<Value> = got.iter().map(|r| r.json()["id"].clone()).collect();
    assert!(
        ids.iter().all(|id| id == &ids[0]),
        "one alert, tried four times: {ids:?}"
    );

    let c = &get_rule(&app, pid, &rule).await["channels"][0];
    assert_eq!(c["last_failure"]["status"], 500, "{c}");
    assert_eq!(c["last_failure"]["reason"], "the receiver answered 500");
    assert!(c["last_success_at"].is_string(), "{c}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_receiver_neither_slows_ingestion_nor_hides_its_failure() {
    let app = alert_app(|c| c.alerts.request_timeout_ms = 300).await;
    let recv = Receiver::start().await;
    recv.hang(true);
    let (pid, key, _dsn) = app.project_with_key("shop").await;
    let rule = create_rule(&app, pid, json!({"name": "new", "new_error": true})).await;
    add_channel(&app, pid, &rule, "webhook", &recv.url("/hook")).await;

    let started = std::time::Instant::now();
    for n in 0..20 {
        let e = error_event(&new_id(), &format!("E{n}"), "v", "f");
        assert_eq!(post_event(&app, pid, &key, &e).await.status, 200);
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "ingestion waited on delivery: {:?}",
        started.elapsed()
    );
    recv.wait_for("/hook", 1).await;
    common::eventually("the timeout is recorded", || async {
        get_rule(&app, pid, &rule).await["channels"][0]["last_failure"]["reason"] == "timed out"
    })
    .await;
    let c = &get_rule(&app, pid, &rule).await["channels"][0];
    assert_eq!(c["last_failure"]["status"], Value::Null);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_rules_rate_alerts_are_summarised() {
    let app = alert_app(|c| c.alerts.summary_interval_secs = 1).await;
    let recv = Receiver::start().await;
    recv.hang(true);
    let (pid, key, _dsn) = app.project_with_key("shop").await;
    let rule = create_rule(
        &app,
        pid,
        json!({"name": "flood", "new_error": true, "max_per_hour": 2}),
    )
    .await;
    add_channel(&app, pid, &rule, "webhook", &recv.url("/hook")).await;
    // Delivery is held up by the first message while twelve new errors arrive.
    for n in 0..12 {
        let e = error_event(&new_id(), &format!("Flood{n}"), "v", "f");
        assert_eq!(post_event(&app, pid, &key, &e).await.status, 200);
    }
    recv.hang(false);
    let db = common::Db::of(&app).await;
    common::eventually("the flood is delivered", || async {
        db.int("SELECT COUNT(*) FROM alert_outbox").await == 0
    })
    .await;
    settle().await;
    let bodies: Vec<Value> = recv.requests().iter().map(Recorded::json).collect();
    let singles: Vec<&Value> = bodies
        .iter()
        .filter(|b| b["trigger"] == "new_error")
        .collect();
    let summaries: Vec<&Value> = bodies
        .iter()
        .filter(|b| b["trigger"] == "summary")
        .collect();
    assert!(!summaries.is_empty(), "a summary: {bodies:?}");
    assert!(
        bodies.len() < 8,
        "twelve alerts in fewer messages: {}",
        bodies.len()
    );
    // Every alert is accounted for: delivered alone or counted in a summary. (The first
    // message may have been sent twice: it timed out once while the receiver hung.)
    let mut singled: Vec<&Value> = singles.iter().map(|b| &b["error"]["id"]).collect();
    singled.sort_by_key(|v| v.to_string());
    singled.dedup();
    let summarised: u64 = summaries
        .iter()
        .map(|s| s["summary"]["count"].as_u64().expect("count"))
        .sum();
    assert_eq!(singled.len() as u64 + summarised, 12, "{bodies:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_test_call_sends_a_test_notification() {
    let app = alert_app(|_| {}).await;
    let recv = Receiver::start().await;
    let pid = app.project_id("shop", "errors").await;
    let rule = create_rule(&app, pid, json!({"name": "n", "new_error": true})).await;
    let c = add_channel(&app, pid, &rule, "slack", &recv.url("/slack")).await;
    let path = format!(
        "/api/v4/projects/{pid}/error_tracking/alert_rules/{}/channels/{}/test",
        rule["id"], c["id"]
    );
    let (s, b) = app.call("POST", &path, Some(&app.admin_token), None).await;
    assert_eq!((s, b), (202, json!({"message": "202 Accepted"})));
    let got = recv.wait_for("/slack", 1).await;
    assert!(got[0].json()["text"]
        .as_str()
        .expect("text")
        .contains("Test notification"));
    let missing = format!(
        "/api/v4/projects/{pid}/error_tracking/alert_rules/{}/channels/999/test",
        rule["id"]
    );
    let (s, b) = app
        .call("POST", &missing, Some(&app.admin_token), None)
        .await;
    assert_eq!(
        (s, b),
        (404, json!({"message": "404 Alert Channel Not Found"}))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn internal_targets_are_refused_unless_allowed() {
    // The default configuration.
    let app = spawn_app_with(|_| {}).await;
    let recv = Receiver::start().await;
    let pid = app.project_id("shop", "errors").await;
    let rule = create_rule(&app, pid, json!({"name": "n", "new_error": true})).await;
    let path = channels_path(pid, &rule);
    let blocked =
        json!({"message": {"url": ["is blocked: requests to the local network are not allowed"]}});
    for url in [
        recv.url("/hook"),
        "http://localhost:9/hook".into(),
        "http://10.0.0.1/hook".into(),
        "http://192.168.1.10/hook".into(),
        "http://169.254.169.254/latest/meta-data".into(),
        "http://[::1]:9/hook".into(),
        "http://[::ffff:127.0.0.1]/hook".into(),
        "http://0.0.0.0/hook".into(),
    ] {
        check(
            &app,
            "POST",
            &path,
            Auth::Private(&app.admin_token),
            Body::Json(json!({"type": "webhook", "url": url})),
            400,
            &blocked,
        )
        .await;
    }
    check(
        &app,
        "POST",
        &path,
        Auth::Private(&app.admin_token),
        Body::Json(json!({"type": "webhook", "url": "ftp://example.com/x"})),
        400,
        &json!({"message": {"url": ["is blocked: only http and https URLs are allowed"]}}),
    )
    .await;
    check(
        &app,
        "POST",
        &path,
        Auth::Private(&app.admin_token),
        Body::Json(json!({"type": "pager", "url": "https://example.com/x"})),
        400,
        &json!({"error": "type does not have a valid value"}),
    )
    .await;
    assert_eq!(get_rule(&app, pid, &rule).await["channels"], json!([]));
    assert!(recv.requests().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_validation_uses_gitlab_bodies() {
    let app = alert_app(|_| {}).await;
    let pid = app.project_id("shop", "errors").await;
    let base = format!("/api/v4/projects/{pid}/error_tracking/alert_rules");
    let admin = Auth::Private(&app.admin_token);
    for (body, status, expected) in [
        (
            json!({"new_error": true}),
            400,
            json!({"error": "name is missing"}),
        ),
        (
            json!({"name": "x"}),
            400,
            json!({"message": {"base": ["a rule needs at least one trigger: new_error, regression or frequency_count"]}}),
        ),
        (
            json!({"name": "x", "frequency_count": 5}),
            400,
            json!({"error": "frequency_minutes is missing"}),
        ),
        (
            json!({"name": "x", "new_error": true, "levels": ["loud"]}),
            400,
            json!({"error": "levels does not have a valid value"}),
        ),
        (
            json!({"name": "x", "new_error": "maybe"}),
            400,
            json!({"error": "new_error is invalid"}),
        ),
    ] {
        check(
            &app,
            "POST",
            &base,
            admin,
            Body::Json(body),
            status,
            &expected,
        )
        .await;
    }
    let r = create_rule(
        &app,
        pid,
        json!({"name": "prod", "new_error": true, "environments": ["production"], "levels": ["error", "fatal"]}),
    )
    .await;
    assert_eq!(r["environments"], json!(["production"]));
    assert_eq!(r["max_per_hour"], 20);
    let one = format!("{base}/{}", r["id"]);
    let (s, u) = app
        .call(
            "PUT",
            &one,
            Some(&app.admin_token),
            Some(json!({"regression": true, "max_per_hour": 5})),
        )
        .await;
    assert_eq!(s, 200, "{u}");
    assert_eq!(
        (
            u["new_error"].clone(),
            u["regression"].clone(),
            u["max_per_hour"].clone()
        ),
        (json!(true), json!(true), json!(5))
    );
    assert_eq!(
        u["environments"],
        json!(["production"]),
        "unchanged fields stay"
    );
    check(&app, "DELETE", &one, admin, Body::None, 204, &Value::Null).await;
    check(
        &app,
        "GET",
        &one,
        admin,
        Body::None,
        404,
        &json!({"message": "404 Alert Rule Not Found"}),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_pick_the_environment_and_level() {
    let app = alert_app(|_| {}).await;
    let recv = Receiver::start().await;
    let (pid, key, _dsn) = app.project_with_key("shop").await;
    let rule = create_rule(
        &app,
        pid,
        json!({"name": "prod", "new_error": true, "environments": ["production"], "levels": ["fatal"]}),
    )
    .await;
    add_channel(&app, pid, &rule, "webhook", &recv.url("/hook")).await;
    let mut staging = error_event(&new_id(), "A", "v", "f");
    staging["environment"] = json!("staging");
    staging["level"] = json!("fatal");
    let mut warning = error_event(&new_id(), "B", "v", "f");
    warning["environment"] = json!("production");
    warning["level"] = json!("warning");
    let mut matching = error_event(&new_id(), "C", "v", "f");
    matching["environment"] = json!("production");
    matching["level"] = json!("fatal");
    for e in [&staging, &warning, &matching] {
        assert_eq!(post_event(&app, pid, &key, e).await.status, 200);
    }
    let got = recv.wait_for("/hook", 1).await;
    settle().await;
    assert_eq!(recv.requests().len(), 1);
    assert_eq!(
        got[0].json()["error"]["latest_event"]["environment"],
        "production"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_role_matrix_holds_on_the_rule_routes() {
    let app = alert_app(|_| {}).await;
    let recv = Receiver::start().await;
    let pid = app.project_id("shop", "errors").await;
    let rule = create_rule(&app, pid, json!({"name": "n", "new_error": true})).await;
    let channel = add_channel(&app, pid, &rule, "webhook", &recv.url("/hook")).await;
    let rid = rule["id"].as_i64().expect("id");
    let cid = channel["id"].as_i64().expect("id");
    let base = format!("/api/v4/projects/{pid}/error_tracking/alert_rules");

    let guest = app.member("guest", pid, Some(10)).await;
    let reporter = app.member("reporter", pid, Some(20)).await;
    let developer = app.member("developer", pid, Some(30)).await;
    let maintainer = app.member("maintainer", pid, Some(40)).await;
    let owner = app.member("owner", pid, Some(50)).await;
    let stranger = app.member("stranger", pid, None).await;
    let not_found = json!({"message": "404 Project Not Found"});

    // (method, path, body, status for those allowed)
    let routes = |rid: i64, cid: i64| {
        vec![
            ("GET", base.clone(), None, 200),
            (
                "POST",
                base.clone(),
                Some(json!({"name": "m", "new_error": true})),
                201,
            ),
            ("GET", format!("{base}/{rid}"), None, 200),
            (
                "PUT",
                format!("{base}/{rid}"),
                Some(json!({"name": "renamed"})),
                200,
            ),
            (
                "POST",
                format!("{base}/{rid}/channels"),
                Some(json!({"type": "slack", "url": recv.url("/slack")})),
                201,
            ),
            (
                "POST",
                format!("{base}/{rid}/channels/{cid}/test"),
                None,
                202,
            ),
            ("DELETE", format!("{base}/{rid}/channels/{cid}"), None, 204),
            ("DELETE", format!("{base}/{rid}"), None, 204),
        ]
    };
    for (method, path, body, _) in routes(rid, cid) {
        let b = || body.clone().map_or(Body::None, Body::Json);
        check(&app, method, &path, Auth::None, b(), 401, &unauthorized()).await;
        check(
            &app,
            method,
            &path,
            Auth::Private(&stranger.token),
            b(),
            404,
            &not_found,
        )
        .await;
        for u in [&guest, &reporter, &developer] {
            check(
                &app,
                method,
                &path,
                Auth::Private(&u.token),
                b(),
                403,
                &forbidden(),
            )
            .await;
        }
    }
    // Maintainers, Owners and administrators may do everything; each runs the routes on a
    // rule and channel of its own, since the last two delete them.
    for token in [&maintainer.token, &owner.token, &app.admin_token] {
        let r = create_rule(&app, pid, json!({"name": "own", "new_error": true})).await;
        let c = add_channel(&app, pid, &r, "webhook", &recv.url("/own")).await;
        for (method, path, body, status) in
            routes(r["id"].as_i64().expect("id"), c["id"].as_i64().expect("id"))
        {
            let resp = app
                .send(
                    method,
                    &path,
                    Auth::Private(token),
                    body.map_or(Body::None, Body::Json),
                )
                .await;
            assert_eq!(resp.status, status, "{method} {path}: {}", resp.body);
        }
    }
}

/// A real SMTP server on loopback: Python's `aiosmtpd`, writing what it receives to a Maildir.
/// It is installed with pip when missing (CI installs it up front).
struct SmtpSink {
    child: std::process::Child,
    dir: tempfile::TempDir,
    port: u16,
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn ensure_aiosmtpd() {
    let have = |_: ()| {
        std::process::Command::new("python3")
            .args(["-c", "import aiosmtpd"])
            .status()
            .is_ok_and(|s| s.success())
    };
    if have(()) {
        return;
    }
    for extra in [&[][..], &["--user"][..], &["--break-system-packages"][..]] {
        let _ = std::process::Command::new("python3")
            .args(["-m", "pip", "install", "--quiet", "aiosmtpd"])
            .args(extra)
            .status();
        if have(()) {
            return;
        }
    }
    panic!("aiosmtpd could not be installed (python3 -m pip install aiosmtpd)");
}

impl SmtpSink {
    async fn start() -> SmtpSink {
        ensure_aiosmtpd();
        let dir = tempfile::tempdir().expect("maildir");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let child = std::process::Command::new("python3")
            .args(["-m", "aiosmtpd", "-n", "-l"])
            .arg(format!("127.0.0.1:{port}"))
            .args(["-c", "aiosmtpd.handlers.Mailbox"])
            .arg(dir.path().join("mail"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("aiosmtpd starts");
        let sink = SmtpSink { child, dir, port };
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(
                std::time::Instant::now() < deadline,
                "aiosmtpd did not listen"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        sink
    }

    /// Every message received, as raw text, oldest first.
    fn messages(&self) -> Vec<String> {
        let new = self.dir.path().join("mail").join("new");
        let mut files: Vec<(std::time::SystemTime, String)> = std::fs::read_dir(new)
            .map(|d| {
                d.filter_map(Result::ok)
                    .map(|e| {
                        let modified = e
                            .metadata()
                            .and_then(|m| m.modified())
                            .unwrap_or(std::time::UNIX_EPOCH);
                        (
                            modified,
                            std::fs::read_to_string(e.path()).unwrap_or_default(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        files.sort();
        // Undo quoted-printable's soft line breaks and its escaped `=`, enough to find a link.
        files
            .into_iter()
            .map(|(_, m)| {
                m.replace("=\r\n", "")
                    .replace("=\n", "")
                    .replace("=3D", "=")
            })
            .collect()
    }

    async fn wait_for(&self, n: usize) -> Vec<String> {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let got = self.messages();
            if got.len() >= n {
                return got;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{} emails, expected {n}",
                got.len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn email_goes_through_a_real_smtp_server_with_an_hourly_cap() {
    let smtp = SmtpSink::start().await;
    let app = alert_app(|c| {
        c.alerts.summary_interval_secs = 1;
        c.alerts.smtp.host = Some("127.0.0.1".into());
        c.alerts.smtp.port = Some(smtp.port);
        c.alerts.smtp.security = faultline::config::SmtpSecurity::None;
        c.alerts.smtp.from = "alerts@faultline.test".into();
    })
    .await;
    let (pid, key, _dsn) = app.project_with_key("shop").await;
    let rule = create_rule(
        &app,
        pid,
        json!({"name": "mail", "new_error": true, "max_per_hour": 1}),
    )
    .await;
    let path = channels_path(pid, &rule);
    check(
        &app,
        "POST",
        &path,
        Auth::Private(&app.admin_token),
        Body::Json(json!({"type": "email", "recipients": ["not an address"]})),
        400,
        &json!({"message": {"recipients": ["contains an invalid address"]}}),
    )
    .await;
    let (s, c) = app
        .call(
            "POST",
            &path,
            Some(&app.admin_token),
            Some(json!({"type": "email", "recipients": ["oncall@example.com", "dev@example.com"]})),
        )
        .await;
    assert_eq!(s, 201, "{c}");
    assert_eq!(
        c["recipients"],
        json!(["oncall@example.com", "dev@example.com"])
    );

    let e = error_event(&new_id(), "MailError", "first", "f");
    assert_eq!(post_event(&app, pid, &key, &e).await.status, 200);
    let got = smtp.wait_for(1).await;
    let first = &got[0];
    assert!(
        first.contains("Subject: [errors/shop] New error (mail)"),
        "{first}"
    );
    assert!(first.contains("oncall@example.com") && first.contains("dev@example.com"));
    assert!(first.contains("From: alerts@faultline.test"), "{first}");
    assert!(
        first.contains(&format!(
            "{}/errortracking/api/v1/projects/{pid}/errors/",
            app.base
        )),
        "{first}"
    );

    // Past the hourly cap of one: the next new errors arrive as one summary.
    for n in 0..3 {
        let e = error_event(&new_id(), &format!("MailError{n}"), "more", "f");
        assert_eq!(post_event(&app, pid, &key, &e).await.status, 200);
    }
    let got = smtp.wait_for(2).await;
    settle().await;
    let got = if got.len() < smtp.messages().len() {
        smtp.messages()
    } else {
        got
    };
    assert!(
        got.len() <= 3,
        "three alerts past the cap are not three emails: {}",
        got.len()
    );
    assert!(got[1].contains("(summary)"), "{}", got[1]);

    let c = &get_rule(&app, pid, &rule).await["channels"][0];
    assert!(c["last_success_at"].is_string(), "{c}");
    assert_eq!(c["url"], Value::Null);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn email_channels_need_a_mail_server() {
    let app = alert_app(|_| {}).await;
    let pid = app.project_id("shop", "errors").await;
    let rule = create_rule(&app, pid, json!({"name": "mail", "new_error": true})).await;
    check(
        &app,
        "POST",
        &format!(
            "/api/v4/projects/{pid}/error_tracking/alert_rules/{}/channels",
            rule["id"]
        ),
        Auth::Private(&app.admin_token),
        Body::Json(json!({"type": "email", "recipients": ["a@example.com"]})),
        400,
        &json!({"message": {"type": ["email needs a mail server ([alerts.smtp] host)"]}}),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_are_followed_only_to_allowed_targets() {
    // Loopback is allowed by network; every other internal address is not.
    let app = spawn_app_with(|c| {
        c.alerts.allowed_internal_networks = vec!["127.0.0.0/8".into()];
        c.alerts.retry_base_ms = 50;
        c.alerts.poll_interval_ms = 50;
        c.alerts.give_up_after_secs = 1;
    })
    .await;
    let recv = Receiver::start().await;
    recv.redirect("/to-metadata", "http://169.254.169.254/latest/meta-data");
    recv.redirect("/to-private", "http://10.0.0.1/hook");
    recv.redirect("/to-loopback", &recv.url("/landed"));
    let pid = app.project_id("shop", "errors").await;
    let rule = create_rule(&app, pid, json!({"name": "n", "new_error": true})).await;
    let path = channels_path(pid, &rule);
    for url in ["http://10.0.0.1/hook", "http://[::1]:9/hook"] {
        let (s, b) = app
            .call(
                "POST",
                &path,
                Some(&app.admin_token),
                Some(json!({"type": "webhook", "url": url})),
            )
            .await;
        assert_eq!(s, 400, "{url}: {b}");
    }
    let mut channels = Vec::new();
    for p in ["/to-metadata", "/to-private", "/to-loopback"] {
        channels.push(add_channel(&app, pid, &rule, "webhook", &recv.url(p)).await);
    }
    for c in &channels {
        assert_eq!(send_test(&app, pid, &rule, c).await, 202);
    }
    // The allowed redirect is followed, with the body.
    let landed = recv.wait_for("/landed", 1).await;
    assert_eq!(landed[0].json()["trigger"], "test");
    // The others fail without leaving loopback, and say why (and, after a second, that they
    // were given up).
    common::eventually("both refusals are recorded", || async {
        let r = get_rule(&app, pid, &rule).await;
        let refused = |c: &Value| {
            c["last_failure"]["reason"]
                .as_str()
                .is_some_and(|r| r.starts_with("requests to the local network are not allowed"))
        };
        refused(&r["channels"][0]) && refused(&r["channels"][1])
    })
    .await;
    let r = get_rule(&app, pid, &rule).await;
    assert!(r["channels"][2]["last_success_at"].is_string(), "{r}");
}

/// The outbox's rows.
async fn outbox_rows(app: &TestApp) -> i64 {
    common::Db::of(app)
        .await
        .int("SELECT COUNT(*) FROM alert_outbox")
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alert_nobody_takes_is_given_up_after_its_bound() {
    // A day's bound (the default), crossed on the alert clock rather than waited for.
    let app = alert_app(|_| {}).await;
    let recv = Receiver::start().await;
    recv.fail_next(usize::MAX);
    let (pid, key, _dsn) = app.project_with_key("shop").await;
    let rule = create_rule(&app, pid, json!({"name": "new", "new_error": true})).await;
    add_channel(&app, pid, &rule, "webhook", &recv.url("/hook")).await;
    let e = error_event(&new_id(), "E", "v", "f");
    assert_eq!(post_event(&app, pid, &key, &e).await.status, 200);

    // Failures within the bound are retried: the alert waits.
    recv.wait_for("/hook", 3).await;
    assert_eq!(
        outbox_rows(&app).await,
        1,
        "still waiting after three failures"
    );
    let c = &get_rule(&app, pid, &rule).await["channels"][0];
    assert_eq!(c["last_failure"]["reason"], "the receiver answered 500");

    // A day later, the next failure is the last.
    app.server
        .state
        .alert_clock
        .advance(Duration::from_secs(24 * 3600));
    common::eventually("the alert is given up", || async {
        outbox_rows(&app).await == 0
    })
    .await;
    let tries = recv.requests().len();
    let c = &get_rule(&app, pid, &rule).await["channels"][0];
    assert_eq!(c["last_failure"]["status"], 500, "{c}");
    assert_eq!(
        c["last_failure"]["reason"],
        "the receiver answered 500; the alert was given up"
    );
    assert_eq!(c["last_success_at"], Value::Null);
    // Nothing is tried again, even after the longest backoff would have passed.
    app.server
        .state
        .alert_clock
        .advance(Duration::from_secs(3600));
    settle().await;
    assert_eq!(recv.requests().len(), tries, "no attempt after giving up");
    let ids: Vec<Value> = recv
        .requests()
        .iter()
        .map(|r| r.json()["id"].clone())
        .collect();
    assert!(ids.iter().all(|id| id == &ids[0]), "one alert: {ids:?}");
}

/// Sends `n` events of `n` new errors, sixteen at a time.
async fn flood(app: &TestApp, pid: i64, key: &str, n: usize) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let url = app.url(&ingest_support::envelope_path(pid));
    let auth = ingest_support::sentry_auth(key);
    let next = std::sync::Arc::new(AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..16 {
        let (client, url, auth, next) =
            (app.client.clone(), url.clone(), auth.clone(), next.clone());
        tasks.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= n {
                    break;
                }
                let e = error_event(&new_id(), &format!("Flood{i}"), "v", "f");
                let r = client
                    .post(&url)
                    .header("x-sentry-auth", &auth)
                    .body(ingest_support::event_envelope(&e))
                    .send()
                    .await
                    .expect("sent");
                assert_eq!(r.status(), 200);
            }
        });
    }
    while let Some(t) = tasks.join_next().await {
        t.expect("sender");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_thousands_is_one_summary_at_once() {
    // One message an hour, then one summary per ten minutes of the alert clock.
    let app = alert_app(|c| c.alerts.summary_interval_secs = 600).await;
    let recv = Receiver::start().await;
    let (pid, key, _dsn) = app.project_with_key("shop").await;
    let rule = create_rule(
        &app,
        pid,
        json!({"name": "flood", "new_error": true, "max_per_hour": 1}),
    )
    .await;
    add_channel(&app, pid, &rule, "webhook", &recv.url("/hook")).await;
    const FLOOD: usize = 2000;
    flood(&app, pid, &key, FLOOD).await;

    // The first alert goes alone; what comes within the summary interval waits for it (a
    // summary may already have gone with what had arrived by then).
    recv.wait_for("/hook", 1).await;
    settle().await;
    let before = recv.requests().len();
    assert!(before <= 2, "{before} messages during the flood");
    // Past the interval, everything left goes out at once as one summary: not one per
    // round's claim of 64 rows.
    app.server
        .state
        .alert_clock
        .advance(Duration::from_secs(11 * 60));
    let started = std::time::Instant::now();
    common::eventually("the flood is summarised", || async {
        outbox_rows(&app).await == 0
    })
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
    settle().await;
    let bodies: Vec<Value> = recv.requests().iter().map(Recorded::json).collect();
    assert_eq!(bodies.len(), before + 1, "one summary after the interval");
    // The single message and a first summary may go out in one round, in either order.
    let singles = bodies
        .iter()
        .filter(|b| b["trigger"] == "new_error")
        .count();
    assert_eq!(singles, 1, "one message within the rate");
    let summarised: u64 = bodies
        .iter()
        .filter(|b| b["trigger"] != "new_error")
        .map(|b| {
            assert_eq!(b["trigger"], "summary", "{b}");
            b["summary"]["count"].as_u64().expect("count")
        })
        .sum();
    assert_eq!(
        summarised as usize,
        FLOOD - 1,
        "every other alert is counted once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_that_resolves_to_loopback_is_refused_at_creation_and_at_delivery() {
    // The default: no internal targets. Alerts are given up after a second.
    let app = spawn_app_with(|c| {
        c.alerts.retry_base_ms = 50;
        c.alerts.poll_interval_ms = 50;
        c.alerts.give_up_after_secs = 1;
    })
    .await;
    let recv = Receiver::start().await;
    let by_name = format!("http://localhost:{}/hook", recv.addr.port());
    let pid = app.project_id("shop", "errors").await;
    let rule = create_rule(&app, pid, json!({"name": "n", "new_error": true})).await;
    let path = channels_path(pid, &rule);
    check(
        &app,
        "POST",
        &path,
        Auth::Private(&app.admin_token),
        Body::Json(json!({"type": "webhook", "url": by_name})),
        400,
        &json!({"message": {"url": ["is blocked: requests to the local network are not allowed"]}}),
    )
    .await;

    // A name that resolved elsewhere when its channel was made and to loopback now (DNS
    // rebinding): stored as if it had passed, it is refused by the resolver on connection.
    let db = common::Db::of(&app).await;
    let rule_id = rule["id"].as_i64().expect("id");
    assert!(
        !by_name.contains('\''),
        "the URL is written into the statement"
    );
    db.execute(&format!(
        "INSERT INTO alert_channels (rule_id, kind, url, secret, created_at)
         VALUES ({rule_id}, 'webhook', '{by_name}', 'whsec_test', 0)"
    ))
    .await;
    let stored = json!({"id": db.int(&format!(
        "SELECT MAX(id) FROM alert_channels WHERE rule_id = {rule_id}"
    )).await});
    assert_eq!(send_test(&app, pid, &rule, &stored).await, 202);
    common::eventually("the refusal is recorded", || async {
        get_rule(&app, pid, &rule).await["channels"][0]["last_failure"]["reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("requests to the local network are not allowed"))
    })
    .await;
    settle().await;
    assert!(recv.requests().is_empty(), "nothing reached loopback");

    // The same name reaches the receiver where loopback is allowed: it was the guard that
    // refused it, not the name.
    let open = alert_app(|_| {}).await;
    let pid = open.project_id("shop", "errors").await;
    let rule = create_rule(&open, pid, json!({"name": "n", "new_error": true})).await;
    let c = add_channel(&open, pid, &rule, "webhook", &by_name).await;
    assert_eq!(send_test(&open, pid, &rule, &c).await, 202);
    recv.wait_for("/hook", 1).await;
}
