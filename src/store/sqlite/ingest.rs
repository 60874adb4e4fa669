//! The SQLite transaction body that stores one batch of ingested records, on the writer's own
//! connection. The records are [`crate::store::ingest`]'s; the batching itself (queue, timing,
//! acknowledgements) is [`crate::writer`]'s.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension, Transaction};
use tokio::sync::Notify;

use super::alerts;
use super::checkpoint::Checkpointer;
use super::counts;
use super::{now_millis, open_connection, SqliteOptions};
use crate::clock::WallClock;
use crate::store::alerts::Trigger;
use crate::store::counts::PendingCounts;
use crate::store::ingest::{user_hash, EventOutcome, EventRecord, EventSink, Record, SinkHooks};
use crate::store::read::ErrorStatus;
use crate::store::{StoreError, StoreResult};

/// Writes batches into SQLite on the writer's own connection.
pub struct SqliteSink {
    conn: Connection,
    /// The thread that copies the write-ahead log into the database file beside this writer;
    /// stopped when the sink is dropped, after the writer's last commit.
    checkpointer: Option<Checkpointer>,
    known_users: KnownPairs,
    known_tags: KnownPairs,
    /// Error counts of committed batches not yet written (see [`counts`]).
    pending: PendingCounts,
    /// Mirrors "`pending` is not empty" for other threads: set before a batch's jobs are
    /// answered, cleared once its counts are written, so a reader that saw a 200 and then finds
    /// this clear knows the counts are in the database.
    has_pending: Arc<AtomicBool>,
    /// `ingest_state.counted_through` as last committed.
    counted_through: i64,
    /// Alerting's clock: frequency windows and the outbox rows' times.
    clock: Arc<WallClock>,
    /// Woken after a commit that queued alerts, so delivery starts at once.
    alerts_queued: Arc<Notify>,
}

/// Most pairs one [`KnownPairs`] holds before it starts over; about 4 MB.
const KNOWN_USERS_MAX: usize = 100_000;

/// (error id, user hash) pairs known to be in `error_users`, so that a user seen again on the
/// same error costs no insert attempt; a second set does the same for (error id, tag hash) pairs
/// in `error_tags`. The same few users hitting the same errors is the common
/// case, and the attempt (an index probe on a table every event touches) was about a tenth of the
/// writer's work.
///
/// The set only ever under-states what is stored, which is safe: a missing pair just means the
/// insert is tried. Pairs are added only after their batch commits. Rows leave `error_users` only
/// with their error, and an error id can come back only through a new error, which this writer
/// alone inserts: its pairs are forgotten then.
#[derive(Default)]
struct KnownPairs {
    by_error: HashMap<i64, HashSet<i64>>,
    len: usize,
}

impl KnownPairs {
    fn contains(&self, error_id: i64, user: i64) -> bool {
        self.by_error
            .get(&error_id)
            .is_some_and(|users| users.contains(&user))
    }

    fn forget_error(&mut self, error_id: i64) {
        if let Some(users) = self.by_error.remove(&error_id) {
            self.len -= users.len();
        }
    }

    fn remember(&mut self, pairs: Vec<(i64, i64)>) {
        for (error_id, user) in pairs {
            if self.len >= KNOWN_USERS_MAX {
                // Starting over is simpler than tracking recency, and the set refills within
                // a few batches.
                self.by_error.clear();
                self.len = 0;
            }
            if self.by_error.entry(error_id).or_default().insert(user) {
                self.len += 1;
            }
        }
    }
}

