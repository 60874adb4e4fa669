//! The web UI against the real server, as a browser meets it over HTTP: signing in and out,
//! sessions across a restart, the slowing of repeated failures, CSRF, the role matrix of every
//! page and form, escaping of hostile event values, the 404 page, and pages rendering the events
//! real SDKs sent (the `sentry` crate and the recorded SDK fixtures).

mod common;
#[path = "ingest_support/mod.rs"]
mod ingest_support;

use std::time::Duration;

use common::{sdk, spawn_app, spawn_app_with, spawn_on_dir, Page, TestApp, Web};
use ingest_support::{new_id, post_event, send, sentry_auth};
use serde_json::{json, Value};

/// The list page of `path`.
fn list(path: &str) -> String {
    format!("/{path}/-/error_tracking")
}

fn details(path: &str, fingerprint: i64) -> String {
    format!("/{path}/-/error_tracking/{fingerprint}/details")
}

fn settings(path: &str) -> String {
    format!("/{path}/-/settings/error_tracking")
}

/// The fingerprints the read API lists for the project (any status).
async fn fingerprints(app: &TestApp, project_id: i64, status: &str) -> Vec<i64> {
    let (s, body) = app
        .call(
            "GET",
            &format!(
                "/errortracking/api/v1/projects/{project_id}/errors?status={status}&limit=100"
            ),
            Some(&app.admin_token),
            None,
        )
        .await;
    assert_eq!(s, 200, "{body}");
    body.as_array()
        .expect("array")
        .iter()
        .map(|e| e["fingerprint"].as_i64().expect("fingerprint"))
        .collect()
}

async fn error_status(app: &TestApp, project_id: i64, fingerprint: i64) -> String {
    let (s, body) = app
        .call(
            "GET",
            &format!("/errortracking/api/v1/projects/{project_id}/errors/{fingerprint}"),
            Some(&app.admin_token),
            None,
        )
        .await;
    assert_eq!(s, 200, "{body}");
    body["status"].as_str().expect("status").to_owned()
}

/// A project `errors/<name>` with a key and one error event; returns (id, path, key, fingerprint).
async fn project_with_error(app: &TestApp, name: &str) -> (i64, String, String, i64) {
    let (id, key, _) = app.project_with_key(name).await;
    let event = ingest_support::error_event(&new_id(), "ValueError", "bad value 7", "checkout");
    let r = post_event(app, id, &key, &event).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let fp = fingerprints(app, id, "unresolved").await[0];
    (id, format!("errors/{name}"), key, fp)
}

fn assert_page(page: &Page, status: u16, what: &str) {
    assert_eq!(page.status, status, "{what}: {}", page.body);
}

#[tokio::test]
async fn sign_in_sets_a_safe_cookie_and_sign_out_ends_the_session() {
    let app = spawn_app().await;
    // Without a session every page sends the browser to the sign-in page, and back afterwards.
    let anonymous = Web::new(&app.base);
    let p = anonymous.get("/").await;
    assert_page(&p, 303, "home without a session");
    assert_eq!(p.location(), Some("/users/sign_in?redirect=%2F"));
    let p = anonymous.get("/errors/x/-/error_tracking").await;
    assert_eq!(
        p.location(),
        Some("/users/sign_in?redirect=%2Ferrors%2Fx%2F-%2Ferror_tracking")
    );

    let password = app.server.initial_admin_password.clone().expect("password");
    let mut wrong = Web::new(&app.base);
    let p = wrong.try_sign_in("root", "not the password").await;
    assert_page(&p, 401, "wrong password");
    assert!(p.body.contains("Invalid username or password"));
    assert!(common::set_cookie_value(&p.headers, "faultline_session").is_none());
    let p = wrong.try_sign_in("nobody", &password).await;
    assert_page(&p, 401, "unknown user");

    let mut web = Web::new(&app.base);
    let p = web.try_sign_in("root", &password).await;
    assert_page(&p, 303, "sign-in");
    let cookie = common::set_cookie_value(&p.headers, "faultline_session").expect("cookie");
    for attr in ["HttpOnly", "SameSite=Lax", "Path=/"] {
        assert!(cookie.contains(attr), "{attr} in {cookie}");
    }
    assert!(!cookie.contains("Secure"), "plain http: {cookie}");
    // The cookie's secret is not what the database keeps.
    let secret = web
        .cookie
        .trim_start_matches("faultline_session=")
        .to_owned();
    // Compared here, not in SQL: a blob literal is written differently by each backend.
    let stored = common::Db::of(&app)
        .await
        .rows("SELECT digest FROM web_sessions")
        .await
        .iter()
        .filter(|r| r[0].bytes() == secret.as_bytes())
        .count();
    assert_eq!(stored, 0);
    let home = web.get("/").await;
    assert_page(&home, 200, "home");
    assert!(home.body.contains("root"));
    assert_eq!(
        home.header("content-security-policy"),
        Some(faultline::http::ui::CONTENT_SECURITY_POLICY)
    );
    assert!(faultline::http::ui::CONTENT_SECURITY_POLICY.contains("script-src 'self'"));

    // Sign-out needs the token too, then the old cookie is worth nothing.
    let p = web.post_raw("/users/sign_out", &[]).await;
    assert_page(&p, 403, "sign-out without the CSRF token");
    assert_page(&web.get("/").await, 200, "still signed in");
    let p = web.post("/users/sign_out", &[]).await;
    assert_page(&p, 303, "sign-out");
    assert_eq!(p.location(), Some("/users/sign_in"));
    assert_page(&web.get("/").await, 303, "the old cookie after sign-out");
}

#[tokio::test]
async fn sign_in_goes_back_only_to_a_path_on_this_server() {
    let app = spawn_app().await;
    let web = app.root_web().await;
    for (redirect, expected) in [
        (
            "%2Ferrors%2Fx%2F-%2Ferror_tracking",
            "/errors/x/-/error_tracking",
        ),
        ("%2F%2Fevil.example", "/"),
        ("https%3A%2F%2Fevil.example", "/"),
        // Browsers drop the tab, which would leave //evil.example.
        ("%2F%09%2Fevil.example", "/"),
        // Not a valid header value at all.
        ("%2Fa%0D%0ASet-Cookie%3A%20x%3D1", "/"),
    ] {
        let p = web
            .get(&format!("/users/sign_in?redirect={redirect}"))
            .await;
        assert_page(&p, 303, redirect);
        assert_eq!(p.location(), Some(expected), "{redirect}");
    }
}

