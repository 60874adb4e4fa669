//! The Sentry ingestion endpoints (`.../envelope` and `.../store`). A handler authenticates from
//! the key cache, reads and decodes the body under limits, turns the items into records and hands
//! them to the batching writer; it answers 200 only once the writer says the records are stored
//! (or queued, when acknowledgement is relaxed). Status codes are chosen in one place:
//! [`IngestError::into_response`].

use std::collections::HashMap;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde_json::json;

use super::AppState;
use crate::config::AckMode;
use crate::domain::event::{self, EventSummary};
use crate::domain::grouping;
use crate::domain::keycache::KeyDecision;
use crate::gitlab::RemoteDecision;
use crate::protocol::auth::{self, AuthError};
use crate::protocol::decode::{decode_body, ContentEncoding, DecodeError};
use crate::protocol::envelope::{self, EnvelopeError, ItemType};
use crate::protocol::store_body::{decode_store_body, normalize_event_id, StoreBodyError};
use crate::store::ingest::{AttachmentRecord, EventRecord, Record, UserReportRecord};
use crate::store::payload::{self, PayloadCodec};
use crate::writer::WriteError;

/// Limits and behaviour of the ingestion endpoints, from configuration.
#[derive(Debug, Clone)]
pub struct IngestSettings {
    pub max_event_bytes: usize,
    pub max_envelope_bytes: usize,
    pub max_compressed_bytes: usize,
    pub max_attachment_bytes: usize,
    pub ack: AckMode,
    pub body_timeout: Duration,
}

