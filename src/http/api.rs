//! What every GitLab-style route shares: the error type whose single `match` picks status codes
//! and bodies, the parameter bag (query string, JSON or form body), token authentication, and the
//! project-plus-role check.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::Utc;
use serde_json::{json, Map, Value};
use sha2::Digest as _;

use super::AppState;
use crate::domain::tokens;
use crate::store::{AccessLevel, Project, StoreError, User};

/// Errors of the management API, answered with GitLab's exact bodies.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("unauthorized")]
    Unauthorized,
    #[error("forbidden")]
    Forbidden,
    #[error("token scope too narrow")]
    InsufficientScope,
    #[error("project not found")]
    ProjectNotFound,
    /// A 404 with GitLab's message for the missing thing, e.g. `404 Not found`.
    #[error("not found: {0}")]
    NotFound(&'static str),
    /// 400 with `{"error": ...}`: parameter validation, as Grape words it.
    #[error("bad request: {0}")]
    BadParams(String),
    /// 400 with `{"message": ...}`: model validation, as GitLab words it.
    #[error("invalid: {0}")]
    Invalid(Value),
    #[error("conflict: {0}")]
    Conflict(&'static str),
    #[error("storage failed")]
    Store(#[from] StoreError),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, body) = match &self {
            ApiError::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                json!({"message": "401 Unauthorized"}),
            ),
            ApiError::Forbidden => (StatusCode::FORBIDDEN, json!({"message": "403 Forbidden"})),
            ApiError::InsufficientScope => (
                StatusCode::FORBIDDEN,
                json!({
                    "error": "insufficient_scope",
                    "error_description": "The request requires higher privileges than provided by the access token.",
                    "scope": "api"
                }),
            ),
            ApiError::ProjectNotFound => (
                StatusCode::NOT_FOUND,
                json!({"message": "404 Project Not Found"}),
            ),
            ApiError::NotFound(m) => (StatusCode::NOT_FOUND, json!({"message": m})),
            ApiError::BadParams(e) => (StatusCode::BAD_REQUEST, json!({"error": e})),
            ApiError::Invalid(m) => (StatusCode::BAD_REQUEST, json!({"message": m})),
            ApiError::Conflict(m) => (StatusCode::CONFLICT, json!({"message": m})),
            ApiError::Store(e) => {
                tracing::error!(error = %e, cause = ?std::error::Error::source(e), "management request failed");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    json!({"message": "500 Internal Server Error"}),
                )
            }
        };
        if status.is_client_error() {
            tracing::debug!(%status, error = %self, "request refused");
        }
        (status, Json(body)).into_response()
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

/// Request parameters merged from the query string and a JSON or form body, later sources
/// winning. Values stay JSON so that arrays (`scopes[]=api`) and typed JSON survive. A body that
/// cannot be parsed is remembered rather than refused at once, so that authentication still
/// answers first (GitLab checks the token before it looks at parameters).
#[derive(Debug, Default)]
pub struct Params {
    values: Map<String, Value>,
    body_error: Option<String>,
    pub headers: HeaderMap,
    pub method: Method,
    pub path: String,
}

/// Largest management request body; these are a few parameters at most.
const MAX_PARAMS_BODY: usize = 64 * 1024;

/// A few parameters arrive in one packet; a client dribbling them for longer is holding a
/// connection hostage.
const PARAMS_BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

