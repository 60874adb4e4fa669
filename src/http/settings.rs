//! `GET|PUT|PATCH /api/v4/projects/:id/error_tracking/settings`.

use axum::extract::{Path, State};
use axum::Json;
use serde_json::{json, Value};

use super::api::{project_access, ApiError, ApiResult, Params};
use super::AppState;
use crate::domain::keys::generate_public_key;
use crate::store::{AccessLevel, Setting, SettingRow};

const NOT_FOUND: &str = "404 Error Tracking Setting Not Found";

/// Always exactly these five keys.
fn body(row: &SettingRow) -> Json<Value> {
    Json(json!({
        "active": row.setting.active,
        "project_name": row.external.project_name,
        "sentry_external_url": row.external.sentry_external_url,
        "api_url": row.external.api_url,
        "integrated": row.setting.integrated,
    }))
}

pub async fn get(
    State(state): State<AppState>,
    Path(id): Path<String>,
    params: Params,
) -> ApiResult<Json<Value>> {
    let (_, project) = project_access(&state, &params, &id, AccessLevel::MAINTAINER).await?;
    let row = state
        .store
        .setting(project.id)
        .await?
        .ok_or(ApiError::NotFound(NOT_FOUND))?;
    Ok(body(&row))
}

pub async fn put(
    State(state): State<AppState>,
    Path(id): Path<String>,
    params: Params,
) -> ApiResult<Json<Value>> {
    let (_, project) = project_access(&state, &params, &id, AccessLevel::MAINTAINER).await?;
    params.check_body()?;
    let b = params.booleans(&["active", "integrated"], &[])?;
    let setting = Setting {
        project_id: project.id,
        active: b["active"],
        integrated: b["integrated"],
    };
    let row = super::ops::put_setting(&state, setting).await?;
    Ok(body(&row))
}

pub async fn patch(
    State(state): State<AppState>,
    Path(id): Path<String>,
    params: Params,
) -> ApiResult<Json<Value>> {
    let (_, project) = project_access(&state, &params, &id, AccessLevel::MAINTAINER).await?;
    params.check_body()?;
    let b = params.booleans(&["active"], &["integrated"])?;
    let (row, key) = state
        .store
        .patch_setting(
            project.id,
            b["active"],
            b.get("integrated").copied(),
            generate_public_key(),
        )
        .await?
        .ok_or(ApiError::NotFound(NOT_FOUND))?;
    super::ops::apply_setting(&state, &row, key);
    Ok(body(&row))
}
