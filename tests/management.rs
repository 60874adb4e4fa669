//! Black-box tests across the whole management API: every route once, authentication and the
//! role matrix on the settings and client-key routes, projects addressed by URL-encoded path,
//! GitLab's own curl examples run as printed, and the operational endpoints.

mod common;

use common::{
    check, forbidden, read_resp, setting, spawn_app, unauthorized, Auth, Body, TestApp, TestUser,
};
use serde_json::{json, Value};

fn project_not_found() -> Value {
    json!({"message": "404 Project Not Found"})
}

/// GitLab's answer when a `read_api` token attempts a write.
fn insufficient_scope() -> Value {
    json!({
        "error": "insufficient_scope",
        "error_description": "The request requires higher privileges than provided by the access token.",
        "scope": "api",
    })
}

#[tokio::test]
async fn every_route_answers() {
    let app = spawn_app().await;
    let admin = Auth::Private(&app.admin_token);

    // Identity.
    let me = app.send("GET", "/api/v4/user", admin, Body::None).await;
    let root_user = json!({
        "id": 1, "username": "root", "name": "Administrator", "email": null, "state": "active",
        "is_admin": true, "created_at": me.body["created_at"],
    });
    assert_eq!((me.status, &me.body), (200, &root_user));
    let user = app.create_user("alice", false).await;
    let p = app.create_project("Route Check", "team").await;
    let id = p["id"].as_i64().expect("id");
    check(
        &app,
        "GET",
        &format!("/api/v4/projects/{id}"),
        admin,
        Body::None,
        200,
        &p,
    )
    .await;
    let members = format!("/api/v4/projects/{id}/members");
    let alice = json!({"id": user.id, "username": "alice", "name": "alice", "state": "active", "access_level": 40});
    check(
        &app,
        "POST",
        &members,
        admin,
        Body::Json(json!({"user_id": user.id, "access_level": 40})),
        201,
        &alice,
    )
    .await;
    let root = json!({"id": 1, "username": "root", "name": "Administrator", "state": "active", "access_level": 50});
    check(
        &app,
        "GET",
        &members,
        admin,
        Body::None,
        200,
        &json!([root, alice]),
    )
    .await;

    // Settings and keys, as the new Maintainer.
    let alice_auth = Auth::Private(&user.token);
    let settings = format!("/api/v4/projects/{id}/error_tracking/settings");
    for (method, query, expected) in [
        ("PUT", "?active=true&integrated=false", setting(true, false)),
        ("GET", "", setting(true, false)),
        ("PATCH", "?active=false", setting(false, false)),
    ] {
        let path = format!("{settings}{query}");
        check(&app, method, &path, alice_auth, Body::None, 200, &expected).await;
    }
    let keys = format!("/api/v4/projects/{id}/error_tracking/client_keys");
    check(&app, "GET", &keys, alice_auth, Body::None, 200, &json!([])).await;
    let key = app.send("POST", &keys, alice_auth, Body::None).await;
    let public_key = key.body["public_key"].as_str().unwrap_or_default();
    let expected_key = json!({
        "id": key.body["id"].as_i64().expect("integer id"),
        "active": true,
        "public_key": public_key,
        "sentry_dsn": format!("http://{public_key}@{}/errortracking/api/v1/projects/{id}", app.server.addr),
    });
    assert_eq!((key.status, &key.body), (201, &expected_key));
    assert!(
        public_key.len() == 37 && public_key.starts_with("glet_"),
        "{public_key}"
    );
    for (method, path, expected) in [
        ("GET", keys.clone(), json!([key.body])),
        ("DELETE", format!("{keys}/{}", key.body["id"]), key.body),
    ] {
        check(&app, method, &path, alice_auth, Body::None, 200, &expected).await;
    }

    // Members and tokens, then the project itself.
    check(
        &app,
        "DELETE",
        &format!("{members}/{}", user.id),
        admin,
        Body::None,
        204,
        &Value::Null,
    )
    .await;
    check(
        &app,
        "GET",
        &settings,
        alice_auth,
        Body::None,
        404,
        &project_not_found(),
    )
    .await;
    let tokens = app
        .send(
            "GET",
            "/api/v4/personal_access_tokens",
            alice_auth,
            Body::None,
        )
        .await;
    let first = &tokens.body[0];
    let listed = json!([{
        "id": first["id"].as_i64().expect("token id"), "name": "test", "revoked": false,
        "created_at": first["created_at"], "scopes": ["api"], "user_id": user.id,
        "active": true, "expires_at": null,
    }]);
    assert_eq!((tokens.status, &tokens.body), (200, &listed));
    let token_id = tokens.body[0]["id"].as_i64().expect("token id");
    check(
        &app,
        "DELETE",
        &format!("/api/v4/personal_access_tokens/{token_id}"),
        alice_auth,
        Body::None,
        204,
        &Value::Null,
    )
    .await;
    check(
        &app,
        "GET",
        "/api/v4/user",
        alice_auth,
        Body::None,
        401,
        &unauthorized(),
    )
    .await;
    app.delete_project(id).await;
    check(
        &app,
        "GET",
        &format!("/api/v4/projects/{id}"),
        admin,
        Body::None,
        404,
        &project_not_found(),
    )
    .await;

    // Unknown routes, inside and outside the API.
    let not_found = json!({"message": "404 Not Found"});
    for path in [
        "/nope",
        "/api/v4/nope",
        "/api/v4/projects/1/error_tracking/nope",
        "/api/v4/projects/errors/sub/project/error_tracking/settings",
        "/errortracking",
    ] {
        check(&app, "GET", path, admin, Body::None, 404, &not_found).await;
        check(&app, "GET", path, Auth::None, Body::None, 404, &not_found).await;
    }
}

