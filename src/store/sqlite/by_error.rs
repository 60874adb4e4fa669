//! The per-error order of events on SQLite: the table `event_by_error(error_id, occurred_at,
//! id)`, which every "this error's events, newest first" read walks, and the SQL that reads it.
//!
//! Why a table filled later and not an index on `events`: under load nearly every event of a
//! batch belongs to a different error, and an index entry lands at the end of its error's range,
//! so a commit of seven events dirtied about seven pages of that index, each written to the log
//! and copied again by the checkpoint. That index was a sixth of the server's CPU per event
//! (README, "Performance → Ingestion"). Entries here are written when the error counts are
//! (`store::counts`, every 100 ms under load, and before every read that asks), sorted, so one
//! write of hundreds of events dirties each error's page once.
//!
//! What stays exact, by the same mark the counts use (`ingest_state.counted_through`):
//! - **Every event above the mark is in the tail, every event at or below it has its entry.**
//!   Entries for `(mark, new mark]` are inserted in the transaction that moves the mark
//!   ([`index_range`]). The start-up recount of a crashed process's tail goes through the same
//!   function, so a kill between a batch and its flush loses no entry.
//! - **Reads see the tail.** Every read here takes the table's part and the tail's part
//!   ([`tail`], a range of row ids above the mark, at most a flush interval of events) in one
//!   statement, so one snapshot: an event is found the moment its batch commits, whether or not
//!   its entry is written yet. Reads that ask for a flush first (the HTTP read paths) find the
//!   tail empty.
//! - **Deleting an event deletes its entry** (the trigger `events_leave_by_error`), on every
//!   connection, so a row id SQLite hands out again never finds a stale entry.
//!
//! `events` still has its foreign key to `errors`, but no index that starts with `error_id`, so
//! deleting an error with foreign keys on would scan `events`. Retention and purge delete errors
//! through [`delete_error`], with foreign keys off, after their events are gone.

use rusqlite::{params, Transaction};

use crate::store::StoreResult;

/// The events not yet in `event_by_error`: a `WHERE` term on `events`' row id `id_col` (`id`,
/// or `ev.id` in a join), read in the same statement as the table so both come from one
/// snapshot.
pub(crate) fn tail(id_col: &str) -> String {
    format!("{id_col} > (SELECT counted_through FROM ingest_state WHERE id = 1)")
}

/// Writes the entries of the events with ids in `(after, through]`, sorted so each error's page
/// is written once. `INSERT OR IGNORE` because a batch that took a reused id below the mark
/// indexes a range that may hold entries already.
pub(crate) fn index_range(tx: &Transaction, after: i64, through: i64) -> StoreResult<()> {
    if through <= after {
        return Ok(());
    }
    tx.prepare_cached(
        "INSERT OR IGNORE INTO event_by_error (error_id, occurred_at, id)
         SELECT error_id, occurred_at, id FROM events WHERE id > ?1 AND id <= ?2
         ORDER BY error_id, occurred_at, id",
    )?
    .execute(params![after, through])?;
    Ok(())
}

/// Ids of error `error`'s events in `(occurred_at, id)` order `dir` (`ASC` or `DESC`), at most
/// `limit` from each part, `range` being further `AND` terms on `occurred_at` and `id`. The
/// arguments are SQL text: placeholders such as `?1` and fixed words, never input. The caller
/// orders and limits the union again.
pub(crate) fn event_ids(error: &str, range: &str, dir: &str, limit: &str) -> String {
    format!(
        "SELECT id FROM (SELECT occurred_at, id FROM event_by_error
                         WHERE error_id = {error} {range}
                         ORDER BY occurred_at {dir}, id {dir} LIMIT {limit})
         UNION ALL
         SELECT id FROM (SELECT occurred_at, id FROM events
                         WHERE {tail} AND error_id = {error} {range}
                         ORDER BY occurred_at {dir}, id {dir} LIMIT {limit})",
        tail = tail("id")
    )
}

/// Selects `cols` of error `error`'s first `limit` events in `(occurred_at, id)` order `dir`;
/// see [`event_ids`] for the arguments.
pub(crate) fn events_of_error(
    cols: &str,
    error: &str,
    range: &str,
    dir: &str,
    limit: &str,
) -> String {
    format!(
        "SELECT {cols} FROM events WHERE id IN ({ids})
         ORDER BY occurred_at {dir}, id {dir} LIMIT {limit}",
        ids = event_ids(error, range, dir, limit)
    )
}

