//! Hot reload as an operator sees it (SPEC §3 "Reloading"): a rules or key file that changes
//! under a running veto, whether by a Kubernetes ConfigMap update, a rename, an in-place
//! rewrite or a broken write, and what clients get through Envoy meanwhile. A good file is
//! swapped in whole; anything else keeps the last good state and is counted in
//! `veto_snapshot_reloads_total{result="error"}`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use jsonwebtoken::Algorithm;
use serde_json::{Value, json};

use crate::common::{
    AppSaw, ISSUER, Pod, SidecarConfig, Token, Veto, VetoDir, assert_denied, check_client,
    check_token, denial_reason, fixture_key_path, poll_until, replace_atomically,
};

/// How long a change may take to reach the Checks: the watcher's debounce is a fraction of
/// a second; the rest is slack for a busy two-core CI machine.
const RELOAD_TIMEOUT: Duration = Duration::from_secs(10);

/// SPEC §6 series this file reads.
const RELOAD_ERRORS: &str = r#"veto_snapshot_reloads_total{result="error"}"#;
const RELOAD_OKS: &str = r#"veto_snapshot_reloads_total{result="ok"}"#;
const SNAPSHOT_VERSION: &str = "veto_snapshot_version";

/// The standard sidecar with `rules_file` (relative to the config's dir) as its rules file.
fn config(rules_file: &str) -> String {
    SidecarConfig::new().rules_file(rules_file).yaml()
}

/// `{"rules": [{"session": <jti>}, ...]}`: a rules file revoking exactly these tokens.
fn revoking(tokens: &[&Token]) -> Value {
    let rules: Vec<Value> = tokens
        .iter()
        .map(|token| json!({"session": token.jti()}))
        .collect();
    json!({ "rules": rules })
}

/// What a client gets through Envoy with `token`: "allowed" when the app answered, the
/// reason of veto's (well-formed, SPEC §4) denial, or the unexpected HTTP status.
async fn outcome_through_envoy(pod: &Pod, token: &str) -> String {
    let response = pod.get_with_token("/orders", token).await;
    match response.status().as_u16() {
        200 => "allowed".to_owned(),
        401 => denial_reason(response).await,
        other => format!("HTTP {other}"),
    }
}

/// As [`outcome_through_envoy`], asking veto's Check API directly (no Envoy): for tests
/// about what veto loaded, where Envoy adds nothing.
async fn outcome_from_check(veto: &Veto, token: &str) -> String {
    let mut client = check_client(veto.grpc_addr()).await;
    check_token(&mut client, token).await
}

/// The value of one series in veto's `GET /metrics`, e.g. `veto_snapshot_version` or
/// `veto_snapshot_reloads_total{result="error"}` (labels as veto prints them); panics when
/// veto does not export it.
async fn metric_now(veto: &Veto, series: &str) -> f64 {
    veto.metric(series)
        .await
        .unwrap_or_else(|| panic!("GET /metrics has no {series}"))
}

/// A ConfigMap volume as the kubelet lays it out and updates it (its `AtomicWriter`): the
/// data in a hidden timestamped directory, `..data` a symlink to the current one, and the
/// user-visible file a symlink through `..data`.
struct ConfigMapVolume {
    dir: PathBuf,
    file: &'static str,
    /// The timestamped directory `..data` points at now.
    current: String,
    generation: u32,
}

impl ConfigMapVolume {
    /// `dir/..<ts>/<file>`, `dir/..data -> ..<ts>` and `dir/<file> -> ..data/<file>`.
    fn create(dir: PathBuf, file: &'static str, contents: impl AsRef<[u8]>) -> ConfigMapVolume {
        std::fs::create_dir_all(&dir).expect("create the volume dir");
        let mut volume = ConfigMapVolume {
            dir,
            file,
            current: String::new(),
            generation: 0,
        };
        volume.current = volume.write_generation(contents.as_ref());
        std::os::unix::fs::symlink(&volume.current, volume.dir.join("..data"))
            .expect("symlink ..data");
        std::os::unix::fs::symlink(Path::new("..data").join(file), volume.dir.join(file))
            .expect("symlink the file through ..data");
        volume
    }

