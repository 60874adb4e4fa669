//! Alert rules, channels and the outbox on PostgreSQL ([`AlertStore`]), and the functions the
//! writer calls inside its own transactions to queue alerts. The SQLite twin,
//! `store::sqlite::alerts`, is the reference for every result and ordering.
//!
//! Several nodes share these tables, so what SQLite gets from its single writer lock is done
//! here with row locks: the claim skips rows another node holds (`FOR UPDATE SKIP LOCKED`), a
//! frequency rule fires once per quiet period because the decision is taken on the locked
//! `alert_rule_state` row, and every transaction that touches a channel and its outbox rows
//! locks the channel first, as deleting the channel does.

use std::collections::HashMap;

use async_trait::async_trait;
use serde_json::Value;
use tokio_postgres::types::{FromSql, Type};
use tokio_postgres::{GenericClient, Row};

use super::PgStore;
use crate::store::alerts::*;
use crate::store::read::ErrorStatus;
use crate::store::{StoreError, StoreResult};

/// An outbox row's uuid: 32 lowercase hex digits, as SQLite's `lower(hex(randomblob(16)))`.
const NEW_UUID: &str = "replace(gen_random_uuid()::text, '-', '')";

/// One hour, the window of a channel's hourly cap.
const HOUR_MS: i64 = 3_600_000;

fn list_json(v: &[String]) -> String {
    Value::from(v.to_vec()).to_string()
}

fn json_list(s: &str) -> Vec<String> {
    serde_json::from_str(s).unwrap_or_default()
}

/// A column of `row`. A type mismatch is a bug in this file, not an unreachable server, so it
/// is reported as a database error rather than through `From<tokio_postgres::Error>`.
fn col<'a, T: FromSql<'a>>(row: &'a Row, idx: usize) -> StoreResult<T> {
    row.try_get(idx)
        .map_err(|e| StoreError::Database(Box::new(e)))
}

const RULE_COLS: &str = "id, project_id, name, on_new, on_regression, frequency_count, \
    frequency_minutes, quiet_minutes, environments, levels, max_per_hour, created_at";

fn rule_row(r: &Row) -> StoreResult<Rule> {
    let count: Option<i64> = col(r, 5)?;
    let minutes: Option<i64> = col(r, 6)?;
    let quiet: Option<i64> = col(r, 7)?;
    let environments: String = col(r, 8)?;
    let levels: String = col(r, 9)?;
    Ok(Rule {
        id: col(r, 0)?,
        project_id: col(r, 1)?,
        spec: RuleSpec {
            name: col(r, 2)?,
            on_new: col(r, 3)?,
            on_regression: col(r, 4)?,
            frequency: match (count, minutes) {
                (Some(count), Some(minutes)) => Some(Frequency {
                    count,
                    minutes,
                    quiet_minutes: quiet.unwrap_or(0),
                }),
                _ => None,
            },
            environments: json_list(&environments),
            levels: json_list(&levels),
            max_per_hour: col(r, 10)?,
        },
        created_at: col(r, 11)?,
        channels: Vec::new(),
    })
}

const CHANNEL_COLS: &str = "c.id, c.rule_id, c.kind, c.url, c.secret, c.created_at, \
    c.last_success_at, c.last_failure_at, c.last_failure_status, c.last_failure_reason";

fn channel_row(r: &Row, at: usize) -> StoreResult<Channel> {
    let failure_at: Option<i64> = col(r, at + 7)?;
    let status: Option<i64> = col(r, at + 8)?;
    let reason: Option<String> = col(r, at + 9)?;
    Ok(Channel {
        id: col(r, at)?,
        rule_id: col(r, at + 1)?,
        kind: col(r, at + 2)?,
        url: col(r, at + 3)?,
        secret: col(r, at + 4)?,
        created_at: col(r, at + 5)?,
        last_success_at: col(r, at + 6)?,
        last_failure: failure_at.map(|at_ms| ChannelFailure {
            at: at_ms,
            status,
            reason: reason.unwrap_or_default(),
        }),
    })
}

fn spec_params(spec: &RuleSpec) -> (Option<i64>, Option<i64>, Option<i64>, String, String) {
    (
        spec.frequency.map(|f| f.count),
        spec.frequency.map(|f| f.minutes),
        spec.frequency.map(|f| f.quiet_minutes),
        list_json(&spec.environments),
        list_json(&spec.levels),
    )
}

/// The rules `rules` (already read) with their channels, in id order.
async fn with_channels(c: &tokio_postgres::Client, mut rules: Vec<Rule>) -> StoreResult<Vec<Rule>> {
    if rules.is_empty() {
        return Ok(rules);
    }
    let ids: Vec<i64> = rules.iter().map(|r| r.id).collect();
    let rows = c
        .query(
            &format!(
                "SELECT {CHANNEL_COLS} FROM alert_channels c WHERE c.rule_id = ANY($1)
                 ORDER BY c.id"
            ),
            &[&ids],
        )
        .await?;
    let mut by_rule: HashMap<i64, Vec<Channel>> = HashMap::new();
    for row in &rows {
        let channel = channel_row(row, 0)?;
        by_rule.entry(channel.rule_id).or_default().push(channel);
    }
    for rule in &mut rules {
        rule.channels = by_rule.remove(&rule.id).unwrap_or_default();
    }
    Ok(rules)
}

async fn load_rule(
    c: &tokio_postgres::Client,
    project_id: i64,
    rule_id: i64,
) -> StoreResult<Option<Rule>> {
    let Some(row) = c
        .query_opt(
            &format!("SELECT {RULE_COLS} FROM alert_rules WHERE id = $1 AND project_id = $2"),
            &[&rule_id, &project_id],
        )
        .await?
    else {
        return Ok(None);
    };
    Ok(with_channels(c, vec![rule_row(&row)?]).await?.pop())
}

