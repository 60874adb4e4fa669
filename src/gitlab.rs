//! faultline as the backend of a GitLab's integrated error tracking: client keys live in
//! GitLab's database, so a key faultline does not know is checked by asking GitLab
//! (`POST {gitlab.url}/api/v4/internal/error_tracking/allowed` with `project_id` and
//! `public_key`, the shared token in `Gitlab-Error-Tracking-Token`). This module owns that
//! question and the in-memory cache of its answers; the protocol is written down in
//! `docs/gitlab-integrated-backend.md`.
//!
//! What the cache guarantees:
//! - no question per event: an answer is kept, a positive one for `gitlab.key_cache_secs`
//!   (the longest a key revoked in GitLab keeps working), a refusal for
//!   `gitlab.key_cache_negative_secs`;
//! - one question in flight per (key, project), however many events wait for it: the first
//!   event starts a task that asks, the others wait for its answer;
//! - bounded memory: at most `gitlab.key_cache_capacity` answers, keys that are not even shaped
//!   like keys are refused without asking or remembering, and at most [`MAX_QUESTIONS`]
//!   questions run at once;
//! - when GitLab cannot be reached (or refuses the shared token), a key GitLab allowed keeps
//!   working for `gitlab.key_grace_secs` past its lifetime, other keys get 503 with
//!   `Retry-After`, and GitLab is asked again about a key at most once per negative lifetime;
//!   the problem is logged once per [`LOG_INTERVAL`].
//!
//! The first event GitLab allows for a project creates that project's record under GitLab's
//! id (`Store::ensure_gitlab_project`); that is a write, never a read deciding authentication.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use reqwest::header::HeaderValue;
use serde::Deserialize;
use tokio::sync::{watch, Semaphore};
use url::Url;

use crate::clock::Clock;
use crate::config::{parse_http_url, ConfigError, GitlabConfig};
use crate::domain::keys::parse_public_key;
use crate::metrics::{AnswerLabels, Metrics};
use crate::store::Store;

/// Most questions to GitLab running at once; more wait. A flood of made-up keys then costs
/// GitLab a bounded number of concurrent requests.
pub const MAX_QUESTIONS: usize = 16;

/// How often one kind of problem with GitLab (a wrong shared token, GitLab unreachable) is
/// logged at most.
pub const LOG_INTERVAL: Duration = Duration::from_secs(60);

/// The path of GitLab's key check, below `gitlab.url`.
const ALLOWED_PATH: &str = "api/v4/internal/error_tracking/allowed";

/// What ingestion does with a key faultline does not know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemoteDecision {
    /// GitLab says the key is an active key of the project and error tracking is on.
    /// `key_id` stands in for a local key id (for the rate limiter): always negative, so it
    /// never meets one.
    Allowed { key_id: i64 },
    /// Not shaped like a key, or GitLab found a parameter blank (422).
    Unknown,
    /// GitLab answered `{"enabled": false}`.
    Disabled,
    /// GitLab has no such project (404).
    NoProject,
    /// The project's record is being deleted here.
    Deleting,
    /// GitLab cannot be asked right now and nothing known decides.
    Unavailable { retry_after: u64 },
}

/// GitLab's answer about one key and project.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    Allowed,
    Disabled,
    NoProject,
    Invalid,
}

/// What is remembered about one (key, project).
#[derive(Debug, Clone, Copy)]
struct Entry {
    /// GitLab's last answer and when it was given.
    known: Option<(Answer, Duration)>,
    /// GitLab is not asked again before this time.
    next_check: Duration,
}

