//! Sentry's web API under `/api/0/`: the subset GitLab's "Sentry" error tracking and Grafana's
//! Sentry data source read (docs/sentry-web-api.md). It owns the Sentry shapes (projects,
//! organizations, issues, the latest event and its `entries`, event counts per interval), the
//! Sentry-style error bodies `{"detail": ...}`, the `Link` header in Sentry's format and its
//! cursors, and the mapping of names: an organization is a namespace (`acme/web` is the slug
//! `acme~web`), a project slug is the project's path, an issue id is the error's row id.
//!
//! Access is project membership as everywhere else: Reporter reads, Developer changes a status,
//! and a project the caller cannot read is a 404, never a 403. The queries are `store::read`'s;
//! a status change goes through the same store operation as the read API's.

use std::collections::BTreeMap;

use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, MethodRouter};
use axum::{Json, Router};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, NaiveDateTime, SecondsFormat, TimeZone, Utc};
use serde_json::{json, Map, Value};

use super::api::{self, ApiError, Caller, Params};
use super::AppState;
use crate::domain::search::{self, Search};
use crate::store::read::{
    ErrorQuery, ErrorSort, ErrorStatus, EventCountQuery, IssueExtras, Keyset, TagFilter,
    TrackedError,
};
use crate::store::{AccessLevel, Project, StoreError};

/// Errors of this API, answered in Sentry's shape `{"detail": ...}`.
#[derive(Debug, thiserror::Error)]
pub enum SentryError {
    #[error("unauthorized")]
    Unauthorized,
    #[error("forbidden")]
    Forbidden,
    #[error("not found")]
    NotFound,
    #[error("bad request: {0}")]
    BadRequest(String),
    #[error("storage failed")]
    Store(#[from] StoreError),
}

impl IntoResponse for SentryError {
    fn into_response(self) -> Response {
        let (status, detail) = match &self {
            SentryError::Unauthorized => (StatusCode::UNAUTHORIZED, "Invalid token".to_owned()),
            SentryError::Forbidden => (
                StatusCode::FORBIDDEN,
                "You do not have permission to perform this action.".to_owned(),
            ),
            SentryError::NotFound => (
                StatusCode::NOT_FOUND,
                "The requested resource does not exist".to_owned(),
            ),
            SentryError::BadRequest(d) => (StatusCode::BAD_REQUEST, d.clone()),
            SentryError::Store(e) => {
                tracing::error!(error = %e, cause = ?std::error::Error::source(e), "Sentry API request failed");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Internal Error".to_owned(),
                )
            }
        };
        if status.is_client_error() {
            tracing::debug!(%status, error = %self, "request refused");
        }
        (status, Json(json!({ "detail": detail }))).into_response()
    }
}

/// Authentication and parameter failures of the shared helpers, in this API's terms. A project
/// the caller cannot see is a 404 here as there.
impl From<ApiError> for SentryError {
    fn from(e: ApiError) -> Self {
        match e {
            ApiError::Unauthorized => SentryError::Unauthorized,
            ApiError::Forbidden | ApiError::InsufficientScope => SentryError::Forbidden,
            ApiError::ProjectNotFound | ApiError::NotFound(_) => SentryError::NotFound,
            ApiError::BadParams(m) => SentryError::BadRequest(m),
            ApiError::Invalid(v) => SentryError::BadRequest(v.to_string()),
            ApiError::Conflict(m) => SentryError::BadRequest(m.to_owned()),
            ApiError::Store(e) => SentryError::Store(e),
        }
    }
}

type SentryResult<T> = Result<T, SentryError>;

/// The routes, to be nested at `/api/0`. Sentry's paths end in `/`; the same paths without it
/// answer too, because a redirect would not be followed by GitLab.
pub fn routes() -> Router<AppState> {
    let mut r = Router::new();
    let routes: Vec<(&str, MethodRouter<AppState>)> = vec![
        ("/projects/", get(list_projects)),
        ("/projects/{org}/{project}/issues/", get(project_issues)),
        ("/issues/{id}/", get(show_issue).put(update_issue)),
        ("/issues/{id}/events/latest/", get(latest_event)),
        ("/issues/{id}/plugins/gitlab/link/", post(plugin_link)),
        ("/organizations/", get(list_organizations)),
        ("/organizations/{org}/projects/", get(organization_projects)),
        ("/organizations/{org}/issues/", get(organization_issues)),
        ("/organizations/{org}/events-stats/", get(events_stats)),
        ("/organizations/{org}/repos/", get(repos)),
    ];
    for (path, method_router) in routes {
        r = r
            .route(path, method_router.clone())
            .route(path.trim_end_matches('/'), method_router);
    }
    r.fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
}

async fn not_found() -> Response {
    SentryError::NotFound.into_response()
}

async fn method_not_allowed() -> Response {
    (
        StatusCode::METHOD_NOT_ALLOWED,
        Json(json!({"detail": "Method not allowed."})),
    )
        .into_response()
}

// ---------------------------------------------------------------------------------------------
// Naming and access

/// The one-segment organization slug of a namespace: `/` becomes `~`, which GitLab never allows
/// in a path, so the slug maps back unambiguously (`acme/web` ⇄ `acme~web`).
pub fn organization_slug(namespace_path: &str) -> String {
    namespace_path.replace('/', "~")
}

/// The namespace path an organization slug names.
pub fn namespace_of(slug: &str) -> String {
    slug.replace('~', "/")
}

/// A stable decimal id for a namespace, which has no row of its own: 48 bits of SHA-256 over
/// its lower-cased path (paths are case-insensitive), small enough for any JSON number reader.
fn organization_id(namespace_path: &str) -> String {
    use sha2::{Digest, Sha256};
    let d = Sha256::digest(namespace_path.to_ascii_lowercase().as_bytes());
    let mut b = [0u8; 8];
    b[2..].copy_from_slice(&d[..6]);
    u64::from_be_bytes(b).to_string()
}

/// The projects the caller may read (Reporter or higher; an administrator reads all).
async fn readable_projects(state: &AppState, caller: &Caller) -> SentryResult<Vec<Project>> {
    Ok(if caller.is_admin() {
        state.store.list_projects().await?
    } else {
        state
            .store
            .member_projects(caller.user.id, AccessLevel::REPORTER.0)
            .await?
    })
}

