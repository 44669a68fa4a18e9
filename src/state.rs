//! The one place a revocation snapshot is built and published.
//!
//! A single writer task owns the rule layers. File reloads, pushes, deletes and expiry are
//! all commands to it, so versions only grow and no pushed rule is lost to a racing reload.
//! Commands that arrive together are applied together and published once (a burst of pushes
//! costs one swap). Readers call [`SnapshotReader::load`]: an `arc-swap` load, no lock.
//!
//! Only [`Writer::run`] reads the clock; every step below it is given `now`, so expiry and
//! pruning are tested at a set time, without waiting.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::{mpsc, oneshot};

use crate::clock::{self, UnixTime};
use crate::metrics::Metrics;
use crate::revocation::{Rule, RuleTable, Selector, Snapshot, Source};
use crate::sources::persist::{PersistError, StateDir};

/// Commands waiting beyond this make senders wait: back-pressure, not unbounded memory.
const QUEUE: usize = 1024;

/// Longest sleep of the expiry timer, so a clock step is noticed within this time.
const MAX_EXPIRY_SLEEP: Duration = Duration::from_secs(60);

/// Moved to [`crate::clock`]; kept until the admin API's call sites move there too.
pub use crate::clock::unix_now;

/// Read access to the published snapshot, for the request path and the admin API.
#[derive(Clone)]
pub struct SnapshotReader(Arc<ArcSwap<Snapshot>>);

impl SnapshotReader {
    pub fn load(&self) -> arc_swap::Guard<Arc<Snapshot>> {
        self.0.load()
    }

    pub fn load_full(&self) -> Arc<Snapshot> {
        self.0.load_full()
    }

    /// A reader of `snapshot`, never changed (for tests of the request path).
    #[cfg(test)]
    pub(crate) fn fixed(snapshot: Snapshot) -> SnapshotReader {
        SnapshotReader(Arc::new(ArcSwap::from_pointee(snapshot)))
    }
}

/// Why a delete did not happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeleteOutcome {
    Deleted,
    NotFound,
    /// The rule comes from the rules file; only editing the file removes it.
    FromFile,
}

/// Why a change was not applied.
#[derive(Debug, Clone, thiserror::Error)]
pub enum WriteError {
    #[error("the snapshot writer has stopped")]
    Gone,
    /// The change could not be made durable in `state_dir`, so it was not applied.
    #[error("cannot save pushed rules: {0}")]
    Persist(String),
    /// The change is applied and the new state file is in place, but it may not survive a
    /// crash of the machine (the directory could not be synced).
    #[error(
        "the change is applied, but it may not survive a restart: {0}; check the rules after the next start"
    )]
    NotDurable(String),
}

enum Command {
    ReplaceFile {
        /// Boxed: a table is large and most commands are small pushes.
        table: Box<RuleTable>,
        done: oneshot::Sender<u64>,
    },
    Push {
        rules: Vec<Rule>,
        done: oneshot::Sender<Result<u64, WriteError>>,
    },
    Delete {
        selector: Selector,
        iss: Option<String>,
        done: oneshot::Sender<Result<(DeleteOutcome, u64), WriteError>>,
    },
}

/// A handle to send changes to the writer.
#[derive(Clone)]
pub struct StateHandle {
    tx: mpsc::Sender<Command>,
    reader: SnapshotReader,
}

impl StateHandle {
    pub fn reader(&self) -> SnapshotReader {
        self.reader.clone()
    }

    /// Replaces the rules file's layer; resolves with the version that holds it.
    pub async fn replace_file(&self, table: RuleTable) -> Result<u64, WriteError> {
        let (done, rx) = oneshot::channel();
        self.send(Command::ReplaceFile {
            table: Box::new(table),
            done,
        })
        .await?;
        rx.await.map_err(|_| WriteError::Gone)
    }