#[derive(Debug, thiserror::Error)]
enum AskError {
    #[error("GitLab refused the shared token (401)")]
    WrongToken,
    #[error("GitLab answered {0}")]
    Status(u16),
    #[error("GitLab's answer was not {{\"enabled\": true|false}}")]
    Body,
    #[error("GitLab could not be reached")]
    Unreachable(#[source] reqwest::Error),
}

/// The settings this module runs with, from [`GitlabConfig`].
#[derive(Debug, Clone)]
pub struct GitlabSettings {
    pub endpoint: Url,
    pub positive: Duration,
    pub negative: Duration,
    pub grace: Duration,
    pub capacity: usize,
    pub timeout: Duration,
}

impl GitlabSettings {
    /// `None` when `gitlab.url` is not set: then only faultline's own keys exist.
    pub fn from_config(c: &GitlabConfig) -> Result<Option<GitlabSettings>, ConfigError> {
        let Some(url) = &c.url else {
            return Ok(None);
        };
        let mut base = parse_http_url(url)?;
        // `join` replaces the last segment unless the path ends with `/`: GitLab under a
        // relative URL root (`https://host/gitlab`) keeps its prefix.
        if !base.path().ends_with('/') {
            base.set_path(&format!("{}/", base.path()));
        }
        let endpoint = base
            .join(ALLOWED_PATH)
            .map_err(|_| ConfigError::ExternalUrl(url.clone()))?;
        Ok(Some(GitlabSettings {
            endpoint,
            positive: Duration::from_secs(c.key_cache_secs),
            negative: Duration::from_secs(c.key_cache_negative_secs),
            grace: Duration::from_secs(c.key_grace_secs),
            capacity: c.key_cache_capacity,
            timeout: Duration::from_secs(c.request_timeout_secs),
        }))
    }
}

type CacheKey = ([u8; 16], i64);

/// GitLab's answers about client keys, asked for on demand and kept in memory.
pub struct GitlabKeys {
    settings: GitlabSettings,
    token: HeaderValue,
    client: reqwest::Client,
    clock: Arc<dyn Clock>,
    store: Arc<dyn Store>,
    metrics: Arc<Metrics>,
    answers: DashMap<CacheKey, Entry>,
    /// The question being asked about a key, for the events that wait for its answer.
    inflight: DashMap<CacheKey, watch::Receiver<Option<RemoteDecision>>>,
    /// Projects whose record is known to exist, so it is made at most once per start.
    ensured: DashMap<i64, ()>,
    questions: Semaphore,
    /// When each kind of problem was last logged.
    logged: parking_lot::Mutex<HashMap<&'static str, Duration>>,
    asked: AtomicU64,
}

#[derive(Debug, thiserror::Error)]
pub enum GitlabSetupError {
    #[error("gitlab.error_tracking_token is not a valid header value")]
    Token,
    #[error("could not build the HTTP client for GitLab")]
    Client(#[source] reqwest::Error),
}

impl GitlabKeys {
    pub fn new(
        settings: GitlabSettings,
        token: &str,
        clock: Arc<dyn Clock>,
        store: Arc<dyn Store>,
        metrics: Arc<Metrics>,
    ) -> Result<GitlabKeys, GitlabSetupError> {
        let mut token = HeaderValue::from_str(token).map_err(|_| GitlabSetupError::Token)?;
        // Keeps the token out of any debug output of the request.
        token.set_sensitive(true);
        let client = reqwest::Client::builder()
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout)
            .user_agent(concat!("faultline/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(GitlabSetupError::Client)?;
        Ok(GitlabKeys {
            settings,
            token,
            client,
            clock,
            store,
            metrics,
            answers: DashMap::new(),
            inflight: DashMap::new(),
            ensured: DashMap::new(),
            questions: Semaphore::new(MAX_QUESTIONS),
            logged: parking_lot::Mutex::new(HashMap::new()),
            asked: AtomicU64::new(0),
        })
    }

    /// Questions sent to GitLab since start.
    pub fn questions_asked(&self) -> u64 {
        self.asked.load(Ordering::Relaxed)
    }

    /// Answers held in memory.
    pub fn answers_held(&self) -> usize {
        self.answers.len()
    }

    /// Whether `public_key` may send events to `project_id`, from memory when an answer is
    /// still valid, else by asking GitLab (once, however many events wait).
    pub async fn check(self: &Arc<Self>, public_key: &str, project_id: i64) -> RemoteDecision {
        let Some(bytes) = parse_public_key(public_key) else {
            return RemoteDecision::Unknown;
        };
        let k = (bytes, project_id);
        let decision = match self.cached(&k) {
            Some(d) => d,
            None => self.ask_once(k, public_key).await,
        };
        match decision {
            RemoteDecision::Allowed { .. } => self.ensure_project(project_id, decision).await,
            d => d,
        }
    }

    /// Forgets what GitLab said about a deleted project's keys, so that events sent after the
    /// deletion are decided by a new question.
    pub fn forget_project(&self, project_id: i64) {
        self.answers.retain(|k, _| k.1 != project_id);
        self.ensured.remove(&project_id);
    }

    /// The decision from memory, if GitLab is not due to be asked.
    fn cached(&self, k: &CacheKey) -> Option<RemoteDecision> {
        let now = self.clock.now();
        let entry = *self.answers.get(k)?;
        (now < entry.next_check).then(|| self.decide(k, entry, now))
    }

    fn decide(&self, k: &CacheKey, entry: Entry, now: Duration) -> RemoteDecision {
        let unavailable = || RemoteDecision::Unavailable {
            retry_after: entry
                .next_check
                .saturating_sub(now)
                .as_secs_f64()
                .ceil()
                .max(1.0) as u64,
        };
        match entry.known {
            // Within its lifetime, or past it but within the grace time while GitLab cannot be
            // asked (a successful question would have renewed `at`).
            Some((Answer::Allowed, at)) => {
                if now < at + self.settings.positive + self.settings.grace {
                    RemoteDecision::Allowed {
                        key_id: remote_key_id(&k.0),
                    }
                } else {
                    unavailable()
                }
            }
            // A refusal stays GitLab's last word until GitLab says otherwise.
            Some((Answer::Disabled, _)) => RemoteDecision::Disabled,
            Some((Answer::NoProject, _)) => RemoteDecision::NoProject,
            Some((Answer::Invalid, _)) => RemoteDecision::Unknown,
            None => unavailable(),
        }
    }

    /// Asks GitLab about `k` unless a question about it is already on its way, and waits for
    /// the answer. The question runs in its own task, so an event that stops waiting (its
    /// client went away) does not cancel it for the others.
    async fn ask_once(self: &Arc<Self>, k: CacheKey, public_key: &str) -> RemoteDecision {
        let mut rx = match self.inflight.entry(k) {
            dashmap::Entry::Occupied(e) => e.get().clone(),
            dashmap::Entry::Vacant(slot) => {
                // A question that finished after `cached` looked stored its answer before it
                // left `inflight`, so this look cannot miss it.
                if let Some(d) = self.cached(&k) {
                    return d;
                }
                let (tx, rx) = watch::channel(None);
                slot.insert(rx.clone());
                let this = Arc::clone(self);
                let key = public_key.to_owned();
                tokio::spawn(async move {
                    let d = this.ask_and_remember(k, &key).await;
                    this.inflight.remove(&k);
                    let _ = tx.send(Some(d));
                });
                rx
            }
        };
        let answer = rx.wait_for(Option::is_some).await.map(|v| *v);
        // The asking task cannot end without an answer unless the runtime is shutting down.
        answer
            .ok()
            .flatten()
            .unwrap_or(RemoteDecision::Unavailable { retry_after: 1 })
    }

    async fn ask_and_remember(&self, k: CacheKey, public_key: &str) -> RemoteDecision {
        let result = {
            // The semaphore is never closed, so this only waits.
            let _permit = self.questions.acquire().await;
            self.ask(k.1, public_key).await
        };
        let now = self.clock.now();
        let label = match &result {
            Ok(Answer::Allowed) => "allowed",
            Ok(Answer::Disabled) => "disabled",
            Ok(Answer::NoProject) => "no_project",
            Ok(Answer::Invalid) => "invalid",
            Err(AskError::WrongToken) => "wrong_token",
            Err(AskError::Status(_)) => "error_status",
            Err(AskError::Body) => "bad_body",
            Err(AskError::Unreachable(_)) => "unreachable",
        };
        self.metrics
            .gitlab_key_checks
            .get_or_create(&AnswerLabels { answer: label })
            .inc();
        let entry = match result {
            Ok(answer) => {
                if answer == Answer::Invalid {
                    tracing::warn!(
                        project_id = k.1,
                        "GitLab found a parameter of the key check blank (422)"
                    );
                }
                let lifetime = match answer {
                    Answer::Allowed => self.settings.positive,
                    _ => self.settings.negative,
                };
                Entry {
                    known: Some((answer, now)),
                    next_check: now + lifetime,
                }
            }
            Err(e) => {
                self.report(&e, now);
                Entry {
                    known: self.answers.get(&k).and_then(|e| e.known),
                    next_check: now + self.settings.negative,
                }
            }
        };
        self.remember(k, entry, now);
        self.decide(&k, entry, now)
    }

    async fn ask(&self, project_id: i64, public_key: &str) -> Result<Answer, AskError> {
        self.asked.fetch_add(1, Ordering::Relaxed);
        let resp = self
            .client
            .post(self.settings.endpoint.clone())
            .header("Gitlab-Error-Tracking-Token", self.token.clone())
            .form(&[
                ("project_id", project_id.to_string()),
                ("public_key", public_key.to_owned()),
            ])
            .send()
            .await
            .map_err(AskError::Unreachable)?;
        let status = resp.status();
        match status.as_u16() {
            // Grape answers a POST with 201 unless told otherwise; both mean an answer.
            200..=299 => {
                #[derive(Deserialize)]
                struct Allowed {
                    enabled: bool,
                }
                let body = resp.bytes().await.map_err(AskError::Unreachable)?;
                match serde_json::from_slice::<Allowed>(&body) {
                    Ok(Allowed { enabled: true }) => Ok(Answer::Allowed),
                    Ok(Allowed { enabled: false }) => Ok(Answer::Disabled),
                    Err(_) => Err(AskError::Body),
                }
            }
            401 => Err(AskError::WrongToken),
            404 => Ok(Answer::NoProject),
            422 => Ok(Answer::Invalid),
            s => Err(AskError::Status(s)),
        }
    }

    /// Logs a problem with GitLab at most once per [`LOG_INTERVAL`] for each kind, so that a
    /// flood of events during an outage does not flood the log.
    fn report(&self, e: &AskError, now: Duration) {
        let kind = match e {
            AskError::WrongToken => "wrong_token",
            _ => "unreachable",
        };
        {
            let mut logged = self.logged.lock();
            if let Some(last) = logged.get(kind) {
                if now.saturating_sub(*last) < LOG_INTERVAL {
                    return;
                }
            }
            logged.insert(kind, now);
        }
        match e {
            AskError::WrongToken => tracing::error!(
                endpoint = %self.settings.endpoint,
                "configuration error: GitLab refused gitlab.error_tracking_token (401); it must \
                 equal GitLab's error_tracking_access_token. Keys faultline does not know get 503 \
                 until it does"
            ),
            other => tracing::warn!(
                endpoint = %self.settings.endpoint,
                error = %other,
                cause = ?std::error::Error::source(other),
                "GitLab cannot be asked about client keys; keys it allowed keep working for \
                 gitlab.key_grace_secs, other keys get 503"
            ),
        }
    }

    /// Stores an answer, making room first when the cache is full.
    fn remember(&self, k: CacheKey, entry: Entry, now: Duration) {
        if self.answers.len() >= self.settings.capacity && !self.answers.contains_key(&k) {
            self.make_room(now);
        }
        self.answers.insert(k, entry);
    }

    /// Drops what no longer decides anything (due for a question, and not an allowed key in
    /// its grace time); if that is not enough, a tenth of the cache, refusals first. Runs only
    /// when the cache is full and frees a tenth at least, so its cost spreads over the
    /// insertions that filled that tenth.
    fn make_room(&self, now: Duration) {
        let s = &self.settings;
        self.answers.retain(|_, e| {
            now < e.next_check
                || matches!(e.known, Some((Answer::Allowed, at)) if now < at + s.positive + s.grace)
        });
        let keep = s.capacity - s.capacity / 10 - 1;
        let excess = self.answers.len().saturating_sub(keep);
        if excess == 0 {
            return;
        }
        let is_allowed = |e: &Entry| matches!(e.known, Some((Answer::Allowed, _)));
        let mut victims: Vec<CacheKey> = self
            .answers
            .iter()
            .filter(|e| !is_allowed(e.value()))
            .map(|e| *e.key())
            .take(excess)
            .collect();
        if victims.len() < excess {
            let more = excess - victims.len();
            victims.extend(
                self.answers
                    .iter()
                    .filter(|e| is_allowed(e.value()))
                    .map(|e| *e.key())
                    .take(more),
            );
        }
        for v in victims {
            self.answers.remove(&v);
        }
    }

    /// Creates the project's record on the first event GitLab allowed for it.
    async fn ensure_project(&self, project_id: i64, allowed: RemoteDecision) -> RemoteDecision {
        if self.ensured.contains_key(&project_id) {
            return allowed;
        }
        match self.store.ensure_gitlab_project(project_id).await {
            Ok(true) => {
                self.ensured.insert(project_id, ());
                tracing::debug!(project_id, "GitLab project's record present");
                allowed
            }
            Ok(false) => RemoteDecision::Deleting,
            Err(e) => {
                tracing::error!(
                    project_id,
                    error = %e,
                    cause = ?std::error::Error::source(&e),
                    "could not create a GitLab project's record"
                );
                RemoteDecision::Unavailable { retry_after: 1 }
            }
        }
    }
}

/// A stand-in key id for a key only GitLab knows: negative (local ids are positive), and the
/// same for the same key.
fn remote_key_id(key: &[u8; 16]) -> i64 {
    let mut first = [0u8; 8];
    first.copy_from_slice(&key[..8]);
    -(i64::from_be_bytes(first) & i64::MAX) - 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_key_ids_are_negative_and_stable() {
        for key in [[0u8; 16], [0xff; 16], [0x7f; 16]] {
            let id = remote_key_id(&key);
            assert!(id < 0, "{id}");
            assert_eq!(id, remote_key_id(&key));
        }
    }

    #[test]
    fn endpoint_keeps_a_relative_url_root() {
        let mut c = GitlabConfig {
            url: Some("https://gitlab.example.com".into()),
            ..GitlabConfig::default()
        };
        let s = GitlabSettings::from_config(&c).expect("ok").expect("set");
        assert_eq!(
            s.endpoint.as_str(),
            "https://gitlab.example.com/api/v4/internal/error_tracking/allowed"
        );
        c.url = Some("https://example.com/gitlab".into());
        let s = GitlabSettings::from_config(&c).expect("ok").expect("set");
        assert_eq!(
            s.endpoint.as_str(),
            "https://example.com/gitlab/api/v4/internal/error_tracking/allowed"
        );
        c.url = None;
        assert!(GitlabSettings::from_config(&c).expect("ok").is_none());
    }
}
