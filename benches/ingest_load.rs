//! The ingestion load benchmark (`cargo bench --bench ingest_load`).
//!
//! It builds and starts the release server on loopback with a fresh database, creates a project
//! and key through the management API, and drives the envelope endpoint with our own generator
//! ([`common::loadgen`]). In the same run it starts a baseline, a bare hyper server that only reads
//! the body and answers `200 {"id":..}`, and drives it the same way; faultline's rates are
//! printed as a ratio to it. A third server, parse-only, is that baseline plus faultline's own
//! inflate, envelope, extraction and grouping code and no storage: the ceiling of any storage
//! design on this parsing. For each payload it prints events/s, p50/p99/p99.9 latency, the
//! server's peak RSS, its CPU per event, and, at half of faultline's maximum rate, the open-loop
//! latency. At the end it checks that the stored events equal the 200 answers; a mismatch is a
//! correctness failure and exits non-zero. Timing never fails the run.
//!
//! With `FAULTLINE_BENCH_POSTGRES`, the same run then measures the 4 KB event on PostgreSQL,
//! closed loop: one and two `faultline serve` nodes (each a release process with its own data
//! directory) on a fresh database per configuration, the connections spread evenly over the
//! nodes. Each row is printed beside SQLite's and the baseline's of the same run, with the ratio
//! to SQLite's events/s; its CPU per event is the nodes' together plus the PostgreSQL server's
//! (the postmaster and its children, read from `/proc`, when the server runs on this machine).
//! Each configuration ends with the same check, stored (`SELECT COUNT(*) FROM events`) against
//! acknowledged.
//!
//! Environment (all optional):
//! - `FAULTLINE_BENCH_SECS` (10): seconds per measured phase; `FAULTLINE_BENCH_WARMUP_SECS` (2).
//! - `FAULTLINE_BENCH_CONNS` (64): keep-alive connections.
//! - `FAULTLINE_BENCH_CLIENT_THREADS` (2): tokio workers of the load generator.
//! - `FAULTLINE_BENCH_PAYLOADS` (`error-4k,message,large-200k`); `error-4k-plain` is the 4 KB
//!   event in an uncompressed envelope, as browser SDKs send it.
//! - `FAULTLINE_BENCH_KEYS` (unset): e.g. `1000000`, also run the key-scale comparison.
//! - `FAULTLINE_BENCH_PRELOAD_EVENTS` (unset): e.g. `5000000`, also run the database-size comparison.
//! - `FAULTLINE_BENCH_SWEEP` (unset): e.g. `16,64,256,1024`, a closed-loop connection sweep.
//! - `FAULTLINE_BENCH_NO_BUILD`: do not run `cargo build --release` first.
//! - `FAULTLINE_BENCH_SERVER_BIN`: run this server binary instead of `target/release/faultline`
//!   (nothing is built), e.g. to compare two builds in alternating runs.
//! - `FAULTLINE_BENCH_POSTGRES` (unset): a superuser URL of a PostgreSQL cluster to create the
//!   databases in, or `auto`: start a durable throwaway cluster (`scripts/throwaway-postgres
//!   start --durable`, fsync on) and stop it at the end.
//! - `FAULTLINE_BENCH_AB_BIN` / `FAULTLINE_BENCH_AB_ENV` (unset): instead of the usual run, an
//!   interleaved comparison of two servers, A (the server binary as usual) and B (this binary,
//!   or A's with `FAULTLINE_BENCH_AB_ENV`'s `KEY=VALUE,KEY=VALUE` added to its environment). Both
//!   run side by side on fresh databases; each of `FAULTLINE_BENCH_AB_ROUNDS` (10) rounds drives
//!   the baseline, A and B one after another for `FAULTLINE_BENCH_SECS` each, closed loop, with
//!   A and B swapping places every round, and prints B/A of events/s and of server CPU per
//!   event. Neighbouring phases see nearly the same machine, so the per-round ratios hold when
//!   a shared machine's speed drifts by more than the difference measured; their median is the
//!   figure to quote.
//! - `FAULTLINE_BENCH_POSTGRES_NODES` (`1,2`): the node counts to run on PostgreSQL, in order
//!   (`2,1` in every other run takes the order out of the comparison).
//!
//! Every other `FAULTLINE_*` variable reaches the server, e.g. `FAULTLINE_INGEST__ACK=queued`.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use common::loadgen::{self, Mode, RunStats, Target};
use common::payloads::{BodyFactory, Kind};
use common::{api, db, pg, procs};
use hyper::header::HeaderValue;

const ADMIN_TOKEN: &str = "glpat-ingest-load-bench-0000";

/// The interleaved comparison's B server: another binary, more environment, or both.
#[derive(Clone)]
struct AbSpec {
    bin: Option<PathBuf>,
    env: Vec<(String, String)>,
}

#[derive(Clone)]
struct Settings {
    secs: u64,
    warmup_secs: u64,
    conns: usize,
    client_threads: usize,
    payloads: Vec<Kind>,
    keys: Option<u64>,
    preload: Option<u64>,
    /// Connection counts for an extra closed-loop sweep of the 4 KB event.
    sweep: Vec<usize>,
    /// `FAULTLINE_BENCH_POSTGRES`: a cluster's superuser URL, or `auto`.
    postgres: Option<String>,
    /// Node counts to run on PostgreSQL, in this order.
    pg_nodes: Vec<usize>,
    /// The interleaved comparison's B: its binary and its extra environment.
    ab: Option<AbSpec>,
    ab_rounds: usize,
}

fn env_num<T: std::str::FromStr>(name: &str) -> Option<T> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

impl Settings {
    fn from_env() -> anyhow::Result<Settings> {
        let payloads = match std::env::var("FAULTLINE_BENCH_PAYLOADS") {
            Ok(list) => list
                .split(',')
                .map(|s| {
                    Kind::from_name(s.trim()).with_context(|| format!("unknown payload {s:?}"))
                })
                .collect::<anyhow::Result<Vec<_>>>()?,
            Err(_) => Kind::ALL.to_vec(),
        };
        Ok(Settings {
            secs: env_num("FAULTLINE_BENCH_SECS").unwrap_or(10),
            warmup_secs: env_num("FAULTLINE_BENCH_WARMUP_SECS").unwrap_or(2),
            conns: env_num("FAULTLINE_BENCH_CONNS").unwrap_or(64),
            client_threads: env_num("FAULTLINE_BENCH_CLIENT_THREADS").unwrap_or(2),
            payloads,
            keys: env_num("FAULTLINE_BENCH_KEYS"),
            preload: env_num("FAULTLINE_BENCH_PRELOAD_EVENTS"),
            sweep: std::env::var("FAULTLINE_BENCH_SWEEP")
                .map(|v| v.split(',').filter_map(|c| c.trim().parse().ok()).collect())
                .unwrap_or_default(),
            postgres: std::env::var("FAULTLINE_BENCH_POSTGRES")
                .ok()
                .filter(|v| !v.trim().is_empty()),
            pg_nodes: std::env::var("FAULTLINE_BENCH_POSTGRES_NODES")
                .map(|v| {
                    v.split(',')
                        .filter_map(|c| c.trim().parse().ok())
                        .filter(|&n| n > 0)
                        .collect()
                })
                .unwrap_or_else(|_| vec![1, 2]),
            ab: {
                let bin = std::env::var_os("FAULTLINE_BENCH_AB_BIN").map(PathBuf::from);
                let env: Vec<(String, String)> = std::env::var("FAULTLINE_BENCH_AB_ENV")
                    .unwrap_or_default()
                    .split(',')
                    .filter_map(|kv| kv.split_once('='))
                    .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
                    .collect();
                (bin.is_some() || !env.is_empty()).then_some(AbSpec { bin, env })
            },
            ab_rounds: env_num("FAULTLINE_BENCH_AB_ROUNDS").unwrap_or(10),
        })
    }
}

