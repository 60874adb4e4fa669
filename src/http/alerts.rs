//! The alert rules API, `/api/v4/projects/:id/error_tracking/alert_rules[...]`: rules with
//! their triggers and filters, their channels, and the "send a test notification" call. Every
//! route needs Maintainer or higher. A channel's URL is shown as scheme and host only, and a
//! webhook's signing secret only in the answer that created it.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{SecondsFormat, TimeZone, Utc};
use rand::RngCore;
use serde_json::{json, Value};

use super::api::{project_access, ApiError, ApiResult, Params};
use super::AppState;
use crate::alerts::{email, format, target};
use crate::store::alerts::{Channel, Frequency, NewChannel, Rule, RuleSpec};
use crate::store::AccessLevel;

const RULE_NOT_FOUND: &str = "404 Alert Rule Not Found";
const CHANNEL_NOT_FOUND: &str = "404 Alert Channel Not Found";
/// The levels SDKs send.
const LEVELS: &[&str] = &["fatal", "error", "warning", "info", "debug"];
/// Default of `max_per_hour`.
const DEFAULT_MAX_PER_HOUR: i64 = 20;

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

/// Reads a rule's parameters over `base` (the stored rule for an update, defaults for a new
/// one), with Grape's and GitLab's wording for what is wrong.
fn read_spec(params: &Params, base: RuleSpec) -> ApiResult<RuleSpec> {
    params.check_body()?;
    let b = params.booleans(&[], &["new_error", "regression"])?;
    let mut spec = base;
    if let Some(name) = params.string("name") {
        spec.name = name.trim().to_owned();
    }
    if spec.name.is_empty() {
        return Err(ApiError::BadParams(
            if params.raw("name").is_some() {
                "name is empty"
            } else {
                "name is missing"
            }
            .into(),
        ));
    }
    if let Some(v) = b.get("new_error") {
        spec.on_new = *v;
    }
    if let Some(v) = b.get("regression") {
        spec.on_regression = *v;
    }
    let count = params.int("frequency_count")?;
    let minutes = params.int("frequency_minutes")?;
    let quiet = params.int("quiet_minutes")?;
    if count.is_some() || minutes.is_some() || quiet.is_some() {
        let old = spec.frequency;
        let count = count.or(old.map(|f| f.count));
        let minutes = minutes.or(old.map(|f| f.minutes));
        spec.frequency = match (count, minutes) {
            // `frequency_count=0` switches the trigger off.
            (Some(0), _) => None,
            (Some(count), Some(minutes)) => {
                if count < 1 || !(1..=10_080).contains(&minutes) {
                    return Err(ApiError::BadParams(
                        "frequency_count or frequency_minutes does not have a valid value".into(),
                    ));
                }
                let quiet = quiet.or(old.map(|f| f.quiet_minutes)).unwrap_or(minutes);
                if quiet < 0 {
                    return Err(ApiError::BadParams(
                        "quiet_minutes does not have a valid value".into(),
                    ));
                }
                Some(Frequency {
                    count,
                    minutes,
                    quiet_minutes: quiet,
                })
            }
            (None, _) => return Err(ApiError::BadParams("frequency_count is missing".into())),
            (Some(_), None) => {
                return Err(ApiError::BadParams("frequency_minutes is missing".into()))
            }
        };
    }
    if let Some(envs) = params.list("environments") {
        spec.environments = envs;
    }
    if let Some(levels) = params.list("levels") {
        if levels.iter().any(|l| !LEVELS.contains(&l.as_str())) {
            return Err(ApiError::BadParams(
                "levels does not have a valid value".into(),
            ));
        }
        spec.levels = levels;
    }
    if let Some(max) = params.int("max_per_hour")? {
        if !(1..=10_000).contains(&max) {
            return Err(ApiError::BadParams(
                "max_per_hour does not have a valid value".into(),
            ));
        }
        spec.max_per_hour = max;
    }
    if !spec.on_new && !spec.on_regression && spec.frequency.is_none() {
        return Err(ApiError::Invalid(json!({
            "base": ["a rule needs at least one trigger: new_error, regression or frequency_count"]
        })));
    }
    Ok(spec)
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
    let spec = read_spec(
        &params,
        RuleSpec {
            name: String::new(),
            on_new: false,
            on_regression: false,
            frequency: None,
            environments: Vec::new(),
            levels: Vec::new(),
            max_per_hour: DEFAULT_MAX_PER_HOUR,
        },
    )?;
    let rule = state
        .store
        .create_rule(project.id, spec, state.alert_clock.now_millis())
        .await?;
    Ok((StatusCode::CREATED, Json(rule_json(&rule))).into_response())
}

