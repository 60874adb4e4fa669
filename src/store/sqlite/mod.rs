//! The embedded SQLite backend, the default: connection setup, versioned migrations and the
//! management queries behind [`Store`]. Connections are handed out from a small pool and used on
//! tokio's blocking threads, because rusqlite is synchronous. The other traits' SQL is in the
//! files beside this one: `read`, `web`, `alerts`, the writer's `ingest` and `counts`, and the
//! upkeep: `retention`, `purge` and the `checkpoint` thread.

pub mod alerts;
pub mod by_error;
pub mod checkpoint;
pub mod counts;
pub mod ingest;
pub mod purge;
pub mod read;
pub mod retention;
pub mod web;

#[cfg(test)]
pub(crate) mod test_support;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use parking_lot::Mutex;
use rusqlite::{params, Connection, OptionalExtension, Row};

use crate::store::*;

pub use ingest::SqliteSink;

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> StoreError {
        match &e {
            rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::DiskFull => {
                StoreError::Full
            }
            _ => StoreError::Database(Box::new(e)),
        }
    }
}

fn migration_error(e: rusqlite::Error) -> StoreError {
    StoreError::Migration(Box::new(e))
}

/// Durability of a commit, SQLite's `synchronous` pragma. `Normal` (the default) survives a crash
/// of the process but may lose the last transactions on power loss; `Full` survives power loss
/// too, at the price of an fsync per commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Synchronous {
    #[default]
    Normal,
    Full,
}

impl Synchronous {
    fn pragma(self) -> &'static str {
        match self {
            Synchronous::Normal => "NORMAL",
            Synchronous::Full => "FULL",
        }
    }
}

/// How a connection is opened; shared by the pool and the writer's own connection.
#[derive(Debug, Clone)]
pub struct SqliteOptions {
    pub path: PathBuf,
    pub synchronous: Synchronous,
    /// Upper bound on the file size in pages (`max_page_count`); `None` leaves SQLite's default.
    /// Mainly a way to make "the disk is full" reproducible in tests.
    pub max_page_count: Option<u64>,
}

/// Opens one connection with the pragmas every connection needs.
pub fn open_connection(opts: &SqliteOptions) -> StoreResult<Connection> {
    let mut conn = Connection::open(&opts.path)?;
    // Every transaction takes the write lock when it begins (BEGIN IMMEDIATE), on every
    // connection: the writer's, the pool's and retention's. A deferred transaction that has read
    // and then writes cannot wait for a lock another connection holds (SQLite answers
    // SQLITE_BUSY at once, bypassing busy_timeout, to avoid a deadlock), so an ingestion batch
    // would fail whenever a retention batch or a management write held the lock. An immediate
    // one waits under busy_timeout instead. Reads outside transactions are unaffected.
    conn.set_transaction_behavior(rusqlite::TransactionBehavior::Immediate);
    // WAL lets readers (the management and read APIs) run while the writer commits, and makes
    // each commit a sequential append instead of a rewrite of the main file.
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", opts.synchronous.pragma())?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    // Readers may briefly wait for a checkpoint; five seconds is far above any normal wait and
    // still bounded.
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    if let Some(pages) = opts.max_page_count {
        conn.pragma_update(None, "max_page_count", pages as i64)?;
    }
    Ok(conn)
}

