//! One step from a [`Config`] to everything it names, read and validated: key files, CA
//! files, the rules file, the pushed rules saved in `state_dir`, the admin token.
//!
//! Start-up is all-or-nothing (SPEC §1): `veto serve` runs [`load`] before a listener opens,
//! so it never serves a half-loaded state, and `veto check-config` runs the same function,
//! so it accepts exactly what `serve` would. This module reads; it creates nothing, starts
//! no task and opens no socket (that wiring is `serve`'s).

use std::path::PathBuf;

use crate::admin::auth::AdminAuth;
use crate::config::{Config, NamedBy};
use crate::jwt::{jwks, remote};
use crate::revocation::{RuleTable, parse};
use crate::sources::file::{Fingerprint, file_fingerprint};
use crate::sources::persist::StateDir;
use crate::sources::reload;

/// Every file of a config that cannot be used, one per entry, each named by the config
/// field that names it; shown one per line (a rules file may add several lines).
#[derive(Debug, thiserror::Error)]
pub struct LoadError(pub Vec<NamedBy>);

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// Everything a config names, read and validated: what `serve` starts from, and what
/// `veto check-config` checks, so the two cannot disagree on what is valid.
pub struct Loaded {
    /// Per issuer of the config, in its order.
    pub issuers: Vec<IssuerFiles>,
    /// `revocation.file`, when configured.
    pub rules: Option<RulesFile>,
    /// The pushed rules saved in `revocation.state_dir` by the last run (empty on a first
    /// start or without a `state_dir`).
    pub pushed: RuleTable,
    /// `admin.token_file`, when configured.
    pub admin: Option<AdminAuth>,
}

/// One issuer's key files and, for fetched keys, its HTTP client (which holds `ca_file`).
pub struct IssuerFiles {
    pub key_files: Vec<KeyFileLoaded>,
    pub client: Option<reqwest::Client>,
}

/// One key file, read: what the reload loop of that file starts from.
pub struct KeyFileLoaded {
    pub kind: jwks::KeyFile,
    pub file: PathBuf,
    /// Taken before the read, so a change racing the read is still seen by the watcher.
    pub fingerprint: Fingerprint,
    pub loaded: jwks::Loaded,
}

/// The rules file, read and valid: what its reload loop starts from.
pub struct RulesFile {
    pub file: PathBuf,
    /// Of exactly the content parsed, so the reload loop applies only content that differs.
    pub fingerprint: Fingerprint,
    pub table: RuleTable,
}

/// Reads every file `config` names: key files, CA files, the rules file, the state file
/// and the admin token. Every file is tried, so the error lists every problem, not the
/// first. Creates nothing: `serve` creates `state_dir` afterwards.
pub fn load(config: &Config) -> Result<Loaded, LoadError> {
    let mut problems = Vec::new();
    let mut issuers = Vec::with_capacity(config.issuers.len());
    for (i, issuer) in config.issuers.iter().enumerate() {
        let mut key_files = Vec::new();
        for (kind, file) in jwks::key_files(issuer) {
            let fingerprint = file_fingerprint(&file);
            match jwks::load_file(kind, &file) {
                Ok(loaded) => key_files.push(KeyFileLoaded {
                    kind,
                    file,
                    fingerprint,
                    loaded,
                }),
                Err(e) => {
                    problems.push(config.named(format_args!("issuers[{i}].{}", kind.field()), e))
                }
            }
        }
        let client = issuer.remote.as_ref().and_then(|remote| {
            // The error names its field (`issuers[0].ca_file`); prefix the config file.
            remote::client(remote, &format!("issuers[{i}]"))
                .map_err(|e| problems.push(NamedBy::new(config.source.display().to_string(), e)))
                .ok()
        });
        issuers.push(IssuerFiles { key_files, client });
    }
    // A rule whose `iss` is not a configured issuer could never match: refused here, as
    // on reload and by the admin API.
    let issuer_names: Vec<String> = config.issuers.iter().map(|i| i.issuer.clone()).collect();
    let rules = config.revocation.file.as_ref().and_then(|file| {
        let (fingerprint, bytes) = reload::read_rules(file);
        match bytes.and_then(|b| parse::parse_bytes(&b, file, Some(&issuer_names))) {
            Ok(table) => Some(RulesFile {
                file: file.clone(),
                fingerprint,
                table,
            }),
            Err(e) => {
                problems.push(config.named("revocation.file", e));
                None
            }
        }
    });
    // A state file that cannot be read stops the start: never a silent start with nothing
    // revoked.
    let pushed = match &config.revocation.state_dir {
        Some(dir) => StateDir::at(dir).load().unwrap_or_else(|e| {
            problems.push(config.named("revocation.state_dir", e));
            RuleTable::default()
        }),
        None => RuleTable::default(),
    };
    let admin = config.admin.token_file.as_ref().and_then(|file| {
        AdminAuth::load(file)
            .map_err(|e| problems.push(config.named("admin.token_file", e)))
            .ok()
    });
    if !problems.is_empty() {
        return Err(LoadError(problems));
    }
    Ok(Loaded {
        issuers,
        rules,
        pushed,
        admin,
    })
}
