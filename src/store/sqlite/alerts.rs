//! Alert rules, channels and the outbox on SQLite ([`AlertStore`]), and the two functions the
//! writer calls inside its own transactions to queue alerts.

use async_trait::async_trait;
use rusqlite::{params, OptionalExtension, Row, Transaction};
use serde_json::Value;

use super::{by_error, SqliteStore};
use crate::store::alerts::*;
use crate::store::read::ErrorStatus;
use crate::store::StoreResult;

fn list_json(v: &[String]) -> String {
    Value::from(v.to_vec()).to_string()
}

fn json_list(s: &str) -> Vec<String> {
    serde_json::from_str(s).unwrap_or_default()
}

const RULE_COLS: &str = "id, project_id, name, on_new, on_regression, frequency_count, \
    frequency_minutes, quiet_minutes, environments, levels, max_per_hour, created_at";

fn rule_row(r: &Row) -> rusqlite::Result<Rule> {
    let count: Option<i64> = r.get(5)?;
    let minutes: Option<i64> = r.get(6)?;
    let quiet: Option<i64> = r.get(7)?;
    let environments: String = r.get(8)?;
    let levels: String = r.get(9)?;
    Ok(Rule {
        id: r.get(0)?,
        project_id: r.get(1)?,
        spec: RuleSpec {
            name: r.get(2)?,
            on_new: r.get(3)?,
            on_regression: r.get(4)?,
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
            max_per_hour: r.get(10)?,
        },
        created_at: r.get(11)?,
        channels: Vec::new(),
    })
}

const CHANNEL_COLS: &str = "c.id, c.rule_id, c.kind, c.url, c.secret, c.created_at, \
    c.last_success_at, c.last_failure_at, c.last_failure_status, c.last_failure_reason";

fn channel_row(r: &Row, at: usize) -> rusqlite::Result<Channel> {
    let failure_at: Option<i64> = r.get(at + 7)?;
    let reason: Option<String> = r.get(at + 9)?;
    Ok(Channel {
        id: r.get(at)?,
        rule_id: r.get(at + 1)?,
        kind: r.get(at + 2)?,
        url: r.get(at + 3)?,
        secret: r.get(at + 4)?,
        created_at: r.get(at + 5)?,
        last_success_at: r.get(at + 6)?,
        last_failure: failure_at.map(|at_ms| ChannelFailure {
            at: at_ms,
            status: r.get(at + 8).ok().flatten(),
            reason: reason.unwrap_or_default(),
        }),
    })
}

fn load_rule(
    conn: &rusqlite::Connection,
    project_id: i64,
    rule_id: i64,
) -> StoreResult<Option<Rule>> {
    let rule = conn
        .query_row(
            &format!("SELECT {RULE_COLS} FROM alert_rules WHERE id = ?1 AND project_id = ?2"),
            params![rule_id, project_id],
            rule_row,
        )
        .optional()?;
    let Some(mut rule) = rule else {
        return Ok(None);
    };
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {CHANNEL_COLS} FROM alert_channels c WHERE c.rule_id = ?1 ORDER BY c.id"
    ))?;
    rule.channels = stmt
        .query_map([rule.id], |r| channel_row(r, 0))?
        .collect::<Result<_, _>>()?;
    Ok(Some(rule))
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

/// Queues one alert per channel of every rule of `project_id` that `trigger` (a new error or a
/// regression) and the event's environment and level match, in the writer's transaction.
/// Returns how many rows it queued.
pub(crate) fn queue_for_error(
    tx: &Transaction,
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
    let mut stmt = tx.prepare_cached(&format!(
        "INSERT INTO alert_outbox (channel_id, rule_id, error_id, trigger, uuid, created_at,
                                   next_attempt_at)
         SELECT c.id, r.id, ?2, ?3, lower(hex(randomblob(16))), ?4, ?4
         FROM alert_rules r JOIN alert_channels c ON c.rule_id = r.id
         WHERE r.project_id = ?1 AND r.{column} = 1
           AND (r.environments = '[]'
                OR EXISTS (SELECT 1 FROM json_each(r.environments) WHERE value = ?5))
           AND (r.levels = '[]'
                OR EXISTS (SELECT 1 FROM json_each(r.levels) WHERE value = ?6))"
    ))?;
    Ok(stmt.execute(params![
        project_id,
        error_id,
        trigger.as_str(),
        now,
        environment,
        level
    ])?)
}

