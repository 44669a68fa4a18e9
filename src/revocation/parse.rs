//! Rules input (a rules file, or an admin API body) to [`Rule`]s, with every error named by
//! its path (`rules[3].issued_before: not an RFC 3339 time or Unix seconds`).
//!
//! The file is read as a stream: each element of `rules` is validated and inserted into the
//! [`RuleTable`] as soon as it is parsed, so a million-rule file never exists twice in memory
//! (once as raw rules and once as tables). Errors are collected, not returned at the first,
//! because `veto check-rules` prints them all.

use std::collections::VecDeque;
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::token_hash::parse_hex_sha256;
use super::{EARLIEST_TIME, LATEST_TIME, Rule, RuleTable, Scope, Selector, UnixTime};

/// A rules file larger than this is refused before parsing (also after gunzip, so a small
/// gzip bomb cannot expand without bound). A million rules take about 45 MB of JSON.
pub const MAX_RULES_FILE_BYTES: u64 = 64 * 1024 * 1024;

/// Longest selector value or issuer accepted; no real `jti`, `sub` or claim is near it.
const MAX_VALUE_BYTES: usize = 4096;

/// [`Scalar::Other`]'s names for numbers that are not an `i64`.
const FLOAT: &str = "a floating-point number";
const TOO_LARGE: &str = "an integer that is too large";

/// A rules file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    #[error("{}: cannot read: {source}", file.display())]
    Read {
        file: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: larger than {limit} bytes", file.display())]
    TooLarge { file: PathBuf, limit: u64 },
    #[error("{}: {message}", file.display())]
    Syntax { file: PathBuf, message: String },
    #[error("{}", Invalid(file, errors))]
    Invalid { file: PathBuf, errors: Vec<String> },
}

struct Invalid<'a>(&'a Path, &'a [String]);

impl fmt::Display for Invalid<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.1.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{}: {e}", self.0.display())?;
        }
        Ok(())
    }
}

/// How a rule's fields are read: from a file, or from the admin API at a given time.
#[derive(Clone, Copy, Debug)]
pub enum Origin {
    File,
    /// An admin push at `now` (Unix milliseconds): allows `"issued_before": "now"` and
    /// `ttl_seconds`.
    Api {
        now_ms: i64,
    },
}

/// Reads and validates a rules file (`.json`, `.json.gz`, `.yaml`, `.yml`); an `iss` is
/// not checked (see [`parse_bytes`]).
pub fn load_file(file: &Path) -> Result<RuleTable, RulesError> {
    let bytes = read_limited(file)?;
    parse_bytes(&bytes, file, None)
}

/// Reads a file, gunzipping `.gz`, refusing anything over [`MAX_RULES_FILE_BYTES`].
pub fn read_limited(file: &Path) -> Result<Vec<u8>, RulesError> {
    let read_err = |source| RulesError::Read {
        file: file.to_path_buf(),
        source,
    };
    let too_large = || RulesError::TooLarge {
        file: file.to_path_buf(),
        limit: MAX_RULES_FILE_BYTES,
    };
    let f = std::fs::File::open(file).map_err(read_err)?;
    let mut bytes = Vec::new();
    let gz = file.extension().is_some_and(|e| e == "gz");
    let limit = MAX_RULES_FILE_BYTES + 1;
    let n = if gz {
        flate2::read::GzDecoder::new(f)
            .take(limit)
            .read_to_end(&mut bytes)
    } else {
        f.take(limit).read_to_end(&mut bytes)
    }
    .map_err(read_err)?;
    if n as u64 > MAX_RULES_FILE_BYTES {
        return Err(too_large());
    }
    Ok(bytes)
}

/// Parses rules file content; the file name picks the format and names errors. With
/// `issuers` (the configured ones), a rule whose `iss` is none of them is an error, as the
/// admin API refuses such a push: it could never match, and the token it was written for (a
/// typo in `iss`) would stay allowed.
pub fn parse_bytes(
    bytes: &[u8],
    file: &Path,
    issuers: Option<&[String]>,
) -> Result<RuleTable, RulesError> {
    let name = file
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default()
        .trim_end_matches(".gz");
    let yaml = name.ends_with(".yaml") || name.ends_with(".yml");
    let syntax = |message: String| RulesError::Syntax {
        file: file.to_path_buf(),
        message,
    };
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(syntax(
            "the file is empty; write {\"rules\": []} for no rules".into(),
        ));
    }
    let collector = if yaml {
        let mut first = read_yaml(bytes, YamlNumbers::Note(Vec::new()), issuers).map_err(syntax)?;
        match std::mem::replace(&mut first.yaml_numbers, YamlNumbers::Ignore) {
            YamlNumbers::Note(noted) if !noted.is_empty() => {
                drop(first);
                read_yaml(bytes, YamlNumbers::Read(noted.into()), issuers).map_err(syntax)?
            }
            _ => first,
        }
    } else {
        let mut collector = Collector::for_file(bytes.len(), YamlNumbers::Ignore, issuers);
        let mut de = serde_json::Deserializer::from_slice(bytes);
        RulesDocument(&mut collector)
            .deserialize(&mut de)
            .and_then(|()| de.end())
            .map_err(|e| syntax(e.to_string()))?;
        collector
    };
    collector.finish().map_err(|errors| RulesError::Invalid {
        file: file.to_path_buf(),
        errors,
    })
}