impl<S: Send + Sync> FromRequest<S> for Params {
    type Rejection = Response;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let method = req.method().clone();
        let headers = req.headers().clone();
        // Inside a nested router the URI is stripped of its prefix; links need the full path.
        let path = req
            .extensions()
            .get::<axum::extract::OriginalUri>()
            .map(|u| u.0.path().to_owned())
            .unwrap_or_else(|| req.uri().path().to_owned());
        let mut values = Map::new();
        if let Some(q) = req.uri().query() {
            merge_urlencoded(&mut values, q.as_bytes());
        }
        let content_type = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_ascii_lowercase();
        let mut body_error = None;
        let read = tokio::time::timeout(
            PARAMS_BODY_TIMEOUT,
            axum::body::to_bytes(req.into_body(), MAX_PARAMS_BODY),
        );
        match read.await {
            Ok(Ok(body)) if !body.is_empty() => {
                merge_body(&mut values, &content_type, &body, &mut body_error)
            }
            Ok(Ok(_)) => {}
            Ok(Err(_)) => body_error = Some("request body too large".into()),
            Err(_) => body_error = Some("timed out reading the request body".into()),
        }
        let _ = state;
        Ok(Params {
            values,
            body_error,
            headers,
            method,
            path,
        })
    }
}

fn merge_body(
    values: &mut Map<String, Value>,
    content_type: &str,
    body: &Bytes,
    err: &mut Option<String>,
) {
    if content_type.starts_with("application/json") {
        match serde_json::from_slice::<Value>(body) {
            Ok(Value::Object(m)) => values.extend(m),
            // Grape's wording for a body that does not parse as its declared type. (The
            // content type itself is supported, so saying otherwise would send users astray.)
            Ok(_) | Err(_) => *err = Some("message body does not match declared format".into()),
        }
    } else if content_type.starts_with("application/x-www-form-urlencoded")
        || content_type.is_empty()
    {
        merge_urlencoded(values, body);
    } else if content_type.starts_with("multipart/") {
        *err = Some("multipart bodies are not supported".into());
    }
}

fn merge_urlencoded(values: &mut Map<String, Value>, raw: &[u8]) {
    merge_pairs(values, form_urlencoded::parse(raw));
}

/// Form pairs as parameters: `name[]` collects a list, any other name keeps its last value.
fn merge_pairs<K: AsRef<str>, V: Into<String>>(
    values: &mut Map<String, Value>,
    pairs: impl IntoIterator<Item = (K, V)>,
) {
    for (k, v) in pairs {
        let (k, v) = (k.as_ref(), Value::String(v.into()));
        if let Some(base) = k.strip_suffix("[]") {
            let entry = values
                .entry(base.to_owned())
                .or_insert_with(|| Value::Array(vec![]));
            match entry {
                Value::Array(a) => a.push(v),
                other => *other = Value::Array(vec![v]),
            }
        } else {
            values.insert(k.to_owned(), v);
        }
    }
}

/// A parameter problem, worded as Grape words it.
enum ParamProblem {
    Empty,
    Invalid,
}

impl Params {
    /// Parameters of a query string alone: the web UI's list pages take the read API's
    /// parameters and run them through the same validation.
    pub(crate) fn from_query(query: &str) -> Params {
        let mut values = Map::new();
        merge_urlencoded(&mut values, query.as_bytes());
        Params {
            values,
            ..Default::default()
        }
    }

    /// Parameters of a web UI form, so its fields go through the REST API's own validation.
    pub(crate) fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Params {
        let mut values = Map::new();
        merge_pairs(&mut values, pairs);
        Params {
            values,
            ..Default::default()
        }
    }

    pub fn is_write(&self) -> bool {
        self.method != Method::GET && self.method != Method::HEAD
    }

    /// Fails with 400 when the body could not be read.
    pub fn check_body(&self) -> ApiResult<()> {
        match &self.body_error {
            Some(e) => Err(ApiError::BadParams(e.clone())),
            None => Ok(()),
        }
    }

