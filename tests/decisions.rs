//! Decisions as a client sees them through a real Envoy: which requests reach the app and
//! what it sees of them, and the exact 401 (SPEC §4) every other request gets.

use jsonwebtoken::Algorithm;
use serde_json::{Value, json};

use crate::common::{
    AppSaw, ClosedPort, EchoUpstream, Envoy, Pod, SIDECAR_CONFIG, SUBJECT, SidecarConfig, Token,
    VetoDir, assert_denied, assert_denied_as_missing_token, denial_reason, http_client, now,
    other_rsa_key, rsa_public_pem,
};

/// The standard sidecar config (see `common::SIDECAR_CONFIG`).
const CONFIG: &str = SIDECAR_CONFIG;

/// A pod whose veto has the fixture keys and `rules` as its rules file.
async fn pod_with_rules(rules: Value) -> Pod {
    let dir = VetoDir::new().with_fixture_keys();
    dir.write("rules/rules.json", rules.to_string());
    Pod::start(dir, CONFIG).await
}

async fn pod_without_rules() -> Pod {
    pod_with_rules(json!({"rules": []})).await
}

#[tokio::test]
async fn a_valid_rs256_token_reaches_the_app_with_its_subject_header() {
    let pod = pod_without_rules().await;

    let response = pod.get_with_token("/orders/7", &Token::new().sign()).await;

    let saw = AppSaw::read(response).await;
    assert_eq!(saw.path(), "/orders/7");
    assert_eq!(saw.header("x-jwt-sub"), [SUBJECT]);
}

#[tokio::test]
async fn tokens_signed_with_every_supported_algorithm_reach_the_app() {
    let pod = pod_without_rules().await;

    for alg in [
        Algorithm::RS256,
        Algorithm::PS256,
        Algorithm::ES256,
        Algorithm::ES384,
        Algorithm::EdDSA,
        Algorithm::HS256,
    ] {
        let token = Token::new().alg(alg).claim("sub", format!("user-{alg:?}"));
        let response = pod.get_with_token("/", &token.sign()).await;
        let saw = AppSaw::read_for(response, &format!("an {alg:?} token")).await;
        assert_eq!(saw.header("x-jwt-sub"), [format!("user-{alg:?}")]);
    }
}

#[tokio::test]
async fn a_request_without_a_token_gets_401_with_only_the_realm() {
    let pod = pod_without_rules().await;

    let response = pod
        .get("/orders")
        .send()
        .await
        .expect("send a request through Envoy");

    assert_denied_as_missing_token(response).await;
}

#[tokio::test]
async fn a_forged_x_jwt_sub_header_is_overwritten() {
    let pod = pod_without_rules().await;

    let response = pod
        .get("/orders")
        .bearer_auth(Token::new().sign())
        .header("x-jwt-sub", "admin")
        .send()
        .await
        .expect("send a request through Envoy");

    let saw = AppSaw::read(response).await;
    assert_eq!(
        saw.header("x-jwt-sub"),
        [SUBJECT],
        "exactly veto's copy, not the client's"
    );
}

#[tokio::test]
async fn a_forged_x_jwt_sub_header_is_removed_when_the_token_has_no_subject() {
    let pod = pod_without_rules().await;

    let response = pod
        .get("/orders")
        .bearer_auth(Token::new().without("sub").sign())
        .header("x-jwt-sub", "admin")
        .send()
        .await
        .expect("send a request through Envoy");

    let saw = AppSaw::read(response).await;
    assert_eq!(saw.header("x-jwt-sub"), Vec::<String>::new());
}

#[tokio::test]
async fn a_token_revoked_by_jti_in_the_rules_file_gets_401_revoked() {
    let revoked = Token::new();
    let pod = pod_with_rules(json!({"rules": [{"session": revoked.jti()}]})).await;

    assert_denied(
        pod.get_with_token("/orders", &revoked.sign()).await,
        "revoked",
    )
    .await;

    // The rule names one session: the same user's other session still gets through.
    let other_session = Token::new();
    AppSaw::read(pod.get_with_token("/orders", &other_session.sign()).await).await;
}

