//! The clock alerting reads: wall-clock time plus an offset that only tests move, so that a
//! frequency rule's window and quiet period can be crossed without waiting for them.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

/// Unix milliseconds, as the store keeps times.
#[derive(Debug, Default)]
pub struct Clock {
    offset_ms: AtomicI64,
}

impl Clock {
    pub fn now_millis(&self) -> i64 {
        chrono::Utc::now().timestamp_millis() + self.offset_ms.load(Ordering::Relaxed)
    }

    /// Moves this clock forward. Nothing in the server calls it; it exists for tests.
    pub fn advance(&self, by: Duration) {
        let ms = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
        self.offset_ms.fetch_add(ms, Ordering::Relaxed);
    }
}
