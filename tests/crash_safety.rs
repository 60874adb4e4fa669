//! Crash safety against the real binary: SIGKILL in the middle of a load loses no acknowledged
//! event and leaves a sound database; SIGTERM drains in-flight requests and the queue, then exits
//! cleanly within the shutdown timeout; SIGKILL between an alert's commit and its delivery
//! still delivers it after the restart.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use common::process::{Gateway, ADMIN};

/// Starts the binary on the test's database (the backend `FAULTLINE_TEST_BACKEND` picks) with
/// `extra_env` added, and returns once it listens.
async fn start(dir: &std::path::Path, extra_env: &[(&str, &str)]) -> Gateway {
    let mut env = common::database_env(dir).await;
    env.extend(extra_env.iter().map(|&(k, v)| (k, v.to_owned())));
    Gateway::start(dir, &env)
}

/// Creates a project with tracking on; returns (project id, public key).
async fn setup(client: &reqwest::Client, base: &str) -> (i64, String) {
    common::process::setup(client, base, "crash").await
}

fn envelope(event_id: &str, n: usize) -> Vec<u8> {
    let event = json!({
        "event_id": event_id,
        "platform": "python",
        "level": "error",
        "exception": {"values": [{"type": "CrashTest", "value": format!("failure {n}"),
            "stacktrace": {"frames": [{"function": "work", "module": "app.jobs", "in_app": true, "lineno": n % 7}]}}]}
    })
    .to_string();
    format!(
        "{{\"event_id\":\"{event_id}\"}}\n{{\"type\":\"event\",\"length\":{}}}\n{event}\n",
        event.len()
    )
    .into_bytes()
}

/// Sends events from `workers` concurrent loops until `stop` is set; returns the acknowledged ids.
async fn load(
    base: String,
    project: i64,
    key: String,
    workers: usize,
    stop: Arc<std::sync::atomic::AtomicBool>,
    acked: Arc<Mutex<Vec<String>>>,
) -> Vec<String> {
    let mut tasks = Vec::new();
    for w in 0..workers {
        let (base, key, stop, acked) = (base.clone(), key.clone(), stop.clone(), acked.clone());
        tasks.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut n = 0usize;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                n += 1;
                let id = format!("{:08x}{:024x}", w, n);
                let resp = client
                    .post(format!("{base}/api/{project}/envelope/"))
                    .header(
                        "X-Sentry-Auth",
                        format!("Sentry sentry_key={key}, sentry_version=7"),
                    )
                    .body(envelope(&id, n))
                    .timeout(Duration::from_secs(10))
                    .send()
                    .await;
                match resp {
                    Ok(r) if r.status() == 200 => {
                        // Only a complete 200 answer counts as an acknowledgement.
                        if let Ok(body) = r.json::<Value>().await {
                            assert_eq!(body["id"], id.as_str());
                            acked.lock().expect("lock").push(id);
                        }
                    }
                    Ok(r) => panic!("unexpected status {}", r.status()),
                    // The server went away: stop this worker.
                    Err(_) => break,
                }
            }
        }));
    }
    for t in tasks {
        t.await.expect("worker");
    }
    let ids = acked.lock().expect("lock").clone();
    ids
}