/// Whether any project has a frequency rule; when none has (the common case), a count write
/// checks nothing per error.
pub(crate) fn any_frequency_rule(tx: &Transaction) -> StoreResult<bool> {
    Ok(tx
        .prepare_cached("SELECT 1 FROM alert_rules WHERE frequency_count IS NOT NULL LIMIT 1")?
        .query_row([], |_| Ok(()))
        .optional()?
        .is_some())
}

/// Checks the frequency rules of the errors whose counts are being written in `tx`, and queues
/// an alert for each rule whose threshold an error reached outside the rule's quiet period.
/// The window ends at `now` and is measured on the events' own times. Each check counts at most
/// `count` events through `event_by_error(error_id, occurred_at)`, so a busy error costs no more
/// than a quiet one. Returns how many rows it queued.
pub(crate) fn check_frequency(tx: &Transaction, error_ids: &[i64], now: i64) -> StoreResult<usize> {
    let mut rules = tx.prepare_cached(
        "SELECT r.id, r.frequency_count, r.frequency_minutes, COALESCE(r.quiet_minutes, 0),
                r.environments, r.levels,
                (SELECT last_fired_at FROM alert_rule_state s
                 WHERE s.rule_id = r.id AND s.error_id = e.id)
         FROM errors e JOIN alert_rules r ON r.project_id = e.project_id
         WHERE e.id = ?1 AND r.frequency_count IS NOT NULL AND r.frequency_minutes IS NOT NULL",
    )?;
    // The table's part and the tail's (see `by_error`) are counted apart, each up to the
    // threshold: their sum reaches the threshold exactly when the true count does.
    let filters = "AND (?4 = '[]' OR EXISTS (SELECT 1 FROM json_each(?4) WHERE value = ev.environment))
               AND (?5 = '[]'
                    OR EXISTS (SELECT 1 FROM json_each(?5) WHERE value = COALESCE(ev.level, 'error')))";
    let mut count = tx.prepare_cached(&format!(
        "SELECT (SELECT COUNT(*) FROM (
                     SELECT 1 FROM event_by_error x JOIN events ev ON ev.id = x.id
                     WHERE x.error_id = ?1 AND x.occurred_at > ?2 AND x.occurred_at <= ?3
                       {filters}
                     LIMIT ?6))
              + (SELECT COUNT(*) FROM (
                     SELECT 1 FROM events ev
                     WHERE {tail} AND ev.error_id = ?1 AND ev.occurred_at > ?2
                       AND ev.occurred_at <= ?3 {filters}
                     LIMIT ?6))",
        tail = by_error::tail("ev.id")
    ))?;
    let mut fired = tx.prepare_cached(
        "INSERT INTO alert_rule_state (rule_id, error_id, last_fired_at) VALUES (?1, ?2, ?3)
         ON CONFLICT (rule_id, error_id) DO UPDATE SET last_fired_at = excluded.last_fired_at",
    )?;
    let mut queue = tx.prepare_cached(
        "INSERT INTO alert_outbox (channel_id, rule_id, error_id, trigger, uuid, created_at,
                                   next_attempt_at)
         SELECT c.id, ?1, ?2, 'frequency', lower(hex(randomblob(16))), ?3, ?3
         FROM alert_channels c WHERE c.rule_id = ?1",
    )?;
    let mut queued = 0;
    for &error_id in error_ids {
        type Candidate = (i64, i64, i64, i64, String, String, Option<i64>);
        let candidates: Vec<Candidate> = rules
            .query_map([error_id], |r| Candidate::try_from(r))?
            .collect::<Result<_, _>>()?;
        for (rule_id, threshold, minutes, quiet, envs, levels, last) in candidates {
            if last.is_some_and(|at| now < at.saturating_add(quiet.saturating_mul(60_000))) {
                continue;
            }
            let from = now.saturating_sub(minutes.saturating_mul(60_000));
            let n: i64 = count
                .query_row(params![error_id, from, now, envs, levels, threshold], |r| {
                    r.get(0)
                })?;
            if n < threshold {
                continue;
            }
            fired.execute(params![rule_id, error_id, now])?;
            queued += queue.execute(params![rule_id, error_id, now])?;
        }
    }
    Ok(queued)
}

