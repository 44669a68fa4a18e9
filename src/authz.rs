//! The ext_authz Check service: token -> verify -> snapshot -> [`Decision`].
//!
//! [`Authz::decide`] is a pure function of (request, keys, snapshot, now): no lock, no I/O,
//! and the only shared state it touches is read through `arc-swap`. The gRPC wrapper around
//! it times the Check, counts it, and writes one structured log line per denial with the
//! reason, issuer, subject and a hash prefix of the token (never the token); beyond
//! [`DENIAL_LINES_PER_SECOND`] of one reason in one second, one line counts the rest.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use envoy_types::ext_authz::v3::pb::{Authorization, CheckRequest, CheckResponse};
use serde_json::Value;
use tonic::{Request, Response, Status};

use crate::clock::{self, UnixTime};
use crate::config::{Config, LogConfig, LogLevel};
use crate::decision::{Decision, Reason};
use crate::jwt::remote::Refetched;
use crate::jwt::{Verified, Verifier, VerifyError};
use crate::metrics::Metrics;
use crate::revocation::{Snapshot, TokenFacts, claim_text, token_hash};
use crate::state::SnapshotReader;
use crate::token::{self, TokenError};

/// What the request path needs from the config, resolved once.
pub struct Policy {
    pub header: String,
    pub session_claim: String,
    /// `revocation.max_token_lifetime` in seconds, the lifetime alone: a token is refused
    /// once `iat` + this + its issuer's leeway has passed. Cutoff rules are pruned on that
    /// promise (a little later: see the snapshot writer's `prune_after`), so this is where
    /// the promise is kept.
    pub max_token_lifetime: Option<i64>,
    /// claim -> header, set on allowed requests.
    pub claims_to_headers: Vec<(String, String)>,
    /// The level of each denial's log line (`log.denials`).
    pub log: LogConfig,
}

impl Policy {
    pub fn from_config(config: &Config) -> Policy {
        Policy {
            header: config.token.header.clone(),
            session_claim: config.revocation.session_claim.clone(),
            max_token_lifetime: config.revocation.max_token_lifetime.map(clock::seconds),
            claims_to_headers: config
                .forward
                .claims_to_headers
                .iter()
                .map(|(c, h)| (c.clone(), h.clone()))
                .collect(),
            log: config.log.clone(),
        }
    }
}

/// A decision and what the log line about it needs.
#[derive(Debug)]
pub struct Outcome {
    pub decision: Decision,
    /// Operator detail for the log (never sent to the client).
    pub detail: String,
    pub iss: Option<String>,
    pub sub: Option<String>,
    /// SHA-256 of the token, when there was one; its prefix names the token in logs.
    pub token_digest: Option<[u8; 32]>,
    /// The rule that revoked the token.
    pub rule: Option<String>,
}

impl Outcome {
    /// The token's log handle (a hash prefix), formatted only when a line is written.
    pub fn token_id(&self) -> Option<String> {
        self.token_digest.as_ref().map(token_hash::hex_prefix)
    }

    fn new(decision: Decision, detail: impl Into<String>) -> Outcome {
        Outcome {
            decision,
            detail: detail.into(),
            iss: None,
            sub: None,
            token_digest: None,
            rule: None,
        }
    }
}

/// The Check logic and its inputs.
pub struct Authz {
    pub policy: Policy,
    pub verifier: Arc<Verifier>,
    pub snapshot: SnapshotReader,
    pub metrics: Arc<Metrics>,
}

impl Authz {
    /// Decides one request at `now`.
    pub fn decide(&self, req: &CheckRequest, now: UnixTime) -> Outcome {
        let token = match token::bearer(req, &self.policy.header) {
            Ok(t) => t,
            Err(TokenError::Missing) => {
                return Outcome::new(Decision::Deny(Reason::MissingToken), "no bearer token");
            }
            Err(TokenError::Malformed(why)) => {
                return Outcome::new(Decision::Deny(Reason::MalformedToken), why);
            }
        };
        let snapshot = self.snapshot.load();
        self.decide_token(&token, &snapshot, now)
    }