/// The errors `ids` as an alert shows them, each with its newest event. Ids that name no
/// error are left out.
async fn errors_for_alert<C: GenericClient + Sync>(
    c: &C,
    ids: &[i64],
) -> StoreResult<HashMap<i64, AlertedError>> {
    let mut out = HashMap::with_capacity(ids.len());
    if ids.is_empty() {
        return Ok(out);
    }
    let rows = c
        .query(
            "SELECT e.id, e.fingerprint, e.short_seq, e.name, e.description, e.actor, e.status,
                    e.event_count, e.approximated_user_count, e.first_seen_at, e.last_seen_at,
                    n.event_id, n.name, n.description, n.actor, n.environment, n.release,
                    n.level, n.occurred_at
             FROM errors e
             LEFT JOIN LATERAL (
                 SELECT v.event_id, v.name, v.description, v.actor, v.environment, v.release,
                        v.level, v.occurred_at
                 FROM events v WHERE v.error_id = e.id
                 ORDER BY v.occurred_at DESC, v.id DESC LIMIT 1
             ) n ON TRUE
             WHERE e.id = ANY($1)",
            &[&ids],
        )
        .await?;
    for r in &rows {
        let event_id: Option<String> = col(r, 11)?;
        let newest = match event_id {
            Some(event_id) => Some(AlertedEvent {
                event_id,
                name: col(r, 12)?,
                description: col(r, 13)?,
                actor: col(r, 14)?,
                environment: col(r, 15)?,
                release: col(r, 16)?,
                level: col(r, 17)?,
                occurred_at: col(r, 18)?,
            }),
            None => None,
        };
        let status: i64 = col(r, 6)?;
        let error = AlertedError {
            id: col(r, 0)?,
            fingerprint: col(r, 1)?,
            short_seq: col(r, 2)?,
            name: col(r, 3)?,
            description: col(r, 4)?,
            actor: col(r, 5)?,
            status: ErrorStatus::from_code(status).as_str(),
            event_count: col(r, 7)?,
            user_count: col(r, 8)?,
            first_seen_at: col(r, 9)?,
            last_seen_at: col(r, 10)?,
            newest,
        };
        out.insert(error.id, error);
    }
    Ok(out)
}

#[async_trait]
impl AlertStore for PgStore {
    async fn create_rule(&self, project_id: i64, spec: RuleSpec, now: i64) -> StoreResult<Rule> {
        let c = self.client().await?;
        let (count, minutes, quiet, envs, levels) = spec_params(&spec);
        let row = c
            .query_one(
                "INSERT INTO alert_rules (project_id, name, on_new, on_regression,
                     frequency_count, frequency_minutes, quiet_minutes, environments, levels,
                     max_per_hour, created_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
                 RETURNING id",
                &[
                    &project_id,
                    &spec.name,
                    &spec.on_new,
                    &spec.on_regression,
                    &count,
                    &minutes,
                    &quiet,
                    &envs,
                    &levels,
                    &spec.max_per_hour,
                    &now,
                ],
            )
            .await?;
        Ok(Rule {
            id: col(&row, 0)?,
            project_id,
            spec,
            created_at: now,
            channels: Vec::new(),
        })
    }

    async fn list_rules(&self, project_id: i64) -> StoreResult<Vec<Rule>> {
        let c = self.client().await?;
        let rows = c
            .query(
                &format!("SELECT {RULE_COLS} FROM alert_rules WHERE project_id = $1 ORDER BY id"),
                &[&project_id],
            )
            .await?;
        let rules = rows.iter().map(rule_row).collect::<StoreResult<Vec<_>>>()?;
        with_channels(&c, rules).await
    }

    async fn rule(&self, project_id: i64, rule_id: i64) -> StoreResult<Option<Rule>> {
        let c = self.client().await?;
        load_rule(&c, project_id, rule_id).await
    }

    async fn update_rule(
        &self,
        project_id: i64,
        rule_id: i64,
        spec: RuleSpec,
    ) -> StoreResult<Option<Rule>> {
        let c = self.client().await?;
        let (count, minutes, quiet, envs, levels) = spec_params(&spec);
        let n = c
            .execute(
                "UPDATE alert_rules SET name = $3, on_new = $4, on_regression = $5,
                     frequency_count = $6, frequency_minutes = $7, quiet_minutes = $8,
                     environments = $9, levels = $10, max_per_hour = $11
                 WHERE id = $1 AND project_id = $2",
                &[
                    &rule_id,
                    &project_id,
                    &spec.name,
                    &spec.on_new,
                    &spec.on_regression,
                    &count,
                    &minutes,
                    &quiet,
                    &envs,
                    &levels,
                    &spec.max_per_hour,
                ],
            )
            .await?;
        if n == 0 {
            return Ok(None);
        }
        load_rule(&c, project_id, rule_id).await
    }

    async fn delete_rule(&self, project_id: i64, rule_id: i64) -> StoreResult<bool> {
        let c = self.client().await?;
        // Cascades to the channels, their waiting alerts and the frequency state.
        Ok(c.execute(
            "DELETE FROM alert_rules WHERE id = $1 AND project_id = $2",
            &[&rule_id, &project_id],
        )
        .await?
            > 0)
    }

    async fn add_channel(
        &self,
        project_id: i64,
        rule_id: i64,
        channel: NewChannel,
        now: i64,
    ) -> StoreResult<Option<Channel>> {
        let c = self.client().await?;
        // The rule's row is locked against deletion until the insert commits, so a rule that
        // passed the check cannot vanish before the foreign key is checked.
        let row = c
            .query_opt(
                "INSERT INTO alert_channels (rule_id, kind, url, secret, created_at)
                 SELECT r.id, $3, $4, $5, $6
                 FROM (SELECT id FROM alert_rules WHERE id = $1 AND project_id = $2
                       FOR KEY SHARE) r
                 RETURNING id",
                &[
                    &rule_id,
                    &project_id,
                    &channel.kind,
                    &channel.url,
                    &channel.secret,
                    &now,
                ],
            )
            .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        Ok(Some(Channel {
            id: col(&row, 0)?,
            rule_id,
            kind: channel.kind,
            url: channel.url,
            secret: channel.secret,
            created_at: now,
            last_success_at: None,
            last_failure: None,
        }))
    }

    async fn delete_channel(
        &self,
        project_id: i64,
        rule_id: i64,
        channel_id: i64,
    ) -> StoreResult<bool> {
        let c = self.client().await?;
        Ok(c.execute(
            "DELETE FROM alert_channels WHERE id = $1 AND rule_id = $2
               AND rule_id IN (SELECT id FROM alert_rules WHERE project_id = $3)",
            &[&channel_id, &rule_id, &project_id],
        )
        .await?
            > 0)
    }

