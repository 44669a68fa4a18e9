//! veto's config for a test: the standard sidecar ([`SIDECAR_CONFIG`]), and
//! [`SidecarConfig`] to change the one thing a test is about, instead of a YAML copy per
//! test file that drifts from the others.
//!
//! ```ignore
//! let yaml = SidecarConfig::new()
//!     .admin_token_file("admin-token")
//!     .set("cache", "{max_entries: 8}")
//!     .yaml();
//! VetoDir::new().with_fixture_keys().start(&yaml).await
//! ```
//!
//! A test whose point is a particular hand-written YAML (an invalid one, a field spelled
//! wrong) writes that YAML itself.

use std::path::Path;

use yaml_serde::{Mapping, Value};

use super::tokens::AUDIENCE;

/// One issuer (`https://issuer.test`) with the fixture JWKS and HMAC secret (see
/// [`VetoDir::with_fixture_keys`](super::VetoDir::with_fixture_keys)), `rules/rules.json`
/// as the rules file, and `sub` forwarded as `x-jwt-sub`: a complete sidecar. Paths are
/// relative to the config's dir; `$GRPC_LISTEN` and `$ADMIN_LISTEN` are filled in by
/// [`VetoDir::start`](super::VetoDir::start).
pub const SIDECAR_CONFIG: &str = r#"
grpc: {listen: $GRPC_LISTEN}
admin: {listen: $ADMIN_LISTEN}
issuers:
  - issuer: https://issuer.test
    audiences: [orders-api]
    jwks_file: jwks.json
    hmac_secret_file: hs256.key
revocation:
  file: rules/rules.json
forward:
  claims_to_headers: {sub: x-jwt-sub}
"#;

/// [`SIDECAR_CONFIG`] with changes, each named by its field as veto's own errors name it
/// (`revocation.file`, `issuers[0].jwks_uri`); [`SidecarConfig::yaml`] is the text to start
/// veto with.
#[derive(Clone)]
pub struct SidecarConfig {
    root: Value,
}

impl Default for SidecarConfig {
    fn default() -> Self {
        Self::new()
    }
}

impl SidecarConfig {
    /// The standard sidecar, [`SIDECAR_CONFIG`].
    pub fn new() -> SidecarConfig {
        SidecarConfig {
            root: yaml_serde::from_str(SIDECAR_CONFIG).expect("SIDECAR_CONFIG is YAML"),
        }
    }

    /// `admin.token_file`: the admin API takes writes from whoever sends its token.
    pub fn admin_token_file(self, path: &str) -> SidecarConfig {
        self.put("admin.token_file", Value::from(path))
    }

    /// `revocation.file`, e.g. `rules/rules.json.gz`.
    pub fn rules_file(self, path: &str) -> SidecarConfig {
        self.put("revocation.file", Value::from(path))
    }

    /// `revocation.state_dir`: pushed rules are saved there and survive a restart.
    pub fn state_dir(self, dir: &Path) -> SidecarConfig {
        let dir = dir.to_str().expect("the state dir's path is UTF-8");
        self.put("revocation.state_dir", Value::from(dir))
    }

    /// Forwards `claim` to the app as the header `header`, beside `sub` as `x-jwt-sub`.
    pub fn forward(self, claim: &str, header: &str) -> SidecarConfig {
        self.put(
            &format!("forward.claims_to_headers.{claim}"),
            Value::from(header),
        )
    }

    /// One issuer, `issuer`, with the audience of [`Token::new`](super::Token::new) and no
    /// keys yet: name where its keys come from with [`SidecarConfig::set`], e.g.
    /// `set("issuers[0].jwks_uri", url)` or `set("issuers[0].discovery", "true")`.
    pub fn issuer(self, issuer: &str) -> SidecarConfig {
        let mut entry = Mapping::new();
        entry.insert("issuer".into(), issuer.into());
        entry.insert("audiences".into(), Value::Sequence(vec![AUDIENCE.into()]));
        self.put("issuers", Value::Sequence(vec![Value::Mapping(entry)]))
    }

    /// Sets `field` to `value`, YAML text (`24h`, `true`, `{max_entries: 1024}`), adding
    /// the maps on the way that are not there yet.
    pub fn set(self, field: &str, value: &str) -> SidecarConfig {
        let value = yaml_serde::from_str(value)
            .unwrap_or_else(|e| panic!("the value for {field} is not YAML ({e}): {value}"));
        self.put(field, value)
    }

    /// Removes `field` (e.g. `revocation`: no rules file).
    pub fn without(mut self, field: &str) -> SidecarConfig {
        let (parent, last) = match field.rsplit_once('.') {
            Some((parent, last)) => (slot(&mut self.root, parent), last),
            None => (&mut self.root, field),
        };
        let removed = parent
            .as_mapping_mut()
            .and_then(|map| map.shift_remove(last));
        assert!(removed.is_some(), "the config has no {field} to remove");
        self
    }

    /// The config as YAML, placeholders and all, for [`VetoDir::start`](super::VetoDir::start).
    pub fn yaml(&self) -> String {
        yaml_serde::to_string(&self.root).expect("a YAML value serializes")
    }

    fn put(mut self, field: &str, value: Value) -> SidecarConfig {
        *slot(&mut self.root, field) = value;
        self
    }
}

/// The value at `field` (`a.b[0].c`), adding the maps on the way that are not there yet; a
/// list index must exist.
fn slot<'a>(root: &'a mut Value, field: &str) -> &'a mut Value {
    field.split('.').fold(root, |value, part| {
        let (key, index) = match part.split_once('[') {
            Some((key, index)) => {
                let index = index
                    .strip_suffix(']')
                    .and_then(|i| i.parse::<usize>().ok())
                    .unwrap_or_else(|| panic!("`{part}` of {field} is not `name[N]`"));
                (key, Some(index))
            }
            None => (part, None),
        };
        let value = &mut value[key];
        match index {
            Some(index) => value
                .get_mut(index)
                .unwrap_or_else(|| panic!("the config's {key} has no entry {index}")),
            None => value,
        }
    })
}
