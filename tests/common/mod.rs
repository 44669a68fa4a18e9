//! Test harness: the real `veto` binary, a real Envoy and an in-process echo app, each on
//! free loopback ports, so tests can run in parallel.
//!
//! Ports: every server the harness starts either binds port 0 and reports the port it got
//! (the echo app, the identity providers, Envoy), or, for veto, which cannot report it, is
//! started again on new ports when one was taken before it bound it. An address that must
//! refuse connections is a [`ClosedPort`], never a port that merely was free a moment ago.
//!
//! - `veto`: [`VetoDir`] (a temp dir to put keys and rules in) and [`Veto`] (`veto serve`).
//! - `config`: [`SIDECAR_CONFIG`], the standard sidecar, and [`SidecarConfig`] to change it.
//! - `envoy`: [`Envoy`], started from the repository's own `envoy/envoy.yaml`.
//! - `upstream`: [`EchoUpstream`], the app behind Envoy; it answers with the headers it got.
//! - `pod`: [`Pod`], the three together, as a client meets them.
//! - `responses`: what a client gets back: [`AppSaw`] and the SPEC §4 denial assertions.
//! - `tokens`: [`Token`], JWTs signed with the keys in `tests/fixtures/keys/`.
//! - `process`: the child-process plumbing `veto` and `envoy` share.
//! - `grpc`: veto's Check and health services called directly, as Envoy calls them.
//! - `check_request`: the `CheckRequest` Envoy sends ([`headers_request`]).
//! - `cli`: `veto` as a one-shot command ([`run_veto`]): exit code, stdout, stderr.
//! - `idp`: [`Idp`] and [`TlsIdp`], fake identity providers serving discovery and JWKS.
//! - `k8s`: the Kubernetes deliverables rendered, schema-checked and laid out as a pod's files.
//! - `files`: the repository's files and copies of them ([`copy_tree`]).
//!
//! Why every test starts its own processes: each `#[tokio::test]` runs on its own runtime,
//! so the echo app (a task) cannot outlive its test, and a process kept in a `static` is
//! never dropped, so it would outlive the test binary. Tests that need many cases share one
//! pod inside one test instead.

mod check_request;
mod cli;
mod config;
mod envoy;
mod files;
mod grpc;
mod idp;
pub mod k8s;
mod pod;
mod process;
mod responses;
mod tokens;
mod upstream;
mod veto;

pub use check_request::{bearer_request, headers_request, raw_headers_request};
pub use cli::{Run, run_command, run_veto, veto_command, wait_or_kill};
pub use config::{SIDECAR_CONFIG, SidecarConfig};
pub use envoy::{Envoy, envoy_binary};
pub use files::{copy_tree, files_under, read, relative, repo};
pub use grpc::{
    GRPC_OK, assert_check_denied, check, check_allowed, check_client, check_denial_reason,
    check_outcome, check_token, header_values, health_client,
};
pub use idp::{Idp, TlsIdp, fixture_jwk, jwk_set};
pub use pod::Pod;
pub use responses::{AppSaw, assert_denied, assert_denied_as_missing_token, denial_reason};
pub use tokens::{
    AUDIENCE, ISSUER, SUBJECT, Token, fixture_key_path, hmac_secret, now, other_rsa_key,
    rsa_public_pem,
};
pub use upstream::EchoUpstream;
pub use veto::{Veto, VetoDir, metric_value, replace_atomically};

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::time::Duration;

/// How often [`poll_until`] looks again: short enough that tests wait little past the
/// moment the condition holds, long enough not to busy-spin on two cores.
const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// Polls `condition` until it is true or `timeout` has passed; returns whether it became
/// true. Tests wait for a state (ready, reloaded) this way, never with a fixed sleep,
/// which is either too short on a busy CI machine or wastes time everywhere else.
pub async fn poll_until(timeout: Duration, mut condition: impl AsyncFnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if condition().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// A loopback address with a port that was free a moment ago: bind port 0, read what the
/// kernel chose, release it. Another process can take the port before the one it is for
/// binds it, so use it only where that is guarded: veto's start ([`VetoDir::start`])
/// tries again on new ports when veto exits saying a port was taken, and so do the
/// lifecycle tests that run `veto serve` themselves. For a server in the test process,
/// bind port 0 and keep the listener instead; for an address nothing may answer on, use
/// [`ClosedPort`].
pub fn free_loopback_addr() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free loopback port");
    listener
        .local_addr()
        .expect("read the port the kernel chose")
}

/// A loopback port where connections are refused for as long as this value lives: a
/// socket bound to it that never listens (for a peer that is down, e.g. veto behind
/// Envoy). A port that was merely free could be taken by another process meanwhile, and
/// the test would reach that process instead. Bound without SO_REUSEADDR or SO_REUSEPORT,
/// so no other socket can bind the port while it is held.
pub struct ClosedPort {
    _socket: tokio::net::TcpSocket,
    addr: SocketAddr,
}

impl ClosedPort {
    pub fn new() -> ClosedPort {
        let socket = tokio::net::TcpSocket::new_v4().expect("create a socket");
        socket
            .bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .expect("bind a free loopback port");
        let addr = socket.local_addr().expect("read the port the kernel chose");
        ClosedPort {
            _socket: socket,
            addr,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Default for ClosedPort {
    fn default() -> Self {
        Self::new()
    }
}

/// The HTTP client for talking to Envoy and the admin API: no proxy (a `http_proxy` set
/// in the environment must not capture loopback traffic) and a timeout, so a hung server
/// fails the test instead of hanging it.
pub fn http_client() -> reqwest::Client {
    http_client_with_timeout(Duration::from_secs(5))
}

/// As [`http_client`], with `timeout` for each request: for a test that sends so many
/// requests at once that, on a busy machine, the last are answered seconds later.
pub fn http_client_with_timeout(timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(timeout)
        .build()
        .expect("build the test HTTP client")
}

/// The program `name` from the project's `.venv/bin/` (where the README's test command
/// installs the Python-packaged tools: Envoy, kubernetes-validate), else from PATH; panics
/// with `hint`, how to get it, when it is in neither. Never skips: a test that silently did
/// not run would pass while proving nothing.
pub fn tool(name: &str, hint: &str) -> PathBuf {
    let venv = repo().join(".venv/bin").join(name);
    if venv.is_file() {
        return venv;
    }
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join(name))
                .find(|candidate| candidate.is_file())
        })
        .unwrap_or_else(|| {
            panic!(
                "`{name}` not found in {} nor on PATH: {hint}",
                venv.parent().expect("a parent").display()
            )
        })
}