/// Checks that the caller may read `project` and, for a change, act at `min`. A caller below
/// Reporter cannot see the project at all (404); one who can see it but is below `min` is told
/// 403.
async fn check_access(
    state: &AppState,
    caller: &Caller,
    project: &Project,
    min: AccessLevel,
) -> SentryResult<()> {
    if caller.is_admin() {
        return Ok(());
    }
    let level = state
        .store
        .member_level(project.id, caller.user.id)
        .await?
        .unwrap_or(0);
    if level < AccessLevel::REPORTER.0 {
        return Err(SentryError::NotFound);
    }
    if level < min.0 {
        return Err(SentryError::Forbidden);
    }
    Ok(())
}

/// The error `id` names and its project, if the caller may read it (and act on it at `min`).
async fn issue_access(
    state: &AppState,
    params: &Params,
    id: &str,
    min: AccessLevel,
) -> SentryResult<(TrackedError, Project)> {
    let caller = api::authenticate(state, params).await?;
    if !super::is_numeric_id(id) {
        return Err(SentryError::NotFound);
    }
    let id: i64 = id.parse().map_err(|_| SentryError::NotFound)?;
    settle_counts(state).await;
    let error = state
        .store
        .error_by_id(id)
        .await?
        .ok_or(SentryError::NotFound)?;
    let project = state
        .store
        .project_by_id(error.project_id)
        .await?
        .ok_or(SentryError::NotFound)?;
    check_access(state, &caller, &project, min).await?;
    Ok((error, project))
}

/// See `http::read::settle_counts`: counts shown include every event acknowledged before.
async fn settle_counts(state: &AppState) {
    if let Err(e) = state.writer.settle_counts().await {
        tracing::warn!(error = %e, "error counts not settled before a read");
    }
}

// ---------------------------------------------------------------------------------------------
// Projects and organizations

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Organizations (namespaces) by lower-cased path, each with the earliest creation time of its
/// projects as its own, so every answer shows the same organization the same way.
struct Organizations(BTreeMap<String, (String, DateTime<Utc>)>);

impl Organizations {
    fn of(projects: &[Project]) -> Organizations {
        let mut map: BTreeMap<String, (String, DateTime<Utc>)> = BTreeMap::new();
        for p in projects {
            let entry = map
                .entry(p.namespace_path.to_ascii_lowercase())
                .or_insert_with(|| (p.namespace_path.clone(), p.created_at));
            entry.1 = entry.1.min(p.created_at);
        }
        Organizations(map)
    }

    fn json(&self, namespace_path: &str) -> Value {
        let created = self
            .0
            .get(&namespace_path.to_ascii_lowercase())
            .map(|o| o.1)
            .unwrap_or_default();
        organization_json(namespace_path, created)
    }
}

fn organization_json(namespace_path: &str, created: DateTime<Utc>) -> Value {
    json!({
        "id": organization_id(namespace_path),
        "slug": organization_slug(namespace_path),
        "name": namespace_path,
        "dateCreated": rfc3339(created),
        "status": {"id": "active", "name": "active"},
        "require2FA": false,
        "isEarlyAdopter": false,
        "features": [],
    })
}

fn team_json(namespace_path: &str) -> Value {
    json!({
        "id": organization_id(namespace_path),
        "slug": organization_slug(namespace_path),
        "name": namespace_path,
    })
}

/// `environments` is left empty here: GitLab reads this list before every detail and update,
/// and never the environments; [`organization_projects`] fills them for Grafana.
fn project_json(p: &Project, orgs: &Organizations) -> Value {
    json!({
        "id": p.id.to_string(),
        "slug": p.path,
        "name": p.name,
        "status": "active",
        "platform": null,
        "dateCreated": rfc3339(p.created_at),
        "isMember": true,
        "hasAccess": true,
        "isBookmarked": false,
        "isPublic": false,
        "environments": [],
        "features": [],
        "organization": orgs.json(&p.namespace_path),
        "team": team_json(&p.namespace_path),
        "teams": [team_json(&p.namespace_path)],
    })
}

/// A whole list in one page: both `Link` parts say there is nothing more, so clients that walk
/// `rel="next"` stop at once.
fn single_page(items: Vec<Value>, state: &AppState, params: &Params) -> Response {
    let link = sentry_link(
        state,
        params,
        &[],
        (&SINGLE_PAGE_CURSOR.to_owned(), false),
        (&SINGLE_PAGE_CURSOR.to_owned(), false),
    );
    json_with_link(Value::Array(items), link)
}

/// The cursor of lists that are never split into pages.
const SINGLE_PAGE_CURSOR: &str = "0:0:0";

async fn list_projects(State(state): State<AppState>, params: Params) -> SentryResult<Response> {
    let caller = api::authenticate(&state, &params).await?;
    let projects = readable_projects(&state, &caller).await?;
    let orgs = Organizations::of(&projects);
    let items = projects.iter().map(|p| project_json(p, &orgs)).collect();
    Ok(single_page(items, &state, &params))
}

async fn list_organizations(
    State(state): State<AppState>,
    params: Params,
) -> SentryResult<Response> {
    let caller = api::authenticate(&state, &params).await?;
    let projects = readable_projects(&state, &caller).await?;
    let orgs = Organizations::of(&projects);
    let items = orgs
        .0
        .values()
        .map(|(path, created)| organization_json(path, *created))
        .collect();
    Ok(single_page(items, &state, &params))
}

/// The caller's readable projects in the organization `slug`; 404 when there are none, so an
/// organization the caller has nothing in looks like one that does not exist.
async fn organization_projects_of(
    state: &AppState,
    caller: &Caller,
    slug: &str,
) -> SentryResult<(Vec<Project>, Organizations)> {
    let namespace = namespace_of(slug);
    let all = readable_projects(state, caller).await?;
    let orgs = Organizations::of(&all);
    let projects: Vec<Project> = all
        .into_iter()
        .filter(|p| p.namespace_path.eq_ignore_ascii_case(&namespace))
        .collect();
    if projects.is_empty() {
        return Err(SentryError::NotFound);
    }
    Ok((projects, orgs))
}

async fn organization_projects(
    State(state): State<AppState>,
    Path(org): Path<String>,
    params: Params,
) -> SentryResult<Response> {
    let caller = api::authenticate(&state, &params).await?;
    let (projects, orgs) = organization_projects_of(&state, &caller, &org).await?;
    let mut items = Vec::with_capacity(projects.len());
    for p in &projects {
        let mut item = project_json(p, &orgs);
        // Grafana offers these in its environment picker.
        item["environments"] = json!(state.store.project_environments(p.id).await?);
        items.push(item);
    }
    Ok(single_page(items, &state, &params))
}

