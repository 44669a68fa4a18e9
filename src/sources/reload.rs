//! Reload loops: one task per watched source. Each re-reads its files when they may have
//! changed, skips content it has already seen, waits for new content to settle (two reads
//! one debounce apart agree), validates it in full, and only then swaps it in. An invalid,
//! truncated or deleted file keeps the last good state; the error is logged and counted
//! (SPEC §3 "Reloading").

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::file::{Changes, Fingerprint, fingerprint};
use crate::jwt::Issuer;
use crate::jwt::jwks::{self, KeyFile};
use crate::metrics::Metrics;
use crate::revocation::parse;
use crate::state::StateHandle;

/// Reads a rules file once: its content (gunzipped, size-limited) and that content's
/// fingerprint (a read error counts as content, so a file that keeps failing the same way
/// is reported once, not at every poll).
pub fn read_rules(file: &Path) -> (Fingerprint, Result<Vec<u8>, parse::RulesError>) {
    let bytes = parse::read_limited(file);
    let fp = match &bytes {
        Ok(b) => fingerprint([b.as_slice()]),
        Err(e) => fingerprint([e.to_string().as_bytes()]),
    };
    (fp, bytes)
}

/// Follows the rules file until the writer stops. `issuers` are the configured ones: a
/// rule naming another is an error, as it is at start.
pub async fn follow_rules(
    file: PathBuf,
    mut changes: Changes,
    mut last: Fingerprint,
    issuers: Vec<String>,
    state: StateHandle,
    metrics: Arc<Metrics>,
) {
    let issuers: Arc<[String]> = issuers.into();
    loop {
        let path = file.clone();
        let bytes = changes
            .next_settled(&mut last, move || read_rules(&path))
            .await;
        let (path, issuers_now) = (file.clone(), issuers.clone());
        // Parsing a large file is blocking work; keep it off the async workers that answer
        // Checks. The bytes are dropped before the table is handed on, so a large file is
        // never held twice.
        let Ok(parsed) = tokio::task::spawn_blocking(move || {
            bytes.and_then(|b| parse::parse_bytes(&b, &path, Some(&issuers_now)))
        })
        .await
        else {
            continue;
        };
        match parsed {
            Ok(table) => {
                let rules = table.len();
                let Ok(version) = state.replace_file(table).await else {
                    return;
                };
                metrics.rules_reload(true);
                tracing::info!(file = %file.display(), rules, version, "rules file reloaded");
                // The old table is freed once the last Check holding it finishes.
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                let _ = tokio::task::spawn_blocking(trim_heap).await;
            }
            Err(error) => {
                metrics.rules_reload(false);
                tracing::error!(
                    file = %file.display(),
                    %error,
                    "rules file rejected; the last good rules stay in force"
                );
            }
        }
    }
}

/// Follows one key file of an issuer for the life of the process.
pub async fn follow_key_file(
    issuer: Arc<Issuer>,
    kind: KeyFile,
    file: PathBuf,
    mut changes: Changes,
    mut last: Fingerprint,
    metrics: Arc<Metrics>,
) {
    let name = issuer.config.issuer.clone();
    loop {
        changes.next_content(&file, &mut last).await;
        match jwks::load_file(kind, &file) {
            Ok(loaded) => {
                for skipped in &loaded.skipped {
                    tracing::warn!(issuer = %name, file = %file.display(), key = %skipped, "key skipped");
                }
                jwks::install(&issuer, kind, loaded.keys);
                let count = issuer.key_count();
                metrics.keys_loaded(&name, count);
                metrics.keys_reload(&name, true);
                tracing::info!(issuer = %name, file = %file.display(), keys = count, "keys reloaded");
            }
            Err(error) => {
                metrics.keys_reload(&name, false);
                tracing::error!(
                    issuer = %name,
                    %error,
                    "key file rejected; the last good keys stay in force"
                );
            }
        }
    }
}

/// Gives freed heap back to the operating system. glibc keeps the memory of a large freed
/// table (a reload swaps a million rules) in its arenas; without this, resident memory after
/// a swap stays near the peak of holding two tables.
pub fn trim_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks glibc's own free lists; it has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}