/// Deletes error `error_id` and the rows that hang off it, on a connection whose foreign keys
/// are off (see the module documentation); the caller has made sure it has no events left.
/// Returns whether the error existed.
pub(crate) fn delete_error(tx: &Transaction, error_id: i64) -> StoreResult<bool> {
    for sql in [
        "DELETE FROM event_by_error WHERE error_id = ?1",
        "DELETE FROM error_hourly WHERE error_id = ?1",
        "DELETE FROM error_users WHERE error_id = ?1",
        "DELETE FROM error_tags WHERE error_id = ?1",
    ] {
        tx.prepare_cached(sql)?.execute([error_id])?;
    }
    Ok(tx
        .prepare_cached("DELETE FROM errors WHERE id = ?1")?
        .execute([error_id])?
        > 0)
}

/// Whether error `error_id` has any event, indexed or in the tail.
pub(crate) fn has_events(tx: &Transaction, error_id: i64) -> StoreResult<bool> {
    Ok(tx
        .prepare_cached(&format!(
            "SELECT EXISTS (SELECT 1 FROM event_by_error WHERE error_id = ?1)
                 OR EXISTS (SELECT 1 FROM events WHERE {} AND error_id = ?1)",
            tail("id")
        ))?
        .query_row([error_id], |r| r.get(0))?)
}

#[cfg(test)]
mod tests {
    use crate::store::ingest::{test_event, EventRecord, EventSink, Record};
    use crate::store::read::{
        EventCountQuery, EventQuery, EventSort, Keyset, ReadStore, StoredEvent,
    };
    use crate::store::sqlite::test_support::{count, store_with_project as store};
    use crate::store::sqlite::{SqliteSink, SqliteStore};
    use crate::store::web::WebStore;

    fn event(n: u64, fingerprint: i64, occurred_at: i64, env: &str) -> Record {
        Record::Event(EventRecord {
            environment: Some(env.into()),
            release: Some(format!("r{n}")),
            ..test_event(n, fingerprint, occurred_at)
        })
    }

    fn error_id(store: &SqliteStore, fingerprint: i64) -> i64 {
        count(
            store,
            &format!("SELECT id FROM errors WHERE fingerprint = {fingerprint}"),
        )
    }

    /// What every read of an error's events answers, for error `fingerprint`.
    #[derive(Debug, PartialEq)]
    struct Seen {
        latest: Option<String>,
        ascending: Vec<i64>,
        /// The second page of two, newest first, after the newest event.
        second_page: Vec<i64>,
        releases: Option<(Option<String>, Option<String>)>,
        buckets: Vec<(i64, i64)>,
        production_buckets: Vec<(i64, i64)>,
        environments: Vec<(String, Option<i64>)>,
    }

    async fn seen(store: &SqliteStore, fingerprint: i64) -> Seen {
        let error = error_id(store, fingerprint);
        let page = |sort, after, limit| EventQuery {
            project_id: 1,
            fingerprint,
            sort,
            limit,
            after,
            backward: false,
        };
        let list = |q: EventQuery| async move {
            store
                .list_error_events(q)
                .await
                .expect("list")
                .expect("error exists")
                .items
        };
        let times = |events: Vec<StoredEvent>| events.iter().map(|e| e.occurred_ms).collect();
        let ascending = times(list(page(EventSort::OccurredAtAsc, None, 50)).await);
        let newest = list(page(EventSort::OccurredAtDesc, None, 1))
            .await
            .first()
            .map(|e| Keyset {
                key: e.occurred_ms,
                id: e.id,
            });
        let second_page = times(list(page(EventSort::OccurredAtDesc, newest, 2)).await);
        let counts = |environment: Option<&str>| EventCountQuery {
            projects: vec![1],
            status: None,
            text: None,
            tags: Vec::new(),
            environment: environment.map(str::to_owned),
            from: 0,
            until: 1000,
            bucket_ms: 100,
        };
        Seen {
            latest: store
                .latest_event(error)
                .await
                .expect("latest")
                .map(|e| e.event_id),
            ascending,
            second_page,
            releases: store
                .issue_extras(vec![error])
                .await
                .expect("extras")
                .remove(&error)
                .map(|x| (x.first_release, x.last_release)),
            buckets: store.event_counts(counts(None)).await.expect("counts"),
            production_buckets: store
                .event_counts(counts(Some("production")))
                .await
                .expect("counts"),
            environments: store
                .error_tag_values(error)
                .await
                .expect("tags")
                .into_iter()
                .filter(|t| t.key == "environment")
                .map(|t| (t.value, t.count))
                .collect(),
        }
    }

