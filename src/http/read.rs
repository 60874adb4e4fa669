//! The read API under `/errortracking/api/v1` (docs/protocol.md, "Read API"): list and inspect errors,
//! change their status, list an error's events and the project's message events. Parameters are
//! checked here and the queries are `store::read`'s; this file also owns the opaque cursor format.
//!
//! Choices this API makes where GitLab's leaves room:
//! - `limit` outside 1–100 is refused with `400 {"error":"limit does not have a valid value"}`
//!   (Grape's wording for a value outside its range) rather than silently clamped, so a client
//!   never believes it received more per page than it did; a non-integer is `limit is invalid`.
//! - A cursor is base64url (no padding) of `<list>:<sort key>:<row id>`, with `:p` appended
//!   when it leads to the page before. It only says where a page ended, so it stays valid
//!   however long it is kept; one made for another list or sort order, or anything that does
//!   not decode, is `400 {"error":"cursor is invalid"}`.
//! - `Link` headers carry `rel="prev"` (on every page but the first) and `rel="next"` (only when
//!   more rows follow), with `cursor` as the first query parameter: GitLab reads the cursor up
//!   to the next `&` (see `docs/gitlab-integrated-backend.md`).
//! - With GitLab's shared token (`Gitlab-Error-Tracking-Token`) every project is readable; a
//!   project faultline has no record of yet (no event arrived) has empty lists.
//! - Ordering guarantees while events keep arriving (every list pages strictly downwards from
//!   the cursor, ties broken by row id): `last_seen_at` and `event_count` only ever grow, so an
//!   error that changes moves towards the first page, behind the cursor: it is never returned
//!   twice, and one that overtakes the cursor is skipped by this walk (the first page shows it).
//!   `first_seen_at` never changes for events that arrive in time order, so `first_seen_desc`
//!   is stable; only an event whose SDK timestamp is older than the error's first sighting can
//!   move that error down, and only then can it show up again on a later page. A `prev` page is
//!   read upwards from its cursor (the rows just before it, shown in list order), so the same
//!   holds mirrored: an error that moved up since can show up again on it.

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{json, Value};

use super::api::{gitlab_token_access, project_access, ApiError, ApiResult, Params};
use super::AppState;
use crate::domain::search::{self, Search};
use crate::store::read::{
    ErrorQuery, ErrorSort, ErrorStatus, EventQuery, EventSort, Keyset, KeysetPage, MessageQuery,
    StoredEvent, StoredMessage, TagFilter, TrackedError,
};
use crate::store::AccessLevel;

const BASE: &str = "/errortracking/api/v1/projects/{id}";

pub fn routes() -> Router<AppState> {
    Router::new()
        .route(&format!("{BASE}/errors"), get(list_errors))
        .route(
            &format!("{BASE}/errors/{{fingerprint}}"),
            get(show_error).put(update_error),
        )
        .route(
            &format!("{BASE}/errors/{{fingerprint}}/events"),
            get(list_events),
        )
        .route(&format!("{BASE}/messages"), get(list_messages))
        .route(BASE, axum::routing::delete(delete_project))
}

/// The project a request reads: with GitLab's shared token, the numeric id's project, or
/// `None` when faultline has no record of it (GitLab knows projects before their first event);
/// with a personal access token, a project the caller reaches with at least `min`.
async fn read_scope(
    state: &AppState,
    params: &Params,
    id: &str,
    min: AccessLevel,
) -> ApiResult<Option<i64>> {
    if let Some(access) = gitlab_token_access(state, &params.headers) {
        access?;
        let id = super::is_numeric_id(id)
            .then(|| id.parse::<i64>().ok())
            .flatten()
            .ok_or(ApiError::ProjectNotFound)?;
        return Ok(state.store.project_by_id(id).await?.map(|p| p.id));
    }
    let (_, project) = project_access(state, params, id, min).await?;
    Ok(Some(project.id))
}

