//! The admin HTTP server on `admin.listen` (SPEC §5). Health, readiness and metrics are open
//! (the kubelet and Prometheus call them); the rules API needs the admin bearer token. It
//! runs apart from the Check listener, so a slow scrape or a large listing never delays a
//! request.
//!
//! - [`auth`]: the admin token (constant-time, rotated with its Secret).
//! - [`audit`]: the audit log of changes and refused requests, and its JSON line format.
//! - [`rules`]: `/v1/rules`, `/v1/explain` and the Reactive Interaction Gateway compatible
//!   `/v3/session-blacklist`.

pub mod audit;
pub mod auth;
mod rules;

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use crate::authz::Authz;
use crate::metrics::{Exposition, Metrics};
use crate::readiness::Readiness;
use crate::state::StateHandle;
use auth::AdminAuth;

/// Request bodies larger than this get 413 (SPEC §5).
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// What the admin handlers share.
#[derive(Clone)]
pub struct AdminState {
    pub readiness: Readiness,
    pub metrics: Arc<Metrics>,
    pub auth: AdminAuth,
    pub state: StateHandle,
    pub authz: Arc<Authz>,
    /// With `revocation.max_token_lifetime`, pushed session and token rules without an
    /// expiry get one: no token they could match outlives it.
    pub max_token_lifetime: Option<i64>,
}

pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/v1/rules", post(rules::push).get(rules::list))
        .route("/v1/rules/{*id}", get(rules::get_one).delete(rules::delete))
        .route("/v1/explain", post(rules::explain))
        .route("/v3/session-blacklist", post(rules::blacklist_session))
        .route(
            "/v3/session-blacklist/{session_id}",
            get(rules::session_status),
        )
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

async fn healthz() -> &'static str {
    "ok\n"
}

/// 200 `ready`, or 503 naming what veto still waits for (`waiting for: keys of
/// https://issuer`).
async fn readyz(State(s): State<AdminState>) -> (StatusCode, String) {
    let waiting = s.readiness.waiting_for();
    if waiting.is_empty() {
        (StatusCode::OK, "ready\n".to_owned())
    } else {
        let waiting = waiting.join(", ");
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: waiting for: {waiting}\n"),
        )
    }
}

/// OpenMetrics text when the scraper asks for it (Prometheus does, by name, in its
/// `Accept`); the classic Prometheus text format for anyone else (curl, older scrapers), so
/// the body always matches its content type.
async fn metrics(State(s): State<AdminState>, headers: axum::http::HeaderMap) -> impl IntoResponse {
    let format = if accepts_openmetrics(&headers) {
        Exposition::OpenMetrics
    } else {
        Exposition::Classic
    };
    (
        [(header::CONTENT_TYPE, format.content_type())],
        s.metrics.encode(format),
    )
}

/// Whether `Accept` names `application/openmetrics-text` with a non-zero quality.
fn accepts_openmetrics(headers: &axum::http::HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|range| {
            let mut parts = range.split(';').map(str::trim);
            let is_openmetrics = parts
                .next()
                .is_some_and(|t| t.eq_ignore_ascii_case("application/openmetrics-text"));
            let refused = parts.any(|p| {
                p.strip_prefix("q=")
                    .and_then(|q| q.parse::<f32>().ok())
                    .is_some_and(|q| q <= 0.0)
            });
            is_openmetrics && !refused
        })
}

/// An admin API failure: a status and `{"error": message}` (SPEC §5), plus the bearer
/// challenge on a 401.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    body: serde_json::Value,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            body: serde_json::json!({ "error": message.into() }),
        }
    }

    /// The `error` message, for the audit log.
    fn message(&self) -> &str {
        self.body["error"].as_str().unwrap_or_default()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (self.status, axum::Json(self.body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static(r#"Bearer realm="veto-admin""#),
            );
        }
        r
    }
}
