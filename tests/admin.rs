//! The admin API (SPEC §5) over real HTTP against the running binary: every status code,
//! authentication and token rotation, durability across `kill -9`, the session-blacklist
//! flow through Envoy, and pushes racing rules-file reloads.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::{
    AppSaw, Pod, SIDECAR_CONFIG, SidecarConfig, Token, Veto, VetoDir, assert_denied, http_client,
    http_client_with_timeout, poll_until,
};

const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

/// The standard sidecar with the admin token file [`dir_with`] writes.
fn with_admin_token() -> SidecarConfig {
    SidecarConfig::new().admin_token_file("admin-token")
}

/// [`with_admin_token`], and (when `state_dir` is given) durable pushes there.
fn config(state_dir: Option<&std::path::Path>) -> String {
    match state_dir {
        Some(dir) => with_admin_token().state_dir(dir).yaml(),
        None => with_admin_token().yaml(),
    }
}

fn dir_with(rules: Value) -> VetoDir {
    let dir = VetoDir::new().with_fixture_keys();
    dir.write("rules/rules.json", rules.to_string());
    dir.write("admin-token", format!("{ADMIN_TOKEN}\n"));
    dir
}

/// A small client for the admin API of one veto.
struct Admin {
    base: String,
    http: reqwest::Client,
    token: Option<String>,
}

impl Admin {
    fn of(veto: &Veto) -> Admin {
        Admin {
            base: veto.admin_url(""),
            http: http_client(),
            token: Some(ADMIN_TOKEN.into()),
        }
    }

    fn with_token(&self, token: Option<&str>) -> Admin {
        Admin {
            base: self.base.clone(),
            http: self.http.clone(),
            token: token.map(str::to_owned),
        }
    }

    fn req(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let r = self.http.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(t) => r.bearer_auth(t),
            None => r,
        }
    }

    async fn send(&self, r: reqwest::RequestBuilder) -> (StatusCode, Value) {
        let resp = r.send().await.expect("admin request");
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.send(self.req(reqwest::Method::POST, path).json(&body))
            .await
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.send(self.req(reqwest::Method::GET, path)).await
    }

    async fn delete(&self, path: &str) -> (StatusCode, Value) {
        self.send(self.req(reqwest::Method::DELETE, path)).await
    }

    async fn version(&self) -> u64 {
        let (_, body) = self.get("/v1/rules").await;
        body["version"].as_u64().expect("a version number")
    }
}