/// `DELETE /errortracking/api/v1/projects/:id`, which GitLab sends when a project is deleted:
/// removes all of its data, as `DELETE /api/v4/projects/:id` does. With the shared token a
/// project faultline never saw is already gone, so that is a 202 too; a personal access token
/// needs the Owner role.
async fn delete_project(
    State(state): State<AppState>,
    Path(id): Path<String>,
    params: Params,
) -> ApiResult<Response> {
    if let Some(project_id) = read_scope(&state, &params, &id, AccessLevel::OWNER).await? {
        super::identity::remove_project(&state, project_id).await?;
    }
    Ok(super::identity::accepted())
}

async fn list_errors(
    State(state): State<AppState>,
    Path(id): Path<String>,
    params: Params,
) -> ApiResult<Response> {
    let project = read_scope(&state, &params, &id, AccessLevel::REPORTER).await?;
    let args = ErrorListArgs::parse(&params)?;
    let Some(project_id) = project else {
        return Ok(paged(Vec::new(), None));
    };
    settle_counts(&state).await;
    let page = state.store.list_errors(args.query(project_id)).await?;
    let ends = Ends::of(args.at, &page, |e| e.keyset(args.sort));
    let link = args.links(&state, &params, ends);
    Ok(paged(page.items.iter().map(error_json).collect(), link))
}

async fn show_error(
    State(state): State<AppState>,
    Path((id, fingerprint)): Path<(String, String)>,
    params: Params,
) -> ApiResult<Json<Value>> {
    let project = read_scope(&state, &params, &id, AccessLevel::REPORTER).await?;
    let fingerprint = parse_fingerprint(&fingerprint)?;
    let project_id = project.ok_or(UNKNOWN_ERROR)?;
    settle_counts(&state).await;
    let error = state.store.error(project_id, fingerprint).await?;
    Ok(Json(error_json(&error.ok_or(UNKNOWN_ERROR)?)))
}

async fn update_error(
    State(state): State<AppState>,
    Path((id, fingerprint)): Path<(String, String)>,
    params: Params,
) -> ApiResult<Json<Value>> {
    let project = read_scope(&state, &params, &id, AccessLevel::DEVELOPER).await?;
    params.check_body()?;
    let fingerprint = parse_fingerprint(&fingerprint)?;
    let status = match params.string("status") {
        None => return Err(ApiError::BadParams("status is missing".into())),
        Some(s) => ErrorStatus::parse(&s).ok_or_else(|| invalid_value("status"))?,
    };
    let project_id = project.ok_or(UNKNOWN_ERROR)?;
    let error = super::ops::set_error_status(&state, project_id, fingerprint, status).await?;
    Ok(Json(error_json(&error.ok_or(UNKNOWN_ERROR)?)))
}

use super::ops::settle_counts;

async fn list_events(
    State(state): State<AppState>,
    Path((id, fingerprint)): Path<(String, String)>,
    params: Params,
) -> ApiResult<Response> {
    let project = read_scope(&state, &params, &id, AccessLevel::REPORTER).await?;
    let fingerprint = parse_fingerprint(&fingerprint)?;
    let args = EventListArgs::parse(&params)?;
    let project_id = project.ok_or(UNKNOWN_ERROR)?;
    let query = EventQuery {
        project_id,
        fingerprint,
        sort: args.sort,
        limit: args.limit,
        after: args.at.after(),
        backward: args.at.backward(),
    };
    let page = state
        .store
        .list_error_events(query)
        .await?
        .ok_or(UNKNOWN_ERROR)?;
    let link = args.links(
        &state,
        &params,
        Ends::of(args.at, &page, StoredEvent::keyset),
    );
    Ok(paged(page.items.iter().map(event_json).collect(), link))
}

