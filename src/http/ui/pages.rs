//! The page handlers: each authenticates the session, resolves the project at the role it needs,
//! calls the store or a shared operation (`http::ops`) and renders. Forms answer with a redirect
//! (post/redirect/get), so reloading a page never sends a form again.

use std::collections::HashMap;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, TimeZone, Utc};
use maud::{html, Markup};
use serde_json::Value;

use super::views::{self, count, when, Who};
use super::{
    alert_pages, charts, event_view, html as page, project_at, require_viewer, signed_form,
    status_actions, UiError, UiResult, Viewer,
};
use crate::domain::keys::dsn;
use crate::domain::passwords;
use crate::http::api::Params;
use crate::http::identity::{path_from_name, valid_segment};
use crate::http::read::{cursor, error_sort_name, CursorKind, ErrorListArgs};
use crate::http::{ops, AppState};
use crate::store::read::{
    ErrorSort, ErrorStatus, EventQuery, EventSort, MessageQuery, StoredEvent, TrackedError,
};
use crate::store::web::TagValue;
use crate::store::{AccessLevel, NewProject, NewUser, Project, Setting, StoreError};

/// What a project page's handler gets from the dispatcher.
pub struct Ctx<'a> {
    pub state: &'a AppState,
    pub headers: &'a HeaderMap,
    /// The request's path, for the sign-in page to come back to.
    pub path: &'a str,
    pub query: &'a str,
    /// The project's full path, from the URL.
    pub project: &'a str,
}

impl Ctx<'_> {
    fn back_to(&self) -> String {
        if self.query.is_empty() {
            self.path.to_owned()
        } else {
            format!("{}?{}", self.path, self.query)
        }
    }

    async fn viewer(&self) -> UiResult<Viewer> {
        require_viewer(self.state, self.headers, &self.back_to()).await
    }

    fn param(&self, name: &str) -> Option<String> {
        form_urlencoded::parse(self.query.as_bytes())
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
            .filter(|v| !v.is_empty())
    }
}

pub(super) fn who(viewer: &Viewer) -> Who<'_> {
    Who {
        username: &viewer.session.user.username,
        csrf: viewer.csrf(),
        is_admin: viewer.session.user.is_admin,
    }
}

pub(super) fn csrf_field(viewer: &Viewer) -> Markup {
    html! { input type="hidden" name="csrf" value=(viewer.csrf()); }
}

pub(super) fn base(project: &Project) -> String {
    format!("/{}/-", project.path_with_namespace)
}

use super::see_other;

fn flash(query: &str) -> Option<&'static str> {
    let value = form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "done")
        .map(|(_, v)| v.into_owned())?;
    Some(match value.as_str() {
        "saved" => "Settings saved.",
        "key_created" => "Client key created.",
        "key_deleted" => "Client key deleted; events sent with it are refused from now on.",
        "project_created" => "Project created.",
        "user_created" => "User created.",
        "password_set" => "Password set.",
        "status" => "Status changed.",
        "rule_created" => "Alert rule created. Add a channel to it to receive its alerts.",
        "rule_deleted" => "Alert rule deleted.",
        "channel_added" => "Channel added.",
        "channel_deleted" => "Channel deleted.",
        "test_queued" => "Test notification queued; the channel shows its result in a moment.",
        _ => return None,
    })
}

// ---------------------------------------------------------------------------------------------
// Projects

