//! The one-shot commands (SPEC §1) as a user or a CI job runs them: `veto check-rules`,
//! `veto check-config` and `veto token`, through the real binary. What is checked is what
//! they see: the exit code (0 ok, 1 invalid input, 2 usage error), the summary on stdout,
//! and errors on stderr that name the file and the field.

use std::io::Write;
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Value, json};

use crate::common::{
    AUDIENCE, AppSaw, ISSUER, Pod, SidecarConfig, VetoDir, fixture_key_path, hmac_secret, now,
    run_veto,
};

// ---- check-rules ----------------------------------------------------------------------

/// Three valid rules, one of each common kind.
const VALID_RULES_JSON: &str = r#"{ "rules": [
  { "session": "johndoe", "expires_at": "2099-12-01T00:00:00Z" },
  { "sub": "1234567890", "reason": "account closed" },
  { "claim": "azp", "value": "mobile-app", "issued_before": "2026-11-20T00:00:00Z" }
] }"#;

/// The same three rules as a ConfigMap author writes them in YAML (timestamps unquoted).
const VALID_RULES_YAML: &str = "\
rules:
  - session: johndoe
    expires_at: 2099-12-01T00:00:00Z
  - sub: \"1234567890\"
    reason: account closed
  - claim: azp
    value: mobile-app
    issued_before: 1795132800
";

/// Asserts that `veto check-rules` accepts `file` (holding three rules) with a one-line
/// summary that names the file and counts the rules.
fn assert_check_rules_accepts_three_rules(file: &Path) {
    let run = run_veto([Path::new("check-rules"), file]);
    let summary = run.success();
    assert_eq!(
        summary.lines().count(),
        1,
        "the summary is one line:\n{}",
        run.output()
    );
    assert!(
        summary.contains(&file.display().to_string()) && summary.contains("3 rules"),
        "the summary names the file and counts its rules: {summary}"
    );
}

#[test]
fn check_rules_accepts_a_valid_json_file_with_a_one_line_summary() {
    let dir = VetoDir::new();
    let file = dir.write("rules.json", VALID_RULES_JSON);
    assert_check_rules_accepts_three_rules(&file);
}

#[test]
fn check_rules_accepts_a_valid_yaml_file_with_a_one_line_summary() {
    let dir = VetoDir::new();
    let file = dir.write("rules.yaml", VALID_RULES_YAML);
    assert_check_rules_accepts_three_rules(&file);
}

#[test]
fn check_rules_accepts_a_gzipped_json_file_with_a_one_line_summary() {
    let dir = VetoDir::new();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(VALID_RULES_JSON.as_bytes())
        .expect("gzip the rules");
    let file = dir.write(
        "rules.json.gz",
        gz.finish().expect("finish the gzip stream"),
    );
    assert_check_rules_accepts_three_rules(&file);
}

#[test]
fn check_rules_prints_every_error_with_its_path_and_the_file_name() {
    let dir = VetoDir::new();
    let file = dir.write(
        "rules.json",
        r#"{ "rules": [
          { "sub": "fine" },
          { "sub": "a", "session": "b" },
          { "sub": "c", "issued_before": "yesterday" },
          { "sub": "d", "colour": "red" },
          { "token_sha256": "not-a-hash" },
          { "reason": "a global rule without issued_before" }
        ] }"#,
    );

    let run = run_veto([Path::new("check-rules"), &file]);

    run.assert_exit(1).assert_stderr_names(&[
        "rules[1]",
        "rules[2].issued_before: not an RFC 3339 time or Unix seconds",
        "rules[3].colour",
        "rules[4].token_sha256",
        "rules[5]",
    ]);
    assert!(
        !run.stderr.contains("rules[0]"),
        "the valid rule is not reported:\n{}",
        run.output()
    );
    let file_name = file.display().to_string();
    for line in run.stderr.lines().filter(|line| line.contains("rules[")) {
        assert!(
            line.contains(&file_name),
            "every error line names the file ({file_name}): {line}"
        );
    }
    assert_eq!(run.stdout, "", "nothing on stdout when the file is invalid");
}

#[test]
fn check_rules_prints_every_error_of_a_yaml_file_with_its_path() {
    let dir = VetoDir::new();
    let file = dir.write(
        "rules.yml",
        "rules:\n  - sub: ok\n  - expires_at: soon\n    sub: x\n  - session: s\n    colour: red\n",
    );

    run_veto([Path::new("check-rules"), &file])
        .assert_exit(1)
        .assert_stderr_names(&["rules.yml", "rules[1].expires_at", "rules[2].colour"]);
}