/// Versioned migrations, applied in order at start-up; `PRAGMA user_version` records the last
/// one applied. A migration is never edited once released: a change is a new entry.
const MIGRATIONS: &[&str] = &[
    // 1: identity, settings and client keys. Ids are AUTOINCREMENT so that a deleted id is
    // never handed out again (a stale DELETE must not hit a newer key), as in GitLab.
    r#"
    CREATE TABLE users (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        username    TEXT NOT NULL UNIQUE,
        name        TEXT NOT NULL,
        email       TEXT,
        is_admin    INTEGER NOT NULL DEFAULT 0,
        created_at  INTEGER NOT NULL
    );
    CREATE TABLE projects (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        name                TEXT NOT NULL,
        path                TEXT NOT NULL,
        namespace_path      TEXT NOT NULL,
        path_with_namespace TEXT NOT NULL UNIQUE COLLATE NOCASE,
        created_at          INTEGER NOT NULL
    );
    CREATE TABLE project_members (
        project_id   INTEGER NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
        user_id      INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        access_level INTEGER NOT NULL,
        PRIMARY KEY (project_id, user_id)
    ) WITHOUT ROWID;
    CREATE TABLE personal_access_tokens (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        user_id     INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        name        TEXT NOT NULL,
        digest      BLOB NOT NULL UNIQUE,
        scopes      TEXT NOT NULL,
        expires_at  TEXT,
        revoked     INTEGER NOT NULL DEFAULT 0,
        created_at  INTEGER NOT NULL
    );
    CREATE TABLE error_tracking_settings (
        project_id          INTEGER PRIMARY KEY REFERENCES projects(id) ON DELETE CASCADE,
        active              INTEGER NOT NULL,
        integrated          INTEGER NOT NULL,
        project_name        TEXT,
        sentry_external_url TEXT,
        api_url             TEXT
    );
    CREATE TABLE client_keys (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        project_id  INTEGER NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
        public_key  TEXT NOT NULL UNIQUE,
        active      INTEGER NOT NULL DEFAULT 1,
        created_at  INTEGER NOT NULL
    );
    CREATE INDEX client_keys_project ON client_keys(project_id, id);
    "#,
    // 2: ingested errors, events, attachments, user reports and hourly counts.
    r#"
    CREATE TABLE errors (
        id                      INTEGER PRIMARY KEY,
        project_id              INTEGER NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
        fingerprint             INTEGER NOT NULL,
        name                    TEXT NOT NULL,
        description             TEXT NOT NULL,
        actor                   TEXT NOT NULL,
        platform                TEXT,
        status                  INTEGER NOT NULL DEFAULT 0,
        event_count             INTEGER NOT NULL DEFAULT 0,
        approximated_user_count INTEGER NOT NULL DEFAULT 0,
        first_seen_at           INTEGER NOT NULL,
        last_seen_at            INTEGER NOT NULL,
        UNIQUE (project_id, fingerprint)
    );
    -- The list queries filter by project and status and order by one of three keys; each index
    -- ends in id so that keyset cursors are a single range scan.
    CREATE INDEX errors_by_last_seen ON errors(project_id, status, last_seen_at DESC, id DESC);
    CREATE INDEX errors_by_first_seen ON errors(project_id, status, first_seen_at DESC, id DESC);
    CREATE INDEX errors_by_frequency ON errors(project_id, status, event_count DESC, id DESC);
    CREATE TABLE events (
        id            INTEGER PRIMARY KEY,
        project_id    INTEGER NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
        error_id      INTEGER NOT NULL REFERENCES errors(id) ON DELETE CASCADE,
        event_id      TEXT NOT NULL,
        occurred_at   INTEGER NOT NULL,
        received_at   INTEGER NOT NULL,
        level         TEXT,
        environment   TEXT,
        release       TEXT,
        platform      TEXT,
        user_identity TEXT,
        message       TEXT,
        is_message    INTEGER NOT NULL,
        name          TEXT NOT NULL,
        description   TEXT NOT NULL,
        actor         TEXT NOT NULL,
        payload       BLOB NOT NULL,
        UNIQUE (project_id, event_id)
    );
    CREATE INDEX events_by_error ON events(error_id, occurred_at, id);
    CREATE INDEX events_messages ON events(project_id, is_message, occurred_at DESC, id DESC);
    CREATE INDEX events_received ON events(received_at, id);
    CREATE TABLE attachments (
        id              INTEGER PRIMARY KEY,
        project_id      INTEGER NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
        event_id        TEXT NOT NULL,
        filename        TEXT NOT NULL,
        content_type    TEXT,
        attachment_type TEXT,
        data            BLOB NOT NULL,
        received_at     INTEGER NOT NULL
    );
    CREATE INDEX attachments_by_event ON attachments(project_id, event_id);
    CREATE TABLE user_reports (
        id          INTEGER PRIMARY KEY,
        project_id  INTEGER NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
        event_id    TEXT,
        name        TEXT,
        email       TEXT,
        comments    TEXT,
        payload     BLOB NOT NULL,
        received_at INTEGER NOT NULL
    );
    CREATE INDEX user_reports_by_event ON user_reports(project_id, event_id);
    -- Per-error hourly event counts: the 24h frequency of a list page reads at most 24 rows per
    -- error instead of scanning its events.
    CREATE TABLE error_hourly (
        error_id INTEGER NOT NULL REFERENCES errors(id) ON DELETE CASCADE,
        hour     INTEGER NOT NULL,
        count    INTEGER NOT NULL,
        PRIMARY KEY (error_id, hour)
    ) WITHOUT ROWID;
    -- Distinct users per error, for approximated_user_count.
    CREATE TABLE error_users (
        error_id  INTEGER NOT NULL REFERENCES errors(id) ON DELETE CASCADE,
        user_hash INTEGER NOT NULL,
        PRIMARY KEY (error_id, user_hash)
    ) WITHOUT ROWID;
    "#,
    // 3: deleted client keys are kept (inactive, with the deletion time) so that after a restart
    // the key cache still knows them and ingestion keeps answering 403 "disabled", not 401
    // "unknown". The management API no longer lists them.
    r#"
    ALTER TABLE client_keys ADD COLUMN deleted_at INTEGER;
    "#,
    // 4: retention finds old attachments and user reports by age without scanning the tables.
    r#"
    CREATE INDEX attachments_received ON attachments(received_at);
    CREATE INDEX user_reports_received ON user_reports(received_at);
    "#,
    // 5: only message events are listed by `/messages`, so only they need an entry in its index.
    // Most events are errors; a partial index spares each of them one B-tree insert in the
    // writer. The list query's `is_message = 1` term lets SQLite pick the partial index.
    r#"
    DROP INDEX events_messages;
    CREATE INDEX events_messages ON events(project_id, occurred_at DESC, id DESC)
        WHERE is_message = 1;
    "#,
    // 6: how `events.payload` is encoded (`store::payload::PayloadCodec`); existing rows hold
    // the event JSON, code 0.
    r#"
    ALTER TABLE events ADD COLUMN payload_codec INTEGER NOT NULL DEFAULT 0;
    "#,
    // 7: the writer keeps error counts in memory between flushes (`store::counts`); this row
    // says up to which event id they are in `errors` and `error_hourly`. Every event stored so
    // far is counted.
    r#"
    CREATE TABLE ingest_state (
        id              INTEGER PRIMARY KEY CHECK (id = 1),
        counted_through INTEGER NOT NULL
    );
    INSERT INTO ingest_state (id, counted_through) SELECT 1, COALESCE(MAX(id), 0) FROM events;
    "#,
    // 8: a deleted project is marked first and its rows removed afterwards in small transactions
    // (`store::purge`); a marked project is invisible to every lookup.
    r#"
    ALTER TABLE projects ADD COLUMN deleting_since INTEGER;
    "#,
    // 9: fingerprints shrink from 63 to 53 bits (`domain::grouping::MAX_FINGERPRINT`) so that
    // every JSON reader holds them exactly; the new value is the old one's low 53 bits (0
    // becomes 1). Errors of one project that land on the same new value are merged into the
    // oldest (lowest id): its events, hourly counts and users move over and its counts add up,
    // so no event or count is lost. The merged error is unresolved if any part of it was.
    r#"
    CREATE TEMP TABLE fp_new AS
        SELECT id, project_id, MAX(fingerprint & 9007199254740991, 1) AS fp FROM errors;
    CREATE TEMP TABLE fp_merge AS
        SELECT id, keeper FROM (
            SELECT id, MIN(id) OVER (PARTITION BY project_id, fp) AS keeper FROM fp_new
        ) WHERE id <> keeper;
    CREATE INDEX temp.fp_merge_id ON fp_merge(id);
    UPDATE events SET error_id = (SELECT keeper FROM fp_merge WHERE fp_merge.id = events.error_id)
        WHERE error_id IN (SELECT id FROM fp_merge);
    INSERT INTO error_hourly (error_id, hour, count)
        SELECT m.keeper, h.hour, h.count FROM error_hourly h JOIN fp_merge m ON m.id = h.error_id
        WHERE true
        ON CONFLICT (error_id, hour) DO UPDATE SET count = count + excluded.count;
    INSERT OR IGNORE INTO error_users (error_id, user_hash)
        SELECT m.keeper, u.user_hash FROM error_users u JOIN fp_merge m ON m.id = u.error_id;
    UPDATE errors SET
        event_count = event_count
            + (SELECT SUM(o.event_count) FROM errors o JOIN fp_merge m ON m.id = o.id
               WHERE m.keeper = errors.id),
        first_seen_at = MIN(first_seen_at,
            (SELECT MIN(o.first_seen_at) FROM errors o JOIN fp_merge m ON m.id = o.id
             WHERE m.keeper = errors.id)),
        last_seen_at = MAX(last_seen_at,
            (SELECT MAX(o.last_seen_at) FROM errors o JOIN fp_merge m ON m.id = o.id
             WHERE m.keeper = errors.id)),
        status = MIN(status,
            (SELECT MIN(o.status) FROM errors o JOIN fp_merge m ON m.id = o.id
             WHERE m.keeper = errors.id)),
        approximated_user_count =
            (SELECT COUNT(*) FROM error_users u WHERE u.error_id = errors.id)
        WHERE id IN (SELECT keeper FROM fp_merge);
    DELETE FROM error_hourly WHERE error_id IN (SELECT id FROM fp_merge);
    DELETE FROM error_users WHERE error_id IN (SELECT id FROM fp_merge);
    DELETE FROM errors WHERE id IN (SELECT id FROM fp_merge);
    UPDATE errors SET fingerprint = MAX(fingerprint & 9007199254740991, 1)
        WHERE fingerprint > 9007199254740991 OR fingerprint < 1;
    DROP TABLE fp_merge;
    DROP TABLE fp_new;
    "#,
    // 10: what the read API's search finds an error by (`query=environment:production`, a tag,
    // a user): each (key, value) pair any of its events carried, once per error. Errors stored
    // before this get their environments, releases, levels and users from their events; the
    // SDK tags of those events are only in their payloads and are not searchable.
    r#"
    CREATE TABLE error_tags (
        error_id INTEGER NOT NULL REFERENCES errors(id) ON DELETE CASCADE,
        key      TEXT NOT NULL,
        value    TEXT NOT NULL,
        PRIMARY KEY (error_id, key, value)
    ) WITHOUT ROWID;
    INSERT OR IGNORE INTO error_tags (error_id, key, value)
        SELECT error_id, 'environment', environment FROM events WHERE environment IS NOT NULL;
    INSERT OR IGNORE INTO error_tags (error_id, key, value)
        SELECT error_id, 'release', release FROM events WHERE release IS NOT NULL;
    INSERT OR IGNORE INTO error_tags (error_id, key, value)
        SELECT error_id, 'level', COALESCE(level, 'error') FROM events;
    INSERT OR IGNORE INTO error_tags (error_id, key, value)
        SELECT error_id, 'user', user_identity FROM events WHERE user_identity IS NOT NULL;
    "#,
    // 11: every error gets a per-project sequence number for Sentry's short ids (`SHOP-1F`); the
    // project keeps the last number handed out, so a deleted error's number is never reused.
    // Existing errors are numbered in the order they were first seen.
    r#"
    ALTER TABLE errors ADD COLUMN short_seq INTEGER;
    ALTER TABLE projects ADD COLUMN error_seq INTEGER NOT NULL DEFAULT 0;
    UPDATE errors SET short_seq = numbered.seq
    FROM (SELECT id, ROW_NUMBER() OVER (PARTITION BY project_id ORDER BY first_seen_at, id) AS seq
          FROM errors) AS numbered
    WHERE errors.id = numbered.id;
    UPDATE projects SET error_seq = (SELECT COALESCE(MAX(short_seq), 0) FROM errors
                                     WHERE errors.project_id = projects.id);
    "#,
    // 12: alerts (`store::alerts`): rules per project, their channels, the outbox of alerts to
    // deliver (written in the transaction that caused them, claimed by a lease so that several
    // nodes can share it), and when a frequency rule last fired for an error.
    r#"
    CREATE TABLE alert_rules (
        id                INTEGER PRIMARY KEY,
        project_id        INTEGER NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
        name              TEXT NOT NULL,
        on_new            INTEGER NOT NULL,
        on_regression     INTEGER NOT NULL,
        frequency_count   INTEGER,
        frequency_minutes INTEGER,
        quiet_minutes     INTEGER,
        environments      TEXT NOT NULL DEFAULT '[]',
        levels            TEXT NOT NULL DEFAULT '[]',
        max_per_hour      INTEGER NOT NULL DEFAULT 20,
        created_at        INTEGER NOT NULL
    );
    CREATE INDEX alert_rules_project ON alert_rules(project_id);
    CREATE TABLE alert_channels (
        id                  INTEGER PRIMARY KEY,
        rule_id             INTEGER NOT NULL REFERENCES alert_rules(id) ON DELETE CASCADE,
        kind                TEXT NOT NULL,
        url                 TEXT NOT NULL,
        secret              TEXT,
        created_at          INTEGER NOT NULL,
        last_success_at     INTEGER,
        last_failure_at     INTEGER,
        last_failure_status INTEGER,
        last_failure_reason TEXT
    );
    CREATE INDEX alert_channels_rule ON alert_channels(rule_id);
    CREATE TABLE alert_outbox (
        id              INTEGER PRIMARY KEY,
        channel_id      INTEGER NOT NULL REFERENCES alert_channels(id) ON DELETE CASCADE,
        rule_id         INTEGER NOT NULL,
        error_id        INTEGER,
        trigger         TEXT NOT NULL,
        uuid            TEXT NOT NULL,
        created_at      INTEGER NOT NULL,
        attempts        INTEGER NOT NULL DEFAULT 0,
        next_attempt_at INTEGER NOT NULL,
        claimed_until   INTEGER NOT NULL DEFAULT 0,
        claimed_by      TEXT
    );
    CREATE INDEX alert_outbox_due ON alert_outbox(next_attempt_at);
    CREATE TABLE alert_rule_state (
        rule_id       INTEGER NOT NULL REFERENCES alert_rules(id) ON DELETE CASCADE,
        error_id      INTEGER NOT NULL,
        last_fired_at INTEGER NOT NULL,
        PRIMARY KEY (rule_id, error_id)
    ) WITHOUT ROWID;
    -- Messages each channel delivered in the last hour, for its rule's hourly cap.
    CREATE TABLE alert_deliveries (
        channel_id   INTEGER NOT NULL REFERENCES alert_channels(id) ON DELETE CASCADE,
        delivered_at INTEGER NOT NULL
    );
    CREATE INDEX alert_deliveries_channel ON alert_deliveries(channel_id, delivered_at);
    "#,
    // 13: the web UI's sign-in (`store::web`): an Argon2id hash per user (NULL: no password
    // yet, so no UI sign-in) and server-side sessions, found by the SHA-256 digest of the
    // cookie's secret, so that they survive a restart and a stolen database holds no cookie.
    r#"
    ALTER TABLE users ADD COLUMN password_hash TEXT;
    CREATE TABLE web_sessions (
        digest     BLOB PRIMARY KEY,
        user_id    INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        csrf       TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        expires_at INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX web_sessions_by_user ON web_sessions(user_id);
    "#,
    // 14: the per-error order of events moves from an index on `events` to a table the writer
    // fills when it writes the counts (`store::sqlite::by_error`): entries for the events at or
    // below the counts' mark now, the rest at the next start-up's recount.
    r#"
    CREATE TABLE event_by_error (
        error_id    INTEGER NOT NULL REFERENCES errors(id) ON DELETE CASCADE,
        occurred_at INTEGER NOT NULL,
        id          INTEGER NOT NULL,
        PRIMARY KEY (error_id, occurred_at, id)
    ) WITHOUT ROWID;
    INSERT INTO event_by_error (error_id, occurred_at, id)
        SELECT error_id, occurred_at, id FROM events
        WHERE id <= (SELECT counted_through FROM ingest_state WHERE id = 1)
        ORDER BY error_id, occurred_at, id;
    DROP INDEX events_by_error;
    CREATE TRIGGER events_leave_by_error AFTER DELETE ON events BEGIN
        DELETE FROM event_by_error
        WHERE error_id = old.error_id AND occurred_at = old.occurred_at AND id = old.id;
    END;
    "#,
];

/// Applies the migrations that are not yet applied, each in its own transaction.
pub fn migrate(conn: &mut Connection) -> StoreResult<usize> {
    migrate_to(conn, MIGRATIONS.len())
}

/// Applies the migrations up to and including number `last`; tests use it to build a database
/// as an older release left it.
fn migrate_to(conn: &mut Connection, last: usize) -> StoreResult<usize> {
    let current: usize = conn
        .pragma_query_value(None, "user_version", |r| r.get::<_, i64>(0))
        .map_err(migration_error)? as usize;
    let mut applied = 0;
    for (i, sql) in MIGRATIONS.iter().enumerate().take(last).skip(current) {
        let tx = conn.transaction().map_err(migration_error)?;
        tx.execute_batch(sql).map_err(migration_error)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)
            .map_err(migration_error)?;
        tx.commit().map_err(migration_error)?;
        applied += 1;
    }
    Ok(applied)
}

