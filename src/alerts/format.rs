//! What an alert looks like on each kind of channel: the generic webhook's versioned JSON
//! payload and its HMAC-SHA256 signature, a Slack-compatible message (also Mattermost and
//! Rocket.Chat), a Discord message and a Microsoft Teams Adaptive Card. The README documents
//! the generic payload and the signature; a change to either is a new `version`.

use chrono::{SecondsFormat, TimeZone, Utc};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::store::alerts::{AlertedError, ClaimedAlert, Trigger};

/// The generic webhook payload's version.
pub const PAYLOAD_VERSION: u64 = 1;

/// Header carrying the signature, `sha256=<hex>`.
pub const SIGNATURE_HEADER: &str = "x-faultline-signature";
/// Header carrying the signed timestamp (unix seconds).
pub const TIMESTAMP_HEADER: &str = "x-faultline-timestamp";

/// Channel kinds the API accepts.
pub const KINDS: &[&str] = &["webhook", "slack", "discord", "teams", "email"];

fn rfc3339(ms: i64) -> String {
    Utc.timestamp_millis_opt(ms)
        .single()
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// An error's title as lists show it: its name, and its description when it has one.
fn title(name: &str, description: &str) -> String {
    if description.is_empty() {
        name.to_owned()
    } else {
        format!("{name}: {description}")
    }
}

/// Where a reader finds the error: the read API's page for it.
pub fn error_url(base: &url::Url, project_id: i64, fingerprint: i64) -> String {
    format!(
        "{}/errortracking/api/v1/projects/{project_id}/errors/{fingerprint}",
        base.as_str().trim_end_matches('/')
    )
}

/// Errors folded into one summary message, past the rule's hourly rate.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    /// How many alerts the summary stands for, the carrying one included.
    pub count: usize,
    /// Up to [`SUMMARY_SAMPLE`] of their errors: (title, link).
    pub sample: Vec<(String, String)>,
}

/// Most errors a summary names.
pub const SUMMARY_SAMPLE: usize = 10;

fn error_json(base: &url::Url, project_id: i64, e: &AlertedError) -> Value {
    let newest_title = e.newest.as_ref().map(|n| title(&n.name, &n.description));
    json!({
        "id": e.id,
        "fingerprint": e.fingerprint,
        "title": title(&e.name, &e.description),
        "culprit": e.actor,
        "status": e.status,
        "count": e.event_count,
        "user_count": e.user_count,
        "first_seen": rfc3339(e.first_seen_at),
        "last_seen": rfc3339(e.last_seen_at),
        "url": error_url(base, project_id, e.fingerprint),
        "latest_event": e.newest.as_ref().map(|n| json!({
            "event_id": n.event_id,
            "title": newest_title,
            "culprit": n.actor,
            "environment": n.environment,
            "release": n.release,
            "level": n.level.as_deref().unwrap_or("error"),
            "timestamp": rfc3339(n.occurred_at),
        })),
    })
}

/// The generic webhook's body (version [`PAYLOAD_VERSION`]).
pub fn webhook_payload(
    base: &url::Url,
    alert: &ClaimedAlert,
    summary: Option<&Summary>,
    now: i64,
) -> Value {
    json!({
        "version": PAYLOAD_VERSION,
        "id": alert.uuid,
        "trigger": if summary.is_some() { "summary" } else { alert.trigger.as_str() },
        "sent_at": rfc3339(now),
        "rule": {"id": alert.rule_id, "name": alert.rule_name},
        "project": {"id": alert.project_id, "path_with_namespace": alert.project_path},
        "error": alert.error.as_ref().map(|e| error_json(base, alert.project_id, e)),
        "summary": summary.map(|s| json!({
            "count": s.count,
            "errors": s.sample.iter().map(|(t, u)| json!({"title": t, "url": u})).collect::<Vec<_>>(),
        })),
    })
}

/// One line saying what happened, for the chat formats.
fn headline(alert: &ClaimedAlert, summary: Option<&Summary>) -> String {
    let what = match (summary, alert.trigger) {
        (Some(s), _) => format!("{} alerts in the last hour (summary)", s.count),
        (None, Trigger::NewError) => "New error".into(),
        (None, Trigger::Regression) => "Regression".into(),
        (None, Trigger::Frequency) => "Error frequency threshold reached".into(),
        (None, Trigger::Test) => "Test notification".into(),
    };
    format!("[{}] {what} ({})", alert.project_path, alert.rule_name)
}

/// Facts about the error for the chat formats: (label, value).
fn facts(alert: &ClaimedAlert) -> Vec<(&'static str, String)> {
    let Some(e) = &alert.error else {
        return Vec::new();
    };
    let mut f = vec![
        ("Error", title(&e.name, &e.description)),
        ("Culprit", e.actor.clone()),
        ("Events", e.event_count.to_string()),
        ("First seen", rfc3339(e.first_seen_at)),
        ("Last seen", rfc3339(e.last_seen_at)),
    ];
    if let Some(n) = &e.newest {
        if let Some(env) = &n.environment {
            f.push(("Environment", env.clone()));
        }
        if let Some(rel) = &n.release {
            f.push(("Release", rel.clone()));
        }
    }
    f
}

fn link(base: &url::Url, alert: &ClaimedAlert) -> Option<String> {
    alert
        .error
        .as_ref()
        .map(|e| error_url(base, alert.project_id, e.fingerprint))
}

fn summary_lines(summary: Option<&Summary>) -> Vec<String> {
    summary
        .map(|s| {
            s.sample
                .iter()
                .map(|(t, u)| format!("• {t} — {u}"))
                .collect()
        })
        .unwrap_or_default()
}

