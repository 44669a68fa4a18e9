//! The verification cache as a user sees it: repeated tokens are still revoked the moment a
//! rule arrives, and a key removed from the key file stops a cached token at once.

use std::time::Duration;

use serde_json::json;

use crate::common::{AppSaw, Pod, Token, VetoDir, assert_denied, poll_until};

const CONFIG: &str = r#"
grpc: {listen: $GRPC_LISTEN}
admin: {listen: $ADMIN_LISTEN}
issuers:
  - issuer: https://issuer.test
    audiences: [orders-api]
    jwks_file: jwks.json
revocation:
  file: rules/rules.json
cache: {max_entries: 1024, max_bytes: 1048576}
forward:
  claims_to_headers: {sub: x-jwt-sub}
"#;

#[tokio::test]
async fn a_cached_token_is_denied_as_soon_as_a_rule_revokes_it() {
    let dir = VetoDir::new().with_fixture_keys();
    dir.write("rules/rules.json", json!({"rules": []}).to_string());
    let pod = Pod::start(dir, CONFIG).await;
    let token = Token::new();
    let signed = token.sign();
    for _ in 0..3 {
        AppSaw::read(pod.get_with_token("/", &signed).await).await;
    }

    let tmp = pod.veto.write(
        "rules/.next",
        json!({"rules": [{"session": token.jti()}]}).to_string(),
    );
    std::fs::rename(tmp, pod.veto.dir().join("rules/rules.json")).unwrap();
    assert!(
        poll_until(Duration::from_secs(10), async || {
            pod.get_with_token("/", &signed).await.status() == 401
        })
        .await
    );
    assert_denied(pod.get_with_token("/", &signed).await, "revoked").await;
}

#[tokio::test]
async fn a_key_removed_from_the_key_file_stops_a_cached_token_at_once() {
    let dir = VetoDir::new().with_fixture_keys();
    dir.write("rules/rules.json", json!({"rules": []}).to_string());
    let pod = Pod::start(dir, CONFIG).await;
    let signed = Token::new().sign();
    AppSaw::read(pod.get_with_token("/", &signed).await).await;

    let jwks: serde_json::Value =
        serde_json::from_slice(&std::fs::read(pod.veto.dir().join("jwks.json")).unwrap()).unwrap();
    let keys: Vec<_> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| k["kid"] != "rsa-1")
        .cloned()
        .collect();
    let tmp = pod
        .veto
        .write(".jwks.next", json!({ "keys": keys }).to_string());
    std::fs::rename(tmp, pod.veto.dir().join("jwks.json")).unwrap();
    assert!(
        poll_until(Duration::from_secs(10), async || {
            pod.get_with_token("/", &signed).await.status() == 401
        })
        .await
    );
    assert_denied(pod.get_with_token("/", &signed).await, "unknown_key").await;
}
