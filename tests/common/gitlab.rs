//! A stand-in for GitLab's key check (`POST /api/v4/internal/error_tracking/allowed`) on
//! loopback. It answers as GitLab does (200 `{"enabled": ...}`, 401 for a wrong shared token,
//! 404 for an unknown project, 422 for a blank parameter), can play an outage (502, as GitLab's
//! proxy answers when GitLab is down), can answer slowly, and counts the questions it gets.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use parking_lot::Mutex;
use serde_json::json;

/// The shared token the stand-in expects unless told otherwise.
pub const SHARED_TOKEN: &str = "shared-error-tracking-secret";

#[derive(Default)]
struct World {
    token: String,
    /// project id -> its active keys
    projects: HashMap<i64, HashSet<String>>,
    down: bool,
    delay: Duration,
    /// (project id, public key) of every question, in order.
    questions: Vec<(String, String)>,
    /// Header names and values of the last question.
    last_headers: Vec<(String, String)>,
}

#[derive(Clone)]
pub struct FakeGitlab {
    pub url: String,
    world: Arc<Mutex<World>>,
}

impl FakeGitlab {
    pub async fn start() -> FakeGitlab {
        let world = Arc::new(Mutex::new(World {
            token: SHARED_TOKEN.into(),
            ..World::default()
        }));
        let app = Router::new()
            .route("/api/v4/internal/error_tracking/allowed", post(allowed))
            .with_state(world.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeGitlab { url, world }
    }

    /// A project with error tracking on and the given active keys.
    pub fn project(&self, id: i64, keys: &[&str]) {
        self.world
            .lock()
            .projects
            .insert(id, keys.iter().map(|k| (*k).to_owned()).collect());
    }

    pub fn revoke(&self, id: i64, key: &str) {
        if let Some(keys) = self.world.lock().projects.get_mut(&id) {
            keys.remove(key);
        }
    }

    pub fn delete_project(&self, id: i64) {
        self.world.lock().projects.remove(&id);
    }

    pub fn set_down(&self, down: bool) {
        self.world.lock().down = down;
    }

    pub fn set_delay(&self, delay: Duration) {
        self.world.lock().delay = delay;
    }

    /// Questions asked so far.
    pub fn calls(&self) -> usize {
        self.world.lock().questions.len()
    }

    /// Questions asked about `key`.
    pub fn calls_for(&self, key: &str) -> usize {
        self.world
            .lock()
            .questions
            .iter()
            .filter(|(_, k)| k == key)
            .count()
    }

    pub fn last_questions(&self) -> Vec<(String, String)> {
        self.world.lock().questions.clone()
    }

    pub fn last_header(&self, name: &str) -> Option<String> {
        self.world
            .lock()
            .last_headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    }
}

async fn allowed(
    State(world): State<Arc<Mutex<World>>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let params: HashMap<String, String> = form_urlencoded::parse(&body).into_owned().collect();
    let project = params.get("project_id").cloned().unwrap_or_default();
    let key = params.get("public_key").cloned().unwrap_or_default();
    let delay = {
        let mut w = world.lock();
        w.questions.push((project.clone(), key.clone()));
        w.last_headers = headers
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_owned(),
                    v.to_str().unwrap_or_default().to_owned(),
                )
            })
            .collect();
        w.delay
    };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let w = world.lock();
    if w.down {
        return (StatusCode::BAD_GATEWAY, "502 Bad Gateway").into_response();
    }
    let token = headers
        .get("gitlab-error-tracking-token")
        .and_then(|v| v.to_str().ok());
    if token != Some(w.token.as_str()) {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"message": "401 Unauthorized"})),
        )
            .into_response();
    }
    if project.is_empty() || key.is_empty() {
        return (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(json!({"error": "public_key is empty"})),
        )
            .into_response();
    }
    let Some(keys) = project.parse().ok().and_then(|p: i64| w.projects.get(&p)) else {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({"message": "404 Project Not Found"})),
        )
            .into_response();
    };
    // Grape answers a POST with 201 unless told otherwise; GitLab's route says 200.
    Json(json!({"enabled": keys.contains(&key)})).into_response()
}

/// A new key shaped like GitLab's.
pub fn new_key() -> String {
    format!("glet_{}", uuid::Uuid::new_v4().simple())
}
