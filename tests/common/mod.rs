//! Shared test harness: starts the real server on 127.0.0.1:0 with a temporary data directory
//! and offers a few helpers to set up users, projects, tokens and keys over the HTTP API.
//!
//! The backend comes from the environment, so the same suite runs on both:
//! `FAULTLINE_TEST_BACKEND=postgres` with `FAULTLINE_TEST_POSTGRES` (a superuser URL to a
//! cluster, as `scripts/throwaway-postgres start` prints) gives every test app a fresh
//! PostgreSQL database; unset, or `sqlite`, the embedded default. Tests that look at stored rows
//! do it through [`Db`], which speaks to either.
#![allow(dead_code)]

pub mod gitlab;
pub mod process;
pub mod receiver;

use std::sync::Arc;

use faultline::app::{self, Server};
use faultline::config::Config;
use rusqlite::Connection;
use serde_json::{json, Value};

pub struct TestApp {
    pub server: Server,
    pub base: String,
    pub admin_token: String,
    pub client: reqwest::Client,
    pub dir: tempfile::TempDir,
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// Starts a server after `tweak` adjusted its configuration.
pub async fn spawn_app_with(tweak: impl FnOnce(&mut Config)) -> TestApp {
    spawn_app_with_clock(tweak, Arc::new(faultline::clock::SystemClock::new())).await
}

/// [`spawn_app_with`], with the clock the server's caches read (a `ManualClock` the test moves).
pub async fn spawn_app_with_clock(
    tweak: impl FnOnce(&mut Config),
    clock: Arc<dyn faultline::clock::Clock>,
) -> TestApp {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = Config {
        listen: "127.0.0.1:0".parse().expect("addr"),
        data_dir: dir.path().to_path_buf(),
        ..Config::default()
    };
    use_test_database(&mut config, dir.path()).await;
    tweak(&mut config);
    let server = app::spawn_with_clock(config, clock)
        .await
        .expect("server starts");
    let admin_token = server
        .initial_admin_token
        .clone()
        .expect("first start creates an admin token");
    let base = format!("http://{}", server.addr);
    TestApp {
        server,
        base,
        admin_token,
        client: reqwest::Client::new(),
        dir,
    }
}

/// A user with a token, as created through the API.
#[derive(Debug, Clone)]
pub struct TestUser {
    pub id: i64,
    pub username: String,
    pub token: String,
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// Has the writer write the error counts it keeps in memory, as every read API request does
    /// first; tests that read `errors` straight from the database file call this before.
    pub async fn settle_counts(&self) {
        self.server
            .state
            .writer
            .settle_counts()
            .await
            .expect("counts written");
    }