fn main() {
    if std::env::args().any(|a| a == "--baseline-server") {
        let work = if std::env::args().any(|a| a == "--parse") {
            common::baseline::Work::Parse
        } else {
            common::baseline::Work::None
        };
        if let Err(e) = common::baseline::main(work) {
            eprintln!("baseline server: {e:#}");
            std::process::exit(2);
        }
        return;
    }
    let code = match run() {
        Ok(true) => 0,
        Ok(false) => 1,
        Err(e) => {
            eprintln!("ingest_load: {e:#}");
            2
        }
    };
    std::process::exit(code);
}

fn run() -> anyhow::Result<bool> {
    let settings = Settings::from_env()?;
    let bin = procs::faultline_binary()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(settings.client_threads)
        .enable_all()
        .build()?;
    match &settings.ab {
        Some(ab) => {
            let b_bin = ab.bin.clone().unwrap_or_else(|| bin.clone());
            rt.block_on(ab_run(&settings, &bin, &b_bin, &ab.env))
        }
        None => rt.block_on(async_run(&settings, &bin)),
    }
}

/// A faultline server with a project and key, and the tally the final check compares against.
struct Sut {
    proc: procs::ServerProc,
    dir: tempfile::TempDir,
    db: PathBuf,
    project: i64,
    key: String,
    /// Rows that were in `events` before this run's requests (preloaded ones).
    preexisting: u64,
    /// 200 answers received, warm-ups included.
    acknowledged: u64,
}

impl Sut {
    async fn start(bin: &Path) -> anyhow::Result<Sut> {
        Sut::start_with(bin, &[]).await
    }

    /// [`Sut::start`] with more environment for the server.
    async fn start_with(bin: &Path, env: &[(&str, &str)]) -> anyhow::Result<Sut> {
        let dir = tempfile::Builder::new()
            .prefix("faultline-bench-")
            .tempdir()?;
        let proc = procs::spawn_faultline_with(bin, dir.path(), ADMIN_TOKEN, env)?;
        let project = api::create_project(proc.addr, ADMIN_TOKEN, "bench").await?;
        let key = api::enable_tracking(proc.addr, ADMIN_TOKEN, project).await?;
        Ok(Sut {
            db: dir.path().join("faultline.db"),
            proc,
            dir,
            project,
            key,
            preexisting: 0,
            acknowledged: 0,
        })
    }

    /// Stops the server (SIGTERM, the writer drains), runs `between` on the idle database, and
    /// starts it again on the same data directory.
    fn restart(
        &mut self,
        bin: &Path,
        between: impl FnOnce(&Path) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        let dir = self.dir.path().to_path_buf();
        self.proc.stop();
        between(&self.db)?;
        self.proc = procs::spawn_faultline(bin, &dir, ADMIN_TOKEN)?;
        Ok(())
    }

    fn target(&self, bodies: Arc<BodyFactory>, counter: Arc<AtomicU64>, nonce: u64) -> Target {
        target(
            self.proc.addr,
            self.project,
            &self.key,
            bodies,
            counter,
            nonce,
        )
    }

    /// Stops the server, then compares stored events with acknowledged ones and prints the
    /// result loudly. Stopping first lets the writer drain, so the check also holds when a 200
    /// only means "queued" (`FAULTLINE_INGEST__ACK=queued`): an event acknowledged but not on
    /// disk after a clean shutdown is lost.
    async fn check(&mut self, label: &str) -> anyhow::Result<bool> {
        let m = api::metrics(self.proc.addr).await;
        let dedup = api::metric(&m, "faultline_events_deduplicated_total") as u64;
        self.proc.stop();
        let accepted = api::metric(&m, "faultline_events_accepted_total") as u64;
        let rows = db::count_events(&self.db)?;
        let stored = rows - self.preexisting.min(rows);
        let ok = stored == self.acknowledged && dedup == 0;
        println!();
        if ok {
            println!(
                "CHECK {label}: OK: {} events acknowledged with 200, {stored} stored \
                 ({rows} rows in events, {} preloaded; events_accepted_total={accepted} before shutdown)",
                self.acknowledged, self.preexisting
            );
        } else {
            println!(
                "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!"
            );
            println!(
                "CHECK {label}: MISMATCH: {} events acknowledged with 200 but {stored} stored \
                 ({rows} rows, {} preloaded; events_accepted_total={accepted} before shutdown, deduplicated={dedup})",
                self.acknowledged, self.preexisting
            );
            println!(
                "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!"
            );
        }
        Ok(ok)
    }
}

/// `n` faultline nodes on one fresh PostgreSQL database, each with its own data directory (its
/// lock and first-start token file), and the tally the check compares against.
struct PgSut {
    nodes: Vec<(procs::ServerProc, tempfile::TempDir)>,
    /// The database's name on the cluster, and its URL.
    database: String,
    url: String,
    project: i64,
    key: String,
    /// 200 answers received from all nodes, warm-ups included.
    acknowledged: u64,
}

impl PgSut {
    /// Creates the database, starts the first node (which applies the migrations), creates the
    /// project and key through it, then starts the others, which load the key at start-up.
    async fn start(
        bin: &Path,
        cluster: &pg::Cluster,
        n: usize,
        nonce: u64,
    ) -> anyhow::Result<PgSut> {
        let database = format!("faultline_bench_{nonce:x}_{n}_nodes");
        let url = cluster.create_database(&database).await?;
        let mut sut = PgSut {
            nodes: Vec::new(),
            database,
            url,
            project: 0,
            key: String::new(),
            acknowledged: 0,
        };
        for i in 0..n {
            let dir = tempfile::Builder::new()
                .prefix("faultline-bench-pg-")
                .tempdir()?;
            let proc = procs::spawn_faultline_with(
                bin,
                dir.path(),
                ADMIN_TOKEN,
                &[("FAULTLINE_DATABASE__URL", &sut.url)],
            )?;
            if i == 0 {
                sut.project = api::create_project(proc.addr, ADMIN_TOKEN, "bench").await?;
                sut.key = api::enable_tracking(proc.addr, ADMIN_TOKEN, sut.project).await?;
            }
            sut.nodes.push((proc, dir));
        }
        Ok(sut)
    }