/// GitLab asks for the organization's repositories after "Create issue" and only logs a failure;
/// there are none to link.
async fn repos(
    State(state): State<AppState>,
    Path(org): Path<String>,
    params: Params,
) -> SentryResult<Json<Value>> {
    let caller = api::authenticate(&state, &params).await?;
    organization_projects_of(&state, &caller, &org).await?;
    Ok(Json(json!([])))
}

/// GitLab links the GitLab issue it created to the Sentry issue; nothing here keeps that link.
async fn plugin_link(
    State(state): State<AppState>,
    Path(id): Path<String>,
    params: Params,
) -> SentryResult<Json<Value>> {
    issue_access(&state, &params, &id, AccessLevel::REPORTER).await?;
    Ok(Json(json!({})))
}

// ---------------------------------------------------------------------------------------------
// Issues

/// Base 36 in upper case, as Sentry writes the number of a short id.
fn base36(mut n: u64) -> String {
    const DIGITS: &[u8; 36] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ";
    let mut out = Vec::new();
    loop {
        out.push(DIGITS[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8(out).unwrap_or_default()
}

/// `SHOP-1F`: the project's path in upper case and the error's number within the project.
pub fn short_id(project: &Project, seq: i64) -> String {
    format!(
        "{}-{}",
        project.path.to_ascii_uppercase(),
        base36(seq.max(0) as u64)
    )
}

/// Sentry's title: `Type: value` for an exception, the message for a message event.
fn issue_title(e: &TrackedError, is_message: bool) -> String {
    if is_message || e.description.is_empty() || e.description == e.name {
        e.name.clone()
    } else {
        format!("{}: {}", e.name, e.description)
    }
}

/// The function in `function(module)`, the actor's form when it is not a transaction name.
fn actor_function(actor: &str) -> Option<&str> {
    let (function, rest) = actor.split_once('(')?;
    rest.ends_with(')').then_some(function)
}

fn release_json(version: Option<&String>) -> Value {
    match version {
        None => Value::Null,
        Some(v) => json!({
            "version": v,
            "shortVersion": v,
            "lastCommit": null,
            "dateCreated": null,
        }),
    }
}

fn issue_json(state: &AppState, e: &TrackedError, p: &Project, extras: &IssueExtras) -> Value {
    let base = state.external_url.as_str().trim_end_matches('/');
    let title = issue_title(e, extras.is_message);
    let metadata = if extras.is_message {
        json!({"title": title, "value": e.description, "type": null, "filename": null, "function": null})
    } else {
        json!({
            "type": e.name,
            "value": e.description,
            "filename": null,
            "function": actor_function(&e.actor),
        })
    };
    json!({
        "id": e.id.to_string(),
        "shortId": short_id(p, e.short_seq),
        "title": title,
        "culprit": e.actor,
        "permalink": format!("{base}/api/0/issues/{}/", e.id),
        "logger": null,
        "level": extras.level.as_deref().unwrap_or("error"),
        "status": e.status.as_str(),
        "statusDetails": {},
        "substatus": null,
        "isPublic": false,
        "platform": e.platform.as_deref().unwrap_or("other"),
        "project": {"id": p.id.to_string(), "name": p.name, "slug": p.path},
        "type": if extras.is_message { "default" } else { "error" },
        "metadata": metadata,
        "numComments": 0,
        "assignedTo": null,
        "isBookmarked": false,
        "isSubscribed": false,
        "hasSeen": false,
        "isUnhandled": false,
        "annotations": [],
        "shareId": null,
        "count": e.event_count.to_string(),
        "userCount": e.approximated_user_count,
        "firstSeen": rfc3339(e.first_seen_at),
        "lastSeen": rfc3339(e.last_seen_at),
        "stats": {"24h": e.frequency_24h},
        "firstRelease": release_json(extras.first_release.as_ref()),
        "lastRelease": release_json(extras.last_release.as_ref()),
    })
}

async fn issues_json(
    state: &AppState,
    errors: &[TrackedError],
    projects: &[Project],
) -> SentryResult<Vec<Value>> {
    let extras = state
        .store
        .issue_extras(errors.iter().map(|e| e.id).collect())
        .await?;
    let none = IssueExtras::default();
    Ok(errors
        .iter()
        .filter_map(|e| {
            let p = projects.iter().find(|p| p.id == e.project_id)?;
            Some(issue_json(state, e, p, extras.get(&e.id).unwrap_or(&none)))
        })
        .collect())
}

async fn show_issue(
    State(state): State<AppState>,
    Path(id): Path<String>,
    params: Params,
) -> SentryResult<Json<Value>> {
    let (error, project) = issue_access(&state, &params, &id, AccessLevel::REPORTER).await?;
    let issue = issues_json(&state, std::slice::from_ref(&error), &[project]).await?;
    issue
        .into_iter()
        .next()
        .map(Json)
        .ok_or(SentryError::NotFound)
}

/// Resolve, ignore and undo. The change is the read API's own store operation, so a later
/// event reopens a resolved error here exactly as there.
async fn update_issue(
    State(state): State<AppState>,
    Path(id): Path<String>,
    params: Params,
) -> SentryResult<Json<Value>> {
    let (error, project) = issue_access(&state, &params, &id, AccessLevel::DEVELOPER).await?;
    params.check_body()?;
    let status = match params.string("status") {
        None => return Err(SentryError::BadRequest("status is required".into())),
        Some(s) => match s.as_str() {
            // Releases are not tracked, so "resolved in the next release" is resolved now.
            "resolvedInNextRelease" => ErrorStatus::Resolved,
            other => ErrorStatus::parse(other).ok_or_else(|| {
                SentryError::BadRequest(format!("\"{other}\" is not a valid choice."))
            })?,
        },
    };
    let updated = super::ops::set_error_status(&state, project.id, error.fingerprint, status)
        .await?
        .ok_or(SentryError::NotFound)?;
    tracing::info!(
        issue = updated.id,
        status = status.as_str(),
        "issue status changed"
    );
    Ok(Json(
        json!({"status": updated.status.as_str(), "statusDetails": {}}),
    ))
}

// ---------------------------------------------------------------------------------------------
// Issue lists, their search and paging

/// Most issues per page of a project's list (Sentry's own limit) and of an organization's
/// (Grafana asks for up to this many).
const PROJECT_MAX_LIMIT: u32 = 100;
const ORGANIZATION_MAX_LIMIT: u32 = 10_000;
const DEFAULT_LIMIT: u32 = 100;

/// Sentry's search as GitLab and Grafana send it (`is:unresolved NoMethodError`), in the read
/// API's syntax (`domain::search`: `is:`, `environment:`, `release:`, `level:`, `user:` and tag
/// terms, quotes, free text). An absent `query` means `is:unresolved`, as in Sentry; a present one
/// without `is:` lists every status.
fn parse_search(query: Option<&str>) -> SentryResult<Search> {
    let Some(query) = query else {
        return Ok(Search {
            status: Some(ErrorStatus::Unresolved),
            ..Search::default()
        });
    };
    search::parse(query).map_err(|e| SentryError::BadRequest(e.to_string()))
}

/// An `environment` filter on errors, as `environment:<name>` in the query makes it.
fn environment_filter(environment: String) -> TagFilter {
    TagFilter {
        key: "environment".into(),
        values: vec![environment],
    }
}

/// Sentry's sorts: none or `date` is last seen, `new` first seen, `freq` the event count.
/// `priority`, `trend` and `inbox` fall back to last seen and `user` to the event count, the
/// nearest orders that have an index.
fn parse_sort(sort: Option<&str>) -> SentryResult<ErrorSort> {
    match sort.unwrap_or("") {
        "" | "date" | "priority" | "trend" | "inbox" => Ok(ErrorSort::LastSeenDesc),
        "new" => Ok(ErrorSort::FirstSeenDesc),
        "freq" | "user" => Ok(ErrorSort::FrequencyDesc),
        other => Err(SentryError::BadRequest(format!("Invalid sort: {other}"))),
    }
}

fn parse_limit(params: &Params, max: u32) -> SentryResult<u32> {
    match params.int("limit") {
        Err(_) => Err(SentryError::BadRequest("limit must be an integer".into())),
        Ok(None) => Ok(DEFAULT_LIMIT.min(max)),
        Ok(Some(n)) if n >= 1 => Ok(n.min(i64::from(max)) as u32),
        Ok(Some(_)) => Err(SentryError::BadRequest("limit must be positive".into())),
    }
}

/// Where a page starts, as a cursor says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Position {
    /// The first page.
    Start,
    /// The rows after this one.
    After(Keyset),
    /// The rows before this one (a `previous` link).
    Before(Keyset),
}

mod cursor {
    //! `base64url(<sort>:<n|p|s>:<key>:<id>)`: opaque, without `,` (GitLab splits the `Link`
    //! header on commas) and unchanged by URL encoding, so it comes back verbatim.
    use super::*;

    fn tag(sort: ErrorSort) -> &'static str {
        match sort {
            ErrorSort::LastSeenDesc => "l",
            ErrorSort::FirstSeenDesc => "f",
            ErrorSort::FrequencyDesc => "c",
        }
    }

    pub fn encode(sort: ErrorSort, at: Position) -> String {
        let text = match at {
            Position::Start => format!("{}:s:0:0", tag(sort)),
            Position::After(k) => format!("{}:n:{}:{}", tag(sort), k.key, k.id),
            Position::Before(k) => format!("{}:p:{}:{}", tag(sort), k.key, k.id),
        };
        URL_SAFE_NO_PAD.encode(text)
    }

    /// `None` for anything that is not a cursor of this sort order.
    pub fn decode(sort: ErrorSort, raw: &str) -> Option<Position> {
        if raw.len() > 96 {
            return None;
        }
        let bytes = URL_SAFE_NO_PAD.decode(raw.trim_end_matches('=')).ok()?;
        let text = std::str::from_utf8(&bytes).ok()?;
        let mut parts = text.split(':');
        let (t, dir, key, id) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() || t != tag(sort) {
            return None;
        }
        let at = Keyset {
            key: key.parse().ok()?,
            id: id.parse().ok()?,
        };
        match dir {
            "s" => Some(Position::Start),
            "n" if at.id > 0 => Some(Position::After(at)),
            "p" if at.id > 0 => Some(Position::Before(at)),
            _ => None,
        }
    }
}

/// The validated parameters of an issue list.
struct IssueListArgs {
    search: Search,
    sort: ErrorSort,
    limit: u32,
    position: Position,
    /// `start`/`end` or `statsPeriod`, unix milliseconds.
    seen_between: Option<(i64, i64)>,
}

impl IssueListArgs {
    fn parse(params: &Params, max_limit: u32) -> SentryResult<IssueListArgs> {
        let mut search = parse_search(params.string("query").as_deref())?;
        if let Some(env) = params.string("environment").filter(|e| !e.is_empty()) {
            search.tags.push(environment_filter(env));
        }
        let sort = parse_sort(params.string("sort").as_deref())?;
        let limit = parse_limit(params, max_limit)?;
        let position = match params.string("cursor").filter(|c| !c.is_empty()) {
            None => Position::Start,
            Some(c) => cursor::decode(sort, &c)
                .ok_or_else(|| SentryError::BadRequest("Invalid cursor parameter.".into()))?,
        };
        Ok(IssueListArgs {
            search,
            sort,
            limit,
            position,
            seen_between: time_range(params)?,
        })
    }

    fn query(&self, projects: &[Project]) -> Option<ErrorQuery> {
        let (first, rest) = projects.split_first()?;
        let (after, backward) = match self.position {
            Position::Start => (None, false),
            Position::After(k) => (Some(k), false),
            Position::Before(k) => (Some(k), true),
        };
        Some(ErrorQuery {
            other_projects: rest.iter().map(|p| p.id).collect(),
            text: self.search.text.clone(),
            tags: self.search.tags.clone(),
            seen_between: self.seen_between,
            limit: self.limit,
            after,
            backward,
            ..ErrorQuery::new(first.id, self.search.status, self.sort)
        })
    }
}

/// Runs an issue list and answers it with Sentry's `Link` header.
async fn issue_list(
    state: &AppState,
    params: &Params,
    raw_query: Option<&str>,
    args: IssueListArgs,
    projects: &[Project],
) -> SentryResult<Response> {
    settle_counts(state).await;
    let Some(query) = args.query(projects) else {
        return Ok(single_page(Vec::new(), state, params));
    };
    let page = state.store.list_errors(query).await?;
    let items = issues_json(state, &page.items, projects).await?;
    let first = page.items.first().map(|e| e.keyset(args.sort));
    let last = page.items.last().map(|e| e.keyset(args.sort));
    // Which neighbours exist. Walking forwards, the store says whether more follow, and a page
    // reached through a cursor has the rows it came from before it; walking backwards, the
    // reverse.
    let (has_prev, has_next) = match args.position {
        Position::Start => (false, page.next.is_some()),
        Position::After(_) => (first.is_some(), page.next.is_some()),
        Position::Before(_) => (page.next.is_some(), last.is_some()),
    };
    let prev_cursor = cursor::encode(args.sort, first.map_or(Position::Start, Position::Before));
    let next_cursor = cursor::encode(args.sort, last.map_or(args.position, Position::After));
    let carried = carried_pairs(raw_query);
    let link = sentry_link(
        state,
        params,
        &carried,
        (&prev_cursor, has_prev),
        (&next_cursor, has_next),
    );
    Ok(json_with_link(Value::Array(items), link))
}

async fn project_issues(
    State(state): State<AppState>,
    Path((org, project)): Path<(String, String)>,
    RawQuery(raw_query): RawQuery,
    params: Params,
) -> SentryResult<Response> {
    let caller = api::authenticate(&state, &params).await?;
    let path = format!("{}/{project}", namespace_of(&org));
    let project = state
        .store
        .project_by_path(&path)
        .await?
        .ok_or(SentryError::NotFound)?;
    check_access(&state, &caller, &project, AccessLevel::REPORTER).await?;
    let args = IssueListArgs::parse(&params, PROJECT_MAX_LIMIT)?;
    issue_list(&state, &params, raw_query.as_deref(), args, &[project]).await
}

/// The organization's readable projects, narrowed to the repeated `project=<id>` parameters
/// (`-1`, or none, means all). Asking for a project the caller cannot read is a 404.
async fn selected_projects(
    state: &AppState,
    caller: &Caller,
    org: &str,
    raw_query: Option<&str>,
) -> SentryResult<Vec<Project>> {
    let (projects, _) = organization_projects_of(state, caller, org).await?;
    let wanted: Vec<String> = form_urlencoded::parse(raw_query.unwrap_or("").as_bytes())
        .filter(|(k, _)| k == "project" || k == "project[]")
        .map(|(_, v)| v.into_owned())
        .filter(|v| v != "-1" && !v.is_empty())
        .collect();
    if wanted.is_empty() {
        return Ok(projects);
    }
    let mut selected = Vec::new();
    for w in &wanted {
        let p = projects
            .iter()
            .find(|p| p.id.to_string() == *w)
            .ok_or(SentryError::NotFound)?;
        if !selected.iter().any(|s: &Project| s.id == p.id) {
            selected.push(p.clone());
        }
    }
    Ok(selected)
}

async fn organization_issues(
    State(state): State<AppState>,
    Path(org): Path<String>,
    RawQuery(raw_query): RawQuery,
    params: Params,
) -> SentryResult<Response> {
    let caller = api::authenticate(&state, &params).await?;
    let projects = selected_projects(&state, &caller, &org, raw_query.as_deref()).await?;
    let args = IssueListArgs::parse(&params, ORGANIZATION_MAX_LIMIT)?;
    issue_list(&state, &params, raw_query.as_deref(), args, &projects).await
}

/// The request's own query pairs that a page link repeats: all but the cursor and a token, in
/// their order, repeated `project=` included.
fn carried_pairs(raw_query: Option<&str>) -> Vec<(String, String)> {
    form_urlencoded::parse(raw_query.unwrap_or("").as_bytes())
        .filter(|(k, _)| k != "cursor" && k != "private_token")
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// Sentry's `Link` header, both parts always present:
/// `<url>; rel="previous"; results="false"; cursor="C1", <url>; rel="next"; results="true"; cursor="C2"`.
/// The URLs are form-encoded, so a comma in a parameter becomes `%2C` and the header still
/// splits on `,` into exactly two parts.
fn sentry_link(
    state: &AppState,
    params: &Params,
    carried: &[(String, String)],
    prev: (&String, bool),
    next: (&String, bool),
) -> String {
    let base = state.external_url.as_str().trim_end_matches('/');
    let part = |rel: &str, (cursor, results): (&String, bool)| {
        let mut q = form_urlencoded::Serializer::new(String::new());
        for (k, v) in carried {
            q.append_pair(k, v);
        }
        q.append_pair("cursor", cursor);
        format!(
            "<{base}{}?{}>; rel=\"{rel}\"; results=\"{results}\"; cursor=\"{cursor}\"",
            params.path,
            q.finish()
        )
    };
    format!("{}, {}", part("previous", prev), part("next", next))
}

fn json_with_link(body: Value, link: String) -> Response {
    let mut headers = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_str(&link) {
        headers.insert(header::LINK, v);
    }
    (headers, Json(body)).into_response()
}

// ---------------------------------------------------------------------------------------------
// Time ranges and event counts

/// A time as Grafana (`2006-01-02T15:04:05`, UTC without a zone) or RFC 3339 writes it.
fn parse_time(name: &str, raw: &str) -> SentryResult<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(raw) {
        return Ok(t.with_timezone(&Utc));
    }
    for format in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%d %H:%M:%S",
    ] {
        if let Ok(t) = NaiveDateTime::parse_from_str(raw, format) {
            return Ok(Utc.from_utc_datetime(&t));
        }
    }
    Err(SentryError::BadRequest(format!(
        "{name} is not a valid date: {raw}"
    )))
}