#[tokio::test]
async fn health_readiness_and_metrics() {
    let app = spawn_app().await;
    let id = app.project_id("metered", "errors").await;
    for (path, status, expected) in [
        ("/-/health".to_owned(), 200, json!({"status": "ok"})),
        (
            "/-/readiness".to_owned(),
            200,
            json!({"status": "ok", "database": "ok"}),
        ),
        (
            format!("/api/v4/projects/{id}/error_tracking/settings"),
            401,
            unauthorized(),
        ),
        (
            "/nowhere".to_owned(),
            404,
            json!({"message": "404 Not Found"}),
        ),
    ] {
        check(
            &app,
            "GET",
            &path,
            Auth::None,
            Body::None,
            status,
            &expected,
        )
        .await;
    }

    let r = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .expect("metrics");
    assert_eq!(r.status(), 200);
    let text = r.text().await.expect("text");
    let line = |route: &str, method: &str, status: u16| {
        format!("faultline_http_requests_total{{route=\"{route}\",method=\"{method}\",status=\"{status}\"}} 1")
    };
    for expected in [
        line("/-/health", "GET", 200),
        line("/api/v4/projects", "POST", 201),
        line("/api/v4/projects/{id}/error_tracking/settings", "GET", 401),
    ] {
        assert!(
            text.lines().any(|l| l == expected),
            "missing {expected:?} in\n{text}"
        );
    }
    // Raw paths (and so project paths or keys) never become label values.
    assert!(!text.contains("/nowhere"), "{text}");
    assert!(!text.contains(&format!("/api/v4/projects/{id}/")), "{text}");
}

/// Which answer a caller gets on the settings and client-key routes.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Expect {
    Ok,
    /// `read_api`: reads pass, writes are refused for scope.
    ReadOnly,
    Unauthorized,
    Forbidden,
    NotFound,
}

#[derive(Debug, Clone, Copy)]
enum Route {
    GetSettings,
    PutSettings,
    PatchSettings,
    ListKeys,
    CreateKey,
    DeleteKey,
}

const ROUTES: [Route; 6] = [
    Route::GetSettings,
    Route::PutSettings,
    Route::PatchSettings,
    Route::ListKeys,
    Route::CreateKey,
    Route::DeleteKey,
];

