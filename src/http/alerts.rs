//! The alert rules API, `/api/v4/projects/:id/error_tracking/alert_rules[...]`: rules with
//! their triggers and filters, their channels, and the "send a test notification" call. Every
//! route needs Maintainer or higher. A channel's URL is shown as scheme and host only, and a
//! webhook's signing secret only in the answer that created it. The handlers authenticate,
//! call the operations in `http::ops::alerts` (which the web UI's settings page calls too) and
//! write GitLab-shaped JSON.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{SecondsFormat, TimeZone, Utc};
use serde_json::{json, Value};

use super::api::{project_access, ApiError, ApiResult, Params};
use super::ops::alerts::{self as ops, CHANNEL_NOT_FOUND, RULE_NOT_FOUND};
use super::AppState;
use crate::alerts::{email, target};
use crate::store::alerts::{Channel, Rule};
use crate::store::AccessLevel;

fn time(ms: i64) -> String {
    Utc.timestamp_millis_opt(ms)
        .single()
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn channel_json(c: &Channel) -> Value {
    let is_email = c.kind == "email";
    json!({
        "id": c.id,
        "type": c.kind,
        "url": (!is_email).then(|| target::redact(&c.url)),
        "recipients": is_email.then(|| email::recipients_of(&c.url)),
        "signed": c.secret.is_some(),
        "created_at": time(c.created_at),
        "last_success_at": c.last_success_at.map(time),
        "last_failure": c.last_failure.as_ref().map(|f| json!({
            "at": time(f.at),
            "status": f.status,
            "reason": f.reason,
        })),
    })
}

fn rule_json(r: &Rule) -> Value {
    json!({
        "id": r.id,
        "project_id": r.project_id,
        "name": r.spec.name,
        "new_error": r.spec.on_new,
        "regression": r.spec.on_regression,
        "frequency": r.spec.frequency.map(|f| json!({
            "count": f.count,
            "minutes": f.minutes,
            "quiet_minutes": f.quiet_minutes,
        })),
        "environments": r.spec.environments,
        "levels": r.spec.levels,
        "max_per_hour": r.spec.max_per_hour,
        "created_at": time(r.created_at),
        "channels": r.channels.iter().map(channel_json).collect::<Vec<_>>(),
    })
}

fn int_id(s: &str) -> Option<i64> {
    super::is_numeric_id(s).then(|| s.parse().ok()).flatten()
}

fn rule_id(s: &str) -> ApiResult<i64> {
    int_id(s).ok_or(ApiError::NotFound(RULE_NOT_FOUND))
}

fn channel_id(s: &str) -> ApiResult<i64> {
    int_id(s).ok_or(ApiError::NotFound(CHANNEL_NOT_FOUND))
}

pub async fn list(
    State(state): State<AppState>,
    Path(id): Path<String>,
    params: Params,
) -> ApiResult<Json<Value>> {
    let (_, project) = project_access(&state, &params, &id, AccessLevel::MAINTAINER).await?;
    let rules = state.store.list_rules(project.id).await?;
    Ok(Json(Value::Array(rules.iter().map(rule_json).collect())))
}

pub async fn create(
    State(state): State<AppState>,
    Path(id): Path<String>,
    params: Params,
) -> ApiResult<Response> {
    let (_, project) = project_access(&state, &params, &id, AccessLevel::MAINTAINER).await?;
    let rule = ops::create_rule(&state, project.id, &params).await?;
    Ok((StatusCode::CREATED, Json(rule_json(&rule))).into_response())
}

pub async fn show(
    State(state): State<AppState>,
    Path((id, rule)): Path<(String, String)>,
    params: Params,
) -> ApiResult<Json<Value>> {
    let (_, project) = project_access(&state, &params, &id, AccessLevel::MAINTAINER).await?;
    let rule = ops::find_rule(&state, project.id, rule_id(&rule)?).await?;
    Ok(Json(rule_json(&rule)))
}

pub async fn update(
    State(state): State<AppState>,
    Path((id, rule)): Path<(String, String)>,
    params: Params,
) -> ApiResult<Json<Value>> {
    let (_, project) = project_access(&state, &params, &id, AccessLevel::MAINTAINER).await?;
    let rule = ops::update_rule(&state, project.id, rule_id(&rule)?, &params).await?;
    Ok(Json(rule_json(&rule)))
}

pub async fn delete(
    State(state): State<AppState>,
    Path((id, rule)): Path<(String, String)>,
    params: Params,
) -> ApiResult<Response> {
    let (_, project) = project_access(&state, &params, &id, AccessLevel::MAINTAINER).await?;
    ops::delete_rule(&state, project.id, rule_id(&rule)?).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub async fn add_channel(
    State(state): State<AppState>,
    Path((id, rule)): Path<(String, String)>,
    params: Params,
) -> ApiResult<Response> {
    let (_, project) = project_access(&state, &params, &id, AccessLevel::MAINTAINER).await?;
    let channel = ops::add_channel(&state, project.id, rule_id(&rule)?, &params).await?;
    let mut body = channel_json(&channel);
    // The one answer that shows the secret.
    if let Some(s) = &channel.secret {
        body["secret"] = json!(s);
    }
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

pub async fn delete_channel(
    State(state): State<AppState>,
    Path((id, rule, channel)): Path<(String, String, String)>,
    params: Params,
) -> ApiResult<Response> {
    let (_, project) = project_access(&state, &params, &id, AccessLevel::MAINTAINER).await?;
    let rule = rule_id(&rule)?;
    ops::delete_channel(&state, project.id, rule, channel_id(&channel)?).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub async fn test_channel(
    State(state): State<AppState>,
    Path((id, rule, channel)): Path<(String, String, String)>,
    params: Params,
) -> ApiResult<Response> {
    let (_, project) = project_access(&state, &params, &id, AccessLevel::MAINTAINER).await?;
    let rule = rule_id(&rule)?;
    ops::send_test(&state, project.id, rule, channel_id(&channel)?).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"message": "202 Accepted"})),
    )
        .into_response())
}