    /// The names of every parameter sent, in the query string or the body.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.values.keys().map(String::as_str)
    }

    pub fn raw(&self, name: &str) -> Option<&Value> {
        self.values.get(name)
    }

    fn bool_of(&self, name: &str) -> Result<Option<bool>, ParamProblem> {
        match self.values.get(name) {
            None => Ok(None),
            Some(Value::Null) => Err(ParamProblem::Empty),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(Value::Number(n)) => match n.as_i64() {
                Some(1) => Ok(Some(true)),
                Some(0) => Ok(Some(false)),
                _ => Err(ParamProblem::Invalid),
            },
            Some(Value::String(s)) if s.is_empty() => Err(ParamProblem::Empty),
            Some(Value::String(s)) => parse_bool(s).map(Some).ok_or(ParamProblem::Invalid),
            Some(_) => Err(ParamProblem::Invalid),
        }
    }

    pub fn string(&self, name: &str) -> Option<String> {
        match self.values.get(name)? {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            _ => None,
        }
    }

    pub fn int(&self, name: &str) -> ApiResult<Option<i64>> {
        match self.values.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => n
                .as_i64()
                .map(Some)
                .ok_or_else(|| ApiError::BadParams(format!("{name} is invalid"))),
            Some(Value::String(s)) if s.is_empty() => Ok(None),
            Some(Value::String(s)) => s
                .trim()
                .parse()
                .map(Some)
                .map_err(|_| ApiError::BadParams(format!("{name} is invalid"))),
            Some(_) => Err(ApiError::BadParams(format!("{name} is invalid"))),
        }
    }

    pub fn list(&self, name: &str) -> Option<Vec<String>> {
        match self.values.get(name)? {
            Value::Array(a) => Some(
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect(),
            ),
            Value::String(s) => Some(
                s.split(',')
                    .map(|p| p.trim().to_owned())
                    .filter(|p| !p.is_empty())
                    .collect(),
            ),
            _ => None,
        }
    }

    /// Reads boolean parameters; `required` ones must be present. All problems are reported at
    /// once in one string joined by `, `, as GitLab does.
    pub fn booleans(
        &self,
        required: &[&str],
        optional: &[&str],
    ) -> ApiResult<HashMap<String, bool>> {
        let mut out = HashMap::new();
        let mut problems = Vec::new();
        for (name, req) in required
            .iter()
            .map(|n| (n, true))
            .chain(optional.iter().map(|n| (n, false)))
        {
            match self.bool_of(name) {
                Ok(Some(b)) => {
                    out.insert((*name).to_owned(), b);
                }
                Ok(None) if req => problems.push(format!("{name} is missing")),
                Ok(None) => {}
                Err(ParamProblem::Empty) => problems.push(format!("{name} is empty")),
                Err(ParamProblem::Invalid) => problems.push(format!("{name} is invalid")),
            }
        }
        if problems.is_empty() {
            Ok(out)
        } else {
            Err(ApiError::BadParams(problems.join(", ")))
        }
    }
}

/// GitLab's (Grape's) boolean words.
pub fn parse_bool(s: &str) -> Option<bool> {
    match s.trim().to_ascii_lowercase().as_str() {
        "true" | "t" | "yes" | "1" => Some(true),
        "false" | "f" | "no" | "0" => Some(false),
        _ => None,
    }
}

/// The authenticated caller.
#[derive(Debug, Clone)]
pub struct Caller {
    pub user: User,
    pub scopes: Vec<String>,
}

impl Caller {
    pub fn is_admin(&self) -> bool {
        self.user.is_admin
    }
}

fn token_from(params: &Params) -> Option<String> {
    if let Some(v) = params
        .headers
        .get("private-token")
        .and_then(|v| v.to_str().ok())
    {
        return Some(v.trim().to_owned());
    }
    if let Some(v) = params
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        let v = v.trim();
        if v.len() > 7 && v[..7].eq_ignore_ascii_case("bearer ") {
            return Some(v[7..].trim().to_owned());
        }
    }
    params.string("private_token")
}

/// The header GitLab authenticates with as the error-tracking backend's client.
pub const GITLAB_TOKEN_HEADER: &str = "gitlab-error-tracking-token";

