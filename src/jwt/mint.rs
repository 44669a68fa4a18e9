//! `veto token`: mint a signed JWT from a PEM private key, a private JWK or an HMAC secret,
//! for the quickstart and for tests. Not part of the request path.

use std::path::{Path, PathBuf};
use std::time::Duration;

use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, ECDSA_P384_SHA384_FIXED_SIGNING};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, AlgorithmFamily, EncodingKey, Header};
use serde_json::{Map, Value};

#[derive(Debug, thiserror::Error)]
pub enum MintError {
    #[error("{}: cannot read: {source}", file.display())]
    Read {
        file: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {message}", file.display())]
    Key { file: PathBuf, message: String },
    #[error("--claim {0}: expected NAME=VALUE")]
    Claim(String),
    #[error("cannot sign: {0}")]
    Sign(#[from] jsonwebtoken::errors::Error),
}

/// What to put in the token.
pub struct TokenSpec {
    pub key_file: PathBuf,
    pub alg: Algorithm,
    pub kid: Option<String>,
    pub iss: Option<String>,
    pub sub: Option<String>,
    pub aud: Option<String>,
    pub ttl: Duration,
    /// `name=value`; a value that parses as JSON (a number, `true`, a list) is used as such.
    pub claims: Vec<String>,
    pub now: i64,
}

/// Signs a token as described.
pub fn mint(spec: &TokenSpec) -> Result<String, MintError> {
    let bytes = std::fs::read(&spec.key_file).map_err(|source| MintError::Read {
        file: spec.key_file.clone(),
        source,
    })?;
    let (key, jwk_kid) = encoding_key(&bytes, spec.alg, &spec.key_file)?;
    let mut claims = Map::new();
    let mut put = |k: &str, v: Option<&String>| {
        if let Some(v) = v {
            claims.insert(k.into(), Value::String(v.clone()));
        }
    };
    put("iss", spec.iss.as_ref());
    put("sub", spec.sub.as_ref());
    put("aud", spec.aud.as_ref());
    let ttl = crate::clock::seconds(spec.ttl);
    claims.insert("iat".into(), spec.now.into());
    claims.insert("exp".into(), spec.now.saturating_add(ttl).into());
    claims.insert("jti".into(), Value::String(random_id()));
    for c in &spec.claims {
        let (k, v) = c
            .split_once('=')
            .ok_or_else(|| MintError::Claim(c.clone()))?;
        if k.is_empty() {
            return Err(MintError::Claim(c.clone()));
        }
        let value = serde_json::from_str(v).unwrap_or_else(|_| Value::String(v.into()));
        claims.insert(k.into(), value);
    }
    let mut header = Header::new(spec.alg);
    header.kid = spec.kid.clone().or(jwk_kid);
    Ok(jsonwebtoken::encode(&header, &claims, &key)?)
}

/// 128 random bits, base64url: a `jti` no other token shares.
fn random_id() -> String {
    let mut bytes = [0u8; 16];
    // The system RNG failing is not something a CLI can recover from; an all-zero jti
    // would still be a valid (if shared) session id, so fall back to it rather than abort.
    let _ = aws_lc_rs::rand::fill(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Reads a signing key for `alg` from PEM, a private JWK, or (for HS*) raw secret bytes.
fn encoding_key(
    bytes: &[u8],
    alg: Algorithm,
    file: &Path,
) -> Result<(EncodingKey, Option<String>), MintError> {
    let bad = |message: String| MintError::Key {
        file: file.to_path_buf(),
        message,
    };
    let family = alg.family();
    let text = String::from_utf8_lossy(bytes);
    if text.trim_start().starts_with('{') {
        let jwk: Value =
            serde_json::from_slice(bytes).map_err(|e| bad(format!("not a JSON JWK: {e}")))?;
        let kid = jwk.get("kid").and_then(Value::as_str).map(str::to_owned);
        return Ok((jwk_key(&jwk, alg).map_err(bad)?, kid));
    }
    let key = match family {
        AlgorithmFamily::Hmac => {
            let secret = bytes
                .strip_suffix(b"\r\n")
                .or_else(|| bytes.strip_suffix(b"\n"))
                .unwrap_or(bytes);
            if secret.is_empty() {
                return Err(bad("the HMAC secret is empty".into()));
            }
            // A PEM key passed for an HS* algorithm is a mistake (and the classic algorithm
            // confusion): never sign with a public or private key's text as the secret.
            if text.trim_start().starts_with("-----BEGIN") {
                return Err(bad(format!(
                    "is a PEM key, not an HMAC secret; {alg:?} needs the raw secret file"
                )));
            }
            return Ok((EncodingKey::from_secret(secret), None));
        }
        AlgorithmFamily::Rsa => EncodingKey::from_rsa_pem(bytes),
        AlgorithmFamily::Ec => EncodingKey::from_ec_pem(bytes),
        AlgorithmFamily::Ed => EncodingKey::from_ed_pem(bytes),
    }
    .map_err(|e| bad(format!("not a {family:?} private key in PEM form: {e}")))?;
    Ok((key, None))
}

/// A private JWK (RFC 7518 §6) as a signing key.
fn jwk_key(jwk: &Value, alg: Algorithm) -> Result<EncodingKey, String> {
    let field = |name: &str| -> Result<Vec<u8>, String> {
        let s = jwk
            .get(name)
            .and_then(Value::as_str)
            .ok_or_else(|| format!("the JWK has no `{name}`; a private key is needed"))?;
        URL_SAFE_NO_PAD
            .decode(s)
            .map_err(|_| format!("`{name}` is not base64url"))
    };
    let kty = jwk.get("kty").and_then(Value::as_str).unwrap_or_default();
    let family = alg.family();
    match (kty, family) {
        ("oct", AlgorithmFamily::Hmac) => {
            let k = field("k")?;
            if k.is_empty() {
                return Err("the JWK's `k` (the HMAC secret) is empty".into());
            }
            Ok(EncodingKey::from_secret(&k))
        }
        ("RSA", AlgorithmFamily::Rsa) => {
            let parts = ["n", "e", "d", "p", "q", "dp", "dq", "qi"]
                .iter()
                .map(|n| field(n))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(EncodingKey::from_rsa_der(&pkcs1_der(&parts)))
        }
        ("EC", AlgorithmFamily::Ec) => {
            let signing = match alg {
                Algorithm::ES256 => &ECDSA_P256_SHA256_FIXED_SIGNING,
                _ => &ECDSA_P384_SHA384_FIXED_SIGNING,
            };
            let mut public = vec![0x04];
            public.extend(field("x")?);
            public.extend(field("y")?);
            let pair = aws_lc_rs::signature::EcdsaKeyPair::from_private_key_and_public_key(
                signing,
                &field("d")?,
                &public,
            )
            .map_err(|e| format!("the EC key does not fit {alg:?}: {e}"))?;
            let der = pair
                .to_pkcs8v1()
                .map_err(|_| "cannot encode the EC key".to_string())?;
            Ok(EncodingKey::from_ec_der(der.as_ref()))
        }
        ("OKP", AlgorithmFamily::Ed) => {
            let pair = aws_lc_rs::signature::Ed25519KeyPair::from_seed_and_public_key(
                &field("d")?,
                &field("x")?,
            )
            .map_err(|e| format!("not an Ed25519 key: {e}"))?;
            let der = pair
                .to_pkcs8v1()
                .map_err(|_| "cannot encode the Ed25519 key".to_string())?;
            Ok(EncodingKey::from_ed_der(der.as_ref()))
        }
        _ => Err(format!("a JWK of kty {kty:?} cannot sign {alg:?}")),
    }
}

/// DER of a PKCS#1 `RSAPrivateKey` (RFC 8017 A.1.2): version 0 then the eight integers.
fn pkcs1_der(parts: &[Vec<u8>]) -> Vec<u8> {
    fn len(out: &mut Vec<u8>, n: usize) {
        if n < 0x80 {
            out.push(n as u8);
        } else {
            let bytes: Vec<u8> = n
                .to_be_bytes()
                .into_iter()
                .skip_while(|b| *b == 0)
                .collect();
            out.push(0x80 | bytes.len() as u8);
            out.extend(bytes);
        }
    }
    fn integer(out: &mut Vec<u8>, magnitude: &[u8]) {
        let trimmed: &[u8] = {
            let start = magnitude
                .iter()
                .position(|b| *b != 0)
                .unwrap_or(magnitude.len());
            &magnitude[start..]
        };
        let pad = trimmed.first().is_none_or(|b| b & 0x80 != 0);
        out.push(0x02);
        len(out, trimmed.len() + usize::from(pad));
        if pad {
            out.push(0);
        }
        out.extend_from_slice(trimmed);
    }
    let mut body = Vec::new();
    integer(&mut body, &[0]);
    for p in parts {
        integer(&mut body, p);
    }
    let mut out = vec![0x30];
    len(&mut out, body.len());
    out.extend(body);
    out
}