impl Route {
    fn is_write(self) -> bool {
        !matches!(self, Route::GetSettings | Route::ListKeys)
    }
}

/// Calls `route` on project `project` (a numeric id or an encoded path) and checks the answer
/// `expect` stands for. Successful writes are checked against the state they must produce.
async fn check_route(
    app: &TestApp,
    project: &str,
    numeric_id: i64,
    route: Route,
    auth: Auth<'_>,
    expect: Expect,
) {
    let settings = format!("/api/v4/projects/{project}/error_tracking/settings");
    let keys = format!("/api/v4/projects/{project}/error_tracking/client_keys");
    let refused = match expect {
        Expect::Ok => None,
        Expect::ReadOnly if route.is_write() => Some((403, insufficient_scope())),
        Expect::ReadOnly => None,
        Expect::Unauthorized => Some((401, unauthorized())),
        Expect::Forbidden => Some((403, forbidden())),
        Expect::NotFound => Some((404, project_not_found())),
    };
    // A key to delete, made by the administrator, so that a refusal is known not to be a 404
    // for a missing key.
    let victim = match route {
        Route::DeleteKey => Some(app.create_key(numeric_id).await),
        _ => None,
    };
    let key_route = matches!(route, Route::ListKeys | Route::CreateKey | Route::DeleteKey);
    let keys_before = if key_route {
        app.keys(numeric_id).await
    } else {
        Vec::new()
    };
    let (method, path) = match route {
        Route::GetSettings => ("GET", settings.clone()),
        Route::PutSettings => ("PUT", format!("{settings}?active=true&integrated=false")),
        Route::PatchSettings => ("PATCH", format!("{settings}?active=false")),
        Route::ListKeys => ("GET", keys.clone()),
        Route::CreateKey => ("POST", keys.clone()),
        Route::DeleteKey => (
            "DELETE",
            format!("{keys}/{}", victim.as_ref().expect("victim")["id"]),
        ),
    };
    let r = app.send(method, &path, auth, Body::None).await;
    let context = format!("{route:?} on {project} as {auth:?} expecting {expect:?}");
    if let Some((status, body)) = refused {
        assert_eq!((r.status, &r.body), (status, &body), "{context}");
        // A refused write changed nothing.
        match route {
            Route::CreateKey | Route::DeleteKey => {
                assert_eq!(app.keys(numeric_id).await, keys_before, "{context}")
            }
            Route::PutSettings | Route::PatchSettings => {
                let now = app
                    .send(
                        "GET",
                        &format!("/api/v4/projects/{numeric_id}/error_tracking/settings"),
                        Auth::Private(&app.admin_token),
                        Body::None,
                    )
                    .await;
                assert_eq!(
                    (now.status, &now.body),
                    (200, &setting(true, false)),
                    "{context}"
                );
            }
            Route::GetSettings | Route::ListKeys => {}
        }
        return;
    }
    match route {
        // Every success case leaves the setting as (true, false) after a PUT, so GET and PATCH
        // have one known answer; the matrix PUTs before any GET or PATCH.
        Route::GetSettings | Route::PutSettings => {
            assert_eq!(
                (r.status, &r.body),
                (200, &setting(true, false)),
                "{context}"
            )
        }
        Route::PatchSettings => {
            assert_eq!(
                (r.status, &r.body),
                (200, &setting(false, false)),
                "{context}"
            );
            // Put it back for the next caller.
            app.set_setting(numeric_id, "PUT", "active=true&integrated=false")
                .await;
        }
        Route::ListKeys => assert_eq!((r.status, &r.body), (200, &json!(keys_before)), "{context}"),
        Route::CreateKey => {
            assert_eq!(r.status, 201, "{context}: {}", r.body);
            let mut expected = keys_before;
            expected.push(r.body.clone());
            assert_eq!(app.keys(numeric_id).await, expected, "{context}");
        }
        Route::DeleteKey => {
            let victim = victim.expect("victim");
            assert_eq!((r.status, &r.body), (200, &victim), "{context}");
            let expected: Vec<Value> = keys_before.into_iter().filter(|k| k != &victim).collect();
            assert_eq!(app.keys(numeric_id).await, expected, "{context}");
        }
    }
}

