//! A child process a test started (veto or Envoy): its output goes to files so a failing
//! test can show it, it counts as started only once its readiness URL answers 200, and it
//! is killed when the test ends, pass or fail.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::{http_client, poll_until};

pub struct Process {
    /// Used in messages and log file names: "veto", "envoy".
    name: &'static str,
    child: Child,
    stdout: PathBuf,
    stderr: PathBuf,
    /// Set once a panic message has carried the log, so `drop` does not print it twice.
    log_shown: AtomicBool,
}

impl Process {
    /// Spawns `command` with stdout and stderr written to `<name>.stdout.log` and
    /// `<name>.stderr.log` in `log_dir` (files, not pipes: a pipe nobody reads fills up
    /// and blocks the child).
    pub fn spawn(name: &'static str, mut command: Command, log_dir: &Path) -> Process {
        let stdout = log_dir.join(format!("{name}.stdout.log"));
        let stderr = log_dir.join(format!("{name}.stderr.log"));
        let child = command
            .stdin(Stdio::null())
            .stdout(File::create(&stdout).expect("create the stdout log file"))
            .stderr(File::create(&stderr).expect("create the stderr log file"))
            .spawn()
            .unwrap_or_else(|error| panic!("could not start {name} as {command:?}: {error}"));
        Process {
            name,
            child,
            stdout,
            stderr,
            log_shown: AtomicBool::new(false),
        }
    }

    /// Everything the process has printed so far, stdout then stderr.
    pub fn log(&self) -> String {
        read_log(self.name, &self.stdout, &self.stderr)
    }

    /// The child's process id, e.g. to send it a signal.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process has exited.
    pub fn has_exited(&mut self) -> bool {
        self.child
            .try_wait()
            .expect("ask whether the child exited")
            .is_some()
    }

    /// Waits up to `timeout` for the process to exit on its own; its exit status, or
    /// `None` while it still runs.
    pub async fn wait_for_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let mut status = None;
        let child = &mut self.child;
        poll_until(timeout, async || {
            status = child.try_wait().expect("ask whether the child exited");
            status.is_some()
        })
        .await;
        status
    }

    /// Waits until `GET url` answers 200 and, when `log_says` is given, the process has
    /// logged it (e.g. veto's "veto is serving", which proves the port that answered is its
    /// own and not another process's that took it first). Returns early when the process
    /// exits (a bad config, a taken port): waiting out the timeout for a dead process only
    /// hides the reason. On failure, [`Process::fail`] shows the log.
    pub async fn wait_until_ready(
        &mut self,
        url: &str,
        log_says: Option<&str>,
        timeout: Duration,
    ) -> Result<(), NotReady> {
        let http = http_client();
        let mut exited: Option<ExitStatus> = None;
        let (name, child) = (self.name, &mut self.child);
        let (stdout, stderr) = (&self.stdout, &self.stderr);
        let ready = poll_until(timeout, async || {
            if let Some(status) = child.try_wait().expect("ask whether the child exited") {
                exited = Some(status);
                return true;
            }
            if let Some(needle) = log_says
                && !read_log(name, stdout, stderr).contains(needle)
            {
                return false;
            }
            matches!(http.get(url).send().await, Ok(r) if r.status() == reqwest::StatusCode::OK)
        })
        .await;
        match exited {
            Some(status) => Err(NotReady::Exited(status)),
            None if !ready => Err(NotReady::TimedOut),
            None => Ok(()),
        }
    }

    /// Waits until the process has logged `needle`; the whole log then. Panics with the log
    /// when `timeout` passes first. For a log line that follows something a test observed
    /// (a metric, an answer): the line is written after the event, sometimes by another
    /// thread, so it may not be in the file yet at the moment the test looks.
    pub async fn wait_for_log(&self, needle: &str, timeout: Duration) -> String {
        let mut log = String::new();
        let found = poll_until(timeout, async || {
            log = self.log();
            log.contains(needle)
        })
        .await;
        if !found {
            self.fail(&format!(
                "{} did not log `{needle}` within {timeout:?}",
                self.name
            ));
        }
        log
    }

    /// Panics with `failure` and the process's log.
    pub fn fail(&self, failure: &str) -> ! {
        self.log_shown.store(true, Ordering::Relaxed);
        panic!("{failure}\n{}", self.log());
    }
}

/// Why [`Process::wait_until_ready`] gave up.
#[derive(Debug)]
pub enum NotReady {
    /// The process exited first, with this status.
    Exited(ExitStatus),
    /// It still ran, unready, when the timeout passed.
    TimedOut,
}

/// Everything a process printed so far, stdout then stderr, labelled with its name.
fn read_log(name: &str, stdout: &Path, stderr: &Path) -> String {
    let read = |path: &Path| fs::read_to_string(path).unwrap_or_else(|e| format!("({e})"));
    format!(
        "--- {name} stdout ---\n{}\n--- {name} stderr ---\n{}",
        read(stdout),
        read(stderr),
    )
}

impl Drop for Process {
    fn drop(&mut self) {
        // Err only means it already exited; either way it is gone after wait().
        let _ = self.child.kill();
        let _ = self.child.wait();
        // The test is failing: its output (which cargo shows for failed tests) should say
        // what the process saw.
        if std::thread::panicking() && !self.log_shown.load(Ordering::Relaxed) {
            eprintln!("{}", self.log());
        }
    }
}
