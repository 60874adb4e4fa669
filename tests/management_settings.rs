//! Black-box tests of `GET|PUT|PATCH /api/v4/projects/:id/error_tracking/settings`: the error
//! table of docs/protocol.md ("Management API"), the three parameter styles, GitLab's boolean
//! words, and what PUT and PATCH do to the setting and to the project's client keys.

mod common;

use common::{setting, spawn_app, unauthorized, Auth, Body, TestApp};
use serde_json::{json, Value};

/// Sends one request as the administrator and checks status and exact body.
async fn check(app: &TestApp, method: &str, path: &str, body: Body, status: u16, expected: Value) {
    let r = app
        .send(method, path, Auth::Private(&app.admin_token), body.clone())
        .await;
    assert_eq!(
        (r.status, &r.body),
        (status, &expected),
        "{method} {path} {body:?}"
    );
}

fn bad(message: &str) -> Value {
    json!({ "error": message })
}

const SETTING_NOT_FOUND: &str = "404 Error Tracking Setting Not Found";

async fn project(app: &TestApp, name: &str) -> (i64, String) {
    let id = app.project_id(name, "errors").await;
    (id, format!("/api/v4/projects/{id}/error_tracking/settings"))
}

/// Switches the setting at `path` on and integrated with `method` (`PUT` or `PATCH`) and checks
/// the answer.
async fn switch_on(app: &TestApp, method: &str, path: &str) {
    let path = format!("{path}?active=true&integrated=true");
    check(app, method, &path, Body::None, 200, setting(true, true)).await;
}

#[tokio::test]
async fn get_and_patch_before_any_put_are_setting_not_found() {
    let app = spawn_app().await;
    let (_, path) = project(&app, "fresh").await;
    let not_found = json!({ "message": SETTING_NOT_FOUND });
    check(&app, "GET", &path, Body::None, 404, not_found.clone()).await;
    check(
        &app,
        "PATCH",
        &format!("{path}?active=true"),
        Body::None,
        404,
        not_found.clone(),
    )
    .await;
    check(
        &app,
        "PATCH",
        &format!("{path}?active=true&integrated=true"),
        Body::None,
        404,
        not_found.clone(),
    )
    .await;
    // PATCH never creates: the setting is still missing, and no key was made.
    check(&app, "GET", &path, Body::None, 404, not_found).await;
    let id = path.split('/').nth(4).expect("id").parse().expect("int");
    assert_eq!(app.keys(id).await, Vec::<Value>::new());
}