    /// Adds rules to the pushed layer, all at once; resolves once they are durable (with a
    /// `state_dir`) and published.
    pub async fn push(&self, rules: Vec<Rule>) -> Result<u64, WriteError> {
        let (done, rx) = oneshot::channel();
        self.send(Command::Push { rules, done }).await?;
        rx.await.map_err(|_| WriteError::Gone)?
    }

    /// Deletes a pushed rule.
    pub async fn delete(
        &self,
        selector: Selector,
        iss: Option<String>,
    ) -> Result<(DeleteOutcome, u64), WriteError> {
        let (done, rx) = oneshot::channel();
        self.send(Command::Delete {
            selector,
            iss,
            done,
        })
        .await?;
        rx.await.map_err(|_| WriteError::Gone)?
    }

    async fn send(&self, cmd: Command) -> Result<(), WriteError> {
        self.tx.send(cmd).await.map_err(|_| WriteError::Gone)
    }
}

/// The writer's own state: the layers it last published.
pub struct Writer {
    rx: mpsc::Receiver<Command>,
    published: Arc<ArcSwap<Snapshot>>,
    file: Arc<RuleTable>,
    pushed: RuleTable,
    version: u64,
    /// Seconds after its `issued_before` that a cutoff rule can no longer catch a token:
    /// `revocation.max_token_lifetime` plus the largest issuer leeway (not the lifetime
    /// alone, which is what a Check enforces per issuer).
    prune_after: Option<i64>,
    metrics: Arc<Metrics>,
    /// Where pushed rules are made durable, when configured.
    state_dir: Option<StateDir>,
}

/// Creates the writer with the initial layers, pruned as of now, published as version 1.
/// `prune_after`: see [`Writer`]'s field of that name.
pub fn writer(
    file: RuleTable,
    pushed: RuleTable,
    prune_after: Option<Duration>,
    metrics: Arc<Metrics>,
    state_dir: Option<StateDir>,
) -> (Writer, StateHandle) {
    let prune_after = prune_after.map(clock::seconds);
    writer_at(
        file,
        pushed,
        prune_after,
        metrics,
        state_dir,
        clock::unix_now(),
    )
}

/// [`writer`], pruned as of `now`.
fn writer_at(
    file: RuleTable,
    pushed: RuleTable,
    prune_after: Option<i64>,
    metrics: Arc<Metrics>,
    state_dir: Option<StateDir>,
    now: UnixTime,
) -> (Writer, StateHandle) {
    let (tx, rx) = mpsc::channel(QUEUE);
    let (file, pruned) = prune_table(&file, now, prune_after);
    pruned.log(Source::File, tracing::Level::INFO);
    let file = Arc::new(file);
    let (pushed, pruned) = prune_table(&pushed, now, prune_after);
    pruned.log(Source::Pushed, tracing::Level::INFO);
    let snapshot = Snapshot {
        version: 1,
        file: file.clone(),
        pushed: Arc::new(pushed.clone()),
    };
    metrics.snapshot_published(1, snapshot.file.len(), snapshot.pushed.len());
    let published = Arc::new(ArcSwap::from_pointee(snapshot));
    let handle = StateHandle {
        tx,
        reader: SnapshotReader(published.clone()),
    };
    let writer = Writer {
        rx,
        published,
        file,
        pushed,
        version: 1,
        prune_after,
        metrics,
        state_dir,
    };
    (writer, handle)
}

/// What to tell each sender once the batch is published.
enum Reply {
    File(oneshot::Sender<u64>),
    Push(oneshot::Sender<Result<u64, WriteError>>),
    Delete(
        oneshot::Sender<Result<(DeleteOutcome, u64), WriteError>>,
        DeleteOutcome,
    ),
}

