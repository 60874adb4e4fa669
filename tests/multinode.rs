//! Several gateway nodes on one PostgreSQL database, as real `faultline serve` processes: a key
//! made or deleted through one node holds on the other within a second; events sent to both
//! land in the same errors with exact counts; a node killed under load loses nothing it
//! acknowledged, and a survivor finishes its counts; retention runs on one node at a time; and
//! a database outage answers 503, never a false 200, until ingestion recovers by itself.
//!
//! These tests need a PostgreSQL cluster (`FAULTLINE_TEST_POSTGRES`, as
//! `scripts/throwaway-postgres start` prints). Without one they are skipped with a message on a
//! developer's machine, and fail under `CI=true`, so CI can never pass without running them.
//! Every test name starts with `two_nodes_`, so a second pass of the suite can skip them.

mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::process::{api, load, send, setup, wait_for_acks, Gateway, LoadResult};

/// A fresh database on the test cluster, or `None` (skip) outside CI without a cluster.
async fn database() -> Option<String> {
    if std::env::var("FAULTLINE_TEST_POSTGRES").is_err() {
        assert!(
            std::env::var("CI").is_err(),
            "CI=true but FAULTLINE_TEST_POSTGRES is unset: the multi-node tests must run in CI \
             (.ci/run starts scripts/throwaway-postgres)"
        );
        eprintln!("skipped: set FAULTLINE_TEST_POSTGRES (scripts/throwaway-postgres start)");
        return None;
    }
    Some(common::create_test_database().await)
}

/// Two nodes on `url`, each with a data directory of its own. B starts once A is up, as an
/// operator rolling out nodes would.
fn two_nodes(
    url: &str,
    extra: &[(&str, String)],
) -> (Gateway, Gateway, tempfile::TempDir, tempfile::TempDir) {
    let (da, db) = (
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
    );
    let mut env = vec![("FAULTLINE_DATABASE__URL", url.to_owned())];
    env.extend(extra.iter().map(|(k, v)| (*k, v.clone())));
    let a = Gateway::start(da.path(), &env);
    let b = Gateway::start(db.path(), &env);
    (a, b, da, db)
}

async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(connection);
    client
}