struct Cast {
    guest: TestUser,
    reporter: TestUser,
    developer: TestUser,
    maintainer: TestUser,
    owner: TestUser,
    outsider: TestUser,
    other_admin: TestUser,
    read_api: String,
    read_api_guest: String,
    revoked: String,
    expired: String,
    expires_today: String,
    expires_tomorrow: String,
}

/// Users at every access level on `project`, plus tokens in every state.
async fn cast(app: &TestApp, project: i64) -> Cast {
    let guest = app.member("guest", project, Some(10)).await;
    let reporter = app.member("reporter", project, Some(20)).await;
    let developer = app.member("developer", project, Some(30)).await;
    let maintainer = app.member("maintainer", project, Some(40)).await;
    let owner = app.member("owner", project, Some(50)).await;
    let outsider = app.member("outsider", project, None).await;
    let other_admin = app.create_user("other-admin", true).await;
    let read_api = app.create_token(maintainer.id, &["read_api"], None).await;
    let read_api_guest = app.create_token(guest.id, &["read_api"], None).await;
    let revoked = app.create_token(maintainer.id, &["api"], None).await;
    let revoked_id = app.tokens_of(maintainer.id).await.last().expect("token")["id"]
        .as_i64()
        .expect("id");
    let r = app
        .send(
            "DELETE",
            &format!("/api/v4/personal_access_tokens/{revoked_id}"),
            Auth::Private(&app.admin_token),
            Body::None,
        )
        .await;
    assert_eq!(r.status, 204);
    let today = chrono::Utc::now().date_naive();
    let day = |d: chrono::NaiveDate| d.format("%Y-%m-%d").to_string();
    // The API refuses a date that is not in the future, as GitLab does.
    for date in ["2001-01-01".to_owned(), day(today)] {
        let r = app
            .send(
                "POST",
                &format!("/api/v4/users/{}/personal_access_tokens", maintainer.id),
                Auth::Private(&app.admin_token),
                Body::Json(json!({"name": "old", "scopes": ["api"], "expires_at": date})),
            )
            .await;
        assert_eq!(
            (r.status, r.body),
            (
                400,
                json!({"error": "expires_at must be a date after today"})
            ),
            "{date}"
        );
    }
    let expired = app
        .create_expired_token(
            maintainer.id,
            chrono::NaiveDate::from_ymd_opt(2001, 1, 1).expect("date"),
        )
        .await;
    let expires_today = app.create_expired_token(maintainer.id, today).await;
    let expires_tomorrow = app
        .create_token(
            maintainer.id,
            &["api"],
            Some(&day(today.succ_opt().expect("tomorrow"))),
        )
        .await;
    Cast {
        guest,
        reporter,
        developer,
        maintainer,
        owner,
        outsider,
        other_admin,
        read_api,
        read_api_guest,
        revoked,
        expired,
        expires_today,
        expires_tomorrow,
    }
}

