//! A fake identity provider on loopback, for the keys veto fetches (`jwks_uri`, or
//! `discovery: true`): a real HTTP server that serves an OpenID discovery document and a
//! JWK Set, counts the requests it gets per path, and can be switched while veto runs.
//!
//! - [`Idp`]: plain HTTP, an axum server inside the test. It answers with a key set (at
//!   once or slowly, with a `Cache-Control` if asked), fails with 500, hangs, or is down
//!   (nothing listens on its port: connection refused).
//! - [`TlsIdp`]: HTTPS with a certificate for `127.0.0.1` issued by a private CA made at
//!   test time, served by Python's `http.server` (the test binary has no TLS server of its
//!   own, and a dev-dependency just for this is not worth it).
//! - [`fixture_jwk`] and [`jwk_set`]: key sets built from the public keys in
//!   `tests/fixtures/keys/jwks.json`, so [`super::Token`] signs tokens they verify.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{StatusCode, Uri, header};
use axum::response::Response;
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::net::TcpSocket;
use tokio::task::JoinHandle;

use super::process::Process;
use super::tokens::fixture_key_path;

/// Where the discovery document is (OpenID Connect Discovery 1.0 §4).
pub const DISCOVERY_PATH: &str = "/.well-known/openid-configuration";
/// Where the JWK Set is; the discovery document names it as `jwks_uri`.
pub const JWKS_PATH: &str = "/jwks.json";

/// How long a hanging answer hangs: far longer than any `fetch_timeout` a test sets, so
/// the fetch can only end by veto's timeout.
const HANG: Duration = Duration::from_secs(60);

/// The public JWK with `kid` from `tests/fixtures/keys/jwks.json` (`rsa-1`, `ec256-1`,
/// `ec384-1`, `ed-1`): the key [`super::Token`] signs with for that key's algorithm.
pub fn fixture_jwk(kid: &str) -> Value {
    let path = fixture_key_path("jwks.json");
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let set: Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()));
    set["keys"]
        .as_array()
        .and_then(|keys| keys.iter().find(|k| k["kid"] == kid))
        .cloned()
        .unwrap_or_else(|| panic!("{} has no key with kid {kid}", path.display()))
}

/// A JWK Set document of `keys`.
pub fn jwk_set(keys: impl IntoIterator<Item = Value>) -> Value {
    json!({"keys": keys.into_iter().collect::<Vec<_>>()})
}

/// How the fake identity provider answers every path for now.
#[derive(Clone)]
enum Answer {
    /// The discovery document, and this JWK Set at [`JWKS_PATH`], after this delay.
    Keys(Value, Duration),
    /// 500 Internal Server Error.
    Fail,
    /// Nothing, for [`HANG`].
    Hang,
}

/// What the server task and the test share.
struct Shared {
    base_url: String,
    answer: Mutex<Answer>,
    /// `Cache-Control` of every answer, when set.
    cache_control: Mutex<Option<String>>,
    /// Requests received per path, whatever the answer was.
    hits: Mutex<HashMap<String, u64>>,
}

/// A fake identity provider at `http://127.0.0.1:<port>`; it runs as a task on the test's
/// runtime and stops on drop.
///
/// The provider keeps its port from start to drop, up or down, so no other process can
/// take it while veto is told to fetch from it: down, the port is bound but not listening
/// (connections are refused, as when nothing runs there); [`Idp::up`] makes that same
/// socket listen.
pub struct Idp {
    addr: SocketAddr,
    shared: Arc<Shared>,
    /// The port, bound but not listening, while the provider is down.
    closed: Option<TcpSocket>,
    /// The server task while the provider is up.
    server: Option<JoinHandle<()>>,
}

impl Idp {
    /// An identity provider that is up and serves `jwks` (see [`jwk_set`]).
    pub async fn start(jwks: Value) -> Idp {
        let mut idp = Idp::start_down(jwks);
        idp.up().await;
        idp
    }

    /// An identity provider that is down (its port refuses connections) until [`Idp::up`];
    /// it will then serve `jwks`.
    pub fn start_down(jwks: Value) -> Idp {
        let closed = provider_socket("127.0.0.1:0".parse().expect("a socket address"));
        let addr = closed.local_addr().expect("read the port the kernel chose");
        Idp {
            addr,
            closed: Some(closed),
            shared: Arc::new(Shared {
                base_url: format!("http://{addr}"),
                answer: Mutex::new(Answer::Keys(jwks, Duration::ZERO)),
                cache_control: Mutex::new(None),
                hits: Mutex::new(HashMap::new()),
            }),
            server: None,
        }
    }