/// One read of a YAML rules file (see [`YamlNumbers`] for why there may be two).
fn read_yaml(
    bytes: &[u8],
    yaml_numbers: YamlNumbers,
    issuers: Option<&[String]>,
) -> Result<Collector, String> {
    let mut collector = Collector::for_file(bytes.len(), yaml_numbers, issuers);
    let de = yaml_serde::Deserializer::from_slice(bytes);
    RulesDocument(&mut collector)
        .deserialize(de)
        .map_err(|e| e.to_string())?;
    Ok(collector)
}

/// Selector values a YAML file wrote unquoted and YAML read as numbers.
///
/// YAML reads `+15551234567`, `0x1F`, `0o17` and `0b101` as the numbers 15551234567, 31, 15
/// and 5: the rule would block `sub:15551234567`, and the phone-number subject it was
/// written for would stay allowed (issue 13). Only a number written in plain decimal says
/// what it means, so any other is refused with a request for quotes. The YAML library hands
/// a visitor either a plain scalar's type (`deserialize_any`) or its text as written
/// (`deserialize_str`), never both; so a file with a numeric selector is read twice: the
/// first read notes each one, the second reads their text.
enum YamlNumbers {
    /// JSON, or the admin API (a JSON number is written one way only).
    Ignore,
    /// The first read of a YAML file: notes each selector field read as a number.
    Note(Vec<NotedNumber>),
    /// The second read: the noted fields whose text is read, in file order from the next
    /// rule object on.
    Read(VecDeque<NotedNumber>),
}

/// A selector field that YAML read as a number in the first read.
struct NotedNumber {
    /// Which rule object of the file (counted across every `rules` list).
    rule: usize,
    field: &'static str,
    value: Scalar,
}

/// Validated rules and the errors met so far.
pub struct Collector {
    origin: Origin,
    table: RuleTable,
    errors: Vec<String>,
    saw_rules: bool,
    /// Rule objects read so far, across every `rules` list (numbers [`NotedNumber::rule`]).
    read: usize,
    yaml_numbers: YamlNumbers,
    /// The configured issuers a file rule's `iss` must be one of, when known (see
    /// [`parse_bytes`]).
    issuers: Option<Vec<String>>,
}

impl Collector {
    pub fn new(origin: Origin) -> Collector {
        Collector {
            origin,
            table: RuleTable::default(),
            errors: Vec::new(),
            saw_rules: false,
            read: 0,
            yaml_numbers: YamlNumbers::Ignore,
            issuers: None,
        }
    }

    /// A collector for a file of `len` bytes.
    fn for_file(len: usize, yaml_numbers: YamlNumbers, issuers: Option<&[String]>) -> Collector {
        Collector {
            // A session rule takes about 40 bytes of JSON; sizing the tables for that up
            // front saves the repeated rehashing of a growing million-entry table (the table
            // is shrunk to fit once complete).
            table: RuleTable::with_capacity(len / 40),
            yaml_numbers,
            issuers: issuers.map(<[String]>::to_vec),
            ..Collector::new(Origin::File)
        }
    }

    /// The fields of the next rule object, if there is one, whose text is to be read
    /// (second YAML read only).
    fn next_written_numbers(&self) -> Vec<(&'static str, Scalar)> {
        let YamlNumbers::Read(noted) = &self.yaml_numbers else {
            return Vec::new();
        };
        noted
            .iter()
            .take_while(|n| n.rule == self.read)
            .map(|n| (n.field, n.value.clone()))
            .collect()
    }

    fn add(&mut self, path: &str, raw: RawRule) {
        match &mut self.yaml_numbers {
            YamlNumbers::Ignore => {}
            YamlNumbers::Note(noted) => {
                for (field, value) in raw.text_selectors() {
                    if let Some(value) = value.filter(|v| v.is_number()) {
                        noted.push(NotedNumber {
                            rule: self.read,
                            field,
                            value: value.clone(),
                        });
                    }
                }
            }
            YamlNumbers::Read(noted) => {
                while noted.front().is_some_and(|n| n.rule == self.read) {
                    noted.pop_front();
                }
            }
        }
        self.read += 1;
        match raw.validate(path, self.origin) {
            Ok(rule) => match (&self.issuers, rule.scope.iss.as_deref()) {
                (Some(issuers), Some(iss)) if !issuers.iter().any(|i| i == iss) => {
                    self.errors.push(format!(
                        "{path}.iss: `{iss}` is not a configured issuer, so the rule could never match"
                    ));
                }
                _ => self.table.insert(rule),
            },
            Err(errors) => self.errors.extend(errors),
        }
    }