    fn pids(&self) -> Vec<u32> {
        self.nodes.iter().map(|(p, _)| p.pid()).collect()
    }

    fn targets(
        &self,
        bodies: Arc<BodyFactory>,
        counter: Arc<AtomicU64>,
        nonce: u64,
    ) -> Vec<Target> {
        self.nodes
            .iter()
            .map(|(p, _)| {
                target(
                    p.addr,
                    self.project,
                    &self.key,
                    bodies.clone(),
                    counter.clone(),
                    nonce,
                )
            })
            .collect()
    }

    /// Stops every node (each drains its writer), then compares the rows in `events` with the
    /// 200 answers, as [`Sut::check`] does, and drops the database.
    async fn check(&mut self, cluster: &pg::Cluster, label: &str) -> anyhow::Result<bool> {
        let mut dedup = 0;
        let mut accepted = 0;
        for (proc, _) in &self.nodes {
            let m = api::metrics(proc.addr).await;
            dedup += api::metric(&m, "faultline_events_deduplicated_total") as u64;
            accepted += api::metric(&m, "faultline_events_accepted_total") as u64;
        }
        for (proc, _) in &mut self.nodes {
            proc.stop();
        }
        let stored = pg::count_events(&self.url).await?;
        cluster.drop_database(&self.database).await;
        let ok = stored == self.acknowledged && dedup == 0;
        println!();
        if ok {
            println!(
                "CHECK {label}: OK: {} events acknowledged with 200, {stored} stored \
                 (SELECT COUNT(*) FROM events; events_accepted_total={accepted} over the nodes before shutdown)",
                self.acknowledged
            );
        } else {
            println!(
                "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!"
            );
            println!(
                "CHECK {label}: MISMATCH: {} events acknowledged with 200 but {stored} stored \
                 (SELECT COUNT(*) FROM events; events_accepted_total={accepted} over the nodes before shutdown, deduplicated={dedup})",
                self.acknowledged
            );
            println!(
                "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!"
            );
        }
        Ok(ok)
    }
}

fn target(
    addr: SocketAddr,
    project: i64,
    key: &str,
    bodies: Arc<BodyFactory>,
    counter: Arc<AtomicU64>,
    nonce: u64,
) -> Target {
    Target {
        addr,
        path: format!("/api/{project}/envelope/"),
        auth: HeaderValue::from_str(&format!(
            "Sentry sentry_key={key}, sentry_version=7, sentry_client=sentry.python.django/2.19.0"
        ))
        .expect("a key is a valid header value"),
        bodies,
        nonce,
        counter,
    }
}

/// What one measured phase saw, besides the generator's own figures.
struct Phase {
    stats: RunStats,
    warm_ok: u64,
    rss_start_kib: u64,
    rss_end_kib: u64,
    /// Peak RSS during the phase (or the process's lifetime peak if it could not be reset).
    peak_kib: u64,
    server_cpu_s: f64,
    client_cpu_s: f64,
    threads: Vec<(String, f64)>,
    /// Seconds each server thread (group) was runnable but had no CPU.
    waits: Vec<(String, f64)>,
    writer: Option<WriterFigures>,
    /// Servers measured together (PostgreSQL nodes); the memory figures are the largest node's.
    nodes: usize,
    /// CPU seconds of the PostgreSQL server's processes, when they could be read.
    db_cpu_s: Option<f64>,
}

struct WriterFigures {
    batches: f64,
    mean_batch: f64,
    mean_commit_ms: f64,
    /// Share of the phase the writer spent inside `write_batch` + commit.
    busy: f64,
    /// Upper bound of the histogram bucket holding the 99th percentile commit time.
    commit_p99_ms: f64,
    rejections: f64,
}

impl Phase {
    /// Every server's CPU per acknowledged event: the faultline nodes', plus the database
    /// server's when it runs in processes of its own.
    fn cpu_us_per_event(&self) -> f64 {
        (self.server_cpu_s + self.db_cpu_s.unwrap_or(0.0)) * 1e6 / self.stats.ok.max(1) as f64
    }

    fn nodes_us_per_event(&self) -> f64 {
        self.server_cpu_s * 1e6 / self.stats.ok.max(1) as f64
    }
}

/// The upper bound of the bucket where quantile `q` of the observations made between two
/// scrapes falls (Prometheus histograms keep cumulative `_bucket{le=".."}` counters).
fn histogram_quantile(m0: &[(String, f64)], m1: &[(String, f64)], name: &str, q: f64) -> f64 {
    let prefix = format!("{name}_bucket{{le=\"");
    let mut buckets: Vec<(f64, f64)> = m1
        .iter()
        .filter_map(|(k, v)| {
            let le = k.strip_prefix(&prefix)?.strip_suffix("\"}")?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, v - api::metric(m0, k)))
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    let total = buckets.last().map(|b| b.1).unwrap_or(0.0);
    buckets
        .iter()
        .find(|(_, cum)| *cum >= q * total && total > 0.0)
        .map(|(le, _)| *le)
        .unwrap_or(f64::NAN)
}

/// Runs a warm-up and a measured phase against the server `pid` listening on `target.addr`.
async fn phase(pid: u32, target: &Target, s: &Settings, mode: Mode, with_metrics: bool) -> Phase {
    phase_on(
        &[pid],
        std::slice::from_ref(target),
        None,
        s,
        mode,
        with_metrics,
    )
    .await
}

/// Sums per-process samples (thread CPU, waits) by thread name.
fn merged(lists: impl IntoIterator<Item = Vec<(String, u64)>>) -> Vec<(String, u64)> {
    let mut out: Vec<(String, u64)> = Vec::new();
    for (name, v) in lists.into_iter().flatten() {
        match out.iter_mut().find(|(n, _)| *n == name) {
            Some(e) => e.1 += v,
            None => out.push((name, v)),
        }
    }
    out
}

/// Several servers' scrapes as one: each series summed over them.
async fn scrape_all(targets: &[Target]) -> Vec<(String, f64)> {
    let mut out: Vec<(String, f64)> = Vec::new();
    for t in targets {
        for (k, v) in api::metrics(t.addr).await {
            match out.iter_mut().find(|(n, _)| *n == k) {
                Some(e) => e.1 += v,
                None => out.push((k, v)),
            }
        }
    }
    out
}

