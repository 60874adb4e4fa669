//! The small GitLab-shaped identity surface a standalone gateway needs: projects, users,
//! project members and personal access tokens.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::NaiveDate;
use serde_json::{json, Value};

use super::api::{authenticate, project_access, ApiError, ApiResult, Caller, Pagination, Params};
use super::AppState;
use crate::domain::tokens;
use crate::store::{
    AccessLevel, Member, NewProject, NewToken, NewUser, PersonalAccessToken, Project, StoreError,
    User,
};

pub fn project_json(state: &AppState, p: &Project) -> Value {
    let base = state.external_url.as_str().trim_end_matches('/');
    json!({
        "id": p.id,
        "name": p.name,
        "path": p.path,
        "path_with_namespace": p.path_with_namespace,
        "name_with_namespace": format!("{} / {}", p.namespace_path, p.name),
        "namespace": { "path": p.namespace_path.rsplit('/').next(), "full_path": p.namespace_path },
        "created_at": p.created_at,
        "web_url": format!("{base}/{}", p.path_with_namespace),
    })
}

pub fn user_json(u: &User) -> Value {
    json!({
        "id": u.id,
        "username": u.username,
        "name": u.name,
        "email": u.email,
        "state": "active",
        "is_admin": u.is_admin,
        "created_at": u.created_at,
    })
}

fn member_json(m: &Member) -> Value {
    json!({
        "id": m.user_id,
        "username": m.username,
        "name": m.name,
        "state": "active",
        "access_level": m.access_level,
    })
}

pub fn token_json(t: &PersonalAccessToken, secret: Option<&str>) -> Value {
    let mut v = json!({
        "id": t.id,
        "name": t.name,
        "revoked": t.revoked,
        "created_at": t.created_at,
        "scopes": t.scopes,
        "user_id": t.user_id,
        "active": !t.revoked && t.expires_at.is_none_or(|d| chrono::Utc::now().date_naive() < d),
        "expires_at": t.expires_at.map(|d| d.format("%Y-%m-%d").to_string()),
    });
    if let Some(s) = secret {
        v["token"] = Value::String(s.to_owned());
    }
    v
}

/// A path segment as GitLab allows it: letters, digits, `_`, `-`, `.`, not starting or ending
/// with a separator. Also used by the offline `admin` commands, so both ways in agree.
pub fn valid_segment(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
        && !s.starts_with(['-', '.'])
        && !s.ends_with(['-', '.'])
}

