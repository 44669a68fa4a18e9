//! Revocation lookups (`RuleTable::find`, `Snapshot::find`) with 10 and with 1,000,000
//! `session` rules: a token no rule matches (every Check of a valid token) and a revoked
//! session. The time should not depend on the number of rules.
//!
//! `cargo bench --bench snapshot`

mod common;

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::{Map, Value, json};
use veto::clock::unix_now;
use veto::revocation::{Rule, RuleTable, Scope, Selector, Snapshot, TokenFacts};

fn table(sessions: usize) -> RuleTable {
    let mut t = RuleTable::default();
    let expires = unix_now() + 86_400;
    for i in 0..sessions {
        t.insert(Rule {
            selector: Selector::Session(format!("s0-{i:08}").into()),
            scope: Scope::new(None, None, (i % 2 == 0).then_some(expires), None),
        });
    }
    // The other kinds a real file has, so every branch of the lookup runs.
    t.insert(Rule {
        selector: Selector::Sub("user-0-1".into()),
        scope: Scope::new(None, None, None, None),
    });
    t.insert(Rule {
        selector: Selector::Claim {
            name: "azp".into(),
            value: "app-0-0".into(),
        },
        scope: Scope::new(None, None, None, None),
    });
    t.insert(Rule {
        selector: Selector::Global,
        scope: Scope::new(None, Some(1_577_836_800), None, None),
    });
    t
}

fn claims(session: &str) -> Map<String, Value> {
    let now = unix_now();
    match json!({
        "iss": "https://auth.example.com", "sub": "bench-user", "aud": "orders-api",
        "azp": "bench-app", "jti": session, "iat": now, "exp": now + 3600,
    }) {
        Value::Object(m) => m,
        _ => unreachable!("a JSON object literal"),
    }
}

fn bench(c: &mut Criterion) {
    let now = unix_now();
    let mut g = c.benchmark_group("snapshot");
    for (label, n) in [("10", 10), ("1M", 1_000_000)] {
        let table = Arc::new(table(n));
        let snapshot = Snapshot {
            version: 1,
            file: table.clone(),
            pushed: Arc::default(),
        };
        for (case, session) in [("not_revoked", "fresh-session"), ("revoked", "s0-00000007")] {
            let claims = claims(session);
            let facts = TokenFacts {
                iss: "https://auth.example.com",
                iat: Some(now),
                sub: Some("bench-user"),
                session: Some(session),
                claims: &claims,
                hashes: &[],
            };
            assert_eq!(table.find(&facts, now).is_some(), case == "revoked");
            g.bench_function(format!("RuleTable::find/{label}/{case}"), |b| {
                b.iter(|| table.find(black_box(&facts), now).is_some())
            });
            g.bench_function(format!("Snapshot::find/{label}/{case}"), |b| {
                b.iter(|| snapshot.find(black_box(&facts), now).is_some())
            });
        }
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = common::criterion();
    targets = bench
}
criterion_main!(benches);
