//! The real `veto serve`, started from a config in a fresh temp dir, on free ports.
//!
//! A test first fills a [`VetoDir`] with the files its config names (keys, rules), then
//! starts veto with a config that says `$GRPC_LISTEN` and `$ADMIN_LISTEN` where the
//! addresses go; the harness fills in free loopback ports (and starts veto again on new
//! ones when another process took one first). `$DIR` expands to the temp
//! dir's absolute path, for the rare field that wants one (e.g. `unix:$DIR/veto.sock`);
//! relative paths in the config resolve against the config file's directory, which is
//! this same dir.

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::Duration;

use tempfile::TempDir;

use super::free_loopback_addr;
use super::process::{NotReady, Process};
use super::tokens::fixture_key_path;

/// Placeholders a test's config uses instead of addresses it cannot know in advance.
pub const GRPC_LISTEN: &str = "$GRPC_LISTEN";
pub const ADMIN_LISTEN: &str = "$ADMIN_LISTEN";
pub const DIR: &str = "$DIR";

/// How many times the harness starts veto on new ports when one it chose was taken.
const START_ATTEMPTS: u32 = 5;

/// What veto says when it cannot bind a port: its `<field> <addr>: <error>` message
/// (src/serve.rs) ends with the OS error for EADDRINUSE.
const PORT_TAKEN: &str = "Address already in use";

/// What veto logs once both its listeners are bound (src/serve.rs): from then on its ports
/// are its own.
const SERVING: &str = "veto is serving";

/// How long a log line may take to appear after the event it reports: veto's logs are
/// written by a background thread.
const LOG_TIMEOUT: Duration = Duration::from_secs(10);

/// How long veto may take to load its keys and rules and report ready: generous, because
/// a debug build on a CI machine compiling something else can be slow to start.
const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// The temp dir a veto will run from, before it starts: write keys and rules here.
pub struct VetoDir {
    dir: TempDir,
}

impl Default for VetoDir {
    fn default() -> Self {
        Self::new()
    }
}

impl VetoDir {
    pub fn new() -> VetoDir {
        VetoDir {
            dir: tempfile::Builder::new()
                .prefix("veto-test-")
                .tempdir()
                .expect("create a temp dir for veto"),
        }
    }

    /// Copies the test JWKS (`jwks.json`) and HMAC secret (`hs256.key`) from
    /// `tests/fixtures/keys/` into the dir, under the same names.
    pub fn with_fixture_keys(self) -> VetoDir {
        for name in ["jwks.json", "hs256.key"] {
            fs::copy(fixture_key_path(name), self.path().join(name))
                .unwrap_or_else(|e| panic!("copy fixture key {name}: {e}"));
        }
        self
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes `contents` to `relative_path` in the dir, creating parent directories.
    pub fn write(&self, relative_path: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        write_file(self.path(), relative_path, contents.as_ref())
    }

    /// Starts `veto serve` with `config_yaml` (placeholders filled in) as `veto.yaml` in
    /// this dir, and waits until `/readyz` answers 200.
    pub async fn start(self, config_yaml: &str) -> Veto {
        self.start_serve(config_yaml, |command, config_path| {
            command.arg("serve").arg("--config").arg(config_path);
        })
        .await
    }

    /// As [`VetoDir::start`], but names the config in `VETO_CONFIG` instead of `--config`
    /// (SPEC §1: the two are the same).
    pub async fn start_with_config_from_env(self, config_yaml: &str) -> Veto {
        self.start_serve(config_yaml, |command, config_path| {
            command.arg("serve").env("VETO_CONFIG", config_path);
        })
        .await
    }

    /// As [`VetoDir::start`], but returns once veto is alive (`/healthz` answers 200)
    /// without waiting for `/readyz`: for a veto that is not ready yet (e.g. its identity
    /// provider is down).
    pub async fn start_unready(self, config_yaml: &str) -> Veto {
        self.start_serve_until(config_yaml, "/healthz", |command, config_path| {
            command.arg("serve").arg("--config").arg(config_path);
        })
        .await
    }

    /// Writes the config and starts veto; `serve` puts `serve` and the config path on the
    /// command line.
    async fn start_serve(self, config_yaml: &str, serve: impl Fn(&mut Command, &Path)) -> Veto {
        self.start_serve_until(config_yaml, "/readyz", serve).await
    }

    /// As [`VetoDir::start_serve`], returning once `GET <admin><wait_for>` answers 200.
    ///
    /// The ports come from [`free_loopback_addr`], so another process can take one before
    /// veto binds it. veto then exits naming the port; the harness starts it again on new
    /// ports, up to [`START_ATTEMPTS`] times. And the answer that counts as "started" is
    /// one after veto logged [`SERVING`]: before that, a 200 on the port could come from
    /// whoever took it.
    async fn start_serve_until(
        self,
        config_yaml: &str,
        wait_for: &str,
        serve: impl Fn(&mut Command, &Path),
    ) -> Veto {
        assert!(
            config_yaml.contains(ADMIN_LISTEN),
            "the test config must say `admin: {{listen: {ADMIN_LISTEN}}}`: the harness waits \
             for /readyz on that port"
        );
        for attempt in 1..=START_ATTEMPTS {
            let grpc = free_loopback_addr();
            let admin = free_loopback_addr();
            let config = config_yaml
                .replace(GRPC_LISTEN, &grpc.to_string())
                .replace(ADMIN_LISTEN, &admin.to_string())
                .replace(DIR, &self.path().to_string_lossy());
            let config_path = self.write("veto.yaml", config);

            // No current_dir: the child runs in the crate root, so a config path that wrongly
            // resolves against the working directory instead of the config's directory fails.
            let mut command = Command::new(env!("CARGO_BIN_EXE_veto"));
            // The harness waits for an INFO line (SERVING); a RUST_LOG in the developer's
            // shell must not filter it out. VETO_LOG, veto's own, is left to the developer.
            command.env_remove("RUST_LOG");
            serve(&mut command, &config_path);
            let mut process = Process::spawn("veto", command, self.path());
            let url = format!("http://{admin}{wait_for}");
            let failure = match process
                .wait_until_ready(&url, Some(SERVING), READY_TIMEOUT)
                .await
            {
                Ok(()) => {
                    return Veto {
                        process,
                        grpc,
                        admin,
                        config_path,
                        dir: self.dir,
                    };
                }
                Err(NotReady::Exited(_))
                    if attempt < START_ATTEMPTS && process.log().contains(PORT_TAKEN) =>
                {
                    continue;
                }
                Err(NotReady::Exited(status)) => {
                    format!("veto exited ({status}) before {url} answered 200")
                }
                Err(NotReady::TimedOut) => {
                    format!(
                        "veto did not log `{SERVING}` and answer 200 on {url} within {READY_TIMEOUT:?}"
                    )
                }
            };
            process.fail(&failure);
        }
        unreachable!("the last attempt returns or fails")
    }
}

/// A running, ready `veto serve`; killed on drop.
pub struct Veto {
    // Declared before `dir`, so the process is killed before its dir is deleted.
    process: Process,
    grpc: SocketAddr,
    admin: SocketAddr,
    config_path: PathBuf,
    dir: TempDir,
}

impl Veto {
    /// Starts veto with `config_yaml` in an empty temp dir; see [`VetoDir`] to put files
    /// there first.
    pub async fn start(config_yaml: &str) -> Veto {
        VetoDir::new().start(config_yaml).await
    }