/// The number of migrations this build knows.
pub fn schema_version() -> usize {
    MIGRATIONS.len()
}

pub(crate) fn now_millis() -> i64 {
    Utc::now().timestamp_millis()
}

fn millis_to_dt(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().unwrap_or_default()
}

/// A handful of connections for the management and read APIs. Requests are short, so a small
/// pool is plenty; when every connection is busy a new one is opened rather than waiting.
struct Pool {
    opts: SqliteOptions,
    idle: Mutex<Vec<Connection>>,
}

/// Idle connections kept for reuse; more may exist briefly under load.
const POOL_IDLE_MAX: usize = 8;

/// How much of the database file the API's connections read through a memory map (SQLite's
/// largest by default, 2 GiB). Lists walk an index and probe another table for each row (the
/// search's `error_tags` terms); through a map a probe reads pages where the page cache holds
/// them, instead of a `pread` and a copy per page. In the read bench a tag search with no match
/// over 10,000 errors went from a median of 47 to 35 ms (one run each, on a busy machine). The
/// map is shared with the kernel's page cache, so it adds no private memory; the writer keeps its
/// own connection without one.
const READ_MMAP_BYTES: i64 = 2_147_418_112;

impl Pool {
    fn get(&self) -> StoreResult<Connection> {
        if let Some(c) = self.idle.lock().pop() {
            return Ok(c);
        }
        let conn = open_connection(&self.opts)?;
        conn.pragma_update(None, "mmap_size", READ_MMAP_BYTES)?;
        Ok(conn)
    }

