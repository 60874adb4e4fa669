//! The read side: listing and inspecting errors, their events and message events, and changing an
//! error's status. Every list is a keyset page (the last row's sort key and id, never an OFFSET)
//! over one of the indexes of migration 2; turning a [`Keyset`] into an opaque cursor is the HTTP
//! layer's business.

use std::collections::HashMap;

use super::StoreResult;
use async_trait::async_trait;
use chrono::{DateTime, Utc};

/// An error's triage state, stored as 0, 1, 2 in `errors.status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorStatus {
    Unresolved,
    Resolved,
    Ignored,
}

impl ErrorStatus {
    pub fn code(self) -> i64 {
        match self {
            ErrorStatus::Unresolved => 0,
            ErrorStatus::Resolved => 1,
            ErrorStatus::Ignored => 2,
        }
    }

    pub(crate) fn from_code(code: i64) -> ErrorStatus {
        match code {
            1 => ErrorStatus::Resolved,
            2 => ErrorStatus::Ignored,
            // The writer only ever stores 0, 1 or 2; anything else would be a bug elsewhere, and
            // showing it as unresolved keeps it visible rather than hiding it.
            _ => ErrorStatus::Unresolved,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorStatus::Unresolved => "unresolved",
            ErrorStatus::Resolved => "resolved",
            ErrorStatus::Ignored => "ignored",
        }
    }

    pub fn parse(s: &str) -> Option<ErrorStatus> {
        match s {
            "unresolved" => Some(ErrorStatus::Unresolved),
            "resolved" => Some(ErrorStatus::Resolved),
            "ignored" => Some(ErrorStatus::Ignored),
            _ => None,
        }
    }
}

/// Orders of the error list, all descending, each backed by its own index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorSort {
    LastSeenDesc,
    FirstSeenDesc,
    FrequencyDesc,
}

impl ErrorSort {
    /// The sort column; a fixed string, so formatting it into SQL cannot inject anything.
    pub(crate) fn column(self) -> &'static str {
        match self {
            ErrorSort::LastSeenDesc => "last_seen_at",
            ErrorSort::FirstSeenDesc => "first_seen_at",
            ErrorSort::FrequencyDesc => "event_count",
        }
    }
}

/// Orders of one error's events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventSort {
    OccurredAtAsc,
    OccurredAtDesc,
}

/// Where a page starts: strictly after the row with this sort key and id, in the list's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keyset {
    pub key: i64,
    pub id: i64,
}

/// One page of a keyset-paginated list; `next` is set only when more rows follow.
#[derive(Debug, Clone)]
pub struct KeysetPage<T> {
    pub items: Vec<T>,
    pub next: Option<Keyset>,
}

#[derive(Debug, Clone)]
pub struct ErrorQuery {
    pub project_id: i64,
    /// Projects listed together with `project_id` (an organization-wide list); usually empty.
    pub other_projects: Vec<i64>,
    /// `None` lists every status.
    pub status: Option<ErrorStatus>,
    pub sort: ErrorSort,
    /// Free text matched, case-insensitively for ASCII, anywhere in the name or description.
    pub text: Option<String>,
    /// Each filter must hold: some event of the error carried the key with one of the values
    /// (`error_tags`).
    pub tags: Vec<TagFilter>,
    /// Only errors seen at some time in `[from, until]` (unix milliseconds): first seen no later
    /// than `until` and last seen no earlier than `from`.
    pub seen_between: Option<(i64, i64)>,
    pub limit: u32,
    pub after: Option<Keyset>,
    /// Walk towards the start of the list: the page is the `limit` rows just before `after`
    /// (still returned in list order), and `next` is set when more rows precede them.
    pub backward: bool,
}

impl ErrorQuery {
    /// The first page of one project's errors with `status`, in `sort` order.
    pub fn new(project_id: i64, status: Option<ErrorStatus>, sort: ErrorSort) -> ErrorQuery {
        ErrorQuery {
            project_id,
            other_projects: Vec::new(),
            status,
            sort,
            text: None,
            tags: Vec::new(),
            seen_between: None,
            limit: 20,
            after: None,
            backward: false,
        }
    }
}

/// An error matches when one of its events carried `key` with any of `values` (exactly, case
/// included, as Sentry's tag search does).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagFilter {
    pub key: String,
    pub values: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct EventQuery {
    pub project_id: i64,
    pub fingerprint: i64,
    pub sort: EventSort,
    pub limit: u32,
    pub after: Option<Keyset>,
    /// As [`ErrorQuery::backward`]: the `limit` rows just before `after`, in list order.
    pub backward: bool,
}

#[derive(Debug, Clone)]
pub struct MessageQuery {
    pub project_id: i64,
    pub limit: u32,
    pub after: Option<Keyset>,
    /// As [`ErrorQuery::backward`].
    pub backward: bool,
}

/// Hours in the `stats.frequency["24h"]` series.
pub const FREQUENCY_HOURS: i64 = 24;

/// An error group as the read API shows it.
#[derive(Debug, Clone)]
pub struct TrackedError {
    pub id: i64,
    pub project_id: i64,
    pub fingerprint: i64,
    pub name: String,
    pub description: String,
    pub actor: String,
    pub event_count: i64,
    pub approximated_user_count: i64,
    pub first_seen_at: DateTime<Utc>,
    pub last_seen_at: DateTime<Utc>,
    pub status: ErrorStatus,
    /// The error's number within its project, for Sentry's short id (`SHOP-1F`).
    pub short_seq: i64,
    pub platform: Option<String>,
    /// Oldest first: `(unix second at the start of the hour, events in that hour)`, ending with
    /// the current hour, always [`FREQUENCY_HOURS`] entries.
    pub frequency_24h: Vec<(i64, i64)>,
    pub(crate) first_seen_ms: i64,
    pub(crate) last_seen_ms: i64,
}