fn error_for_alert(
    conn: &rusqlite::Connection,
    error_id: i64,
) -> StoreResult<Option<AlertedError>> {
    let error = conn
        .query_row(
            "SELECT id, fingerprint, short_seq, name, description, actor, status, event_count,
                    approximated_user_count, first_seen_at, last_seen_at
             FROM errors WHERE id = ?1",
            [error_id],
            |r| {
                let status: i64 = r.get(6)?;
                Ok(AlertedError {
                    id: r.get(0)?,
                    fingerprint: r.get(1)?,
                    short_seq: r.get(2)?,
                    name: r.get(3)?,
                    description: r.get(4)?,
                    actor: r.get(5)?,
                    status: ErrorStatus::from_code(status).as_str(),
                    event_count: r.get(7)?,
                    user_count: r.get(8)?,
                    first_seen_at: r.get(9)?,
                    last_seen_at: r.get(10)?,
                    newest: None,
                })
            },
        )
        .optional()?;
    let Some(mut error) = error else {
        return Ok(None);
    };
    error.newest = conn
        .query_row(
            &by_error::events_of_error(
                "event_id, name, description, actor, environment, release, level, occurred_at",
                "?1",
                "",
                "DESC",
                "1",
            ),
            [error_id],
            |r| {
                Ok(AlertedEvent {
                    event_id: r.get(0)?,
                    name: r.get(1)?,
                    description: r.get(2)?,
                    actor: r.get(3)?,
                    environment: r.get(4)?,
                    release: r.get(5)?,
                    level: r.get(6)?,
                    occurred_at: r.get(7)?,
                })
            },
        )
        .optional()?;
    Ok(Some(error))
}

#[async_trait]
impl AlertStore for SqliteStore {
    async fn create_rule(&self, project_id: i64, spec: RuleSpec, now: i64) -> StoreResult<Rule> {
        self.run(move |c| {
            let (count, minutes, quiet, envs, levels) = spec_params(&spec);
            c.execute(
                "INSERT INTO alert_rules (project_id, name, on_new, on_regression,
                     frequency_count, frequency_minutes, quiet_minutes, environments, levels,
                     max_per_hour, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                params![
                    project_id,
                    spec.name,
                    spec.on_new,
                    spec.on_regression,
                    count,
                    minutes,
                    quiet,
                    envs,
                    levels,
                    spec.max_per_hour,
                    now
                ],
            )?;
            let id = c.last_insert_rowid();
            Ok(Rule {
                id,
                project_id,
                spec,
                created_at: now,
                channels: Vec::new(),
            })
        })
        .await
    }

