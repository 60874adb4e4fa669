//! What only the web UI needs from the database: users' password hashes, server-side sessions
//! (by the digest of the cookie's secret), and the few summaries its pages show beyond the read
//! API's (a project's unresolved count and 24-hour series, an error's 30-day series, its tags'
//! top values, one event by id).

use std::collections::HashMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::{params, OptionalExtension};

use super::read::{StoredEvent, FREQUENCY_HOURS};
use super::sqlite::{now_millis, SqliteStore};
use super::{StoreResult, User};

/// A session to store: the SHA-256 digest of the cookie's secret, never the secret.
#[derive(Debug, Clone)]
pub struct NewSession {
    pub digest: [u8; 32],
    pub user_id: i64,
    /// The token every form of this session carries.
    pub csrf: String,
    pub expires_at: DateTime<Utc>,
}

/// A live session with its user.
#[derive(Debug, Clone)]
pub struct Session {
    pub user: User,
    pub csrf: String,
}

/// One project's line on the projects page.
#[derive(Debug, Clone, Default)]
pub struct ProjectSummary {
    pub unresolved: i64,
    /// Events per hour, oldest first, [`FREQUENCY_HOURS`] entries ending with the current hour.
    pub hourly: Vec<i64>,
}

/// A tag value of an error and how many of its latest events carried it (`None` where only
/// the fact that some event carried it is stored).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagValue {
    pub key: String,
    pub value: String,
    pub count: Option<i64>,
}

/// How many of an error's latest events the counted tag values look at, so that an error with
/// a million events costs what one with a thousand does.
pub const TAG_SAMPLE: i64 = 1000;

/// Values shown per tag key.
pub const TAG_VALUES_SHOWN: usize = 5;

/// How many of an error's latest payloads the SDK's own tags are counted over: each one is
/// decoded, so this is smaller than [`TAG_SAMPLE`].
pub const TAG_PAYLOAD_SAMPLE: i64 = 100;

/// Tag keys shown besides environment, release and level.
const MAX_TAG_KEYS: usize = 20;

