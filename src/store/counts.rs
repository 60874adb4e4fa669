//! Error counters that the writer keeps in memory between flushes: each error's event count,
//! last-seen time and newest description, and the hourly counts behind `frequency_24h`.
//!
//! Why: under load nearly every event of a batch belongs to a different error, and counting it
//! there and then rewrites the error's row, two of its list-index entries and an hourly row in
//! every batch. That was about 30 % of the writer's instructions for the load benchmark's event
//! (`cargo bench --bench writer`, callgrind). Added up in memory and written every
//! [`FLUSH_INTERVAL`], the same rows are rewritten a few times a second instead.
//!
//! What stays exact:
//! - **Reads.** Every read API request that shows counts first asks the writer to flush
//!   (`WriterHandle::settle_counts`), so whatever was acknowledged before the request is counted
//!   in its answer. Nothing else reads these columns. (If that request cannot reach the writer,
//!   or the write fails, say on a full disk, the read goes on with what is stored and logs it.)
//! - **Crashes.** The events themselves are committed before their 200, as always. The database
//!   remembers the highest event id whose counts have been written (`ingest_state.counted_through`,
//!   moved in the same transaction as the counts). On start, [`recount_tail`] counts the events
//!   above it again, so a crash between a batch and its flush loses no count and counts none
//!   twice. Event ids only grow, except that SQLite reuses the highest id after that row is
//!   deleted; a batch that gets an id at or below the mark flushes in its own transaction, so
//!   the rule "uncounted events are exactly those above the mark" always holds.
//!
//! What is still written with the batch, because it is rare and changes what a list shows
//! beyond a number: a new error's row (its count starts at zero and arrives with the flush),
//! a resolved error reopening, an earlier first-seen time, and a new user of an error.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Longest time counts wait in memory while events keep arriving. Readers never wait for it
/// (they ask for a flush); it bounds how far the database file lags behind when nobody reads.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(100);

/// The hour bucket `error_hourly.hour` uses for an event time in unix milliseconds: the start of
/// its hour, in seconds.
pub fn hour_of(occurred_at_ms: i64) -> i64 {
    occurred_at_ms.div_euclid(3_600_000) * 3600
}

/// What one error has gained since the last flush.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ErrorGain {
    /// Checked again when written, so a gain can never land on another error.
    fingerprint: i64,
    count: i64,
    last_seen_at: i64,
    /// The newest event's description and actor name the error.
    description: String,
    actor: String,
}

/// Counts not yet written to the database.
#[derive(Debug, Default)]
pub struct PendingCounts {
    errors: HashMap<i64, ErrorGain>,
    hours: HashMap<(i64, i64), i64>,
    /// Highest event id counted here (0 when empty).
    through: i64,
    /// Lowest event id counted here (0 when empty).
    lowest: i64,
    /// When the oldest count here was added.
    since: Option<Instant>,
}

impl PendingCounts {
    pub fn is_empty(&self) -> bool {
        self.errors.is_empty() && self.hours.is_empty()
    }