    /// The address `$GRPC_LISTEN` was replaced with (meaningless when the config listens
    /// on a Unix socket instead).
    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.admin
    }

    /// `http://<admin>/<path>`, e.g. `veto.admin_url("/v1/rules")`.
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// Writes `contents` to `relative_path` in veto's dir, e.g. to change the rules file
    /// it watches. Not atomic: use [`Veto::replace`] when the file must change at once.
    pub fn write(&self, relative_path: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        write_file(self.dir(), relative_path, contents.as_ref())
    }

    /// Replaces `relative_path` in veto's dir at once (see [`replace_atomically`]), e.g. its
    /// rules or key file, so the watcher never reads half a file.
    pub fn replace(&self, relative_path: &str, contents: impl AsRef<[u8]>) {
        replace_atomically(&self.dir().join(relative_path), contents);
    }

    /// Sends SIGTERM, as the kubelet does when it stops the pod. (`kill`, because std has
    /// no signal API.)
    pub fn terminate(&self) {
        let pid = self.process.id().to_string();
        let status = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("run kill -TERM");
        assert!(status.success(), "kill -TERM {pid} failed: {status}");
    }

    /// Waits up to `timeout` for veto to exit; its exit status, or `None` while it runs.
    pub async fn wait_for_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        self.process.wait_for_exit(timeout).await
    }

    /// veto's `GET /metrics` text.
    pub async fn metrics_text(&self) -> String {
        super::http_client()
            .get(self.admin_url("/metrics"))
            .send()
            .await
            .expect("GET /metrics")
            .text()
            .await
            .expect("read /metrics")
    }

    /// The value of one series of `GET /metrics` (name and labels exactly as veto prints
    /// them), or None while veto does not export it.
    pub async fn metric(&self, series: &str) -> Option<f64> {
        metric_value(&self.metrics_text().await, series)
    }

    /// Everything veto has logged so far.
    pub fn log(&self) -> String {
        self.process.log()
    }

    /// Waits until veto has logged `needle` (see [`LOG_TIMEOUT`]); the whole log then.
    /// Panics with the log when it does not come. Use it, not [`Veto::log`], to assert a
    /// line: a line follows the event it reports (a metric moves first, an answer is sent
    /// first), because a background thread writes veto's logs.
    pub async fn wait_for_log(&self, needle: &str) -> String {
        self.process.wait_for_log(needle, LOG_TIMEOUT).await
    }
}

fn write_file(dir: &Path, relative_path: &str, contents: &[u8]) -> PathBuf {
    let path = dir.join(relative_path);
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).unwrap_or_else(|e| panic!("create {}: {e}", parent.display()));
    }
    fs::write(&path, contents).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    path
}

/// Replaces `path` at once: writes a temp file beside it (a name the watcher ignores) and
/// renames it over, as careful writers (and `kubectl cp` into an emptyDir) do.
pub fn replace_atomically(path: &Path, contents: impl AsRef<[u8]>) {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .expect("a UTF-8 file name");
    let temp = path.with_file_name(format!(".{name}.tmp"));
    fs::write(&temp, contents).unwrap_or_else(|e| panic!("write {}: {e}", temp.display()));
    fs::rename(&temp, path).unwrap_or_else(|e| panic!("rename over {}: {e}", path.display()));
}

/// The value of `series` in a metrics text: a sample line is `series value [timestamp]`.
pub fn metric_value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|value| value.split_whitespace().next()?.parse().ok())
}
