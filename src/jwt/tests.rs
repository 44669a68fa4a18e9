//! Verification policy: every way a token can fail, and the algorithm-confusion attacks.

use std::path::{Path, PathBuf};
use std::time::Duration;

use jsonwebtoken::{EncodingKey, Header};
use serde_json::json;

use super::*;
use crate::config::CacheConfig;
use crate::revocation::token_hash::sha256;

const ISS: &str = "https://issuer.test";
const NOW: UnixTime = 1_800_000_000;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/keys")
        .join(name)
}

fn verifier(audiences: &[&str], algorithms: Vec<Algorithm>) -> Verifier {
    let config = IssuerConfig {
        issuer: ISS.into(),
        audiences: audiences.iter().map(|s| s.to_string()).collect(),
        jwks_file: Some(fixture("jwks.json")),
        remote: None,
        hmac_secret_file: Some(fixture("hs256.key")),
        algorithms,
        leeway: Duration::from_secs(30),
    };
    let v = Verifier::new(std::slice::from_ref(&config), &CacheConfig::default());
    let issuer = v.issuer(ISS).unwrap();
    for (kind, file) in jwks::key_files(&config) {
        jwks::install(issuer, kind, jwks::load_file(kind, &file).unwrap().keys);
    }
    v
}

fn claims() -> Value {
    json!({"iss": ISS, "sub": "alice", "aud": "orders-api", "iat": NOW, "exp": NOW + 3600})
}

fn sign(alg: Algorithm, kid: Option<&str>, key: &EncodingKey, claims: &Value) -> String {
    let mut h = Header::new(alg);
    h.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&h, claims, key).unwrap()
}

fn rsa() -> EncodingKey {
    EncodingKey::from_rsa_pem(&std::fs::read(fixture("rsa.pem")).unwrap()).unwrap()
}

fn hmac() -> EncodingKey {
    let secret = std::fs::read(fixture("hs256.key")).unwrap();
    EncodingKey::from_secret(secret.strip_suffix(b"\n").unwrap_or(&secret))
}

fn reason(v: &Verifier, token: &str) -> Reason {
    match v.verify_uncached(token, NOW) {
        Err(VerifyError::Denied(f)) => f.reason,
        other => panic!("expected a denial, got {other:?}"),
    }
}

/// A token with arbitrary header and payload JSON and a junk signature.
fn forged(header: Value, payload: Value) -> String {
    let enc = |v: &Value| URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap());
    format!(
        "{}.{}.{}",
        enc(&header),
        enc(&payload),
        URL_SAFE_NO_PAD.encode(b"sig")
    )
}

#[test]
fn good_rs256_and_hs256_tokens_verify() {
    let v = verifier(&["orders-api"], vec![]);
    let t = sign(Algorithm::RS256, Some("rsa-1"), &rsa(), &claims());
    let ok = v.verify_uncached(&t, NOW).unwrap();
    assert_eq!(ok.str_claim("sub"), Some("alice"));
    assert_eq!(ok.iat, Some(NOW));
    let t = sign(Algorithm::HS256, None, &hmac(), &claims());
    assert!(v.verify_uncached(&t, NOW).is_ok());
    // A single RSA key may be used without kid.
    let t = sign(Algorithm::PS256, None, &rsa(), &claims());
    assert!(v.verify_uncached(&t, NOW).is_ok());
}

#[test]
fn alg_none_is_not_an_algorithm() {
    let v = verifier(&[], vec![]);
    let t = forged(json!({"alg": "none"}), claims());
    let t = format!("{}.", t.rsplit_once('.').unwrap().0);
    assert_eq!(reason(&v, &t), Reason::MalformedToken);
    let t = forged(json!({"alg": "none"}), claims());
    assert_eq!(reason(&v, &t), Reason::AlgorithmNotAllowed);
}

#[test]
fn an_hs256_token_keyed_with_the_rsa_public_key_is_refused() {
    let v = verifier(&[], vec![]);
    let public_pem = std::fs::read(fixture("rsa-public.pem")).unwrap();
    let t = sign(
        Algorithm::HS256,
        Some("rsa-1"),
        &EncodingKey::from_secret(&public_pem),
        &claims(),
    );
    assert_eq!(reason(&v, &t), Reason::AlgorithmNotAllowed);
}

#[test]
fn the_issuer_allow_list_narrows_the_algorithms() {
    let v = verifier(&[], vec![Algorithm::ES256]);
    let t = sign(Algorithm::RS256, Some("rsa-1"), &rsa(), &claims());
    assert_eq!(reason(&v, &t), Reason::AlgorithmNotAllowed);
}

