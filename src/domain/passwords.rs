//! Passwords of the web UI's sign-in: Argon2id hashing in the PHC string format (the only form
//! stored), generation of initial passwords, and the throttle that slows repeated failed
//! sign-ins down.

use std::time::{Duration, Instant};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use dashmap::DashMap;
use rand::RngCore;

/// Shortest password `set-password` and the UI accept.
pub const MIN_PASSWORD_LEN: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    #[error("the password must be at least {MIN_PASSWORD_LEN} characters long")]
    TooShort,
    #[error("hashing the password failed")]
    Hash,
}

/// Checks a new password's length (counted in characters, not bytes).
pub fn check_new(password: &str) -> Result<(), PasswordError> {
    if password.chars().count() < MIN_PASSWORD_LEN {
        return Err(PasswordError::TooShort);
    }
    Ok(())
}

/// Argon2id (version 0x13) with the crate's defaults, which are OWASP's recommended minimum
/// (19 MiB, two passes, one lane): a guess costs an attacker with the database real memory.
pub fn hash(password: &str) -> Result<String, PasswordError> {
    let mut salt = [0u8; 16];
    rand::rng().fill_bytes(&mut salt);
    let salt = SaltString::encode_b64(&salt).map_err(|_| PasswordError::Hash)?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|_| PasswordError::Hash)
}

/// Whether `password` matches the stored PHC string. The parameters come from the string, so
/// hashes made with other parameters still verify.
pub fn verify(password: &str, stored: &str) -> bool {
    match PasswordHash::new(stored) {
        Ok(parsed) => Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    }
}

/// A password nobody has to type twice: 18 random bytes as 24 URL-safe base64 characters.
pub fn generate() -> String {
    use base64::Engine;
    let mut bytes = [0u8; 18];
    rand::rng().fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Failed sign-ins a name may have before it has to wait.
pub const FREE_FAILURES: u32 = 5;
/// The longest wait after repeated failures.
const MAX_WAIT: Duration = Duration::from_secs(15 * 60);
/// Failures older than this are forgotten.
const FORGET_AFTER: Duration = Duration::from_secs(60 * 60);
/// Names whose failures are remembered at most.
const MAX_NAMES: usize = 100_000;

/// Counts failed sign-ins per username (lower-cased, whether or not such a user exists, so the
/// answer does not tell which names exist). After [`FREE_FAILURES`] failures every further
/// attempt must wait, doubling from one second up to [`MAX_WAIT`], and an attempt during the
/// wait is refused without looking at the password: an online guesser gets a few dozen tries an
/// hour instead of thousands. Kept in memory: a restart forgets it, which costs a guesser a
/// restart per round.
#[derive(Debug, Default)]
pub struct SignInThrottle {
    failures: DashMap<String, (u32, Instant)>,
}

impl SignInThrottle {
    pub fn new() -> SignInThrottle {
        SignInThrottle::default()
    }

    fn wait_for(count: u32) -> Duration {
        if count < FREE_FAILURES {
            return Duration::ZERO;
        }
        let doublings = (count - FREE_FAILURES).min(20);
        Duration::from_secs(1u64 << doublings).min(MAX_WAIT)
    }

    /// How long `username` must still wait before an attempt is looked at; `None` when it may
    /// try now.
    pub fn must_wait(&self, username: &str) -> Option<Duration> {
        let key = username.to_lowercase();
        let entry = self.failures.get(&key)?;
        let (count, last) = *entry;
        drop(entry);
        if last.elapsed() > FORGET_AFTER {
            self.failures.remove(&key);
            return None;
        }
        let wait = Self::wait_for(count);
        let elapsed = last.elapsed();
        (elapsed < wait).then(|| wait - elapsed)
    }

    pub fn failed(&self, username: &str) {
        let key = username.to_lowercase();
        // Made-up names must not grow the map without bound: when it is full, forgotten
        // failures go first, and if it is still full only names already counted are counted.
        if self.failures.len() >= MAX_NAMES && !self.failures.contains_key(&key) {
            self.failures
                .retain(|_, (_, last)| last.elapsed() <= FORGET_AFTER);
            if self.failures.len() >= MAX_NAMES {
                return;
            }
        }
        let mut e = self.failures.entry(key).or_insert((0, Instant::now()));
        e.0 = e.0.saturating_add(1);
        e.1 = Instant::now();
    }

    pub fn succeeded(&self, username: &str) {
        self.failures.remove(&username.to_lowercase());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_argon2id_and_verify() {
        let h = hash("correct horse").expect("hash");
        assert!(h.starts_with("$argon2id$v=19$"), "{h}");
        assert!(verify("correct horse", &h));
        assert!(!verify("correct horsE", &h));
        assert!(!verify("correct horse", "not a hash"));
        // Salted: the same password hashes differently each time.
        assert_ne!(h, hash("correct horse").expect("hash"));
    }

    #[test]
    fn generated_passwords_are_long_enough() {
        let p = generate();
        assert_eq!(p.len(), 24);
        assert!(check_new(&p).is_ok());
        assert!(matches!(check_new("short"), Err(PasswordError::TooShort)));
    }

    #[test]
    fn throttle_waits_after_the_free_failures() {
        let t = SignInThrottle::new();
        for _ in 0..FREE_FAILURES - 1 {
            t.failed("Alice");
            assert_eq!(t.must_wait("alice"), None);
        }
        t.failed("alice");
        assert!(t.must_wait("ALICE").is_some());
        assert_eq!(t.must_wait("bob"), None);
        t.succeeded("alice");
        assert_eq!(t.must_wait("alice"), None);
        assert_eq!(
            SignInThrottle::wait_for(FREE_FAILURES + 3),
            Duration::from_secs(8)
        );
        assert_eq!(SignInThrottle::wait_for(100), MAX_WAIT);
    }
}
