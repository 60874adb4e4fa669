//! Alert rules on the project's settings page (Maintainer and up): the rules with their
//! triggers, filters and channels, each channel's target masked as the REST API masks it and
//! its last failure; and the forms that create and delete rules and channels and send a test
//! notification. Each form is CSRF-checked, then handed as [`Params`] to the same operation in
//! `http::ops::alerts` as the REST API, so both accept and refuse exactly the same things. A
//! refused form comes back filled in, with the reason; a new webhook's signing secret is
//! shown in the answer that created it and never again.

use axum::body::Body;
use axum::http::StatusCode;
use axum::response::Response;
use chrono::{DateTime, TimeZone, Utc};
use maud::{html, Markup};

use super::pages::{base, csrf_field, settings_page, Ctx};
use super::views::when;
use super::{project_at, refusal, see_other, signed_form, FormData, UiResult, Viewer};
use crate::alerts::{email, target};
use crate::http::api::{ApiError, Params};
use crate::http::ops::alerts::{self as ops, DEFAULT_MAX_PER_HOUR, LEVELS};
use crate::http::AppState;
use crate::store::alerts::{Channel, Rule};
use crate::store::{AccessLevel, Project};

/// Which alert form a refusal belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlertForm {
    NewRule,
    /// The add-channel form of a rule.
    NewChannel(i64),
}

/// A refused form: shown again with what was entered, and why it was refused.
pub struct Refused<'a> {
    pub form: AlertForm,
    pub message: String,
    pub values: &'a FormData,
}

/// What the settings page shows beyond the stored rules.
#[derive(Default)]
pub struct Extra<'a> {
    pub refused: Option<Refused<'a>>,
    /// The webhook channel just created and its signing secret, shown in this answer only.
    pub new_secret: Option<(i64, String)>,
}

impl Extra<'_> {
    fn refused_for(&self, form: AlertForm) -> Option<&Refused<'_>> {
        self.refused.as_ref().filter(|r| r.form == form)
    }
}

/// The channel kinds as the form offers them, in the order it lists them.
const KIND_LABELS: &[(&str, &str)] = &[
    ("webhook", "Webhook (signed JSON)"),
    ("slack", "Slack, Mattermost, Rocket.Chat"),
    ("discord", "Discord"),
    ("teams", "Microsoft Teams"),
    ("email", "Email"),
];

fn kind_name(kind: &str) -> &str {
    match kind {
        "webhook" => "Webhook",
        "slack" => "Slack",
        "discord" => "Discord",
        "teams" => "Teams",
        "email" => "Email",
        other => other,
    }
}

fn time(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().unwrap_or_default()
}

/// Where the channel sends, as the REST API shows it: an email channel's addresses, or a
/// URL's scheme and host only (chat services carry their credentials in the path).
fn masked_target(c: &Channel) -> String {
    if c.kind == "email" {
        email::recipients_of(&c.url).join(", ")
    } else {
        target::redact(&c.url)
    }
}

/// The "Alert rules" card of the settings page.
pub async fn section(
    state: &AppState,
    viewer: &Viewer,
    project: &Project,
    extra: &Extra<'_>,
) -> UiResult<Markup> {
    let rules = state.store.list_rules(project.id).await?;
    // Channel times are written by the alert clock; "3 minutes ago" is measured on it too.
    let now = time(state.alert_clock.now_millis());
    let b = base(project);
    let email_enabled = state.alert_settings.email_enabled;
    Ok(html! {
        section class="card alerts" id="alert-rules" {
            h2 { "Alert rules" }
            p class="muted intro" {
                "A rule sends a message to each of its channels when an error is new, comes back after it was resolved, or reaches a number of events in a time window. Past the rule's hourly rate, a channel gets one summary instead of many messages."
            }
            @if let Some((id, secret)) = &extra.new_secret {
                div class="flash ok secret-once" role="status" {
                    p {
                        strong { "Webhook channel added." }
                        " Its signing secret is shown only this once. Give it to the receiver, which checks each request's "
                        code { "X-Faultline-Signature" } " header with it."
                    }
                    div class="copy-field" {
                        input type="text" readonly value=(secret) id={"secret-" (id)} aria-label="Signing secret";
                        button type="button" class="copy" data-copy={"secret-" (id)} { "Copy" }
                    }
                }
            }
            @if rules.is_empty() {
                p class="empty-note" { "No alert rules yet. Create one below, then add a channel to it." }
            }
            @for rule in &rules {
                (rule_block(viewer, &b, rule, now, email_enabled, extra))
            }
            (new_rule_form(viewer, &b, extra.refused_for(AlertForm::NewRule)))
        }
    })
}