#[test]
fn unknown_kid_and_unknown_issuer_are_named() {
    let v = verifier(&[], vec![]);
    let t = sign(Algorithm::RS256, Some("nope"), &rsa(), &claims());
    assert_eq!(reason(&v, &t), Reason::UnknownKey);
    let mut c = claims();
    c["iss"] = json!("https://elsewhere");
    let t = sign(Algorithm::RS256, Some("rsa-1"), &rsa(), &c);
    assert_eq!(reason(&v, &t), Reason::UnknownIssuer);
}

#[test]
fn a_foreign_key_or_a_swapped_payload_breaks_the_signature() {
    let v = verifier(&[], vec![]);
    let other =
        EncodingKey::from_rsa_pem(&std::fs::read(fixture("other-rsa.pem")).unwrap()).unwrap();
    let t = sign(Algorithm::RS256, Some("rsa-1"), &other, &claims());
    assert_eq!(reason(&v, &t), Reason::InvalidSignature);

    let good = sign(Algorithm::RS256, Some("rsa-1"), &rsa(), &claims());
    let mut c = claims();
    c["sub"] = json!("mallory");
    let evil = sign(Algorithm::RS256, Some("rsa-1"), &other, &c);
    let (h, rest) = good.split_once('.').unwrap();
    let sig = rest.rsplit_once('.').unwrap().1;
    let payload = evil.split('.').nth(1).unwrap();
    assert_eq!(
        reason(&v, &format!("{h}.{payload}.{sig}")),
        Reason::InvalidSignature
    );
}

#[test]
fn time_claims_are_checked_with_leeway() {
    let v = verifier(&[], vec![]);
    let at = |patch: Value| {
        let mut c = claims();
        for (k, val) in patch.as_object().unwrap() {
            c[k] = val.clone();
        }
        sign(Algorithm::RS256, Some("rsa-1"), &rsa(), &c)
    };
    assert_eq!(reason(&v, &at(json!({"exp": NOW - 31}))), Reason::Expired);
    assert_eq!(reason(&v, &at(json!({"exp": NOW - 30}))), Reason::Expired);
    assert!(
        v.verify_uncached(&at(json!({"exp": NOW - 29})), NOW)
            .is_ok()
    );
    assert_eq!(
        reason(&v, &at(json!({"nbf": NOW + 31}))),
        Reason::NotYetValid
    );
    assert!(
        v.verify_uncached(&at(json!({"nbf": NOW + 30})), NOW)
            .is_ok()
    );
    assert_eq!(
        reason(&v, &at(json!({"iat": NOW + 60}))),
        Reason::NotYetValid
    );
    let mut c = claims();
    c.as_object_mut().unwrap().remove("exp");
    let t = sign(Algorithm::RS256, Some("rsa-1"), &rsa(), &c);
    assert_eq!(reason(&v, &t), Reason::MalformedToken);
    assert_eq!(
        reason(&v, &at(json!({"exp": "tomorrow"}))),
        Reason::MalformedToken
    );
}

#[test]
fn audiences_must_intersect() {
    let v = verifier(&["orders-api", "billing"], vec![]);
    let with_aud = |aud: Value| {
        let mut c = claims();
        c["aud"] = aud;
        sign(Algorithm::RS256, Some("rsa-1"), &rsa(), &c)
    };
    assert!(
        v.verify_uncached(&with_aud(json!(["x", "billing"])), NOW)
            .is_ok()
    );
    assert_eq!(reason(&v, &with_aud(json!("x"))), Reason::WrongAudience);
    assert_eq!(reason(&v, &with_aud(json!(null))), Reason::WrongAudience);
}

#[test]
fn garbage_never_panics_and_is_malformed() {
    let v = verifier(&[], vec![]);
    for t in [
        "",
        ".",
        "..",
        "a.b.c",
        "a.b.c.d.e",
        "\u{0}.\u{0}.\u{0}",
        &"A".repeat(20_000),
        "eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOjF9.",
    ] {
        assert_eq!(reason(&v, t), Reason::MalformedToken, "{t:.40}");
    }
    let t = forged(json!({"alg": "RS256", "crit": ["exp"]}), claims());
    assert_eq!(reason(&v, &t), Reason::MalformedToken);
}

#[test]
fn an_issuer_whose_keys_never_loaded_is_undecidable() {
    let config = IssuerConfig {
        issuer: ISS.into(),
        audiences: vec![],
        jwks_file: Some(fixture("jwks.json")),
        remote: None,
        hmac_secret_file: None,
        algorithms: vec![],
        leeway: Duration::from_secs(30),
    };
    let v = Verifier::new(&[config], &CacheConfig::default());
    let t = sign(Algorithm::RS256, Some("rsa-1"), &rsa(), &claims());
    assert!(matches!(
        v.verify_uncached(&t, NOW),
        Err(VerifyError::Undecidable(_))
    ));
}