/// Why an ingestion request was refused. No HTTP knowledge below this point.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("project id must be a number")]
    BadProjectId,
    #[error("missing authorization information")]
    MissingKey,
    #[error("{0}")]
    Auth(#[from] AuthError),
    #[error("unknown public key")]
    UnknownKey,
    #[error("{0}")]
    Forbidden(&'static str),
    #[error("empty request body")]
    EmptyBody,
    #[error("request body too large")]
    BodyTooLarge,
    #[error("timed out reading the request body")]
    BodyTimeout,
    #[error("failed to read the request body")]
    BodyRead,
    #[error("{0}")]
    Decode(#[from] DecodeError),
    #[error("invalid envelope: {0}")]
    Envelope(#[from] EnvelopeError),
    #[error("invalid event: {0}")]
    StoreBody(#[from] StoreBodyError),
    #[error("invalid event payload")]
    Event(#[source] event::EventError),
    #[error("rate limit exceeded")]
    RateLimited { retry_after: u64 },
    #[error("the gateway cannot take more events right now")]
    Unavailable { retry_after: u64 },
    #[error("GitLab cannot be asked about this key right now")]
    GitlabUnavailable { retry_after: u64 },
    #[error("internal error")]
    Internal,
}

impl IngestError {
    /// Short label for the rejection metric.
    fn reason(&self) -> &'static str {
        match self {
            IngestError::BadProjectId => "bad_project_id",
            IngestError::MissingKey => "missing_key",
            IngestError::Auth(AuthError::UnsupportedVersion(_)) => "unsupported_version",
            IngestError::Auth(_) => "bad_auth",
            IngestError::UnknownKey => "unknown_key",
            IngestError::Forbidden(_) => "forbidden",
            IngestError::EmptyBody => "empty_body",
            IngestError::BodyTooLarge => "too_large",
            IngestError::BodyTimeout => "body_timeout",
            IngestError::BodyRead => "body_read",
            IngestError::Decode(DecodeError::TooLarge { .. }) => "too_large",
            IngestError::Decode(DecodeError::UnsupportedEncoding(_)) => "unsupported_encoding",
            IngestError::Decode(_) => "corrupt_body",
            IngestError::Envelope(EnvelopeError::ItemTooLarge { .. }) => "too_large",
            IngestError::Envelope(_) => "bad_envelope",
            IngestError::StoreBody(StoreBodyError::TooLarge { .. }) => "too_large",
            IngestError::StoreBody(_) => "bad_event",
            IngestError::Event(_) => "bad_event",
            IngestError::RateLimited { .. } => "rate_limited",
            IngestError::Unavailable { .. } => "unavailable",
            IngestError::GitlabUnavailable { .. } => "gitlab_unavailable",
            IngestError::Internal => "internal",
        }
    }

    fn status(&self) -> StatusCode {
        match self {
            IngestError::BadProjectId => StatusCode::BAD_REQUEST,
            IngestError::MissingKey | IngestError::UnknownKey => StatusCode::UNAUTHORIZED,
            IngestError::Auth(AuthError::UnsupportedVersion(_)) => StatusCode::BAD_REQUEST,
            IngestError::Auth(_) => StatusCode::UNAUTHORIZED,
            IngestError::Forbidden(_) => StatusCode::FORBIDDEN,
            IngestError::EmptyBody | IngestError::BodyRead => StatusCode::BAD_REQUEST,
            IngestError::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            IngestError::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            IngestError::Decode(DecodeError::TooLarge { .. }) => StatusCode::PAYLOAD_TOO_LARGE,
            IngestError::Decode(DecodeError::UnsupportedEncoding(_)) => {
                StatusCode::UNSUPPORTED_MEDIA_TYPE
            }
            IngestError::Decode(_) => StatusCode::BAD_REQUEST,
            IngestError::Envelope(EnvelopeError::ItemTooLarge { .. }) => {
                StatusCode::PAYLOAD_TOO_LARGE
            }
            IngestError::Envelope(_) => StatusCode::BAD_REQUEST,
            IngestError::StoreBody(StoreBodyError::TooLarge { .. }) => {
                StatusCode::PAYLOAD_TOO_LARGE
            }
            IngestError::StoreBody(_) | IngestError::Event(_) => StatusCode::BAD_REQUEST,
            IngestError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            IngestError::Unavailable { .. } | IngestError::GitlabUnavailable { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            IngestError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for IngestError {
    fn into_response(self) -> Response {
        let status = self.status();
        let detail = self.to_string();
        let mut resp = (status, Json(json!({ "detail": detail }))).into_response();
        let h = resp.headers_mut();
        if let Ok(v) = HeaderValue::from_str(&detail) {
            h.insert(HeaderName::from_static("x-sentry-error"), v);
        }
        match self {
            IngestError::RateLimited { retry_after } => {
                h.insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
                if let Ok(v) = HeaderValue::from_str(&format!("{retry_after}::key")) {
                    h.insert(HeaderName::from_static("x-sentry-rate-limits"), v);
                }
            }
            IngestError::Unavailable { retry_after }
            | IngestError::GitlabUnavailable { retry_after } => {
                h.insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
            }
            _ => {}
        }
        resp
    }
}

/// The DSN forms' path prefixes. SDKs post to `{DSN path without its last segment}/api/{project
/// id}/envelope/`, so each DSN form has its prefix: GitLab's (`.../projects/{id}`), the older
/// GitLab form (`.../projects/api/{id}`, hence `api/api`), plain Sentry DSNs, and GitLab's old
/// collector.
const PREFIXES: [&str; 4] = [
    "/errortracking/api/v1/projects/api",
    "/errortracking/api/v1/projects/api/api",
    "/api",
    "/api/v4/error_tracking/collector/api",
];

/// One ingestion route: its endpoint and its template, as the router and the metrics name it.
pub(crate) struct IngestRoute {
    endpoint: Endpoint,
    prefix: &'static str,
    slash: bool,
    pub(crate) template: String,
}

/// Every ingestion route, with and without the trailing slash. The router is built from this
/// table and [`direct_route`] matches against it, so the two cannot disagree on a path.
static ROUTES: std::sync::LazyLock<Vec<IngestRoute>> = std::sync::LazyLock::new(|| {
    let mut routes = Vec::new();
    for prefix in PREFIXES {
        for slash in [false, true] {
            for endpoint in [Endpoint::Envelope, Endpoint::Store] {
                let template = format!(
                    "{prefix}/{{project_id}}/{}{}",
                    endpoint.segment(),
                    if slash { "/" } else { "" }
                );
                routes.push(IngestRoute {
                    endpoint,
                    prefix,
                    slash,
                    template,
                });
            }
        }
    }
    routes
});

pub fn routes() -> Router<AppState> {
    let mut r = Router::new();
    for route in ROUTES.iter() {
        let handler = match route.endpoint {
            Endpoint::Envelope => post(envelope_endpoint),
            Endpoint::Store => post(store_endpoint),
        };
        r = r.route(&route.template, handler.options(preflight));
    }
    r.layer(middleware::from_fn(cors))
}

/// The ingestion route a `POST` to `path` takes, and its project id, for requests served without
/// the router (see `http::Gateway`): event requests are most of what the gateway serves, and
/// routing, extractors and middleware layers cost them several microseconds each.
///
/// Only the plain form is taken: a project id of ASCII digits without a leading zero. Anything
/// else (a percent-encoded or zero-padded id, a stray segment, another method) returns `None`
/// and goes through the router, which answers it as it always has.
pub(crate) fn direct_route<'p>(
    method: &axum::http::Method,
    path: &'p str,
) -> Option<(&'static IngestRoute, &'p str)> {
    if method != axum::http::Method::POST {
        return None;
    }
    let routes: &'static [IngestRoute] = &ROUTES;
    routes.iter().find_map(|route| {
        let rest = path.strip_prefix(route.prefix)?.strip_prefix('/')?;
        let (id, rest) = rest.split_once('/')?;
        let rest = rest.strip_prefix(route.endpoint.segment())?;
        let canonical_id = super::is_numeric_id(id) && !id.starts_with('0');
        let tail_ok = if route.slash {
            rest == "/"
        } else {
            rest.is_empty()
        };
        (canonical_id && tail_ok).then_some((route, id))
    })
}

/// Serves a request [`direct_route`] matched, with the same answer and headers the router's
/// route would give it.
pub(crate) async fn serve_direct(
    state: &AppState,
    route: &IngestRoute,
    project_id: &str,
    req: Request,
) -> Response {
    let mut resp = handle(state, route.endpoint, project_id, req).await;
    add_cors_headers(&mut resp);
    resp
}

/// Browsers post events from any page that embeds a DSN, so every ingestion answer (errors
/// included, with or without an `Origin`) carries the same permissive CORS headers. A fixed set
/// of headers is all this needs, hence no general CORS layer.
async fn cors(req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    add_cors_headers(&mut resp);
    resp
}

fn add_cors_headers(resp: &mut Response) {
    let h = resp.headers_mut();
    // One reservation for the five headers below, instead of the map regrowing as they land.
    h.reserve(5);
    h.insert("access-control-allow-origin", HeaderValue::from_static("*"));
    h.insert(
        "access-control-allow-methods",
        HeaderValue::from_static("POST, OPTIONS"),
    );
    h.insert(
        "access-control-allow-headers",
        HeaderValue::from_static(
            "x-sentry-auth, x-requested-with, origin, accept, content-type, content-encoding, authorization",
        ),
    );
    h.insert(
        "access-control-expose-headers",
        HeaderValue::from_static("x-sentry-error, x-sentry-rate-limits, retry-after"),
    );
    h.insert("access-control-max-age", HeaderValue::from_static("3600"));
}

async fn preflight() -> StatusCode {
    StatusCode::OK
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    Envelope,
    Store,
}

impl Endpoint {
    /// The route's last path segment.
    fn segment(self) -> &'static str {
        match self {
            Endpoint::Envelope => "envelope",
            Endpoint::Store => "store",
        }
    }
}

async fn envelope_endpoint(
    State(state): State<AppState>,
    Path(project_id): Path<String>,
    req: Request,
) -> Response {
    handle(&state, Endpoint::Envelope, &project_id, req).await
}

async fn store_endpoint(
    State(state): State<AppState>,
    Path(project_id): Path<String>,
    req: Request,
) -> Response {
    handle(&state, Endpoint::Store, &project_id, req).await
}

/// Runs one request and answers it. A request refused before its body was read (an unknown
/// key, say) still has that body on the wire: the body is read and thrown away, up to
/// [`DRAIN_LIMIT`] bytes and for at most [`DRAIN_DEADLINE`], so that the client's next request
/// on the same keep-alive connection is read as a request. Past either bound the answer says
/// `Connection: close` and the client opens a new connection for its next request. Draining
/// keeps the common case (an SDK with a wrong key or over its rate limit, sending events of a
/// few KiB) on one connection; the close bounds what a hostile client can make us read.
async fn handle(state: &AppState, endpoint: Endpoint, project_id: &str, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let mut body = Some(body);
    let result = ingest(state, endpoint, project_id, &parts, &mut body).await;
    if let Err(e) = &result {
        log_refusal(e, &parts);
    }
    // Reading stopped part-way: over the limit, too slow, or broken.
    let cut_short = matches!(
        result,
        Err(IngestError::BodyTooLarge | IngestError::BodyTimeout | IngestError::BodyRead)
    );
    let mut resp = respond(state, result);
    let reusable = match body {
        Some(unread) => drain(unread, &parts.headers).await,
        None => !cut_short,
    };
    if !reusable {
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}

/// Most log lines a second for each refusal reason: enough to see that an SDK is sending with a
/// mistyped key, few enough that a flood of refusals cannot flood the log.
const REFUSAL_LOG_PER_SECOND: u32 = 5;

/// Per reason: the second of the last line and how many lines that second had.
static REFUSAL_LOG: std::sync::LazyLock<parking_lot::Mutex<HashMap<&'static str, (u64, u32)>>> =
    std::sync::LazyLock::new(Default::default);

/// Logs a refusal at `info` (`warn` when it is the gateway's fault), at most
/// [`REFUSAL_LOG_PER_SECOND`] lines a second for each reason; the first line of a later second
/// says how many the last busy second left out (`left_out`). The key is shown by its first
/// characters only: a key is a credential, and its prefix is enough to tell which one an SDK
/// is using.
fn log_refusal(e: &IngestError, parts: &axum::http::request::Parts) {
    let reason = e.reason();
    let second = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    let left_out = {
        let mut log = REFUSAL_LOG.lock();
        let entry = log.entry(reason).or_insert((second, 0));
        let mut left_out = 0;
        if entry.0 != second {
            // Refusals of an earlier second beyond the limit were not logged.
            left_out = entry.1.saturating_sub(REFUSAL_LOG_PER_SECOND);
            *entry = (second, 0);
        }
        entry.1 += 1;
        if entry.1 > REFUSAL_LOG_PER_SECOND {
            return;
        }
        left_out
    };
    let key = auth::resolve_auth(
        header_str(&parts.headers, "x-sentry-auth"),
        header_str(&parts.headers, "authorization"),
        parts.uri.query(),
    )
    .ok()
    .and_then(|a| a.public_key)
    .map(|k| key_prefix(&k))
    .unwrap_or_default();
    let status = e.status();
    let path = parts.uri.path();
    if status.is_server_error() {
        tracing::warn!(%status, reason, error = %e, key, path, left_out, "ingestion refused");
    } else {
        tracing::info!(%status, reason, error = %e, key, path, left_out, "ingestion refused");
    }
}

/// The first characters of a public key (`glet_` and four hex digits), for logs.
fn key_prefix(key: &str) -> String {
    let prefix: String = key.chars().take(9).collect();
    format!("{prefix}…")
}

/// Most bytes of a refused request's body read and thrown away to keep its connection usable.
const DRAIN_LIMIT: usize = 1024 * 1024;
/// Longest a refused request's body is waited for.
const DRAIN_DEADLINE: Duration = Duration::from_secs(2);

/// Reads and discards `body` within the bounds; whether it was read to its end.
async fn drain(body: Body, headers: &HeaderMap) -> bool {
    let declared = header_str(headers, "content-length").and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|len| len > DRAIN_LIMIT) {
        return false;
    }
    // A client waiting for `100 Continue` has not sent its body; reading it would ask for it
    // (hyper sends the 100 on the first read) only to throw it away.
    if header_str(headers, "expect").is_some_and(|v| v.eq_ignore_ascii_case("100-continue")) {
        return false;
    }
    // Frames are dropped as they come: nothing of the body is kept.
    let discard = async {
        let mut body = body;
        let mut read = 0usize;
        while let Some(frame) = body.frame().await {
            let Ok(frame) = frame else { return false };
            read += frame.data_ref().map_or(0, |d| d.len());
            if read > DRAIN_LIMIT {
                return false;
            }
        }
        true
    };
    tokio::time::timeout(DRAIN_DEADLINE, discard)
        .await
        .unwrap_or(false)
}

fn respond(state: &AppState, result: Result<Option<String>, IngestError>) -> Response {
    match result {
        // An event id is 32 hex digits (normalised or generated here), so it needs no escaping;
        // writing the body directly skips building a JSON value for every accepted event.
        Ok(Some(id)) => (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            format!("{{\"id\":\"{id}\"}}"),
        )
            .into_response(),
        Ok(None) => Json(json!({})).into_response(),
        Err(e) => {
            state.metrics.reject(e.reason());
            e.into_response()
        }
    }
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Maps the key cache's decision to a refusal. A key faultline does not know is GitLab's to
/// judge when `gitlab.url` is set (`crate::gitlab`, which answers from memory but for the first
/// event of a key in each cache lifetime).
async fn authorize(state: &AppState, key: &str, project_id: i64) -> Result<i64, IngestError> {
    match state.keys.check(key, project_id) {
        KeyDecision::Allowed { key_id } => Ok(key_id),
        KeyDecision::Unknown => match &state.gitlab {
            Some(gitlab) => gitlab_decision(gitlab.check(key, project_id).await),
            None => Err(IngestError::UnknownKey),
        },
        KeyDecision::Inactive => Err(IngestError::Forbidden("public key is disabled")),
        KeyDecision::WrongProject => Err(IngestError::Forbidden(
            "public key does not belong to this project",
        )),
        KeyDecision::SettingMissing | KeyDecision::SettingDisabled => Err(IngestError::Forbidden(
            "error tracking is not enabled for this project",
        )),
    }
}

fn gitlab_decision(d: RemoteDecision) -> Result<i64, IngestError> {
    match d {
        RemoteDecision::Allowed { key_id } => Ok(key_id),
        RemoteDecision::Unknown => Err(IngestError::UnknownKey),
        RemoteDecision::Disabled => Err(IngestError::Forbidden(
            "GitLab does not allow this key to send to this project",
        )),
        RemoteDecision::NoProject => Err(IngestError::Forbidden("no such project in GitLab")),
        RemoteDecision::Deleting => Err(IngestError::Forbidden("the project is being deleted")),
        // The SDK is not at fault: a 503 with `Retry-After` is the answer that does not make
        // it drop its key.
        RemoteDecision::Unavailable { retry_after } => {
            Err(IngestError::GitlabUnavailable { retry_after })
        }
    }
}

async fn read_body(
    body: &mut Option<Body>,
    headers: &HeaderMap,
    s: &IngestSettings,
) -> Result<axum::body::Bytes, IngestError> {
    // A declared length over the limit is refused before reading anything.
    if let Some(len) = header_str(headers, "content-length").and_then(|v| v.parse::<usize>().ok()) {
        if len > s.max_compressed_bytes {
            return Err(IngestError::BodyTooLarge);
        }
    }
    // Taken from here on: a body cut short by a limit or a timeout cannot be drained, and its
    // connection is closed after the answer.
    let Some(body) = body.take() else {
        return Err(IngestError::BodyRead);
    };
    let limited = Limited::new(body, s.max_compressed_bytes);
    match tokio::time::timeout(s.body_timeout, limited.collect()).await {
        Err(_) => Err(IngestError::BodyTimeout),
        Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => {
            Err(IngestError::BodyTooLarge)
        }
        Ok(Err(_)) => Err(IngestError::BodyRead),
        // The collected body is handed on as it is: no copy of a possibly large request.
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
    }
}

/// Handles one request; `Ok(Some(id))` is answered `{"id": id}`, `Ok(None)` is `{}`.
/// `body` is taken out of its option when it is read, so the caller knows whether a refusal
/// left it unread.
async fn ingest(
    state: &AppState,
    endpoint: Endpoint,
    project_id: &str,
    parts: &axum::http::request::Parts,
    body: &mut Option<Body>,
) -> Result<Option<String>, IngestError> {
    let project_id = parse_project_id(project_id).ok_or(IngestError::BadProjectId)?;
    let headers = &parts.headers;
    let auth = auth::resolve_auth(
        header_str(headers, "x-sentry-auth"),
        header_str(headers, "authorization"),
        parts.uri.query(),
    )?;
    // With a key in the request, refuse before reading or decompressing the body.
    let request_key_id = match &auth.public_key {
        Some(k) => Some(authorize(state, k, project_id).await?),
        None => None,
    };
    let encoding = ContentEncoding::from_header(header_str(headers, "content-encoding"))?;
    let settings = &state.ingest;
    let raw = read_body(body, headers, settings).await?;
    if raw.is_empty() {
        return Err(IngestError::EmptyBody);
    }
    let is_envelope = endpoint == Endpoint::Envelope
        || header_str(headers, "content-type").is_some_and(is_envelope_type);
    let limit = if is_envelope {
        settings.max_envelope_bytes
    } else {
        settings.max_event_bytes
    };
    let decoded = decode_body(encoding, &raw, limit)?;

    let (records, id, key_id) = if is_envelope {
        let limits = envelope::Limits {
            max_event_item: settings.max_event_bytes,
            max_attachment_item: settings.max_attachment_bytes,
            max_other_item: settings.max_event_bytes,
        };
        let env = envelope::parse(&decoded, &limits)?;
        let key_id = match request_key_id {
            Some(key_id) => key_id,
            None => {
                // Only when nothing else named a key may the envelope header's DSN do so.
                let key = env
                    .header
                    .dsn
                    .as_deref()
                    .and_then(auth::key_from_dsn)
                    .ok_or(IngestError::MissingKey)?;
                authorize(state, &key, project_id).await?
            }
        };
        // A gzip body whose envelope holds nothing but the event is stored as it came (see
        // `store::payload`).
        let compact = (encoding == ContentEncoding::Gzip
            && env.items.len() == 1
            && env.items[0].ty == ItemType::Event)
            .then_some(&raw[..]);
        let (records, id) = envelope_records(state, project_id, &env, compact)?;
        (records, id, key_id)
    } else {
        let key_id = request_key_id.ok_or(IngestError::MissingKey)?;
        state.metrics.item("event");
        let ev = decode_store_body(&decoded, settings.max_event_bytes)?;
        let record = event_record(project_id, Some(&ev.event_id), &ev.json, None)?;
        let id = record.event_id.clone();
        (vec![Record::Event(record)], Some(id), key_id)
    };

    let events = records
        .iter()
        .filter(|r| matches!(r, Record::Event(_)))
        .count() as u32;
    if events > 0 {
        state
            .rate_limiter
            .check(key_id, events)
            .map_err(|retry_after| IngestError::RateLimited { retry_after })?;
    }
    if records.is_empty() {
        return Ok(id);
    }
    match settings.ack {
        AckMode::Committed => state.writer.write(records).await.map_err(write_error)?,
        AckMode::Queued => {
            state.writer.submit(records, None).map_err(write_error)?;
            Vec::new()
        }
    };
    Ok(id)
}

/// A project id is a run of ASCII digits; `+5` and `-5` are refused here rather than later for
/// a misleading reason.
fn parse_project_id(s: &str) -> Option<i64> {
    super::is_numeric_id(s).then(|| s.parse().ok()).flatten()
}

/// Whether a `Content-Type` names an envelope. Media types are case-insensitive (RFC 9110), and
/// parameters such as `; charset=utf-8` may follow.
fn is_envelope_type(content_type: &str) -> bool {
    let media_type = content_type.split(';').next().unwrap_or_default().trim();
    media_type.eq_ignore_ascii_case("application/x-sentry-envelope")
}

fn write_error(e: WriteError) -> IngestError {
    match e {
        // The queue drains within milliseconds; a second is a polite retry interval.
        WriteError::QueueFull | WriteError::Closed => IngestError::Unavailable { retry_after: 1 },
        // A full disk is not fixed in a second.
        WriteError::StorageFull => IngestError::Unavailable { retry_after: 60 },
        // A restart or a fail-over takes seconds; the backend reconnects meanwhile.
        WriteError::Unavailable => IngestError::Unavailable { retry_after: 5 },
        WriteError::Failed => IngestError::Internal,
    }
}

/// Turns every item of an envelope into records; unknown and unstored types are only counted.
/// `compact` is the request body when the event may be stored in that form instead of as JSON.
fn envelope_records(
    state: &AppState,
    project_id: i64,
    env: &envelope::Envelope<'_>,
    compact: Option<&[u8]>,
) -> Result<(Vec<Record>, Option<String>), IngestError> {
    let header_id = env.header.event_id.as_deref().and_then(normalize_event_id);
    let mut records = Vec::new();
    let mut event_id: Option<String> = None;
    for item in &env.items {
        state.metrics.item(item.ty.as_str());
        if item.ty == ItemType::Event {
            // The header's id names the envelope's event, so it goes to the first event item
            // only. SDKs send one event per envelope, but proxies and hand-written clients may
            // batch several; forcing the same id on all of them would store the first and
            // drop the rest as duplicates while answering 200.
            let forced = if event_id.is_none() {
                header_id.as_deref()
            } else {
                None
            };
            let record = event_record(project_id, forced, item.payload, compact)?;
            event_id.get_or_insert_with(|| record.event_id.clone());
            records.push(Record::Event(record));
        }
    }
    // Attachments and reports belong to the envelope's event.
    let owner_id = header_id.clone().or_else(|| event_id.clone());
    for item in &env.items {
        match item.ty {
            ItemType::Attachment => records.push(Record::Attachment(AttachmentRecord {
                project_id,
                event_id: owner_id.clone().unwrap_or_else(new_event_id),
                filename: item.filename.clone().unwrap_or_else(|| "attachment".into()),
                content_type: item.content_type.clone(),
                attachment_type: item.attachment_type.clone(),
                data: item.payload.to_vec(),
            })),
            ItemType::UserReport | ItemType::Feedback => records.push(Record::UserReport(
                user_report(project_id, owner_id.as_deref(), item.payload),
            )),
            _ => {}
        }
    }
    Ok((records, event_id.or(header_id)))
}

fn new_event_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// Builds the stored form of one event. `forced_id` (the envelope header's id) wins over the
/// payload's; an event with neither gets a new id.
///
/// The payload is stored as `gzip_envelope`, the compressed request body that carries this event
/// alone, when there is one, else as the event JSON, compressed when that is smaller
/// (`store::payload::compact_json`).
fn event_record(
    project_id: i64,
    forced_id: Option<&str>,
    json: &[u8],
    gzip_envelope: Option<&[u8]>,
) -> Result<EventRecord, IngestError> {
    let summary: EventSummary = event::extract(json).map_err(IngestError::Event)?;
    let event_id = forced_id
        .map(str::to_owned)
        .or_else(|| summary.event_id.as_deref().and_then(normalize_event_id))
        .unwrap_or_else(new_event_id);
    let g = grouping::group(&summary);
    // Compressed here, on the request's thread, rather than by the single writer.
    let (payload, payload_codec) = match gzip_envelope {
        Some(body) => (body.to_vec(), PayloadCodec::GzipEnvelope),
        None => payload::compact_json(json),
    };
    let now = chrono::Utc::now().timestamp_millis();
    let search_tags = search_tags(&summary);
    let occurred_at = summary
        .timestamp
        .filter(|t| t.is_finite() && *t > 0.0)
        .map(|t| (t * 1000.0) as i64)
        .unwrap_or(now);
    Ok(EventRecord {
        project_id,
        event_id,
        fingerprint: g.fingerprint,
        name: g.name,
        description: g.description,
        actor: g.actor,
        platform: summary.platform.as_deref().map(str::to_owned),
        level: summary.level.as_deref().map(str::to_owned),
        environment: summary.environment.as_deref().map(str::to_owned),
        release: summary.release.as_deref().map(str::to_owned),
        message: summary.message.as_deref().map(str::to_owned),
        is_message: summary.is_message_event(),
        user_identity: summary.user_identity.as_deref().map(str::to_owned),
        search_tags,
        occurred_at,
        payload,
        payload_codec,
    })
}

/// What the read API's search can find this event's error by beyond the record's own
/// environment, release and level (`store::ingest::EventRecord::search_tags`): the ways it
/// names its user, and the SDK's own tags.
fn search_tags(summary: &EventSummary) -> Vec<(String, String)> {
    let users = summary
        .user_search
        .iter()
        .map(|u| ("user".to_owned(), u.clone()));
    let tags = summary
        .tags
        .iter()
        .map(|(key, value)| (key.to_string(), value.to_string()));
    users.chain(tags).collect()
}

/// A `user_report` (`{event_id, name, email, comments}`) or a `feedback` item (an event whose
/// `contexts.feedback` holds `message`, `contact_email`, `name`, `associated_event_id`).
fn user_report(project_id: i64, owner: Option<&str>, payload: &[u8]) -> UserReportRecord {
    let v: serde_json::Value = serde_json::from_slice(payload).unwrap_or(serde_json::Value::Null);
    let s = |v: &serde_json::Value| v.as_str().map(str::to_owned);
    let fb = &v["contexts"]["feedback"];
    // A feedback item's own `event_id` names the feedback; the event it is about is the
    // associated one.
    let about = if fb.is_object() {
        s(&fb["associated_event_id"])
    } else {
        s(&v["event_id"])
    };
    let event_id = about
        .and_then(|e| normalize_event_id(&e))
        .or_else(|| owner.map(str::to_owned));
    UserReportRecord {
        project_id,
        event_id,
        name: s(&v["name"]).or_else(|| s(&fb["name"])),
        email: s(&v["email"]).or_else(|| s(&fb["contact_email"])),
        comments: s(&v["comments"]).or_else(|| s(&fb["message"])),
        payload: payload.to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::Method;

    #[test]
    fn plain_ingest_paths_are_served_directly_and_all_else_by_the_router() {
        for route in ROUTES.iter() {
            let path = route.template.replace("{project_id}", "42");
            let (found, id) =
                direct_route(&Method::POST, &path).unwrap_or_else(|| panic!("{path}: direct"));
            assert_eq!(found.template, route.template, "{path}: its own route");
            assert_eq!(id, "42", "{path}");
            // Preflights and other methods keep the router's answers.
            for method in [Method::OPTIONS, Method::GET, Method::PUT] {
                assert!(direct_route(&method, &path).is_none(), "{method} {path}");
            }
            // Ids the router reads its own way, and paths it refuses.
            for id in ["0", "042", "%34%32", "+42", "4a", ""] {
                let odd = route.template.replace("{project_id}", id);
                assert!(direct_route(&Method::POST, &odd).is_none(), "{odd}");
            }
            for odd in [
                format!("{path}x"),
                format!("{path}//"),
                format!("/x{path}"),
                path.replace("/42/", "/42/x/"),
            ] {
                assert!(direct_route(&Method::POST, &odd).is_none(), "{odd}");
            }
        }
        // Of the two GitLab prefixes, the longer one is taken only by its own paths.
        let (route, _) = direct_route(
            &Method::POST,
            "/errortracking/api/v1/projects/api/api/7/envelope/",
        )
        .expect("api/api form");
        assert_eq!(
            route.template,
            "/errortracking/api/v1/projects/api/api/{project_id}/envelope/"
        );
        assert_eq!(
            ROUTES.len(),
            16,
            "four prefixes, two endpoints, with and without a slash"
        );
    }
}