    fn finish(mut self) -> Result<RuleTable, Vec<String>> {
        if !self.saw_rules {
            self.errors
                .insert(0, "rules: missing; expected {\"rules\": [...]}".into());
        }
        if self.errors.is_empty() {
            self.table.shrink();
            Ok(self.table)
        } else {
            Err(self.errors)
        }
    }
}

/// The top level of a rules file: `{"rules": [...]}` and nothing else.
struct RulesDocument<'a>(&'a mut Collector);

impl<'de> DeserializeSeed<'de> for RulesDocument<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for RulesDocument<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object with a `rules` list")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<String>()? {
            if key == "rules" {
                self.0.saw_rules = true;
                map.next_value_seed(RulesList(self.0))?;
            } else {
                map.next_value::<IgnoredAny>()?;
                self.0
                    .errors
                    .push(format!("{key}: unknown field; the only field is `rules`"));
            }
        }
        Ok(())
    }
}

struct RulesList<'a>(&'a mut Collector);

impl<'de> DeserializeSeed<'de> for RulesList<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for RulesList<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a list of rules")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut i = 0usize;
        loop {
            let written_numbers = self.0.next_written_numbers();
            let Some(raw) = seq.next_element_seed(RawRuleSeed(&written_numbers))? else {
                return Ok(());
            };
            self.0.add(&format!("rules[{i}]"), raw);
            i += 1;
        }
    }
}

/// A JSON/YAML scalar as written, before it is given a meaning.
#[derive(Debug, Clone, PartialEq)]
pub enum Scalar {
    Str(String),
    Int(i64),
    /// Anything else (a float, a bool, null, a list, an object), named for the error.
    Other(&'static str),
}

impl Scalar {
    fn is_number(&self) -> bool {
        matches!(self, Scalar::Int(_) | Scalar::Other(FLOAT | TOO_LARGE))
    }
}

/// A scalar's text as written: for a YAML plain scalar, before YAML gives it a type.
struct WrittenText;

impl<'de> DeserializeSeed<'de> for WrittenText {
    type Value = String;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<String, D::Error> {
        d.deserialize_str(self)
    }
}

impl Visitor<'_> for WrittenText {
    type Value = String;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a scalar")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
        Ok(v.to_owned())
    }
}

