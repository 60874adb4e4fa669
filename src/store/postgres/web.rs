//! What only the web UI reads and writes, on PostgreSQL ([`WebStore`]), as
//! `store::sqlite::web` does. Text is ordered `COLLATE "C"` (bytewise), which is SQLite's
//! ordering, so that ties among tag values come out the same whatever the database's locale.

use std::collections::HashMap;

use async_trait::async_trait;
use chrono::Utc;

use super::manage::{user_at, USER_COLS};
use super::{now_millis, PgStore};
use crate::store::payload;
use crate::store::read::{StoredEvent, FREQUENCY_HOURS};
use crate::store::web::*;
use crate::store::{StoreResult, User};

#[async_trait]
impl WebStore for PgStore {
    async fn set_password(&self, user_id: i64, hash: String) -> StoreResult<bool> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        let n = tx
            .execute(
                "UPDATE users SET password_hash = $2 WHERE id = $1",
                &[&user_id, &hash],
            )
            .await?;
        // A new password signs the user out everywhere: whoever knew the old one and signed
        // in with it keeps no session.
        tx.execute("DELETE FROM web_sessions WHERE user_id = $1", &[&user_id])
            .await?;
        tx.commit().await?;
        Ok(n == 1)
    }

    async fn password_of(&self, username: &str) -> StoreResult<Option<(User, Option<String>)>> {
        let row = self
            .client()
            .await?
            .query_opt(
                &format!("SELECT {USER_COLS}, password_hash FROM users WHERE username = $1"),
                &[&username],
            )
            .await?;
        let Some(r) = row else {
            return Ok(None);
        };
        Ok(Some((user_at(&r, 0)?, r.try_get(6)?)))
    }

    async fn create_session(&self, s: NewSession) -> StoreResult<()> {
        let now = now_millis();
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        // Expired sessions go whenever a new one is made, so the table stays small without a
        // task of its own. Rows another sign-in is deleting are left to it (SKIP LOCKED), so
        // two sign-ins never wait for each other, nor lock the same rows in different orders.
        tx.execute(
            "DELETE FROM web_sessions WHERE digest IN (
                 SELECT digest FROM web_sessions WHERE expires_at <= $1
                 FOR UPDATE SKIP LOCKED)",
            &[&now],
        )
        .await?;
        tx.execute(
            "INSERT INTO web_sessions (digest, user_id, csrf, created_at, expires_at)
             VALUES ($1, $2, $3, $4, $5)",
            &[
                &&s.digest[..],
                &s.user_id,
                &s.csrf,
                &now,
                &s.expires_at.timestamp_millis(),
            ],
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn session(&self, digest: [u8; 32]) -> StoreResult<Option<Session>> {
        let c = self.client().await?;
        // Every page of a signed-in user runs this.
        let st = c
            .prepare_cached(
                "SELECT u.id, u.username, u.name, u.email, u.is_admin, u.created_at, s.csrf
                 FROM web_sessions s JOIN users u ON u.id = s.user_id
                 WHERE s.digest = $1 AND s.expires_at > $2",
            )
            .await?;
        let Some(r) = c.query_opt(&st, &[&&digest[..], &now_millis()]).await? else {
            return Ok(None);
        };
        Ok(Some(Session {
            user: user_at(&r, 0)?,
            csrf: r.try_get(6)?,
        }))
    }

    async fn delete_session(&self, digest: [u8; 32]) -> StoreResult<()> {
        self.client()
            .await?
            .execute(
                "DELETE FROM web_sessions WHERE digest = $1",
                &[&&digest[..]],
            )
            .await?;
        Ok(())
    }

    async fn project_summaries(
        &self,
        project_ids: Vec<i64>,
    ) -> StoreResult<HashMap<i64, ProjectSummary>> {
        let current = Utc::now().timestamp().div_euclid(3600) * 3600;
        let first = current - (FREQUENCY_HOURS - 1) * 3600;
        let mut out: HashMap<i64, ProjectSummary> = project_ids
            .iter()
            .map(|&id| {
                (
                    id,
                    ProjectSummary {
                        unresolved: 0,
                        hourly: vec![0; FREQUENCY_HOURS as usize],
                    },
                )
            })
            .collect();
        if out.is_empty() {
            return Ok(out);
        }
        let c = self.client().await?;
        // One statement for all the projects of a page rather than two per project: a round
        // trip to the server costs what SQLite's in-process call does not.
        let unresolved = c
            .prepare_cached(
                "SELECT project_id, COUNT(*) FROM errors
                 WHERE project_id = ANY($1) AND status = 0 GROUP BY project_id",
            )
            .await?;
        for r in c.query(&unresolved, &[&project_ids]).await? {
            let id: i64 = r.try_get(0)?;
            if let Some(summary) = out.get_mut(&id) {
                summary.unresolved = r.try_get(1)?;
            }
        }
        // Only errors seen in the last day can have counts in it, and errors_by_last_seen
        // finds those without touching the others.
        let hourly = c
            .prepare_cached(
                "SELECT e.project_id, h.hour, SUM(h.count)::bigint FROM errors e
                 JOIN error_hourly h ON h.error_id = e.id AND h.hour >= $2
                 WHERE e.project_id = ANY($1) AND e.status IN (0, 1, 2) AND e.last_seen_at >= $3
                 GROUP BY e.project_id, h.hour",
            )
            .await?;
        for r in c
            .query(&hourly, &[&project_ids, &first, &(first * 1000)])
            .await?
        {
            let id: i64 = r.try_get(0)?;
            let hour: i64 = r.try_get(1)?;
            let n: i64 = r.try_get(2)?;
            if let Some(slot) = out.get_mut(&id).and_then(|s| {
                usize::try_from((hour - first) / 3600)
                    .ok()
                    .and_then(|i| s.hourly.get_mut(i))
            }) {
                *slot += n;
            }
        }
        Ok(out)
    }

    async fn error_daily(&self, error_id: i64, days: i64) -> StoreResult<Vec<(i64, i64)>> {
        let today = Utc::now().timestamp().div_euclid(86_400) * 86_400;
        let first = today - (days - 1) * 86_400;
        let c = self.client().await?;
        let st = c
            .prepare_cached(
                "SELECT hour / 86400 * 86400, SUM(count)::bigint FROM error_hourly
                 WHERE error_id = $1 AND hour >= $2 GROUP BY 1",
            )
            .await?;
        let mut counts = HashMap::new();
        for r in c.query(&st, &[&error_id, &first]).await? {
            counts.insert(r.try_get::<_, i64>(0)?, r.try_get::<_, i64>(1)?);
        }
        Ok((0..days)
            .map(|i| {
                let day = first + i * 86_400;
                (day, counts.get(&day).copied().unwrap_or(0))
            })
            .collect())
    }

    async fn error_tag_values(&self, error_id: i64) -> StoreResult<Vec<TagValue>> {
        let c = self.client().await?;
        let mut out = Vec::new();
        for key in ["environment", "release", "level"] {
            // A fixed column name, never input.
            let column = if key == "level" {
                "COALESCE(level, 'error')"
            } else {
                key
            };
            let st = c
                .prepare_cached(&format!(
                    "SELECT v, COUNT(*) AS n FROM (
                         SELECT {column} AS v FROM events WHERE error_id = $1
                         ORDER BY occurred_at DESC, id DESC LIMIT $2) AS latest
                     WHERE v IS NOT NULL GROUP BY v ORDER BY n DESC, v COLLATE \"C\" LIMIT $3"
                ))
                .await?;
            let found = c
                .query(&st, &[&error_id, &TAG_SAMPLE, &(TAG_VALUES_SHOWN as i64)])
                .await?;
            for r in found {
                out.push(TagValue {
                    key: key.to_owned(),
                    value: r.try_get(0)?,
                    count: Some(r.try_get(1)?),
                });
            }
        }
        // The SDK's own tags (browser, os, server_name, ...), counted over the latest
        // payloads; the payload is the only place their per-event values are kept.
        let mut counts: HashMap<String, HashMap<String, i64>> = HashMap::new();
        let st = c
            .prepare_cached(
                "SELECT payload, payload_codec FROM events WHERE error_id = $1
                 ORDER BY occurred_at DESC, id DESC LIMIT $2",
            )
            .await?;
        for r in c.query(&st, &[&error_id, &TAG_PAYLOAD_SAMPLE]).await? {
            let json = payload::event_json(r.try_get(1)?, r.try_get(0)?)?;
            for (key, value) in sdk_tags(&json) {
                if matches!(key.as_str(), "environment" | "release" | "level") {
                    continue;
                }
                *counts.entry(key).or_default().entry(value).or_default() += 1;
            }
        }
        // Keys its older events carried (kept for search) that the sample did not see.
        let st = c
            .prepare_cached(
                "SELECT key, value FROM error_tags WHERE error_id = $1
                 AND key NOT IN ('environment', 'release', 'level', 'user')
                 ORDER BY key COLLATE \"C\", value COLLATE \"C\" LIMIT 500",
            )
            .await?;
        let mut older: Vec<(String, String)> = Vec::new();
        for r in c.query(&st, &[&error_id]).await? {
            let key: String = r.try_get(0)?;
            if !counts.contains_key(&key) {
                older.push((key, r.try_get(1)?));
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
    }

    async fn error_event(
        &self,
        project_id: i64,
        fingerprint: i64,
        event_row_id: i64,
    ) -> StoreResult<Option<StoredEvent>> {
        let c = self.client().await?;
        super::read::error_event(&c, project_id, fingerprint, event_row_id).await
    }
}