#[tokio::test]
async fn role_matrix_on_settings_and_client_keys() {
    let app = spawn_app().await;
    let id = app.project_id("guarded", "errors").await;
    let c = cast(&app, id).await;
    // Settings must exist for GET and PATCH to answer 200.
    app.set_setting(id, "PUT", "active=true&integrated=false")
        .await;

    let callers: Vec<(&str, Option<&str>, Expect)> = vec![
        ("no token", None, Expect::Unauthorized),
        (
            "unknown token",
            Some("glpat-0000000000000000000000000000000000000000"),
            Expect::Unauthorized,
        ),
        ("empty token", Some(""), Expect::Unauthorized),
        ("revoked", Some(&c.revoked), Expect::Unauthorized),
        ("expired", Some(&c.expired), Expect::Unauthorized),
        // GitLab tokens expire at the start of their expiry date.
        (
            "expires today",
            Some(&c.expires_today),
            Expect::Unauthorized,
        ),
        ("expires tomorrow", Some(&c.expires_tomorrow), Expect::Ok),
        ("guest", Some(&c.guest.token), Expect::Forbidden),
        ("reporter", Some(&c.reporter.token), Expect::Forbidden),
        ("developer", Some(&c.developer.token), Expect::Forbidden),
        ("maintainer", Some(&c.maintainer.token), Expect::Ok),
        ("owner", Some(&c.owner.token), Expect::Ok),
        ("read_api maintainer", Some(&c.read_api), Expect::ReadOnly),
        ("non-member", Some(&c.outsider.token), Expect::NotFound),
        ("administrator", Some(&app.admin_token), Expect::Ok),
        (
            "another administrator",
            Some(&c.other_admin.token),
            Expect::Ok,
        ),
    ];
    for route in ROUTES {
        for (_who, token, expect) in &callers {
            let auth = match token {
                Some(t) => Auth::Private(t),
                None => Auth::None,
            };
            check_route(&app, &id.to_string(), id, route, auth, *expect).await;
        }
    }
    // A read_api Guest: the scope allows the read, the role does not.
    for route in [Route::GetSettings, Route::ListKeys] {
        let auth = Auth::Private(&c.read_api_guest);
        check_route(&app, &id.to_string(), id, route, auth, Expect::Forbidden).await;
    }
}

#[tokio::test]
async fn tokens_are_accepted_in_header_bearer_and_query() {
    let app = spawn_app().await;
    let id = app.project_id("styles", "errors").await;
    let c = cast(&app, id).await;
    app.set_setting(id, "PUT", "active=true&integrated=false")
        .await;
    let styles: [fn(&str) -> Auth<'_>; 3] = [
        |t| Auth::Private(t),
        |t| Auth::Bearer(t),
        |t| Auth::Query(t),
    ];
    let cases: Vec<(&str, Expect)> = vec![
        (&c.maintainer.token, Expect::Ok),
        (&app.admin_token, Expect::Ok),
        (&c.read_api, Expect::ReadOnly),
        (&c.developer.token, Expect::Forbidden),
        (&c.outsider.token, Expect::NotFound),
        (&c.revoked, Expect::Unauthorized),
        (&c.expired, Expect::Unauthorized),
        ("glpat-unknown", Expect::Unauthorized),
    ];
    for style in styles {
        for (token, expect) in &cases {
            // Every route for the callers that get through; one read and one write for the
            // refusals, which are decided before the route matters.
            let routes: &[Route] = match expect {
                Expect::Ok | Expect::ReadOnly => &ROUTES,
                _ => &[Route::GetSettings, Route::CreateKey],
            };
            for route in routes {
                check_route(&app, &id.to_string(), id, *route, style(token), *expect).await;
            }
        }
    }
    // `Bearer` is case-insensitive; another scheme is no token at all.
    let settings = format!("/api/v4/projects/{id}/error_tracking/settings");
    for (scheme, status, expected) in [
        ("bearer", 200, setting(true, false)),
        ("Basic", 401, unauthorized()),
    ] {
        let r = app
            .client
            .get(app.url(&settings))
            .header("Authorization", format!("{scheme} {}", c.maintainer.token))
            .send()
            .await
            .expect("send");
        assert_eq!(r.status(), status);
        assert_eq!(r.json::<Value>().await.expect("json"), expected);
    }
}