/// Derives a path from a project name: lower-case, runs of other characters become `-`.
pub fn path_from_name(name: &str) -> String {
    let mut out = String::new();
    for c in name.trim().chars() {
        if c.is_ascii_alphanumeric() || c == '_' || c == '.' {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    out.trim_matches(|c| c == '-' || c == '.').to_owned()
}

/// Grape's answer for absent required parameters: `"<name> is missing"` for each, joined by
/// `, `. `absent` pairs each parameter with whether it is absent.
fn missing(absent: &[(&str, bool)]) -> ApiError {
    let names: Vec<String> = absent
        .iter()
        .filter(|(_, a)| *a)
        .map(|(n, _)| format!("{n} is missing"))
        .collect();
    ApiError::BadParams(names.join(", "))
}

fn require_admin(caller: &Caller) -> ApiResult<()> {
    if caller.is_admin() {
        Ok(())
    } else {
        Err(ApiError::Forbidden)
    }
}

pub async fn create_project(State(state): State<AppState>, params: Params) -> ApiResult<Response> {
    let caller = authenticate(&state, &params).await?;
    params.check_body()?;
    let name = params.string("name").filter(|s| !s.trim().is_empty());
    let path = params.string("path").filter(|s| !s.trim().is_empty());
    let (name, path) = match (name, path) {
        (None, None) => {
            return Err(ApiError::BadParams(
                "name, path are missing, at least one parameter must be provided".into(),
            ))
        }
        (Some(n), None) => {
            let p = path_from_name(&n);
            (n, p)
        }
        (None, Some(p)) => (p.clone(), p),
        (Some(n), Some(p)) => (n, p),
    };
    if !valid_segment(&path) {
        return Err(ApiError::Invalid(
            json!({"path": ["can contain only letters, digits, '_', '-' and '.'. Cannot start with '-', end in '.git' or end in '.atom'"]}),
        ));
    }
    let namespace = params
        .string("namespace_path")
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| caller.user.username.clone());
    let namespace = namespace.trim_matches('/').to_owned();
    if !namespace.split('/').all(valid_segment) {
        return Err(ApiError::Invalid(json!({"namespace": ["is not valid"]})));
    }
    // Non-administrators create projects in their personal namespace only: with no group
    // model, letting them claim any namespace would let them squat on others' paths.
    if !caller.is_admin() && namespace != caller.user.username {
        return Err(ApiError::Forbidden);
    }
    let project = state
        .store
        .create_project(NewProject {
            name,
            path,
            namespace_path: namespace,
            owner_id: caller.user.id,
        })
        .await
        .map_err(|e| match e {
            StoreError::Conflict(_) => ApiError::Invalid(json!({
                "name": ["has already been taken"],
                "path": ["has already been taken"],
            })),
            e => e.into(),
        })?;
    Ok((StatusCode::CREATED, Json(project_json(&state, &project))).into_response())
}

/// `GET /api/v4/projects`: the projects the caller is a member of, or every project for an
/// administrator (unless `membership=true`), newest first as GitLab lists them. Takes GitLab's
/// `page`/`per_page`, `search` (a case-insensitive substring of the name or path), `order_by`
/// (`id`, `name`, `path`, `created_at`), `sort` (`asc`, `desc`), `membership` and `simple`.
/// faultline's project shape is already the small one, so `simple=true` changes nothing.
pub async fn list_projects(State(state): State<AppState>, params: Params) -> ApiResult<Response> {
    let caller = authenticate(&state, &params).await?;
    let flags = params.booleans(&[], &["membership", "simple"])?;
    let membership = flags.get("membership").copied().unwrap_or(false);
    let pg = Pagination::from_params(&params)?;
    let order_by = params
        .string("order_by")
        .unwrap_or_else(|| "created_at".into());
    let descending = match params.string("sort").as_deref() {
        None | Some("desc") => true,
        Some("asc") => false,
        Some(_) => {
            return Err(ApiError::BadParams(
                "sort does not have a valid value".into(),
            ))
        }
    };
    let mut projects = if caller.is_admin() && !membership {
        state.store.list_projects().await?
    } else {
        state.store.member_projects(caller.user.id, 0).await?
    };
    if let Some(needle) = params.string("search").filter(|s| !s.is_empty()) {
        let needle = needle.to_lowercase();
        projects.retain(|p| {
            [&p.name, &p.path, &p.path_with_namespace]
                .iter()
                .any(|field| field.to_lowercase().contains(&needle))
        });
    }
    match order_by.as_str() {
        // Ids grow with creation time, so they order both.
        "id" | "created_at" => projects.sort_by_key(|p| p.id),
        "name" => projects.sort_by(|a, b| a.name.cmp(&b.name).then(a.id.cmp(&b.id))),
        "path" => projects.sort_by(|a, b| {
            a.path_with_namespace
                .cmp(&b.path_with_namespace)
                .then(a.id.cmp(&b.id))
        }),
        _ => {
            return Err(ApiError::BadParams(
                "order_by does not have a valid value".into(),
            ))
        }
    }
    if descending {
        projects.reverse();
    }
    let total = projects.len() as u64;
    let items: Vec<Value> = projects
        .iter()
        .skip(((pg.page - 1) * pg.per_page) as usize)
        .take(pg.per_page as usize)
        .map(|p| project_json(&state, p))
        .collect();
    Ok((pg.headers(&state, &params, total), Json(items)).into_response())
}

pub async fn get_project(
    State(state): State<AppState>,
    Path(id): Path<String>,
    params: Params,
) -> ApiResult<Json<Value>> {
    let (_, project) = project_access(&state, &params, &id, AccessLevel::GUEST).await?;
    Ok(Json(project_json(&state, &project)))
}

pub async fn delete_project(
    State(state): State<AppState>,
    Path(id): Path<String>,
    params: Params,
) -> ApiResult<Response> {
    let (_, project) = project_access(&state, &params, &id, AccessLevel::OWNER).await?;
    remove_project(&state, project.id).await?;
    Ok(accepted())
}

/// Deletes a project for every API at once and has its rows removed in the background; its
/// keys are refused from now on, including keys GitLab vouched for.
pub(crate) async fn remove_project(state: &AppState, project_id: i64) -> ApiResult<()> {
    state.store.delete_project(project_id).await?;
    state.keys.remove_project(project_id);
    if let Some(gitlab) = &state.gitlab {
        gitlab.forget_project(project_id);
    }
    state.purge.notify_one();
    Ok(())
}

/// GitLab's answer to a deletion: the project is gone for every API now, its rows are removed
/// in the background, which is what a 202 says.
pub(crate) fn accepted() -> Response {
    (
        StatusCode::ACCEPTED,
        Json(json!({"message": "202 Accepted"})),
    )
        .into_response()
}

pub async fn list_members(
    State(state): State<AppState>,
    Path(id): Path<String>,
    params: Params,
) -> ApiResult<Json<Value>> {
    let (_, project) = project_access(&state, &params, &id, AccessLevel::GUEST).await?;
    let members = state.store.list_members(project.id).await?;
    Ok(Json(Value::Array(
        members.iter().map(member_json).collect(),
    )))
}

pub async fn add_member(
    State(state): State<AppState>,
    Path(id): Path<String>,
    params: Params,
) -> ApiResult<Response> {
    let (caller, project) = project_access(&state, &params, &id, AccessLevel::MAINTAINER).await?;
    params.check_body()?;
    let user_id = params.int("user_id")?;
    let level = params.int("access_level")?;
    let absent = [
        ("user_id", user_id.is_none()),
        ("access_level", level.is_none()),
    ];
    let (Some(user_id), Some(level)) = (user_id, level) else {
        return Err(missing(&absent));
    };
    if !AccessLevel::is_valid(level) {
        return Err(ApiError::BadParams(
            "access_level does not have a valid value".into(),
        ));
    }
    // A Maintainer may not hand out more than Maintainer; only Owners and administrators may
    // create Owners.
    if level > AccessLevel::MAINTAINER.0 && !caller.is_admin() {
        let own = state
            .store
            .member_level(project.id, caller.user.id)
            .await?
            .unwrap_or(0);
        if own < AccessLevel::OWNER.0 {
            return Err(ApiError::Forbidden);
        }
    }
    if state.store.user_by_id(user_id).await?.is_none() {
        return Err(ApiError::NotFound("404 User Not Found"));
    }
    let member = state
        .store
        .add_member(project.id, user_id, level)
        .await
        .map_err(|e| match e {
            StoreError::Conflict(_) => ApiError::Conflict("Member already exists"),
            e => e.into(),
        })?;
    Ok((StatusCode::CREATED, Json(member_json(&member))).into_response())
}

pub async fn remove_member(
    State(state): State<AppState>,
    Path((id, user_id)): Path<(String, String)>,
    params: Params,
) -> ApiResult<StatusCode> {
    let (caller, project) = project_access(&state, &params, &id, AccessLevel::MAINTAINER).await?;
    let user_id: i64 = user_id
        .parse()
        .map_err(|_| ApiError::BadParams("user_id is invalid".into()))?;
    // The mirror of `add_member`'s rule: only Owners and administrators may remove an Owner.
    // Otherwise a Maintainer could remove every Owner and run the project unchecked.
    if !caller.is_admin() {
        let target = state.store.member_level(project.id, user_id).await?;
        if target.is_some_and(|l| l >= AccessLevel::OWNER.0) {
            let own = state
                .store
                .member_level(project.id, caller.user.id)
                .await?
                .unwrap_or(0);
            if own < AccessLevel::OWNER.0 {
                return Err(ApiError::Forbidden);
            }
        }
    }
    if !state.store.remove_member(project.id, user_id).await? {
        return Err(ApiError::NotFound("404 Member Not Found"));
    }
    Ok(StatusCode::NO_CONTENT)
}

pub async fn current_user(State(state): State<AppState>, params: Params) -> ApiResult<Json<Value>> {
    let caller = authenticate(&state, &params).await?;
    Ok(Json(user_json(&caller.user)))
}

pub async fn create_user(State(state): State<AppState>, params: Params) -> ApiResult<Response> {
    let caller = authenticate(&state, &params).await?;
    require_admin(&caller)?;
    params.check_body()?;
    let username = params.string("username").filter(|s| !s.is_empty());
    let name = params.string("name").filter(|s| !s.is_empty());
    let absent = [("username", username.is_none()), ("name", name.is_none())];
    let (Some(username), Some(name)) = (username, name) else {
        return Err(missing(&absent));
    };
    if !valid_segment(&username) {
        return Err(ApiError::Invalid(json!({"username": ["is not valid"]})));
    }
    let is_admin = params
        .booleans(&[], &["admin"])?
        .get("admin")
        .copied()
        .unwrap_or(false);
    let user = state
        .store
        .create_user(NewUser {
            username,
            name,
            email: params.string("email"),
            is_admin,
        })
        .await
        .map_err(|e| match e {
            StoreError::Conflict(_) => ApiError::Conflict("Username has already been taken"),
            e => e.into(),
        })?;
    Ok((StatusCode::CREATED, Json(user_json(&user))).into_response())
}

pub async fn list_users(State(state): State<AppState>, params: Params) -> ApiResult<Json<Value>> {
    let caller = authenticate(&state, &params).await?;
    require_admin(&caller)?;
    let users = state.store.list_users().await?;
    Ok(Json(Value::Array(users.iter().map(user_json).collect())))
}

pub async fn create_token(
    State(state): State<AppState>,
    Path(user_id): Path<String>,
    params: Params,
) -> ApiResult<Response> {
    let caller = authenticate(&state, &params).await?;
    require_admin(&caller)?;
    params.check_body()?;
    let user_id: i64 = user_id
        .parse()
        .map_err(|_| ApiError::BadParams("user_id is invalid".into()))?;
    let name = params.string("name").filter(|s| !s.is_empty());
    let scopes = params.list("scopes").filter(|s| !s.is_empty());
    let absent = [("name", name.is_none()), ("scopes", scopes.is_none())];
    let (Some(name), Some(scopes)) = (name, scopes) else {
        return Err(missing(&absent));
    };
    if !scopes.iter().all(|s| tokens::SCOPES.contains(&s.as_str())) {
        return Err(ApiError::BadParams(
            "scopes does not have a valid value".into(),
        ));
    }
    let expires_at = match params.string("expires_at").filter(|s| !s.is_empty()) {
        None => None,
        Some(s) => Some(
            NaiveDate::parse_from_str(&s, "%Y-%m-%d")
                .map_err(|_| ApiError::BadParams("expires_at is invalid".into()))?,
        ),
    };
    if let Some(date) = expires_at {
        tokens::check_expiry(date).map_err(|e| ApiError::BadParams(e.to_string()))?;
    }
    if state.store.user_by_id(user_id).await?.is_none() {
        return Err(ApiError::NotFound("404 User Not Found"));
    }
    let (token, secret) = issue_token(&state, user_id, name, scopes, expires_at).await?;
    Ok((StatusCode::CREATED, Json(token_json(&token, Some(&secret)))).into_response())
}

/// Creates a token and returns it with its secret, which is never stored.
pub async fn issue_token(
    state: &AppState,
    user_id: i64,
    name: String,
    scopes: Vec<String>,
    expires_at: Option<NaiveDate>,
) -> Result<(PersonalAccessToken, String), StoreError> {
    let secret = tokens::generate_token();
    let token = state
        .store
        .create_token(NewToken {
            user_id,
            name,
            scopes,
            expires_at,
            digest: tokens::digest(&secret),
        })
        .await?;
    Ok((token, secret))
}

pub async fn list_tokens(State(state): State<AppState>, params: Params) -> ApiResult<Json<Value>> {
    let caller = authenticate(&state, &params).await?;
    let filter = if caller.is_admin() {
        params.int("user_id")?
    } else {
        Some(caller.user.id)
    };
    let list = state.store.list_tokens(filter).await?;
    Ok(Json(Value::Array(
        list.iter().map(|t| token_json(t, None)).collect(),
    )))
}

pub async fn revoke_token(
    State(state): State<AppState>,
    Path(id): Path<String>,
    params: Params,
) -> ApiResult<StatusCode> {
    let caller = authenticate(&state, &params).await?;
    let id: i64 = id
        .parse()
        .map_err(|_| ApiError::BadParams("id is invalid".into()))?;
    let token = state
        .store
        .token_by_id(id)
        .await?
        .ok_or(ApiError::NotFound("404 Not Found"))?;
    // Another user's token is reported as absent, not forbidden, so ids cannot be probed.
    if token.user_id != caller.user.id && !caller.is_admin() {
        return Err(ApiError::NotFound("404 Not Found"));
    }
    state.store.revoke_token(id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_from_names() {
        assert_eq!(path_from_name("My Project"), "my-project");
        assert_eq!(path_from_name("  api.v2 "), "api.v2");
        assert_eq!(path_from_name("a // b"), "a-b");
    }

    #[test]
    fn segments() {
        assert!(valid_segment("group"));
        assert!(valid_segment("my_proj-1.x"));
        assert!(!valid_segment("-x"));
        assert!(!valid_segment("a b"));
        assert!(!valid_segment(""));
    }
}
