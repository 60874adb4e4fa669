//! Alert rules, their channels and the alert outbox: the records and [`AlertStore`].
//!
//! The outbox is the one place an alert waits before it is delivered. A row is inserted in the
//! transaction that caused it (the writer's batch that created or reopened an error, or the
//! count write that crossed a frequency threshold), so an alert exists exactly when its cause
//! was committed. Delivery ([`crate::alerts`]) claims due rows with a lease
//! (`claimed_until`, `claimed_by`) in one statement, so several gateway nodes sharing a database
//! never hold the same row at once, and a node that dies mid-delivery leaves rows that another
//! (or the restarted) node claims once the lease ends. Nothing waits in process memory.

use super::StoreResult;
use async_trait::async_trait;

/// What caused an alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    NewError,
    Regression,
    Frequency,
    /// The "send a test notification" call.
    Test,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::NewError => "new_error",
            Trigger::Regression => "regression",
            Trigger::Frequency => "frequency",
            Trigger::Test => "test",
        }
    }

    pub fn parse(s: &str) -> Option<Trigger> {
        Some(match s {
            "new_error" => Trigger::NewError,
            "regression" => Trigger::Regression,
            "frequency" => Trigger::Frequency,
            "test" => Trigger::Test,
            _ => return None,
        })
    }
}

/// "At least `count` events of one error within `minutes`", firing again for the same error
/// only once `quiet_minutes` have passed since it last fired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frequency {
    pub count: i64,
    pub minutes: i64,
    pub quiet_minutes: i64,
}

/// A rule's editable fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleSpec {
    pub name: String,
    pub on_new: bool,
    pub on_regression: bool,
    pub frequency: Option<Frequency>,
    /// Empty: any environment.
    pub environments: Vec<String>,
    /// Empty: any level.
    pub levels: Vec<String>,
    /// Most messages one channel of the rule sends per hour; past it, what is waiting is sent
    /// as one summary message.
    pub max_per_hour: i64,
}

#[derive(Debug, Clone)]
pub struct Rule {
    pub id: i64,
    pub project_id: i64,
    pub spec: RuleSpec,
    pub created_at: i64,
    pub channels: Vec<Channel>,
}

/// The last failed delivery of a channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelFailure {
    pub at: i64,
    /// The receiver's HTTP status, when it answered at all.
    pub status: Option<i64>,
    pub reason: String,
}

#[derive(Debug, Clone)]
pub struct Channel {
    pub id: i64,
    pub rule_id: i64,
    pub kind: String,
    /// The full target. Never shown by the API after creation (see `http::alerts`).
    pub url: String,
    pub secret: Option<String>,
    pub created_at: i64,
    pub last_success_at: Option<i64>,
    pub last_failure: Option<ChannelFailure>,
}

#[derive(Debug, Clone)]
pub struct NewChannel {
    pub kind: String,
    pub url: String,
    pub secret: Option<String>,
}

/// The error an alert is about, as delivery reads it.
#[derive(Debug, Clone)]
pub struct AlertedError {
    pub id: i64,
    pub fingerprint: i64,
    pub short_seq: Option<i64>,
    pub name: String,
    pub description: String,
    pub actor: String,
    pub status: &'static str,
    pub event_count: i64,
    pub user_count: i64,
    pub first_seen_at: i64,
    pub last_seen_at: i64,
    pub newest: Option<AlertedEvent>,
}

/// The newest event of an alerted error.
#[derive(Debug, Clone)]
pub struct AlertedEvent {
    pub event_id: String,
    pub name: String,
    pub description: String,
    pub actor: String,
    pub environment: Option<String>,
    pub release: Option<String>,
    pub level: Option<String>,
    pub occurred_at: i64,
}

/// An outbox row claimed for delivery, with everything its message needs.
#[derive(Debug, Clone)]
pub struct ClaimedAlert {
    pub outbox_id: i64,
    pub uuid: String,
    pub trigger: Trigger,
    pub attempts: i64,
    pub created_at: i64,
    pub channel: Channel,
    pub rule_id: i64,
    pub rule_name: String,
    pub max_per_hour: i64,
    pub project_id: i64,
    pub project_path: String,
    pub error: Option<AlertedError>,
}

