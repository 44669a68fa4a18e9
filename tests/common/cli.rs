//! `veto` run as a one-shot command, as a user or a CI job runs it: `check-rules`,
//! `check-config`, `token`, or a `serve` that must refuse to start. A [`Run`] is what the
//! user sees: the exit code, stdout and stderr.
//!
//! Every run has a time limit, so a command that hangs (or a `serve` that starts when it
//! should have refused) fails its test instead of hanging it.

use std::ffi::OsStr;
use std::fs::{self, File};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// How long a one-shot command may take: generous, because a debug build on a CI machine
/// compiling something else can be slow to start, and still short next to a hang.
const RUN_TIMEOUT: Duration = Duration::from_secs(10);

/// The `veto` binary with `args`; the environment is the test's, minus `VETO_CONFIG`, so a
/// developer's shell cannot change what a test runs.
pub fn veto_command<I, S>(args: I) -> Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut command = Command::new(env!("CARGO_BIN_EXE_veto"));
    command.args(args).env_remove("VETO_CONFIG");
    command
}

/// Runs `veto <args>` to completion; see [`run_command`].
pub fn run_veto<I, S>(args: I) -> Run
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    run_command(veto_command(args))
}

/// Runs `command` to completion and returns what it printed. Panics, with its output,
/// when it has not exited within the time limit.
pub fn run_command(mut command: Command) -> Run {
    // Output goes to files, not pipes: nobody reads a pipe while we wait, and a full pipe
    // would block the child.
    let dir = tempfile::Builder::new()
        .prefix("veto-run-")
        .tempdir()
        .expect("create a temp dir for the command's output");
    let stdout_path = dir.path().join("stdout");
    let stderr_path = dir.path().join("stderr");
    let described = format!("{command:?}");
    let mut child = command
        .stdin(Stdio::null())
        .stdout(File::create(&stdout_path).expect("create the stdout file"))
        .stderr(File::create(&stderr_path).expect("create the stderr file"))
        .spawn()
        .unwrap_or_else(|e| panic!("could not start {described}: {e}"));
    let status = wait_or_kill(&mut child, RUN_TIMEOUT);
    let read = |path| fs::read_to_string(path).unwrap_or_else(|e| format!("({e})"));
    let (stdout, stderr) = (read(&stdout_path), read(&stderr_path));
    let Some(status) = status else {
        panic!(
            "{described} had not exited after {RUN_TIMEOUT:?}\n--- stdout ---\n{stdout}\n\
             --- stderr ---\n{stderr}"
        );
    };
    Run {
        command: described,
        status,
        stdout,
        stderr,
    }
}

/// Waits up to `timeout` for `child` to exit; its status, or `None` once it had to be
/// killed (and reaped) because the time ran out.
pub fn wait_or_kill(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("ask whether the child exited") {
            return Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A finished `veto` command: what it printed and how it exited.
pub struct Run {
    command: String,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Asserts the exit code (0 ok, 1 invalid input, 2 usage error; SPEC §1).
    pub fn assert_exit(&self, code: i32) -> &Run {
        assert_eq!(
            self.status.code(),
            Some(code),
            "exit code of {}\n{}",
            self.command,
            self.output()
        );
        self
    }

    /// Asserts exit 0 and an empty stderr; returns stdout without its final newline.
    pub fn success(&self) -> &str {
        self.assert_exit(0);
        assert_eq!(
            self.stderr, "",
            "a successful {} printed to stderr",
            self.command
        );
        self.stdout.trim_end_matches('\n')
    }

    /// Asserts that stderr mentions every one of `needles`.
    pub fn assert_stderr_names(&self, needles: &[&str]) -> &Run {
        for needle in needles {
            assert!(
                self.stderr.contains(needle),
                "expected the stderr of {} to name `{needle}`\n{}",
                self.command,
                self.output()
            );
        }
        self
    }

    /// Stdout and stderr, labelled, for failure messages.
    pub fn output(&self) -> String {
        format!(
            "--- stdout ---\n{}\n--- stderr ---\n{}",
            self.stdout, self.stderr
        )
    }
}
