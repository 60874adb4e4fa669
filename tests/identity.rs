//! Black-box tests of the identity surface (projects, members, users, personal access tokens),
//! of the administrator bootstrap at start-up, and of the offline `faultline admin` commands.

mod common;

use common::{
    check, eventually, forbidden, spawn_app, spawn_on_dir, unauthorized, Auth, Body, TestApp,
};
use faultline::config::Secret;
use serde_json::{json, Value};

/// The project body as GitLab shapes it; `created_at` is copied from `got`.
fn project_body(
    app: &TestApp,
    got: &Value,
    id: i64,
    name: &str,
    path: &str,
    namespace: &str,
) -> Value {
    json!({
        "id": id,
        "name": name,
        "path": path,
        "path_with_namespace": format!("{namespace}/{path}"),
        "name_with_namespace": format!("{namespace} / {name}"),
        "namespace": {"path": namespace.rsplit('/').next(), "full_path": namespace},
        "created_at": got["created_at"],
        "web_url": format!("{}/{namespace}/{path}", app.base),
    })
}

/// Status and JSON body of a response sent with reqwest directly.
async fn status_and_json(r: reqwest::Response) -> (u16, Value) {
    let status = r.status().as_u16();
    (status, r.json().await.expect("JSON body"))
}

#[tokio::test]
async fn creating_projects() {
    let app = spawn_app().await;
    let admin = Some(app.admin_token.as_str());
    let alice = app.create_user("alice", false).await;

    // (caller, request body, status, expected body given the created project's JSON)
    type Expected = fn(&TestApp, &Value) -> Value;
    let cases: Vec<(Option<&str>, Value, u16, Expected)> = vec![
        // The path comes from the name; the namespace defaults to the creator's username.
        (admin, json!({"name": "My Project"}), 201, |app, got| {
            project_body(app, got, 1, "My Project", "my-project", "root")
        }),
        (
            admin,
            json!({"name": "Api", "path": "api-v2", "namespace_path": "group/sub"}),
            201,
            |app, got| project_body(app, got, 2, "Api", "api-v2", "group/sub"),
        ),
        (
            admin,
            json!({"path": "only-path", "namespace_path": "group"}),
            201,
            |app, got| project_body(app, got, 3, "only-path", "only-path", "group"),
        ),
        // The same path in the same namespace is taken; in another namespace it is not.
        (
            admin,
            json!({"name": "My Project"}),
            400,
            |_, _| json!({"message": {"name": ["has already been taken"], "path": ["has already been taken"]}}),
        ),
        (
            admin,
            json!({"name": "x", "path": "MY-PROJECT"}),
            400,
            |_, _| json!({"message": {"name": ["has already been taken"], "path": ["has already been taken"]}}),
        ),
        (
            admin,
            json!({"name": "My Project", "namespace_path": "other"}),
            201,
            |app, got| project_body(app, got, 4, "My Project", "my-project", "other"),
        ),
        (
            admin,
            json!({}),
            400,
            |_, _| json!({"error": "name, path are missing, at least one parameter must be provided"}),
        ),
        (
            admin,
            json!({"name": "x", "path": "-bad"}),
            400,
            |_, _| json!({"message": {"path": ["can contain only letters, digits, '_', '-' and '.'. Cannot start with '-', end in '.git' or end in '.atom'"]}}),
        ),
        (
            admin,
            json!({"name": "x", "namespace_path": "a b"}),
            400,
            |_, _| json!({"message": {"namespace": ["is not valid"]}}),
        ),
        // A non-administrator creates in their own namespace only.
        (
            Some(&alice.token),
            json!({"name": "Mine"}),
            201,
            |app, got| project_body(app, got, 5, "Mine", "mine", "alice"),
        ),
        (
            Some(&alice.token),
            json!({"name": "Theirs", "namespace_path": "group"}),
            403,
            |_, _| forbidden(),
        ),
        (None, json!({"name": "Anon"}), 401, |_, _| unauthorized()),
    ];
    for (token, body, status, expected) in cases {
        let r = app
            .send(
                "POST",
                "/api/v4/projects",
                token.into(),
                Body::Json(body.clone()),
            )
            .await;
        assert_eq!(
            (r.status, &r.body),
            (status, &expected(&app, &r.body)),
            "{body}"
        );
    }
    // Form and query parameters work as well as JSON.
    for (query, body, id, name, path) in [
        (
            "",
            Body::Form("name=Form+Made&namespace_path=group".into()),
            6,
            "Form Made",
            "form-made",
        ),
        (
            "?name=Query&namespace_path=group",
            Body::None,
            7,
            "Query",
            "query",
        ),
    ] {
        let path_and_query = format!("/api/v4/projects{query}");
        let r = app
            .send(
                "POST",
                &path_and_query,
                Auth::Private(&app.admin_token),
                body,
            )
            .await;
        let expected = project_body(&app, &r.body, id, name, path, "group");
        assert_eq!((r.status, &r.body), (201, &expected));
    }

    // The creator is the Owner and the only member.
    let root = json!({"id": 1, "username": "root", "name": "Administrator", "state": "active", "access_level": 50});
    let owner = json!({"id": alice.id, "username": "alice", "name": "alice", "state": "active", "access_level": 50});
    for (path, token, members) in [
        ("/api/v4/projects/1/members", admin, json!([root])),
        (
            "/api/v4/projects/5/members",
            Some(&*alice.token),
            json!([owner]),
        ),
    ] {
        check(&app, "GET", path, token, Body::None, 200, &members).await;
    }
    // As Owner, alice may manage error tracking on her project.
    let r = app
        .send(
            "POST",
            "/api/v4/projects/alice%2Fmine/error_tracking/client_keys",
            Auth::Private(&alice.token),
            Body::None,
        )
        .await;
    let public_key = r.body["public_key"].as_str().unwrap_or_default();
    let dsn = format!(
        "http://{public_key}@{}/errortracking/api/v1/projects/5",
        app.server.addr
    );
    assert_eq!(
        (r.status, &r.body),
        (
            201,
            &json!({"id": 1, "active": true, "public_key": public_key, "sentry_dsn": dsn})
        )
    );
}

