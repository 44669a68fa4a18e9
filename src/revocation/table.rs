//! [`RuleTable`]: one immutable layer of rules, keyed by selector, laid out to stay small
//! at a million rules.
//!
//! A rules file can hold a million `session` rules, and the whole process should stay under
//! 100 MiB with them loaded. So the big tables (sessions, subjects, claim values) are
//! [`ArenaMap`]s (keys in one arena, 4-byte index entries), each rule's scope is a 24-byte
//! [`Packed`], and issuers and reasons, which repeat, are interned once per table.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use serde_json::Value;

use super::arena::{ArenaMap, Slotted};
use super::{LATEST_TIME, Rule, Scope, Selector, TokenFacts, UnixTime};

/// A rule's `issued_before` or `expires_at` as a table stores it: a time, or [`Limit::NEVER`]
/// when the rule has none, ordered after every time. So "the later one wins" (SPEC §3 merge)
/// is a plain `max`, and "no cutoff" covers every `iat`.
///
/// 8 bytes where an `Option<i64>` takes 16 (a million rules hold two each). `NEVER` cannot
/// collide with a time a rule names: rules are parsed only up to [`LATEST_TIME`], and
/// [`Limit::at`] caps any later time there.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Limit(UnixTime);

impl Limit {
    const NEVER: Limit = Limit(UnixTime::MAX);

    fn at(t: Option<UnixTime>) -> Limit {
        t.map_or(Limit::NEVER, |t| Limit(t.min(LATEST_TIME)))
    }

    fn time(self) -> Option<UnixTime> {
        (self != Limit::NEVER).then_some(self.0)
    }

    /// True when `t` is strictly before this limit.
    fn after(self, t: UnixTime) -> bool {
        self.time().is_none_or(|l| t < l)
    }
}

/// A rule's scope as a table stores it: issuer and reason as interned string numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Packed {
    /// 0 for none, else 1 + index into the table's strings.
    iss: u32,
    reason: u32,
    issued_before: Limit,
    expires_at: Limit,
}

impl Packed {
    fn is_live(&self, now: UnixTime) -> bool {
        self.expires_at.after(now)
    }

    /// SPEC §3: a token with no `iat` counts as issued before any cutoff.
    fn covers(
        &self,
        strings: &Interner,
        token_iss: &str,
        iat: Option<UnixTime>,
        now: UnixTime,
    ) -> bool {
        self.is_live(now)
            && (self.iss == 0 || strings.get(self.iss).is_some_and(|i| **i == *token_iss))
            && iat.is_none_or(|iat| self.issued_before.after(iat))
    }

    /// SPEC §3: two rules with one id merge, the later `issued_before` and `expires_at` win.
    fn merge(&mut self, other: Packed) {
        self.issued_before = self.issued_before.max(other.issued_before);
        self.expires_at = self.expires_at.max(other.expires_at);
        if other.reason != 0 {
            self.reason = other.reason;
        }
    }

    /// With `max_token_lifetime`, a cutoff is moot once every token it could catch has
    /// expired on its own.
    fn moot_after(&self, max_token_lifetime: Option<UnixTime>) -> Option<UnixTime> {
        let lifetime = max_token_lifetime?;
        self.issued_before
            .time()
            .map(|t| t.saturating_add(lifetime))
    }

    fn ends_at(&self, max_token_lifetime: Option<UnixTime>) -> Option<UnixTime> {
        [self.expires_at.time(), self.moot_after(max_token_lifetime)]
            .into_iter()
            .flatten()
            .min()
    }
}

/// Strings that repeat across rules (issuers, reasons), stored once.
#[derive(Clone, Debug, Default)]
struct Interner {
    strings: Vec<Arc<str>>,
    numbers: HashMap<Arc<str>, u32>,
}

impl Interner {
    fn intern(&mut self, s: Option<&str>) -> u32 {
        let Some(s) = s else { return 0 };
        if let Some(n) = self.numbers.get(s) {
            return *n;
        }
        let arc: Arc<str> = Arc::from(s);
        self.strings.push(arc.clone());
        // A table holds far fewer than 4 billion distinct issuers and reasons.
        let n = u32::try_from(self.strings.len()).unwrap_or(u32::MAX);
        self.numbers.insert(arc, n);
        n
    }

    fn get(&self, n: u32) -> Option<&Arc<str>> {
        let i = usize::try_from(n).ok()?.checked_sub(1)?;
        self.strings.get(i)
    }
}

impl Slotted for Packed {
    /// Scopes of one key merge when they are for the same issuer.
    fn slot(&self) -> u32 {
        self.iss
    }

