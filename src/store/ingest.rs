//! What ingestion writes: the records an accepted request turns into, and [`EventSink`], the
//! backend's side of the writer: one transaction per batch, and the error counts it adds up in
//! memory between flushes ([`super::counts`]). The batching itself (queue, timing,
//! acknowledgements) is [`crate::writer`]'s; each backend's SQL is in its own folder.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use super::payload::PayloadCodec;
use super::StoreResult;
use crate::clock::WallClock;

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
    /// (key, value) pairs the read API's search finds the event's error by, beside the
    /// record's own `environment`, `release` and `level` (which the writer adds): `user`
    /// (`id:...`, `email:...`, `username:...`) and the SDK's tags. Stored once per error in
    /// `error_tags`.
    pub search_tags: Vec<(String, String)>,
    /// When the event happened (the SDK's timestamp), unix milliseconds.
    pub occurred_at: i64,
    /// The event as stored, encoded as `payload_codec` says.
    pub payload: Vec<u8>,
    pub payload_codec: PayloadCodec,
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

/// The writer's connection to the database, whatever the backend. The writer thread owns it
/// and calls it from that thread only, so methods take `&mut self` and may block.
pub trait EventSink: Send {
    /// Stores every record of every job in one transaction. Either the whole batch is committed
    /// or none of it is; the caller acknowledges only after this returns `Ok`. Counts may be left
    /// in memory (see [`super::counts`]); a batch's events are stored exactly once.
    fn write_batch(&mut self, jobs: &[&[Record]]) -> StoreResult<Vec<Vec<EventOutcome>>>;
    /// Writes the error counts waiting in memory, in a transaction of their own.
    fn flush_counts(&mut self) -> StoreResult<()>;
    /// How long until the waiting counts should be written, if any wait.
    fn counts_due_in(&self) -> Option<Duration>;
    /// A flag that is set while error counts wait in memory: set before a batch's jobs are
    /// answered, cleared once its counts are written, so a reader that saw a 200 and then finds
    /// it clear knows the counts are in the database.
    fn pending_flag(&self) -> Arc<AtomicBool>;
}

/// What a sink shares with alerting: its clock (frequency windows, the outbox rows' times) and
/// the wake-up it gives the delivery task after a commit that queued alerts.
#[derive(Clone, Default)]
pub struct SinkHooks {
    pub clock: Arc<WallClock>,
    pub alerts_queued: Arc<Notify>,
}

/// A stable 63-bit hash of a user identity, as `error_users.user_hash` holds it in every
/// backend (the identity itself is not stored twice there).
pub fn user_hash(user: &str) -> i64 {
    use sha2::{Digest, Sha256};
    let d = Sha256::digest(user.as_bytes());
    let mut b = [0u8; 8];
    b.copy_from_slice(&d[..8]);
    (u64::from_be_bytes(b) & (i64::MAX as u64)) as i64
}

/// An error event of project 1 with the given id number, fingerprint and time; tests adjust
/// the fields they care about with struct update syntax.
#[cfg(test)]
pub(crate) fn test_event(n: u64, fingerprint: i64, occurred_at: i64) -> EventRecord {
    EventRecord {
        project_id: 1,
        event_id: format!("{n:032x}"),
        fingerprint,
        name: "ValueError".into(),
        description: "d".into(),
        actor: "f(m)".into(),
        platform: None,
        level: None,
        environment: None,
        release: None,
        message: None,
        is_message: false,
        user_identity: None,
        search_tags: Vec::new(),
        occurred_at,
        payload: b"{}".to_vec(),
        payload_codec: PayloadCodec::Json,
    }
}