impl TrackedError {
    /// Where this error sits in a list in `sort` order.
    pub fn keyset(&self, sort: ErrorSort) -> Keyset {
        let key = match sort {
            ErrorSort::LastSeenDesc => self.last_seen_ms,
            ErrorSort::FirstSeenDesc => self.first_seen_ms,
            ErrorSort::FrequencyDesc => self.event_count,
        };
        Keyset { key, id: self.id }
    }
}

/// One stored event of an error.
#[derive(Debug, Clone)]
pub struct StoredEvent {
    pub id: i64,
    pub project_id: i64,
    pub fingerprint: i64,
    pub event_id: String,
    pub occurred_at: DateTime<Utc>,
    /// The event JSON exactly as the SDK sent it (after decompression).
    pub payload: Vec<u8>,
    pub name: String,
    pub description: String,
    pub actor: String,
    pub environment: Option<String>,
    pub platform: Option<String>,
    pub(crate) occurred_ms: i64,
}

impl StoredEvent {
    /// Where this event sits in its error's event list.
    pub fn keyset(&self) -> Keyset {
        Keyset {
            key: self.occurred_ms,
            id: self.id,
        }
    }
}

/// One message event (an event without an exception).
#[derive(Debug, Clone)]
pub struct StoredMessage {
    pub id: i64,
    pub project_id: i64,
    pub event_id: String,
    pub occurred_at: DateTime<Utc>,
    /// `error` when the event did not say (Sentry's default).
    pub level: String,
    pub message: Option<String>,
    pub release: Option<String>,
    pub environment: Option<String>,
    pub platform: Option<String>,
    pub(crate) occurred_ms: i64,
}

impl StoredMessage {
    /// Where this message sits in the project's message list.
    pub fn keyset(&self) -> Keyset {
        Keyset {
            key: self.occurred_ms,
            id: self.id,
        }
    }
}

/// What Sentry's issue shape tells beyond the error row, read from the error's events.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IssueExtras {
    /// The newest event has no exception (Sentry's `default` issue type).
    pub is_message: bool,
    /// The newest event's level, when it said.
    pub level: Option<String>,
    /// The releases of the oldest and the newest event.
    pub first_release: Option<String>,
    pub last_release: Option<String>,
}

/// An error's newest event, for Sentry's "latest event".
#[derive(Debug, Clone)]
pub struct LatestEvent {
    pub event_id: String,
    pub occurred_at: DateTime<Utc>,
    pub received_at: DateTime<Utc>,
    /// The event JSON as the SDK sent it.
    pub payload: Vec<u8>,
}

/// Events counted per time bucket, over the errors an [`ErrorQuery`]-like filter selects.
#[derive(Debug, Clone)]
pub struct EventCountQuery {
    /// At least one project.
    pub projects: Vec<i64>,
    pub status: Option<ErrorStatus>,
    pub text: Option<String>,
    /// Filters on the error, as in [`ErrorQuery::tags`].
    pub tags: Vec<TagFilter>,
    /// Only events in this environment (a filter on each event, not on the error).
    pub environment: Option<String>,
    /// `[from, until)`, unix milliseconds, by the events' own timestamps.
    pub from: i64,
    pub until: i64,
    /// Width of a bucket in milliseconds; bucket `i` starts at `from + i * bucket_ms`.
    pub bucket_ms: i64,
}

/// The read API's queries. `Store` has this as a supertrait, so the HTTP layer reaches it through
/// the same `Arc<dyn Store>`.
#[async_trait]
pub trait ReadStore: Send + Sync {
    async fn list_errors(&self, query: ErrorQuery) -> StoreResult<KeysetPage<TrackedError>>;
    async fn error(&self, project_id: i64, fingerprint: i64) -> StoreResult<Option<TrackedError>>;
    /// Sets the status and returns the updated error; `None` when there is no such error.
    async fn set_error_status(
        &self,
        project_id: i64,
        fingerprint: i64,
        status: ErrorStatus,
    ) -> StoreResult<Option<TrackedError>>;
    /// `None` when the error does not exist (as opposed to an empty page).
    async fn list_error_events(
        &self,
        query: EventQuery,
    ) -> StoreResult<Option<KeysetPage<StoredEvent>>>;
    async fn list_messages(&self, query: MessageQuery) -> StoreResult<KeysetPage<StoredMessage>>;
    /// The error with this row id, whatever its project (Sentry addresses issues by id alone).
    async fn error_by_id(&self, id: i64) -> StoreResult<Option<TrackedError>>;
    /// [`IssueExtras`] of each error id given (at most a page); errors without events are left out.
    async fn issue_extras(&self, error_ids: Vec<i64>) -> StoreResult<HashMap<i64, IssueExtras>>;
    /// The error's newest event by its own timestamp.
    async fn latest_event(&self, error_id: i64) -> StoreResult<Option<LatestEvent>>;
    /// `(bucket index, events)` for every bucket with at least one event, in bucket order.
    async fn event_counts(&self, query: EventCountQuery) -> StoreResult<Vec<(i64, i64)>>;
    /// The environments the project's [`ENVIRONMENT_ERRORS`] most recently seen errors were
    /// seen in, sorted.
    async fn project_environments(&self, project_id: i64) -> StoreResult<Vec<String>>;
}

/// How many of a project's errors, the most recently seen, [`ReadStore::project_environments`]
/// looks at: enough for every environment in use, and a bound on the work whatever the
/// project's history.
pub const ENVIRONMENT_ERRORS: i64 = 1000;
