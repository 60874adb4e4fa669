//! The purge task: removes the rows of deleted projects in the background (the SQL and its
//! batching are the backend's, `store::sqlite::purge`). It runs once at start, for deletions a restart cut short,
//! and again whenever the management API marks a project deleted.

use std::sync::Arc;

use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

use crate::store::Store;

/// Starts the task. `wake` is notified after a project is marked; the task stops when `stop`
/// turns true, between two of its transactions.
pub fn spawn(
    store: Arc<dyn Store>,
    wake: Arc<Notify>,
    mut stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let result = tokio::select! {
                _ = stop.wait_for(|s| *s) => break,
                r = store.purge_marked() => r,
            };
            match result {
                Ok(done) => {
                    for (project_id, report) in done {
                        tracing::info!(project_id, ?report, "deleted project's data removed");
                    }
                }
                // Left marked: the next wake-up or start tries again.
                Err(e) => tracing::error!(
                    error = %e,
                    cause = ?std::error::Error::source(&e),
                    "removing a deleted project's data failed"
                ),
            }
            tokio::select! {
                _ = stop.wait_for(|s| *s) => break,
                _ = wake.notified() => {}
            }
        }
    })
}