    /// `http://127.0.0.1:<port>`: the issuer, when veto is to use discovery (a discovery
    /// issuer's `iss` is the URL its discovery document hangs off).
    pub fn base_url(&self) -> String {
        self.shared.base_url.clone()
    }

    /// The JWK Set's URL, for `jwks_uri`.
    pub fn jwks_uri(&self) -> String {
        format!("{}{JWKS_PATH}", self.shared.base_url)
    }

    /// From now on, serve `jwks` (and the discovery document).
    pub fn serve(&self, jwks: Value) {
        self.set(Answer::Keys(jwks, Duration::ZERO));
    }

    /// From now on, serve `jwks` (and the discovery document) `delay` after each request
    /// arrives. A request answers with what was served when it arrived, as a real server
    /// that read its keys before a rotation would.
    pub fn serve_slowly(&self, jwks: Value, delay: Duration) {
        self.set(Answer::Keys(jwks, delay));
    }

    /// From now on, every answer says `Cache-Control: <value>`.
    pub fn cache_control(&self, value: &str) {
        *self
            .shared
            .cache_control
            .lock()
            .expect("the idp state lock") = Some(value.to_owned());
    }

    /// From now on, answer every request with 500.
    pub fn fail(&self) {
        self.set(Answer::Fail);
    }

    /// From now on, accept every request and never answer it.
    pub fn hang(&self) {
        self.set(Answer::Hang);
    }

    fn set(&self, answer: Answer) {
        *self.shared.answer.lock().expect("the idp state lock") = answer;
    }

    /// Starts listening on the provider's port (again).
    pub async fn up(&mut self) {
        let Some(closed) = self.closed.take() else {
            return;
        };
        let listener = closed.listen(1024).unwrap_or_else(|e| {
            panic!("listen on the fake identity provider's {}: {e}", self.addr)
        });
        let shared = self.shared.clone();
        let app = Router::new().fallback(move |uri: Uri| answer(shared.clone(), uri));
        self.server = Some(tokio::spawn(async move {
            axum::serve(listener, app)
                .await
                .expect("the fake identity provider stopped serving");
        }));
    }

    /// Stops listening: connections to the port are refused until [`Idp::up`]. Every answer
    /// says `Connection: close`, so no kept-alive connection outlives this either.
    pub fn down(&mut self) {
        if let Some(server) = self.server.take() {
            // Bound before the listener closes, so the port is never free for another process.
            self.closed = Some(provider_socket(self.addr));
            server.abort();
        }
    }

    /// How many requests for `path` arrived so far (answered, failed or hanging).
    pub fn hits(&self, path: &str) -> u64 {
        let hits = self.shared.hits.lock().expect("the idp hits lock");
        hits.get(path).copied().unwrap_or(0)
    }

    pub fn jwks_hits(&self) -> u64 {
        self.hits(JWKS_PATH)
    }

    pub fn discovery_hits(&self) -> u64 {
        self.hits(DISCOVERY_PATH)
    }
}

impl Drop for Idp {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            server.abort();
        }
    }
}

/// A socket bound to `addr` (port 0: a free port) with SO_REUSEPORT and not listening:
/// connections to it are refused. SO_REUSEPORT (not SO_REUSEADDR) is what lets
/// [`Idp::down`] bind the port again while the listener still holds it and its closed
/// connections wait in TIME_WAIT (they inherit the option); Linux allows the sharing only
/// between sockets of the same user that all set it, so veto's and the tests' listeners
/// (SO_REUSEADDR only) cannot bind the port meanwhile; Envoy sets it too, but the tests'
/// Envoys bind port 0, and the kernel never picks a bound port for that.
fn provider_socket(addr: SocketAddr) -> TcpSocket {
    let socket = TcpSocket::new_v4().expect("create a socket for the fake identity provider");
    socket
        .set_reuseport(true)
        .expect("set SO_REUSEPORT on the fake identity provider's socket");
    socket
        .bind(addr)
        .unwrap_or_else(|e| panic!("bind the fake identity provider to {addr}: {e}"));
    socket
}