async fn list_messages(
    State(state): State<AppState>,
    Path(id): Path<String>,
    params: Params,
) -> ApiResult<Response> {
    let project = read_scope(&state, &params, &id, AccessLevel::REPORTER).await?;
    let mut p = Problems::default();
    p.unknown(&params, &["limit", "cursor"]);
    let limit = p.or(parse_limit(&params), DEFAULT_LIMIT);
    let at = p.or(parse_cursor(&params, CursorKind::Messages), Start::First);
    p.check()?;
    let Some(project_id) = project else {
        return Ok(paged(Vec::new(), None));
    };
    let query = MessageQuery {
        project_id,
        limit,
        after: at.after(),
        backward: at.backward(),
    };
    let page = state.store.list_messages(query).await?;
    let pairs = [("limit", limit.to_string())];
    let link = links(
        &state,
        &params,
        CursorKind::Messages,
        &pairs,
        Ends::of(at, &page, StoredMessage::keyset),
    );
    Ok(paged(page.items.iter().map(message_json).collect(), link))
}

/// An unknown fingerprint, worded as GitLab's generic 404.
const UNKNOWN_ERROR: ApiError = ApiError::NotFound("404 Not Found");

fn parse_fingerprint(raw: &str) -> ApiResult<i64> {
    raw.parse()
        .map_err(|_| ApiError::BadParams("fingerprint is invalid".into()))
}

fn invalid_value(name: &str) -> ApiError {
    ApiError::BadParams(format!("{name} does not have a valid value"))
}

/// Default and bounds of `limit` (docs/protocol.md, "Read API").
const DEFAULT_LIMIT: u32 = 20;
const MAX_LIMIT: u32 = 100;

fn parse_limit(params: &Params) -> Result<u32, String> {
    match params.int("limit") {
        Err(_) => Err("limit is invalid".into()),
        Ok(None) => Ok(DEFAULT_LIMIT),
        Ok(Some(n)) if (1..=i64::from(MAX_LIMIT)).contains(&n) => Ok(n as u32),
        Ok(Some(_)) => Err("limit does not have a valid value".into()),
    }
}

/// Where a requested page starts, from its cursor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Start {
    First,
    /// After this row (a `next` link).
    After(Keyset),
    /// Just before this row (a `prev` link).
    Before(Keyset),
}

impl Start {
    /// The store's `after` (the cursor's row, whichever way the page is read).
    fn after(self) -> Option<Keyset> {
        match self {
            Start::First => None,
            Start::After(k) | Start::Before(k) => Some(k),
        }
    }

    fn backward(self) -> bool {
        matches!(self, Start::Before(_))
    }
}

/// Where the pages before and after a page end, when there are such pages.
#[derive(Debug, Clone, Copy, Default)]
struct Ends {
    /// The page's first row, when rows come before it.
    prev: Option<Keyset>,
    /// The page's last row, when rows follow it.
    next: Option<Keyset>,
}

impl Ends {
    /// Read forwards, the store says whether more rows follow, and a page reached through a
    /// cursor has the rows it came from before it; read backwards, the other way round.
    fn of<T>(at: Start, page: &KeysetPage<T>, keyset: impl Fn(&T) -> Keyset) -> Ends {
        let first = page.items.first().map(&keyset);
        let last = page.items.last().map(&keyset);
        let more = page.next.is_some();
        match at {
            Start::First => Ends {
                prev: None,
                next: last.filter(|_| more),
            },
            Start::After(_) => Ends {
                prev: first,
                next: last.filter(|_| more),
            },
            Start::Before(_) => Ends {
                prev: first.filter(|_| more),
                next: last,
            },
        }
    }
}

fn parse_cursor(params: &Params, kind: CursorKind) -> Result<Start, String> {
    match params.string("cursor").filter(|c| !c.is_empty()) {
        None => Ok(Start::First),
        Some(c) => cursor::decode(kind, &c).ok_or_else(|| "cursor is invalid".into()),
    }
}

/// Collects every parameter problem so that they are reported at once, joined by `, ` as
/// GitLab does.
#[derive(Default)]
struct Problems(Vec<String>);