/// [`phase`] against servers `pids` listening on `targets` (one each, in the same order), the
/// generator's connections spread evenly over them; `postmaster` is the root of a database
/// server's processes whose CPU counts as the servers' too.
async fn phase_on(
    pids: &[u32],
    targets: &[Target],
    postmaster: Option<u32>,
    s: &Settings,
    mode: Mode,
    with_metrics: bool,
) -> Phase {
    let hz = procs::ticks_per_sec();
    let warm = if s.warmup_secs > 0 {
        loadgen::run(targets, s.conns, Duration::from_secs(s.warmup_secs), mode).await
    } else {
        RunStats::default()
    };
    let me = std::process::id();
    let mems = || pids.iter().map(|&p| procs::mem(p)).collect::<Vec<_>>();
    let cpu = || pids.iter().map(|&p| procs::process_cpu(p, hz)).sum::<f64>();
    let reset = pids
        .iter()
        .map(|&p| procs::reset_peak(p))
        .fold(true, |a, b| a & b);
    let mem0 = mems();
    let threads0 = merged(pids.iter().map(|&p| procs::thread_cpu(p)));
    let waits0 = merged(pids.iter().map(|&p| procs::thread_runq_wait(p)));
    let cpu0 = cpu();
    let db0 = postmaster.map(|p| procs::tree_cpu(p, hz));
    let client0 = procs::process_cpu(me, hz);
    let m0 = if with_metrics {
        scrape_all(targets).await
    } else {
        Vec::new()
    };
    let stats = loadgen::run(targets, s.conns, Duration::from_secs(s.secs), mode).await;
    let cpu1 = cpu();
    let db1 = postmaster.map(|p| procs::tree_cpu(p, hz));
    let client1 = procs::process_cpu(me, hz);
    let threads1 = merged(pids.iter().map(|&p| procs::thread_cpu(p)));
    let waits1 = merged(pids.iter().map(|&p| procs::thread_runq_wait(p)));
    let mem1 = mems();
    let largest = |m: &[procs::Mem], f: fn(&procs::Mem) -> u64| m.iter().map(f).max().unwrap_or(0);
    let writer = if with_metrics {
        let m1 = scrape_all(targets).await;
        let d = |k: &str| api::metric(&m1, k) - api::metric(&m0, k);
        let batches = d("faultline_writer_batch_size_count");
        let rejections: f64 = m1
            .iter()
            .filter(|(k, _)| k.starts_with("faultline_ingest_rejections_total"))
            .map(|(k, v)| v - api::metric(&m0, k))
            .sum();
        Some(WriterFigures {
            batches,
            mean_batch: d("faultline_writer_batch_size_sum") / batches.max(1.0),
            mean_commit_ms: d("faultline_writer_commit_seconds_sum") * 1000.0 / batches.max(1.0),
            // Per writer: each node has one.
            busy: d("faultline_writer_commit_seconds_sum")
                / stats.elapsed.as_secs_f64()
                / pids.len() as f64,
            commit_p99_ms: histogram_quantile(&m0, &m1, "faultline_writer_commit_seconds", 0.99)
                * 1000.0,
            rejections,
        })
    } else {
        None
    };
    Phase {
        warm_ok: warm.ok,
        rss_start_kib: largest(&mem0, |m| m.rss_kib),
        rss_end_kib: largest(&mem1, |m| m.rss_kib),
        peak_kib: if reset {
            largest(&mem1, |m| m.hwm_kib)
        } else {
            largest(&mem1, |m| m.hwm_kib).max(largest(&mem0, |m| m.hwm_kib))
        },
        server_cpu_s: cpu1 - cpu0,
        client_cpu_s: client1 - client0,
        threads: procs::cpu_delta(&threads0, &threads1, hz),
        waits: procs::cpu_delta(&waits0, &waits1, 1e9),
        writer,
        nodes: pids.len(),
        db_cpu_s: db0.zip(db1).map(|(a, b)| b - a),
        stats,
    }
}

/// `/proc/loadavg`'s 1, 5 and 15 minute figures: other work on the machine skews every number.
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn print_header() {
    println!(
        "{:<11} {:<10} {:<14} {:>9} {:>7} {:>7} {:>8} {:>8} {:>13} {:>8} {:>7} {:>7}",
        "payload",
        "server",
        "mode",
        "events/s",
        "p50 ms",
        "p99 ms",
        "p99.9 ms",
        "peak MB",
        "RSS start>end",
        "CPU us/ev",
        "non-200",
        "ratio"
    );
}

fn print_row(kind: Kind, server: &str, mode: &str, p: &Phase, ratio: Option<f64>) {
    let st = &p.stats;
    println!(
        "{:<11} {:<10} {:<14} {:>9.0} {:>7.2} {:>7.2} {:>8.2} {:>8.1} {:>6.1}>{:<6.1} {:>8.0} {:>7} {:>7}",
        kind.name(),
        server,
        mode,
        st.rate(),
        st.percentile_ms(50.0),
        st.percentile_ms(99.0),
        st.percentile_ms(99.9),
        mib(p.peak_kib),
        mib(p.rss_start_kib),
        mib(p.rss_end_kib),
        p.cpu_us_per_event(),
        st.non_ok(),
        ratio.map(|r| format!("{r:.2}")).unwrap_or_else(|| "-".into()),
    );
}

fn print_details(p: &Phase) {
    let st = &p.stats;
    let secs = st.elapsed.as_secs_f64();
    let threads: Vec<String> = p
        .threads
        .iter()
        .take(4)
        .map(|(n, s)| format!("{n} {:.0}%", s * 100.0 / secs))
        .collect();
    let waits: Vec<String> = p
        .waits
        .iter()
        .take(4)
        .map(|(n, s)| format!("{n} {:.0}%", s * 100.0 / secs))
        .collect();
    let servers = if p.nodes > 1 {
        format!("{} nodes' CPU", p.nodes)
    } else {
        "server CPU".to_string()
    };
    let mut line = format!(
        "    {servers} {:.0}% of a core ({}), waiting for a CPU ({}), client CPU {:.0}%",
        p.server_cpu_s * 100.0 / secs,
        threads.join(", "),
        waits.join(", "),
        p.client_cpu_s * 100.0 / secs
    );
    if let Some(db) = p.db_cpu_s {
        line += &format!(
            "; PostgreSQL server {:.0}% of a core: {:.0} us/event + faultline {:.0} us/event",
            db * 100.0 / secs,
            db * 1e6 / st.ok.max(1) as f64,
            p.nodes_us_per_event()
        );
    }
    if let Some(w) = &p.writer {
        line += &format!(
            "; writer: {:.0} batches, {:.1} events/batch, {:.2} ms/commit (p99 <= {:.1}), busy {:.0}%",
            w.batches,
            w.mean_batch,
            w.mean_commit_ms,
            w.commit_p99_ms,
            w.busy * 100.0
        );
        if w.rejections > 0.0 {
            line += &format!(", {:.0} rejections", w.rejections);
        }
    }
    if !st.other_status.is_empty() || st.io_errors > 0 || st.bad_bodies > 0 {
        line += &format!(
            "; non-200: {:?}, I/O errors {}, 200s without id {}",
            st.other_status, st.io_errors, st.bad_bodies
        );
    }
    println!("{line}");
}

