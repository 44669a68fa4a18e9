//! The revocation snapshot: rules (SPEC §3) and the tables that answer "is this token
//! revoked?" in constant time however many rules there are.
//!
//! A [`RuleTable`] is one immutable layer of rules, built once (from the rules file, or from
//! pushed rules) and keyed by selector, so a lookup is a handful of hash probes. A
//! [`Snapshot`] combines the layers under one version number; the request path reads it
//! through `arc-swap` (see `state.rs`) and never takes a lock or does I/O here.

pub mod parse;
pub mod token_hash;

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use serde_json::Value;

/// Seconds since the Unix epoch.
pub type UnixTime = i64;

/// `issued_before`/`expires_at` stored as `UnixTime::MAX` mean "absent": every `iat` is
/// before it, and the rule never expires. That makes "the later one wins" (SPEC §3 merge) a
/// plain `max`.
const UNBOUNDED: UnixTime = UnixTime::MAX;

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
    /// Only tokens with `iat` strictly before this are revoked; [`UNBOUNDED`] when absent.
    issued_before: UnixTime,
    /// The rule stops applying at this instant; [`UNBOUNDED`] when absent.
    expires_at: UnixTime,
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
            issued_before: issued_before.unwrap_or(UNBOUNDED),
            expires_at: expires_at.unwrap_or(UNBOUNDED),
            reason,
        }
    }

    pub fn issued_before(&self) -> Option<UnixTime> {
        (self.issued_before != UNBOUNDED).then_some(self.issued_before)
    }

    pub fn expires_at(&self) -> Option<UnixTime> {
        (self.expires_at != UNBOUNDED).then_some(self.expires_at)
    }

    pub fn set_expires_at(&mut self, at: Option<UnixTime>) {
        self.expires_at = at.unwrap_or(UNBOUNDED);
    }

    /// A rule is live until `expires_at`, exclusive: at that second it no longer applies,
    /// even if no reload has pruned it yet.
    pub fn is_live(&self, now: UnixTime) -> bool {
        now < self.expires_at
    }

    /// SPEC §3: a token with no `iat` counts as issued before any cutoff.
    fn covers(&self, token_iss: &str, iat: Option<UnixTime>, now: UnixTime) -> bool {
        self.is_live(now)
            && self.iss.as_deref().is_none_or(|iss| iss == token_iss)
            && iat.is_none_or(|iat| iat < self.issued_before)
    }

    /// SPEC §3: two rules with one id merge, the later `issued_before` and `expires_at` win.
    fn merge(&mut self, other: Scope) {
        self.issued_before = self.issued_before.max(other.issued_before);
        self.expires_at = self.expires_at.max(other.expires_at);
        if other.reason.is_some() {
            self.reason = other.reason;
        }
    }

    /// Pruning with `max_token_lifetime`: once every token a cutoff could catch has expired
    /// on its own, the rule can go. Returns the instant that happens, if there is one.
    fn moot_after(&self, max_token_lifetime: Option<UnixTime>) -> Option<UnixTime> {
        let lifetime = max_token_lifetime?;
        (self.issued_before != UNBOUNDED).then(|| self.issued_before.saturating_add(lifetime))
    }
}

