//! Removing a deleted project's data. `DELETE /projects/:id` only marks the project
//! (`projects.deleting_since`) and disables its keys, in one short transaction, and answers 202 as
//! GitLab does. From then on no API finds the project and the writer skips its events. The rows
//! are removed here afterwards, in small transactions with pauses between them as retention
//! does, so that a project with millions of events never keeps the ingestion writer from the
//! write lock for long. Until this change one cascading `DELETE` did it all in one transaction,
//! which could hold the lock past the writer's busy timeout and fail every project's batches.
//!
//! The project row goes last; by then its cascade only reaches members, settings and keys. A
//! purge cut short by a restart is taken up again at the next start: the mark is in the database.

use rusqlite::{params, Connection, TransactionBehavior};

use super::retention::{batch, pause, BATCH_ROWS};
use super::{by_error, open_connection, SqliteStore};
use crate::store::{PurgeReport, StoreResult};

/// Purges every project marked for deletion; returns one report per project purged.
pub async fn purge_marked(store: &SqliteStore) -> StoreResult<Vec<(i64, PurgeReport)>> {
    let opts = store.options().clone();
    let mut conn = tokio::task::spawn_blocking(move || open_connection(&opts)).await??;
    let mut done = Vec::new();
    loop {
        let (c, next, _) = batch(conn, |c| {
            Ok(c.query_row(
                "SELECT MIN(id) FROM projects WHERE deleting_since IS NOT NULL",
                [],
                |r| r.get::<_, Option<i64>>(0),
            )?)
        })
        .await?;
        conn = c;
        let Some(project_id) = next else {
            return Ok(done);
        };
        let (c, report) = purge_project(conn, project_id).await?;
        conn = c;
        done.push((project_id, report));
    }
}

/// Where each removed row is counted in a [`PurgeReport`].
type Tally = fn(&mut PurgeReport) -> &mut u64;

