//! JWT verification: which issuer, which key, which algorithm, and the time and audience
//! claims (SPEC §2, §4).
//!
//! The algorithm policy is the security core here. The algorithm is taken from the key, not
//! trusted from the token: a token's `alg` must be one its key's type allows (and the JWK's
//! own `alg`, and the issuer's allow-list). So an HS256 token can never be checked against an
//! RSA public key used as an HMAC secret (algorithm confusion), and `alg: none` is not an
//! algorithm at all. Keys are read through `arc-swap`: a key file reload never blocks a Check.

pub mod cache;
pub mod jwks;
pub mod mint;
pub mod remote;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arc_swap::ArcSwapOption;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::{Map, Value};

use crate::clock::UnixTime;
use crate::config::{CacheConfig, IssuerConfig};
use crate::decision::Reason;

/// Longest token accepted. Real JWTs are well under 4 KiB; anything much larger is an attack
/// on the parser or a mistake, and Envoy's own header limit is 60 KiB.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// One verification key and the algorithms it may be used with.
#[derive(Clone)]
pub struct Key {
    pub kid: Option<String>,
    pub key: DecodingKey,
    /// Never empty; always within the key type's family.
    pub algorithms: Vec<Algorithm>,
}

/// The key that must verify a token with this `alg` and `kid`, or why there is none.
fn select<'k>(
    jwks: &'k [Key],
    hmac: Option<&'k Key>,
    alg: Algorithm,
    kid: Option<&str>,
) -> Result<&'k Key, Failure> {
    let allows = |k: &&Key| k.algorithms.contains(&alg);
    if let Some(kid) = kid
        && let Some(key) = jwks.iter().find(|k| k.kid.as_deref() == Some(kid))
    {
        return if allows(&key) {
            Ok(key)
        } else {
            Err(Failure::new(
                Reason::AlgorithmNotAllowed,
                format!("key {kid} does not allow {alg:?}"),
            ))
        };
    }
    // The one HMAC secret has no kid: a token that names a kid we do not have names some
    // other key, and is not tried against the secret (it would make any kid acceptable).
    if let Some(kid) = kid {
        return Err(Failure::new(
            Reason::UnknownKey,
            format!("no key with kid {kid}"),
        ));
    }
    if let Some(hmac) = hmac.filter(allows) {
        return Ok(hmac);
    }
    let mut fitting = jwks.iter().filter(allows);
    match (fitting.next(), fitting.next()) {
        (Some(key), None) => Ok(key),
        (Some(_), Some(_)) => Err(Failure::new(
            Reason::UnknownKey,
            "the token has no kid and several keys fit",
        )),
        (None, _) => Err(Failure::new(
            Reason::AlgorithmNotAllowed,
            format!("no key of this issuer allows {alg:?}"),
        )),
    }
}

/// One configured issuer: its policy and its current keys.
///
/// Each key source is swapped whole by its loader (a file watcher or the JWKS fetcher);
/// `None` means "never loaded yet", which makes a Check that needs it undecidable.
pub struct Issuer {
    pub config: IssuerConfig,
    /// Keys of the JWK Set, from `jwks_file` or fetched from `jwks_uri`/discovery.
    pub jwks: ArcSwapOption<Vec<Key>>,
    /// The secret of `hmac_secret_file`.
    pub hmac: ArcSwapOption<Key>,
    /// For fetched keys: asks the fetcher for an early refetch when a `kid` is unknown.
    pub refetch: Option<remote::Refetch>,
    /// Bumped whenever a key source is swapped: a cached verification made under another
    /// generation is not trusted (a removed key stops being accepted at once).
    generation: AtomicU64,
}

