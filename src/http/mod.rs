//! The HTTP surface: the router, shared state and the request middleware. This is the only place
//! that knows axum and status codes; handlers extract, call one function and map the result.

pub mod alerts;
pub mod api;
pub mod client_keys;
pub mod health;
pub mod identity;
pub mod ingest;
pub mod ops;
pub mod read;
pub mod sentry_api;
pub mod serve;
pub mod settings;
pub mod ui;

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde_json::json;
use url::Url;

use crate::domain::keycache::KeyCache;
use crate::domain::ratelimit::RateLimiter;
use crate::metrics::{Metrics, RequestLabels};
use crate::store::Store;
use crate::writer::WriterHandle;

/// Everything a handler may need. Axum clones the state for every extractor and middleware of
/// every request, so it is one `Arc` (one reference count to bump) rather than a struct of
/// several `Arc`s and an owned URL.
#[derive(Clone)]
pub struct AppState(Arc<AppParts>);

impl AppState {
    pub fn new(parts: AppParts) -> AppState {
        AppState(Arc::new(parts))
    }
}

impl std::ops::Deref for AppState {
    type Target = AppParts;

    fn deref(&self) -> &AppParts {
        &self.0
    }
}

/// The parts of [`AppState`].
pub struct AppParts {
    pub store: Arc<dyn Store>,
    pub keys: Arc<KeyCache>,
    pub metrics: Arc<Metrics>,
    /// The base URL SDKs reach the gateway by (DSNs and `Link` headers).
    pub external_url: Url,
    pub writer: WriterHandle,
    pub rate_limiter: Arc<RateLimiter>,
    pub ingest: Arc<ingest::IngestSettings>,
    /// Wakes the task that removes deleted projects' rows (`crate::purge`).
    pub purge: Arc<tokio::sync::Notify>,
    /// SHA-256 of `gitlab.error_tracking_token`, the shared token GitLab reads with; `None`
    /// refuses that header.
    pub gitlab_token_digest: Option<[u8; 32]>,
    /// Asks GitLab about client keys faultline does not know (`gitlab.url` set).
    pub gitlab: Option<Arc<crate::gitlab::GitlabKeys>>,
    /// Alerting's clock (tests move it) and the delivery task's wake-up.
    pub alert_clock: Arc<crate::clock::WallClock>,
    pub alerts_wake: Arc<tokio::sync::Notify>,
    pub alert_settings: crate::alerts::AlertSettings,
    /// Failed web sign-ins per username, to slow guessing down.
    pub sign_in_throttle: Arc<crate::domain::passwords::SignInThrottle>,
}

/// Whether a path segment is a numeric id: a non-empty run of ASCII digits. `str::parse` alone
/// would also take `+5` and `-5`, which no client sends as an id.
pub(crate) fn is_numeric_id(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

pub fn router(state: AppState) -> Router {
    let v4 = Router::new()
        .route(
            "/projects",
            get(identity::list_projects).post(identity::create_project),
        )
        .route(
            "/projects/{id}",
            get(identity::get_project).delete(identity::delete_project),
        )
        .route(
            "/projects/{id}/members",
            get(identity::list_members).post(identity::add_member),
        )
        .route(
            "/projects/{id}/members/{user_id}",
            delete(identity::remove_member),
        )
        .route(
            "/projects/{id}/error_tracking/settings",
            get(settings::get).put(settings::put).patch(settings::patch),
        )
        .route(
            "/projects/{id}/error_tracking/client_keys",
            get(client_keys::list).post(client_keys::create),
        )
        .route(
            "/projects/{id}/error_tracking/client_keys/{key_id}",
            delete(client_keys::delete),
        )
        .route(
            "/projects/{id}/error_tracking/alert_rules",
            get(alerts::list).post(alerts::create),
        )
        .route(
            "/projects/{id}/error_tracking/alert_rules/{rule_id}",
            get(alerts::show).put(alerts::update).delete(alerts::delete),
        )
        .route(
            "/projects/{id}/error_tracking/alert_rules/{rule_id}/channels",
            post(alerts::add_channel),
        )
        .route(
            "/projects/{id}/error_tracking/alert_rules/{rule_id}/channels/{channel_id}",
            delete(alerts::delete_channel),
        )
        .route(
            "/projects/{id}/error_tracking/alert_rules/{rule_id}/channels/{channel_id}/test",
            post(alerts::test_channel),
        )
        .route("/user", get(identity::current_user))
        .route(
            "/users",
            get(identity::list_users).post(identity::create_user),
        )
        .route(
            "/users/{user_id}/personal_access_tokens",
            post(identity::create_token),
        )
        .route("/personal_access_tokens", get(identity::list_tokens))
        .route(
            "/personal_access_tokens/{id}",
            delete(identity::revoke_token),
        );

    Router::new()
        .merge(ingest::routes())
        .merge(read::routes())
        .merge(ui::routes())
        .nest("/api/v4", v4)
        .nest("/api/0", sentry_api::routes())
        .route("/-/health", get(health::health))
        .route("/-/readiness", get(health::readiness))
        .route("/metrics", get(health::metrics))
        .fallback(ui::fallback)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

pub(crate) async fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(json!({"message": "404 Not Found"})),
    )
        .into_response()
}