#[tokio::test]
async fn each_kind_of_bad_token_gets_401_with_its_reason() {
    let pod = pod_without_rules().await;

    let cases = [
        (
            "a token that is not a JWT",
            "not-a.jwt".to_owned(),
            "malformed_token",
        ),
        (
            "a token from an issuer veto does not know",
            Token::new().claim("iss", "https://elsewhere.test").sign(),
            "unknown_issuer",
        ),
        (
            "a token naming a kid the JWKS does not have",
            Token::new().kid("rsa-2").sign(),
            "unknown_key",
        ),
        (
            "a token signed by a key that is not rsa-1 but claims to be",
            Token::new().signed_by(other_rsa_key()).sign(),
            "invalid_signature",
        ),
        (
            "a token that expired an hour ago (well past the 30 s leeway)",
            Token::new().issued_in(-7200).expires_in(-3600).sign(),
            "expired",
        ),
        (
            "a token valid only from an hour from now",
            Token::new().claim("nbf", now() + 3600).sign(),
            "not_yet_valid",
        ),
        (
            "a token for another audience",
            Token::new().claim("aud", "billing-api").sign(),
            "wrong_audience",
        ),
    ];

    for (what, token, reason) in cases {
        let response = pod.get_with_token("/orders", &token).await;
        let got = denial_reason(response).await;
        assert_eq!(got, reason, "{what}");
    }
}

#[tokio::test]
async fn tokens_that_try_to_skip_signature_checking_get_401() {
    let pod = pod_without_rules().await;

    // Algorithm confusion: an HS256 token whose HMAC secret is rsa-1's public key PEM. A
    // verifier that trusts the token's `alg` would check it against the public key bytes
    // it holds for rsa-1 and accept it.
    let confused = Token::new()
        .alg(Algorithm::HS256)
        .kid("rsa-1")
        .signed_by(jsonwebtoken::EncodingKey::from_secret(&rsa_public_pem()))
        .sign();
    // `alg: none` with rsa-1's kid and an empty signature (RFC 7519 §6.1, "unsecured JWT").
    let payload = Token::new()
        .sign()
        .split('.')
        .nth(1)
        .expect("a JWT has a payload")
        .to_owned();
    let unsigned = format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{payload}.");

    for (what, token) in [
        ("HS256 keyed with the RSA public key", confused),
        ("alg none", unsigned),
    ] {
        let reason = denial_reason(pod.get_with_token("/orders", &token).await).await;
        assert!(
            [
                "algorithm_not_allowed",
                "invalid_signature",
                "malformed_token"
            ]
            .contains(&reason.as_str()),
            "{what}: denied, but with reason {reason}"
        );
    }
}

#[tokio::test]
async fn when_veto_is_unreachable_envoy_answers_503_not_401() {
    // Nothing listens on the veto port: Envoy's status_on_error applies (SPEC §4,
    // "Undecidable"), so clients retry instead of being sent to log in again.
    let veto = ClosedPort::new();
    let app = EchoUpstream::start().await;
    let envoy = Envoy::start(veto.addr(), app.addr()).await;

    let response = http_client()
        .get(envoy.url("/orders"))
        .bearer_auth(Token::new().sign())
        .send()
        .await
        .expect("send a request through Envoy");

    assert_eq!(response.status(), 503);
}

#[tokio::test]
async fn with_max_token_lifetime_a_token_older_than_it_is_expired_even_after_its_cutoff_is_pruned()
{
    // A global cutoff two minutes old, with a one-minute max lifetime: veto prunes the rule
    // at once, so it must refuse every token old enough to have been caught by it.
    let dir = VetoDir::new().with_fixture_keys();
    dir.write(
        "rules/rules.json",
        json!({"rules": [{"issued_before": now() - 120}]}).to_string(),
    );
    let config = SidecarConfig::new()
        .set("revocation.max_token_lifetime", "60")
        .yaml();
    let pod = Pod::start(dir, &config).await;

    let old = Token::new().issued_in(-300).expires_in(7200).sign();
    assert_denied(pod.get_with_token("/", &old).await, "expired").await;
    let no_iat = Token::new().without("iat").sign();
    assert_denied(pod.get_with_token("/", &no_iat).await, "malformed_token").await;
    let fresh = Token::new().sign();
    AppSaw::read(pod.get_with_token("/", &fresh).await).await;
}

#[tokio::test]
async fn a_numeric_subject_is_blocked_by_a_sub_rule_naming_it() {
    let pod = pod_with_rules(json!({"rules": [{"sub": 12345}, {"session": 777}]})).await;
    let numeric_sub = Token::new().claim("sub", 12345).sign();
    assert_denied(pod.get_with_token("/", &numeric_sub).await, "revoked").await;
    let numeric_jti = Token::new().claim("jti", 777).sign();
    assert_denied(pod.get_with_token("/", &numeric_jti).await, "revoked").await;
    let other = Token::new().claim("sub", 123456).sign();
    AppSaw::read(pod.get_with_token("/", &other).await).await;
}
