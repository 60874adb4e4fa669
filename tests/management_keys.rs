//! Black-box tests of `GET|POST /api/v4/projects/:id/error_tracking/client_keys` and
//! `DELETE .../client_keys/:key_id`: the key shape and DSN, deletion, and GitLab's offset
//! pagination headers.

mod common;

use std::collections::BTreeMap;

use common::{spawn_app, spawn_app_with, Auth, Body, Resp, TestApp};
use serde_json::{json, Value};

fn keys_path(project_id: i64) -> String {
    format!("/api/v4/projects/{project_id}/error_tracking/client_keys")
}

/// Sends one request as the administrator and checks status and exact body.
async fn check(app: &TestApp, method: &str, path: &str, status: u16, expected: &Value) -> Resp {
    let r = app
        .send(method, path, Auth::Private(&app.admin_token), Body::None)
        .await;
    assert_eq!((r.status, &r.body), (status, expected), "{method} {path}");
    r
}

/// `glet_` followed by exactly 32 lowercase hex digits.
fn is_public_key(s: &str) -> bool {
    s.strip_prefix("glet_").is_some_and(|h| {
        h.len() == 32
            && h.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// Checks the exact shape of a key and returns its id and public key.
fn assert_key_shape(key: &Value, dsn_base: &str, project_id: i64) -> (i64, String) {
    let obj = key.as_object().expect("key object");
    let names: Vec<&str> = obj.keys().map(String::as_str).collect();
    assert_eq!(names, ["id", "active", "public_key", "sentry_dsn"], "{key}");
    let id = key["id"].as_i64().expect("integer id");
    let public_key = key["public_key"].as_str().expect("public_key").to_owned();
    assert!(is_public_key(&public_key), "{public_key}");
    let (scheme, host) = dsn_base.split_once("://").expect("scheme");
    assert_eq!(
        key,
        &json!({
            "id": id,
            "active": true,
            "public_key": public_key,
            "sentry_dsn": format!("{scheme}://{public_key}@{host}/errortracking/api/v1/projects/{project_id}"),
        })
    );
    (id, public_key)
}

#[tokio::test]
async fn create_list_and_delete_keys() {
    let app = spawn_app().await;
    let id = app.project_id("keys", "errors").await;
    let path = keys_path(id);
    // Key routes work without any settings row (GitLab does the same).
    check(&app, "GET", &path, 200, &json!([])).await;

    let a = app
        .send("POST", &path, Auth::Private(&app.admin_token), Body::None)
        .await;
    assert_eq!(a.status, 201, "{}", a.body);
    let (a_id, a_key) = assert_key_shape(&a.body, &app.base, id);
    // A POST with a JSON content type and no body, as in GitLab's curl example.
    let b = app
        .send(
            "POST",
            &path,
            Auth::Private(&app.admin_token),
            Body::Raw(Some("application/json"), vec![]),
        )
        .await;
    assert_eq!(b.status, 201, "{}", b.body);
    let (b_id, b_key) = assert_key_shape(&b.body, &app.base, id);
    assert!(b_id > a_id);
    assert_ne!(a_key, b_key);
    check(&app, "GET", &path, 200, &json!([a.body, b.body])).await;

    // Delete answers with the deleted key; the list no longer has it; a second delete is 404.
    check(&app, "DELETE", &format!("{path}/{a_id}"), 200, &a.body).await;
    check(&app, "GET", &path, 200, &json!([b.body])).await;
    let not_found = json!({"message": "404 Not found"});
    check(&app, "DELETE", &format!("{path}/{a_id}"), 404, &not_found).await;
    check(&app, "DELETE", &format!("{path}/999999"), 404, &not_found).await;
    check(
        &app,
        "DELETE",
        &format!("{path}/abc"),
        400,
        &json!({"error": "key_id is invalid"}),
    )
    .await;
    check(&app, "GET", &path, 200, &json!([b.body])).await;
}

#[tokio::test]
async fn a_key_of_another_project_is_not_found() {
    let app = spawn_app().await;
    let mine = app.project_id("mine", "errors").await;
    let theirs = app.project_id("theirs", "errors").await;
    let their_key = app.create_key(theirs).await;
    let their_id = their_key["id"].as_i64().expect("id");
    // Also as a Maintainer of both projects, not only as administrator.
    let user = app.member("both", mine, Some(40)).await;
    app.add_member(theirs, user.id, 40).await;
    for token in [app.admin_token.as_str(), user.token.as_str()] {
        let r = app
            .send(
                "DELETE",
                &format!("{}/{their_id}", keys_path(mine)),
                Auth::Private(token),
                Body::None,
            )
            .await;
        assert_eq!(
            (r.status, r.body),
            (404, json!({"message": "404 Not found"}))
        );
    }
    assert_eq!(app.keys(theirs).await, vec![their_key]);
}

#[tokio::test]
async fn dsn_uses_the_configured_external_url_without_default_port() {
    let app = spawn_app_with(|c| c.external_url = Some("https://errors.example.com".into())).await;
    let id = app.project_id("dsn", "errors").await;
    let key = app.create_key(id).await;
    let (_, public_key) = assert_key_shape(&key, "https://errors.example.com", id);
    assert_eq!(
        key["sentry_dsn"],
        json!(format!(
            "https://{public_key}@errors.example.com/errortracking/api/v1/projects/{id}"
        ))
    );
    // The same DSN in the list.
    assert_eq!(app.keys(id).await, vec![key]);
}

#[tokio::test]
async fn dsn_defaults_to_the_bound_address() {
    let app = spawn_app().await;
    let id = app.project_id("bound", "errors").await;
    let key = app.create_key(id).await;
    let port = app.server.addr.port();
    let public_key = key["public_key"].as_str().expect("key");
    assert_eq!(
        key["sentry_dsn"],
        json!(format!(
            "http://{public_key}@127.0.0.1:{port}/errortracking/api/v1/projects/{id}"
        ))
    );
}

/// The `Link` header as rel -> URL.
fn links(r: &Resp) -> BTreeMap<String, String> {
    let raw = r.header("link").expect("Link header");
    raw.split(", ")
        .map(|part| {
            let (url, rel) = part.split_once(">; rel=\"").expect("link part");
            let url = url.strip_prefix('<').expect("<");
            let rel = rel.strip_suffix('"').expect("closing quote");
            (rel.to_owned(), url.to_owned())
        })
        .collect()
}

fn pagination_headers(r: &Resp) -> [(&'static str, String); 6] {
    let h = |n: &str| {
        r.header(n)
            .unwrap_or_else(|| panic!("{n} header"))
            .to_owned()
    };
    [
        ("x-total", h("x-total")),
        ("x-total-pages", h("x-total-pages")),
        ("x-page", h("x-page")),
        ("x-per-page", h("x-per-page")),
        ("x-next-page", h("x-next-page")),
        ("x-prev-page", h("x-prev-page")),
    ]
}

#[tokio::test]
async fn keys_are_paginated_with_gitlab_headers() {
    let app = spawn_app().await;
    let id = app.project_id("paged", "errors").await;
    let mut created = Vec::new();
    for _ in 0..7 {
        created.push(app.create_key(id).await);
    }
    let path = keys_path(id);
    let link = |page: u64| format!("{}{path}?page={page}&per_page=3", app.base);

    // (page, items, X-Next-Page, X-Prev-Page, the rels that must be present)
    type Case = (
        u64,
        std::ops::Range<usize>,
        &'static str,
        &'static str,
        &'static [&'static str],
    );
    let cases: &[Case] = &[
        (1, 0..3, "2", "", &["first", "last", "next"]),
        (2, 3..6, "3", "1", &["first", "last", "next", "prev"]),
        (3, 6..7, "", "2", &["first", "last", "prev"]),
    ];
    let mut seen = Vec::new();
    for (page, range, next, prev, rels) in cases {
        let r = check(
            &app,
            "GET",
            &format!("{path}?page={page}&per_page=3"),
            200,
            &json!(created[range.clone()]),
        )
        .await;
        assert_eq!(
            pagination_headers(&r),
            [
                ("x-total", "7".to_owned()),
                ("x-total-pages", "3".to_owned()),
                ("x-page", page.to_string()),
                ("x-per-page", "3".to_owned()),
                ("x-next-page", next.to_string()),
                ("x-prev-page", prev.to_string()),
            ],
            "page {page}"
        );
        let mut expected = BTreeMap::new();
        for rel in *rels {
            let target = match *rel {
                "first" => 1,
                "last" => 3,
                "next" => page + 1,
                "prev" => page - 1,
                _ => unreachable!(),
            };
            expected.insert(rel.to_string(), link(target));
        }
        assert_eq!(links(&r), expected, "page {page}");
        seen.extend(r.body.as_array().expect("array").iter().cloned());
    }
    // Every key exactly once, in id order.
    assert_eq!(seen, created);
    // Past the last page: empty, with neither next nor previous page (as Kaminari answers).
    let r = check(
        &app,
        "GET",
        &format!("{path}?page=5&per_page=3"),
        200,
        &json!([]),
    )
    .await;
    assert_eq!(
        pagination_headers(&r),
        [
            ("x-total", "7".to_owned()),
            ("x-total-pages", "3".to_owned()),
            ("x-page", "5".to_owned()),
            ("x-per-page", "3".to_owned()),
            ("x-next-page", String::new()),
            ("x-prev-page", String::new()),
        ]
    );
    assert_eq!(
        links(&r),
        BTreeMap::from([("first".to_owned(), link(1)), ("last".to_owned(), link(3))])
    );
    let ids: Vec<i64> = seen.iter().map(|k| k["id"].as_i64().expect("id")).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
}

#[tokio::test]
async fn pagination_defaults_caps_and_keeps_the_token_out_of_links() {
    let app = spawn_app().await;
    let id = app.project_id("caps", "errors").await;
    let mut created = Vec::new();
    for _ in 0..3 {
        created.push(app.create_key(id).await);
    }
    let path = keys_path(id);
    let one_page = |per_page: &str| {
        [
            ("x-total", "3".to_owned()),
            ("x-total-pages", "1".to_owned()),
            ("x-page", "1".to_owned()),
            ("x-per-page", per_page.to_owned()),
            ("x-next-page", String::new()),
            ("x-prev-page", String::new()),
        ]
    };
    // Defaults: page 1, 20 per page.
    let r = check(&app, "GET", &path, 200, &json!(created)).await;
    assert_eq!(pagination_headers(&r), one_page("20"));
    let first = format!("{}{path}?page=1&per_page=20", app.base);
    assert_eq!(
        links(&r),
        BTreeMap::from([
            ("first".to_owned(), first.clone()),
            ("last".to_owned(), first)
        ])
    );
    // per_page above 100 is capped at 100.
    let r = check(
        &app,
        "GET",
        &format!("{path}?per_page=500"),
        200,
        &json!(created),
    )
    .await;
    assert_eq!(pagination_headers(&r), one_page("100"));
    // A token in the query string never ends up in the links.
    let r = app
        .send(
            "GET",
            &format!("{path}?per_page=2"),
            Auth::Query(&app.admin_token),
            Body::None,
        )
        .await;
    assert_eq!((r.status, &r.body), (200, &json!(created[0..2])));
    let raw = r.header("link").expect("link");
    assert!(
        !raw.contains(&app.admin_token) && !raw.contains("private_token"),
        "{raw}"
    );
    assert_eq!(
        links(&r).get("next"),
        Some(&format!("{}{path}?page=2&per_page=2", app.base))
    );
    // No keys at all: still one (empty) page.
    let empty = app.project_id("empty", "errors").await;
    let r = check(&app, "GET", &keys_path(empty), 200, &json!([])).await;
    assert_eq!(
        pagination_headers(&r),
        [
            ("x-total", "0".to_owned()),
            ("x-total-pages", "1".to_owned()),
            ("x-page", "1".to_owned()),
            ("x-per-page", "20".to_owned()),
            ("x-next-page", String::new()),
            ("x-prev-page", String::new()),
        ]
    );
}

/// GitLab never hands out an id twice. If a deleted key's id came back, a retried
/// `DELETE .../client_keys/:key_id` (a script re-run after a timeout) would delete the new key.
#[tokio::test]
async fn deleted_key_ids_are_not_reused() {
    let app = spawn_app().await;
    let id = app.project_id("reuse", "errors").await;
    let path = keys_path(id);
    let first = app.create_key(id).await;
    let last = app.create_key(id).await;
    check(
        &app,
        "DELETE",
        &format!("{path}/{}", last["id"]),
        200,
        &last,
    )
    .await;
    let next = app.create_key(id).await;
    assert!(
        next["id"].as_i64() > last["id"].as_i64(),
        "new key {next} reuses the id of deleted key {last}"
    );
    check(
        &app,
        "DELETE",
        &format!("{path}/{}", last["id"]),
        404,
        &json!({"message": "404 Not found"}),
    )
    .await;
    assert_eq!(app.keys(id).await, vec![first, next]);
}

/// Sends one event with `key` to `project_id` the way an SDK derives the endpoint from the
/// DSN, and returns status and body.
async fn send_event(app: &TestApp, project_id: i64, key: &str) -> (u16, Value) {
    let r = app
        .client
        .post(app.url(&format!(
            "/errortracking/api/v1/projects/api/{project_id}/store/"
        )))
        .header(
            "X-Sentry-Auth",
            format!("Sentry sentry_key={key}, sentry_version=7, sentry_client=test/1.0"),
        )
        .header("Content-Type", "application/json")
        .body(r#"{"message":"hello","level":"error","platform":"other"}"#)
        .send()
        .await
        .expect("send");
    let status = r.status().as_u16();
    (status, r.json().await.expect("json body"))
}

fn accepted(r: &(u16, Value)) -> bool {
    r.0 == 200
        && r.1.as_object().is_some_and(|o| o.len() == 1)
        && r.1["id"]
            .as_str()
            .is_some_and(|id| id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Every management change is seen by ingestion before the management answer is sent.
#[tokio::test]
async fn management_changes_reach_ingestion_at_once() {
    let app = spawn_app().await;
    let (id, first, _) = app.project_with_key("live").await;
    let settings = format!("/api/v4/projects/{id}/error_tracking/settings");
    let admin = Auth::Private(&app.admin_token);
    let not_enabled = json!({"detail": "error tracking is not enabled for this project"});
    let disabled = json!({"detail": "public key is disabled"});

    let r = send_event(&app, id, &first).await;
    assert!(accepted(&r), "{r:?}");
    // Switching the setting off and on.
    for (query, ok) in [
        ("active=false", false),
        ("active=true", true),
        ("active=true&integrated=false", false),
        ("active=true&integrated=true", true),
    ] {
        let s = app
            .send("PATCH", &format!("{settings}?{query}"), admin, Body::None)
            .await;
        assert_eq!(s.status, 200);
        let r = send_event(&app, id, &first).await;
        if ok {
            assert!(accepted(&r), "{query}: {r:?}");
        } else {
            assert_eq!(r, (403, not_enabled.clone()), "{query}");
        }
    }
    // A new key works at once; a deleted one is refused at once; the others keep working.
    let second = app.create_key(id).await;
    let second_key = second["public_key"].as_str().expect("key").to_owned();
    let r = send_event(&app, id, &second_key).await;
    assert!(accepted(&r), "{r:?}");
    let first_id = app.keys(id).await[0]["id"].clone();
    let del = app
        .send(
            "DELETE",
            &format!("{}/{first_id}", keys_path(id)),
            admin,
            Body::None,
        )
        .await;
    assert_eq!(del.status, 200);
    assert_eq!(send_event(&app, id, &first).await, (403, disabled.clone()));
    let r = send_event(&app, id, &second_key).await;
    assert!(accepted(&r), "{r:?}");
    // A key is only good for its own project.
    let (other, other_key, _) = app.project_with_key("elsewhere").await;
    let r = send_event(&app, other, &other_key).await;
    assert!(accepted(&r), "{r:?}");
    assert_eq!(
        send_event(&app, other, &second_key).await,
        (
            403,
            json!({"detail": "public key does not belong to this project"})
        )
    );
}

/// Deleting a project deletes its keys, and docs/protocol.md ("Ingestion") answers a deleted key with 403 (as
/// a single key's DELETE already does), not with the 401 of a key that was never issued.
#[tokio::test]
async fn deleting_a_project_refuses_its_keys_like_deleted_keys() {
    let app = spawn_app().await;
    let (id, key, _) = app.project_with_key("doomed").await;
    let (other, other_key, _) = app.project_with_key("survivor").await;
    let r = send_event(&app, id, &key).await;
    assert!(accepted(&r), "{r:?}");
    let del = app
        .send(
            "DELETE",
            &format!("/api/v4/projects/{id}"),
            Auth::Private(&app.admin_token),
            Body::None,
        )
        .await;
    assert_eq!(
        (del.status, del.body),
        (202, json!({"message": "202 Accepted"}))
    );
    assert_eq!(
        send_event(&app, id, &key).await,
        (403, json!({"detail": "public key is disabled"}))
    );
    let r = send_event(&app, other, &other_key).await;
    assert!(accepted(&r), "{r:?}");
}
