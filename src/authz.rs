//! The ext_authz Check service: token -> verify -> snapshot -> [`Decision`].
//!
//! [`Authz::decide`] is a pure function of (request, keys, snapshot, now): no lock, no I/O,
//! and the only shared state it touches is read through `arc-swap`. The gRPC wrapper around
//! it times the Check, counts it, and writes one structured log line per denial with the
//! reason, issuer, subject and a hash prefix of the token (never the token).

use std::sync::Arc;
use std::time::Instant;

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

/// A claim as a header value: strings as they are, other JSON as its text. A value with
/// control characters (which could split a header) is treated as absent.
fn header_value(v: &Value) -> Option<String> {
    let s = match v {
        Value::String(s) => s.clone(),
        Value::Null => return None,
        other => other.to_string(),
    };
    (!s.chars().any(char::is_control) && s.len() <= 8192).then_some(s)
}

/// The tonic service around [`Authz`].
pub struct CheckService(pub Arc<Authz>);

#[tonic::async_trait]
impl Authorization for CheckService {
    async fn check(
        &self,
        request: Request<CheckRequest>,
    ) -> Result<Response<CheckResponse>, Status> {
        let started = Instant::now();
        let authz = &self.0;
        let mut out = authz.decide(request.get_ref(), clock::unix_now());
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
            Decision::Deny(reason) => log_denial(authz.policy.log.denial(*reason), *reason, &out),
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

/// Writes the "request denied" line at `level` (already counted in the metrics, whatever
/// the level). tracing's macros take the level as a constant: one arm per level.
fn log_denial(level: LogLevel, reason: Reason, out: &Outcome) {
    macro_rules! denied {
        ($level:expr) => {
            tracing::event!(
                $level,
                reason = reason.as_str(),
                detail = %out.detail,
                iss = out.iss.as_deref().unwrap_or("-"),
                sub = out.sub.as_deref().unwrap_or("-"),
                token = out.token_id().as_deref().unwrap_or("-"),
                rule = out.rule.as_deref().unwrap_or("-"),
                "request denied"
            )
        };
    }
    match level {
        LogLevel::Off => {}
        LogLevel::Error => denied!(tracing::Level::ERROR),
        LogLevel::Warn => denied!(tracing::Level::WARN),
        LogLevel::Info => denied!(tracing::Level::INFO),
        LogLevel::Debug => denied!(tracing::Level::DEBUG),
        LogLevel::Trace => denied!(tracing::Level::TRACE),
    }
}
