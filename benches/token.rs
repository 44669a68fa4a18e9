//! Finding the bearer token in the headers Envoy forwards (`veto::token::bearer`), in both
//! forms Envoy sends them: the merged `headers` map and raw `header_map` bytes.
//!
//! `cargo bench --bench token`

mod common;
// The tests' CheckRequest builder, so the benchmark measures the requests the tests send
// (this benchmark needs two of its builders).
#[path = "../tests/common/check_request.rs"]
#[allow(dead_code)]
mod check_request;

use std::hint::black_box;

use check_request::{headers_request, raw_headers_request};
use criterion::{Criterion, criterion_group, criterion_main};

/// An RS256 token's length and alphabet (the content is not verified here).
fn token() -> String {
    let seg = |n: usize| "aB3-_x".repeat(n / 6 + 1)[..n].to_owned();
    format!("{}.{}.{}", seg(36), seg(290), seg(342))
}

fn bench(c: &mut Criterion) {
    let authorization = format!("Bearer {}", token());
    let pairs = [
        (":authority", "orders.example.com"),
        (":method", "GET"),
        (":path", "/orders/42"),
        (":scheme", "https"),
        ("authorization", authorization.as_str()),
        ("x-request-id", "0b5d3b3e-5a8c-4d0e-9f7a-1c2d3e4f5a6b"),
    ];
    let merged = headers_request(&pairs);
    let raw_pairs: Vec<(&str, &[u8])> = pairs
        .iter()
        .map(|(name, value)| (*name, value.as_bytes()))
        .collect();
    let raw = raw_headers_request(&raw_pairs);
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
