//! Retention on SQLite: one pass deletes what is older than the retention period, in small
//! transactions on a connection of its own, pausing between them so that the ingestion writer is
//! never kept from the write lock for long. When passes run is [`crate::retention`]'s business.
//!
//! Age is measured by `received_at`, the gateway's own clock, not by `occurred_at`, the SDK's
//! timestamp: a client with a wrong clock (or a replay of old events) must neither get its events
//! deleted on arrival nor keep them forever, and `events_received(received_at, id)` makes finding
//! the oldest rows one index range. (GitLab deleted by the time the event occurred.)

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use rusqlite::{params, Connection, TransactionBehavior};

use super::{by_error, open_connection, SqliteStore};
use crate::store::{RetentionReport, StoreResult};

/// Rows deleted per transaction. Measured with `benches/read_api.rs` (1M events of ~700 bytes,
/// events arriving meanwhile): 1,000-row batches held the lock long enough to raise ingestion's
/// p99 to ~65 ms during a pass; 250-row batches kept it at 25-45 ms at the same deletion rate
/// (~13,000 events/s), since the pauses shrink with the batches.
pub const BATCH_ROWS: i64 = 250;

/// Errors whose hourly counts are pruned per transaction (a range of error ids).
const HOURLY_ERROR_SPAN: i64 = 1000;

/// Shortest pause between two batches. The writer waits on SQLite's busy handler, which retries
/// after growing sleeps (1, 2, 5, 10, ... ms); a pause at least as long as the batch that made it
/// wait lets its next retry find the lock free instead of losing the race again.
const MIN_PAUSE: Duration = Duration::from_millis(10);

/// Deletes everything received before `now_millis - days`. `now_millis` is a parameter so tests
/// control the clock; `days == 0` means keep forever and deletes nothing.
///
/// An error's `event_count` is not lowered when its old events go: it counts every event the
/// error ever had (Sentry's "times seen"), and keeping it monotonic is what lets the
/// frequency-ordered list page without repeating an error (see `store::read`).
pub async fn retention_pass(
    store: &SqliteStore,
    now_millis: i64,
    days: u32,
) -> StoreResult<RetentionReport> {
    let mut report = RetentionReport::default();
    if days == 0 {
        return Ok(report);
    }
    let cutoff = now_millis.saturating_sub(i64::from(days) * 86_400_000);
    let opts = store.options().clone();
    let mut conn = tokio::task::spawn_blocking(move || -> StoreResult<Connection> {
        let conn = open_connection(&opts)?;
        // Deleting an error with foreign keys on would scan `events` for its children, which
        // no index leads with `error_id` (see `by_error`); the rows it owns are deleted by
        // hand instead, and nothing else deleted here has children.
        conn.pragma_update(None, "foreign_keys", "OFF")?;
        Ok(conn)
    })
    .await??;

    for step in [Step::Events, Step::Attachments, Step::UserReports] {
        loop {
            let (c, n, took) = batch(conn, move |c| step.delete_batch(c, cutoff)).await?;
            conn = c;
            match step {
                Step::Events => {
                    report.events += n.0;
                    report.errors += n.1;
                }
                Step::Attachments => report.attachments += n.0,
                Step::UserReports => report.user_reports += n.0,
            }
            if (n.0 as i64) < BATCH_ROWS {
                break;
            }
            pause(took).await;
        }
    }

    // Hourly counts are keyed by (error_id, hour), so old hours are spread over the whole table;
    // walking it in ranges of error ids keeps each transaction small and the pass linear.
    let cutoff_hour = cutoff.div_euclid(1000).div_euclid(3600) * 3600;
    let (c, max_id, _) = batch(conn, |c| {
        Ok(
            c.query_row("SELECT COALESCE(MAX(id), 0) FROM errors", [], |r| {
                r.get::<_, i64>(0)
            })?,
        )
    })
    .await?;
    conn = c;
    let mut from = 0;
    while from <= max_id {
        let (c, n, took) = batch(conn, move |c| {
            Ok(c.execute(
                "DELETE FROM error_hourly WHERE error_id >= ?1 AND error_id < ?2 AND hour < ?3",
                params![from, from + HOURLY_ERROR_SPAN, cutoff_hour],
            )? as u64)
        })
        .await?;
        conn = c;
        report.hourly_rows += n;
        from += HOURLY_ERROR_SPAN;
        pause(took).await;
    }
    Ok(report)
}

