//! Durable pushed rules in `revocation.state_dir`.
//!
//! The pushed layer is written whole, in the rules-file format, to `pushed-rules.json`: a
//! temp file is written and fsynced, renamed over the old one, and the directory fsynced, so
//! after a crash at any point the file is either the old or the new version, never a torn
//! mix (the rename is atomic; the directory fsync makes the rename itself durable). The
//! admin API answers 201 only after that, so a `kill -9` right after the answer loses
//! nothing. A directory sync that fails after the rename is [`PersistError::Unsynced`]: the
//! new file is in place (and is what the next start reads, unless the machine crashes), so
//! the caller must not act as if the old one were still there. At start the file is read
//! with the same validation as a rules file; a file that exists but cannot be read is an
//! error that stops `serve`.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::revocation::RuleTable;
use crate::revocation::parse::{self, RulesError};

/// The file name inside `state_dir`.
pub const STATE_FILE: &str = "pushed-rules.json";

#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Invalid(#[from] RulesError),
    /// The new file replaced the old one, but the directory could not be synced, so the
    /// rename may be lost if the machine crashes.
    #[error("{}: the new state file is in place, but syncing the directory failed: {source}", dir.display())]
    Unsynced {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write the pushed rules as JSON: {0}")]
    Json(#[from] serde_json::Error),
}

/// Where pushed rules are kept.
#[derive(Debug, Clone)]
pub struct StateDir {
    dir: PathBuf,
    /// Test hook: the directory sync after the rename fails, as it can on a failing disk.
    #[cfg(test)]
    fail_dir_sync: bool,
}

impl StateDir {
    /// The state directory at `dir`, without touching the disk: enough to [`load`] from
    /// (a directory that does not exist holds no saved rules), as `veto check-config` does.
    ///
    /// [`load`]: StateDir::load
    pub fn at(dir: &Path) -> StateDir {
        StateDir {
            dir: dir.to_path_buf(),
            #[cfg(test)]
            fail_dir_sync: false,
        }
    }

    /// Opens (creating if needed) the state directory.
    pub fn open(dir: &Path) -> Result<StateDir, PersistError> {
        fs::create_dir_all(dir).map_err(|source| PersistError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        Ok(StateDir::at(dir))
    }

    /// This directory, with every directory sync failing (for tests of that failure).
    #[cfg(test)]
    pub(crate) fn failing_dir_sync(self) -> StateDir {
        StateDir {
            fail_dir_sync: true,
            ..self
        }
    }

    pub fn file(&self) -> PathBuf {
        self.dir.join(STATE_FILE)
    }

    /// The pushed rules saved by the last run; empty on a first start.
    pub fn load(&self) -> Result<RuleTable, PersistError> {
        let file = self.file();
        if !file.try_exists().map_err(|source| PersistError::Io {
            path: file.clone(),
            source,
        })? {
            return Ok(RuleTable::default());
        }
        Ok(parse::load_file(&file)?)
    }

    /// Replaces the saved rules with `table`, durably.
    pub fn save(&self, table: &RuleTable) -> Result<(), PersistError> {
        let rules: Vec<serde_json::Value> = table
            .rules()
            .map(|r| serde_json::Value::Object(r.to_json()))
            .collect();
        let body = serde_json::json!({ "rules": rules });
        let file = self.file();
        let tmp = self.dir.join(format!(".{STATE_FILE}.tmp"));
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| PersistError::Io { path, source }
        };
        // Serialized before the old file is touched: an error here leaves it as it was.
        let bytes = serde_json::to_vec_pretty(&body)?;
        let mut f = File::create(&tmp).map_err(io(&tmp))?;
        f.write_all(&bytes).map_err(io(&tmp))?;
        f.sync_all().map_err(io(&tmp))?;
        drop(f);
        fs::rename(&tmp, &file).map_err(io(&file))?;
        self.sync_dir().map_err(|source| PersistError::Unsynced {
            dir: self.dir.clone(),
            source,
        })
    }

    /// Makes the directory's entries (the rename) durable.
    fn sync_dir(&self) -> std::io::Result<()> {
        #[cfg(test)]
        if self.fail_dir_sync {
            return Err(std::io::Error::other("directory sync failed (test hook)"));
        }
        File::open(&self.dir).and_then(|d| d.sync_all())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::revocation::{Rule, Scope, Selector};

    #[test]
    fn saved_rules_load_back_and_a_first_start_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(&dir.path().join("state")).unwrap();
        assert!(state.load().unwrap().is_empty());
        let mut t = RuleTable::default();
        t.insert(Rule {
            selector: Selector::Session("s1".into()),
            scope: Scope::new(None, None, Some(4_000_000_000), Some("r".into())),
        });
        state.save(&t).unwrap();
        let back = state.load().unwrap();
        assert_eq!(back.len(), 1);
        assert!(back.get(&Selector::Session("s1".into()), None).is_some());
    }

    #[test]
    fn an_unreadable_state_file_is_an_error_not_an_empty_start() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(dir.path()).unwrap();
        std::fs::write(state.file(), "{ torn").unwrap();
        assert!(state.load().is_err());
    }
}
