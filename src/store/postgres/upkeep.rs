//! Retention and purge on PostgreSQL, each run by one node at a time, on a connection of its
//! own (so the session advisory lock that says "this node is at it" goes with the connection,
//! whatever happens).
//!
//! Retention drops the `events` partitions that lie wholly before the cutoff (counting their
//! rows first, for the report), then deletes the older rows of the partition the cutoff falls
//! in, and the other old rows (event ids, attachments, user reports, hourly counts), in small
//! transactions as on SQLite. Errors left without events go in the same small steps; each is
//! locked first and checked for events in a later statement, whose snapshot sees any event a
//! batch committed meanwhile (a batch keeps its errors with `FOR KEY SHARE` until its commit).
//!
//! Transactions that reach `events` through `errors` or `projects` lock those tables first,
//! in the order the writer's batches do (see `store::postgres::ingest`).

use std::collections::BTreeSet;

use tokio_postgres::error::SqlState;
use tokio_postgres::Client;

use super::schema::DAY_MS;
use super::{locks, PgStore};
use crate::store::{PurgeReport, RetentionReport, StoreResult};

/// Rows deleted per transaction. Row locks do not keep the writer waiting as SQLite's write
/// lock does, so batches can be larger than SQLite's; they stay small enough to keep each
/// transaction short.
pub const BATCH_ROWS: i64 = 1000;

/// Errors whose hourly counts are pruned per transaction (a range of error ids).
const HOURLY_ERROR_SPAN: i64 = 1000;

/// How long dropping a partition waits for its lock before giving up for this pass: the drop
/// needs `events` to itself, and while it waits every insert waits behind it.
const DROP_LOCK_TIMEOUT: &str = "2s";

/// One retention pass (see [`crate::store::Store::retention_pass`]).
///
/// As on SQLite, age is the gateway's receive time, and an error's `event_count` is not
/// lowered when its old events go.
pub async fn retention_pass(
    store: &PgStore,
    now_millis: i64,
    days: u32,
) -> StoreResult<RetentionReport> {
    let mut report = RetentionReport::default();
    if days == 0 {
        return Ok(report);
    }
    let cutoff = now_millis.saturating_sub(i64::from(days) * DAY_MS);
    let mut client = store.connect().await?;
    let locked: bool = client
        .query_one("SELECT pg_try_advisory_lock($1)", &[&locks::RETENTION])
        .await?
        .get(0);
    if !locked {
        // Another node is running a pass.
        return Ok(report);
    }
    let result = retention_steps(&mut client, cutoff, &mut report).await;
    let unlocked = client
        .execute("SELECT pg_advisory_unlock($1)", &[&locks::RETENTION])
        .await;
    result?;
    unlocked?;
    Ok(report)
}

