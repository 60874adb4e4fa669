//! The search syntax of the error list's `query` parameter (docs/protocol.md, "Searching"), as
//! users of Sentry, GlitchTip and Bugsink type it: `key:value` terms, `is:` for the status,
//! double quotes around values or phrases with spaces, and free text for the rest. Pure code: the
//! result is what `store::read::ErrorQuery` filters by.

use crate::store::read::{ErrorStatus, TagFilter};

/// A parsed `query`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Search {
    /// From `is:unresolved|resolved|ignored`.
    pub status: Option<ErrorStatus>,
    /// Every free-text word and quoted phrase, in order, joined by one space; matched as one
    /// substring of the name or description.
    pub text: Option<String>,
    /// `environment:`, `release:`, `level:`, `user:` and tag terms; all must hold. A key given
    /// twice must match both values.
    pub tags: Vec<TagFilter>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SearchError {
    #[error("query has an unterminated quote")]
    UnterminatedQuote,
    #[error("query has an unknown status is:{0} (unresolved, resolved or ignored)")]
    UnknownStatus(String),
    #[error("query asks for two statuses, is:{0} and is:{1}")]
    TwoStatuses(String, String),
    #[error("query has an unsupported search key {0}")]
    UnsupportedKey(String),
    #[error("query has a search key longer than 32 characters: {0}")]
    KeyTooLong(String),
}

/// Sentry search keys that mean something other than a tag there and that faultline does not
/// implement. Taking them as tags would silently find nothing, so they are refused by name.
const UNSUPPORTED_KEYS: &[&str] = &[
    "age",
    "assigned",
    "assigned_or_suggested",
    "bookmarks",
    "firstRelease",
    "firstSeen",
    "first_seen",
    "has",
    "lastSeen",
    "last_seen",
    "timesSeen",
    "times_seen",
    "event.timestamp",
    "timestamp",
    "issue.category",
    "issue.type",
];

/// Longest tag key (Sentry's limit); longer keys cannot match anything stored.
const MAX_KEY: usize = 32;

/// Parses a `query`. A word is a `key:value` term when it starts with a key (letters, digits,
/// `_`, `.` and `-`) followed by `:` and a non-empty value; anything else, a quoted phrase
/// included, is free text. A leading `!` (Sentry's negation) is not supported and refused.
pub fn parse(query: &str) -> Result<Search, SearchError> {
    let mut search = Search::default();
    let mut text: Vec<String> = Vec::new();
    let mut status_word: Option<String> = None;
    for word in words(query)? {
        let Word::Term { key, value } = word else {
            if let Word::Text(t) = word {
                text.push(t);
            }
            continue;
        };
        match key.as_str() {
            "is" => {
                let status = ErrorStatus::parse(&value)
                    .ok_or_else(|| SearchError::UnknownStatus(value.clone()))?;
                if let Some(earlier) = &status_word {
                    if search.status != Some(status) {
                        return Err(SearchError::TwoStatuses(earlier.clone(), value));
                    }
                }
                search.status = Some(status);
                status_word = Some(value);
            }
            "user" => search.tags.push(TagFilter {
                key: "user".into(),
                values: ["id", "email", "username"]
                    .iter()
                    .map(|kind| format!("{kind}:{value}"))
                    .collect(),
            }),
            _ if key.starts_with('!') || UNSUPPORTED_KEYS.contains(&key.as_str()) => {
                return Err(SearchError::UnsupportedKey(key));
            }
            _ if key.chars().count() > MAX_KEY => return Err(SearchError::KeyTooLong(key)),
            _ => search.tags.push(TagFilter {
                key,
                values: vec![value],
            }),
        }
    }
    if !text.is_empty() {
        search.text = Some(text.join(" "));
    }
    Ok(search)
}

enum Word {
    Text(String),
    Term { key: String, value: String },
}

fn is_key_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | '!')
}

/// Splits on whitespace, keeping double-quoted stretches (with `\"` and `\\` escapes) whole.
fn words(query: &str) -> Result<Vec<Word>, SearchError> {
    let mut out = Vec::new();
    let mut chars = query.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let Some(&first) = chars.peek() else {
            return Ok(out);
        };
        if first == '"' {
            chars.next();
            out.push(Word::Text(quoted(&mut chars)?));
            continue;
        }
        let mut key = String::new();
        while let Some(c) = chars.next_if(|&c| is_key_char(c)) {
            key.push(c);
        }
        if !key.is_empty() && chars.next_if_eq(&':').is_some() {
            let value = if chars.next_if_eq(&'"').is_some() {
                quoted(&mut chars)?
            } else {
                plain(&mut chars)
            };
            if value.is_empty() {
                // `Error:` alone reads as the text it is.
                out.push(Word::Text(format!("{key}:")));
            } else {
                out.push(Word::Term { key, value });
            }
            continue;
        }
        let rest = plain(&mut chars);
        out.push(Word::Text(key + &rest));
    }
}