#[tokio::test]
async fn reading_and_deleting_projects() {
    let app = spawn_app().await;
    let admin = Some(app.admin_token.as_str());
    let p = app.create_project("Doomed", "group").await;
    let id = p["id"].as_i64().expect("id");
    let guest = app.member("guest", id, Some(10)).await;
    let maintainer = app.member("maintainer", id, Some(40)).await;
    let outsider = app.member("outsider", id, None).await;
    let not_found = json!({"message": "404 Project Not Found"});
    for (token, status, body) in [
        (Some(guest.token.as_str()), 200, p.clone()),
        (Some(maintainer.token.as_str()), 200, p.clone()),
        (Some(outsider.token.as_str()), 404, not_found.clone()),
        (None, 401, unauthorized()),
    ] {
        for path in [
            &format!("/api/v4/projects/{id}"),
            "/api/v4/projects/group%2Fdoomed",
        ] {
            check(&app, "GET", path, token, Body::None, status, &body).await;
        }
    }
    check(
        &app,
        "GET",
        "/api/v4/projects/999",
        admin,
        Body::None,
        404,
        &not_found,
    )
    .await;

    // Keys exist and the project's setting is on.
    app.set_setting(id, "PUT", "active=true&integrated=true")
        .await;
    app.create_key(id).await;
    let keys: Vec<String> = app
        .keys(id)
        .await
        .iter()
        .map(|k| k["public_key"].as_str().expect("key").to_owned())
        .collect();
    assert_eq!(keys.len(), 2);

    // Only an Owner (or an administrator) deletes.
    let project = format!("/api/v4/projects/{id}");
    for (token, status, body) in [
        (&maintainer.token, 403, forbidden()),
        (&outsider.token, 404, not_found.clone()),
    ] {
        check(
            &app,
            "DELETE",
            &project,
            Auth::Private(token),
            Body::None,
            status,
            &body,
        )
        .await;
    }
    app.delete_project(id).await;
    for path in [
        format!("/api/v4/projects/{id}"),
        format!("/api/v4/projects/{id}/error_tracking/client_keys"),
        format!("/api/v4/projects/{id}/error_tracking/settings"),
    ] {
        check(&app, "GET", &path, admin, Body::None, 404, &not_found).await;
    }
    check(&app, "DELETE", &project, admin, Body::None, 404, &not_found).await;
    // Ingestion no longer accepts its keys (what it answers exactly is checked in
    // management_keys.rs), and the keys leave the database with the project's other rows, which
    // are removed in the background.
    eventually("the deleted project's keys leave the database", || {
        let app = &app;
        async move {
            let collected = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
            let sink = collected.clone();
            app.server
                .state
                .store
                .for_each_key(Box::new(move |k| sink.lock().expect("lock").push(k)))
                .await
                .expect("keys");
            let remaining = collected.lock().expect("lock").clone();
            remaining.iter().all(|k| k.project_id != id)
        }
    })
    .await;
    for key in &keys {
        assert!(
            !matches!(
                app.server.state.keys.check(key, id),
                faultline::domain::keycache::KeyDecision::Allowed { .. }
            ),
            "{key} still allowed"
        );
    }
}

/// GitLab never reuses a project id: an old DSN (or a script holding the id) must not reach a
/// different project created later.
#[tokio::test]
async fn deleted_project_ids_are_not_reused() {
    let app = spawn_app().await;
    let first = app.project_id("first", "group").await;
    let last = app.project_id("last", "group").await;
    app.delete_project(last).await;
    let next = app.project_id("next", "group").await;
    assert!(
        next > last,
        "project {next} reuses the id of deleted project {last} (first was {first})"
    );
}