impl<'de> serde::Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Scalar, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Scalar;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string or an integer")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Scalar, E> {
                Ok(Scalar::Str(v.to_owned()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Scalar, E> {
                Ok(Scalar::Str(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Scalar, E> {
                Ok(Scalar::Int(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Scalar, E> {
                Ok(i64::try_from(v).map_or(Scalar::Other(TOO_LARGE), Scalar::Int))
            }
            // YAML reads integers beyond 64 bits as 128-bit ones.
            fn visit_i128<E: de::Error>(self, _: i128) -> Result<Scalar, E> {
                Ok(Scalar::Other(TOO_LARGE))
            }
            fn visit_u128<E: de::Error>(self, _: u128) -> Result<Scalar, E> {
                Ok(Scalar::Other(TOO_LARGE))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Scalar, E> {
                Ok(Scalar::Other(FLOAT))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Scalar, E> {
                Ok(Scalar::Other("a boolean"))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Scalar, E> {
                Ok(Scalar::Other("null"))
            }
            fn visit_none<E: de::Error>(self) -> Result<Scalar, E> {
                Ok(Scalar::Other("null"))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Scalar, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Scalar::Other("a list"))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Scalar, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Scalar::Other("an object"))
            }
        }
        d.deserialize_any(V)
    }
}

/// One rule as written, every field optional and loosely typed so that validation can name
/// each problem instead of stopping at the first serde error.
#[derive(Debug, Default, Clone)]
pub struct RawRule {
    pub session: Option<Scalar>,
    pub sub: Option<Scalar>,
    pub token_sha256: Option<Scalar>,
    pub claim: Option<Scalar>,
    pub value: Option<Scalar>,
    pub iss: Option<Scalar>,
    pub issued_before: Option<Scalar>,
    pub expires_at: Option<Scalar>,
    pub reason: Option<Scalar>,
    pub ttl_seconds: Option<Scalar>,
    pub unknown: Vec<String>,
    /// The text as written of selector fields that YAML read as numbers (filled only by the
    /// second read of a YAML file; see [`YamlNumbers`]).
    pub written_numbers: Vec<(&'static str, String)>,
    /// Set when the element was not an object at all (what it was instead).
    pub not_an_object: Option<&'static str>,
}

impl<'de> serde::Deserialize<'de> for RawRule {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<RawRule, D::Error> {
        RawRuleSeed(&[]).deserialize(d)
    }
}

/// Reads a [`RawRule`]; the listed fields (with the value the first read gave them) are
/// read as text, as written (see [`YamlNumbers`]).
struct RawRuleSeed<'a>(&'a [(&'static str, Scalar)]);

impl<'de> DeserializeSeed<'de> for RawRuleSeed<'_> {
    type Value = RawRule;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<RawRule, D::Error> {
        struct V<'a>(&'a [(&'static str, Scalar)]);
        impl<'de> Visitor<'de> for V<'_> {
            type Value = RawRule;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a rule object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawRule, A::Error> {
                let mut r = RawRule::default();
                let mut written_numbers = Vec::new();
                while let Some(key) = map.next_key::<String>()? {
                    let slot = match key.as_str() {
                        "session" => &mut r.session,
                        "sub" => &mut r.sub,
                        "token_sha256" => &mut r.token_sha256,
                        "claim" => &mut r.claim,
                        "value" => &mut r.value,
                        "iss" => &mut r.iss,
                        "issued_before" => &mut r.issued_before,
                        "expires_at" => &mut r.expires_at,
                        "reason" => &mut r.reason,
                        "ttl_seconds" => &mut r.ttl_seconds,
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                            r.unknown.push(key);
                            continue;
                        }
                    };
                    *slot = Some(match self.0.iter().find(|(field, _)| *field == key) {
                        Some((field, value)) => {
                            written_numbers.push((*field, map.next_value_seed(WrittenText)?));
                            value.clone()
                        }
                        None => map.next_value()?,
                    });
                }
                r.written_numbers = written_numbers;
                Ok(r)
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<RawRule, E> {
                Ok(RawRule::not_an_object("a string"))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<RawRule, E> {
                Ok(RawRule::not_an_object("a number"))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<RawRule, E> {
                Ok(RawRule::not_an_object("a number"))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<RawRule, E> {
                Ok(RawRule::not_an_object("a number"))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<RawRule, E> {
                Ok(RawRule::not_an_object("a boolean"))
            }
            fn visit_unit<E: de::Error>(self) -> Result<RawRule, E> {
                Ok(RawRule::not_an_object("null"))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RawRule, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(RawRule::not_an_object("a list"))
            }
        }
        d.deserialize_any(V(self.0))
    }
}

impl RawRule {
    /// The selector fields whose value is text that may be written as a number
    /// (`sub: 12345`).
    fn text_selectors(&self) -> [(&'static str, Option<&Scalar>); 5] {
        [
            ("session", self.session.as_ref()),
            ("sub", self.sub.as_ref()),
            ("token_sha256", self.token_sha256.as_ref()),
            ("claim", self.claim.as_ref()),
            ("value", self.value.as_ref()),
        ]
    }

    fn not_an_object(what: &'static str) -> RawRule {
        RawRule {
            not_an_object: Some(what),
            ..RawRule::default()
        }
    }

    /// Turns a raw rule into a [`Rule`], or every reason it is not one, each prefixed with
    /// `path` (e.g. `rules[3]`).
    pub fn validate(&self, path: &str, origin: Origin) -> Result<Rule, Vec<String>> {
        let mut errors = Vec::new();
        let mut err = |field: &str, msg: String| {
            errors.push(match (path.is_empty(), field.is_empty()) {
                (true, true) => msg,
                (true, false) => format!("{field}: {msg}"),
                (false, true) => format!("{path}: {msg}"),
                (false, false) => format!("{path}.{field}: {msg}"),
            });
        };
        if let Some(what) = self.not_an_object {
            err("", format!("expected a rule object, found {what}"));
            return Err(errors);
        }
        for key in &self.unknown {
            err(
                key,
                "unknown field (expected session, sub, token_sha256, claim, value, iss, issued_before, expires_at, reason)"
                    .into(),
            );
        }

        let text = |field: &str, v: &Option<Scalar>, err: &mut dyn FnMut(&str, String)| {
            let v = v.as_ref()?;
            // Of a key written twice, the last occurrence gives the value, so its text counts.
            let written = self.written_numbers.iter().rev().find(|(f, _)| *f == field);
            if let Some((_, written)) = written {
                let read_as = match v {
                    Scalar::Int(n) if n.to_string() == *written => None,
                    Scalar::Int(n) => Some(format!("the number {n}")),
                    Scalar::Other(what) => Some((*what).to_owned()),
                    Scalar::Str(_) => None,
                };
                if let Some(read_as) = read_as {
                    err(
                        field,
                        format!(
                            "write \"{written}\" in quotes: unquoted, YAML reads it as {read_as}"
                        ),
                    );
                    return None;
                }
            }
            match v {
                Scalar::Str(s) if s.is_empty() => err(field, "must not be empty".into()),
                Scalar::Str(s) if s.len() > MAX_VALUE_BYTES => {
                    err(field, format!("longer than {MAX_VALUE_BYTES} bytes"))
                }
                Scalar::Str(s) => return Some(s.clone()),
                // A numeric `sub` or claim value is common in YAML (`sub: 1234567890`); it
                // matches the same text in the token.
                Scalar::Int(n) if field != "iss" && field != "reason" => {
                    return Some(n.to_string());
                }
                Scalar::Int(_) => err(field, "expected a string, found a number".into()),
                Scalar::Other(what) => err(field, format!("expected a string, found {what}")),
            }
            None
        };

        let session = text("session", &self.session, &mut err);
        let sub = text("sub", &self.sub, &mut err);
        let hash = text("token_sha256", &self.token_sha256, &mut err);
        let claim = text("claim", &self.claim, &mut err);
        let value = text("value", &self.value, &mut err);
        let iss = text("iss", &self.iss, &mut err);
        let reason = self.reason.as_ref().and_then(|r| match r {
            Scalar::Str(s) => Some(s.chars().take(1024).collect::<String>()),
            Scalar::Int(_) | Scalar::Other(_) => {
                err("reason", "expected a string".into());
                None
            }
        });

        let selectors: Vec<&str> = [
            ("session", self.session.is_some()),
            ("sub", self.sub.is_some()),
            ("token_sha256", self.token_sha256.is_some()),
            ("claim", self.claim.is_some() || self.value.is_some()),
        ]
        .into_iter()
        .filter_map(|(name, set)| set.then_some(name))
        .collect();
        if selectors.len() > 1 {
            err(
                "",
                format!(
                    "has {} selectors ({}); a rule has at most one",
                    selectors.len(),
                    selectors.join(", ")
                ),
            );
        }
        if let Some(Scalar::Str(name)) = &self.claim
            && name.contains('=')
        {
            // The rule's id is `claim:C=V`; a `=` in C would make it ambiguous.
            err("claim", "a claim name cannot contain `=`".into());
        }
        if self.claim.is_some() != self.value.is_some() {
            let missing = if self.claim.is_some() {
                "value"
            } else {
                "claim"
            };
            err(
                missing,
                "`claim` and `value` go together; this one is missing".into(),
            );
        }

        let now_ms = match origin {
            Origin::Api { now_ms } => Some(now_ms),
            Origin::File => None,
        };
        let issued_before = self.issued_before.as_ref().and_then(|v| {
            timestamp(v, now_ms)
                .map_err(|m| err("issued_before", m))
                .ok()
        });
        let mut expires_at = self
            .expires_at
            .as_ref()
            .and_then(|v| timestamp(v, None).map_err(|m| err("expires_at", m)).ok());
        if let Some(ttl) = &self.ttl_seconds {
            match (origin, ttl) {
                (Origin::File, _) => err(
                    "ttl_seconds",
                    "only the admin API accepts ttl_seconds; write expires_at in a file".into(),
                ),
                (Origin::Api { .. }, _) if self.expires_at.is_some() => err(
                    "ttl_seconds",
                    "give either ttl_seconds or expires_at, not both".into(),
                ),
                (Origin::Api { now_ms }, Scalar::Int(n)) if *n > 0 => {
                    match real_date(now_ms.div_euclid(1000).saturating_add(*n)) {
                        Ok(at) => expires_at = Some(at),
                        Err(m) => err("ttl_seconds", m),
                    }
                }
                (Origin::Api { .. }, _) => err(
                    "ttl_seconds",
                    "expected a positive whole number of seconds".into(),
                ),
            }
        }

        let selector = if self.session.is_some() {
            session.map(|s| Selector::Session(s.into()))
        } else if self.sub.is_some() {
            sub.map(|s| Selector::Sub(s.into()))
        } else if self.token_sha256.is_some() {
            hash.and_then(|h| match parse_hex_sha256(&h) {
                Some(bytes) => Some(Selector::TokenSha256(bytes)),
                None => {
                    err(
                        "token_sha256",
                        "expected 64 lowercase hex digits (a SHA-256)".into(),
                    );
                    None
                }
            })
        } else if self.claim.is_some() || self.value.is_some() {
            match (claim, value) {
                (Some(name), Some(value)) => Some(Selector::Claim {
                    name: name.into(),
                    value: value.into(),
                }),
                _ => None,
            }
        } else {
            if self.issued_before.is_none() {
                err(
                    "",
                    "a rule without a selector (session, sub, token_sha256, claim) is a global cutoff and must carry issued_before"
                        .into(),
                );
            }
            Some(Selector::Global)
        };

        match selector {
            Some(selector) if errors.is_empty() => Ok(Rule {
                selector,
                scope: Scope::new(
                    iss.map(Arc::from),
                    issued_before,
                    expires_at,
                    reason.map(Into::into),
                ),
            }),
            _ => Err(errors),
        }
    }
}

/// RFC 3339 or integer Unix seconds; `"now"` (rounded up to the next second) when the
/// caller passes the current time in milliseconds.
fn timestamp(v: &Scalar, now_ms: Option<i64>) -> Result<UnixTime, String> {
    const EXPECTED: &str = "not an RFC 3339 time or Unix seconds";
    let t = match v {
        Scalar::Int(n) => Ok(*n),
        Scalar::Str(s) if s == "now" => match now_ms {
            Some(ms) => Ok(ms.div_euclid(1000) + i64::from(ms.rem_euclid(1000) != 0)),
            None => Err(format!(
                "{EXPECTED} (\"now\" is accepted only by the admin API)"
            )),
        },
        // A fractional second rounds up: a cutoff at 33.9 still revokes a token of second 33,
        // and an expiry at 33.9 still applies during second 33.
        Scalar::Str(s) => OffsetDateTime::parse(s, &Rfc3339)
            .map(|t| t.unix_timestamp() + i64::from(t.nanosecond() != 0))
            .or_else(|_| s.parse::<i64>())
            .map_err(|_| EXPECTED.to_string()),
        Scalar::Other(_) => Err(EXPECTED.to_string()),
    }?;
    real_date(t)
}

/// A time within the years 0000 to 9999, or why not: beyond them lie only the edges of
/// `i64`, which a push could use to break arithmetic on rule times.
fn real_date(t: UnixTime) -> Result<UnixTime, String> {
    if (EARLIEST_TIME..=LATEST_TIME).contains(&t) {
        Ok(t)
    } else {
        Err(format!(
            "{t} is not a real date (times must lie between the years 0000 and 9999, Unix seconds {EARLIEST_TIME} to {LATEST_TIME})"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_json(s: &str) -> Result<RuleTable, RulesError> {
        parse_bytes(s.as_bytes(), Path::new("rules.json"), None)
    }

    fn errors(s: &str) -> Vec<String> {
        match parse_json(s) {
            Err(RulesError::Invalid { errors, .. }) => errors,
            other => panic!("expected validation errors, got {other:?}"),
        }
    }

    #[test]
    fn the_spec_example_parses() {
        let t = parse_json(
            r#"{ "rules": [
  { "session": "johndoe", "expires_at": "2026-12-01T00:00:00Z" },
  { "sub": "1234567890" },
  { "sub": "user-42", "issued_before": "2026-11-22T19:27:00Z" },
  { "issued_before": "2026-11-01T00:00:00Z" },
  { "token_sha256": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08" },
  { "claim": "azp", "value": "mobile-app", "issued_before": "2026-11-20T00:00:00Z" },
  { "iss": "https://auth.example.com", "sub": "alice", "reason": "account compromised" }
] }"#,
        )
        .unwrap();
        assert_eq!(t.len(), 7);
    }

    #[test]
    fn yaml_and_gzip_are_read_too() {
        let t = parse_bytes(
            b"rules:\n  - sub: alice\n  - session: s1\n    expires_at: 1900000000\n",
            Path::new("rules.yaml"),
            None,
        )
        .unwrap();
        assert_eq!(t.len(), 2);

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rules.json.gz");
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, br#"{"rules":[{"sub":"a"}]}"#).unwrap();
        std::fs::write(&path, gz.finish().unwrap()).unwrap();
        assert_eq!(load_file(&path).unwrap().len(), 1);
    }

    #[test]
    fn a_bad_timestamp_is_named_by_its_path() {
        let e = errors(
            r#"{"rules":[{"sub":"a"},{"sub":"b"},{"sub":"c"},{"sub":"d","issued_before":"yesterday"}]}"#,
        );
        assert_eq!(
            e,
            vec!["rules[3].issued_before: not an RFC 3339 time or Unix seconds"]
        );
    }

    #[test]
    fn every_error_is_reported_not_just_the_first() {
        let e = errors(
            r#"{"rules":[{"sub":"a","session":"b"},{"colour":"red","sub":"x"},{"claim":"azp"},{},{"token_sha256":"ABC"}, "x"]}"#,
        );
        assert_eq!(e.len(), 6, "{e:#?}");
        assert!(e[0].starts_with("rules[0]: has 2 selectors"));
        assert!(e[1].starts_with("rules[1].colour: unknown field"));
        assert!(e[2].starts_with("rules[2].value:"));
        assert!(e[3].starts_with("rules[3]: a rule without a selector"));
        assert!(e[4].starts_with("rules[4].token_sha256:"));
        assert!(e[5].starts_with("rules[5]: expected a rule object"));
    }

    #[test]
    fn empty_truncated_and_wrongly_shaped_files_are_errors() {
        assert!(matches!(parse_json(""), Err(RulesError::Syntax { .. })));
        assert!(matches!(parse_json("  \n"), Err(RulesError::Syntax { .. })));
        assert!(matches!(
            parse_json(r#"{"rules":[{"sub":"a"},{"su"#),
            Err(RulesError::Syntax { .. })
        ));
        assert!(matches!(parse_json("[]"), Err(RulesError::Syntax { .. })));
        assert!(matches!(
            parse_json(r#"{"rules":[]} trailing"#),
            Err(RulesError::Syntax { .. })
        ));
        assert!(!errors(r#"{"rule":[]}"#).is_empty());
        assert_eq!(parse_json(r#"{"rules":[]}"#).unwrap().len(), 0);
    }

    #[test]
    fn ttl_and_now_are_only_for_the_admin_api() {
        let raw: RawRule =
            serde_json::from_str(r#"{"session":"s","issued_before":"now","ttl_seconds":60}"#)
                .unwrap();
        assert!(raw.validate("rule", Origin::File).is_err());
        let rule = raw
            .validate("rule", Origin::Api { now_ms: 1_000_500 })
            .unwrap();
        assert_eq!(rule.scope.issued_before(), Some(1001));
        assert_eq!(rule.scope.expires_at(), Some(1060));
        let on_the_second = raw
            .validate("rule", Origin::Api { now_ms: 1_000_000 })
            .unwrap();
        assert_eq!(on_the_second.scope.issued_before(), Some(1000));
    }

    #[test]
    fn times_beyond_any_real_date_are_refused_with_the_field_named() {
        // i64::MAX once collided with the internal "no cutoff" marker: the rule became a
        // cutoff-less global rule that the next start refused (issue 13).
        let e = errors(
            r#"{"rules":[{"issued_before":9223372036854775807},{"sub":"a","expires_at":"253402300800"}]}"#,
        );
        assert_eq!(e.len(), 2, "{e:?}");
        assert!(e[0].starts_with("rules[0].issued_before: "), "{e:?}");
        assert!(e[0].contains("9999"), "{e:?}");
        assert!(e[1].starts_with("rules[1].expires_at: "), "{e:?}");
        let last_second = r#"{"rules":[{"issued_before":"9999-12-31T23:59:59Z"}]}"#;
        assert_eq!(parse_json(last_second).unwrap().len(), 1);

        let raw: RawRule =
            serde_json::from_str(r#"{"session":"s","ttl_seconds":9223372036854775807}"#).unwrap();
        let e = raw
            .validate("rule", Origin::Api { now_ms: 1_000 })
            .unwrap_err();
        assert!(e[0].starts_with("rule.ttl_seconds: "), "{e:?}");
    }

    #[test]
    fn a_claim_name_with_an_equals_sign_is_refused() {
        let e = errors(r#"{"rules":[{"claim":"a=b","value":"c"}]}"#);
        assert!(e[0].starts_with("rules[0].claim:"), "{e:?}");
    }

    #[test]
    fn fractional_seconds_round_up() {
        assert_eq!(
            timestamp(&Scalar::Str("1970-01-01T00:00:33.900Z".into()), None),
            Ok(34)
        );
        assert_eq!(
            timestamp(&Scalar::Str("1970-01-01T00:00:33Z".into()), None),
            Ok(33)
        );
    }

    #[test]
    fn timestamps_accept_offsets_and_unix_seconds() {
        assert_eq!(
            timestamp(&Scalar::Str("1970-01-01T01:00:00+01:00".into()), None),
            Ok(0)
        );
        assert_eq!(timestamp(&Scalar::Int(42), None), Ok(42));
        assert_eq!(timestamp(&Scalar::Str("42".into()), None), Ok(42));
        assert!(timestamp(&Scalar::Other("a boolean"), None).is_err());
    }

    fn parse_yaml(s: &str) -> Result<RuleTable, RulesError> {
        parse_bytes(s.as_bytes(), Path::new("rules.yaml"), None)
    }

    fn yaml_errors(s: &str) -> Vec<String> {
        match parse_yaml(s) {
            Err(RulesError::Invalid { errors, .. }) => errors,
            other => panic!("expected validation errors, got {other:?}"),
        }
    }

    fn ids(t: &RuleTable) -> Vec<String> {
        let mut ids: Vec<String> = t.rules().map(|r| r.id()).collect();
        ids.sort();
        ids
    }

    #[test]
    fn a_yaml_selector_that_yaml_reads_as_a_signed_or_radix_number_asks_for_quotes() {
        // Unquoted, YAML reads each of these as a number (`+15551234567` as 15551234567):
        // the rule would block `sub:15551234567` and leave the phone number it meant allowed.
        let e = yaml_errors(
            "rules:
  - sub: +15551234567
  - session: 0x1F
  - claim: code
    value: 0o17
  - sub: fine
    colour: red
  - sub: 0b101
  - token_sha256: -0
  - sub: &phone +4930123456
  - session: *phone
",
        );
        let quote = |path: &str, written: &str, number: &str| {
            format!(
                "{path}: write \"{written}\" in quotes: unquoted, YAML reads it as the number {number}"
            )
        };
        assert_eq!(
            e,
            vec![
                quote("rules[0].sub", "+15551234567", "15551234567"),
                quote("rules[1].session", "0x1F", "31"),
                quote("rules[2].value", "0o17", "15"),
                "rules[3].colour: unknown field (expected session, sub, token_sha256, claim, value, iss, issued_before, expires_at, reason)".to_owned(),
                quote("rules[4].sub", "0b101", "5"),
                quote("rules[5].token_sha256", "-0", "0"),
                quote("rules[6].sub", "+4930123456", "4930123456"),
                quote("rules[7].session", "+4930123456", "4930123456"),
            ]
        );
    }

    #[test]
    fn a_yaml_selector_that_yaml_reads_as_a_float_or_a_huge_integer_asks_for_quotes() {
        let e = yaml_errors(
            "rules:\n  - sub: 1e3\n  - claim: id\n    value: 110169484474386276334\n  - sub: 12.50\n",
        );
        assert_eq!(
            e,
            vec![
                "rules[0].sub: write \"1e3\" in quotes: unquoted, YAML reads it as a floating-point number",
                "rules[1].value: write \"110169484474386276334\" in quotes: unquoted, YAML reads it as an integer that is too large",
                "rules[2].sub: write \"12.50\" in quotes: unquoted, YAML reads it as a floating-point number",
            ]
        );
    }

    #[test]
    fn every_rules_list_of_a_yaml_file_is_checked_for_numbers() {
        // A second `rules` key starts its paths at rules[0] again; the check must still find
        // the field it noted, not the first list's rule 0.
        let e = yaml_errors("rules:\n  - sub: a\nrules:\n  - sub: 0x1F\n");
        assert_eq!(
            e,
            vec![
                "rules[0].sub: write \"0x1F\" in quotes: unquoted, YAML reads it as the number 31"
            ]
        );
    }

    #[test]
    fn quoted_yaml_selectors_are_text_and_plain_decimal_integers_stay_numbers() {
        let t = parse_yaml(
            "rules:
  - sub: \"+15551234567\"
  - session: '0x1F'
  - sub: 007
  - sub: 12345
  - claim: level
    value: -5
  - session: 0
  - sub: 1_000
    issued_before: +1700000000
",
        )
        .unwrap();
        // `007` and `1_000` are text to YAML 1.2, as written; a time may be any integer.
        assert_eq!(
            ids(&t),
            [
                "claim:level=-5",
                "session:0",
                "session:0x1F",
                "sub:+15551234567",
                "sub:007",
                "sub:12345",
                "sub:1_000",
            ]
        );
        let json = parse_json(r#"{"rules":[{"sub":15551234567},{"session":"+1"}]}"#).unwrap();
        assert_eq!(ids(&json), ["session:+1", "sub:15551234567"]);
    }

    #[test]
    fn with_the_configured_issuers_a_rule_of_another_issuer_is_refused_naming_its_path() {
        let issuers = ["https://auth".to_string()];
        for (name, text) in [
            (
                "rules.json",
                r#"{"rules": [{"sub": "a", "iss": "https://auth"}, {"sub": "b", "iss": "https://auht"}]}"#,
            ),
            (
                "rules.yaml",
                "rules:\n  - sub: a\n    iss: https://auth\n  - sub: b\n    iss: https://auht\n",
            ),
        ] {
            let e = parse_bytes(text.as_bytes(), Path::new(name), Some(&issuers)).unwrap_err();
            let RulesError::Invalid { errors, .. } = e else {
                panic!("{name}: expected validation errors, got {e:?}");
            };
            assert_eq!(
                errors,
                [
                    "rules[1].iss: `https://auht` is not a configured issuer, so the rule could never match"
                ],
                "{name}"
            );
            // Without the issuers (check-rules has no config), the file is valid.
            assert_eq!(
                parse_bytes(text.as_bytes(), Path::new(name), None)
                    .unwrap()
                    .len(),
                2
            );
        }
    }
}