    /// Sends a request with a `PRIVATE-TOKEN` header and returns status and JSON body
    /// (`Value::Null` for an empty body).
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut req = self.client.request(method, self.url(path));
        if let Some(t) = token {
            req = req.header("PRIVATE-TOKEN", t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = read_resp(req.send().await.expect("request sent")).await;
        (r.status, r.body)
    }

    pub async fn create_user(&self, username: &str, admin: bool) -> TestUser {
        let (s, u) = self
            .call(
                "POST",
                "/api/v4/users",
                Some(&self.admin_token),
                Some(json!({"username": username, "name": username, "admin": admin})),
            )
            .await;
        assert_eq!(s, 201, "create user: {u}");
        let id = u["id"].as_i64().expect("user id");
        let token = self.create_token(id, &["api"], None).await;
        TestUser {
            id,
            username: username.to_owned(),
            token,
        }
    }

    pub async fn create_token(
        &self,
        user_id: i64,
        scopes: &[&str],
        expires_at: Option<&str>,
    ) -> String {
        let mut body = json!({"name": "test", "scopes": scopes});
        if let Some(e) = expires_at {
            body["expires_at"] = json!(e);
        }
        let (s, t) = self
            .call(
                "POST",
                &format!("/api/v4/users/{user_id}/personal_access_tokens"),
                Some(&self.admin_token),
                Some(body),
            )
            .await;
        assert_eq!(s, 201, "create token: {t}");
        t["token"].as_str().expect("token").to_owned()
    }

    /// A token that expired (or expires today): the API refuses to make one, so it is written
    /// straight through the server's store, as time passing would leave it.
    pub async fn create_expired_token(
        &self,
        user_id: i64,
        expires_at: chrono::NaiveDate,
    ) -> String {
        let secret = faultline::domain::tokens::generate_token();
        self.server
            .state
            .store
            .create_token(faultline::store::NewToken {
                user_id,
                name: "expired".into(),
                scopes: vec!["api".into()],
                expires_at: Some(expires_at),
                digest: faultline::domain::tokens::digest(&secret),
            })
            .await
            .expect("token stored");
        secret
    }

    /// Creates a project as the administrator in `namespace` and returns its JSON.
    pub async fn create_project(&self, name: &str, namespace: &str) -> Value {
        let (s, p) = self
            .call(
                "POST",
                "/api/v4/projects",
                Some(&self.admin_token),
                Some(json!({"name": name, "namespace_path": namespace})),
            )
            .await;
        assert_eq!(s, 201, "create project: {p}");
        p
    }

    pub async fn add_member(&self, project_id: i64, user_id: i64, level: i64) {
        let (s, m) = self
            .call(
                "POST",
                &format!("/api/v4/projects/{project_id}/members"),
                Some(&self.admin_token),
                Some(json!({"user_id": user_id, "access_level": level})),
            )
            .await;
        assert_eq!(s, 201, "add member: {m}");
    }

    /// Creates a project with integrated error tracking switched on and returns
    /// (project id, first key's public key, its DSN).
    pub async fn project_with_key(&self, name: &str) -> (i64, String, String) {
        let p = self.create_project(name, "errors").await;
        let id = p["id"].as_i64().expect("project id");
        self.set_setting(id, "PUT", "active=true&integrated=true")
            .await;
        let (s, keys) = self
            .call(
                "GET",
                &format!("/api/v4/projects/{id}/error_tracking/client_keys"),
                Some(&self.admin_token),
                None,
            )
            .await;
        assert_eq!(s, 200);
        let key = &keys[0];
        (
            id,
            key["public_key"].as_str().expect("key").to_owned(),
            key["sentry_dsn"].as_str().expect("dsn").to_owned(),
        )
    }
}

/// Starts a server on an existing data directory (a restart), after `tweak` adjusted its
/// configuration. Unlike [`spawn_app_with`], it does not expect a new administrator token.
pub async fn spawn_on_dir(dir: &std::path::Path, tweak: impl FnOnce(&mut Config)) -> Server {
    let mut config = Config {
        listen: "127.0.0.1:0".parse().expect("addr"),
        data_dir: dir.to_path_buf(),
        ..Config::default()
    };
    use_test_database(&mut config, dir).await;
    tweak(&mut config);
    app::spawn(config).await.expect("server starts")
}

/// How a request carries its personal access token.
#[derive(Debug, Clone, Copy)]
pub enum Auth<'a> {
    None,
    /// `PRIVATE-TOKEN: <token>`
    Private(&'a str),
    /// `Authorization: Bearer <token>`
    Bearer(&'a str),
    /// `?private_token=<token>`
    Query(&'a str),
}

/// `None` sends no token, `Some(t)` sends it as `PRIVATE-TOKEN`, so tables of callers can hold
/// plain optional tokens.
impl<'a> From<Option<&'a str>> for Auth<'a> {
    fn from(token: Option<&'a str>) -> Self {
        token.map_or(Auth::None, Auth::Private)
    }
}

/// A request body, with the content type it is sent as.
#[derive(Debug, Clone)]
pub enum Body {
    None,
    Json(Value),
    /// `application/x-www-form-urlencoded`
    Form(String),
    /// Any bytes with any (or no) content type.
    Raw(Option<&'static str>, Vec<u8>),
}

/// A response with everything a test may want to look at.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    /// The JSON body, `Value::Null` when empty, a `Value::String` when not JSON.
    pub body: Value,
}

/// Reads a response into a [`Resp`].
pub async fn read_resp(resp: reqwest::Response) -> Resp {
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let text = resp.text().await.expect("body");
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    assert_exact_in_javascript(&body);
    Resp {
        status,
        headers,
        body,
    }
}

/// The largest integer a JSON reader that holds numbers as doubles (JavaScript, jq, GitLab's and
/// Grafana's pages) reads exactly.
pub const MAX_SAFE_INTEGER: u64 = (1 << 53) - 1;

/// Panics if `body` holds an integer that such a reader would round. Every body a test reads
/// through [`read_resp`] passes here, so every list and detail the tests look at is checked.
pub fn assert_exact_in_javascript(body: &Value) {
    match body {
        Value::Number(n) => {
            let magnitude = n
                .as_u64()
                .or_else(|| n.as_i64().map(|i| i.unsigned_abs()))
                .unwrap_or(0);
            assert!(
                magnitude <= MAX_SAFE_INTEGER,
                "{n} is above 2^53 - 1: JavaScript and jq would round it"
            );
        }
        Value::Array(items) => items.iter().for_each(assert_exact_in_javascript),
        Value::Object(map) => map.values().for_each(assert_exact_in_javascript),
        _ => {}
    }
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(name)
            .map(|v| v.to_str().expect("ASCII header"))
    }
}

impl TestApp {
    /// The full URL for `path_and_query`, parsed with `Url::parse`, which keeps `%2F` in the
    /// path exactly as written.
    pub fn parsed_url(&self, path_and_query: &str) -> reqwest::Url {
        reqwest::Url::parse(&self.url(path_and_query)).expect("valid URL")
    }

