//! Optional per-key rate limit: at most N events per key in each fixed one-minute window.
//! State is one small entry per known key id, so unknown keys (refused before this point) can
//! never grow it.

use dashmap::DashMap;
use tokio::time::{Duration, Instant};

const WINDOW: Duration = Duration::from_secs(60);

pub struct RateLimiter {
    per_minute: u32,
    windows: DashMap<i64, (Instant, u32)>,
}

impl RateLimiter {
    /// `per_minute == 0` disables the limit.
    pub fn new(per_minute: u32) -> Self {
        RateLimiter {
            per_minute,
            windows: DashMap::new(),
        }
    }

    /// Counts `events` against `key_id`; `Err(seconds)` tells how long until the window resets
    /// when the limit is hit. Uses tokio's clock so tests can run it with paused time.
    pub fn check(&self, key_id: i64, events: u32) -> Result<(), u64> {
        if self.per_minute == 0 {
            return Ok(());
        }
        let now = Instant::now();
        let mut entry = self.windows.entry(key_id).or_insert((now, 0));
        let (start, count) = &mut *entry;
        if now.duration_since(*start) >= WINDOW {
            *start = now;
            *count = 0;
        }
        if count.saturating_add(events) > self.per_minute {
            let left = WINDOW.saturating_sub(now.duration_since(*start));
            return Err(left.as_secs().max(1));
        }
        *count += events;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn limit_resets_after_a_minute() {
        let rl = RateLimiter::new(2);
        assert!(rl.check(1, 1).is_ok());
        assert!(rl.check(1, 1).is_ok());
        let wait = rl.check(1, 1).expect_err("third event is limited");
        assert_eq!(wait, 60);
        // Another key has its own window.
        assert!(rl.check(2, 1).is_ok());
        tokio::time::advance(Duration::from_secs(45)).await;
        assert_eq!(rl.check(1, 1), Err(15));
        tokio::time::advance(Duration::from_secs(15)).await;
        assert!(rl.check(1, 1).is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn zero_means_unlimited() {
        let rl = RateLimiter::new(0);
        for _ in 0..1000 {
            assert!(rl.check(1, 1).is_ok());
        }
    }
}