    async fn list_rules(&self, project_id: i64) -> StoreResult<Vec<Rule>> {
        self.run(move |c| {
            let ids: Vec<i64> = c
                .prepare("SELECT id FROM alert_rules WHERE project_id = ?1 ORDER BY id")?
                .query_map([project_id], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            let mut rules = Vec::with_capacity(ids.len());
            for id in ids {
                if let Some(rule) = load_rule(c, project_id, id)? {
                    rules.push(rule);
                }
            }
            Ok(rules)
        })
        .await
    }

    async fn rule(&self, project_id: i64, rule_id: i64) -> StoreResult<Option<Rule>> {
        self.run(move |c| load_rule(c, project_id, rule_id)).await
    }

    async fn update_rule(
        &self,
        project_id: i64,
        rule_id: i64,
        spec: RuleSpec,
    ) -> StoreResult<Option<Rule>> {
        self.run(move |c| {
            let (count, minutes, quiet, envs, levels) = spec_params(&spec);
            let n = c.execute(
                "UPDATE alert_rules SET name = ?3, on_new = ?4, on_regression = ?5,
                     frequency_count = ?6, frequency_minutes = ?7, quiet_minutes = ?8,
                     environments = ?9, levels = ?10, max_per_hour = ?11
                 WHERE id = ?1 AND project_id = ?2",
                params![
                    rule_id,
                    project_id,
                    spec.name,
                    spec.on_new,
                    spec.on_regression,
                    count,
                    minutes,
                    quiet,
                    envs,
                    levels,
                    spec.max_per_hour
                ],
            )?;
            if n == 0 {
                return Ok(None);
            }
            load_rule(c, project_id, rule_id)
        })
        .await
    }

    async fn delete_rule(&self, project_id: i64, rule_id: i64) -> StoreResult<bool> {
        self.run(move |c| {
            // Cascades to the channels, their waiting alerts and the frequency state.
            Ok(c.execute(
                "DELETE FROM alert_rules WHERE id = ?1 AND project_id = ?2",
                params![rule_id, project_id],
            )? > 0)
        })
        .await
    }

    async fn add_channel(
        &self,
        project_id: i64,
        rule_id: i64,
        channel: NewChannel,
        now: i64,
    ) -> StoreResult<Option<Channel>> {
        self.run(move |c| {
            let tx = c.transaction()?;
            let owned = tx
                .query_row(
                    "SELECT 1 FROM alert_rules WHERE id = ?1 AND project_id = ?2",
                    params![rule_id, project_id],
                    |_| Ok(()),
                )
                .optional()?
                .is_some();
            if !owned {
                return Ok(None);
            }
            tx.execute(
                "INSERT INTO alert_channels (rule_id, kind, url, secret, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![rule_id, channel.kind, channel.url, channel.secret, now],
            )?;
            let id = tx.last_insert_rowid();
            tx.commit()?;
            Ok(Some(Channel {
                id,
                rule_id,
                kind: channel.kind,
                url: channel.url,
                secret: channel.secret,
                created_at: now,
                last_success_at: None,
                last_failure: None,
            }))
        })
        .await
    }

    async fn delete_channel(
        &self,
        project_id: i64,
        rule_id: i64,
        channel_id: i64,
    ) -> StoreResult<bool> {
        self.run(move |c| {
            Ok(c.execute(
                "DELETE FROM alert_channels WHERE id = ?1 AND rule_id = ?2
                   AND rule_id IN (SELECT id FROM alert_rules WHERE project_id = ?3)",
                params![channel_id, rule_id, project_id],
            )? > 0)
        })
        .await
    }

    async fn queue_test(
        &self,
        project_id: i64,
        rule_id: i64,
        channel_id: i64,
        now: i64,
    ) -> StoreResult<bool> {
        self.run(move |c| {
            Ok(c.execute(
                "INSERT INTO alert_outbox (channel_id, rule_id, error_id, trigger, uuid,
                                           created_at, next_attempt_at)
                 SELECT c.id, c.rule_id, NULL, 'test', lower(hex(randomblob(16))), ?4, ?4
                 FROM alert_channels c JOIN alert_rules r ON r.id = c.rule_id
                 WHERE c.id = ?1 AND c.rule_id = ?2 AND r.project_id = ?3",
                params![channel_id, rule_id, project_id, now],
            )? > 0)
        })
        .await
    }

