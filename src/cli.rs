//! The command line (SPEC §1): `serve`, `check-rules`, `check-config`, `token`.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "veto",
    version,
    about = "Revocable JWTs for Envoy: an ext_authz sidecar"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the sidecar.
    Serve {
        /// The config file (YAML).
        #[arg(long, env = "VETO_CONFIG")]
        config: PathBuf,
    },
    /// Validate a rules file; print a summary, or every error with its path.
    CheckRules { file: PathBuf },
    /// Validate a config file and every file it names (keys, admin token, rules, saved
    /// pushed rules); print a summary, or every error with its file and field.
    CheckConfig {
        file: PathBuf,
        /// Look up the config's absolute paths under DIR (e.g. a copy of the files a pod
        /// mounts at /etc/veto); relative paths still resolve against the config's
        /// directory.
        #[arg(long, value_name = "DIR")]
        root: Option<PathBuf>,
    },
    /// Mint a signed JWT (for demos and tests) and print it.
    Token {
        /// Private key: PEM (PKCS#8, PKCS#1 or SEC1), a private JWK, or for HS* the secret.
        #[arg(long)]
        key: PathBuf,
        /// RS256/384/512, PS256/384/512, ES256/384, EdDSA or HS256/384/512.
        #[arg(long)]
        alg: String,
        /// Key id for the header (default: the JWK's kid, if any).
        #[arg(long)]
        kid: Option<String>,
        #[arg(long)]
        iss: Option<String>,
        #[arg(long)]
        sub: Option<String>,
        #[arg(long)]
        aud: Option<String>,
        /// Lifetime: 30s, 15m, 1h, or seconds.
        #[arg(long, default_value = "1h")]
        ttl: String,
        /// Extra claim NAME=VALUE (repeatable); JSON values such as 42 or ["a","b"] are kept as JSON.
        #[arg(long = "claim")]
        claims: Vec<String>,
    },
}
