//! Alert delivery: the background task that claims due rows of the alert outbox
//! ([`crate::store::alerts`]), sends each to its channel, and settles it: removed when
//! delivered, retried with exponential backoff when not, given up after a bounded time. The
//! channel's last failure is recorded for the API.
//!
//! Ingestion never waits on any of this: the writer only inserts outbox rows in its batch and
//! wakes the task. Nothing is queued in memory: a round claims at most [`CLAIM_LIMIT`] rows,
//! each request has a timeout, and a dead receiver's alerts wait in the database.
//!
//! Each channel sends at most its rule's `max_per_hour` single messages an hour; past that, the
//! alerts the channel has waiting go out as one summary message, at most one a
//! `summary_interval`. The summary takes every waiting alert of the channel, not only the
//! round's: the rest are claimed in SQL under the summary's tag and only counted, so a flood
//! of thousands collapses into one message at once, in constant memory.

pub mod email;
pub mod format;
pub mod target;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Notify, Semaphore};
use tokio::task::JoinSet;
use url::Url;

use crate::clock::WallClock;
use crate::store::alerts::{ClaimedAlert, DeliveryResult, Trigger};
use crate::store::{Store, StoreResult};
use crate::writer::WriterHandle;
use format::Summary;

/// Most outbox rows one round claims.
pub const CLAIM_LIMIT: i64 = 64;
/// Most requests in flight at once.
const CONCURRENCY: usize = 16;
/// The reason recorded for a failure is cut to this many characters.
const REASON_MAX: usize = 200;

/// How delivery behaves; from `[alerts]` in the configuration.
#[derive(Debug, Clone)]
pub struct AlertSettings {
    /// Which loopback, private and link-local targets are allowed.
    pub allowed: Arc<target::Allowed>,
    /// Wait before the second try; doubled for each try after it.
    pub retry_base: Duration,
    /// Longest wait between two tries.
    pub retry_max: Duration,
    /// An alert not delivered this long after it was queued is given up.
    pub give_up_after: Duration,
    /// Longest one request may take, connection included.
    pub request_timeout: Duration,
    /// How often the outbox is looked at when nothing wakes the task (rows another node
    /// queued, retries falling due).
    pub poll_interval: Duration,
    /// Shortest time between two summary messages of one channel.
    pub summary_interval: Duration,
    /// Whether a mail server is configured, so email channels may be created.
    pub email_enabled: bool,
}

impl AlertSettings {
    /// How long a claim holds a row: long enough for the whole round it was claimed in.
    pub fn lease(&self) -> Duration {
        let rounds = (CLAIM_LIMIT as u32).div_ceil(CONCURRENCY as u32) + 1;
        self.request_timeout * rounds + Duration::from_secs(1)
    }

    /// The wait before try number `attempts + 1`.
    pub fn backoff(&self, attempts: i64) -> Duration {
        let factor = 1u32 << attempts.clamp(0, 20);
        self.retry_base.saturating_mul(factor).min(self.retry_max)
    }
}

