//! Direct SQLite access for the bench: seeding a stopped server's database with a million client
//! keys or millions of events (raw SQL, far faster than the API), and counting stored events for
//! the end-of-run correctness check.

use std::path::Path;
use std::time::Instant;

use anyhow::Context;
use rusqlite::{params, Connection};

use super::payloads::Rng;

fn open(db: &Path) -> anyhow::Result<Connection> {
    let conn = Connection::open(db).with_context(|| format!("opening {}", db.display()))?;
    conn.busy_timeout(std::time::Duration::from_secs(30))?;
    Ok(conn)
}

fn now_millis() -> i64 {
    (super::payloads::now_unix() * 1000.0) as i64
}

/// Rows in `events`.
pub fn count_events(db: &Path) -> anyhow::Result<u64> {
    let conn = open(db)?;
    let n: i64 = conn.query_row("SELECT count(*) FROM events", [], |r| r.get(0))?;
    Ok(n as u64)
}

/// Inserts `n` active keys (`glet_` + 32 random hex) for `project_id` in one transaction.
/// The server must be stopped: its key cache is loaded only at start-up.
pub fn insert_keys(db: &Path, project_id: i64, n: u64) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut conn = open(db)?;
    // The seed is not the server's data to protect: losing it on a crash only means reseeding.
    conn.pragma_update(None, "synchronous", "OFF")?;
    let tx = conn.transaction()?;
    {
        let mut stmt = tx.prepare(
            "INSERT INTO client_keys (project_id, public_key, active, created_at) VALUES (?1, ?2, 1, ?3)",
        )?;
        let mut rng = Rng::new(0x6b65_7973);
        let now = now_millis();
        for _ in 0..n {
            let key = format!("glet_{:016x}{:016x}", rng.next(), rng.next());
            stmt.execute(params![project_id, key, now])?;
        }
    }
    tx.commit()?;
    eprintln!(
        "  inserted {n} client keys in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Inserts `n` events for `project_id` spread over 1000 synthetic errors and the last 30 days,
/// each carrying `payload` stored as `payload_codec` (a real body, so rows are the size real rows
/// are), with random event ids (so the unique index grows the way real ingestion grows it).
/// Chunks of 250 000 rows per transaction keep the WAL bounded.
pub fn preload_events(
    db: &Path,
    project_id: i64,
    n: u64,
    payload: &[u8],
    payload_codec: i64,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut conn = open(db)?;
    conn.pragma_update(None, "synchronous", "OFF")?;
    conn.pragma_update(None, "cache_size", -1_048_576i64)?; // 1 GiB, for the index inserts
    let now = now_millis();
    let errors = 1000i64;
    let first_error: i64 = {
        let tx = conn.transaction()?;
        {
            let mut stmt = tx.prepare(
                "INSERT INTO errors (project_id, fingerprint, name, description, actor, platform,
                                     status, event_count, first_seen_at, last_seen_at)
                 VALUES (?1, ?2, 'KeyError', 'preloaded', 'shop.preload in run', 'python', 0, ?3, ?4, ?5)",
            )?;
            let mut rng = Rng::new(0x6576_656e);
            for _ in 0..errors {
                let fp = (rng.next() >> 1) as i64;
                stmt.execute(params![
                    project_id,
                    fp,
                    n as i64 / errors,
                    now - 30 * 86_400_000,
                    now
                ])?;
            }
        }
        let first = tx.query_row(
            "SELECT min(id) FROM errors WHERE description = 'preloaded' AND project_id = ?1",
            [project_id],
            |r| r.get(0),
        )?;
        tx.commit()?;
        first
    };
    const CHUNK: u64 = 250_000;
    let span_ms = 30 * 86_400_000i64;
    let mut done = 0u64;
    while done < n {
        let upto = (done + CHUNK).min(n);
        let tx = conn.transaction()?;
        tx.execute(
            "WITH RECURSIVE c(x) AS (SELECT ?1 UNION ALL SELECT x + 1 FROM c WHERE x < ?2)
             INSERT INTO events (project_id, error_id, event_id, occurred_at, received_at, level,
                                 environment, release, platform, user_identity, message,
                                 is_message, name, description, actor, payload, payload_codec)
             SELECT ?3, ?4 + (x % ?5), lower(hex(randomblob(16))),
                    ?6 - ?7 + (x * ?7 / ?8), ?6 - ?7 + (x * ?7 / ?8),
                    'error', 'production', 'shop@1.42.0', 'python', 'id:' || (x % 100000),
                    NULL, 0, 'KeyError', 'preloaded', 'shop.preload in run', ?9, ?10
             FROM c",
            params![
                done as i64,
                upto as i64 - 1,
                project_id,
                first_error,
                errors,
                now,
                span_ms,
                n as i64,
                payload,
                payload_codec
            ],
        )?;
        tx.commit()?;
        done = upto;
        eprintln!(
            "  preloaded {done}/{n} events ({:.0} s)",
            started.elapsed().as_secs_f64()
        );
    }
    // The preloaded errors carry their counts already: mark every event counted, or the gateway
    // would count them again at start (see `store::counts`). Events at or below the mark have
    // their entry in the per-error order (`store::sqlite::by_error`).
    conn.execute(
        "INSERT OR IGNORE INTO event_by_error (error_id, occurred_at, id)
         SELECT error_id, occurred_at, id FROM events
         WHERE id > (SELECT counted_through FROM ingest_state WHERE id = 1)
         ORDER BY error_id, occurred_at, id",
        [],
    )?;
    conn.execute(
        "UPDATE ingest_state SET counted_through = (SELECT COALESCE(MAX(id), 0) FROM events)",
        [],
    )?;
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
    Ok(())
}
