//! `GET|POST /api/v4/projects/:id/error_tracking/client_keys` and `DELETE .../:key_id`.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::api::{project_access, ApiError, ApiResult, Pagination, Params};
use super::AppState;
use crate::domain::keys::dsn;
use crate::store::{AccessLevel, ClientKey};

/// Exactly `{id, active, public_key, sentry_dsn}`.
fn key_json(state: &AppState, key: &ClientKey) -> Value {
    json!({
        "id": key.id,
        "active": key.active,
        "public_key": key.public_key,
        "sentry_dsn": dsn(&state.external_url, &key.public_key, key.project_id),
    })
}

pub async fn list(
    State(state): State<AppState>,
    Path(id): Path<String>,
    params: Params,
) -> ApiResult<Response> {
    let (_, project) = project_access(&state, &params, &id, AccessLevel::MAINTAINER).await?;
    let pg = Pagination::from_params(&params)?;
    let page = state
        .store
        .list_keys(project.id, pg.page, pg.per_page)
        .await?;
    let items: Vec<Value> = page.items.iter().map(|k| key_json(&state, k)).collect();
    Ok((pg.headers(&state, &params, page.total), Json(items)).into_response())
}

pub async fn create(
    State(state): State<AppState>,
    Path(id): Path<String>,
    params: Params,
) -> ApiResult<Response> {
    let (_, project) = project_access(&state, &params, &id, AccessLevel::MAINTAINER).await?;
    let key = super::ops::create_key(&state, project.id).await?;
    Ok((StatusCode::CREATED, Json(key_json(&state, &key))).into_response())
}

pub async fn delete(
    State(state): State<AppState>,
    Path((id, key_id)): Path<(String, String)>,
    params: Params,
) -> ApiResult<Json<Value>> {
    let (_, project) = project_access(&state, &params, &id, AccessLevel::MAINTAINER).await?;
    let key_id: i64 = key_id
        .parse()
        .map_err(|_| ApiError::BadParams("key_id is invalid".into()))?;
    // The cache is updated before the answer, so the very next event with this key is refused.
    let key = super::ops::delete_key(&state, project.id, key_id)
        .await?
        .ok_or(ApiError::NotFound("404 Not found"))?;
    Ok(Json(key_json(&state, &key)))
}
