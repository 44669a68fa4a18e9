//! `veto check-rules` and `veto check-config`: the same validation `serve` runs, for CI on
//! ConfigMap changes. Each returns a one-line summary or the error to print.

use std::path::Path;

use crate::admin::auth::AdminAuth;
use crate::config::{Config, ConfigError, NamedBy};
use crate::jwt::jwks;
use crate::revocation::parse::{self, RulesError};

#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Rules(#[from] RulesError),
    /// A file the config names, with the field that names it.
    #[error(transparent)]
    File(#[from] NamedBy),
}

/// Validates a rules file.
pub fn check_rules(file: &Path) -> Result<String, CheckError> {
    let table = parse::load_file(file)?;
    Ok(format!("{}: ok, {} rules", file.display(), table.len()))
}

/// Validates a config file, every key file, the admin token file and the rules file it
/// names.
pub fn check_config(file: &Path) -> Result<String, CheckError> {
    let config = Config::load(file)?;
    let mut keys = 0;
    let mut fetched = 0;
    for (i, issuer) in config.issuers.iter().enumerate() {
        for (kind, file) in jwks::key_files(issuer) {
            keys += jwks::load_file(kind, &file)
                .map_err(|e| config.named(format_args!("issuers[{i}].{}", kind.field()), e))?
                .keys
                .len();
        }
        fetched += usize::from(issuer.remote.is_some());
    }
    if let Some(file) = &config.admin.token_file {
        AdminAuth::load(file).map_err(|e| config.named("admin.token_file", e))?;
    }
    let rules = match &config.revocation.file {
        Some(f) => {
            let table = parse::load_file(f).map_err(|e| config.named("revocation.file", e))?;
            format!(", {} rules", table.len())
        }
        None => String::new(),
    };
    let fetched = if fetched > 0 {
        format!(" ({fetched} issuers fetch their keys at run time)")
    } else {
        String::new()
    };
    Ok(format!(
        "{}: ok, {} issuers, {keys} keys{rules}{fetched}",
        file.display(),
        config.issuers.len()
    ))
}