    async fn queue_test(
        &self,
        project_id: i64,
        rule_id: i64,
        channel_id: i64,
        now: i64,
    ) -> StoreResult<bool> {
        let c = self.client().await?;
        Ok(c.execute(
            &format!(
                "INSERT INTO alert_outbox (channel_id, rule_id, error_id, trigger, uuid,
                                           created_at, next_attempt_at)
                 SELECT c.id, c.rule_id, NULL, 'test', {NEW_UUID}, $4, $4
                 FROM alert_channels c JOIN alert_rules r ON r.id = c.rule_id
                 WHERE c.id = $1 AND c.rule_id = $2 AND r.project_id = $3"
            ),
            &[&channel_id, &rule_id, &project_id, &now],
        )
        .await?
            > 0)
    }

    async fn claim_due(
        &self,
        node: &str,
        now: i64,
        lease_ms: i64,
        limit: i64,
    ) -> StoreResult<Vec<ClaimedAlert>> {
        let mut c = self.client().await?;
        let until = now.saturating_add(lease_ms);
        let tx = c.transaction().await?;
        // One statement picks and leases the rows. Rows another node is claiming at this
        // moment are skipped rather than waited for, and a row another node claimed since
        // this statement's snapshot is checked again on its new version, which now has a
        // lease: no two nodes hold one row.
        let claim = tx
            .prepare_cached(&format!(
                "WITH claimed AS (
                     UPDATE alert_outbox SET claimed_until = $3, claimed_by = $4
                     WHERE id IN (SELECT id FROM alert_outbox
                                  WHERE next_attempt_at <= $2 AND claimed_until <= $2
                                  ORDER BY next_attempt_at, id LIMIT $1
                                  FOR UPDATE SKIP LOCKED)
                     RETURNING id, channel_id, uuid, trigger, attempts, created_at, error_id,
                               rule_id
                 )
                 SELECT {CHANNEL_COLS}, r.name, r.max_per_hour, p.id, p.path_with_namespace,
                        k.id, k.uuid, k.trigger, k.attempts, k.created_at, k.error_id, k.rule_id
                 FROM claimed k
                 LEFT JOIN alert_channels c ON c.id = k.channel_id
                 LEFT JOIN alert_rules r ON r.id = c.rule_id
                 LEFT JOIN projects p ON p.id = r.project_id AND p.deleting_since IS NULL
                 ORDER BY k.id"
            ))
            .await?;
        let rows = tx.query(&claim, &[&limit, &now, &until, &node]).await?;
        let mut gone: Vec<i64> = Vec::new();
        let mut claimed = Vec::with_capacity(rows.len());
        for r in &rows {
            let outbox_id: i64 = col(r, 14)?;
            let project_id: Option<i64> = col(r, 12)?;
            let Some(project_id) = project_id else {
                // Its project is being deleted; nobody is left to tell.
                gone.push(outbox_id);
                continue;
            };
            let trigger: String = col(r, 16)?;
            let error_id: Option<i64> = col(r, 19)?;
            claimed.push((
                error_id,
                ClaimedAlert {
                    outbox_id,
                    uuid: col(r, 15)?,
                    trigger: Trigger::parse(&trigger).unwrap_or(Trigger::Test),
                    attempts: col(r, 17)?,
                    created_at: col(r, 18)?,
                    channel: channel_row(r, 0)?,
                    rule_id: col(r, 20)?,
                    rule_name: col(r, 10)?,
                    max_per_hour: col(r, 11)?,
                    project_id,
                    project_path: col(r, 13)?,
                    error: None,
                },
            ));
        }
        if !gone.is_empty() {
            tx.execute("DELETE FROM alert_outbox WHERE id = ANY($1)", &[&gone])
                .await?;
        }
        let mut ids: Vec<i64> = claimed.iter().filter_map(|(e, _)| *e).collect();
        ids.sort_unstable();
        ids.dedup();
        let errors = errors_for_alert(&*tx, &ids).await?;
        tx.commit().await?;
        Ok(claimed
            .into_iter()
            .map(|(error_id, mut alert)| {
                alert.error = error_id.and_then(|id| errors.get(&id).cloned());
                alert
            })
            .collect())
    }

    async fn settle(
        &self,
        alert: &ClaimedAlert,
        now: i64,
        result: DeliveryResult,
    ) -> StoreResult<()> {
        let (outbox_id, channel_id) = (alert.outbox_id, alert.channel.id);
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        // The channel's row first, then the outbox row: deleting a channel locks them in that
        // order too (the cascade), so the two cannot wait on each other.
        match result {
            DeliveryResult::Delivered => {
                let mark = tx
                    .prepare_cached("UPDATE alert_channels SET last_success_at = $2 WHERE id = $1")
                    .await?;
                let channel_there = tx.execute(&mark, &[&channel_id, &now]).await? > 0;
                let delete = tx
                    .prepare_cached("DELETE FROM alert_outbox WHERE id = $1")
                    .await?;
                tx.execute(&delete, &[&outbox_id]).await?;
                // A channel deleted meanwhile has no cap left to count against.
                if channel_there {
                    let log = tx
                        .prepare_cached(
                            "INSERT INTO alert_deliveries (channel_id, delivered_at)
                             VALUES ($1, $2)",
                        )
                        .await?;
                    tx.execute(&log, &[&channel_id, &now]).await?;
                    // The hourly cap looks back one hour; older rows only take room.
                    let prune = tx
                        .prepare_cached(
                            "DELETE FROM alert_deliveries
                             WHERE channel_id = $1 AND delivered_at < $2",
                        )
                        .await?;
                    tx.execute(&prune, &[&channel_id, &now.saturating_sub(HOUR_MS)])
                        .await?;
                }
            }
            DeliveryResult::Failed {
                status,
                reason,
                retry_at,
            } => {
                let mark = tx
                    .prepare_cached(
                        "UPDATE alert_channels SET last_failure_at = $2, last_failure_status = $3,
                             last_failure_reason = $4
                         WHERE id = $1",
                    )
                    .await?;
                tx.execute(&mark, &[&channel_id, &now, &status, &reason])
                    .await?;
                match retry_at {
                    Some(at) => {
                        let retry = tx
                            .prepare_cached(
                                "UPDATE alert_outbox SET attempts = attempts + 1,
                                     next_attempt_at = $2, claimed_until = 0, claimed_by = NULL
                                 WHERE id = $1",
                            )
                            .await?;
                        tx.execute(&retry, &[&outbox_id, &at]).await?;
                    }
                    None => {
                        let delete = tx
                            .prepare_cached("DELETE FROM alert_outbox WHERE id = $1")
                            .await?;
                        tx.execute(&delete, &[&outbox_id]).await?;
                    }
                }
            }
        }
        tx.commit().await?;
        Ok(())
    }

    async fn settle_folded(&self, outbox_ids: Vec<i64>) -> StoreResult<()> {
        if outbox_ids.is_empty() {
            return Ok(());
        }
        let c = self.client().await?;
        // Rows are locked in id order, so two statements over overlapping sets cannot wait on
        // each other.
        let stmt = c
            .prepare_cached(
                "DELETE FROM alert_outbox WHERE id IN (
                     SELECT id FROM alert_outbox WHERE id = ANY($1) ORDER BY id FOR UPDATE)",
            )
            .await?;
        c.execute(&stmt, &[&outbox_ids]).await?;
        Ok(())
    }

    async fn claim_backlog(
        &self,
        channel_id: i64,
        tag: &str,
        now: i64,
        lease_ms: i64,
    ) -> StoreResult<i64> {
        let c = self.client().await?;
        // The rows another node holds are skipped, not waited for; they are that node's
        // summary. Locked in id order, as every other statement on the outbox.
        let stmt = c
            .prepare_cached(
                "UPDATE alert_outbox SET claimed_until = $3, claimed_by = $2
                 WHERE id IN (SELECT id FROM alert_outbox
                              WHERE channel_id = $1 AND trigger <> 'test' AND claimed_until <= $4
                              ORDER BY id FOR UPDATE SKIP LOCKED)",
            )
            .await?;
        let n = c
            .execute(
                &stmt,
                &[&channel_id, &tag, &now.saturating_add(lease_ms), &now],
            )
            .await?;
        Ok(i64::try_from(n).unwrap_or(i64::MAX))
    }

    async fn settle_backlog(&self, channel_id: i64, tag: &str, delivered: bool) -> StoreResult<()> {
        let c = self.client().await?;
        let sql = if delivered {
            "DELETE FROM alert_outbox WHERE id IN (
                 SELECT id FROM alert_outbox WHERE channel_id = $1 AND claimed_by = $2
                 ORDER BY id FOR UPDATE)"
        } else {
            "UPDATE alert_outbox SET claimed_until = 0, claimed_by = NULL
             WHERE id IN (SELECT id FROM alert_outbox WHERE channel_id = $1 AND claimed_by = $2
                          ORDER BY id FOR UPDATE)"
        };
        let stmt = c.prepare_cached(sql).await?;
        c.execute(&stmt, &[&channel_id, &tag]).await?;
        Ok(())
    }

    async fn delivered_since(
        &self,
        channel_id: i64,
        since: i64,
    ) -> StoreResult<(i64, Option<i64>)> {
        let c = self.client().await?;
        let stmt = c
            .prepare_cached(
                "SELECT COUNT(*), MAX(delivered_at) FROM alert_deliveries
                 WHERE channel_id = $1 AND delivered_at >= $2",
            )
            .await?;
        let row = c.query_one(&stmt, &[&channel_id, &since]).await?;
        Ok((col(&row, 0)?, col(&row, 1)?))
    }

    async fn postpone(&self, outbox_ids: Vec<i64>, at: i64) -> StoreResult<()> {
        if outbox_ids.is_empty() {
            return Ok(());
        }
        let c = self.client().await?;
        // In id order, as in `settle_folded`.
        let stmt = c
            .prepare_cached(
                "UPDATE alert_outbox SET next_attempt_at = $2, claimed_until = 0,
                     claimed_by = NULL
                 WHERE id IN (
                     SELECT id FROM alert_outbox WHERE id = ANY($1) ORDER BY id FOR UPDATE)",
            )
            .await?;
        c.execute(&stmt, &[&outbox_ids, &at]).await?;
        Ok(())
    }

    async fn next_due(&self) -> StoreResult<Option<i64>> {
        let c = self.client().await?;
        let stmt = c
            .prepare_cached(
                "SELECT MIN(GREATEST(next_attempt_at, claimed_until)) FROM alert_outbox",
            )
            .await?;
        let row = c.query_one(&stmt, &[]).await?;
        col(&row, 0)
    }

    async fn alerted_errors(&self, ids: Vec<i64>) -> StoreResult<HashMap<i64, AlertedError>> {
        let c = self.client().await?;
        errors_for_alert(&**c, &ids).await
    }
}

