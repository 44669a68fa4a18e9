//! The admin bearer token: read from `admin.token_file`, re-read when it changes (a rotated
//! Kubernetes Secret), compared in constant time.
//!
//! Only the token's SHA-256 is kept. A presented token is hashed and the two digests are
//! compared with `subtle`, so neither the comparison time nor the length of the secret
//! leaks. Logs name a caller by a hash prefix of the token they used, never the token.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use subtle::ConstantTimeEq;

use crate::revocation::token_hash::sha256;
use crate::sources::file::{Changes, file_fingerprint};

#[derive(Debug, thiserror::Error)]
pub enum TokenFileError {
    #[error("{}: cannot read the admin token: {source}", file.display())]
    Read {
        file: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: the admin token file is empty", file.display())]
    Empty { file: PathBuf },
}

/// The accepted admin token, by digest.
#[derive(Clone)]
pub struct AdminToken {
    digest: [u8; 32],
}

/// What a request's credentials amount to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// The right token; the string is a hash prefix for the audit log.
    Admin(String),
    /// No token, another scheme, or the wrong token; a hash prefix of the bearer token
    /// presented, if any, for the audit log (repeated tries with one token read alike).
    Unauthenticated { presented: Option<String> },
    /// No `admin.token_file` is configured: writes are disabled.
    NoTokenConfigured,
}

/// The current admin token, if one is configured, swapped whole on rotation.
#[derive(Clone)]
pub struct AdminAuth {
    token: Arc<ArcSwapOption<AdminToken>>,
    configured: bool,
}

impl AdminAuth {
    /// No token file: the rules API is read-only.
    pub fn disabled() -> AdminAuth {
        AdminAuth {
            token: Arc::new(ArcSwapOption::empty()),
            configured: false,
        }
    }

    /// Reads the token file; an unreadable or empty file is an error.
    pub fn load(file: &Path) -> Result<AdminAuth, TokenFileError> {
        let token = read_token(file)?;
        Ok(AdminAuth {
            token: Arc::new(ArcSwapOption::from_pointee(token)),
            configured: true,
        })
    }

    pub fn is_configured(&self) -> bool {
        self.configured
    }

    /// Judges an `Authorization` header value.
    pub fn caller(&self, authorization: Option<&[u8]>) -> Caller {
        if !self.configured {
            return Caller::NoTokenConfigured;
        }
        let presented = authorization
            .and_then(|v| std::str::from_utf8(v).ok())
            .and_then(|v| v.trim().split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim());
        let Some(presented) = presented else {
            return Caller::Unauthenticated { presented: None };
        };
        let digest = sha256(presented);
        let prefix = digest[..4].iter().map(|b| format!("{b:02x}")).collect();
        match self.token.load_full() {
            Some(current) if bool::from(digest.ct_eq(&current.digest)) => Caller::Admin(prefix),
            _ => Caller::Unauthenticated {
                presented: Some(prefix),
            },
        }
    }

    /// Follows the token file: a rotated token replaces the old one; an unreadable or empty
    /// file keeps the last good token.
    pub async fn follow(self, file: PathBuf, mut changes: Changes) {
        let mut last = file_fingerprint(&file);
        loop {
            changes.next_content(&file, &mut last).await;
            match read_token(&file) {
                Ok(token) => {
                    self.token.store(Some(Arc::new(token)));
                    tracing::info!(file = %file.display(), "admin token rotated");
                }
                Err(error) => tracing::error!(
                    %error,
                    "admin token file rejected; the last good token stays in force"
                ),
            }
        }
    }
}

/// A Kubernetes Secret or `echo` leaves a trailing newline; surrounding whitespace is never
/// part of a bearer token (RFC 6750 §2.1 `b64token`).
fn read_token(file: &Path) -> Result<AdminToken, TokenFileError> {
    let bytes = std::fs::read(file).map_err(|source| TokenFileError::Read {
        file: file.to_path_buf(),
        source,
    })?;
    let text = String::from_utf8_lossy(&bytes);
    let token = text.trim();
    if token.is_empty() {
        return Err(TokenFileError::Empty {
            file: file.to_path_buf(),
        });
    }
    Ok(AdminToken {
        digest: sha256(token),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_right_bearer_token_is_an_admin() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("token");
        std::fs::write(&f, "s3cret\n").unwrap();
        let auth = AdminAuth::load(&f).unwrap();
        assert!(matches!(
            auth.caller(Some(b"Bearer s3cret")),
            Caller::Admin(_)
        ));
        assert!(matches!(
            auth.caller(Some(b"bearer s3cret")),
            Caller::Admin(_)
        ));
        let wrong = auth.caller(Some(b"Bearer s3cre"));
        let Caller::Unauthenticated {
            presented: Some(prefix),
        } = &wrong
        else {
            panic!("a wrong token is unauthenticated: {wrong:?}");
        };
        assert_eq!(prefix.len(), 8);
        assert!(!prefix.contains("s3cre"));
        assert_eq!(
            auth.caller(Some(b"Basic s3cret")),
            Caller::Unauthenticated { presented: None }
        );
        assert_eq!(
            auth.caller(None),
            Caller::Unauthenticated { presented: None }
        );
        assert_eq!(
            AdminAuth::disabled().caller(Some(b"Bearer s3cret")),
            Caller::NoTokenConfigured
        );
        std::fs::write(&f, "\n").unwrap();
        assert!(AdminAuth::load(&f).is_err());
    }
}