    async fn claim_due(
        &self,
        node: &str,
        now: i64,
        lease_ms: i64,
        limit: i64,
    ) -> StoreResult<Vec<ClaimedAlert>> {
        let node = node.to_owned();
        self.run(move |c| {
            let tx = c.transaction()?;
            // One statement picks and leases the rows, under the write lock: no other node can
            // claim them until the lease ends.
            type Claimed = (i64, i64, String, String, i64, i64, Option<i64>, i64);
            let claimed: Vec<Claimed> = tx
                .prepare_cached(
                    "UPDATE alert_outbox SET claimed_until = ?2 + ?3, claimed_by = ?4
                     WHERE id IN (SELECT id FROM alert_outbox
                                  WHERE next_attempt_at <= ?2 AND claimed_until <= ?2
                                  ORDER BY next_attempt_at, id LIMIT ?1)
                     RETURNING id, channel_id, uuid, trigger, attempts, created_at, error_id,
                               rule_id",
                )?
                .query_map(params![limit, now, lease_ms, node], |r| {
                    Claimed::try_from(r)
                })?
                .collect::<Result<_, _>>()?;
            let mut out = Vec::with_capacity(claimed.len());
            for (outbox_id, channel_id, uuid, trigger, attempts, created_at, error_id, rule_id) in
                claimed
            {
                let found = tx
                    .query_row(
                        &format!(
                            "SELECT {CHANNEL_COLS}, r.name, r.max_per_hour, p.id,
                                    p.path_with_namespace
                             FROM alert_channels c JOIN alert_rules r ON r.id = c.rule_id
                             JOIN projects p ON p.id = r.project_id
                             WHERE c.id = ?1 AND p.deleting_since IS NULL"
                        ),
                        [channel_id],
                        |r| {
                            Ok((
                                channel_row(r, 0)?,
                                r.get::<_, String>(10)?,
                                r.get::<_, i64>(11)?,
                                r.get::<_, i64>(12)?,
                                r.get::<_, String>(13)?,
                            ))
                        },
                    )
                    .optional()?;
                let Some((channel, rule_name, max_per_hour, project_id, project_path)) = found
                else {
                    // Its project is being deleted; nobody is left to tell.
                    tx.execute("DELETE FROM alert_outbox WHERE id = ?1", [outbox_id])?;
                    continue;
                };
                let error = match error_id {
                    Some(id) => error_for_alert(&tx, id)?,
                    None => None,
                };
                out.push(ClaimedAlert {
                    outbox_id,
                    uuid,
                    trigger: Trigger::parse(&trigger).unwrap_or(Trigger::Test),
                    attempts,
                    created_at,
                    channel,
                    rule_id,
                    rule_name,
                    max_per_hour,
                    project_id,
                    project_path,
                    error,
                });
            }
            tx.commit()?;
            Ok(out)
        })
        .await
    }