#[tokio::test]
async fn parameter_errors_have_grape_bodies() {
    let app = spawn_app().await;
    let (_, path) = project(&app, "params").await;
    // PATCH validates its parameters after the project check and before the setting lookup,
    // so these rows hold whether or not a setting exists; PUT one so the table is not
    // accidentally answered by "setting not found".
    check(
        &app,
        "PUT",
        &format!("{path}?active=false&integrated=false"),
        Body::None,
        200,
        setting(false, false),
    )
    .await;
    let cases: &[(&str, &str, Body, &str)] = &[
        (
            "PUT",
            "",
            Body::None,
            "active is missing, integrated is missing",
        ),
        ("PUT", "?active=true", Body::None, "integrated is missing"),
        ("PUT", "?integrated=true", Body::None, "active is missing"),
        (
            "PUT",
            "?active=&integrated=true",
            Body::None,
            "active is empty",
        ),
        (
            "PUT",
            "?active=true&integrated=",
            Body::None,
            "integrated is empty",
        ),
        (
            "PUT",
            "?active=maybe&integrated=true",
            Body::None,
            "active is invalid",
        ),
        (
            "PUT",
            "?active=on&integrated=true",
            Body::None,
            "active is invalid",
        ),
        (
            "PUT",
            "?active=2&integrated=true",
            Body::None,
            "active is invalid",
        ),
        (
            "PUT",
            "?active=maybe&integrated=",
            Body::None,
            "active is invalid, integrated is empty",
        ),
        (
            "PUT",
            "?active=&integrated=",
            Body::None,
            "active is empty, integrated is empty",
        ),
        (
            "PUT",
            "?active=x",
            Body::None,
            "active is invalid, integrated is missing",
        ),
        (
            "PUT",
            "",
            Body::Json(json!({})),
            "active is missing, integrated is missing",
        ),
        (
            "PUT",
            "",
            Body::Json(json!({"active": 2, "integrated": true})),
            "active is invalid",
        ),
        (
            "PUT",
            "",
            Body::Json(json!({"active": "yes", "integrated": [true]})),
            "integrated is invalid",
        ),
        (
            "PUT",
            "",
            Body::Json(json!({"active": "", "integrated": true})),
            "active is empty",
        ),
        (
            "PUT",
            "",
            Body::Form("active=true".into()),
            "integrated is missing",
        ),
        (
            "PUT",
            "",
            Body::Form("active=nope&integrated=".into()),
            "active is invalid, integrated is empty",
        ),
        ("PATCH", "", Body::None, "active is missing"),
        ("PATCH", "?integrated=true", Body::None, "active is missing"),
        ("PATCH", "?active=", Body::None, "active is empty"),
        ("PATCH", "?active=maybe", Body::None, "active is invalid"),
        (
            "PATCH",
            "?active=true&integrated=nah",
            Body::None,
            "integrated is invalid",
        ),
        (
            "PATCH",
            "?active=&integrated=nah",
            Body::None,
            "active is empty, integrated is invalid",
        ),
        (
            "PATCH",
            "",
            Body::Json(json!({"integrated": true})),
            "active is missing",
        ),
        ("PATCH", "", Body::Form("active=".into()), "active is empty"),
    ];
    for (method, query, body, message) in cases {
        check(
            &app,
            method,
            &format!("{path}{query}"),
            body.clone(),
            400,
            bad(message),
        )
        .await;
    }
    // Nothing above changed the setting.
    check(&app, "GET", &path, Body::None, 200, setting(false, false)).await;
}

#[tokio::test]
async fn patch_parameter_errors_come_before_setting_not_found() {
    let app = spawn_app().await;
    let (_, path) = project(&app, "no-setting").await;
    check(
        &app,
        "PATCH",
        &path,
        Body::None,
        400,
        bad("active is missing"),
    )
    .await;
    check(
        &app,
        "PATCH",
        &format!("{path}?active=no"),
        Body::None,
        404,
        json!({"message": SETTING_NOT_FOUND}),
    )
    .await;
}

#[tokio::test]
async fn booleans_accept_gitlab_words_in_every_style() {
    let app = spawn_app().await;
    let (_, path) = project(&app, "words").await;
    let words: &[(&str, bool)] = &[
        ("true", true),
        ("TRUE", true),
        ("True", true),
        ("t", true),
        ("T", true),
        ("yes", true),
        ("YES", true),
        ("Yes", true),
        ("1", true),
        ("false", false),
        ("FALSE", false),
        ("False", false),
        ("f", false),
        ("F", false),
        ("no", false),
        ("NO", false),
        ("No", false),
        ("0", false),
    ];
    for (word, value) in words {
        // The other parameter always has the opposite value, so a parser that ignores one of
        // them, or swaps them, is caught.
        let other = if *value { "false" } else { "true" };
        let expected = setting(*value, !*value);
        let q = format!("active={word}&integrated={other}");
        // Each method with the query string, a form and a JSON body.
        for method in ["PUT", "PATCH"] {
            for (p, body) in [
                (format!("{path}?{q}"), Body::None),
                (path.clone(), Body::Form(q.clone())),
                (
                    path.clone(),
                    Body::Json(json!({"active": word, "integrated": other})),
                ),
            ] {
                check(&app, method, &p, body, 200, expected.clone()).await;
            }
        }
    }
    // JSON's own booleans, and the numbers 1 and 0.
    for (active, integrated) in [
        (json!(true), json!(false)),
        (json!(false), json!(true)),
        (json!(1), json!(0)),
        (json!(0), json!(1)),
    ] {
        let a = active == json!(true) || active == json!(1);
        let i = integrated == json!(true) || integrated == json!(1);
        let body = json!({"active": active, "integrated": integrated});
        check(
            &app,
            "PUT",
            &path,
            Body::Json(body.clone()),
            200,
            setting(a, i),
        )
        .await;
        check(&app, "PATCH", &path, Body::Json(body), 200, setting(a, i)).await;
    }
}

