//! Criterion micro-benchmarks of the pure steps of ingestion, on the same payloads the load
//! benchmark sends (`cargo bench --bench micro`): auth header parse, gzip decompression, envelope
//! framing, event field extraction and fingerprinting. Each runs for about 2 s, so the whole file
//! takes well under a minute.

#[path = "common/payloads.rs"]
mod payloads;

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use faultline::domain::{event, grouping};
use faultline::protocol::decode::{decode_body, decode_gzip_streaming, ContentEncoding};
use faultline::protocol::{auth, envelope};
use payloads::{BodyFactory, Kind};

const SENT_AT: &str = "2024-01-01T00:00:00.000000Z";
const ID: &str = "0123456789abcdef0123456789abcdef";

fn auth_header(c: &mut Criterion) {
    let header = "Sentry sentry_key=glet_0123456789abcdef0123456789abcdef, sentry_version=7, \
                  sentry_client=sentry.python.django/2.19.0";
    c.bench_function("auth/parse_auth_header", |b| {
        b.iter(|| auth::parse_auth_header(black_box(header)))
    });
}

fn decompression(c: &mut Criterion) {
    let mut g = c.benchmark_group("decode_body/gzip");
    for kind in Kind::ALL {
        // A body compressed whole at level 9, exactly as the Python SDK's gzip writes it.
        let envelope = payloads::gunzip(&BodyFactory::new(kind).body(1, 0, SENT_AT));
        let body = payloads::gzip_whole(&envelope);
        g.throughput(Throughput::Bytes(envelope.len() as u64));
        g.bench_with_input(
            BenchmarkId::from_parameter(kind.name()),
            &body,
            |b, body| {
                b.iter(|| {
                    decode_body(ContentEncoding::Gzip, black_box(body), 1 << 30).map(|d| d.len())
                })
            },
        );
        // The streaming path alone, which `decode_body` falls back to: the one-shot path's
        // gain in the same run.
        g.bench_with_input(
            BenchmarkId::new("streaming", kind.name()),
            &body,
            |b, body| b.iter(|| decode_gzip_streaming(black_box(body), 1 << 30).map(|d| d.len())),
        );
    }
    g.finish();
}

fn envelope_parse(c: &mut Criterion) {
    let mut g = c.benchmark_group("envelope/parse");
    let limits = envelope::Limits::default();
    for kind in Kind::ALL {
        let envelope = payloads::gunzip(&BodyFactory::new(kind).body(1, 0, SENT_AT));
        g.throughput(Throughput::Bytes(envelope.len() as u64));
        g.bench_with_input(
            BenchmarkId::from_parameter(kind.name()),
            &envelope,
            |b, body| b.iter(|| envelope::parse(black_box(body), &limits).map(|e| e.items.len())),
        );
    }
    g.finish();
}

fn extraction(c: &mut Criterion) {
    let mut g = c.benchmark_group("event/extract");
    for kind in Kind::ALL {
        let json = payloads::event_json(kind, 3, ID);
        g.throughput(Throughput::Bytes(json.len() as u64));
        g.bench_with_input(
            BenchmarkId::from_parameter(kind.name()),
            json.as_bytes(),
            |b, json| b.iter(|| event::extract(black_box(json)).map(|s| s.exceptions.len())),
        );
    }
    g.finish();
    // A yardstick for the extraction figures: building a full `serde_json::Value` tree of the
    // same document, which is what extraction exists to avoid.
    let mut g = c.benchmark_group("reference/serde_json_value");
    for kind in Kind::ALL {
        let json = payloads::event_json(kind, 3, ID);
        g.throughput(Throughput::Bytes(json.len() as u64));
        g.bench_with_input(
            BenchmarkId::from_parameter(kind.name()),
            json.as_bytes(),
            |b, json| {
                b.iter(|| {
                    serde_json::from_slice::<serde_json::Value>(black_box(json))
                        .map(|v| v.is_object())
                })
            },
        );
    }
    g.finish();
}

fn fingerprinting(c: &mut Criterion) {
    let mut g = c.benchmark_group("grouping/group");
    for kind in Kind::ALL {
        let json = payloads::event_json(kind, 3, ID);
        let summary = event::extract(json.as_bytes()).expect("bench events are valid");
        g.bench_with_input(
            BenchmarkId::from_parameter(kind.name()),
            &summary,
            |b, summary| b.iter(|| grouping::group(black_box(summary)).fingerprint),
        );
    }
    g.finish();
}

/// Storing an uncompressed event compactly: LZ4, the stored form, beside the fastest levels of
/// zstd and deflate that were weighed against it; the CPU each costs per event, and (printed
/// once) the size it leaves.
fn payload_compaction(c: &mut Criterion) {
    let mut g = c.benchmark_group("payload/compact");
    for kind in Kind::ALL {
        let json = payloads::event_json(kind, 3, ID);
        let json = json.as_bytes();
        g.throughput(Throughput::Bytes(json.len() as u64));
        let size = faultline::store::payload::compact_json(json).0.len();
        println!("lz4 (stored form): {} -> {size}", json.len());
        g.bench_with_input(BenchmarkId::new("lz4", kind.name()), json, |b, json| {
            b.iter(|| {
                faultline::store::payload::compact_json(black_box(json))
                    .0
                    .len()
            })
        });
        for level in [-1, 1] {
            let mut z = zstd::bulk::Compressor::new(level).expect("zstd context");
            let size = z.compress(json).expect("zstd").len();
            println!("zstd {level}: {} -> {size}", json.len());
            g.bench_with_input(
                BenchmarkId::new(format!("zstd{level}"), kind.name()),
                json,
                |b, json| b.iter(|| z.compress(black_box(json)).map(|v| v.len())),
            );
        }
        let mut d = libdeflater::Compressor::new(
            libdeflater::CompressionLvl::new(1).expect("a valid level"),
        );
        let mut out = vec![0u8; d.gzip_compress_bound(json.len())];
        let size = d.gzip_compress(json, &mut out).expect("deflate");
        println!("libdeflate 1: {} -> {size}", json.len());
        g.bench_with_input(
            BenchmarkId::new("libdeflate1", kind.name()),
            json,
            |b, json| {
                b.iter(|| {
                    let mut out = vec![0u8; d.gzip_compress_bound(json.len())];
                    d.gzip_compress(black_box(json), &mut out)
                })
            },
        );
    }
    g.finish();
}

fn config() -> Criterion {
    // Short windows: these steps take micro- to milliseconds, so 2 s gives thousands of samples.
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(50)
}

criterion_group! {
    name = benches;
    config = config();
    targets = auth_header, decompression, envelope_parse, extraction, fingerprinting, payload_compaction
}
criterion_main!(benches);