#[tokio::test]
async fn members() {
    let app = spawn_app().await;
    let admin = Some(app.admin_token.as_str());
    let id = app.project_id("team", "group").await;
    let maintainer = app.member("maintainer", id, Some(40)).await;
    let developer = app.member("developer", id, Some(30)).await;
    let bob = app.create_user("bob", false).await;
    let carol = app.create_user("carol", false).await;
    let path = format!("/api/v4/projects/{id}/members");
    let member = |u: &common::TestUser, level: i64| json!({"id": u.id, "username": u.username, "name": u.username, "state": "active", "access_level": level});

    let cases: Vec<(Option<&str>, Value, u16, Value)> = vec![
        (
            Some(&maintainer.token),
            json!({"user_id": bob.id, "access_level": 20}),
            201,
            member(&bob, 20),
        ),
        (
            Some(&maintainer.token),
            json!({"user_id": bob.id, "access_level": 30}),
            409,
            json!({"message": "Member already exists"}),
        ),
        // A Maintainer may not create Owners; a Developer may not add anyone.
        (
            Some(&maintainer.token),
            json!({"user_id": carol.id, "access_level": 50}),
            403,
            forbidden(),
        ),
        (
            Some(&developer.token),
            json!({"user_id": carol.id, "access_level": 10}),
            403,
            forbidden(),
        ),
        (
            Some(&carol.token),
            json!({"user_id": carol.id, "access_level": 50}),
            404,
            json!({"message": "404 Project Not Found"}),
        ),
        (
            admin,
            json!({"user_id": carol.id, "access_level": 15}),
            400,
            json!({"error": "access_level does not have a valid value"}),
        ),
        (
            admin,
            json!({"user_id": 9999, "access_level": 10}),
            404,
            json!({"message": "404 User Not Found"}),
        ),
        (
            admin,
            json!({"access_level": 10}),
            400,
            json!({"error": "user_id is missing"}),
        ),
        (
            admin,
            json!({"user_id": carol.id}),
            400,
            json!({"error": "access_level is missing"}),
        ),
        (
            admin,
            json!({}),
            400,
            json!({"error": "user_id is missing, access_level is missing"}),
        ),
        (
            admin,
            json!({"user_id": "x", "access_level": 10}),
            400,
            json!({"error": "user_id is invalid"}),
        ),
        (
            admin,
            json!({"user_id": carol.id, "access_level": 50}),
            201,
            member(&carol, 50),
        ),
    ];
    for (token, body, status, expected) in cases {
        check(
            &app,
            "POST",
            &path,
            token,
            Body::Json(body),
            status,
            &expected,
        )
        .await;
    }
    let root = json!({"id": 1, "username": "root", "name": "Administrator", "state": "active", "access_level": 50});
    let all = json!([
        root,
        member(&maintainer, 40),
        member(&developer, 30),
        member(&bob, 20),
        member(&carol, 50)
    ]);
    check(
        &app,
        "GET",
        &path,
        Auth::Private(&bob.token),
        Body::None,
        200,
        &all,
    )
    .await;

    // Removing: 204 with no body, then 404.
    check(
        &app,
        "DELETE",
        &format!("{path}/{}", developer.id),
        Auth::Private(&developer.token),
        Body::None,
        403,
        &forbidden(),
    )
    .await;
    check(
        &app,
        "DELETE",
        &format!("{path}/{}", bob.id),
        Auth::Private(&maintainer.token),
        Body::None,
        204,
        &Value::Null,
    )
    .await;
    check(
        &app,
        "DELETE",
        &format!("{path}/{}", bob.id),
        Auth::Private(&maintainer.token),
        Body::None,
        404,
        &json!({"message": "404 Member Not Found"}),
    )
    .await;
    // Bob is no longer a member: the project is hidden from him.
    check(
        &app,
        "GET",
        &path,
        Auth::Private(&bob.token),
        Body::None,
        404,
        &json!({"message": "404 Project Not Found"}),
    )
    .await;
}

