//! The page frame and the small pieces every page shares (header, tabs, times, status badges).
//! Every value is interpolated with maud's `(...)`, which escapes it; nothing here writes
//! `PreEscaped`.

use chrono::{DateTime, Utc};
use maud::{html, Markup, DOCTYPE};

use crate::store::read::ErrorStatus;
use crate::store::{AccessLevel, Project};

/// The signed-in user as the header shows them.
pub struct Who<'a> {
    pub username: &'a str,
    pub csrf: &'a str,
    pub is_admin: bool,
}

/// The HTML document around a page's content.
pub fn layout(title: &str, who: Option<&Who>, crumbs: &[(String, String)], body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · faultline" }
                link rel="stylesheet" href="/-/ui/static/app.css";
                script src="/-/ui/static/app.js" defer {}
            }
            body {
                header class="top" {
                    a class="brand" href="/" { span class="logo" { "⚡" } " faultline" }
                    nav class="crumbs" {
                        @for (href, label) in crumbs {
                            span class="sep" { "/" }
                            a href=(href) { (label) }
                        }
                    }
                    @if let Some(who) = who {
                        div class="who" {
                            span class="user" { (who.username) @if who.is_admin { " (admin)" } }
                            form method="post" action="/users/sign_out" class="inline" {
                                input type="hidden" name="csrf" value=(who.csrf);
                                button type="submit" class="link" { "Sign out" }
                            }
                        }
                    }
                }
                main { (body) }
                footer { "faultline " (env!("CARGO_PKG_VERSION")) }
            }
        }
    }
}

pub fn error_page(status: u16, title: &str, text: &str) -> Markup {
    layout(
        title,
        None,
        &[],
        html! {
            section class="card narrow center" {
                p class="big-status" { (status) }
                h1 { (title) }
                p { (text) }
                p { a href="/" { "Back to your projects" } }
            }
        },
    )
}

pub fn sign_in(csrf: &str, redirect: &str, username: &str, problem: Option<&str>) -> Markup {
    layout(
        "Sign in",
        None,
        &[],
        html! {
            section class="card narrow" {
                h1 { "Sign in" }
                @if let Some(p) = problem {
                    p class="flash error" role="alert" { (p) }
                }
                form method="post" action="/users/sign_in" class="stack" {
                    input type="hidden" name="csrf" value=(csrf);
                    input type="hidden" name="redirect" value=(redirect);
                    label { "Username"
                        input type="text" name="username" value=(username) autocomplete="username" required autofocus;
                    }
                    label { "Password"
                        input type="password" name="password" autocomplete="current-password" required;
                    }
                    button type="submit" class="primary" { "Sign in" }
                }
            }
        },
    )
}

/// The project's page tabs: errors, messages and (for Maintainers) settings.
pub fn project_tabs(project: &Project, level: AccessLevel, active: &str) -> Markup {
    let base = format!("/{}/-", project.path_with_namespace);
    html! {
        div class="project-head" {
            h1 { (project.name) span class="muted path" { (project.path_with_namespace) } }
            nav class="tabs" {
                a href={(base) "/error_tracking"} class=(tab(active, "errors")) { "Errors" }
                a href={(base) "/error_tracking/messages"} class=(tab(active, "messages")) { "Messages" }
                @if level >= AccessLevel::MAINTAINER {
                    a href={(base) "/settings/error_tracking"} class=(tab(active, "settings")) { "Settings" }
                }
            }
        }
    }
}

fn tab(active: &str, name: &str) -> &'static str {
    if active == name {
        "active"
    } else {
        ""
    }
}

pub fn crumbs_for(project: &Project) -> Vec<(String, String)> {
    vec![(
        format!("/{}/-/error_tracking", project.path_with_namespace),
        project.path_with_namespace.clone(),
    )]
}

/// "3 minutes ago", with the exact time on hover.
pub fn when(t: DateTime<Utc>, now: DateTime<Utc>) -> Markup {
    html! {
        time datetime=(t.to_rfc3339()) title=(t.format("%Y-%m-%d %H:%M:%S UTC").to_string()) {
            (relative(t, now))
        }
    }
}

pub fn relative(t: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let secs = (now - t).num_seconds();
    let (n, unit) = match secs.abs() {
        s if s < 45 => return "just now".into(),
        s if s < 3600 => ((s + 30) / 60, "minute"),
        s if s < 86_400 => ((s + 1800) / 3600, "hour"),
        s if s < 30 * 86_400 => ((s + 43_200) / 86_400, "day"),
        s if s < 365 * 86_400 => (s / (30 * 86_400), "month"),
        s => (s / (365 * 86_400), "year"),
    };
    let plural = if n == 1 { "" } else { "s" };
    if secs >= 0 {
        format!("{n} {unit}{plural} ago")
    } else {
        format!("in {n} {unit}{plural}")
    }
}

pub fn status_badge(status: ErrorStatus) -> Markup {
    html! { span class={"badge " (status.as_str())} { (status.as_str()) } }
}

/// A number with thousands separators.
pub fn count(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    if n < 0 {
        out.insert(0, '-');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_times() {
        let now = Utc::now();
        assert_eq!(relative(now, now), "just now");
        assert_eq!(
            relative(now - chrono::Duration::minutes(1), now),
            "1 minute ago"
        );
        assert_eq!(
            relative(now - chrono::Duration::hours(5), now),
            "5 hours ago"
        );
        assert_eq!(relative(now - chrono::Duration::days(3), now), "3 days ago");
        assert_eq!(relative(now + chrono::Duration::days(2), now), "in 2 days");
    }

    #[test]
    fn counts_are_grouped() {
        assert_eq!(count(0), "0");
        assert_eq!(count(1234), "1,234");
        assert_eq!(count(1_000_000), "1,000,000");
        assert_eq!(count(-999), "-999");
    }

    #[test]
    fn values_are_escaped() {
        let page = sign_in("c", "/x\"><script>", "<script>alert(1)</script>", None).into_string();
        assert!(!page.contains("<script>alert"), "{page}");
        assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    }
}
