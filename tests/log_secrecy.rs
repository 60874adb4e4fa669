//! Secrets never reach the logs: with every module logging at TRACE, a run of management and
//! ingestion requests (good and refused, tokens and keys in headers and query strings) leaves no
//! token or key in the output, and alert deliveries that fail, retry and are redirected leave
//! no webhook URL path or signing secret.

mod common;

use common::gitlab::{new_key, FakeGitlab, SHARED_TOKEN};
use common::receiver::Receiver;
use common::{spawn_app_with, LogCapture};
use faultline::config::Secret;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_and_keys_never_appear_in_logs() {
    let capture = LogCapture::default();
    let writer = capture.clone();
    tracing_subscriber::fmt()
        // Everything at trace, as the server's own filter allows it (the database driver is
        // held at info there, since its debug lines carry query parameters).
        .with_env_filter(faultline::config::log_filter("trace"))
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .init();

    // GitLab's integrated mode on, so its shared token and the keys it vouches for are exercised.
    let gitlab = FakeGitlab::start().await;
    let gitlab_key = new_key();
    gitlab.project(900, &[&gitlab_key]);
    let gitlab_url = gitlab.url.clone();
    let app = spawn_app_with(move |c| {
        c.gitlab.url = Some(gitlab_url);
        c.gitlab.error_tracking_token = Some(Secret(SHARED_TOKEN.into()));
        c.alerts.allow_internal_targets = true;
        c.alerts.retry_base_ms = 50;
        c.alerts.poll_interval_ms = 50;
    })
    .await;
    let (project, key, _) = app.project_with_key("secret").await;
    let user = app.create_user("eve", false).await;

    // Management calls: good token, bad token, token in the query string.
    app.call("GET", "/api/v4/user", Some(&user.token), None)
        .await;
    app.call(
        "GET",
        "/api/v4/user",
        Some("glpat-not-a-real-token-0000"),
        None,
    )
    .await;
    app.client
        .get(app.url(&format!("/api/v4/user?private_token={}", app.admin_token)))
        .send()
        .await
        .expect("query token");

    // Ingestion: key in the header, in the query, refused after deletion.
    let body = "{}\n{\"type\":\"event\"}\n{\"message\":\"hi\"}\n";
    for url in [
        format!("/api/{project}/envelope/"),
        format!("/api/{project}/envelope/?sentry_key={key}&sentry_version=7"),
    ] {
        app.client
            .post(app.url(&url))
            .header(
                "X-Sentry-Auth",
                format!("Sentry sentry_key={key}, sentry_version=7"),
            )
            .body(body)
            .send()
            .await
            .expect("ingest");
    }
    let (_, keys) = app
        .call(
            "GET",
            &format!("/api/v4/projects/{project}/error_tracking/client_keys"),
            Some(&app.admin_token),
            None,
        )
        .await;
    let key_id = keys[0]["id"].as_i64().expect("key id");
    app.call(
        "DELETE",
        &format!("/api/v4/projects/{project}/error_tracking/client_keys/{key_id}"),
        Some(&app.admin_token),
        None,
    )
    .await;
    app.client
        .post(app.url(&format!("/api/{project}/envelope/")))
        .header(
            "X-Sentry-Auth",
            format!("Sentry sentry_key={key}, sentry_version=7"),
        )
        .body(body)
        .send()
        .await
        .expect("ingest");

    // A key only GitLab knows (asked about with the shared token), and a read with that token,
    // a right and a wrong one.
    app.client
        .post(app.url("/errortracking/api/v1/projects/api/900/envelope/"))
        .header(
            "X-Sentry-Auth",
            format!("Sentry sentry_key={gitlab_key}, sentry_version=7"),
        )
        .body(body)
        .send()
        .await
        .expect("ingest");
    assert_eq!(gitlab.calls(), 1, "GitLab was asked");
    for token in [SHARED_TOKEN, "gitlab-wrong-shared-token"] {
        app.client
            .get(app.url("/errortracking/api/v1/projects/900/errors"))
            .header("Gitlab-Error-Tracking-Token", token)
            .send()
            .await
            .expect("read");
    }

    // Alerts: a webhook whose URL path is its credential fails twice, then succeeds; another
    // is redirected.
    let recv = Receiver::start().await;
    recv.fail_next(2);
    let hook_path = "/services/T0SECRET/B0SECRET/pathcredential0123";
    recv.redirect(
        "/redirected-credential-path",
        &recv.url("/landed-credential-path"),
    );
    let (s, rule) = app
        .call(
            "POST",
            &format!("/api/v4/projects/{project}/error_tracking/alert_rules"),
            Some(&app.admin_token),
            Some(json!({"name": "n", "new_error": true})),
        )
        .await;
    assert_eq!(s, 201);
    let mut secrets = Vec::new();
    for path in [hook_path, "/redirected-credential-path"] {
        let (s, c) = app
            .call(
                "POST",
                &format!(
                    "/api/v4/projects/{project}/error_tracking/alert_rules/{}/channels",
                    rule["id"]
                ),
                Some(&app.admin_token),
                Some(json!({"type": "webhook", "url": recv.url(path)})),
            )
            .await;
        assert_eq!(s, 201);
        secrets.push(c["secret"].as_str().expect("secret").to_owned());
        let (s, _) = app
            .call(
                "POST",
                &format!(
                    "/api/v4/projects/{project}/error_tracking/alert_rules/{}/channels/{}/test",
                    rule["id"], c["id"]
                ),
                Some(&app.admin_token),
                None,
            )
            .await;
        assert_eq!(s, 202);
    }
    let db = common::Db::of(&app).await;
    common::eventually("every alert is delivered", || async {
        db.int("SELECT COUNT(*) FROM alert_outbox").await == 0
    })
    .await;
    assert!(
        recv.requests().len() >= 4,
        "two failures and two deliveries"
    );

    let logs = capture.text();
    assert!(
        logs.contains("alert delivery failed"),
        "the capture works: the failed deliveries were logged"
    );
    for secret in secrets {
        assert!(
            !logs.contains(&secret),
            "a webhook secret leaked into the logs"
        );
    }
    for credential in ["T0SECRET", "pathcredential", "credential-path"] {
        assert!(
            !logs.contains(credential),
            "a webhook URL leaked into the logs"
        );
    }
    assert!(
        logs.contains("request"),
        "the capture works: request lines were logged"
    );
    for secret in [
        app.admin_token.as_str(),
        user.token.as_str(),
        key.as_str(),
        "glpat-not-a-real-token-0000",
        gitlab_key.as_str(),
        &gitlab_key[5..],
        SHARED_TOKEN,
        "gitlab-wrong-shared-token",
    ] {
        assert!(!logs.contains(secret), "a secret leaked into the logs");
    }
    // The 32 hex characters of a key are as secret as the whole key.
    assert!(!logs.contains(&key[5..]));
}