    /// Sends any request and returns status, headers and JSON body.
    pub async fn send(
        &self,
        method: &str,
        path_and_query: &str,
        auth: Auth<'_>,
        body: Body,
    ) -> Resp {
        let mut target = path_and_query.to_owned();
        if let Auth::Query(t) = auth {
            let sep = if target.contains('?') { '&' } else { '?' };
            target = format!("{target}{sep}private_token={t}");
        }
        let url = self.parsed_url(&target);
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut req = self.client.request(method, url);
        match auth {
            Auth::Private(t) => req = req.header("PRIVATE-TOKEN", t),
            Auth::Bearer(t) => req = req.header("Authorization", format!("Bearer {t}")),
            Auth::None | Auth::Query(_) => {}
        }
        match body {
            Body::None => {}
            Body::Json(v) => req = req.json(&v),
            Body::Form(s) => {
                req = req
                    .header("Content-Type", "application/x-www-form-urlencoded")
                    .body(s)
            }
            Body::Raw(ct, bytes) => {
                if let Some(ct) = ct {
                    req = req.header("Content-Type", ct);
                }
                req = req.body(bytes)
            }
        }
        read_resp(req.send().await.expect("request sent")).await
    }

    /// Creates a user with a token of the given scopes and, when `level` is given, makes them a
    /// member of `project_id` at that access level.
    pub async fn member(&self, username: &str, project_id: i64, level: Option<i64>) -> TestUser {
        let user = self.create_user(username, false).await;
        if let Some(level) = level {
            self.add_member(project_id, user.id, level).await;
        }
        user
    }

    /// Creates a client key on `project_id` as the administrator and returns its JSON.
    pub async fn create_key(&self, project_id: i64) -> Value {
        let (s, k) = self
            .call(
                "POST",
                &format!("/api/v4/projects/{project_id}/error_tracking/client_keys"),
                Some(&self.admin_token),
                None,
            )
            .await;
        assert_eq!(s, 201, "create key: {k}");
        k
    }

    /// Every client key of `project_id` (first 100), as the administrator sees them.
    pub async fn keys(&self, project_id: i64) -> Vec<Value> {
        let (s, k) = self
            .call(
                "GET",
                &format!("/api/v4/projects/{project_id}/error_tracking/client_keys?per_page=100"),
                Some(&self.admin_token),
                None,
            )
            .await;
        assert_eq!(s, 200, "list keys: {k}");
        k.as_array().expect("array").clone()
    }
}

/// Sends one request and checks status and exact body; returns the body.
pub async fn check<'a>(
    app: &TestApp,
    method: &str,
    path: &str,
    auth: impl Into<Auth<'a>>,
    body: Body,
    status: u16,
    expected: &Value,
) -> Value {
    let auth = auth.into();
    let r = app.send(method, path, auth, body).await;
    assert_eq!(
        (r.status, &r.body),
        (status, expected),
        "{method} {path} as {auth:?}"
    );
    r.body
}

impl TestApp {
    /// Creates a project as the administrator in `namespace` and returns its id.
    pub async fn project_id(&self, name: &str, namespace: &str) -> i64 {
        self.create_project(name, namespace).await["id"]
            .as_i64()
            .expect("id")
    }