struct PayloadResult {
    kind: Kind,
    base: Phase,
    parsed: Phase,
    fl: Phase,
    open: Phase,
    open_rate: f64,
}

async fn async_run(s: &Settings, bin: &Path) -> anyhow::Result<bool> {
    let nonce = (common::payloads::now_unix() * 1e6) as u64;
    let counter = Arc::new(AtomicU64::new(0));
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    println!(
        "ingest_load: {cores} cores, {} connections, {} client threads, {} s per phase after {} s warm-up",
        s.conns, s.client_threads, s.secs, s.warmup_secs
    );
    println!("  load average before: {}", loadavg());
    println!(
        "  latency: closed loop from send; open loop from the scheduled send time (the tokio \
         timer adds up to 1 ms)"
    );

    let mut factories = Vec::new();
    for &kind in &s.payloads {
        let f = Arc::new(BodyFactory::new(kind));
        self_check(&f, nonce)?;
        let body = if f.is_gzip() {
            format!("gzip body {:>6} B", f.avg_gzip_len)
        } else {
            "sent uncompressed".to_owned()
        };
        println!(
            "  payload {:<10}: event JSON {:>6} B, envelope {:>6} B, {body}, {} groups",
            kind.name(),
            f.avg_event_len,
            f.max_envelope_len,
            f.groups()
        );
        factories.push((kind, f));
    }

    let baseline = procs::spawn_baseline(false)?;
    let parse_only = procs::spawn_baseline(true)?;
    let mut sut = Sut::start(bin).await?;
    println!(
        "  faultline pid {} on {} (started in {:.0} ms), baseline pid {} on {}, parse-only pid {} on {}",
        sut.proc.pid(),
        sut.proc.addr,
        sut.proc.startup.as_secs_f64() * 1000.0,
        baseline.pid(),
        baseline.addr,
        parse_only.pid(),
        parse_only.addr
    );
    println!();
    print_header();

    let mut results = Vec::new();
    for (kind, f) in &factories {
        let kind = *kind;
        let base_target = target(
            baseline.addr,
            sut.project,
            &sut.key,
            f.clone(),
            counter.clone(),
            nonce,
        );
        let base = phase(baseline.pid(), &base_target, s, Mode::Closed, false).await;
        print_row(kind, "baseline", "closed", &base, None);
        print_details(&base);
        let parse_target = target(
            parse_only.addr,
            sut.project,
            &sut.key,
            f.clone(),
            counter.clone(),
            nonce,
        );
        let parsed = phase(parse_only.pid(), &parse_target, s, Mode::Closed, false).await;
        let parse_ratio = parsed.stats.rate() / base.stats.rate();
        print_row(kind, "parse-only", "closed", &parsed, Some(parse_ratio));
        print_details(&parsed);

        let t = sut.target(f.clone(), counter.clone(), nonce);
        let fl = phase(sut.proc.pid(), &t, s, Mode::Closed, true).await;
        sut.acknowledged += fl.stats.ok + fl.warm_ok;
        let ratio = fl.stats.rate() / base.stats.rate();
        print_row(kind, "faultline", "closed", &fl, Some(ratio));
        print_details(&fl);

        // Target 2: latency at half of the maximum rate, offered open-loop.
        let open_rate = (fl.stats.rate() / 2.0).max(1.0);
        let open = phase(sut.proc.pid(), &t, s, Mode::Open { rate: open_rate }, true).await;
        sut.acknowledged += open.stats.ok + open.warm_ok;
        print_row(
            kind,
            "faultline",
            &format!("open {open_rate:.0}/s"),
            &open,
            None,
        );
        print_details(&open);
        results.push(PayloadResult {
            kind,
            base,
            parsed,
            fl,
            open,
            open_rate,
        });
    }

    let sweep_peaks = if s.sweep.is_empty() {
        Vec::new()
    } else {
        sweep(s, &mut sut, nonce, counter.clone()).await
    };
    // Each phase resets VmHWM to report its own peak, so the run's peak is the largest of them
    // (and of whatever is left since the last reset).
    let peak_total = results
        .iter()
        .flat_map(|r| [r.fl.peak_kib, r.open.peak_kib])
        .chain(sweep_peaks)
        .chain([procs::mem(sut.proc.pid()).hwm_kib])
        .max()
        .unwrap_or(0);
    let mut all_ok = sut.check("main run").await?;
    // After the check, which stops the SQLite server: PostgreSQL's nodes get the machine to
    // themselves, as SQLite's server had it.
    let pg_results = match &s.postgres {
        Some(setting) => {
            let (rows, ok) = postgres(s, bin, setting, &results, nonce, counter.clone()).await?;
            all_ok &= ok;
            rows
        }
        None => Vec::new(),
    };
    println!("  load average after: {}", loadavg());
    summary(&results, &pg_results, peak_total);
    drop(baseline);
    drop(parse_only);

    if let Some(n) = s.keys {
        all_ok &= key_scale(s, bin, n, nonce, counter.clone()).await?;
    }
    if let Some(n) = s.preload {
        all_ok &= preload(s, bin, n, nonce, counter.clone()).await?;
    }
    println!();
    println!(
        "{}",
        if all_ok {
            "ingest_load: every acknowledged event was stored"
        } else {
            "ingest_load: STORED EVENTS DO NOT MATCH ACKNOWLEDGED EVENTS (see CHECK above)"
        }
    );
    Ok(all_ok)
}

/// With "200 means committed", each connection has one event in flight, so the closed-loop rate
/// is bounded by connections / (batch wait + commit). Sweeping the connection count shows where
/// faultline stops being latency-bound and becomes CPU- or writer-bound.
async fn sweep(s: &Settings, sut: &mut Sut, nonce: u64, counter: Arc<AtomicU64>) -> Vec<u64> {
    println!();
    println!("CONNECTION SWEEP (4 KB event, faultline, closed loop)");
    let f = Arc::new(BodyFactory::new(Kind::Error4k));
    let t = sut.target(f, counter, nonce);
    let mut peaks = Vec::new();
    for &conns in &s.sweep {
        let mut s = s.clone();
        s.conns = conns;
        let p = phase(sut.proc.pid(), &t, &s, Mode::Closed, true).await;
        sut.acknowledged += p.stats.ok + p.warm_ok;
        println!(
            "  {conns:>5} connections: {:>6.0} ev/s, p50 {:.2} ms, p99 {:.2} ms, peak RSS {:.1} MB, {:.0} us CPU/event, non-200 {}",
            p.stats.rate(),
            p.stats.percentile_ms(50.0),
            p.stats.percentile_ms(99.0),
            mib(p.peak_kib),
            p.cpu_us_per_event(),
            p.stats.non_ok()
        );
        print_details(&p);
        peaks.push(p.peak_kib);
    }
    peaks
}

