//! veto's gRPC side as Envoy meets it, without Envoy: the ext_authz `Check` call and the
//! standard gRPC health service, on the address `$GRPC_LISTEN` was replaced with.
//!
//! - [`check_client`] and [`health_client`] connect to a running veto.
//! - [`headers_request`](super::headers_request) and
//!   [`raw_headers_request`](super::raw_headers_request) (`check_request.rs`) build the
//!   `CheckRequest` Envoy sends.
//! - [`assert_check_denied`], [`check_denial_reason`] and [`check_allowed`] read a
//!   `CheckResponse` as Envoy will act on it, checked against SPEC §4.

use std::net::SocketAddr;
use std::time::Duration;

use envoy_types::ext_authz::v3::pb::{
    CheckRequest, CheckResponse, DeniedHttpResponse, HeaderValueOption, HttpResponse,
    OkHttpResponse,
};
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use serde_json::{Value, json};
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::health_client::HealthClient;

/// gRPC status `OK` (google.rpc.Code 0): the only code Envoy treats as "allowed".
pub const GRPC_OK: i32 = 0;

/// A channel to veto's gRPC listener. Each call has a timeout, so a hung veto fails the
/// test instead of hanging it.
async fn channel(addr: SocketAddr) -> Channel {
    Endpoint::from_shared(format!("http://{addr}"))
        .expect("a socket address makes a valid URI")
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(5))
        .connect()
        .await
        .unwrap_or_else(|e| panic!("connect to veto's gRPC listener at {addr}: {e}"))
}

/// A client for `envoy.service.auth.v3.Authorization` on veto at `addr`.
pub async fn check_client(addr: SocketAddr) -> AuthorizationClient<Channel> {
    AuthorizationClient::new(channel(addr).await)
}

/// A client for the standard `grpc.health.v1.Health` service on veto at `addr`.
pub async fn health_client(addr: SocketAddr) -> HealthClient<Channel> {
    HealthClient::new(channel(addr).await)
}

/// Sends `request` and returns veto's answer; panics on a gRPC error status (an answer
/// Envoy would turn into its own failure mode, not a decision).
pub async fn check(
    client: &mut AuthorizationClient<Channel>,
    request: CheckRequest,
) -> CheckResponse {
    client
        .check(request)
        .await
        .unwrap_or_else(|status| panic!("the Check failed with a gRPC error: {status:?}"))
        .into_inner()
}

/// veto's answer to a Check of `token` (see [`bearer_request`](super::bearer_request)):
/// "allowed", or the reason of a well-formed denial (see [`check_outcome`]).
pub async fn check_token(client: &mut AuthorizationClient<Channel>, token: &str) -> String {
    check_outcome(&check(client, super::bearer_request(token)).await)
}

/// The `ok_response` of an allowed Check; panics unless the response allows the request
/// (gRPC status OK) and says how.
pub fn check_allowed(response: &CheckResponse) -> &OkHttpResponse {
    let code = response.status.as_ref().map_or(GRPC_OK, |s| s.code);
    assert_eq!(code, GRPC_OK, "expected an allowed Check, got {response:?}");
    match &response.http_response {
        Some(HttpResponse::OkResponse(ok)) => ok,
        other => panic!("an allowed Check without an ok_response: {other:?}"),
    }
}

/// Asserts that `response` is veto's denial for `reason`, exactly as SPEC §4 defines it:
/// a non-OK gRPC status, HTTP 401, one `WWW-Authenticate` (only the realm for
/// `missing_token`, RFC 6750 §3.1), `content-type: application/json`, and the JSON body
/// `{"error":"invalid_token","error_description":"<reason>"}`.
pub fn assert_check_denied(response: &CheckResponse, reason: &str) {
    let denied = denied_response(response);
    assert_eq!(
        denied.status.as_ref().map(|s| s.code),
        Some(401),
        "HTTP status of a {reason} denial: {response:?}"
    );
    let challenge = if reason == "missing_token" {
        r#"Bearer realm="veto""#.to_owned()
    } else {
        format!(r#"Bearer realm="veto", error="invalid_token", error_description="{reason}""#)
    };
    assert_eq!(
        header_values(&denied.headers, "www-authenticate"),
        [challenge],
        "WWW-Authenticate of a {reason} denial"
    );
    assert_eq!(
        header_values(&denied.headers, "content-type"),
        ["application/json"],
        "content-type of a {reason} denial"
    );
    let body: Value = serde_json::from_str(&denied.body).unwrap_or_else(|e| {
        panic!(
            "a {reason} denial's body is not JSON ({e}): {}",
            denied.body
        )
    });
    assert_eq!(
        body,
        json!({"error": "invalid_token", "error_description": reason}),
        "body of a {reason} denial"
    );
}

/// The reason of a denial (its body's `error_description`), after checking it is a
/// well-formed SPEC §4 denial for that reason; for polling until a decision changes.
pub fn check_denial_reason(response: &CheckResponse) -> String {
    let denied = denied_response(response);
    let reason = serde_json::from_str::<Value>(&denied.body)
        .ok()
        .and_then(|body| body["error_description"].as_str().map(str::to_owned))
        .unwrap_or_else(|| panic!("a denial without error_description: {response:?}"));
    assert_check_denied(response, &reason);
    reason
}

/// "allowed" for an allowed Check, else the denial's reason: one string a test can poll on.
pub fn check_outcome(response: &CheckResponse) -> String {
    match &response.http_response {
        Some(HttpResponse::OkResponse(_)) => {
            check_allowed(response);
            "allowed".to_owned()
        }
        _ => check_denial_reason(response),
    }
}

fn denied_response(response: &CheckResponse) -> &DeniedHttpResponse {
    let code = response.status.as_ref().map_or(GRPC_OK, |s| s.code);
    assert_ne!(
        code, GRPC_OK,
        "a denial must not carry gRPC status OK, which Envoy reads as allowed: {response:?}"
    );
    match &response.http_response {
        Some(HttpResponse::DeniedResponse(denied)) => denied,
        other => panic!("expected a denied_response, got {other:?}"),
    }
}

/// The values of every header option named `name` (case-insensitive), as text.
pub fn header_values(options: &[HeaderValueOption], name: &str) -> Vec<String> {
    options
        .iter()
        .filter_map(|option| option.header.as_ref())
        .filter(|header| header.key.eq_ignore_ascii_case(name))
        .map(|header| {
            if header.raw_value.is_empty() {
                header.value.clone()
            } else {
                String::from_utf8_lossy(&header.raw_value).into_owned()
            }
        })
        .collect()
}
