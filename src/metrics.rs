//! Prometheus metrics: one registry for the process, exposed at `/metrics` in the text format.
//! Counters are lock-free atomics, so recording them on the hot path costs next to nothing.

use std::borrow::Cow;

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// Borrowed for the routes the gateway serves directly, so counting those allocates nothing.
    pub route: Cow<'static, str>,
    pub method: Cow<'static, str>,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TypeLabels {
    pub r#type: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

pub struct Metrics {
    registry: Registry,
    pub http_requests: Family<RequestLabels, Counter>,
    /// Events stored (committed).
    pub events_accepted: Counter,
    /// Envelope items received, by item type.
    pub items: Family<TypeLabels, Counter>,
    /// Ingestion requests refused, by reason.
    pub rejections: Family<ReasonLabels, Counter>,
    pub queue_depth: Gauge,
    pub batch_size: Histogram,
    pub commit_seconds: Histogram,
    pub events_deduplicated: Counter,
    pub retention_deleted: Counter,
    /// Questions to GitLab about client keys, by answer (`gitlab`).
    pub gitlab_key_checks: Family<AnswerLabels, Counter>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AnswerLabels {
    pub answer: &'static str,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("faultline");
        let http_requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests by route, method and status",
            http_requests.clone(),
        );
        let gitlab_key_checks = Family::<AnswerLabels, Counter>::default();
        registry.register(
            "gitlab_key_checks",
            "Questions to GitLab about client keys, by answer",
            gitlab_key_checks.clone(),
        );
        let events_accepted = Counter::default();
        registry.register(
            "events_accepted",
            "Events committed to the database",
            events_accepted.clone(),
        );
        let items = Family::<TypeLabels, Counter>::default();
        registry.register(
            "envelope_items",
            "Envelope items received, by type",
            items.clone(),
        );
        let rejections = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "ingest_rejections",
            "Ingestion requests refused, by reason",
            rejections.clone(),
        );
        let queue_depth = Gauge::default();
        registry.register(
            "writer_queue_depth",
            "Events waiting for the batch writer",
            queue_depth.clone(),
        );
        let batch_size = Histogram::new(exponential_buckets(1.0, 2.0, 12));
        registry.register(
            "writer_batch_size",
            "Events per committed batch",
            batch_size.clone(),
        );
        let commit_seconds = Histogram::new(exponential_buckets(0.0001, 2.0, 16));
        registry.register(
            "writer_commit_seconds",
            "Time to write and commit one batch",
            commit_seconds.clone(),
        );
        let events_deduplicated = Counter::default();
        registry.register(
            "events_deduplicated",
            "Events dropped because their id was already stored",
            events_deduplicated.clone(),
        );
        let retention_deleted = Counter::default();
        registry.register(
            "retention_deleted_events",
            "Events deleted by retention",
            retention_deleted.clone(),
        );
        Metrics {
            registry,
            http_requests,
            events_accepted,
            items,
            rejections,
            queue_depth,
            batch_size,
            commit_seconds,
            events_deduplicated,
            retention_deleted,
            gitlab_key_checks,
        }
    }

    /// Label values are static strings, so counting costs no allocation on the ingest path.
    pub fn reject(&self, reason: &'static str) {
        self.rejections
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    pub fn item(&self, ty: &'static str) {
        self.items.get_or_create(&TypeLabels { r#type: ty }).inc();
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        if encode(&mut out, &self.registry).is_err() {
            tracing::error!("metrics encoding failed");
        }
        out
    }
}