/// One PostgreSQL configuration's measured phase.
struct PgResult {
    nodes: usize,
    phase: Phase,
}

/// The 4 KB event on PostgreSQL, closed loop, for each node count of `FAULTLINE_BENCH_POSTGRES_NODES`,
/// each on a fresh database and checked like the main run. `results` are SQLite's and the
/// baseline's of this run, for the ratios.
async fn postgres(
    s: &Settings,
    bin: &Path,
    setting: &str,
    results: &[PayloadResult],
    nonce: u64,
    counter: Arc<AtomicU64>,
) -> anyhow::Result<(Vec<PgResult>, bool)> {
    println!();
    println!(
        "POSTGRESQL: 4 KB event, closed loop, {} connections spread evenly over the nodes",
        s.conns
    );
    let cluster = pg::Cluster::open(setting)?;
    let postmaster = cluster.postmaster_pid().await;
    println!("  cluster {}", cluster.describe());
    match postmaster {
        Some(pid) => println!(
            "  CPU per event: the faultline nodes' together plus the PostgreSQL server's, the \
             postmaster (pid {pid}) and its children (backends, WAL writer, checkpointer, \
             autovacuum...), exited ones included; memory columns are the largest node's"
        ),
        None => println!(
            "  CPU per event: the faultline nodes' only (the PostgreSQL server's processes are \
             not visible in /proc here); memory columns are the largest node's"
        ),
    }
    let sqlite = results.iter().find(|r| r.kind == Kind::Error4k);
    let f = Arc::new(BodyFactory::new(Kind::Error4k));
    let mut ok = true;
    let mut rows = Vec::new();
    println!();
    print_header();
    if let Some(r) = sqlite {
        print_row(Kind::Error4k, "baseline", "closed", &r.base, None);
        let ratio = r.fl.stats.rate() / r.base.stats.rate();
        print_row(Kind::Error4k, "sqlite", "closed", &r.fl, Some(ratio));
    }
    for &n in &s.pg_nodes {
        let mut sut = PgSut::start(bin, &cluster, n, nonce).await?;
        let pids = sut.pids();
        let targets = sut.targets(f.clone(), counter.clone(), nonce);
        let p = phase_on(&pids, &targets, postmaster, s, Mode::Closed, true).await;
        sut.acknowledged += p.stats.ok + p.warm_ok;
        let server = format!("pg {n} node{}", if n == 1 { "" } else { "s" });
        let ratio = sqlite.map(|r| p.stats.rate() / r.base.stats.rate());
        print_row(Kind::Error4k, &server, "closed", &p, ratio);
        print_details(&p);
        if let Some(r) = sqlite {
            println!(
                "    {:.2} x SQLite's events/s in this run ({:.0}), CPU per event {:.0} us against SQLite's {:.0}",
                p.stats.rate() / r.fl.stats.rate(),
                r.fl.stats.rate(),
                p.cpu_us_per_event(),
                r.fl.cpu_us_per_event()
            );
        }
        ok &= sut
            .check(&cluster, &format!("PostgreSQL, {server}"))
            .await?;
        rows.push(PgResult { nodes: n, phase: p });
    }
    drop(cluster);
    Ok((rows, ok))
}

/// Decodes one body the way the server does and checks its framing, so a broken payload
/// generator is caught before it is mistaken for a slow server.
fn self_check(f: &BodyFactory, nonce: u64) -> anyhow::Result<()> {
    let body = f.body(nonce, u64::MAX, "2024-01-01T00:00:00.000000Z");
    let encoding = if f.is_gzip() {
        faultline::protocol::decode::ContentEncoding::Gzip
    } else {
        faultline::protocol::decode::ContentEncoding::Identity
    };
    let decoded = faultline::protocol::decode::decode_body(encoding, &body, usize::MAX)?;
    let env = faultline::protocol::envelope::parse(&decoded, &Default::default())?;
    anyhow::ensure!(env.items.len() == 1, "one item expected");
    let summary = faultline::domain::event::extract(env.items[0].payload)?;
    let id = String::from_utf8(common::payloads::event_id_hex(nonce, u64::MAX).to_vec())?;
    anyhow::ensure!(
        summary.event_id.as_deref() == Some(id.as_str()),
        "event id mismatch"
    );
    anyhow::ensure!(
        env.header.event_id.as_deref() == Some(id.as_str()),
        "header id mismatch"
    );
    Ok(())
}

/// Prints a CPU-per-event target: `limit_us` was set when the 4.9 KB event's bare request cost
/// 7 us, so the verdict compares multiples of the same run's bare request (`base_cpu`).
fn cpu_target(payload: &str, limit_us: f64, cpu: f64, base_cpu: f64) {
    println!(
        "  target: CPU per stored {payload} event <= {limit_us:.0} us (<= {:.1} x a bare 4.9 KB request's 7 us): {cpu:.0} us = {:.1} x the 4.9 KB baseline's {base_cpu:.0} us -> {}",
        limit_us / 7.0,
        cpu / base_cpu,
        verdict(cpu / base_cpu <= limit_us / 7.0)
    );
}

