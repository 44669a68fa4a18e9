//! Watching files that can change under us: the rules file, key files, the admin token.
//!
//! Kubernetes updates a ConfigMap or Secret volume by writing the new files into a fresh
//! hidden directory (`..2026_11_22_14_58_25.123456`), pointing a new symlink `..data_tmp` at
//! it, renaming that over `..data` (atomic), and only then deleting the old directory. The
//! watched path (`rules.json -> ..data/rules.json`) never changes; its target does. So a
//! watch on the file (or on `..data`) dies after the first update. We watch the parent
//! directory, non-recursively, and treat events on our file name or on the kubelet's `..*`
//! entries as "maybe changed"; other files in the directory are ignored. Bursts are
//! debounced, the file is re-read through the symlink and compared by content hash, and a
//! slow poll catches events that were missed (inotify queue overflow, exhausted watches).
//! A changed file is used only once two reads one debounce apart agree: a writer that
//! pauses mid-write leaves a shorter file that may itself be valid (a YAML rules file cut
//! after any line is), and that must not be applied as if it were the new content.
//! This module never writes into a watched directory.

use std::collections::HashMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use aws_lc_rs::digest::{SHA256, digest};
use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::Notify;

/// Quiet time after the last event before a file is re-read: a kubelet update is several
/// renames in a few milliseconds, and an editor's save is a truncate and a write.
const DEBOUNCE: Duration = Duration::from_millis(150);

/// A burst that never goes quiet is still read after this long.
const MAX_DEBOUNCE: Duration = Duration::from_secs(2);

/// Re-read even without an event this often, for events that were missed.
pub const POLL: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
#[error("{}: cannot watch its directory: {source}", path.display())]
pub struct WatchError {
    path: PathBuf,
    source: notify::Error,
}

/// Files watched in one directory: file name -> who to wake.
type Watched = HashMap<PathBuf, Vec<(OsString, Arc<Notify>)>>;

/// [`Watched`], shared with notify's callback. A std lock (`clippy.toml` bans them
/// elsewhere): the callback runs on notify's own thread, outside the runtime, and `watch`
/// at startup; it is never on the request path nor held across an `.await`.
#[allow(clippy::disallowed_types)]
type Routes = std::sync::Mutex<Watched>;

/// One inotify (or platform) watcher shared by every watched file.
pub struct FileWatcher {
    watcher: RecommendedWatcher,
    watched: Arc<Routes>,
}

impl FileWatcher {
    pub fn new() -> Result<FileWatcher, notify::Error> {
        let watched: Arc<Routes> = Arc::default();
        let routes = watched.clone();
        let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            // Runs on notify's own thread, never on the request path.
            let Ok(routes) = routes.lock() else { return };
            match event {
                Ok(event) if matches!(event.kind, EventKind::Access(_)) => {}
                Ok(event) if !event.paths.is_empty() => {
                    for path in &event.paths {
                        wake_matching(&routes, path);
                    }
                }
                // An error or an event without paths (a rescan): wake everyone.
                _ => routes
                    .values()
                    .flatten()
                    .for_each(|(_, notify)| notify.notify_one()),
            }
        })?;
        Ok(FileWatcher { watcher, watched })
    }

    /// Starts watching `file` (through its parent directory); the returned [`Changes`]
    /// resolves whenever it may have changed.
    pub fn watch(&mut self, file: &Path) -> Result<Changes, WatchError> {
        let err = |source| WatchError {
            path: file.to_path_buf(),
            source,
        };
        let dir = file
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_path_buf();
        let name = file.file_name().map(OsString::from).unwrap_or_default();
        let notify = Arc::new(Notify::new());
        // The lock is released before `watch` is called: notify's event thread may be
        // inside our callback waiting for this same lock, and `watch` waits for that thread.
        let new_dir = {
            let mut watched = self
                .watched
                .lock()
                .map_err(|_| err(notify::Error::generic("watcher state poisoned")))?;
            let files = watched.entry(dir.clone()).or_default();
            files.push((name, notify.clone()));
            files.len() == 1
        };
        if new_dir {
            self.watcher
                .watch(&dir, RecursiveMode::NonRecursive)
                .map_err(err)?;
        }
        Ok(Changes { notify, poll: POLL })
    }
}