    /// One update, step by step as the kubelet does it: the new data in a new timestamped
    /// directory, a `..data_tmp` symlink to it renamed over `..data` (the one atomic step),
    /// then the old directory deleted.
    fn update(&mut self, contents: impl AsRef<[u8]>) {
        let next = self.write_generation(contents.as_ref());
        let data_tmp = self.dir.join("..data_tmp");
        std::os::unix::fs::symlink(&next, &data_tmp).expect("symlink ..data_tmp");
        std::fs::rename(&data_tmp, self.dir.join("..data")).expect("rename ..data_tmp over ..data");
        let old = std::mem::replace(&mut self.current, next);
        std::fs::remove_dir_all(self.dir.join(old)).expect("delete the old timestamped dir");
    }

    /// Writes `..<timestamp>/<file>` for the next generation; returns the dir's name.
    fn write_generation(&mut self, contents: &[u8]) -> String {
        self.generation += 1;
        // The kubelet's format: `..2006_01_02_15_04_05.<random>`.
        let name = format!(
            "..2026_11_22_14_58_{:02}.{}",
            self.generation,
            std::process::id()
        );
        let generation_dir = self.dir.join(&name);
        std::fs::create_dir(&generation_dir).expect("create the timestamped dir");
        std::fs::write(generation_dir.join(self.file), contents).expect("write the data file");
        name
    }
}

#[tokio::test]
async fn ten_configmap_updates_in_a_row_each_revoke_the_new_token_and_release_the_previous_one() {
    let tokens: Vec<Token> = (0..=10).map(|_| Token::new()).collect();
    let dir = VetoDir::new().with_fixture_keys();
    let mut volume = ConfigMapVolume::create(
        dir.path().join("rules"),
        "rules.json",
        revoking(&[&tokens[0]]).to_string(),
    );
    let pod = Pod::start(dir, &config("rules/rules.json")).await;
    assert_denied(
        pod.get_with_token("/orders", &tokens[0].sign()).await,
        "revoked",
    )
    .await;

    for update in 1..tokens.len() {
        let (previous, revoked) = (&tokens[update - 1], &tokens[update]);
        volume.update(revoking(&[revoked]).to_string());

        let (revoked_jwt, previous_jwt) = (revoked.sign(), previous.sign());
        let applied = poll_until(RELOAD_TIMEOUT, async || {
            outcome_through_envoy(&pod, &revoked_jwt).await == "revoked"
                && outcome_through_envoy(&pod, &previous_jwt).await == "allowed"
        })
        .await;
        assert!(
            applied,
            "ConfigMap update {update} did not take effect within {RELOAD_TIMEOUT:?}\n{}",
            pod.veto.log()
        );
        assert_denied(pod.get_with_token("/orders", &revoked_jwt).await, "revoked").await;
        AppSaw::read(pod.get_with_token("/orders", &previous_jwt).await).await;
    }
    assert_eq!(
        metric_now(&pod.veto, RELOAD_ERRORS).await,
        0.0,
        "no kubelet step may be seen as a broken rules file"
    );
    assert_eq!(
        metric_now(&pod.veto, RELOAD_OKS).await,
        10.0,
        "each update is applied exactly once"
    );
}