#[test]
fn check_rules_refuses_an_empty_file_naming_it() {
    let dir = VetoDir::new();
    let file = dir.write("rules.json", "");

    run_veto([Path::new("check-rules"), &file])
        .assert_exit(1)
        .assert_stderr_names(&[&file.display().to_string()]);
}

#[test]
fn check_rules_refuses_a_file_that_is_not_json_naming_it() {
    let dir = VetoDir::new();
    let file = dir.write("rules.json", "rules: this is not JSON\n");

    run_veto([Path::new("check-rules"), &file])
        .assert_exit(1)
        .assert_stderr_names(&[&file.display().to_string()]);
}

#[test]
fn check_rules_refuses_a_missing_file_naming_it() {
    let dir = VetoDir::new();
    let file = dir.path().join("no-such-rules.json");

    run_veto([Path::new("check-rules"), &file])
        .assert_exit(1)
        .assert_stderr_names(&[&file.display().to_string()]);
}

#[test]
fn check_rules_says_why_a_file_cannot_be_read_only_once() {
    let dir = VetoDir::new();
    let file = dir.path().join("no-such-rules.json");

    let run = run_veto([Path::new("check-rules"), &file]);

    run.assert_exit(1);
    assert_eq!(
        run.stderr.matches("No such file or directory").count(),
        1,
        "one clear sentence, the OS error said once:\n{}",
        run.output()
    );
}

#[test]
fn check_rules_accepts_an_iss_it_cannot_check_and_says_check_config_does() {
    let dir = VetoDir::new();
    let file = dir.write(
        "rules.json",
        r#"{"rules": [{"sub": "eve", "iss": "https://issuer.tset"}, {"sub": "mallory"}]}"#,
    );

    let run = run_veto([Path::new("check-rules"), &file]);

    let summary = run.success();
    assert!(
        summary.starts_with(&format!(
            "{}: ok, 2 rules (1 rule with an iss not checked",
            file.display()
        )),
        "{summary}"
    );
    assert!(summary.contains("check-config"), "{summary}");
}

#[test]
fn check_rules_without_a_file_is_a_usage_error() {
    run_veto(["check-rules"])
        .assert_exit(2)
        .assert_stderr_names(&["Usage"]);
}

#[test]
fn an_unknown_flag_is_a_usage_error() {
    let dir = VetoDir::new();
    let file = dir.write("rules.json", VALID_RULES_JSON);
    run_veto([Path::new("check-rules"), Path::new("--colour"), &file])
        .assert_exit(2)
        .assert_stderr_names(&["--colour", "Usage"]);
}

#[test]
fn an_unknown_command_is_a_usage_error() {
    run_veto(["revoke-everything"])
        .assert_exit(2)
        .assert_stderr_names(&["revoke-everything"]);
}

#[test]
fn help_lists_the_four_commands_and_exits_0() {
    let run = run_veto(["--help"]);
    run.assert_exit(0);
    for command in ["serve", "check-rules", "check-config", "token"] {
        assert!(
            run.stdout.contains(command),
            "--help lists `{command}`:\n{}",
            run.output()
        );
    }
}

// ---- check-config ---------------------------------------------------------------------

/// A config like the README's, with the fixture keys and a rules file beside it.
const GOOD_CONFIG: &str = "\
grpc: {listen: 127.0.0.1:9191}
admin: {listen: 127.0.0.1:9192}
issuers:
  - issuer: https://issuer.test
    audiences: [orders-api]
    jwks_file: jwks.json
    hmac_secret_file: hs256.key
    algorithms: [RS256, ES256, HS256]
    leeway_seconds: 30
revocation:
  file: rules/rules.json
  max_token_lifetime: 24h
forward:
  claims_to_headers: {sub: x-jwt-sub}
";

/// A dir holding the fixture keys, a valid rules file and `config_yaml` as `veto.yaml`;
/// returns the dir (which must outlive the run) and the config's path.
fn config_dir(config_yaml: &str) -> (VetoDir, PathBuf) {
    let dir = VetoDir::new().with_fixture_keys();
    dir.write("rules/rules.json", VALID_RULES_JSON);
    let config = dir.write("veto.yaml", config_yaml);
    (dir, config)
}

