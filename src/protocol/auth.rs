//! Finding the SDK's public key: parses `X-Sentry-Auth` / `Authorization: Sentry` values, the
//! `sentry_key` query parameters and DSNs, and reconciles them. Whether the key exists, is active
//! or belongs to the project is decided elsewhere.

/// Newest protocol version we speak. Version 7 is the envelope protocol every current SDK uses;
/// a higher number would mean a protocol we have not seen.
const MAX_VERSION: u32 = 7;

/// What a request said about itself, from one source or merged from all of them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SentryAuth {
    pub public_key: Option<String>,
    pub version: Option<u32>,
    pub client: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("malformed sentry auth: {0}")]
    Malformed(&'static str),
    #[error("conflicting sentry keys in request")]
    Conflicting,
    #[error("unsupported sentry_version {0}")]
    UnsupportedVersion(u32),
    #[error("missing sentry key")]
    Missing,
}

impl SentryAuth {
    /// The public key, or [`AuthError::Missing`] when no source (including a DSN fallback the
    /// caller may have filled in) named one.
    pub fn require_key(&self) -> Result<&str, AuthError> {
        self.public_key.as_deref().ok_or(AuthError::Missing)
    }

    /// Sets a field from a `key=value` pair, treating a second, different `sentry_key` as a
    /// conflict. Unknown keys and `sentry_secret` (deprecated, never checked) are ignored.
    fn set(&mut self, key: &str, value: &str, strict_version: bool) -> Result<(), AuthError> {
        // An empty value says nothing; treating it as absent lets another source supply it.
        if value.is_empty() {
            return Ok(());
        }
        match key {
            "sentry_key" => merge(&mut self.public_key, value.to_owned()),
            "sentry_version" => match parse_version(value) {
                // Only the key is an authority; differing versions are no reason to refuse.
                // Each source is checked against the maximum on its own, so the first one can
                // stand for the request.
                Some(v) => {
                    self.version.get_or_insert(v);
                    Ok(())
                }
                None if strict_version => {
                    Err(AuthError::Malformed("sentry_version is not a number"))
                }
                None => Ok(()),
            },
            "sentry_client" => {
                // The client string is informational; the first one seen wins rather than
                // refusing an event over a label.
                self.client.get_or_insert_with(|| value.to_owned());
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// Folds another source into this one: a different key is a conflict; for the version and
    /// client the earlier source wins.
    fn absorb(&mut self, other: SentryAuth) -> Result<(), AuthError> {
        if let Some(key) = other.public_key {
            merge(&mut self.public_key, key)?;
        }
        if self.version.is_none() {
            self.version = other.version;
        }
        if self.client.is_none() {
            self.client = other.client;
        }
        Ok(())
    }

    fn check_version(&self) -> Result<(), AuthError> {
        match self.version {
            Some(v) if v > MAX_VERSION => Err(AuthError::UnsupportedVersion(v)),
            _ => Ok(()),
        }
    }
}

/// Keeps the first value; a later different one is a conflict, the same one is fine.
fn merge<T: PartialEq>(slot: &mut Option<T>, value: T) -> Result<(), AuthError> {
    match slot {
        Some(existing) if *existing != value => Err(AuthError::Conflicting),
        Some(_) => Ok(()),
        None => {
            *slot = Some(value);
            Ok(())
        }
    }
}

/// Accepts `7` and `7.0` (some SDKs format the version as a float); the part after the dot is
/// ignored once it is known to be digits.
fn parse_version(s: &str) -> Option<u32> {
    let (major, minor) = match s.split_once('.') {
        Some((major, minor)) => (major, Some(minor)),
        None => (s, None),
    };
    let all_digits = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
    if !all_digits(major) || !minor.is_none_or(all_digits) {
        return None;
    }
    major.parse().ok()
}

/// Parses an `X-Sentry-Auth` or `Authorization` value.
///
/// The `Sentry` prefix is case-insensitive; pairs are split on `,` and then on the first `=`,
/// and trimmed. A value without the prefix is still read when it starts with a `sentry_` pair,
/// because some hand-written clients leave the prefix out of `X-Sentry-Auth`. Any other scheme
/// (`Bearer ...`, `Basic ...`) gives `Ok(None)`: such an `Authorization` header is meant for
/// someone else and must not fail the request.
pub fn parse_auth_header(value: &str) -> Result<Option<SentryAuth>, AuthError> {
    let value = value.trim();
    let pairs = match value.split_once(|c: char| c.is_ascii_whitespace()) {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("sentry") => rest,
        None if value.eq_ignore_ascii_case("sentry") => "",
        _ if value
            .get(..7)
            .is_some_and(|p| p.eq_ignore_ascii_case("sentry_")) =>
        {
            value
        }
        _ => return Ok(None),
    };
    let mut auth = SentryAuth::default();
    for pair in pairs.split(',') {
        let pair = pair.trim();
        if pair.is_empty() {
            // Tolerates `a=1,,b=2` and a trailing comma.
            continue;
        }
        let Some((key, val)) = pair.split_once('=') else {
            return Err(AuthError::Malformed("pair without '='"));
        };
        auth.set(key.trim(), val.trim(), true)?;
    }
    Ok(Some(auth))
}

/// Reads `sentry_key`, `sentry_version` and `sentry_client` from a raw query string.
///
/// Query parameters cannot report errors here, so the first value of each wins and an
/// unreadable version is ignored; [`resolve_auth`] applies the stricter rules.
pub fn parse_auth_query(query: &str) -> SentryAuth {
    let mut auth = SentryAuth::default();
    for (key, value) in query_pairs(query) {
        let mut single = SentryAuth::default();
        // A conflict cannot happen on an empty struct, so the result carries no information.
        let _ = single.set(&key, &value, false);
        if auth.public_key.is_none() {
            auth.public_key = single.public_key;
        }
        if auth.version.is_none() {
            auth.version = single.version;
        }
        if auth.client.is_none() {
            auth.client = single.client;
        }
    }
    auth
}

/// Like [`parse_auth_query`] but reports repeated, different keys as a conflict.
fn parse_query_strict(query: &str) -> Result<SentryAuth, AuthError> {
    let mut auth = SentryAuth::default();
    for (key, value) in query_pairs(query) {
        auth.set(&key, &value, false)?;
    }
    Ok(auth)
}

fn query_pairs(query: &str) -> impl Iterator<Item = (String, String)> + '_ {
    let query = query.strip_prefix('?').unwrap_or(query);
    query.split('&').filter(|p| !p.is_empty()).map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (percent_decode(key), percent_decode(value))
    })
}