    /// Decides a bare token (also what `POST /v1/explain` answers).
    pub fn decide_token(&self, token: &str, snapshot: &Snapshot, now: UnixTime) -> Outcome {
        // One digest serves the verification cache, `token_sha256` rules and the log.
        let digest = token_hash::sha256(token);
        let mut out = self.decide_digested(token, &digest, snapshot, now);
        out.token_digest = Some(digest);
        out
    }

    fn decide_digested(
        &self,
        token: &str,
        digest: &[u8; 32],
        snapshot: &Snapshot,
        now: UnixTime,
    ) -> Outcome {
        let verified = match self.verifier.verify(token, digest, now) {
            Ok(v) => v,
            Err(VerifyError::Undecidable(why)) => {
                return Outcome::new(Decision::Unavailable(why.clone()), why);
            }
            Err(VerifyError::Denied(f)) => {
                let mut out = Outcome::new(Decision::Deny(f.reason), f.detail);
                out.iss = f.iss;
                out.sub = f.sub;
                return out;
            }
        };
        if let Some(lifetime) = self.policy.max_token_lifetime {
            let too_old = match verified.iat {
                None => Some((
                    Reason::MalformedToken,
                    "no iat; revocation.max_token_lifetime requires one",
                )),
                Some(iat)
                    if now
                        >= iat
                            .saturating_add(lifetime)
                            .saturating_add(verified.times.leeway) =>
                {
                    Some((Reason::Expired, "older than revocation.max_token_lifetime"))
                }
                Some(_) => None,
            };
            if let Some((reason, detail)) = too_old {
                let mut out = Outcome::new(Decision::Deny(reason), detail);
                out.iss = Some(verified.iss.clone());
                out.sub = verified
                    .claims
                    .get("sub")
                    .and_then(claim_text)
                    .map(Into::into);
                return out;
            }
        }
        let hashes = if snapshot.needs_token_hash() {
            token_hash::token_hashes(token, *digest, verified.alg)
        } else {
            Vec::new()
        };
        let sub = verified.claims.get("sub").and_then(claim_text);
        let session = verified
            .claims
            .get(&self.policy.session_claim)
            .and_then(claim_text);
        let facts = TokenFacts {
            iss: &verified.iss,
            iat: verified.iat,
            sub: sub.as_deref(),
            session: session.as_deref(),
            claims: &verified.claims,
            hashes: &hashes,
        };
        let revoked = snapshot.find(&facts, now);
        let sub = facts.sub.map(str::to_owned);
        let mut out = match revoked {
            Some(m) => {
                let mut out = Outcome::new(
                    Decision::Deny(Reason::Revoked),
                    m.reason.as_deref().unwrap_or("revoked by rule"),
                );
                out.rule = Some(m.id);
                out
            }
            None => Outcome::new(self.allow(&verified), "allowed"),
        };
        out.iss = Some(verified.iss.clone());
        out.sub = sub;
        out
    }

    /// The allow decision with `claims_to_headers` applied: present claims are set
    /// (overwriting any client copy), absent ones removed so a client cannot inject them.
    fn allow(&self, verified: &Verified) -> Decision {
        let mut set = Vec::new();
        let mut remove = Vec::new();
        for (claim, header) in &self.policy.claims_to_headers {
            match verified.claims.get(claim).and_then(header_value) {
                Some(v) => set.push((header.clone(), v)),
                None => remove.push(header.clone()),
            }
        }
        Decision::Allow { set, remove }
    }
}

/// The longest claim value forwarded as a header.
const MAX_HEADER_VALUE: usize = 8192;

/// A claim as a header value: strings as they are, other JSON as its text. Only visible
/// ASCII and spaces pass (RFC 9110 §5.5 `field-vchar` and SP, without `obs-text`): a
/// control character could split a header, and a line separator (U+2028) or any other
/// non-ASCII text is read differently by each proxy and app behind Envoy. Any other value
/// is treated as absent (the header is removed), so the app never sees a value it might
/// misread.
fn header_value(v: &Value) -> Option<String> {
    let s = match v {
        Value::String(s) => s.clone(),
        Value::Null => return None,
        other => other.to_string(),
    };
    let visible = s.bytes().all(|b| b == b' ' || b.is_ascii_graphic());
    (visible && s.len() <= MAX_HEADER_VALUE).then_some(s)
}