    fn put(&self, conn: Connection) {
        let mut idle = self.idle.lock();
        if idle.len() < POOL_IDLE_MAX {
            idle.push(conn);
        }
    }
}

#[derive(Clone)]
pub struct SqliteStore {
    pool: Arc<Pool>,
}

impl SqliteStore {
    /// Opens (creating if needed) the database in `data_dir` and applies migrations.
    pub fn open(data_dir: &Path, synchronous: Synchronous) -> StoreResult<Self> {
        std::fs::create_dir_all(data_dir).map_err(|source| StoreError::DataDir {
            path: data_dir.display().to_string(),
            source,
        })?;
        Self::open_with(SqliteOptions {
            path: crate::store::sqlite_path(data_dir),
            synchronous,
            max_page_count: None,
        })
    }

    pub fn open_with(opts: SqliteOptions) -> StoreResult<Self> {
        let mut conn = open_connection(&opts)?;
        migrate(&mut conn)?;
        conn.pragma_update(None, "mmap_size", READ_MMAP_BYTES)?;
        let pool = Pool {
            opts,
            idle: Mutex::new(vec![conn]),
        };
        Ok(SqliteStore {
            pool: Arc::new(pool),
        })
    }

    pub fn options(&self) -> &SqliteOptions {
        &self.pool.opts
    }

    /// Runs `f` with a pooled connection on a blocking thread.
    pub(crate) async fn run<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> StoreResult<T> + Send + 'static,
    {
        let pool = self.pool.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = pool.get()?;
            let out = f(&mut conn);
            pool.put(conn);
            out
        })
        .await?
    }

    /// Synchronous access for the offline `admin` commands and tests.
    pub fn run_blocking<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> StoreResult<T>,
    ) -> StoreResult<T> {
        let mut conn = self.pool.get()?;
        let out = f(&mut conn);
        self.pool.put(conn);
        out
    }
}

const USER_COLS: &str = "id, username, name, email, is_admin, created_at";

fn user_row(r: &Row) -> rusqlite::Result<User> {
    Ok(User {
        id: r.get(0)?,
        username: r.get(1)?,
        name: r.get(2)?,
        email: r.get(3)?,
        is_admin: r.get(4)?,
        created_at: millis_to_dt(r.get(5)?),
    })
}

const PROJECT_COLS: &str = "id, name, path, namespace_path, path_with_namespace, created_at";

fn project_row(r: &Row) -> rusqlite::Result<Project> {
    Ok(Project {
        id: r.get(0)?,
        name: r.get(1)?,
        path: r.get(2)?,
        namespace_path: r.get(3)?,
        path_with_namespace: r.get(4)?,
        created_at: millis_to_dt(r.get(5)?),
    })
}

const TOKEN_COLS: &str = "id, user_id, name, scopes, expires_at, revoked, created_at";

fn token_row(r: &Row) -> rusqlite::Result<PersonalAccessToken> {
    let scopes: String = r.get(3)?;
    let expires: Option<String> = r.get(4)?;
    Ok(PersonalAccessToken {
        id: r.get(0)?,
        user_id: r.get(1)?,
        name: r.get(2)?,
        scopes: scopes
            .split(',')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
        expires_at: expires.and_then(|s| NaiveDate::parse_from_str(&s, "%Y-%m-%d").ok()),
        revoked: r.get(5)?,
        created_at: millis_to_dt(r.get(6)?),
    })
}

const KEY_COLS: &str = "id, project_id, active, public_key";

fn key_row(r: &Row) -> rusqlite::Result<ClientKey> {
    Ok(ClientKey {
        id: r.get(0)?,
        project_id: r.get(1)?,
        active: r.get(2)?,
        public_key: r.get(3)?,
    })
}

fn setting_row(r: &Row) -> rusqlite::Result<SettingRow> {
    Ok(SettingRow {
        setting: Setting {
            project_id: r.get(0)?,
            active: r.get(1)?,
            integrated: r.get(2)?,
        },
        external: ExternalSentry {
            project_name: r.get(3)?,
            sentry_external_url: r.get(4)?,
            api_url: r.get(5)?,
        },
    })
}