#[tokio::test]
async fn put_and_patch_take_query_json_and_form_parameters() {
    let app = spawn_app().await;
    let (_, path) = project(&app, "styles").await;
    let cases: Vec<(&str, String, Body, Value)> = vec![
        (
            "PUT",
            format!("{path}?active=true&integrated=false"),
            Body::None,
            setting(true, false),
        ),
        (
            "PUT",
            path.clone(),
            Body::Json(json!({"active": false, "integrated": true})),
            setting(false, true),
        ),
        (
            "PUT",
            path.clone(),
            Body::Form("active=true&integrated=true".into()),
            setting(true, true),
        ),
        (
            "PUT",
            path.clone(),
            Body::Raw(
                Some("application/x-www-form-urlencoded; charset=utf-8"),
                b"active=false&integrated=false".to_vec(),
            ),
            setting(false, false),
        ),
        (
            "PATCH",
            format!("{path}?active=true"),
            Body::None,
            setting(true, false),
        ),
        (
            "PATCH",
            path.clone(),
            Body::Json(json!({"active": false, "integrated": true})),
            setting(false, true),
        ),
        (
            "PATCH",
            path.clone(),
            Body::Form("active=true".into()),
            setting(true, true),
        ),
        (
            "PATCH",
            path.clone(),
            Body::Form("active=true&integrated=false".into()),
            setting(true, false),
        ),
        // The query string and the body together: the body wins for the same name.
        (
            "PUT",
            format!("{path}?active=false"),
            Body::Form("active=true&integrated=true".into()),
            setting(true, true),
        ),
    ];
    for (method, p, body, expected) in cases {
        check(&app, method, &p, body, 200, expected).await;
    }
}

#[tokio::test]
async fn put_creates_then_overwrites_and_patch_keeps_integrated() {
    let app = spawn_app().await;
    let (_, path) = project(&app, "semantics").await;
    let steps: &[(&str, &str, Value)] = &[
        ("PUT", "?active=true&integrated=false", setting(true, false)),
        ("GET", "", setting(true, false)),
        ("PUT", "?active=false&integrated=true", setting(false, true)),
        ("GET", "", setting(false, true)),
        // PATCH with only `active` keeps `integrated`.
        ("PATCH", "?active=true", setting(true, true)),
        ("GET", "", setting(true, true)),
        ("PATCH", "?active=false", setting(false, true)),
        (
            "PATCH",
            "?active=false&integrated=false",
            setting(false, false),
        ),
        ("PATCH", "?active=true", setting(true, false)),
        ("GET", "", setting(true, false)),
    ];
    for (method, query, expected) in steps {
        check(
            &app,
            method,
            &format!("{path}{query}"),
            Body::None,
            200,
            expected.clone(),
        )
        .await;
    }
    // Exactly five keys, in GitLab's order.
    let r = app
        .send("GET", &path, Auth::Private(&app.admin_token), Body::None)
        .await;
    let keys: Vec<&str> = r
        .body
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        [
            "active",
            "project_name",
            "sentry_external_url",
            "api_url",
            "integrated"
        ]
    );
}