#[tokio::test]
async fn the_sign_in_form_needs_its_csrf_cookie() {
    let app = spawn_app().await;
    let password = app.server.initial_admin_password.clone().expect("password");
    let web = Web::new(&app.base);
    // The form's token without the cookie it was paired with (a login-CSRF attempt).
    let p = web
        .post_raw(
            "/users/sign_in",
            &[
                ("csrf", "0123"),
                ("username", "root"),
                ("password", &password),
            ],
        )
        .await;
    assert_page(&p, 403, "sign-in without the CSRF cookie");
    assert!(common::set_cookie_value(&p.headers, "faultline_session").is_none());
}

#[tokio::test]
async fn the_cookie_is_secure_behind_https() {
    let app = spawn_app_with(|c| c.external_url = Some("https://errors.example.com".into())).await;
    let password = app.server.initial_admin_password.clone().expect("password");
    let mut web = Web::new(&app.base);
    let p = web.try_sign_in("root", &password).await;
    assert_page(&p, 303, "sign-in");
    let cookie = common::set_cookie_value(&p.headers, "faultline_session").expect("cookie");
    assert!(cookie.contains("; Secure"), "{cookie}");
}

#[tokio::test]
async fn sessions_survive_a_restart() {
    let app = spawn_app().await;
    let web = app.root_web().await;
    let cookie = web.cookie.clone();
    let csrf = web.csrf.clone();
    let dir = app.dir;
    app.server.shutdown().await.expect("clean shutdown");

    let server = spawn_on_dir(dir.path(), |_| {}).await;
    let mut again = Web::new(&format!("http://{}", server.addr));
    again.cookie = cookie;
    again.csrf = csrf;
    let home = again.get("/").await;
    assert_page(&home, 200, "the same cookie after a restart");
    assert!(home.body.contains("root"));
    // And its CSRF token still goes with it.
    assert_page(&again.post("/users/sign_out", &[]).await, 303, "sign-out");
    assert_page(&again.get("/").await, 303, "signed out");
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn repeated_failures_are_slowed_down() {
    let app = spawn_app().await;
    let password = app.server.initial_admin_password.clone().expect("password");
    let mut web = Web::new(&app.base);
    for _ in 0..faultline::domain::passwords::FREE_FAILURES {
        assert_page(
            &web.try_sign_in("root", "guess").await,
            401,
            "a wrong guess",
        );
    }
    // Now even the right password has to wait, and the page says how long.
    let p = web.try_sign_in("ROOT", &password).await;
    assert_page(&p, 429, "the right password during the wait");
    assert!(p.header("retry-after").is_some());
    assert!(p.body.contains("Too many failed sign-ins"));
    // Other names are not held up.
    let other = app.create_user("alice", false).await;
    app.give_password(other.id, "alice-password").await;
    Web::sign_in(&app.base, "alice", "alice-password").await;
    // After the wait the right password works again.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_page(
        &web.try_sign_in("root", &password).await,
        303,
        "after the wait",
    );
}

#[tokio::test]
async fn a_new_password_ends_the_users_sessions() {
    let app = spawn_app().await;
    let root = app.root_web().await;
    let user = app.create_user("bob", false).await;
    app.give_password(user.id, "first-password").await;
    let bob = Web::sign_in(&app.base, "bob", "first-password").await;
    let p = root
        .post(
            "/-/ui/password",
            &[("username", "bob"), ("password", "second-password")],
        )
        .await;
    assert_page(&p, 303, "root sets bob's password");
    assert_page(&bob.get("/").await, 303, "bob's old session");
    let mut web = Web::new(&app.base);
    assert_page(
        &web.try_sign_in("bob", "first-password").await,
        401,
        "old password",
    );
    Web::sign_in(&app.base, "bob", "second-password").await;
    // Too short a password is refused, and a non-administrator sets no one's.
    let p = root
        .post(
            "/-/ui/password",
            &[("username", "bob"), ("password", "short")],
        )
        .await;
    assert_page(&p, 400, "a short password");
    let bob = Web::sign_in(&app.base, "bob", "second-password").await;
    let p = bob
        .post(
            "/-/ui/password",
            &[("username", "root"), ("password", "taken-over-now")],
        )
        .await;
    assert_page(&p, 403, "a non-administrator");
}

#[tokio::test]
async fn administrators_create_projects_and_users_in_the_ui() {
    let app = spawn_app().await;
    let root = app.root_web().await;
    let p = root
        .post(
            "/-/ui/projects",
            &[("name", "Web Shop"), ("namespace", "acme")],
        )
        .await;
    assert_page(&p, 303, "create project");
    let (s, body) = app
        .call(
            "GET",
            "/api/v4/projects/acme%2Fweb-shop",
            Some(&app.admin_token),
            None,
        )
        .await;
    assert_eq!(s, 200, "{body}");
    let home = root.get("/").await;
    assert!(home.body.contains("Web Shop") && home.body.contains("acme/web-shop"));
    let p = root
        .post(
            "/-/ui/users",
            &[
                ("username", "carol"),
                ("password", "carol-password"),
                ("admin", "1"),
            ],
        )
        .await;
    assert_page(&p, 303, "create user");
    let carol = Web::sign_in(&app.base, "carol", "carol-password").await;
    assert!(
        carol.get("/").await.body.contains("New project"),
        "carol is an administrator"
    );
    // A non-administrator gets neither form nor action.
    let dave = app.create_user("dave", false).await;
    app.give_password(dave.id, "dave-password").await;
    let dave = Web::sign_in(&app.base, "dave", "dave-password").await;
    assert!(!dave.get("/").await.body.contains("New project"));
    let p = dave.post("/-/ui/projects", &[("name", "mine")]).await;
    assert_page(&p, 403, "a non-administrator creates a project");
}