/// Queues one alert per channel of every rule of `project_id` that `trigger` (a new error or a
/// regression) and the event's environment and level match, in the writer's transaction `tx`.
/// Returns how many rows it queued. (The SQLite twin is `store::sqlite::alerts::queue_for_error`.)
pub(crate) async fn queue_for_error(
    tx: &tokio_postgres::Transaction<'_>,
    project_id: i64,
    error_id: i64,
    trigger: Trigger,
    environment: Option<&str>,
    level: &str,
    now: i64,
) -> StoreResult<usize> {
    let column = match trigger {
        Trigger::NewError => "on_new",
        Trigger::Regression => "on_regression",
        Trigger::Frequency | Trigger::Test => return Ok(0),
    };
    // Typed parameters: one round trip, no statement to prepare on the writer's connection.
    let n = tx
        .execute_typed(
            &format!(
                "INSERT INTO alert_outbox (channel_id, rule_id, error_id, trigger, uuid,
                                           created_at, next_attempt_at)
                 SELECT c.id, r.id, $2, $3, {NEW_UUID}, $4, $4
                 FROM alert_rules r JOIN alert_channels c ON c.rule_id = r.id
                 WHERE r.project_id = $1 AND r.{column}
                   AND (r.environments = '[]' OR r.environments::jsonb ? $5)
                   AND (r.levels = '[]' OR r.levels::jsonb ? $6)
                 ORDER BY r.id, c.id"
            ),
            &[
                (&project_id, Type::INT8),
                (&error_id, Type::INT8),
                (&trigger.as_str(), Type::TEXT),
                (&now, Type::INT8),
                (&environment, Type::TEXT),
                (&level, Type::TEXT),
            ],
        )
        .await?;
    Ok(usize::try_from(n).unwrap_or(usize::MAX))
}