async fn answer(shared: Arc<Shared>, uri: Uri) -> Response {
    let path = uri.path().to_owned();
    *shared
        .hits
        .lock()
        .expect("the idp hits lock")
        .entry(path.clone())
        .or_insert(0) += 1;
    let now = shared.answer.lock().expect("the idp state lock").clone();
    let cache_control = shared
        .cache_control
        .lock()
        .expect("the idp state lock")
        .clone();
    let (status, body) = match now {
        Answer::Hang => {
            tokio::time::sleep(HANG).await;
            (StatusCode::SERVICE_UNAVAILABLE, json!({"error": "hung"}))
        }
        Answer::Fail => (
            StatusCode::INTERNAL_SERVER_ERROR,
            json!({"error": "the identity provider is failing on purpose"}),
        ),
        Answer::Keys(jwks, delay) => {
            tokio::time::sleep(delay).await;
            match path.as_str() {
                DISCOVERY_PATH => (StatusCode::OK, discovery_document(&shared.base_url)),
                JWKS_PATH => (StatusCode::OK, jwks),
                _ => (StatusCode::NOT_FOUND, json!({"error": "not found"})),
            }
        }
    };
    let mut response = Response::builder();
    if let Some(value) = cache_control {
        response = response.header(header::CACHE_CONTROL, value);
    }
    response
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        // One request per connection: taking the provider down then really cuts veto off,
        // instead of a kept-alive connection living on in its own task.
        .header(header::CONNECTION, "close")
        .body(Body::from(body.to_string()))
        .expect("a response with a status, valid headers and a body")
}

/// The discovery document of the provider at `base_url`: what Keycloak or Auth0 publish,
/// cut to the fields a relying party reads.
fn discovery_document(base_url: &str) -> Value {
    json!({
        "issuer": base_url,
        "jwks_uri": format!("{base_url}{JWKS_PATH}"),
        "authorization_endpoint": format!("{base_url}/authorize"),
        "token_endpoint": format!("{base_url}/token"),
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256", "ES256"],
    })
}

// ---- HTTPS with a private CA -----------------------------------------------------------

/// How long Python may take to start serving.
const TLS_START_TIMEOUT: Duration = Duration::from_secs(10);

/// What the HTTPS server prints, followed by its port, once it listens.
const TLS_SERVING: &str = "https idp serving on port ";

/// The HTTPS server: static files (the discovery document and the JWK Set) from a dir, on
/// a port the kernel picks (port 0), which it prints as [`TLS_SERVING`] and the port.
/// `do_handshake_on_connect=False` moves each TLS handshake out of the accept loop into the
/// request's thread, so one client that fails the handshake cannot stall the others.
const HTTPS_SERVER_PY: &str = r#"
import functools, http.server, ssl, sys
cert, key, root = sys.argv[1], sys.argv[2], sys.argv[3]
handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=root)
server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(cert, key)
server.socket = context.wrap_socket(server.socket, server_side=True, do_handshake_on_connect=False)
print("https idp serving on port", server.server_address[1], flush=True)
server.serve_forever()
"#;

/// A CA and a server certificate for `IP:127.0.0.1`, with Python's `cryptography`, for
/// machines without the `openssl` command.
const MAKE_CERTS_PY: &str = r#"
import datetime, ipaddress, sys
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
out = sys.argv[1]
now = datetime.datetime.now(datetime.timezone.utc)
def name(cn):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
def save_key(key, path):
    with open(path, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
def save_cert(cert, path):
    with open(path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
ca_key = ec.generate_private_key(ec.SECP256R1())
ca = (x509.CertificateBuilder().subject_name(name("veto test CA")).issuer_name(name("veto test CA"))
    .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
    .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
    .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
    .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
        data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
        encipher_only=False, decipher_only=False), critical=True)
    .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
    .sign(ca_key, hashes.SHA256()))
key = ec.generate_private_key(ec.SECP256R1())
cert = (x509.CertificateBuilder().subject_name(name("127.0.0.1")).issuer_name(ca.subject)
    .public_key(key.public_key()).serial_number(x509.random_serial_number())
    .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
    .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
    .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
    .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
    .sign(ca_key, hashes.SHA256()))