#[derive(Debug, Clone, Copy)]
enum Step {
    Events,
    Attachments,
    UserReports,
}

impl Step {
    /// Deletes up to [`BATCH_ROWS`] rows in one immediate transaction; returns the rows deleted
    /// and, for events, the errors that were left without events and deleted too.
    fn delete_batch(self, conn: &mut Connection, cutoff: i64) -> StoreResult<(u64, u64)> {
        // IMMEDIATE takes the write lock up front, so the transaction never has to upgrade a
        // read snapshot that the writer has meanwhile made stale.
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let out = match self {
            Step::Events => {
                let mut touched = BTreeSet::new();
                let mut deleted = 0u64;
                {
                    let mut st = tx.prepare_cached(
                        "DELETE FROM events WHERE id IN (
                             SELECT id FROM events WHERE received_at < ?1
                             ORDER BY received_at, id LIMIT ?2)
                         RETURNING error_id",
                    )?;
                    let mut rows = st.query(params![cutoff, BATCH_ROWS])?;
                    while let Some(r) = rows.next()? {
                        touched.insert(r.get::<_, i64>(0)?);
                        deleted += 1;
                    }
                }
                // Runs in the same transaction as the deletion, and the writer inserts an event
                // in the same transaction as its error's upsert, so an error that has just
                // received a new event is never deleted here. Its hourly, user and tag rows go
                // with it (`by_error::delete_error`: this connection's foreign keys are off).
                let mut errors = 0;
                for &id in &touched {
                    if !by_error::has_events(&tx, id)? && by_error::delete_error(&tx, id)? {
                        errors += 1;
                    }
                }
                (deleted, errors)
            }
            Step::Attachments => (
                // No index on received_at: rows are scanned in id order, where the oldest come
                // first, so a batch stops early; a pass with nothing to delete scans the table
                // once.
                tx.execute(
                    "DELETE FROM attachments WHERE id IN (
                         SELECT id FROM attachments WHERE received_at < ?1 ORDER BY id LIMIT ?2)",
                    params![cutoff, BATCH_ROWS],
                )? as u64,
                0,
            ),
            Step::UserReports => (
                tx.execute(
                    "DELETE FROM user_reports WHERE id IN (
                         SELECT id FROM user_reports WHERE received_at < ?1 ORDER BY id LIMIT ?2)",
                    params![cutoff, BATCH_ROWS],
                )? as u64,
                0,
            ),
        };
        tx.commit()?;
        Ok(out)
    }
}

/// Runs `f` on a blocking thread with the pass's own connection and hands the connection back,
/// with how long the transaction took.
pub(super) async fn batch<T: Send + 'static>(
    mut conn: Connection,
    f: impl FnOnce(&mut Connection) -> StoreResult<T> + Send + 'static,
) -> StoreResult<(Connection, T, Duration)> {
    tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        let out = f(&mut conn)?;
        Ok((conn, out, started.elapsed()))
    })
    .await?
}