/// Full "request denied" lines written per reason per second; the rest of that second is
/// counted and written as one line. Enough to explain every denial of ordinary traffic,
/// few enough that a flood of bad tokens cannot fill the log pipe (and the log pipeline
/// behind it) with copies of one line.
pub const DENIAL_LINES_PER_SECOND: u64 = 100;

/// How long after the first held-back denial its summary line is written.
const SUMMARY_AFTER: Duration = Duration::from_secs(1);

/// The tonic service around [`Authz`].
pub struct CheckService {
    authz: Arc<Authz>,
    denial_lines: Arc<DenialLines>,
}

impl CheckService {
    pub fn new(authz: Arc<Authz>) -> CheckService {
        let denial_lines = Arc::new(DenialLines::new(authz.policy.log.clone()));
        CheckService {
            authz,
            denial_lines,
        }
    }

    /// Writes the line of a denial, or holds it back for its reason's summary line.
    fn log_denial(&self, reason: Reason, out: &Outcome, now: UnixTime) {
        let level = self.authz.policy.log.denial(reason);
        if level == LogLevel::Off {
            return;
        }
        match self.denial_lines.admit(reason, now) {
            Admit::Line => log_denial(level, reason, out),
            Admit::Held { first: false } => {}
            Admit::Held { first: true } => {
                let lines = self.denial_lines.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(SUMMARY_AFTER).await;
                    lines.summarize(reason);
                });
            }
        }
    }
}

#[tonic::async_trait]
impl Authorization for CheckService {
    async fn check(
        &self,
        request: Request<CheckRequest>,
    ) -> Result<Response<CheckResponse>, Status> {
        let started = Instant::now();
        let authz = &self.authz;
        let now = clock::unix_now();
        let mut out = authz.decide(request.get_ref(), now);
        // An unknown kid of a fetched key set may be a key the provider just rotated in:
        // refetch (rate-limited) and decide again with what it brought.
        if out.decision == Decision::Deny(Reason::UnknownKey)
            && let Some(refetch) = out
                .iss
                .as_deref()
                .and_then(|iss| authz.verifier.issuer(iss))
                .and_then(|issuer| issuer.refetch.as_ref())
        {
            match refetch.unknown_kid().await {
                Refetched::Done => out = authz.decide(request.get_ref(), clock::unix_now()),
                Refetched::RateLimited => {}
                // Still unknown_key, never UNAVAILABLE: the issuer has keys, and a slow
                // provider must not turn a forged kid into "undecidable", which Envoy's
                // `failure_mode_allow: true` would let through (issue 13).
                Refetched::TimedOut => out.detail = "unknown kid; key refetch timed out".into(),
            }
        }
        authz.metrics.check(&out.decision, started.elapsed());
        match &out.decision {
            Decision::Allow { .. } => {}
            Decision::Deny(reason) => self.log_denial(*reason, &out, now),
            Decision::Unavailable(_) => tracing::warn!(
                detail = %out.detail,
                iss = out.iss.as_deref().unwrap_or("-"),
                token = out.token_id().as_deref().unwrap_or("-"),
                "check undecidable; answering UNAVAILABLE"
            ),
        }
        out.decision.into_response().map(Response::new)
    }
}

/// `tracing::event!` at a configured level: tracing's macros take the level as a constant,
/// so one arm per level.
macro_rules! event_at {
    ($level:expr, $($event:tt)+) => {
        match $level {
            LogLevel::Off => {}
            LogLevel::Error => tracing::event!(tracing::Level::ERROR, $($event)+),
            LogLevel::Warn => tracing::event!(tracing::Level::WARN, $($event)+),
            LogLevel::Info => tracing::event!(tracing::Level::INFO, $($event)+),
            LogLevel::Debug => tracing::event!(tracing::Level::DEBUG, $($event)+),
            LogLevel::Trace => tracing::event!(tracing::Level::TRACE, $($event)+),
        }
    };
}

