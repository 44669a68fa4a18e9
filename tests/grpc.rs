//! The ext_authz Check API and the gRPC health service called directly, the way Envoy (or
//! anything else speaking `envoy.service.auth.v3.Authorization`) calls them: requests an
//! Envoy config can produce but a test through Envoy cannot easily shape (raw
//! `header_map`, non-UTF-8 bytes, joined duplicates), and the exact `CheckResponse` Envoy
//! acts on.

use std::time::Duration;

use aws_lc_rs::digest::{SHA256, digest};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use envoy_types::ext_authz::v3::pb::{CheckRequest, HeaderAppendAction};
use jsonwebtoken::Algorithm;
use serde_json::json;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;

use crate::common::{
    GRPC_OK, SUBJECT, SidecarConfig, Token, Veto, VetoDir, assert_check_denied, bearer_request,
    check, check_allowed, check_client, check_denial_reason, check_token, header_values,
    headers_request, health_client, poll_until, raw_headers_request,
};

/// The standard sidecar, forwarding `azp` as `x-jwt-azp` too.
fn config() -> String {
    SidecarConfig::new().forward("azp", "x-jwt-azp").yaml()
}

/// How long a rules file change may take to reach the Checks: the watcher's debounce is a
/// fraction of a second; the rest is slack for a busy two-core CI machine.
const RELOAD_TIMEOUT: Duration = Duration::from_secs(10);

/// veto (no Envoy) with the fixture keys and no rules.
async fn veto_without_rules() -> Veto {
    let dir = VetoDir::new().with_fixture_keys();
    dir.write("rules/rules.json", json!({"rules": []}).to_string());
    dir.start(&config()).await
}