/// `application/x-www-form-urlencoded` decoding: `+` is a space, `%XX` a byte. A `%` not
/// followed by two hex digits is kept as it is, as browsers do, instead of failing the request.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes.get(i + 1..i + 3).and_then(|h| {
                    let hi = (h[0] as char).to_digit(16)?;
                    let lo = (h[1] as char).to_digit(16)?;
                    u8::try_from(hi * 16 + lo).ok()
                });
                match hex {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Combines the request's sources, in order `X-Sentry-Auth`, `Authorization`, query string.
///
/// Sources that repeat the same key are fine; sources that name different keys are a conflict,
/// because accepting either would let one of them ride on the other's authority. The result has
/// no public key when no source named one; the caller may then fall back to the envelope
/// header's `dsn`. An `X-Sentry-Auth` that is not Sentry auth at all is malformed, since that
/// header has no other use; a foreign `Authorization` scheme is ignored.
pub fn resolve_auth(
    x_sentry_auth: Option<&str>,
    authorization: Option<&str>,
    query: Option<&str>,
) -> Result<SentryAuth, AuthError> {
    // An empty header carries nothing; some proxies and SDK wrappers send one rather than none.
    fn non_empty(v: Option<&str>) -> Option<&str> {
        v.filter(|v| !v.trim().is_empty())
    }
    let x_sentry_auth = non_empty(x_sentry_auth);
    let authorization = non_empty(authorization);
    let mut auth = SentryAuth::default();
    if let Some(value) = x_sentry_auth {
        let parsed = parse_auth_header(value)?.ok_or(AuthError::Malformed(
            "x-sentry-auth is not a sentry auth header",
        ))?;
        parsed.check_version()?;
        auth.absorb(parsed)?;
    }
    if let Some(parsed) = authorization.map(parse_auth_header).transpose()?.flatten() {
        parsed.check_version()?;
        auth.absorb(parsed)?;
    }
    if let Some(query) = query {
        let parsed = parse_query_strict(query)?;
        parsed.check_version()?;
        auth.absorb(parsed)?;
    }
    Ok(auth)
}

/// The public key of a DSN: the user part of `scheme://key[:secret]@host/...`.
pub fn key_from_dsn(dsn: &str) -> Option<String> {
    let (_, rest) = dsn.trim().split_once("://")?;
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (userinfo, _host) = rest[..authority_end].rsplit_once('@')?;
    let user = userinfo.split_once(':').map_or(userinfo, |(user, _)| user);
    let key = percent_decode(user);
    (!key.is_empty()).then_some(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(value: &str) -> SentryAuth {
        parse_auth_header(value).unwrap().unwrap()
    }

    fn key(auth: &SentryAuth) -> Option<&str> {
        auth.public_key.as_deref()
    }

    #[test]
    fn x_sentry_auth_typical() {
        let auth =
            header("Sentry sentry_key=abc, sentry_version=7, sentry_client=sentry.python/2.0.0");
        assert_eq!(
            auth,
            SentryAuth {
                public_key: Some("abc".into()),
                version: Some(7),
                client: Some("sentry.python/2.0.0".into()),
            }
        );
    }

    #[test]
    fn prefix_case_insensitive() {
        assert_eq!(key(&header("sentry sentry_key=abc")), Some("abc"));
        assert_eq!(key(&header("SENTRY sentry_key=abc")), Some("abc"));
    }

    #[test]
    fn spacing_around_pairs_and_equals() {
        let auth = header("  Sentry   sentry_key = abc ,sentry_version= 7 ,  sentry_client =x ");
        assert_eq!(key(&auth), Some("abc"));
        assert_eq!(auth.version, Some(7));
        assert_eq!(auth.client.as_deref(), Some("x"));
    }

    #[test]
    fn tab_after_prefix() {
        assert_eq!(key(&header("Sentry\tsentry_key=abc")), Some("abc"));
    }

    #[test]
    fn no_spaces_after_commas() {
        let auth = header("Sentry sentry_version=7,sentry_key=abc,sentry_client=raven-js/3.0");
        assert_eq!(key(&auth), Some("abc"));
        assert_eq!(auth.client.as_deref(), Some("raven-js/3.0"));
    }

    #[test]
    fn secret_ignored() {
        let auth = header("Sentry sentry_key=abc, sentry_secret=shh");
        assert_eq!(key(&auth), Some("abc"));
    }

    #[test]
    fn unknown_pairs_ignored() {
        let auth = header("Sentry sentry_timestamp=1700000000.5, sentry_key=abc, foo=bar");
        assert_eq!(key(&auth), Some("abc"));
    }

    #[test]
    fn value_containing_equals_split_on_first() {
        let auth = header("Sentry sentry_client=a=b, sentry_key=abc");
        assert_eq!(auth.client.as_deref(), Some("a=b"));
    }

    #[test]
    fn empty_pairs_skipped() {
        assert_eq!(key(&header("Sentry sentry_key=abc,,")), Some("abc"));
    }

    #[test]
    fn prefix_missing_but_sentry_pairs() {
        assert_eq!(
            key(&header("sentry_key=abc, sentry_version=7")),
            Some("abc")
        );
    }

    #[test]
    fn prefix_only_has_no_key() {
        assert_eq!(header("Sentry"), SentryAuth::default());
    }

    #[test]
    fn pair_without_equals_malformed() {
        let err = parse_auth_header("Sentry sentry_key").unwrap_err();
        assert!(matches!(err, AuthError::Malformed(_)));
    }

    #[test]
    fn non_numeric_version_malformed() {
        let err = parse_auth_header("Sentry sentry_key=abc, sentry_version=seven").unwrap_err();
        assert!(matches!(err, AuthError::Malformed(_)));
    }

    #[test]
    fn version_with_fraction_accepted() {
        assert_eq!(header("Sentry sentry_version=7.0").version, Some(7));
    }

    #[test]
    fn version_negative_malformed() {
        assert!(parse_auth_header("Sentry sentry_version=-7").is_err());
    }

    #[test]
    fn same_key_twice_in_header_ok() {
        assert_eq!(
            key(&header("Sentry sentry_key=abc, sentry_key=abc")),
            Some("abc")
        );
    }

    #[test]
    fn different_keys_in_header_conflict() {
        let err = parse_auth_header("Sentry sentry_key=abc, sentry_key=def").unwrap_err();
        assert!(matches!(err, AuthError::Conflicting));
    }

    #[test]
    fn bearer_is_not_sentry() {
        assert!(parse_auth_header("Bearer glpat-xyz").unwrap().is_none());
    }

    #[test]
    fn scheme_starting_with_sentry_is_not_sentry() {
        assert!(parse_auth_header("Sentryish sentry_key=abc")
            .unwrap()
            .is_none());
    }

    #[test]
    fn query_basic() {
        let auth = parse_auth_query(
            "sentry_key=abc&sentry_version=7&sentry_client=sentry.javascript.browser%2F8.0.0",
        );
        assert_eq!(
            auth,
            SentryAuth {
                public_key: Some("abc".into()),
                version: Some(7),
                client: Some("sentry.javascript.browser/8.0.0".into()),
            }
        );
    }

    #[test]
    fn query_leading_question_mark() {
        assert_eq!(key(&parse_auth_query("?sentry_key=abc")), Some("abc"));
    }

    #[test]
    fn query_percent_encoded_key_and_plus() {
        let auth = parse_auth_query("sentry%5Fkey=a%62c&sentry_client=my+sdk");
        assert_eq!(key(&auth), Some("abc"));
        assert_eq!(auth.client.as_deref(), Some("my sdk"));
    }

    #[test]
    fn query_bad_percent_kept_literally() {
        assert_eq!(
            key(&parse_auth_query("sentry_key=ab%zz%4")),
            Some("ab%zz%4")
        );
    }

    #[test]
    fn query_unrelated_params_and_empty_key() {
        let auth = parse_auth_query("foo=1&sentry_key=&bar");
        assert_eq!(auth, SentryAuth::default());
    }

    #[test]
    fn query_bad_version_ignored() {
        assert_eq!(parse_auth_query("sentry_version=x").version, None);
    }

    #[test]
    fn resolve_nothing() {
        assert_eq!(
            resolve_auth(None, None, None).unwrap(),
            SentryAuth::default()
        );
    }

    #[test]
    fn resolve_query_only() {
        let auth = resolve_auth(None, None, Some("sentry_key=abc&sentry_version=7")).unwrap();
        assert_eq!(auth.require_key().unwrap(), "abc");
    }

    #[test]
    fn resolve_authorization_sentry() {
        let auth = resolve_auth(None, Some("Sentry sentry_key=abc"), None).unwrap();
        assert_eq!(key(&auth), Some("abc"));
    }

    #[test]
    fn resolve_bearer_ignored() {
        let auth = resolve_auth(None, Some("Bearer tok"), Some("sentry_key=abc")).unwrap();
        assert_eq!(key(&auth), Some("abc"));
    }

    #[test]
    fn resolve_same_key_in_all_sources() {
        let auth = resolve_auth(
            Some("Sentry sentry_key=abc"),
            Some("Sentry sentry_key=abc"),
            Some("sentry_key=abc"),
        )
        .unwrap();
        assert_eq!(key(&auth), Some("abc"));
    }

    #[test]
    fn resolve_header_and_query_disagree() {
        let err =
            resolve_auth(Some("Sentry sentry_key=abc"), None, Some("sentry_key=def")).unwrap_err();
        assert!(matches!(err, AuthError::Conflicting));
    }

    #[test]
    fn resolve_two_headers_disagree() {
        let err = resolve_auth(
            Some("Sentry sentry_key=abc"),
            Some("Sentry sentry_key=def"),
            None,
        )
        .unwrap_err();
        assert!(matches!(err, AuthError::Conflicting));
    }

    #[test]
    fn resolve_query_repeated_different_keys() {
        let err = resolve_auth(None, None, Some("sentry_key=abc&sentry_key=def")).unwrap_err();
        assert!(matches!(err, AuthError::Conflicting));
    }

    #[test]
    fn resolve_version_8_rejected() {
        let err =
            resolve_auth(Some("Sentry sentry_key=abc, sentry_version=8"), None, None).unwrap_err();
        assert!(matches!(err, AuthError::UnsupportedVersion(8)));
    }

    #[test]
    fn resolve_version_8_in_query_rejected() {
        let err = resolve_auth(None, None, Some("sentry_key=abc&sentry_version=8")).unwrap_err();
        assert!(matches!(err, AuthError::UnsupportedVersion(8)));
    }

    #[test]
    fn resolve_version_7_0_accepted() {
        let auth = resolve_auth(
            Some("Sentry sentry_key=abc, sentry_version=7.0"),
            None,
            None,
        )
        .unwrap();
        assert_eq!(auth.version, Some(7));
    }

    #[test]
    fn resolve_old_version_accepted() {
        let auth =
            resolve_auth(Some("Sentry sentry_key=abc, sentry_version=5"), None, None).unwrap();
        assert_eq!(auth.version, Some(5));
    }

    #[test]
    fn resolve_empty_headers_are_absent() {
        let auth = resolve_auth(Some(""), Some("  "), Some("sentry_key=abc")).unwrap();
        assert_eq!(key(&auth), Some("abc"));
    }

    #[test]
    fn resolve_x_sentry_auth_foreign_scheme_malformed() {
        let err = resolve_auth(Some("Bearer tok"), None, None).unwrap_err();
        assert!(matches!(err, AuthError::Malformed(_)));
    }

    #[test]
    fn resolve_malformed_authorization_sentry() {
        let err = resolve_auth(None, Some("Sentry sentry_key"), None).unwrap_err();
        assert!(matches!(err, AuthError::Malformed(_)));
    }

    #[test]
    fn resolve_missing_key_when_required() {
        let auth = resolve_auth(Some("Sentry sentry_version=7"), None, None).unwrap();
        assert!(matches!(auth.require_key(), Err(AuthError::Missing)));
    }

    #[test]
    fn resolve_differing_versions_first_wins() {
        let auth = resolve_auth(
            Some("Sentry sentry_key=abc, sentry_version=7"),
            None,
            Some("sentry_key=abc&sentry_version=6"),
        )
        .unwrap();
        assert_eq!(auth.version, Some(7));
    }

    #[test]
    fn resolve_client_from_first_source() {
        let auth = resolve_auth(
            Some("Sentry sentry_key=abc, sentry_client=a"),
            None,
            Some("sentry_client=b"),
        )
        .unwrap();
        assert_eq!(auth.client.as_deref(), Some("a"));
    }

    #[test]
    fn dsn_gitlab_form() {
        assert_eq!(
            key_from_dsn(
                "https://glet_0123abcd@gitlab.example.com/errortracking/api/v1/projects/5"
            )
            .as_deref(),
            Some("glet_0123abcd")
        );
    }

    #[test]
    fn dsn_with_secret_and_port() {
        assert_eq!(
            key_from_dsn("http://pub:secret@localhost:9000/2").as_deref(),
            Some("pub")
        );
    }

    #[test]
    fn dsn_without_key() {
        assert_eq!(key_from_dsn("https://example.com/1"), None);
        assert_eq!(key_from_dsn("https://@example.com/1"), None);
    }

    #[test]
    fn dsn_not_a_url() {
        assert_eq!(key_from_dsn("glet_abc"), None);
        assert_eq!(key_from_dsn(""), None);
    }

    #[test]
    fn dsn_at_sign_in_path_is_not_userinfo() {
        assert_eq!(key_from_dsn("https://example.com/a@b"), None);
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            #[test]
            fn header_parser_never_panics(s in "\\PC{0,80}") {
                let _ = parse_auth_header(&s);
                let _ = parse_auth_header(&format!("Sentry {s}"));
            }

            #[test]
            fn query_and_dsn_never_panic(s in "\\PC{0,80}") {
                let _ = parse_auth_query(&s);
                let _ = resolve_auth(Some(&s), Some(&s), Some(&s));
                let _ = key_from_dsn(&s);
            }

            #[test]
            fn key_round_trips_through_header(k in "[A-Za-z0-9_]{1,40}") {
                let auth = parse_auth_header(&format!("Sentry sentry_key={k}, sentry_version=7"))
                    .unwrap()
                    .unwrap();
                prop_assert_eq!(auth.public_key, Some(k));
            }
        }
    }
}