/// `30s`, `5m`, `1h`, `14d`, `2w` in milliseconds.
fn parse_duration(name: &str, raw: &str) -> SentryResult<i64> {
    let bad = || SentryError::BadRequest(format!("{name} is not a valid duration: {raw}"));
    let split = raw.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (n, unit) = raw.split_at(split);
    let n: i64 = n.parse().map_err(|_| bad())?;
    let unit_ms = match unit {
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        "w" => 7 * 86_400_000,
        _ => return Err(bad()),
    };
    n.checked_mul(unit_ms).filter(|ms| *ms > 0).ok_or_else(bad)
}

/// `start`/`end` (either may be left out) or `statsPeriod` ending now; `None` when neither.
fn time_range(params: &Params) -> SentryResult<Option<(i64, i64)>> {
    let start = params.string("start").filter(|s| !s.is_empty());
    let end = params.string("end").filter(|s| !s.is_empty());
    if start.is_some() || end.is_some() {
        let from = match start {
            Some(s) => parse_time("start", &s)?.timestamp_millis(),
            None => 0,
        };
        let until = match end {
            Some(e) => parse_time("end", &e)?.timestamp_millis(),
            None => Utc::now().timestamp_millis(),
        };
        if until < from {
            return Err(SentryError::BadRequest("start must be before end".into()));
        }
        return Ok(Some((from, until)));
    }
    match params.string("statsPeriod").filter(|s| !s.is_empty()) {
        Some(p) => {
            let now = Utc::now().timestamp_millis();
            Ok(Some((now - parse_duration("statsPeriod", &p)?, now)))
        }
        None => Ok(None),
    }
}