impl Writer {
    /// Runs until every [`StateHandle`] is dropped.
    pub async fn run(mut self) {
        loop {
            let sleep = self.until_next_expiry(clock::unix_now());
            let first = tokio::select! {
                cmd = self.rx.recv() => match cmd {
                    Some(cmd) => Some(cmd),
                    None => return,
                },
                () = tokio::time::sleep(sleep) => None,
            };
            // Coalesce whatever else is already queued into the same publish.
            let mut batch: Vec<Command> = first.into_iter().collect();
            while batch.len() < QUEUE {
                match self.rx.try_recv() {
                    Ok(cmd) => batch.push(cmd),
                    Err(_) => break,
                }
            }
            self.step(batch, clock::unix_now());
        }
    }

    /// Applies `batch` (possibly empty: a wake-up for expiry), prunes what has ended by
    /// `now`, saves and publishes once, and answers every sender.
    fn step(&mut self, batch: Vec<Command>, now: UnixTime) {
        let mut replies = Vec::new();
        let mut changed = Changed::default();
        // The pushed layer as it was, to roll back to if it cannot be saved.
        let before = self.state_dir.as_ref().map(|_| self.pushed.clone());
        for cmd in batch {
            changed.add(self.apply(cmd, &mut replies));
        }
        // Only changes a caller waits for are saved here. Expiry alone needs no save: an
        // expired rule in the state file is dropped when it is loaded anyway, and a save
        // that keeps failing must not turn the expiry timer into a busy loop.
        let must_save = changed.pushed;
        changed.add(self.prune(now));
        let mut failure = None;
        if must_save && let Err(e) = self.save() {
            failure = Some(match e {
                // The new file is in place and will be read at the next start, crash or
                // not (its rename may be lost only with the machine). Memory keeps what the
                // disk now holds: rolling back would lift a pushed revocation now, only for
                // it to come back at the next start, or bring back a deleted rule now and
                // lose it then. Nothing was acknowledged as durable, so the caller hears
                // that the change is in force but may not survive.
                PersistError::Unsynced { .. } => {
                    tracing::error!(error = %e, "pushed rules saved, but the save may not survive a crash; the change stays in force");
                    WriteError::NotDurable(e.to_string())
                }
                // Nothing replaced the old file: the disk holds the layer as it was, and so
                // does memory after the rollback.
                _ => {
                    tracing::error!(error = %e, "pushed rules not saved; the change is rolled back");
                    if let Some(before) = before {
                        self.pushed = before;
                        self.prune(now);
                    }
                    WriteError::Persist(e.to_string())
                }
            });
        }
        if changed.file || changed.pushed {
            self.publish();
        }
        for reply in replies {
            // A sender that gave up waiting is no error of ours.
            match reply {
                Reply::File(tx) => {
                    let _ = tx.send(self.version);
                }
                Reply::Push(tx) => {
                    let _ = tx.send(match &failure {
                        Some(e) => Err(e.clone()),
                        None => Ok(self.version),
                    });
                }
                Reply::Delete(tx, outcome) => {
                    let _ = tx.send(match &failure {
                        Some(e) if outcome == DeleteOutcome::Deleted => Err(e.clone()),
                        _ => Ok((outcome, self.version)),
                    });
                }
            }
        }
    }