async fn retention_steps(
    client: &mut Client,
    cutoff: i64,
    report: &mut RetentionReport,
) -> StoreResult<()> {
    // Whole days before the cutoff.
    let partitions: Vec<String> = client
        .query(
            "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
             WHERE i.inhparent = 'events'::regclass",
            &[],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut old_days: Vec<i64> = partitions
        .iter()
        .filter_map(|name| name.strip_prefix("events_d")?.parse::<i64>().ok())
        .filter(|day| (day + 1).saturating_mul(DAY_MS) <= cutoff)
        .collect();
    old_days.sort_unstable();
    for day in old_days {
        let name = super::schema::partition_name(day);
        let rows = client
            .query(
                &format!("SELECT error_id, COUNT(*) FROM {name} GROUP BY error_id"),
                &[],
            )
            .await?;
        let events: i64 = rows.iter().map(|r| r.get::<_, i64>(1)).sum();
        let touched: Vec<i64> = rows.iter().map(|r| r.get(0)).collect();
        let tx = client.transaction().await?;
        let dropped = tx
            .batch_execute(&format!(
                "SET LOCAL lock_timeout = '{DROP_LOCK_TIMEOUT}'; DROP TABLE {name}"
            ))
            .await;
        match dropped {
            Ok(()) => tx.commit().await?,
            Err(e) if e.code() == Some(&SqlState::LOCK_NOT_AVAILABLE) => {
                tx.rollback().await?;
                tracing::info!(partition = %name, "events partition busy; dropped at a later pass");
                continue;
            }
            Err(e) => return Err(e.into()),
        }
        report.events += events as u64;
        for chunk in touched.chunks(BATCH_ROWS as usize) {
            let tx = client.transaction().await?;
            report.errors += drop_empty_errors(&tx, chunk).await?;
            tx.commit().await?;
        }
    }

    // The rest of the day the cutoff falls in, oldest ids first.
    let mut after = 0i64;
    loop {
        let tx = client.transaction().await?;
        tx.batch_execute("LOCK TABLE errors IN ROW EXCLUSIVE MODE")
            .await?;
        let rows = tx
            .query(
                "DELETE FROM events WHERE (id, received_at) IN (
                     SELECT id, received_at FROM events
                     WHERE received_at < $1 AND id > $2 ORDER BY id LIMIT $3)
                 RETURNING id, error_id",
                &[&cutoff, &after, &BATCH_ROWS],
            )
            .await?;
        let touched: BTreeSet<i64> = rows.iter().map(|r| r.get(1)).collect();
        after = rows
            .iter()
            .map(|r| r.get::<_, i64>(0))
            .max()
            .unwrap_or(after);
        let touched: Vec<i64> = touched.into_iter().collect();
        report.errors += drop_empty_errors(&tx, &touched).await?;
        tx.commit().await?;
        report.events += rows.len() as u64;
        if (rows.len() as i64) < BATCH_ROWS {
            break;
        }
    }

    // Rows that only other tables remember.
    delete_older(
        client,
        "DELETE FROM event_ids WHERE (project_id, event_id) IN (
             SELECT project_id, event_id FROM event_ids WHERE received_at < $1
             ORDER BY received_at LIMIT $2)",
        cutoff,
    )
    .await?;
    report.attachments += delete_older(
        client,
        "DELETE FROM attachments WHERE id IN (
             SELECT id FROM attachments WHERE received_at < $1 ORDER BY id LIMIT $2)",
        cutoff,
    )
    .await?;
    report.user_reports += delete_older(
        client,
        "DELETE FROM user_reports WHERE id IN (
             SELECT id FROM user_reports WHERE received_at < $1 ORDER BY id LIMIT $2)",
        cutoff,
    )
    .await?;

    // Hourly counts are keyed by (error_id, hour), so old hours are spread over the whole
    // table; walking it in ranges of error ids keeps each statement small.
    let cutoff_hour = cutoff.div_euclid(1000).div_euclid(3600) * 3600;
    let max_id: i64 = client
        .query_one("SELECT COALESCE(MAX(id), 0) FROM errors", &[])
        .await?
        .get(0);
    let mut from = 0;
    while from <= max_id {
        report.hourly_rows += client
            .execute(
                "DELETE FROM error_hourly WHERE error_id >= $1 AND error_id < $2 AND hour < $3",
                &[&from, &(from + HOURLY_ERROR_SPAN), &cutoff_hour],
            )
            .await?;
        from += HOURLY_ERROR_SPAN;
    }
    Ok(())
}

/// Deletes those of `ids` (ascending) that have no event left, in `tx`; returns how many.
/// Runs `delete` (parameters: the cutoff, then the batch size) until a batch deletes fewer than
/// [`BATCH_ROWS`] rows; returns the rows deleted in all.
async fn delete_older(client: &Client, delete: &str, cutoff: i64) -> StoreResult<u64> {
    let mut total = 0;
    loop {
        let n = client.execute(delete, &[&cutoff, &BATCH_ROWS]).await?;
        total += n;
        if (n as i64) < BATCH_ROWS {
            return Ok(total);
        }
    }
}