/// The outgoing HTTP client: the guarded resolver, no proxy (a proxy would resolve names
/// itself, past the guard), a few redirects and only to allowed targets, and a timeout.
pub fn http_client(settings: &AlertSettings) -> reqwest::Result<reqwest::Client> {
    let allowed = settings.allowed.clone();
    let policy = reqwest::redirect::Policy::custom(move |attempt| {
        if attempt.previous().len() >= 3 {
            return attempt.error("too many redirects");
        }
        let url = attempt.url();
        if url.scheme() != "http" && url.scheme() != "https" {
            return attempt.error(target::TargetError::Scheme);
        }
        if target::literal_ip(url).is_some_and(|ip| !allowed.permits(ip)) {
            return attempt.error(target::TargetError::Private);
        }
        attempt.follow()
    });
    reqwest::Client::builder()
        .dns_resolver(Arc::new(target::GuardedResolver {
            allowed: settings.allowed.clone(),
        }))
        .no_proxy()
        .redirect(policy)
        .timeout(settings.request_timeout)
        .user_agent(concat!("faultline/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// Everything the delivery task needs.
pub struct Delivery {
    pub store: Arc<dyn Store>,
    pub client: reqwest::Client,
    pub settings: AlertSettings,
    pub clock: Arc<WallClock>,
    /// Woken by the writer after a commit that queued alerts, and by the test call.
    pub wake: Arc<Notify>,
    /// Base of the links in messages.
    pub external_url: Url,
    /// Asked to write waiting counts first, so a message counts the events that caused it.
    pub writer: WriterHandle,
    /// This process's name in `claimed_by`.
    pub node: String,
    /// The mail server's transport, when one is configured, and the sender address.
    pub mailer: Option<email::Mailer>,
    pub mail_from: String,
}

/// Starts the delivery task; it stops when `shutdown` turns true. Rows it holds then are
/// claimed again when their lease ends.
pub fn spawn(
    delivery: Delivery,
    mut shutdown: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    let delivery = Arc::new(delivery);
    tokio::spawn(async move {
        loop {
            if *shutdown.borrow() {
                break;
            }
            let wait = match delivery.round().await {
                Ok(n) if n > 0 => continue,
                Ok(_) => delivery.idle_wait().await,
                Err(e) => {
                    tracing::warn!(error = %e, "alert delivery round failed");
                    delivery.settings.poll_interval
                }
            };
            tokio::select! {
                _ = delivery.wake.notified() => {}
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.changed() => {}
            }
        }
        tracing::debug!("alert delivery stopped");
    })
}

/// What one alert goes out as.
enum Send {
    One(ClaimedAlert),
    Summary(ClaimedAlert, Summary, Folded),
}

/// The alerts a summary stands for besides the one that carries it.
#[derive(Default)]
struct Folded {
    /// Claimed in this round.
    ids: Vec<i64>,
    /// The tag the rest of the channel's waiting alerts were claimed under, if there were any.
    backlog: Option<String>,
}

impl Delivery {
    async fn idle_wait(&self) -> Duration {
        let poll = self.settings.poll_interval;
        match self.store.next_due().await {
            Ok(Some(at)) => {
                let ms = at.saturating_sub(self.clock.now_millis()).max(0);
                Duration::from_millis(ms as u64).min(poll)
            }
            _ => poll,
        }
    }

    fn lease_ms(&self) -> i64 {
        i64::try_from(self.settings.lease().as_millis()).unwrap_or(i64::MAX)
    }

    /// Claims and sends one round of due alerts; returns how many rows it claimed.
    async fn round(self: &Arc<Self>) -> StoreResult<usize> {
        let now = self.clock.now_millis();
        let claimed = self
            .store
            .claim_due(&self.node, now, self.lease_ms(), CLAIM_LIMIT)
            .await?;
        let n = claimed.len();
        if n == 0 {
            return Ok(0);
        }
        let claimed = self.with_settled_counts(claimed).await?;
        let mut by_channel: BTreeMap<i64, Vec<ClaimedAlert>> = BTreeMap::new();
        for a in claimed {
            by_channel.entry(a.channel.id).or_default().push(a);
        }
        let mut sends = Vec::new();
        for (channel_id, alerts) in by_channel {
            self.plan_channel(channel_id, alerts, now, &mut sends)
                .await?;
        }
        let limit = Arc::new(Semaphore::new(CONCURRENCY));
        let mut tasks = JoinSet::new();
        for send in sends {
            let this = self.clone();
            let limit = limit.clone();
            tasks.spawn(async move {
                let _permit = limit.acquire().await;
                this.deliver(send).await;
            });
        }
        while tasks.join_next().await.is_some() {}
        Ok(n)
    }

    /// The error counts of a new error's events are written shortly after its batch. Once a
    /// claim has seen the batch's outbox rows, the writer is asked to write what it holds (the
    /// request queues behind that batch, whose counts it therefore covers), and the errors are
    /// read again, so a message's count includes the event that caused it. If the writer
    /// cannot be asked, the message goes out with what is stored.
    async fn with_settled_counts(
        &self,
        mut claimed: Vec<ClaimedAlert>,
    ) -> StoreResult<Vec<ClaimedAlert>> {
        let ids: Vec<i64> = claimed
            .iter()
            .filter_map(|a| a.error.as_ref().map(|e| e.id))
            .collect();
        if ids.is_empty() {
            return Ok(claimed);
        }
        if let Err(e) = self.writer.settle_counts_now().await {
            tracing::debug!(error = %e, "counts not settled before alert delivery");
            return Ok(claimed);
        }
        let mut fresh = self.store.alerted_errors(ids).await?;
        for a in &mut claimed {
            if let Some(id) = a.error.as_ref().map(|e| e.id) {
                if let Some(e) = fresh.remove(&id).or_else(|| a.error.take()) {
                    a.error = Some(e);
                }
            }
        }
        Ok(claimed)
    }

    /// Splits one channel's claimed alerts into single messages and, past the rule's hourly
    /// rate, one summary of everything the channel has waiting (or, within
    /// `summary_interval` of the last message, a later try).
    async fn plan_channel(
        &self,
        channel_id: i64,
        alerts: Vec<ClaimedAlert>,
        now: i64,
        sends: &mut Vec<Send>,
    ) -> StoreResult<()> {
        let (tests, alerts): (Vec<_>, Vec<_>) =
            alerts.into_iter().partition(|a| a.trigger == Trigger::Test);
        sends.extend(tests.into_iter().map(Send::One));
        let Some(first) = alerts.first() else {
            return Ok(());
        };
        let max = first.max_per_hour.max(1);
        let (sent, last) = self
            .store
            .delivered_since(channel_id, now - 3_600_000)
            .await?;
        let room = usize::try_from(max.saturating_sub(sent)).unwrap_or(0);
        let mut alerts = alerts.into_iter();
        sends.extend(alerts.by_ref().take(room).map(Send::One));
        let rest: Vec<ClaimedAlert> = alerts.collect();
        let Some(carrier) = rest.first().cloned() else {
            return Ok(());
        };
        let interval =
            i64::try_from(self.settings.summary_interval.as_millis()).unwrap_or(i64::MAX);
        if let Some(last) = last.filter(|&l| now - l < interval) {
            let ids = rest.iter().map(|a| a.outbox_id).collect();
            return self.store.postpone(ids, last + interval).await;
        }
        // The summary stands for the channel's whole backlog, claimed here and only counted.
        let tag = format!("{}/summary/{}", self.node, carrier.outbox_id);
        let backlog = self
            .store
            .claim_backlog(channel_id, &tag, now, self.lease_ms())
            .await?;
        let summary = Summary {
            count: rest.len() + usize::try_from(backlog).unwrap_or(0),
            sample: rest
                .iter()
                .filter_map(|a| a.error.as_ref().map(|e| (a, e)))
                .take(format::SUMMARY_SAMPLE)
                .map(|(a, e)| {
                    let title = if e.description.is_empty() {
                        e.name.clone()
                    } else {
                        format!("{}: {}", e.name, e.description)
                    };
                    (
                        title,
                        format::error_url(&self.external_url, a.project_id, e.fingerprint),
                    )
                })
                .collect(),
        };
        let folded = Folded {
            ids: rest[1..].iter().map(|a| a.outbox_id).collect(),
            backlog: (backlog > 0).then_some(tag),
        };
        sends.push(Send::Summary(carrier, summary, folded));
        Ok(())
    }

    async fn deliver(&self, send: Send) {
        let (alert, summary, folded) = match send {
            Send::One(a) => (a, None, Folded::default()),
            Send::Summary(a, s, f) => (a, Some(s), f),
        };
        let now = self.clock.now_millis();
        let outcome = self.send(&alert, summary.as_ref(), now).await;
        let result = match outcome {
            Ok(()) => DeliveryResult::Delivered,
            Err((status, reason)) => {
                let age = Duration::from_millis(now.saturating_sub(alert.created_at).max(0) as u64);
                let retry = self.settings.backoff(alert.attempts);
                let retry_at = (age + retry < self.settings.give_up_after)
                    .then(|| now + retry.as_millis() as i64);
                // The channel's last failure is what tells a Maintainer an alert was lost.
                let reason = match retry_at {
                    Some(_) => reason,
                    None => format!("{reason}; the alert was given up"),
                };
                tracing::info!(
                    channel_id = alert.channel.id,
                    kind = %alert.channel.kind,
                    target = %target::redact(&alert.channel.url),
                    attempt = alert.attempts + 1,
                    reason = %reason,
                    gave_up = retry_at.is_none(),
                    "alert delivery failed"
                );
                DeliveryResult::Failed {
                    status,
                    reason,
                    retry_at,
                }
            }
        };
        let delivered = matches!(result, DeliveryResult::Delivered);
        if let Err(e) = self.store.settle(&alert, now, result).await {
            tracing::warn!(error = %e, "recording an alert delivery failed");
            return;
        }
        if delivered && !folded.ids.is_empty() {
            if let Err(e) = self.store.settle_folded(folded.ids).await {
                tracing::warn!(error = %e, "removing summarised alerts failed");
            }
        }
        // Undelivered, the backlog is released for the next summary rather than held until
        // its lease ends.
        if let Some(tag) = folded.backlog {
            let channel = alert.channel.id;
            if let Err(e) = self.store.settle_backlog(channel, &tag, delivered).await {
                tracing::warn!(error = %e, "settling summarised alerts failed");
            }
        }
    }

    /// Sends one message; on failure, the receiver's status (if it answered) and a short
    /// reason that names neither the URL nor a secret.
    async fn send(
        &self,
        alert: &ClaimedAlert,
        summary: Option<&Summary>,
        now: i64,
    ) -> Result<(), (Option<i64>, String)> {
        let base = &self.external_url;
        if alert.channel.kind == "email" {
            let Some(mailer) = &self.mailer else {
                return Err((None, "no mail server is configured".to_owned()));
            };
            let (subject, text) = format::email_message(base, alert, summary);
            let to = email::recipients_of(&alert.channel.url);
            return email::send(mailer, &self.mail_from, &to, &subject, text)
                .await
                .map_err(|e| e.describe());
        }
        let body = match alert.channel.kind.as_str() {
            "slack" => format::slack_payload(base, alert, summary),
            "discord" => format::discord_payload(base, alert, summary),
            "teams" => format::teams_payload(base, alert, summary),
            _ => format::webhook_payload(base, alert, summary, now),
        };
        let body = body.to_string().into_bytes();
        let url = Url::parse(&alert.channel.url).map_err(|_| (None, "invalid URL".to_owned()))?;
        if target::literal_ip(&url).is_some_and(|ip| !self.settings.allowed.permits(ip)) {
            return Err((None, target::TargetError::Private.to_string()));
        }
        let mut req = self
            .client
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json");
        if let Some(secret) = &alert.channel.secret {
            let ts = now.div_euclid(1000);
            req = req.header(format::TIMESTAMP_HEADER, ts.to_string()).header(
                format::SIGNATURE_HEADER,
                format::signature(secret, ts, &body),
            );
        }
        let resp = req
            .body(body)
            .send()
            .await
            .map_err(|e| (None, describe(&e)))?;
        let status = resp.status();
        if status.is_success() {
            Ok(())
        } else {
            Err((
                Some(i64::from(status.as_u16())),
                format!("the receiver answered {}", status.as_u16()),
            ))
        }
    }
}

/// A short reason for a failed request, without the URL reqwest's own message carries.
fn describe(e: &reqwest::Error) -> String {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(t) = s.downcast_ref::<target::TargetError>() {
            return t.to_string();
        }
        source = s.source();
    }
    let reason = if e.is_timeout() {
        "timed out"
    } else if e.is_redirect() {
        "redirect refused"
    } else if e.is_connect() {
        "could not connect"
    } else if e.is_body() || e.is_decode() {
        "the answer could not be read"
    } else {
        "the request failed"
    };
    reason.chars().take(REASON_MAX).collect()
}
