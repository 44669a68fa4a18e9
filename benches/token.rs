//! Finding the bearer token in the headers Envoy forwards (`veto::token::bearer`), in both
//! forms Envoy sends them: the merged `headers` map and raw `header_map` bytes.
//!
//! `cargo bench --bench token`

mod common;

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use envoy_types::ext_authz::v3::pb::{CheckRequest, HeaderValue};
use envoy_types::pb::envoy::config::core::v3::HeaderMap;
use envoy_types::pb::envoy::service::auth::v3::AttributeContext;
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Request};

/// An RS256 token's length and alphabet (the content is not verified here).
fn token() -> String {
    let seg = |n: usize| "aB3-_x".repeat(n / 6 + 1)[..n].to_owned();
    format!("{}.{}.{}", seg(36), seg(290), seg(342))
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

fn pairs(token: &str) -> Vec<(String, String)> {
    [
        (":authority", "orders.example.com"),
        (":method", "GET"),
        (":path", "/orders/42"),
        (":scheme", "https"),
        ("authorization", &format!("Bearer {token}")),
        ("x-request-id", "0b5d3b3e-5a8c-4d0e-9f7a-1c2d3e4f5a6b"),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect()
}

fn bench(c: &mut Criterion) {
    let token = token();
    let merged = request(HttpRequest {
        headers: pairs(&token).into_iter().collect(),
        ..Default::default()
    });
    let raw = request(HttpRequest {
        header_map: Some(HeaderMap {
            headers: pairs(&token)
                .into_iter()
                .map(|(key, v)| HeaderValue {
                    key,
                    raw_value: v.into_bytes(),
                    ..Default::default()
                })
                .collect(),
        }),
        ..Default::default()
    });
    let mut g = c.benchmark_group("token");
    g.bench_function("bearer/headers", |b| {
        b.iter(|| veto::token::bearer(black_box(&merged), "authorization").map(|t| t.len()))
    });
    g.bench_function("bearer/header_map", |b| {
        b.iter(|| veto::token::bearer(black_box(&raw), "authorization").map(|t| t.len()))
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = common::criterion();
    targets = bench
}
criterion_main!(benches);