#[tokio::test]
async fn active_integrated_setting_creates_exactly_one_first_key() {
    let app = spawn_app().await;

    // PUT active+integrated on a project without keys creates one; doing it again does not.
    let (id, path) = project(&app, "side-effect").await;
    switch_on(&app, "PUT", &path).await;
    let first = app.keys(id).await;
    assert_eq!(first.len(), 1, "{first:?}");
    switch_on(&app, "PUT", &path).await;
    switch_on(&app, "PATCH", &path).await;
    assert_eq!(app.keys(id).await, first);

    // Inactive or not integrated: no key.
    for (n, q) in [
        "active=false&integrated=true",
        "active=true&integrated=false",
        "active=false&integrated=false",
    ]
    .iter()
    .enumerate()
    {
        let (id, path) = project(&app, &format!("no-key-{n}")).await;
        let expected = setting(q.starts_with("active=true"), q.ends_with("integrated=true"));
        check(
            &app,
            "PUT",
            &format!("{path}?{q}"),
            Body::None,
            200,
            expected,
        )
        .await;
        assert_eq!(app.keys(id).await, Vec::<Value>::new(), "{q}");
    }

    // PATCH that switches an existing setting on also creates the first key.
    let (id, path) = project(&app, "patched-on").await;
    check(
        &app,
        "PUT",
        &format!("{path}?active=true&integrated=false"),
        Body::None,
        200,
        setting(true, false),
    )
    .await;
    assert_eq!(app.keys(id).await.len(), 0);
    switch_on(&app, "PATCH", &path).await;
    assert_eq!(app.keys(id).await.len(), 1);

    // A project that already has a key (made through the API) gets no second one.
    let (id, path) = project(&app, "has-key").await;
    let existing = app.create_key(id).await;
    switch_on(&app, "PUT", &path).await;
    assert_eq!(app.keys(id).await, vec![existing]);

    // Once every key is deleted, saving the setting again makes a new first key.
    let (id, path) = project(&app, "keys-deleted").await;
    switch_on(&app, "PUT", &path).await;
    let key = app.keys(id).await.remove(0);
    let del = app
        .delete_key(id, key["id"].as_i64().expect("key id"))
        .await;
    assert_eq!((del.status, &del.body), (200, &key));
    switch_on(&app, "PUT", &path).await;
    let again = app.keys(id).await;
    assert_eq!(again.len(), 1);
    assert_ne!(again[0]["public_key"], key["public_key"]);
}

#[tokio::test]
async fn unparseable_json_body_is_a_400_after_authentication() {
    let app = spawn_app().await;
    let (_, path) = project(&app, "bad-json").await;
    let raw = Body::Raw(Some("application/json"), b"{not json".to_vec());
    // Authentication answers first.
    let r = app.send("PUT", &path, Auth::None, raw.clone()).await;
    assert_eq!((r.status, r.body), (401, unauthorized()));
    let wrong = bad("message body does not match declared format");
    check(&app, "PUT", &path, raw, 400, wrong.clone()).await;
    // Valid JSON that is not an object cannot carry parameters either.
    let array = Body::Raw(Some("application/json"), b"[true, true]".to_vec());
    check(&app, "PATCH", &path, array, 400, wrong).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_puts_create_one_first_key() {
    let app = spawn_app().await;
    let (id, path) = project(&app, "racing").await;
    let url = app.url(&format!("{path}?active=true&integrated=true"));
    // Requests in flight together, so the store sees overlapping transactions.
    let runs: Vec<_> = (0..8)
        .map(|_| {
            let req = app
                .client
                .put(&url)
                .header("PRIVATE-TOKEN", &app.admin_token)
                .send();
            tokio::spawn(async move {
                let r = req.await.expect("send");
                (r.status().as_u16(), r.json::<Value>().await.expect("json"))
            })
        })
        .collect();
    for run in runs {
        assert_eq!(run.await.expect("task"), (200, setting(true, true)));
    }
    assert_eq!(app.keys(id).await.len(), 1);
}