/// Writes the "request denied" line at `level` (already counted in the metrics, whatever
/// the level).
fn log_denial(level: LogLevel, reason: Reason, out: &Outcome) {
    event_at!(
        level,
        reason = reason.as_str(),
        detail = %out.detail,
        iss = out.iss.as_deref().unwrap_or("-"),
        sub = out.sub.as_deref().unwrap_or("-"),
        token = out.token_id().as_deref().unwrap_or("-"),
        rule = out.rule.as_deref().unwrap_or("-"),
        "request denied"
    );
}

/// Which denials get their own line: the first [`DENIAL_LINES_PER_SECOND`] of each reason
/// in each second. The others are counted and summed into one line per reason
/// ([`DenialLines::summarize`]), so every denial is still in the log, and a Check never
/// waits for a log pipe a flood has filled. Atomics only: this is on the request path.
/// Two Checks that start a new second together may both write a line over the budget; it
/// bounds a flood, it is not an exact quota.
struct DenialLines {
    /// The level of each reason's lines (`log.denials`), for the summaries.
    levels: LogConfig,
    windows: [Window; Reason::ALL.len()],
}

#[derive(Default)]
struct Window {
    /// The second `written` counts lines of.
    second: AtomicI64,
    written: AtomicU64,
    /// Denials held back since the last summary.
    held: AtomicU64,
}

#[derive(Debug, PartialEq, Eq)]
enum Admit {
    /// Write this denial's line.
    Line,
    /// Count it; the first held-back denial since the last summary schedules the next one.
    Held { first: bool },
}

impl DenialLines {
    fn new(levels: LogConfig) -> DenialLines {
        DenialLines {
            levels,
            windows: Default::default(),
        }
    }

    fn admit(&self, reason: Reason, now: UnixTime) -> Admit {
        let w = &self.windows[reason as usize];
        let second = w.second.load(Ordering::Relaxed);
        if second != now
            && w.second
                .compare_exchange(second, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            w.written.store(0, Ordering::Relaxed);
        }
        if w.written.fetch_add(1, Ordering::Relaxed) < DENIAL_LINES_PER_SECOND {
            Admit::Line
        } else {
            Admit::Held {
                first: w.held.fetch_add(1, Ordering::Relaxed) == 0,
            }
        }
    }

    /// Writes one line counting the denials of `reason` held back since the last one.
    fn summarize(&self, reason: Reason) {
        let count = self.windows[reason as usize]
            .held
            .swap(0, Ordering::Relaxed);
        if count > 0 {
            event_at!(
                self.levels.denial(reason),
                reason = reason.as_str(),
                count,
                "more denials with this reason in the last second, not logged one by one"
            );
        }
    }
}