pub async fn projects(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: axum::http::Uri,
) -> UiResult<Response> {
    let viewer = require_viewer(&state, &headers, "/").await?;
    let user = &viewer.session.user;
    let projects = if user.is_admin {
        state.store.list_projects().await?
    } else {
        state
            .store
            .member_projects(user.id, AccessLevel::REPORTER.0)
            .await?
    };
    ops::settle_counts(&state).await;
    let summaries = state
        .store
        .project_summaries(projects.iter().map(|p| p.id).collect())
        .await?;
    let users = if user.is_admin {
        state.store.list_users().await?
    } else {
        Vec::new()
    };
    let notice = flash(uri.query().unwrap_or(""));
    let body = html! {
        @if let Some(n) = notice { p class="flash ok" { (n) } }
        div class="page-head" { h1 { "Projects" } }
        @if projects.is_empty() {
            section class="card empty" {
                p { "You are not a member of any project yet." }
                @if user.is_admin { p { "Create one below." } }
            }
        } @else {
            table class="list projects" {
                thead { tr { th { "Project" } th class="num" { "Unresolved" } th { "Last 24 hours" } } }
                tbody {
                    @for p in &projects {
                        @let s = summaries.get(&p.id).cloned().unwrap_or_default();
                        tr {
                            td {
                                a class="title" href={(base(p)) "/error_tracking"} { (p.name) }
                                div class="muted small" { (p.path_with_namespace) }
                            }
                            td class="num" { (count(s.unresolved)) }
                            td { (charts::sparkline(&s.hourly)) }
                        }
                    }
                }
            }
        }
        @if user.is_admin {
            div class="admin-forms" {
                section class="card" {
                    h2 { "New project" }
                    form method="post" action="/-/ui/projects" class="stack" {
                        (csrf_field(&viewer))
                        label { "Name" input type="text" name="name" required; }
                        label { "Namespace" input type="text" name="namespace" placeholder=(user.username); }
                        button type="submit" class="primary" { "Create project" }
                    }
                }
                section class="card" {
                    h2 { "New user" }
                    form method="post" action="/-/ui/users" class="stack" {
                        (csrf_field(&viewer))
                        label { "Username" input type="text" name="username" required; }
                        label { "Name" input type="text" name="name"; }
                        label { "Password" input type="password" name="password" autocomplete="new-password" required minlength=(passwords::MIN_PASSWORD_LEN); }
                        label class="check" { input type="checkbox" name="admin" value="1"; " Administrator" }
                        button type="submit" class="primary" { "Create user" }
                    }
                }
                section class="card" {
                    h2 { "Set a password" }
                    form method="post" action="/-/ui/password" class="stack" {
                        (csrf_field(&viewer))
                        label { "User"
                            select name="username" {
                                @for u in &users { option value=(u.username) { (u.username) } }
                            }
                        }
                        label { "New password" input type="password" name="password" autocomplete="new-password" required minlength=(passwords::MIN_PASSWORD_LEN); }
                        button type="submit" { "Set password" }
                    }
                }
            }
        }
    };
    Ok(page(
        StatusCode::OK,
        views::layout("Projects", Some(&who(&viewer)), &[], body),
    ))
}

