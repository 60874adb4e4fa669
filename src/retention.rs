//! The retention task: every `retention.interval_secs` it runs one
//! [`retention_pass`](crate::store::Store::retention_pass) with the current time and counts
//! what it deleted. The SQL and the batching are the backend's (`store::sqlite::retention`).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::RetentionConfig;
use crate::metrics::Metrics;
use crate::store::Store;

/// Starts the task, unless retention is switched off (`days = 0`). It stops when `stop` turns
/// true; a pass in progress is abandoned between two batches, each of which is its own
/// transaction, so nothing is left half-done.
pub fn spawn(
    store: Arc<dyn Store>,
    config: RetentionConfig,
    metrics: Arc<Metrics>,
    mut stop: watch::Receiver<bool>,
) -> Option<JoinHandle<()>> {
    if config.days == 0 {
        return None;
    }
    // A zero interval would make tokio's interval panic; one second is the tightest sane loop.
    let period = Duration::from_secs(config.interval_secs.max(1));
    Some(tokio::spawn(async move {
        let mut ticks = tokio::time::interval(period);
        // After a long pass, wait a whole period again rather than running passes back to back.
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.wait_for(|s| *s) => break,
                _ = ticks.tick() => {}
            }
            let now = chrono::Utc::now().timestamp_millis();
            let pass = store.retention_pass(now, config.days);
            let result = tokio::select! {
                _ = stop.wait_for(|s| *s) => break,
                r = pass => r,
            };
            match result {
                Ok(report) => {
                    metrics.retention_deleted.inc_by(report.events);
                    if report != Default::default() {
                        tracing::info!(?report, "retention pass deleted old data");
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, cause = ?std::error::Error::source(&e), "retention pass failed")
                }
            }
        }
    }))
}