/// What each role may do with each page and form (docs: Reporter reads, Developer changes
/// status, Maintainer settings and keys, non-members see nothing).
#[tokio::test]
async fn the_role_matrix_on_every_page_and_form() {
    let app = spawn_app().await;
    let (pid, path, _, fp) = project_with_error(&app, "matrix").await;
    let event_row = common::Db::of(&app)
        .await
        .int("SELECT id FROM events LIMIT 1")
        .await;
    let other = app.project_id("elsewhere", "other").await;

    let outsider = app.web_member("outsider", other, Some(50)).await;
    let guest = app.web_member("guest", pid, Some(10)).await;
    let reporter = app.web_member("reporter", pid, Some(20)).await;
    let developer = app.web_member("developer", pid, Some(30)).await;
    let maintainer = app.web_member("maintainer", pid, Some(40)).await;
    let root = app.root_web().await;

    let pages = [
        (list(&path), 20),
        (format!("/{path}/-/error_tracking/messages"), 20),
        (details(&path, fp), 20),
        (
            format!("/{path}/-/error_tracking/{fp}/events/{event_row}.json"),
            20,
        ),
        (settings(&path), 40),
    ];
    let users: [(&Web, i64); 6] = [
        (&outsider, 0),
        (&guest, 10),
        (&reporter, 20),
        (&developer, 30),
        (&maintainer, 40),
        (&root, 50),
    ];
    for (web, level) in users {
        for (page, needs) in &pages {
            let expected = match level {
                0 => 404,
                l if l >= *needs => 200,
                _ => 403,
            };
            let p = web.get(page).await;
            assert_eq!(p.status, expected, "GET {page} at level {level}");
            if expected == 404 {
                assert!(p.body.contains("Page not found"), "the 404 page");
            }
        }
        // Reporters do not see the triage controls; Maintainers see the settings tab.
        let list_page = web.get(&list(&path)).await;
        if level >= 20 {
            assert_eq!(
                list_page.body.contains("Resolve selected"),
                level >= 30,
                "{level}"
            );
            assert_eq!(
                list_page.body.contains("/-/settings/error_tracking"),
                level >= 40
            );
        }
    }

    // The projects page lists a member's projects only.
    assert!(!outsider.get("/").await.body.contains(&path));
    assert!(outsider.get("/").await.body.contains("other/elsewhere"));
    assert!(reporter.get("/").await.body.contains(&path));

    // Forms: status and bulk need Developer; settings and keys need Maintainer.
    let key_id = app.keys(pid).await[0]["id"].as_i64().expect("key id");
    for (web, level) in users {
        let fp_s = fp.to_string();
        let expect = |needs: i64| match level {
            0 => 404,
            l if l >= needs => 303,
            _ => 403,
        };
        let p = web
            .post(
                &format!("/{path}/-/error_tracking/{fp}/status"),
                &[("status", "ignored")],
            )
            .await;
        assert_eq!(
            p.status,
            expect(30),
            "status form at level {level}: {}",
            p.body
        );
        let p = web
            .post(
                &format!("/{path}/-/error_tracking/bulk"),
                &[("status", "unresolved"), ("fingerprint", &fp_s)],
            )
            .await;
        assert_eq!(p.status, expect(30), "bulk form at level {level}");
        let p = web
            .post(&settings(&path), &[("active", "1"), ("integrated", "1")])
            .await;
        assert_eq!(p.status, expect(40), "settings form at level {level}");
        let p = web
            .post(&format!("{}/client_keys", settings(&path)), &[])
            .await;
        assert_eq!(p.status, expect(40), "create key at level {level}");
        let p = web
            .post(
                &format!("{}/client_keys/{key_id}/delete", settings(&path)),
                &[],
            )
            .await;
        // The first Maintainer deletes it; after that it is an unknown key.
        let expected = match expect(40) {
            303 if level > 40 => 404,
            s => s,
        };
        assert_eq!(p.status, expected, "delete key at level {level}");
    }
    assert_eq!(error_status(&app, pid, fp).await, "unresolved");
}

#[tokio::test]
async fn forms_without_the_csrf_token_are_refused() {
    let app = spawn_app().await;
    let (pid, path, _, fp) = project_with_error(&app, "csrf").await;
    let root = app.root_web().await;
    let keys_before = app.keys(pid).await.len();
    let forms: [(String, Vec<(&str, &str)>); 4] = [
        (
            format!("/{path}/-/error_tracking/{fp}/status"),
            vec![("status", "resolved")],
        ),
        (
            format!("/{path}/-/error_tracking/bulk"),
            vec![("status", "resolved")],
        ),
        (format!("{}/client_keys", settings(&path)), vec![]),
        (settings(&path), vec![("active", "1")]),
    ];
    for (form, fields) in &forms {
        let p = root.post_raw(form, fields).await;
        assert_page(&p, 403, &format!("{form} without a token"));
        assert!(p.body.contains("The form has expired"));
        let mut wrong = fields.clone();
        wrong.push(("csrf", "not-the-token"));
        assert_page(&root.post_raw(form, &wrong).await, 403, "a wrong token");
        // Another session's token does not fit this one either.
        let other = app.root_web().await;
        let mut theirs = fields.clone();
        theirs.push(("csrf", &other.csrf));
        assert_page(
            &root.post_raw(form, &theirs).await,
            403,
            "another session's token",
        );
    }
    assert_eq!(error_status(&app, pid, fp).await, "unresolved");
    assert_eq!(app.keys(pid).await.len(), keys_before);
    let (_, s) = app
        .call(
            "GET",
            &format!("/api/v4/projects/{pid}/error_tracking/settings"),
            Some(&app.admin_token),
            None,
        )
        .await;
    assert_eq!(s["active"], json!(true), "settings unchanged");
}

#[tokio::test]
async fn triage_in_the_ui_is_the_apis_triage() {
    let app = spawn_app().await;
    let (pid, path, key, fp) = project_with_error(&app, "triage").await;
    let second = ingest_support::error_event(&new_id(), "TypeError", "other", "pay");
    assert_eq!(post_event(&app, pid, &key, &second).await.status, 200);
    let both = fingerprints(&app, pid, "unresolved").await;
    assert_eq!(both.len(), 2);
    let web = app.web_member("dev", pid, Some(30)).await;

    let p = web
        .post(
            &format!("/{path}/-/error_tracking/{fp}/status"),
            &[("status", "resolved")],
        )
        .await;
    assert_page(&p, 303, "resolve");
    assert_eq!(
        p.location(),
        Some(format!("{}?done=status", details(&path, fp)).as_str())
    );
    assert_eq!(error_status(&app, pid, fp).await, "resolved");
    let unresolved = web.get(&list(&path)).await;
    assert!(
        !unresolved.body.contains(&format!("/{fp}/details")),
        "gone from unresolved"
    );
    let resolved = web.get(&format!("{}?status=resolved", list(&path))).await;
    assert!(
        resolved.body.contains(&format!("/{fp}/details")),
        "on the resolved tab"
    );

    // A new event reopens it.
    let again = ingest_support::error_event(&new_id(), "ValueError", "bad value 8", "checkout");
    assert_eq!(post_event(&app, pid, &key, &again).await.status, 200);
    assert_eq!(error_status(&app, pid, fp).await, "unresolved");

    // Bulk: both ignored at once, and the browser goes back to the page it came from.
    let back = format!("{}?sort=frequency_desc", list(&path));
    let fields: Vec<(&str, String)> = vec![
        ("status", "ignored".into()),
        ("fingerprint", both[0].to_string()),
        ("fingerprint", both[1].to_string()),
        ("back", back.clone()),
    ];
    let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let p = web
        .post(&format!("/{path}/-/error_tracking/bulk"), &fields)
        .await;
    assert_page(&p, 303, "bulk ignore");
    assert_eq!(p.location(), Some(back.as_str()));
    assert!(fingerprints(&app, pid, "unresolved").await.is_empty());
    assert_eq!(fingerprints(&app, pid, "ignored").await.len(), 2);
    // A "back" that leaves the project is not followed.
    let p = web
        .post(
            &format!("/{path}/-/error_tracking/bulk"),
            &[("status", "unresolved"), ("back", "https://evil.example/")],
        )
        .await;
    assert_eq!(p.location(), Some(list(&path).as_str()));
}