async fn admin_form(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> UiResult<(Viewer, super::FormData)> {
    let (viewer, form) = signed_form(state, headers, "/", body).await?;
    if !viewer.session.user.is_admin {
        return Err(UiError::Forbidden);
    }
    Ok((viewer, form))
}

fn conflict(e: StoreError) -> UiError {
    match e {
        StoreError::Conflict(what) => UiError::BadRequest(format!("{what} has already been taken")),
        other => UiError::Store(other),
    }
}

pub async fn create_project(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> UiResult<Response> {
    let (viewer, form) = admin_form(&state, &headers, body).await?;
    let name = form.get("name").unwrap_or("").trim().to_owned();
    let path = path_from_name(&name);
    if name.is_empty() || !valid_segment(&path) {
        return Err(UiError::BadRequest(
            "a project needs a name of letters, digits, '_', '-' or '.'".into(),
        ));
    }
    let namespace = form
        .get("namespace")
        .map(|n| n.trim().trim_matches('/'))
        .filter(|n| !n.is_empty())
        .unwrap_or(&viewer.session.user.username)
        .to_owned();
    if !namespace.split('/').all(valid_segment) {
        return Err(UiError::BadRequest("the namespace is not valid".into()));
    }
    state
        .store
        .create_project(NewProject {
            name,
            path,
            namespace_path: namespace,
            owner_id: viewer.session.user.id,
        })
        .await
        .map_err(conflict)?;
    Ok(see_other("/?done=project_created"))
}

pub async fn create_user(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> UiResult<Response> {
    let (_, form) = admin_form(&state, &headers, body).await?;
    let username = form.get("username").unwrap_or("").trim().to_owned();
    if !valid_segment(&username) {
        return Err(UiError::BadRequest(
            "a username is letters, digits, '_', '-' and '.'".into(),
        ));
    }
    let password = form.get("password").unwrap_or("").to_owned();
    let hash = hash_new_password(password).await?;
    let name = form
        .get("name")
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .unwrap_or(&username)
        .to_owned();
    let user = state
        .store
        .create_user(NewUser {
            username,
            name,
            email: None,
            is_admin: form.get("admin").is_some(),
        })
        .await
        .map_err(conflict)?;
    state.store.set_password(user.id, hash).await?;
    Ok(see_other("/?done=user_created"))
}

async fn hash_new_password(password: String) -> UiResult<String> {
    passwords::check_new(&password).map_err(|e| UiError::BadRequest(e.to_string()))?;
    tokio::task::spawn_blocking(move || passwords::hash(&password))
        .await
        .map_err(StoreError::from)?
        .map_err(|e| UiError::BadRequest(e.to_string()))
}

pub async fn set_password(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> UiResult<Response> {
    let (_, form) = admin_form(&state, &headers, body).await?;
    let username = form.get("username").unwrap_or("");
    let user = state
        .store
        .user_by_username(username)
        .await?
        .ok_or(UiError::NotFound)?;
    let hash = hash_new_password(form.get("password").unwrap_or("").to_owned()).await?;
    state.store.set_password(user.id, hash).await?;
    Ok(see_other("/?done=password_set"))
}

// ---------------------------------------------------------------------------------------------
// Error list

/// Errors shown per page.
const PAGE_SIZE: u32 = 25;

pub async fn errors(ctx: Ctx<'_>) -> UiResult<Response> {
    let viewer = ctx.viewer().await?;
    let (project, level) =
        project_at(ctx.state, &viewer, ctx.project, AccessLevel::REPORTER).await?;
    // The read API's own parameters and validation, so the search box takes exactly its syntax.
    let mut query: Vec<(String, String)> = form_urlencoded::parse(ctx.query.as_bytes())
        .into_owned()
        .filter(|(k, v)| {
            matches!(
                k.as_str(),
                "status" | "sort" | "query" | "environment" | "cursor"
            ) && !v.is_empty()
        })
        .collect();
    query.push(("limit".into(), PAGE_SIZE.to_string()));
    let encoded = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(&query)
        .finish();
    let params = Params::from_query(&encoded);
    let (args, problem) = match ErrorListArgs::parse(&params) {
        Ok(a) => (a, None),
        Err(e) => {
            let msg = match UiError::from(e) {
                UiError::BadRequest(m) => m,
                other => return Err(other),
            };
            // Show the page with the problem and what the box held, rather than an error page.
            let fallback = Params::from_query(&format!("limit={PAGE_SIZE}"));
            (ErrorListArgs::parse(&fallback)?, Some(msg))
        }
    };
    ops::settle_counts(ctx.state).await;
    let list = if problem.is_some() {
        crate::store::read::KeysetPage {
            items: Vec::new(),
            next: None,
        }
    } else {
        ctx.state.store.list_errors(args.query(project.id)).await?
    };
    let environments = ctx.state.store.project_environments(project.id).await?;
    let typed_query = ctx.param("query").unwrap_or_default();
    let status = args.status;
    let now = Utc::now();
    let b = base(&project);
    let list_url = format!("{b}/error_tracking");
    let link = |status: ErrorStatus| {
        let mut s = form_urlencoded::Serializer::new(String::new());
        s.append_pair("status", status.as_str());
        s.append_pair("sort", error_sort_name(args.sort));
        if !typed_query.is_empty() {
            s.append_pair("query", &typed_query);
        }
        if let Some(e) = &args.environment {
            s.append_pair("environment", e);
        }
        format!("{list_url}?{}", s.finish())
    };
    let next = list.next.map(|k| {
        let mut s = form_urlencoded::Serializer::new(String::new());
        for (k, v) in args.pairs() {
            if k != "limit" {
                s.append_pair(k, &v);
            }
        }
        s.append_pair("cursor", &args.cursor(k));
        format!("{list_url}?{}", s.finish())
    });
    let can_triage = level >= AccessLevel::DEVELOPER;
    let back = ctx.back_to();
    let body = html! {
        (views::project_tabs(&project, level, "errors"))
        @if let Some(n) = flash(ctx.query) { p class="flash ok" { (n) } }
        nav class="status-tabs" {
            @for s in [ErrorStatus::Unresolved, ErrorStatus::Resolved, ErrorStatus::Ignored] {
                a href=(link(s)) class=(if s == status { "active" } else { "" }) { (capitalise(s.as_str())) }
            }
        }
        form method="get" action=(list_url) class="search" role="search" {
            input type="hidden" name="status" value=(status.as_str());
            input type="search" name="query" value=(typed_query) aria-label="Search"
                placeholder="Search: free text, level:error, release:1.2, browser:Chrome, user:alice@example.com";
            select name="environment" aria-label="Environment" {
                option value="" { "All environments" }
                @for e in &environments {
                    option value=(e) selected[args.environment.as_deref() == Some(e.as_str())] { (e) }
                }
            }
            select name="sort" aria-label="Sort" {
                @for (value, label) in [(ErrorSort::LastSeenDesc, "Last seen"), (ErrorSort::FirstSeenDesc, "First seen"), (ErrorSort::FrequencyDesc, "Most events")] {
                    option value=(error_sort_name(value)) selected[args.sort == value] { (label) }
                }
            }
            button type="submit" { "Search" }
        }
        @if let Some(p) = &problem { p class="flash error" role="alert" { "The search was not understood: " (p) } }
        form method="post" action={(list_url) "/bulk"} class="bulk" {
            (csrf_field(&viewer))
            input type="hidden" name="back" value=(back);
            @if can_triage && !list.items.is_empty() {
                div class="bulk-actions" {
                    label class="check" { input type="checkbox" class="select-all" aria-label="Select all"; " Select all" }
                    @for (label, to) in status_actions(status) {
                        button type="submit" name="status" value=(to.as_str()) { (label) " selected" }
                    }
                }
            }
            @if list.items.is_empty() {
                section class="card empty" {
                    p { "No " (status.as_str()) " errors" @if !typed_query.is_empty() || args.environment.is_some() { " match this search" } "." }
                }
            } @else {
                table class="list errors" {
                    thead { tr {
                        @if can_triage { th class="pick" {} }
                        th { "Error" } th class="num" { "Events" } th class="num" { "Users" }
                        th { "Last 24 hours" } th { "First seen" } th { "Last seen" }
                    } }
                    tbody {
                        @for e in &list.items { (error_row(&b, e, can_triage, now)) }
                    }
                }
            }
        }
        @if let Some(n) = next { p class="paging" { a class="button" href=(n) { "Next page →" } } }
    };
    let status_code = if problem.is_some() {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    Ok(page(
        status_code,
        views::layout(
            &format!("Errors · {}", project.name),
            Some(&who(&viewer)),
            &views::crumbs_for(&project),
            body,
        ),
    ))
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

fn error_row(base: &str, e: &TrackedError, pick: bool, now: DateTime<Utc>) -> Markup {
    let hourly: Vec<i64> = e.frequency_24h.iter().map(|(_, c)| *c).collect();
    html! {
        tr {
            @if pick {
                td class="pick" { input type="checkbox" name="fingerprint" value=(e.fingerprint) aria-label="Select"; }
            }
            td class="error-cell" {
                a class="title" href={(base) "/error_tracking/" (e.fingerprint) "/details"} { (e.name) }
                @if !e.description.is_empty() && e.description != e.name { div class="desc" { (e.description) } }
                @if !e.actor.is_empty() { div class="culprit muted small" { (e.actor) } }
            }
            td class="num" { (count(e.event_count)) }
            td class="num" { (count(e.approximated_user_count)) }
            td { (charts::sparkline(&hourly)) }
            td class="nowrap" { (when(e.first_seen_at, now)) }
            td class="nowrap" { (when(e.last_seen_at, now)) }
        }
    }
}

/// Where a form sends the browser back to: a page of this project, else the list.
fn back_within(project: &Project, back: Option<&str>) -> String {
    let prefix = format!("{}/", base(project));
    match back {
        Some(b) if b.starts_with(&prefix) && !b.contains("//") && super::is_local_path(b) => {
            b.to_owned()
        }
        _ => format!("{}/error_tracking", base(project)),
    }
}

pub async fn bulk_status(ctx: Ctx<'_>, body: Body) -> UiResult<Response> {
    let (viewer, form) = signed_form(ctx.state, ctx.headers, ctx.path, body).await?;
    let (project, _) = project_at(ctx.state, &viewer, ctx.project, AccessLevel::DEVELOPER).await?;
    let status = form
        .get("status")
        .and_then(ErrorStatus::parse)
        .ok_or_else(|| UiError::BadRequest("status is missing".into()))?;
    let fingerprints: Vec<i64> = form
        .all("fingerprint")
        .map(|f| f.parse::<i64>())
        .collect::<Result<_, _>>()
        .map_err(|_| UiError::BadRequest("fingerprint is invalid".into()))?;
    for fp in fingerprints.iter().take(100) {
        ops::set_error_status(ctx.state, project.id, *fp, status).await?;
    }
    Ok(see_other(&back_within(&project, form.get("back"))))
}

pub async fn status(ctx: Ctx<'_>, fingerprint: i64, body: Body) -> UiResult<Response> {
    let (viewer, form) = signed_form(ctx.state, ctx.headers, ctx.path, body).await?;
    let (project, _) = project_at(ctx.state, &viewer, ctx.project, AccessLevel::DEVELOPER).await?;
    let status = form
        .get("status")
        .and_then(ErrorStatus::parse)
        .ok_or_else(|| UiError::BadRequest("status is missing".into()))?;
    ops::set_error_status(ctx.state, project.id, fingerprint, status)
        .await?
        .ok_or(UiError::NotFound)?;
    Ok(see_other(&format!(
        "{}/error_tracking/{fingerprint}/details?done=status",
        base(&project)
    )))
}

// ---------------------------------------------------------------------------------------------
// Error detail

/// Events listed under the event view.
const EVENTS_LISTED: u32 = 20;

async fn one_event(
    state: &AppState,
    project_id: i64,
    fingerprint: i64,
    sort: EventSort,
    after: Option<crate::store::read::Keyset>,
) -> UiResult<Option<StoredEvent>> {
    let page = state
        .store
        .list_error_events(EventQuery {
            project_id,
            fingerprint,
            sort,
            limit: 1,
            after,
            backward: false,
        })
        .await?
        .ok_or(UiError::NotFound)?;
    Ok(page.items.into_iter().next())
}

fn release_of(e: Option<&StoredEvent>) -> Option<String> {
    let v: Value = serde_json::from_slice(&e?.payload).ok()?;
    v.get("release")?.as_str().map(str::to_owned)
}

pub async fn details(ctx: Ctx<'_>, fingerprint: i64) -> UiResult<Response> {
    let viewer = ctx.viewer().await?;
    let (project, level) =
        project_at(ctx.state, &viewer, ctx.project, AccessLevel::REPORTER).await?;
    let state = ctx.state;
    ops::settle_counts(state).await;
    let error = state
        .store
        .error(project.id, fingerprint)
        .await?
        .ok_or(UiError::NotFound)?;
    let latest = one_event(
        state,
        project.id,
        fingerprint,
        EventSort::OccurredAtDesc,
        None,
    )
    .await?;
    let first = one_event(
        state,
        project.id,
        fingerprint,
        EventSort::OccurredAtAsc,
        None,
    )
    .await?;
    let current = match ctx.param("event").map(|e| e.parse::<i64>()) {
        None => latest.clone(),
        Some(Ok(id)) => Some(
            state
                .store
                .error_event(project.id, fingerprint, id)
                .await?
                .ok_or(UiError::NotFound)?,
        ),
        Some(Err(_)) => return Err(UiError::BadRequest("event is invalid".into())),
    };
    let (older, newer) = match &current {
        Some(c) => (
            one_event(
                state,
                project.id,
                fingerprint,
                EventSort::OccurredAtDesc,
                Some(c.keyset()),
            )
            .await?,
            one_event(
                state,
                project.id,
                fingerprint,
                EventSort::OccurredAtAsc,
                Some(c.keyset()),
            )
            .await?,
        ),
        None => (None, None),
    };
    let events_after = match ctx.param("events") {
        None => None,
        Some(c) => Some(
            cursor::decode_after(CursorKind::Events(EventSort::OccurredAtDesc), &c)
                .ok_or_else(|| UiError::BadRequest("the events cursor is invalid".into()))?,
        ),
    };
    let events = state
        .store
        .list_error_events(EventQuery {
            project_id: project.id,
            fingerprint,
            sort: EventSort::OccurredAtDesc,
            limit: EVENTS_LISTED,
            after: events_after,
            backward: false,
        })
        .await?
        .ok_or(UiError::NotFound)?;
    let daily = state.store.error_daily(error.id, 30).await?;
    let tags = state.store.error_tag_values(error.id).await?;

    let b = base(&project);
    let here = format!("{b}/error_tracking/{fingerprint}/details");
    let event_link = |e: &StoredEvent| format!("{here}?event={}", e.id);
    let now = Utc::now();
    let can_triage = level >= AccessLevel::DEVELOPER;
    let parsed: Option<Value> = current
        .as_ref()
        .and_then(|e| serde_json::from_slice(&e.payload).ok());
    let body = html! {
        (views::project_tabs(&project, level, "errors"))
        @if let Some(n) = flash(ctx.query) { p class="flash ok" { (n) } }
        section class="card error-head" {
            div class="error-title" {
                h2 { (error.name) " " (views::status_badge(error.status)) }
                @if !error.description.is_empty() && error.description != error.name { p class="desc" { (error.description) } }
                @if !error.actor.is_empty() { p class="culprit muted" { (error.actor) } }
            }
            @if can_triage {
                form method="post" action={(b) "/error_tracking/" (fingerprint) "/status"} class="status-buttons" {
                    (csrf_field(&viewer))
                    @for (label, to) in status_actions(error.status) {
                        button type="submit" name="status" value=(to.as_str())
                            class=(if *to == ErrorStatus::Resolved { "primary" } else { "" }) { (label) }
                    }
                }
            }
            dl class="facts" {
                div { dt { "Events" } dd { (count(error.event_count)) } }
                div { dt { "Users" } dd { (count(error.approximated_user_count)) } }
                div { dt { "First seen" } dd { (when(error.first_seen_at, now)) } }
                div { dt { "Last seen" } dd { (when(error.last_seen_at, now)) } }
                div { dt { "First release" } dd { (release_of(first.as_ref()).unwrap_or_else(|| "—".into())) } }
                div { dt { "Last release" } dd { (release_of(latest.as_ref()).unwrap_or_else(|| "—".into())) } }
            }
        }
        div class="charts" {
            (charts::bars(&error.frequency_24h, hour_label, "Events, last 24 hours"))
            (charts::bars(&daily, day_label, "Events, last 30 days"))
        }
        @if !tags.is_empty() { (tag_table(&tags)) }
        section class="card" {
            div class="event-nav" {
                h2 { "Event" @if let Some(c) = &current { span class="muted small" { " " (when(c.occurred_at, now)) } } }
                nav class="pager" {
                    (nav_link("« First", first.as_ref().filter(|f| Some(f.id) != current.as_ref().map(|c| c.id)).map(&event_link)))
                    (nav_link("‹ Older", older.as_ref().map(&event_link)))
                    (nav_link("Newer ›", newer.as_ref().map(&event_link)))
                    (nav_link("Latest »", latest.as_ref().filter(|l| Some(l.id) != current.as_ref().map(|c| c.id)).map(&event_link)))
                }
            }
            @match (&current, &parsed) {
                (Some(c), Some(v)) => (event_view::render(v, &format!("{b}/error_tracking/{fingerprint}/events/{}.json", c.id))),
                (Some(_), None) => p class="muted" { "This event's payload is not JSON; download it raw." },
                (None, _) => p class="muted" { "No events are stored for this error (they may have passed the retention period)." },
            }
        }
        section class="card" {
            h2 { "All events" }
            table class="list events" {
                thead { tr { th { "Event" } th { "When" } th { "Environment" } th { "Platform" } } }
                tbody {
                    @for e in &events.items {
                        tr class=(if current.as_ref().map(|c| c.id) == Some(e.id) { "current" } else { "" }) {
                            td { a href=(event_link(e)) { code { (e.event_id) } } }
                            td class="nowrap" { (when(e.occurred_at, now)) }
                            td { (e.environment.clone().unwrap_or_default()) }
                            td { (e.platform.clone().unwrap_or_default()) }
                        }
                    }
                }
            }
            @if let Some(next) = events.next {
                @let c = cursor::encode(CursorKind::Events(EventSort::OccurredAtDesc), next);
                @let mut q = form_urlencoded::Serializer::new(String::new());
                @let link = {
                    if let Some(e) = current.as_ref() { q.append_pair("event", &e.id.to_string()); }
                    q.append_pair("events", &c);
                    format!("{here}?{}", q.finish())
                };
                p class="paging" { a class="button" href=(link) { "Older events →" } }
            }
        }
    };
    Ok(page(
        StatusCode::OK,
        views::layout(
            &error.name,
            Some(&who(&viewer)),
            &views::crumbs_for(&project),
            body,
        ),
    ))
}

fn nav_link(label: &str, href: Option<String>) -> Markup {
    html! {
        @match href {
            Some(h) => a class="button small" href=(h) { (label) },
            None => span class="button small disabled" aria-disabled="true" { (label) },
        }
    }
}

fn hour_label(t: i64) -> String {
    Utc.timestamp_opt(t, 0)
        .single()
        .map(|d| d.format("%H:00").to_string())
        .unwrap_or_default()
}

fn day_label(t: i64) -> String {
    Utc.timestamp_opt(t, 0)
        .single()
        .map(|d| d.format("%b %d").to_string())
        .unwrap_or_default()
}

fn tag_table(tags: &[TagValue]) -> Markup {
    let mut keys: Vec<&str> = Vec::new();
    let mut by_key: HashMap<&str, Vec<&TagValue>> = HashMap::new();
    for t in tags {
        if !by_key.contains_key(t.key.as_str()) {
            keys.push(&t.key);
        }
        by_key.entry(&t.key).or_default().push(t);
    }
    html! {
        section class="card" {
            h2 { "Tags" }
            div class="tag-grid" {
                @for k in keys {
                    @let values = &by_key[k];
                    @let total: i64 = values.iter().filter_map(|v| v.count).sum();
                    div class="tag-key" {
                        h4 { (k) }
                        @for v in values {
                            div class="tag-value" {
                                span class="v" { (v.value) }
                                @if let Some(n) = v.count {
                                    span class="n" { (count(n)) }
                                    @let pct = if total > 0 { n * 100 / total } else { 0 };
                                    meter min="0" max="100" value=(pct) {}
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

pub async fn raw_event(ctx: Ctx<'_>, fingerprint: i64, id: i64) -> UiResult<Response> {
    let viewer = ctx.viewer().await?;
    let (project, _) = project_at(ctx.state, &viewer, ctx.project, AccessLevel::REPORTER).await?;
    let event = ctx
        .state
        .store
        .error_event(project.id, fingerprint, id)
        .await?
        .ok_or(UiError::NotFound)?;
    let disposition = format!("attachment; filename=\"event-{}.json\"", id);
    let mut headers = super::page_headers();
    headers.insert(
        header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("application/json"),
    );
    if let Ok(v) = axum::http::HeaderValue::from_str(&disposition) {
        headers.insert(header::CONTENT_DISPOSITION, v);
    }
    // Opened in a tab anyway, the JSON is inert: no script, no plugin, its own origin.
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        axum::http::HeaderValue::from_static("default-src 'none'; sandbox"),
    );
    Ok((StatusCode::OK, headers, event.payload).into_response())
}

// ---------------------------------------------------------------------------------------------
// Messages

pub async fn messages(ctx: Ctx<'_>) -> UiResult<Response> {
    let viewer = ctx.viewer().await?;
    let (project, level) =
        project_at(ctx.state, &viewer, ctx.project, AccessLevel::REPORTER).await?;
    let after = match ctx.param("cursor") {
        None => None,
        Some(c) => Some(
            cursor::decode_after(CursorKind::Messages, &c)
                .ok_or_else(|| UiError::BadRequest("the cursor is invalid".into()))?,
        ),
    };
    let list = ctx
        .state
        .store
        .list_messages(MessageQuery {
            project_id: project.id,
            limit: PAGE_SIZE,
            after,
            backward: false,
        })
        .await?;
    let now = Utc::now();
    let b = base(&project);
    let body = html! {
        (views::project_tabs(&project, level, "messages"))
        @if list.items.is_empty() {
            section class="card empty" { p { "No messages yet. Messages are events without an exception, such as " code { "capture_message" } "." } }
        } @else {
            table class="list messages" {
                thead { tr { th { "Message" } th { "Level" } th { "Environment" } th { "Release" } th { "When" } } }
                tbody {
                    @for m in &list.items {
                        tr {
                            td class="error-cell" { span class="title" { (m.message.clone().unwrap_or_default()) } div class="muted small" { code { (m.event_id) } } }
                            td { span class={"badge level-" (m.level)} { (m.level) } }
                            td { (m.environment.clone().unwrap_or_default()) }
                            td { (m.release.clone().unwrap_or_default()) }
                            td class="nowrap" { (when(m.occurred_at, now)) }
                        }
                    }
                }
            }
        }
        @if let Some(next) = list.next {
            @let c = cursor::encode(CursorKind::Messages, next);
            @let link = format!("{b}/error_tracking/messages?{}", form_urlencoded::Serializer::new(String::new()).append_pair("cursor", &c).finish());
            p class="paging" { a class="button" href=(link) { "Older messages →" } }
        }
    };
    Ok(page(
        StatusCode::OK,
        views::layout(
            &format!("Messages · {}", project.name),
            Some(&who(&viewer)),
            &views::crumbs_for(&project),
            body,
        ),
    ))
}

// ---------------------------------------------------------------------------------------------
// Settings

pub async fn settings(ctx: Ctx<'_>) -> UiResult<Response> {
    let viewer = ctx.viewer().await?;
    let (project, level) =
        project_at(ctx.state, &viewer, ctx.project, AccessLevel::MAINTAINER).await?;
    settings_page(
        &ctx,
        &viewer,
        &project,
        level,
        StatusCode::OK,
        &alert_pages::Extra::default(),
    )
    .await
}

/// The settings page, also as the answer to an alert form that is refused (with the form
/// filled in again and the reason) or that created a webhook (with its secret, this once).
pub(super) async fn settings_page(
    ctx: &Ctx<'_>,
    viewer: &Viewer,
    project: &Project,
    level: AccessLevel,
    status: StatusCode,
    extra: &alert_pages::Extra<'_>,
) -> UiResult<Response> {
    let state = ctx.state;
    let alerts = alert_pages::section(state, viewer, project, extra).await?;
    let setting = state.store.setting(project.id).await?;
    let keys = state.store.list_keys(project.id, 1, 100).await?;
    let active_keys: Vec<_> = keys.items.iter().filter(|k| k.active).collect();
    let first_dsn = active_keys
        .first()
        .map(|k| dsn(&state.external_url, &k.public_key, project.id));
    let (active, integrated) = setting
        .as_ref()
        .map(|s| (s.setting.active, s.setting.integrated))
        .unwrap_or((false, true));
    let b = base(project);
    let body = html! {
        (views::project_tabs(project, level, "settings"))
        @if let Some(n) = flash(ctx.query) { p class="flash ok" { (n) } }
        section class="card" {
            h2 { "Error tracking" }
            form method="post" action={(b) "/settings/error_tracking"} class="stack" {
                (csrf_field(viewer))
                label class="check" { input type="checkbox" name="active" value="1" checked[active]; " Error tracking is on: events sent with this project's keys are stored" }
                label class="check" { input type="checkbox" name="integrated" value="1" checked[integrated]; " Integrated: faultline itself stores the events (not an external Sentry)" }
                @if setting.is_none() { p class="muted small" { "This project has no settings yet; saving creates them." } }
                button type="submit" class="primary" { "Save" }
            }
        }
        section class="card" {
            div class="card-head" {
                h2 { "Client keys" }
                form method="post" action={(b) "/settings/error_tracking/client_keys"} class="inline" {
                    (csrf_field(viewer))
                    button type="submit" class="primary" { "Create key" }
                }
            }
            @if active_keys.is_empty() {
                p class="muted" { "No client keys. Create one to get a DSN." }
            } @else {
                table class="list keys" {
                    thead { tr { th { "DSN" } th { "Public key" } th {} } }
                    tbody {
                        @for k in &active_keys {
                            @let d = dsn(&state.external_url, &k.public_key, project.id);
                            tr {
                                td class="dsn-cell" {
                                    div class="copy-field" {
                                        input type="text" readonly value=(d) id={"dsn-" (k.id)} aria-label="DSN";
                                        button type="button" class="copy" data-copy={"dsn-" (k.id)} { "Copy" }
                                    }
                                }
                                td { code { (k.public_key) } }
                                td {
                                    form method="post" action={(b) "/settings/error_tracking/client_keys/" (k.id) "/delete"} class="inline confirm" data-confirm="Delete this key? Events sent with it will be refused." {
                                        (csrf_field(viewer))
                                        button type="submit" class="danger" { "Delete" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        @if let Some(d) = &first_dsn {
            section class="card" {
                h2 { "Set up an SDK" }
                p class="muted" { "Each snippet has this project's first key filled in." }
                div class="snippets" {
                    @for (lang, code) in snippets(d) {
                        details class="snippet" open[lang == "Python"] {
                            summary { (lang) }
                            pre { code { (code) } }
                        }
                    }
                }
            }
        }
        (alerts)
    };
    Ok(page(
        status,
        views::layout(
            &format!("Settings · {}", project.name),
            Some(&who(viewer)),
            &views::crumbs_for(project),
            body,
        ),
    ))
}

/// A short set-up snippet per SDK, with the DSN filled in.
fn snippets(dsn: &str) -> Vec<(&'static str, String)> {
    vec![
        ("Python", format!("import sentry_sdk\n\nsentry_sdk.init(dsn=\"{dsn}\")")),
        (
            "JavaScript",
            format!("import * as Sentry from \"@sentry/browser\";\n\nSentry.init({{ dsn: \"{dsn}\" }});"),
        ),
        (
            "Go",
            format!("err := sentry.Init(sentry.ClientOptions{{\n    Dsn: \"{dsn}\",\n}})"),
        ),
        (
            "Rust",
            format!("let _guard = sentry::init((\n    \"{dsn}\",\n    sentry::ClientOptions::default(),\n));"),
        ),
        (
            "Java",
            format!("Sentry.init(options -> {{\n    options.setDsn(\"{dsn}\");\n}});"),
        ),
        (
            "Ruby",
            format!("Sentry.init do |config|\n  config.dsn = \"{dsn}\"\nend"),
        ),
        ("PHP", format!("\\Sentry\\init(['dsn' => '{dsn}']);")),
        (
            ".NET",
            format!("SentrySdk.Init(options =>\n{{\n    options.Dsn = \"{dsn}\";\n}});"),
        ),
    ]
}

pub async fn save_settings(ctx: Ctx<'_>, body: Body) -> UiResult<Response> {
    let (viewer, form) = signed_form(ctx.state, ctx.headers, ctx.path, body).await?;
    let (project, _) = project_at(ctx.state, &viewer, ctx.project, AccessLevel::MAINTAINER).await?;
    ops::put_setting(
        ctx.state,
        Setting {
            project_id: project.id,
            active: form.get("active").is_some(),
            integrated: form.get("integrated").is_some(),
        },
    )
    .await?;
    Ok(see_other(&format!(
        "{}/settings/error_tracking?done=saved",
        base(&project)
    )))
}

pub async fn create_key(ctx: Ctx<'_>, body: Body) -> UiResult<Response> {
    let (viewer, _) = signed_form(ctx.state, ctx.headers, ctx.path, body).await?;
    let (project, _) = project_at(ctx.state, &viewer, ctx.project, AccessLevel::MAINTAINER).await?;
    ops::create_key(ctx.state, project.id).await?;
    Ok(see_other(&format!(
        "{}/settings/error_tracking?done=key_created",
        base(&project)
    )))
}

pub async fn delete_key(ctx: Ctx<'_>, key_id: i64, body: Body) -> UiResult<Response> {
    let (viewer, _) = signed_form(ctx.state, ctx.headers, ctx.path, body).await?;
    let (project, _) = project_at(ctx.state, &viewer, ctx.project, AccessLevel::MAINTAINER).await?;
    ops::delete_key(ctx.state, project.id, key_id)
        .await?
        .ok_or(UiError::NotFound)?;
    Ok(see_other(&format!(
        "{}/settings/error_tracking?done=key_deleted",
        base(&project)
    )))
}
