//! Benchmark payloads: realistic Sentry events as the Python SDK writes them (a ~4 KB exception
//! event with 20 frames, a small log message, a ~200 KB event with local variables), in several
//! distinct error groups, and the gzip envelope bodies sent on the wire.
//!
//! The load generator needs a different event id on every request without paying for gzip in
//! its hot loop, because it shares the machine's two cores with the server it measures. So each
//! body is assembled from a precompressed part and a small part that changes: the gzip stream is
//! one *stored* (uncompressed) deflate block holding the envelope header, the item header and the
//! first bytes of the event JSON, all of which carry the id, followed by the raw deflate stream of
//! the rest of the event, compressed once at start-up at level 9 (the Python SDK's gzip level).
//! The CRC-32 of the whole is the per-request CRC of the short prefix combined with the CRC of the
//! precompressed tail, which costs a few hundred nanoseconds. Any gzip decoder sees an ordinary
//! single-member stream that decompresses to the exact envelope the SDK would have sent.

// Shared by two bench targets; each one uses only part of this module.
#![allow(dead_code)]

use std::fmt::Write as _;
use std::io::Write as _;

use flate2::write::DeflateEncoder;
use flate2::{Compression, Crc};

/// The three payload shapes the issue asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// About 4 KB of JSON: an exception with 20 frames, tags, user, contexts, breadcrumbs.
    Error4k,
    /// A logging-integration message event of a few hundred bytes.
    Message,
    /// About 200 KB: 20 frames with source context and local variables, many breadcrumbs.
    Large200k,
    /// The 4 KB event in an uncompressed envelope, as browser SDKs send it (no
    /// `Content-Encoding`). Not in [`Kind::ALL`]: named in `FAULTLINE_BENCH_PAYLOADS` to run it.
    Error4kPlain,
}

impl Kind {
    pub const ALL: [Kind; 3] = [Kind::Error4k, Kind::Message, Kind::Large200k];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Error4k => "error-4k",
            Kind::Error4kPlain => "error-4k-plain",
            Kind::Message => "message",
            Kind::Large200k => "large-200k",
        }
    }

    pub fn from_name(s: &str) -> Option<Kind> {
        Kind::ALL
            .into_iter()
            .chain([Kind::Error4kPlain])
            .find(|k| k.name() == s)
    }

    /// How many distinct groups (exception sites or message templates) the payload cycles through.
    pub fn groups(self) -> usize {
        match self {
            Kind::Error4k | Kind::Error4kPlain | Kind::Message => 50,
            // Each variant is compressed once at start-up; ten keep that under a second.
            Kind::Large200k => 10,
        }
    }
}

/// A small deterministic PRNG (xorshift64*), so payloads are identical from run to run.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    pub fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }
}

const EXCEPTIONS: [&str; 10] = [
    "KeyError",
    "ValueError",
    "TypeError",
    "AttributeError",
    "ZeroDivisionError",
    "IntegrityError",
    "TimeoutError",
    "PermissionError",
    "IndexError",
    "RuntimeError",
];

const AREAS: [&str; 10] = [
    "orders", "billing", "accounts", "catalog", "search", "cart", "shipping", "reviews", "auth",
    "reports",
];

const VERBS: [&str; 5] = ["create", "update", "load", "validate", "sync"];

const WORDS: [&str; 24] = [
    "customer",
    "order",
    "invoice",
    "payment",
    "session",
    "token",
    "address",
    "product",
    "price",
    "quantity",
    "status",
    "pending",
    "shipped",
    "refund",
    "discount",
    "tax",
    "currency",
    "EUR",
    "warehouse",
    "sku",
    "cart",
    "coupon",
    "user",
    "account",
];