#[test]
fn check_config_accepts_a_good_config_and_summarises_it() {
    let (_dir, config) = config_dir(GOOD_CONFIG);

    let run = run_veto([Path::new("check-config"), &config]);

    let summary = run.success();
    assert_eq!(summary.lines().count(), 1, "one line:\n{}", run.output());
    assert!(
        summary.contains(&config.display().to_string()),
        "the summary names the file: {summary}"
    );
}

#[test]
fn check_config_accepts_the_bundled_example() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/config.yaml");
    run_veto([Path::new("check-config"), &example]).success();
}

#[test]
fn check_config_lists_every_invalid_field_each_line_prefixed_alike() {
    let (dir, config) = config_dir(GOOD_CONFIG);
    let bad = GOOD_CONFIG
        .replace("grpc: {listen: 127.0.0.1:9191}", "grpc: {listen: nowhere}")
        .replace("[RS256, ES256, HS256]", "[RS256, none]")
        .replace("max_token_lifetime: 24h", "max_token_lifetime: 1 fortnight");
    dir.write("veto.yaml", &bad);

    let run = run_veto([Path::new("check-config"), &config]);

    run.assert_exit(1);
    let prefix = format!("veto: {}: ", config.display());
    let lines: Vec<&str> = run.stderr.lines().collect();
    let fields = [
        "grpc.listen",
        "issuers[0].algorithms[1]",
        "revocation.max_token_lifetime",
    ];
    assert_eq!(
        lines.len(),
        fields.len(),
        "one line per error:\n{}",
        run.output()
    );
    for (line, field) in lines.iter().zip(fields) {
        assert!(
            line.starts_with(&format!("{prefix}{field}: ")),
            "`{prefix}{field}: ...` expected: {line}"
        );
    }
}

#[test]
fn check_config_lists_every_file_it_cannot_use_each_with_its_field() {
    let with_token = GOOD_CONFIG.replace(
        "admin: {listen: 127.0.0.1:9192}",
        "admin: {listen: 127.0.0.1:9192, token_file: admin-token}",
    );
    let (dir, config) = config_dir(&with_token);
    let jwks = dir.write("jwks.json", "-----BEGIN NONSENSE-----\n");
    let hmac = dir.path().join("hs256.key");
    std::fs::remove_file(&hmac).expect("remove the HMAC secret");
    let rules = dir.write(
        "rules/rules.json",
        r#"{"rules": [{"sub": "ok"}, {"sub": "x", "issued_before": "tomorrow"}, {"sub": "d", "colour": "red"}]}"#,
    );
    let token = dir.path().join("admin-token");

    let run = run_veto([Path::new("check-config"), &config]);

    run.assert_exit(1);
    let prefix = format!("veto: {}: ", config.display());
    let expected = [
        ("issuers[0].jwks_file", &jwks, ""),
        ("issuers[0].hmac_secret_file", &hmac, ""),
        ("revocation.file", &rules, "rules[1].issued_before"),
        ("revocation.file", &rules, "rules[2].colour"),
        ("admin.token_file", &token, ""),
    ];
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(
        lines.len(),
        expected.len(),
        "one line per error:\n{}",
        run.output()
    );
    for (field, file, detail) in expected {
        let start = format!("{prefix}{field}: {}", file.display());
        assert!(
            lines
                .iter()
                .any(|line| line.starts_with(&start) && line.contains(detail)),
            "no line `{start}...{detail}`:\n{}",
            run.output()
        );
    }
}

#[test]
fn check_rules_prefixes_every_error_line_alike() {
    let dir = VetoDir::new();
    let file = dir.write(
        "rules.json",
        r#"{"rules": [{"sub": "x", "issued_before": "tomorrow"}, {"sub": "d", "colour": "red"}]}"#,
    );

    let run = run_veto([Path::new("check-rules"), &file]);

    run.assert_exit(1);
    let prefix = format!("veto: {}: rules[", file.display());
    assert_eq!(run.stderr.lines().count(), 2, "{}", run.output());
    for line in run.stderr.lines() {
        assert!(line.starts_with(&prefix), "`{prefix}...` expected: {line}");
    }
}