#[tokio::test]
async fn the_list_searches_sorts_filters_and_pages() {
    let app = spawn_app().await;
    let (pid, key, _) = app.project_with_key("search").await;
    let path = "errors/search";
    for n in 0..30 {
        let mut e =
            ingest_support::error_event(&new_id(), &format!("Error{n}"), "v", &format!("f{n}"));
        e["environment"] = json!(if n % 2 == 0 { "production" } else { "staging" });
        e["tags"] = json!({"browser": if n == 7 { "Firefox" } else { "Chrome" }});
        assert_eq!(post_event(&app, pid, &key, &e).await.status, 200);
    }
    let web = app.web_member("rep", pid, Some(20)).await;
    let first = web.get(&list(path)).await;
    assert_page(&first, 200, "list");
    assert_eq!(first.body.matches("/details\"").count(), 25, "a page of 25");
    assert!(first
        .body
        .contains(r#"<option value="production">production</option>"#));
    // The next page is a cursor link that shows the remaining five.
    let at = first.body.find("Next page").expect("a next page");
    let href_start = first.body[..at].rfind("href=\"").expect("link") + 6;
    let href = first.body[href_start..at]
        .split('"')
        .next()
        .expect("href")
        .replace("&amp;", "&");
    let second = web.get(&href).await;
    assert_page(&second, 200, "second page");
    assert_eq!(second.body.matches("/details\"").count(), 5);
    assert!(!second.body.contains("Next page"));

    // The read API's search syntax, from the search box.
    let p = web
        .get(&format!("{}?query=browser%3AFirefox", list(path)))
        .await;
    assert_eq!(p.body.matches("/details\"").count(), 1);
    assert!(p.body.contains("Error7"));
    let p = web
        .get(&format!("{}?environment=staging", list(path)))
        .await;
    assert_eq!(p.body.matches("/details\"").count(), 15);
    assert!(p
        .body
        .contains(r#"<option value="staging" selected>staging</option>"#));
    let p = web.get(&format!("{}?query=Error12", list(path))).await;
    assert_eq!(p.body.matches("/details\"").count(), 1);
    let p = web
        .get(&format!("{}?query=is%3Aresolved", list(path)))
        .await;
    assert!(p.body.contains("No resolved errors"));
    let p = web
        .get(&format!("{}?sort=frequency_desc", list(path)))
        .await;
    assert!(p
        .body
        .contains(r#"<option value="frequency_desc" selected>"#));
    // What the read API refuses is said on the page, with the search kept in the box.
    let p = web.get(&format!("{}?query=has%3Auser", list(path))).await;
    assert_page(&p, 400, "an unsupported search key");
    assert!(p.body.contains("The search was not understood"));
    assert!(p.body.contains(r#"value="has:user""#));
}

/// Hostile text in every place an event's values reach a page.
#[tokio::test]
async fn hostile_event_values_render_inert() {
    let app = spawn_app().await;
    let (pid, key, _) = app.project_with_key("hostile").await;
    let path = "errors/hostile";
    let script = "<script>alert(1)</script>";
    let attr = "\"onmouseover=alert(1) x=\"";
    let js = "javascript:alert(1)";
    let event = json!({
        "event_id": new_id(),
        "platform": "python",
        "level": "error",
        "message": format!("{script} {attr}"),
        "environment": attr,
        "release": script,
        "tags": {"browser": attr, "url": js, "evil": script},
        "user": {"id": script, "email": js},
        "request": {"url": js, "method": "GET", "headers": {"Referer": js}},
        "breadcrumbs": {"values": [{"message": script, "category": attr, "timestamp": 1.7e9}]},
        "contexts": {"os": {"name": script}},
        "sdk": {"name": script, "version": attr},
        "exception": {"values": [{
            "type": format!("Bad{script}"),
            "value": format!("{attr} {js}"),
            "stacktrace": {"frames": [{
                "filename": js, "function": script, "module": attr, "lineno": 3, "in_app": true,
                "pre_context": [script], "context_line": attr, "post_context": [js],
                "vars": {"payload": script, "next": js, script: attr}
            }]}
        }]}
    });
    assert_eq!(post_event(&app, pid, &key, &event).await.status, 200);
    let fp = fingerprints(&app, pid, "unresolved").await[0];
    let web = app.root_web().await;
    let pages = [
        list(path),
        details(path, fp),
        format!("{}?query=browser%3A%22%5C%22onmouseover%22", list(path)),
        "/".to_owned(),
    ];
    for page in &pages {
        let p = web.get(page).await;
        assert!(p.status == 200 || p.status == 400, "{page}: {}", p.status);
        let body = &p.body;
        assert!(!body.contains("<script>alert"), "{page}: raw script tag");
        assert!(
            !body.contains("\"onmouseover"),
            "{page}: attribute breakout"
        );
        assert!(
            !body.contains("href=\"javascript:"),
            "{page}: javascript: link"
        );
        assert!(
            !body.contains("src=\"javascript:"),
            "{page}: javascript: source"
        );
        // Only our own script tag.
        assert_eq!(body.matches("<script").count(), 1, "{page}");
    }
    let p = web.get(&details(path, fp)).await;
    // The values are there, as text.
    for shown in [
        "&lt;script&gt;alert(1)&lt;/script&gt;",
        "&quot;onmouseover=alert(1) x=&quot;",
        "javascript:alert(1)",
    ] {
        assert!(p.body.contains(shown), "{shown} shown as text");
    }
    // The raw download is JSON, an attachment, and sandboxed.
    let row = common::Db::of(&app)
        .await
        .int("SELECT id FROM events LIMIT 1")
        .await;
    let raw = web
        .get(&format!("/{path}/-/error_tracking/{fp}/events/{row}.json"))
        .await;
    assert_page(&raw, 200, "raw JSON");
    assert_eq!(raw.header("content-type"), Some("application/json"));
    assert!(raw
        .header("content-disposition")
        .expect("disposition")
        .starts_with("attachment"));
    assert!(raw
        .header("content-security-policy")
        .expect("csp")
        .contains("sandbox"));
    let v: Value = serde_json::from_str(&raw.body).expect("JSON");
    assert_eq!(v["message"], event["message"]);
}

#[tokio::test]
async fn unknown_projects_errors_and_events_get_the_404_page() {
    let app = spawn_app().await;
    let (_, path, _, fp) = project_with_error(&app, "known").await;
    let web = app.root_web().await;
    for page in [
        "/nobody/nothing/-/error_tracking".to_owned(),
        "/nobody/nothing/-/settings/error_tracking".to_owned(),
        details(&path, 12345),
        format!("{}?event=999999", details(&path, fp)),
        format!("/{path}/-/error_tracking/{fp}/events/999999.json"),
        format!("/{path}/-/no_such_page"),
        "/just/a/path".to_owned(),
    ] {
        let p = web.get(&page).await;
        assert_page(&p, 404, &page);
        assert!(p.body.contains("Page not found"), "{page}");
        assert_eq!(p.header("content-type"), Some("text/html; charset=utf-8"));
    }
    // API clients keep GitLab's JSON 404.
    common::check(
        &app,
        "GET",
        "/api/v4/no_such_route",
        common::Auth::None,
        common::Body::None,
        404,
        &json!({"message": "404 Not Found"}),
    )
    .await;
}

#[tokio::test]
async fn a_key_deleted_in_the_ui_is_refused_on_the_next_event() {
    let app = spawn_app().await;
    let (pid, path, old_key, _) = project_with_error(&app, "keys").await;
    let web = app.web_member("maint", pid, Some(40)).await;
    let p = web
        .post(&format!("{}/client_keys", settings(&path)), &[])
        .await;
    assert_page(&p, 303, "create key");
    let keys = app.keys(pid).await;
    assert_eq!(keys.len(), 2);
    let new = keys
        .iter()
        .find(|k| k["public_key"] != old_key)
        .expect("new key");
    let new_key = new["public_key"].as_str().expect("key").to_owned();
    // The settings page shows its DSN with a copy button, and the SDK snippets use a DSN.
    let page = web.get(&settings(&path)).await;
    assert!(page.body.contains(new["sentry_dsn"].as_str().expect("dsn")));
    assert!(page.body.contains(r#"class="copy""#));
    for sdk in [
        "Python",
        "JavaScript",
        "Go",
        "Rust",
        "Java",
        "Ruby",
        "PHP",
        ".NET",
    ] {
        assert!(
            page.body.contains(&format!("<summary>{sdk}</summary>")),
            "{sdk} snippet"
        );
    }
    // The new key is accepted at once, and refused at once after its deletion in the UI.
    let event = ingest_support::message_event(&new_id(), "with the new key");
    assert_eq!(post_event(&app, pid, &new_key, &event).await.status, 200);
    let id = new["id"].as_i64().expect("id");
    let p = web
        .post(&format!("{}/client_keys/{id}/delete", settings(&path)), &[])
        .await;
    assert_page(&p, 303, "delete key");
    let event = ingest_support::message_event(&new_id(), "after deletion");
    let r = post_event(&app, pid, &new_key, &event).await;
    assert_eq!(r.status, 403, "{:?}", r.body);
    // Switching tracking off in the UI stops ingestion too.
    let p = web.post(&settings(&path), &[("integrated", "1")]).await;
    assert_page(&p, 303, "switch off");
    let event = ingest_support::message_event(&new_id(), "tracking off");
    assert_eq!(post_event(&app, pid, &old_key, &event).await.status, 403);
}

#[tokio::test]
async fn the_detail_page_navigates_between_events() {
    let app = spawn_app().await;
    let (pid, path, key, fp) = project_with_error(&app, "nav").await;
    for n in 0..2 {
        let e = ingest_support::error_event(
            &new_id(),
            "ValueError",
            &format!("bad value {n}"),
            "checkout",
        );
        assert_eq!(post_event(&app, pid, &key, &e).await.status, 200);
    }
    let rows: Vec<i64> = common::Db::of(&app)
        .await
        .rows("SELECT id FROM events ORDER BY occurred_at, id")
        .await
        .iter()
        .map(|r| r[0].int())
        .collect();
    assert_eq!(rows.len(), 3);
    let web = app.web_member("r", pid, Some(20)).await;
    let here = details(&path, fp);
    let latest = web.get(&here).await;
    assert_page(&latest, 200, "details");
    // The latest event by default: older and first links, no newer one.
    assert!(
        latest
            .body
            .contains(&format!("?event={}\">‹ Older", rows[1])),
        "{}",
        latest.body
    );
    assert!(latest
        .body
        .contains(&format!("?event={}\">« First", rows[0])));
    assert!(latest.body.contains("aria-disabled=\"true\">Newer"));
    let middle = web.get(&format!("{here}?event={}", rows[1])).await;
    assert!(middle
        .body
        .contains(&format!("?event={}\">‹ Older", rows[0])));
    assert!(middle
        .body
        .contains(&format!("?event={}\">Newer ›", rows[2])));
    assert!(middle
        .body
        .contains(&format!("?event={}\">Latest »", rows[2])));
    // Every event is listed, with counts and the charts.
    for r in &rows {
        assert!(
            latest.body.contains(&format!("?event={r}\"")),
            "event {r} listed"
        );
    }
    assert!(latest.body.contains("Events, last 24 hours"));
    assert!(latest.body.contains("Events, last 30 days"));
    assert!(latest.body.contains("<svg"));
    assert!(web.get(&format!("{here}?event=x")).await.status == 400);
}

#[derive(Debug)]
struct CheckoutFailed(u32);
impl std::fmt::Display for CheckoutFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "checkout {} failed", self.0)
    }
}
impl std::error::Error for CheckoutFailed {}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_render_what_the_sentry_crate_sends() {
    let app = spawn_app().await;
    let (pid, _, dsn) = app.project_with_key("rust").await;
    tokio::task::spawn_blocking(move || {
        let (hub, client) = sdk(&dsn);
        hub.configure_scope(|s| {
            s.set_tag("server_name", "web-1");
            s.set_user(Some(sentry::User {
                email: Some("alice@example.com".into()),
                ..Default::default()
            }));
        });
        hub.add_breadcrumb(sentry::Breadcrumb {
            message: Some("opened the cart".into()),
            category: Some("ui".into()),
            ..Default::default()
        });
        hub.capture_error(&CheckoutFailed(41));
        hub.capture_message("cache is cold", sentry::Level::Warning);
        assert!(client.flush(Some(Duration::from_secs(10))), "SDK flushed");
    })
    .await
    .expect("sdk thread");
    let web = app.web_member("rep", pid, Some(20)).await;
    let path = "errors/rust";
    let page = web.get(&list(path)).await;
    assert_page(&page, 200, "list");
    assert!(page.body.contains("checkout 41 failed"), "{}", page.body);
    for fp in fingerprints(&app, pid, "unresolved").await {
        let p = web.get(&details(path, fp)).await;
        assert_page(&p, 200, "details");
        for part in [
            "Breadcrumbs",
            "opened the cart",
            "alice@example.com",
            "SDK",
            "sentry.rust",
            "Raw JSON",
            "app@1.2.3",
        ] {
            assert!(p.body.contains(part), "{part} on the page of {fp}");
        }
    }
    let messages = web.get(&format!("/{path}/-/error_tracking/messages")).await;
    assert!(messages.body.contains("cache is cold"));
    // Tag values and their counts.
    let fp = fingerprints(&app, pid, "unresolved").await[0];
    let p = web.get(&details(path, fp)).await;
    assert!(p.body.contains("<h4>environment</h4>") && p.body.contains("<h4>server_name</h4>"));
}

/// Every SDK fixture the ingestion tests know (recorded from real SDKs), replayed, renders.
#[tokio::test]
async fn pages_render_every_recorded_sdk_fixture() {
    let app = spawn_app().await;
    let (pid, key, _) = app.project_with_key("fixtures").await;
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sdk");
    let auth = sentry_auth(&key);
    let mut sent = 0;
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .expect("fixtures")
        .map(|e| e.expect("entry").path())
        .collect();
    names.sort();
    for file in names {
        let route = match file.extension().and_then(|e| e.to_str()) {
            Some("envelope") => "envelope",
            Some("store") => "store",
            _ => continue,
        };
        let body = std::fs::read(&file).expect("fixture");
        let r = send(
            &app,
            "POST",
            &format!("/api/{pid}/{route}/"),
            &[("x-sentry-auth", &auth)],
            body,
        )
        .await;
        assert_eq!(r.status, 200, "{}: {:?}", file.display(), r.body);
        sent += 1;
    }
    assert!(sent >= 10, "{sent} fixtures");
    let web = app.root_web().await;
    let path = "errors/fixtures";
    assert_page(&web.get(&list(path)).await, 200, "list");
    assert_page(
        &web.get(&format!("/{path}/-/error_tracking/messages")).await,
        200,
        "messages",
    );
    let fps = fingerprints(&app, pid, "unresolved").await;
    assert!(fps.len() >= 4, "{fps:?}");
    for fp in fps {
        let p = web.get(&details(path, fp)).await;
        assert_page(&p, 200, &format!("details of {fp}"));
        assert!(p.body.contains("Raw JSON"), "an event is shown for {fp}");
    }
}

/// `faultline admin set-password`, beside the running server: from standard input, or
/// generated and printed once; either way the old password and the user's sessions end.
#[tokio::test]
async fn admin_set_password_sets_the_web_password() {
    use std::io::Write as _;
    use std::process::{Command, Stdio};
    let app = spawn_app().await;
    let old = app.server.initial_admin_password.clone().expect("password");
    let session = app.root_web().await;
    let database = common::database_env(app.dir.path()).await;
    let admin = |args: &[&str]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_faultline"));
        cmd.arg("--data-dir")
            .arg(app.dir.path())
            .arg("admin")
            .args(args)
            .envs(database.clone())
            .env_remove("FAULTLINE_DATA_DIR")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
    };
    let mut child = admin(&["set-password", "--username", "root", "--stdin"])
        .spawn()
        .expect("admin runs");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"a new long password\n")
        .expect("write");
    let out = child.wait_with_output().expect("admin ends");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(printed, json!({"username": "root", "password_set": true}));
    assert_page(&session.get("/").await, 303, "the old session");
    let mut web = Web::new(&app.base);
    assert_page(
        &web.try_sign_in("root", &old).await,
        401,
        "the old password",
    );
    Web::sign_in(&app.base, "root", "a new long password").await;

    // Generated: printed once, and it works.
    let out = admin(&["set-password", "--username", "root"])
        .output()
        .expect("admin runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let generated = printed["password"].as_str().expect("password");
    assert!(generated.len() >= 20, "{generated}");
    Web::sign_in(&app.base, "root", generated).await;

    // Too short, and an unknown user, are refused with a message.
    let mut child = admin(&["set-password", "--username", "root", "--stdin"])
        .spawn()
        .expect("admin runs");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"short\n")
        .expect("write");
    let out = child.wait_with_output().expect("admin ends");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("at least 8 characters"));
    let out = admin(&["set-password", "--username", "nobody"])
        .output()
        .expect("admin runs");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no such user"));
}

#[tokio::test]
async fn the_detail_page_counts_tag_values() {
    let app = spawn_app().await;
    let (pid, key, _) = app.project_with_key("tags").await;
    for (browser, env) in [
        ("Chrome", "production"),
        ("Chrome", "production"),
        ("Firefox", "staging"),
    ] {
        let mut e = ingest_support::error_event(&new_id(), "ValueError", "bad", "checkout");
        e["tags"] = json!({"browser": browser, "os": "Linux"});
        e["environment"] = json!(env);
        e["server_name"] = json!("web-1");
        assert_eq!(post_event(&app, pid, &key, &e).await.status, 200);
    }
    let fp = fingerprints(&app, pid, "unresolved").await[0];
    let web = app.web_member("r", pid, Some(20)).await;
    let p = web.get(&details("errors/tags", fp)).await;
    assert_page(&p, 200, "details");
    let tags = &p.body[p.body.find("<h2>Tags</h2>").expect("tags")..];
    let tags = &tags[..tags.find("</section>").expect("end")];
    for (key, value, n) in [
        ("environment", "production", 2),
        ("environment", "staging", 1),
        ("browser", "Chrome", 2),
        ("browser", "Firefox", 1),
        ("os", "Linux", 3),
        ("server_name", "web-1", 3),
    ] {
        let block = &tags[tags.find(&format!("<h4>{key}</h4>")).expect(key)..];
        let row = format!(r#"<span class="v">{value}</span><span class="n">{n}</span>"#);
        assert!(block.contains(&row), "{key}={value} x{n} in {tags}");
    }
    // Browser, os and server_name come first among the SDK's tags.
    let order: Vec<usize> = ["<h4>browser", "<h4>os", "<h4>server_name"]
        .iter()
        .map(|h| tags.find(h).expect("key"))
        .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{order:?}");
}

/// The settings page's alert forms, under `/alert_rules`.
fn alert_rules(path: &str) -> String {
    format!("{}/alert_rules", settings(path))
}

/// The project's alert rules as the REST API lists them.
async fn api_rules(app: &TestApp, project_id: i64) -> Vec<Value> {
    let (s, body) = app
        .call(
            "GET",
            &format!("/api/v4/projects/{project_id}/error_tracking/alert_rules"),
            Some(&app.admin_token),
            None,
        )
        .await;
    assert_eq!(s, 200, "{body}");
    body.as_array().expect("array").clone()
}

/// A server whose alerts may reach loopback receivers, and no other internal address, so the
/// same test sees a channel accepted and a private address refused.
async fn alert_ui_app() -> TestApp {
    spawn_app_with(|c| {
        c.alerts.allowed_internal_networks = vec!["127.0.0.0/8".into()];
        c.alerts.retry_base_ms = 50;
        c.alerts.poll_interval_ms = 50;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_maintainer_manages_alert_rules_on_the_settings_page() {
    let app = alert_ui_app().await;
    let recv = common::receiver::Receiver::start().await;
    let pid = app.project_id("shop", "errors").await;
    let path = "errors/shop";
    let web = app.web_member("maint", pid, Some(40)).await;
    assert!(web
        .get(&settings(path))
        .await
        .body
        .contains("No alert rules yet"));

    // A rule with every kind of trigger and both filters, through the form.
    let p = web
        .post(
            &alert_rules(path),
            &[
                ("name", "Checkout <prod>"),
                ("new_error", "1"),
                ("frequency_count", "50"),
                ("frequency_minutes", "10"),
                ("quiet_minutes", "60"),
                ("environments", "production, staging"),
                ("levels[]", "fatal"),
                ("levels[]", "error"),
                ("max_per_hour", "5"),
            ],
        )
        .await;
    assert_page(&p, 303, "create rule");
    assert!(p
        .location()
        .expect("location")
        .contains("done=rule_created"));
    let rules = api_rules(&app, pid).await;
    assert_eq!(rules.len(), 1);
    let rule = &rules[0];
    assert_eq!(rule["name"], "Checkout <prod>");
    assert_eq!(
        (&rule["new_error"], &rule["regression"]),
        (&json!(true), &json!(false))
    );
    assert_eq!(
        rule["frequency"],
        json!({"count": 50, "minutes": 10, "quiet_minutes": 60})
    );
    assert_eq!(rule["environments"], json!(["production", "staging"]));
    assert_eq!(rule["levels"], json!(["fatal", "error"]));
    assert_eq!(rule["max_per_hour"], 5);
    let rid = rule["id"].as_i64().expect("id");
    let channels = format!("{}/{rid}/channels", alert_rules(path));

    // A refused rule comes back filled in, with the API's reason in words.
    let p = web
        .post(
            &alert_rules(path),
            &[("name", "no trigger"), ("environments", "qa")],
        )
        .await;
    assert_page(&p, 400, "a rule without a trigger");
    assert!(
        p.body.contains(
            "A rule needs at least one trigger: new error, regression or frequency count."
        ),
        "{}",
        p.body
    );
    assert!(p.body.contains(r#"value="no trigger""#), "the name is kept");
    assert!(p.body.contains(r#"value="qa""#), "the environment is kept");
    let p = web
        .post(
            &alert_rules(path),
            &[("name", "half"), ("frequency_count", "5")],
        )
        .await;
    assert_page(&p, 400, "a frequency without its window");
    assert!(
        p.body.contains("Frequency minutes is missing."),
        "{}",
        p.body
    );
    assert_eq!(api_rules(&app, pid).await.len(), 1, "nothing was created");

    // Bad and internal URLs are refused as the API refuses them.
    for (target, reason) in [
        ("not a url", "URL is invalid."),
        (
            "http://10.0.0.1/hook",
            "URL is blocked: requests to the local network are not allowed.",
        ),
        (
            "ftp://example.com/hook",
            "URL is blocked: only http and https URLs are allowed.",
        ),
    ] {
        let p = web
            .post(&channels, &[("type", "slack"), ("target", target)])
            .await;
        assert_page(&p, 400, target);
        assert!(p.body.contains(reason), "{target}: {}", p.body);
        assert!(
            p.body.contains(&format!(r#"value="{target}""#)),
            "the target is kept"
        );
    }
    let p = web
        .post(
            &channels,
            &[("type", "email"), ("target", "oncall@example.com")],
        )
        .await;
    assert_page(&p, 400, "email without a mail server");
    assert!(p.body.contains("Email needs a mail server"), "{}", p.body);

    // Channels of each kind the server can send to: a Slack-compatible hook is added and the
    // page shows its host only; a generic webhook's secret is shown once, in the answer.
    let slack_url = recv.url("/services/T00/B00/slack-token-xyz");
    let p = web
        .post(&channels, &[("type", "slack"), ("target", &slack_url)])
        .await;
    assert_page(&p, 303, "add slack");
    for kind in ["discord", "teams"] {
        let url = recv.url(&format!("/{kind}/path-secret-{kind}"));
        let p = web
            .post(&channels, &[("type", kind), ("target", &url)])
            .await;
        assert_page(&p, 303, kind);
    }
    let hook_url = recv.url("/hook/hook-path-secret");
    let p = web
        .post(&channels, &[("type", "webhook"), ("target", &hook_url)])
        .await;
    assert_page(&p, 200, "add webhook");
    let at = p.body.find("whsec_").expect("the secret is shown once");
    let secret: String = p.body[at..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    assert_eq!(secret.len(), "whsec_".len() + 64, "{secret}");
    assert!(p.body.contains("shown only this once"));

    let page = web.get(&settings(path)).await;
    assert_page(&page, 200, "settings with channels");
    for hidden in [
        secret.as_str(),
        "slack-token-xyz",
        "path-secret-discord",
        "path-secret-teams",
        "hook-path-secret",
        "whsec_",
    ] {
        assert!(!page.body.contains(hidden), "{hidden} on the page");
    }
    assert!(
        page.body.contains("http://127.0.0.1/…"),
        "the masked target"
    );
    assert!(page.body.contains("Checkout &lt;prod&gt;"), "escaped name");
    for shown in [
        "New error",
        "50 events in 10 min, then quiet 60 min",
        "environment: production, staging",
        "level: fatal, error",
        "up to 5 messages an hour per channel",
        ">Slack<",
        ">Discord<",
        ">Teams<",
        ">Webhook<",
        ">signed<",
    ] {
        assert!(page.body.contains(shown), "{shown}");
    }
    let rule = &api_rules(&app, pid).await[0];
    let chans = rule["channels"].as_array().expect("channels");
    assert_eq!(
        chans.iter().map(|c| c["type"].clone()).collect::<Vec<_>>(),
        [
            json!("slack"),
            json!("discord"),
            json!("teams"),
            json!("webhook")
        ]
    );
    assert_eq!(chans[3]["signed"], true);

    // "Send test": the receiver fails it, and the page shows the channel's last failure.
    let slack_id = chans[0]["id"].as_i64().expect("id");
    recv.fail_next(1);
    let p = web.post(&format!("{channels}/{slack_id}/test"), &[]).await;
    assert_page(&p, 303, "send a test");
    assert!(p.location().expect("location").contains("done=test_queued"));
    recv.wait_for("/services/T00/B00/slack-token-xyz", 1).await;
    common::eventually("the failure is recorded", || async {
        !api_rules(&app, pid).await[0]["channels"][0]["last_failure"].is_null()
    })
    .await;
    let page = web.get(&settings(path)).await;
    assert!(page.body.contains("HTTP 500"), "{}", page.body);
    assert!(page.body.contains("the receiver answered 500"));
    // Retried, it arrives: the failure stays as history beside the success.
    recv.wait_for("/services/T00/B00/slack-token-xyz", 2).await;
    common::eventually("the success is recorded", || async {
        api_rules(&app, pid).await[0]["channels"][0]["last_success_at"].is_string()
    })
    .await;
    assert!(web
        .get(&settings(path))
        .await
        .body
        .contains("badge recovered"));

    // Deleting a channel, then the rule.
    let p = web
        .post(&format!("{channels}/{slack_id}/delete"), &[])
        .await;
    assert_page(&p, 303, "delete channel");
    assert_eq!(
        api_rules(&app, pid).await[0]["channels"]
            .as_array()
            .expect("channels")
            .len(),
        3
    );
    let p = web
        .post(&format!("{channels}/{slack_id}/delete"), &[])
        .await;
    assert_page(&p, 404, "a deleted channel");
    let p = web
        .post(&format!("{}/{rid}/delete", alert_rules(path)), &[])
        .await;
    assert_page(&p, 303, "delete rule");
    assert!(api_rules(&app, pid).await.is_empty());
    assert!(web
        .get(&settings(path))
        .await
        .body
        .contains("No alert rules yet"));
}

#[tokio::test]
async fn alert_forms_keep_to_the_role_matrix_and_need_the_csrf_token() {
    let app = alert_ui_app().await;
    let pid = app.project_id("matrix", "errors").await;
    let path = "errors/matrix";
    let other = app.project_id("elsewhere", "other").await;
    let outsider = app.web_member("outsider", other, Some(50)).await;
    let guest = app.web_member("guest", pid, Some(10)).await;
    let reporter = app.web_member("reporter", pid, Some(20)).await;
    let developer = app.web_member("developer", pid, Some(30)).await;
    let maintainer = app.web_member("maintainer", pid, Some(40)).await;
    let root = app.root_web().await;

    // A rule and channel made over the API, for the forms that act on one.
    let api = format!("/api/v4/projects/{pid}/error_tracking/alert_rules");
    let (s, rule) = app
        .call(
            "POST",
            &api,
            Some(&app.admin_token),
            Some(json!({"name": "api rule", "new_error": true})),
        )
        .await;
    assert_eq!(s, 201, "{rule}");
    let rid = rule["id"].as_i64().expect("id");
    let (s, channel) = app
        .call(
            "POST",
            &format!("{api}/{rid}/channels"),
            Some(&app.admin_token),
            Some(json!({"type": "discord", "url": "http://127.0.0.1:9/discord/s3cr3t"})),
        )
        .await;
    assert_eq!(s, 201, "{channel}");
    let cid = channel["id"].as_i64().expect("id");
    let rule_path = format!("{}/{rid}", alert_rules(path));
    let forms: Vec<(String, Vec<(&str, &str)>)> = vec![
        (
            alert_rules(path),
            vec![("name", "ui rule"), ("regression", "1")],
        ),
        (
            format!("{rule_path}/channels"),
            vec![("type", "teams"), ("target", "http://127.0.0.1:9/teams")],
        ),
        (format!("{rule_path}/channels/{cid}/test"), vec![]),
        (format!("{rule_path}/channels/{cid}/delete"), vec![]),
        (format!("{rule_path}/delete"), vec![]),
    ];
    let db = common::Db::of(&app).await;
    let state = || async {
        (
            db.int("SELECT COUNT(*) FROM alert_rules").await,
            db.int("SELECT COUNT(*) FROM alert_channels").await,
            db.int("SELECT COUNT(*) FROM alert_outbox").await,
        )
    };
    let before = state().await;
    assert_eq!(before, (1, 1, 0));

    // Without the session's token nobody gets through, not even an administrator.
    for (form, fields) in &forms {
        let p = root.post_raw(form, fields).await;
        assert_page(&p, 403, &format!("{form} without a token"));
        assert!(p.body.contains("The form has expired"));
        let mut wrong = fields.clone();
        wrong.push(("csrf", "not-the-token"));
        assert_page(&root.post_raw(form, &wrong).await, 403, "a wrong token");
    }
    // Below Maintainer: 403; not a member: 404, as the REST API answers.
    for (web, status) in [
        (&outsider, 404),
        (&guest, 403),
        (&reporter, 403),
        (&developer, 403),
    ] {
        for (form, fields) in &forms {
            let p = web.post(form, fields).await;
            assert_page(&p, status, form);
        }
        // The page itself is closed to them too, so no form shows.
        assert_page(&web.get(&settings(path)).await, status, "settings");
    }
    assert_eq!(state().await, before, "no form changed anything");

    // A Maintainer's forms all go through, in order: create, add, test, delete, delete.
    for (form, fields) in &forms {
        let p = maintainer.post(form, fields).await;
        assert_page(&p, 303, form);
    }
    let rules = api_rules(&app, pid).await;
    assert_eq!(rules.len(), 1, "only the rule the form made is left");
    assert_eq!(rules[0]["name"], "ui rule");
    assert_eq!(rules[0]["regression"], true);
}