impl SqliteSink {
    /// Opens the writer's connection, recounting what a previous process left uncounted. The
    /// checkpoint thread is started by [`super::SqliteStore`]'s `open_sink`, not here, so unit
    /// tests can run a sink alone.
    pub fn open(opts: &SqliteOptions, hooks: SinkHooks) -> StoreResult<SqliteSink> {
        let mut conn = open_connection(opts)?;
        // The writer touches the same index pages batch after batch; 32 MiB of page cache
        // (SQLite's default is 2 MiB) keeps them in memory instead of re-reading them.
        conn.pragma_update(None, "cache_size", -32_768)?;
        // Foreign keys are not enforced on this connection (the API's connections, whose deletes
        // cascade, keep them on). Every parent a batch refers to is known to exist in the same
        // transaction: projects are looked up first and records of a missing one are skipped,
        // and error ids come from the error update or insert just before the events. Enforcing them here would
        // only repeat those lookups for every row, on the one thread all writes go through.
        conn.pragma_update(None, "foreign_keys", "OFF")?;
        // Checkpoints are the background thread's job (see `checkpoint`); this one is only the
        // backstop that lets the log restart from its beginning.
        conn.pragma_update(
            None,
            "wal_autocheckpoint",
            super::checkpoint::WRITER_AUTOCHECKPOINT_PAGES,
        )?;
        // Counts of events stored after the last flush before the previous process ended.
        let tx = conn.transaction()?;
        let recounted = counts::recount_tail(&tx)?;
        let counted_through = counts::counted_through(&tx)?;
        tx.commit()?;
        if recounted > 0 {
            tracing::info!(
                events = recounted,
                "counted events stored after the last count flush"
            );
        }
        Ok(SqliteSink {
            conn,
            checkpointer: None,
            known_users: KnownPairs::default(),
            known_tags: KnownPairs::default(),
            pending: PendingCounts::default(),
            has_pending: Arc::new(AtomicBool::new(false)),
            counted_through,
            clock: hooks.clock,
            alerts_queued: hooks.alerts_queued,
        })
    }

    /// Keeps the checkpoint thread for as long as this sink lives.
    pub(crate) fn with_checkpointer(mut self, checkpointer: Checkpointer) -> SqliteSink {
        self.checkpointer = Some(checkpointer);
        self
    }
}

impl Drop for SqliteSink {
    fn drop(&mut self) {
        if let Some(c) = self.checkpointer.take() {
            c.stop();
        }
    }
}

impl EventSink for SqliteSink {
    fn pending_flag(&self) -> Arc<AtomicBool> {
        self.has_pending.clone()
    }

    fn counts_due_in(&self) -> Option<Duration> {
        self.pending.until_due()
    }

