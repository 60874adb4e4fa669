//! Background WAL checkpoints: a thread with its own connection that copies committed pages from
//! the write-ahead log into the database file, so the writer thread does not have to.
//!
//! Left to itself, SQLite checkpoints inside whichever commit pushes the log past
//! `wal_autocheckpoint` pages: on the writer thread, between two batches, while every handler
//! waiting for its 200 waits for the copy and the fsync of the database file that ends it. Under
//! load that was a quarter of the writer's time. Here the copy runs beside the writer, on the
//! other core, with `PASSIVE` checkpoints that never block it.
//!
//! The writer's own automatic checkpoint stays on, at [`WRITER_AUTOCHECKPOINT_PAGES`], as a
//! backstop: a passive checkpoint that runs while commits keep landing can never find the whole
//! log copied, and only a fully copied log is started again from its beginning. When the log
//! reaches that size the writer checkpoints once itself; by then almost every frame has been
//! copied here already, so that checkpoint is short, and the log then restarts.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::Connection;

use super::sqlite::{open_connection, SqliteOptions};
use super::StoreResult;

/// How often the background thread checkpoints. Short rounds keep each burst of copying small:
/// on a 2-core machine a 100 ms interval made bursts long enough to starve the request threads
/// and tripled the p99 latency, while 10 ms kept it where it was without the thread. A round
/// with nothing new in the log does no I/O.
pub const INTERVAL: Duration = Duration::from_millis(10);

/// Log size (in pages) at which the writer checkpoints itself; see the module documentation.
/// 8192 pages of 4 KiB is 32 MiB of log.
pub const WRITER_AUTOCHECKPOINT_PAGES: i64 = 8192;

/// Owns the checkpoint thread; [`Checkpointer::stop`] ends it.
pub struct Checkpointer {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Checkpointer {
    pub fn start(opts: &SqliteOptions) -> StoreResult<Checkpointer> {
        let conn = open_connection(opts)?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::Builder::new()
            .name("faultline-checkpoint".into())
            .spawn(move || run(conn, &stopping))
            .map_err(super::StoreError::Thread)?;
        Ok(Checkpointer {
            stop,
            thread: Some(thread),
        })
    }

    /// Ends the thread after its current round. SQLite checkpoints the rest of the log when the
    /// last connection closes.
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            if t.join().is_err() {
                tracing::error!("checkpoint thread panicked");
            }
        }
    }
}

fn run(conn: Connection, stop: &AtomicBool) {
    while !stop.load(Ordering::SeqCst) {
        std::thread::park_timeout(INTERVAL);
        // (busy, frames in the log, frames copied); a busy result only means another
        // checkpoint was running, and the next round catches up.
        let result = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, i64>(2)?,
            ))
        });
        match result {
            Ok((_, log, copied)) => tracing::trace!(log, copied, "wal checkpoint"),
            // A failed round (a full disk, say) is retried at the next one; the writer's
            // backstop checkpoint still bounds the log meanwhile.
            Err(e) => tracing::warn!(error = %e, "wal checkpoint failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SqliteStore;
    use std::time::Instant;

    #[test]
    fn committed_pages_reach_the_database_file_without_the_writer_checkpointing() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("cp.db");
        let store = SqliteStore::open_with(SqliteOptions {
            path: path.clone(),
            synchronous: Default::default(),
            max_page_count: None,
        })
        .expect("database opens");
        // A writer-like connection whose own automatic checkpoint cannot trigger here.
        let writer = open_connection(store.options()).expect("connection");
        writer
            .pragma_update(None, "wal_autocheckpoint", WRITER_AUTOCHECKPOINT_PAGES)
            .expect("pragma");
        let before = std::fs::metadata(&path).expect("db file").len();
        writer
            .execute_batch(
                "CREATE TABLE filler (b BLOB);
                 WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 200)
                 INSERT INTO filler SELECT randomblob(4000) FROM n;",
            )
            .expect("writes");
        assert_eq!(
            std::fs::metadata(&path).expect("db file").len(),
            before,
            "the commit left its pages in the log"
        );
        let checkpointer = Checkpointer::start(store.options()).expect("thread starts");
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut size = before;
        while Instant::now() < deadline {
            size = std::fs::metadata(&path).expect("db file").len();
            if size > before + 500_000 {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        checkpointer.stop();
        assert!(
            size > before + 500_000,
            "the background checkpoint copied the pages ({before} -> {size} bytes)"
        );
    }
}