save_cert(ca, out + "/ca.pem")
save_key(key, out + "/server.key")
save_cert(cert, out + "/server.pem")
"#;

/// The `openssl` config for the same two certificates.
const OPENSSL_CNF: &str = "\
[req]
distinguished_name = dn
prompt = no
[dn]
CN = veto test CA
[ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[server]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
";

/// An identity provider at `https://127.0.0.1:<port>` whose certificate only a private CA
/// vouches for ([`TlsIdp::ca_file`]). It serves discovery (naming its own HTTPS `jwks_uri`)
/// and `jwks`; killed on drop.
pub struct TlsIdp {
    // Declared before `dir`, so Python is killed before its files are deleted.
    process: Process,
    base_url: String,
    dir: TempDir,
}

impl TlsIdp {
    pub async fn start(jwks: &Value) -> TlsIdp {
        let dir = tempfile::Builder::new()
            .prefix("tls-idp-test-")
            .tempdir()
            .expect("create a temp dir for the HTTPS identity provider");
        make_certificates(dir.path());

        let root = dir.path().join("www");
        std::fs::create_dir_all(root.join(".well-known")).expect("create the served dir");
        let mut command = Command::new("python3");
        command
            .arg("-c")
            .arg(HTTPS_SERVER_PY)
            .arg(dir.path().join("server.pem"))
            .arg(dir.path().join("server.key"))
            .arg(&root);
        let process = Process::spawn("https-idp", command, dir.path());
        let log = process.wait_for_log(TLS_SERVING, TLS_START_TIMEOUT).await;
        let port = log
            .split(TLS_SERVING)
            .nth(1)
            .and_then(|rest| rest.lines().next())
            .and_then(|port| port.trim().parse::<u16>().ok())
            .unwrap_or_else(|| process.fail("the HTTPS server printed no port"));
        let base_url = format!("https://127.0.0.1:{port}");

        // Files are read per request, so they can follow the start: nothing asks before
        // the test learns the URL.
        std::fs::write(
            root.join(DISCOVERY_PATH.trim_start_matches('/')),
            discovery_document(&base_url).to_string(),
        )
        .expect("write the discovery document");
        std::fs::write(
            root.join(JWKS_PATH.trim_start_matches('/')),
            jwks.to_string(),
        )
        .expect("write the JWK Set");
        TlsIdp {
            process,
            base_url,
            dir,
        }
    }

    /// `https://127.0.0.1:<port>`: the issuer for `discovery: true`.
    pub fn base_url(&self) -> String {
        self.base_url.clone()
    }

    /// The PEM file of the CA that issued the server's certificate, for `ca_file`.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// What the server logged (Python's access log goes to stderr).
    pub fn log(&self) -> String {
        self.process.log()
    }
}

/// Writes `ca.pem`, `server.key` and `server.pem` (for `IP:127.0.0.1`, issued by the CA)
/// into `dir`: with the `openssl` command when there is one, else with Python's
/// `cryptography`. Never skips: a TLS test that silently did not run proves nothing.
fn make_certificates(dir: &Path) {
    if on_path("openssl") {
        std::fs::write(dir.join("openssl.cnf"), OPENSSL_CNF).expect("write openssl.cnf");
        let new_key = "-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes";
        let steps = [
            format!(
                "req -x509 -config openssl.cnf -extensions ca {new_key} -keyout ca.key -out ca.pem -days 1"
            ),
            format!(
                "req -new -config openssl.cnf -subj /CN=127.0.0.1 {new_key} -keyout server.key -out server.csr"
            ),
            "x509 -req -in server.csr -CA ca.pem -CAkey ca.key -set_serial 2 -days 1 \
             -extfile openssl.cnf -extensions server -out server.pem"
                .to_owned(),
        ];
        for step in steps {
            run_ok(
                Command::new("openssl")
                    .args(step.split_whitespace())
                    .current_dir(dir),
            );
        }
    } else {
        run_ok(
            Command::new("python3")
                .arg("-c")
                .arg(MAKE_CERTS_PY)
                .arg(dir),
        );
    }
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
}

fn run_ok(command: &mut Command) {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("run {command:?}: {e}"));
    assert!(
        output.status.success(),
        "{command:?} failed ({}); neither `openssl` nor Python's `cryptography` could make \
         the test certificates?\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
}