impl Drop for DenialLines {
    /// The summaries still pending when veto stops, so no held-back denial goes unlogged.
    fn drop(&mut self) {
        for reason in Reason::ALL {
            self.summarize(reason);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::time::Duration;

    use envoy_types::pb::envoy::service::auth::v3::AttributeContext;
    use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Request};
    use jsonwebtoken::{Algorithm, EncodingKey, Header};
    use serde_json::json;

    use super::*;
    use crate::config::{CacheConfig, IssuerConfig};
    use crate::jwt::jwks;
    use crate::revocation::{Rule, RuleTable, Scope, Selector};

    const ISS: &str = "https://issuer.test";
    const NOW: UnixTime = 1_800_000_000;
    const LEEWAY: i64 = 30;

    fn fixture(name: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/keys")
            .join(name)
    }

    /// The fixture issuer (RS256 and HS256 allowed), its keys loaded or not yet.
    fn verifier(loaded: bool) -> Arc<Verifier> {
        let config = IssuerConfig {
            issuer: ISS.into(),
            audiences: vec!["orders-api".into()],
            jwks_file: Some(fixture("jwks.json")),
            remote: None,
            hmac_secret_file: Some(fixture("hs256.key")),
            algorithms: vec![Algorithm::RS256, Algorithm::HS256],
            leeway: Duration::from_secs(LEEWAY as u64),
        };
        let v = Verifier::new(std::slice::from_ref(&config), &CacheConfig::default());
        if loaded {
            let issuer = v.issuer(ISS).unwrap();
            for (kind, file) in jwks::key_files(&config) {
                jwks::install(issuer, kind, jwks::load_file(kind, &file).unwrap().keys);
            }
        }
        Arc::new(v)
    }

    fn policy() -> Policy {
        Policy {
            header: "authorization".into(),
            session_claim: "jti".into(),
            max_token_lifetime: None,
            claims_to_headers: vec![("sub".into(), "x-jwt-sub".into())],
            log: LogConfig::default(),
        }
    }

    fn authz(policy: Policy, rules: Vec<Rule>, loaded: bool) -> Authz {
        let mut pushed = RuleTable::default();
        rules.into_iter().for_each(|r| pushed.insert(r));
        Authz {
            policy,
            verifier: verifier(loaded),
            snapshot: SnapshotReader::fixed(Snapshot {
                version: 1,
                file: Arc::default(),
                pushed: Arc::new(pushed),
            }),
            metrics: Arc::default(),
        }
    }

    fn claims() -> Value {
        json!({"iss": ISS, "sub": "alice", "aud": "orders-api", "iat": NOW, "exp": NOW + 3600})
    }

    fn with(extra: Value) -> Value {
        let mut c = claims();
        for (k, v) in extra.as_object().unwrap() {
            c[k] = v.clone();
        }
        c
    }

    fn pem_key(name: &str) -> EncodingKey {
        EncodingKey::from_rsa_pem(&std::fs::read(fixture(name)).unwrap()).unwrap()
    }

    fn sign_as(alg: Algorithm, key: &EncodingKey, claims: &Value) -> String {
        let mut header = Header::new(alg);
        header.kid = Some("rsa-1".into());
        jsonwebtoken::encode(&header, claims, key).unwrap()
    }

    fn token(claims: &Value) -> String {
        sign_as(Algorithm::RS256, &pem_key("rsa.pem"), claims)
    }

    fn request(authorization: Option<&str>) -> CheckRequest {
        CheckRequest {
            attributes: Some(AttributeContext {
                request: Some(Request {
                    http: Some(HttpRequest {
                        headers: authorization
                            .map(|v| ("authorization".to_string(), v.to_string()))
                            .into_iter()
                            .collect(),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
        }
    }

    fn bearer(token: &str) -> CheckRequest {
        request(Some(&format!("Bearer {token}")))
    }

    fn sub_rule(sub: &str, expires_at: Option<UnixTime>) -> Rule {
        Rule {
            selector: Selector::Sub(sub.into()),
            scope: Scope::new(None, None, expires_at, Some("laptop stolen".into())),
        }
    }

    fn denied(out: &Outcome) -> Reason {
        match out.decision {
            Decision::Deny(r) => r,
            ref other => panic!("expected a denial, got {other:?} ({})", out.detail),
        }
    }

    #[test]
    fn a_valid_token_is_allowed_with_its_subject_forwarded() {
        let a = authz(policy(), vec![], true);
        let out = a.decide(&bearer(&token(&claims())), NOW);
        assert_eq!(
            out.decision,
            Decision::Allow {
                set: vec![("x-jwt-sub".into(), "alice".into())],
                remove: vec![],
            }
        );
        assert_eq!(out.iss.as_deref(), Some(ISS));
        assert_eq!(out.sub.as_deref(), Some("alice"));
        assert!(out.token_digest.is_some());
    }

    #[test]
    fn every_reason_of_spec_section_4_comes_from_decide() {
        let a = authz(policy(), vec![sub_rule("mallory", None)], true);
        let unknown_kid = {
            let mut header = Header::new(Algorithm::RS256);
            header.kid = Some("rotated-away".into());
            jsonwebtoken::encode(&header, &claims(), &pem_key("rsa.pem")).unwrap()
        };
        let cases = [
            (request(None), Reason::MissingToken),
            (request(Some("Basic YWxpY2U6cHc=")), Reason::MissingToken),
            (bearer("not a jwt"), Reason::MalformedToken),
            (
                bearer(&token(&json!({"iss": true, "exp": NOW + 60}))),
                Reason::MalformedToken,
            ),
            (
                bearer(&token(&with(json!({"exp": null})))),
                Reason::MalformedToken,
            ),
            (
                bearer(&token(&with(json!({"iss": "https://other.test"})))),
                Reason::UnknownIssuer,
            ),
            (bearer(&unknown_kid), Reason::UnknownKey),
            (
                bearer(&sign_as(Algorithm::PS256, &pem_key("rsa.pem"), &claims())),
                Reason::AlgorithmNotAllowed,
            ),
            (
                bearer(&sign_as(
                    Algorithm::RS256,
                    &pem_key("other-rsa.pem"),
                    &claims(),
                )),
                Reason::InvalidSignature,
            ),
            (
                bearer(&token(&with(json!({"exp": NOW - LEEWAY})))),
                Reason::Expired,
            ),
            (
                bearer(&token(&with(json!({"nbf": NOW + LEEWAY + 1})))),
                Reason::NotYetValid,
            ),
            (
                bearer(&token(&with(json!({"iat": NOW + LEEWAY + 1})))),
                Reason::NotYetValid,
            ),
            (
                bearer(&token(&with(json!({"aud": "billing-api"})))),
                Reason::WrongAudience,
            ),
            (
                bearer(&token(&with(json!({"sub": "mallory"})))),
                Reason::Revoked,
            ),
        ];
        let mut seen = Vec::new();
        for (i, (req, want)) in cases.iter().enumerate() {
            let out = a.decide(req, NOW);
            assert_eq!(denied(&out), *want, "case {i}: {}", out.detail);
            seen.push(*want);
        }
        for r in Reason::ALL {
            assert!(seen.contains(&r), "no case for {r}");
        }
    }

    #[test]
    fn a_revoked_token_names_the_rule_the_subject_and_the_issuer() {
        let a = authz(policy(), vec![sub_rule("alice", None)], true);
        let out = a.decide(&bearer(&token(&claims())), NOW);
        assert_eq!(denied(&out), Reason::Revoked);
        assert_eq!(out.rule.as_deref(), Some("sub:alice"));
        assert_eq!(out.detail, "laptop stolen");
        assert_eq!(
            (out.iss.as_deref(), out.sub.as_deref()),
            (Some(ISS), Some("alice"))
        );
        assert_eq!(out.token_id().map(|id| id.len()), Some(12));
    }

    #[test]
    fn a_rule_revokes_until_its_expiry_and_not_from_then_on() {
        let a = authz(policy(), vec![sub_rule("alice", Some(NOW + 10))], true);
        let req = bearer(&token(&claims()));
        assert_eq!(denied(&a.decide(&req, NOW + 9)), Reason::Revoked);
        assert!(matches!(
            a.decide(&req, NOW + 10).decision,
            Decision::Allow { .. }
        ));
    }

    #[test]
    fn the_token_lifetime_ends_at_iat_plus_lifetime_plus_leeway() {
        let a = authz(
            Policy {
                max_token_lifetime: Some(3600),
                ..policy()
            },
            vec![],
            true,
        );
        let long_lived = bearer(&token(&with(json!({"exp": NOW + 86_400}))));
        let last_second = NOW + 3600 + LEEWAY - 1;
        assert!(matches!(
            a.decide(&long_lived, last_second).decision,
            Decision::Allow { .. }
        ));
        let out = a.decide(&long_lived, last_second + 1);
        assert_eq!(denied(&out), Reason::Expired);
        assert_eq!(out.detail, "older than revocation.max_token_lifetime");
        assert_eq!(out.sub.as_deref(), Some("alice"));

        let mut no_iat = claims();
        no_iat.as_object_mut().unwrap().remove("iat");
        let out = a.decide(&bearer(&token(&no_iat)), NOW);
        assert_eq!(denied(&out), Reason::MalformedToken);

        // Without max_token_lifetime, only exp counts.
        let a = authz(policy(), vec![], true);
        assert!(matches!(
            a.decide(&long_lived, NOW + 80_000).decision,
            Decision::Allow { .. }
        ));
    }

    #[test]
    fn a_token_whose_issuer_keys_never_loaded_is_undecidable_not_denied() {
        let a = authz(policy(), vec![], false);
        let out = a.decide(&bearer(&token(&claims())), NOW);
        assert!(
            matches!(&out.decision, Decision::Unavailable(why) if why.contains(ISS)),
            "{out:?}"
        );
        // What needs no keys is still decided.
        let out = a.decide(
            &bearer(&token(&with(json!({"iss": "https://other.test"})))),
            NOW,
        );
        assert_eq!(denied(&out), Reason::UnknownIssuer);
        assert_eq!(denied(&a.decide(&request(None), NOW)), Reason::MissingToken);
    }

    #[test]
    fn claims_to_headers_forward_only_visible_ascii_and_remove_the_rest() {
        let forward = [
            ("sub", "x-sub"),
            ("name", "x-name"),
            ("num", "x-num"),
            ("groups", "x-groups"),
            ("crlf", "x-crlf"),
            ("tab", "x-tab"),
            ("nul", "x-nul"),
            ("line_separator", "x-line-separator"),
            ("accented", "x-accented"),
            ("null", "x-null"),
            ("absent", "x-absent"),
        ];
        let a = authz(
            Policy {
                claims_to_headers: forward
                    .iter()
                    .map(|(c, h)| (c.to_string(), h.to_string()))
                    .collect(),
                ..policy()
            },
            vec![],
            true,
        );
        let claims = with(json!({
            "name": "Alice Smith (ops)",
            "num": 12345,
            "groups": ["a", "b"],
            "crlf": "alice\r\nx-admin: true",
            "tab": "a\tb",
            "nul": "a\u{0}b",
            "line_separator": "alice\u{2028}x-admin: true",
            "accented": "José",
            "null": null,
        }));
        let out = a.decide(&bearer(&token(&claims)), NOW);
        let Decision::Allow { set, remove } = out.decision else {
            panic!("not allowed: {}", out.detail);
        };
        let set: Vec<(&str, &str)> = set.iter().map(|(h, v)| (h.as_str(), v.as_str())).collect();
        assert_eq!(
            set,
            [
                ("x-sub", "alice"),
                ("x-name", "Alice Smith (ops)"),
                ("x-num", "12345"),
                ("x-groups", r#"["a","b"]"#),
            ]
        );
        assert_eq!(
            remove,
            [
                "x-crlf",
                "x-tab",
                "x-nul",
                "x-line-separator",
                "x-accented",
                "x-null",
                "x-absent",
            ]
        );

        // Long values: a header holds at most MAX_HEADER_VALUE bytes of a claim.
        let a = authz(
            Policy {
                claims_to_headers: vec![("name".into(), "x-name".into())],
                ..policy()
            },
            vec![],
            true,
        );
        for (len, forwarded) in [(MAX_HEADER_VALUE, true), (MAX_HEADER_VALUE + 1, false)] {
            let claims = with(json!({ "name": "a".repeat(len) }));
            let Decision::Allow { set, remove } = a.decide(&bearer(&token(&claims)), NOW).decision
            else {
                panic!("not allowed");
            };
            assert_eq!(
                (set.len(), remove.len()),
                (usize::from(forwarded), usize::from(!forwarded))
            );
        }
    }
    #[test]
    fn past_the_budget_a_second_denials_of_a_reason_are_held_and_counted() {
        let lines = DenialLines::new(LogConfig::default());
        for _ in 0..DENIAL_LINES_PER_SECOND {
            assert_eq!(lines.admit(Reason::Revoked, NOW), Admit::Line);
        }
        assert_eq!(
            lines.admit(Reason::Revoked, NOW),
            Admit::Held { first: true }
        );
        assert_eq!(
            lines.admit(Reason::Revoked, NOW),
            Admit::Held { first: false }
        );
        // Each reason has its own budget, and each second a new one.
        assert_eq!(lines.admit(Reason::Expired, NOW), Admit::Line);
        assert_eq!(lines.admit(Reason::Revoked, NOW + 1), Admit::Line);
        assert_eq!(
            lines.windows[Reason::Revoked as usize]
                .held
                .load(Ordering::Relaxed),
            2
        );
        lines.summarize(Reason::Revoked);
        assert_eq!(
            lines.windows[Reason::Revoked as usize]
                .held
                .load(Ordering::Relaxed),
            0
        );
    }

    /// Log lines written while `f` runs, as JSON.
    async fn logged(f: impl AsyncFnOnce()) -> Vec<Value> {
        struct Sink(std::sync::mpsc::Sender<Vec<u8>>);
        impl std::io::Write for Sink {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                let _ = self.0.send(buf.to_vec());
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let (tx, rx) = std::sync::mpsc::channel();
        let subscriber = tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .with_writer(move || Sink(tx.clone()))
            .finish();
        let guard = tracing::subscriber::set_default(subscriber);
        f().await;
        drop(guard);
        let bytes: Vec<u8> = rx.try_iter().flatten().collect();
        String::from_utf8(bytes)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    fn with_message<'a>(lines: &'a [Value], message: &str) -> Vec<&'a Value> {
        lines.iter().filter(|l| l["message"] == message).collect()
    }

    const SUMMARY: &str = "more denials with this reason in the last second, not logged one by one";

    #[tokio::test]
    async fn a_flood_of_one_denial_writes_the_budget_and_one_line_counting_the_rest() {
        let service = CheckService::new(Arc::new(authz(
            policy(),
            vec![sub_rule("alice", None)],
            true,
        )));
        // The service reads the real clock.
        let real_now = clock::unix_now();
        let req = bearer(&token(&with(
            json!({"iat": real_now, "exp": real_now + 3600}),
        )));
        let flood = DENIAL_LINES_PER_SECOND + 50;
        // The budget is per wall-clock second: a flood that straddles two seconds gets two
        // budgets, so retry the rare run that does.
        let lines = loop {
            let start = clock::unix_now();
            let lines = logged(async || {
                for _ in 0..flood {
                    service
                        .check(tonic::Request::new(req.clone()))
                        .await
                        .unwrap();
                }
                service.denial_lines.summarize(Reason::Revoked);
            })
            .await;
            if clock::unix_now() == start {
                break lines;
            }
        };
        let denied = with_message(&lines, "request denied");
        assert_eq!(denied.len() as u64, DENIAL_LINES_PER_SECOND);
        assert_eq!(denied[0]["reason"], "revoked");
        assert_eq!(denied[0]["rule"], "sub:alice");
        let summary = with_message(&lines, SUMMARY);
        assert_eq!(summary.len(), 1, "{lines:?}");
        assert_eq!(summary[0]["reason"], "revoked");
        assert_eq!(summary[0]["count"], 50);
        assert_eq!(summary[0]["level"], "INFO");
    }

    #[tokio::test]
    async fn denials_still_held_back_when_veto_stops_are_counted_in_the_log() {
        let lines = logged(async || {
            let lines = DenialLines::new(LogConfig::default());
            for _ in 0..DENIAL_LINES_PER_SECOND + 7 {
                lines.admit(Reason::MissingToken, NOW);
            }
        })
        .await;
        let summary = with_message(&lines, SUMMARY);
        assert_eq!(summary.len(), 1, "{lines:?}");
        assert_eq!(summary[0]["reason"], "missing_token");
        assert_eq!(summary[0]["count"], 7);
    }
}
