//! Key files: a JWK Set (`jwks_file`) and an HMAC secret (`hmac_secret_file`), read into
//! [`Key`]s, each with the algorithms it may verify, and [`install`]ed into an issuer.
//!
//! A key that cannot be used (unsupported type, `use: enc`, malformed) is skipped with a
//! warning rather than failing the whole set, as identity providers publish such keys beside
//! the signing ones; a file with no usable key at all is an error, so a garbage file never
//! replaces good keys.

use std::path::{Path, PathBuf};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey};
use serde_json::Value;

use super::Key;
use crate::config::IssuerConfig;

/// Key files are small; a larger one is a mistake, not a key set.
const MAX_KEY_FILE_BYTES: u64 = 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{}: cannot read: {source}", file.display())]
    Read {
        file: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {message}", file.display())]
    Invalid { file: PathBuf, message: String },
}

/// The two kinds of key file an issuer can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyFile {
    /// `jwks_file`: a JWK Set.
    Jwks,
    /// `hmac_secret_file`: raw secret bytes.
    Hmac,
}

/// Keys read from one file, and the keys that were skipped and why.
pub struct Loaded {
    pub keys: Vec<Key>,
    pub skipped: Vec<String>,
}

impl KeyFile {
    /// The issuer field that names such a file.
    pub fn field(self) -> &'static str {
        match self {
            KeyFile::Jwks => "jwks_file",
            KeyFile::Hmac => "hmac_secret_file",
        }
    }
}

/// Reads one key file.
pub fn load_file(kind: KeyFile, file: &Path) -> Result<Loaded, KeyError> {
    let bytes = read(file)?;
    match kind {
        KeyFile::Jwks => {
            let (keys, skipped) = parse_jwks(&bytes).map_err(|message| KeyError::Invalid {
                file: file.to_path_buf(),
                message,
            })?;
            Ok(Loaded { keys, skipped })
        }
        KeyFile::Hmac => Ok(Loaded {
            keys: vec![hmac_key(&bytes, file)?],
            skipped: Vec::new(),
        }),
    }
}

/// The key files an issuer names, with their kind.
pub fn key_files(config: &IssuerConfig) -> Vec<(KeyFile, PathBuf)> {
    let jwks = config.jwks_file.iter().map(|f| (KeyFile::Jwks, f.clone()));
    let hmac = config
        .hmac_secret_file
        .iter()
        .map(|f| (KeyFile::Hmac, f.clone()));
    jwks.chain(hmac).collect()
}

/// Installs freshly loaded keys of one file into the issuer.
pub fn install(issuer: &super::Issuer, kind: KeyFile, mut keys: Vec<Key>) {
    match kind {
        KeyFile::Jwks => issuer.store_jwks(keys),
        KeyFile::Hmac => {
            if let Some(key) = keys.pop() {
                issuer.store_hmac(key);
            }
        }
    }
}