fn summary(results: &[PayloadResult], pg: &[PgResult], peak_total_kib: u64) {
    println!();
    println!("SUMMARY (targets are reported, never enforced)");
    for r in results {
        println!(
            "  {:<10} faultline {:>7.0} ev/s = {:.2} x baseline ({:.0} req/s); p99 at {:.0}/s open loop {:.2} ms (p50 {:.2}, p99.9 {:.2}); peak RSS {:.1} MB; {:.0} us server CPU/event",
            r.kind.name(),
            r.fl.stats.rate(),
            r.fl.stats.rate() / r.base.stats.rate(),
            r.base.stats.rate(),
            r.open_rate,
            r.open.stats.percentile_ms(99.0),
            r.open.stats.percentile_ms(50.0),
            r.open.stats.percentile_ms(99.9),
            mib(r.fl.peak_kib.max(r.open.peak_kib)),
            r.fl.cpu_us_per_event(),
        );
        println!(
            "  {:<10} parse-only {:>6.0} req/s = {:.2} x baseline, {:.0} us server CPU/request: faultline reaches {:.2} of it",
            "",
            r.parsed.stats.rate(),
            r.parsed.stats.rate() / r.base.stats.rate(),
            r.parsed.cpu_us_per_event(),
            r.fl.stats.rate() / r.parsed.stats.rate(),
        );
    }
    // The second round's targets (issue 16). CPU figures are also given as multiples of the
    // baseline's CPU per request in the same run: the absolute targets (30 and 250 us) were set
    // on the machine's good days, when a bare request cost 7 us.
    if let Some(r) = results.iter().find(|r| r.kind == Kind::Error4k) {
        cpu_target(
            "4.9 KB",
            30.0,
            r.fl.cpu_us_per_event(),
            r.base.cpu_us_per_event(),
        );
        let ratio = r.fl.stats.rate() / r.base.stats.rate();
        println!(
            "  target: faultline / baseline >= 0.33, 4.9 KB event: {ratio:.2} -> {}",
            verdict(ratio >= 0.33)
        );
        let parse = r.parsed.stats.rate() / r.base.stats.rate();
        println!(
            "  target: parse-only / baseline >= 0.6: {parse:.2} -> {}",
            verdict(parse >= 0.6)
        );
        let p99 = r.open.stats.percentile_ms(99.0);
        println!(
            "  target: p99 < 20 ms at half of max rate: {p99:.2} ms -> {}",
            verdict(p99 < 20.0)
        );
    }
    // The 200 KB target is against the 4.9 KB event's bare request too, whose cost was 7 us
    // when the target was set.
    let small_base = results.iter().find(|r| r.kind == Kind::Error4k);
    if let (Some(r), Some(small)) = (
        results.iter().find(|r| r.kind == Kind::Large200k),
        small_base,
    ) {
        cpu_target(
            "200 KB",
            250.0,
            r.fl.cpu_us_per_event(),
            small.base.cpu_us_per_event(),
        );
    }
    println!(
        "  target: peak RSS < 150 MB: {:.1} MB over the whole run -> {}",
        mib(peak_total_kib),
        verdict(mib(peak_total_kib) < 150.0)
    );
    if pg.is_empty() {
        return;
    }
    let sqlite = results.iter().find(|r| r.kind == Kind::Error4k);
    for r in pg {
        let p = &r.phase;
        let vs = sqlite
            .map(|q| {
                format!(
                    " = {:.2} x SQLite ({:.0} ev/s) = {:.2} x baseline",
                    p.stats.rate() / q.fl.stats.rate(),
                    q.fl.stats.rate(),
                    p.stats.rate() / q.base.stats.rate()
                )
            })
            .unwrap_or_default();
        let db = p
            .db_cpu_s
            .map(|c| format!(" + PostgreSQL {:.0}", c * 1e6 / p.stats.ok.max(1) as f64))
            .unwrap_or_default();
        println!(
            "  postgres {} node(s) {:>7.0} ev/s{vs}; p50 {:.2} ms, p99 {:.2} ms; server CPU/event: faultline {:.0}{db} = {:.0} us",
            r.nodes,
            p.stats.rate(),
            p.stats.percentile_ms(50.0),
            p.stats.percentile_ms(99.0),
            p.nodes_us_per_event(),
            p.cpu_us_per_event(),
        );
    }
    let rate = |n: usize| {
        pg.iter()
            .find(|r| r.nodes == n)
            .map(|r| r.phase.stats.rate())
    };
    if let (Some(one), Some(q)) = (rate(1), sqlite) {
        let ratio = one / q.fl.stats.rate();
        println!(
            "  PostgreSQL target 1 (one node >= 0.5 x SQLite's events/s): {:.3} x -> {}",
            ratio,
            verdict(ratio >= 0.5)
        );
    }
    if let (Some(one), Some(two)) = (rate(1), rate(2)) {
        println!(
            "  PostgreSQL target 2 (two nodes not slower than one): {:.2} x one node -> {}",
            two / one,
            verdict(two >= one)
        );
    }
}

fn verdict(met: bool) -> &'static str {
    if met {
        "met"
    } else {
        "NOT met"
    }
}

/// Target 4: start-up time, memory and throughput with 10 keys and with `n` keys.
async fn key_scale(
    s: &Settings,
    bin: &Path,
    n: u64,
    nonce: u64,
    counter: Arc<AtomicU64>,
) -> anyhow::Result<bool> {
    println!();
    println!("KEY SCALE: 10 keys vs {n} keys (4 KB event, closed loop)");
    let f = Arc::new(BodyFactory::new(Kind::Error4k));
    let mut ok = true;
    let mut rows = Vec::new();
    for keys in [10u64, n] {
        let mut sut = Sut::start(bin).await?;
        let filler = api::create_project(sut.proc.addr, ADMIN_TOKEN, "filler").await?;
        if keys <= 1000 {
            for _ in 1..keys {
                api::add_key(sut.proc.addr, ADMIN_TOKEN, sut.project).await?;
            }
            sut.restart(bin, |_| Ok(()))?;
        } else {
            sut.restart(bin, |db| db::insert_keys(db, filler, keys - 1))?;
        }
        let startup = sut.proc.startup;
        // The idle footprint right after start-up, and the peak reached while loading.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let idle = procs::mem(sut.proc.pid());
        let t = sut.target(f.clone(), counter.clone(), nonce);
        let p = phase(sut.proc.pid(), &t, s, Mode::Closed, true).await;
        sut.acknowledged += p.stats.ok + p.warm_ok;
        println!(
            "  {keys:>8} keys: start-up {:>6.0} ms, idle RSS {:>6.1} MB (start-up peak {:.1} MB), {:>6.0} ev/s, p99 {:.2} ms, peak RSS under load {:.1} MB",
            startup.as_secs_f64() * 1000.0,
            mib(idle.rss_kib),
            mib(idle.hwm_kib),
            p.stats.rate(),
            p.stats.percentile_ms(99.0),
            mib(p.peak_kib)
        );
        ok &= sut.check(&format!("{keys} keys")).await?;
        rows.push((keys, startup, idle, p.stats.rate()));
    }
    let (k0, s0, m0, r0) = &rows[0];
    let (k1, s1, m1, r1) = &rows[1];
    let per_key = (m1.rss_kib as f64 - m0.rss_kib as f64) * 1024.0 / (*k1 - *k0) as f64;
    let per_key_peak = (m1.hwm_kib as f64 - m0.hwm_kib as f64) * 1024.0 / (*k1 - *k0) as f64;
    println!(
        "  target 4: start-up {:.2} s (< 5 s: {}), {:.0} B/key idle RSS delta ({:.0} B/key at the start-up peak; < 200: {}), throughput {:.0}% of the 10-key case (>= 90%: {}); 10-key start-up {:.2} s",
        s1.as_secs_f64(),
        verdict(s1.as_secs_f64() < 5.0),
        per_key,
        per_key_peak,
        verdict(per_key < 200.0),
        r1 / r0 * 100.0,
        verdict(r1 / r0 >= 0.9),
        s0.as_secs_f64()
    );
    Ok(ok)
}

