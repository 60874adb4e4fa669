//! Read API benchmark: fills a fresh database with 1,000,000 events over 10,000 errors of one
//! project (straight through the writer's `EventSink`, in large transactions), then times the
//! list requests of the issue through the real HTTP API of a running server and prints the
//! median, 95th percentile and maximum of each. Last, a retention pass deletes the oldest tenth
//! of the events while events keep arriving, and the ingestion latency before and during the
//! pass is printed: the pass must not stall the writer. Then the project itself is deleted
//! through the API while another project keeps sending events, and the same is printed for the
//! background removal of its rows.
//!
//! Before that, the web UI's pages over the same data: the error list (plain, searched, filtered,
//! a deep page) and an error's detail (the busiest error, whose event list and tag counts are the
//! largest, and a quiet one), signed in as `root`. The issue's bound is 50 ms median for each.
//!
//! `cargo bench --bench read_api`. Scale with `FAULTLINE_BENCH_EVENTS` (default 1000000) and
//! `FAULTLINE_BENCH_ERRORS` (default 10000); `FAULTLINE_BENCH_RUNS` sets the timed runs per
//! request (default 50).

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use faultline::app;
use faultline::config::Config;
use faultline::store::ingest::{EventRecord, EventSink, Record};
use faultline::store::sqlite::SqliteSink;
use faultline::store::sqlite::{SqliteOptions, Synchronous};
use serde_json::{json, Value};

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// xorshift64*: deterministic data from run to run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

const TYPES: [&str; 10] = [
    "KeyError",
    "ValueError",
    "TimeoutError",
    "ConnectionResetError",
    "PermissionError",
    "ZeroDivisionError",
    "IndexError",
    "AttributeError",
    "TypeError",
    "RuntimeError",
];

const VERBS: [&str; 8] = [
    "loading the cart",
    "charging the card",
    "rendering the invoice",
    "syncing the inventory",
    "sending the newsletter",
    "resizing an image",
    "refreshing a token",
    "reading the config",
];

/// Name, description and actor of error `k`; one description in a hundred mentions a
/// "deadlock", so a text query has a few hundred matches spread through the list.
fn error_text(k: u64) -> (String, String, String) {
    let name = TYPES[(k % TYPES.len() as u64) as usize].to_owned();
    let verb = VERBS[((k / 10) % VERBS.len() as u64) as usize];
    let cause = if k % 100 == 41 {
        "deadlock detected"
    } else {
        "unexpected state"
    };
    let description = format!("{cause} while {verb} (site {k})");
    let actor = format!("handle_{}(shop.views.v{})", k % 97, k % 13);
    (name, description, actor)
}

/// A Python-SDK-like event of about 700 bytes.
fn payload(event_id: &str, ts_secs: f64, name: &str, description: &str, user: u64) -> Vec<u8> {
    json!({
        "event_id": event_id,
        "timestamp": ts_secs,
        "platform": "python",
        "level": "error",
        "environment": "production",
        "release": "shop@4.2.0",
        "server_name": "web-3",
        "user": {"id": user.to_string()},
        "exception": {"values": [{
            "type": name,
            "value": description,
            "stacktrace": {"frames": [
                {"filename": "shop/views.py", "function": "checkout", "lineno": 120, "in_app": true},
                {"filename": "shop/services/cart.py", "function": "load", "lineno": 88, "in_app": true},
                {"filename": "site-packages/db/pool.py", "function": "acquire", "lineno": 301, "in_app": false}
            ]}
        }]},
        "tags": {"region": "eu-west-1", "worker": "gunicorn"},
        "sdk": {"name": "sentry.python", "version": "2.19.0"}
    })
    .to_string()
    .into_bytes()
}