impl Problems {
    /// The parsed value, or `fallback` after noting the problem; the fallback is never used
    /// because [`Problems::check`] then fails.
    fn or<T>(&mut self, r: Result<T, String>, fallback: T) -> T {
        r.unwrap_or_else(|e| {
            self.0.push(e);
            fallback
        })
    }

    /// Notes every parameter that is not in `known` (the token parameter is always allowed).
    fn unknown(&mut self, params: &Params, known: &[&str]) {
        let unknown: Vec<&str> = params
            .names()
            .filter(|n| *n != "private_token" && !known.contains(n))
            .collect();
        match unknown.as_slice() {
            [] => {}
            [one] => self.0.push(format!("{one} is not a known parameter")),
            many => self
                .0
                .push(format!("{} are not known parameters", many.join(", "))),
        }
    }

    fn check(self) -> ApiResult<()> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(ApiError::BadParams(self.0.join(", ")))
        }
    }
}

fn parse_choice<T>(
    params: &Params,
    name: &str,
    default: T,
    parse: impl Fn(&str) -> Option<T>,
) -> Result<T, String> {
    match params.string(name) {
        None => Ok(default),
        Some(s) => parse(&s).ok_or_else(|| format!("{name} does not have a valid value")),
    }
}

/// The validated parameters of `GET .../errors`.
pub(crate) struct ErrorListArgs {
    pub(crate) status: ErrorStatus,
    pub(crate) sort: ErrorSort,
    /// `query` as sent, repeated in the next page's link.
    pub(crate) query: Option<String>,
    search: Search,
    pub(crate) environment: Option<String>,
    pub(crate) release: Option<String>,
    limit: u32,
    at: Start,
}

/// The parameters `GET .../errors` takes; anything else is refused by name.
const ERROR_LIST_PARAMS: &[&str] = &[
    "status",
    "sort",
    "query",
    "environment",
    "release",
    "limit",
    "cursor",
];

impl ErrorListArgs {
    pub(crate) fn parse(params: &Params) -> ApiResult<ErrorListArgs> {
        let mut p = Problems::default();
        p.unknown(params, ERROR_LIST_PARAMS);
        let status = p.or(
            parse_choice(
                params,
                "status",
                ErrorStatus::Unresolved,
                ErrorStatus::parse,
            ),
            ErrorStatus::Unresolved,
        );
        let sort = parse_choice(params, "sort", ErrorSort::LastSeenDesc, parse_error_sort);
        // A cursor belongs to one sort order, so it is checked only once the sort is known.
        let at = match &sort {
            Ok(s) => parse_cursor(params, CursorKind::Errors(*s)),
            Err(_) => Ok(Start::First),
        };
        let sort = p.or(sort, ErrorSort::LastSeenDesc);
        let limit = p.or(parse_limit(params), DEFAULT_LIMIT);
        let at = p.or(at, Start::First);
        let query = params.string("query").filter(|q| !q.trim().is_empty());
        let search = p.or(
            search::parse(query.as_deref().unwrap_or_default()).map_err(|e| e.to_string()),
            Search::default(),
        );
        p.check()?;
        let non_empty = |name: &str| params.string(name).filter(|v| !v.is_empty());
        Ok(ErrorListArgs {
            // `is:` in the search box wins over the parameter, as on Sentry's own list.
            status: search.status.unwrap_or(status),
            sort,
            query,
            search,
            environment: non_empty("environment"),
            release: non_empty("release"),
            limit,
            at,
        })
    }

    pub(crate) fn query(&self, project_id: i64) -> ErrorQuery {
        let mut tags = self.search.tags.clone();
        for (key, value) in [
            ("environment", &self.environment),
            ("release", &self.release),
        ] {
            if let Some(value) = value {
                tags.push(TagFilter {
                    key: key.to_owned(),
                    values: vec![value.clone()],
                });
            }
        }
        ErrorQuery {
            text: self.search.text.clone(),
            tags,
            limit: self.limit,
            after: self.at.after(),
            backward: self.at.backward(),
            ..ErrorQuery::new(project_id, Some(self.status), self.sort)
        }
    }

