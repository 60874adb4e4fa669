//! The PostgreSQL backend, for several gateway nodes on one database: the connection pool,
//! the driver's errors in the store's words, the migrations (under an advisory lock, so nodes
//! starting together apply each once) and the management queries behind [`Store`]. The other
//! traits' SQL is in the files beside this one, as for SQLite: `read`, `web`, `alerts`, the
//! writer's `ingest`, and the upkeep in `upkeep` (retention by partition, purge).
//!
//! The driver is tokio-postgres, pooled by deadpool-postgres; see ARCHITECTURE.md for why.
//! Times are unix milliseconds in `BIGINT` columns, as on SQLite, so records map the same way.

pub mod alerts;
pub mod copy;
pub mod ingest;
pub mod manage;
pub mod notify;
pub mod read;
pub mod schema;
pub mod upkeep;
pub mod web;

use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::error::SqlState;
use tokio_postgres::NoTls;

use crate::store::{StoreError, StoreResult};

/// Advisory lock keys: one 64-bit key per purpose, so that two purposes never wait on each
/// other. The high bits spell "fl" so the keys do not collide with another application's on
/// the same database.
pub mod locks {
    /// Held while migrations run.
    pub const MIGRATE: i64 = 0x666c_0000_0000_0001;
    /// Held by the node running a retention pass.
    pub const RETENTION: i64 = 0x666c_0000_0000_0002;
    /// Held by the node purging deleted projects.
    pub const PURGE: i64 = 0x666c_0000_0000_0003;
    /// Held while a day's `events` partition is created.
    pub const PARTITION: i64 = 0x666c_0000_0000_0004;
    /// Base of the per-node keys: a live node holds `NODE_BASE + node` for as long as its
    /// writer's connection lives, so another node that can take it knows the node is gone.
    pub const NODE_BASE: i64 = 0x666c_0001_0000_0000;
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> StoreError {
        if let Some(code) = e.code() {
            if *code == SqlState::DISK_FULL || *code == SqlState::OUT_OF_MEMORY {
                return StoreError::Full;
            }
            // Class 08 (connection exception), and the server shutting down or starting up.
            if code.code().starts_with("08")
                || *code == SqlState::ADMIN_SHUTDOWN
                || *code == SqlState::CRASH_SHUTDOWN
                || *code == SqlState::CANNOT_CONNECT_NOW
                || *code == SqlState::READ_ONLY_SQL_TRANSACTION
            {
                return StoreError::Unavailable(Box::new(e));
            }
            return StoreError::Database(Box::new(e));
        }
        // No SQLSTATE: the connection broke or could not be made.
        StoreError::Unavailable(Box::new(e))
    }
}

impl From<deadpool_postgres::PoolError> for StoreError {
    fn from(e: deadpool_postgres::PoolError) -> StoreError {
        match e {
            deadpool_postgres::PoolError::Backend(e) => e.into(),
            other => StoreError::Unavailable(Box::new(other)),
        }
    }
}

/// True for a unique-constraint violation, which the management API reports as "taken".
pub(crate) fn is_unique_violation(e: &tokio_postgres::Error) -> bool {
    e.code() == Some(&SqlState::UNIQUE_VIOLATION)
}

/// Connections the API side keeps; the writer has its own.
const POOL_SIZE: usize = 16;

/// How long a request waits for a pooled connection, or for a new one to be made, before it
/// is answered as "database unavailable".
const POOL_WAIT: Duration = Duration::from_secs(5);

/// The PostgreSQL store. Cloning shares the pool.
#[derive(Clone)]
pub struct PgStore {
    pool: Pool,
    config: tokio_postgres::Config,
}

impl PgStore {
    /// Connects, applies migrations and returns the store. `url` is a libpq-style URL
    /// (`postgres://user:pass@host:5432/db`).
    pub async fn open(url: &str) -> StoreResult<PgStore> {
        let config: tokio_postgres::Config = url
            .parse()
            .map_err(|e: tokio_postgres::Error| StoreError::Database(Box::new(e)))?;
        let store = PgStore::with_config(config)?;
        store.migrate().await?;
        Ok(store)
    }