fn is_unique_violation(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _)
        if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
            || f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY)
}

fn get_setting(conn: &Connection, project_id: i64) -> StoreResult<Option<SettingRow>> {
    Ok(conn
        .query_row(
            "SELECT project_id, active, integrated, project_name, sentry_external_url, api_url
             FROM error_tracking_settings WHERE project_id = ?1",
            [project_id],
            setting_row,
        )
        .optional()?)
}

/// GitLab's side effect: an active, integrated setting gets a first client key when the project
/// has no active one. Runs inside the caller's transaction.
fn ensure_first_key(
    tx: &rusqlite::Transaction,
    row: &SettingRow,
    first_key: String,
) -> StoreResult<Option<ClientKey>> {
    if !(row.setting.active && row.setting.integrated) {
        return Ok(None);
    }
    let has_active: bool = tx.query_row(
        "SELECT EXISTS(SELECT 1 FROM client_keys WHERE project_id = ?1 AND active = 1)",
        [row.setting.project_id],
        |r| r.get(0),
    )?;
    if has_active {
        return Ok(None);
    }
    Ok(Some(insert_key(tx, row.setting.project_id, first_key)?))
}

fn insert_key(conn: &Connection, project_id: i64, public_key: String) -> StoreResult<ClientKey> {
    conn.execute(
        "INSERT INTO client_keys (project_id, public_key, active, created_at) VALUES (?1, ?2, 1, ?3)",
        params![project_id, public_key, now_millis()],
    )?;
    Ok(ClientKey {
        id: conn.last_insert_rowid(),
        project_id,
        active: true,
        public_key,
    })
}

#[async_trait]
impl Store for SqliteStore {
    async fn ping(&self) -> StoreResult<()> {
        self.run(|c| Ok(c.query_row("SELECT 1", [], |_| Ok(()))?))
            .await
    }

    async fn user_count(&self) -> StoreResult<u64> {
        self.run(|c| {
            Ok(c.query_row("SELECT COUNT(*) FROM users", [], |r| r.get::<_, i64>(0))? as u64)
        })
        .await
    }

    async fn create_user(&self, user: NewUser) -> StoreResult<User> {
        self.run(move |c| {
            let now = now_millis();
            c.execute(
                "INSERT INTO users (username, name, email, is_admin, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![user.username, user.name, user.email, user.is_admin, now],
            )
            .map_err(|e| if is_unique_violation(&e) { StoreError::Conflict("username") } else { e.into() })?;
            Ok(User {
                id: c.last_insert_rowid(),
                username: user.username,
                name: user.name,
                email: user.email,
                is_admin: user.is_admin,
                created_at: millis_to_dt(now),
            })
        })
        .await
    }

    async fn user_by_id(&self, id: i64) -> StoreResult<Option<User>> {
        self.run(move |c| {
            Ok(c.query_row(
                &format!("SELECT {USER_COLS} FROM users WHERE id = ?1"),
                [id],
                user_row,
            )
            .optional()?)
        })
        .await
    }

    async fn user_by_username(&self, username: &str) -> StoreResult<Option<User>> {
        let username = username.to_owned();
        self.run(move |c| {
            Ok(c.query_row(
                &format!("SELECT {USER_COLS} FROM users WHERE username = ?1"),
                [username],
                user_row,
            )
            .optional()?)
        })
        .await
    }