fn triggers(rule: &Rule) -> Vec<String> {
    let mut out = Vec::new();
    if rule.spec.on_new {
        out.push("New error".to_owned());
    }
    if rule.spec.on_regression {
        out.push("Regression".to_owned());
    }
    if let Some(f) = rule.spec.frequency {
        let events = if f.count == 1 { "event" } else { "events" };
        out.push(format!(
            "{} {events} in {} min, then quiet {} min",
            f.count, f.minutes, f.quiet_minutes
        ));
    }
    out
}

fn rule_block(
    viewer: &Viewer,
    b: &str,
    rule: &Rule,
    now: DateTime<Utc>,
    email_enabled: bool,
    extra: &Extra<'_>,
) -> Markup {
    let here = format!("{b}/settings/error_tracking/alert_rules/{}", rule.id);
    let spec = &rule.spec;
    let refused = extra.refused_for(AlertForm::NewChannel(rule.id));
    html! {
        div class="rule" id={"rule-" (rule.id)} {
            div class="rule-head" {
                div {
                    h3 { (spec.name) }
                    div class="rule-facts" {
                        @for t in triggers(rule) { span class="chip trigger" { (t) } }
                        span class="chip" {
                            @if spec.environments.is_empty() { "any environment" }
                            @else { "environment: " (spec.environments.join(", ")) }
                        }
                        span class="chip" {
                            @if spec.levels.is_empty() { "any level" }
                            @else { "level: " (spec.levels.join(", ")) }
                        }
                        span class="chip" { "up to " (spec.max_per_hour) " messages an hour per channel" }
                    }
                }
                form method="post" action={(here) "/delete"} class="inline confirm" data-confirm="Delete this rule and its channels? Alerts still waiting are dropped." {
                    (csrf_field(viewer))
                    button type="submit" class="danger small" { "Delete rule" }
                }
            }
            @if rule.channels.is_empty() {
                p class="muted small" { "No channels: this rule sends nothing until you add one." }
            } @else {
                table class="list channels" {
                    thead { tr { th { "Channel" } th { "Sends to" } th { "Last delivered" } th { "Last failure" } th {} } }
                    tbody {
                        @for c in &rule.channels {
                            (channel_row(viewer, &here, c, now))
                        }
                    }
                }
            }
            form method="post" action={(here) "/channels"} class="add-channel" {
                (csrf_field(viewer))
                @let kind = refused.and_then(|r| r.values.get("type")).unwrap_or("webhook");
                label class="sr" for={"kind-" (rule.id)} { "Channel type" }
                select name="type" id={"kind-" (rule.id)} {
                    @for (value, label) in KIND_LABELS {
                        @if *value == "email" && !email_enabled {
                            option value=(value) disabled { (label) " (needs a mail server)" }
                        } @else {
                            option value=(value) selected[*value == kind] { (label) }
                        }
                    }
                }
                label class="sr" for={"target-" (rule.id)} { "URL or email addresses" }
                input type="text" name="target" id={"target-" (rule.id)} required
                    placeholder="https://hooks.example.com/… or oncall@example.com, dev@example.com"
                    value=(refused.and_then(|r| r.values.get("target")).unwrap_or(""));
                button type="submit" { "Add channel" }
            }
            @if let Some(r) = refused {
                p class="flash error" role="alert" { (r.message) }
            }
        }
    }
}