/// Most buckets one `events-stats` answer holds.
const MAX_BUCKETS: i64 = 10_000;

/// `{"data": [[unix_seconds, [{"count": n}]], ...]}`: events per `interval` (default `1h`)
/// from `start` to `end` (default the last 24 hours), every bucket present, zeros included.
/// Buckets start at multiples of the interval, as Sentry aligns them.
async fn events_stats(
    State(state): State<AppState>,
    Path(org): Path<String>,
    RawQuery(raw_query): RawQuery,
    params: Params,
) -> SentryResult<Json<Value>> {
    let caller = api::authenticate(&state, &params).await?;
    let projects = selected_projects(&state, &caller, &org, raw_query.as_deref()).await?;
    if let Some(y) = params.string("yAxis").filter(|y| y != "count()") {
        return Err(SentryError::BadRequest(format!(
            "yAxis {y} is not supported; only count() is"
        )));
    }
    let bucket_ms = match params.string("interval").filter(|i| !i.is_empty()) {
        Some(i) => parse_duration("interval", &i)?,
        None => 3_600_000,
    };
    let now = Utc::now().timestamp_millis();
    let (from, until) = time_range(&params)?.unwrap_or((now - 86_400_000, now));
    let from = from.div_euclid(bucket_ms) * bucket_ms;
    let buckets = (until - from).div_euclid(bucket_ms) + 1;
    if buckets > MAX_BUCKETS {
        return Err(SentryError::BadRequest(
            "Your interval and date range would create too many results. Use a larger interval, or a smaller date range.".into(),
        ));
    }
    // A present `query` without `is:` counts every status; an absent one counts everything too,
    // since a chart of events usually means all of them.
    let mut search = match params.string("query") {
        Some(q) => parse_search(Some(&q))?,
        None => Search::default(),
    };
    // The environment is a filter on each event counted (an error seen in two environments
    // counts only its events in the one asked for); other terms filter the errors.
    let mut environments: Vec<String> = params
        .string("environment")
        .filter(|e| !e.is_empty())
        .into_iter()
        .collect();
    search.tags.retain(|t| {
        if t.key == "environment" && t.values.len() == 1 {
            environments.extend(t.values.iter().cloned());
            false
        } else {
            true
        }
    });
    environments.dedup();
    if environments.len() > 1 {
        // Two different environments at once can match no event.
        return Ok(Json(stats_json(from, bucket_ms, buckets, Vec::new())));
    }
    let counts = state
        .store
        .event_counts(EventCountQuery {
            projects: projects.iter().map(|p| p.id).collect(),
            status: search.status,
            text: search.text,
            tags: search.tags,
            environment: environments.pop(),
            from,
            until: from + buckets * bucket_ms,
            bucket_ms,
        })
        .await?;
    Ok(Json(stats_json(from, bucket_ms, buckets, counts)))
}