#[tokio::test]
async fn projects_are_found_by_encoded_full_path() {
    let app = spawn_app().await;
    let p = app.create_project("project", "group/sub").await;
    assert_eq!(p["path_with_namespace"], json!("group/sub/project"));
    let id = p["id"].as_i64().expect("id");
    let c = cast(&app, id).await;
    let encoded = "group%2Fsub%2Fproject";
    // The setting must exist before GET and PATCH, as in the numeric matrix.
    let r = app
        .send(
            "PUT",
            &format!(
                "/api/v4/projects/{encoded}/error_tracking/settings?active=true&integrated=false"
            ),
            Auth::Private(&c.maintainer.token),
            Body::None,
        )
        .await;
    assert_eq!((r.status, &r.body), (200, &setting(true, false)));
    for route in ROUTES {
        for (token, expect) in [
            (c.maintainer.token.as_str(), Expect::Ok),
            (app.admin_token.as_str(), Expect::Ok),
            (c.developer.token.as_str(), Expect::Forbidden),
            (c.outsider.token.as_str(), Expect::NotFound),
            (c.read_api.as_str(), Expect::ReadOnly),
        ] {
            check_route(&app, encoded, id, route, Auth::Private(token), expect).await;
        }
    }
    // The server saw the path still encoded: its pagination links repeat it verbatim.
    let r = app
        .send(
            "GET",
            &format!("/api/v4/projects/{encoded}/error_tracking/client_keys"),
            Auth::Private(&c.maintainer.token),
            Body::None,
        )
        .await;
    let link = r.header("link").expect("link");
    assert!(
        link.contains(&format!(
            "{}/api/v4/projects/{encoded}/error_tracking/client_keys?page=1&per_page=20",
            app.base
        )),
        "{link}"
    );
    // Project routes take the encoded path too.
    check(
        &app,
        "GET",
        &format!("/api/v4/projects/{encoded}"),
        Auth::Private(&c.maintainer.token),
        Body::None,
        200,
        &p,
    )
    .await;
    // Unknown paths, and unknown numeric ids, are "Project Not Found" on every route.
    for project in ["group%2Fsub%2Fnope", "group%2Fnope", "nope", "999999", "0"] {
        for route in ROUTES {
            for token in [app.admin_token.as_str(), c.maintainer.token.as_str()] {
                let (method, suffix) = match route {
                    Route::GetSettings => ("GET", "settings"),
                    Route::PutSettings => ("PUT", "settings?active=true&integrated=true"),
                    Route::PatchSettings => ("PATCH", "settings?active=true"),
                    Route::ListKeys => ("GET", "client_keys"),
                    Route::CreateKey => ("POST", "client_keys"),
                    Route::DeleteKey => ("DELETE", "client_keys/1"),
                };
                let path = format!("/api/v4/projects/{project}/error_tracking/{suffix}");
                check(
                    &app,
                    method,
                    &path,
                    Auth::Private(token),
                    Body::None,
                    404,
                    &project_not_found(),
                )
                .await;
            }
        }
    }
}

/// Runs GitLab's documented curl command lines as printed (only the host and ids differ),
/// with `curl` itself when it is installed.
async fn curl(app: &TestApp, args: &[&str]) -> Option<(u16, Value)> {
    let mut cmd = tokio::process::Command::new("curl");
    cmd.args(["--silent", "--show-error", "--write-out", "\n%{http_code}"]);
    cmd.args(args);
    let out = match cmd.output().await {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!("curl is not installed; the seed examples run through reqwest only");
            return None;
        }
        Err(e) => panic!("running curl: {e}"),
    };
    assert!(
        out.status.success(),
        "curl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("utf-8");
    let (body, code) = text.rsplit_once('\n').expect("status line");
    let _ = app;
    let body = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(body).expect("JSON body")
    };
    Some((code.parse().expect("status"), body))
}