fn wake_matching(routes: &Watched, path: &Path) {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return;
    };
    let Some(files) = routes.get(dir) else { return };
    // `..data`, `..data_tmp` and `..<timestamp>` are the kubelet's atomic-update machinery.
    let kubelet = name.to_str().is_some_and(|n| n.starts_with(".."));
    for (watched, notify) in files {
        if kubelet || watched == name {
            notify.notify_one();
        }
    }
}

/// "This file may have changed" notifications for one watched file.
pub struct Changes {
    notify: Arc<Notify>,
    poll: Duration,
}

impl Changes {
    /// Waits for the next (debounced) event, or the poll interval.
    pub async fn next(&mut self) {
        tokio::select! {
            () = self.notify.notified() => {}
            () = tokio::time::sleep(self.poll) => return,
        }
        let deadline = tokio::time::Instant::now() + MAX_DEBOUNCE;
        loop {
            tokio::select! {
                () = self.notify.notified() => {}
                () = tokio::time::sleep(DEBOUNCE) => return,
                () = tokio::time::sleep_until(deadline) => return,
            }
        }
    }
}

impl Changes {
    /// Waits until the content of `file` differs from `last` (which it then updates) and has
    /// settled (see [`Changes::next_settled`]): the loop every small watched file (a key, the
    /// admin token) needs.
    pub async fn next_content(&mut self, file: &Path, last: &mut Fingerprint) {
        let file = file.to_path_buf();
        self.next_settled(last, move || (file_fingerprint(&file), ()))
            .await;
    }

    /// Waits until a read of the file differs from `last` and has settled: `read` (which
    /// returns the content's fingerprint and what the caller wants of it) is called after
    /// each (debounced) event, and again one debounce (150 ms) later until two reads in a row
    /// agree. Then `last` is updated and the last read returned. Content that settles back
    /// to `last` is not returned. Reads run on the blocking pool: a rules file can be large.
    ///
    /// Why twice: a writer that stops mid-file for longer than the debounce (a slow `cp`,
    /// an editor, a script writing rule by rule) leaves a shorter file, and a YAML rules
    /// file cut after any line is a valid file with fewer rules (JSON and gzip cut short do
    /// not parse). Applying it would lift the missing rules until the rest arrives.
    pub async fn next_settled<T, R>(&mut self, last: &mut Fingerprint, read: R) -> T
    where
        T: Send + 'static,
        R: Fn() -> (Fingerprint, T) + Clone + Send + 'static,
    {
        loop {
            self.next().await;
            let Ok((mut previous, _)) = tokio::task::spawn_blocking(read.clone()).await else {
                continue;
            };
            if previous == *last {
                continue;
            }
            loop {
                tokio::time::sleep(DEBOUNCE).await;
                let Ok((fp, content)) = tokio::task::spawn_blocking(read.clone()).await else {
                    break;
                };
                if fp != previous {
                    previous = fp;
                    continue;
                }
                if fp == *last {
                    break;
                }
                *last = fp;
                return content;
            }
        }
    }
}

/// A content fingerprint: a reload happens only when it changes.
pub type Fingerprint = [u8; 32];

/// Fingerprint of a small file as read now (a read error counts as content).
pub fn file_fingerprint(file: &Path) -> Fingerprint {
    let bytes = std::fs::read(file).unwrap_or_else(|e| e.to_string().into_bytes());
    fingerprint([bytes.as_slice()])
}

