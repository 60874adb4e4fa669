//! What ingestion writes: the records an accepted request turns into, and the SQLite transaction
//! body that stores one batch of them. The batching itself (queue, timing, acknowledgements) is
//! [`crate::writer`]'s; this file only knows SQL.

use std::collections::{HashMap, HashSet};

use rusqlite::{params, Connection, OptionalExtension};

use super::sqlite::{now_millis, open_connection, SqliteOptions};
use super::{StoreError, StoreResult};

/// One stored event, with the fields grouping and listing need already extracted.
#[derive(Debug, Clone)]
pub struct EventRecord {
    pub project_id: i64,
    /// 32 lowercase hex.
    pub event_id: String,
    pub fingerprint: i64,
    pub name: String,
    pub description: String,
    pub actor: String,
    pub platform: Option<String>,
    pub level: Option<String>,
    pub environment: Option<String>,
    pub release: Option<String>,
    pub message: Option<String>,
    pub is_message: bool,
    pub user_identity: Option<String>,
    /// When the event happened (the SDK's timestamp), unix milliseconds.
    pub occurred_at: i64,
    /// The event JSON exactly as sent (after decompression).
    pub payload: Vec<u8>,
}

#[derive(Debug, Clone)]
pub struct AttachmentRecord {
    pub project_id: i64,
    pub event_id: String,
    pub filename: String,
    pub content_type: Option<String>,
    pub attachment_type: Option<String>,
    pub data: Vec<u8>,
}

#[derive(Debug, Clone)]
pub struct UserReportRecord {
    pub project_id: i64,
    pub event_id: Option<String>,
    pub name: Option<String>,
    pub email: Option<String>,
    pub comments: Option<String>,
    pub payload: Vec<u8>,
}

#[derive(Debug, Clone)]
pub enum Record {
    Event(EventRecord),
    Attachment(AttachmentRecord),
    UserReport(UserReportRecord),
}

impl Record {
    pub fn project_id(&self) -> i64 {
        match self {
            Record::Event(e) => e.project_id,
            Record::Attachment(a) => a.project_id,
            Record::UserReport(u) => u.project_id,
        }
    }
}

/// What happened to one event of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventOutcome {
    Stored,
    /// An event with this id is already stored for the project (an SDK or proxy retry).
    Duplicate,
    /// The project was deleted after the event was accepted; nothing was written for it, as
    /// the deletion would have removed it anyway.
    ProjectGone,
}

/// Writes batches into SQLite on the writer's own connection.
pub struct EventSink {
    conn: Connection,
}

impl EventSink {
    pub fn open(opts: &SqliteOptions) -> StoreResult<EventSink> {
        let conn = open_connection(opts)?;
        // The writer touches the same index pages batch after batch; 32 MiB of page cache
        // (SQLite's default is 2 MiB) keeps them in memory instead of re-reading them.
        conn.pragma_update(None, "cache_size", -32_768)?;
        Ok(EventSink { conn })
    }