fn channel_row(viewer: &Viewer, rule_path: &str, c: &Channel, now: DateTime<Utc>) -> Markup {
    let here = format!("{rule_path}/channels/{}", c.id);
    // A failure older than the last success is history; a newer one is the channel's state.
    let failing = c
        .last_failure
        .as_ref()
        .is_some_and(|f| c.last_success_at.is_none_or(|s| f.at > s));
    html! {
        tr {
            td class="nowrap" {
                span class="badge kind" { (kind_name(&c.kind)) }
                @if c.secret.is_some() { " " span class="badge signed" title="Requests carry an HMAC-SHA256 signature" { "signed" } }
            }
            td { code class="target" { (masked_target(c)) } }
            td class="nowrap" {
                @match c.last_success_at {
                    Some(at) => (when(time(at), now)),
                    None => span class="muted" { "never" },
                }
            }
            td {
                @match &c.last_failure {
                    None => span class="muted" { "none" },
                    Some(f) => {
                        span class={"badge " (if failing { "failed" } else { "recovered" })} {
                            @match f.status {
                                Some(s) => { "HTTP " (s) },
                                None => "no answer",
                            }
                        }
                        " " span class="small nowrap" { (when(time(f.at), now)) }
                        div class="small muted reason" { (f.reason) }
                    }
                }
            }
            td class="actions nowrap" {
                form method="post" action={(here) "/test"} class="inline" {
                    (csrf_field(viewer))
                    button type="submit" class="small" { "Send test" }
                }
                " "
                form method="post" action={(here) "/delete"} class="inline confirm" data-confirm="Delete this channel? Alerts still waiting for it are dropped." {
                    (csrf_field(viewer))
                    button type="submit" class="small danger" { "Delete" }
                }
            }
        }
    }
}

fn new_rule_form(viewer: &Viewer, b: &str, refused: Option<&Refused<'_>>) -> Markup {
    let v = |name: &str| refused.and_then(|r| r.values.get(name)).unwrap_or("");
    // A first visit suggests the two triggers most rules want; a refused form keeps its choice.
    let checked = |name: &str| match refused {
        Some(r) => r.values.get(name).is_some(),
        None => name == "new_error" || name == "regression",
    };
    let level_checked =
        |level: &str| refused.is_some_and(|r| r.values.all("levels[]").any(|l| l == level));
    let max = match v("max_per_hour") {
        "" if refused.is_none() => DEFAULT_MAX_PER_HOUR.to_string(),
        other => other.to_owned(),
    };
    html! {
        form method="post" action={(b) "/settings/error_tracking/alert_rules"} class="stack new-rule" id="new-rule" {
            h3 { "New rule" }
            (csrf_field(viewer))
            @if let Some(r) = refused {
                p class="flash error" role="alert" { (r.message) }
            }
            label { "Name" input type="text" name="name" required value=(v("name")) placeholder="Production errors"; }
            fieldset {
                legend { "Send an alert when" }
                label class="check" { input type="checkbox" name="new_error" value="1" checked[checked("new_error")]; " an error is seen for the first time" }
                label class="check" { input type="checkbox" name="regression" value="1" checked[checked("regression")]; " a resolved error has a new event" }
                div class="frequency" {
                    "one error has at least "
                    input type="number" name="frequency_count" min="1" aria-label="Events" value=(v("frequency_count")) placeholder="100";
                    " events within "
                    input type="number" name="frequency_minutes" min="1" max="10080" aria-label="Minutes" value=(v("frequency_minutes")) placeholder="10";
                    " minutes, then not again for "
                    input type="number" name="quiet_minutes" min="0" aria-label="Quiet minutes" value=(v("quiet_minutes")) placeholder="60";
                    " minutes"
                }
                p class="muted small" { "Leave the numbers empty for no frequency trigger. The quiet period is the window's length unless you set it." }
            }
            fieldset {
                legend { "Only for" }
                label { "Environments"
                    input type="text" name="environments" value=(v("environments")) placeholder="production, staging";
                    span class="muted small hint" { "Comma-separated; empty for any environment." }
                }
                div class="levels" {
                    span class="label" { "Levels" }
                    @for level in LEVELS {
                        label class="check" { input type="checkbox" name="levels[]" value=(level) checked[level_checked(level)]; " " (level) }
                    }
                    span class="muted small" { "None ticked: any level." }
                }
            }
            label { "Messages per channel and hour before they are summarised"
                input type="number" name="max_per_hour" min="1" max="10000" value=(max);
            }
            button type="submit" class="primary" { "Create rule" }
        }
    }
}

/// A Maintainer's alert form: the session's CSRF token checked, then the project at
/// Maintainer level.
async fn maintainer_form(
    ctx: &Ctx<'_>,
    body: Body,
) -> UiResult<(Viewer, FormData, Project, AccessLevel)> {
    let (viewer, form) = signed_form(ctx.state, ctx.headers, ctx.path, body).await?;
    let (project, level) =
        project_at(ctx.state, &viewer, ctx.project, AccessLevel::MAINTAINER).await?;
    Ok((viewer, form, project, level))
}