async fn wait_for_acks(acked: &Mutex<Vec<String>>, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while acked.lock().expect("lock").len() < n {
        assert!(Instant::now() < deadline, "load made no progress");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn stored_ids(dir: &std::path::Path) -> Vec<String> {
    common::Db::of_dir(dir)
        .await
        .rows("SELECT event_id FROM events")
        .await
        .iter()
        .map(|r| r[0].text().expect("event id"))
        .collect()
}

/// The SQLite file survived the kill intact. Only SQLite keeps the database in a file the
/// gateway writes itself; PostgreSQL's own crash recovery is not under test here.
async fn assert_sqlite_file_sound(dir: &std::path::Path) {
    // SQLite-only check: `PRAGMA integrity_check` reads the SQLite file.
    if common::backend() == common::Backend::Postgres {
        return;
    }
    let check = common::Db::of_dir(dir)
        .await
        .row("PRAGMA integrity_check")
        .await[0]
        .text();
    assert_eq!(check.as_deref(), Some("ok"), "SQLite integrity check");
}

/// (stored events, sum of the errors' event counts, sum of their hourly counts).
async fn counts(dir: &std::path::Path) -> (i64, i64, i64) {
    let r = common::Db::of_dir(dir)
        .await
        .row(
            "SELECT (SELECT COUNT(*) FROM events),
                    (SELECT CAST(COALESCE(SUM(event_count), 0) AS BIGINT) FROM errors),
                    (SELECT CAST(COALESCE(SUM(count), 0) AS BIGINT) FROM error_hourly)",
        )
        .await;
    (r[0].int(), r[1].int(), r[2].int())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_load_loses_no_acknowledged_event() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut gw = start(dir.path(), &[]).await;
    let client = reqwest::Client::new();
    let (project, key) = setup(&client, &gw.base).await;

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Vec::new()));
    let loader = tokio::spawn(load(
        gw.base.clone(),
        project,
        key.clone(),
        8,
        stop.clone(),
        acked.clone(),
    ));
    // Kill once the load is well under way, however slow the machine is today.
    wait_for_acks(&acked, 200).await;
    gw.child.kill().expect("SIGKILL");
    gw.child.wait().expect("reaped");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let acked = loader.await.expect("loader");
    assert!(
        acked.len() > 50,
        "the load made progress before the kill ({} acks)",
        acked.len()
    );

    // Restart on the same data directory: it must come up and keep every acknowledged event.
    let mut gw2 = start(dir.path(), &[]).await;
    assert_sqlite_file_sound(dir.path()).await;
    let stored = stored_ids(dir.path()).await;
    let stored: std::collections::HashSet<String> = stored.into_iter().collect();
    let missing: Vec<&String> = acked.iter().filter(|id| !stored.contains(*id)).collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged events lost, e.g. {:?}",
        missing.len(),
        missing.first()
    );
    // Event ids are unique per project, so "stored exactly once" is also checked here.
    let all = stored_ids(dir.path()).await;
    assert_eq!(all.len(), stored.len(), "no event stored twice");
    // Error counts the killed writer still held in memory were recounted at start, once.
    let (events, counted, hourly) = counts(dir.path()).await;
    assert_eq!(
        (counted, hourly),
        (events, events),
        "every stored event counted exactly once"
    );

    // And it still takes events.
    let resp = client
        .post(format!("{}/api/{project}/envelope/", gw2.base))
        .header(
            "X-Sentry-Auth",
            format!("Sentry sentry_key={key}, sentry_version=7"),
        )
        .body(envelope("ffffffffffffffffffffffffffffffff", 1))
        .send()
        .await
        .expect("post after restart");
    assert_eq!(resp.status(), 200);
    gw2.child.kill().expect("stop");
    let _ = gw2.child.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_requests_and_exits_cleanly() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A long batch interval keeps events waiting in the writer when the signal arrives, so the
    // drain has real work to do.
    let mut gw = start(
        dir.path(),
        &[
            ("FAULTLINE_HTTP__SHUTDOWN_TIMEOUT_SECS", "5"),
            ("FAULTLINE_INGEST__BATCH_INTERVAL_MS", "50"),
        ],
    )
    .await;
    let client = reqwest::Client::new();
    let (project, key) = setup(&client, &gw.base).await;

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Vec::new()));
    let loader = tokio::spawn(load(
        gw.base.clone(),
        project,
        key,
        8,
        stop.clone(),
        acked.clone(),
    ));
    wait_for_acks(&acked, 100).await;
    let pid = gw.child.id().to_string();
    let signalled = Instant::now();
    let status = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill runs");
    assert!(status.success());
    let exit = tokio::task::spawn_blocking(move || gw.child.wait())
        .await
        .expect("join")
        .expect("wait");
    let took = signalled.elapsed();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let acked = loader.await.expect("loader");

    assert!(exit.success(), "clean exit status, got {exit:?}");
    assert!(
        took < Duration::from_secs(5),
        "exited within the shutdown timeout ({took:?})"
    );
    assert!(!acked.is_empty());
    assert_sqlite_file_sound(dir.path()).await;
    let stored = stored_ids(dir.path()).await;
    let stored: std::collections::HashSet<String> = stored.into_iter().collect();
    assert!(
        acked.iter().all(|id| stored.contains(id)),
        "every answered event was written before exit"
    );
    let (events, counted, hourly) = counts(dir.path()).await;
    assert_eq!(
        (counted, hourly),
        (events, events),
        "the counts held in memory were written before exit"
    );
}

