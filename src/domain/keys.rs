//! Client keys (`glet_` + 32 lowercase hex) and the DSNs built from them.

use rand::RngCore;
use url::Url;

/// The prefix GitLab gives error-tracking client keys.
pub const KEY_PREFIX: &str = "glet_";

/// A new public key: 16 bytes from the operating system's cryptographic RNG, hex-encoded.
pub fn generate_public_key() -> String {
    let mut bytes = [0u8; 16];
    // ThreadRng is a CSPRNG (ChaCha) seeded and periodically reseeded from the OS.
    rand::rng().fill_bytes(&mut bytes);
    format!("{KEY_PREFIX}{}", hex::encode(bytes))
}

/// The 16 bytes behind a well-formed public key, or `None`. The key cache stores these bytes
/// instead of the string, which keeps it small with a million keys.
pub fn parse_public_key(key: &str) -> Option<[u8; 16]> {
    let hex_part = key.strip_prefix(KEY_PREFIX)?;
    if hex_part.len() != 32 {
        return None;
    }
    let mut out = [0u8; 16];
    hex::decode_to_slice(hex_part, &mut out).ok()?;
    Some(out)
}

/// Builds `{scheme}://{key}@{host}[:{port}]{base path}/errortracking/api/v1/projects/{id}`.
/// The port is written only when it is not the scheme's default; a base path in the external
/// URL (a gateway behind a path prefix) is kept.
pub fn dsn(external_url: &Url, public_key: &str, project_id: i64) -> String {
    let host = external_url.host_str().unwrap_or("localhost");
    let host = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_owned()
    };
    let port = external_url
        .port()
        .map(|p| format!(":{p}"))
        .unwrap_or_default();
    let base = external_url.path().trim_end_matches('/');
    format!(
        "{}://{public_key}@{host}{port}{base}/errortracking/api/v1/projects/{project_id}",
        external_url.scheme()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_have_gitlab_shape() {
        let k = generate_public_key();
        assert_eq!(k.len(), 5 + 32);
        assert!(k.starts_with("glet_"));
        assert!(k[5..]
            .chars()
            .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c)));
        assert_ne!(k, generate_public_key());
        assert!(parse_public_key(&k).is_some());
    }

    #[test]
    fn malformed_keys_do_not_parse() {
        assert!(parse_public_key("glet_abc").is_none());
        assert!(parse_public_key("xxxx_aa77551d849c083f76d0bc545ed053a3").is_none());
        assert!(parse_public_key("glet_zz77551d849c083f76d0bc545ed053a3").is_none());
    }

    fn check(url: &str, expected: &str) {
        let url = Url::parse(url).unwrap();
        assert_eq!(dsn(&url, "glet_k", 5), expected);
    }

    #[test]
    fn dsn_omits_default_port() {
        check(
            "https://example.com",
            "https://glet_k@example.com/errortracking/api/v1/projects/5",
        );
        check(
            "http://example.com:80/",
            "http://glet_k@example.com/errortracking/api/v1/projects/5",
        );
    }

    #[test]
    fn dsn_keeps_other_ports_and_base_path() {
        check(
            "http://127.0.0.1:8080",
            "http://glet_k@127.0.0.1:8080/errortracking/api/v1/projects/5",
        );
        check(
            "https://gw.example.com/faultline/",
            "https://glet_k@gw.example.com/faultline/errortracking/api/v1/projects/5",
        );
    }
}