#[tokio::test]
async fn users_are_created_by_administrators_only() {
    let app = spawn_app().await;
    let admin = Some(app.admin_token.as_str());
    let alice = app.create_user("alice", false).await;
    let user_body = |got: &Value,
                     id: i64,
                     username: &str,
                     name: &str,
                     email: Value,
                     is_admin: bool| {
        json!({"id": id, "username": username, "name": name, "email": email, "state": "active", "is_admin": is_admin, "created_at": got["created_at"]})
    };
    for (body, id, username, name, email, is_admin) in [
        (
            Body::Json(json!({"username": "bob", "name": "Bob B", "email": "bob@example.com"})),
            3,
            "bob",
            "Bob B",
            json!("bob@example.com"),
            false,
        ),
        (
            Body::Form("username=eve&name=Eve&admin=true".into()),
            4,
            "eve",
            "Eve",
            Value::Null,
            true,
        ),
    ] {
        let r = app
            .send(
                "POST",
                "/api/v4/users",
                Auth::Private(&app.admin_token),
                body,
            )
            .await;
        let expected = user_body(&r.body, id, username, name, email, is_admin);
        assert_eq!((r.status, &r.body), (201, &expected));
    }

    let cases: Vec<(Option<&str>, Value, u16, Value)> = vec![
        (
            Some(&alice.token),
            json!({"username": "mallory", "name": "M"}),
            403,
            forbidden(),
        ),
        (
            None,
            json!({"username": "mallory", "name": "M"}),
            401,
            unauthorized(),
        ),
        (
            admin,
            json!({"username": "bob", "name": "Again"}),
            409,
            json!({"message": "Username has already been taken"}),
        ),
        (
            admin,
            json!({}),
            400,
            json!({"error": "username is missing, name is missing"}),
        ),
        (
            admin,
            json!({"username": "x"}),
            400,
            json!({"error": "name is missing"}),
        ),
        (
            admin,
            json!({"username": "a b", "name": "x"}),
            400,
            json!({"message": {"username": ["is not valid"]}}),
        ),
        (
            admin,
            json!({"username": "y", "name": "y", "admin": "maybe"}),
            400,
            json!({"error": "admin is invalid"}),
        ),
    ];
    for (token, body, status, expected) in cases {
        check(
            &app,
            "POST",
            "/api/v4/users",
            token,
            Body::Json(body),
            status,
            &expected,
        )
        .await;
    }
    check(
        &app,
        "GET",
        "/api/v4/users",
        Auth::Private(&alice.token),
        Body::None,
        403,
        &forbidden(),
    )
    .await;
    let r = app
        .send(
            "GET",
            "/api/v4/users",
            Auth::Private(&app.admin_token),
            Body::None,
        )
        .await;
    let names: Vec<&str> = r
        .body
        .as_array()
        .expect("users")
        .iter()
        .map(|u| u["username"].as_str().expect("name"))
        .collect();
    assert_eq!(
        (r.status, names),
        (200, vec!["root", "alice", "bob", "eve"])
    );

    // `/user` is whoever the token belongs to.
    let r = app
        .send(
            "GET",
            "/api/v4/user",
            Auth::Bearer(&alice.token),
            Body::None,
        )
        .await;
    assert_eq!(
        (r.status, &r.body),
        (
            200,
            &user_body(&r.body, alice.id, "alice", "alice", Value::Null, false)
        )
    );
    check(
        &app,
        "GET",
        "/api/v4/user",
        Auth::None,
        Body::None,
        401,
        &unauthorized(),
    )
    .await;
}