/// A Slack incoming webhook's body; Mattermost and Rocket.Chat read the same `text`.
pub fn slack_payload(base: &url::Url, alert: &ClaimedAlert, summary: Option<&Summary>) -> Value {
    let mut lines = vec![format!("*{}*", headline(alert, summary))];
    lines.extend(facts(alert).into_iter().map(|(k, v)| format!("{k}: {v}")));
    lines.extend(summary_lines(summary));
    if let Some(u) = link(base, alert) {
        lines.push(format!("<{u}|Open the error>"));
    }
    json!({"text": lines.join("\n")})
}

/// A Discord webhook's body: a short `content` and one embed with the facts.
pub fn discord_payload(base: &url::Url, alert: &ClaimedAlert, summary: Option<&Summary>) -> Value {
    let mut description: Vec<String> = summary_lines(summary);
    if description.is_empty() {
        description.push(
            alert
                .error
                .as_ref()
                .map(|e| title(&e.name, &e.description))
                .unwrap_or_else(|| "faultline can reach this channel.".into()),
        );
    }
    let mut embed = json!({
        "title": headline(alert, summary),
        "description": description.join("\n"),
        "fields": facts(alert).into_iter().map(|(k, v)| json!({"name": k, "value": v, "inline": true})).collect::<Vec<_>>(),
    });
    if let Some(u) = link(base, alert) {
        embed["url"] = json!(u);
    }
    json!({"content": headline(alert, summary), "embeds": [embed]})
}

/// A Microsoft Teams Workflows webhook's body: a message holding one Adaptive Card.
pub fn teams_payload(base: &url::Url, alert: &ClaimedAlert, summary: Option<&Summary>) -> Value {
    let mut body = vec![json!({
        "type": "TextBlock", "size": "Medium", "weight": "Bolder", "wrap": true,
        "text": headline(alert, summary),
    })];
    let facts: Vec<Value> = facts(alert)
        .into_iter()
        .map(|(k, v)| json!({"title": k, "value": v}))
        .collect();
    if !facts.is_empty() {
        body.push(json!({"type": "FactSet", "facts": facts}));
    }
    for line in summary_lines(summary) {
        body.push(json!({"type": "TextBlock", "wrap": true, "text": line}));
    }
    let actions: Vec<Value> = link(base, alert)
        .map(|u| vec![json!({"type": "Action.OpenUrl", "title": "Open the error", "url": u})])
        .unwrap_or_default();
    json!({
        "type": "message",
        "attachments": [{
            "contentType": "application/vnd.microsoft.card.adaptive",
            "contentUrl": null,
            "content": {
                "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                "type": "AdaptiveCard",
                "version": "1.4",
                "body": body,
                "actions": actions,
            }
        }]
    })
}

/// An email's subject and plain-text body.
pub fn email_message(
    base: &url::Url,
    alert: &ClaimedAlert,
    summary: Option<&Summary>,
) -> (String, String) {
    let mut lines: Vec<String> = facts(alert)
        .into_iter()
        .map(|(k, v)| format!("{k}: {v}"))
        .collect();
    lines.extend(summary_lines(summary));
    if let Some(u) = link(base, alert) {
        lines.push(String::new());
        lines.push(format!("Open the error: {u}"));
    }
    if alert.error.is_none() && summary.is_none() {
        lines.push("faultline can reach this channel.".into());
    }
    lines.push(String::new());
    lines.push(format!(
        "Sent by the alert rule \"{}\" of {}.",
        alert.rule_name, alert.project_path
    ));
    (headline(alert, summary), lines.join("\n"))
}

/// HMAC-SHA256 (RFC 2104) of `message` under `key`. Written out here rather than taken from a
/// crate: it is a dozen lines over `sha2`, which the build already has, and the unit test pins
/// it to RFC 4231's vectors.
pub fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    const BLOCK: usize = 64;
    let mut k = [0u8; BLOCK];
    if key.len() > BLOCK {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let mut ipad = [0x36u8; BLOCK];
    let mut opad = [0x5cu8; BLOCK];
    for i in 0..BLOCK {
        ipad[i] ^= k[i];
        opad[i] ^= k[i];
    }
    let inner = Sha256::new()
        .chain_update(ipad)
        .chain_update(message)
        .finalize();
    Sha256::new()
        .chain_update(opad)
        .chain_update(inner)
        .finalize()
        .into()
}

/// The signature header's value for `body` sent at `timestamp` (unix seconds): `sha256=` and
/// the hex HMAC-SHA256 of `"{timestamp}.{body}"` under the channel's secret.
pub fn signature(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let mut signed = timestamp.to_string().into_bytes();
    signed.push(b'.');
    signed.extend_from_slice(body);
    format!(
        "sha256={}",
        hex::encode(hmac_sha256(secret.as_bytes(), &signed))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_rfc_4231() {
        // Test case 2.
        assert_eq!(
            hex::encode(hmac_sha256(b"Jefe", b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        // Test case 6: a key longer than the block.
        assert_eq!(
            hex::encode(hmac_sha256(
                &[0xaa; 131],
                b"Test Using Larger Than Block-Size Key - Hash Key First"
            )),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }

    #[test]
    fn signature_covers_timestamp_and_body() {
        let a = signature("s", 1, b"{}");
        assert!(a.starts_with("sha256="));
        assert_ne!(a, signature("s", 2, b"{}"));
        assert_ne!(a, signature("s", 1, b"{ }"));
        assert_ne!(a, signature("t", 1, b"{}"));
    }
}
