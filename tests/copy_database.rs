//! `faultline admin copy-database --to postgres://...`: a SQLite data directory with every kind
//! of row (users with password hashes, tokens, members, settings, live and deleted keys, errors
//! and events with payloads, attachments, user reports, counts, alerts, web sessions) is copied
//! by the real binary into a fresh PostgreSQL database, and every table is compared row by row;
//! then a server on the PostgreSQL database answers the read API as the SQLite one did and
//! goes on from the copied ids. The source is SQLite whatever `FAULTLINE_TEST_BACKEND` says.

mod common;
mod ingest_support;

use std::path::Path;
use std::time::Duration;

use common::receiver::Receiver;
use common::{Db, SqlValue, TestApp, Web};
use faultline::config::Config;
use ingest_support::*;
use serde_json::{json, Value};

/// Whether the PostgreSQL tests can run: without `FAULTLINE_TEST_POSTGRES` they are skipped,
/// except in CI, where that is a failure.
fn postgres_available(test: &str) -> bool {
    if std::env::var_os("FAULTLINE_TEST_POSTGRES").is_some() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{test}: FAULTLINE_TEST_POSTGRES must be set in CI"
    );
    eprintln!("{test}: skipped, FAULTLINE_TEST_POSTGRES is not set");
    false
}

/// A server on SQLite in a new data directory (never on PostgreSQL, whatever the suite's
/// backend), with alerts allowed to reach loopback receivers.
async fn sqlite_app() -> TestApp {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = Config {
        listen: "127.0.0.1:0".parse().expect("addr"),
        data_dir: dir.path().to_path_buf(),
        ..Config::default()
    };
    config.database.url = None;
    config.alerts.allow_internal_targets = true;
    config.alerts.retry_base_ms = 50;
    config.alerts.poll_interval_ms = 50;
    let server = faultline::app::spawn(config).await.expect("server starts");
    let admin_token = server.initial_admin_token.clone().expect("admin token");
    TestApp {
        base: format!("http://{}", server.addr),
        server,
        admin_token,
        client: reqwest::Client::new(),
        dir,
    }
}

/// A server on the PostgreSQL database `url` (with a data directory of its own).
async fn postgres_server(url: &str) -> (faultline::app::Server, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = Config {
        listen: "127.0.0.1:0".parse().expect("addr"),
        data_dir: dir.path().to_path_buf(),
        ..Config::default()
    };
    config.database.url = Some(faultline::config::Secret(url.to_owned()));
    let server = faultline::app::spawn(config)
        .await
        .expect("server starts on PostgreSQL");
    (server, dir)
}

/// Runs `faultline admin copy-database --to url` on the data directory `dir`.
async fn copy_database(dir: &Path, url: &str) -> std::process::Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_faultline"))
        .args(["admin", "copy-database", "--to", url])
        .env("FAULTLINE_DATA_DIR", dir)
        .env_remove("FAULTLINE_DATABASE__URL")
        .env_remove("FAULTLINE_CONFIG")
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .expect("the binary runs")
}

async fn postgres(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect to the copy");
    tokio::spawn(connection);
    client
}

/// The tables of the SQLite database and their columns, in the database's own order.
async fn sqlite_tables(db: &Db) -> Vec<(String, Vec<String>)> {
    let mut out = Vec::new();
    for t in db
        .rows("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")
        .await
    {
        let name = t[0].text().expect("name");
        let cols = db
            .rows(&format!("SELECT name FROM pragma_table_info('{name}')"))
            .await
            .into_iter()
            .map(|c| c[0].text().expect("column"))
            .collect();
        out.push((name, cols));
    }
    out
}

/// Every row of `sql`, as comparable text, sorted (the two databases order text differently).
async fn sorted_rows(db: &Db, sql: &str) -> Vec<String> {
    let mut rows: Vec<String> = db
        .rows(sql)
        .await
        .into_iter()
        .map(|r| format!("{r:?}"))
        .collect();
    rows.sort();
    rows
}

