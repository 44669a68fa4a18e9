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
use crate::metrics::Metrics;
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

async fn readyz(State(s): State<AdminState>) -> (StatusCode, &'static str) {
    if s.readiness.is_ready() {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}

/// The exposition is OpenMetrics text, which Prometheus asks for by name; any other client
/// (curl, an older scraper) gets it labelled as the classic Prometheus text format, which
/// it also parses as (the `# EOF` line is a comment there).
async fn metrics(State(s): State<AdminState>, headers: axum::http::HeaderMap) -> impl IntoResponse {
    let openmetrics = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("application/openmetrics-text"));
    let content_type = if openmetrics {
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    } else {
        "text/plain; version=0.0.4; charset=utf-8"
    };
    ([(header::CONTENT_TYPE, content_type)], s.metrics.encode())
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
