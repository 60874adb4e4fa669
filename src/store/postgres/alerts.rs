//! Alert rules, channels and the outbox on PostgreSQL ([`AlertStore`]).
#![allow(unused_variables)] // filled in method by method; removed when complete

use async_trait::async_trait;

use super::PgStore;
use crate::store::alerts::*;
use crate::store::StoreResult;

#[async_trait]
impl AlertStore for PgStore {
    async fn create_rule(&self, project_id: i64, spec: RuleSpec, now: i64) -> StoreResult<Rule> {
        todo!("create_rule")
    }
    async fn list_rules(&self, project_id: i64) -> StoreResult<Vec<Rule>> {
        todo!("list_rules")
    }
    async fn rule(&self, project_id: i64, rule_id: i64) -> StoreResult<Option<Rule>> {
        todo!("rule")
    }
    async fn update_rule(
        &self,
        project_id: i64,
        rule_id: i64,
        spec: RuleSpec,
    ) -> StoreResult<Option<Rule>> {
        todo!("update_rule")
    }
    async fn delete_rule(&self, project_id: i64, rule_id: i64) -> StoreResult<bool> {
        todo!("delete_rule")
    }
    async fn add_channel(
        &self,
        project_id: i64,
        rule_id: i64,
        channel: NewChannel,
        now: i64,
    ) -> StoreResult<Option<Channel>> {
        todo!("add_channel")
    }
    async fn delete_channel(
        &self,
        project_id: i64,
        rule_id: i64,
        channel_id: i64,
    ) -> StoreResult<bool> {
        todo!("delete_channel")
    }
    async fn queue_test(
        &self,
        project_id: i64,
        rule_id: i64,
        channel_id: i64,
        now: i64,
    ) -> StoreResult<bool> {
        todo!("queue_test")
    }
    async fn claim_due(
        &self,
        node: &str,
        now: i64,
        lease_ms: i64,
        limit: i64,
    ) -> StoreResult<Vec<ClaimedAlert>> {
        todo!("claim_due")
    }
    async fn settle(
        &self,
        alert: &ClaimedAlert,
        now: i64,
        result: DeliveryResult,
    ) -> StoreResult<()> {
        todo!("settle")
    }
    async fn settle_folded(&self, outbox_ids: Vec<i64>) -> StoreResult<()> {
        todo!("settle_folded")
    }
    async fn delivered_since(
        &self,
        channel_id: i64,
        since: i64,
    ) -> StoreResult<(i64, Option<i64>)> {
        todo!("delivered_since")
    }
    async fn postpone(&self, outbox_ids: Vec<i64>, at: i64) -> StoreResult<()> {
        todo!("postpone")
    }
    async fn next_due(&self) -> StoreResult<Option<i64>> {
        todo!("next_due")
    }
    async fn alerted_errors(
        &self,
        ids: Vec<i64>,
    ) -> StoreResult<std::collections::HashMap<i64, AlertedError>> {
        todo!("alerted_errors")
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
    todo!("queue_for_error")
}

/// Whether any rule has a frequency trigger, so the count write can skip the check otherwise.
pub(crate) async fn any_frequency_rule(tx: &tokio_postgres::Transaction<'_>) -> StoreResult<bool> {
    todo!("any_frequency_rule")
}

/// Queues the frequency alerts that the counts just written in `tx` made due, for the errors
/// `error_ids`. Returns how many rows it queued.
pub(crate) async fn check_frequency(
    tx: &tokio_postgres::Transaction<'_>,
    error_ids: &[i64],
    now: i64,
) -> StoreResult<usize> {
    todo!("check_frequency")
}