async fn errors_list(base: &str, token: &str, project_id: i64) -> Value {
    let r = reqwest::Client::new()
        .get(format!(
            "{base}/errortracking/api/v1/projects/{project_id}/errors?sort=last_seen_desc&limit=100"
        ))
        .header("PRIVATE-TOKEN", token)
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 200);
    r.json().await.expect("json")
}

/// The events of the project's KeyError error, oldest first.
async fn key_error_events(base: &str, token: &str, project_id: i64, errors: &Value) -> Value {
    let error = errors
        .as_array()
        .expect("list")
        .iter()
        .find(|e| e["name"] == "KeyError")
        .expect("the KeyError error");
    let r = reqwest::Client::new()
        .get(format!(
            "{base}/errortracking/api/v1/projects/{project_id}/errors/{}/events?sort=occurred_at_asc&limit=100",
            error["fingerprint"]
        ))
        .header("PRIVATE-TOKEN", token)
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 200);
    r.json().await.expect("json")
}

#[derive(Debug)]
struct Declined(u32);
impl std::fmt::Display for Declined {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "card {} declined", self.0)
    }
}
impl std::error::Error for Declined {}

/// What the source holds besides its rows: ids and tokens the checks after the copy use.
struct Source {
    app: TestApp,
    shop: i64,
    shop_key: String,
    alice: common::TestUser,
    alice_password: String,
    /// The id of a project deleted and purged before the copy: SQLite never hands it out
    /// again, and neither may PostgreSQL.
    purged_project: i64,
    /// An event id already stored, to send again after the copy.
    stored_event: String,
    errors_before: Value,
    /// The events of the KeyError error, through the read API.
    events_before: Value,
}