    fn flush_counts(&mut self) -> StoreResult<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let now = self.clock.now_millis();
        let written = (|| -> StoreResult<usize> {
            let tx = self.conn.transaction()?;
            counts::write(&self.pending, &tx)?;
            let queued = check_frequency(&tx, &self.pending, None, now)?;
            tx.commit()?;
            Ok(queued)
        })();
        let queued = match written {
            Ok(queued) => queued,
            Err(e) => {
                // Tried again after another interval, not in a loop.
                self.pending.postpone();
                return Err(e);
            }
        };
        if queued > 0 {
            self.alerts_queued.notify_one();
        }
        self.counted_through = self.counted_through.max(self.pending.through());
        self.pending.clear();
        self.has_pending.store(false, Ordering::Release);
        Ok(())
    }

    /// Stores every record of every job in one transaction. Either the whole batch is committed
    /// or none of it is; the caller acknowledges only after this returns `Ok`.
    ///
    /// Each error of the batch is looked up (or created) once. The events' counts are added to
    /// the counts waiting in memory and written when due (see [`counts`]), in this transaction
    /// if they are due now.
    fn write_batch(&mut self, jobs: &[&[Record]]) -> StoreResult<Vec<Vec<EventOutcome>>> {
        let tx = self.conn.transaction()?;
        let received_at = now_millis();
        let alert_now = self.clock.now_millis();
        let mut outcomes = Vec::with_capacity(jobs.len());
        // Events accepted in this batch, in arrival order.
        let mut accepted: Vec<&EventRecord> = Vec::new();
        {
            // A project may be deleted between a handler accepting its event and this commit.
            // Its records are skipped: inserting them would break the foreign key and fail the
            // whole batch, every other project's events included.
            let mut project_exists = tx.prepare_cached(
                "SELECT 1 FROM projects WHERE id = ?1 AND deleting_since IS NULL",
            )?;
            let mut live_project = |id: i64| -> StoreResult<bool> {
                Ok(project_exists
                    .query_row([id], |_| Ok(()))
                    .optional()?
                    .is_some())
            };
            let mut exists =
                tx.prepare_cached("SELECT 1 FROM events WHERE project_id = ?1 AND event_id = ?2")?;
            let mut insert_attachment = tx.prepare_cached(
                "INSERT INTO attachments (project_id, event_id, filename, content_type, attachment_type, data, received_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?;
            let mut insert_report = tx.prepare_cached(
                "INSERT INTO user_reports (project_id, event_id, name, email, comments, payload, received_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?;
            let mut in_batch: HashSet<(i64, &str)> = HashSet::new();
            // Each project is looked up once per batch: the transaction holds the write lock, so
            // a project found here cannot be deleted before the commit.
            let mut live_projects: HashMap<i64, bool> = HashMap::new();
            for job in jobs {
                let mut job_outcomes = Vec::new();
                for record in job.iter() {
                    let project_id = record.project_id();
                    let live = match live_projects.get(&project_id) {
                        Some(&live) => live,
                        None => {
                            let live = live_project(project_id)?;
                            live_projects.insert(project_id, live);
                            live
                        }
                    };
                    if !live {
                        if matches!(record, Record::Event(_)) {
                            job_outcomes.push(EventOutcome::ProjectGone);
                        }
                        continue;
                    }
                    match record {
                        Record::Event(e) => {
                            let dup = !in_batch.insert((e.project_id, e.event_id.as_str()))
                                || exists
                                    .query_row(params![e.project_id, e.event_id], |_| Ok(()))
                                    .optional()?
                                    .is_some();
                            if dup {
                                job_outcomes.push(EventOutcome::Duplicate);
                            } else {
                                accepted.push(e);
                                job_outcomes.push(EventOutcome::Stored);
                            }
                        }
                        Record::Attachment(a) => {
                            insert_attachment.execute(params![
                                a.project_id,
                                a.event_id,
                                a.filename,
                                a.content_type,
                                a.attachment_type,
                                a.data,
                                received_at
                            ])?;
                        }
                        Record::UserReport(u) => {
                            insert_report.execute(params![
                                u.project_id,
                                u.event_id,
                                u.name,
                                u.email,
                                u.comments,
                                u.payload,
                                received_at
                            ])?;
                        }
                    }
                }
                outcomes.push(job_outcomes);
            }
        }
        let stored = store_events(
            &tx,
            &accepted,
            received_at,
            &mut Known {
                users: &mut self.known_users,
                tags: &mut self.known_tags,
            },
            &mut self.pending,
            alert_now,
        )?;
        let mut alerts_queued = stored.alerts;
        // Counts wait in memory unless they are due, or an event took an id at or below the mark
        // (SQLite reused the id of a deleted newest event): then the recount after a crash would
        // not find that event, so its count is written with it.
        let flush = self.pending.due()
            || (!stored.counts.is_empty() && stored.counts.lowest() <= self.counted_through);
        if flush {
            counts::write(&self.pending, &tx)?;
            counts::write(&stored.counts, &tx)?;
            alerts_queued += check_frequency(&tx, &self.pending, Some(&stored.counts), alert_now)?;
        }
        tx.commit().map_err(|e| {
            let e = StoreError::from(e);
            if e.is_full() {
                StoreError::Full
            } else {
                e
            }
        })?;
        self.known_users.remember(stored.users);
        self.known_tags.remember(stored.tags);
        if flush {
            self.counted_through = self
                .counted_through
                .max(self.pending.through())
                .max(stored.counts.through());
            self.pending.clear();
            self.has_pending.store(false, Ordering::Release);
        } else if !stored.counts.is_empty() {
            self.pending.merge(stored.counts);
            // Before the caller answers any job of this batch.
            self.has_pending.store(true, Ordering::Release);
        }
        // After the flag: delivery has the counts written first, and must see them waiting.
        if alerts_queued > 0 {
            self.alerts_queued.notify_one();
        }
        Ok(outcomes)
    }
}

/// What [`store_events`] wrote, for the caller to act on once the batch commits.
struct Stored {
    /// (error, user) pairs stored or found stored, for [`KnownPairs`].
    users: Vec<(i64, i64)>,
    /// (error, tag hash) pairs stored or found stored.
    tags: Vec<(i64, i64)>,
    /// The batch's error counts, not yet written; also which event ids the batch was given.
    counts: PendingCounts,
    /// Alerts queued in the outbox for new and reopened errors.
    alerts: usize,
}

/// Checks the frequency rules of the errors whose counts are being written (see
/// [`alerts::check_frequency`]); nothing per error when no rule has a frequency trigger.
fn check_frequency(
    tx: &Transaction,
    pending: &PendingCounts,
    more: Option<&PendingCounts>,
    now: i64,
) -> StoreResult<usize> {
    if pending.is_empty() && more.is_none_or(PendingCounts::is_empty) {
        return Ok(0);
    }
    if !alerts::any_frequency_rule(tx)? {
        return Ok(0);
    }
    let mut ids: Vec<i64> = pending.error_ids().collect();
    if let Some(more) = more {
        ids.extend(more.error_ids());
    }
    ids.sort_unstable();
    ids.dedup();
    alerts::check_frequency(tx, &ids, now)
}

/// One error's share of a batch.
struct ErrorDelta<'a> {
    first: i64,
    last: i64,
    /// The newest event of the batch names and describes a new error.
    newest: &'a EventRecord,
}