#[test]
fn malformed_and_encryption_keys_are_skipped_but_an_empty_set_is_an_error() {
    let (keys, skipped) = jwks::parse_jwks(
        br#"{"keys":[{"kty":"RSA","n":"@@","e":"AQAB","kid":"bad"},{"kty":"EC","crv":"P-256","x":"AA","y":"AA","use":"enc"},{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo","kid":"ed"}]}"#,
    )
    .unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(skipped.len(), 2);
    assert!(jwks::parse_jwks(br#"{"keys":[]}"#).is_err());
    assert!(jwks::parse_jwks(b"garbage").is_err());
}

#[test]
fn a_cached_verification_is_reused_only_while_keys_and_times_hold() {
    let v = verifier(&[], vec![]);
    let t = sign(Algorithm::RS256, Some("rsa-1"), &rsa(), &claims());
    let d = sha256(&t);
    let first = v.verify(&t, &d, NOW).unwrap();
    let again = v.verify(&t, &d, NOW).unwrap();
    assert!(
        Arc::ptr_eq(&first, &again),
        "the second check is a cache hit"
    );

    // Expiry while cached: the cached entry is not trusted past exp.
    let late = NOW + 3600 + 30;
    match v.verify(&t, &d, late) {
        Err(VerifyError::Denied(f)) => assert_eq!(f.reason, Reason::Expired),
        other => panic!("expected expired, got {other:?}"),
    }

    // Key removal: a new key set without rsa-1 stops the cached token at once.
    let issuer = v.issuer(ISS).unwrap();
    let ec_only: Vec<Key> = issuer
        .jwks
        .load_full()
        .unwrap()
        .iter()
        .filter(|k| k.kid.as_deref() != Some("rsa-1"))
        .cloned()
        .collect();
    issuer.store_jwks(ec_only);
    match v.verify(&t, &d, NOW) {
        Err(VerifyError::Denied(f)) => assert_eq!(f.reason, Reason::UnknownKey),
        other => panic!("expected unknown_key, got {other:?}"),
    }
}

#[test]
fn failed_verifications_are_not_cached() {
    let v = verifier(&[], vec![]);
    let other =
        EncodingKey::from_rsa_pem(&std::fs::read(fixture("other-rsa.pem")).unwrap()).unwrap();
    for i in 0..100 {
        let mut c = claims();
        c["jti"] = json!(i);
        let t = sign(Algorithm::RS256, Some("rsa-1"), &other, &c);
        assert!(v.verify(&t, &sha256(&t), NOW).is_err());
    }
    assert_eq!(v.cache.len(), 0);
}

#[test]
fn an_hmac_secret_file_holding_a_public_key_is_refused() {
    let pem = std::fs::read(fixture("rsa-public.pem")).unwrap();
    assert!(jwks::hmac_key(&pem, Path::new("hs.key")).is_err());
    let jwks_doc = std::fs::read(fixture("jwks.json")).unwrap();
    assert!(jwks::hmac_key(&jwks_doc, Path::new("hs.key")).is_err());
    assert!(
        jwks::hmac_key(
            b"a real shared secret of some length\n",
            Path::new("hs.key")
        )
        .is_ok()
    );
}

#[test]
fn a_non_string_iss_is_malformed_not_an_unknown_issuer() {
    let v = verifier(&[], vec![]);
    for iss in [
        json!(true),
        json!(42),
        json!(["https://issuer.test"]),
        json!(null),
    ] {
        let mut c = claims();
        c["iss"] = iss.clone();
        let t = sign(Algorithm::RS256, Some("rsa-1"), &rsa(), &c);
        assert_eq!(reason(&v, &t), Reason::MalformedToken, "iss {iss}");
    }
    let mut c = claims();
    c.as_object_mut().unwrap().remove("iss");
    let t = sign(Algorithm::RS256, Some("rsa-1"), &rsa(), &c);
    assert_eq!(reason(&v, &t), Reason::UnknownIssuer, "no iss at all");
}

#[test]
fn an_hs256_token_naming_a_kid_the_issuer_has_not_got_is_unknown_key() {
    // The HMAC secret has no kid: a token that names one names some other key, and is not
    // checked against the secret anyway (jwt_verify_lib's vectors, issue 13).
    let v = verifier(&[], vec![]);
    let t = sign(
        Algorithm::HS256,
        Some("some-other-secret"),
        &hmac(),
        &claims(),
    );
    assert_eq!(reason(&v, &t), Reason::UnknownKey);
    let t = sign(Algorithm::HS256, None, &hmac(), &claims());
    assert!(v.verify_uncached(&t, NOW).is_ok());
}