    /// Writes the pushed layer to `state_dir`, when there is one.
    fn save(&self) -> Result<(), PersistError> {
        let Some(state) = &self.state_dir else {
            return Ok(());
        };
        let save = || state.save(&self.pushed);
        // fsync takes milliseconds: on the multi-threaded runtime, let other tasks (Checks)
        // move off this worker meanwhile.
        match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
            Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(save),
            _ => save(),
        }
    }

    fn apply(&mut self, cmd: Command, replies: &mut Vec<Reply>) -> Changed {
        match cmd {
            Command::ReplaceFile { table, done } => {
                self.file = Arc::new(*table);
                replies.push(Reply::File(done));
                Changed {
                    file: true,
                    pushed: false,
                }
            }
            Command::Push { rules, done } => {
                for rule in rules {
                    self.pushed.insert(rule);
                }
                replies.push(Reply::Push(done));
                Changed {
                    file: false,
                    pushed: true,
                }
            }
            Command::Delete {
                selector,
                iss,
                done,
            } => {
                let outcome = if self.pushed.remove(&selector, iss.as_deref()) {
                    DeleteOutcome::Deleted
                } else if self.file.get(&selector, iss.as_deref()).is_some() {
                    DeleteOutcome::FromFile
                } else {
                    DeleteOutcome::NotFound
                };
                replies.push(Reply::Delete(done, outcome));
                Changed {
                    file: false,
                    pushed: outcome == DeleteOutcome::Deleted,
                }
            }
        }
    }

    /// Drops expired rules from both layers. Rules of the file leaving are logged at info
    /// (an operator wrote them, and `veto_rules` now counts fewer than the file holds);
    /// pushed rules expire all the time (every session rule does), so at debug.
    fn prune(&mut self, now: UnixTime) -> Changed {
        let mut changed = Changed::default();
        if self.file.has_prunable(now, self.prune_after) {
            let (file, pruned) = prune_table(&self.file, now, self.prune_after);
            pruned.log(Source::File, tracing::Level::INFO);
            self.file = Arc::new(file);
            changed.file = true;
        }
        if self.pushed.has_prunable(now, self.prune_after) {
            let (pushed, pruned) = prune_table(&self.pushed, now, self.prune_after);
            pruned.log(Source::Pushed, tracing::Level::DEBUG);
            self.pushed = pushed;
            changed.pushed = true;
        }
        changed
    }

    /// How long the writer may sleep at `now` before some rule ends.
    fn until_next_expiry(&self, now: UnixTime) -> Duration {
        [
            self.file.next_expiry(self.prune_after),
            self.pushed.next_expiry(self.prune_after),
        ]
        .into_iter()
        .flatten()
        .min()
        .map_or(MAX_EXPIRY_SLEEP, |at| {
            clock::until(at, now).min(MAX_EXPIRY_SLEEP)
        })
    }

    fn publish(&mut self) {
        self.version += 1;
        let snapshot = Snapshot {
            version: self.version,
            file: self.file.clone(),
            pushed: Arc::new(self.pushed.clone()),
        };
        self.metrics
            .snapshot_published(self.version, snapshot.file.len(), snapshot.pushed.len());
        tracing::debug!(
            version = self.version,
            file_rules = snapshot.file.len(),
            pushed_rules = snapshot.pushed.len(),
            "snapshot published"
        );
        self.published.store(Arc::new(snapshot));
    }
}

/// `table` without the rules that can no longer match at `now`, and how many went, by why.
fn prune_table(table: &RuleTable, now: UnixTime, prune_after: Option<i64>) -> (RuleTable, Pruned) {
    let kept = table.pruned(now, prune_after);
    let gone = table.len().saturating_sub(kept.len());
    // Counting the expired ones walks the table again: only when some rule went.
    let expired = if gone == 0 {
        0
    } else {
        table.rules().filter(|r| !r.scope.is_live(now)).count()
    };
    let pruned = Pruned {
        expired,
        cutoff_past_lifetime: gone.saturating_sub(expired),
    };
    (kept, pruned)
}

/// Rules dropped by one prune, by why they can no longer match anything.
#[derive(Debug, Default, PartialEq, Eq)]
struct Pruned {
    /// Their `expires_at` has passed.
    expired: usize,
    /// Their `issued_before` is older than `max_token_lifetime` (plus leeway): every token
    /// they could revoke is refused as too old anyway.
    cutoff_past_lifetime: usize,
}