/// Library frames at the bottom of every Django request stack (caller first, as Sentry orders).
const LIB_FRAMES: [(&str, &str, &str, u32); 12] = [
    (
        "django/core/handlers/wsgi.py",
        "django.core.handlers.wsgi",
        "__call__",
        124,
    ),
    (
        "django/core/handlers/base.py",
        "django.core.handlers.base",
        "get_response",
        140,
    ),
    (
        "django/core/handlers/exception.py",
        "django.core.handlers.exception",
        "inner",
        55,
    ),
    (
        "django/utils/deprecation.py",
        "django.utils.deprecation",
        "__call__",
        133,
    ),
    (
        "django/core/handlers/exception.py",
        "django.core.handlers.exception",
        "inner",
        55,
    ),
    (
        "django/core/handlers/base.py",
        "django.core.handlers.base",
        "_get_response",
        197,
    ),
    (
        "django/views/decorators/csrf.py",
        "django.views.decorators.csrf",
        "_view_wrapper",
        65,
    ),
    (
        "django/views/generic/base.py",
        "django.views.generic.base",
        "view",
        104,
    ),
    (
        "rest_framework/views.py",
        "rest_framework.views",
        "dispatch",
        509,
    ),
    (
        "rest_framework/views.py",
        "rest_framework.views",
        "handle_exception",
        469,
    ),
    (
        "rest_framework/views.py",
        "rest_framework.views",
        "raise_uncaught_exception",
        480,
    ),
    (
        "rest_framework/views.py",
        "rest_framework.views",
        "dispatch",
        506,
    ),
];

/// JSON-escapes `s` into `out` (the generated strings only need quotes and backslashes escaped).
fn json_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
}

fn sentence(rng: &mut Rng, words: usize) -> String {
    let mut s = String::new();
    for i in 0..words {
        if i > 0 {
            s.push(' ');
        }
        s.push_str(rng.pick(&WORDS));
        if rng.below(4) == 0 {
            let _ = write!(s, "_{}", rng.below(10_000));
        }
    }
    s
}