/// Every bucket from `from`, zeros included, from the store's `(bucket, count)` pairs.
fn stats_json(from: i64, bucket_ms: i64, buckets: i64, counts: Vec<(i64, i64)>) -> Value {
    let mut by_bucket = counts.into_iter().peekable();
    let mut data = Vec::with_capacity(buckets as usize);
    for i in 0..buckets {
        let mut n = 0;
        while let Some(&(b, c)) = by_bucket.peek() {
            if b > i {
                break;
            }
            if b == i {
                n = c;
            }
            by_bucket.next();
        }
        data.push(json!([(from + i * bucket_ms) / 1000, [{"count": n}]]));
    }
    json!({
        "data": data,
        "start": from / 1000,
        "end": (from + buckets * bucket_ms) / 1000,
    })
}

// ---------------------------------------------------------------------------------------------
// The latest event

async fn latest_event(
    State(state): State<AppState>,
    Path(id): Path<String>,
    params: Params,
) -> SentryResult<Json<Value>> {
    let (error, project) = issue_access(&state, &params, &id, AccessLevel::REPORTER).await?;
    let event = state
        .store
        .latest_event(error.id)
        .await?
        .ok_or(SentryError::NotFound)?;
    let payload: Value = match serde_json::from_slice(&event.payload) {
        Ok(v @ Value::Object(_)) => v,
        // Ingestion accepted only JSON objects; anything else would be a damaged row, which
        // still deserves the fields the row itself holds.
        _ => {
            tracing::warn!(
                issue = error.id,
                "stored event payload is not a JSON object"
            );
            Value::Object(Map::new())
        }
    };
    let is_message = !has_exception(&payload);
    let mut out = json!({
        "id": event.event_id,
        "eventID": event.event_id,
        "groupID": error.id.to_string(),
        "projectID": project.id.to_string(),
        "title": issue_title(&error, is_message),
        "message": message_text(&payload).unwrap_or_default(),
        "type": if is_message { "default" } else { "error" },
        "culprit": error.actor,
        "location": null,
        "platform": payload.get("platform").cloned().unwrap_or(json!("other")),
        "dateCreated": rfc3339(event.occurred_at),
        "dateReceived": rfc3339(event.received_at),
        "size": event.payload.len(),
        "fingerprints": [error.fingerprint.to_string()],
        "tags": tags(&payload),
        "user": user(&payload),
        "contexts": object_or_empty(payload.get("contexts")),
        "context": object_or_empty(payload.get("extra")),
        "sdk": payload.get("sdk").cloned().unwrap_or(Value::Null),
        "release": release_json(payload.get("release").and_then(|r| r.as_str()).map(str::to_owned).as_ref()),
        "errors": [],
        "crashFile": null,
        "entries": entries(&payload),
    });
    out["metadata"] = if is_message {
        json!({"title": out["title"]})
    } else {
        json!({"type": error.name, "value": error.description})
    };
    Ok(Json(out))
}

fn object_or_empty(v: Option<&Value>) -> Value {
    match v {
        Some(o @ Value::Object(_)) => o.clone(),
        _ => json!({}),
    }
}