/// Sends one event every 20 ms until `accepted` says the status is the expected one; returns
/// how long that took.
async fn until_status(
    client: &reqwest::Client,
    base: &str,
    project: i64,
    key: &str,
    expected: u16,
) -> Duration {
    let started = Instant::now();
    let mut n = 0;
    loop {
        n += 1;
        let id = format!("{:032x}", rand_id() + n);
        let status = send(client, base, project, key, &id, 0).await;
        if status.map(|s| s.as_u16()) == Some(expected) {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "still {status:?} after 10 s, expected {expected}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A strict load (any answer but 200 fails) on `node` from `workers` workers, ids tagged
/// `tag`, until `stop`: its result and its task.
fn start_load(
    node: &Gateway,
    project: i64,
    key: &str,
    tag: u8,
    workers: usize,
    stop: &Arc<AtomicBool>,
) -> (Arc<Mutex<LoadResult>>, tokio::task::JoinHandle<()>) {
    let result = Arc::new(Mutex::new(LoadResult::default()));
    let task = tokio::spawn(load(
        node.base.clone(),
        project,
        key.to_owned(),
        tag,
        workers,
        false,
        stop.clone(),
        result.clone(),
    ));
    (result, task)
}

fn rand_id() -> u128 {
    uuid::Uuid::new_v4().as_u128() >> 8
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_share_key_changes_within_a_second() {
    let Some(url) = database().await else { return };
    let (a, b, _da, _db) = two_nodes(&url, &[]);
    let client = reqwest::Client::new();

    // A key made through A (the setting's first key) is accepted by B.
    let (project, key) = setup(&client, &a.base, "keys").await;
    let took = until_status(&client, &b.base, project, &key, 200).await;
    assert!(
        took < Duration::from_secs(1),
        "B accepted A's key after {took:?}"
    );

    // A second key, deleted through B, is refused by A.
    let made = api(
        &client,
        reqwest::Method::POST,
        format!(
            "{}/api/v4/projects/{project}/error_tracking/client_keys",
            a.base
        ),
        None,
    )
    .await;
    let second = made["public_key"].as_str().expect("key").to_owned();
    let took = until_status(&client, &b.base, project, &second, 200).await;
    assert!(
        took < Duration::from_secs(1),
        "B accepted the second key after {took:?}"
    );
    api(
        &client,
        reqwest::Method::DELETE,
        format!(
            "{}/api/v4/projects/{project}/error_tracking/client_keys/{}",
            b.base, made["id"]
        ),
        None,
    )
    .await;
    let took = until_status(&client, &a.base, project, &second, 403).await;
    assert!(
        took < Duration::from_secs(1),
        "A refused the deleted key after {took:?}"
    );

    // Turning error tracking off through A reaches B too.
    api(
        &client,
        reqwest::Method::PATCH,
        format!(
            "{}/api/v4/projects/{project}/error_tracking/settings?active=false",
            a.base
        ),
        None,
    )
    .await;
    let took = until_status(&client, &b.base, project, &key, 403).await;
    assert!(
        took < Duration::from_secs(1),
        "B saw the setting after {took:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_count_events_into_the_same_errors_exactly() {
    let Some(url) = database().await else { return };
    let (a, b, _da, _db) = two_nodes(&url, &[]);
    let client = reqwest::Client::new();
    let (project, key) = setup(&client, &a.base, "counts").await;
    until_status(&client, &b.base, project, &key, 200).await;

    // Seven groups, each sent to both nodes from concurrent workers.
    let stop = Arc::new(AtomicBool::new(false));
    let (ra, la) = start_load(&a, project, &key, 1, 4, &stop);
    let (rb, lb) = start_load(&b, project, &key, 2, 4, &stop);
    wait_for_acks(&ra, 300).await;
    wait_for_acks(&rb, 300).await;
    stop.store(true, Ordering::Relaxed);
    la.await.expect("load a");
    lb.await.expect("load b");
    // The probe that found B accepting the key was stored too.
    let sent = ra.lock().expect("lock").acked.len() + rb.lock().expect("lock").acked.len() + 1;

    // Each node writes its counts within its flush interval; a read through either node then
    // sees every acknowledged event of both.
    let deadline = Instant::now() + Duration::from_secs(5);
    let (errors, total) = loop {
        let list = api(
            &client,
            reqwest::Method::GET,
            format!(
                "{}/errortracking/api/v1/projects/{project}/errors?limit=100",
                b.base
            ),
            None,
        )
        .await;
        let errors = list.as_array().expect("list").clone();
        let total: i64 = errors
            .iter()
            .map(|e| e["event_count"].as_i64().unwrap_or(0))
            .sum();
        if total as usize == sent || Instant::now() > deadline {
            break (errors, total);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        total as usize, sent,
        "every acknowledged event counted exactly once"
    );
    assert_eq!(
        errors.len(),
        7,
        "both nodes' events grouped into the same seven errors"
    );
    let db = connect(&url).await;
    let stored: i64 = db
        .query_one("SELECT COUNT(*) FROM events", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(stored as usize, sent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_a_killed_node_loses_nothing_it_acknowledged() {
    let Some(url) = database().await else { return };
    let (mut a, b, _da, _db) = two_nodes(&url, &[]);
    let client = reqwest::Client::new();
    let (project, key) = setup(&client, &a.base, "kill").await;
    until_status(&client, &b.base, project, &key, 200).await;

    let stop = Arc::new(AtomicBool::new(false));
    let (ra, la) = start_load(&a, project, &key, 1, 6, &stop);
    let (rb, lb) = start_load(&b, project, &key, 2, 2, &stop);
    wait_for_acks(&ra, 300).await;
    a.kill();
    // A's workers stop on their own once A is gone; B keeps taking events for a moment.
    la.await.expect("load a");
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    lb.await.expect("load b");
    let acked: Vec<String> = {
        let (ra, rb) = (ra.lock().expect("lock"), rb.lock().expect("lock"));
        ra.acked.iter().chain(rb.acked.iter()).cloned().collect()
    };

    let db = connect(&url).await;
    let rows = db
        .query("SELECT event_id FROM events", &[])
        .await
        .expect("events");
    let stored: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    let unique: HashSet<&String> = stored.iter().collect();
    assert_eq!(unique.len(), stored.len(), "no event stored twice");
    let missing: Vec<&String> = acked.iter().filter(|id| !unique.contains(id)).collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged events lost, e.g. {:?}",
        missing.len(),
        missing.first()
    );

    // The counts A held in memory when it died are recovered by B from A's events above its
    // mark: the sum of the errors' counts comes out at the number of stored events.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = db
            .query_one(
                "SELECT (SELECT COUNT(*) FROM events),
                        (SELECT CAST(COALESCE(SUM(event_count), 0) AS BIGINT) FROM errors),
                        (SELECT CAST(COALESCE(SUM(count), 0) AS BIGINT) FROM error_hourly)",
                &[],
            )
            .await
            .expect("counts");
        let (events, counted, hourly): (i64, i64, i64) = (r.get(0), r.get(1), r.get(2));
        if counted == events && hourly == events {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "counts never came out exact: {events} events, {counted} counted, {hourly} hourly"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_run_retention_once() {
    let Some(url) = database().await else { return };
    let retention = [
        ("FAULTLINE_RETENTION__DAYS", "1".to_owned()),
        ("FAULTLINE_RETENTION__INTERVAL_SECS", "1".to_owned()),
    ];
    // A first node, only to migrate and make the project, then stopped.
    let (project, key, da) = {
        let da = tempfile::tempdir().expect("dir");
        let env = vec![("FAULTLINE_DATABASE__URL", url.clone())];
        let a = Gateway::start(da.path(), &env);
        let client = reqwest::Client::new();
        let (project, key) = setup(&client, &a.base, "retention").await;
        (project, key, da)
    };
    drop(da);
    let _ = key;
    // Ten events received three days ago, in a partition of their own, as an old node left them.
    let db = connect(&url).await;
    let day = chrono::Utc::now().timestamp_millis().div_euclid(86_400_000) - 3;
    db.batch_execute(&format!(
        "CREATE TABLE events_d{day} PARTITION OF events FOR VALUES FROM ({}) TO ({});
         INSERT INTO errors (project_id, fingerprint, name, description, actor, first_seen_at, last_seen_at, event_count)
             VALUES ({project}, 42, 'Old', 'old', 'old()', {t}, {t}, 10);
         INSERT INTO events (project_id, error_id, event_id, occurred_at, received_at, is_message, name, description, actor, payload, node, node_seq)
             SELECT {project}, (SELECT id FROM errors WHERE fingerprint = 42), md5(n::text), {t}, {t}, FALSE, 'Old', 'old', 'old()', '\\x7b7d', 0, n
             FROM generate_series(1, 10) n;
         INSERT INTO event_ids (project_id, event_id, received_at)
             SELECT {project}, md5(n::text), {t} FROM generate_series(1, 10) n;",
        day * 86_400_000,
        (day + 1) * 86_400_000,
        t = day * 86_400_000 + 1000,
    ))
    .await
    .expect("old events");

    let (a, b, _da, _db) = two_nodes(&url, &retention);
    let client = reqwest::Client::new();
    let deleted = |body: String| -> u64 {
        body.lines()
            .find(|l| l.starts_with("faultline_retention_deleted_events_total"))
            .and_then(|l| l.split_whitespace().last())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let left: i64 = db
            .query_one("SELECT COUNT(*) FROM events", &[])
            .await
            .expect("count")
            .get(0);
        if left == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "retention never removed the old events"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // A few more passes on both nodes, then the tally: ten events deleted in all.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut total = 0;
    for node in [&a, &b] {
        let body = client
            .get(format!("{}/metrics", node.base))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text");
        total += deleted(body);
    }
    assert_eq!(total, 10, "the old events were deleted once, by one node");
    let partition: Option<String> = db
        .query_one(&format!("SELECT to_regclass('events_d{day}')::text"), &[])
        .await
        .expect("regclass")
        .get(0);
    assert_eq!(partition, None, "the old day's partition was dropped whole");
}

/// The database stops under load and comes back: meanwhile ingestion answers 503 (never a 200
/// for an event that was not committed), and it recovers without a restart. This test runs its
/// own cluster, since it stops the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_survive_a_database_outage_without_a_false_200() {
    if database().await.is_none() {
        return;
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/throwaway-postgres");
    let out = std::process::Command::new(script)
        .arg("start")
        .output()
        .expect("start a cluster");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("utf-8");
    let var = |name: &str| -> String {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("export {name}=")))
            .expect("script output")
            .to_owned()
    };
    struct Cluster(String, &'static str);
    impl Drop for Cluster {
        fn drop(&mut self) {
            let _ = std::process::Command::new(self.1)
                .args(["stop", &self.0])
                .status();
        }
    }
    let cluster = Cluster(var("PGTHROWAWAY"), script);
    let url = var("FAULTLINE_TEST_POSTGRES");

    let (a, b, _da, _db) = two_nodes(&url, &[]);
    let client = reqwest::Client::new();
    let (project, key) = setup(&client, &a.base, "outage").await;
    until_status(&client, &b.base, project, &key, 200).await;

    let stop = Arc::new(AtomicBool::new(false));
    let result = Arc::new(Mutex::new(LoadResult::default()));
    let loads: Vec<_> = [(&a, 1u8), (&b, 2u8)]
        .into_iter()
        .map(|(node, tag)| {
            tokio::spawn(load(
                node.base.clone(),
                project,
                key.clone(),
                tag,
                3,
                true,
                stop.clone(),
                result.clone(),
            ))
        })
        .collect();
    wait_for_acks(&result, 200).await;
    let pause = std::process::Command::new(script)
        .args(["pause", &cluster.0])
        .status()
        .expect("pause");
    assert!(pause.success());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let during = result.lock().expect("lock").refused.len();
    let resume = std::process::Command::new(script)
        .args(["resume", &cluster.0])
        .status()
        .expect("resume");
    assert!(resume.success());
    let acked_before = result.lock().expect("lock").acked.len();
    // Ingestion comes back by itself.
    let deadline = Instant::now() + Duration::from_secs(30);
    while result.lock().expect("lock").acked.len() < acked_before + 200 {
        assert!(
            Instant::now() < deadline,
            "ingestion did not recover after the database came back"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for l in loads {
        l.await.expect("load");
    }
    let (acked, refused) = {
        let r = result.lock().expect("lock");
        (r.acked.clone(), r.refused.clone())
    };
    assert!(during > 0, "requests during the outage were refused");
    assert!(
        refused.iter().all(|s| *s == 503),
        "every refusal was a 503: {:?}",
        refused.iter().filter(|s| **s != 503).collect::<Vec<_>>()
    );
    // Readiness says the database answers again.
    for node in [&a, &b] {
        let ready = client
            .get(format!("{}/-/readiness", node.base))
            .send()
            .await
            .expect("readiness");
        assert_eq!(ready.status(), 200);
    }
    let db = connect(&url).await;
    let rows = db
        .query("SELECT event_id FROM events", &[])
        .await
        .expect("events");
    let stored: HashSet<String> = rows.iter().map(|r| r.get(0)).collect();
    let missing = acked.iter().filter(|id| !stored.contains(*id)).count();
    assert_eq!(missing, 0, "every event answered 200 is stored");
}