#[tokio::test]
async fn personal_access_tokens() {
    let app = spawn_app().await;
    let admin = Some(app.admin_token.as_str());
    let alice = app.create_user("alice", false).await;
    let bob = app.create_user("bob", false).await;
    let path = format!("/api/v4/users/{}/personal_access_tokens", alice.id);

    // Created by administrators only; the secret is in the creation answer and nowhere else.
    let r = app
        .send(
            "POST",
            &path,
            Auth::Private(&app.admin_token),
            Body::Json(json!({"name": "ci", "scopes": ["read_api"], "expires_at": "2999-12-31"})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let secret = r.body["token"].as_str().expect("token").to_owned();
    assert!(
        secret.starts_with("glpat-") && secret.len() > 26,
        "{secret}"
    );
    let token_id = r.body["id"].as_i64().expect("id");
    let shown = json!({
        "id": token_id, "name": "ci", "revoked": false, "created_at": r.body["created_at"],
        "scopes": ["read_api"], "user_id": alice.id, "active": true, "expires_at": "2999-12-31",
    });
    let mut with_secret = shown.clone();
    with_secret["token"] = json!(secret);
    assert_eq!(r.body, with_secret);

    let cases: Vec<(Option<&str>, Body, u16, Value)> = vec![
        (
            Some(&alice.token),
            Body::Json(json!({"name": "x", "scopes": ["api"]})),
            403,
            forbidden(),
        ),
        (
            None,
            Body::Json(json!({"name": "x", "scopes": ["api"]})),
            401,
            unauthorized(),
        ),
        (
            admin,
            Body::Json(json!({})),
            400,
            json!({"error": "name is missing, scopes is missing"}),
        ),
        (
            admin,
            Body::Json(json!({"name": "x", "scopes": ["sudo"]})),
            400,
            json!({"error": "scopes does not have a valid value"}),
        ),
        (
            admin,
            Body::Json(json!({"name": "x", "scopes": ["api"], "expires_at": "soon"})),
            400,
            json!({"error": "expires_at is invalid"}),
        ),
    ];
    for (token, body, status, expected) in cases {
        check(&app, "POST", &path, token, body, status, &expected).await;
    }
    check(
        &app,
        "POST",
        "/api/v4/users/9999/personal_access_tokens",
        admin,
        Body::Json(json!({"name": "x", "scopes": ["api"]})),
        404,
        &json!({"message": "404 User Not Found"}),
    )
    .await;
    // Form-style array parameters.
    let r = app
        .send(
            "POST",
            &path,
            Auth::Private(&app.admin_token),
            Body::Form("name=form&scopes[]=api&scopes[]=read_api".into()),
        )
        .await;
    assert_eq!(
        (r.status, &r.body["scopes"]),
        (201, &json!(["api", "read_api"]))
    );

    // The new token works, with its scope.
    let alice_user = app
        .send(
            "GET",
            "/api/v4/user",
            Auth::Private(&alice.token),
            Body::None,
        )
        .await
        .body;
    check(
        &app,
        "GET",
        "/api/v4/user",
        Auth::Private(&secret),
        Body::None,
        200,
        &alice_user,
    )
    .await;

    // Listing never shows secrets; a user sees only their own tokens.
    let r = app
        .send(
            "GET",
            "/api/v4/personal_access_tokens",
            Auth::Private(&alice.token),
            Body::None,
        )
        .await;
    assert_eq!(r.status, 200);
    let list = r.body.as_array().expect("list");
    assert_eq!(list.len(), 3, "{list:?}");
    assert!(
        list.iter()
            .all(|t| t.get("token").is_none() && t["user_id"] == json!(alice.id)),
        "{list:?}"
    );
    assert_eq!(list[1], shown);
    let bobs = app.tokens_of(bob.id).await;
    assert_eq!(bobs.len(), 1);
    let bob_token_id = bobs[0]["id"].as_i64().expect("id");

    // Revoking: someone else's token is "not found"; one's own is revoked and stops working.
    // An administrator revokes anyone's.
    let revoke = |id: i64| format!("/api/v4/personal_access_tokens/{id}");
    let me = "/api/v4/user".to_owned();
    let bob_user = app
        .send("GET", &me, Auth::Private(&bob.token), Body::None)
        .await
        .body;
    let not_found = json!({"message": "404 Not Found"});
    let steps = [
        (
            "DELETE",
            revoke(bob_token_id),
            &alice.token,
            404,
            not_found.clone(),
        ),
        ("GET", me.clone(), &bob.token, 200, bob_user),
        ("DELETE", revoke(token_id), &alice.token, 204, Value::Null),
        ("GET", me.clone(), &secret, 401, unauthorized()),
        ("DELETE", revoke(9999), &app.admin_token, 404, not_found),
        (
            "DELETE",
            revoke(bob_token_id),
            &app.admin_token,
            204,
            Value::Null,
        ),
        ("GET", me, &bob.token, 401, unauthorized()),
    ];
    for (method, path, token, status, expected) in steps {
        check(
            &app,
            method,
            &path,
            Auth::Private(token),
            Body::None,
            status,
            &expected,
        )
        .await;
    }
    let bobs = app.tokens_of(bob.id).await;
    assert_eq!(
        (&bobs[0]["revoked"], &bobs[0]["active"]),
        (&json!(true), &json!(false))
    );
}

#[tokio::test]
async fn first_start_writes_the_admin_token_file_once() {
    let app = spawn_app().await;
    let file = app.dir.path().join(faultline::app::INITIAL_TOKEN_FILE);
    let content = std::fs::read_to_string(&file).expect("token file");
    let mut lines = content.lines();
    assert_eq!(lines.next(), Some(app.admin_token.as_str()));
    // The second line is root's web UI password, the one the start printed.
    assert_eq!(
        lines.next(),
        app.server.initial_admin_password.as_deref(),
        "{content}"
    );
    assert_eq!(lines.next(), None);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file)
            .expect("metadata")
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600, "{mode:o}");
    }
    let admin_token = app.admin_token.clone();
    let dir = app.dir;
    app.server.shutdown().await.expect("clean shutdown");

    // A second start on the same directory makes no new token and keeps the old one working.
    let server = spawn_on_dir(dir.path(), |_| {}).await;
    assert_eq!(server.initial_admin_token, None);
    assert_eq!(std::fs::read_to_string(&file).expect("token file"), content);
    let r = reqwest::Client::new()
        .get(format!("http://{}/api/v4/user", server.addr))
        .header("PRIVATE-TOKEN", &admin_token)
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 200);
    let me: Value = r.json().await.expect("json");
    assert_eq!(
        (&me["username"], &me["is_admin"]),
        (&json!("root"), &json!(true))
    );
    let tokens: Value = reqwest::Client::new()
        .get(format!(
            "http://{}/api/v4/personal_access_tokens",
            server.addr
        ))
        .header("PRIVATE-TOKEN", &admin_token)
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert_eq!(tokens.as_array().map(Vec::len), Some(1), "{tokens}");
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn a_configured_admin_token_works_on_a_fresh_directory() {
    let configured = "glpat-configuredadmintoken0000000000000000";
    let dir = tempfile::tempdir().expect("dir");
    let server = spawn_on_dir(dir.path(), |c| {
        c.admin_token = Some(Secret(configured.into()))
    })
    .await;
    // The configured token replaces the generated one: none is printed or written.
    assert_eq!(server.initial_admin_token, None);
    assert!(!dir.path().join(faultline::app::INITIAL_TOKEN_FILE).exists());
    let client = reqwest::Client::new();
    let get = |path: &str, token: &str| {
        client
            .get(format!("http://{}{path}", server.addr))
            .header("PRIVATE-TOKEN", token.to_owned())
            .send()
    };
    let me: Value = get("/api/v4/user", configured)
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert_eq!(
        (&me["username"], &me["is_admin"]),
        (&json!("root"), &json!(true))
    );
    // It can do administrator things.
    let r = client
        .post(format!("http://{}/api/v4/users", server.addr))
        .header("PRIVATE-TOKEN", configured)
        .json(&json!({"username": "alice", "name": "Alice"}))
        .send()
        .await
        .expect("send");
    let (status, user) = status_and_json(r).await;
    assert_eq!(
        (status, &user["username"], &user["is_admin"]),
        (201, &json!("alice"), &json!(false))
    );
    server.shutdown().await.expect("clean shutdown");

    // Starting again with the same token neither fails nor registers it twice.
    let server = spawn_on_dir(dir.path(), |c| {
        c.admin_token = Some(Secret(configured.into()))
    })
    .await;
    let tokens: Value = reqwest::Client::new()
        .get(format!(
            "http://{}/api/v4/personal_access_tokens",
            server.addr
        ))
        .header("PRIVATE-TOKEN", configured)
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert_eq!(tokens.as_array().map(Vec::len), Some(1), "{tokens}");
    server.shutdown().await.expect("clean shutdown");
}