/// RFC 3339 UTC timestamp of `unix` seconds with microseconds, as the Python SDK writes it.
pub fn rfc3339(unix: f64) -> String {
    let secs = unix.floor() as i64;
    let micros = ((unix - secs as f64) * 1e6) as i64;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil-from-days (Howard Hinnant's algorithm), to avoid a date dependency in the bench.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{micros:06}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

pub fn now_unix() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_secs_f64()
}

/// The event JSON *after* its leading `{"event_id":"...",`: the part that is the same for every
/// request of one group. `group` selects the exception site or message template.
pub fn event_rest(kind: Kind, group: usize, timestamp: f64) -> String {
    match kind {
        Kind::Error4k | Kind::Error4kPlain => error_event(group, timestamp, false),
        Kind::Large200k => error_event(group, timestamp, true),
        Kind::Message => message_event(group, timestamp),
    }
}

/// A whole event document with the given id, as `event::extract` and grouping see it.
pub fn event_json(kind: Kind, group: usize, event_id: &str) -> String {
    format!(
        "{{\"event_id\":\"{event_id}\",{}",
        event_rest(kind, group, 1_712_345_678.25)
    )
}

fn error_event(group: usize, timestamp: f64, large: bool) -> String {
    let mut rng = Rng::new(group as u64 + if large { 1000 } else { 0 });
    let exc = EXCEPTIONS[group % EXCEPTIONS.len()];
    let area = AREAS[group / EXCEPTIONS.len() % AREAS.len()];
    let verb = VERBS[group % VERBS.len()];
    let mut o = String::with_capacity(if large { 220_000 } else { 5000 });
    o.push_str("\"level\":\"error\",\"platform\":\"python\",\"timestamp\":");
    json_str(&mut o, &rfc3339(timestamp));
    o.push_str(",\"exception\":{\"values\":[{\"type\":");
    json_str(&mut o, exc);
    o.push_str(",\"value\":");
    json_str(
        &mut o,
        &format!(
            "'{area}_id' missing for {verb} of record {}",
            rng.below(100_000)
        ),
    );
    o.push_str(",\"module\":null,\"mechanism\":{\"type\":\"django\",\"handled\":false},");
    o.push_str("\"stacktrace\":{\"frames\":[");
    // 12 library frames then 8 in-app frames whose names depend on the group, so each group has
    // its own in-app stack and therefore its own fingerprint.
    let mut frames: Vec<(String, String, String, u32, bool)> = LIB_FRAMES
        .iter()
        .map(|(f, m, func, l)| (f.to_string(), m.to_string(), func.to_string(), *l, false))
        .collect();
    for depth in 0..8 {
        let module = format!(
            "shop.{area}.{}",
            ["views", "services", "models", "tasks"][depth % 4]
        );
        frames.push((
            format!("{}.py", module.replace('.', "/")),
            module,
            format!("{verb}_{area}_{depth}_{group}"),
            20 + (group as u32 * 7 + depth as u32 * 13) % 400,
            true,
        ));
    }
    for (i, (filename, module, function, lineno, in_app)) in frames.iter().enumerate() {
        if i > 0 {
            o.push(',');
        }
        o.push_str("{\"filename\":");
        json_str(&mut o, filename);
        if large {
            // The ~4 KB event leaves out absolute paths and source lines (the SDK with
            // include_source_context off); that is what brings 20 frames down to about 4 KB.
            o.push_str(",\"abs_path\":");
            let prefix = if *in_app {
                "/app/"
            } else {
                "/usr/local/lib/python3.11/site-packages/"
            };
            json_str(&mut o, &format!("{prefix}{filename}"));
        }
        o.push_str(",\"function\":");
        json_str(&mut o, function);
        o.push_str(",\"module\":");
        json_str(&mut o, module);
        let _ = write!(o, ",\"lineno\":{lineno}");
        if large {
            // What the SDK sends with its default include_source_context and
            // include_local_variables: five lines either side and every local's repr.
            o.push_str(",\"pre_context\":[");
            for j in 0..5 {
                if j > 0 {
                    o.push(',');
                }
                json_str(&mut o, &format!("        {}", sentence(&mut rng, 8)));
            }
            o.push_str("],\"post_context\":[");
            for j in 0..5 {
                if j > 0 {
                    o.push(',');
                }
                json_str(&mut o, &format!("        {}", sentence(&mut rng, 8)));
            }
            o.push_str("],\"vars\":{");
            for j in 0..24 {
                if j > 0 {
                    o.push(',');
                }
                json_str(&mut o, &format!("{}_{j}", rng.pick(&WORDS)));
                o.push(':');
                json_str(
                    &mut o,
                    &format!("<{} {}>", rng.pick(&WORDS), sentence(&mut rng, 40)),
                );
            }
            o.push('}');
        }
        if large {
            o.push_str(",\"context_line\":");
            json_str(
                &mut o,
                &format!(
                    "    {} = {}",
                    rng.pick(&WORDS),
                    if *in_app {
                        "self.get_object()"
                    } else {
                        "handler(request)"
                    }
                ),
            );
        }
        let _ = write!(o, ",\"in_app\":{in_app}}}");
    }
    o.push_str("]}}]},\"breadcrumbs\":{\"values\":[");
    let crumbs = if large { 100 } else { 3 };
    for i in 0..crumbs {
        if i > 0 {
            o.push(',');
        }
        o.push_str("{\"type\":\"default\",\"category\":\"query\",\"level\":\"info\",\"message\":");
        json_str(
            &mut o,
            &format!(
                "SELECT \"{area}\".\"id\", \"{area}\".\"{}\" FROM \"{area}\" WHERE \"{area}\".\"id\" = %s LIMIT 21",
                rng.pick(&WORDS)
            ),
        );
        o.push_str(",\"timestamp\":");
        json_str(&mut o, &rfc3339(timestamp - 1.0 + i as f64 / 1000.0));
        o.push('}');
    }
    o.push_str("]},\"transaction\":");
    json_str(&mut o, &format!("/api/{area}/{{id}}/{verb}"));
    o.push_str(",\"transaction_info\":{\"source\":\"route\"},\"tags\":{\"url\":");
    json_str(
        &mut o,
        &format!("/api/{area}/{}/{verb}", rng.below(100_000)),
    );
    o.push_str(
        ",\"browser\":\"Firefox 124.0\",\"customer_tier\":\"gold\",\"region\":\"eu-west-1\"},",
    );
    let _ = write!(
        o,
        "\"user\":{{\"id\":\"{}\",\"email\":\"user{}@example.com\",\"ip_address\":\"10.1.{}.{}\"}},",
        rng.below(1_000_000),
        rng.below(1_000_000),
        rng.below(256),
        rng.below(256)
    );
    o.push_str(concat!(
        "\"contexts\":{\"trace\":{\"trace_id\":\"4c79f60c11214eb38604f4ae0781bfb2\",",
        "\"span_id\":\"a2f9c3b1d4e5f607\",\"op\":\"http.server\",\"status\":\"internal_error\"},",
        "\"runtime\":{\"name\":\"CPython\",\"version\":\"3.11.9\",",
        "\"build\":\"3.11.9 (main, Apr  2 2024, 08:25:04) [GCC 12.2.0]\"},",
        "\"os\":{\"name\":\"Linux\",\"version\":\"6.1.0-18-amd64\"}},",
        "\"request\":{\"method\":\"POST\",\"url\":\"https://shop.example.com/api/orders/42/update\",",
        "\"query_string\":\"\",\"headers\":{\"Host\":\"shop.example.com\",",
        "\"User-Agent\":\"Mozilla/5.0 (X11; Linux x86_64; rv:124.0) Gecko/20100101 Firefox/124.0\",",
        "\"Accept\":\"application/json\",\"Content-Type\":\"application/json\"}},",
        "\"modules\":{\"django\":\"5.0.4\",\"djangorestframework\":\"3.15.1\",\"psycopg\":\"3.1.18\",",
        "\"celery\":\"5.3.6\",\"redis\":\"5.0.3\",\"sentry-sdk\":\"2.19.0\"},",
        "\"extra\":{\"sys.argv\":[\"/usr/local/bin/gunicorn\",\"shop.wsgi\",\"--workers\",\"4\"]},",
        "\"server_name\":\"web-3\",\"environment\":\"production\",\"release\":\"shop@1.42.0\",",
        "\"sdk\":{\"name\":\"sentry.python.django\",\"version\":\"2.19.0\",",
        "\"packages\":[{\"name\":\"pypi:sentry-sdk\",\"version\":\"2.19.0\"}],",
        "\"integrations\":[\"django\",\"logging\",\"stdlib\",\"threading\"]}}"
    ));
    o
}

fn message_event(group: usize, timestamp: f64) -> String {
    let mut rng = Rng::new(group as u64 + 5000);
    let area = AREAS[group % AREAS.len()];
    let template = format!(
        "{} {} for %s after %s ms (attempt %s)",
        rng.pick(&WORDS),
        [
            "timed out",
            "was refused",
            "returned 502",
            "is slow",
            "retried"
        ][group / 10 % 5]
    );
    let params = [
        format!("{area}-{}", rng.below(100_000)),
        rng.below(5000).to_string(),
        rng.below(5).to_string(),
    ];
    let mut formatted = template.clone();
    for p in &params {
        formatted = formatted.replacen("%s", p, 1);
    }
    let mut o = String::with_capacity(800);
    o.push_str("\"level\":\"warning\",\"platform\":\"python\",\"logger\":");
    json_str(&mut o, &format!("shop.{area}"));
    o.push_str(",\"timestamp\":");
    json_str(&mut o, &rfc3339(timestamp));
    o.push_str(",\"logentry\":{\"message\":");
    json_str(&mut o, &template);
    o.push_str(",\"formatted\":");
    json_str(&mut o, &formatted);
    o.push_str(",\"params\":[");
    for (i, p) in params.iter().enumerate() {
        if i > 0 {
            o.push(',');
        }
        json_str(&mut o, p);
    }
    o.push_str(concat!(
        "]},\"extra\":{\"thread_name\":\"MainThread\"},\"server_name\":\"worker-1\",",
        "\"environment\":\"production\",\"release\":\"shop@1.42.0\",",
        "\"sdk\":{\"name\":\"sentry.python\",\"version\":\"2.19.0\"}}"
    ));
    o
}

/// Writes `id` as 32 lowercase hex digits: a per-run nonce in the high half, a counter in the low.
pub fn event_id_hex(nonce: u64, counter: u64) -> [u8; 32] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; 32];
    for (i, byte) in nonce
        .to_be_bytes()
        .iter()
        .chain(counter.to_be_bytes().iter())
        .enumerate()
    {
        out[2 * i] = HEX[(byte >> 4) as usize];
        out[2 * i + 1] = HEX[(byte & 15) as usize];
    }
    out
}

