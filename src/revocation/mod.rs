//! The revocation snapshot: rules (SPEC §3) and the tables that answer "is this token
//! revoked?" in constant time however many rules there are.
//!
//! A [`RuleTable`] is one immutable layer of rules, built once (from the rules file, or from
//! pushed rules) and keyed by selector, so a lookup is a handful of hash probes. A
//! [`Snapshot`] combines the layers under one version number; the request path reads it
//! through `arc-swap` (see `state.rs`) and never takes a lock or does I/O here.

mod arena;
pub mod parse;
mod table;
pub mod token_hash;

pub use table::{RuleTable, claim_text};

use std::fmt;
use std::sync::Arc;

use serde_json::Value;

pub use crate::clock::UnixTime;

/// The latest time a rule may name: 9999-12-31T23:59:59Z, the last second RFC 3339 can
/// write. Later is no real date, only a way to reach the edges of `i64`.
pub const LATEST_TIME: UnixTime = 253_402_300_799;

/// The earliest: 0000-01-01T00:00:00Z.
pub const EARLIEST_TIME: UnixTime = -62_167_219_200;

/// What a rule matches a token by (SPEC §3, "at most one selector").
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Selector {
    Session(Box<str>),
    Sub(Box<str>),
    TokenSha256([u8; 32]),
    Claim { name: Box<str>, value: Box<str> },
    Global,
}

/// When a rule applies, beyond its selector.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scope {
    /// The rule applies only to tokens of this issuer.
    pub iss: Option<Arc<str>>,
    /// Only tokens with `iat` strictly before this are revoked; every token when absent.
    issued_before: Option<UnixTime>,
    /// The rule stops applying at this instant; never when absent.
    expires_at: Option<UnixTime>,
    pub reason: Option<Box<str>>,
}

/// One revocation rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    pub selector: Selector,
    pub scope: Scope,
}

impl Scope {
    pub fn new(
        iss: Option<Arc<str>>,
        issued_before: Option<UnixTime>,
        expires_at: Option<UnixTime>,
        reason: Option<Box<str>>,
    ) -> Scope {
        Scope {
            iss,
            issued_before,
            expires_at,
            reason,
        }
    }

    pub fn issued_before(&self) -> Option<UnixTime> {
        self.issued_before
    }

    pub fn expires_at(&self) -> Option<UnixTime> {
        self.expires_at
    }

    pub fn set_expires_at(&mut self, at: Option<UnixTime>) {
        self.expires_at = at;
    }

    /// A rule is live until `expires_at`, exclusive: at that second it no longer applies,
    /// even if no reload has pruned it yet.
    pub fn is_live(&self, now: UnixTime) -> bool {
        self.expires_at.is_none_or(|at| now < at)
    }
}

impl Rule {
    /// The rule's identity (SPEC §3): `session:S`, `sub:S`, `sha256:H`, `claim:C=V`,
    /// `global`, each suffixed `@ISS` when `iss` is set; `%` and `@` in S, C and V are
    /// percent-escaped (see [`parse_id`]).
    pub fn id(&self) -> String {
        rule_id(&self.selector, self.scope.iss.as_deref())
    }

    /// The rule in the rules-file format (times as RFC 3339), which is also what the admin
    /// API shows and what `state_dir` stores, so every view of a rule reads the same.
    pub fn to_json(&self) -> serde_json::Map<String, Value> {
        let mut m = serde_json::Map::new();
        match &self.selector {
            Selector::Session(s) => {
                m.insert("session".into(), Value::from(s.as_ref()));
            }
            Selector::Sub(s) => {
                m.insert("sub".into(), Value::from(s.as_ref()));
            }
            Selector::TokenSha256(_) => {
                let id = self.selector.to_string();
                let hex = id.trim_start_matches("sha256:");
                m.insert("token_sha256".into(), Value::from(hex));
            }
            Selector::Claim { name, value } => {
                m.insert("claim".into(), Value::from(name.as_ref()));
                m.insert("value".into(), Value::from(value.as_ref()));
            }
            Selector::Global => {}
        }
        if let Some(iss) = &self.scope.iss {
            m.insert("iss".into(), Value::from(iss.as_ref()));
        }
        if let Some(t) = self.scope.issued_before() {
            m.insert("issued_before".into(), rfc3339(t));
        }
        if let Some(t) = self.scope.expires_at() {
            m.insert("expires_at".into(), rfc3339(t));
        }
        if let Some(r) = &self.scope.reason {
            m.insert("reason".into(), Value::from(r.as_ref()));
        }
        m
    }
}