    /// Sets the project's error-tracking setting as the administrator with `method` (`PUT` or
    /// `PATCH`) and the query string `query`; asserts a 200 and returns the body.
    pub async fn set_setting(&self, project_id: i64, method: &str, query: &str) -> Value {
        let (s, b) = self
            .call(
                method,
                &format!("/api/v4/projects/{project_id}/error_tracking/settings?{query}"),
                Some(&self.admin_token),
                None,
            )
            .await;
        assert_eq!(s, 200, "{method} settings {query}: {b}");
        b
    }

    /// Deletes the client key `key_id` of `project_id` as the administrator and returns the
    /// answer.
    pub async fn delete_key(&self, project_id: i64, key_id: i64) -> Resp {
        self.send(
            "DELETE",
            &format!("/api/v4/projects/{project_id}/error_tracking/client_keys/{key_id}"),
            Auth::Private(&self.admin_token),
            Body::None,
        )
        .await
    }

    /// The personal access tokens of `user_id` (never their secrets), as the administrator
    /// lists them.
    pub async fn tokens_of(&self, user_id: i64) -> Vec<Value> {
        let (s, t) = self
            .call(
                "GET",
                &format!("/api/v4/personal_access_tokens?user_id={user_id}"),
                Some(&self.admin_token),
                None,
            )
            .await;
        assert_eq!(s, 200, "list tokens: {t}");
        t.as_array().expect("array").clone()
    }

    /// Deletes the client key `public_key` of `project_id` as the administrator and asserts it
    /// went.
    pub async fn delete_key_by_public_key(&self, project_id: i64, public_key: &str) {
        let id = self
            .keys(project_id)
            .await
            .iter()
            .find(|k| k["public_key"] == public_key)
            .and_then(|k| k["id"].as_i64())
            .expect("key listed");
        let r = self.delete_key(project_id, id).await;
        assert_eq!(r.status, 200, "delete key: {}", r.body);
    }

