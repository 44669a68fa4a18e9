//! Verification (`Verifier::verify`) of RS256 and ES256 tokens with the example keys: a
//! full signature check (`verify_uncached`), a verification cache hit (`verify` with a
//! token seen before), and a whole Check decision (`Authz::decide`: token, digest, cache,
//! snapshot lookup, headers to forward) with a repeated token.
//!
//! `cargo bench --bench verify`

mod common;

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use envoy_types::ext_authz::v3::pb::CheckRequest;
use envoy_types::pb::envoy::service::auth::v3::AttributeContext;
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Request};
use jsonwebtoken::Algorithm;
use veto::authz::{Authz, Policy};
use veto::clock::unix_now;
use veto::config::Config;
use veto::jwt::{Verifier, jwks};
use veto::metrics::Metrics;
use veto::revocation::{RuleTable, token_hash};

fn keys() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/keys")
}

/// The bench's config: the example issuer and keys, claims forwarded as in the examples.
fn config() -> Config {
    let yaml = format!(
        "issuers:\n  - issuer: https://auth.example.com\n    audiences: [orders-api]\n    jwks_file: {}\nforward:\n  claims_to_headers:\n    sub: x-jwt-sub\n",
        keys().join("jwks.json").display()
    );
    Config::parse(&yaml, &keys().join("bench.yaml")).expect("the bench config is valid")
}

fn verifier(config: &Config) -> Verifier {
    let verifier = Verifier::new(&config.issuers, &config.cache);
    for issuer in &config.issuers {
        let shared = verifier.issuer(&issuer.issuer).expect("configured issuer");
        for (kind, file) in jwks::key_files(issuer) {
            let loaded = jwks::load_file(kind, &file).expect("the example keys load");
            jwks::install(shared, kind, loaded.keys);
        }
    }
    verifier
}

fn mint(key: &str, alg: Algorithm) -> String {
    veto::jwt::mint::mint(&veto::jwt::mint::TokenSpec {
        key_file: keys().join(key),
        alg,
        kid: None,
        iss: Some("https://auth.example.com".into()),
        sub: Some("bench-user".into()),
        aud: Some("orders-api".into()),
        ttl: Duration::from_secs(3600),
        claims: vec!["azp=bench-app".into()],
        now: unix_now(),
    })
    .expect("the example keys sign")
}

fn check_request(token: &str) -> CheckRequest {
    CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(Request {
                http: Some(HttpRequest {
                    headers: [("authorization".to_owned(), format!("Bearer {token}"))]
                        .into_iter()
                        .collect(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
    }
}

fn bench(c: &mut Criterion) {
    let config = config();
    let verifier = Arc::new(verifier(&config));
    let now = unix_now();
    let mut g = c.benchmark_group("verify");
    for (name, key, alg) in [
        ("RS256", "rsa.pem", Algorithm::RS256),
        ("ES256", "ec256.pem", Algorithm::ES256),
    ] {
        let token = mint(key, alg);
        let digest = token_hash::sha256(&token);
        verifier
            .verify_uncached(&token, now)
            .expect("the bench token verifies");
        g.bench_function(format!("{name}/uncached"), |b| {
            b.iter(|| verifier.verify_uncached(black_box(&token), now).is_ok())
        });
        verifier.verify(&token, &digest, now).expect("verifies");
        g.bench_function(format!("{name}/cache_hit"), |b| {
            b.iter(|| {
                verifier
                    .verify(black_box(&token), black_box(&digest), now)
                    .is_ok()
            })
        });
        g.bench_function(format!("{name}/sha256_of_token"), |b| {
            b.iter(|| token_hash::sha256(black_box(&token)))
        });
    }
    g.finish();

    // A whole decision, as the Check handler makes it, minus gRPC.
    let (_writer, handle) = veto::state::writer(
        RuleTable::default(),
        RuleTable::default(),
        None,
        Arc::new(Metrics::new()),
        None,
    );
    let authz = Authz {
        policy: Policy::from_config(&config),
        verifier,
        snapshot: handle.reader(),
        metrics: Arc::new(Metrics::new()),
    };
    let request = check_request(&mint("rsa.pem", Algorithm::RS256));
    let mut g = c.benchmark_group("decide");
    g.bench_function("RS256/repeated_token", |b| {
        b.iter(|| authz.decide(black_box(&request), now).decision)
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = common::criterion();
    targets = bench
}
criterion_main!(benches);