async fn drop_empty_errors(tx: &tokio_postgres::Transaction<'_>, ids: &[i64]) -> StoreResult<u64> {
    if ids.is_empty() {
        return Ok(0);
    }
    let ids = ids.to_vec();
    // Waits for the batches that hold these errors; the check below then runs on a snapshot
    // taken after their commits, so an error that has just received an event stays.
    tx.query(
        "SELECT id FROM errors WHERE id = ANY($1::bigint[]) ORDER BY id FOR UPDATE",
        &[&ids],
    )
    .await?;
    // Their hourly counts, users and tags cascade.
    Ok(tx
        .execute(
            "DELETE FROM errors e WHERE e.id = ANY($1::bigint[])
             AND NOT EXISTS (SELECT 1 FROM events v WHERE v.error_id = e.id)",
            &[&ids],
        )
        .await?)
}

/// Where each removed row is counted in a [`PurgeReport`] (`None`: not reported).
type Tally = Option<fn(&mut PurgeReport) -> &mut u64>;

/// One step of a purge: its statement, whether it reaches `events` (and so first takes the
/// table locks batches take before `events`), and where its rows are counted.
struct PurgeStep {
    sql: &'static str,
    reaches_events: bool,
    tally: Tally,
}

/// The tables a project's rows are removed from, in order: events before the errors they point
/// at, the project row last (its cascade then reaches only members, settings, keys and rules).
const PURGE_STEPS: [PurgeStep; 5] = [
    PurgeStep {
        sql: "DELETE FROM events WHERE (id, received_at) IN
                  (SELECT id, received_at FROM events WHERE project_id = $1 LIMIT $2)",
        reaches_events: true,
        tally: Some(|r| &mut r.events),
    },
    PurgeStep {
        sql: "DELETE FROM event_ids WHERE (project_id, event_id) IN
                  (SELECT project_id, event_id FROM event_ids WHERE project_id = $1 LIMIT $2)",
        reaches_events: false,
        tally: None,
    },
    // Each error takes its hourly counts, users and tags with it.
    PurgeStep {
        sql: "DELETE FROM errors WHERE id IN
                  (SELECT id FROM errors WHERE project_id = $1 ORDER BY id LIMIT $2)",
        reaches_events: true,
        tally: Some(|r| &mut r.errors),
    },
    PurgeStep {
        sql: "DELETE FROM attachments WHERE id IN
                  (SELECT id FROM attachments WHERE project_id = $1 LIMIT $2)",
        reaches_events: false,
        tally: Some(|r| &mut r.attachments),
    },
    PurgeStep {
        sql: "DELETE FROM user_reports WHERE id IN
                  (SELECT id FROM user_reports WHERE project_id = $1 LIMIT $2)",
        reaches_events: false,
        tally: Some(|r| &mut r.user_reports),
    },
];

/// Purges every project marked for deletion (see [`crate::store::Store::purge_marked`]).
///
/// Deleting a project only marks it; from then on no lookup finds it and the writer skips its
/// events. The rows go here, in small transactions, as on SQLite. A purge cut short is taken
/// up by the next call: the mark is in the database.
pub async fn purge_marked(store: &PgStore) -> StoreResult<Vec<(i64, PurgeReport)>> {
    let mut client = store.connect().await?;
    // Waits while another node purges, which then leaves nothing here, rather than returning
    // while a project marked just now might be missed by both.
    client
        .execute("SELECT pg_advisory_lock($1)", &[&locks::PURGE])
        .await?;
    let result = purge_all(&mut client).await;
    let unlocked = client
        .execute("SELECT pg_advisory_unlock($1)", &[&locks::PURGE])
        .await;
    let done = result?;
    unlocked?;
    Ok(done)
}