    /// Deletes a project as the administrator and asserts GitLab's 202 answer.
    pub async fn delete_project(&self, project_id: i64) {
        check(
            self,
            "DELETE",
            &format!("/api/v4/projects/{project_id}"),
            Auth::Private(&self.admin_token),
            Body::None,
            202,
            &json!({"message": "202 Accepted"}),
        )
        .await;
    }
}

/// GitLab's 401 body.
pub fn unauthorized() -> Value {
    json!({"message": "401 Unauthorized"})
}

/// GitLab's 403 body.
pub fn forbidden() -> Value {
    json!({"message": "403 Forbidden"})
}

/// The error-tracking settings body, always exactly these five keys.
pub fn setting(active: bool, integrated: bool) -> Value {
    json!({
        "active": active,
        "project_name": null,
        "sentry_external_url": null,
        "api_url": null,
        "integrated": integrated,
    })
}

/// The server's database file, opened directly.
/// Polls `done` every 20 ms until it says yes, and fails the test with `what` after 20 s: for
/// work the server finishes in the background, such as removing a deleted project's rows.
pub async fn eventually<F, Fut>(what: &str, mut done: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !done().await {
        assert!(std::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// A `sentry` hub with its own client for `dsn`, so parallel tests never share the global one.
pub fn sdk(dsn: &str) -> (Arc<sentry::Hub>, Arc<sentry::Client>) {
    let mut options = sentry::ClientOptions::default();
    options.dsn = Some(dsn.parse().expect("dsn parses"));
    options.release = Some("app@1.2.3".into());
    options.environment = Some("test".into());
    let options = sentry::apply_defaults(options);
    let client = Arc::new(sentry::Client::from(options));
    let hub = Arc::new(sentry::Hub::new(
        Some(client.clone()),
        Arc::new(sentry::Scope::default()),
    ));
    (hub, client)
}

/// A browser's session with the web UI, as plain HTTP: the session cookie and the CSRF token
/// its pages carry. Redirects are not followed, so tests see every `303` and where it points.
pub struct Web {
    pub base: String,
    pub client: reqwest::Client,
    /// `faultline_session=...`, or empty before signing in.
    pub cookie: String,
    pub csrf: String,
}

/// One web UI answer.
#[derive(Debug)]
pub struct Page {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: String,
}

impl Page {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn location(&self) -> Option<&str> {
        self.header("location")
    }
}

/// The value of the first `name="csrf"` hidden field of a page.
pub fn csrf_of(html: &str) -> Option<String> {
    let at = html.find(r#"name="csrf" value=""#)? + r#"name="csrf" value=""#.len();
    let end = html[at..].find('"')?;
    Some(html[at..at + end].to_owned())
}

/// The value of `name` among a response's `Set-Cookie` headers.
pub fn set_cookie_value(headers: &reqwest::header::HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .map(|v| v.to_owned())
}

impl Web {
    pub fn new(base: &str) -> Web {
        Web {
            base: base.to_owned(),
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("client"),
            cookie: String::new(),
            csrf: String::new(),
        }
    }

    async fn read(resp: reqwest::Response) -> Page {
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.text().await.expect("body");
        Page {
            status,
            headers,
            body,
        }
    }

    pub async fn get(&self, path: &str) -> Page {
        let mut req = self
            .client
            .get(format!("{}{path}", self.base))
            .header("accept", "text/html");
        if !self.cookie.is_empty() {
            req = req.header("cookie", &self.cookie);
        }
        Self::read(req.send().await.expect("request sent")).await
    }

    /// Posts a form as is (add `("csrf", &web.csrf)` to send the token).
    pub async fn post_raw(&self, path: &str, fields: &[(&str, &str)]) -> Page {
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(fields)
            .finish();
        let mut req = self
            .client
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("accept", "text/html")
            .body(body);
        if !self.cookie.is_empty() {
            req = req.header("cookie", &self.cookie);
        }
        Self::read(req.send().await.expect("request sent")).await
    }

    /// Posts a form with this session's CSRF token.
    pub async fn post(&self, path: &str, fields: &[(&str, &str)]) -> Page {
        let mut all = vec![("csrf", self.csrf.as_str())];
        all.extend_from_slice(fields);
        self.post_raw(path, &all).await
    }

    /// Tries to sign in; returns the answer to the form.
    pub async fn try_sign_in(&mut self, username: &str, password: &str) -> Page {
        let form = self.get("/users/sign_in").await;
        assert_eq!(form.status, 200, "sign-in page");
        let token = csrf_of(&form.body).expect("sign-in form has a CSRF token");
        let cookie = set_cookie_value(&form.headers, "faultline_sign_in").expect("CSRF cookie");
        let cookie = cookie.split(';').next().expect("pair").to_owned();
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs([
                ("csrf", token.as_str()),
                ("username", username),
                ("password", password),
                ("redirect", "/"),
            ])
            .finish();
        let resp = self
            .client
            .post(format!("{}/users/sign_in", self.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("cookie", cookie)
            .body(body)
            .send()
            .await
            .expect("request sent");
        let page = Self::read(resp).await;
        if let Some(c) = set_cookie_value(&page.headers, "faultline_session") {
            self.cookie = c.split(';').next().expect("pair").to_owned();
            let home = self.get("/").await;
            assert_eq!(home.status, 200, "home after sign-in: {}", home.body);
            self.csrf = csrf_of(&home.body).expect("pages carry the CSRF token");
        }
        page
    }

    /// Signs in and asserts it worked.
    pub async fn sign_in(base: &str, username: &str, password: &str) -> Web {
        let mut web = Web::new(base);
        let page = web.try_sign_in(username, password).await;
        assert_eq!(page.status, 303, "sign-in as {username}: {}", page.body);
        web
    }
}

impl TestApp {
    /// Gives `user_id` a web UI password, straight through the server's store as
    /// `faultline admin set-password` does.
    pub async fn give_password(&self, user_id: i64, password: &str) {
        let hash = faultline::domain::passwords::hash(password).expect("hash");
        assert!(faultline::store::WebStore::set_password(
            self.server.state.store.as_ref(),
            user_id,
            hash
        )
        .await
        .expect("password stored"));
    }

    /// A web session of `root`, signed in with the password the first start made.
    pub async fn root_web(&self) -> Web {
        let password = self
            .server
            .initial_admin_password
            .clone()
            .expect("first start makes root's password");
        Web::sign_in(&self.base, "root", &password).await
    }

    /// A user (see [`TestApp::member`]) with a web UI password, signed in.
    pub async fn web_member(&self, username: &str, project_id: i64, level: Option<i64>) -> Web {
        let user = self.member(username, project_id, level).await;
        let password = format!("{username}-password");
        self.give_password(user.id, &password).await;
        Web::sign_in(&self.base, username, &password).await
    }
}

/// Log output captured in memory, for tests that install a `tracing` subscriber writing here
/// (`.with_writer(move || capture.clone())`); one per test binary, as a subscriber is global.
#[derive(Clone, Default)]
pub struct LogCapture(Arc<std::sync::Mutex<Vec<u8>>>);

impl LogCapture {
    /// Everything logged so far.
    pub fn text(&self) -> String {
        String::from_utf8(self.0.lock().expect("lock").clone()).expect("utf-8 logs")
    }
}

impl std::io::Write for LogCapture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Which backend the suite runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// The backend `FAULTLINE_TEST_BACKEND` names (SQLite when unset).
pub fn backend() -> Backend {
    match std::env::var("FAULTLINE_TEST_BACKEND").as_deref() {
        Ok("postgres") => Backend::Postgres,
        Ok("sqlite") | Ok("") | Err(_) => Backend::Sqlite,
        Ok(other) => panic!("FAULTLINE_TEST_BACKEND={other}: use sqlite or postgres"),
    }
}

/// The file in a test's data directory that remembers its PostgreSQL database, so a restart on
/// the same directory ([`spawn_on_dir`]) reaches the same data.
const TEST_DATABASE_FILE: &str = "test-database-url";

/// The superuser URL of the test cluster. Asking for PostgreSQL without one is a failure, never
/// a skip.
fn postgres_cluster() -> String {
    std::env::var("FAULTLINE_TEST_POSTGRES").unwrap_or_else(|_| {
        panic!(
            "FAULTLINE_TEST_BACKEND=postgres needs FAULTLINE_TEST_POSTGRES: run \
             `eval \"$(scripts/throwaway-postgres start)\"` first"
        )
    })
}

/// A URL like `cluster` with another database name.
fn with_database(cluster: &str, name: &str) -> String {
    let mut url = reqwest::Url::parse(cluster).expect("FAULTLINE_TEST_POSTGRES is a URL");
    url.set_path(&format!("/{name}"));
    url.to_string()
}

/// On PostgreSQL, points `config` at the data directory's database, creating a fresh one the
/// first time.
async fn use_test_database(config: &mut Config, dir: &std::path::Path) {
    if backend() != Backend::Postgres {
        return;
    }
    let file = dir.join(TEST_DATABASE_FILE);
    let url = match std::fs::read_to_string(&file) {
        Ok(url) => url,
        Err(_) => {
            let url = create_test_database().await;
            std::fs::write(&file, &url).expect("remember the test database");
            url
        }
    };
    config.database.url = Some(faultline::config::Secret(url));
}

/// The environment that points a `faultline` process started by a test at the data
/// directory's database: on PostgreSQL its URL (a fresh database the first time, remembered in
/// the same file [`spawn_on_dir`] and [`Db::of_dir`] read), on SQLite nothing.
pub async fn database_env(dir: &std::path::Path) -> Vec<(&'static str, String)> {
    let mut config = Config::default();
    use_test_database(&mut config, dir).await;
    match config.database.url {
        Some(url) => vec![("FAULTLINE_DATABASE__URL", url.0)],
        None => Vec::new(),
    }
}

/// Creates an empty database on the test cluster and returns its URL.
pub async fn create_test_database() -> String {
    let cluster = postgres_cluster();
    let name = format!("t{}", uuid::Uuid::new_v4().simple());
    let (client, connection) = tokio_postgres::connect(&cluster, tokio_postgres::NoTls)
        .await
        .expect("connect to the test cluster");
    let driver = tokio::spawn(connection);
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .expect("create a test database");
    drop(client);
    let _ = driver.await;
    with_database(&cluster, &name)
}

/// A value read back from the database, whichever backend stored it.
#[derive(Debug, Clone, PartialEq)]
pub enum SqlValue {
    Null,
    Int(i64),
    Text(String),
    Bytes(Vec<u8>),
}

impl SqlValue {
    pub fn int(&self) -> i64 {
        match self {
            SqlValue::Int(n) => *n,
            other => panic!("expected an integer, got {other:?}"),
        }
    }
    pub fn text(&self) -> Option<String> {
        match self {
            SqlValue::Null => None,
            SqlValue::Text(t) => Some(t.clone()),
            other => panic!("expected text, got {other:?}"),
        }
    }
    pub fn bytes(&self) -> Vec<u8> {
        match self {
            SqlValue::Bytes(b) => b.clone(),
            other => panic!("expected bytes, got {other:?}"),
        }
    }
}

/// Direct access to a test app's database, for what no API shows (how a payload is stored,
/// what a purge left behind). SQL must be portable: booleans compared as `WHERE is_message`,
/// no placeholders (values are written into the statement), no backend-only functions.
pub enum Db {
    Sqlite(Connection),
    Postgres(tokio_postgres::Client),
}

impl Db {
    /// The database of the data directory `dir` (for a test that stopped its server).
    pub async fn of_dir(dir: &std::path::Path) -> Db {
        match backend() {
            Backend::Sqlite => {
                Db::Sqlite(Connection::open(dir.join("faultline.db")).expect("open db"))
            }
            Backend::Postgres => {
                let url = std::fs::read_to_string(dir.join(TEST_DATABASE_FILE))
                    .expect("the test's database URL");
                let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                    .await
                    .expect("connect to the test database");
                tokio::spawn(connection);
                Db::Postgres(client)
            }
        }
    }

    pub async fn of(app: &TestApp) -> Db {
        Db::of_dir(app.dir.path()).await
    }

    /// Every row of `sql`, each column as a [`SqlValue`].
    pub async fn rows(&self, sql: &str) -> Vec<Vec<SqlValue>> {
        match self {
            Db::Sqlite(conn) => {
                let mut st = conn.prepare(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
                let n = st.column_count();
                let mut out = Vec::new();
                let mut rows = st.query([]).unwrap_or_else(|e| panic!("{sql}: {e}"));
                while let Some(r) = rows.next().expect("row") {
                    let mut row = Vec::with_capacity(n);
                    for i in 0..n {
                        use rusqlite::types::ValueRef;
                        row.push(match r.get_ref(i).expect("column") {
                            ValueRef::Null => SqlValue::Null,
                            ValueRef::Integer(n) => SqlValue::Int(n),
                            ValueRef::Real(f) => SqlValue::Int(f as i64),
                            ValueRef::Text(t) => {
                                SqlValue::Text(String::from_utf8_lossy(t).into_owned())
                            }
                            ValueRef::Blob(b) => SqlValue::Bytes(b.to_vec()),
                        });
                    }
                    out.push(row);
                }
                out
            }
            Db::Postgres(client) => {
                use tokio_postgres::types::Type;
                let rows = client
                    .query(sql, &[])
                    .await
                    .unwrap_or_else(|e| panic!("{sql}: {e}"));
                rows.iter()
                    .map(|r| {
                        (0..r.len())
                            .map(|i| {
                                let t = r.columns()[i].type_().clone();
                                let v = if t == Type::INT8 {
                                    r.get::<_, Option<i64>>(i).map(SqlValue::Int)
                                } else if t == Type::INT4 {
                                    r.get::<_, Option<i32>>(i).map(|n| SqlValue::Int(n.into()))
                                } else if t == Type::BOOL {
                                    r.get::<_, Option<bool>>(i).map(|b| SqlValue::Int(b.into()))
                                } else if t == Type::BYTEA {
                                    r.get::<_, Option<Vec<u8>>>(i).map(SqlValue::Bytes)
                                } else if t == Type::NUMERIC {
                                    panic!("{sql}: cast NUMERIC results (SUM) to BIGINT")
                                } else {
                                    r.get::<_, Option<String>>(i).map(SqlValue::Text)
                                };
                                v.unwrap_or(SqlValue::Null)
                            })
                            .collect()
                    })
                    .collect()
            }
        }
    }

    /// The one row `sql` returns.
    pub async fn row(&self, sql: &str) -> Vec<SqlValue> {
        let mut rows = self.rows(sql).await;
        assert_eq!(rows.len(), 1, "{sql} returned {} rows", rows.len());
        rows.remove(0)
    }

    /// The single integer `sql` returns (a count).
    pub async fn int(&self, sql: &str) -> i64 {
        self.row(sql).await[0].int()
    }

    /// Runs a statement that returns nothing.
    pub async fn execute(&self, sql: &str) {
        match self {
            Db::Sqlite(conn) => {
                conn.execute_batch(sql)
                    .unwrap_or_else(|e| panic!("{sql}: {e}"));
            }
            Db::Postgres(client) => {
                client
                    .batch_execute(sql)
                    .await
                    .unwrap_or_else(|e| panic!("{sql}: {e}"));
            }
        }
    }
}