async fn find_rule(state: &AppState, project_id: i64, rule_id: &str) -> ApiResult<Rule> {
    let rule_id = int_id(rule_id).ok_or(ApiError::NotFound(RULE_NOT_FOUND))?;
    state
        .store
        .rule(project_id, rule_id)
        .await?
        .ok_or(ApiError::NotFound(RULE_NOT_FOUND))
}

pub async fn show(
    State(state): State<AppState>,
    Path((id, rule_id)): Path<(String, String)>,
    params: Params,
) -> ApiResult<Json<Value>> {
    let (_, project) = project_access(&state, &params, &id, AccessLevel::MAINTAINER).await?;
    let rule = find_rule(&state, project.id, &rule_id).await?;
    Ok(Json(rule_json(&rule)))
}

pub async fn update(
    State(state): State<AppState>,
    Path((id, rule_id)): Path<(String, String)>,
    params: Params,
) -> ApiResult<Json<Value>> {
    let (_, project) = project_access(&state, &params, &id, AccessLevel::MAINTAINER).await?;
    let rule = find_rule(&state, project.id, &rule_id).await?;
    let spec = read_spec(&params, rule.spec)?;
    let rule = state
        .store
        .update_rule(project.id, rule.id, spec)
        .await?
        .ok_or(ApiError::NotFound(RULE_NOT_FOUND))?;
    Ok(Json(rule_json(&rule)))
}