/// `None` when the request does not carry `Gitlab-Error-Tracking-Token` (personal access
/// tokens then apply); otherwise whether it is the configured shared token. An empty header,
/// or any header while no token is configured, is refused. The comparison is of SHA-256
/// digests in constant time, so neither the position of the first differing byte nor the
/// token's length shows in the time taken.
pub fn gitlab_token_access(state: &AppState, headers: &HeaderMap) -> Option<ApiResult<()>> {
    let sent = headers.get(GITLAB_TOKEN_HEADER)?;
    let sent = sent.as_bytes().trim_ascii();
    let ok = match &state.gitlab_token_digest {
        Some(expected) if !sent.is_empty() => {
            let digest: [u8; 32] = sha2::Sha256::digest(sent).into();
            tokens::digests_equal(&digest, expected)
        }
        _ => false,
    };
    Some(if ok {
        Ok(())
    } else {
        tracing::debug!("Gitlab-Error-Tracking-Token refused");
        Err(ApiError::Unauthorized)
    })
}

/// Authenticates the request's personal access token and checks its scope against the method.
pub async fn authenticate(state: &AppState, params: &Params) -> ApiResult<Caller> {
    let token = token_from(params).ok_or(ApiError::Unauthorized)?;
    if token.is_empty() {
        return Err(ApiError::Unauthorized);
    }
    let digest = tokens::digest(&token);
    let owner = state
        .store
        .token_by_digest(digest)
        .await?
        .ok_or(ApiError::Unauthorized)?;
    // The lookup matched on the digest already; the constant-time comparison keeps the decision
    // itself independent of how many bytes matched, whatever the database's index did.
    if !tokens::digests_equal(&owner.digest, &digest) {
        return Err(ApiError::Unauthorized);
    }
    if owner.token.revoked {
        tracing::debug!(token_id = owner.token.id, "revoked token refused");
        return Err(ApiError::Unauthorized);
    }
    if let Some(exp) = owner.token.expires_at {
        // GitLab tokens expire at the start of their expiry date (UTC).
        if Utc::now().date_naive() >= exp {
            tracing::debug!(token_id = owner.token.id, "expired token refused");
            return Err(ApiError::Unauthorized);
        }
    }
    if !tokens::scopes_allow(&owner.token.scopes, params.is_write()) {
        return Err(ApiError::InsufficientScope);
    }
    Ok(Caller {
        user: owner.user,
        scopes: owner.token.scopes,
    })
}

/// Finds the project named by `id` (numeric id or URL-decoded full path) that the caller may
/// see, and checks that the caller holds at least `min`. Non-members get 404 so that they cannot
/// learn that a project exists.
/// The opening of every project-scoped handler: the caller, authenticated by token, and the
/// project `id` names, which the caller must reach with at least `min` (see [`project_for`]).
pub async fn project_access(
    state: &AppState,
    params: &Params,
    id: &str,
    min: AccessLevel,
) -> ApiResult<(Caller, Project)> {
    let caller = authenticate(state, params).await?;
    let project = project_for(state, &caller, id, min).await?;
    Ok((caller, project))
}

pub async fn project_for(
    state: &AppState,
    caller: &Caller,
    id: &str,
    min: AccessLevel,
) -> ApiResult<Project> {
    let project = if super::is_numeric_id(id) {
        match id.parse::<i64>() {
            Ok(n) => state.store.project_by_id(n).await?,
            Err(_) => None,
        }
    } else {
        state.store.project_by_path(id).await?
    }
    .ok_or(ApiError::ProjectNotFound)?;
    if caller.is_admin() {
        return Ok(project);
    }
    let level = state
        .store
        .member_level(project.id, caller.user.id)
        .await?
        .ok_or(ApiError::ProjectNotFound)?;
    if level < min.0 {
        return Err(ApiError::Forbidden);
    }
    Ok(project)
}

/// GitLab's offset pagination: `page` (default 1) and `per_page` (default 20, at most 100).
#[derive(Debug, Clone, Copy)]
pub struct Pagination {
    pub page: u64,
    pub per_page: u64,
}