    fn merge(&mut self, other: Packed) {
        Packed::merge(self, other);
    }
}

/// Keys that are strings (sessions, subjects, claim values), each with its scopes.
type StrTable = ArenaMap<Packed>;

/// One immutable layer of rules, keyed by selector.
///
/// A key holds one scope per issuer it was written for (usually exactly one), because
/// rules with the same id merge.
#[derive(Debug, Clone)]
pub struct RuleTable {
    strings: Interner,
    sessions: StrTable,
    subs: StrTable,
    hashes: HashMap<[u8; 32], Vec<Packed>>,
    /// claim name -> claim values and their scopes.
    claims: HashMap<Box<str>, StrTable>,
    global: Vec<Packed>,
    len: usize,
    /// The earliest `expires_at` and `issued_before` of any rule, kept up to date on insert,
    /// so the expiry timer never scans a million rules. A merge or removal can leave them
    /// earlier than the truth, which costs at most one needless prune (that rebuilds them
    /// exactly), never a missed expiry.
    min_expires_at: Limit,
    min_issued_before: Limit,
}

impl Default for RuleTable {
    fn default() -> RuleTable {
        RuleTable {
            strings: Interner::default(),
            sessions: StrTable::default(),
            subs: StrTable::default(),
            hashes: HashMap::new(),
            claims: HashMap::new(),
            global: Vec::new(),
            len: 0,
            min_expires_at: Limit::NEVER,
            min_issued_before: Limit::NEVER,
        }
    }
}

impl RuleTable {
    /// An empty table sized for about `rules` session rules (the common bulk), so building a
    /// large file does not rehash its tables over and over.
    pub fn with_capacity(rules: usize) -> RuleTable {
        let mut t = RuleTable::default();
        t.sessions.reserve(rules);
        t
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// True when a lookup needs the token's SHA-256 and its ECDSA twin.
    pub fn has_token_hashes(&self) -> bool {
        !self.hashes.is_empty()
    }

    fn pack(&mut self, scope: &Scope) -> Packed {
        Packed {
            iss: self.strings.intern(scope.iss.as_deref()),
            reason: self.strings.intern(scope.reason.as_deref()),
            issued_before: Limit::at(scope.issued_before()),
            expires_at: Limit::at(scope.expires_at()),
        }
    }

    fn unpack(&self, p: &Packed) -> Scope {
        Scope::new(
            self.strings.get(p.iss).cloned(),
            p.issued_before.time(),
            p.expires_at.time(),
            self.strings.get(p.reason).map(|r| Box::from(&**r)),
        )
    }

    /// The interned number of an issuer, without adding it: None when no rule names it.
    fn iss_number(&self, iss: Option<&str>) -> Option<u32> {
        match iss {
            None => Some(0),
            Some(i) => self.strings.numbers.get(i).copied(),
        }
    }

    /// Adds a rule, merging it with an existing rule of the same id.
    pub fn insert(&mut self, rule: Rule) {
        let packed = self.pack(&rule.scope);
        self.min_expires_at = self.min_expires_at.min(packed.expires_at);
        self.min_issued_before = self.min_issued_before.min(packed.issued_before);
        let added = match &rule.selector {
            Selector::Session(s) => self.sessions.insert(s, packed),
            Selector::Sub(s) => self.subs.insert(s, packed),
            Selector::Claim { name, value } => self
                .claims
                .entry(name.clone())
                .or_default()
                .insert(value, packed),
            Selector::TokenSha256(h) => push_or_merge(self.hashes.entry(*h).or_default(), packed),
            Selector::Global => push_or_merge(&mut self.global, packed),
        };
        if added {
            self.len += 1;
        }
    }

    /// Looks a rule up by its selector and issuer.
    pub fn get(&self, selector: &Selector, iss: Option<&str>) -> Option<Rule> {
        self.iss_number(iss)?;
        self.by_selector(selector)
            .into_iter()
            .find(|r| r.scope.iss.as_deref() == iss)
    }

    /// Every rule with this selector, whatever its issuer.
    pub fn by_selector(&self, selector: &Selector) -> Vec<Rule> {
        let rule = |p: &Packed| Rule {
            selector: selector.clone(),
            scope: self.unpack(p),
        };
        match selector {
            Selector::Session(s) => self.sessions.get(s).map(rule).collect(),
            Selector::Sub(s) => self.subs.get(s).map(rule).collect(),
            Selector::Claim { name, value } => match self.claims.get(name) {
                Some(t) => t.get(value).map(rule).collect(),
                None => Vec::new(),
            },
            Selector::TokenSha256(h) => {
                self.hashes.get(h).into_iter().flatten().map(rule).collect()
            }
            Selector::Global => self.global.iter().map(rule).collect(),
        }
    }

    /// Removes a rule; true when it was there.
    pub fn remove(&mut self, selector: &Selector, iss: Option<&str>) -> bool {
        let Some(n) = self.iss_number(iss) else {
            return false;
        };
        let removed = match selector {
            Selector::Session(s) => self.sessions.remove(s, n),
            Selector::Sub(s) => self.subs.remove(s, n),
            Selector::Claim { name, value } => match self.claims.get_mut(name) {
                Some(t) => {
                    let removed = t.remove(value, n);
                    if t.is_empty() {
                        self.claims.remove(name);
                    }
                    removed
                }
                None => false,
            },
            Selector::TokenSha256(h) => match self.hashes.get_mut(h) {
                Some(v) => {
                    let removed = take(v, n);
                    if v.is_empty() {
                        self.hashes.remove(h);
                    }
                    removed
                }
                None => false,
            },
            Selector::Global => take(&mut self.global, n),
        };
        if removed {
            self.len -= 1;
        }
        removed
    }

    /// Every rule, in no particular order.
    pub fn rules(&self) -> impl Iterator<Item = Rule> + '_ {
        let sessions = self.sessions.entries().map(|(k, p)| Rule {
            selector: Selector::Session(k.into()),
            scope: self.unpack(p),
        });
        let subs = self.subs.entries().map(|(k, p)| Rule {
            selector: Selector::Sub(k.into()),
            scope: self.unpack(p),
        });
        let claims = self.claims.iter().flat_map(move |(name, t)| {
            t.entries().map(move |(value, p)| Rule {
                selector: Selector::Claim {
                    name: name.clone(),
                    value: value.into(),
                },
                scope: self.unpack(p),
            })
        });
        let hashes = self.hashes.iter().flat_map(move |(h, v)| {
            v.iter().map(move |p| Rule {
                selector: Selector::TokenSha256(*h),
                scope: self.unpack(p),
            })
        });
        let global = self.global.iter().map(move |p| Rule {
            selector: Selector::Global,
            scope: self.unpack(p),
        });
        sessions
            .chain(subs)
            .chain(claims)
            .chain(hashes)
            .chain(global)
    }