/// One group's precompressed tail and the constant parts of its prefix.
struct Variant {
    /// `\n{"type":"event","length":N,...}\n{"event_id":"` after the envelope header's id.
    mid: Vec<u8>,
    /// Raw deflate stream of the event JSON after its id, plus the closing newline.
    tail_deflate: Vec<u8>,
    tail_crc: Crc,
    tail_len: usize,
    /// The tail itself, for [`Kind::Error4kPlain`]'s uncompressed bodies.
    tail: Vec<u8>,
}

/// Builds envelope bodies (gzip, or plain for [`Kind::Error4kPlain`]) with a fresh event id
/// per call.
pub struct BodyFactory {
    pub kind: Kind,
    variants: Vec<Variant>,
    /// Uncompressed envelope size (the same for every body of a variant; this is the largest).
    pub max_envelope_len: usize,
    /// Average compressed size over the variants.
    pub avg_gzip_len: usize,
    /// Average event JSON size over the variants.
    pub avg_event_len: usize,
}

const ENVELOPE_HEAD: &[u8] = b"{\"event_id\":\"";
const SENT_AT_KEY: &[u8] = b"\",\"sent_at\":\"";

impl BodyFactory {
    pub fn new(kind: Kind) -> BodyFactory {
        let ts = now_unix();
        let mut variants = Vec::new();
        let (mut max_env, mut gz_total, mut ev_total) = (0, 0, 0);
        for group in 0..kind.groups() {
            let rest = event_rest(kind, group, ts);
            // `{"event_id":"` + 32 hex + `",` + rest
            let event_len = 13 + 32 + 2 + rest.len();
            let mid = format!(
                "\",\"sdk\":{{\"name\":\"sentry.python.django\",\"version\":\"2.19.0\"}}}}\n\
                 {{\"type\":\"event\",\"length\":{event_len},\"content_type\":\"application/json\"}}\n\
                 {{\"event_id\":\""
            )
            .into_bytes();
            let mut tail = Vec::with_capacity(rest.len() + 3);
            tail.extend_from_slice(b"\",");
            tail.extend_from_slice(rest.as_bytes());
            tail.push(b'\n');
            let mut enc = DeflateEncoder::new(Vec::new(), Compression::new(9));
            enc.write_all(&tail).expect("writing to a Vec cannot fail");
            let tail_deflate = enc.finish().expect("writing to a Vec cannot fail");
            let mut tail_crc = Crc::new();
            tail_crc.update(&tail);
            let v = Variant {
                mid,
                tail_deflate,
                tail_crc,
                tail_len: tail.len(),
                tail: if kind == Kind::Error4kPlain {
                    tail
                } else {
                    Vec::new()
                },
            };
            let body = build(&v, &[b'0'; 32], "2024-01-01T00:00:00.000000Z");
            let env_len =
                ENVELOPE_HEAD.len() + 32 + SENT_AT_KEY.len() + 27 + v.mid.len() + 32 + v.tail_len;
            max_env = max_env.max(env_len);
            gz_total += body.len();
            ev_total += event_len;
            variants.push(v);
        }
        let n = variants.len();
        BodyFactory {
            kind,
            variants,
            max_envelope_len: max_env,
            avg_gzip_len: gz_total / n,
            avg_event_len: ev_total / n,
        }
    }