/// Runs `faultline --data-dir <dir> admin <args>` and returns its JSON output, or the error
/// text when it fails.
async fn admin_cli(dir: &std::path::Path, args: &[&str]) -> Result<Value, String> {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_faultline"))
        .arg("--data-dir")
        .arg(dir)
        .args(["admin", "--create-database"])
        .args(args)
        .envs(common::database_env(dir).await)
        // The commands must not depend on the environment they happen to run in.
        .env_remove("FAULTLINE_ADMIN_TOKEN")
        .env_remove("FAULTLINE_DATA_DIR")
        .env("RUST_LOG", "warn")
        // A captured backtrace on every expected failure costs a quarter of a second.
        .env("RUST_BACKTRACE", "0")
        .env("RUST_LIB_BACKTRACE", "0")
        .output()
        .await
        .expect("run faultline");
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    Ok(serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{args:?} printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    }))
}

#[tokio::test]
async fn offline_admin_commands() {
    let dir = tempfile::tempdir().expect("dir");
    let d = dir.path();
    // Every command that writes costs a commit on disk, so the happy path below is the
    // shortest chain that covers each command once; refusals run together at the end.
    let alice = admin_cli(d, &["create-user", "--username", "alice"])
        .await
        .expect("create-user");
    assert_eq!(
        alice,
        json!({"id": 1, "username": "alice", "name": "alice", "email": null, "state": "active", "is_admin": false, "created_at": alice["created_at"]})
    );
    let bob = admin_cli(
        d,
        &[
            "create-user",
            "--username",
            "bob",
            "--name",
            "Bob",
            "--admin",
        ],
    )
    .await
    .expect("create-user");
    assert_eq!(
        (&bob["id"], &bob["is_admin"], &bob["name"]),
        (&json!(2), &json!(true), &json!("Bob"))
    );

    let project = admin_cli(
        d,
        &[
            "create-project",
            "--name",
            "Web Shop",
            "--owner",
            "alice",
            "--namespace",
            "shop",
        ],
    )
    .await
    .expect("create-project");
    assert_eq!(
        project,
        json!({"id": 1, "name": "Web Shop", "path": "web-shop", "path_with_namespace": "shop/web-shop"})
    );

    let member = admin_cli(
        d,
        &[
            "add-member",
            "--project",
            "shop/web-shop",
            "--username",
            "bob",
            "--access-level",
            "40",
        ],
    )
    .await
    .expect("add-member");
    assert_eq!(
        member,
        json!({"project_id": 1, "user_id": 2, "username": "bob", "access_level": 40})
    );

    let token = admin_cli(
        d,
        &["create-token", "--username", "alice", "--name", "deploy"],
    )
    .await
    .expect("create-token");
    let secret = token["token"].as_str().expect("secret").to_owned();
    assert_eq!(
        token,
        json!({"id": 1, "name": "deploy", "revoked": false, "created_at": token["created_at"], "scopes": ["api"], "user_id": 1, "active": true, "expires_at": null, "token": secret})
    );
    let reader = admin_cli(
        d,
        &[
            "create-token",
            "--username",
            "bob",
            "--scopes",
            "read_api",
            "--expires-at",
            "2999-01-01",
        ],
    )
    .await
    .expect("create-token");
    let reader_secret = reader["token"].as_str().expect("secret").to_owned();
    let past = admin_cli(
        d,
        &[
            "create-token",
            "--username",
            "bob",
            "--expires-at",
            "2001-01-01",
        ],
    )
    .await
    .expect_err("a token that expired at birth is refused");
    assert!(
        past.contains("expires_at must be a date after today"),
        "{past}"
    );
    assert_eq!(
        (&reader["scopes"], &reader["expires_at"], &reader["name"]),
        (
            &json!(["read_api"]),
            &json!("2999-01-01"),
            &json!("admin-cli")
        )
    );

    let (listed, bobs) = tokio::join!(
        admin_cli(d, &["list-tokens"]),
        admin_cli(d, &["list-tokens", "--username", "bob"])
    );
    let listed = listed.expect("list-tokens");
    let mut without_secret = token.clone();
    without_secret
        .as_object_mut()
        .expect("object")
        .remove("token");
    assert_eq!(listed.as_array().map(Vec::len), Some(2));
    assert_eq!(listed[0], without_secret);
    assert!(listed
        .as_array()
        .expect("list")
        .iter()
        .all(|t| t.get("token").is_none()));
    let bobs = bobs.expect("list-tokens");
    assert_eq!(bobs.as_array().map(Vec::len), Some(1));
    assert_eq!(bobs[0]["user_id"], json!(2));

    // Refusals: each exits non-zero and changes nothing.
    let refusals = [
        &["create-user", "--username", "alice"][..],
        &["create-project", "--name", "x", "--owner", "nobody"][..],
        &[
            "add-member",
            "--project",
            "1",
            "--username",
            "bob",
            "--access-level",
            "45",
        ][..],
        &[
            "add-member",
            "--project",
            "nope/nope",
            "--username",
            "bob",
            "--access-level",
            "40",
        ][..],
        &["create-token", "--username", "alice", "--scopes", "sudo"][..],
        &["create-token", "--username", "nobody"][..],
        &["revoke-token", "--id", "999"][..],
    ];
    let mut runs = tokio::task::JoinSet::new();
    for args in refusals {
        let d = d.to_path_buf();
        runs.spawn(async move { (args, admin_cli(&d, args).await) });
    }
    while let Some(done) = runs.join_next().await {
        let (args, result) = done.expect("task");
        assert!(result.is_err(), "{args:?} succeeded: {result:?}");
    }
    assert_eq!(
        admin_cli(d, &["list-tokens"]).await.expect("list-tokens"),
        listed
    );

    // A server on that directory accepts what the commands made. Users exist, so it creates
    // no administrator of its own.
    let server = spawn_on_dir(d, |_| {}).await;
    assert_eq!(server.initial_admin_token, None);
    let client = reqwest::Client::new();
    let base = format!("http://{}", server.addr);
    let send = |method: reqwest::Method, path: &str, token: &str| {
        client
            .request(method, format!("{base}{path}"))
            .header("PRIVATE-TOKEN", token.to_owned())
            .send()
    };

    let r = send(reqwest::Method::GET, "/api/v4/user", &secret)
        .await
        .expect("send");
    let alice_user = json!({
        "id": 1, "username": "alice", "name": "alice", "email": null, "state": "active",
        "is_admin": false, "created_at": alice["created_at"],
    });
    assert_eq!(status_and_json(r).await, (200, alice_user));
    // alice owns the project, so she may manage error tracking on it.
    let r = send(
        reqwest::Method::POST,
        "/api/v4/projects/shop%2Fweb-shop/error_tracking/client_keys",
        &secret,
    )
    .await
    .expect("send");
    let (status, key) = status_and_json(r).await;
    assert_eq!(
        (status, &key["id"], &key["active"]),
        (201, &json!(1), &json!(true))
    );
    // bob is a Maintainer with a read_api token: reads work, writes do not.
    let r = send(
        reqwest::Method::GET,
        "/api/v4/projects/1/error_tracking/client_keys",
        &reader_secret,
    )
    .await
    .expect("send");
    assert_eq!(status_and_json(r).await, (200, json!([key])));
    let r = send(
        reqwest::Method::POST,
        "/api/v4/projects/1/error_tracking/client_keys",
        &reader_secret,
    )
    .await
    .expect("send");
    let insufficient_scope = json!({
        "error": "insufficient_scope",
        "error_description": "The request requires higher privileges than provided by the access token.",
        "scope": "api",
    });
    assert_eq!(status_and_json(r).await, (403, insufficient_scope));

    // Revoking offline takes effect on the running server at once: tokens are not cached.
    let revoked = admin_cli(d, &["revoke-token", "--id", "1"])
        .await
        .expect("revoke-token");
    assert_eq!(revoked, json!({"id": 1, "revoked": true}));
    let r = send(reqwest::Method::GET, "/api/v4/user", &secret)
        .await
        .expect("send");
    assert_eq!(status_and_json(r).await, (401, unauthorized()));
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn admin_create_project_validates_like_the_api() {
    let dir = tempfile::tempdir().expect("dir");
    let d = dir.path();
    admin_cli(d, &["create-user", "--username", "alice"])
        .await
        .expect("create-user");
    // The path is derived from the name the same way the API derives it.
    let p = admin_cli(
        d,
        &[
            "create-project",
            "--name",
            "My  Project!",
            "--owner",
            "alice",
        ],
    )
    .await
    .expect("create-project");
    assert_eq!(
        (&p["path"], &p["path_with_namespace"]),
        (&json!("my-project"), &json!("alice/my-project"))
    );
    // Paths and namespaces the API refuses are refused here too.
    for args in [
        &[
            "create-project",
            "--name",
            "x",
            "--path",
            "-bad",
            "--owner",
            "alice",
        ][..],
        &[
            "create-project",
            "--name",
            "x",
            "--namespace",
            "a b",
            "--owner",
            "alice",
        ][..],
        &["create-user", "--username", "a b"][..],
    ] {
        assert!(admin_cli(d, args).await.is_err(), "{args:?}");
    }
}

/// A blank `FAULTLINE_ADMIN_TOKEN` would be registered, could never log in, and would stop the
/// first start from generating a usable token: the server must refuse to start instead.
#[tokio::test]
async fn a_blank_configured_admin_token_stops_start_up() {
    let dir = tempfile::tempdir().expect("dir");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_faultline"))
        .arg("--data-dir")
        .arg(dir.path())
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("FAULTLINE_ADMIN_TOKEN", "")
        .env("RUST_BACKTRACE", "0")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start faultline");
    let status = match tokio::time::timeout(std::time::Duration::from_secs(5), child.wait()).await {
        Ok(status) => status.expect("wait"),
        Err(_) => {
            child
                .kill()
                .await
                .expect("stop the server this test started");
            panic!("faultline started with a blank admin token");
        }
    };
    assert!(!status.success());
    assert!(!dir.path().join(faultline::app::INITIAL_TOKEN_FILE).exists());
}

/// Adding an Owner takes an Owner; so does removing one. Otherwise a Maintainer could remove
/// every Owner and hold the project alone.
#[tokio::test]
async fn only_owners_and_administrators_remove_owners() {
    let app = spawn_app().await;
    let id = app.project_id("guarded", "group").await;
    let owner = app.member("owner", id, Some(50)).await;
    let second = app.member("second-owner", id, Some(50)).await;
    let maintainer = app.member("maintainer", id, Some(40)).await;
    let other = app.member("other-maintainer", id, Some(40)).await;
    let path = |u: i64| format!("/api/v4/projects/{id}/members/{u}");
    let cases: Vec<(&str, i64, u16, Value)> = vec![
        (&maintainer.token, owner.id, 403, forbidden()),
        (&maintainer.token, 1, 403, forbidden()),
        (&maintainer.token, other.id, 204, Value::Null),
        (&owner.token, second.id, 204, Value::Null),
        (&app.admin_token, owner.id, 204, Value::Null),
    ];
    for (token, target, status, body) in cases {
        check(
            &app,
            "DELETE",
            &path(target),
            Some(token),
            Body::None,
            status,
            &body,
        )
        .await;
    }
    let r = app
        .send(
            "GET",
            &format!("/api/v4/projects/{id}/members"),
            Auth::Private(&app.admin_token),
            Body::None,
        )
        .await;
    let left: Vec<&str> = r
        .body
        .as_array()
        .expect("members")
        .iter()
        .map(|m| m["username"].as_str().expect("name"))
        .collect();
    assert_eq!(left, ["root", "maintainer"]);
}

#[tokio::test]
async fn listing_projects_as_gitlab_does() {
    let app = spawn_app().await;
    let shop = app.create_project("Shop", "acme").await;
    let api = app.create_project("API", "acme").await;
    let blog = app.create_project("Blog", "other").await;
    let id = |p: &Value| p["id"].as_i64().expect("id");
    let alice = app.member("alice", id(&shop), Some(20)).await;
    app.add_member(id(&blog), alice.id, 10).await;
    let names = |r: &common::Resp| -> Vec<String> {
        r.body
            .as_array()
            .expect("a list")
            .iter()
            .map(|p| p["name"].as_str().expect("name").to_owned())
            .collect()
    };
    let list = |query: &'static str, token: String| {
        let app = &app;
        async move {
            app.send(
                "GET",
                &format!("/api/v4/projects{query}"),
                Auth::Private(&token),
                Body::None,
            )
            .await
        }
    };

    // An administrator sees every project, newest first, in the project shape.
    let r = list("", app.admin_token.clone()).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(names(&r), ["Blog", "API", "Shop"]);
    assert_eq!(
        r.body[2],
        project_body(&app, &r.body[2], id(&shop), "Shop", "shop", "acme")
    );
    assert_eq!(r.header("x-total"), Some("3"));
    // A member sees the projects they belong to, whatever their role; nobody else's.
    let r = list("", alice.token.clone()).await;
    assert_eq!(names(&r), ["Blog", "Shop"]);
    let r = list("?membership=true", app.admin_token.clone()).await;
    assert_eq!(
        names(&r),
        ["Blog", "API", "Shop"],
        "the admin created (owns) all three"
    );
    let bob = app.create_user("bob", false).await;
    let r = list("?membership=true&simple=true", bob.token.clone()).await;
    assert_eq!((r.status, r.body.clone()), (200, json!([])));
    let _ = api;

    // Search, order and GitLab's pagination.
    assert_eq!(
        names(&list("?search=SHO", app.admin_token.clone()).await),
        ["Shop"]
    );
    assert_eq!(
        names(&list("?search=acme", app.admin_token.clone()).await),
        ["API", "Shop"]
    );
    assert_eq!(
        names(&list("?order_by=name&sort=asc", app.admin_token.clone()).await),
        ["API", "Blog", "Shop"]
    );
    let r = list("?per_page=2&page=2", app.admin_token.clone()).await;
    assert_eq!(names(&r), ["Shop"]);
    assert_eq!(r.header("x-total-pages"), Some("2"));
    assert_eq!(r.header("x-prev-page"), Some("1"));
    let r = list("?order_by=stars", app.admin_token.clone()).await;
    assert_eq!(
        (r.status, r.body),
        (
            400,
            json!({"error": "order_by does not have a valid value"})
        )
    );
    let r = list("?membership=maybe", app.admin_token.clone()).await;
    assert_eq!(
        (r.status, r.body),
        (400, json!({"error": "membership is invalid"}))
    );
    let r = app
        .send("GET", "/api/v4/projects", Auth::None, Body::None)
        .await;
    assert_eq!((r.status, r.body), (401, unauthorized()));
}