/// Replaces veto's rules file at once with `rules`.
fn replace_rules(veto: &Veto, rules: serde_json::Value) {
    veto.replace("rules/rules.json", rules.to_string());
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

#[tokio::test]
async fn raw_header_map_headers_are_read_and_a_duplicated_or_non_utf8_header_is_malformed() {
    let veto = veto_without_rules().await;
    let mut client = check_client(veto.grpc_addr()).await;
    let token = bearer(&Token::new().sign());

    // Envoy keeps the client's header-name case in header_map; veto must not care.
    let allowed = check(
        &mut client,
        raw_headers_request(&[("Authorization", token.as_bytes())]),
    )
    .await;
    assert_eq!(
        allowed.status.as_ref().map(|status| status.code),
        Some(GRPC_OK),
        "an allowed Check says OK in CheckResponse.status"
    );
    let ok = check_allowed(&allowed);
    assert_eq!(header_values(&ok.headers, "x-jwt-sub"), [SUBJECT]);

    let other = bearer(&Token::new().sign());
    let twice = check(
        &mut client,
        raw_headers_request(&[
            ("authorization", token.as_bytes()),
            ("authorization", other.as_bytes()),
        ]),
    )
    .await;
    assert_check_denied(&twice, "malformed_token");

    let mut not_utf8 = token.clone().into_bytes();
    not_utf8.extend_from_slice(b"\xff\xfe");
    let binary = check(
        &mut client,
        raw_headers_request(&[("authorization", &not_utf8)]),
    )
    .await;
    assert_check_denied(&binary, "malformed_token");
}

#[tokio::test]
async fn odd_authorization_headers_get_the_spec_reason() {
    let veto = veto_without_rules().await;
    let mut client = check_client(veto.grpc_addr()).await;
    let (first, second) = (Token::new().sign(), Token::new().sign());

    let cases = [
        (
            "a 40 kB bearer value",
            format!("Bearer {}", "a".repeat(40_000)),
            "malformed_token",
        ),
        (
            "Basic credentials (another scheme: no bearer token at all)",
            "Basic dXNlcjpwYXNz".to_owned(),
            "missing_token",
        ),
        (
            "the Bearer scheme with no token",
            "Bearer".to_owned(),
            "malformed_token",
        ),
        (
            "the Bearer scheme and a space, with no token",
            "Bearer ".to_owned(),
            "malformed_token",
        ),
        (
            "two Authorization headers, joined by Envoy with a comma",
            format!("Bearer {first},Bearer {second}"),
            "malformed_token",
        ),
    ];
    for (what, value, reason) in cases {
        let response = check(
            &mut client,
            headers_request(&[("authorization", value.as_str())]),
        )
        .await;
        let got = check_denial_reason(&response);
        assert_eq!(got, reason, "{what}");
    }

    // No authorization header at all, next to other headers; and a request with no
    // attributes at all, which a misconfigured or older proxy could send.
    let response = check(&mut client, headers_request(&[("accept", "*/*")])).await;
    assert_check_denied(&response, "missing_token");
    let response = check(&mut client, CheckRequest::default()).await;
    assert_check_denied(&response, "missing_token");
}

#[tokio::test]
async fn an_ecdsa_token_revoked_by_token_sha256_stays_revoked_when_its_signature_is_re_encoded() {
    let veto = veto_without_rules().await;
    let mut client = check_client(veto.grpc_addr()).await;

    for (alg, order) in [
        (Algorithm::ES256, P256_ORDER),
        (Algorithm::ES384, P384_ORDER),
    ] {
        let original = Token::new().alg(alg).sign();
        let twin = ecdsa_twin(&original, order);
        assert_ne!(twin, original, "{alg:?}: the twin is another token string");
        // A second token, revoked by the hash of its twin: the rule catches the original too.
        let other = Token::new().alg(alg).sign();
        let other_twin = ecdsa_twin(&other, order);

        // With no rule, both forms are valid tokens: the twin is a real way around a rule
        // that hashed only the original string.
        for (what, token) in [
            ("the original", &original),
            ("the re-encoded twin", &twin),
            ("the other token", &other),
            ("the other token's twin", &other_twin),
        ] {
            assert_eq!(
                check_token(&mut client, token).await,
                "allowed",
                "{alg:?}: {what} without a rule"
            );
        }

        replace_rules(
            &veto,
            json!({"rules": [
                {"token_sha256": sha256_hex(&original)},
                {"token_sha256": sha256_hex(&other_twin)},
            ]}),
        );
        let revoked = poll_until(RELOAD_TIMEOUT, async || {
            check_token(&mut client, &original).await == "revoked"
        })
        .await;
        assert!(
            revoked,
            "{alg:?}: the rule never took effect\n{}",
            veto.log()
        );

        for (what, token) in [
            ("the original", &original),
            ("the re-encoded twin of a revoked token", &twin),
            ("a token whose twin's hash is revoked", &other),
            ("the token whose hash is revoked", &other_twin),
        ] {
            assert_eq!(
                check_token(&mut client, token).await,
                "revoked",
                "{alg:?}: {what}"
            );
        }
        replace_rules(&veto, json!({"rules": []}));
        let cleared = poll_until(RELOAD_TIMEOUT, async || {
            check_token(&mut client, &original).await == "allowed"
        })
        .await;
        assert!(
            cleared,
            "{alg:?}: emptying the rules file never took effect"
        );
    }
}

#[tokio::test]
async fn the_grpc_health_service_answers_serving_for_the_server_and_the_check_service() {
    let veto = veto_without_rules().await;
    let mut client = health_client(veto.grpc_addr()).await;

    for service in ["", "envoy.service.auth.v3.Authorization"] {
        let response = client
            .check(HealthCheckRequest {
                service: service.to_owned(),
            })
            .await
            .unwrap_or_else(|status| panic!("health check of {service:?}: {status:?}"))
            .into_inner();
        assert_eq!(
            response.status,
            ServingStatus::Serving as i32,
            "health of {service:?}"
        );
    }
}

#[tokio::test]
async fn a_denied_check_carries_the_401_challenge_and_json_body_envoy_sends_to_the_client() {
    let veto = veto_without_rules().await;
    let mut client = check_client(veto.grpc_addr()).await;
    let expired = Token::new().issued_in(-7200).expires_in(-3600).sign();

    let response = check(&mut client, bearer_request(&expired)).await;

    // Field by field, as Envoy reads it: the HTTP status, the two headers, the body.
    assert_check_denied(&response, "expired");
}

#[tokio::test]
async fn an_allowed_check_overwrites_claim_headers_and_removes_those_of_absent_claims() {
    let veto = veto_without_rules().await;
    let mut client = check_client(veto.grpc_addr()).await;

    // `azp` is absent: its header must be removed, so a client cannot inject one.
    let token = Token::new().sign();
    let response = check(
        &mut client,
        headers_request(&[("authorization", &bearer(&token)), ("x-jwt-azp", "forged")]),
    )
    .await;
    let ok = check_allowed(&response);
    let sub: Vec<_> = ok
        .headers
        .iter()
        .filter(|h| h.header.as_ref().is_some_and(|h| h.key == "x-jwt-sub"))
        .collect();
    assert_eq!(sub.len(), 1, "one x-jwt-sub header option: {ok:?}");
    assert_eq!(header_values(&ok.headers, "x-jwt-sub"), [SUBJECT]);
    assert_eq!(
        sub[0].append_action,
        HeaderAppendAction::OverwriteIfExistsOrAdd as i32,
        "a client's own x-jwt-sub must be overwritten, never kept beside veto's"
    );
    assert_eq!(ok.headers_to_remove, ["x-jwt-azp"]);
    assert_eq!(
        header_values(&ok.headers, "x-jwt-azp"),
        Vec::<String>::new()
    );

    // With both claims absent or present, the lists swap.
    let token = Token::new()
        .without("sub")
        .claim("azp", "mobile-app")
        .sign();
    let response = check(&mut client, bearer_request(&token)).await;
    let ok = check_allowed(&response);
    assert_eq!(header_values(&ok.headers, "x-jwt-azp"), ["mobile-app"]);
    assert_eq!(ok.headers_to_remove, ["x-jwt-sub"]);
}

/// Order n of the P-256 group (SEC 2 §2.4.2), as SPEC §3 and the brief give it.
const P256_ORDER: &str = "FFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551";

/// Order n of the P-384 group (SEC 2 §2.5.1).
const P384_ORDER: &str = "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFC7634D81F4372DDF581A0DB248B0A77AECEC196ACCC52973";

/// The token with its ECDSA signature `r || s` (RFC 7518 §3.4) re-encoded as
/// `r || n − s`: a second valid signature of the same header and payload. Written here
/// independently of veto's own code, so a shared mistake cannot make both agree.
fn ecdsa_twin(token: &str, order_hex: &str) -> String {
    let order = hex_decode(order_hex);
    let (signed, signature) = token.rsplit_once('.').expect("a JWT has a signature");
    let signature = URL_SAFE_NO_PAD
        .decode(signature)
        .expect("the signature is base64url");
    assert_eq!(
        signature.len(),
        2 * order.len(),
        "a JWS ECDSA signature is r || s"
    );
    let (r, s) = signature.split_at(order.len());
    // n − s, big-endian, byte by byte with a borrow; 0 < s < n for a valid signature.
    let mut flipped = vec![0u8; order.len()];
    let mut borrow = 0u16;
    for i in (0..order.len()).rev() {
        let subtrahend = u16::from(s[i]) + borrow;
        let minuend = u16::from(order[i]);
        (flipped[i], borrow) = if minuend >= subtrahend {
            (u8::try_from(minuend - subtrahend).expect("a byte"), 0)
        } else {
            (u8::try_from(minuend + 256 - subtrahend).expect("a byte"), 1)
        };
    }
    assert_eq!(borrow, 0, "s is below the group order");
    let twin: Vec<u8> = r.iter().chain(&flipped).copied().collect();
    format!("{signed}.{}", URL_SAFE_NO_PAD.encode(twin))
}

fn hex_decode(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex digits"))
        .collect()
}

/// What a `token_sha256` rule names: the lowercase hex SHA-256 of the compact token.
fn sha256_hex(token: &str) -> String {
    digest(&SHA256, token.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