    /// Stores every record of every job in one transaction. Either the whole batch is committed
    /// or none of it is; the caller acknowledges only after this returns `Ok`.
    ///
    /// Events of the same error within a batch are counted with one upsert of their error (and
    /// one per hour bucket) rather than one per event: under load a batch holds hundreds of
    /// events of a few errors, and each upsert rewrites the error's three list-index entries.
    pub fn write_batch(&mut self, jobs: &[&[Record]]) -> StoreResult<Vec<Vec<EventOutcome>>> {
        let tx = self.conn.transaction()?;
        let received_at = now_millis();
        let mut outcomes = Vec::with_capacity(jobs.len());
        // Events accepted in this batch, in arrival order.
        let mut accepted: Vec<&EventRecord> = Vec::new();
        {
            // A project may be deleted between a handler accepting its event and this commit.
            // Its records are skipped: inserting them would break the foreign key and fail the
            // whole batch, every other project's events included.
            let mut project_exists = tx.prepare_cached("SELECT 1 FROM projects WHERE id = ?1")?;
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
            for job in jobs {
                let mut job_outcomes = Vec::new();
                // Every record of a job comes from one request, hence one project; the lookup is
                // still made per project id rather than assumed.
                let mut checked: Option<(i64, bool)> = None;
                for record in job.iter() {
                    let project_id = record.project_id();
                    let live = match checked {
                        Some((id, live)) if id == project_id => live,
                        _ => {
                            let live = live_project(project_id)?;
                            checked = Some((project_id, live));
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
        store_events(&tx, &accepted, received_at)?;
        tx.commit().map_err(|e| {
            let e = StoreError::from(e);
            if e.is_full() {
                StoreError::Full
            } else {
                e
            }
        })?;
        Ok(outcomes)
    }
}

/// One error's share of a batch.
struct ErrorDelta<'a> {
    count: i64,
    first: i64,
    last: i64,
    /// The newest event of the batch names and describes the error.
    newest: &'a EventRecord,
}

/// Upserts each error once with the batch's count, then inserts the events, hourly counts and
/// users.
fn store_events(
    tx: &rusqlite::Transaction,
    events: &[&EventRecord],
    received_at: i64,
) -> StoreResult<()> {
    if events.is_empty() {
        return Ok(());
    }
    let mut deltas: HashMap<(i64, i64), ErrorDelta> = HashMap::new();
    for e in events {
        deltas
            .entry((e.project_id, e.fingerprint))
            .and_modify(|d| {
                d.count += 1;
                d.first = d.first.min(e.occurred_at);
                d.last = d.last.max(e.occurred_at);
                d.newest = e;
            })
            .or_insert(ErrorDelta {
                count: 1,
                first: e.occurred_at,
                last: e.occurred_at,
                newest: e,
            });
    }
    // A new error starts unresolved; an existing one counts the events, keeps the newest
    // description, and a resolved one becomes unresolved again (a regression). Ignored errors
    // stay ignored.
    let mut upsert_error = tx.prepare_cached(
        "INSERT INTO errors (project_id, fingerprint, name, description, actor, platform,
                             status, event_count, first_seen_at, last_seen_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, 0, ?7, ?8, ?9)
         ON CONFLICT (project_id, fingerprint) DO UPDATE SET
             event_count = event_count + excluded.event_count,
             description = excluded.description,
             actor = excluded.actor,
             last_seen_at = MAX(last_seen_at, excluded.last_seen_at),
             first_seen_at = MIN(first_seen_at, excluded.first_seen_at),
             status = CASE WHEN status = 1 THEN 0 ELSE status END
         RETURNING id",
    )?;
    let mut error_ids: HashMap<(i64, i64), i64> = HashMap::with_capacity(deltas.len());
    for (key, d) in &deltas {
        let e = d.newest;
        let id: i64 = upsert_error.query_row(
            params![
                e.project_id,
                e.fingerprint,
                e.name,
                e.description,
                e.actor,
                e.platform,
                d.count,
                d.first,
                d.last
            ],
            |r| r.get(0),
        )?;
        error_ids.insert(*key, id);
    }
    let mut insert_event = tx.prepare_cached(
        "INSERT INTO events (project_id, error_id, event_id, occurred_at, received_at, level,
                             environment, release, platform, user_identity, message,
                             is_message, name, description, actor, payload)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)",
    )?;
    let mut add_user = tx.prepare_cached(
        "INSERT OR IGNORE INTO error_users (error_id, user_hash) VALUES (?1, ?2)",
    )?;
    let mut count_user = tx.prepare_cached(
        "UPDATE errors SET approximated_user_count = approximated_user_count + 1 WHERE id = ?1",
    )?;
    let mut hours: HashMap<(i64, i64), i64> = HashMap::new();
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
            e.payload
        ])?;
        *hours
            .entry((error_id, e.occurred_at.div_euclid(3_600_000) * 3600))
            .or_default() += 1;
        if let Some(user) = &e.user_identity {
            if add_user.execute(params![error_id, user_hash(user)])? > 0 {
                count_user.execute([error_id])?;
            }
        }
    }
    let mut bump_hour = tx.prepare_cached(
        "INSERT INTO error_hourly (error_id, hour, count) VALUES (?1, ?2, ?3)
         ON CONFLICT (error_id, hour) DO UPDATE SET count = count + excluded.count",
    )?;
    for ((error_id, hour), n) in hours {
        bump_hour.execute(params![error_id, hour, n])?;
    }
    Ok(())
}

/// A stable 63-bit hash of a user identity; the identity itself is not stored twice.
fn user_hash(user: &str) -> i64 {
    use sha2::{Digest, Sha256};
    let d = Sha256::digest(user.as_bytes());
    let mut b = [0u8; 8];
    b.copy_from_slice(&d[..8]);
    (u64::from_be_bytes(b) & (i64::MAX as u64)) as i64
}