/// The `values` of a field that SDKs send either as `{"values": [...]}` or as the list itself.
fn values_of(v: Option<&Value>) -> &[Value] {
    match v {
        Some(Value::Array(a)) => a,
        Some(Value::Object(o)) => o
            .get("values")
            .and_then(Value::as_array)
            .map_or(&[], |a| a.as_slice()),
        _ => &[],
    }
}

fn has_exception(event: &Value) -> bool {
    !values_of(event.get("exception")).is_empty()
}

/// The event's message: `logentry` or `message`, a string or `{formatted, message, params}`.
fn message_text(event: &Value) -> Option<String> {
    let m = event.get("logentry").or_else(|| event.get("message"))?;
    match m {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o
            .get("formatted")
            .or_else(|| o.get("message"))
            .and_then(Value::as_str)
            .map(str::to_owned),
        _ => None,
    }
}

/// Sentry's `entries`: the exception, a free stack trace, the message, breadcrumbs and the
/// request, each present only when the event has it.
fn entries(event: &Value) -> Vec<Value> {
    let mut out = Vec::new();
    let exceptions = values_of(event.get("exception"));
    if !exceptions.is_empty() {
        let values: Vec<Value> = exceptions.iter().map(exception_json).collect();
        let has_system_frames = values
            .iter()
            .any(|v| v["stacktrace"]["hasSystemFrames"] == true);
        out.push(json!({
            "type": "exception",
            "data": {"values": values, "hasSystemFrames": has_system_frames, "excOmitted": null},
        }));
    } else if let Some(st) = event.get("stacktrace").filter(|s| s.is_object()) {
        out.push(json!({"type": "stacktrace", "data": stacktrace_json(st)}));
    }
    if let Some(message) = message_text(event) {
        let template = match event.get("logentry").or_else(|| event.get("message")) {
            Some(Value::Object(o)) => o.get("message").cloned().unwrap_or(Value::Null),
            _ => Value::Null,
        };
        let params = match event.get("logentry").or_else(|| event.get("message")) {
            Some(Value::Object(o)) => o.get("params").cloned().unwrap_or(json!([])),
            _ => json!([]),
        };
        out.push(json!({
            "type": "message",
            "data": {"formatted": message, "message": template, "params": params},
        }));
    }
    let crumbs = values_of(event.get("breadcrumbs"));
    if !crumbs.is_empty() {
        let values: Vec<Value> = crumbs.iter().map(breadcrumb_json).collect();
        out.push(json!({"type": "breadcrumbs", "data": {"values": values}}));
    }
    if let Some(request) = event.get("request").filter(|r| r.is_object()) {
        out.push(json!({"type": "request", "data": request_json(request)}));
    }
    out
}

fn exception_json(e: &Value) -> Value {
    let stacktrace = e
        .get("stacktrace")
        .filter(|s| {
            s.get("frames")
                .and_then(Value::as_array)
                .is_some_and(|f| !f.is_empty())
        })
        .map(stacktrace_json)
        .unwrap_or(Value::Null);
    json!({
        "type": e.get("type").cloned().unwrap_or(Value::Null),
        "value": e.get("value").cloned().unwrap_or(Value::Null),
        "module": e.get("module").cloned().unwrap_or(Value::Null),
        "mechanism": e.get("mechanism").cloned().unwrap_or(Value::Null),
        "threadId": e.get("thread_id").cloned().unwrap_or(Value::Null),
        "stacktrace": stacktrace,
        "rawStacktrace": null,
    })
}

/// The frames as the SDK sent them, oldest call first and the crashing frame last (the Sentry
/// protocol's order, which the API keeps).
fn stacktrace_json(st: &Value) -> Value {
    let frames: Vec<Value> = st
        .get("frames")
        .and_then(Value::as_array)
        .map(|f| f.iter().map(frame_json).collect())
        .unwrap_or_default();
    let has_system_frames = frames.iter().any(|f| f["inApp"] != true);
    json!({
        "frames": frames,
        "framesOmitted": st.get("frames_omitted").cloned().unwrap_or(Value::Null),
        "registers": st.get("registers").cloned().unwrap_or(Value::Null),
        "hasSystemFrames": has_system_frames,
    })
}

fn frame_json(f: &Value) -> Value {
    let field = |name: &str| f.get(name).cloned().unwrap_or(Value::Null);
    let line_no = f.get("lineno").and_then(Value::as_u64);
    json!({
        "filename": field("filename"),
        "absPath": field("abs_path"),
        "module": field("module"),
        "package": field("package"),
        "platform": field("platform"),
        "function": field("function"),
        "rawFunction": field("raw_function"),
        "symbol": field("symbol"),
        "instructionAddr": field("instruction_addr"),
        "symbolAddr": field("symbol_addr"),
        "lineNo": line_no,
        "colNo": f.get("colno").and_then(Value::as_u64),
        "inApp": f.get("in_app").and_then(Value::as_bool).unwrap_or(false),
        "trust": null,
        "errors": null,
        "vars": field("vars"),
        "context": source_context(f, line_no),
    })
}

/// `[[line, code], ...]` from `pre_context`, `context_line` and `post_context`, numbered around
/// the frame's line; `[]` without a line number or source.
fn source_context(f: &Value, line_no: Option<u64>) -> Value {
    let Some(line) = line_no else {
        return json!([]);
    };
    let lines = |name: &str| -> Vec<String> {
        f.get(name)
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .map(|l| l.as_str().unwrap_or_default().to_owned())
                    .collect()
            })
            .unwrap_or_default()
    };
    let pre = lines("pre_context");
    let post = lines("post_context");
    let mut out = Vec::with_capacity(pre.len() + post.len() + 1);
    let first = line.saturating_sub(pre.len() as u64);
    for (i, code) in pre.into_iter().enumerate() {
        out.push(json!([first + i as u64, code]));
    }
    match f.get("context_line").and_then(Value::as_str) {
        Some(code) => out.push(json!([line, code])),
        None if out.is_empty() && post.is_empty() => return json!([]),
        None => out.push(json!([line, ""])),
    }
    for (i, code) in post.into_iter().enumerate() {
        out.push(json!([line + 1 + i as u64, code]));
    }
    Value::Array(out)
}