#[tokio::test]
async fn seed_curl_examples_work_as_printed() {
    let app = spawn_app().await;
    let id = app.project_id("seed", "errors").await;
    let token_header = format!("PRIVATE-TOKEN: {}", app.admin_token);
    let settings = app.url(&format!("/api/v4/projects/{id}/error_tracking/settings"));
    let keys = app.url(&format!("/api/v4/projects/{id}/error_tracking/client_keys"));

    // Each example: the curl arguments, and the same request through reqwest.
    struct Example {
        args: Vec<String>,
        method: &'static str,
        url: String,
        json_content_type: bool,
    }
    let example = |args: Vec<String>, method, url: String, json_content_type| Example {
        args,
        method,
        url,
        json_content_type,
    };
    let put_url = format!("{settings}?active=true&integrated=true");
    let patch_url = format!("{settings}?active=true");
    let get = example(
        vec![
            "--header".into(),
            token_header.clone(),
            "--url".into(),
            settings.clone(),
        ],
        "GET",
        settings.clone(),
        false,
    );
    let put = example(
        vec![
            "--request".into(),
            "PUT".into(),
            "--header".into(),
            token_header.clone(),
            "--url".into(),
            put_url.clone(),
        ],
        "PUT",
        put_url,
        false,
    );
    let patch = example(
        vec![
            "--request".into(),
            "PATCH".into(),
            "--header".into(),
            token_header.clone(),
            "--url".into(),
            patch_url.clone(),
        ],
        "PATCH",
        patch_url,
        false,
    );
    let list = example(
        vec![
            "--header".into(),
            token_header.clone(),
            "--url".into(),
            keys.clone(),
        ],
        "GET",
        keys.clone(),
        false,
    );
    let create = example(
        vec![
            "--request".into(),
            "POST".into(),
            "--header".into(),
            token_header.clone(),
            "--header".into(),
            "Content-Type: application/json".into(),
            "--url".into(),
            keys.clone(),
        ],
        "POST",
        keys.clone(),
        true,
    );

    let run = |e: Example| {
        let app = &app;
        async move {
            let args: Vec<&str> = e.args.iter().map(String::as_str).collect();
            let via_curl = curl(app, &args).await;
            let mut req = app
                .client
                .request(
                    reqwest::Method::from_bytes(e.method.as_bytes()).expect("method"),
                    reqwest::Url::parse(&e.url).expect("url"),
                )
                .header("PRIVATE-TOKEN", &app.admin_token);
            if e.json_content_type {
                req = req.header("Content-Type", "application/json");
            }
            let r = read_resp(req.send().await.expect("send")).await;
            (via_curl, (r.status, r.body))
        }
    };
    let not_found = json!({"message": "404 Error Tracking Setting Not Found"});

    // Before any PUT, GET says the setting is missing.
    let (c, r) = run(example(get.args.clone(), "GET", get.url.clone(), false)).await;
    for got in c.into_iter().chain([r]) {
        assert_eq!(got, (404, not_found.clone()));
    }
    // PUT, with curl first; the reqwest twin then overwrites with the same values.
    let (c, r) = run(put).await;
    for got in c.into_iter().chain([r]) {
        assert_eq!(got, (200, setting(true, true)));
    }
    let (c, r) = run(get).await;
    for got in c.into_iter().chain([r]) {
        assert_eq!(got, (200, setting(true, true)));
    }
    let (c, r) = run(patch).await;
    for got in c.into_iter().chain([r]) {
        assert_eq!(got, (200, setting(true, true)));
    }
    // The PUT made the first key.
    let first = app.keys(id).await;
    assert_eq!(first.len(), 1);
    let (c, r) = run(list).await;
    for got in c.into_iter().chain([r]) {
        assert_eq!(got, (200, json!(first)));
    }
    // POST with a JSON content type and no body: 201 and a key each time.
    let (c, r) = run(create).await;
    let mut made = Vec::new();
    for (status, key) in c.into_iter().chain([r]) {
        assert_eq!(status, 201, "{key}");
        made.push(key);
    }
    let mut expected = first.clone();
    expected.extend(made.iter().cloned());
    assert_eq!(app.keys(id).await, expected);
    // DELETE each key the POSTs made.
    for key in made {
        let url = format!("{keys}/{}", key["id"]);
        let args = [
            "--request",
            "DELETE",
            "--header",
            &token_header,
            "--url",
            &url,
        ];
        let got = match curl(&app, &args).await {
            Some(got) => got,
            None => {
                let r = app
                    .delete_key(id, key["id"].as_i64().expect("key id"))
                    .await;
                (r.status, r.body)
            }
        };
        assert_eq!(got, (200, key));
    }
    assert_eq!(app.keys(id).await, first);
}