pub(crate) async fn method_not_allowed() -> Response {
    (
        StatusCode::METHOD_NOT_ALLOWED,
        Json(json!({"message": "405 Method Not Allowed"})),
    )
        .into_response()
}

/// Counts every request by route template and status, and logs one line per request at debug
/// level. The route template (not the raw path) keeps label cardinality bounded and keeps
/// project paths and keys out of the metrics.
async fn observe(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = req.method().clone();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| Cow::Owned(p.as_str().to_owned()))
        .unwrap_or(Cow::Borrowed("unmatched"));
    let resp = next.run(req).await;
    record_request(&state, &method, route, resp.status(), start);
    resp
}

/// What [`observe`] records about one request, shared with the requests the [`Gateway`] serves
/// without the router.
fn record_request(
    state: &AppState,
    method: &Method,
    route: Cow<'static, str>,
    status: StatusCode,
    start: Instant,
) {
    let status = status.as_u16();
    tracing::debug!(%method, %route, status, elapsed_ms = start.elapsed().as_secs_f64() * 1000.0, "request");
    state
        .metrics
        .http_requests
        .get_or_create(&RequestLabels {
            route,
            method: method_label(method),
            status,
        })
        .inc();
}

/// A method as a metrics label, without allocating for the standard ones.
fn method_label(method: &Method) -> Cow<'static, str> {
    const STANDARD: [Method; 9] = [
        Method::GET,
        Method::POST,
        Method::PUT,
        Method::PATCH,
        Method::DELETE,
        Method::HEAD,
        Method::OPTIONS,
        Method::CONNECT,
        Method::TRACE,
    ];
    match STANDARD.iter().find(|m| *m == method) {
        Some(m) => Cow::Borrowed(m.as_str()),
        None => Cow::Owned(method.as_str().to_owned()),
    }
}

/// The service each connection runs: ingestion requests in their plain form go straight to their
/// handler (`ingest::direct_route`), everything else through the router. Both give the same
/// answers, headers and metrics; the direct path only skips routing, extractors and the two
/// middleware layers, which cost an event request several microseconds.
#[derive(Clone)]
pub struct Gateway {
    router: hyper_util::service::TowerToHyperService<Router>,
    state: AppState,
}

impl Gateway {
    pub fn new(state: AppState) -> Gateway {
        Gateway {
            router: hyper_util::service::TowerToHyperService::new(router(state.clone())),
            state,
        }
    }
}

impl hyper::service::Service<hyper::Request<hyper::body::Incoming>> for Gateway {
    type Response = Response;
    type Error = std::convert::Infallible;
    type Future = futures_util::future::BoxFuture<'static, Result<Response, Self::Error>>;

    fn call(&self, req: hyper::Request<hyper::body::Incoming>) -> Self::Future {
        let direct = ingest::direct_route(req.method(), req.uri().path())
            .map(|(route, id)| (route, id.to_owned()));
        match direct {
            Some((route, project_id)) => {
                let state = self.state.clone();
                let req = req.map(Body::new);
                Box::pin(async move {
                    let start = Instant::now();
                    let resp = ingest::serve_direct(&state, route, &project_id, req).await;
                    let route = Cow::Borrowed(route.template.as_str());
                    record_request(&state, &Method::POST, route, resp.status(), start);
                    Ok(resp)
                })
            }
            None => Box::pin(self.router.call(req)),
        }
    }
}
