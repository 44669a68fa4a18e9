//! Rule matching: every selector, every optional field, and the boundaries of SPEC §3.

use super::parse::{Origin, RawRule};
use super::*;
use serde_json::json;

const NOW: UnixTime = 1_800_000_000;
const ISS: &str = "https://auth.example.com";

fn rule(json: serde_json::Value) -> Rule {
    let raw: RawRule = serde_json::from_value(json).unwrap();
    raw.validate("rule", Origin::File).unwrap()
}

fn table(rules: &[serde_json::Value]) -> RuleTable {
    let mut t = RuleTable::default();
    for r in rules {
        t.insert(rule(r.clone()));
    }
    t
}

/// A token described by its claims; `hashes` empty unless a test sets them.
struct Token {
    claims: serde_json::Map<String, serde_json::Value>,
    hashes: Vec<[u8; 32]>,
}

impl Token {
    fn new(claims: serde_json::Value) -> Token {
        let mut claims = claims.as_object().cloned().unwrap();
        claims.entry("iss").or_insert(json!(ISS));
        Token {
            claims,
            hashes: Vec::new(),
        }
    }

    fn revoked_by(&self, t: &RuleTable, now: UnixTime) -> Option<String> {
        let str_claim = |k: &str| self.claims.get(k).and_then(|v| v.as_str());
        let facts = TokenFacts {
            iss: str_claim("iss").unwrap_or_default(),
            iat: self.claims.get("iat").and_then(|v| v.as_i64()),
            sub: str_claim("sub"),
            session: str_claim("jti"),
            claims: &self.claims,
            hashes: &self.hashes,
        };
        t.find(&facts, now).map(|rule| rule.id())
    }
}

#[test]
fn a_session_rule_revokes_the_token_with_that_jti_only() {
    let t = table(&[json!({"session": "s1"})]);
    assert_eq!(
        Token::new(json!({"jti": "s1"}))
            .revoked_by(&t, NOW)
            .as_deref(),
        Some("session:s1")
    );
    assert_eq!(Token::new(json!({"jti": "s2"})).revoked_by(&t, NOW), None);
    assert_eq!(Token::new(json!({})).revoked_by(&t, NOW), None);
}

#[test]
fn a_sub_rule_blocks_every_token_of_the_subject_past_and_future() {
    let t = table(&[json!({"sub": "alice"})]);
    for iat in [0, NOW - 1, NOW, NOW + 86_400] {
        assert!(
            Token::new(json!({"sub": "alice", "iat": iat}))
                .revoked_by(&t, NOW)
                .is_some()
        );
    }
    assert!(
        Token::new(json!({"sub": "bob"}))
            .revoked_by(&t, NOW)
            .is_none()
    );
}

#[test]
fn issued_before_is_a_strict_cutoff_and_a_missing_iat_is_before_any_cutoff() {
    let t = table(&[json!({"sub": "u", "issued_before": NOW})]);
    let at = |iat: Option<i64>| {
        let mut c = json!({"sub": "u"});
        if let Some(iat) = iat {
            c["iat"] = json!(iat);
        }
        Token::new(c).revoked_by(&t, NOW).is_some()
    };
    assert!(at(Some(NOW - 1)), "iat == issued_before - 1 is revoked");
    assert!(!at(Some(NOW)), "iat == issued_before is allowed");
    assert!(!at(Some(NOW + 1)));
    assert!(at(None), "no iat counts as issued before any cutoff");
}

#[test]
fn a_global_cutoff_logs_everyone_out() {
    let t = table(&[json!({"issued_before": NOW})]);
    assert_eq!(
        Token::new(json!({"sub": "x", "iat": NOW - 10}))
            .revoked_by(&t, NOW)
            .as_deref(),
        Some("global")
    );
    assert!(
        Token::new(json!({"sub": "x", "iat": NOW}))
            .revoked_by(&t, NOW)
            .is_none()
    );
}

#[test]
fn iss_limits_a_rule_to_one_issuer() {
    let t = table(&[
        json!({"sub": "alice", "iss": ISS}),
        json!({"issued_before": NOW, "iss": "https://other"}),
    ]);
    assert_eq!(
        Token::new(json!({"sub": "alice", "iat": NOW - 5}))
            .revoked_by(&t, NOW)
            .as_deref(),
        Some("sub:alice@https://auth.example.com")
    );
    let other = Token::new(json!({"sub": "alice", "iss": "https://third", "iat": NOW - 5}));
    assert!(other.revoked_by(&t, NOW).is_none());
    let global_other = Token::new(json!({"sub": "bob", "iss": "https://other", "iat": NOW - 5}));
    assert_eq!(
        global_other.revoked_by(&t, NOW).as_deref(),
        Some("global@https://other")
    );
}