/// With its log pipe closed (a log collector that went away, `faultline serve | head`), the
/// server keeps answering and still stops cleanly on SIGTERM: lost log lines must not panic the
/// threads that wrote them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_log_pipe_loses_log_lines_not_requests_or_shutdown() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut child = Command::new(env!("CARGO_BIN_EXE_faultline"))
        .arg("serve")
        .env("FAULTLINE_LISTEN", "127.0.0.1:0")
        .env("FAULTLINE_DATA_DIR", dir.path())
        .envs(common::database_env(dir.path()).await)
        .env("FAULTLINE_ADMIN_TOKEN", ADMIN)
        .env("FAULTLINE_LOG__FORMAT", "json")
        // Every request logs at debug level, so every request below writes to the closed pipe.
        .env("RUST_LOG", "debug")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("binary starts");
    let mut lines = BufReader::new(child.stderr.take().expect("stderr piped")).lines();
    let addr = loop {
        let line = lines.next().expect("server log line").expect("utf-8 log");
        if let Ok(v) = serde_json::from_str::<Value>(&line) {
            if let Some(a) = v["fields"]["addr"].as_str() {
                break a.to_owned();
            }
        }
    };
    // Closes our end of the pipe: from now on every write to the server's stderr fails.
    drop(lines);
    let mut gw = Gateway {
        child,
        base: format!("http://{addr}"),
    };
    let client = reqwest::Client::new();
    let (project, key) = setup(&client, &gw.base).await;
    for n in 0..5 {
        let resp = client
            .post(format!("{}/api/{project}/envelope/", gw.base))
            .header(
                "X-Sentry-Auth",
                format!("Sentry sentry_key={key}, sentry_version=7"),
            )
            .body(envelope(&format!("{n:032x}"), n))
            .send()
            .await
            .expect("answered");
        assert_eq!(resp.status(), 200);
    }
    let pid = gw.child.id().to_string();
    let status = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill runs");
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    let exit = loop {
        if let Some(exit) = gw.child.try_wait().expect("wait") {
            break exit;
        }
        assert!(Instant::now() < deadline, "the server ignored SIGTERM");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(exit.success(), "clean exit status, got {exit:?}");
    let stored = stored_ids(dir.path()).await;
    assert_eq!(stored.len(), 5);
}

async fn outbox_len(dir: &std::path::Path) -> i64 {
    common::Db::of_dir(dir)
        .await
        .int("SELECT COUNT(*) FROM alert_outbox")
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_after_an_alert_is_committed_still_delivers_it_after_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let recv = common::receiver::Receiver::start().await;
    // The receiver takes the request and never answers: the alert is committed and claimed,
    // and not delivered, when the server is killed.
    recv.hang(true);
    let env = [
        ("FAULTLINE_ALERTS__ALLOW_INTERNAL_TARGETS", "true"),
        ("FAULTLINE_ALERTS__REQUEST_TIMEOUT_MS", "2000"),
        ("FAULTLINE_ALERTS__RETRY_BASE_MS", "50"),
        ("FAULTLINE_ALERTS__POLL_INTERVAL_MS", "100"),
    ];
    let mut gw = start(dir.path(), &env).await;
    let client = reqwest::Client::new();
    let (project, key) = setup(&client, &gw.base).await;
    let rule = client
        .post(format!(
            "{}/api/v4/projects/{project}/error_tracking/alert_rules",
            gw.base
        ))
        .header("PRIVATE-TOKEN", ADMIN)
        .json(&json!({"name": "new", "new_error": true}))
        .send()
        .await
        .expect("create rule")
        .json::<Value>()
        .await
        .expect("json");
    let channel = client
        .post(format!(
            "{}/api/v4/projects/{project}/error_tracking/alert_rules/{}/channels",
            gw.base, rule["id"]
        ))
        .header("PRIVATE-TOKEN", ADMIN)
        .json(&json!({"type": "webhook", "url": recv.url("/hook")}))
        .send()
        .await
        .expect("add channel");
    assert_eq!(channel.status(), 201);

    let resp = client
        .post(format!("{}/api/{project}/envelope/", gw.base))
        .header(
            "X-Sentry-Auth",
            format!("Sentry sentry_key={key}, sentry_version=7"),
        )
        .body(envelope("0123456789abcdef0123456789abcdef", 1))
        .send()
        .await
        .expect("event sent");
    assert_eq!(resp.status(), 200);
    let first = recv.wait_for("/hook", 1).await;
    gw.child.kill().expect("SIGKILL");
    gw.child.wait().expect("reaped");
    assert_eq!(
        outbox_len(dir.path()).await,
        1,
        "the alert waits in the outbox"
    );
    let id = first[0].json()["id"].clone();

    recv.hang(false);
    let before = recv.requests().len();
    let _gw2 = start(dir.path(), &env).await;
    // The killed process's claim runs out, then the restarted one delivers.
    let deadline = Instant::now() + Duration::from_secs(60);
    while outbox_len(dir.path()).await > 0 {
        assert!(
            Instant::now() < deadline,
            "the alert was not delivered after the restart"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let after = recv.requests();
    assert!(after.len() > before, "delivered after the restart");
    let last = after.last().expect("a request").json();
    assert_eq!(
        last["id"], id,
        "the same alert, so a receiver can drop a repeat"
    );
    assert_eq!(last["trigger"], "new_error");
}