    async fn list_users(&self) -> StoreResult<Vec<User>> {
        self.run(|c| {
            let mut st = c.prepare(&format!("SELECT {USER_COLS} FROM users ORDER BY id"))?;
            let rows = st.query_map([], user_row)?.collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
        .await
    }

    async fn create_token(&self, token: NewToken) -> StoreResult<PersonalAccessToken> {
        self.run(move |c| {
            let now = now_millis();
            c.execute(
                "INSERT INTO personal_access_tokens (user_id, name, digest, scopes, expires_at, revoked, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, 0, ?6)",
                params![
                    token.user_id,
                    token.name,
                    &token.digest[..],
                    token.scopes.join(","),
                    token.expires_at.map(|d| d.format("%Y-%m-%d").to_string()),
                    now
                ],
            )
            .map_err(|e| if is_unique_violation(&e) { StoreError::Conflict("token") } else { e.into() })?;
            Ok(PersonalAccessToken {
                id: c.last_insert_rowid(),
                user_id: token.user_id,
                name: token.name,
                scopes: token.scopes,
                expires_at: token.expires_at,
                revoked: false,
                created_at: millis_to_dt(now),
            })
        })
        .await
    }

    async fn token_by_digest(&self, digest: [u8; 32]) -> StoreResult<Option<TokenOwner>> {
        self.run(move |c| {
            let sql =
                "SELECT t.id, t.user_id, t.name, t.scopes, t.expires_at, t.revoked, t.created_at,
                              u.id, u.username, u.name, u.email, u.is_admin, u.created_at, t.digest
                       FROM personal_access_tokens t JOIN users u ON u.id = t.user_id
                       WHERE t.digest = ?1";
            Ok(c.query_row(sql, [&digest[..]], |r| {
                Ok(TokenOwner {
                    token: token_row(r)?,
                    user: User {
                        id: r.get(7)?,
                        username: r.get(8)?,
                        name: r.get(9)?,
                        email: r.get(10)?,
                        is_admin: r.get(11)?,
                        created_at: millis_to_dt(r.get(12)?),
                    },
                    digest: r.get(13)?,
                })
            })
            .optional()?)
        })
        .await
    }

    async fn token_by_id(&self, id: i64) -> StoreResult<Option<PersonalAccessToken>> {
        self.run(move |c| {
            Ok(c.query_row(
                &format!("SELECT {TOKEN_COLS} FROM personal_access_tokens WHERE id = ?1"),
                [id],
                token_row,
            )
            .optional()?)
        })
        .await
    }

    async fn list_tokens(&self, user_id: Option<i64>) -> StoreResult<Vec<PersonalAccessToken>> {
        self.run(move |c| {
            let mut st = c.prepare(&format!(
                "SELECT {TOKEN_COLS} FROM personal_access_tokens
                 WHERE ?1 IS NULL OR user_id = ?1 ORDER BY id"
            ))?;
            let rows = st
                .query_map([user_id], token_row)?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
        .await
    }

    async fn revoke_token(&self, id: i64) -> StoreResult<bool> {
        self.run(move |c| {
            Ok(c.execute(
                "UPDATE personal_access_tokens SET revoked = 1 WHERE id = ?1",
                [id],
            )? > 0)
        })
        .await
    }

    async fn create_project(&self, project: NewProject) -> StoreResult<Project> {
        self.run(move |c| {
            let tx = c.transaction()?;
            let now = now_millis();
            let full = format!("{}/{}", project.namespace_path, project.path);
            tx.execute(
                "INSERT INTO projects (name, path, namespace_path, path_with_namespace, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![project.name, project.path, project.namespace_path, full, now],
            )
            .map_err(|e| if is_unique_violation(&e) { StoreError::Conflict("path") } else { e.into() })?;
            let id = tx.last_insert_rowid();
            tx.execute(
                "INSERT INTO project_members (project_id, user_id, access_level) VALUES (?1, ?2, ?3)",
                params![id, project.owner_id, AccessLevel::OWNER.0],
            )?;
            tx.commit()?;
            Ok(Project {
                id,
                name: project.name,
                path: project.path,
                namespace_path: project.namespace_path,
                path_with_namespace: full,
                created_at: millis_to_dt(now),
            })
        })
        .await
    }

    async fn ensure_gitlab_project(&self, id: i64) -> StoreResult<bool> {
        self.run(move |c| {
            let tx = c.transaction()?;
            // A path no local project is given by default (`gitlab/project-<id>`); a project
            // that already has this id is kept as it is, setting included.
            let inserted = tx.execute(
                "INSERT INTO projects (id, name, path, namespace_path, path_with_namespace, created_at)
                 VALUES (?1, 'GitLab project ' || ?1, 'project-' || ?1, 'gitlab',
                         'gitlab/project-' || ?1, ?2)
                 ON CONFLICT DO NOTHING",
                params![id, now_millis()],
            )?;
            let live: Option<bool> = tx
                .query_row(
                    "SELECT deleting_since IS NULL FROM projects WHERE id = ?1",
                    [id],
                    |r| r.get(0),
                )
                .optional()?;
            if inserted > 0 {
                tx.execute(
                    "INSERT INTO error_tracking_settings (project_id, active, integrated)
                     VALUES (?1, 1, 1) ON CONFLICT(project_id) DO NOTHING",
                    [id],
                )?;
            }
            tx.commit()?;
            Ok(live == Some(true))
        })
        .await
    }

    async fn project_by_id(&self, id: i64) -> StoreResult<Option<Project>> {
        self.run(move |c| {
            Ok(c.query_row(
                &format!(
                    "SELECT {PROJECT_COLS} FROM projects WHERE id = ?1 AND deleting_since IS NULL"
                ),
                [id],
                project_row,
            )
            .optional()?)
        })
        .await
    }

    async fn project_by_path(&self, path_with_namespace: &str) -> StoreResult<Option<Project>> {
        let path = path_with_namespace.to_owned();
        self.run(move |c| {
            Ok(c.query_row(
                &format!(
                    "SELECT {PROJECT_COLS} FROM projects
                     WHERE path_with_namespace = ?1 AND deleting_since IS NULL"
                ),
                [path],
                project_row,
            )
            .optional()?)
        })
        .await
    }

    async fn list_projects(&self) -> StoreResult<Vec<Project>> {
        self.run(|c| {
            let mut st = c.prepare(&format!(
                "SELECT {PROJECT_COLS} FROM projects WHERE deleting_since IS NULL ORDER BY id"
            ))?;
            let rows = st
                .query_map([], project_row)?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
        .await
    }

    async fn member_projects(&self, user_id: i64, min_level: i64) -> StoreResult<Vec<Project>> {
        self.run(move |c| {
            let mut st = c.prepare_cached(
                "SELECT p.id, p.name, p.path, p.namespace_path, p.path_with_namespace, p.created_at
                 FROM project_members AS m JOIN projects AS p ON p.id = m.project_id
                 WHERE m.user_id = ?1 AND m.access_level >= ?2 AND p.deleting_since IS NULL
                 ORDER BY p.id",
            )?;
            let rows = st
                .query_map([user_id, min_level], project_row)?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
        .await
    }

    async fn delete_project(&self, id: i64) -> StoreResult<Vec<ClientKey>> {
        self.run(move |c| {
            let tx = c.transaction()?;
            let keys = {
                let mut st = tx.prepare(&format!(
                    "SELECT {KEY_COLS} FROM client_keys WHERE project_id = ?1"
                ))?;
                let rows = st
                    .query_map([id], key_row)?
                    .collect::<Result<Vec<_>, _>>()?;
                rows
            };
            // Only marked here: the rows go in small transactions (`purge`), so that a project
            // with millions of events never holds the write lock for long.
            tx.execute(
                "UPDATE projects SET deleting_since = ?2 WHERE id = ?1 AND deleting_since IS NULL",
                params![id, now_millis()],
            )?;
            tx.execute(
                "UPDATE client_keys SET active = 0 WHERE project_id = ?1",
                [id],
            )?;
            tx.commit()?;
            Ok(keys)
        })
        .await
    }

    async fn member_level(&self, project_id: i64, user_id: i64) -> StoreResult<Option<i64>> {
        self.run(move |c| {
            Ok(c.query_row(
                "SELECT access_level FROM project_members WHERE project_id = ?1 AND user_id = ?2",
                [project_id, user_id],
                |r| r.get(0),
            )
            .optional()?)
        })
        .await
    }

    async fn add_member(&self, project_id: i64, user_id: i64, level: i64) -> StoreResult<Member> {
        self.run(move |c| {
            c.execute(
                "INSERT INTO project_members (project_id, user_id, access_level) VALUES (?1, ?2, ?3)",
                params![project_id, user_id, level],
            )
            .map_err(|e| if is_unique_violation(&e) { StoreError::Conflict("member") } else { e.into() })?;
            let (username, name): (String, String) = c.query_row(
                "SELECT username, name FROM users WHERE id = ?1",
                [user_id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
            Ok(Member { user_id, username, name, access_level: level })
        })
        .await
    }

    async fn remove_member(&self, project_id: i64, user_id: i64) -> StoreResult<bool> {
        self.run(move |c| {
            Ok(c.execute(
                "DELETE FROM project_members WHERE project_id = ?1 AND user_id = ?2",
                [project_id, user_id],
            )? > 0)
        })
        .await
    }

    async fn list_members(&self, project_id: i64) -> StoreResult<Vec<Member>> {
        self.run(move |c| {
            let mut st = c.prepare(
                "SELECT m.user_id, u.username, u.name, m.access_level
                 FROM project_members m JOIN users u ON u.id = m.user_id
                 WHERE m.project_id = ?1 ORDER BY m.user_id",
            )?;
            let rows = st
                .query_map([project_id], |r| {
                    Ok(Member {
                        user_id: r.get(0)?,
                        username: r.get(1)?,
                        name: r.get(2)?,
                        access_level: r.get(3)?,
                    })
                })?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
        .await
    }

    async fn setting(&self, project_id: i64) -> StoreResult<Option<SettingRow>> {
        self.run(move |c| get_setting(c, project_id)).await
    }

    async fn put_setting(
        &self,
        setting: Setting,
        first_key: String,
    ) -> StoreResult<(SettingRow, Option<ClientKey>)> {
        self.run(move |c| {
            let tx = c.transaction()?;
            tx.execute(
                "INSERT INTO error_tracking_settings (project_id, active, integrated) VALUES (?1, ?2, ?3)
                 ON CONFLICT(project_id) DO UPDATE SET active = excluded.active, integrated = excluded.integrated",
                params![setting.project_id, setting.active, setting.integrated],
            )?;
            let row = get_setting(&tx, setting.project_id)?.ok_or(StoreError::Missing)?;
            let key = ensure_first_key(&tx, &row, first_key)?;
            tx.commit()?;
            Ok((row, key))
        })
        .await
    }

    async fn patch_setting(
        &self,
        project_id: i64,
        active: bool,
        integrated: Option<bool>,
        first_key: String,
    ) -> StoreResult<Option<(SettingRow, Option<ClientKey>)>> {
        self.run(move |c| {
            let tx = c.transaction()?;
            let n = tx.execute(
                "UPDATE error_tracking_settings SET active = ?2, integrated = COALESCE(?3, integrated)
                 WHERE project_id = ?1",
                params![project_id, active, integrated],
            )?;
            if n == 0 {
                return Ok(None);
            }
            let row = get_setting(&tx, project_id)?
                .ok_or(StoreError::Missing)?;
            let key = ensure_first_key(&tx, &row, first_key)?;
            tx.commit()?;
            Ok(Some((row, key)))
        })
        .await
    }

    async fn all_settings(&self) -> StoreResult<Vec<Setting>> {
        self.run(|c| {
            let mut st = c.prepare(
                "SELECT project_id, active, integrated, project_name, sentry_external_url, api_url
                 FROM error_tracking_settings",
            )?;
            let rows = st
                .query_map([], setting_row)?
                .map(|r| r.map(|s| s.setting))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
        .await
    }

    async fn list_keys(
        &self,
        project_id: i64,
        page: u64,
        per_page: u64,
    ) -> StoreResult<Page<ClientKey>> {
        self.run(move |c| {
            let total: i64 = c.query_row(
                "SELECT COUNT(*) FROM client_keys WHERE project_id = ?1 AND deleted_at IS NULL",
                [project_id],
                |r| r.get(0),
            )?;
            let offset = page.saturating_sub(1).saturating_mul(per_page);
            let mut st = c.prepare(&format!(
                "SELECT {KEY_COLS} FROM client_keys WHERE project_id = ?1 AND deleted_at IS NULL
                 ORDER BY id LIMIT ?2 OFFSET ?3"
            ))?;
            let items = st
                .query_map(
                    params![
                        project_id,
                        per_page as i64,
                        offset.min(i64::MAX as u64) as i64
                    ],
                    key_row,
                )?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Page {
                items,
                total: total as u64,
            })
        })
        .await
    }

    async fn create_key(&self, project_id: i64, public_key: String) -> StoreResult<ClientKey> {
        self.run(move |c| insert_key(c, project_id, public_key))
            .await
    }

    async fn delete_key(&self, project_id: i64, key_id: i64) -> StoreResult<Option<ClientKey>> {
        self.run(move |c| {
            let tx = c.transaction()?;
            let key = tx
                .query_row(
                    &format!(
                        "SELECT {KEY_COLS} FROM client_keys
                     WHERE id = ?1 AND project_id = ?2 AND deleted_at IS NULL"
                    ),
                    [key_id, project_id],
                    key_row,
                )
                .optional()?;
            if key.is_some() {
                tx.execute(
                    "UPDATE client_keys SET active = 0, deleted_at = ?2 WHERE id = ?1",
                    params![key_id, now_millis()],
                )?;
            }
            tx.commit()?;
            Ok(key)
        })
        .await
    }

    async fn key_count(&self) -> StoreResult<u64> {
        self.run(|c| {
            let n: i64 = c.query_row("SELECT COUNT(*) FROM client_keys", [], |r| r.get(0))?;
            Ok(u64::try_from(n).unwrap_or(0))
        })
        .await
    }

    fn schema_version(&self) -> usize {
        schema_version()
    }

    async fn open_sink(&self, hooks: SinkHooks) -> StoreResult<Box<dyn EventSink>> {
        let opts = self.options().clone();
        let sink = tokio::task::spawn_blocking(move || -> StoreResult<SqliteSink> {
            let sink = SqliteSink::open(&opts, hooks)?;
            let checkpointer = checkpoint::Checkpointer::start(&opts)?;
            Ok(sink.with_checkpointer(checkpointer))
        })
        .await??;
        Ok(Box::new(sink))
    }

    async fn retention_pass(&self, now_millis: i64, days: u32) -> StoreResult<RetentionReport> {
        retention::retention_pass(self, now_millis, days).await
    }

    async fn purge_marked(&self) -> StoreResult<Vec<(i64, PurgeReport)>> {
        purge::purge_marked(self).await
    }

    async fn for_each_key(&self, mut each: Box<dyn FnMut(ClientKey) + Send>) -> StoreResult<()> {
        self.run(move |c| {
            let mut st = c.prepare(&format!("SELECT {KEY_COLS} FROM client_keys"))?;
            for row in st.query_map([], key_row)? {
                each(row?);
            }
            Ok(())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (id, project, fingerprint, status, events, users, first seen, last seen).
    type ErrorRow = (i64, i64, i64, i64, i64, i64, i64, i64);

    /// A database at migration 8 (63-bit fingerprints) holding three errors of project 1 that
    /// share their low 53 bits, one unrelated error, and one error of project 2 with the same
    /// low bits; then migration 9.
    #[test]
    fn migration_9_shrinks_fingerprints_and_merges_collisions() {
        let mut conn = Connection::open_in_memory().expect("in-memory database");
        migrate_to(&mut conn, 8).expect("migrations 1-8");
        let low: i64 = 5;
        let a = (1_i64 << 53) + low; // oldest of the three: keeps its row
        let b = (3_i64 << 53) + low;
        let c = low; // already small
        let other = (7_i64 << 60) + 12_345;
        conn.execute_batch(&format!(
            "INSERT INTO projects (id, name, path, namespace_path, path_with_namespace, created_at)
                 VALUES (1, 'p', 'p', 'n', 'n/p', 0), (2, 'q', 'q', 'n', 'n/q', 0);
             INSERT INTO errors (id, project_id, fingerprint, name, description, actor, status,
                                 event_count, approximated_user_count, first_seen_at, last_seen_at)
                 VALUES (10, 1, {a}, 'E', 'd', 'x', 1, 3, 1, 300, 900),
                        (11, 1, {b}, 'E', 'd', 'x', 0, 2, 2, 100, 500),
                        (12, 1, {c}, 'E', 'd', 'x', 2, 1, 1, 200, 950),
                        (13, 1, {other}, 'F', 'd', 'y', 0, 4, 0, 50, 60),
                        (14, 2, {b}, 'E', 'd', 'x', 1, 1, 0, 10, 20);
             INSERT INTO events (id, project_id, error_id, event_id, occurred_at, received_at,
                                 is_message, name, description, actor, payload)
                 VALUES (1, 1, 10, 'e1', 300, 300, 0, 'E', 'd', 'x', x'7b7d'),
                        (2, 1, 11, 'e2', 100, 100, 0, 'E', 'd', 'x', x'7b7d'),
                        (3, 1, 12, 'e3', 950, 950, 0, 'E', 'd', 'x', x'7b7d');
             INSERT INTO error_hourly (error_id, hour, count)
                 VALUES (10, 1, 3), (11, 1, 1), (11, 2, 1), (12, 2, 1), (13, 1, 4), (14, 1, 1);
             INSERT INTO error_users (error_id, user_hash) VALUES (10, 1), (11, 1), (11, 2), (12, 3);"
        ))
        .expect("rows of the old schema");

        assert_eq!(
            migrate(&mut conn).expect("migration 9"),
            MIGRATIONS.len() - 8
        );

        let errors: Vec<ErrorRow> = conn
            .prepare(
                "SELECT id, project_id, fingerprint, status, event_count, approximated_user_count,
                        first_seen_at, last_seen_at FROM errors ORDER BY id",
            )
            .expect("query")
            .query_map([], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                    r.get(7)?,
                ))
            })
            .expect("rows")
            .collect::<Result<_, _>>()
            .expect("decoded");
        let max = crate::domain::grouping::MAX_FINGERPRINT;
        assert_eq!(
            errors,
            vec![
                // Merged: 3 + 2 + 1 events, users {1, 2, 3}, earliest first and latest last
                // sighting, unresolved because one part was.
                (10, 1, low, 0, 6, 3, 100, 950),
                (13, 1, other & max, 0, 4, 0, 50, 60),
                // Another project's error is never merged into this one's.
                (14, 2, low, 1, 1, 0, 10, 20),
            ]
        );
        let moved: i64 = conn
            .query_row("SELECT COUNT(*) FROM events WHERE error_id = 10", [], |r| {
                r.get(0)
            })
            .expect("events");
        assert_eq!(moved, 3, "every event belongs to the merged error");
        let hourly: Vec<(i64, i64, i64)> = conn
            .prepare("SELECT error_id, hour, count FROM error_hourly ORDER BY error_id, hour")
            .expect("query")
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .expect("rows")
            .collect::<Result<_, _>>()
            .expect("decoded");
        assert_eq!(hourly, vec![(10, 1, 4), (10, 2, 2), (13, 1, 4), (14, 1, 1)]);
        let users: i64 = conn
            .query_row("SELECT COUNT(*) FROM error_users", [], |r| r.get(0))
            .expect("users");
        assert_eq!(users, 3);
    }

    #[test]
    fn existing_errors_get_short_numbers_in_first_seen_order() {
        let mut c = Connection::open_in_memory().expect("memory db");
        // The schema as it was before short numbers, with errors in it.
        migrate_to(&mut c, 10).expect("migrations 1-10");
        c.execute_batch(
            "INSERT INTO projects (id, name, path, namespace_path, path_with_namespace, created_at)
             VALUES (1, 'p', 'p', 'g', 'g/p', 0), (2, 'q', 'q', 'g', 'g/q', 0),
                    (3, 'r', 'r', 'g', 'g/r', 0);
             INSERT INTO errors (id, project_id, fingerprint, name, description, actor,
                                 first_seen_at, last_seen_at)
             VALUES (10, 1, 1, 'a', '', '', 300, 300), (11, 1, 2, 'b', '', '', 100, 100),
                    (12, 2, 3, 'c', '', '', 200, 200), (13, 1, 4, 'd', '', '', 100, 900);",
        )
        .expect("rows");
        assert_eq!(migrate(&mut c).expect("migrates"), MIGRATIONS.len() - 10);
        let seq = |id: i64| -> i64 {
            c.query_row("SELECT short_seq FROM errors WHERE id = ?1", [id], |r| {
                r.get(0)
            })
            .expect("row")
        };
        // Project 1: first seen at 100 (ids 11 and 13, the id breaking the tie), then 300.
        assert_eq!((seq(11), seq(13), seq(10)), (1, 2, 3));
        assert_eq!(seq(12), 1, "numbered per project");
        let counters: Vec<(i64, i64)> = c
            .prepare("SELECT id, error_seq FROM projects ORDER BY id")
            .expect("query")
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .expect("rows")
            .collect::<Result<_, _>>()
            .expect("counters");
        assert_eq!(counters, [(1, 3), (2, 1), (3, 0)]);
    }

    /// A database at migration 13 with three counted events and one above the mark: migration
    /// 14 gives the counted ones their entries; the other waits for the writer's recount.
    #[test]
    fn migration_14_moves_the_counted_events_into_event_by_error() {
        let mut c = Connection::open_in_memory().expect("memory db");
        migrate_to(&mut c, 13).expect("migrations 1-13");
        c.execute_batch(
            "INSERT INTO projects (id, name, path, namespace_path, path_with_namespace, created_at)
             VALUES (1, 'p', 'p', 'g', 'g/p', 0);
             INSERT INTO errors (id, project_id, fingerprint, name, description, actor,
                                 first_seen_at, last_seen_at)
             VALUES (10, 1, 1, 'a', '', '', 100, 300), (11, 1, 2, 'b', '', '', 200, 200);
             INSERT INTO events (id, project_id, error_id, event_id, occurred_at, received_at,
                                 is_message, name, description, actor, payload)
             VALUES (1, 1, 10, 'e1', 300, 0, 0, 'a', '', '', x'7b7d'),
                    (2, 1, 11, 'e2', 200, 0, 0, 'b', '', '', x'7b7d'),
                    (3, 1, 10, 'e3', 100, 0, 0, 'a', '', '', x'7b7d'),
                    (4, 1, 11, 'e4', 400, 0, 0, 'b', '', '', x'7b7d');
             UPDATE ingest_state SET counted_through = 3;",
        )
        .expect("rows");
        assert_eq!(migrate(&mut c).expect("migrates"), MIGRATIONS.len() - 13);
        let entries: Vec<(i64, i64, i64)> = c
            .prepare("SELECT error_id, occurred_at, id FROM event_by_error")
            .expect("query")
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .expect("rows")
            .collect::<Result<_, _>>()
            .expect("entries");
        assert_eq!(entries, [(10, 100, 3), (10, 300, 1), (11, 200, 2)]);
        let index: Option<String> = c
            .query_row(
                "SELECT name FROM sqlite_master WHERE name = 'events_by_error'",
                [],
                |r| r.get(0),
            )
            .optional()
            .expect("schema");
        assert_eq!(index, None, "the index is gone");
    }
}