    fn links(&self, state: &AppState, params: &Params, ends: Ends) -> Option<String> {
        let pairs = self.pairs();
        let kind = CursorKind::Errors(self.sort);
        links(state, params, kind, &pairs, ends)
    }

    /// This list's parameters with the defaults spelled out, without the cursor.
    pub(crate) fn pairs(&self) -> Vec<(&'static str, String)> {
        let mut pairs = vec![
            ("status", self.status.as_str().to_owned()),
            ("sort", error_sort_name(self.sort).to_owned()),
            ("limit", self.limit.to_string()),
        ];
        for (name, value) in [
            ("query", &self.query),
            ("environment", &self.environment),
            ("release", &self.release),
        ] {
            if let Some(v) = value {
                pairs.push((name, v.clone()));
            }
        }
        pairs
    }

    /// The opaque cursor of the page after `next`.
    pub(crate) fn cursor(&self, next: Keyset) -> String {
        cursor::encode(CursorKind::Errors(self.sort), next)
    }
}

fn parse_error_sort(s: &str) -> Option<ErrorSort> {
    match s {
        "last_seen_desc" => Some(ErrorSort::LastSeenDesc),
        "first_seen_desc" => Some(ErrorSort::FirstSeenDesc),
        "frequency_desc" => Some(ErrorSort::FrequencyDesc),
        _ => None,
    }
}

pub(crate) fn error_sort_name(s: ErrorSort) -> &'static str {
    match s {
        ErrorSort::LastSeenDesc => "last_seen_desc",
        ErrorSort::FirstSeenDesc => "first_seen_desc",
        ErrorSort::FrequencyDesc => "frequency_desc",
    }
}

/// The validated parameters of `GET .../errors/:fingerprint/events`.
struct EventListArgs {
    sort: EventSort,
    limit: u32,
    at: Start,
}

impl EventListArgs {
    fn parse(params: &Params) -> ApiResult<EventListArgs> {
        let mut p = Problems::default();
        p.unknown(params, &["sort", "limit", "cursor"]);
        let sort = parse_choice(params, "sort", EventSort::OccurredAtAsc, |s| match s {
            "occurred_at_asc" => Some(EventSort::OccurredAtAsc),
            "occurred_at_desc" => Some(EventSort::OccurredAtDesc),
            _ => None,
        });
        let at = match &sort {
            Ok(s) => parse_cursor(params, CursorKind::Events(*s)),
            Err(_) => Ok(Start::First),
        };
        let sort = p.or(sort, EventSort::OccurredAtAsc);
        let limit = p.or(parse_limit(params), DEFAULT_LIMIT);
        let at = p.or(at, Start::First);
        p.check()?;
        Ok(EventListArgs { sort, limit, at })
    }

    fn links(&self, state: &AppState, params: &Params, ends: Ends) -> Option<String> {
        let sort = match self.sort {
            EventSort::OccurredAtAsc => "occurred_at_asc",
            EventSort::OccurredAtDesc => "occurred_at_desc",
        };
        let pairs = [("sort", sort.to_owned()), ("limit", self.limit.to_string())];
        let kind = CursorKind::Events(self.sort);
        links(state, params, kind, &pairs, ends)
    }
}

/// The `Link` header of a page: `<url>; rel="prev"` and `<url>; rel="next"`, joined by `, `,
/// or `None` when there is neither.
fn links(
    state: &AppState,
    params: &Params,
    kind: CursorKind,
    pairs: &[(&str, String)],
    ends: Ends,
) -> Option<String> {
    let mut parts = Vec::with_capacity(2);
    if let Some(at) = ends.prev {
        parts.push(link(
            state,
            params,
            pairs,
            &cursor::encode_before(kind, at),
            "prev",
        ));
    }
    if let Some(at) = ends.next {
        parts.push(link(
            state,
            params,
            pairs,
            &cursor::encode(kind, at),
            "next",
        ));
    }
    (!parts.is_empty()).then(|| parts.join(", "))
}