#[test]
fn expires_at_ends_a_rule_at_that_second_even_before_pruning() {
    let t = table(&[json!({"session": "s", "expires_at": NOW})]);
    let tok = Token::new(json!({"jti": "s"}));
    assert!(tok.revoked_by(&t, NOW - 1).is_some());
    assert!(tok.revoked_by(&t, NOW).is_none());
    assert_eq!(t.pruned(NOW, None).len(), 0);
    assert_eq!(t.pruned(NOW - 1, None).len(), 1);
}

#[test]
fn a_claim_rule_matches_a_value_or_an_array_containing_it() {
    let t = table(&[
        json!({"claim": "azp", "value": "mobile-app", "issued_before": NOW}),
        json!({"claim": "groups", "value": "contractors"}),
        json!({"claim": "tenant", "value": 42}),
    ]);
    let azp = |iat| Token::new(json!({"azp": "mobile-app", "iat": iat}));
    assert_eq!(
        azp(NOW - 1).revoked_by(&t, NOW).as_deref(),
        Some("claim:azp=mobile-app")
    );
    assert!(azp(NOW).revoked_by(&t, NOW).is_none());
    assert!(
        Token::new(json!({"azp": "web", "iat": 1}))
            .revoked_by(&t, NOW)
            .is_none()
    );
    assert!(
        Token::new(json!({"groups": ["staff", "contractors"]}))
            .revoked_by(&t, NOW)
            .is_some()
    );
    assert!(
        Token::new(json!({"groups": ["staff"]}))
            .revoked_by(&t, NOW)
            .is_none()
    );
    assert!(
        Token::new(json!({"tenant": 42}))
            .revoked_by(&t, NOW)
            .is_some()
    );
}

#[test]
fn a_token_sha256_rule_matches_any_of_the_tokens_hashes() {
    let h = token_hash::sha256("a.b.c");
    let mut t = RuleTable::default();
    t.insert(Rule {
        selector: Selector::TokenSha256(h),
        scope: Scope::new(None, None, None, None),
    });
    assert!(t.has_token_hashes());
    let mut tok = Token::new(json!({}));
    assert!(tok.revoked_by(&t, NOW).is_none());
    tok.hashes = vec![token_hash::sha256("other"), h];
    assert!(tok.revoked_by(&t, NOW).is_some());
}

#[test]
fn rules_with_one_id_merge_and_the_later_times_win() {
    let t = table(&[
        json!({"sub": "u", "issued_before": NOW - 100, "expires_at": NOW + 10}),
        json!({"sub": "u", "issued_before": NOW - 200, "expires_at": NOW + 20, "reason": "r"}),
    ]);
    assert_eq!(t.len(), 1);
    let r = t.get(&Selector::Sub("u".into()), None).unwrap();
    assert_eq!(r.scope.issued_before(), Some(NOW - 100));
    assert_eq!(r.scope.expires_at(), Some(NOW + 20));
    assert_eq!(r.scope.reason.as_deref(), Some("r"));

    // An absent cutoff is the latest of all: the merged rule revokes every token.
    let t = table(&[
        json!({"sub": "u", "issued_before": NOW}),
        json!({"sub": "u"}),
    ]);
    assert_eq!(
        t.get(&Selector::Sub("u".into()), None)
            .unwrap()
            .scope
            .issued_before(),
        None
    );
}

#[test]
fn same_selector_for_two_issuers_is_two_rules() {
    let mut t = table(&[json!({"sub": "u"}), json!({"sub": "u", "iss": ISS})]);
    assert_eq!(t.len(), 2);
    assert!(t.remove(&Selector::Sub("u".into()), Some(ISS)));
    assert!(!t.remove(&Selector::Sub("u".into()), Some(ISS)));
    assert_eq!(t.len(), 1);
    assert_eq!(t.rules().count(), 1);
}

#[test]
fn max_token_lifetime_prunes_cutoffs_no_live_token_can_fall_under() {
    let t = table(&[
        json!({"sub": "u", "issued_before": NOW - 100}),
        json!({"sub": "v"}),
    ]);
    assert_eq!(t.pruned(NOW, Some(50)).len(), 1);
    assert_eq!(t.pruned(NOW, Some(500)).len(), 2);
    assert_eq!(t.next_expiry(Some(50)), Some(NOW - 50));
    assert!(t.has_prunable(NOW, Some(50)));
}

#[test]
fn rule_ids_follow_the_spec() {
    let ids: Vec<String> = [
        json!({"session": "s"}),
        json!({"sub": "u", "iss": "i"}),
        json!({"claim": "azp", "value": "m"}),
        json!({"issued_before": 1}),
    ]
    .into_iter()
    .map(|r| rule(r).id())
    .collect();
    assert_eq!(ids, ["session:s", "sub:u@i", "claim:azp=m", "global"]);
}