impl Issuer {
    /// Installs a new JWK Set (from the file or the provider).
    pub fn store_jwks(&self, keys: Vec<Key>) {
        self.jwks.store(Some(Arc::new(keys)));
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// Installs a new HMAC secret.
    pub fn store_hmac(&self, key: Key) {
        self.hmac.store(Some(Arc::new(key)));
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    fn has_jwks_source(&self) -> bool {
        self.config.jwks_file.is_some() || self.config.remote.is_some()
    }

    /// True once every configured key source has loaded at least once.
    pub fn is_loaded(&self) -> bool {
        (!self.has_jwks_source() || self.jwks.load().is_some())
            && (self.config.hmac_secret_file.is_none() || self.hmac.load().is_some())
    }

    /// How many keys are loaded now.
    pub fn key_count(&self) -> usize {
        self.jwks.load().as_ref().map_or(0, |k| k.len()) + usize::from(self.hmac.load().is_some())
    }
}

/// A token that passed every check, with what the rest of the request path needs.
#[derive(Debug)]
pub struct Verified {
    pub alg: Algorithm,
    pub claims: Map<String, Value>,
    pub iss: String,
    pub iat: Option<UnixTime>,
    /// Re-checked on every use of a cached verification.
    pub times: TimeClaims,
    /// The issuer's key generation this was verified under.
    pub generation: u64,
}

/// The time claims of a token and the leeway they are judged with.
#[derive(Debug, Clone, Copy)]
pub struct TimeClaims {
    pub exp: UnixTime,
    pub nbf: Option<UnixTime>,
    pub iat: Option<UnixTime>,
    pub leeway: i64,
}

impl TimeClaims {
    /// `exp` (RFC 7519 §4.1.4: not on or after it), `nbf`, and `iat` not in the future.
    pub fn check(&self, now: UnixTime) -> Result<(), Failure> {
        let (exp, leeway) = (self.exp, self.leeway);
        if now >= exp.saturating_add(leeway) {
            return Err(Failure::new(Reason::Expired, format!("exp {exp}")));
        }
        if let Some(nbf) = self.nbf
            && now.saturating_add(leeway) < nbf
        {
            return Err(Failure::new(Reason::NotYetValid, format!("nbf {nbf}")));
        }
        if let Some(iat) = self.iat
            && now.saturating_add(leeway) < iat
        {
            return Err(Failure::new(
                Reason::NotYetValid,
                format!("iat {iat} is in the future"),
            ));
        }
        Ok(())
    }
}

impl Verified {
    pub fn str_claim(&self, name: &str) -> Option<&str> {
        self.claims.get(name).and_then(Value::as_str)
    }
}

/// Why a token was not verified: the reason for the client, the detail for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub reason: Reason,
    pub detail: String,
    /// The token's issuer and subject as claimed, for the log (unverified).
    pub iss: Option<String>,
    pub sub: Option<String>,
}

impl Failure {
    fn new(reason: Reason, detail: impl Into<String>) -> Failure {
        Failure {
            reason,
            detail: detail.into(),
            iss: None,
            sub: None,
        }
    }
}

/// Why a token was not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VerifyError {
    /// The token is bad: deny it with this reason.
    Denied(Failure),
    /// veto cannot decide (e.g. an issuer's keys were never loaded): SPEC §4 answers the
    /// gRPC status `UNAVAILABLE` so Envoy applies its own failure mode.
    Undecidable(String),
}

/// Every configured issuer, by `iss`, and the cache of successful verifications.
pub struct Verifier {
    issuers: HashMap<String, Arc<Issuer>>,
    cache: cache::VerifyCache,
}

#[derive(serde::Deserialize)]
struct JoseHeader {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
    /// RFC 7515 §4.1.11: a token that marks an extension critical must be rejected by a
    /// verifier that does not understand it, and veto understands none.
    #[serde(default)]
    crit: Option<Value>,
}

impl Verifier {
    pub fn new(configs: &[IssuerConfig], cache: &CacheConfig) -> Verifier {
        let issuers = configs
            .iter()
            .map(|c| {
                let issuer = Issuer {
                    config: c.clone(),
                    jwks: ArcSwapOption::empty(),
                    hmac: ArcSwapOption::empty(),
                    refetch: c.remote.as_ref().map(remote::Refetch::new),
                    generation: AtomicU64::new(0),
                };
                (c.issuer.clone(), Arc::new(issuer))
            })
            .collect();
        Verifier {
            issuers,
            cache: cache::VerifyCache::new(cache.max_entries, cache.max_bytes),
        }
    }