    /// A copy without the rules that can no longer match anything at `now`: expired ones,
    /// and (with `max_token_lifetime`) cutoffs older than the longest-lived token.
    pub fn pruned(&self, now: UnixTime, max_token_lifetime: Option<UnixTime>) -> RuleTable {
        let mut out = RuleTable::default();
        for rule in self.rules() {
            let moot = rule
                .scope
                .issued_before()
                .zip(max_token_lifetime)
                .is_some_and(|(t, l)| t.saturating_add(l) <= now);
            if rule.scope.is_live(now) && !moot {
                out.insert(rule);
            }
        }
        out.shrink();
        out
    }

    /// Gives back spare capacity once a table is complete (after parsing a file).
    pub fn shrink(&mut self) {
        self.sessions.shrink();
        self.subs.shrink();
        for t in self.claims.values_mut() {
            t.shrink();
        }
    }

    /// True when some rule of this table has expired or become moot at `now`.
    pub fn has_prunable(&self, now: UnixTime, max_token_lifetime: Option<UnixTime>) -> bool {
        self.next_expiry(max_token_lifetime)
            .is_some_and(|t| t <= now)
    }

    /// The earliest instant a rule of this table stops applying, for the expiry timer.
    pub fn next_expiry(&self, max_token_lifetime: Option<UnixTime>) -> Option<UnixTime> {
        Packed {
            iss: 0,
            reason: 0,
            issued_before: self.min_issued_before,
            expires_at: self.min_expires_at,
        }
        .ends_at(max_token_lifetime)
    }

    /// The first rule that revokes this token, if any.
    pub fn find(&self, token: &TokenFacts<'_>, now: UnixTime) -> Option<Rule> {
        let covers = |p: &&Packed| p.covers(&self.strings, token.iss, token.iat, now);
        let hit = |selector: Selector, p: &Packed| Rule {
            selector,
            scope: self.unpack(p),
        };
        if let Some(session) = token.session
            && let Some(p) = self.sessions.get(session).find(covers)
        {
            return Some(hit(Selector::Session(session.into()), p));
        }
        if let Some(sub) = token.sub
            && let Some(p) = self.subs.get(sub).find(covers)
        {
            return Some(hit(Selector::Sub(sub.into()), p));
        }
        for h in token.hashes {
            if let Some(p) = self.hashes.get(h).into_iter().flatten().find(covers) {
                return Some(hit(Selector::TokenSha256(*h), p));
            }
        }
        for (name, table) in &self.claims {
            let Some(claim) = token.claims.get(name.as_ref()) else {
                continue;
            };
            for value in claim_values(claim) {
                if let Some(p) = table.get(&value).find(covers) {
                    let selector = Selector::Claim {
                        name: name.clone(),
                        value: value.as_ref().into(),
                    };
                    return Some(hit(selector, p));
                }
            }
        }
        self.global
            .iter()
            .find(covers)
            .map(|p| hit(Selector::Global, p))
    }
}

