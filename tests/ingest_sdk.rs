//! The real `sentry` crate as a client: an SDK configured with a key's DSN sends errors, messages
//! and attachments, which must land in the database, grouped; a deleted key is refused at once.

mod common;

use std::time::Duration;

use common::{sdk, spawn_app, Db};

#[derive(Debug)]
struct NotFound(u32);
impl std::fmt::Display for NotFound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "user {} not found", self.0)
    }
}
impl std::error::Error for NotFound {}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_errors_messages_and_attachments_are_stored_and_grouped() {
    let app = spawn_app().await;
    let (project_id, _key, dsn) = app.project_with_key("sdk").await;

    let ids = tokio::task::spawn_blocking(move || {
        let (hub, client) = sdk(&dsn);
        let mut ids = Vec::new();
        // The same error with different ids in its value: one group.
        for n in [41, 42, 43] {
            ids.push(hub.capture_error(&NotFound(n)));
        }
        // Messages with different numbers: one group of message events.
        ids.push(hub.capture_message("cache miss for 1001 items", sentry::Level::Warning));
        ids.push(hub.capture_message("cache miss for 2002 items", sentry::Level::Warning));
        // An event with an attachment.
        ids.push(hub.with_scope(
            |scope| {
                scope.add_attachment(sentry::protocol::Attachment {
                    buffer: b"log line 1\nlog line 2\n".to_vec(),
                    filename: "app.log".into(),
                    content_type: Some("text/plain".into()),
                    ..Default::default()
                })
            },
            || hub.capture_message("with attachment", sentry::Level::Error),
        ));
        assert!(client.flush(Some(Duration::from_secs(10))), "SDK flushed");
        ids
    })
    .await
    .expect("sdk thread");

    app.settle_counts().await;
    let db = Db::of(&app).await;
    assert_eq!(db.int("SELECT COUNT(*) FROM events").await, 6);
    for id in &ids {
        let n = db
            .int(&format!(
                "SELECT COUNT(*) FROM events WHERE event_id = '{}' AND project_id = {project_id}",
                id.simple()
            ))
            .await;
        assert_eq!(n, 1, "event {id} stored once");
    }
    // Three groups: the error, the cache-miss message, the attachment message.
    assert_eq!(db.int("SELECT COUNT(*) FROM errors").await, 3);
    let r = db
        .row(
            "SELECT e.name, e.event_count, ev.environment, ev.release FROM errors e
             JOIN events ev ON ev.error_id = e.id
             WHERE e.event_count = 3 LIMIT 1",
        )
        .await;
    let (name, events, env, release) = (
        r[0].text().expect("name"),
        r[1].int(),
        r[2].text().expect("environment"),
        r[3].text().expect("release"),
    );
    assert_eq!(events, 3);
    assert!(
        name.contains("NotFound"),
        "error name is the exception type: {name}"
    );
    assert_eq!(env, "test");
    assert_eq!(release, "app@1.2.3");
    assert_eq!(
        db.int("SELECT COUNT(*) FROM events WHERE is_message").await,
        3
    );
    assert_eq!(
        db.int("SELECT COUNT(*) FROM errors WHERE event_count = 2 AND name LIKE 'cache miss%'")
            .await,
        1
    );
    let r = db.row("SELECT filename, data FROM attachments").await;
    let (filename, data) = (r[0].text().expect("filename"), r[1].bytes());
    assert_eq!(filename, "app.log");
    assert_eq!(data, b"log line 1\nlog line 2\n");
    let att_event = db.row("SELECT event_id FROM attachments").await[0]
        .text()
        .expect("attachment event");
    assert_eq!(att_event, ids[5].simple().to_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_key_is_refused_on_the_next_event() {
    let app = spawn_app().await;
    let (project_id, key, dsn) = app.project_with_key("revoked").await;

    let send = |dsn: String, msg: &'static str| {
        tokio::task::spawn_blocking(move || {
            let (hub, client) = sdk(&dsn);
            hub.capture_message(msg, sentry::Level::Info);
            client.flush(Some(Duration::from_secs(10)));
        })
    };
    send(dsn.clone(), "before delete").await.expect("send");
    let db = Db::of(&app).await;
    assert_eq!(db.int("SELECT COUNT(*) FROM events").await, 1);

    // Delete the key through the management API.
    app.delete_key_by_public_key(project_id, &key).await;

    send(dsn.clone(), "after delete").await.expect("send");
    assert_eq!(
        db.int("SELECT COUNT(*) FROM events").await,
        1,
        "event after delete refused"
    );

    // The raw endpoint says why: a deleted key is refused like a disabled one.
    let resp = app
        .client
        .post(app.url(&format!("/api/{project_id}/store/")))
        .header(
            "X-Sentry-Auth",
            format!("Sentry sentry_key={key}, sentry_version=7"),
        )
        .body(r#"{"message":"x"}"#)
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_key_stays_refused_as_disabled_after_a_restart() {
    let app = spawn_app().await;
    let (project_id, key, _) = app.project_with_key("restart").await;
    let keys = app.keys(project_id).await;
    let key_id = keys[0]["id"].as_i64().expect("key id");
    assert_eq!(app.delete_key(project_id, key_id).await.status, 200);
    assert!(
        app.keys(project_id).await.is_empty(),
        "a deleted key is no longer listed"
    );

    let dir = app.dir;
    app.server.shutdown().await.expect("clean shutdown");
    let server = common::spawn_on_dir(dir.path(), |_| {}).await;
    let resp = reqwest::Client::new()
        .post(format!("http://{}/api/{project_id}/store/", server.addr))
        .header(
            "X-Sentry-Auth",
            format!("Sentry sentry_key={key}, sentry_version=7"),
        )
        .body(r#"{"message":"x"}"#)
        .send()
        .await
        .expect("send");
    assert_eq!(
        resp.status(),
        403,
        "still refused as a disabled key, not an unknown one"
    );
    server.shutdown().await.expect("clean shutdown");
}
