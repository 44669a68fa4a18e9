//! The `CheckRequest` Envoy sends veto, built with the headers a test or benchmark needs:
//! in `headers` (merged values), as Envoy sends them by default, or in `header_map` (raw
//! bytes), as with `encode_raw_headers: true`.
//!
//! It needs nothing but `envoy-types`, so a micro-benchmark includes this file too
//! (`#[path = "../tests/common/check_request.rs"]` in `benches/token.rs`) instead of
//! building its own.

use envoy_types::ext_authz::v3::pb::{CheckRequest, HeaderValue};
use envoy_types::pb::envoy::config::core::v3::HeaderMap;
use envoy_types::pb::envoy::service::auth::v3::AttributeContext;
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Request};

/// A Check request for `GET /orders` whose headers arrive in `headers`, as Envoy sends them
/// by default (lower-case names; a header sent twice joined with a comma).
pub fn headers_request(headers: &[(&str, &str)]) -> CheckRequest {
    request(HttpRequest {
        headers: headers
            .iter()
            .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
            .collect(),
        ..http_request()
    })
}

/// A Check request for `GET /orders` carrying `Authorization: Bearer <token>`, as Envoy
/// sends a client's request with a token.
pub fn bearer_request(token: &str) -> CheckRequest {
    headers_request(&[("authorization", &format!("Bearer {token}"))])
}

/// A Check request for `GET /orders` whose headers arrive in `header_map` as raw bytes, as
/// Envoy sends them with `encode_raw_headers: true` (every copy of a header is its own
/// entry, and values need not be UTF-8).
pub fn raw_headers_request(headers: &[(&str, &[u8])]) -> CheckRequest {
    request(HttpRequest {
        header_map: Some(HeaderMap {
            headers: headers
                .iter()
                .map(|(name, value)| HeaderValue {
                    key: (*name).to_owned(),
                    raw_value: value.to_vec(),
                    ..Default::default()
                })
                .collect(),
        }),
        ..http_request()
    })
}

fn http_request() -> HttpRequest {
    HttpRequest {
        method: "GET".to_owned(),
        path: "/orders".to_owned(),
        host: "orders.test".to_owned(),
        scheme: "http".to_owned(),
        protocol: "HTTP/1.1".to_owned(),
        ..Default::default()
    }
}

fn request(http: HttpRequest) -> CheckRequest {
    CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(Request {
                http: Some(http),
                ..Default::default()
            }),
            ..Default::default()
        }),
    }
}