fn back(project: &Project, done: &str) -> Response {
    see_other(&format!(
        "{}/settings/error_tracking?done={done}#alert-rules",
        base(project)
    ))
}

/// The answer to a form the operation refused: the settings page again, the form filled in
/// and the reason shown beside it. Errors that are not about the form's values (a missing
/// rule, storage) render their own page.
async fn refuse(
    ctx: &Ctx<'_>,
    viewer: &Viewer,
    project: &Project,
    level: AccessLevel,
    form: AlertForm,
    values: &FormData,
    e: ApiError,
) -> UiResult<Response> {
    let Some(message) = refusal(&e) else {
        return Err(e.into());
    };
    let extra = Extra {
        refused: Some(Refused {
            form,
            message,
            values,
        }),
        new_secret: None,
    };
    settings_page(ctx, viewer, project, level, StatusCode::BAD_REQUEST, &extra).await
}

pub async fn create_rule(ctx: Ctx<'_>, body: Body) -> UiResult<Response> {
    let (viewer, form, project, level) = maintainer_form(&ctx, body).await?;
    let params = Params::from_pairs(form.pairs());
    match ops::create_rule(ctx.state, project.id, &params).await {
        Ok(_) => Ok(back(&project, "rule_created")),
        Err(e) => refuse(&ctx, &viewer, &project, level, AlertForm::NewRule, &form, e).await,
    }
}

pub async fn delete_rule(ctx: Ctx<'_>, rule_id: i64, body: Body) -> UiResult<Response> {
    let (_, _, project, _) = maintainer_form(&ctx, body).await?;
    ops::delete_rule(ctx.state, project.id, rule_id).await?;
    Ok(back(&project, "rule_deleted"))
}

pub async fn add_channel(ctx: Ctx<'_>, rule_id: i64, body: Body) -> UiResult<Response> {
    let (viewer, form, project, level) = maintainer_form(&ctx, body).await?;
    // One field takes what the kind needs: the REST API's `url`, or an email channel's
    // `recipients`.
    let kind = form.get("type").unwrap_or("");
    let target = form.get("target").unwrap_or("").trim();
    let field = if kind == "email" { "recipients" } else { "url" };
    let params = Params::from_pairs([("type", kind), (field, target)]);
    match ops::add_channel(ctx.state, project.id, rule_id, &params).await {
        Ok(channel) => match channel.secret {
            // Post/redirect/get would need the secret to survive the redirect; it is not kept
            // anywhere but the database, so this answer is the page itself.
            Some(secret) => {
                let extra = Extra {
                    refused: None,
                    new_secret: Some((channel.id, secret)),
                };
                settings_page(&ctx, &viewer, &project, level, StatusCode::OK, &extra).await
            }
            None => Ok(back(&project, "channel_added")),
        },
        Err(e) => {
            let form_kind = AlertForm::NewChannel(rule_id);
            refuse(&ctx, &viewer, &project, level, form_kind, &form, e).await
        }
    }
}

pub async fn delete_channel(
    ctx: Ctx<'_>,
    rule_id: i64,
    channel_id: i64,
    body: Body,
) -> UiResult<Response> {
    let (_, _, project, _) = maintainer_form(&ctx, body).await?;
    ops::delete_channel(ctx.state, project.id, rule_id, channel_id).await?;
    Ok(back(&project, "channel_deleted"))
}

pub async fn test_channel(
    ctx: Ctx<'_>,
    rule_id: i64,
    channel_id: i64,
    body: Body,
) -> UiResult<Response> {
    let (_, _, project, _) = maintainer_form(&ctx, body).await?;
    ops::send_test(ctx.state, project.id, rule_id, channel_id).await?;
    Ok(back(&project, "test_queued"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_read_as_sentences() {
        let blocked = ApiError::Invalid(
            serde_json::json!({"url": ["is blocked: requests to the local network are not allowed"]}),
        );
        assert_eq!(
            refusal(&blocked).as_deref(),
            Some("URL is blocked: requests to the local network are not allowed.")
        );
        assert_eq!(
            refusal(&ApiError::BadParams("frequency_minutes is missing".into())).as_deref(),
            Some("Frequency minutes is missing.")
        );
        assert_eq!(refusal(&ApiError::Forbidden), None);
    }
}