/// The writer's memory of pairs already stored.
struct Known<'a> {
    users: &'a mut KnownPairs,
    tags: &'a mut KnownPairs,
}

/// Finds or creates each error of the batch once, then inserts the events, their users and
/// their search tags. The events are counted into the returned [`PendingCounts`], not into
/// their errors' rows.
fn store_events(
    tx: &rusqlite::Transaction,
    events: &[&EventRecord],
    received_at: i64,
    known: &mut Known,
    pending: &mut PendingCounts,
    alert_now: i64,
) -> StoreResult<Stored> {
    let mut stored = Stored {
        tags: Vec::new(),
        users: Vec::new(),
        counts: PendingCounts::default(),
        alerts: 0,
    };
    if events.is_empty() {
        return Ok(stored);
    }
    let mut deltas: HashMap<(i64, i64), ErrorDelta> = HashMap::new();
    for e in events {
        deltas
            .entry((e.project_id, e.fingerprint))
            .and_modify(|d| {
                d.first = d.first.min(e.occurred_at);
                d.last = d.last.max(e.occurred_at);
                d.newest = e;
            })
            .or_insert(ErrorDelta {
                first: e.occurred_at,
                last: e.occurred_at,
                newest: e,
            });
    }
    // An existing error that was resolved becomes unresolved again (a regression), an ignored
    // one stays ignored; an earlier event moves its first-seen time. Both are rare, so each has
    // its own statement after a plain lookup, which writes nothing in the common case. A new
    // error starts unresolved with a count of zero: its events are counted with the others.
    let mut find_error = tx.prepare_cached(
        "SELECT id, status, first_seen_at FROM errors WHERE project_id = ?1 AND fingerprint = ?2",
    )?;
    let mut insert_error = tx.prepare_cached(
        "INSERT INTO errors (project_id, fingerprint, name, description, actor, platform,
                             status, event_count, first_seen_at, last_seen_at, short_seq)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, 0, 0, ?7, ?8, ?9)
         RETURNING id",
    )?;
    // The short id's number (Sentry's `SHOP-1F`), taken from the project's counter in this
    // transaction, so numbers are unique per project and never handed out twice.
    let mut next_short_seq = tx.prepare_cached(
        "UPDATE projects SET error_seq = error_seq + 1 WHERE id = ?1 RETURNING error_seq",
    )?;
    let mut reopen = tx.prepare_cached("UPDATE errors SET status = ?2 WHERE id = ?1")?;
    let mut seen_earlier =
        tx.prepare_cached("UPDATE errors SET first_seen_at = ?2 WHERE id = ?1")?;
    let mut error_ids: HashMap<(i64, i64), i64> = HashMap::with_capacity(deltas.len());
    // In first-seen order, so that errors new in one batch are numbered as they happened.
    let mut ordered: Vec<(&(i64, i64), &ErrorDelta)> = deltas.iter().collect();
    ordered.sort_unstable_by_key(|(key, d)| (d.first, **key));
    for (key, d) in ordered {
        let existing: Option<(i64, i64, i64)> = find_error
            .query_row(params![key.0, key.1], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .optional()?;
        let id = match existing {
            Some((id, status, first_seen_at)) => {
                if status == ErrorStatus::Resolved.code() {
                    reopen.execute(params![id, ErrorStatus::Unresolved.code()])?;
                    stored.alerts += queue_alerts(tx, id, Trigger::Regression, d, alert_now)?;
                }
                if d.first < first_seen_at {
                    seen_earlier.execute(params![id, d.first])?;
                }
                id
            }
            None => {
                let e = d.newest;
                let short_seq: i64 = next_short_seq.query_row([e.project_id], |r| r.get(0))?;
                let id = insert_error.query_row(
                    params![
                        e.project_id,
                        e.fingerprint,
                        e.name,
                        e.description,
                        e.actor,
                        e.platform,
                        d.first,
                        d.last,
                        short_seq
                    ],
                    |r| r.get(0),
                )?;
                // A new error may reuse the id of a deleted one.
                known.users.forget_error(id);
                known.tags.forget_error(id);
                pending.forget_error(id);
                stored.alerts += queue_alerts(tx, id, Trigger::NewError, d, alert_now)?;
                id
            }
        };
        error_ids.insert(*key, id);
    }
    let mut insert_event = tx.prepare_cached(
        "INSERT INTO events (project_id, error_id, event_id, occurred_at, received_at, level,
                             environment, release, platform, user_identity, message,
                             is_message, name, description, actor, payload, payload_codec)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)",
    )?;
    let mut add_user = tx.prepare_cached(
        "INSERT OR IGNORE INTO error_users (error_id, user_hash) VALUES (?1, ?2)",
    )?;
    let mut count_user = tx.prepare_cached(
        "UPDATE errors SET approximated_user_count = approximated_user_count + 1 WHERE id = ?1",
    )?;
    let mut add_tag = tx.prepare_cached(
        "INSERT OR IGNORE INTO error_tags (error_id, key, value) VALUES (?1, ?2, ?3)",
    )?;
    for e in events {
        let error_id = error_ids[&(e.project_id, e.fingerprint)];
        insert_event.execute(params![
            e.project_id,
            error_id,
            e.event_id,
            e.occurred_at,
            received_at,
            e.level,
            e.environment,
            e.release,
            e.platform,
            e.user_identity,
            e.message,
            e.is_message,
            e.name,
            e.description,
            e.actor,
            e.payload,
            e.payload_codec.code()
        ])?;
        let event_row = tx.last_insert_rowid();
        stored.counts.add(
            event_row,
            error_id,
            e.fingerprint,
            e.occurred_at,
            &e.description,
            &e.actor,
        );
        if let Some(user) = &e.user_identity {
            let user = user_hash(user);
            if !known.users.contains(error_id, user) {
                if add_user.execute(params![error_id, user])? > 0 {
                    count_user.execute([error_id])?;
                }
                stored.users.push((error_id, user));
            }
        }
        // Sentry reads an event without a level as `error`.
        let own = [
            ("environment", e.environment.as_deref()),
            ("release", e.release.as_deref()),
            ("level", Some(e.level.as_deref().unwrap_or("error"))),
        ];
        let own = own
            .into_iter()
            .filter_map(|(key, value)| Some((key, value?)));
        let sent = e.search_tags.iter().map(|(k, v)| (k.as_str(), v.as_str()));
        for (key, value) in own.chain(sent) {
            let tag = tag_hash(key, value);
            if !known.tags.contains(error_id, tag) {
                add_tag.execute(params![error_id, key, value])?;
                stored.tags.push((error_id, tag));
            }
        }
    }
    Ok(stored)
}