    /// The body for request number `counter` (which picks the group and the id): gzip, or the
    /// plain envelope for [`Kind::Error4kPlain`].
    pub fn body(&self, nonce: u64, counter: u64, sent_at: &str) -> Vec<u8> {
        let v = &self.variants[(counter % self.variants.len() as u64) as usize];
        let id = event_id_hex(nonce, counter);
        if self.is_gzip() {
            build(v, &id, sent_at)
        } else {
            let mut out = prefix(v, &id, sent_at);
            out.extend_from_slice(&v.tail);
            out
        }
    }

    /// Whether bodies are sent with `Content-Encoding: gzip`.
    pub fn is_gzip(&self) -> bool {
        self.kind != Kind::Error4kPlain
    }

    pub fn groups(&self) -> usize {
        self.variants.len()
    }
}

/// The part of an envelope that changes per request: envelope header line, item header line,
/// start of the event JSON.
fn prefix(v: &Variant, id: &[u8; 32], sent_at: &str) -> Vec<u8> {
    let mut prefix = Vec::with_capacity(160 + v.mid.len() + v.tail.len());
    prefix.extend_from_slice(ENVELOPE_HEAD);
    prefix.extend_from_slice(id);
    prefix.extend_from_slice(SENT_AT_KEY);
    prefix.extend_from_slice(sent_at.as_bytes());
    prefix.extend_from_slice(&v.mid);
    prefix.extend_from_slice(id);
    prefix
}