/// One step of a purge, repeated until it removes less than a batch.
#[derive(Clone, Copy)]
enum Step {
    /// A `DELETE` of up to `?2` rows of project `?1`.
    Rows(&'static str),
    /// The project's errors, each with the rows it owns (`by_error::delete_error`), with
    /// foreign keys off: with them on, each deletion would scan `events` for children, where no
    /// index leads with `error_id`. The project's events are gone by then.
    Errors,
}

/// The tables a project's rows are removed from, in order: events before the errors they
/// point at. Each query finds the project's rows through an index that starts with `project_id`.
const STEPS: [(Step, Tally); 4] = [
    (
        Step::Rows(
            "DELETE FROM events WHERE id IN (SELECT id FROM events WHERE project_id = ?1 LIMIT ?2)",
        ),
        |r| &mut r.events,
    ),
    (Step::Errors, |r| &mut r.errors),
    (
        Step::Rows(
            "DELETE FROM attachments WHERE id IN
                 (SELECT id FROM attachments WHERE project_id = ?1 LIMIT ?2)",
        ),
        |r| &mut r.attachments,
    ),
    (
        Step::Rows(
            "DELETE FROM user_reports WHERE id IN
                 (SELECT id FROM user_reports WHERE project_id = ?1 LIMIT ?2)",
        ),
        |r| &mut r.user_reports,
    ),
];

async fn purge_project(
    mut conn: Connection,
    project_id: i64,
) -> StoreResult<(Connection, PurgeReport)> {
    let mut report = PurgeReport::default();
    for (step, tally) in STEPS {
        loop {
            let (c, n, took) = batch(conn, move |c| delete_batch(c, step, project_id)).await?;
            conn = c;
            *tally(&mut report) += n;
            if (n as i64) < BATCH_ROWS {
                break;
            }
            pause(took).await;
        }
    }
    let (conn, _, _) = batch(conn, move |c| {
        Ok(c.execute("DELETE FROM projects WHERE id = ?1", [project_id])?)
    })
    .await?;
    Ok((conn, report))
}

/// Up to [`BATCH_ROWS`] rows of one step, in one immediate transaction (see retention).
fn delete_batch(conn: &mut Connection, step: Step, project_id: i64) -> StoreResult<u64> {
    let sql = match step {
        Step::Rows(sql) => sql,
        Step::Errors => {
            // Outside any transaction, where the pragma takes effect; back on before returning.
            conn.pragma_update(None, "foreign_keys", "OFF")?;
            let deleted = delete_errors(conn, project_id);
            conn.pragma_update(None, "foreign_keys", "ON")?;
            return deleted;
        }
    };
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let n = tx
        .prepare_cached(sql)?
        .execute(params![project_id, BATCH_ROWS])?;
    tx.commit()?;
    Ok(n as u64)
}

fn delete_errors(conn: &mut Connection, project_id: i64) -> StoreResult<u64> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let ids: Vec<i64> = tx
        .prepare_cached("SELECT id FROM errors WHERE project_id = ?1 LIMIT ?2")?
        .query_map(params![project_id, BATCH_ROWS], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    let mut n = 0;
    for id in ids {
        if by_error::delete_error(&tx, id)? {
            n += 1;
        }
    }
    tx.commit()?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::ingest::{test_event, EventOutcome, EventRecord, EventSink, Record};
    use crate::store::sqlite::test_support::{assert_no_orphans, count};
    use crate::store::sqlite::SqliteSink;
    use crate::store::{NewProject, NewUser, Store};

    #[tokio::test]
    async fn a_marked_project_is_hidden_at_once_and_purged_in_batches() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = SqliteStore::open(dir.path(), Default::default()).expect("store");
        let owner = store
            .create_user(NewUser {
                username: "o".into(),
                name: "O".into(),
                email: None,
                is_admin: true,
            })
            .await
            .expect("user");
        let mut ids = Vec::new();
        for name in ["gone", "kept"] {
            let p = store
                .create_project(NewProject {
                    name: name.into(),
                    path: name.into(),
                    namespace_path: "o".into(),
                    owner_id: owner.id,
                })
                .await
                .expect("project");
            ids.push(p.id);
        }
        let (gone, kept) = (ids[0], ids[1]);
        let key = store
            .create_key(gone, "00112233445566778899aabbccddeeff".into())
            .await
            .expect("key");
        // More events and errors than one batch holds, so the purge takes several rounds.
        let mut sink = SqliteSink::open(store.options(), Default::default()).expect("sink");
        let events: Vec<Record> = (0..(2 * BATCH_ROWS as u64 + 7))
            .map(|n| {
                let mut e = test_event(n, n as i64 % 300, 1_000 + n as i64);
                e.project_id = if n % 10 == 0 { kept } else { gone };
                Record::Event(e)
            })
            .collect();
        sink.write_batch(&[&events]).expect("write");
        sink.flush_counts().expect("counts");

        store.delete_project(gone).await.expect("mark");
        // Gone from every lookup at once; its keys are disabled; its rows are still there.
        assert!(store.project_by_id(gone).await.expect("by id").is_none());
        assert!(store
            .project_by_path("o/gone")
            .await
            .expect("by path")
            .is_none());
        assert_eq!(store.list_projects().await.expect("list").len(), 1);
        let active: i64 = count(
            &store,
            &format!("SELECT active FROM client_keys WHERE id = {}", key.id),
        );
        assert_eq!(active, 0);
        // The writer now skips the project's events.
        let late = Record::Event(EventRecord {
            project_id: gone,
            ..test_event(99_999, 1, 5)
        });
        let out = sink.write_batch(&[&[late]]).expect("write");
        assert_eq!(out, vec![vec![EventOutcome::ProjectGone]]);

        // Rows that hang off the errors, so that the checks after the purge are not empty.
        for table in ["error_hourly", "error_tags", "event_by_error"] {
            assert!(
                count(&store, &format!("SELECT COUNT(*) FROM {table}")) > 0,
                "{table}"
            );
        }

        let done = purge_marked(&store).await.expect("purge");
        assert_eq!(done.len(), 1);
        let (id, report) = done[0];
        assert_eq!(id, gone);
        assert!(report.events > BATCH_ROWS as u64, "{report:?}");
        assert!(report.errors > 0, "{report:?}");
        for table in ["events", "errors", "client_keys"] {
            let sql = format!("SELECT COUNT(*) FROM {table} WHERE project_id = {gone}");
            assert_eq!(count(&store, &sql), 0, "{table}");
        }
        let sql = format!("SELECT COUNT(*) FROM projects WHERE id = {gone}");
        assert_eq!(count(&store, &sql), 0, "projects");
        // The rows of each error went with it (deleted by hand, foreign keys off); the other
        // project kept its own.
        assert_no_orphans(&store);
        assert_eq!(
            count(&store, "SELECT COUNT(*) FROM event_by_error"),
            count(&store, "SELECT COUNT(*) FROM events"),
            "every event kept has its entry"
        );
        assert_eq!(
            count(
                &store,
                &format!("SELECT COUNT(*) FROM events WHERE project_id = {kept}")
            ),
            (2 * BATCH_ROWS + 7 + 9) / 10
        );
        assert!(purge_marked(&store).await.expect("again").is_empty());
    }
}