impl Pruned {
    /// One line when any rule went (tracing takes the level as a constant: one arm each).
    fn log(&self, source: Source, level: tracing::Level) {
        let pruned = self.expired + self.cutoff_past_lifetime;
        if pruned == 0 {
            return;
        }
        macro_rules! pruned {
            ($level:expr) => {
                tracing::event!(
                    $level,
                    source = source.as_str(),
                    pruned,
                    expired = self.expired,
                    cutoff_past_lifetime = self.cutoff_past_lifetime,
                    "rules pruned: they can no longer match (expired, or a cutoff older than max_token_lifetime)"
                )
            };
        }
        if level == tracing::Level::INFO {
            pruned!(tracing::Level::INFO);
        } else {
            pruned!(tracing::Level::DEBUG);
        }
    }
}

/// Which layers a batch of commands changed.
#[derive(Default, Clone, Copy)]
struct Changed {
    file: bool,
    pushed: bool,
}

impl Changed {
    fn add(&mut self, other: Changed) {
        self.file |= other.file;
        self.pushed |= other.pushed;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::revocation::Scope;

    fn sub(s: &str) -> Rule {
        Rule {
            selector: Selector::Sub(s.into()),
            scope: Scope::new(None, None, None, None),
        }
    }

    #[tokio::test]
    async fn pushes_and_file_reloads_interleave_without_losing_rules() {
        let (w, handle) = writer(
            RuleTable::default(),
            RuleTable::default(),
            None,
            Arc::default(),
            None,
        );
        tokio::spawn(w.run());
        let mut tasks = Vec::new();
        for i in 0..200 {
            let h = handle.clone();
            tasks.push(tokio::spawn(async move {
                if i % 10 == 0 {
                    let mut t = RuleTable::default();
                    t.insert(sub(&format!("file-{i}")));
                    h.replace_file(t).await.unwrap();
                } else {
                    h.push(vec![sub(&format!("pushed-{i}"))]).await.unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let snap = handle.reader().load_full();
        assert_eq!(snap.pushed.len(), 180);
        assert_eq!(snap.file.len(), 1);
        assert!(snap.version > 1);
    }

    #[tokio::test]
    async fn deleting_a_file_rule_is_refused_and_a_pushed_one_goes() {
        let mut file = RuleTable::default();
        file.insert(sub("f"));
        let (w, handle) = writer(file, RuleTable::default(), None, Arc::default(), None);
        tokio::spawn(w.run());
        let v1 = handle.push(vec![sub("p")]).await.unwrap();
        let (o, _) = handle
            .delete(Selector::Sub("f".into()), None)
            .await
            .unwrap();
        assert_eq!(o, DeleteOutcome::FromFile);
        let (o, v2) = handle
            .delete(Selector::Sub("p".into()), None)
            .await
            .unwrap();
        assert_eq!(o, DeleteOutcome::Deleted);
        assert!(v2 > v1);
        let (o, _) = handle
            .delete(Selector::Sub("p".into()), None)
            .await
            .unwrap();
        assert_eq!(o, DeleteOutcome::NotFound);
    }

    const NOW: UnixTime = 1_800_000_000;

    fn expiring(s: &str, at: UnixTime) -> Rule {
        Rule {
            selector: Selector::Sub(s.into()),
            scope: Scope::new(None, None, Some(at), None),
        }
    }

    fn cutoff(s: &str, issued_before: UnixTime) -> Rule {
        Rule {
            selector: Selector::Sub(s.into()),
            scope: Scope::new(None, Some(issued_before), None, None),
        }
    }

    fn table(rules: impl IntoIterator<Item = Rule>) -> RuleTable {
        let mut t = RuleTable::default();
        rules.into_iter().for_each(|r| t.insert(r));
        t
    }

    /// A push as the writer receives it, and where its answer arrives.
    fn push(rules: Vec<Rule>) -> (Command, oneshot::Receiver<Result<u64, WriteError>>) {
        let (done, rx) = oneshot::channel();
        (Command::Push { rules, done }, rx)
    }

    type DeleteAnswer = oneshot::Receiver<Result<(DeleteOutcome, u64), WriteError>>;

    fn delete(s: &str) -> (Command, DeleteAnswer) {
        let (done, rx) = oneshot::channel();
        let cmd = Command::Delete {
            selector: Selector::Sub(s.into()),
            iss: None,
            done,
        };
        (cmd, rx)
    }

    /// A writer started at [`NOW`] with its own metrics: the set-up every test here shares.
    fn test_writer(
        file: RuleTable,
        pushed: RuleTable,
        prune_after: Option<i64>,
        state_dir: Option<StateDir>,
    ) -> (Writer, StateHandle) {
        writer_at(file, pushed, prune_after, Arc::default(), state_dir, NOW)
    }

    fn published(handle: &StateHandle, s: &str) -> bool {
        let snap = handle.reader().load_full();
        let sel = Selector::Sub(s.into());
        snap.pushed.get(&sel, None).is_some() || snap.file.get(&sel, None).is_some()
    }

    #[test]
    fn a_pushed_rule_is_in_force_until_its_expiry_and_pruned_at_it() {
        let (mut w, handle) = test_writer(RuleTable::default(), RuleTable::default(), None, None);
        assert_eq!(w.until_next_expiry(NOW), MAX_EXPIRY_SLEEP);
        let (cmd, mut answer) = push(vec![expiring("alice", NOW + 30)]);
        w.step(vec![cmd], NOW);
        let v = answer.try_recv().unwrap().unwrap();
        assert!(published(&handle, "alice"));
        assert_eq!(w.until_next_expiry(NOW), Duration::from_secs(30));
        assert_eq!(w.until_next_expiry(NOW + 29), Duration::from_secs(1));

        // A wake-up before the expiry changes nothing (no new version either).
        w.step(Vec::new(), NOW + 29);
        assert!(published(&handle, "alice"));
        assert_eq!(handle.reader().load().version, v);

        w.step(Vec::new(), NOW + 30);
        assert!(!published(&handle, "alice"));
        assert!(handle.reader().load().version > v);
        assert_eq!(w.until_next_expiry(NOW + 30), MAX_EXPIRY_SLEEP);
    }

    #[test]
    fn a_far_expiry_still_wakes_the_writer_within_a_minute_for_clock_steps() {
        let (w, _handle) = test_writer(
            table([expiring("f", NOW + 86_400)]),
            RuleTable::default(),
            None,
            None,
        );
        assert_eq!(w.until_next_expiry(NOW), MAX_EXPIRY_SLEEP);
        // A clock stepped past the expiry: no wait, and no negative one.
        assert_eq!(w.until_next_expiry(NOW + 90_000), Duration::ZERO);
    }

    #[test]
    fn rules_that_ended_before_the_start_are_not_published() {
        let (_w, handle) = writer_at(
            table([expiring("file-old", NOW - 1), expiring("file-new", NOW + 1)]),
            table([
                cutoff("pushed-old", NOW - 3600),
                cutoff("pushed-new", NOW - 10),
            ]),
            Some(3600),
            Arc::default(),
            None,
            NOW,
        );
        assert!(!published(&handle, "file-old"));
        assert!(published(&handle, "file-new"));
        assert!(!published(&handle, "pushed-old"));
        assert!(published(&handle, "pushed-new"));
    }

    #[test]
    fn a_cutoff_goes_once_no_token_it_could_catch_is_accepted_any_more() {
        // prune_after 3600: a cutoff at NOW - 100 can catch tokens until NOW + 3500.
        let (mut w, handle) = test_writer(
            table([cutoff("bob", NOW - 100)]),
            RuleTable::default(),
            Some(3600),
            None,
        );
        assert_eq!(w.until_next_expiry(NOW), MAX_EXPIRY_SLEEP);
        assert_eq!(w.until_next_expiry(NOW + 3440), Duration::from_secs(60));
        w.step(Vec::new(), NOW + 3499);
        assert!(published(&handle, "bob"));
        w.step(Vec::new(), NOW + 3500);
        assert!(!published(&handle, "bob"));
    }

    #[test]
    fn a_rule_pushed_already_expired_is_answered_but_never_published() {
        let (mut w, handle) = test_writer(RuleTable::default(), RuleTable::default(), None, None);
        let (cmd, mut answer) = push(vec![expiring("late", NOW)]);
        w.step(vec![cmd], NOW);
        assert!(answer.try_recv().unwrap().is_ok());
        assert!(!published(&handle, "late"));
    }

    #[test]
    fn a_save_that_fails_before_the_rename_leaves_memory_and_disk_as_they_were() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(dir.path()).unwrap();
        let (mut w, handle) = test_writer(
            RuleTable::default(),
            RuleTable::default(),
            None,
            Some(state.clone()),
        );
        let (cmd, mut answer) = push(vec![sub("kept")]);
        w.step(vec![cmd], NOW);
        assert!(answer.try_recv().unwrap().is_ok());
        // The temp file's name taken by a directory: the new file cannot even be written.
        std::fs::create_dir(dir.path().join(".pushed-rules.json.tmp")).unwrap();
        let (cmd, mut answer) = push(vec![sub("refused")]);
        w.step(vec![cmd], NOW);
        assert!(matches!(
            answer.try_recv().unwrap(),
            Err(WriteError::Persist(_))
        ));
        assert!(!published(&handle, "refused"));
        let on_disk = state.load().unwrap();
        assert_eq!(on_disk.len(), 1);
        assert!(on_disk.get(&Selector::Sub("kept".into()), None).is_some());
    }

    #[test]
    fn a_save_whose_directory_sync_fails_keeps_the_change_as_the_disk_has_it() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(dir.path()).unwrap();
        let (mut w, handle) = test_writer(
            RuleTable::default(),
            table([sub("lifted")]),
            None,
            Some(state.clone().failing_dir_sync()),
        );
        let (push_cmd, mut pushed) = push(vec![sub("revoked")]);
        let (delete_cmd, mut deleted) = delete("lifted");
        w.step(vec![push_cmd, delete_cmd], NOW);
        // Neither answer says "done": the caller was never told the change is durable...
        let err = pushed.try_recv().unwrap().unwrap_err();
        assert!(matches!(err, WriteError::NotDurable(_)));
        assert!(
            err.to_string().contains("may not survive a restart"),
            "{err}"
        );
        assert!(matches!(
            deleted.try_recv().unwrap(),
            Err(WriteError::NotDurable(_))
        ));
        // ...and memory holds what the next start will read: the pushed rule stays in
        // force, the deleted one stays lifted.
        let on_disk = state.load().unwrap();
        assert!(
            on_disk
                .get(&Selector::Sub("revoked".into()), None)
                .is_some()
        );
        assert!(on_disk.get(&Selector::Sub("lifted".into()), None).is_none());
        assert!(published(&handle, "revoked"));
        assert!(!published(&handle, "lifted"));
    }

    #[test]
    fn a_prune_counts_expired_rules_and_cutoffs_past_the_token_lifetime() {
        let now = 1_800_000_000;
        let mut t = RuleTable::default();
        t.insert(sub("kept"));
        t.insert(Rule {
            selector: Selector::Sub("expired".into()),
            scope: Scope::new(None, None, Some(now - 1), None),
        });
        t.insert(Rule {
            selector: Selector::Sub("old-cutoff".into()),
            scope: Scope::new(None, Some(now - 7200), None, None),
        });
        t.insert(Rule {
            selector: Selector::Sub("recent-cutoff".into()),
            scope: Scope::new(None, Some(now - 60), None, None),
        });
        let (kept, pruned) = prune_table(&t, now, Some(3600));
        assert_eq!(kept.len(), 2);
        assert_eq!(
            pruned,
            Pruned {
                expired: 1,
                cutoff_past_lifetime: 1
            }
        );
        let (kept, pruned) = prune_table(&kept, now, Some(3600));
        assert_eq!((kept.len(), pruned), (2, Pruned::default()));
    }
}
