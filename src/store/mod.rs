//! Persistence: the only module that contains SQL. It defines the records the rest of the crate
//! works with, the [`Store`] trait the HTTP layer and the start-up code call, and the SQLite
//! backend with its versioned migrations. The batching writer for ingested events lives in
//! [`crate::writer`] but its transaction body is here too ([`sqlite::EventSink`]).

pub mod alerts;
pub mod checkpoint;
pub mod counts;
pub mod ingest;
pub mod payload;
pub mod purge;
pub mod read;
pub mod retention;
pub mod sqlite;
pub mod web;

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;

pub use alerts::AlertStore;
pub use read::ReadStore;
pub use sqlite::SqliteStore;
pub use web::WebStore;

/// Failures of the storage layer. Nothing here knows about HTTP; the HTTP layer maps these to a
/// 5xx (or, for the few domain conflicts, a 4xx).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error")]
    Sqlite(#[from] rusqlite::Error),
    #[error("database migration failed")]
    Migration(#[source] rusqlite::Error),
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
    /// True when SQLite reported that the database or the disk is full.
    pub fn is_full(&self) -> bool {
        match self {
            StoreError::Full => true,
            StoreError::Sqlite(rusqlite::Error::SqliteFailure(e, _)) => {
                e.code == rusqlite::ErrorCode::DiskFull
            }
            _ => false,
        }
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

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
}
