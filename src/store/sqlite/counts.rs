//! The SQLite side of the error counts the writer keeps in memory ([`crate::store::counts`]):
//! writing them, and the entries of `event_by_error` for the same events ([`super::by_error`]),
//! with the mark (`ingest_state.counted_through`) in one transaction, and the recount at start-up
//! of the events stored above the mark.

use rusqlite::{params, Transaction};

use super::by_error;
use crate::store::counts::PendingCounts;
use crate::store::StoreResult;

/// Writes these counts in `tx` and moves the mark past them. The caller clears them once
/// `tx` has committed.
pub(crate) fn write(pending: &PendingCounts, tx: &Transaction) -> StoreResult<()> {
    if pending.is_empty() {
        return Ok(());
    }
    let mut bump = tx.prepare_cached(
        "UPDATE errors SET event_count = event_count + ?3,
                           last_seen_at = MAX(last_seen_at, ?4),
                           description = ?5,
                           actor = ?6
         WHERE id = ?1 AND fingerprint = ?2",
    )?;
    for (id, fingerprint, count, last_seen_at, description, actor) in pending.errors() {
        bump.execute(params![
            id,
            fingerprint,
            count,
            last_seen_at,
            description,
            actor
        ])?;
    }
    // The writer's connection does not check foreign keys, so an hour of an error deleted
    // since is skipped here rather than left behind.
    let mut bump_hour = tx.prepare_cached(
        "INSERT INTO error_hourly (error_id, hour, count)
         SELECT ?1, ?2, ?3 WHERE EXISTS (SELECT 1 FROM errors WHERE id = ?1)
         ON CONFLICT (error_id, hour) DO UPDATE SET count = count + excluded.count",
    )?;
    for ((id, hour), n) in pending.hours() {
        bump_hour.execute(params![id, hour, n])?;
    }
    // The per-error order of the same events goes with their counts (see `by_error`); from
    // below the mark too when the writer was handed a reused id.
    let mark = counted_through(tx)?;
    by_error::index_range(tx, mark.min(pending.lowest() - 1), pending.through())?;
    tx.prepare_cached(
        "UPDATE ingest_state SET counted_through = MAX(counted_through, ?1) WHERE id = 1",
    )?
    .execute([pending.through()])?;
    Ok(())
}

/// The mark: every event with a higher id is not yet in the counts.
pub(crate) fn counted_through(tx: &Transaction) -> StoreResult<i64> {
    Ok(tx.query_row(
        "SELECT counted_through FROM ingest_state WHERE id = 1",
        [],
        |r| r.get(0),
    )?)
}

/// Counts the events above the mark (those stored after the last flush before a crash or a
/// kill) and writes them, in `tx`. Returns how many events were counted.
pub(crate) fn recount_tail(tx: &Transaction) -> StoreResult<u64> {
    let mark = counted_through(tx)?;
    let mut tail = PendingCounts::default();
    let mut n = 0u64;
    {
        let mut events = tx.prepare(
            "SELECT ev.id, ev.error_id, er.fingerprint, ev.occurred_at, ev.description, ev.actor
             FROM events ev JOIN errors er ON er.id = ev.error_id
             WHERE ev.id > ?1 ORDER BY ev.id",
        )?;
        let mut rows = events.query([mark])?;
        while let Some(r) = rows.next()? {
            let description: String = r.get(4)?;
            let actor: String = r.get(5)?;
            tail.add(
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                &description,
                &actor,
            );
            n += 1;
        }
    }
    write(&tail, tx)?;
    Ok(n)
}