/// `<{external url}{path}?cursor=...&{pairs}>; rel="{rel}"`. The cursor comes first because
/// GitLab reads it up to the next `&`; last, it would take the closing `>` with it. The pairs
/// are the normalised parameters of this request (defaults spelled out), so a parameter sent
/// in a body still carries over; the token never goes into a link.
fn link(
    state: &AppState,
    params: &Params,
    pairs: &[(&str, String)],
    cursor: &str,
    rel: &str,
) -> String {
    let mut q = form_urlencoded::Serializer::new(String::new());
    q.append_pair("cursor", cursor);
    for (k, v) in pairs {
        q.append_pair(k, v);
    }
    let base = state.external_url.as_str().trim_end_matches('/');
    format!("<{base}{}?{}>; rel=\"{rel}\"", params.path, q.finish())
}

fn paged(items: Vec<Value>, link: Option<String>) -> Response {
    let mut headers = HeaderMap::new();
    if let Some(v) = link.and_then(|l| HeaderValue::from_str(&l).ok()) {
        headers.insert(header::LINK, v);
    }
    (headers, Json(Value::Array(items))).into_response()
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn error_json(e: &TrackedError) -> Value {
    json!({
        "fingerprint": e.fingerprint,
        "project_id": e.project_id,
        "name": e.name,
        "description": e.description,
        "actor": e.actor,
        "event_count": e.event_count,
        "approximated_user_count": e.approximated_user_count,
        "first_seen_at": rfc3339(e.first_seen_at),
        "last_seen_at": rfc3339(e.last_seen_at),
        "status": e.status.as_str(),
        "stats": {"frequency": {"24h": e.frequency_24h}},
    })
}

fn event_json(e: &StoredEvent) -> Value {
    json!({
        "fingerprint": e.fingerprint,
        "project_id": e.project_id,
        // GitLab's client reads an event's project as `projectId` (and an error's as
        // `project_id`); both spellings are sent, unknown keys are ignored by clients.
        "projectId": e.project_id,
        // Stored as the bytes the SDK sent; events are UTF-8 JSON, so this is lossless for
        // every payload ingestion accepted.
        "payload": String::from_utf8_lossy(&e.payload),
        "name": e.name,
        "description": e.description,
        "actor": e.actor,
        "environment": e.environment,
        "platform": e.platform,
    })
}

fn message_json(m: &StoredMessage) -> Value {
    json!({
        "project_id": m.project_id,
        "projectId": m.project_id,
        "event_id": m.event_id,
        "eventId": m.event_id,
        "timestamp": rfc3339(m.occurred_at),
        "level": m.level,
        "message": m.message,
        "release": m.release,
        "environment": m.environment,
        "platform": m.platform,
    })
}

/// Which list (and order) a cursor was made for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CursorKind {
    Errors(ErrorSort),
    Events(EventSort),
    Messages,
}

pub(crate) mod cursor {
    //! `base64url(<tag>:<key>:<id>)`: opaque to clients, trivially checked here.
    use super::*;

