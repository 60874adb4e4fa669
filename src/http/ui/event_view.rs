//! One event as a page section: message, the exception chain (newest first; in each stack
//! trace the in-app frames first and highlighted with their source lines and local variables,
//! the library frames folded), breadcrumbs, request, user, tags, contexts, extra data and the
//! SDK. The payload is whatever an SDK sent, so nothing is assumed about its shape: a field of
//! an unexpected type is shown as JSON or left out, and every value is escaped text. No value
//! from an event ever becomes a link, an attribute that a browser follows, or markup.

use maud::{html, Markup};
use serde_json::{Map, Value};

/// Longest value shown before it is cut (the raw download has everything).
const MAX_VALUE_CHARS: usize = 2000;
/// Breadcrumbs shown, the newest.
const MAX_BREADCRUMBS: usize = 100;

/// A value as display text: strings as they are, anything else as compact JSON, cut short.
pub fn text(v: &Value) -> String {
    let s = match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    };
    cut(s)
}

fn cut(s: String) -> String {
    if s.chars().count() <= MAX_VALUE_CHARS {
        return s;
    }
    let mut out: String = s.chars().take(MAX_VALUE_CHARS).collect();
    out.push('…');
    out
}

fn str_of<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str).filter(|s| !s.is_empty())
}

/// Sentry's "values" wrapper: `{"values": [...]}` or a bare array.
fn values(v: Option<&Value>) -> &[Value] {
    match v {
        Some(Value::Array(a)) => a,
        Some(Value::Object(o)) => o
            .get("values")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or(&[]),
        _ => &[],
    }
}