fn plain(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) -> String {
    let mut s = String::new();
    while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
        s.push(c);
    }
    s
}

/// The rest of a quoted stretch whose opening quote was read.
fn quoted(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) -> Result<String, SearchError> {
    let mut s = String::new();
    loop {
        match chars.next() {
            None => return Err(SearchError::UnterminatedQuote),
            Some('"') => return Ok(s),
            Some('\\') => match chars.next() {
                Some(c @ ('"' | '\\')) => s.push(c),
                Some(c) => {
                    s.push('\\');
                    s.push(c);
                }
                None => return Err(SearchError::UnterminatedQuote),
            },
            Some(c) => s.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag(key: &str, value: &str) -> TagFilter {
        TagFilter {
            key: key.into(),
            values: vec![value.into()],
        }
    }

    fn check(query: &str, status: Option<ErrorStatus>, text: Option<&str>, tags: Vec<TagFilter>) {
        assert_eq!(
            parse(query),
            Ok(Search {
                status,
                text: text.map(str::to_owned),
                tags
            }),
            "{query}"
        );
    }

    #[test]
    fn terms_status_and_text() {
        check("", None, None, vec![]);
        check("  NoMethodError  ", None, Some("NoMethodError"), vec![]);
        check(
            "is:unresolved NoMethodError",
            Some(ErrorStatus::Unresolved),
            Some("NoMethodError"),
            vec![],
        );
        check(
            "environment:staging release:shop@1.2 level:error undefined method",
            None,
            Some("undefined method"),
            vec![
                tag("environment", "staging"),
                tag("release", "shop@1.2"),
                tag("level", "error"),
            ],
        );
        check(
            "browser.name:Chrome server_name:web-1",
            None,
            None,
            vec![tag("browser.name", "Chrome"), tag("server_name", "web-1")],
        );
    }

    #[test]
    fn quotes_keep_spaces_and_colons() {
        check(
            r#"environment:"eu west" "could not connect: timeout""#,
            None,
            Some("could not connect: timeout"),
            vec![tag("environment", "eu west")],
        );
        check(
            r#"message:"say \"hi\"""#,
            None,
            None,
            vec![tag("message", "say \"hi\"")],
        );
        assert_eq!(
            parse(r#"environment:"open"#),
            Err(SearchError::UnterminatedQuote)
        );
    }

    #[test]
    fn a_user_is_found_by_id_email_or_username() {
        check(
            "user:alice@example.com",
            None,
            None,
            vec![TagFilter {
                key: "user".into(),
                values: vec![
                    "id:alice@example.com".into(),
                    "email:alice@example.com".into(),
                    "username:alice@example.com".into(),
                ],
            }],
        );
    }

    #[test]
    fn text_that_only_looks_like_a_term() {
        // No value after the colon, or no key before it: plain text.
        check("KeyError:", None, Some("KeyError:"), vec![]);
        check(":x", None, Some(":x"), vec![]);
        check("a/b:c", None, Some("a/b:c"), vec![]);
    }

    #[test]
    fn refusals_name_what_is_wrong() {
        assert_eq!(
            parse("is:open"),
            Err(SearchError::UnknownStatus("open".into()))
        );
        assert_eq!(
            parse("is:resolved is:ignored"),
            Err(SearchError::TwoStatuses(
                "resolved".into(),
                "ignored".into()
            ))
        );
        assert_eq!(
            parse("is:resolved is:resolved"),
            Ok(Search {
                status: Some(ErrorStatus::Resolved),
                ..Search::default()
            })
        );
        assert_eq!(
            parse("has:user"),
            Err(SearchError::UnsupportedKey("has".into()))
        );
        assert_eq!(
            parse("!environment:prod"),
            Err(SearchError::UnsupportedKey("!environment".into()))
        );
        let long = "k".repeat(33);
        assert_eq!(
            parse(&format!("{long}:v")),
            Err(SearchError::KeyTooLong(long))
        );
    }
}