    pub fn issuer(&self, iss: &str) -> Option<&Arc<Issuer>> {
        self.issuers.get(iss)
    }

    pub fn issuers(&self) -> impl Iterator<Item = &Arc<Issuer>> {
        self.issuers.values()
    }

    /// Verifies a compact JWS at `now`, reusing an earlier verification of the very same
    /// token (`digest` is its SHA-256) while the issuer's keys are unchanged and the token's
    /// time claims still hold. Pure apart from reading the current keys and the cache.
    pub fn verify(
        &self,
        token: &str,
        digest: &[u8; 32],
        now: UnixTime,
    ) -> Result<Arc<Verified>, VerifyError> {
        if let Some(hit) = self.cache.get(digest)
            && self
                .issuers
                .get(&hit.iss)
                .is_some_and(|i| i.generation() == hit.generation)
            && hit.times.check(now).is_ok()
        {
            return Ok(hit);
        }
        let verified = Arc::new(self.verify_uncached(token, now)?);
        self.cache.insert(*digest, verified.clone());
        Ok(verified)
    }

    /// Verifies a compact JWS at `now`, without the cache.
    pub fn verify_uncached(&self, token: &str, now: UnixTime) -> Result<Verified, VerifyError> {
        let mut iss_sub = (None, None);
        self.verify_inner(token, now, &mut iss_sub)
            .map_err(|e| match e {
                VerifyError::Denied(mut f) => {
                    (f.iss, f.sub) = iss_sub;
                    VerifyError::Denied(f)
                }
                other => other,
            })
    }