/// How a claimed delivery ended.
#[derive(Debug, Clone)]
pub enum DeliveryResult {
    Delivered,
    /// Try again at `retry_at`, or give up when `None`.
    Failed {
        status: Option<i64>,
        reason: String,
        retry_at: Option<i64>,
    },
}

/// The alert side of the store: rule management for the API, and claiming and settling outbox
/// rows for delivery.
#[async_trait]
pub trait AlertStore: Send + Sync {
    async fn create_rule(&self, project_id: i64, spec: RuleSpec, now: i64) -> StoreResult<Rule>;
    async fn list_rules(&self, project_id: i64) -> StoreResult<Vec<Rule>>;
    async fn rule(&self, project_id: i64, rule_id: i64) -> StoreResult<Option<Rule>>;
    async fn update_rule(
        &self,
        project_id: i64,
        rule_id: i64,
        spec: RuleSpec,
    ) -> StoreResult<Option<Rule>>;
    async fn delete_rule(&self, project_id: i64, rule_id: i64) -> StoreResult<bool>;
    /// `None` when the rule is not the project's.
    async fn add_channel(
        &self,
        project_id: i64,
        rule_id: i64,
        channel: NewChannel,
        now: i64,
    ) -> StoreResult<Option<Channel>>;
    async fn delete_channel(
        &self,
        project_id: i64,
        rule_id: i64,
        channel_id: i64,
    ) -> StoreResult<bool>;
    /// Queues a test notification for one channel; false when the channel is not the rule's.
    async fn queue_test(
        &self,
        project_id: i64,
        rule_id: i64,
        channel_id: i64,
        now: i64,
    ) -> StoreResult<bool>;
    /// Claims up to `limit` due rows for `lease_ms`, for `node`.
    async fn claim_due(
        &self,
        node: &str,
        now: i64,
        lease_ms: i64,
        limit: i64,
    ) -> StoreResult<Vec<ClaimedAlert>>;
    /// Settles a claimed row: removes it (delivered or given up) or schedules its next try,
    /// and records the channel's last success or failure.
    async fn settle(
        &self,
        alert: &ClaimedAlert,
        now: i64,
        result: DeliveryResult,
    ) -> StoreResult<()>;
    /// Settles rows that were folded into a summary another row carried.
    async fn settle_folded(&self, outbox_ids: Vec<i64>) -> StoreResult<()>;
    /// Claims for one summary, under `tag` and for `lease_ms`, every other alert `channel_id`
    /// has waiting that nobody holds (test notifications aside), due or not; returns how
    /// many. A flood is thus summarised at once, whatever its size, with nothing read into
    /// memory. [`AlertStore::settle_backlog`] removes them when the summary is delivered.
    async fn claim_backlog(
        &self,
        channel_id: i64,
        tag: &str,
        now: i64,
        lease_ms: i64,
    ) -> StoreResult<i64>;
    /// Removes the rows claimed under `tag` (their summary was delivered), or releases them
    /// for the next summary.
    async fn settle_backlog(&self, channel_id: i64, tag: &str, delivered: bool) -> StoreResult<()>;
    /// How many messages `channel_id` delivered since `since`, and when the last one went.
    async fn delivered_since(&self, channel_id: i64, since: i64)
        -> StoreResult<(i64, Option<i64>)>;
    /// Releases claimed rows and has them tried again at `at`, with no attempt counted.
    async fn postpone(&self, outbox_ids: Vec<i64>, at: i64) -> StoreResult<()>;
    /// When the earliest waiting row falls due, if any waits.
    async fn next_due(&self) -> StoreResult<Option<i64>>;
    /// The errors `ids` as an alert shows them, read now.
    async fn alerted_errors(
        &self,
        ids: Vec<i64>,
    ) -> StoreResult<std::collections::HashMap<i64, AlertedError>>;
}