    fn tag(kind: CursorKind) -> &'static str {
        match kind {
            CursorKind::Errors(ErrorSort::LastSeenDesc) => "el",
            CursorKind::Errors(ErrorSort::FirstSeenDesc) => "ef",
            CursorKind::Errors(ErrorSort::FrequencyDesc) => "ec",
            CursorKind::Events(EventSort::OccurredAtAsc) => "va",
            CursorKind::Events(EventSort::OccurredAtDesc) => "vd",
            CursorKind::Messages => "m",
        }
    }

    /// The cursor of the page after `at`.
    pub fn encode(kind: CursorKind, at: Keyset) -> String {
        URL_SAFE_NO_PAD.encode(format!("{}:{}:{}", tag(kind), at.key, at.id))
    }

    /// The cursor of the page that ends just before `at`.
    pub fn encode_before(kind: CursorKind, at: Keyset) -> String {
        URL_SAFE_NO_PAD.encode(format!("{}:{}:{}:p", tag(kind), at.key, at.id))
    }

    /// The row a forward (`next`) cursor of this kind of list points after; `None` for
    /// anything else, a backward cursor included (the web UI pages forwards only).
    pub fn decode_after(kind: CursorKind, raw: &str) -> Option<Keyset> {
        match decode(kind, raw)? {
            Start::After(at) => Some(at),
            Start::First | Start::Before(_) => None,
        }
    }

    /// `None` for anything that is not a cursor this kind of list made.
    pub(super) fn decode(kind: CursorKind, raw: &str) -> Option<Start> {
        // Longer than any real cursor: refuse before decoding attacker-sized input.
        if raw.len() > 64 {
            return None;
        }
        let bytes = URL_SAFE_NO_PAD.decode(raw.trim_end_matches('=')).ok()?;
        let text = std::str::from_utf8(&bytes).ok()?;
        let mut parts = text.split(':');
        let (t, key, id) = (parts.next()?, parts.next()?, parts.next()?);
        let backwards = match parts.next() {
            None => false,
            Some("p") => true,
            Some(_) => return None,
        };
        if parts.next().is_some() || t != tag(kind) {
            return None;
        }
        let key: i64 = key.parse().ok()?;
        let id: i64 = id.parse().ok()?;
        let at = Keyset { key, id };
        (id > 0).then_some(if backwards {
            Start::Before(at)
        } else {
            Start::After(at)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ERRORS: CursorKind = CursorKind::Errors(ErrorSort::LastSeenDesc);

    #[test]
    fn cursor_round_trips() {
        let at = Keyset {
            key: 1_700_000_000_123,
            id: 42,
        };
        let c = cursor::encode(ERRORS, at);
        assert!(c
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        assert_eq!(cursor::decode(ERRORS, &c), Some(Start::After(at)));
        let b = cursor::encode_before(ERRORS, at);
        assert_eq!(cursor::decode(ERRORS, &b), Some(Start::Before(at)));
    }

    #[test]
    fn cursor_of_another_sort_is_refused() {
        let c = cursor::encode(ERRORS, Keyset { key: 1, id: 1 });
        assert_eq!(
            cursor::decode(CursorKind::Errors(ErrorSort::FrequencyDesc), &c),
            None
        );
        assert_eq!(cursor::decode(CursorKind::Messages, &c), None);
    }

    #[test]
    fn garbage_cursors_are_refused() {
        for raw in [
            "",
            "!!!",
            "bm90IGEgY3Vyc29y",                    // "not a cursor"
            &URL_SAFE_NO_PAD.encode("el:1"),       // too few parts
            &URL_SAFE_NO_PAD.encode("el:1:2:3"),   // too many
            &URL_SAFE_NO_PAD.encode("el:1:2:p:p"), // too many
            &URL_SAFE_NO_PAD.encode("el:1:2:"),    // empty direction
            &URL_SAFE_NO_PAD.encode("el:x:2"),     // key not a number
            &URL_SAFE_NO_PAD.encode("el:1:0"),     // ids start at 1
            &"A".repeat(100),
        ] {
            assert_eq!(cursor::decode(ERRORS, raw), None, "{raw:?}");
        }
    }

    #[test]
    fn negative_keys_are_fine() {
        let at = Keyset { key: -5, id: 3 };
        assert_eq!(
            cursor::decode(ERRORS, &cursor::encode(ERRORS, at)),
            Some(Start::After(at))
        );
    }
}
