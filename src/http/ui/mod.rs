//! The web UI (docs/protocol.md, "Web UI"): server-rendered pages at GitLab-shaped URLs (`/:namespace/:project/-/error_tracking`,
//! `.../-/settings/error_tracking`), signed in with a username and password. Markup comes from
//! `maud` (checked at compile time, every interpolated value escaped); CSS and JavaScript are
//! embedded in the binary and served from `/-/ui/static/`. Every answer carries a strict
//! Content-Security-Policy, so even a value that escaped escaping could not run a script.
//!
//! Handlers are thin: they authenticate the session, resolve the project at the role they need
//! with the same `api::project_for` as the REST API, call the shared operations in
//! `http::ops` (resolve, create and delete keys, settings, alert rules and channels) or the
//! store's reads, and render.
//! [`UiError`] is the UI's own error type; it renders an error page.

mod alert_pages;
mod auth;
mod charts;
mod event_view;
mod pages;
mod views;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use maud::Markup;

use super::api::{project_for, ApiError, Caller};
use super::AppState;
use crate::domain::tokens;
use crate::store::read::ErrorStatus;
use crate::store::web::Session;
use crate::store::{AccessLevel, Project, StoreError};

pub use auth::SESSION_COOKIE;

/// Nothing from anywhere but this server; no inline script or style (the pages have none), no
/// frames, forms only to this server.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; \
     frame-ancestors 'none'; base-uri 'none'";

const CSS: &str = include_str!("assets/app.css");
const JS: &str = include_str!("assets/app.js");

/// The UI's fixed routes. Project pages have paths of any depth (`acme/web/shop/-/...`) and
/// are dispatched by [`fallback`].
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(pages::projects))
        .route(
            "/users/sign_in",
            get(auth::sign_in_page).post(auth::sign_in),
        )
        .route("/users/sign_out", post(auth::sign_out))
        .route("/-/ui/projects", post(pages::create_project))
        .route("/-/ui/users", post(pages::create_user))
        .route("/-/ui/password", post(pages::set_password))
        .route("/-/ui/static/app.css", get(css))
        .route("/-/ui/static/app.js", get(js))
}

async fn css() -> Response {
    static_asset("text/css; charset=utf-8", CSS)
}

async fn js() -> Response {
    static_asset("text/javascript; charset=utf-8", JS)
}

fn static_asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        body,
    )
        .into_response()
}

/// Errors of the UI, each rendered as a page.
#[derive(Debug, thiserror::Error)]
pub enum UiError {
    /// An unknown page, project or error, and a project the user is not a member of.
    #[error("not found")]
    NotFound,
    #[error("forbidden")]
    Forbidden,
    /// A form without its session's CSRF token.
    #[error("the form's CSRF token is missing or wrong")]
    Csrf,
    #[error("bad request: {0}")]
    BadRequest(String),
    /// A page that needs a session, asked without one: sent to the sign-in page.
    #[error("sign-in required")]
    SignIn { back_to: String },
    #[error("storage failed")]
    Store(#[from] StoreError),
}

impl From<ApiError> for UiError {
    fn from(e: ApiError) -> UiError {
        match e {
            ApiError::ProjectNotFound | ApiError::NotFound(_) => UiError::NotFound,
            ApiError::Forbidden | ApiError::InsufficientScope => UiError::Forbidden,
            ApiError::Unauthorized => UiError::SignIn {
                back_to: "/".into(),
            },
            e @ (ApiError::BadParams(_) | ApiError::Invalid(_)) => {
                UiError::BadRequest(refusal(&e).unwrap_or_default())
            }
            ApiError::Conflict(m) => UiError::BadRequest(m.to_owned()),
            ApiError::Store(e) => UiError::Store(e),
        }
    }
}

impl IntoResponse for UiError {
    fn into_response(self) -> Response {
        let (status, title, text) = match &self {
            UiError::NotFound => (
                StatusCode::NOT_FOUND,
                "Page not found",
                "There is nothing here, or you are not allowed to see it.".to_owned(),
            ),
            UiError::Forbidden => (
                StatusCode::FORBIDDEN,
                "Not allowed",
                "Your role in this project does not allow this.".to_owned(),
            ),
            UiError::Csrf => (
                StatusCode::FORBIDDEN,
                "The form has expired",
                "Reload the page and send the form again.".to_owned(),
            ),
            UiError::BadRequest(m) => (StatusCode::BAD_REQUEST, "Bad request", m.clone()),
            UiError::SignIn { back_to } => {
                let mut q = form_urlencoded::Serializer::new(String::new());
                q.append_pair("redirect", back_to);
                return see_other(&format!("/users/sign_in?{}", q.finish()));
            }
            UiError::Store(e) => {
                tracing::error!(error = %e, cause = ?std::error::Error::source(e), "web UI request failed");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Something went wrong",
                    "The server could not answer this page. The log says why.".to_owned(),
                )
            }
        };
        html(status, views::error_page(status.as_u16(), title, &text))
    }
}

