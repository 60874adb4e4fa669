//! Personal access tokens: generation, the SHA-256 digest that is the only thing stored, scope
//! rules and constant-time comparison.

use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// GitLab's prefix for personal access tokens, kept so that secret scanners recognise ours.
pub const TOKEN_PREFIX: &str = "glpat-";

/// A new token secret: 20 random bytes, hex-encoded behind the prefix.
pub fn generate_token() -> String {
    let mut bytes = [0u8; 20];
    // ThreadRng is a CSPRNG (ChaCha) seeded and periodically reseeded from the OS.
    rand::rng().fill_bytes(&mut bytes);
    format!("{TOKEN_PREFIX}{}", hex::encode(bytes))
}

pub fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Compares two digests without an early exit, so the time taken does not depend on how many
/// leading bytes match.
pub fn digests_equal(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

/// Scopes a token may carry. `api` allows everything, `read_api` only reads.
pub const SCOPES: &[&str] = &["api", "read_api"];

/// Whether a token with `scopes` may perform a request that writes (`write`) or only reads.
pub fn scopes_allow(scopes: &[String], write: bool) -> bool {
    scopes
        .iter()
        .any(|s| s == "api" || (!write && s == "read_api"))
}

/// A token's expiry date that is not after today.
#[derive(Debug, thiserror::Error)]
#[error("expires_at must be a date after today")]
pub struct ExpiryInPast;

/// A token expires at the start of its `expires_at` day (UTC), as GitLab's do, so a token for
/// today or earlier would be expired at birth: refused at creation.
pub fn check_expiry(expires_at: chrono::NaiveDate) -> Result<(), ExpiryInPast> {
    if expires_at > chrono::Utc::now().date_naive() {
        Ok(())
    } else {
        Err(ExpiryInPast)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_and_prefixed() {
        let a = generate_token();
        assert!(a.starts_with("glpat-"));
        assert_ne!(a, generate_token());
    }

    #[test]
    fn digest_comparison() {
        assert!(digests_equal(&digest("x"), &digest("x")));
        assert!(!digests_equal(&digest("x"), &digest("y")));
        assert!(!digests_equal(&digest("x"), &[0u8; 3]));
    }

    #[test]
    fn scope_rules() {
        let api = vec!["api".to_owned()];
        let read = vec!["read_api".to_owned()];
        assert!(scopes_allow(&api, true));
        assert!(scopes_allow(&read, false));
        assert!(!scopes_allow(&read, true));
        assert!(!scopes_allow(&[], false));
    }
}
