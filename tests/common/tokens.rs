//! JWTs for tests, signed with the keys in `tests/fixtures/keys/` (independent of the demo
//! keys in `examples/keys/`, see the README there).
//!
//! [`Token::new`] is a token the standard test issuer accepts; each builder method changes
//! one thing about it, so a test reads as the one way its token is wrong:
//!
//! ```ignore
//! Token::new().alg(Algorithm::ES256).claim("aud", "billing-api").sign()
//! ```

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Map, Value};

/// The issuer, audience and subject of [`Token::new`]; test configs name the same.
pub const ISSUER: &str = "https://issuer.test";
pub const AUDIENCE: &str = "orders-api";
pub const SUBJECT: &str = "alice";

/// How long a default token is valid: long enough for any test, short enough to be real.
const LIFETIME_SECONDS: i64 = 300;

/// Path of a file in `tests/fixtures/keys/`.
pub fn fixture_key_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/keys")
        .join(name)
}

fn fixture_key_bytes(name: &str) -> Vec<u8> {
    let path = fixture_key_path(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("read fixture key {}: {e}", path.display()))
}

/// The HMAC secret veto loads from `hs256.key`: the file's bytes with one trailing newline
/// dropped (SPEC §2, `hmac_secret_file`).
pub fn hmac_secret() -> Vec<u8> {
    let mut secret = fixture_key_bytes("hs256.key");
    if secret.last() == Some(&b'\n') {
        secret.pop();
    }
    secret
}

/// An RSA key that is not in the test JWKS: a token it signs, claiming `kid: rsa-1`, has
/// an invalid signature.
pub fn other_rsa_key() -> EncodingKey {
    EncodingKey::from_rsa_pem(&fixture_key_bytes("other-rsa.pem")).expect("parse other-rsa.pem")
}

/// The PEM text of `rsa-1`'s public key: what an attacker uses as an HMAC secret in the
/// algorithm-confusion attack (an HS256 token "verified" with the RSA public key).
pub fn rsa_public_pem() -> Vec<u8> {
    fixture_key_bytes("rsa-public.pem")
}

/// Now, in Unix seconds, as JWT `iat`/`exp`/`nbf` count time.
pub fn now() -> i64 {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970");
    i64::try_from(since_epoch.as_secs()).expect("the clock is before year 292 billion")
}

/// A JWT being built; [`Token::sign`] turns it into the compact string a client sends.
#[derive(Clone)]
pub struct Token {
    header: Header,
    claims: Map<String, Value>,
    /// Overrides the fixture key that matches the algorithm.
    key: Option<EncodingKey>,
}

impl Default for Token {
    fn default() -> Self {
        Self::new()
    }
}

impl Token {
    /// An RS256 token by `rsa-1` that the test issuer accepts: `iss`, `sub`, `aud`, `iat`
    /// now, `exp` in five minutes, and a `jti` unique in this test run.
    pub fn new() -> Token {
        let now = now();
        let claims = serde_json::json!({
            "iss": ISSUER,
            "sub": SUBJECT,
            "aud": AUDIENCE,
            "iat": now,
            "exp": now + LIFETIME_SECONDS,
            "jti": unique_jti(),
        });
        let Value::Object(claims) = claims else {
            unreachable!("a json! object literal is an object")
        };
        Token {
            header: header_for(Algorithm::RS256),
            claims,
            key: None,
        }
    }

    /// Signs with `alg` and the fixture key for it, and sets that key's `kid` (no `kid`
    /// for HMAC: the secret is configured per issuer, not in the JWKS).
    pub fn alg(mut self, alg: Algorithm) -> Token {
        self.header = header_for(alg);
        self
    }

    /// Sets the header's `kid` (e.g. one the JWKS does not have).
    pub fn kid(mut self, kid: &str) -> Token {
        self.header.kid = Some(kid.to_owned());
        self
    }

    pub fn without_kid(mut self) -> Token {
        self.header.kid = None;
        self
    }

    /// Sets claim `name` (replacing the default, if any).
    pub fn claim(mut self, name: &str, value: impl Into<Value>) -> Token {
        self.claims.insert(name.to_owned(), value.into());
        self
    }

    /// Leaves claim `name` out.
    pub fn without(mut self, name: &str) -> Token {
        self.claims.remove(name);
        self
    }

    /// Sets `exp` to now plus `seconds` (negative: already expired).
    pub fn expires_in(self, seconds: i64) -> Token {
        self.claim("exp", now() + seconds)
    }

    /// Sets `iat` to now plus `seconds` (negative: issued in the past).
    pub fn issued_in(self, seconds: i64) -> Token {
        self.claim("iat", now() + seconds)
    }

    /// Signs with `key` instead of the fixture key for the algorithm; the header (`alg`,
    /// `kid`) stays as it is, which is the point of the wrong-key tests.
    pub fn signed_by(mut self, key: EncodingKey) -> Token {
        self.key = Some(key);
        self
    }

    /// The `jti` claim, e.g. to write a `session` rule that revokes this token.
    pub fn jti(&self) -> &str {
        self.claims
            .get("jti")
            .and_then(Value::as_str)
            .expect("this token has a string jti")
    }

    /// The claims as they will be signed.
    pub fn claims(&self) -> &Map<String, Value> {
        &self.claims
    }

    /// The compact JWT: `header.payload.signature`.
    pub fn sign(&self) -> String {
        let key = self
            .key
            .clone()
            .unwrap_or_else(|| fixture_encoding_key(self.header.alg));
        jsonwebtoken::encode(&self.header, &self.claims, &key)
            .unwrap_or_else(|e| panic!("sign a test token with {:?}: {e}", self.header.alg))
    }
}

fn header_for(alg: Algorithm) -> Header {
    let mut header = Header::new(alg);
    header.kid = fixture_kid(alg).map(str::to_owned);
    header
}

/// The `kid` of the fixture key for `alg` in `tests/fixtures/keys/jwks.json`.
fn fixture_kid(alg: Algorithm) -> Option<&'static str> {
    use Algorithm::*;
    match alg {
        RS256 | RS384 | RS512 | PS256 | PS384 | PS512 => Some("rsa-1"),
        ES256 => Some("ec256-1"),
        ES384 => Some("ec384-1"),
        EdDSA => Some("ed-1"),
        HS256 | HS384 | HS512 => None,
        other => panic!("no fixture key for {other:?}"),
    }
}

fn fixture_encoding_key(alg: Algorithm) -> EncodingKey {
    use Algorithm::*;
    let parsed = match alg {
        RS256 | RS384 | RS512 | PS256 | PS384 | PS512 => {
            EncodingKey::from_rsa_pem(&fixture_key_bytes("rsa.pem"))
        }
        ES256 => EncodingKey::from_ec_pem(&fixture_key_bytes("ec256.pem")),
        ES384 => EncodingKey::from_ec_pem(&fixture_key_bytes("ec384.pem")),
        EdDSA => EncodingKey::from_ed_pem(&fixture_key_bytes("ed25519.pem")),
        HS256 | HS384 | HS512 => Ok(EncodingKey::from_secret(&hmac_secret())),
        other => panic!("no fixture key for {other:?}"),
    };
    parsed.unwrap_or_else(|e| panic!("load the fixture key for {alg:?}: {e}"))
}

/// A `jti` no other token of this test run has, so a `session` rule for one test's token
/// cannot revoke another's.
fn unique_jti() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "test-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}