/// Writes `events` events over `errors` errors of `project_id`, oldest first, spread over the
/// last 30 days (so the last 24 hours hold a thirtieth of them and the hourly stats are real).
/// Error popularity is skewed: low-numbered errors get most events, as in real projects.
fn fill(db: &Path, project_id: i64, events: u64, errors: u64) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let mut sink = SqliteSink::open(
        &SqliteOptions {
            path: db.to_path_buf(),
            synchronous: Synchronous::Normal,
            max_page_count: None,
        },
        Default::default(),
    )?;
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let now_ms = chrono::Utc::now().timestamp_millis();
    let span_ms = 30 * 86_400_000i64;
    // Larger transactions than the server's own batches: the fill is not what is measured.
    const CHUNK: u64 = 25_000;
    let mut i = 0;
    while i < events {
        let n = CHUNK.min(events - i);
        let mut records = Vec::with_capacity(n as usize);
        for j in i..i + n {
            // Every error gets its first event in the first `errors` events, so all of them
            // exist; the rest follow a skewed distribution.
            let k = if j < errors {
                j
            } else {
                ((rng.unit().powi(3)) * errors as f64) as u64 % errors
            };
            let (name, description, actor) = error_text(k);
            let occurred_at = now_ms - span_ms + (span_ms as f64 * j as f64 / events as f64) as i64;
            let event_id = format!("{j:032x}");
            let user = rng.next() % 5000;
            // One error in a hundred is seen only in staging, for a selective filter; releases
            // rotate over ten.
            let environment = if k % 100 == 7 {
                "staging"
            } else {
                "production"
            };
            let release = format!("shop@4.2.{}", k % 10);
            records.push(Record::Event(EventRecord {
                project_id,
                payload: payload(
                    &event_id,
                    occurred_at as f64 / 1000.0,
                    &name,
                    &description,
                    user,
                ),
                event_id,
                fingerprint: k as i64 + 1,
                name,
                description,
                actor,
                platform: Some("python".into()),
                level: Some("error".into()),
                environment: Some(environment.into()),
                release: Some(release),
                message: None,
                // One event in fifty is a message event, for the messages list.
                is_message: j % 50 == 0,
                user_identity: Some(format!("id:{user}")),
                search_tags: vec![
                    ("user".into(), format!("id:{user}")),
                    ("region".into(), "eu-west-1".into()),
                    ("worker".into(), "gunicorn".into()),
                ],
                occurred_at,
                payload_codec: Default::default(),
            }));
        }
        sink.write_batch(&[records.as_slice()])?;
        i += n;
        if i % 200_000 == 0 || i == events {
            eprintln!(
                "  filled {i}/{events} events ({:.0}/s)",
                i as f64 / started.elapsed().as_secs_f64()
            );
        }
    }
    sink.flush_counts()?;
    Ok(started.elapsed())
}

/// Resolves one error in ten and ignores one in twenty, as triage would.
fn triage(db: &Path) -> anyhow::Result<()> {
    let conn = rusqlite::Connection::open(db)?;
    conn.execute("UPDATE errors SET status = 1 WHERE id % 10 = 3", [])?;
    conn.execute("UPDATE errors SET status = 2 WHERE id % 20 = 7", [])?;
    Ok(())
}

struct Timing {
    label: String,
    median: Duration,
    p95: Duration,
    max: Duration,
    items: usize,
}

async fn time_get(
    client: &reqwest::Client,
    base: &str,
    token: &str,
    label: &str,
    path: &str,
    runs: usize,
) -> anyhow::Result<Timing> {
    let mut items = 0;
    let mut samples = Vec::with_capacity(runs);
    // Three untimed runs warm the page cache and the connection pool.
    for run in 0..runs + 3 {
        let started = Instant::now();
        let resp = client
            .get(format!("{base}{path}"))
            .header("PRIVATE-TOKEN", token)
            .send()
            .await?;
        let status = resp.status();
        let body: Value = resp.json().await?;
        let took = started.elapsed();
        if !status.is_success() {
            bail!("{path}: {status} {body}");
        }
        items = body.as_array().map(Vec::len).unwrap_or(1);
        if run >= 3 {
            samples.push(took);
        }
    }
    samples.sort();
    let pick = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    Ok(Timing {
        label: label.to_owned(),
        median: pick(0.5),
        p95: pick(0.95),
        max: *samples.last().context("at least one run")?,
        items,
    })
}

/// Follows `next` links from `path` for `pages` pages and returns the path of the last one.
async fn deep_page(
    client: &reqwest::Client,
    base: &str,
    token: &str,
    path: &str,
    pages: usize,
) -> anyhow::Result<String> {
    let mut path = path.to_owned();
    for _ in 1..pages {
        let resp = client
            .get(format!("{base}{path}"))
            .header("PRIVATE-TOKEN", token)
            .send()
            .await?;
        let link = resp
            .headers()
            .get("link")
            .and_then(|v| v.to_str().ok())
            .context("a next page")?
            .to_owned();
        let url = link
            .trim_start_matches('<')
            .split('>')
            .next()
            .context("link url")?;
        path = url
            .strip_prefix(base)
            .context("link on the server")?
            .to_owned();
    }
    Ok(path)
}