    async fn settle(
        &self,
        alert: &ClaimedAlert,
        now: i64,
        result: DeliveryResult,
    ) -> StoreResult<()> {
        let (outbox_id, channel_id) = (alert.outbox_id, alert.channel.id);
        self.run(move |c| {
            let tx = c.transaction()?;
            match result {
                DeliveryResult::Delivered => {
                    tx.execute("DELETE FROM alert_outbox WHERE id = ?1", [outbox_id])?;
                    tx.execute(
                        "UPDATE alert_channels SET last_success_at = ?2 WHERE id = ?1",
                        params![channel_id, now],
                    )?;
                    tx.execute(
                        "INSERT INTO alert_deliveries (channel_id, delivered_at) VALUES (?1, ?2)",
                        params![channel_id, now],
                    )?;
                    // The hourly cap looks back one hour; older rows only take room.
                    tx.execute(
                        "DELETE FROM alert_deliveries WHERE channel_id = ?1 AND delivered_at < ?2",
                        params![channel_id, now - 3_600_000],
                    )?;
                }
                DeliveryResult::Failed {
                    status,
                    reason,
                    retry_at,
                } => {
                    match retry_at {
                        Some(at) => tx.execute(
                            "UPDATE alert_outbox SET attempts = attempts + 1, next_attempt_at = ?2,
                                 claimed_until = 0, claimed_by = NULL
                             WHERE id = ?1",
                            params![outbox_id, at],
                        )?,
                        None => {
                            tx.execute("DELETE FROM alert_outbox WHERE id = ?1", [outbox_id])?
                        }
                    };
                    tx.execute(
                        "UPDATE alert_channels SET last_failure_at = ?2, last_failure_status = ?3,
                             last_failure_reason = ?4
                         WHERE id = ?1",
                        params![channel_id, now, status, reason],
                    )?;
                }
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn settle_folded(&self, outbox_ids: Vec<i64>) -> StoreResult<()> {
        self.run(move |c| {
            let tx = c.transaction()?;
            {
                let mut del = tx.prepare_cached("DELETE FROM alert_outbox WHERE id = ?1")?;
                for id in outbox_ids {
                    del.execute([id])?;
                }
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn claim_backlog(
        &self,
        channel_id: i64,
        tag: &str,
        now: i64,
        lease_ms: i64,
    ) -> StoreResult<i64> {
        let tag = tag.to_owned();
        self.run(move |c| {
            let n = c.execute(
                "UPDATE alert_outbox SET claimed_until = ?3 + ?4, claimed_by = ?2
                 WHERE channel_id = ?1 AND trigger <> 'test' AND claimed_until <= ?3",
                params![channel_id, tag, now, lease_ms],
            )?;
            Ok(n as i64)
        })
        .await
    }

    async fn settle_backlog(&self, channel_id: i64, tag: &str, delivered: bool) -> StoreResult<()> {
        let tag = tag.to_owned();
        self.run(move |c| {
            let sql = if delivered {
                "DELETE FROM alert_outbox WHERE channel_id = ?1 AND claimed_by = ?2"
            } else {
                "UPDATE alert_outbox SET claimed_until = 0, claimed_by = NULL
                 WHERE channel_id = ?1 AND claimed_by = ?2"
            };
            c.execute(sql, params![channel_id, tag])?;
            Ok(())
        })
        .await
    }

    async fn delivered_since(
        &self,
        channel_id: i64,
        since: i64,
    ) -> StoreResult<(i64, Option<i64>)> {
        self.run(move |c| {
            Ok(c.query_row(
                "SELECT COUNT(*), MAX(delivered_at) FROM alert_deliveries
                 WHERE channel_id = ?1 AND delivered_at >= ?2",
                params![channel_id, since],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?)
        })
        .await
    }

    async fn postpone(&self, outbox_ids: Vec<i64>, at: i64) -> StoreResult<()> {
        self.run(move |c| {
            let tx = c.transaction()?;
            {
                let mut stmt = tx.prepare_cached(
                    "UPDATE alert_outbox SET next_attempt_at = ?2, claimed_until = 0,
                         claimed_by = NULL
                     WHERE id = ?1",
                )?;
                for id in outbox_ids {
                    stmt.execute(params![id, at])?;
                }
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn alerted_errors(
        &self,
        ids: Vec<i64>,
    ) -> StoreResult<std::collections::HashMap<i64, AlertedError>> {
        self.run(move |c| {
            let mut out = std::collections::HashMap::with_capacity(ids.len());
            for id in ids {
                if let Some(e) = error_for_alert(c, id)? {
                    out.insert(id, e);
                }
            }
            Ok(out)
        })
        .await
    }

    async fn next_due(&self) -> StoreResult<Option<i64>> {
        self.run(|c| {
            Ok(c.query_row(
                "SELECT MIN(MAX(next_attempt_at, claimed_until)) FROM alert_outbox",
                [],
                |r| r.get(0),
            )?)
        })
        .await
    }
}