/// Whether any rule has a frequency trigger, so the count write can skip the check otherwise.
pub(crate) async fn any_frequency_rule(tx: &tokio_postgres::Transaction<'_>) -> StoreResult<bool> {
    let row = tx
        .query_typed_one(
            "SELECT EXISTS (SELECT 1 FROM alert_rules WHERE frequency_count IS NOT NULL)",
            &[],
        )
        .await?;
    col(&row, 0)
}

/// Queues the frequency alerts that the counts just written in `tx` made due, for the errors
/// `error_ids`. Returns how many rows it queued.
///
/// As on SQLite, a rule fires for an error when at least `count` of the error's events (of the
/// rule's environments and levels) occurred in the `minutes` up to `now`, and the rule has not
/// fired for that error within its quiet period; each check reads at most `count` events
/// through the `(error_id, occurred_at)` index. The quiet period is checked a second time on
/// the locked `alert_rule_state` row (the upsert's `WHERE`), so when two nodes' count writes
/// see the same threshold crossed, the second waits for the first and then fires nothing.
/// Times past the end of `BIGINT` (a huge quiet period) are compared as `numeric`, where
/// SQLite saturates. All in one statement: the writer's transaction pays one round trip.
pub(crate) async fn check_frequency(
    tx: &tokio_postgres::Transaction<'_>,
    error_ids: &[i64],
    now: i64,
) -> StoreResult<usize> {
    if error_ids.is_empty() {
        return Ok(0);
    }
    let mut ids = Vec::with_capacity(error_ids.len());
    for &id in error_ids {
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    let ids: &[i64] = &ids;
    let n = tx
        .execute_typed(
            &format!(
                "WITH due AS (
                     SELECT r.id AS rule_id, e.id AS error_id, q.ord
                     FROM unnest($1::bigint[]) WITH ORDINALITY AS q(error_id, ord)
                     JOIN errors e ON e.id = q.error_id
                     JOIN alert_rules r ON r.project_id = e.project_id
                     LEFT JOIN alert_rule_state s ON s.rule_id = r.id AND s.error_id = e.id
                     WHERE r.frequency_count IS NOT NULL AND r.frequency_minutes IS NOT NULL
                       AND (s.last_fired_at IS NULL
                            OR s.last_fired_at::numeric
                               + COALESCE(r.quiet_minutes, 0)::numeric * 60000 <= $2)
                       AND (SELECT COUNT(*) FROM (
                                SELECT 1 FROM events v
                                WHERE v.error_id = e.id
                                  AND v.occurred_at > $2 - r.frequency_minutes * 60000
                                  AND v.occurred_at <= $2
                                  AND (r.environments = '[]'
                                       OR r.environments::jsonb ? v.environment)
                                  AND (r.levels = '[]'
                                       OR r.levels::jsonb ? COALESCE(v.level, 'error'))
                                LIMIT r.frequency_count) w) >= r.frequency_count
                 ),
                 fired AS (
                     INSERT INTO alert_rule_state AS s (rule_id, error_id, last_fired_at)
                     SELECT rule_id, error_id, $2 FROM due ORDER BY rule_id, error_id
                     ON CONFLICT (rule_id, error_id) DO UPDATE
                         SET last_fired_at = excluded.last_fired_at
                         WHERE s.last_fired_at::numeric
                               + COALESCE((SELECT quiet_minutes FROM alert_rules
                                           WHERE id = s.rule_id), 0)::numeric * 60000
                               <= excluded.last_fired_at
                     RETURNING rule_id, error_id
                 )
                 INSERT INTO alert_outbox (channel_id, rule_id, error_id, trigger, uuid,
                                           created_at, next_attempt_at)
                 SELECT c.id, f.rule_id, f.error_id, 'frequency', {NEW_UUID}, $2, $2
                 FROM fired f
                 JOIN due d ON d.rule_id = f.rule_id AND d.error_id = f.error_id
                 JOIN alert_channels c ON c.rule_id = f.rule_id
                 ORDER BY d.ord, f.rule_id, c.id"
            ),
            &[(&ids, Type::INT8_ARRAY), (&now, Type::INT8)],
        )
        .await?;
    Ok(usize::try_from(n).unwrap_or(usize::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::postgres::schema::{create_partition_sql, day_of};

    const NOW: i64 = 1_700_000_000_000;

    /// A store on a database of its own, or `None` when no PostgreSQL is configured (an error
    /// under CI, where the tests must run).
    async fn fresh() -> Option<(PgStore, String)> {
        let Ok(base) = std::env::var("FAULTLINE_TEST_POSTGRES") else {
            assert!(
                std::env::var_os("CI").is_none(),
                "FAULTLINE_TEST_POSTGRES must be set under CI"
            );
            return None;
        };
        let name = format!("fl_alerts_{}", uuid::Uuid::new_v4().simple());
        let (admin, conn) = tokio_postgres::connect(&base, tokio_postgres::NoTls)
            .await
            .expect("connect to FAULTLINE_TEST_POSTGRES");
        tokio::spawn(conn);
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create database");
        let mut url = url::Url::parse(&base).expect("FAULTLINE_TEST_POSTGRES is a URL");
        url.set_path(&name);
        let store = PgStore::open(url.as_str()).await.expect("open");
        Some((store, name))
    }

    /// Drops a test's database (left behind when the test failed, for a look at its rows).
    async fn done(name: String) {
        let base = std::env::var("FAULTLINE_TEST_POSTGRES").unwrap();
        let (admin, conn) = tokio_postgres::connect(&base, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        admin
            .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .await
            .unwrap();
    }

    async fn project(store: &PgStore, path: &str) -> i64 {
        let c = store.client().await.unwrap();
        c.query_one(
            "INSERT INTO projects (name, path, namespace_path, path_with_namespace, created_at)
             VALUES ($1, $1, 'acme', 'acme/' || $1, 0) RETURNING id",
            &[&path],
        )
        .await
        .unwrap()
        .get(0)
    }

    async fn error(store: &PgStore, project_id: i64, fingerprint: i64) -> i64 {
        let c = store.client().await.unwrap();
        c.query_one(
            "INSERT INTO errors (project_id, fingerprint, name, description, actor,
                 first_seen_at, last_seen_at, event_count, short_seq)
             VALUES ($1, $2, 'TypeError', 'x is undefined', 'app.js', $3, $3, 1, 7)
             RETURNING id",
            &[&project_id, &fingerprint, &NOW],
        )
        .await
        .unwrap()
        .get(0)
    }

    async fn event(
        store: &PgStore,
        project_id: i64,
        error_id: i64,
        occurred_at: i64,
        environment: Option<&str>,
        level: Option<&str>,
    ) {
        let c = store.client().await.unwrap();
        c.batch_execute(&create_partition_sql(day_of(NOW)))
            .await
            .unwrap();
        c.execute(
            "INSERT INTO events (project_id, error_id, event_id, occurred_at, received_at, level,
                 environment, is_message, name, description, actor, payload, node, node_seq)
             VALUES ($1, $2, md5(random()::text), $3, $4, $5, $6, FALSE, 'TypeError',
                 'x is undefined', 'app.js', '\\x00', 1, 1)",
            &[
                &project_id,
                &error_id,
                &occurred_at,
                &NOW,
                &level,
                &environment,
            ],
        )
        .await
        .unwrap();
    }

    fn spec(name: &str) -> RuleSpec {
        RuleSpec {
            name: name.into(),
            on_new: true,
            on_regression: false,
            frequency: None,
            environments: Vec::new(),
            levels: Vec::new(),
            max_per_hour: 20,
        }
    }

    fn webhook(url: &str) -> NewChannel {
        NewChannel {
            kind: "webhook".into(),
            url: url.into(),
            secret: Some("s".into()),
        }
    }

    async fn outbox_count(store: &PgStore) -> i64 {
        let c = store.client().await.unwrap();
        c.query_one("SELECT COUNT(*) FROM alert_outbox", &[])
            .await
            .unwrap()
            .get(0)
    }

    #[tokio::test]
    async fn rules_and_channels_are_scoped_by_project() {
        let Some((store, db)) = fresh().await else {
            return;
        };
        let p = project(&store, "shop").await;
        let other = project(&store, "blog").await;
        let mut s = spec("new errors");
        s.environments = vec!["production".into()];
        s.levels = vec!["error".into(), "fatal".into()];
        s.frequency = Some(Frequency {
            count: 5,
            minutes: 10,
            quiet_minutes: 30,
        });
        let rule = store.create_rule(p, s.clone(), NOW).await.unwrap();
        let second = store.create_rule(p, spec("second"), NOW + 1).await.unwrap();
        assert!(second.id > rule.id);
        assert_eq!(rule.spec, s);

        let a = store
            .add_channel(p, rule.id, webhook("https://a.example/"), NOW)
            .await
            .unwrap()
            .unwrap();
        let b = store
            .add_channel(p, rule.id, webhook("https://b.example/"), NOW)
            .await
            .unwrap()
            .unwrap();
        assert!(store
            .add_channel(other, rule.id, webhook("https://c.example/"), NOW)
            .await
            .unwrap()
            .is_none());
        assert!(store
            .add_channel(p, 999_999, webhook("https://c.example/"), NOW)
            .await
            .unwrap()
            .is_none());

        let listed = store.list_rules(p).await.unwrap();
        assert_eq!(
            listed.iter().map(|r| r.id).collect::<Vec<_>>(),
            [rule.id, second.id]
        );
        assert_eq!(listed[0].spec, s);
        assert_eq!(
            listed[0].channels.iter().map(|c| c.id).collect::<Vec<_>>(),
            [a.id, b.id]
        );
        assert_eq!(listed[0].channels[0].secret.as_deref(), Some("s"));
        assert!(listed[0].channels[0].last_failure.is_none());
        assert!(listed[1].channels.is_empty());
        assert!(store.list_rules(other).await.unwrap().is_empty());
        assert!(store.rule(other, rule.id).await.unwrap().is_none());
        assert_eq!(
            store
                .rule(p, rule.id)
                .await
                .unwrap()
                .unwrap()
                .channels
                .len(),
            2
        );

        let mut changed = spec("renamed");
        changed.on_regression = true;
        assert!(store
            .update_rule(other, rule.id, changed.clone())
            .await
            .unwrap()
            .is_none());
        let updated = store
            .update_rule(p, rule.id, changed.clone())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(updated.spec, changed);
        assert_eq!(updated.created_at, NOW);
        assert_eq!(updated.channels.len(), 2);

        assert!(!store.delete_channel(other, rule.id, a.id).await.unwrap());
        assert!(!store.delete_channel(p, second.id, a.id).await.unwrap());
        assert!(store.delete_channel(p, rule.id, a.id).await.unwrap());
        assert!(!store.delete_channel(p, rule.id, a.id).await.unwrap());

        assert!(store.queue_test(p, rule.id, b.id, NOW).await.unwrap());
        assert!(!store.queue_test(other, rule.id, b.id, NOW).await.unwrap());
        assert!(!store.queue_test(p, second.id, b.id, NOW).await.unwrap());
        assert_eq!(outbox_count(&store).await, 1);

        assert!(!store.delete_rule(other, rule.id).await.unwrap());
        assert!(store.delete_rule(p, rule.id).await.unwrap());
        assert!(!store.delete_rule(p, rule.id).await.unwrap());
        // The waiting test notification went with its channel.
        assert_eq!(outbox_count(&store).await, 0);
        assert_eq!(store.list_rules(p).await.unwrap().len(), 1);
        done(db).await;
    }

    #[tokio::test]
    async fn queued_in_a_transaction_then_claimed_and_settled() {
        let Some((store, db)) = fresh().await else {
            return;
        };
        let p = project(&store, "shop").await;
        let mut s = spec("prod");
        s.environments = vec!["production".into()];
        s.levels = vec!["error".into()];
        let rule = store.create_rule(p, s, NOW).await.unwrap();
        let a = store
            .add_channel(p, rule.id, webhook("https://a.example/"), NOW)
            .await
            .unwrap()
            .unwrap();
        let b = store
            .add_channel(p, rule.id, webhook("https://b.example/"), NOW)
            .await
            .unwrap()
            .unwrap();
        let e = error(&store, p, 42).await;
        event(&store, p, e, NOW - 5, Some("production"), Some("error")).await;
        event(&store, p, e, NOW - 1, Some("production"), Some("error")).await;

        let mut w = store.connect().await.unwrap();
        let tx = w.transaction().await.unwrap();
        let new = Trigger::NewError;
        let reg = Trigger::Regression;
        let prod = Some("production");
        assert_eq!(
            queue_for_error(&tx, p, e, new, Some("staging"), "error", NOW)
                .await
                .unwrap(),
            0
        );
        assert_eq!(
            queue_for_error(&tx, p, e, new, None, "error", NOW)
                .await
                .unwrap(),
            0
        );
        assert_eq!(
            queue_for_error(&tx, p, e, new, prod, "warning", NOW)
                .await
                .unwrap(),
            0
        );
        assert_eq!(
            queue_for_error(&tx, p, e, reg, prod, "error", NOW)
                .await
                .unwrap(),
            0
        );
        assert_eq!(
            queue_for_error(&tx, p + 1, e, new, prod, "error", NOW)
                .await
                .unwrap(),
            0
        );
        assert_eq!(
            queue_for_error(&tx, p, e, new, prod, "error", NOW)
                .await
                .unwrap(),
            2
        );
        // Not visible before the writer commits.
        assert!(store
            .claim_due("n1", NOW, 60_000, 64)
            .await
            .unwrap()
            .is_empty());
        tx.commit().await.unwrap();
        assert_eq!(store.next_due().await.unwrap(), Some(NOW));

        assert!(store
            .claim_due("n1", NOW - 1, 60_000, 64)
            .await
            .unwrap()
            .is_empty());
        let claimed = store.claim_due("n1", NOW, 60_000, 64).await.unwrap();
        assert_eq!(claimed.len(), 2);
        assert!(claimed[0].outbox_id < claimed[1].outbox_id);
        assert_eq!(claimed[0].channel.id, a.id);
        assert_eq!(claimed[1].channel.id, b.id);
        for c in &claimed {
            assert_eq!(c.trigger, Trigger::NewError);
            assert_eq!(c.uuid.len(), 32);
            assert!(c.uuid.chars().all(|ch| matches!(ch, '0'..='9' | 'a'..='f')));
            assert_eq!(c.rule_id, rule.id);
            assert_eq!(c.rule_name, "prod");
            assert_eq!(c.max_per_hour, 20);
            assert_eq!(c.project_id, p);
            assert_eq!(c.project_path, "acme/shop");
            assert_eq!(c.attempts, 0);
            assert_eq!(c.created_at, NOW);
            let err = c.error.as_ref().unwrap();
            assert_eq!((err.id, err.fingerprint, err.short_seq), (e, 42, Some(7)));
            assert_eq!(err.status, "unresolved");
            assert_eq!(err.newest.as_ref().unwrap().occurred_at, NOW - 1);
            assert_eq!(
                err.newest.as_ref().unwrap().environment.as_deref(),
                Some("production")
            );
        }
        assert_ne!(claimed[0].uuid, claimed[1].uuid);
        // Leased: no other node gets them until the lease ends.
        assert!(store
            .claim_due("n2", NOW + 1, 60_000, 64)
            .await
            .unwrap()
            .is_empty());
        assert_eq!(store.next_due().await.unwrap(), Some(NOW + 60_000));

        store
            .settle(&claimed[0], NOW + 10, DeliveryResult::Delivered)
            .await
            .unwrap();
        store
            .settle(
                &claimed[1],
                NOW + 10,
                DeliveryResult::Failed {
                    status: Some(500),
                    reason: "HTTP 500".into(),
                    retry_at: Some(NOW + 1_000),
                },
            )
            .await
            .unwrap();
        assert_eq!(outbox_count(&store).await, 1);
        assert_eq!(
            store.delivered_since(a.id, NOW).await.unwrap(),
            (1, Some(NOW + 10))
        );
        assert_eq!(
            store.delivered_since(a.id, NOW + 11).await.unwrap(),
            (0, None)
        );
        assert_eq!(store.delivered_since(b.id, NOW).await.unwrap(), (0, None));
        let rule_now = store.rule(p, rule.id).await.unwrap().unwrap();
        assert_eq!(rule_now.channels[0].last_success_at, Some(NOW + 10));
        assert_eq!(
            rule_now.channels[1].last_failure,
            Some(ChannelFailure {
                at: NOW + 10,
                status: Some(500),
                reason: "HTTP 500".into()
            })
        );
        assert_eq!(store.next_due().await.unwrap(), Some(NOW + 1_000));

        // Released and rescheduled: any node claims it once due, with the attempt counted.
        let again = store
            .claim_due("n2", NOW + 1_000, 60_000, 64)
            .await
            .unwrap();
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].attempts, 1);
        store
            .postpone(vec![again[0].outbox_id], NOW + 5_000)
            .await
            .unwrap();
        assert_eq!(store.next_due().await.unwrap(), Some(NOW + 5_000));
        let again = store
            .claim_due("n1", NOW + 5_000, 60_000, 64)
            .await
            .unwrap();
        assert_eq!(again[0].attempts, 1);
        store
            .settle(
                &again[0],
                NOW + 5_000,
                DeliveryResult::Failed {
                    status: None,
                    reason: "timed out".into(),
                    retry_at: None,
                },
            )
            .await
            .unwrap();
        assert_eq!(outbox_count(&store).await, 0);
        assert_eq!(store.next_due().await.unwrap(), None);
        let rule_now = store.rule(p, rule.id).await.unwrap().unwrap();
        assert_eq!(
            rule_now.channels[1].last_failure.as_ref().unwrap().status,
            None
        );

        // Deliveries older than an hour are pruned by the next one.
        assert!(store.queue_test(p, rule.id, a.id, NOW).await.unwrap());
        let t = store
            .claim_due("n1", NOW + HOUR_MS + 20, 60_000, 64)
            .await
            .unwrap();
        assert_eq!(t[0].trigger, Trigger::Test);
        assert!(t[0].error.is_none());
        store
            .settle(&t[0], NOW + HOUR_MS + 20, DeliveryResult::Delivered)
            .await
            .unwrap();
        assert_eq!(
            store.delivered_since(a.id, 0).await.unwrap(),
            (1, Some(NOW + HOUR_MS + 20))
        );

        // Folded rows go; a project being deleted takes its waiting rows with it.
        for _ in 0..3 {
            assert!(store.queue_test(p, rule.id, a.id, NOW).await.unwrap());
        }
        let rows = store.claim_due("n1", NOW, 60_000, 2).await.unwrap();
        assert_eq!(rows.len(), 2);
        store
            .settle_folded(rows.iter().map(|r| r.outbox_id).collect())
            .await
            .unwrap();
        store.settle_folded(Vec::new()).await.unwrap();
        store.postpone(Vec::new(), NOW).await.unwrap();
        assert_eq!(outbox_count(&store).await, 1);
        let c = store.client().await.unwrap();
        c.execute(
            "UPDATE projects SET deleting_since = 1 WHERE id = $1",
            &[&p],
        )
        .await
        .unwrap();
        assert!(store
            .claim_due("n1", NOW, 60_000, 64)
            .await
            .unwrap()
            .is_empty());
        assert_eq!(outbox_count(&store).await, 0);

        let errors = store.alerted_errors(vec![e, e, 999_999]).await.unwrap();
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[&e].event_count, 1);
        done(db).await;
    }

    #[tokio::test]
    async fn nodes_claiming_together_never_share_a_row() {
        let Some((store, db)) = fresh().await else {
            return;
        };
        let p = project(&store, "shop").await;
        let rule = store.create_rule(p, spec("r"), NOW).await.unwrap();
        let ch = store
            .add_channel(p, rule.id, webhook("https://a.example/"), NOW)
            .await
            .unwrap()
            .unwrap();
        for _ in 0..200 {
            assert!(store.queue_test(p, rule.id, ch.id, NOW).await.unwrap());
        }
        let mut tasks = tokio::task::JoinSet::new();
        for n in 0..4 {
            let store = store.clone();
            tasks.spawn(async move {
                let mut mine = Vec::new();
                loop {
                    let got = store
                        .claim_due(&format!("n{n}"), NOW, 60_000, 7)
                        .await
                        .unwrap();
                    if got.is_empty() {
                        return mine;
                    }
                    mine.extend(got.into_iter().map(|a| a.outbox_id));
                }
            });
        }
        let mut all = Vec::new();
        while let Some(ids) = tasks.join_next().await {
            all.extend(ids.unwrap());
        }
        let n = all.len();
        all.sort_unstable();
        all.dedup();
        assert_eq!((n, all.len()), (200, 200));
        done(db).await;
    }

    #[tokio::test]
    async fn frequency_rules_fire_once_per_quiet_period() {
        let Some((store, db)) = fresh().await else {
            return;
        };
        let p = project(&store, "shop").await;
        let e = error(&store, p, 1).await;
        let quiet_err = error(&store, p, 2).await;
        let mut w = store.connect().await.unwrap();
        {
            let tx = w.transaction().await.unwrap();
            assert!(!any_frequency_rule(&tx).await.unwrap());
        }
        let mut s = spec("burst");
        s.on_new = false;
        s.levels = vec!["error".into()];
        s.frequency = Some(Frequency {
            count: 3,
            minutes: 10,
            quiet_minutes: 60,
        });
        let rule = store.create_rule(p, s, NOW).await.unwrap();
        for url in ["https://a.example/", "https://b.example/"] {
            store
                .add_channel(p, rule.id, webhook(url), NOW)
                .await
                .unwrap()
                .unwrap();
        }
        // No level counts as "error"; a warning and an event before the window do not count.
        event(&store, p, e, NOW - 1_000, None, None).await;
        event(&store, p, e, NOW - 2_000, Some("staging"), Some("error")).await;
        event(&store, p, e, NOW - 3_000, None, Some("warning")).await;
        event(&store, p, e, NOW - 11 * 60_000, None, Some("error")).await;
        event(&store, p, quiet_err, NOW - 1_000, None, None).await;

        let check = |ids: Vec<i64>, at: i64| {
            let store = store.clone();
            async move {
                let mut w = store.connect().await.unwrap();
                let tx = w.transaction().await.unwrap();
                let n = check_frequency(&tx, &ids, at).await.unwrap();
                tx.commit().await.unwrap();
                n
            }
        };
        {
            let tx = w.transaction().await.unwrap();
            assert!(any_frequency_rule(&tx).await.unwrap());
            assert_eq!(check_frequency(&tx, &[], NOW).await.unwrap(), 0);
        }
        assert_eq!(check(vec![e, quiet_err], NOW).await, 0);
        event(&store, p, e, NOW - 500, None, Some("error")).await;
        assert_eq!(check(vec![quiet_err, e, e], NOW).await, 2);
        assert_eq!(check(vec![e], NOW + 1).await, 0);
        // Still three events in the window an hour on? No: the window moved past them.
        assert_eq!(check(vec![e], NOW + 60 * 60_000).await, 0);
        event(&store, p, e, NOW + 60 * 60_000 - 3, None, None).await;
        event(&store, p, e, NOW + 60 * 60_000 - 2, None, None).await;
        event(&store, p, e, NOW + 60 * 60_000 - 1, None, None).await;
        assert_eq!(check(vec![e], NOW + 60 * 60_000 - 1).await, 0);
        assert_eq!(check(vec![e], NOW + 60 * 60_000).await, 2);
        let claimed = store
            .claim_due("n1", NOW + 60 * 60_000, 60_000, 64)
            .await
            .unwrap();
        assert_eq!(claimed.len(), 4);
        assert!(claimed.iter().all(|c| c.trigger == Trigger::Frequency));
        assert!(claimed.iter().all(|c| c.error.as_ref().unwrap().id == e));

        // Two nodes crossing the threshold together: the second waits on the first's state
        // row, then sees the rule has fired.
        let later = NOW + 10 * 60 * 60_000;
        for i in 1..=3 {
            event(&store, p, e, later - i, None, None).await;
        }
        let mut w1 = store.connect().await.unwrap();
        let tx1 = w1.transaction().await.unwrap();
        assert_eq!(check_frequency(&tx1, &[e], later).await.unwrap(), 2);
        let second = tokio::spawn(check(vec![e], later + 1));
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        assert!(!second.is_finished());
        tx1.commit().await.unwrap();
        assert_eq!(second.await.unwrap(), 0);

        // A quiet period past the end of BIGINT never ends.
        let mut s = spec("forever");
        s.on_new = false;
        s.frequency = Some(Frequency {
            count: 1,
            minutes: 10,
            quiet_minutes: i64::MAX,
        });
        let forever = store.create_rule(p, s, NOW).await.unwrap();
        store
            .add_channel(p, forever.id, webhook("https://c.example/"), NOW)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(check(vec![quiet_err], NOW).await, 1);
        assert_eq!(check(vec![quiet_err], NOW + 1).await, 0);
        done(db).await;
    }
}