/// Fills a SQLite data directory through the API, the SDK and raw envelopes.
async fn fill_source(recv: &Receiver) -> Source {
    let app = sqlite_app().await;
    let alice = app.create_user("alice", false).await;
    let bob = app.create_user("bob", true).await;
    let alice_password = "alice-password-for-the-copy".to_owned();
    app.give_password(alice.id, &alice_password).await;
    // Two web sessions.
    Web::sign_in(&app.base, "alice", &alice_password).await;
    app.root_web().await;
    // A revoked token.
    app.create_token(bob.id, &["read_api"], None).await;
    let revoked = app.tokens_of(bob.id).await.last().expect("token")["id"]
        .as_i64()
        .expect("id");
    let (s, _) = app
        .call(
            "DELETE",
            &format!("/api/v4/personal_access_tokens/{revoked}"),
            Some(&app.admin_token),
            None,
        )
        .await;
    assert_eq!(s, 204);

    let (shop, shop_key, dsn) = app.project_with_key("shop").await;
    app.add_member(shop, alice.id, 30).await;
    let billing = app.create_project("billing", "finance").await["id"]
        .as_i64()
        .expect("id");
    app.set_setting(billing, "PUT", "active=true&integrated=false")
        .await;
    app.create_key(billing).await;
    let gone = app.create_key(billing).await["id"]
        .as_i64()
        .expect("key id");
    assert_eq!(app.delete_key(billing, gone).await.status, 200);
    let doomed = app.create_project("doomed", "finance").await["id"]
        .as_i64()
        .expect("id");
    app.delete_project(doomed).await;
    common::eventually("the deleted project is purged", || async {
        Db::Sqlite(rusqlite::Connection::open(app.dir.path().join("faultline.db")).expect("db"))
            .int(&format!(
                "SELECT COUNT(*) FROM projects WHERE id = {doomed}"
            ))
            .await
            == 0
    })
    .await;

    // Alerts: a rule for new errors with one channel that works and one that never answers,
    // and a frequency rule.
    let (s, rule) = app
        .call(
            "POST",
            &format!("/api/v4/projects/{shop}/error_tracking/alert_rules"),
            Some(&app.admin_token),
            Some(json!({"name": "new errors", "new_error": true, "regression": true})),
        )
        .await;
    assert_eq!(s, 201, "{rule}");
    for url in [recv.url("/hook"), "http://127.0.0.1:9/never".to_owned()] {
        let (s, c) = app
            .call(
                "POST",
                &format!(
                    "/api/v4/projects/{shop}/error_tracking/alert_rules/{}/channels",
                    rule["id"]
                ),
                Some(&app.admin_token),
                Some(json!({"type": "webhook", "url": url})),
            )
            .await;
        assert_eq!(s, 201, "{c}");
    }
    let (s, r) = app
        .call(
            "POST",
            &format!("/api/v4/projects/{shop}/error_tracking/alert_rules"),
            Some(&app.admin_token),
            Some(
                json!({"name": "spike", "frequency_count": 2, "frequency_minutes": 10,
                        "quiet_minutes": 30, "environments": ["production"]}),
            ),
        )
        .await;
    assert_eq!(s, 201, "{r}");
    let (s, c) = app
        .call(
            "POST",
            &format!(
                "/api/v4/projects/{shop}/error_tracking/alert_rules/{}/channels",
                r["id"]
            ),
            Some(&app.admin_token),
            Some(json!({"type": "webhook", "url": recv.url("/spike")})),
        )
        .await;
    assert_eq!(s, 201, "{c}");

    // Events through the SDK: the same error three times (one group, one user), a message.
    tokio::task::spawn_blocking(move || {
        let (hub, client) = common::sdk(&dsn);
        hub.configure_scope(|scope| {
            scope.set_user(Some(sentry::User {
                id: Some("customer-7".into()),
                ..Default::default()
            }));
            scope.set_tag("region", "eu");
        });
        for n in [1, 2, 3] {
            hub.capture_error(&Declined(n));
        }
        hub.capture_message("nightly job finished late", sentry::Level::Warning);
        assert!(client.flush(Some(Duration::from_secs(10))), "SDK flushed");
    })
    .await
    .expect("sdk thread");

    // Raw envelopes: an error with an attachment and a user report, and a gzip one (stored as
    // received).
    let stored_event = new_id();
    let mut event = error_event(&stored_event, "KeyError", "'sku'", "lookup");
    event["environment"] = json!("production");
    let body = envelope(
        json!({"event_id": stored_event}),
        &[
            (json!({"type": "event"}), event.to_string().into_bytes()),
            (
                json!({"type": "attachment", "filename": "core.bin", "attachment_type": "event.minidump"}),
                vec![0, 1, 2, 255, b'\n', 0],
            ),
            (
                json!({"type": "user_report"}),
                json!({"event_id": stored_event, "name": "Ada", "email": "ada@example.com", "comments": "it broke"})
                    .to_string()
                    .into_bytes(),
            ),
        ],
    );
    let auth = sentry_auth(&shop_key);
    let r = send(
        &app,
        "POST",
        &envelope_path(shop),
        &[("x-sentry-auth", &auth)],
        body,
    )
    .await;
    assert_accepted(&r, &stored_event, "envelope with extras");
    for _ in 0..2 {
        let id = new_id();
        let mut e = error_event(&id, "KeyError", "'sku'", "lookup");
        e["environment"] = json!("production");
        let r = send(
            &app,
            "POST",
            &envelope_path(shop),
            &[("x-sentry-auth", &auth), ("content-encoding", "gzip")],
            gzip(&event_envelope(&e)),
        )
        .await;
        assert_accepted(&r, &id, "gzip envelope");
    }
    app.settle_counts().await;
    recv.wait_for("/hook", 1).await;
    recv.wait_for("/spike", 1).await;
    let errors_before = errors_list(&app.base, &app.admin_token, shop).await;
    assert!(errors_before.as_array().expect("list").len() >= 3);
    let events_before = key_error_events(&app.base, &app.admin_token, shop, &errors_before).await;

    Source {
        app,
        shop,
        shop_key,
        alice,
        alice_password,
        purged_project: doomed,
        stored_event,
        errors_before,
        events_before,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sqlite_directory_is_copied_into_postgres_with_its_whole_history() {
    if !postgres_available("copy_database") {
        return;
    }
    let recv = Receiver::start().await;
    let source = fill_source(&recv).await;
    let TestApp {
        server,
        dir,
        admin_token,
        ..
    } = source.app;
    server.shutdown().await.expect("server stops");

    let sqlite =
        Db::Sqlite(rusqlite::Connection::open(dir.path().join("faultline.db")).expect("db"));
    // One event as if received three days earlier, so the copy needs two partitions.
    sqlite
        .execute(&format!(
            "UPDATE events SET received_at = received_at - 3 * 86400000 WHERE event_id = '{}'",
            source.stored_event
        ))
        .await;
    let mut tables = sqlite_tables(&sqlite).await;
    for (t, _) in &tables {
        if t != "ingest_state" {
            let n = sqlite.int(&format!("SELECT COUNT(*) FROM {t}")).await;
            assert!(n > 0, "the source has rows in {t}");
        }
    }
    // The per-error order of events is a table on SQLite and an index on PostgreSQL, which the
    // copied events fill; it is not copied.
    tables.retain(|(t, _)| t != "event_by_error");

    let url = common::create_test_database().await;
    let out = copy_database(dir.path(), &url).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "copy failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed: Value = serde_json::from_str(&stdout).expect("the count check is JSON");
    assert_eq!(printed["counts_match"], json!(true), "{printed}");
    assert!(!printed["copied_to"].as_str().expect("url").is_empty());
    let listed = printed["tables"].as_array().expect("tables");
    for (t, _) in &tables {
        if t == "ingest_state" {
            continue;
        }
        let n = sqlite.int(&format!("SELECT COUNT(*) FROM {t}")).await;
        let entry = listed
            .iter()
            .find(|e| e["table"] == json!(t))
            .unwrap_or_else(|| panic!("{t} is in the count check: {printed}"));
        assert_eq!(
            (&entry["sqlite"], &entry["postgres"]),
            (&json!(n), &json!(n)),
            "{t}"
        );
    }
    let events = sqlite.int("SELECT COUNT(*) FROM events").await;
    let event_ids = listed
        .iter()
        .find(|e| e["table"] == "event_ids")
        .expect("event_ids checked");
    assert_eq!(event_ids["postgres"], json!(events));

    // Every table, row by row (booleans read as 0/1 on both sides, blobs as bytes).
    let pg = Db::Postgres(postgres(&url).await);
    for (t, cols) in &tables {
        if t == "ingest_state" {
            continue;
        }
        let sql = format!("SELECT {} FROM {t}", cols.join(", "));
        let (want, got) = (
            sorted_rows(&sqlite, &sql).await,
            sorted_rows(&pg, &sql).await,
        );
        assert_eq!(got.len(), want.len(), "{t}: rows");
        assert_eq!(got, want, "{t}: values");
    }
    assert_eq!(
        sorted_rows(
            &pg,
            "SELECT project_id, event_id, received_at FROM event_ids"
        )
        .await,
        sorted_rows(
            &sqlite,
            "SELECT project_id, event_id, received_at FROM events"
        )
        .await
    );
    assert_eq!(
        pg.int("SELECT COUNT(*) FROM events WHERE node <> 0 OR node_seq <> id")
            .await,
        0,
        "copied events belong to node 0, numbered by their id"
    );
    assert_eq!(pg.int("SELECT COUNT(*) FROM ingest_nodes").await, 0);
    let days = sqlite
        .int("SELECT COUNT(DISTINCT received_at / 86400000) FROM events")
        .await;
    assert_eq!(days, 2);
    assert_eq!(
        pg.int("SELECT COUNT(*) FROM pg_inherits WHERE inhparent = 'events'::regclass")
            .await,
        days,
        "one partition per day"
    );

    // A few values by their PostgreSQL types.
    let typed = postgres(&url).await;
    let hash: Option<String> = typed
        .query_one(
            "SELECT password_hash FROM users WHERE id = $1",
            &[&source.alice.id],
        )
        .await
        .expect("alice")
        .get(0);
    let sqlite_hash = sqlite
        .row(&format!(
            "SELECT password_hash FROM users WHERE id = {}",
            source.alice.id
        ))
        .await[0]
        .text();
    assert_eq!(hash, sqlite_hash);
    assert!(hash.expect("a hash").starts_with("$argon2id$"));
    let flags = typed
        .query_one(
            "SELECT (SELECT is_admin FROM users WHERE username = 'bob'),
                    (SELECT NOT is_admin FROM users WHERE username = 'alice'),
                    (SELECT bool_or(revoked) FROM personal_access_tokens),
                    (SELECT bool_and(NOT revoked) FROM personal_access_tokens WHERE user_id = $1),
                    (SELECT bool_or(NOT active) FROM client_keys WHERE deleted_at IS NOT NULL),
                    (SELECT active AND integrated FROM error_tracking_settings WHERE project_id = $2),
                    (SELECT bool_or(is_message) FROM events),
                    (SELECT bool_and(on_new AND on_regression) FROM alert_rules WHERE name = 'new errors')",
            &[&source.alice.id, &source.shop],
        )
        .await
        .expect("flags");
    for i in 0..flags.len() {
        assert_eq!(flags.get::<_, Option<bool>>(i), Some(true), "flag {i}");
    }
    let payload: Vec<u8> = typed
        .query_one(
            "SELECT payload FROM events WHERE event_id = $1",
            &[&source.stored_event],
        )
        .await
        .expect("event")
        .get(0);
    let sqlite_payload = sqlite
        .row(&format!(
            "SELECT payload FROM events WHERE event_id = '{}'",
            source.stored_event
        ))
        .await[0]
        .bytes();
    assert_eq!(payload, sqlite_payload);
    assert_eq!(
        pg.row("SELECT data FROM attachments").await[0],
        SqlValue::Bytes(vec![0, 1, 2, 255, b'\n', 0])
    );

    // A second copy into the same database is refused, and leaves it as it was.
    let again = copy_database(dir.path(), &url).await;
    assert!(!again.status.success());
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(stderr.contains("is not empty"), "{stderr}");
    assert_eq!(pg.int("SELECT COUNT(*) FROM events").await, events);

    // The identity sequences moved on: new rows get ids above every copied one (and above the
    // purged project's, which SQLite never hands out again).
    let max_user = sqlite.int("SELECT MAX(id) FROM users").await;
    let max_event = sqlite.int("SELECT MAX(id) FROM events").await;
    let max_key = sqlite.int("SELECT MAX(id) FROM client_keys").await;
    let max_error = sqlite.int("SELECT MAX(id) FROM errors").await;

    // A server on the copy answers as the SQLite one did, with the same tokens and keys.
    let (server, _pg_dir) = postgres_server(&url).await;
    assert!(
        server.initial_admin_token.is_none(),
        "the copied administrator is kept"
    );
    let app = TestApp {
        base: format!("http://{}", server.addr),
        server,
        admin_token,
        client: reqwest::Client::new(),
        dir: tempfile::tempdir().expect("temp dir"),
    };
    let errors_after = errors_list(&app.base, &app.admin_token, source.shop).await;
    assert_eq!(errors_after, source.errors_before);
    assert_eq!(
        key_error_events(&app.base, &app.admin_token, source.shop, &errors_after).await,
        source.events_before
    );
    let (s, me) = app
        .call("GET", "/api/v4/user", Some(&source.alice.token), None)
        .await;
    assert_eq!((s, &me["username"]), (200, &json!("alice")));
    Web::sign_in(&app.base, "alice", &source.alice_password).await;

    let newcomer = app.create_user("newcomer", false).await;
    assert!(newcomer.id > max_user, "{} > {max_user}", newcomer.id);
    let project = app.create_project("after", "finance").await["id"]
        .as_i64()
        .expect("id");
    assert!(
        project > source.purged_project,
        "{project} > {}",
        source.purged_project
    );
    let key = app.create_key(source.shop).await["id"]
        .as_i64()
        .expect("id");
    assert!(key > max_key, "{key} > {max_key}");

    // The copied key is known, a copied event id is a duplicate, and a new event is stored
    // with a new id, counted on top of the copied counts.
    let auth = sentry_auth(&source.shop_key);
    let duplicate = error_event(&source.stored_event, "KeyError", "'sku'", "lookup");
    let r = post_event(&app, source.shop, &source.shop_key, &duplicate).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        pg.int(&format!(
            "SELECT COUNT(*) FROM events WHERE event_id = '{}'",
            source.stored_event
        ))
        .await,
        1
    );
    let id = new_id();
    let r = send(
        &app,
        "POST",
        &envelope_path(source.shop),
        &[("x-sentry-auth", &auth)],
        event_envelope(&error_event(&id, "KeyError", "'sku'", "lookup")),
    )
    .await;
    assert_accepted(&r, &id, "a new event on the copy");
    let new_event = pg
        .int(&format!("SELECT id FROM events WHERE event_id = '{id}'"))
        .await;
    assert!(new_event > max_event, "{new_event} > {max_event}");
    let fresh = error_event(&new_id(), "ValueError", "brand new", "elsewhere");
    assert_eq!(
        post_event(&app, source.shop, &source.shop_key, &fresh)
            .await
            .status,
        200
    );
    let new_error = pg.int("SELECT MAX(id) FROM errors").await;
    assert!(new_error > max_error, "{new_error} > {max_error}");
    let key_error_count = |list: &Value| -> i64 {
        list.as_array()
            .expect("list")
            .iter()
            .filter(|e| e["name"] == "KeyError")
            .map(|e| e["event_count"].as_i64().expect("count"))
            .sum()
    };
    let before = key_error_count(&source.errors_before);
    let after = key_error_count(&errors_list(&app.base, &app.admin_token, source.shop).await);
    assert_eq!(
        after,
        before + 1,
        "the new event counts on top of the copied ones"
    );
    app.server.shutdown().await.expect("server stops");
}

#[tokio::test]
async fn a_directory_without_a_database_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    // No database is reached: the directory is checked first.
    let out = copy_database(dir.path(), "postgres://nobody@127.0.0.1:1/none").await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no SQLite database"), "{stderr}");
    assert!(
        !dir.path().join("faultline.db").exists(),
        "no database is created"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_a_server_runs_on_is_refused() {
    let app = sqlite_app().await;
    let out = copy_database(app.dir.path(), "postgres://nobody@127.0.0.1:1/none").await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("is in use"), "{stderr}");
    app.server.shutdown().await.expect("server stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_that_is_not_empty_is_refused() {
    if !postgres_available("copy_database") {
        return;
    }
    let app = sqlite_app().await;
    app.create_user("alice", false).await;
    let TestApp { server, dir, .. } = app;
    server.shutdown().await.expect("server stops");
    // A database a server already started on: it has its own administrator.
    let url = common::create_test_database().await;
    let (server, _pg_dir) = postgres_server(&url).await;
    server.shutdown().await.expect("server stops");
    let pg = Db::Postgres(postgres(&url).await);
    let users = pg.int("SELECT COUNT(*) FROM users").await;

    let out = copy_database(dir.path(), &url).await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("is not empty"), "{stderr}");
    assert_eq!(pg.int("SELECT COUNT(*) FROM users").await, users);
}