fn ids(body: &Value) -> Vec<String> {
    body["rules"]
        .as_array()
        .map(|rules| {
            rules
                .iter()
                .filter_map(|r| r["id"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn every_rules_endpoint_answers_with_the_documented_status_codes() {
    let veto = dir_with(json!({"rules": [{"sub": "from-file"}]}))
        .start(&config(None))
        .await;
    let admin = Admin::of(&veto);

    // Authentication: missing or wrong token is 401 with a bearer challenge.
    for who in [admin.with_token(None), admin.with_token(Some("wrong"))] {
        let resp = who
            .req(reqwest::Method::POST, "/v1/rules")
            .json(&json!({"sub": "x"}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
        assert!(resp.headers().contains_key("www-authenticate"));
        assert_eq!(who.get("/v1/rules").await.0, StatusCode::UNAUTHORIZED);
    }

    // A push answers 201 with the stored rules and their ids.
    let (status, body) = admin
        .post(
            "/v1/rules",
            json!({"sub": "alice@example.com", "iss": "https://issuer.test", "reason": "laptop stolen"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(ids(&body), ["sub:alice%40example.com@https://issuer.test"]);
    assert_eq!(body["rules"][0]["source"], "pushed");
    assert_eq!(body["rules"][0]["reason"], "laptop stolen");

    // It is listed with the file's rule, and found by its id, percent-encoded.
    let (status, list) = admin.get("/v1/rules").await;
    assert_eq!(status, StatusCode::OK);
    let mut all = ids(&list);
    all.sort();
    assert_eq!(
        all,
        [
            "sub:alice%40example.com@https://issuer.test",
            "sub:from-file"
        ]
    );
    let encoded = "/v1/rules/sub%3Aalice%2540example.com%40https%3A%2F%2Fissuer.test";
    let (status, one) = admin.get(encoded).await;
    assert_eq!(status, StatusCode::OK, "{one}");
    assert_eq!(one["sub"], "alice@example.com");
    assert_eq!(one["iss"], "https://issuer.test");
    // The id written as SPEC §3 spells it, unescaped, reaches the only rule it can mean.
    let spelled = "/v1/rules/sub%3Aalice%40example.com%40https%3A%2F%2Fissuer.test";
    let (status, one) = admin.get(spelled).await;
    assert_eq!(status, StatusCode::OK, "{one}");
    assert_eq!(one["sub"], "alice@example.com");
    assert_eq!(
        admin.get("/v1/rules/sub:nobody").await.0,
        StatusCode::NOT_FOUND
    );

    // Bad input is 400 naming the field; a batch with one bad rule changes nothing.
    let before = admin.version().await;
    let (status, body) = admin
        .post(
            "/v1/rules",
            json!({"rules": [{"sub": "ok-1"}, {"session": "s", "issued_before": "someday"}]}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("rules[1].issued_before"),
        "{body}"
    );
    assert_eq!(
        admin.get("/v1/rules/sub:ok-1").await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(admin.version().await, before);
    let (status, _) = admin
        .send(
            admin
                .req(reqwest::Method::POST, "/v1/rules")
                .header("content-type", "application/json")
                .body("{not json"),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, body) = admin
        .post("/v1/rules", json!({"sub": "a", "colour": 1}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body["error"].as_str().unwrap().contains("colour"));

    // Over 1 MiB is 413 with a JSON error; without the token it is 401 first.
    let huge = json!({"rules": [{"sub": "x".repeat(1_100_000)}]});
    let (status, body) = admin.post("/v1/rules", huge.clone()).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(body["error"].is_string(), "{body}");
    // veto answers before reading the body, and may close the connection while the client
    // is still sending it: either way nothing of it is accepted.
    let refused = http_client()
        .post(veto.admin_url("/v1/rules"))
        .json(&huge)
        .send()
        .await;
    assert!(
        refused
            .as_ref()
            .map_or(true, |r| r.status() == StatusCode::UNAUTHORIZED),
        "{refused:?}"
    );

    // A rule that could never match is refused: an issuer veto does not know, or an expiry
    // already past.
    let (status, body) = admin
        .post(
            "/v1/rules",
            json!({"sub": "x", "iss": "https://issuer.tset"}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["error"].as_str().unwrap().starts_with("iss:"),
        "{body}"
    );

    // Delete: 204, then 404; a file rule is 409.
    assert_eq!(admin.delete(encoded).await.0, StatusCode::NO_CONTENT);
    assert_eq!(admin.delete(encoded).await.0, StatusCode::NOT_FOUND);
    assert_eq!(
        admin.delete("/v1/rules/sub:from-file").await.0,
        StatusCode::CONFLICT
    );

    // Explain names the decision, the reason and the rule.
    admin.post("/v1/rules", json!({"sub": "bob"})).await;
    let token = Token::new().claim("sub", "bob").sign();
    let (status, body) = admin.post("/v1/explain", json!({"token": token})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["decision"], "deny");
    assert_eq!(body["reason"], "revoked");
    assert_eq!(body["rule"], "sub:bob");
    let (_, body) = admin
        .post("/v1/explain", json!({"token": Token::new().sign()}))
        .await;
    assert_eq!(body["decision"], "allow");
    assert_eq!(
        admin.post("/v1/explain", json!({"jwt": "x"})).await.0,
        StatusCode::BAD_REQUEST
    );

    // The version only grows.
    assert!(admin.version().await > before);

    // Health, readiness and metrics stay open.
    let open = admin.with_token(None);
    for path in ["/healthz", "/readyz", "/metrics"] {
        let resp = open.req(reqwest::Method::GET, path).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{path}");
    }
    let metrics = open
        .req(reqwest::Method::GET, "/metrics")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(r#"veto_rules{source="pushed"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"veto_rules{source="file"} 1"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn without_a_token_file_every_write_is_403_with_how_to_enable_it() {
    let dir = dir_with(json!({"rules": []}));
    let veto = dir.start(SIDECAR_CONFIG).await;
    let admin = Admin::of(&veto).with_token(None);
    for (status, body) in [
        admin.post("/v1/rules", json!({"sub": "x"})).await,
        admin
            .post(
                "/v3/session-blacklist",
                json!({"sessionId": "s", "validityInSeconds": 5}),
            )
            .await,
        admin.delete("/v1/rules/sub:x").await,
    ] {
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert!(body["error"].as_str().unwrap().contains("admin.token_file"));
    }
    assert_eq!(admin.get("/v1/rules").await.0, StatusCode::OK);
}

#[tokio::test]
async fn a_rotated_admin_token_replaces_the_old_one() {
    let veto = dir_with(json!({"rules": []})).start(&config(None)).await;
    let admin = Admin::of(&veto);
    assert_eq!(admin.get("/v1/rules").await.0, StatusCode::OK);

    veto.write("admin-token", "rotated-token\n");
    let rotated = admin.with_token(Some("rotated-token"));
    assert!(
        poll_until(Duration::from_secs(10), async || rotated
            .get("/v1/rules")
            .await
            .0
            == StatusCode::OK)
        .await,
        "the new token was not accepted\n{}",
        veto.log()
    );
    assert_eq!(admin.get("/v1/rules").await.0, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn the_session_blacklist_flow_works_through_envoy_and_expires() {
    let pod = Pod::start(dir_with(json!({"rules": []})), &config(None)).await;
    let admin = Admin::of(&pod.veto);
    let token = Token::new();
    let session = token.jti().to_owned();
    let path = format!("/v3/session-blacklist/{session}");

    assert_eq!(admin.get(&path).await.0, StatusCode::NOT_FOUND);
    let resp = pod.get_with_token("/", &token.sign()).await;
    AppSaw::read(resp).await;

    let (status, body) = admin
        .post(
            "/v3/session-blacklist",
            json!({"sessionId": session, "validityInSeconds": 2}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(admin.get(&path).await.0, StatusCode::OK);
    assert_denied(pod.get_with_token("/", &token.sign()).await, "revoked").await;

    // validityInSeconds: 2 — after that the session is allowed again.
    let signed = token.sign();
    assert!(
        poll_until(Duration::from_secs(6), async || pod
            .get_with_token("/", &signed)
            .await
            .status()
            == StatusCode::OK)
        .await,
        "the blacklisted session never expired"
    );
    assert_eq!(admin.get(&path).await.0, StatusCode::NOT_FOUND);

    let (status, body) = admin
        .post("/v3/session-blacklist", json!({"sessionId": ""}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let error = body["error"].as_str().unwrap();
    assert!(
        error.contains("sessionId") && error.contains("validityInSeconds"),
        "{error}"
    );
}

#[tokio::test]
async fn issued_before_now_logs_a_user_out_everywhere_but_lets_them_back_in() {
    let pod = Pod::start(dir_with(json!({"rules": []})), &config(None)).await;
    let admin = Admin::of(&pod.veto);
    let old = Token::new().claim("sub", "carol").issued_in(-60).sign();

    let (status, body) = admin
        .post("/v1/rules", json!({"sub": "carol", "issued_before": "now"}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_denied(pod.get_with_token("/", &old).await, "revoked").await;

    // A token issued after the cutoff (a fresh login) gets through.
    let fresh = Token::new().claim("sub", "carol").issued_in(2).sign();
    let resp = pod.get_with_token("/", &fresh).await;
    assert_eq!(AppSaw::read(resp).await.header("x-jwt-sub"), ["carol"]);
}

#[tokio::test]
async fn a_push_survives_kill_9_and_an_expired_one_is_not_resurrected() {
    let state = tempfile::tempdir().unwrap();
    let token = Token::new().claim("sub", "dave");
    {
        let veto = dir_with(json!({"rules": []}))
            .start(&config(Some(state.path())))
            .await;
        let admin = Admin::of(&veto);
        let (status, _) = admin
            .post(
                "/v1/rules",
                json!({"rules": [{"session": token.jti()}, {"sub": "erin", "ttl_seconds": 1}]}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED);
        // SPEC §5: the 201 comes only once the push is on disk, not on its way there.
        let saved = std::fs::read_to_string(state.path().join("pushed-rules.json"))
            .unwrap_or_else(|e| format!("({e})"));
        assert!(
            saved.contains(token.jti()),
            "the push was not in the state file when veto answered 201: {saved}"
        );
        // Dropping the Veto sends SIGKILL, right after the 201.
    }

    // Wait out erin's one-second rule before the restart.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let pod = Pod::start(dir_with(json!({"rules": []})), &config(Some(state.path()))).await;
    assert_denied(pod.get_with_token("/", &token.sign()).await, "revoked").await;
    let admin = Admin::of(&pod.veto);
    let (_, list) = admin.get("/v1/rules?source=pushed").await;
    assert_eq!(ids(&list), [format!("session:{}", token.jti())]);
}

#[tokio::test]
async fn an_unreadable_state_file_stops_serve_naming_the_file() {
    let state = tempfile::tempdir().unwrap();
    std::fs::write(state.path().join("pushed-rules.json"), "{ torn").unwrap();
    let dir = dir_with(json!({"rules": []}));
    let config_path = dir.write(
        "veto.yaml",
        config(Some(state.path()))
            .replace("$GRPC_LISTEN", "127.0.0.1:0")
            .replace("$ADMIN_LISTEN", "127.0.0.1:0"),
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_veto"))
        .args(["serve", "--config"])
        .arg(&config_path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("pushed-rules.json"), "{stderr}");
}

#[tokio::test]
async fn a_thousand_concurrent_pushes_racing_file_reloads_all_land() {
    let veto = dir_with(json!({"rules": []})).start(&config(None)).await;
    // A thousand requests in flight at once: on a loaded two-core machine the last are
    // answered well after the usual 5 s timeout, and the point is that they land.
    let admin = std::sync::Arc::new(Admin {
        http: http_client_with_timeout(Duration::from_secs(60)),
        ..Admin::of(&veto)
    });

    let mut pushes = Vec::new();
    for i in 0..1000 {
        let admin = admin.clone();
        pushes.push(tokio::spawn(async move {
            admin
                .post("/v1/rules", json!({"session": format!("push-{i}")}))
                .await
                .0
        }));
    }
    // Rewrite the rules file while the pushes run.
    for round in 0..20 {
        veto.replace(
            "rules/rules.json",
            json!({"rules": [{"sub": format!("file-{round}")}]}).to_string(),
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for p in pushes {
        assert_eq!(p.await.unwrap(), StatusCode::CREATED);
    }
    assert!(
        poll_until(Duration::from_secs(10), async || {
            let (_, list) = admin.get("/v1/rules?source=file").await;
            ids(&list) == ["sub:file-19"]
        })
        .await
    );
    let (_, list) = admin.get("/v1/rules?source=pushed").await;
    assert_eq!(ids(&list).len(), 1000);
}

// ---- the audit log, denial log levels, /metrics and pruning ---------------------------

use crate::common::{assert_check_denied, check, check_client, headers_request};

/// veto's JSON log lines so far.
fn log_lines(veto: &Veto) -> Vec<Value> {
    veto.log()
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect()
}

/// Waits for the first log line `matches` accepts (log lines are written by a background
/// thread, after the answer the client saw); panics with the log when none comes.
async fn wait_for_log_line(veto: &Veto, what: &str, matches: impl Fn(&Value) -> bool) -> Value {
    let mut found = None;
    poll_until(Duration::from_secs(10), async || {
        found = log_lines(veto).into_iter().find(|line| matches(line));
        found.is_some()
    })
    .await;
    found.unwrap_or_else(|| panic!("no log line {what}\n{}", veto.log()))
}

fn is_audit(line: &Value, action: &str, result: &str) -> bool {
    line["target"] == "veto::audit" && line["action"] == action && line["result"] == result
}

#[tokio::test]
async fn a_wrong_admin_token_and_a_body_that_is_not_json_each_leave_an_audit_line() {
    let veto = dir_with(json!({"rules": []})).start(&config(None)).await;
    let admin = Admin::of(&veto);
    let wrong = "wrong-token-that-must-never-be-logged";

    let (status, _) = admin
        .with_token(Some(wrong))
        .post("/v1/rules", json!({"sub": "x"}))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let refused = wait_for_log_line(&veto, "auditing the wrong token", |l| {
        is_audit(l, "push", "unauthorized")
    })
    .await;
    let who = refused["who"].as_str().unwrap_or_default();
    assert!(
        who.len() == 8 && who.bytes().all(|b| b.is_ascii_hexdigit()),
        "the caller is named by a hash prefix of the token it sent: {refused}"
    );
    assert_eq!(refused["status"], 401, "{refused}");

    let resp = admin
        .req(reqwest::Method::POST, "/v1/rules")
        .header("content-type", "application/json")
        .body("{\"sub\": ")
        .send()
        .await
        .expect("admin request");
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let invalid = wait_for_log_line(&veto, "auditing the body that is not JSON", |l| {
        is_audit(l, "push", "invalid")
    })
    .await;
    assert!(
        invalid["error"]
            .as_str()
            .unwrap_or_default()
            .contains("not JSON"),
        "{invalid}"
    );
    assert_eq!(invalid["status"], 400, "{invalid}");

    let log = veto.log();
    for secret in [wrong, ADMIN_TOKEN] {
        assert!(!log.contains(secret), "a token reached the log:\n{log}");
    }
}

#[tokio::test]
async fn the_audit_line_of_a_push_lists_the_rule_ids_as_a_json_array() {
    let veto = dir_with(json!({"rules": []})).start(&config(None)).await;
    let (status, _) = Admin::of(&veto)
        .post(
            "/v1/rules",
            json!({"rules": [{"sub": "alice"}, {"session": "s-1"}]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);

    let pushed = wait_for_log_line(&veto, "auditing the push", |l| is_audit(l, "push", "ok")).await;
    assert_eq!(
        pushed["ids"],
        json!(["sub:alice", "session:s-1"]),
        "{pushed}"
    );
}

#[tokio::test]
async fn missing_token_denials_can_be_logged_below_info_and_are_counted_all_the_same() {
    let quiet = with_admin_token()
        .set("log.denials.missing_token", "debug")
        .yaml();
    let veto = dir_with(json!({"rules": []})).start(&quiet).await;
    let mut client = check_client(veto.grpc_addr()).await;

    assert_check_denied(
        &check(&mut client, headers_request(&[])).await,
        "missing_token",
    );
    let malformed = headers_request(&[("authorization", "Bearer not-a-jwt")]);
    assert_check_denied(&check(&mut client, malformed).await, "malformed_token");

    // Lines are written in order: once the second denial's line is there, the first one's
    // would be too.
    wait_for_log_line(&veto, "for the malformed token", |l| {
        l["reason"] == "malformed_token"
    })
    .await;
    assert!(
        !log_lines(&veto)
            .iter()
            .any(|l| l["reason"] == "missing_token"),
        "missing_token was logged at info:\n{}",
        veto.log()
    );
    assert_eq!(
        veto.metric(r#"veto_checks_total{decision="deny",reason="missing_token"}"#)
            .await,
        Some(1.0),
        "the quiet denial is still counted"
    );
}

#[tokio::test]
async fn metrics_answer_in_the_format_the_scraper_asked_for() {
    let veto = dir_with(json!({"rules": []})).start(&config(None)).await;
    let http = http_client();

    let plain = http
        .get(veto.admin_url("/metrics"))
        .send()
        .await
        .expect("GET /metrics");
    assert_eq!(
        plain.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let body = plain.text().await.expect("read /metrics");
    assert!(
        !body.contains("# EOF"),
        "an OpenMetrics end marker in the classic format:\n{body}"
    );
    assert!(
        body.contains("# TYPE veto_checks_total counter\n"),
        "the classic format types a counter under its sample name:\n{body}"
    );

    // What Prometheus sends.
    let openmetrics = http
        .get(veto.admin_url("/metrics"))
        .header(
            "accept",
            "application/openmetrics-text;version=1.0.0;q=0.5,text/plain;version=0.0.4;q=0.3,*/*;q=0.2",
        )
        .send()
        .await
        .expect("GET /metrics");
    let content_type = openmetrics.headers()["content-type"]
        .to_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    let body = openmetrics.text().await.expect("read /metrics");
    assert!(body.ends_with("# EOF\n"), "{body}");
    assert!(body.contains("# TYPE veto_checks counter\n"), "{body}");
}

/// [`config`] with `revocation.max_token_lifetime: 24h`, as the bundled example has.
fn config_with_a_token_lifetime() -> String {
    with_admin_token()
        .set("revocation.max_token_lifetime", "24h")
        .yaml()
}

#[tokio::test]
async fn every_rule_of_the_bundled_example_is_in_force() {
    let example =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/rules/rules.json");
    let rules: Value =
        serde_json::from_str(&std::fs::read_to_string(&example).expect("read the example rules"))
            .expect("the example rules are JSON");
    let count = rules["rules"].as_array().map_or(0, Vec::len);
    let veto = dir_with(rules).start(&config_with_a_token_lifetime()).await;

    assert_eq!(
        veto.metric(r#"veto_rules{source="file"}"#).await,
        Some(count as f64),
        "a rule of {} was pruned at load\n{}",
        example.display(),
        veto.log()
    );
}

#[tokio::test]
async fn rules_that_can_no_longer_match_are_pruned_at_load_with_a_line_saying_why() {
    let veto = dir_with(json!({"rules": [
        {"sub": "kept"},
        {"sub": "cutoff-long-ago", "issued_before": "2020-01-01T00:00:00Z"},
        {"session": "expired", "expires_at": "2020-01-01T00:00:00Z"},
    ]}))
    .start(&config_with_a_token_lifetime())
    .await;

    assert_eq!(veto.metric(r#"veto_rules{source="file"}"#).await, Some(1.0));
    let pruned = wait_for_log_line(&veto, "about the pruned rules", |l| {
        l["pruned"].is_u64() && l["source"] == "file"
    })
    .await;
    assert_eq!(pruned["pruned"], 2, "{pruned}");
    assert_eq!(pruned["expired"], 1, "{pruned}");
    assert_eq!(pruned["cutoff_past_lifetime"], 1, "{pruned}");
}