    #[tokio::test]
    async fn every_read_finds_an_event_before_and_after_its_entry_is_written() {
        let (_dir, store) = store();
        let mut sink = SqliteSink::open(store.options(), Default::default()).expect("sink");
        let first = vec![
            event(1, 1, 100, "production"),
            event(2, 1, 300, "staging"),
            event(3, 1, 200, "production"),
            event(4, 2, 150, "production"),
        ];
        sink.write_batch(&[&first]).expect("write");
        assert_eq!(count(&store, "SELECT COUNT(*) FROM event_by_error"), 0);
        let tail_only = seen(&store, 1).await;
        assert_eq!(
            tail_only,
            Seen {
                latest: Some(format!("{:032x}", 2)),
                ascending: vec![100, 200, 300],
                second_page: vec![200, 100],
                releases: Some((Some("r1".into()), Some("r2".into()))),
                buckets: vec![(1, 2), (2, 1), (3, 1)],
                production_buckets: vec![(1, 2), (2, 1)],
                environments: vec![("production".into(), Some(2)), ("staging".into(), Some(1))],
            }
        );

        sink.flush_counts().expect("flush");
        assert_eq!(count(&store, "SELECT COUNT(*) FROM event_by_error"), 4);
        assert_eq!(seen(&store, 1).await, tail_only, "the same from the table");

        // Two more of error 1 in the tail: every read merges both parts.
        let second = vec![event(5, 1, 250, "staging"), event(6, 1, 50, "production")];
        sink.write_batch(&[&second]).expect("write");
        assert_eq!(count(&store, "SELECT COUNT(*) FROM event_by_error"), 4);
        let both = seen(&store, 1).await;
        assert_eq!(both.ascending, vec![50, 100, 200, 250, 300]);
        assert_eq!(both.second_page, vec![250, 200]);
        assert_eq!(both.releases, Some((Some("r6".into()), Some("r2".into()))));
        assert_eq!(both.buckets, vec![(0, 1), (1, 2), (2, 2), (3, 1)]);
        assert_eq!(both.production_buckets, vec![(0, 1), (1, 2), (2, 1)]);
        sink.flush_counts().expect("flush");
        assert_eq!(count(&store, "SELECT COUNT(*) FROM event_by_error"), 6);
        assert_eq!(seen(&store, 1).await, both);
    }

    #[test]
    fn a_killed_writers_tail_gets_its_entries_at_the_next_start() {
        let (_dir, store) = store();
        let mut sink = SqliteSink::open(store.options(), Default::default()).expect("sink");
        let batch: Vec<Record> = (0..5)
            .map(|n| event(n, 1 + n as i64 % 2, 10, "e"))
            .collect();
        sink.write_batch(&[&batch]).expect("write");
        drop(sink); // as a kill: no flush
        assert_eq!(count(&store, "SELECT COUNT(*) FROM event_by_error"), 0);
        let _sink = SqliteSink::open(store.options(), Default::default()).expect("sink again");
        assert_eq!(count(&store, "SELECT COUNT(*) FROM event_by_error"), 5);
        assert_eq!(
            count(
                &store,
                "SELECT COUNT(*) FROM events e JOIN event_by_error x
                 ON x.id = e.id AND x.error_id = e.error_id AND x.occurred_at = e.occurred_at"
            ),
            5
        );
    }

    #[test]
    fn deleting_an_event_or_its_error_takes_its_entries_and_a_reused_id_gets_its_own() {
        let (_dir, store) = store();
        let mut sink = SqliteSink::open(store.options(), Default::default()).expect("sink");
        let batch: Vec<Record> = (0..4)
            .map(|n| event(n, 1 + n as i64 % 2, 10, "e"))
            .collect();
        sink.write_batch(&[&batch]).expect("write");
        sink.flush_counts().expect("flush");
        assert_eq!(count(&store, "SELECT COUNT(*) FROM event_by_error"), 4);

        // The newest event goes; the next one is handed its row id, below the mark.
        store
            .run_blocking(|c| Ok(c.execute("DELETE FROM events WHERE id = 4", [])?))
            .expect("delete");
        assert_eq!(count(&store, "SELECT COUNT(*) FROM event_by_error"), 3);
        sink.write_batch(&[&[event(9, 1, 20, "e")]]).expect("write");
        assert_eq!(
            count(
                &store,
                "SELECT occurred_at FROM event_by_error WHERE id = 4"
            ),
            20
        );

        // An error deleted with foreign keys on takes its events and their entries.
        let error = error_id(&store, 1);
        store
            .run_blocking(move |c| Ok(c.execute("DELETE FROM errors WHERE id = ?1", [error])?))
            .expect("delete error");
        assert_eq!(count(&store, "SELECT COUNT(*) FROM event_by_error"), 1);
        assert_eq!(count(&store, "SELECT COUNT(*) FROM events"), 1);
    }
}