/// Signs in to the web UI and returns the `Cookie` header value of the session.
async fn ui_session(base: &str, password: &str) -> anyhow::Result<String> {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let form = client.get(format!("{base}/users/sign_in")).send().await?;
    let cookie = form
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("faultline_sign_in="))
        .and_then(|v| v.split(';').next())
        .context("the sign-in form's cookie")?
        .to_owned();
    let html = form.text().await?;
    let marker = r#"name="csrf" value=""#;
    let at = html.find(marker).context("a CSRF field")? + marker.len();
    let csrf = html[at..]
        .split('"')
        .next()
        .context("its value")?
        .to_owned();
    let resp = client
        .post(format!("{base}/users/sign_in"))
        .header("cookie", cookie)
        .form(&[
            ("csrf", csrf.as_str()),
            ("username", "root"),
            ("password", password),
        ])
        .send()
        .await?;
    let session = resp
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("faultline_session="))
        .and_then(|v| v.split(';').next())
        .context("signed in")?
        .to_owned();
    Ok(session)
}

/// Times a web UI page as [`time_get`] times an API request; `items` is the page's size in KiB.
async fn time_page(
    client: &reqwest::Client,
    base: &str,
    cookie: &str,
    label: &str,
    path: &str,
    runs: usize,
) -> anyhow::Result<Timing> {
    let mut samples = Vec::with_capacity(runs);
    let mut size = 0;
    for run in 0..runs + 3 {
        let started = Instant::now();
        let resp = client
            .get(format!("{base}{path}"))
            .header("cookie", cookie)
            .send()
            .await?;
        let status = resp.status();
        let body = resp.text().await?;
        let took = started.elapsed();
        if !status.is_success() {
            bail!("{path}: {status}");
        }
        size = body.len() / 1024;
        if run >= 3 {
            samples.push(took);
        }
    }
    samples.sort();
    let pick = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    Ok(Timing {
        label: label.to_owned(),
        median: pick(0.5),
        p95: pick(0.95),
        max: *samples.last().context("at least one run")?,
        items: size,
    })
}

/// Latencies of ingestion requests, and how many were refused.
#[derive(Default)]
struct Probe {
    ok: Vec<Duration>,
    failed: usize,
    first_failure: Option<String>,
}

/// Sends small events one after another until `stop` is set (or `max` were sent) and records
/// each request's latency: ingestion answers after the commit, so a stalled or failing writer
/// shows here at once.
async fn ingest_until(
    client: reqwest::Client,
    url: String,
    key: String,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    max: usize,
) -> anyhow::Result<Probe> {
    let mut probe = Probe::default();
    let mut n = 0;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) && n < max {
        n += 1;
        let body = json!({
            "event_id": uuid::Uuid::new_v4().simple().to_string(),
            "message": format!("ingest probe {n}"),
        });
        let started = Instant::now();
        let resp = client
            .post(&url)
            .header(
                "X-Sentry-Auth",
                format!("Sentry sentry_key={key}, sentry_version=7"),
            )
            .body(body.to_string())
            .send()
            .await?;
        let status = resp.status();
        let answer = resp.bytes().await?;
        if status.is_success() {
            probe.ok.push(started.elapsed());
        } else {
            probe.failed += 1;
            probe
                .first_failure
                .get_or_insert_with(|| format!("{status} {}", String::from_utf8_lossy(&answer)));
        }
    }
    Ok(probe)
}

fn summary(probe: Probe) -> String {
    let mut samples = probe.ok;
    let failed = match (probe.failed, probe.first_failure) {
        (0, _) => String::new(),
        (n, Some(first)) => format!(", {n} FAILED (first: {first})"),
        (n, None) => format!(", {n} FAILED"),
    };
    if samples.is_empty() {
        return format!("no successful requests{failed}");
    }
    samples.sort();
    let pick = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    format!(
        "{} requests, median {} ms, p99 {} ms, max {} ms{failed}",
        samples.len(),
        ms(pick(0.5)),
        ms(pick(0.99)),
        ms(*samples.last().unwrap_or(&Duration::ZERO))
    )
}