impl Rule {
    /// The rule's identity (SPEC §3): `session:S`, `sub:S`, `sha256:H`, `claim:C=V`,
    /// `global`, each suffixed `@ISS` when `iss` is set.
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

/// Every (selector, issuer) an id may stand for. An id is `SELECTOR[@ISS]`, but a session,
/// subject or claim value may itself contain `@` (an e-mail address), so each split is a
/// candidate; the caller keeps the one that names an existing rule.
pub fn parse_id(id: &str) -> Vec<(Selector, Option<String>)> {
    let mut out = Vec::new();
    let mut push = |sel: &str, iss: Option<&str>| {
        if let Some(selector) = parse_selector(sel)
            && iss.is_none_or(|i| !i.is_empty())
        {
            out.push((selector, iss.map(str::to_owned)));
        }
    };
    push(id, None);
    for (at, _) in id.match_indices('@') {
        push(&id[..at], Some(&id[at + 1..]));
    }
    out
}

fn parse_selector(s: &str) -> Option<Selector> {
    let nonempty = |v: &str| (!v.is_empty()).then(|| v.into());
    if s == "global" {
        return Some(Selector::Global);
    }
    let (kind, rest) = s.split_once(':')?;
    match kind {
        "session" => nonempty(rest).map(Selector::Session),
        "sub" => nonempty(rest).map(Selector::Sub),
        "sha256" => token_hash::parse_hex_sha256(rest).map(Selector::TokenSha256),
        "claim" => {
            let (name, value) = rest.split_once('=')?;
            Some(Selector::Claim {
                name: nonempty(name)?,
                value: nonempty(value)?,
            })
        }
        _ => None,
    }
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
            Selector::Session(s) => write!(f, "session:{s}"),
            Selector::Sub(s) => write!(f, "sub:{s}"),
            Selector::TokenSha256(h) => {
                f.write_str("sha256:")?;
                h.iter().try_for_each(|b| write!(f, "{b:02x}"))
            }
            Selector::Claim { name, value } => write!(f, "claim:{name}={value}"),
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

/// One immutable layer of rules, keyed by selector.
///
/// A key holds one [`Scope`] per issuer it was written for (usually exactly one), because
/// rules with the same id merge.
#[derive(Debug, Default, Clone)]
pub struct RuleTable {
    sessions: HashMap<Box<str>, Vec<Scope>>,
    subs: HashMap<Box<str>, Vec<Scope>>,
    hashes: HashMap<[u8; 32], Vec<Scope>>,
    /// claim name -> claim value -> scopes.
    claims: HashMap<Box<str>, HashMap<Box<str>, Vec<Scope>>>,
    global: Vec<Scope>,
    len: usize,
}

impl RuleTable {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// True when a lookup needs the token's SHA-256, which costs a hash per Check.
    pub fn has_token_hashes(&self) -> bool {
        !self.hashes.is_empty()
    }

    /// Adds a rule, merging it with an existing rule of the same id.
    pub fn insert(&mut self, rule: Rule) {
        let scopes = match rule.selector {
            Selector::Session(s) => self.sessions.entry(s).or_default(),
            Selector::Sub(s) => self.subs.entry(s).or_default(),
            Selector::TokenSha256(h) => self.hashes.entry(h).or_default(),
            Selector::Claim { name, value } => self
                .claims
                .entry(name)
                .or_default()
                .entry(value)
                .or_default(),
            Selector::Global => &mut self.global,
        };
        match scopes.iter_mut().find(|s| s.iss == rule.scope.iss) {
            Some(existing) => existing.merge(rule.scope),
            None => {
                scopes.push(rule.scope);
                self.len += 1;
            }
        }
    }

    /// Looks a rule up by its selector and issuer.
    pub fn get(&self, selector: &Selector, iss: Option<&str>) -> Option<Rule> {
        self.scopes(selector)?
            .iter()
            .find(|s| s.iss.as_deref() == iss)
            .map(|scope| Rule {
                selector: selector.clone(),
                scope: scope.clone(),
            })
    }

    /// Every rule with this selector, whatever its issuer.
    pub fn by_selector(&self, selector: &Selector) -> Vec<Rule> {
        self.scopes(selector)
            .into_iter()
            .flatten()
            .map(|scope| Rule {
                selector: selector.clone(),
                scope: scope.clone(),
            })
            .collect()
    }

    /// Removes a rule; true when it was there.
    pub fn remove(&mut self, selector: &Selector, iss: Option<&str>) -> bool {
        fn take(scopes: &mut Vec<Scope>, iss: Option<&str>) -> bool {
            let before = scopes.len();
            scopes.retain(|s| s.iss.as_deref() != iss);
            scopes.len() != before
        }
        fn take_keyed<K: std::hash::Hash + Eq>(
            map: &mut HashMap<K, Vec<Scope>>,
            key: &K,
            iss: Option<&str>,
        ) -> bool {
            let Some(scopes) = map.get_mut(key) else {
                return false;
            };
            let removed = take(scopes, iss);
            if scopes.is_empty() {
                map.remove(key);
            }
            removed
        }
        let removed = match selector {
            Selector::Session(s) => take_keyed(&mut self.sessions, s, iss),
            Selector::Sub(s) => take_keyed(&mut self.subs, s, iss),
            Selector::TokenSha256(h) => take_keyed(&mut self.hashes, h, iss),
            Selector::Claim { name, value } => match self.claims.get_mut(name) {
                Some(values) => {
                    let removed = take_keyed(values, value, iss);
                    if values.is_empty() {
                        self.claims.remove(name);
                    }
                    removed
                }
                None => false,
            },
            Selector::Global => take(&mut self.global, iss),
        };
        if removed {
            self.len -= 1;
        }
        removed
    }

    fn scopes(&self, selector: &Selector) -> Option<&Vec<Scope>> {
        match selector {
            Selector::Session(s) => self.sessions.get(s),
            Selector::Sub(s) => self.subs.get(s),
            Selector::TokenSha256(h) => self.hashes.get(h),
            Selector::Claim { name, value } => self.claims.get(name)?.get(value),
            Selector::Global => Some(&self.global),
        }
    }

    /// Every rule, in no particular order.
    pub fn rules(&self) -> impl Iterator<Item = Rule> + '_ {
        fn expand<'a>(selector: Selector, scopes: &'a [Scope]) -> impl Iterator<Item = Rule> + 'a {
            scopes.iter().map(move |scope| Rule {
                selector: selector.clone(),
                scope: scope.clone(),
            })
        }
        let sessions = self
            .sessions
            .iter()
            .flat_map(|(k, v)| expand(Selector::Session(k.clone()), v));
        let subs = self
            .subs
            .iter()
            .flat_map(|(k, v)| expand(Selector::Sub(k.clone()), v));
        let hashes = self
            .hashes
            .iter()
            .flat_map(|(k, v)| expand(Selector::TokenSha256(*k), v));
        let claims = self.claims.iter().flat_map(|(name, values)| {
            values.iter().flat_map(move |(value, v)| {
                expand(
                    Selector::Claim {
                        name: name.clone(),
                        value: value.clone(),
                    },
                    v,
                )
            })
        });
        let global = expand(Selector::Global, &self.global);
        sessions
            .chain(subs)
            .chain(hashes)
            .chain(claims)
            .chain(global)
    }

    /// A copy without the rules that can no longer match anything at `now`: expired ones,
    /// and (with `max_token_lifetime`) cutoffs older than the longest-lived token.
    pub fn pruned(&self, now: UnixTime, max_token_lifetime: Option<UnixTime>) -> RuleTable {
        let mut out = RuleTable::default();
        for rule in self.rules() {
            let moot = rule
                .scope
                .moot_after(max_token_lifetime)
                .is_some_and(|t| t <= now);
            if rule.scope.is_live(now) && !moot {
                out.insert(rule);
            }
        }
        out
    }

    /// True when some rule of this table has expired or become moot at `now`.
    pub fn has_prunable(&self, now: UnixTime, max_token_lifetime: Option<UnixTime>) -> bool {
        self.next_expiry(max_token_lifetime)
            .is_some_and(|t| t <= now)
    }

    /// The earliest instant a rule of this table stops applying, for the expiry timer.
    pub fn next_expiry(&self, max_token_lifetime: Option<UnixTime>) -> Option<UnixTime> {
        self.all_scopes()
            .flat_map(|s| [s.expires_at(), s.moot_after(max_token_lifetime)])
            .flatten()
            .min()
    }

    fn all_scopes(&self) -> impl Iterator<Item = &Scope> {
        self.sessions
            .values()
            .chain(self.subs.values())
            .chain(self.hashes.values())
            .chain(self.claims.values().flat_map(|m| m.values()))
            .chain(std::iter::once(&self.global))
            .flatten()
    }

    /// The first rule that revokes this token, if any.
    pub fn find(&self, token: &TokenFacts<'_>, now: UnixTime) -> Option<(Selector, &Scope)> {
        let covers = |s: &&Scope| s.covers(token.iss, token.iat, now);
        fn first(scopes: Option<&Vec<Scope>>, covers: impl Fn(&&Scope) -> bool) -> Option<&Scope> {
            scopes.and_then(|v| v.iter().find(covers))
        }

        if let Some(session) = token.session
            && let Some(scope) = first(self.sessions.get(session), covers)
        {
            return Some((Selector::Session(session.into()), scope));
        }
        if let Some(sub) = token.sub
            && let Some(scope) = first(self.subs.get(sub), covers)
        {
            return Some((Selector::Sub(sub.into()), scope));
        }
        for hash in token.hashes {
            if let Some(scope) = first(self.hashes.get(hash), covers) {
                return Some((Selector::TokenSha256(*hash), scope));
            }
        }
        for (name, values) in &self.claims {
            let Some(claim) = token.claims.get(name.as_ref()) else {
                continue;
            };
            let hit = claim_values(claim).find_map(|v| {
                let scope = first(values.get(v.as_ref()), covers)?;
                Some((v, scope))
            });
            if let Some((value, scope)) = hit {
                return Some((
                    Selector::Claim {
                        name: name.clone(),
                        value: value.into(),
                    },
                    scope,
                ));
            }
        }
        self.global
            .iter()
            .find(covers)
            .map(|scope| (Selector::Global, scope))
    }
}

/// The string forms a claim can be matched by: a string as is, a number or boolean as its
/// JSON text, and each such element of an array (SPEC §3: "or C is an array containing V").
fn claim_values(claim: &Value) -> Box<dyn Iterator<Item = std::borrow::Cow<'_, str>> + '_> {
    fn scalar(v: &Value) -> Option<std::borrow::Cow<'_, str>> {
        match v {
            Value::String(s) => Some(std::borrow::Cow::Borrowed(s.as_str())),
            Value::Number(n) => Some(std::borrow::Cow::Owned(n.to_string())),
            Value::Bool(b) => Some(std::borrow::Cow::Borrowed(if *b {
                "true"
            } else {
                "false"
            })),
            _ => None,
        }
    }
    match claim {
        Value::Array(items) => Box::new(items.iter().filter_map(scalar)),
        other => Box::new(scalar(other).into_iter()),
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
                let (selector, scope) = table.find(token, now)?;
                Some(Match {
                    id: rule_id(&selector, scope.iss.as_deref()),
                    reason: scope.reason.clone(),
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