#[test]
fn summaries_count_one_rule_and_one_issuer_in_the_singular() {
    let dir = VetoDir::new();
    let file = dir.write("rules.json", r#"{"rules": [{"sub": "mallory"}]}"#);
    let summary = run_veto([Path::new("check-rules"), &file])
        .success()
        .to_owned();
    assert!(summary.ends_with(": ok, 1 rule"), "{summary}");

    let (dir, config) = config_dir(GOOD_CONFIG);
    dir.write("rules/rules.json", r#"{"rules": [{"sub": "mallory"}]}"#);
    let summary = run_veto([Path::new("check-config"), &config])
        .success()
        .to_owned();
    assert!(
        summary.contains("ok, 1 issuer, ") && summary.ends_with(", 1 rule"),
        "{summary}"
    );
}

/// Where the Deployment of `k8s/base` mounts the files its veto config names (see
/// k8s/base/kustomization.yaml and deployment.yaml): the repository file each ConfigMap is
/// generated from, and its path in the pod. The admin token's Secret has no value in the
/// repository (the operator creates it), so the copy gets a stand-in.
const POD_FILES: [(&str, &str); 2] = [
    ("k8s/base/keys/jwks.json", "etc/veto/keys/jwks.json"),
    ("k8s/base/rules/rules.yaml", "etc/veto/rules/rules.yaml"),
];

#[test]
fn check_config_with_a_root_validates_the_kubernetes_config_against_a_copy_of_the_pods_files() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config = repo.join("k8s/base/veto/veto.yaml");

    // Its paths are the pod's: they do not exist here.
    run_veto([Path::new("check-config"), &config])
        .assert_exit(1)
        .assert_stderr_names(&["/etc/veto/keys/jwks.json", "/etc/veto/admin/admin-token"]);

    let root = VetoDir::new();
    for (from, to) in POD_FILES {
        let content = std::fs::read(repo.join(from)).unwrap_or_else(|e| panic!("read {from}: {e}"));
        root.write(to, content);
    }
    root.write("etc/veto/admin/admin-token", "a-stand-in-admin-token\n");

    let run = run_veto([
        Path::new("check-config"),
        Path::new("--root"),
        root.path(),
        &config,
    ]);
    let summary = run.success();
    assert!(
        summary.starts_with(&format!("{}: ok, 1 issuer, ", config.display())),
        "{summary}"
    );
}

// ---- token ----------------------------------------------------------------------------

/// The PEM fixture and JWKS `kid` of each asymmetric algorithm `veto token` signs with.
const PEM_KEYS: [(Algorithm, &str, &str); 5] = [
    (Algorithm::RS256, "rsa.pem", "rsa-1"),
    (Algorithm::PS256, "rsa.pem", "rsa-1"),
    (Algorithm::ES256, "ec256.pem", "ec256-1"),
    (Algorithm::ES384, "ec384.pem", "ec384-1"),
    (Algorithm::EdDSA, "ed25519.pem", "ed-1"),
];

/// `veto token --key <key> --alg <alg> <extra>`: asserts success, returns the token.
/// `extra` is split at whitespace, so no value in it may contain a space.
fn mint(key: &Path, alg: Algorithm, extra: &str) -> String {
    let mut args = vec![
        "token".to_owned(),
        "--key".to_owned(),
        key.display().to_string(),
        "--alg".to_owned(),
        format!("{alg:?}"),
    ];
    args.extend(extra.split_whitespace().map(str::to_owned));
    let run = run_veto(&args);
    let token = run.success().to_owned();
    assert_eq!(
        token.split('.').count(),
        3,
        "stdout is one compact JWT:\n{}",
        run.output()
    );
    token
}

/// The fixture JWKS (the public halves of the PEM fixtures).
fn fixture_jwks() -> JwkSet {
    let path = fixture_key_path("jwks.json");
    let text = std::fs::read_to_string(&path).expect("read the fixture JWKS");
    serde_json::from_str(&text).expect("parse the fixture JWKS")
}

/// The key that verifies `alg` tokens: the fixture public key `kid`, or the HMAC secret.
fn verifying_key(alg: Algorithm, kid: &str) -> DecodingKey {
    if alg == Algorithm::HS256 {
        return DecodingKey::from_secret(&hmac_secret());
    }
    let jwks = fixture_jwks();
    let jwk = jwks
        .find(kid)
        .unwrap_or_else(|| panic!("the fixture JWKS has no {kid}"));
    DecodingKey::from_jwk(jwk).expect("a fixture JWK is a decoding key")
}

/// Verifies `token` as a relying party of the test issuer would (signature with `alg` and
/// the key `kid`, `exp`, `iss`, `aud`, and `sub` as given) and returns its claims.
fn verify(token: &str, alg: Algorithm, kid: &str, sub: &str) -> Value {
    let mut validation = Validation::new(alg);
    validation.set_issuer(&[ISSUER]);
    validation.set_audience(&[AUDIENCE]);
    validation.sub = Some(sub.to_owned());
    jsonwebtoken::decode::<Value>(token, &verifying_key(alg, kid), &validation)
        .unwrap_or_else(|e| panic!("a minted {alg:?} token does not verify ({e}): {token}"))
        .claims
}

/// Asserts the lifetime of a just-minted token: `iat` is now, `exp` is `iat + ttl`.
fn assert_lifetime(claims: &Value, ttl_seconds: i64) {
    let iat = claims["iat"].as_i64().expect("iat is a number");
    assert!((iat - now()).abs() <= 60, "iat is now, not {iat}: {claims}");
    assert_eq!(
        claims["exp"].as_i64(),
        Some(iat + ttl_seconds),
        "exp is iat + ttl: {claims}"
    );
}

#[test]
fn token_signs_with_every_pem_key_and_the_result_verifies_with_its_public_key() {
    for (alg, pem, kid) in PEM_KEYS {
        let token = mint(
            &fixture_key_path(pem),
            alg,
            &format!("--iss {ISSUER} --sub carol --aud {AUDIENCE} --ttl 10m"),
        );

        let claims = verify(&token, alg, kid, "carol");

        assert_lifetime(&claims, 600);
        assert!(
            claims["jti"].as_str().is_some_and(|jti| !jti.is_empty()),
            "a minted {alg:?} token has a jti: {claims}"
        );
    }
}

#[test]
fn token_signs_hs256_with_a_secret_file() {
    let token = mint(
        &fixture_key_path("hs256.key"),
        Algorithm::HS256,
        &format!("--iss {ISSUER} --sub dave --aud {AUDIENCE}"),
    );

    let claims = verify(&token, Algorithm::HS256, "", "dave");

    assert_lifetime(&claims, 3600); // the default --ttl is 1h
}

#[test]
fn token_claims_keep_json_values_as_json_and_other_values_as_strings() {
    let token = mint(
        &fixture_key_path("ec256.pem"),
        Algorithm::ES256,
        &format!(
            "--iss {ISSUER} --sub erin --aud {AUDIENCE} --claim level=42 --claim admin=true \
             --claim roles=[\"read\",\"write\"] --claim azp=mobile-app --claim note=a=b"
        ),
    );

    let claims = verify(&token, Algorithm::ES256, "ec256-1", "erin");

    assert_eq!(claims["level"], json!(42), "{claims}");
    assert_eq!(claims["admin"], json!(true), "{claims}");
    assert_eq!(claims["roles"], json!(["read", "write"]), "{claims}");
    assert_eq!(claims["azp"], json!("mobile-app"), "{claims}");
    assert_eq!(
        claims["note"],
        json!("a=b"),
        "only the first = splits: {claims}"
    );
}

#[test]
fn token_signs_with_private_jwks_and_puts_their_kid_in_the_header() {
    let dir = VetoDir::new();
    let oct = json!({"kty": "oct", "kid": "hs-1", "k": URL_SAFE_NO_PAD.encode(hmac_secret())});
    let cases = [
        (Algorithm::HS256, "hs-1", oct),
        (
            Algorithm::ES256,
            "ec256-1",
            private_jwk("ec256.pem", "ec256-1"),
        ),
        (
            Algorithm::ES384,
            "ec384-1",
            private_jwk("ec384.pem", "ec384-1"),
        ),
        (Algorithm::RS256, "rsa-1", private_jwk("rsa.pem", "rsa-1")),
        (Algorithm::EdDSA, "ed-1", private_jwk("ed25519.pem", "ed-1")),
    ];
    for (alg, kid, jwk) in cases {
        let file = dir.write(&format!("{kid}.jwk.json"), jwk.to_string());

        let token = mint(
            &file,
            alg,
            &format!("--iss {ISSUER} --sub frank --aud {AUDIENCE}"),
        );

        let header = jsonwebtoken::decode_header(&token).expect("a minted token has a header");
        assert_eq!(header.kid.as_deref(), Some(kid), "{alg:?}: the JWK's kid");
        verify(&token, alg, kid, "frank");
    }
}

#[test]
fn token_kid_flag_sets_the_header_kid() {
    let token = mint(
        &fixture_key_path("rsa.pem"),
        Algorithm::RS256,
        "--kid rsa-1",
    );
    let header = jsonwebtoken::decode_header(&token).expect("a minted token has a header");
    assert_eq!(header.kid.as_deref(), Some("rsa-1"));
}

#[test]
fn token_refuses_an_unknown_algorithm_with_a_clear_message() {
    for alg in ["none", "RS257", "hs256x"] {
        run_veto([
            "token",
            "--key",
            &fixture_key_path("rsa.pem").display().to_string(),
            "--alg",
            alg,
        ])
        .assert_exit(1)
        .assert_stderr_names(&["--alg", alg]);
    }
}

#[test]
fn token_refuses_a_missing_key_file_naming_it() {
    let dir = VetoDir::new();
    let key = dir.path().join("no-such-key.pem");
    run_veto([
        "token",
        "--key",
        &key.display().to_string(),
        "--alg",
        "RS256",
    ])
    .assert_exit(1)
    .assert_stderr_names(&[&key.display().to_string()]);
}

#[test]
fn token_refuses_a_key_that_does_not_fit_the_algorithm_naming_the_file() {
    let ec = fixture_key_path("ec256.pem");
    run_veto([
        "token",
        "--key",
        &ec.display().to_string(),
        "--alg",
        "RS256",
    ])
    .assert_exit(1)
    .assert_stderr_names(&[&ec.display().to_string()]);
    // A P-256 JWK cannot sign ES384.
    let dir = VetoDir::new();
    let jwk = dir.write(
        "ec.jwk.json",
        private_jwk("ec256.pem", "ec256-1").to_string(),
    );
    run_veto([
        "token",
        "--key",
        &jwk.display().to_string(),
        "--alg",
        "ES384",
    ])
    .assert_exit(1)
    .assert_stderr_names(&[&jwk.display().to_string()]);
}

#[test]
fn token_refuses_an_empty_hmac_secret_naming_the_file() {
    let dir = VetoDir::new();
    let empty_jwk = json!({"kty": "oct", "k": ""}).to_string();
    for (name, contents) in [
        ("empty.key", ""),
        ("newline.key", "\n"),
        ("oct.jwk.json", &empty_jwk),
    ] {
        let key = dir.write(name, contents);
        run_veto([
            "token",
            "--key",
            &key.display().to_string(),
            "--alg",
            "HS256",
        ])
        .assert_exit(1)
        .assert_stderr_names(&[&key.display().to_string()]);
    }
}

#[test]
fn token_refuses_a_pem_key_as_an_hmac_secret() {
    for name in ["rsa.pem", "rsa-public.pem"] {
        let key = fixture_key_path(name).display().to_string();
        run_veto(["token", "--key", &key, "--alg", "HS256"])
            .assert_exit(1)
            .assert_stderr_names(&[&key, "HMAC"]);
    }
}

#[test]
fn token_with_a_bad_ttl_or_claim_is_refused() {
    let key = fixture_key_path("rsa.pem").display().to_string();
    run_veto(["token", "--key", &key, "--alg", "RS256", "--ttl", "1 year"])
        .assert_exit(1)
        .assert_stderr_names(&["--ttl"]);
    run_veto([
        "token",
        "--key",
        &key,
        "--alg",
        "RS256",
        "--claim",
        "no-equals-sign",
    ])
    .assert_exit(1)
    .assert_stderr_names(&["--claim", "no-equals-sign"]);
}

#[test]
fn token_without_key_or_alg_is_a_usage_error() {
    run_veto(["token", "--alg", "RS256"])
        .assert_exit(2)
        .assert_stderr_names(&["--key"]);
    run_veto(["token", "--key", "k.pem"])
        .assert_exit(2)
        .assert_stderr_names(&["--alg"]);
}

/// The veto config the end-to-end test runs: the standard sidecar (the fixture keys for
/// the test issuer, `sub` forwarded to the app) without a rules file.
fn pod_config() -> String {
    SidecarConfig::new().without("revocation").yaml()
}

#[tokio::test]
async fn tokens_minted_by_veto_token_reach_the_app_through_envoy() {
    // Minted before the pod starts: `veto token` is a blocking child process.
    let dir = VetoDir::new().with_fixture_keys();
    let ec_jwk = dir.write(
        "ec.jwk.json",
        private_jwk("ec256.pem", "ec256-1").to_string(),
    );
    let mut minted = Vec::new();
    for (alg, pem, _) in PEM_KEYS {
        minted.push((alg, fixture_key_path(pem)));
    }
    minted.push((Algorithm::HS256, fixture_key_path("hs256.key")));
    minted.push((Algorithm::ES256, ec_jwk));
    let tokens: Vec<(String, String)> = minted
        .iter()
        .enumerate()
        .map(|(i, (alg, key))| {
            let sub = format!("minted-{i}-{alg:?}");
            let token = mint(
                key,
                *alg,
                &format!("--iss {ISSUER} --aud {AUDIENCE} --sub {sub}"),
            );
            (sub, token)
        })
        .collect();

    let pod = Pod::start(dir, &pod_config()).await;

    for (sub, token) in tokens {
        let response = pod.get_with_token("/orders", &token).await;
        let saw = AppSaw::read_for(response, &format!("the token minted for {sub}")).await;
        assert_eq!(saw.header("x-jwt-sub"), [sub]);
    }
}

// ---- private JWKs from the PEM fixtures -------------------------------------------------

/// The fixture key `pem` (PKCS#8) as a private JWK (RFC 7518 §6): its public entry `kid`
/// from the fixture JWKS plus the private parameters taken from the PEM's DER.
fn private_jwk(pem: &str, kid: &str) -> Value {
    let jwks: Value = serde_json::from_str(
        &std::fs::read_to_string(fixture_key_path("jwks.json")).expect("read the fixture JWKS"),
    )
    .expect("parse the fixture JWKS");
    let mut jwk = jwks["keys"]
        .as_array()
        .and_then(|keys| keys.iter().find(|key| key["kid"] == kid))
        .unwrap_or_else(|| panic!("the fixture JWKS has no {kid}"))
        .clone();
    let b64 = |bytes: &[u8]| Value::String(URL_SAFE_NO_PAD.encode(bytes));

    // PrivateKeyInfo ::= SEQUENCE { version, algorithm, privateKey OCTET STRING, ... }
    let der = pem_der(pem);
    let info = der_elements(der_elements(&der)[0].1);
    let private_key = der_elements(info[2].1);
    match jwk["kty"].as_str() {
        // RSAPrivateKey ::= SEQUENCE { version, n, e, d, p, q, dp, dq, qi } (RFC 8017 A.1.2)
        Some("RSA") => {
            let ints = der_elements(private_key[0].1);
            for (name, (_, int)) in ["n", "e", "d", "p", "q", "dp", "dq", "qi"]
                .iter()
                .zip(&ints[1..])
            {
                let start = int.iter().position(|b| *b != 0).unwrap_or(int.len());
                jwk[*name] = b64(&int[start..]);
            }
        }
        // ECPrivateKey ::= SEQUENCE { version, privateKey OCTET STRING, ... } (RFC 5915)
        Some("EC") => jwk["d"] = b64(der_elements(private_key[0].1)[1].1),
        // CurvePrivateKey ::= OCTET STRING, the 32-byte seed (RFC 8410 §7)
        Some("OKP") => jwk["d"] = b64(private_key[0].1),
        other => panic!("no private JWK for kty {other:?}"),
    }
    jwk
}

/// The DER inside a PEM fixture.
fn pem_der(pem: &str) -> Vec<u8> {
    let text = std::fs::read_to_string(fixture_key_path(pem)).expect("read a PEM fixture");
    let base64: String = text
        .lines()
        .filter(|line| !line.starts_with("-----"))
        .collect();
    STANDARD.decode(base64).expect("a PEM body is base64")
}

/// The DER elements in `input`, one after the other, as (tag, contents): enough DER to
/// take the fixture keys apart (definite lengths only, which DER guarantees).
fn der_elements(mut input: &[u8]) -> Vec<(u8, &[u8])> {
    let mut elements = Vec::new();
    while let [tag, first_length, rest @ ..] = input {
        let (length, rest) = if *first_length < 0x80 {
            (usize::from(*first_length), rest)
        } else {
            let (bytes, rest) = rest.split_at(usize::from(first_length & 0x7f));
            let length = bytes
                .iter()
                .fold(0, |length, byte| length << 8 | usize::from(*byte));
            (length, rest)
        };
        let (contents, rest) = rest.split_at(length);
        elements.push((*tag, contents));
        input = rest;
    }
    elements
}