/// The SDK's tags of one event's JSON (an object, or an array of `[key, value]` pairs), with
/// `server_name` from the top level when the tags do not have it. Non-string values are shown
/// as JSON; anything that is not JSON has no tags.
fn sdk_tags(json: &[u8]) -> Vec<(String, String)> {
    #[derive(serde::Deserialize)]
    struct Tagged {
        #[serde(default)]
        tags: serde_json::Value,
        #[serde(default)]
        server_name: Option<serde_json::Value>,
    }
    let Ok(t) = serde_json::from_slice::<Tagged>(json) else {
        return Vec::new();
    };
    let text = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Null => None,
        other => Some(other.to_string()),
    };
    let mut out: Vec<(String, String)> = match &t.tags {
        serde_json::Value::Object(o) => o
            .iter()
            .filter_map(|(k, v)| Some((k.clone(), text(v)?)))
            .collect(),
        serde_json::Value::Array(a) => a
            .iter()
            .filter_map(|p| match p.as_array()?.as_slice() {
                [k, v] => Some((k.as_str()?.to_owned(), text(v)?)),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    out.retain(|(k, v)| !k.is_empty() && !v.is_empty() && k.len() <= 200 && v.len() <= 200);
    if !out.iter().any(|(k, _)| k == "server_name") {
        if let Some(name) = t.server_name.as_ref().and_then(text) {
            out.push(("server_name".into(), name));
        }
    }
    out
}

#[async_trait]
pub trait WebStore: Send + Sync {
    /// Stores a new password hash and ends the user's sessions; false when there is no such
    /// user.
    async fn set_password(&self, user_id: i64, hash: String) -> StoreResult<bool>;
    /// The user and their password hash (`None` when no password was ever set).
    async fn password_of(&self, username: &str) -> StoreResult<Option<(User, Option<String>)>>;
    async fn create_session(&self, session: NewSession) -> StoreResult<()>;
    /// The session with this digest, unless it expired.
    async fn session(&self, digest: [u8; 32]) -> StoreResult<Option<Session>>;
    async fn delete_session(&self, digest: [u8; 32]) -> StoreResult<()>;
    /// Unresolved counts and the 24-hour series of each project, by project id.
    async fn project_summaries(
        &self,
        project_ids: Vec<i64>,
    ) -> StoreResult<HashMap<i64, ProjectSummary>>;
    /// Events per day over the last `days` days (oldest first, ending today) of error `error_id`.
    async fn error_daily(&self, error_id: i64, days: i64) -> StoreResult<Vec<(i64, i64)>>;
    /// The error's tag values: environment, release and level counted over its latest
    /// [`TAG_SAMPLE`] events, the SDK's tags over its latest [`TAG_PAYLOAD_SAMPLE`] payloads,
    /// and keys only older events carried as stored for search, without counts.
    async fn error_tag_values(&self, error_id: i64) -> StoreResult<Vec<TagValue>>;
    /// One event of an error by its row id.
    async fn error_event(
        &self,
        project_id: i64,
        fingerprint: i64,
        event_row_id: i64,
    ) -> StoreResult<Option<StoredEvent>>;
}

const USER_COLS: &str = "id, username, name, email, is_admin, created_at";

fn user_row(r: &rusqlite::Row) -> rusqlite::Result<User> {
    Ok(User {
        id: r.get(0)?,
        username: r.get(1)?,
        name: r.get(2)?,
        email: r.get(3)?,
        is_admin: r.get(4)?,
        created_at: chrono::TimeZone::timestamp_millis_opt(&Utc, r.get(5)?)
            .single()
            .unwrap_or_default(),
    })
}

#[async_trait]
impl WebStore for SqliteStore {
    async fn set_password(&self, user_id: i64, hash: String) -> StoreResult<bool> {
        self.run(move |c| {
            let tx = c.transaction()?;
            let n = tx.execute(
                "UPDATE users SET password_hash = ?2 WHERE id = ?1",
                params![user_id, hash],
            )?;
            // A new password signs the user out everywhere: whoever knew the old one and
            // signed in with it keeps no session.
            tx.execute("DELETE FROM web_sessions WHERE user_id = ?1", [user_id])?;
            tx.commit()?;
            Ok(n == 1)
        })
        .await
    }

    async fn password_of(&self, username: &str) -> StoreResult<Option<(User, Option<String>)>> {
        let username = username.to_owned();
        self.run(move |c| {
            Ok(c.query_row(
                &format!("SELECT {USER_COLS}, password_hash FROM users WHERE username = ?1"),
                [username],
                |r| Ok((user_row(r)?, r.get(6)?)),
            )
            .optional()?)
        })
        .await
    }

    async fn create_session(&self, s: NewSession) -> StoreResult<()> {
        self.run(move |c| {
            let now = now_millis();
            let tx = c.transaction()?;
            // Expired sessions go whenever a new one is made, so the table stays small without
            // a task of its own.
            tx.execute("DELETE FROM web_sessions WHERE expires_at <= ?1", [now])?;
            tx.execute(
                "INSERT INTO web_sessions (digest, user_id, csrf, created_at, expires_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![
                    &s.digest[..],
                    s.user_id,
                    s.csrf,
                    now,
                    s.expires_at.timestamp_millis()
                ],
            )?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn session(&self, digest: [u8; 32]) -> StoreResult<Option<Session>> {
        self.run(move |c| {
            let cols = USER_COLS
                .split(", ")
                .map(|col| format!("u.{col}"))
                .collect::<Vec<_>>()
                .join(", ");
            Ok(c.prepare_cached(&format!(
                "SELECT {cols}, s.csrf FROM web_sessions s JOIN users u ON u.id = s.user_id
                 WHERE s.digest = ?1 AND s.expires_at > ?2"
            ))?
            .query_row(params![&digest[..], now_millis()], |r| {
                Ok(Session {
                    user: user_row(r)?,
                    csrf: r.get(6)?,
                })
            })
            .optional()?)
        })
        .await
    }

    async fn delete_session(&self, digest: [u8; 32]) -> StoreResult<()> {
        self.run(move |c| {
            c.execute("DELETE FROM web_sessions WHERE digest = ?1", [&digest[..]])?;
            Ok(())
        })
        .await
    }

    async fn project_summaries(
        &self,
        project_ids: Vec<i64>,
    ) -> StoreResult<HashMap<i64, ProjectSummary>> {
        self.run(move |c| {
            let current = Utc::now().timestamp().div_euclid(3600) * 3600;
            let first = current - (FREQUENCY_HOURS - 1) * 3600;
            let mut out = HashMap::new();
            let mut unresolved = c.prepare_cached(
                "SELECT COUNT(*) FROM errors WHERE project_id = ?1 AND status = 0",
            )?;
            // Only errors seen in the last day can have counts in it, and errors_by_last_seen
            // finds those without touching the others.
            let mut hourly = c.prepare_cached(
                "SELECT h.hour, SUM(h.count) FROM errors e
                 JOIN error_hourly h ON h.error_id = e.id AND h.hour >= ?2
                 WHERE e.project_id = ?1 AND e.status IN (0, 1, 2) AND e.last_seen_at >= ?3
                 GROUP BY h.hour",
            )?;
            for id in project_ids {
                let count: i64 = unresolved.query_row([id], |r| r.get(0))?;
                let mut series = vec![0; FREQUENCY_HOURS as usize];
                let mut rows = hourly.query(params![id, first, first * 1000])?;
                while let Some(r) = rows.next()? {
                    let hour: i64 = r.get(0)?;
                    let n: i64 = r.get(1)?;
                    if let Some(slot) = usize::try_from((hour - first) / 3600)
                        .ok()
                        .and_then(|i| series.get_mut(i))
                    {
                        *slot += n;
                    }
                }
                out.insert(
                    id,
                    ProjectSummary {
                        unresolved: count,
                        hourly: series,
                    },
                );
            }
            Ok(out)
        })
        .await
    }

    async fn error_daily(&self, error_id: i64, days: i64) -> StoreResult<Vec<(i64, i64)>> {
        self.run(move |c| {
            let today = Utc::now().timestamp().div_euclid(86_400) * 86_400;
            let first = today - (days - 1) * 86_400;
            let mut counts = HashMap::new();
            let mut st = c.prepare_cached(
                "SELECT hour / 86400 * 86400, SUM(count) FROM error_hourly
                 WHERE error_id = ?1 AND hour >= ?2 GROUP BY 1",
            )?;
            let mut rows = st.query(params![error_id, first])?;
            while let Some(r) = rows.next()? {
                counts.insert(r.get::<_, i64>(0)?, r.get::<_, i64>(1)?);
            }
            Ok((0..days)
                .map(|i| {
                    let day = first + i * 86_400;
                    (day, counts.get(&day).copied().unwrap_or(0))
                })
                .collect())
        })
        .await
    }

    async fn error_tag_values(&self, error_id: i64) -> StoreResult<Vec<TagValue>> {
        self.run(move |c| {
            let mut out = Vec::new();
            for key in ["environment", "release", "level"] {
                // A fixed column name, never input.
                let column = if key == "level" {
                    "COALESCE(level, 'error')"
                } else {
                    key
                };
                let mut st = c.prepare_cached(&format!(
                    "SELECT v, COUNT(*) AS n FROM (
                         SELECT {column} AS v FROM events WHERE error_id = ?1
                         ORDER BY occurred_at DESC, id DESC LIMIT ?2)
                     WHERE v IS NOT NULL GROUP BY v ORDER BY n DESC, v LIMIT ?3"
                ))?;
                let rows = st.query_map(
                    params![error_id, TAG_SAMPLE, TAG_VALUES_SHOWN as i64],
                    |r| {
                        Ok(TagValue {
                            key: key.to_owned(),
                            value: r.get(0)?,
                            count: Some(r.get(1)?),
                        })
                    },
                )?;
                for row in rows {
                    out.push(row?);
                }
            }
            // The SDK's own tags (browser, os, server_name, ...), counted over the latest
            // payloads; the payload is the only place their per-event values are kept.
            let mut counts: HashMap<String, HashMap<String, i64>> = HashMap::new();
            let mut st = c.prepare_cached(
                "SELECT payload, payload_codec FROM events WHERE error_id = ?1
                 ORDER BY occurred_at DESC, id DESC LIMIT ?2",
            )?;
            let mut rows = st.query(params![error_id, TAG_PAYLOAD_SAMPLE])?;
            while let Some(r) = rows.next()? {
                let json = super::payload::event_json(r.get(1)?, r.get(0)?)?;
                for (key, value) in sdk_tags(&json) {
                    if matches!(key.as_str(), "environment" | "release" | "level") {
                        continue;
                    }
                    *counts.entry(key).or_default().entry(value).or_default() += 1;
                }
            }
            // Keys its older events carried (kept for search) that the sample did not see.
            let mut st = c.prepare_cached(
                "SELECT key, value FROM error_tags WHERE error_id = ?1
                 AND key NOT IN ('environment', 'release', 'level', 'user')
                 ORDER BY key, value LIMIT 500",
            )?;
            let mut older: Vec<(String, String)> = Vec::new();
            let rows = st.query_map([error_id], |r| Ok((r.get::<_, String>(0)?, r.get(1)?)))?;
            for row in rows {
                let (key, value) = row?;
                if !counts.contains_key(&key) {
                    older.push((key, value));
                }
            }
            let mut keys: Vec<&String> = counts.keys().collect();
            // The tags people look for first, then the rest by name.
            let rank = |k: &str| match k {
                "browser" => 0,
                "os" => 1,
                "server_name" => 2,
                _ => 3,
            };
            keys.sort_by(|a, b| rank(a).cmp(&rank(b)).then(a.cmp(b)));
            for key in keys.into_iter().take(MAX_TAG_KEYS) {
                let mut values: Vec<(&String, &i64)> = counts[key].iter().collect();
                values.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
                for (value, n) in values.into_iter().take(TAG_VALUES_SHOWN) {
                    out.push(TagValue {
                        key: key.clone(),
                        value: value.clone(),
                        count: Some(*n),
                    });
                }
            }
            let mut shown: HashMap<String, usize> = HashMap::new();
            for (key, value) in older {
                if shown.len() >= MAX_TAG_KEYS && !shown.contains_key(&key) {
                    continue;
                }
                let n = shown.entry(key.clone()).or_default();
                if *n < TAG_VALUES_SHOWN {
                    *n += 1;
                    out.push(TagValue {
                        key,
                        value,
                        count: None,
                    });
                }
            }
            Ok(out)
        })
        .await
    }

    async fn error_event(
        &self,
        project_id: i64,
        fingerprint: i64,
        event_row_id: i64,
    ) -> StoreResult<Option<StoredEvent>> {
        self.run(move |c| super::read::error_event(c, project_id, fingerprint, event_row_id))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sdk_tags_in_both_shapes() {
        assert_eq!(
            sdk_tags(br#"{"tags": {"browser": "Chrome 120", "n": 3, "x": null}, "server_name": "web-1"}"#),
            vec![
                ("browser".to_owned(), "Chrome 120".to_owned()),
                ("n".to_owned(), "3".to_owned()),
                ("server_name".to_owned(), "web-1".to_owned()),
            ]
        );
        assert_eq!(
            sdk_tags(br#"{"tags": [["os", "Linux"], ["bad"], "junk"]}"#),
            vec![("os".to_owned(), "Linux".to_owned())]
        );
        assert!(sdk_tags(b"not json").is_empty());
        assert!(sdk_tags(br#"{"tags": 5}"#).is_empty());
    }
}