/// Turns error tracking on for the project (which creates its first client key) and returns
/// that key.
async fn ingest_key(
    client: &reqwest::Client,
    base: &str,
    token: &str,
    project_id: i64,
) -> anyhow::Result<String> {
    let settings = client
        .put(format!(
            "{base}/api/v4/projects/{project_id}/error_tracking/settings?active=true&integrated=true"
        ))
        .header("PRIVATE-TOKEN", token)
        .send()
        .await?;
    if !settings.status().is_success() {
        bail!("settings: {}", settings.status());
    }
    let keys: Value = client
        .get(format!(
            "{base}/api/v4/projects/{project_id}/error_tracking/client_keys"
        ))
        .header("PRIVATE-TOKEN", token)
        .send()
        .await?
        .json()
        .await?;
    Ok(keys[0]["public_key"]
        .as_str()
        .context("a client key")?
        .to_owned())
}

/// The ingestion latency of `n` requests sent one after another: the figure a phase under load
/// is compared with.
async fn ingest_n(
    client: &reqwest::Client,
    url: &str,
    key: &str,
    n: usize,
) -> anyhow::Result<Probe> {
    let never = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    ingest_until(client.clone(), url.to_owned(), key.to_owned(), never, n).await
}

/// Deletes the filled project through the API while events keep arriving for another project,
/// waits until the background purge has removed its rows, and reports how long the 202 took,
/// how fast the rows went, and the other project's ingestion latency before and meanwhile.
async fn deletion_under_load(
    client: &reqwest::Client,
    base: &str,
    token: &str,
    dir: &Path,
    doomed: i64,
) -> anyhow::Result<()> {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    let probe: Value = client
        .post(format!("{base}/api/v4/projects"))
        .header("PRIVATE-TOKEN", token)
        .json(&json!({"name": "probe", "namespace_path": "bench"}))
        .send()
        .await?
        .json()
        .await?;
    let probe = probe["id"].as_i64().context("probe project id")?;
    let key = ingest_key(client, base, token, probe).await?;
    let url = format!("{base}/api/{probe}/store/");
    let before = ingest_n(client, &url, &key, 300)
        .await
        .context("ingestion before the deletion")?;

    let db = rusqlite::Connection::open(dir.join("faultline.db"))?;
    let count =
        |sql: &str| -> anyhow::Result<i64> { Ok(db.query_row(sql, [doomed], |r| r.get(0))?) };
    let events = count("SELECT COUNT(*) FROM events WHERE project_id = ?1")?;
    let stop = Arc::new(AtomicBool::new(false));
    let load = tokio::spawn(ingest_until(
        client.clone(),
        url,
        key,
        stop.clone(),
        usize::MAX,
    ));
    let started = Instant::now();
    let resp = client
        .delete(format!("{base}/api/v4/projects/{doomed}"))
        .header("PRIVATE-TOKEN", token)
        .send()
        .await?;
    let answered = started.elapsed();
    if resp.status() != 202 {
        bail!("delete project: {}", resp.status());
    }
    let deadline = Instant::now() + Duration::from_secs(1800);
    while count("SELECT COUNT(*) FROM projects WHERE id = ?1")? > 0 {
        if Instant::now() > deadline {
            bail!("the deleted project's rows were not removed within 30 minutes");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let took = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let during = load.await?.context("ingestion during the purge")?;
    println!();
    println!(
        "project deletion: 202 in {} ms; its {events} events and the rest of its rows removed in {:.1} s ({:.0} events/s)",
        ms(answered),
        took.as_secs_f64(),
        events as f64 / took.as_secs_f64()
    );
    println!("  another project's ingestion before: {}", summary(before));
    println!("  another project's ingestion during: {}", summary(during));
    Ok(())
}

/// Deletes the oldest tenth of the events with a retention pass while events keep arriving,
/// and reports the pass and the ingestion latency before and during it.
async fn retention_under_load(
    client: &reqwest::Client,
    base: &str,
    token: &str,
    dir: &Path,
    project_id: i64,
    events: u64,
) -> anyhow::Result<()> {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    let key = ingest_key(client, base, token, project_id).await?;
    let url = format!("{base}/api/{project_id}/store/");

    let baseline = ingest_n(client, &url, &key, 300)
        .await
        .context("ingestion before the retention pass")?;

    // The fill stamped each of its transactions with one receive time. The cutoff is the
    // receive time of the transaction after the one holding the event a tenth of the way in, so
    // the pass deletes about the oldest tenth (whole fill transactions).
    let db = dir.join("faultline.db");
    let cutoff: Option<i64> = rusqlite::Connection::open(&db)?.query_row(
        "SELECT MIN(received_at) FROM events
         WHERE received_at > (SELECT received_at FROM events WHERE id = ?1)",
        [(events / 10).max(1) as i64],
        |r| r.get(0),
    )?;
    let Some(cutoff) = cutoff else {
        println!("\nretention pass: skipped, the fill was a single transaction");
        return Ok(());
    };
    let store = faultline::store::SqliteStore::open(dir, Synchronous::Normal)?;
    let stop = Arc::new(AtomicBool::new(false));
    let load = tokio::spawn(ingest_until(
        client.clone(),
        url,
        key,
        stop.clone(),
        usize::MAX,
    ));
    let started = Instant::now();
    let report = faultline::store::Store::retention_pass(&store, cutoff + 86_400_000, 1).await?;
    let took = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let during = load.await?.context("ingestion during the retention pass")?;
    println!();
    println!(
        "retention pass: {} events deleted in {:.1} s ({:.0} events/s, {} errors emptied)",
        report.events,
        took.as_secs_f64(),
        report.events as f64 / took.as_secs_f64(),
        report.errors
    );
    println!("  ingestion before the pass: {}", summary(baseline));
    println!("  ingestion during the pass: {}", summary(during));
    Ok(())
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    // Server errors, if any, go to stderr; `RUST_LOG` can ask for more.
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let events = env_u64("FAULTLINE_BENCH_EVENTS", 1_000_000).max(1);
    let errors = env_u64("FAULTLINE_BENCH_ERRORS", 10_000).clamp(1, events);
    let runs = env_u64("FAULTLINE_BENCH_RUNS", 50).max(1) as usize;

    let dir = tempfile::tempdir()?;
    let mut config = Config {
        listen: "127.0.0.1:0".parse()?,
        data_dir: dir.path().to_path_buf(),
        ..Config::default()
    };
    // Retention would find nothing to delete; keep the measurement free of it.
    config.retention.days = 0;
    let server = app::spawn(config).await?;
    let token = server
        .initial_admin_token
        .clone()
        .context("a fresh data directory creates an admin token")?;
    let base = format!("http://{}", server.addr);
    let client = reqwest::Client::new();
    let project: Value = client
        .post(format!("{base}/api/v4/projects"))
        .header("PRIVATE-TOKEN", &token)
        .json(&json!({"name": "shop", "namespace_path": "bench"}))
        .send()
        .await?
        .json()
        .await?;
    let project_id = project["id"].as_i64().context("project id")?;

    eprintln!("filling {events} events over {errors} errors...");
    let db = dir.path().join("faultline.db");
    let fill_time = {
        let db = db.clone();
        tokio::task::spawn_blocking(move || fill(&db, project_id, events, errors)).await??
    };
    triage(&db)?;
    let size = std::fs::metadata(&db)?.len()
        + std::fs::metadata(db.with_extension("db-wal"))
            .map(|m| m.len())
            .unwrap_or(0);

    let p = format!("/errortracking/api/v1/projects/{project_id}");
    // Page 100 when there are that many pages of unresolved errors (4 in 5 are).
    let deep_pages = (errors as usize * 4 / 5 / 20).clamp(1, 100);
    let deep = deep_page(
        &client,
        &base,
        &token,
        &format!("{p}/errors?limit=20"),
        deep_pages,
    )
    .await?;
    let mut timings = Vec::new();
    for (label, path) in [
        (
            "first page (unresolved, last_seen_desc, 20)",
            format!("{p}/errors"),
        ),
        ("first page, limit=100", format!("{p}/errors?limit=100")),
        (
            "first page, sort=frequency_desc",
            format!("{p}/errors?sort=frequency_desc"),
        ),
        (
            "first page, sort=first_seen_desc",
            format!("{p}/errors?sort=first_seen_desc"),
        ),
        ("status=resolved", format!("{p}/errors?status=resolved")),
        ("status=ignored", format!("{p}/errors?status=ignored")),
        (
            "query=deadlock (1% of errors match)",
            format!("{p}/errors?query=deadlock"),
        ),
        (
            "query with no match (scans all)",
            format!("{p}/errors?query=no-such-text"),
        ),
        (
            "environment=staging (1% of errors)",
            format!("{p}/errors?environment=staging"),
        ),
        (
            "query=environment:production (99%)",
            format!("{p}/errors?query=environment:production"),
        ),
        (
            "query=release:shop@4.2.3 (10%)",
            format!("{p}/errors?query=release:shop%404.2.3"),
        ),
        (
            "query=user:42 (one user)",
            format!("{p}/errors?query=user:42"),
        ),
        (
            "query=region:eu-west-1 (a tag, every error)",
            format!("{p}/errors?query=region:eu-west-1"),
        ),
        (
            "query=region:us-east-1 (a tag, no match)",
            format!("{p}/errors?query=region:us-east-1"),
        ),
        (
            "staging, a tag and free text together",
            format!("{p}/errors?query=environment:staging%20worker:gunicorn%20deadlock"),
        ),
        ("deep page by cursor (page 100)", deep.clone()),
        ("one error", format!("{p}/errors/1")),
        (
            "events of the busiest error",
            format!("{p}/errors/1/events"),
        ),
        (
            "events of the busiest error, newest first",
            format!("{p}/errors/1/events?sort=occurred_at_desc"),
        ),
        ("messages", format!("{p}/messages")),
    ] {
        timings.push(time_get(&client, &base, &token, label, &path, runs).await?);
    }

    println!();
    println!(
        "read_api: {events} events, {errors} errors, database {:.0} MiB, filled in {:.1} s ({:.0} events/s)",
        size as f64 / 1048576.0,
        fill_time.as_secs_f64(),
        events as f64 / fill_time.as_secs_f64()
    );
    println!("{runs} timed runs per request, wall time at the client over HTTP (keep-alive), ms");
    println!(
        "{:<46} {:>7} {:>7} {:>7} {:>6}",
        "request", "median", "p95", "max", "items"
    );
    for t in &timings {
        println!(
            "{:<46} {:>7} {:>7} {:>7} {:>6}",
            t.label,
            ms(t.median),
            ms(t.p95),
            ms(t.max),
            t.items
        );
    }

    // The web UI over the same data.
    let password = server
        .initial_admin_password
        .clone()
        .context("a fresh data directory creates root's password")?;
    let cookie = ui_session(&base, &password).await?;
    let ui = "/bench/shop/-/error_tracking";
    let quiet = errors.max(2) - 1;
    let deep_ui = {
        let cursor = deep
            .split("cursor=")
            .nth(1)
            .context("a cursor on the deep page")?
            .to_owned();
        format!("{ui}?sort=last_seen_desc&cursor={cursor}")
    };
    let mut pages = Vec::new();
    for (label, path) in [
        ("projects page", "/".to_owned()),
        ("error list (unresolved, 25)", ui.to_owned()),
        (
            "error list, sort=frequency_desc",
            format!("{ui}?sort=frequency_desc"),
        ),
        ("error list, query=deadlock", format!("{ui}?query=deadlock")),
        (
            "error list, environment=staging",
            format!("{ui}?environment=staging"),
        ),
        ("error list, a deep page by cursor", deep_ui),
        ("detail of the busiest error", format!("{ui}/1/details")),
        ("detail of a quiet error", format!("{ui}/{quiet}/details")),
        ("messages page", format!("{ui}/messages")),
    ] {
        pages.push(time_page(&client, &base, &cookie, label, &path, runs).await?);
    }
    println!();
    println!("web UI pages, {runs} timed runs each, wall time at the client, ms");
    println!(
        "{:<46} {:>7} {:>7} {:>7} {:>6}",
        "page", "median", "p95", "max", "KiB"
    );
    for t in &pages {
        println!(
            "{:<46} {:>7} {:>7} {:>7} {:>6}",
            t.label,
            ms(t.median),
            ms(t.p95),
            ms(t.max),
            t.items
        );
    }

    retention_under_load(&client, &base, &token, dir.path(), project_id, events).await?;
    deletion_under_load(&client, &base, &token, dir.path(), project_id).await?;
    server.shutdown().await?;
    Ok(())
}