#[tokio::test]
async fn an_invalid_rules_file_changes_nothing_and_is_counted_until_a_valid_one_arrives() {
    let revoked = Token::new();
    let good = Token::new().alg(Algorithm::ES256);
    let dir = VetoDir::new().with_fixture_keys();
    let rules_file = dir.write("rules/rules.json", revoking(&[&revoked]).to_string());
    let pod = Pod::start(dir, &config("rules/rules.json")).await;
    let (revoked_jwt, good_jwt) = (revoked.sign(), good.sign());
    let veto = &pod.veto;

    let valid_text = json!({"rules": [
        {"session": revoked.jti(), "reason": "a rule long enough to cut in the middle"},
        {"sub": "someone-else"},
    ]})
    .to_string();
    let truncated = valid_text[..valid_text.len() / 2].to_owned();
    // 50 MB of JSON that never ends: under veto's size limit, so it is read and parsed.
    let mut huge = String::from(r#"{"rules":[{"session":"x","reason":""#);
    huge.push_str(&"a".repeat(50 * 1024 * 1024));

    type Break = Box<dyn Fn(&Path)>;
    let cases: Vec<(&str, Break)> = vec![
        ("an empty file", Box::new(|f| replace_atomically(f, ""))),
        (
            "a file that is not JSON",
            Box::new(|f| replace_atomically(f, "rules: [oops")),
        ),
        (
            "a file cut off mid-write (written in place)",
            Box::new(move |f| std::fs::write(f, &truncated).expect("write the truncated file")),
        ),
        (
            "a rule with two selectors",
            Box::new(|f| replace_atomically(f, r#"{"rules":[{"sub":"a","session":"b"}]}"#)),
        ),
        (
            "a rule for an issuer that is not configured",
            Box::new(|f| {
                replace_atomically(f, r#"{"rules":[{"sub":"a","iss":"https://issuer.tset"}]}"#)
            }),
        ),
        (
            "the file deleted",
            Box::new(|f| std::fs::remove_file(f).expect("delete the rules file")),
        ),
        (
            "a 50 MB unterminated JSON file",
            Box::new(move |f| replace_atomically(f, &huge)),
        ),
    ];

    let version = metric_now(veto, SNAPSHOT_VERSION).await;
    let oks = metric_now(veto, RELOAD_OKS).await;
    for (what, break_file) in cases {
        let errors = metric_now(veto, RELOAD_ERRORS).await;
        break_file(&rules_file);

        let counted = poll_until(RELOAD_TIMEOUT, async || {
            veto.metric(RELOAD_ERRORS).await.unwrap_or(0.0) > errors
        })
        .await;
        assert!(
            counted,
            "{what}: {RELOAD_ERRORS} did not grow past {errors}\n{}",
            veto.log()
        );
        assert_eq!(
            metric_now(veto, SNAPSHOT_VERSION).await,
            version,
            "{what}: no new snapshot may be published"
        );
        assert_eq!(metric_now(veto, RELOAD_OKS).await, oks, "{what}");
        assert_eq!(
            outcome_through_envoy(&pod, &revoked_jwt).await,
            "revoked",
            "{what}: the revoked token must stay revoked"
        );
        assert_eq!(
            outcome_through_envoy(&pod, &good_jwt).await,
            "allowed",
            "{what}: the good token must stay allowed"
        );
    }

    // The watcher survived all of that: a valid file is applied again.
    let newly_revoked = Token::new();
    let newly_revoked_jwt = newly_revoked.sign();
    replace_atomically(
        &rules_file,
        revoking(&[&revoked, &newly_revoked]).to_string(),
    );
    let applied = poll_until(RELOAD_TIMEOUT, async || {
        outcome_through_envoy(&pod, &newly_revoked_jwt).await == "revoked"
    })
    .await;
    assert!(applied, "the valid file was never applied\n{}", veto.log());
    assert_denied(pod.get_with_token("/orders", &revoked_jwt).await, "revoked").await;
    AppSaw::read(pod.get_with_token("/orders", &good_jwt).await).await;
    assert!(metric_now(veto, SNAPSHOT_VERSION).await > version);
    assert_eq!(metric_now(veto, RELOAD_OKS).await, oks + 1.0);
}

#[tokio::test]
async fn a_plain_rules_file_replaced_by_rename_or_rewritten_in_place_is_picked_up() {
    let tokens = [Token::new(), Token::new(), Token::new()];
    let jwts: Vec<String> = tokens.iter().map(Token::sign).collect();
    let dir = VetoDir::new().with_fixture_keys();
    let rules_file = dir.write("rules/rules.json", revoking(&[&tokens[0]]).to_string());
    let veto = dir.start(&config("rules/rules.json")).await;
    assert_eq!(outcome_from_check(&veto, &jwts[0]).await, "revoked");

    // 1. A new file under a temp name in the same dir, renamed over the old one.
    replace_atomically(&rules_file, revoking(&[&tokens[1]]).to_string());
    let renamed = poll_until(RELOAD_TIMEOUT, async || {
        outcome_from_check(&veto, &jwts[1]).await == "revoked"
            && outcome_from_check(&veto, &jwts[0]).await == "allowed"
    })
    .await;
    assert!(
        renamed,
        "the renamed file was not picked up\n{}",
        veto.log()
    );

    // 2. The same file truncated and written again in place, as `echo > rules.json` or an
    // editor without atomic saves does.
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&rules_file)
        .expect("open the rules file for rewriting");
    file.write_all(revoking(&[&tokens[2]]).to_string().as_bytes())
        .expect("rewrite the rules file");
    drop(file);
    let rewritten = poll_until(RELOAD_TIMEOUT, async || {
        outcome_from_check(&veto, &jwts[2]).await == "revoked"
            && outcome_from_check(&veto, &jwts[1]).await == "allowed"
    })
    .await;
    assert!(
        rewritten,
        "the rewritten file was not picked up\n{}",
        veto.log()
    );
}

#[tokio::test]
async fn a_garbage_key_file_keeps_the_last_good_keys_and_a_key_dropped_from_the_jwks_gets_unknown_key()
 {
    let dir = VetoDir::new().with_fixture_keys();
    dir.write("rules/rules.json", r#"{"rules": []}"#);
    let pod = Pod::start(dir, &config("rules/rules.json")).await;
    let veto = &pod.veto;
    let jwks = veto.dir().join("jwks.json");
    let keys_series = format!(r#"veto_keys{{issuer="{ISSUER}"}}"#);
    // Not in SPEC §6: veto's own count of key file reloads, the one sign that a bad key
    // file was read and rejected (rather than not read yet).
    let key_errors_series =
        format!(r#"veto_key_reloads_total{{issuer="{ISSUER}",result="error"}}"#);
    let (rs256, es256) = (
        Token::new().sign(),
        Token::new().alg(Algorithm::ES256).sign(),
    );
    let keys = metric_now(veto, &keys_series).await;

    replace_atomically(&jwks, "{\"keys\": [ this is not a JWK Set");
    let rejected = poll_until(RELOAD_TIMEOUT, async || {
        veto.metric(&key_errors_series).await.unwrap_or(0.0) > 0.0
    })
    .await;
    assert!(
        rejected,
        "the garbage key file was never rejected\n{}",
        veto.log()
    );
    for (what, token) in [("RS256", &rs256), ("ES256", &es256)] {
        assert_eq!(
            outcome_through_envoy(&pod, token).await,
            "allowed",
            "an {what} token after a garbage key file"
        );
    }
    assert_eq!(metric_now(veto, &keys_series).await, keys);

    // The JWKS an identity provider publishes after retiring rsa-1.
    let fixture: Value = serde_json::from_slice(
        &std::fs::read(fixture_key_path("jwks.json")).expect("read the fixture JWKS"),
    )
    .expect("the fixture JWKS is JSON");
    let remaining: Vec<&Value> = fixture["keys"]
        .as_array()
        .expect("the fixture JWKS has keys")
        .iter()
        .filter(|key| key["kid"] != "rsa-1")
        .collect();
    replace_atomically(&jwks, json!({ "keys": remaining }).to_string());

    let retired = poll_until(RELOAD_TIMEOUT, async || {
        outcome_through_envoy(&pod, &rs256).await == "unknown_key"
    })
    .await;
    assert!(retired, "rsa-1 tokens were still accepted\n{}", veto.log());
    assert_denied(pod.get_with_token("/orders", &rs256).await, "unknown_key").await;
    AppSaw::read(pod.get_with_token("/orders", &es256).await).await;
    let counted = poll_until(RELOAD_TIMEOUT, async || {
        veto.metric(&keys_series).await == Some(keys - 1.0)
    })
    .await;
    assert!(
        counted,
        "{keys_series} is {:?}, expected {}",
        veto.metric(&keys_series).await,
        keys - 1.0
    );
}

#[tokio::test]
async fn a_yaml_rules_file_loads_and_reloads() {
    let (first, second) = (Token::new(), Token::new());
    let yaml = |token: &Token| {
        format!(
            "# revoked sessions\nrules:\n  - session: {}\n    reason: yaml\n",
            token.jti()
        )
    };
    let dir = VetoDir::new().with_fixture_keys();
    let rules_file = dir.write("rules/rules.yaml", yaml(&first));
    let veto = dir.start(&config("rules/rules.yaml")).await;
    let (first_jwt, second_jwt) = (first.sign(), second.sign());
    assert_eq!(outcome_from_check(&veto, &first_jwt).await, "revoked");
    assert_eq!(outcome_from_check(&veto, &second_jwt).await, "allowed");

    replace_atomically(&rules_file, yaml(&second));
    let reloaded = poll_until(RELOAD_TIMEOUT, async || {
        outcome_from_check(&veto, &second_jwt).await == "revoked"
            && outcome_from_check(&veto, &first_jwt).await == "allowed"
    })
    .await;
    assert!(reloaded, "the YAML file was not reloaded\n{}", veto.log());
}

#[tokio::test]
async fn a_gzipped_rules_file_loads_and_reloads() {
    let (first, second) = (Token::new(), Token::new());
    let gzip = |token: &Token| {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        encoder
            .write_all(revoking(&[token]).to_string().as_bytes())
            .expect("gzip into memory");
        encoder.finish().expect("finish the gzip stream")
    };
    let dir = VetoDir::new().with_fixture_keys();
    let rules_file = dir.write("rules/rules.json.gz", gzip(&first));
    let veto = dir.start(&config("rules/rules.json.gz")).await;
    let (first_jwt, second_jwt) = (first.sign(), second.sign());
    assert_eq!(outcome_from_check(&veto, &first_jwt).await, "revoked");
    assert_eq!(outcome_from_check(&veto, &second_jwt).await, "allowed");

    replace_atomically(&rules_file, gzip(&second));
    let reloaded = poll_until(RELOAD_TIMEOUT, async || {
        outcome_from_check(&veto, &second_jwt).await == "revoked"
            && outcome_from_check(&veto, &first_jwt).await == "allowed"
    })
    .await;
    assert!(
        reloaded,
        "the gzipped file was not reloaded\n{}",
        veto.log()
    );

    // A gzip stream cut short (an interrupted upload) is an invalid file, not fewer rules.
    let errors = metric_now(&veto, RELOAD_ERRORS).await;
    let whole = gzip(&first);
    replace_atomically(&rules_file, &whole[..whole.len() - 8]);
    let rejected = poll_until(RELOAD_TIMEOUT, async || {
        veto.metric(RELOAD_ERRORS).await.unwrap_or(0.0) > errors
    })
    .await;
    assert!(
        rejected,
        "the cut gzip stream was never rejected\n{}",
        veto.log()
    );
    assert_eq!(outcome_from_check(&veto, &second_jwt).await, "revoked");
    assert_eq!(outcome_from_check(&veto, &first_jwt).await, "allowed");
}

#[test]
fn a_yaml_rules_file_with_a_selector_yaml_reads_as_a_number_is_refused_asking_for_quotes() {
    // Unquoted, YAML reads `+15551234567` as the number 15551234567: veto would block a
    // subject nobody has and leave the phone number allowed. The same file is what a
    // reload reads, so `check-rules` answers for both.
    let dir = VetoDir::new();
    let unquoted = dir.write(
        "rules.yaml",
        "rules:\n  - sub: \"+15551234567\"\n  - sub: +15551234567\n  - session: 0x1F\n",
    );
    crate::common::run_veto([Path::new("check-rules"), &unquoted])
        .assert_exit(1)
        .assert_stderr_names(&[
            "rules.yaml",
            r#"rules[1].sub: write "+15551234567" in quotes: unquoted, YAML reads it as the number 15551234567"#,
            r#"rules[2].session: write "0x1F" in quotes"#,
        ]);

    let quoted = dir.write(
        "quoted.yaml",
        "rules:\n  - sub: \"+15551234567\"\n  - session: '0x1F'\n  - sub: 12345\n",
    );
    let run = crate::common::run_veto([Path::new("check-rules"), &quoted]);
    assert!(run.success().contains("3 rules"), "{}", run.output());
}