pub type UiResult<T> = Result<T, UiError>;

/// What a refused form is told, from the REST API's own refusal of the same parameters
/// (`name is missing`, `{"url": ["is blocked: ..."]}`), as a sentence a person reads. `None`
/// for an error that is not about the form's values.
pub(crate) fn refusal(e: &ApiError) -> Option<String> {
    let text = match e {
        ApiError::BadParams(m) => m.clone(),
        ApiError::Invalid(serde_json::Value::Object(fields)) => fields
            .iter()
            .flat_map(|(field, problems)| {
                let problems = problems.as_array().cloned().unwrap_or_default();
                problems.into_iter().map(move |p| {
                    let p = p.as_str().unwrap_or_default().to_owned();
                    // `base` is about the whole form, and `type` problems name the type.
                    match field.as_str() {
                        "base" | "type" => p,
                        "url" => format!("URL {p}"),
                        f => format!("{f} {p}"),
                    }
                })
            })
            .collect::<Vec<_>>()
            .join("; "),
        ApiError::Invalid(other) => other.to_string(),
        _ => return None,
    };
    // Parameter names read as words (`frequency_count` is "frequency count").
    let text = text.replace('_', " ");
    let text = match text.strip_prefix("url ") {
        Some(rest) => format!("URL {rest}"),
        None => text,
    };
    let mut chars = text.chars();
    let first = chars.next()?;
    let mut sentence: String = first.to_uppercase().chain(chars).collect();
    if !sentence.ends_with('.') {
        sentence.push('.');
    }
    Some(sentence)
}

/// A `303 See Other` to `to`. axum's `Redirect` panics on a target that is not a valid header
/// value; targets here can carry what a form sent, so an invalid one goes to `/` instead.
pub(crate) fn see_other(to: &str) -> Response {
    let location = HeaderValue::from_str(to).unwrap_or_else(|_| HeaderValue::from_static("/"));
    (StatusCode::SEE_OTHER, [(header::LOCATION, location)]).into_response()
}

/// Whether `target` is a path on this server that a browser reads as such: it starts with one
/// `/`, and holds only printable ASCII (browsers drop tabs and newlines from a URL, so
/// `/<tab>/evil.example` would become `//evil.example`, another site).
pub(crate) fn is_local_path(target: &str) -> bool {
    target.starts_with('/')
        && !target.starts_with("//")
        && target.bytes().all(|b| b.is_ascii_graphic())
        && !target.contains('\\')
}

/// A rendered page with the UI's security headers.
fn html(status: StatusCode, markup: Markup) -> Response {
    (status, page_headers(), markup.into_string()).into_response()
}

fn page_headers() -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    // Pages show a user's data; no shared cache keeps them.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h
}

/// The signed-in user of a request.
#[derive(Debug, Clone)]
pub struct Viewer {
    pub session: Session,
}

impl Viewer {
    fn caller(&self) -> Caller {
        Caller {
            user: self.session.user.clone(),
            scopes: vec!["api".into()],
        }
    }

    pub fn csrf(&self) -> &str {
        &self.session.csrf
    }
}

/// The session the request's cookie names, if it is live.
async fn viewer(state: &AppState, headers: &HeaderMap) -> UiResult<Option<Viewer>> {
    let Some(secret) = auth::cookie(headers, SESSION_COOKIE) else {
        return Ok(None);
    };
    let session = state.store.session(tokens::digest(&secret)).await?;
    Ok(session.map(|session| Viewer { session }))
}

/// The signed-in user, or a redirect to the sign-in page that comes back to `path`.
async fn require_viewer(state: &AppState, headers: &HeaderMap, path: &str) -> UiResult<Viewer> {
    viewer(state, headers)
        .await?
        .ok_or_else(|| UiError::SignIn {
            back_to: path.to_owned(),
        })
}

/// A project the viewer reaches with at least `min`, and the role they hold there (Owner for
/// an administrator). Non-members get [`UiError::NotFound`], as the API answers them.
async fn project_at(
    state: &AppState,
    viewer: &Viewer,
    path: &str,
    min: AccessLevel,
) -> UiResult<(Project, AccessLevel)> {
    let caller = viewer.caller();
    let project = project_for(state, &caller, path, min).await?;
    let level = if caller.is_admin() {
        AccessLevel::OWNER
    } else {
        state
            .store
            .member_level(project.id, caller.user.id)
            .await?
            .map(AccessLevel)
            .unwrap_or(AccessLevel::GUEST)
    };
    Ok((project, level))
}