fn read(file: &Path) -> Result<Vec<u8>, KeyError> {
    use std::io::Read;
    let err = |source| KeyError::Read {
        file: file.to_path_buf(),
        source,
    };
    let mut bytes = Vec::new();
    std::fs::File::open(file)
        .map_err(err)?
        .take(MAX_KEY_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(err)?;
    if bytes.len() as u64 > MAX_KEY_FILE_BYTES {
        return Err(KeyError::Invalid {
            file: file.to_path_buf(),
            message: format!("larger than {MAX_KEY_FILE_BYTES} bytes"),
        });
    }
    Ok(bytes)
}

/// An HMAC secret: the file's raw bytes, one trailing newline dropped (SPEC §2).
pub fn hmac_key(bytes: &[u8], file: &Path) -> Result<Key, KeyError> {
    let secret = bytes
        .strip_suffix(b"\r\n")
        .or_else(|| bytes.strip_suffix(b"\n"))
        .unwrap_or(bytes);
    let invalid = |message: &str| KeyError::Invalid {
        file: file.to_path_buf(),
        message: message.into(),
    };
    if secret.is_empty() {
        return Err(invalid("the HMAC secret is empty"));
    }
    // A public key used as an HMAC secret lets anyone who has the public key forge tokens
    // (the classic algorithm confusion): refuse anything that looks like key material.
    let text = String::from_utf8_lossy(secret);
    let text = text.trim_start();
    if text.starts_with("-----BEGIN") {
        return Err(invalid(
            "holds a PEM key, not an HMAC secret; put the raw shared secret here",
        ));
    }
    if text.starts_with('{')
        && serde_json::from_str::<Value>(text)
            .is_ok_and(|v| v.get("kty").is_some() || v.get("keys").is_some())
    {
        return Err(invalid(
            "holds a JWK or JWK Set, not an HMAC secret; put the raw shared secret here",
        ));
    }
    Ok(Key {
        kid: None,
        key: DecodingKey::from_secret(secret),
        algorithms: AlgorithmFamily::Hmac.algorithms().to_vec(),
    })
}

/// Parses a JWK Set document, keeping each usable signing key; the error says why the
/// document as a whole is unusable.
pub fn parse_jwks(bytes: &[u8]) -> Result<(Vec<Key>, Vec<String>), String> {
    let doc: Value =
        serde_json::from_slice(bytes).map_err(|e| format!("not a JSON JWK Set: {e}"))?;
    let Some(entries) = doc.get("keys").and_then(Value::as_array) else {
        return Err("not a JWK Set: expected {\"keys\": [...]}".into());
    };
    let mut keys = Vec::new();
    let mut skipped = Vec::new();
    for (i, entry) in entries.iter().enumerate() {
        match signing_key(entry) {
            Ok(key) => {
                if key.kid.is_some() && keys.iter().any(|k: &Key| k.kid == key.kid) {
                    skipped.push(format!("keys[{i}]: duplicate kid; the first one is used"));
                } else {
                    keys.push(key);
                }
            }
            Err(why) => skipped.push(format!("keys[{i}]: {why}")),
        }
    }
    if keys.is_empty() {
        let detail = if skipped.is_empty() {
            "the set is empty".to_string()
        } else {
            skipped.join("; ")
        };
        return Err(format!("no usable signing key ({detail})"));
    }
    Ok((keys, skipped))
}

/// One JWK as a verification key, or why it is not one.
fn signing_key(entry: &Value) -> Result<Key, String> {
    let jwk: Jwk =
        serde_json::from_value(entry.clone()).map_err(|e| format!("malformed JWK: {e}"))?;
    if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
        return Err("use is enc, not sig".into());
    }
    let kid = jwk.common.key_id.clone();
    // The algorithms the key type can verify: the algorithm comes from the key, never from
    // the token (RFC 8725 §3.1).
    let family_algs: Vec<Algorithm> = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => AlgorithmFamily::Rsa.algorithms().to_vec(),
        AlgorithmParameters::EllipticCurve(p) => match p.curve {
            EllipticCurve::P256 => vec![Algorithm::ES256],
            EllipticCurve::P384 => vec![Algorithm::ES384],
            ref other => return Err(format!("curve {other:?} is not supported")),
        },
        AlgorithmParameters::OctetKeyPair(p) => match p.curve {
            EllipticCurve::Ed25519 => vec![Algorithm::EdDSA],
            ref other => return Err(format!("curve {other:?} is not supported")),
        },
        AlgorithmParameters::OctetKey(_) => {
            return Err(
                "symmetric (oct) keys do not belong in a JWK Set; use hmac_secret_file".into(),
            );
        }
        _ => return Err("unsupported key type".into()),
    };
    let algorithms = match jwk.common.key_algorithm {
        None => family_algs,
        Some(declared) => {
            let alg = signature_algorithm(declared)
                .ok_or_else(|| format!("alg {declared:?} is not a signature algorithm"))?;
            if !family_algs.contains(&alg) {
                return Err(format!("alg {declared:?} does not fit the key type"));
            }
            vec![alg]
        }
    };
    let key = DecodingKey::from_jwk(&jwk).map_err(|e| format!("unusable key material: {e}"))?;
    Ok(Key {
        kid,
        key,
        algorithms,
    })
}

fn signature_algorithm(a: KeyAlgorithm) -> Option<Algorithm> {
    Some(match a {
        KeyAlgorithm::HS256 => Algorithm::HS256,
        KeyAlgorithm::HS384 => Algorithm::HS384,
        KeyAlgorithm::HS512 => Algorithm::HS512,
        KeyAlgorithm::ES256 => Algorithm::ES256,
        KeyAlgorithm::ES384 => Algorithm::ES384,
        KeyAlgorithm::RS256 => Algorithm::RS256,
        KeyAlgorithm::RS384 => Algorithm::RS384,
        KeyAlgorithm::RS512 => Algorithm::RS512,
        KeyAlgorithm::PS256 => Algorithm::PS256,
        KeyAlgorithm::PS384 => Algorithm::PS384,
        KeyAlgorithm::PS512 => Algorithm::PS512,
        KeyAlgorithm::EdDSA => Algorithm::EdDSA,
        _ => return None,
    })
}
