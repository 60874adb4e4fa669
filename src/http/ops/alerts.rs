//! The alert rules' operations, written once for the REST API (`http::alerts`) and the web UI's
//! settings page (`http::ui`): reading a rule's parameters, checking a channel's target, and
//! the writes. Both surfaces hand in their parameters as [`Params`] (the settings page builds
//! them from its form), so a rule or channel the UI accepts is exactly one the API accepts, and
//! both refuse with the same words: Grape's and GitLab's, in [`ApiError`].

use rand::RngCore;
use serde_json::json;

use crate::alerts::{email, format, target};
use crate::http::api::{ApiError, ApiResult, Params};
use crate::http::AppState;
use crate::store::alerts::{Channel, Frequency, NewChannel, Rule, RuleSpec};

pub const RULE_NOT_FOUND: &str = "404 Alert Rule Not Found";
pub const CHANNEL_NOT_FOUND: &str = "404 Alert Channel Not Found";
/// The levels SDKs send.
pub const LEVELS: &[&str] = &["fatal", "error", "warning", "info", "debug"];
/// Default of `max_per_hour`.
pub const DEFAULT_MAX_PER_HOUR: i64 = 20;

/// What a new rule starts from before its parameters are read.
fn new_spec() -> RuleSpec {
    RuleSpec {
        name: String::new(),
        on_new: false,
        on_regression: false,
        frequency: None,
        environments: Vec::new(),
        levels: Vec::new(),
        max_per_hour: DEFAULT_MAX_PER_HOUR,
    }
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

/// The project's rule `rule_id`, with its channels.
pub async fn find_rule(state: &AppState, project_id: i64, rule_id: i64) -> ApiResult<Rule> {
    state
        .store
        .rule(project_id, rule_id)
        .await?
        .ok_or(ApiError::NotFound(RULE_NOT_FOUND))
}

/// Creates a rule from `params`.
pub async fn create_rule(state: &AppState, project_id: i64, params: &Params) -> ApiResult<Rule> {
    let spec = read_spec(params, new_spec())?;
    Ok(state
        .store
        .create_rule(project_id, spec, state.alert_clock.now_millis())
        .await?)
}

/// Changes the parameters `params` names; the others keep their stored values.
pub async fn update_rule(
    state: &AppState,
    project_id: i64,
    rule_id: i64,
    params: &Params,
) -> ApiResult<Rule> {
    let rule = find_rule(state, project_id, rule_id).await?;
    let spec = read_spec(params, rule.spec)?;
    state
        .store
        .update_rule(project_id, rule.id, spec)
        .await?
        .ok_or(ApiError::NotFound(RULE_NOT_FOUND))
}

/// Deletes a rule with its channels and their waiting alerts.
pub async fn delete_rule(state: &AppState, project_id: i64, rule_id: i64) -> ApiResult<()> {
    if !state.store.delete_rule(project_id, rule_id).await? {
        return Err(ApiError::NotFound(RULE_NOT_FOUND));
    }
    Ok(())
}

/// A webhook's signing secret: 32 random bytes, hex.
fn generate_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("whsec_{}", hex::encode(bytes))
}

/// Adds a channel to the rule: `type` and `url` (checked with [`target::check_url`], so a URL
/// whose host is or resolves to an internal address is refused unless the configuration
/// allows it), or `type=email` and `recipients`. The channel returned carries its full URL and
/// secret: the caller shows the secret in this one answer, and never the URL.
pub async fn add_channel(
    state: &AppState,
    project_id: i64,
    rule_id: i64,
    params: &Params,
) -> ApiResult<Channel> {
    let rule = find_rule(state, project_id, rule_id).await?;
    params.check_body()?;
    let kind = params.string("type");
    if kind.as_deref() == Some("email") {
        return add_email_channel(state, project_id, rule.id, params).await;
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
    insert_channel(
        state,
        project_id,
        rule.id,
        NewChannel {
            kind,
            url: parsed.to_string(),
            secret,
        },
    )
    .await
}

async fn add_email_channel(
    state: &AppState,
    project_id: i64,
    rule_id: i64,
    params: &Params,
) -> ApiResult<Channel> {
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
    insert_channel(
        state,
        project_id,
        rule_id,
        NewChannel {
            kind: "email".into(),
            url: email::mailto(&recipients),
            secret: None,
        },
    )
    .await
}

async fn insert_channel(
    state: &AppState,
    project_id: i64,
    rule_id: i64,
    channel: NewChannel,
) -> ApiResult<Channel> {
    state
        .store
        .add_channel(project_id, rule_id, channel, state.alert_clock.now_millis())
        .await?
        .ok_or(ApiError::NotFound(RULE_NOT_FOUND))
}

/// Deletes one of the rule's channels, with its waiting alerts.
pub async fn delete_channel(
    state: &AppState,
    project_id: i64,
    rule_id: i64,
    channel_id: i64,
) -> ApiResult<()> {
    let rule = find_rule(state, project_id, rule_id).await?;
    if !state
        .store
        .delete_channel(project_id, rule.id, channel_id)
        .await?
    {
        return Err(ApiError::NotFound(CHANNEL_NOT_FOUND));
    }
    Ok(())
}

/// Queues a test notification for the channel and wakes delivery. It goes through the outbox
/// like any alert, so it is retried, and its failure shows on the channel, in the same way.
pub async fn send_test(
    state: &AppState,
    project_id: i64,
    rule_id: i64,
    channel_id: i64,
) -> ApiResult<()> {
    let rule = find_rule(state, project_id, rule_id).await?;
    if !state
        .store
        .queue_test(
            project_id,
            rule.id,
            channel_id,
            state.alert_clock.now_millis(),
        )
        .await?
    {
        return Err(ApiError::NotFound(CHANNEL_NOT_FOUND));
    }
    state.alerts_wake.notify_one();
    Ok(())
}