/// A form body: every pair in order (checkboxes repeat their name).
#[derive(Debug, Default)]
pub struct FormData(Vec<(String, String)>);

/// Forms are a few fields; anything larger is not one of ours.
const MAX_FORM_BODY: usize = 64 * 1024;

impl FormData {
    async fn read(body: Body) -> UiResult<FormData> {
        let bytes = tokio::time::timeout(
            std::time::Duration::from_secs(30),
            axum::body::to_bytes(body, MAX_FORM_BODY),
        )
        .await
        .map_err(|_| UiError::BadRequest("timed out reading the form".into()))?
        .map_err(|_| UiError::BadRequest("the form is too large".into()))?;
        Ok(FormData(
            form_urlencoded::parse(&bytes)
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        ))
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every pair, for [`crate::http::api::Params::from_pairs`].
    pub fn pairs(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    pub fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> {
        self.0
            .iter()
            .filter(move |(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Refuses the form unless it carries the session's CSRF token.
    fn check_csrf(&self, viewer: &Viewer) -> UiResult<()> {
        match self.get("csrf") {
            Some(t) if tokens::digests_equal(t.as_bytes(), viewer.csrf().as_bytes()) => Ok(()),
            _ => Err(UiError::Csrf),
        }
    }
}

/// A signed-in user's form, its CSRF token checked.
async fn signed_form(
    state: &AppState,
    headers: &HeaderMap,
    path: &str,
    body: Body,
) -> UiResult<(Viewer, FormData)> {
    let viewer = require_viewer(state, headers, path).await?;
    let form = FormData::read(body).await?;
    form.check_csrf(&viewer)?;
    Ok((viewer, form))
}

/// What a project page's path names, after `/-/`.
#[derive(Debug, PartialEq, Eq)]
enum ProjectPage {
    Errors,
    Bulk,
    Messages,
    Details(i64),
    Status(i64),
    RawEvent(i64, i64),
    Settings,
    CreateKey,
    DeleteKey(i64),
    CreateRule,
    DeleteRule(i64),
    AddChannel(i64),
    DeleteChannel(i64, i64),
    TestChannel(i64, i64),
}

/// Splits `/acme/shop/-/error_tracking/5/details` into the project path and the page.
fn route(path: &str) -> Option<(&str, ProjectPage)> {
    let (project, rest) = path.strip_prefix('/')?.split_once("/-/")?;
    if project.is_empty() {
        return None;
    }
    let parts: Vec<&str> = rest.trim_end_matches('/').split('/').collect();
    let id = |s: &str| {
        super::is_numeric_id(s)
            .then(|| s.parse::<i64>().ok())
            .flatten()
    };
    let page = match parts.as_slice() {
        ["error_tracking"] => ProjectPage::Errors,
        ["error_tracking", "bulk"] => ProjectPage::Bulk,
        ["error_tracking", "messages"] => ProjectPage::Messages,
        ["error_tracking", fp, "details"] => ProjectPage::Details(id(fp)?),
        ["error_tracking", fp, "status"] => ProjectPage::Status(id(fp)?),
        ["error_tracking", fp, "events", file] => {
            ProjectPage::RawEvent(id(fp)?, id(file.strip_suffix(".json")?)?)
        }
        ["settings", "error_tracking"] => ProjectPage::Settings,
        ["settings", "error_tracking", "client_keys"] => ProjectPage::CreateKey,
        ["settings", "error_tracking", "client_keys", key, "delete"] => {
            ProjectPage::DeleteKey(id(key)?)
        }
        ["settings", "error_tracking", "alert_rules"] => ProjectPage::CreateRule,
        ["settings", "error_tracking", "alert_rules", rule, "delete"] => {
            ProjectPage::DeleteRule(id(rule)?)
        }
        ["settings", "error_tracking", "alert_rules", rule, "channels"] => {
            ProjectPage::AddChannel(id(rule)?)
        }
        ["settings", "error_tracking", "alert_rules", rule, "channels", ch, "delete"] => {
            ProjectPage::DeleteChannel(id(rule)?, id(ch)?)
        }
        ["settings", "error_tracking", "alert_rules", rule, "channels", ch, "test"] => {
            ProjectPage::TestChannel(id(rule)?, id(ch)?)
        }
        _ => return None,
    };
    Some((project, page))
}

/// Every request no other route took: the project pages, then the not-found answers (an HTML
/// page for a browser, GitLab's JSON body for everyone else).
pub async fn fallback(State(state): State<AppState>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().to_owned();
    let query = parts.uri.query().unwrap_or("").to_owned();
    let Some((project, page)) = route(&path) else {
        let wants_html = parts
            .headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|a| a.contains("text/html"));
        return if wants_html {
            UiError::NotFound.into_response()
        } else {
            super::not_found().await
        };
    };
    // Paths arrive percent-encoded; project paths are plain segments, so a decoded form that
    // differs simply finds no project.
    let project = project.to_owned();
    let ctx = pages::Ctx {
        state: &state,
        headers: &parts.headers,
        path: &path,
        query: &query,
        project: &project,
    };
    let result = match (&parts.method, page) {
        (&Method::GET | &Method::HEAD, ProjectPage::Errors) => pages::errors(ctx).await,
        (&Method::GET | &Method::HEAD, ProjectPage::Messages) => pages::messages(ctx).await,
        (&Method::GET | &Method::HEAD, ProjectPage::Details(fp)) => pages::details(ctx, fp).await,
        (&Method::GET | &Method::HEAD, ProjectPage::RawEvent(fp, id)) => {
            pages::raw_event(ctx, fp, id).await
        }
        (&Method::GET | &Method::HEAD, ProjectPage::Settings) => pages::settings(ctx).await,
        (&Method::POST, ProjectPage::Bulk) => pages::bulk_status(ctx, body).await,
        (&Method::POST, ProjectPage::Status(fp)) => pages::status(ctx, fp, body).await,
        (&Method::POST, ProjectPage::Settings) => pages::save_settings(ctx, body).await,
        (&Method::POST, ProjectPage::CreateKey) => pages::create_key(ctx, body).await,
        (&Method::POST, ProjectPage::DeleteKey(id)) => pages::delete_key(ctx, id, body).await,
        (&Method::POST, ProjectPage::CreateRule) => alert_pages::create_rule(ctx, body).await,
        (&Method::POST, ProjectPage::DeleteRule(r)) => alert_pages::delete_rule(ctx, r, body).await,
        (&Method::POST, ProjectPage::AddChannel(r)) => alert_pages::add_channel(ctx, r, body).await,
        (&Method::POST, ProjectPage::DeleteChannel(r, c)) => {
            alert_pages::delete_channel(ctx, r, c, body).await
        }
        (&Method::POST, ProjectPage::TestChannel(r, c)) => {
            alert_pages::test_channel(ctx, r, c, body).await
        }
        _ => return super::method_not_allowed().await,
    };
    result.unwrap_or_else(IntoResponse::into_response)
}

/// The label of a status button and the status it sets.
fn status_actions(current: ErrorStatus) -> &'static [(&'static str, ErrorStatus)] {
    match current {
        ErrorStatus::Unresolved => &[
            ("Resolve", ErrorStatus::Resolved),
            ("Ignore", ErrorStatus::Ignored),
        ],
        ErrorStatus::Resolved | ErrorStatus::Ignored => &[("Reopen", ErrorStatus::Unresolved)],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn project_paths_of_any_depth() {
        assert!(is_local_path("/a/b/-/error_tracking?query=x%20y"));
        for bad in [
            "//evil", "/\t/evil", "/a\nb", "/\\evil", "http://x", "", "/é",
        ] {
            assert!(!is_local_path(bad), "{bad:?}");
        }
        assert_eq!(see_other("/a\nb").headers()[header::LOCATION], "/");
        assert_eq!(
            route("/acme/web/shop/-/error_tracking"),
            Some(("acme/web/shop", ProjectPage::Errors))
        );
        assert_eq!(
            route("/a/b/-/error_tracking/42/details"),
            Some(("a/b", ProjectPage::Details(42)))
        );
        assert_eq!(
            route("/a/b/-/error_tracking/42/events/7.json"),
            Some(("a/b", ProjectPage::RawEvent(42, 7)))
        );
        assert_eq!(
            route("/a/b/-/settings/error_tracking/client_keys/3/delete"),
            Some(("a/b", ProjectPage::DeleteKey(3)))
        );
        assert_eq!(
            route("/a/b/-/settings/error_tracking/alert_rules/4/channels/9/test"),
            Some(("a/b", ProjectPage::TestChannel(4, 9)))
        );
        for no in [
            "/-/error_tracking",
            "/a/b",
            "/a/b/-/error_tracking/x/details",
            "/a/b/-/error_tracking/-1/details",
            "/a/b/-/nothing",
            "/api/v4/unknown",
        ] {
            assert_eq!(route(no), None, "{no}");
        }
    }
}