fn push_or_merge(scopes: &mut Vec<Packed>, p: Packed) -> bool {
    match scopes.iter_mut().find(|s| s.iss == p.iss) {
        Some(existing) => {
            existing.merge(p);
            false
        }
        None => {
            scopes.push(p);
            true
        }
    }
}

fn take(scopes: &mut Vec<Packed>, iss: u32) -> bool {
    let before = scopes.len();
    scopes.retain(|s| s.iss != iss);
    scopes.len() != before
}

/// The string forms a claim can be matched by: a string as is, a number or boolean as its
/// JSON text, and each such element of an array (SPEC §3: "or C is an array containing V").
fn claim_values(claim: &Value) -> Box<dyn Iterator<Item = Cow<'_, str>> + '_> {
    match claim {
        Value::Array(items) => Box::new(items.iter().filter_map(claim_text)),
        other => Box::new(claim_text(other).into_iter()),
    }
}

/// A scalar claim as the text a rule names it by: a string as is, a number or boolean as
/// its JSON text (so `sub: 12345` matches the rule `sub: 12345`); other JSON has none. A
/// float that is a whole number is the integer's text: JSON does not tell `12345.0` from
/// `12345` (RFC 8259 §6), and issuers that write every number as a float exist.
pub fn claim_text(v: &Value) -> Option<Cow<'_, str>> {
    /// 2^63: below it every whole float converts to `i64` exactly.
    const I64_RANGE: f64 = 9_223_372_036_854_775_808.0;
    match v {
        Value::String(s) => Some(Cow::Borrowed(s.as_str())),
        Value::Number(n) => match n.as_f64() {
            Some(f) if n.is_f64() && f.fract() == 0.0 && f.abs() < I64_RANGE => {
                Some(Cow::Owned((f as i64).to_string()))
            }
            _ => Some(Cow::Owned(n.to_string())),
        },
        Value::Bool(b) => Some(Cow::Borrowed(if *b { "true" } else { "false" })),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sub(s: &str, iss: Option<&str>) -> Rule {
        Rule {
            selector: Selector::Sub(s.into()),
            scope: Scope::new(iss.map(Arc::from), None, None, None),
        }
    }

    #[test]
    fn removing_keys_keeps_every_other_key_findable() {
        let mut t = RuleTable::default();
        for i in 0..1000 {
            t.insert(sub(&format!("u{i}"), None));
        }
        t.insert(sub("u7", Some("iss-a")));
        for i in (0..1000).step_by(3) {
            assert!(t.remove(&Selector::Sub(format!("u{i}").into()), None));
        }
        for i in 0..1000 {
            let found = t
                .get(&Selector::Sub(format!("u{i}").into()), None)
                .is_some();
            assert_eq!(found, i % 3 != 0, "u{i}");
        }
        assert!(t.get(&Selector::Sub("u7".into()), Some("iss-a")).is_some());
        assert_eq!(t.len(), 1000 - 334 + 1);
        assert_eq!(t.rules().count(), t.len());
        let mut shrunk = t.clone();
        shrunk.shrink();
        assert!(shrunk.get(&Selector::Sub("u1".into()), None).is_some());
    }

    #[test]
    fn a_key_with_two_issuers_survives_removing_either() {
        let mut t = RuleTable::default();
        t.insert(sub("u", None));
        t.insert(sub("u", Some("a")));
        t.insert(sub("u", Some("b")));
        assert_eq!(t.len(), 3);
        assert!(t.remove(&Selector::Sub("u".into()), None));
        assert!(t.get(&Selector::Sub("u".into()), Some("a")).is_some());
        assert!(t.get(&Selector::Sub("u".into()), Some("b")).is_some());
        assert!(t.remove(&Selector::Sub("u".into()), Some("b")));
        assert!(!t.remove(&Selector::Sub("u".into()), Some("c")));
        assert_eq!(t.by_selector(&Selector::Sub("u".into())).len(), 1);
    }
}