/// SHA-256 over several parts (a read error's text counts as content, so a file that keeps
/// failing the same way is reported once, not at every poll).
pub fn fingerprint<'a>(parts: impl IntoIterator<Item = &'a [u8]>) -> Fingerprint {
    let mut joined = Vec::new();
    for p in parts {
        joined.extend_from_slice(&(p.len() as u64).to_be_bytes());
        joined.extend_from_slice(p);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(digest(&SHA256, &joined).as_ref());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn changed_within(c: &mut Changes, d: Duration) -> bool {
        tokio::time::timeout(d, c.next()).await.is_ok()
    }

    #[tokio::test]
    async fn a_kubelet_style_symlink_swap_wakes_the_watch_and_unrelated_files_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir(d.join("..v1")).unwrap();
        std::fs::write(d.join("..v1/rules.json"), "1").unwrap();
        std::os::unix::fs::symlink("..v1", d.join("..data")).unwrap();
        std::os::unix::fs::symlink("..data/rules.json", d.join("rules.json")).unwrap();

        let mut w = FileWatcher::new().unwrap();
        let mut changes = w.watch(&d.join("rules.json")).unwrap();

        std::fs::write(d.join("unrelated.txt"), "x").unwrap();
        assert!(!changed_within(&mut changes, Duration::from_millis(600)).await);

        std::fs::create_dir(d.join("..v2")).unwrap();
        std::fs::write(d.join("..v2/rules.json"), "2").unwrap();
        std::os::unix::fs::symlink("..v2", d.join("..data_tmp")).unwrap();
        std::fs::rename(d.join("..data_tmp"), d.join("..data")).unwrap();
        std::fs::remove_dir_all(d.join("..v1")).unwrap();
        assert!(changed_within(&mut changes, Duration::from_secs(5)).await);
        assert_eq!(std::fs::read_to_string(d.join("rules.json")).unwrap(), "2");
    }

    /// `file` holding `seen` (its fingerprint, as last read, is returned), then `written`
    /// with the change notified, as the watcher would.
    fn watched_then_written(file: &Path, seen: &str, written: &str) -> (Changes, Fingerprint) {
        std::fs::write(file, seen).unwrap();
        let last = file_fingerprint(file);
        let notify = Arc::new(Notify::new());
        std::fs::write(file, written).unwrap();
        notify.notify_one();
        (Changes { notify, poll: POLL }, last)
    }

    #[tokio::test]
    async fn a_file_written_in_two_steps_is_read_only_once_both_are_written() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("rules.yaml");
        let first_step = "rules:\n  - sub: alice\n";
        let both_steps = "rules:\n  - sub: alice\n  - sub: mallory\n";
        let (mut changes, mut last) = watched_then_written(&file, "rules: []\n", first_step);
        let reads = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let read = {
            let (file, reads) = (file.clone(), reads.clone());
            move || {
                let text = std::fs::read_to_string(&file).unwrap();
                // The writer's first step (a valid YAML rules file on its own) is there; its second
                // lands right after the first read.
                if reads.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
                    use std::io::Write;
                    let mut f = std::fs::OpenOptions::new()
                        .append(true)
                        .open(&file)
                        .unwrap();
                    f.write_all(b"  - sub: mallory\n").unwrap();
                }
                (fingerprint([text.as_bytes()]), text)
            }
        };

        let read_as = tokio::time::timeout(
            Duration::from_secs(5),
            changes.next_settled(&mut last, read),
        )
        .await
        .expect("the file settles");

        assert_eq!(read_as, both_steps, "never the first step alone");
        assert_eq!(last, fingerprint([both_steps.as_bytes()]));
        assert_eq!(reads.load(std::sync::atomic::Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_change_undone_before_it_settles_is_no_change() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("admin-token");
        let (mut changes, mut last) = watched_then_written(&file, "old", "new");
        let read = {
            let file = file.clone();
            move || {
                let fp = file_fingerprint(&file);
                // Undone right after the first read.
                std::fs::write(&file, "old").unwrap();
                (fp, ())
            }
        };

        let settled = tokio::time::timeout(
            Duration::from_millis(800),
            changes.next_settled(&mut last, read),
        )
        .await;

        assert!(
            settled.is_err(),
            "content back to the last seen is no change"
        );
        assert_eq!(last, fingerprint([b"old".as_slice()]));
    }

    #[test]
    fn fingerprints_separate_parts() {
        assert_ne!(
            fingerprint([b"ab".as_slice(), b"c".as_slice()]),
            fingerprint([b"a".as_slice(), b"bc".as_slice()])
        );
    }
}