/// A breadcrumb's timestamp comes as unix seconds or as RFC 3339; Sentry answers RFC 3339.
fn breadcrumb_json(b: &Value) -> Value {
    let field = |name: &str| b.get(name).cloned().unwrap_or(Value::Null);
    let timestamp = match b.get("timestamp") {
        Some(Value::Number(n)) => n
            .as_f64()
            .and_then(|secs| Utc.timestamp_millis_opt((secs * 1000.0) as i64).single())
            .map_or(Value::Null, |t| json!(rfc3339(t))),
        Some(other) => other.clone(),
        None => Value::Null,
    };
    json!({
        "type": b.get("type").cloned().unwrap_or(json!("default")),
        "category": field("category"),
        "level": b.get("level").cloned().unwrap_or(json!("info")),
        "message": field("message"),
        "data": field("data"),
        "timestamp": timestamp,
        "event_id": null,
    })
}

/// A list of `[name, value]` pairs from an object or from pairs already.
fn pairs(v: Option<&Value>) -> Value {
    match v {
        Some(Value::Object(o)) => Value::Array(
            o.iter()
                .map(|(k, v)| json!([k, v.as_str().map_or_else(|| v.to_string(), str::to_owned)]))
                .collect(),
        ),
        Some(Value::Array(a)) => Value::Array(a.clone()),
        Some(Value::String(s)) => Value::Array(
            form_urlencoded::parse(s.trim_start_matches('?').as_bytes())
                .map(|(k, v)| json!([k, v]))
                .collect(),
        ),
        _ => json!([]),
    }
}

fn request_json(r: &Value) -> Value {
    let field = |name: &str| r.get(name).cloned().unwrap_or(Value::Null);
    json!({
        "url": field("url"),
        "method": field("method"),
        "query": pairs(r.get("query_string")),
        "fragment": field("fragment"),
        "headers": pairs(r.get("headers")),
        "cookies": pairs(r.get("cookies")),
        "data": field("data"),
        "env": field("env"),
        "inferredContentType": null,
    })
}

/// Sentry's `tags`: `[{key, value}]`, with the event's environment, level and release among
/// them as Sentry shows them.
fn tags(event: &Value) -> Value {
    let mut out: Vec<(String, String)> = Vec::new();
    match event.get("tags") {
        Some(Value::Object(o)) => {
            for (k, v) in o {
                out.push((
                    k.clone(),
                    v.as_str().map_or_else(|| v.to_string(), str::to_owned),
                ));
            }
        }
        Some(Value::Array(a)) => {
            for pair in a {
                if let (Some(k), Some(v)) = (
                    pair.get(0).and_then(Value::as_str),
                    pair.get(1).and_then(Value::as_str),
                ) {
                    out.push((k.to_owned(), v.to_owned()));
                }
            }
        }
        _ => {}
    }
    for name in ["environment", "level", "release"] {
        if let Some(v) = event.get(name).and_then(Value::as_str) {
            if !out.iter().any(|(k, _)| k == name) {
                out.push((name.to_owned(), v.to_owned()));
            }
        }
    }
    Value::Array(
        out.into_iter()
            .map(|(key, value)| json!({"key": key, "value": value}))
            .collect(),
    )
}

fn user(event: &Value) -> Value {
    match event.get("user") {
        Some(Value::Object(u)) => {
            let field = |name: &str| u.get(name).cloned().unwrap_or(Value::Null);
            json!({
                "id": field("id"),
                "email": field("email"),
                "username": field("username"),
                "ip_address": field("ip_address"),
                "name": field("name"),
                "data": field("data"),
            })
        }
        _ => Value::Null,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn organization_slugs_map_back() {
        assert_eq!(organization_slug("acme"), "acme");
        assert_eq!(organization_slug("acme/web"), "acme~web");
        assert_eq!(namespace_of("acme~web~team"), "acme/web/team");
        assert_eq!(organization_id("Acme/Web"), organization_id("acme/web"));
        assert!(organization_id("acme")
            .parse::<u64>()
            .is_ok_and(|n| n < 1 << 48));
    }

    #[test]
    fn short_ids_are_base36() {
        assert_eq!(base36(0), "0");
        assert_eq!(base36(35), "Z");
        assert_eq!(base36(51), "1F");
        assert_eq!(base36(36 * 36), "100");
    }

    #[test]
    fn an_absent_query_is_the_unresolved_list() {
        assert_eq!(
            parse_search(None).ok().and_then(|s| s.status),
            Some(ErrorStatus::Unresolved)
        );
        let q = parse_search(Some("is:unresolved NoMethodError: undefined")).ok();
        assert_eq!(
            q.as_ref().and_then(|s| s.text.as_deref()),
            Some("NoMethodError: undefined")
        );
        assert_eq!(parse_search(Some("")).ok().and_then(|s| s.status), None);
        assert!(matches!(
            parse_search(Some("is:assigned")),
            Err(SentryError::BadRequest(_))
        ));
    }

    #[test]
    fn cursors_round_trip_and_hold_no_comma() {
        for at in [
            Position::Start,
            Position::After(Keyset {
                key: 1_700_000_000_123,
                id: 7,
            }),
            Position::Before(Keyset { key: -3, id: 9 }),
        ] {
            let c = cursor::encode(ErrorSort::FrequencyDesc, at);
            assert!(!c.contains(',') && !c.contains('"'));
            assert_eq!(cursor::decode(ErrorSort::FrequencyDesc, &c), Some(at));
            assert_eq!(cursor::decode(ErrorSort::LastSeenDesc, &c), None);
        }
        assert_eq!(cursor::decode(ErrorSort::LastSeenDesc, "0:0:0"), None);
    }

    #[test]
    fn context_lines_are_numbered_around_the_frame_line() {
        let f = json!({
            "lineno": 10,
            "pre_context": ["a", "b"],
            "context_line": "c",
            "post_context": ["d"],
        });
        assert_eq!(
            source_context(&f, Some(10)),
            json!([[8, "a"], [9, "b"], [10, "c"], [11, "d"]])
        );
        assert_eq!(source_context(&json!({}), Some(3)), json!([]));
        assert_eq!(source_context(&f, None), json!([]));
    }

    #[test]
    fn durations_and_times() {
        assert_eq!(parse_duration("interval", "30s").ok(), Some(30_000));
        assert_eq!(parse_duration("interval", "1h").ok(), Some(3_600_000));
        assert!(parse_duration("interval", "0m").is_err());
        assert!(parse_duration("interval", "5x").is_err());
        let grafana = parse_time("start", "2024-01-02T03:04:05").ok();
        let rfc = parse_time("start", "2024-01-02T03:04:05Z").ok();
        assert!(grafana.is_some());
        assert_eq!(grafana, rfc);
    }
}
