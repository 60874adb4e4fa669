//! What only the web UI needs from the database: users' password hashes, server-side sessions
//! (by the digest of the cookie's secret), and the few summaries its pages show beyond the read
//! API's (a project's unresolved count and 24-hour series, an error's 30-day series, its tags'
//! top values, one event by id).

use std::collections::HashMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::read::StoredEvent;
use super::{StoreResult, User};

/// A session to store: the SHA-256 digest of the cookie's secret, never the secret.
#[derive(Debug, Clone)]
pub struct NewSession {
    pub digest: [u8; 32],
    pub user_id: i64,
    /// The token every form of this session carries.
    pub csrf: String,
    pub expires_at: DateTime<Utc>,
}

/// A live session with its user.
#[derive(Debug, Clone)]
pub struct Session {
    pub user: User,
    pub csrf: String,
}

/// One project's line on the projects page.
#[derive(Debug, Clone, Default)]
pub struct ProjectSummary {
    pub unresolved: i64,
    /// Events per hour, oldest first, [`FREQUENCY_HOURS`] entries ending with the current hour.
    pub hourly: Vec<i64>,
}

/// A tag value of an error and how many of its latest events carried it (`None` where only
/// the fact that some event carried it is stored).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagValue {
    pub key: String,
    pub value: String,
    pub count: Option<i64>,
}

/// How many of an error's latest events the counted tag values look at, so that an error with
/// a million events costs what one with a thousand does.
pub const TAG_SAMPLE: i64 = 1000;

/// Values shown per tag key.
pub const TAG_VALUES_SHOWN: usize = 5;

/// How many of an error's latest payloads the SDK's own tags are counted over: each one is
/// decoded, so this is smaller than [`TAG_SAMPLE`].
pub const TAG_PAYLOAD_SAMPLE: i64 = 100;

/// Tag keys shown besides environment, release and level.
pub(crate) const MAX_TAG_KEYS: usize = 20;

/// The SDK's tags of one event's JSON (an object, or an array of `[key, value]` pairs), with
/// `server_name` from the top level when the tags do not have it. Non-string values are shown
/// as JSON; anything that is not JSON has no tags.
pub(crate) fn sdk_tags(json: &[u8]) -> Vec<(String, String)> {
    #[derive(serde::Deserialize)]
    struct Tagged {
        #[serde(default)]
        tags: serde_json::Value,
        #[serde(default)]
        server_name: Option<serde_json::Value>,
    }
    let Ok(t) = serde_json::from_slice::<Tagged>(json) else {
        return Vec::new();
    };
    let text = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Null => None,
        other => Some(other.to_string()),
    };
    let mut out: Vec<(String, String)> = match &t.tags {
        serde_json::Value::Object(o) => o
            .iter()
            .filter_map(|(k, v)| Some((k.clone(), text(v)?)))
            .collect(),
        serde_json::Value::Array(a) => a
            .iter()
            .filter_map(|p| match p.as_array()?.as_slice() {
                [k, v] => Some((k.as_str()?.to_owned(), text(v)?)),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    out.retain(|(k, v)| !k.is_empty() && !v.is_empty() && k.len() <= 200 && v.len() <= 200);
    if !out.iter().any(|(k, _)| k == "server_name") {
        if let Some(name) = t.server_name.as_ref().and_then(text) {
            out.push(("server_name".into(), name));
        }
    }
    out
}

#[async_trait]
pub trait WebStore: Send + Sync {
    /// Stores a new password hash and ends the user's sessions; false when there is no such
    /// user.
    async fn set_password(&self, user_id: i64, hash: String) -> StoreResult<bool>;
    /// The user and their password hash (`None` when no password was ever set).
    async fn password_of(&self, username: &str) -> StoreResult<Option<(User, Option<String>)>>;
    async fn create_session(&self, session: NewSession) -> StoreResult<()>;
    /// The session with this digest, unless it expired.
    async fn session(&self, digest: [u8; 32]) -> StoreResult<Option<Session>>;
    async fn delete_session(&self, digest: [u8; 32]) -> StoreResult<()>;
    /// Unresolved counts and the 24-hour series of each project, by project id.
    async fn project_summaries(
        &self,
        project_ids: Vec<i64>,
    ) -> StoreResult<HashMap<i64, ProjectSummary>>;
    /// Events per day over the last `days` days (oldest first, ending today) of error `error_id`.
    async fn error_daily(&self, error_id: i64, days: i64) -> StoreResult<Vec<(i64, i64)>>;
    /// The error's tag values: environment, release and level counted over its latest
    /// [`TAG_SAMPLE`] events, the SDK's tags over its latest [`TAG_PAYLOAD_SAMPLE`] payloads,
    /// and keys only older events carried as stored for search, without counts.
    async fn error_tag_values(&self, error_id: i64) -> StoreResult<Vec<TagValue>>;
    /// One event of an error by its row id.
    async fn error_event(
        &self,
        project_id: i64,
        fingerprint: i64,
        event_row_id: i64,
    ) -> StoreResult<Option<StoredEvent>>;
}