pub async fn delete(
    State(state): State<AppState>,
    Path((id, rule_id)): Path<(String, String)>,
    params: Params,
) -> ApiResult<Response> {
    let (_, project) = project_access(&state, &params, &id, AccessLevel::MAINTAINER).await?;
    let rule_id = int_id(&rule_id).ok_or(ApiError::NotFound(RULE_NOT_FOUND))?;
    if !state.store.delete_rule(project.id, rule_id).await? {
        return Err(ApiError::NotFound(RULE_NOT_FOUND));
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// A webhook's signing secret: 32 random bytes, hex.
fn generate_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("whsec_{}", hex::encode(bytes))
}

pub async fn add_channel(
    State(state): State<AppState>,
    Path((id, rule_id)): Path<(String, String)>,
    params: Params,
) -> ApiResult<Response> {
    let (_, project) = project_access(&state, &params, &id, AccessLevel::MAINTAINER).await?;
    let rule = find_rule(&state, project.id, &rule_id).await?;
    params.check_body()?;
    let kind = params.string("type");
    if kind.as_deref() == Some("email") {
        return add_email_channel(&state, project.id, rule.id, &params).await;
    }
    let url = params.string("url");
    let missing: Vec<&str> = [("type", kind.is_none()), ("url", url.is_none())]
        .iter()
        .filter(|(_, m)| *m)
        .map(|(n, _)| *n)
        .collect();
    let (Some(kind), Some(url)) = (kind, url) else {
        return Err(ApiError::BadParams(format!(
            "{} {} missing",
            missing.join(", "),
            if missing.len() > 1 { "are" } else { "is" }
        )));
    };
    if !format::KINDS.contains(&kind.as_str()) {
        return Err(ApiError::BadParams(
            "type does not have a valid value".into(),
        ));
    }
    let parsed = url::Url::parse(url.trim())
        .map_err(|_| ApiError::Invalid(json!({"url": ["is invalid"]})))?;
    if let Err(e) = target::check_url(&parsed, &state.alert_settings.allowed).await {
        return Err(ApiError::Invalid(
            json!({"url": [format!("is blocked: {e}")]}),
        ));
    }
    // Only the generic webhook is signed; chat services authenticate by the URL itself.
    let secret = match kind.as_str() {
        "webhook" => Some(
            params
                .string("secret")
                .filter(|s| !s.is_empty())
                .unwrap_or_else(generate_secret),
        ),
        _ => None,
    };
    let channel = state
        .store
        .add_channel(
            project.id,
            rule.id,
            NewChannel {
                kind,
                url: parsed.to_string(),
                secret,
            },
            state.alert_clock.now_millis(),
        )
        .await?
        .ok_or(ApiError::NotFound(RULE_NOT_FOUND))?;
    let mut body = channel_json(&channel);
    // The one answer that shows the secret.
    if let Some(s) = &channel.secret {
        body["secret"] = json!(s);
    }
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

async fn add_email_channel(
    state: &AppState,
    project_id: i64,
    rule_id: i64,
    params: &Params,
) -> ApiResult<Response> {
    let Some(list) = params.list("recipients").filter(|l| !l.is_empty()) else {
        return Err(ApiError::BadParams("recipients is missing".into()));
    };
    if list.len() > email::MAX_RECIPIENTS {
        return Err(ApiError::Invalid(json!({
            "recipients": [format!("is too long (maximum is {} addresses)", email::MAX_RECIPIENTS)]
        })));
    }
    let recipients = email::parse_recipients(&list)
        .ok_or_else(|| ApiError::Invalid(json!({"recipients": ["contains an invalid address"]})))?;
    if !state.alert_settings.email_enabled {
        return Err(ApiError::Invalid(json!({
            "type": ["email needs a mail server ([alerts.smtp] host)"]
        })));
    }
    let channel = state
        .store
        .add_channel(
            project_id,
            rule_id,
            NewChannel {
                kind: "email".into(),
                url: email::mailto(&recipients),
                secret: None,
            },
            state.alert_clock.now_millis(),
        )
        .await?
        .ok_or(ApiError::NotFound(RULE_NOT_FOUND))?;
    Ok((StatusCode::CREATED, Json(channel_json(&channel))).into_response())
}

pub async fn delete_channel(
    State(state): State<AppState>,
    Path((id, rule_id, channel_id)): Path<(String, String, String)>,
    params: Params,
) -> ApiResult<Response> {
    let (_, project) = project_access(&state, &params, &id, AccessLevel::MAINTAINER).await?;
    let rule = find_rule(&state, project.id, &rule_id).await?;
    let channel_id = int_id(&channel_id).ok_or(ApiError::NotFound(CHANNEL_NOT_FOUND))?;
    if !state
        .store
        .delete_channel(project.id, rule.id, channel_id)
        .await?
    {
        return Err(ApiError::NotFound(CHANNEL_NOT_FOUND));
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub async fn test_channel(
    State(state): State<AppState>,
    Path((id, rule_id, channel_id)): Path<(String, String, String)>,
    params: Params,
) -> ApiResult<Response> {
    let (_, project) = project_access(&state, &params, &id, AccessLevel::MAINTAINER).await?;
    let rule = find_rule(&state, project.id, &rule_id).await?;
    let channel_id = int_id(&channel_id).ok_or(ApiError::NotFound(CHANNEL_NOT_FOUND))?;
    // Through the outbox like any alert, so it is retried and its failure shows on the
    // channel in the same way.
    if !state
        .store
        .queue_test(
            project.id,
            rule.id,
            channel_id,
            state.alert_clock.now_millis(),
        )
        .await?
    {
        return Err(ApiError::NotFound(CHANNEL_NOT_FOUND));
    }
    state.alerts_wake.notify_one();
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"message": "202 Accepted"})),
    )
        .into_response())
}