async fn purge_all(client: &mut Client) -> StoreResult<Vec<(i64, PurgeReport)>> {
    let mut done = Vec::new();
    loop {
        let next: Option<i64> = client
            .query_one(
                "SELECT MIN(id) FROM projects WHERE deleting_since IS NOT NULL",
                &[],
            )
            .await?
            .get(0);
        let Some(project_id) = next else {
            return Ok(done);
        };
        let mut report = PurgeReport::default();
        for step in &PURGE_STEPS {
            loop {
                let n = delete_batch(client, step, project_id).await?;
                if let Some(tally) = step.tally {
                    *tally(&mut report) += n;
                }
                if (n as i64) < BATCH_ROWS {
                    break;
                }
            }
        }
        let tx = client.transaction().await?;
        tx.batch_execute("LOCK TABLE projects, errors IN ROW EXCLUSIVE MODE")
            .await?;
        tx.execute("DELETE FROM projects WHERE id = $1", &[&project_id])
            .await?;
        tx.commit().await?;
        done.push((project_id, report));
    }
}

/// Up to [`BATCH_ROWS`] rows of one step, in one transaction.
async fn delete_batch(client: &mut Client, step: &PurgeStep, project_id: i64) -> StoreResult<u64> {
    let tx = client.transaction().await?;
    if step.reaches_events {
        tx.batch_execute("LOCK TABLE projects, errors IN ROW EXCLUSIVE MODE")
            .await?;
    }
    let n = tx.execute(step.sql, &[&project_id, &BATCH_ROWS]).await?;
    tx.commit().await?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::ingest::{test_event, EventRecord, Record};
    use crate::store::postgres::ingest::tests::{
        count, event, flush, fresh_store, open, sql, totals, write,
    };
    use crate::store::postgres::now_millis;
    use crate::store::postgres::schema::{create_partition_sql, day_of, partition_name};

    #[tokio::test(flavor = "multi_thread")]
    async fn old_days_are_dropped_and_the_rest_deleted_by_row() {
        let Some(store) = fresh_store().await else {
            return;
        };
        let sink = open(&store).await;
        // 5 events of error 1 and 3 of error 2, moved 40 days back; then 2 of error 2 and 1 of
        // error 3 now.
        let old: Vec<Record> = (0..8)
            .map(|n| event(n, 1 + (n >= 5) as i64, 1_000))
            .collect();
        let (sink, out) = write(sink, old).await;
        out.expect("batch");
        let old_day = day_of(now_millis()) - 40;
        sql(&store, &create_partition_sql(old_day)).await;
        let moved = old_day * DAY_MS + 1_000;
        sql(
            &store,
            &format!(
                "UPDATE events SET received_at = {moved};
                 UPDATE event_ids SET received_at = {moved};"
            ),
        )
        .await;
        let new: Vec<Record> = (8..11)
            .map(|n| event(n, 2 + (n == 10) as i64, 2_000))
            .collect();
        let (sink, out) = write(sink, new).await;
        out.expect("batch");
        let (sink, flushed) = flush(sink).await;
        flushed.expect("flush");
        assert_eq!(totals(&store).await, (11, 11, 11));

        let now = now_millis();
        let report = retention_pass(&store, now, 30).await.expect("pass");
        assert_eq!(report.events, 8);
        assert_eq!(report.errors, 1, "error 1 had only old events");
        // The events happened in 1970: the hours of the errors left are old too.
        assert_eq!(report.hourly_rows, 2);
        let exists = format!(
            "SELECT COUNT(*) FROM pg_class WHERE relname = '{}'",
            partition_name(old_day)
        );
        assert_eq!(
            count(&store, &exists).await,
            0,
            "the old day's partition is dropped"
        );
        assert_eq!(count(&store, "SELECT COUNT(*) FROM event_ids").await, 3);
        assert_eq!(
            count(
                &store,
                "SELECT COUNT(*) FROM errors WHERE fingerprint IN (2, 3)"
            )
            .await,
            2
        );
        assert_eq!(
            count(
                &store,
                "SELECT event_count FROM errors WHERE fingerprint = 2"
            )
            .await,
            5,
            "the count of every event ever seen"
        );
        assert_eq!(
            retention_pass(&store, now, 30).await.expect("pass"),
            RetentionReport::default()
        );

        // A cutoff later today: today's partition stays, its older rows go one by one.
        let report = retention_pass(&store, now_millis() + 1_000 + DAY_MS, 1)
            .await
            .expect("pass");
        assert_eq!((report.events, report.errors), (3, 2));
        assert_eq!(totals(&store).await, (0, 0, 0));
        assert_eq!(count(&store, "SELECT COUNT(*) FROM error_users").await, 0);
        drop(sink);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn retention_runs_on_one_node_at_a_time() {
        let Some(store) = fresh_store().await else {
            return;
        };
        let holder = store.connect().await.expect("connection");
        holder
            .execute("SELECT pg_advisory_lock($1)", &[&locks::RETENTION])
            .await
            .expect("lock");
        let sink = open(&store).await;
        let (sink, out) = write(sink, vec![event(1, 1, 1_000)]).await;
        out.expect("batch");
        let later = now_millis() + 1_000 + DAY_MS;
        assert_eq!(
            retention_pass(&store, later, 1).await.expect("pass"),
            RetentionReport::default()
        );
        drop(holder);
        // The lock goes with the session, a moment after the connection.
        let mut report = RetentionReport::default();
        for _ in 0..100 {
            report = retention_pass(&store, later, 1).await.expect("pass");
            if report.events > 0 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        assert_eq!(report.events, 1);
        drop(sink);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_marked_project_is_purged_and_the_others_kept() {
        let Some(store) = fresh_store().await else {
            return;
        };
        sql(
            &store,
            "INSERT INTO projects (id, name, path, namespace_path, path_with_namespace, created_at)
             VALUES (2, 'q', 'q', 'g', 'g/q', 0)",
        )
        .await;
        let sink = open(&store).await;
        let n = 2 * BATCH_ROWS as u64 + 7;
        let events: Vec<Record> = (0..n)
            .map(|n| {
                Record::Event(EventRecord {
                    project_id: if n % 10 == 0 { 1 } else { 2 },
                    ..test_event(n, n as i64 % 300, 1_000 + n as i64)
                })
            })
            .collect();
        let (sink, out) = write(sink, events).await;
        out.expect("batch");
        let (sink, flushed) = flush(sink).await;
        flushed.expect("flush");
        sql(
            &store,
            "UPDATE projects SET deleting_since = 1 WHERE id = 2",
        )
        .await;
        let (sink, out) = write(
            sink,
            vec![Record::Event(EventRecord {
                project_id: 2,
                ..test_event(99_999, 1, 5)
            })],
        )
        .await;
        assert_eq!(
            out.expect("batch"),
            [crate::store::ingest::EventOutcome::ProjectGone]
        );

        let done = purge_marked(&store).await.expect("purge");
        assert_eq!(done.len(), 1);
        let (id, report) = done[0];
        assert_eq!(id, 2);
        let kept = n.div_ceil(10);
        assert_eq!(report.events, n - kept);
        assert_eq!(report.errors, 300 - 30, "{report:?}");
        for table in ["events", "errors", "event_ids", "projects"] {
            let column = if table == "projects" {
                "id"
            } else {
                "project_id"
            };
            let sql = format!("SELECT COUNT(*) FROM {table} WHERE {column} = 2");
            assert_eq!(count(&store, &sql).await, 0, "{table}");
        }
        assert_eq!(
            count(&store, "SELECT COUNT(*) FROM events WHERE project_id = 1").await,
            kept as i64
        );
        assert_eq!(
            count(
                &store,
                "SELECT COUNT(*) FROM error_hourly h LEFT JOIN errors e ON e.id = h.error_id
                 WHERE e.id IS NULL"
            )
            .await,
            0
        );
        assert!(purge_marked(&store).await.expect("again").is_empty());
        drop(sink);
    }
}
