//! Criterion benchmark of the storage half of ingestion (`cargo bench --bench writer`): one
//! `SqliteSink::write_batch` transaction of realistic events into a SQLite database on disk, for a
//! small batch (what a lightly loaded writer commits) and a large one, with the 4 KB event stored
//! as the gzip envelope it came in (as the gateway stores it) and as plain JSON. It isolates what the writer
//! thread spends per event, which the load benchmark can only see mixed with HTTP and parsing.
//!
//! The database grows by a few hundred thousand events over the run; each batch gets fresh event
//! ids and cycles over 50 error groups, like the load benchmark's 4 KB event.

#[path = "common/payloads.rs"]
mod payloads;

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use faultline::store::ingest::{EventRecord, EventSink, Record};
use faultline::store::payload::PayloadCodec;
use faultline::store::sqlite::SqliteOptions;
use faultline::store::sqlite::SqliteSink;
use faultline::store::{NewProject, NewUser, SqliteStore, Store};
use payloads::{BodyFactory, Kind};

/// Opens a fresh database with one project; returns the sink, the project id and the temp dir
/// that must outlive both.
fn fresh_sink() -> (SqliteSink, i64, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open_with(SqliteOptions {
        path: dir.path().join("bench.db"),
        synchronous: Default::default(),
        max_page_count: None,
    })
    .expect("database opens");
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let project_id = rt.block_on(async {
        let user = store
            .create_user(NewUser {
                username: "bench".into(),
                name: "Bench".into(),
                email: None,
                is_admin: true,
            })
            .await
            .expect("user");
        store
            .create_project(NewProject {
                name: "bench".into(),
                path: "bench".into(),
                namespace_path: "bench".into(),
                owner_id: user.id,
            })
            .await
            .expect("project")
            .id
    });
    let sink = SqliteSink::open(store.options(), Default::default()).expect("sink opens");
    (sink, project_id, dir)
}

fn record(project_id: i64, payload: Vec<u8>, codec: PayloadCodec, n: u64) -> Record {
    let group = (n % 50) as i64;
    Record::Event(EventRecord {
        project_id,
        event_id: format!("{:032x}", n.wrapping_mul(0x9e37_79b9_7f4a_7c15)),
        fingerprint: 1_000_003 * (group + 1),
        name: format!("ValueError{group}"),
        description: "invalid literal for int() with base 10: 'abc'".into(),
        actor: "handle_request(app.views)".into(),
        platform: Some("python".into()),
        level: Some("error".into()),
        environment: Some("production".into()),
        release: Some("app@1.2.3".into()),
        message: None,
        is_message: false,
        user_identity: Some(format!("id:{}", n % 1000)),
        search_tags: vec![("user".into(), format!("id:{}", n % 1000))],
        occurred_at: 1_700_000_000_000 + n as i64,
        payload,
        payload_codec: codec,
    })
}

/// How the benchmark's events are stored: as their JSON, or as the gzip envelope they came in
/// (what the gateway does for a gzip body that carries only the event).
#[derive(Clone, Copy)]
enum Stored {
    Json,
    GzipEnvelope,
}

fn write_batch(c: &mut Criterion) {
    let (mut sink, project_id, _dir) = fresh_sink();
    let mut n = 0u64;
    let mut g = c.benchmark_group("writer/batch");
    for (kind, stored, batch) in [
        (Kind::Error4k, Stored::GzipEnvelope, 4usize),
        (Kind::Error4k, Stored::GzipEnvelope, 64),
        (Kind::Error4k, Stored::Json, 64),
        (Kind::Message, Stored::Json, 64),
    ] {
        let json = payloads::event_json(kind, 3, "0123456789abcdef0123456789abcdef");
        let bodies = BodyFactory::new(kind);
        let name = match stored {
            Stored::Json => format!("{}-json", kind.name()),
            Stored::GzipEnvelope => format!("{}-gzip-envelope", kind.name()),
        };
        g.throughput(Throughput::Elements(batch as u64));
        g.bench_function(BenchmarkId::new(name, batch), |b| {
            b.iter_custom(|iters| {
                let mut spent = Duration::ZERO;
                for _ in 0..iters {
                    // One job per event, as the handlers submit them.
                    let jobs: Vec<Vec<Record>> = (0..batch)
                        .map(|_| {
                            n += 1;
                            let (payload, codec) = match stored {
                                Stored::Json => (json.as_bytes().to_vec(), PayloadCodec::Json),
                                Stored::GzipEnvelope => (
                                    bodies.body(1, n, "2024-01-01T00:00:00.000000Z"),
                                    PayloadCodec::GzipEnvelope,
                                ),
                            };
                            vec![record(project_id, payload, codec, n)]
                        })
                        .collect();
                    let slices: Vec<&[Record]> = jobs.iter().map(Vec::as_slice).collect();
                    let started = Instant::now();
                    sink.write_batch(&slices).expect("batch commits");
                    spent += started.elapsed();
                }
                spent
            })
        });
    }
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(4))
        .sample_size(30)
}

criterion_group! {
    name = benches;
    config = config();
    targets = write_batch
}
criterion_main!(benches);