/// A Unix time as RFC 3339 text, or as the number when it is outside the formattable range.
fn rfc3339(t: UnixTime) -> Value {
    time::OffsetDateTime::from_unix_timestamp(t)
        .ok()
        .and_then(|d| {
            d.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .map_or_else(|| Value::from(t), Value::from)
}

/// The (selector, issuer) an id names. An id is `SELECTOR[@ISS]`; selector values have `%`
/// and `@` percent-escaped (`%25`, `%40`), so the first `@` starts the issuer and one id
/// never names two rules (`{"sub":"a@ISS"}` is `sub:a%40ISS`, `{"sub":"a","iss":"ISS"}` is
/// `sub:a@ISS`).
pub fn parse_id(id: &str) -> Option<(Selector, Option<String>)> {
    let (selector, iss) = match id.split_once('@') {
        Some((_, "")) => return None,
        Some((selector, iss)) => (selector, Some(iss.to_owned())),
        None => (id, None),
    };
    Some((parse_selector(selector)?, iss))
}

/// Every rule an id may name, the exact reading first ([`parse_id`]), then the readings of
/// SPEC §3's unescaped form (`sub:alice@example.com` for the subject `alice@example.com`, or
/// for `alice` with iss `example.com`), which clients build by hand from the rule they
/// pushed. A lookup takes the first reading that names a rule, so an id veto printed always
/// reaches its own rule, and an unescaped one reaches the only rule it can mean.
pub fn id_candidates(id: &str) -> Vec<(Selector, Option<String>)> {
    let mut candidates: Vec<_> = parse_id(id).into_iter().collect();
    let literal = |selector: &str| -> Option<Selector> {
        let escaped = selector.replace('%', "%25").replace('@', "%40");
        parse_selector(&escaped)
    };
    let mut readings = vec![(id, None)];
    if let Some((selector, iss)) = id.rsplit_once('@') {
        readings.push((selector, Some(iss.to_owned())));
    }
    for (selector, iss) in readings {
        if let Some(selector) = literal(selector)
            && !candidates.contains(&(selector.clone(), iss.clone()))
        {
            candidates.push((selector, iss));
        }
    }
    candidates
}

fn parse_selector(s: &str) -> Option<Selector> {
    let value = |v: &str| unescape(v).filter(|v| !v.is_empty()).map(Box::from);
    if s == "global" {
        return Some(Selector::Global);
    }
    let (kind, rest) = s.split_once(':')?;
    match kind {
        "session" => value(rest).map(Selector::Session),
        "sub" => value(rest).map(Selector::Sub),
        "sha256" => token_hash::parse_hex_sha256(rest).map(Selector::TokenSha256),
        "claim" => {
            let (name, v) = rest.split_once('=')?;
            Some(Selector::Claim {
                name: value(name)?,
                value: value(v)?,
            })
        }
        _ => None,
    }
}

/// A selector value as an id writes it: `%` and `@` percent-escaped.
struct Escaped<'a>(&'a str);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rest = self.0;
        while let Some(at) = rest.find(['%', '@']) {
            f.write_str(&rest[..at])?;
            f.write_str(if rest[at..].starts_with('%') {
                "%25"
            } else {
                "%40"
            })?;
            rest = &rest[at + 1..];
        }
        f.write_str(rest)
    }
}

/// The inverse of [`Escaped`]; None for any other `%` sequence.
fn unescape(s: &str) -> Option<String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(at) = rest.find('%') {
        out.push_str(&rest[..at]);
        let code = rest.get(at..at + 3)?;
        out.push(match code {
            "%25" => '%',
            "%40" => '@',
            _ => return None,
        });
        rest = &rest[at + 3..];
    }
    out.push_str(rest);
    Some(out)
}

fn rule_id(selector: &Selector, iss: Option<&str>) -> String {
    let mut id = selector.to_string();
    if let Some(iss) = iss {
        id.push('@');
        id.push_str(iss);
    }
    id
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Selector::Session(s) => write!(f, "session:{}", Escaped(s)),
            Selector::Sub(s) => write!(f, "sub:{}", Escaped(s)),
            Selector::TokenSha256(h) => {
                f.write_str("sha256:")?;
                h.iter().try_for_each(|b| write!(f, "{b:02x}"))
            }
            Selector::Claim { name, value } => {
                write!(f, "claim:{}={}", Escaped(name), Escaped(value))
            }
            Selector::Global => f.write_str("global"),
        }
    }
}

/// What the lookup needs to know about a verified token.
pub struct TokenFacts<'a> {
    pub iss: &'a str,
    pub iat: Option<UnixTime>,
    pub sub: Option<&'a str>,
    /// The value of the configured `session_claim`, when it is a string.
    pub session: Option<&'a str>,
    /// Every claim, for `claim` rules.
    pub claims: &'a serde_json::Map<String, Value>,
    /// SHA-256 of the token string (and, for ECDSA, of its re-encoded twin). Computed only
    /// when some table holds `token_sha256` rules.
    pub hashes: &'a [[u8; 32]],
}

/// Why a token was found revoked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Match {
    pub id: String,
    pub reason: Option<Box<str>>,
    pub source: Source,
}

/// Where a rule came from (`"source"` in the admin API).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    File,
    Pushed,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::File => "file",
            Source::Pushed => "pushed",
        }
    }
}

/// Every rule in force, as one version: the rules file's layer and the pushed layer.
///
/// The layers are separate so that a push rebuilds only the (small) pushed layer, never the
/// file's, which may hold a million rules.
#[derive(Debug, Default, Clone)]
pub struct Snapshot {
    pub version: u64,
    pub file: Arc<RuleTable>,
    pub pushed: Arc<RuleTable>,
}

impl Snapshot {
    pub fn needs_token_hash(&self) -> bool {
        self.file.has_token_hashes() || self.pushed.has_token_hashes()
    }

    /// The first rule that revokes this token at `now`, if any.
    pub fn find(&self, token: &TokenFacts<'_>, now: UnixTime) -> Option<Match> {
        [(Source::Pushed, &self.pushed), (Source::File, &self.file)]
            .into_iter()
            .find_map(|(source, table)| {
                let rule = table.find(token, now)?;
                Some(Match {
                    id: rule.id(),
                    reason: rule.scope.reason,
                    source,
                })
            })
    }

    pub fn len(&self) -> usize {
        self.file.len() + self.pushed.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests;
