//! Persistence: the only module that contains SQL. This level is the backend-neutral vocabulary:
//! the records the rest of the crate works with, [`StoreError`], the [`Store`] trait (with its
//! supertraits [`ReadStore`], [`WebStore`], [`AlertStore`]) that the HTTP layer, the background
//! tasks and the start-up code call, and [`ingest::EventSink`], the writer's side. Each backend
//! lives in a folder of its own with its SQL, migrations and upkeep: [`sqlite`] (embedded, the
//! default). [`open`] picks the backend from the configuration.

pub mod alerts;
pub mod counts;
pub mod ingest;
pub mod payload;
pub mod postgres;
pub mod read;
pub mod sqlite;
pub mod web;

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;

pub use alerts::AlertStore;
pub use ingest::{EventSink, SinkHooks};
pub use read::ReadStore;
pub use sqlite::SqliteStore;
pub use web::WebStore;

/// A backend's own error, kept as the source of a [`StoreError`] for the log.
pub type BackendError = Box<dyn std::error::Error + Send + Sync>;

/// Failures of the storage layer, in words every backend shares. Nothing here knows about HTTP;
/// the HTTP layer maps these to a 5xx (or, for the few domain conflicts, a 4xx). Each backend
/// converts its driver's errors (`From` in its folder), deciding there which mean "full" or
/// "unavailable".
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error")]
    Database(#[source] BackendError),
    /// The database cannot be reached (down, restarting, failing over). Ingestion answers 503
    /// with `Retry-After`; the backend reconnects by itself.
    #[error("the database is unavailable")]
    Unavailable(#[source] BackendError),
    #[error("database migration failed")]
    Migration(#[source] BackendError),
    /// A row that had to exist was not there.
    #[error("a row the operation needed was not found")]
    Missing,
    #[error("could not create the data directory {path}")]
    DataDir {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("a blocking database task failed")]
    Join(#[from] tokio::task::JoinError),
    #[error("{0} has already been taken")]
    Conflict(&'static str),
    #[error("the database is full")]
    Full,
    #[error("could not start a database thread")]
    Thread(#[source] std::io::Error),
    #[error("a stored event payload could not be read")]
    Payload(#[from] payload::PayloadError),
}

impl StoreError {
    /// True when the database or its disk is full.
    pub fn is_full(&self) -> bool {
        matches!(self, StoreError::Full)
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// The database file of the SQLite backend in a data directory.
pub fn sqlite_path(data_dir: &std::path::Path) -> std::path::PathBuf {
    data_dir.join("faultline.db")
}

/// Whether the configured database exists already, for the commands that must not create one
/// by mistake (run from the wrong directory, they would answer as if nothing existed).
pub async fn database_exists(
    config: &crate::config::DatabaseConfig,
    data_dir: &std::path::Path,
) -> StoreResult<bool> {
    match &config.url {
        Some(url) => postgres::PgStore::is_migrated(&url.0).await,
        None => Ok(sqlite_path(data_dir).exists()),
    }
}

/// Where the configured database is, for messages: the SQLite file, or the PostgreSQL URL with
/// its password redacted.
pub fn database_location(
    config: &crate::config::DatabaseConfig,
    data_dir: &std::path::Path,
) -> String {
    match &config.url {
        Some(url) => postgres::redacted_url(&url.0),
        None => sqlite_path(data_dir).display().to_string(),
    }
}

/// Opens the configured backend (creating the database if needed) and applies its migrations.
pub async fn open(
    config: &crate::config::DatabaseConfig,
    data_dir: &std::path::Path,
) -> StoreResult<std::sync::Arc<dyn Store>> {
    if let Some(url) = &config.url {
        tracing::info!(database = %postgres::redacted_url(&url.0), "opening PostgreSQL");
        return Ok(std::sync::Arc::new(postgres::PgStore::open(&url.0).await?));
    }
    std::fs::create_dir_all(data_dir).map_err(|source| StoreError::DataDir {
        path: data_dir.display().to_string(),
        source,
    })?;
    let opts = sqlite::SqliteOptions {
        path: sqlite_path(data_dir),
        synchronous: config.synchronous,
        max_page_count: config.max_page_count,
    };
    let store = tokio::task::spawn_blocking(move || SqliteStore::open_with(opts)).await??;
    Ok(std::sync::Arc::new(store))
}

/// GitLab access levels, as stored in `project_members.access_level`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct AccessLevel(pub i64);

impl AccessLevel {
    pub const GUEST: AccessLevel = AccessLevel(10);
    pub const REPORTER: AccessLevel = AccessLevel(20);
    pub const DEVELOPER: AccessLevel = AccessLevel(30);
    pub const MAINTAINER: AccessLevel = AccessLevel(40);
    pub const OWNER: AccessLevel = AccessLevel(50);

    /// The levels GitLab accepts when a member is added.
    pub fn is_valid(level: i64) -> bool {
        matches!(level, 10 | 20 | 30 | 40 | 50)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct User {
    pub id: i64,
    pub username: String,
    pub name: String,
    pub email: Option<String>,
    pub is_admin: bool,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub struct NewUser {
    pub username: String,
    pub name: String,
    pub email: Option<String>,
    pub is_admin: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Project {
    pub id: i64,
    pub name: String,
    pub path: String,
    pub namespace_path: String,
    pub path_with_namespace: String,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub struct NewProject {
    pub name: String,
    pub path: String,
    pub namespace_path: String,
    /// The creator, who becomes the project's Owner.
    pub owner_id: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Member {
    pub user_id: i64,
    pub username: String,
    pub name: String,
    pub access_level: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct PersonalAccessToken {
    pub id: i64,
    pub user_id: i64,
    pub name: String,
    pub scopes: Vec<String>,
    pub expires_at: Option<NaiveDate>,
    pub revoked: bool,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub struct NewToken {
    pub user_id: i64,
    pub name: String,
    pub scopes: Vec<String>,
    pub expires_at: Option<NaiveDate>,
    /// SHA-256 of the secret; the secret itself is never stored.
    pub digest: [u8; 32],
}

/// The caller a token belongs to, with what the token allows.
#[derive(Debug, Clone)]
pub struct TokenOwner {
    pub token: PersonalAccessToken,
    pub user: User,
    pub digest: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setting {
    pub project_id: i64,
    pub active: bool,
    pub integrated: bool,
}

/// The three external-Sentry fields; they stay null for integrated tracking.
#[derive(Debug, Clone, Default)]
pub struct ExternalSentry {
    pub project_name: Option<String>,
    pub sentry_external_url: Option<String>,
    pub api_url: Option<String>,
}

#[derive(Debug, Clone)]
pub struct SettingRow {
    pub setting: Setting,
    pub external: ExternalSentry,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientKey {
    pub id: i64,
    pub project_id: i64,
    pub active: bool,
    pub public_key: String,
}

/// What one retention pass deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetentionReport {
    pub events: u64,
    /// Errors left without any event.
    pub errors: u64,
    pub attachments: u64,
    pub user_reports: u64,
    /// Hourly counts older than the retention period.
    pub hourly_rows: u64,
}

/// What purging one project removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PurgeReport {
    pub events: u64,
    pub errors: u64,
    pub attachments: u64,
    pub user_reports: u64,
}

/// One page of a list plus the total, for GitLab's pagination headers.
#[derive(Debug, Clone)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub total: u64,
}

/// The management side of the store. Every method is a short transaction; ingestion does not go
/// through this trait (see [`crate::writer`]). The read API's queries come from the [`ReadStore`]
/// supertrait ([`read`]), the web UI's sessions and summaries from [`WebStore`] ([`web`]).
#[async_trait]
pub trait Store: ReadStore + AlertStore + WebStore + Send + Sync + 'static {
    /// Cheap query proving the database answers; used by `/-/readiness`.
    async fn ping(&self) -> StoreResult<()>;
    /// The number of migrations applied, which is this build's schema version once open.
    fn schema_version(&self) -> usize;

    async fn user_count(&self) -> StoreResult<u64>;
    async fn create_user(&self, user: NewUser) -> StoreResult<User>;
    async fn user_by_id(&self, id: i64) -> StoreResult<Option<User>>;
    async fn user_by_username(&self, username: &str) -> StoreResult<Option<User>>;
    async fn list_users(&self) -> StoreResult<Vec<User>>;

    async fn create_token(&self, token: NewToken) -> StoreResult<PersonalAccessToken>;
    /// Finds a token by the digest of its secret, whatever its state; callers check revocation
    /// and expiry so that they can log why a token was refused.
    async fn token_by_digest(&self, digest: [u8; 32]) -> StoreResult<Option<TokenOwner>>;
    async fn token_by_id(&self, id: i64) -> StoreResult<Option<PersonalAccessToken>>;
    async fn list_tokens(&self, user_id: Option<i64>) -> StoreResult<Vec<PersonalAccessToken>>;
    /// Returns false when the token does not exist.
    async fn revoke_token(&self, id: i64) -> StoreResult<bool>;

    async fn create_project(&self, project: NewProject) -> StoreResult<Project>;
    /// Makes sure a project with GitLab's project id `id` exists, creating it (with an active,
    /// integrated setting) on the first event GitLab allowed for it. False when a project with
    /// that id is being deleted (or the id cannot be used).
    async fn ensure_gitlab_project(&self, id: i64) -> StoreResult<bool>;
    async fn project_by_id(&self, id: i64) -> StoreResult<Option<Project>>;
    async fn project_by_path(&self, path_with_namespace: &str) -> StoreResult<Option<Project>>;
    async fn list_projects(&self) -> StoreResult<Vec<Project>>;
    /// The projects `user_id` is a member of at `min_level` or higher (0: any level), by id.
    async fn member_projects(&self, user_id: i64, min_level: i64) -> StoreResult<Vec<Project>>;
    /// Deletes the project: at once for every lookup, its keys disabled, its events refused by
    /// the writer. Its rows (members, settings, keys, errors, events) are removed afterwards by
    /// [`purge::purge_marked`], in small transactions. Returns the keys that went with it.
    async fn delete_project(&self, id: i64) -> StoreResult<Vec<ClientKey>>;

    async fn member_level(&self, project_id: i64, user_id: i64) -> StoreResult<Option<i64>>;
    async fn add_member(&self, project_id: i64, user_id: i64, level: i64) -> StoreResult<Member>;
    async fn remove_member(&self, project_id: i64, user_id: i64) -> StoreResult<bool>;
    async fn list_members(&self, project_id: i64) -> StoreResult<Vec<Member>>;

    async fn setting(&self, project_id: i64) -> StoreResult<Option<SettingRow>>;
    /// Creates or overwrites the setting. When the result is active and integrated and the
    /// project has no active key, `first_key` is inserted in the same transaction and returned.
    async fn put_setting(
        &self,
        setting: Setting,
        first_key: String,
    ) -> StoreResult<(SettingRow, Option<ClientKey>)>;
    /// Updates an existing setting; `None` when there is none. Same side effect as `put_setting`.
    async fn patch_setting(
        &self,
        project_id: i64,
        active: bool,
        integrated: Option<bool>,
        first_key: String,
    ) -> StoreResult<Option<(SettingRow, Option<ClientKey>)>>;
    async fn all_settings(&self) -> StoreResult<Vec<Setting>>;

    async fn list_keys(
        &self,
        project_id: i64,
        page: u64,
        per_page: u64,
    ) -> StoreResult<Page<ClientKey>>;
    async fn create_key(&self, project_id: i64, public_key: String) -> StoreResult<ClientKey>;
    /// Deletes the key if it belongs to the project; returns it.
    async fn delete_key(&self, project_id: i64, key_id: i64) -> StoreResult<Option<ClientKey>>;
    /// Calls `each` with every key of every project, row by row, for the in-memory key cache at
    /// start-up. Streaming keeps a million keys from being held twice (rows and cache) at once.
    async fn for_each_key(&self, each: Box<dyn FnMut(ClientKey) + Send>) -> StoreResult<()>;
    /// How many rows `for_each_key` will stream, so the cache can be sized once.
    async fn key_count(&self) -> StoreResult<u64>;

    /// Opens the writer's own connection ([`EventSink`]), with whatever the backend runs beside
    /// it for as long as it lives (SQLite's checkpoint thread). The counts a previous process
    /// left unwritten are recounted before this returns.
    async fn open_sink(&self, hooks: SinkHooks) -> StoreResult<Box<dyn EventSink>>;

    /// One retention pass: deletes what was received before `now_millis - days` (nothing when
    /// `days` is 0), in small transactions that never keep the writer waiting for long.
    /// `now_millis` is a parameter so tests control the clock.
    ///
    /// An error's `event_count` is not lowered when its old events go: it counts every event the
    /// error ever had (Sentry's "times seen"), and keeping it monotonic is what lets the
    /// frequency-ordered list page without repeating an error (see `store::read`).
    async fn retention_pass(&self, now_millis: i64, days: u32) -> StoreResult<RetentionReport>;

    /// Removes the rows of every project marked for deletion, in small transactions; returns
    /// one report per project purged. A purge cut short is taken up by the next call.
    async fn purge_marked(&self) -> StoreResult<Vec<(i64, PurgeReport)>>;

    /// Keeps `cache` in step with changes other nodes make, until `stop` turns true. A backend
    /// that serves one node (SQLite: one server per data directory) has nothing to follow.
    fn watch_key_cache(
        &self,
        cache: std::sync::Arc<crate::domain::keycache::KeyCache>,
        stop: tokio::sync::watch::Receiver<bool>,
    ) {
        let _ = (cache, stop);
    }
}