    /// The errors that gained events here.
    pub fn error_ids(&self) -> impl Iterator<Item = i64> + '_ {
        self.errors.keys().copied()
    }

    /// Highest event id counted here (0 when empty).
    pub fn through(&self) -> i64 {
        self.through
    }

    /// Lowest event id counted here (0 when empty).
    pub fn lowest(&self) -> i64 {
        self.lowest
    }

    /// Whether the oldest count has waited [`FLUSH_INTERVAL`].
    pub fn due(&self) -> bool {
        self.since.is_some_and(|t| t.elapsed() >= FLUSH_INTERVAL)
    }

    /// How long until [`PendingCounts::due`], if anything is pending.
    pub fn until_due(&self) -> Option<Duration> {
        self.since
            .map(|t| FLUSH_INTERVAL.saturating_sub(t.elapsed()))
    }

    /// Counts one stored event. Events must be added in the order they were stored.
    pub fn add(
        &mut self,
        event_id: i64,
        error_id: i64,
        fingerprint: i64,
        occurred_at: i64,
        description: &str,
        actor: &str,
    ) {
        self.since.get_or_insert_with(Instant::now);
        self.through = self.through.max(event_id);
        self.lowest = if self.lowest == 0 {
            event_id
        } else {
            self.lowest.min(event_id)
        };
        *self
            .hours
            .entry((error_id, hour_of(occurred_at)))
            .or_default() += 1;
        match self.errors.get_mut(&error_id) {
            Some(g) => {
                g.count += 1;
                g.last_seen_at = g.last_seen_at.max(occurred_at);
                if g.description != description {
                    description.clone_into(&mut g.description);
                }
                if g.actor != actor {
                    actor.clone_into(&mut g.actor);
                }
            }
            None => {
                self.errors.insert(
                    error_id,
                    ErrorGain {
                        fingerprint,
                        count: 1,
                        last_seen_at: occurred_at,
                        description: description.to_owned(),
                        actor: actor.to_owned(),
                    },
                );
            }
        }
    }

    /// Adds `later`, whose events were all stored after these.
    pub fn merge(&mut self, later: PendingCounts) {
        if later.is_empty() {
            return;
        }
        if self.is_empty() {
            *self = later;
            return;
        }
        self.through = self.through.max(later.through);
        self.lowest = self.lowest.min(later.lowest);
        for (key, n) in later.hours {
            *self.hours.entry(key).or_default() += n;
        }
        for (id, gain) in later.errors {
            match self.errors.get_mut(&id) {
                Some(g) => {
                    g.count += gain.count;
                    g.last_seen_at = g.last_seen_at.max(gain.last_seen_at);
                    g.description = gain.description;
                    g.actor = gain.actor;
                }
                None => {
                    self.errors.insert(id, gain);
                }
            }
        }
    }

    /// Drops what is held for `error_id`: an error with that id was deleted, and a new one is
    /// taking the id.
    pub fn forget_error(&mut self, error_id: i64) {
        if self.errors.remove(&error_id).is_some() {
            self.hours.retain(|&(id, _), _| id != error_id);
        }
    }

    /// Each error's gain: (error id, fingerprint, events, last seen, description, actor).
    pub fn errors(&self) -> impl Iterator<Item = (i64, i64, i64, i64, &str, &str)> + '_ {
        self.errors.iter().map(|(&id, g)| {
            (
                id,
                g.fingerprint,
                g.count,
                g.last_seen_at,
                g.description.as_str(),
                g.actor.as_str(),
            )
        })
    }

    /// Each (error id, hour) bucket's gain.
    pub fn hours(&self) -> impl Iterator<Item = ((i64, i64), i64)> + '_ {
        self.hours.iter().map(|(&k, &n)| (k, n))
    }

    /// Restarts the wait, after a failed write.
    pub fn postpone(&mut self) {
        if !self.is_empty() {
            self.since = Some(Instant::now());
        }
    }

    pub fn clear(&mut self) {
        self.errors.clear();
        self.hours.clear();
        self.through = 0;
        self.lowest = 0;
        self.since = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gains_add_up_and_the_newest_description_wins() {
        let mut a = PendingCounts::default();
        a.add(1, 10, 7, 5_000, "first", "f()");
        a.add(2, 10, 7, 3_000, "second", "g()");
        let mut b = PendingCounts::default();
        b.add(3, 10, 7, 4_000, "third", "h()");
        b.add(4, 11, 8, 7_200_000, "other", "o()");
        a.merge(b);
        assert_eq!(a.through, 4);
        let g = &a.errors[&10];
        assert_eq!(
            (
                g.count,
                g.last_seen_at,
                g.description.as_str(),
                g.actor.as_str()
            ),
            (3, 5_000, "third", "h()")
        );
        assert_eq!(a.hours[&(10, 0)], 3);
        assert_eq!(a.hours[&(11, 7200)], 1);
        a.forget_error(10);
        assert!(!a.errors.contains_key(&10));
        assert!(!a.hours.contains_key(&(10, 0)));
        assert_eq!(a.hours.len(), 1);
    }

    #[test]
    fn hours_start_at_the_hour_before_the_epoch_too() {
        assert_eq!(hour_of(0), 0);
        assert_eq!(hour_of(3_599_999), 0);
        assert_eq!(hour_of(3_600_000), 3600);
        assert_eq!(hour_of(-1), -3600);
    }

    #[test]
    fn due_only_after_the_interval() {
        let mut p = PendingCounts::default();
        assert!(!p.due());
        assert_eq!(p.until_due(), None);
        p.add(1, 1, 1, 0, "d", "a");
        assert!(!p.due());
        assert!(p.until_due().is_some_and(|d| d <= FLUSH_INTERVAL));
        p.clear();
        assert!(p.is_empty() && p.until_due().is_none());
    }
}