fn build(v: &Variant, id: &[u8; 32], sent_at: &str) -> Vec<u8> {
    // The stored block is the prefix.
    let prefix = prefix(v, id, sent_at);
    assert!(prefix.len() < 65_536, "a stored block holds at most 64 KiB");

    let mut crc = Crc::new();
    crc.update(&prefix);
    crc.combine(&v.tail_crc);
    let total_len = prefix.len() + v.tail_len;

    let mut out = Vec::with_capacity(10 + 5 + prefix.len() + v.tail_deflate.len() + 8);
    // gzip member header: magic, CM=deflate, no flags, mtime 0, XFL 0, OS unknown.
    out.extend_from_slice(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff]);
    // Stored block, not final: BFINAL=0, BTYPE=00, padded to the byte; LEN and its complement.
    let len = prefix.len() as u16;
    out.push(0);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&(!len).to_le_bytes());
    out.extend_from_slice(&prefix);
    // The tail's deflate stream starts on a byte boundary with its own final block.
    out.extend_from_slice(&v.tail_deflate);
    out.extend_from_slice(&crc.sum().to_le_bytes());
    out.extend_from_slice(&(total_len as u32).to_le_bytes());
    out
}

/// The uncompressed envelope a body decodes to (for self-checks and micro-benchmarks).
pub fn gunzip(body: &[u8]) -> Vec<u8> {
    use std::io::Read;
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(body)
        .read_to_end(&mut out)
        .expect("bench bodies are valid gzip");
    out
}

/// A gzip body compressed whole at level 9, as the Python SDK does (for micro-benchmarks).
pub fn gzip_whole(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), Compression::new(9));
    enc.write_all(data).expect("writing to a Vec cannot fail");
    enc.finish().expect("writing to a Vec cannot fail")
}