/// Target 5: throughput on an empty database vs after `n` preloaded events.
async fn preload(
    s: &Settings,
    bin: &Path,
    n: u64,
    nonce: u64,
    counter: Arc<AtomicU64>,
) -> anyhow::Result<bool> {
    println!();
    println!("DATABASE SIZE: empty vs {n} stored events (4 KB event, closed loop)");
    let f = Arc::new(BodyFactory::new(Kind::Error4k));
    let mut sut = Sut::start(bin).await?;
    let t = sut.target(f.clone(), counter.clone(), nonce);
    let empty = phase(sut.proc.pid(), &t, s, Mode::Closed, true).await;
    sut.acknowledged += empty.stats.ok + empty.warm_ok;
    println!(
        "  empty db:      {:>6.0} ev/s, p99 {:.2} ms, peak RSS {:.1} MB",
        empty.stats.rate(),
        empty.stats.percentile_ms(99.0),
        mib(empty.peak_kib)
    );
    print_details(&empty);
    // Stored the way the gateway stores this event: its gzip envelope, payload codec 1.
    let payload = f.body(nonce, 0, "2024-01-01T00:00:00.000000Z");
    let project = sut.project;
    sut.restart(bin, |db| db::preload_events(db, project, n, &payload, 1))?;
    sut.preexisting = n;
    let size = std::fs::metadata(&sut.db).map(|m| m.len()).unwrap_or(0);
    println!(
        "  restarted on {:.1} GB database in {:.2} s",
        size as f64 / 1e9,
        sut.proc.startup.as_secs_f64()
    );
    let t = sut.target(f.clone(), counter.clone(), nonce);
    let full = phase(sut.proc.pid(), &t, s, Mode::Closed, true).await;
    sut.acknowledged += full.stats.ok + full.warm_ok;
    println!(
        "  {n} events: {:>6.0} ev/s, p99 {:.2} ms, peak RSS {:.1} MB",
        full.stats.rate(),
        full.stats.percentile_ms(99.0),
        mib(full.peak_kib)
    );
    print_details(&full);
    let ratio = full.stats.rate() / empty.stats.rate();
    println!(
        "  target 5: {:.0}% of the empty-database rate (>= 80%: {})",
        ratio * 100.0,
        verdict(ratio >= 0.8)
    );
    let ok = sut.check(&format!("{n} preloaded events")).await?;
    Ok(ok)
}

/// The interleaved comparison (`FAULTLINE_BENCH_AB_BIN` / `FAULTLINE_BENCH_AB_ENV`): A and B
/// side by side, the baseline, A and B driven in turn in every round, A and B swapping places
/// each round. Ends with the stored-equals-acknowledged check on both.
async fn ab_run(
    s: &Settings,
    a_bin: &Path,
    b_bin: &Path,
    b_env: &[(String, String)],
) -> anyhow::Result<bool> {
    let nonce = (common::payloads::now_unix() * 1e6) as u64;
    let counter = Arc::new(AtomicU64::new(0));
    let kind = s.payloads.first().copied().unwrap_or(Kind::ALL[0]);
    let bodies = Arc::new(BodyFactory::new(kind));
    self_check(&bodies, nonce)?;
    let env: Vec<(&str, &str)> = b_env
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    println!(
        "ingest_load A/B: payload {}, {} rounds of {} s per server after {} s warm-up, {} connections",
        kind.name(),
        s.ab_rounds,
        s.secs,
        s.warmup_secs,
        s.conns
    );
    println!("  A: {}", a_bin.display());
    println!("  B: {} {:?}", b_bin.display(), env);
    println!("  load average before: {}", loadavg());
    let baseline = procs::spawn_baseline(false)?;
    let mut a = Sut::start(a_bin).await?;
    let mut b = Sut::start_with(b_bin, &env).await?;
    println!();
    println!(
        "{:>5} {:>9} {:>9} {:>9} {:>7} {:>7} {:>7} {:>7} {:>8} {:>8}",
        "round",
        "base/s",
        "A ev/s",
        "B ev/s",
        "A/base",
        "B/base",
        "A us",
        "B us",
        "B/A ev/s",
        "B/A cpu"
    );
    let mut rate_ratios = Vec::new();
    let mut cpu_ratios = Vec::new();
    let mut a_base = Vec::new();
    let mut b_base = Vec::new();
    for round in 0..s.ab_rounds {
        let bt = target(
            baseline.addr,
            a.project,
            &a.key,
            bodies.clone(),
            counter.clone(),
            nonce,
        );
        let base = phase(baseline.pid(), &bt, s, Mode::Closed, false).await;
        let run = |sut: &Sut| {
            let t = sut.target(bodies.clone(), counter.clone(), nonce);
            let pid = sut.proc.pid();
            async move { phase(pid, &t, s, Mode::Closed, false).await }
        };
        let (pa, pb) = if round % 2 == 0 {
            let pa = run(&a).await;
            (pa, run(&b).await)
        } else {
            let pb = run(&b).await;
            (run(&a).await, pb)
        };
        a.acknowledged += pa.stats.ok + pa.warm_ok;
        b.acknowledged += pb.stats.ok + pb.warm_ok;
        let rr = pb.stats.rate() / pa.stats.rate();
        let cr = pb.cpu_us_per_event() / pa.cpu_us_per_event();
        println!(
            "{:>5} {:>9.0} {:>9.0} {:>9.0} {:>7.3} {:>7.3} {:>7.0} {:>7.0} {:>8.3} {:>8.3}",
            round + 1,
            base.stats.rate(),
            pa.stats.rate(),
            pb.stats.rate(),
            pa.stats.rate() / base.stats.rate(),
            pb.stats.rate() / base.stats.rate(),
            pa.cpu_us_per_event(),
            pb.cpu_us_per_event(),
            rr,
            cr
        );
        if pa.stats.non_ok() + pb.stats.non_ok() > 0 {
            println!(
                "      non-200: A {} ({:?}), B {} ({:?})",
                pa.stats.non_ok(),
                pa.stats.other_status,
                pb.stats.non_ok(),
                pb.stats.other_status
            );
        }
        rate_ratios.push(rr);
        cpu_ratios.push(cr);
        a_base.push(pa.stats.rate() / base.stats.rate());
        b_base.push(pb.stats.rate() / base.stats.rate());
    }
    let spread = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        let median = if v.is_empty() {
            f64::NAN
        } else if v.len() % 2 == 1 {
            v[v.len() / 2]
        } else {
            (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0
        };
        format!(
            "median {median:.3} (min {:.3}, max {:.3})",
            v.first().copied().unwrap_or(f64::NAN),
            v.last().copied().unwrap_or(f64::NAN)
        )
    };
    println!();
    println!("SUMMARY A/B over {} rounds", s.ab_rounds);
    println!("  B/A events/s:            {}", spread(&mut rate_ratios));
    println!("  B/A server CPU per event: {}", spread(&mut cpu_ratios));
    println!("  A / baseline:            {}", spread(&mut a_base));
    println!("  B / baseline:            {}", spread(&mut b_base));
    println!("  load average after: {}", loadavg());
    let ok_a = a.check("A").await?;
    let ok_b = b.check("B").await?;
    Ok(ok_a && ok_b)
}