/// Queues the alerts of a new or reopened error, in the batch's transaction, so that an alert
/// exists exactly when the change that caused it is committed. The rules' filters are checked
/// against the batch's newest event of the error.
fn queue_alerts(
    tx: &Transaction,
    error_id: i64,
    trigger: Trigger,
    d: &ErrorDelta,
    now: i64,
) -> StoreResult<usize> {
    let e = d.newest;
    alerts::queue_for_error(
        tx,
        e.project_id,
        error_id,
        trigger,
        e.environment.as_deref(),
        e.level.as_deref().unwrap_or("error"),
        now,
    )
}

/// A hash of a (key, value) tag, for [`KnownPairs`]; kept in memory only, so a fast keyed hash
/// with fixed keys does (the writer hashes every tag of every event). A collision between two
/// tags of one error would skip an insert, with odds of about one in 2^64 per pair of tags.
fn tag_hash(key: &str, value: &str) -> i64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut h);
    value.hash(&mut h);
    h.finish() as i64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::ingest::test_event;
    use crate::store::sqlite::SqliteStore;

    fn sink(dir: &tempfile::TempDir) -> SqliteSink {
        let store = SqliteStore::open_with(SqliteOptions {
            path: dir.path().join("sink.db"),
            synchronous: Default::default(),
            max_page_count: None,
        })
        .expect("database opens and migrates");
        let sink = SqliteSink::open(store.options(), SinkHooks::default()).expect("sink opens");
        sink.conn
            .execute_batch(
                "INSERT INTO projects (id, name, path, namespace_path, path_with_namespace, created_at)
                 VALUES (1, 'p', 'p', 'g', 'g/p', 0);",
            )
            .expect("project");
        sink
    }

    fn event(id: u64, fingerprint: i64, occurred_at: i64, description: &str) -> Record {
        Record::Event(EventRecord {
            description: description.into(),
            ..test_event(id, fingerprint, occurred_at)
        })
    }

    /// One batch, its counts left in memory as the writer leaves them between flushes.
    fn write_unsettled(sink: &mut SqliteSink, records: Vec<Record>) -> Vec<EventOutcome> {
        let jobs: Vec<Vec<Record>> = records.into_iter().map(|r| vec![r]).collect();
        let slices: Vec<&[Record]> = jobs.iter().map(Vec::as_slice).collect();
        sink.write_batch(&slices)
            .expect("batch commits")
            .into_iter()
            .flatten()
            .collect()
    }

    /// One batch with its counts written, as a reader sees it.
    fn write(sink: &mut SqliteSink, records: Vec<Record>) -> Vec<EventOutcome> {
        let outcomes = write_unsettled(sink, records);
        sink.flush_counts().expect("counts written");
        outcomes
    }

    /// Sum of `event_count` and of `error_hourly.count` over all errors, and the mark.
    fn stored_counts(sink: &SqliteSink) -> (i64, i64, i64) {
        sink.conn
            .query_row(
                "SELECT (SELECT COALESCE(SUM(event_count), 0) FROM errors),
                        (SELECT COALESCE(SUM(count), 0) FROM error_hourly),
                        (SELECT counted_through FROM ingest_state)",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .expect("counts")
    }

    fn reopen(dir: &tempfile::TempDir) -> SqliteSink {
        let opts = SqliteOptions {
            path: dir.path().join("sink.db"),
            synchronous: Default::default(),
            max_page_count: None,
        };
        SqliteSink::open(&opts, SinkHooks::default()).expect("sink reopens")
    }

    #[test]
    fn counts_wait_in_memory_until_flushed() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut sink = sink(&dir);
        let flag = sink.pending_flag();
        write_unsettled(
            &mut sink,
            vec![event(1, 7, 5_000, "a"), event(2, 8, 6_000, "b")],
        );
        assert!(flag.load(Ordering::Acquire), "readers are told counts wait");
        // The new errors exist at once (lists can name them); their counts come with the flush.
        assert_eq!(stored_counts(&sink), (0, 0, 0));
        assert_eq!(error_row(&sink, 7), (0, 0, 5_000, 5_000, "a".into()));
        sink.flush_counts().expect("flush");
        assert!(!flag.load(Ordering::Acquire));
        assert_eq!(stored_counts(&sink), (2, 2, 2));
        assert_eq!(error_row(&sink, 8), (1, 0, 6_000, 6_000, "b".into()));
    }

    #[test]
    fn counts_lost_with_the_process_are_recounted_once_at_the_next_start() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut sink = sink(&dir);
        write(
            &mut sink,
            vec![event(1, 7, 5_000, "a"), event(2, 7, 6_000, "b")],
        );
        write_unsettled(
            &mut sink,
            vec![event(3, 7, 9_000, "c"), event(4, 9, 7_200_000, "d")],
        );
        assert_eq!(stored_counts(&sink), (2, 2, 2));
        // The process dies with two events counted only in memory.
        drop(sink);
        let sink = reopen(&dir);
        assert_eq!(stored_counts(&sink), (4, 4, 4));
        assert_eq!(error_row(&sink, 7), (3, 0, 5_000, 9_000, "c".into()));
        assert_eq!(
            error_row(&sink, 9),
            (1, 0, 7_200_000, 7_200_000, "d".into())
        );
        // Starting again finds nothing left to count.
        drop(sink);
        let mut sink = reopen(&dir);
        assert_eq!(stored_counts(&sink), (4, 4, 4));
        write(&mut sink, vec![event(5, 9, 7_300_000, "e")]);
        assert_eq!(stored_counts(&sink), (5, 5, 5));
    }

    #[test]
    fn an_event_reusing_a_counted_id_is_counted_with_its_batch() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut sink = sink(&dir);
        write(
            &mut sink,
            vec![event(1, 7, 5_000, "a"), event(2, 7, 6_000, "b")],
        );
        assert_eq!(stored_counts(&sink).2, 2);
        // The newest event goes (as when its project is deleted); SQLite hands its id out again.
        sink.conn
            .execute("DELETE FROM events WHERE id = 2", [])
            .expect("delete");
        write_unsettled(&mut sink, vec![event(3, 7, 7_000, "c")]);
        let reused: i64 = sink
            .conn
            .query_row("SELECT MAX(id) FROM events", [], |r| r.get(0))
            .expect("id");
        assert_eq!(reused, 2, "the id was reused");
        // Counted in the batch's own transaction: a crash now cannot lose it.
        assert_eq!(stored_counts(&sink).0, 3);
        drop(sink);
        let sink = reopen(&dir);
        assert_eq!(stored_counts(&sink).0, 3, "and it is not counted twice");
    }

    #[test]
    fn counts_of_a_deleted_error_do_not_land_on_the_error_that_takes_its_id() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut sink = sink(&dir);
        write_unsettled(&mut sink, vec![event(1, 7, 5_000, "a")]);
        // The error and its event are deleted before the flush (a project deletion does this).
        sink.conn
            .execute_batch("DELETE FROM events; DELETE FROM errors;")
            .expect("delete");
        write(&mut sink, vec![event(2, 8, 6_000, "b")]);
        assert_eq!(error_row(&sink, 8).0, 1, "only its own event");
        // Its hour too: the deleted error's hourly count (same hour, same id) is not added.
        let (events, hourly, _) = stored_counts(&sink);
        assert_eq!((events, hourly), (1, 1));
    }

    /// (event_count, status, first_seen_at, last_seen_at, description) of the error.
    fn error_row(sink: &SqliteSink, fingerprint: i64) -> (i64, i64, i64, i64, String) {
        sink.conn
            .query_row(
                "SELECT event_count, status, first_seen_at, last_seen_at, description
                 FROM errors WHERE fingerprint = ?1",
                [fingerprint],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
            )
            .expect("error row")
    }

    #[test]
    fn new_errors_take_the_projects_next_short_number_never_a_used_one() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut sink = sink(&dir);
        // One batch, two new errors: numbered in the order they were first seen.
        write(
            &mut sink,
            vec![event(1, 7, 9_000, "late"), event(2, 8, 1_000, "early")],
        );
        let seq = |sink: &SqliteSink, fingerprint: i64| -> Option<i64> {
            sink.conn
                .query_row(
                    "SELECT short_seq FROM errors WHERE fingerprint = ?1",
                    [fingerprint],
                    |r| r.get(0),
                )
                .optional()
                .expect("query")
        };
        assert_eq!((seq(&sink, 8), seq(&sink, 7)), (Some(1), Some(2)));
        // The newest error goes; its number is not handed out again.
        sink.conn
            .execute("DELETE FROM errors WHERE fingerprint = 7", [])
            .expect("delete");
        write(&mut sink, vec![event(3, 9, 10_000, "new")]);
        assert_eq!(seq(&sink, 9), Some(3));
        // An event of a known error takes no number.
        write(&mut sink, vec![event(4, 8, 11_000, "again")]);
        assert_eq!(seq(&sink, 8), Some(1));
    }

    #[test]
    fn counts_span_batches_and_seen_times_widen_both_ways() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut sink = sink(&dir);
        write(
            &mut sink,
            vec![event(1, 7, 5_000, "a"), event(2, 7, 6_000, "b")],
        );
        assert_eq!(error_row(&sink, 7), (2, 0, 5_000, 6_000, "b".into()));
        // A late event older than anything seen moves first_seen back, not last_seen.
        write(&mut sink, vec![event(3, 7, 1_000, "c")]);
        assert_eq!(error_row(&sink, 7), (3, 0, 1_000, 6_000, "c".into()));
        write(&mut sink, vec![event(4, 7, 9_000, "d")]);
        assert_eq!(error_row(&sink, 7), (4, 0, 1_000, 9_000, "d".into()));
    }

    #[test]
    fn resolved_errors_reopen_and_ignored_ones_stay_ignored() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut sink = sink(&dir);
        write(
            &mut sink,
            vec![event(1, 7, 1_000, "a"), event(2, 8, 1_000, "a")],
        );
        sink.conn
            .execute_batch(
                "UPDATE errors SET status = 1 WHERE fingerprint = 7;
                 UPDATE errors SET status = 2 WHERE fingerprint = 8;",
            )
            .expect("triage");
        write(
            &mut sink,
            vec![event(3, 7, 2_000, "a"), event(4, 8, 2_000, "a")],
        );
        assert_eq!(error_row(&sink, 7).1, ErrorStatus::Unresolved.code());
        assert_eq!(error_row(&sink, 8).1, ErrorStatus::Ignored.code());
        assert_eq!(error_row(&sink, 7).0, 2);
    }

    fn with_user(id: u64, fingerprint: i64, user: &str) -> Record {
        Record::Event(EventRecord {
            user_identity: Some(user.into()),
            ..test_event(id, fingerprint, 1_000)
        })
    }

    fn users_of(sink: &SqliteSink, fingerprint: i64) -> (i64, i64) {
        sink.conn
            .query_row(
                "SELECT id, approximated_user_count FROM errors WHERE fingerprint = ?1",
                [fingerprint],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .expect("error row")
    }

    #[test]
    fn each_user_counts_once_per_error_across_batches() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut sink = sink(&dir);
        write(
            &mut sink,
            vec![with_user(1, 7, "id:a"), with_user(2, 7, "id:a")],
        );
        write(
            &mut sink,
            vec![with_user(3, 7, "id:a"), with_user(4, 7, "id:b")],
        );
        write(
            &mut sink,
            vec![with_user(5, 7, "id:b"), with_user(6, 8, "id:a")],
        );
        assert_eq!(users_of(&sink, 7).1, 2);
        assert_eq!(users_of(&sink, 8).1, 1);
    }

    #[test]
    fn a_new_error_reusing_a_deleted_errors_id_counts_its_users_afresh() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut sink = sink(&dir);
        write(&mut sink, vec![with_user(1, 7, "id:a")]);
        let (old_id, users) = users_of(&sink, 7);
        assert_eq!(users, 1);
        // Deleted the way the API and retention delete: on a connection that cascades.
        let api = open_connection(&SqliteOptions {
            path: dir.path().join("sink.db"),
            synchronous: Default::default(),
            max_page_count: None,
        })
        .expect("connection");
        api.execute("DELETE FROM errors WHERE id = ?1", [old_id])
            .expect("delete");
        write(&mut sink, vec![with_user(2, 8, "id:a")]);
        let (new_id, users) = users_of(&sink, 8);
        assert_eq!(
            new_id, old_id,
            "SQLite gave the new error the deleted error's id"
        );
        assert_eq!(users, 1, "the user counts for the new error");
    }

    #[test]
    fn known_users_start_over_when_full() {
        let mut known = KnownPairs::default();
        known.remember((0..KNOWN_USERS_MAX as i64).map(|u| (1, u)).collect());
        assert!(known.contains(1, 0));
        assert_eq!(known.len, KNOWN_USERS_MAX);
        known.remember(vec![(2, 5)]);
        assert_eq!(known.len, 1);
        assert!(!known.contains(1, 0) && known.contains(2, 5));
        known.forget_error(2);
        assert_eq!(known.len, 0);
        assert!(!known.contains(2, 5));
    }

    #[test]
    fn duplicates_are_not_counted_and_unknown_projects_are_skipped() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut sink = sink(&dir);
        let mut gone = event(9, 7, 1_000, "a");
        if let Record::Event(e) = &mut gone {
            e.project_id = 2;
        }
        let outcomes = write(
            &mut sink,
            vec![event(1, 7, 1_000, "a"), event(1, 7, 1_000, "a"), gone],
        );
        assert_eq!(
            outcomes,
            [
                EventOutcome::Stored,
                EventOutcome::Duplicate,
                EventOutcome::ProjectGone
            ]
        );
        assert_eq!(
            write(&mut sink, vec![event(1, 7, 1_000, "a")]),
            [EventOutcome::Duplicate]
        );
        assert_eq!(error_row(&sink, 7).0, 1);
        let events: i64 = sink
            .conn
            .query_row("SELECT COUNT(*) FROM events", [], |r| r.get(0))
            .expect("count");
        assert_eq!(events, 1);
    }
}