    fn verify_inner(
        &self,
        token: &str,
        now: UnixTime,
        iss_sub: &mut (Option<String>, Option<String>),
    ) -> Result<Verified, VerifyError> {
        let malformed = |d: &str| VerifyError::Denied(Failure::new(Reason::MalformedToken, d));
        if token.len() > MAX_TOKEN_BYTES {
            return Err(malformed("token longer than 16 KiB"));
        }
        let mut parts = token.split('.');
        let (Some(h64), Some(p64), Some(s64), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(malformed("not three dot-separated parts"));
        };
        let header: JoseHeader =
            decode_part(h64).ok_or_else(|| malformed("header is not base64url JSON"))?;
        let claims: Map<String, Value> =
            decode_part(p64).ok_or_else(|| malformed("payload is not a base64url JSON object"))?;
        if s64.is_empty() {
            return Err(malformed("empty signature"));
        }
        let iss = match claims.get("iss") {
            None => None,
            Some(Value::String(iss)) => Some(iss.as_str()),
            // RFC 7519 §4.1.1: a StringOrURI. Anything else is a broken token, not an issuer
            // veto merely does not know.
            Some(_) => return Err(malformed("iss is not a string")),
        };
        iss_sub.0 = iss.map(str::to_owned);
        iss_sub.1 = claims.get("sub").and_then(Value::as_str).map(str::to_owned);
        if header.crit.is_some() {
            return Err(malformed(
                "header has crit extensions veto does not understand",
            ));
        }
        let alg: Algorithm = header.alg.parse().map_err(|_| {
            VerifyError::Denied(Failure::new(
                Reason::AlgorithmNotAllowed,
                format!(
                    "alg {:?} is not a signature algorithm veto accepts",
                    header.alg
                ),
            ))
        })?;

        let Some(iss) = iss else {
            return Err(VerifyError::Denied(Failure::new(
                Reason::UnknownIssuer,
                "no iss claim",
            )));
        };
        let issuer = self.issuers.get(iss).ok_or_else(|| {
            VerifyError::Denied(Failure::new(
                Reason::UnknownIssuer,
                "iss is not a configured issuer",
            ))
        })?;
        let policy = &issuer.config;
        if !policy.algorithms.is_empty() && !policy.algorithms.contains(&alg) {
            return Err(VerifyError::Denied(Failure::new(
                Reason::AlgorithmNotAllowed,
                format!("{alg:?} is not in the issuer's algorithms"),
            )));
        }
        // Read before the keys: if they change meanwhile, the result carries the older
        // generation and is simply not reused from the cache.
        let generation = issuer.generation();
        let jwks = issuer.jwks.load();
        let hmac = issuer.hmac.load();
        let key = select(
            jwks.as_deref().map_or(&[], Vec::as_slice),
            hmac.as_deref(),
            alg,
            header.kid.as_deref(),
        )
        .map_err(|f| {
            // A key we have not got yet may be the one: a source that never loaded makes
            // the token undecidable rather than denied (SPEC §4).
            if issuer.is_loaded() {
                VerifyError::Denied(f)
            } else {
                VerifyError::Undecidable(format!("the keys of issuer {iss} are not loaded yet"))
            }
        })?;

        let signed_len = h64.len() + 1 + p64.len();
        let message = &token.as_bytes()[..signed_len];
        match jsonwebtoken::crypto::verify(s64, message, &key.key, alg) {
            Ok(true) => {}
            Ok(false) => {
                return Err(VerifyError::Denied(Failure::new(
                    Reason::InvalidSignature,
                    "signature does not verify",
                )));
            }
            Err(e) => {
                let reason = match e.kind() {
                    jsonwebtoken::errors::ErrorKind::Base64(_) => Reason::MalformedToken,
                    _ => Reason::InvalidSignature,
                };
                return Err(VerifyError::Denied(Failure::new(
                    reason,
                    format!("signature check failed: {e}"),
                )));
            }
        }

        let leeway = crate::clock::seconds(policy.leeway);
        let exp = numeric_claim(&claims, "exp").map_err(VerifyError::Denied)?;
        let nbf = numeric_claim(&claims, "nbf").map_err(VerifyError::Denied)?;
        let iat = numeric_claim(&claims, "iat").map_err(VerifyError::Denied)?;
        let Some(exp) = exp else {
            return Err(malformed("no exp claim; veto requires one"));
        };
        let times = TimeClaims {
            exp,
            nbf,
            iat,
            leeway,
        };
        times.check(now).map_err(VerifyError::Denied)?;
        if !policy.audiences.is_empty() && !audience_matches(claims.get("aud"), &policy.audiences) {
            return Err(VerifyError::Denied(Failure::new(
                Reason::WrongAudience,
                "aud names none of the issuer's audiences",
            )));
        }
        Ok(Verified {
            alg,
            iss: iss.to_owned(),
            iat,
            claims,
            times,
            generation,
        })
    }
}

/// Decodes one base64url (no padding, RFC 7515 §2) JSON segment.
fn decode_part<T: serde::de::DeserializeOwned>(segment: &str) -> Option<T> {
    let bytes = URL_SAFE_NO_PAD.decode(segment).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// A NumericDate claim (RFC 7519 §2): absent is None; present and not a number is malformed.
fn numeric_claim(claims: &Map<String, Value>, name: &str) -> Result<Option<UnixTime>, Failure> {
    match claims.get(name) {
        None => Ok(None),
        Some(v) => v
            .as_i64()
            .or_else(|| {
                v.as_f64()
                    .filter(|f| f.is_finite())
                    .map(|f| f.floor() as i64)
            })
            .map(Some)
            .ok_or_else(|| Failure::new(Reason::MalformedToken, format!("{name} is not a number"))),
    }
}

/// RFC 7519 §4.1.3: `aud` is a string or an array of strings; one must be ours.
fn audience_matches(aud: Option<&Value>, accepted: &[String]) -> bool {
    match aud {
        Some(Value::String(a)) => accepted.iter().any(|x| x == a),
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .any(|a| accepted.iter().any(|x| x == a)),
        _ => false,
    }
}

#[cfg(test)]
mod tests;