impl Pagination {
    pub fn from_params(params: &Params) -> ApiResult<Pagination> {
        let page = params.int("page")?.unwrap_or(1).max(1) as u64;
        let per_page = params.int("per_page")?.unwrap_or(20).clamp(1, 100) as u64;
        Ok(Pagination { page, per_page })
    }

    /// `X-Total`, `X-Total-Pages`, `X-Page`, `X-Per-Page`, `X-Next-Page`, `X-Prev-Page` and a
    /// `Link` header with first/prev/next/last, built on the external URL.
    pub fn headers(&self, state: &AppState, params: &Params, total: u64) -> HeaderMap {
        let total_pages = total.div_ceil(self.per_page).max(1);
        let next = (self.page < total_pages).then_some(self.page + 1);
        // As Kaminari (GitLab's paginator): a page past the last has neither a next nor a
        // previous page, so a client walking `rel="prev"` from there cannot loop.
        let prev = (self.page > 1 && self.page <= total_pages).then(|| self.page - 1);
        let mut h = HeaderMap::new();
        let mut set = |name: &'static str, v: String| {
            if let Ok(v) = v.parse() {
                h.insert(name, v);
            }
        };
        set("x-total", total.to_string());
        set("x-total-pages", total_pages.to_string());
        set("x-page", self.page.to_string());
        set("x-per-page", self.per_page.to_string());
        set(
            "x-next-page",
            next.map(|n| n.to_string()).unwrap_or_default(),
        );
        set(
            "x-prev-page",
            prev.map(|n| n.to_string()).unwrap_or_default(),
        );
        let link = |page: u64, rel: &str| {
            let mut q = form_urlencoded::Serializer::new(String::new());
            for (k, v) in params.values.iter() {
                if k == "page" || k == "per_page" || k == "private_token" {
                    continue;
                }
                if let Value::String(s) = v {
                    q.append_pair(k, s);
                }
            }
            q.append_pair("page", &page.to_string());
            q.append_pair("per_page", &self.per_page.to_string());
            let base = state.external_url.as_str().trim_end_matches('/');
            format!("<{base}{}?{}>; rel=\"{rel}\"", params.path, q.finish())
        };
        let mut links = Vec::new();
        if let Some(p) = prev {
            links.push(link(p, "prev"));
        }
        if let Some(n) = next {
            links.push(link(n, "next"));
        }
        links.push(link(1, "first"));
        links.push(link(total_pages, "last"));
        set("link", links.join(", "));
        h
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gitlab_boolean_words() {
        for t in ["true", "TRUE", "t", "yes", "1", "True"] {
            assert_eq!(parse_bool(t), Some(true), "{t}");
        }
        for f in ["false", "F", "no", "0", "NO"] {
            assert_eq!(parse_bool(f), Some(false), "{f}");
        }
        for bad in ["maybe", "2", "tru", "", "on", "y"] {
            assert_eq!(parse_bool(bad), None, "{bad}");
        }
    }

    fn params(q: &str) -> Params {
        let mut values = Map::new();
        merge_urlencoded(&mut values, q.as_bytes());
        Params {
            values,
            ..Default::default()
        }
    }

    #[test]
    fn boolean_problems_are_joined() {
        let p = params("active=&integrated=maybe");
        match p.booleans(&["active", "integrated"], &[]) {
            Err(ApiError::BadParams(e)) => assert_eq!(e, "active is empty, integrated is invalid"),
            other => panic!("unexpected {other:?}"),
        }
        match params("").booleans(&["active", "integrated"], &[]) {
            Err(ApiError::BadParams(e)) => {
                assert_eq!(e, "active is missing, integrated is missing")
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn array_parameters() {
        let p = params("scopes[]=api&scopes[]=read_api");
        assert_eq!(
            p.list("scopes"),
            Some(vec!["api".into(), "read_api".into()])
        );
        assert_eq!(
            params("scopes=api,read_api")
                .list("scopes")
                .map(|v| v.len()),
            Some(2)
        );
    }
}
