//! `veto check-rules` and `veto check-config`: the same validation `serve` runs, for CI on
//! ConfigMap changes. Each returns a one-line summary or the error to print, which lists
//! every problem found, one per line.

use std::path::Path;

use crate::config::{Config, ConfigError};
use crate::load::{self, LoadError};
use crate::revocation::parse::{self, RulesError};

#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Rules(#[from] RulesError),
    /// Files the config names, each with the field that names it.
    #[error(transparent)]
    Files(#[from] LoadError),
}

/// Validates a rules file. Without a config the issuers are unknown, so a rule's `iss`
/// cannot be checked against them (`serve` and `check-config` refuse a rule whose `iss` is
/// not a configured issuer); the summary says so when some rule has one.
pub fn check_rules(file: &Path) -> Result<String, CheckError> {
    let table = parse::load_file(file)?;
    let with_iss = table.rules().filter(|r| r.scope.iss.is_some()).count();
    let unchecked = match with_iss {
        0 => String::new(),
        n => format!(
            " ({} with an iss not checked: check-config checks it against the configured issuers)",
            count(n, "rule", "rules")
        ),
    };
    Ok(format!(
        "{}: ok, {}{unchecked}",
        file.display(),
        count(table.len(), "rule", "rules")
    ))
}

/// Validates a config file and every file it names (key files, CA files, the admin token,
/// the rules file, the saved pushed rules) with the loader `serve` starts from. With
/// `root`, the config's absolute paths are looked up under it (see
/// [`Config::load_under`]).
pub fn check_config(file: &Path, root: Option<&Path>) -> Result<String, CheckError> {
    let config = Config::load_under(file, root)?;
    let loaded = load::load(&config)?;
    let keys: usize = loaded
        .issuers
        .iter()
        .flat_map(|issuer| &issuer.key_files)
        .map(|key_file| key_file.loaded.keys.len())
        .sum();
    let fetched = config
        .issuers
        .iter()
        .filter(|issuer| issuer.remote.is_some())
        .count();
    let rules = match &loaded.rules {
        Some(rules) => format!(", {}", count(rules.table.len(), "rule", "rules")),
        None => String::new(),
    };
    let fetched = match fetched {
        0 => String::new(),
        1 => " (1 issuer fetches its keys at run time)".to_string(),
        n => format!(" ({n} issuers fetch their keys at run time)"),
    };
    Ok(format!(
        "{}: ok, {}, {}{rules}{fetched}",
        file.display(),
        count(config.issuers.len(), "issuer", "issuers"),
        count(keys, "key", "keys"),
    ))
}

/// `1 rule`, `0 rules`, `2 rules`.
fn count(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_say_one_rule_and_two_rules() {
        assert_eq!(count(1, "rule", "rules"), "1 rule");
        assert_eq!(count(0, "rule", "rules"), "0 rules");
        assert_eq!(count(2, "key", "keys"), "2 keys");
    }
}
