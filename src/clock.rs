//! The clocks time-dependent code reads. [`Clock`] is monotonic, for caches (today the GitLab
//! key answers in `crate::gitlab`): production uses the system's, tests hand
//! `app::spawn_with_clock` a [`ManualClock`] and move time forward themselves instead of sleeping
//! through lifetimes. [`WallClock`] is calendar time, for alerting, which stores times and
//! compares them with the events' own timestamps: wall time plus an offset only tests move.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A monotonic clock: the time elapsed since some fixed origin.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> Duration;
}

/// `Instant` since the clock was made.
#[derive(Debug)]
pub struct SystemClock {
    origin: Instant,
}

impl SystemClock {
    pub fn new() -> SystemClock {
        SystemClock {
            origin: Instant::now(),
        }
    }
}

impl Default for SystemClock {
    fn default() -> Self {
        SystemClock::new()
    }
}

impl Clock for SystemClock {
    fn now(&self) -> Duration {
        self.origin.elapsed()
    }
}

/// A clock that only moves when told to, for tests.
#[derive(Debug, Default)]
pub struct ManualClock {
    millis: AtomicU64,
}

impl ManualClock {
    pub fn new() -> ManualClock {
        ManualClock::default()
    }

    pub fn advance(&self, by: Duration) {
        let ms = u64::try_from(by.as_millis()).unwrap_or(u64::MAX);
        self.millis.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Duration {
        Duration::from_millis(self.millis.load(Ordering::SeqCst))
    }
}

/// Unix milliseconds, as the store keeps times, plus an offset that only tests move, so that a
/// frequency rule's window and quiet period can be crossed without waiting for them.
#[derive(Debug, Default)]
pub struct WallClock {
    offset_ms: AtomicI64,
}

impl WallClock {
    pub fn now_millis(&self) -> i64 {
        chrono::Utc::now().timestamp_millis() + self.offset_ms.load(Ordering::Relaxed)
    }

    /// Moves this clock forward. Nothing in the server calls it; it exists for tests.
    pub fn advance(&self, by: Duration) {
        let ms = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
        self.offset_ms.fetch_add(ms, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_advanced() {
        let c = ManualClock::new();
        assert_eq!(c.now(), Duration::ZERO);
        c.advance(Duration::from_secs(61));
        assert_eq!(c.now(), Duration::from_secs(61));
        let s = SystemClock::new();
        assert!(s.now() <= s.now());
    }

    #[test]
    fn wall_clock_is_calendar_time_plus_what_tests_add() {
        let w = WallClock::default();
        let before = chrono::Utc::now().timestamp_millis();
        w.advance(Duration::from_secs(3600));
        let now = w.now_millis();
        assert!(
            now >= before + 3_600_000 && now < before + 3_700_000,
            "{now}"
        );
    }
}