/// Gives the writer the lock for at least as long as the last batch held it.
pub(super) async fn pause(took: Duration) {
    tokio::time::sleep(took.max(MIN_PAUSE)).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::ingest::{test_event, EventRecord, EventSink, Record};
    use crate::store::sqlite::test_support::{assert_no_orphans, count, store_with_project};
    use crate::store::sqlite::SqliteSink;

    fn event(n: u64, fingerprint: i64, occurred_at: i64) -> Record {
        Record::Event(EventRecord {
            user_identity: Some(format!("id:{n}")),
            ..test_event(n, fingerprint, occurred_at)
        })
    }

    #[tokio::test]
    async fn deletes_in_batches_and_keeps_what_is_recent() {
        let (_dir, store) = store_with_project();
        let day = 86_400_000;
        let now = 1_000 * day;
        // 2,500 old events over errors 1 (old only) and 2 (old and new), more than two batches,
        // then 10 recent events of error 2 and 1 of error 3.
        let mut sink = SqliteSink::open(store.options(), Default::default()).expect("sink");
        let old: Vec<Record> = (0..2500)
            .map(|n| event(n, 1 + (n % 2) as i64, now - 40 * day + n as i64))
            .collect();
        let new: Vec<Record> = (2500..2511)
            .map(|n| event(n, if n == 2510 { 3 } else { 2 }, now - day))
            .collect();
        sink.write_batch(&[&old, &new]).expect("write");
        sink.flush_counts().expect("counts written");
        // The sink stamps `received_at` with the wall clock; age the first 2,500 as if they
        // had arrived 40 days before `now`, the others a day before.
        store
            .run_blocking(move |c| {
                c.execute(
                    "UPDATE events SET received_at = occurred_at WHERE id <= 2500",
                    [],
                )?;
                c.execute(
                    "UPDATE events SET received_at = ?1 WHERE id > 2500",
                    [now - day],
                )?;
                Ok(())
            })
            .expect("age");
        assert!(count(&store, "SELECT COUNT(*) FROM error_hourly") > 2);

        let report = retention_pass(&store, now, 30).await.expect("pass");
        assert_eq!(report.events, 2500);
        assert_eq!(report.errors, 1, "error 1 had only old events");
        // Error 1's rows went with it (deleted by hand: this connection's foreign keys are off),
        // and the deleted events' entries with them.
        assert_no_orphans(&store);
        assert_eq!(count(&store, "SELECT COUNT(*) FROM event_by_error"), 11);
        assert_eq!(count(&store, "SELECT COUNT(*) FROM events"), 11);
        assert_eq!(count(&store, "SELECT COUNT(*) FROM errors"), 2);
        assert_eq!(
            count(
                &store,
                "SELECT COUNT(*) FROM errors WHERE fingerprint IN (2, 3)"
            ),
            2
        );
        // Error 2's hours from 40 days ago are gone; the recent hour stays.
        let cutoff_hour = (now - 30 * day) / 1000;
        assert_eq!(
            count(
                &store,
                &format!("SELECT COUNT(*) FROM error_hourly WHERE hour < {cutoff_hour}")
            ),
            0
        );
        assert_eq!(count(&store, "SELECT COUNT(*) FROM error_hourly"), 2);
        assert!(report.hourly_rows > 0);
        // Error 1's users went with it.
        assert_eq!(
            count(&store, "SELECT COUNT(*) FROM error_users u LEFT JOIN errors e ON e.id = u.error_id WHERE e.id IS NULL"),
            0
        );

        let again = retention_pass(&store, now, 30).await.expect("pass");
        assert_eq!(again, RetentionReport::default(), "nothing left to delete");
    }

    /// A retention batch holding the write lock must make the ingestion writer wait, not fail:
    /// the writer's batch reads before it writes, and a deferred transaction in that position
    /// would get SQLITE_BUSY at once instead of waiting.
    #[test]
    fn a_writer_batch_waits_for_a_retention_batch() {
        let (_dir, store) = store_with_project();
        let mut sink = SqliteSink::open(store.options(), Default::default()).expect("sink");
        sink.write_batch(&[&[event(1, 1, 0)]]).expect("first event");

        let opts = store.options().clone();
        let (locked, wait_locked) = std::sync::mpsc::channel();
        let holder = std::thread::spawn(move || {
            let mut conn = open_connection(&opts).expect("connection");
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .expect("lock");
            tx.execute("DELETE FROM events WHERE id = -1", [])
                .expect("write");
            locked.send(()).expect("signal");
            std::thread::sleep(Duration::from_millis(300));
            tx.commit().expect("commit");
        });
        wait_locked.recv().expect("holder has the lock");
        let started = Instant::now();
        let out = sink.write_batch(&[&[event(2, 1, 0)]]);
        holder.join().expect("holder");
        assert!(out.is_ok(), "the writer waited instead of failing: {out:?}");
        assert!(
            started.elapsed() >= Duration::from_millis(100),
            "it did wait"
        );
    }
}