/// Key/value pairs from an object or from an array of `[key, value]` pairs (tags, headers).
pub fn pairs(v: Option<&Value>) -> Vec<(String, String)> {
    match v {
        Some(Value::Object(o)) => o.iter().map(|(k, v)| (k.clone(), text(v))).collect(),
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|p| match p {
                Value::Array(kv) if kv.len() == 2 => Some((text(&kv[0]), text(&kv[1]))),
                Value::Object(o) => Some((
                    o.get("key").map(text).unwrap_or_default(),
                    o.get("value").map(text).unwrap_or_default(),
                )),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

fn kv_table(rows: &[(String, String)]) -> Markup {
    html! {
        table class="kv" {
            @for (k, v) in rows {
                tr { th { (k) } td { code { (v) } } }
            }
        }
    }
}

/// The event's message: `logentry.formatted`, `logentry.message`, or `message` (a string or
/// Sentry's `{formatted, message}` object).
pub fn message(event: &Value) -> Option<String> {
    for key in ["logentry", "message"] {
        match event.get(key) {
            Some(Value::String(s)) if !s.is_empty() => return Some(cut(s.clone())),
            Some(v @ Value::Object(_)) => {
                if let Some(s) = str_of(v, "formatted").or_else(|| str_of(v, "message")) {
                    return Some(cut(s.to_owned()));
                }
            }
            _ => {}
        }
    }
    None
}

pub fn render(event: &Value, raw_href: &str) -> Markup {
    let exceptions = values(event.get("exception"));
    let threads = values(event.get("threads"));
    html! {
        section class="event" {
            div class="event-meta" {
                @if let Some(id) = str_of(event, "event_id") { span { "Event " code { (id) } } }
                @if let Some(p) = str_of(event, "platform") { span class="chip" { (p) } }
                @if let Some(l) = str_of(event, "level") { span class={"chip level"} { (l) } }
                @if let Some(r) = str_of(event, "release") { span class="chip" { "release " (r) } }
                @if let Some(e) = str_of(event, "environment") { span class="chip" { "env " (e) } }
                a class="button small" href=(raw_href) download { "Raw JSON" }
            }
            @if let Some(m) = message(event) {
                h3 { "Message" }
                pre class="message" { (m) }
            }
            @if !exceptions.is_empty() {
                h3 { "Exception" @if exceptions.len() > 1 { span class="muted" { " (" (exceptions.len()) " chained, newest first)" } } }
                @for (i, exc) in exceptions.iter().rev().enumerate() {
                    (exception(exc, i == 0))
                }
            } @else {
                // A message with a stack trace (attach_stacktrace), or threads of a native event.
                @for t in threads.iter().filter(|t| t.get("stacktrace").is_some()).take(1) {
                    h3 { "Stack trace" @if let Some(n) = str_of(t, "name") { span class="muted" { " (thread " (n) ")" } } }
                    (stacktrace(t.get("stacktrace"), true))
                }
                @if threads.is_empty() && event.get("stacktrace").is_some() {
                    h3 { "Stack trace" }
                    (stacktrace(event.get("stacktrace"), true))
                }
            }
            (breadcrumbs(event))
            (request(event.get("request")))
            @if let Some(user) = event.get("user").and_then(Value::as_object).filter(|u| !u.is_empty()) {
                h3 { "User" }
                (kv_table(&object_rows(user)))
            }
            @let tags = pairs(event.get("tags"));
            @if !tags.is_empty() {
                h3 { "Tags" }
                div class="tags" {
                    @for (k, v) in &tags { span class="tag" { span class="k" { (k) } span class="v" { (v) } } }
                }
            }
            @if let Some(contexts) = event.get("contexts").and_then(Value::as_object).filter(|c| !c.is_empty()) {
                h3 { "Contexts" }
                div class="contexts" {
                    @for (name, ctx) in contexts {
                        div class="context" {
                            h4 { (name) }
                            @match ctx {
                                Value::Object(o) => (kv_table(&object_rows(o))),
                                other => code { (text(other)) },
                            }
                        }
                    }
                }
            }
            @if let Some(extra) = event.get("extra").and_then(Value::as_object).filter(|e| !e.is_empty()) {
                h3 { "Additional data" }
                (kv_table(&object_rows(extra)))
            }
            @if let Some(sdk) = event.get("sdk").and_then(Value::as_object) {
                h3 { "SDK" }
                p {
                    code { (sdk.get("name").map(text).unwrap_or_default()) }
                    " " (sdk.get("version").map(text).unwrap_or_default())
                }
                @let integrations: Vec<String> = sdk.get("integrations").and_then(Value::as_array)
                    .map(|a| a.iter().map(text).collect()).unwrap_or_default();
                @if !integrations.is_empty() {
                    p class="muted small" { "Integrations: " (integrations.join(", ")) }
                }
            }
        }
    }
}

fn object_rows(o: &Map<String, Value>) -> Vec<(String, String)> {
    o.iter().map(|(k, v)| (k.clone(), text(v))).collect()
}

fn exception(exc: &Value, surfaced: bool) -> Markup {
    let ty = str_of(exc, "type").unwrap_or("Error");
    html! {
        div class={"exception" @if surfaced { " surfaced" }} {
            p class="exc-title" {
                strong { (ty) }
                @if let Some(v) = str_of(exc, "value") { ": " span class="exc-value" { (cut(v.to_owned())) } }
            }
            @if let Some(m) = str_of(exc, "module") { p class="muted small" { "in " code { (m) } } }
            @if let Some(mech) = exc.get("mechanism").and_then(Value::as_object) {
                p class="muted small" {
                    "mechanism " code { (mech.get("type").map(text).unwrap_or_default()) }
                    @if mech.get("handled") == Some(&Value::Bool(false)) { " " span class="badge unhandled" { "unhandled" } }
                }
            }
            (stacktrace(exc.get("stacktrace"), surfaced))
        }
    }
}

/// A stack trace, newest frame first: in-app frames, then the library frames folded. The
/// newest in-app frame (where it failed) is open, with its source lines.
fn stacktrace(st: Option<&Value>, open_first: bool) -> Markup {
    let frames: Vec<&Value> = st
        .and_then(|s| s.get("frames"))
        .and_then(Value::as_array)
        .map(|f| f.iter().rev().collect())
        .unwrap_or_default();
    if frames.is_empty() {
        return html! {};
    }
    let in_app: Vec<&Value> = frames
        .iter()
        .copied()
        .filter(|f| f.get("in_app") == Some(&Value::Bool(true)))
        .collect();
    let library: Vec<&Value> = frames
        .iter()
        .copied()
        .filter(|f| f.get("in_app") != Some(&Value::Bool(true)))
        .collect();
    html! {
        div class="stacktrace" {
            @if in_app.is_empty() {
                // Nothing marked as the application's: show everything rather than nothing.
                @for (i, f) in library.iter().enumerate() { (frame(f, open_first && i == 0)) }
            } @else {
                @for (i, f) in in_app.iter().enumerate() { (frame(f, open_first && i == 0)) }
                @if !library.is_empty() {
                    details class="library" {
                        summary { (library.len()) " library frame" @if library.len() != 1 { "s" } }
                        @for f in &library { (frame(f, false)) }
                    }
                }
            }
        }
    }
}

fn frame(f: &Value, open: bool) -> Markup {
    let in_app = f.get("in_app") == Some(&Value::Bool(true));
    let file = str_of(f, "filename")
        .or_else(|| str_of(f, "abs_path"))
        .or_else(|| str_of(f, "module"))
        .unwrap_or("?");
    let lineno = f.get("lineno").and_then(Value::as_i64);
    let context_line = str_of(f, "context_line");
    let pre: Vec<String> = f
        .get("pre_context")
        .and_then(Value::as_array)
        .map(|a| a.iter().map(text).collect())
        .unwrap_or_default();
    let post: Vec<String> = f
        .get("post_context")
        .and_then(Value::as_array)
        .map(|a| a.iter().map(text).collect())
        .unwrap_or_default();
    let vars = f.get("vars").and_then(Value::as_object);
    let has_body = context_line.is_some() || vars.is_some_and(|v| !v.is_empty());
    let summary = html! {
        span class="file" { (file) }
        @if let Some(func) = str_of(f, "function") { " in " span class="func" { (func) } }
        @if let Some(l) = lineno { " at line " span class="line" { (l) } }
        @if let Some(c) = f.get("colno").and_then(Value::as_i64) { ":" (c) }
        @if in_app { " " span class="badge app" { "in app" } }
    };
    html! {
        @if has_body {
            details class={"frame" @if in_app { " in-app" }} open[open] {
                summary { (summary) }
                @if let Some(line) = context_line {
                    @let start = lineno.map(|l| l - pre.len() as i64);
                    ol class="source" start=[start] {
                        @for l in &pre { li { code { (l) } } }
                        li class="failing" { code { (cut(line.to_owned())) } }
                        @for l in &post { li { code { (l) } } }
                    }
                }
                @if let Some(vars) = vars.filter(|v| !v.is_empty()) {
                    div class="vars" { h5 { "Local variables" } (kv_table(&object_rows(vars))) }
                }
            }
        } @else {
            div class={"frame flat" @if in_app { " in-app" }} { (summary) }
        }
    }
}

fn breadcrumbs(event: &Value) -> Markup {
    let crumbs = values(event.get("breadcrumbs"));
    if crumbs.is_empty() {
        return html! {};
    }
    let skip = crumbs.len().saturating_sub(MAX_BREADCRUMBS);
    html! {
        h3 { "Breadcrumbs" span class="muted" { " (" (crumbs.len()) ")" } }
        table class="crumbs-table" {
            thead { tr { th { "Time" } th { "Category" } th { "Level" } th { "Message" } } }
            tbody {
                @for c in crumbs.iter().skip(skip) {
                    tr {
                        td class="nowrap" { (crumb_time(c.get("timestamp"))) }
                        td { (c.get("category").map(text).or_else(|| c.get("type").map(text)).unwrap_or_default()) }
                        td { (c.get("level").map(text).unwrap_or_default()) }
                        td {
                            (c.get("message").map(text).unwrap_or_default())
                            @if let Some(d) = c.get("data").and_then(Value::as_object).filter(|d| !d.is_empty()) {
                                div class="muted small" { code { (text(&Value::Object(d.clone()))) } }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// A breadcrumb's time: a Unix timestamp (float seconds) or an RFC 3339 string.
fn crumb_time(v: Option<&Value>) -> String {
    match v {
        Some(Value::Number(n)) => n
            .as_f64()
            .and_then(|s| chrono::DateTime::from_timestamp_millis((s * 1000.0) as i64))
            .map(|t| t.format("%H:%M:%S%.3f").to_string())
            .unwrap_or_default(),
        Some(Value::String(s)) => chrono::DateTime::parse_from_rfc3339(s)
            .map(|t| t.format("%H:%M:%S%.3f").to_string())
            .unwrap_or_else(|_| cut(s.clone())),
        _ => String::new(),
    }
}

fn request(req: Option<&Value>) -> Markup {
    let Some(req) = req.filter(|r| r.is_object()) else {
        return html! {};
    };
    let headers = pairs(req.get("headers"));
    let mut rows = Vec::new();
    for key in ["method", "url", "query_string", "data", "cookies"] {
        if let Some(v) = req.get(key).filter(|v| !v.is_null()) {
            rows.push((key.to_owned(), text(v)));
        }
    }
    html! {
        h3 { "Request" }
        @if let (Some(m), Some(u)) = (str_of(req, "method"), str_of(req, "url")) {
            // The URL is shown, never linked: an event's URL may be javascript: or worse.
            p class="request-line" { code { (m) " " (u) } }
        }
        (kv_table(&rows))
        @if !headers.is_empty() {
            details { summary { "Headers (" (headers.len()) ")" } (kv_table(&headers)) }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn in_app_frames_come_first_and_the_failing_line_is_marked() {
        let ev = json!({"exception": {"values": [{"type": "KeyError", "value": "'x'",
        "stacktrace": {"frames": [
            {"filename": "lib/http.py", "function": "dispatch", "in_app": false},
            {"filename": "app/views.py", "function": "show", "lineno": 12, "in_app": true,
             "pre_context": ["def show():"], "context_line": "    return d['x']",
             "post_context": [""], "vars": {"d": "{}"}},
            {"filename": "lib/dict.py", "function": "getitem", "in_app": false}
        ]}}]}});
        let html = render(&ev, "/raw").into_string();
        let app = html.find("app/views.py").expect("in-app frame");
        let lib = html.find("lib/dict.py").expect("library frame");
        assert!(app < lib, "in-app first");
        assert!(html.contains("2 library frames"));
        assert!(
            html.contains(r#"<li class="failing"><code>    return d['x']</code></li>"#),
            "{html}"
        );
        assert!(html.contains(r#"start="11""#), "{html}");
        assert!(html.contains("Local variables"));
    }

    #[test]
    fn hostile_values_stay_text() {
        let ev = json!({"message": "<script>alert(1)</script>",
            "tags": [["t", "\"onmouseover=alert(1)"]],
            "request": {"url": "javascript:alert(1)", "method": "GET"}});
        let html = render(&ev, "/raw").into_string();
        assert!(!html.contains("<script>alert"));
        assert!(!html.contains("\"onmouseover"));
        assert!(!html.contains("href=\"javascript:"));
    }

    #[test]
    fn odd_shapes_do_not_break_it() {
        for ev in [
            json!({}),
            json!({"exception": 5}),
            json!({"exception": [{"stacktrace": {"frames": "x"}}]}),
            json!({"breadcrumbs": [{"timestamp": "nope"}, {"timestamp": 1.7e9}]}),
            json!({"tags": {"a": 1}}),
        ] {
            let _ = render(&ev, "/raw").into_string();
        }
        assert_eq!(
            message(&json!({"logentry": {"message": "m %s", "formatted": "m 1"}})).as_deref(),
            Some("m 1")
        );
    }
}
