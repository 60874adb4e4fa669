//! What only the web UI reads and writes, on SQLite ([`WebStore`]).

use std::collections::HashMap;

use async_trait::async_trait;
use chrono::Utc;
use rusqlite::{params, OptionalExtension};

use super::{by_error, now_millis, SqliteStore};
use crate::store::read::{StoredEvent, FREQUENCY_HOURS};
use crate::store::web::*;
use crate::store::{StoreResult, User};

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
                let sample =
                    by_error::events_of_error(&format!("{column} AS v"), "?1", "", "DESC", "?2");
                let mut st = c.prepare_cached(&format!(
                    "SELECT v, COUNT(*) AS n FROM ({sample})
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
            let mut st = c.prepare_cached(&by_error::events_of_error(
                "payload, payload_codec",
                "?1",
                "",
                "DESC",
                "?2",
            ))?;
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