#[test]
fn the_snapshot_reports_which_layer_matched() {
    let snap = Snapshot {
        version: 3,
        file: Arc::new(table(&[json!({"sub": "a"})])),
        pushed: Arc::new(table(&[json!({"sub": "b"})])),
    };
    let claims = json!({"sub": "b"}).as_object().cloned().unwrap();
    let facts = TokenFacts {
        iss: ISS,
        iat: None,
        sub: Some("b"),
        session: None,
        claims: &claims,
        hashes: &[],
    };
    let m = snap.find(&facts, NOW).unwrap();
    assert_eq!(m.source, Source::Pushed);
    assert_eq!(m.id, "sub:b");
    assert_eq!(snap.len(), 2);
}

#[test]
fn ids_parse_back_even_when_values_contain_at_signs() {
    let r = rule(json!({"sub": "alice@example.com", "iss": "https://auth"}));
    assert_eq!(r.id(), "sub:alice%40example.com@https://auth");
    assert_eq!(
        parse_id(&r.id()),
        Some((r.selector.clone(), Some("https://auth".into())))
    );
    assert_eq!(
        parse_id("sub:alice%40example.com"),
        Some((Selector::Sub("alice@example.com".into()), None))
    );
    assert_eq!(parse_id("global"), Some((Selector::Global, None)));
    assert_eq!(parse_id("nonsense"), None);
    assert_eq!(parse_id("sha256:zz"), None);
    assert_eq!(
        parse_id("sub:a%zz"),
        None,
        "an escape other than %25 or %40"
    );
}

#[test]
fn a_value_with_an_at_sign_and_an_issuer_never_share_an_id() {
    // Issue 13: both were `sub:a@ISS`, and GET/DELETE by id reached only one of them.
    let in_value = rule(json!({"sub": "a@ISS"}));
    let with_iss = rule(json!({"sub": "a", "iss": "ISS"}));
    assert_ne!(in_value.id(), with_iss.id());
    assert_eq!(
        with_iss.id(),
        "sub:a@ISS",
        "ordinary values keep SPEC §3's ids"
    );
    for r in [
        in_value,
        with_iss,
        rule(json!({"session": "100%@x", "iss": "i@j"})),
        rule(json!({"claim": "e@mail", "value": "a=b@c%", "iss": "ISS"})),
    ] {
        let iss = r.scope.iss.as_deref().map(str::to_owned);
        let parsed: Vec<_> = parse_id(&r.id()).into_iter().collect();
        assert_eq!(parsed, vec![(r.selector.clone(), iss)], "{}", r.id());
    }
}

#[test]
fn a_rule_written_as_json_reads_back_as_the_same_rule() {
    for r in [
        json!({"session": "s", "expires_at": "2030-01-01T00:00:00Z", "reason": "why"}),
        json!({"claim": "azp", "value": "m", "issued_before": 1_800_000_000, "iss": "i"}),
        json!({"token_sha256": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"}),
        json!({"issued_before": 5}),
    ] {
        let original = rule(r);
        let back = rule(serde_json::Value::Object(original.to_json()));
        assert_eq!(back, original);
    }
}

#[test]
fn the_latest_real_times_survive_a_table_unchanged() {
    let last = 253_402_300_799; // 9999-12-31T23:59:59Z
    let mut t = RuleTable::default();
    t.insert(Rule {
        selector: Selector::Global,
        scope: Scope::new(None, Some(last), Some(last), None),
    });
    let r = t.get(&Selector::Global, None).unwrap();
    assert_eq!(r.scope.issued_before(), Some(last));
    assert_eq!(r.scope.expires_at(), Some(last));
    assert!(r.scope.is_live(last - 1));
    assert!(!r.scope.is_live(last));
    // A scope holds any time as given: no value of it means "absent".
    let far = Scope::new(None, Some(UnixTime::MAX), Some(UnixTime::MAX), None);
    assert_eq!(far.issued_before(), Some(UnixTime::MAX));
    assert_eq!(far.expires_at(), Some(UnixTime::MAX));
}

#[test]
fn a_number_written_as_a_float_in_the_token_matches_the_integer_rule() {
    // JSON does not tell 12345 from 12345.0; some issuers write every number as a float.
    assert_eq!(claim_text(&json!(12345.0)).as_deref(), Some("12345"));
    assert_eq!(claim_text(&json!(-7.0)).as_deref(), Some("-7"));
    assert_eq!(claim_text(&json!(1.5)).as_deref(), Some("1.5"));
    let t = table(&[json!({"claim": "uid", "value": 12345})]);
    assert_eq!(
        Token::new(json!({"uid": 12345.0}))
            .revoked_by(&t, NOW)
            .as_deref(),
        Some("claim:uid=12345")
    );
    assert_eq!(
        Token::new(json!({"uid": [1.0, 12345.0]}))
            .revoked_by(&t, NOW)
            .as_deref(),
        Some("claim:uid=12345")
    );
}