    fn with_config(mut config: tokio_postgres::Config) -> StoreResult<PgStore> {
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(POOL_WAIT);
        }
        config.application_name("faultline");
        let manager = Manager::from_config(
            config.clone(),
            NoTls,
            ManagerConfig {
                // A connection the server closed (a restart, a fail-over) is found out by a
                // query before it is handed out, and replaced.
                recycling_method: RecyclingMethod::Verified,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .wait_timeout(Some(POOL_WAIT))
            .create_timeout(Some(POOL_WAIT))
            .recycle_timeout(Some(POOL_WAIT))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()
            .map_err(|e| StoreError::Database(Box::new(e)))?;
        Ok(PgStore { pool, config })
    }

    /// A pooled connection.
    pub(crate) async fn client(&self) -> StoreResult<deadpool_postgres::Object> {
        Ok(self.pool.get().await?)
    }

    /// A connection of its own, outside the pool, with the task that drives it: the writer's,
    /// and the one that listens for notifications.
    pub(crate) async fn connect(&self) -> StoreResult<tokio_postgres::Client> {
        let (client, connection) = self.config.connect(NoTls).await?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::warn!(error = %e, "a PostgreSQL connection ended");
            }
        });
        Ok(client)
    }

    /// Applies the migrations not yet applied, each in its own transaction, while holding
    /// [`locks::MIGRATE`], so that nodes starting at the same moment apply each once.
    async fn migrate(&self) -> StoreResult<usize> {
        let mut client = self.client().await?;
        client
            .execute("SELECT pg_advisory_lock($1)", &[&locks::MIGRATE])
            .await
            .map_err(migration_error)?;
        let result = async {
            client
                .batch_execute(
                    "CREATE TABLE IF NOT EXISTS schema_migrations (
                         version    BIGINT PRIMARY KEY,
                         applied_at BIGINT NOT NULL
                     )",
                )
                .await
                .map_err(migration_error)?;
            let current: i64 = client
                .query_one(
                    "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
                    &[],
                )
                .await
                .map_err(migration_error)?
                .get(0);
            let mut applied = 0;
            for (i, sql) in schema::MIGRATIONS
                .iter()
                .enumerate()
                .skip(usize::try_from(current).unwrap_or(0))
            {
                let tx = client.transaction().await.map_err(migration_error)?;
                tx.batch_execute(sql).await.map_err(migration_error)?;
                tx.execute(
                    "INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)",
                    &[&(i as i64 + 1), &now_millis()],
                )
                .await
                .map_err(migration_error)?;
                tx.commit().await.map_err(migration_error)?;
                applied += 1;
            }
            Ok::<usize, StoreError>(applied)
        }
        .await;
        let unlocked = client
            .execute("SELECT pg_advisory_unlock($1)", &[&locks::MIGRATE])
            .await;
        let applied = result?;
        unlocked.map_err(migration_error)?;
        if applied > 0 {
            tracing::info!(applied, "PostgreSQL migrations applied");
        }
        Ok(applied)
    }

    /// Whether the database has been migrated by some node already.
    pub async fn is_migrated(url: &str) -> StoreResult<bool> {
        let config: tokio_postgres::Config = url
            .parse()
            .map_err(|e: tokio_postgres::Error| StoreError::Database(Box::new(e)))?;
        let store = PgStore::with_config(config)?;
        let client = store.client().await?;
        let row = client
            .query_one("SELECT to_regclass('schema_migrations') IS NOT NULL", &[])
            .await?;
        Ok(row.get(0))
    }
}

fn migration_error(e: tokio_postgres::Error) -> StoreError {
    match StoreError::from(e) {
        StoreError::Database(e) => StoreError::Migration(e),
        other => other,
    }
}

/// The number of migrations this build knows.
pub fn schema_version() -> usize {
    schema::MIGRATIONS.len()
}

pub(crate) fn now_millis() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// The URL with its password replaced, for logs and printed configuration.
pub fn redacted_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) => {
            if u.password().is_some() {
                let _ = u.set_password(Some("redacted"));
            }
            u.to_string()
        }
        // Not a URL (a key=value string): show only that it is set.
        Err(_) => "[redacted]".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redacted_url("postgres://app:s3cret@db.example:5432/faultline"),
            "postgres://app:redacted@db.example:5432/faultline"
        );
        assert_eq!(
            redacted_url("postgres://app@db/faultline"),
            "postgres://app@db/faultline"
        );
        assert_eq!(redacted_url("host=db password=x"), "[redacted]");
    }
}
