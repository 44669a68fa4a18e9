//! The verification cache as a user sees it: repeated tokens are still revoked the moment a
//! rule arrives, and a key removed from the key file stops a cached token at once.

use std::time::Duration;

use serde_json::json;

use crate::common::{AppSaw, Pod, SidecarConfig, Token, VetoDir, assert_denied, poll_until};

/// The standard sidecar with the verification cache's limits set explicitly.
fn config() -> String {
    SidecarConfig::new()
        .set("cache", "{max_entries: 1024, max_bytes: 1048576}")
        .yaml()
}

/// A pod whose veto has the fixture keys, no rules, and [`config`].
async fn pod() -> Pod {
    let dir = VetoDir::new().with_fixture_keys();
    dir.write("rules/rules.json", json!({"rules": []}).to_string());
    Pod::start(dir, &config()).await
}

/// Waits until `signed` is denied (a file change is picked up within a second), then
/// asserts the denial is for `reason`.
async fn assert_denied_soon(pod: &Pod, signed: &str, reason: &str) {
    let denied = poll_until(Duration::from_secs(10), async || {
        pod.get_with_token("/", signed).await.status() == 401
    })
    .await;
    assert!(
        denied,
        "{reason}: the token was never denied\n{}",
        pod.veto.log()
    );
    assert_denied(pod.get_with_token("/", signed).await, reason).await;
}

#[tokio::test]
async fn a_cached_token_is_denied_as_soon_as_a_rule_revokes_it() {
    let pod = pod().await;
    let token = Token::new();
    let signed = token.sign();
    for _ in 0..3 {
        AppSaw::read(pod.get_with_token("/", &signed).await).await;
    }

    pod.veto.replace(
        "rules/rules.json",
        json!({"rules": [{"session": token.jti()}]}).to_string(),
    );
    assert_denied_soon(&pod, &signed, "revoked").await;
}

#[tokio::test]
async fn a_key_removed_from_the_key_file_stops_a_cached_token_at_once() {
    let pod = pod().await;
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
    pod.veto
        .replace("jwks.json", json!({ "keys": keys }).to_string());
    assert_denied_soon(&pod, &signed, "unknown_key").await;
}
