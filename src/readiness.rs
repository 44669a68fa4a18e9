//! What `/readyz` waits for. Each loader holds a [`BlockReady`] guard, named for what it
//! loads (`keys of https://issuer`), until its first successful load; the process is ready
//! once every guard is dropped, and until then `/readyz` names the ones still held, so an
//! operator looking at a pod that never becomes ready reads what it waits for. Readiness is
//! a latch, not a guess: nothing probes a component to decide.

use std::collections::BTreeMap;
use std::sync::{Arc, PoisonError};

/// The one std lock of readiness (clippy.toml bans them elsewhere): a guard is released in
/// `Drop`, which cannot `.await` a tokio lock; it is taken by loaders and `/readyz`, never on
/// the request path, and never held across an `.await`.
#[allow(clippy::disallowed_types)]
type Mutex<T> = std::sync::Mutex<T>;

/// Shared readiness state.
#[derive(Clone, Default)]
pub struct Readiness(Arc<Mutex<Pending>>);

/// The guards alive now, by the number each was given, so they are listed in the order
/// they were taken.
#[derive(Default)]
struct Pending {
    next: u64,
    waiting: BTreeMap<u64, String>,
}

/// Held by a component that is not loaded yet.
#[must_use = "readiness is blocked only while the guard lives"]
pub struct BlockReady {
    readiness: Readiness,
    number: u64,
}

impl Readiness {
    /// Blocks readiness until the guard is dropped; `what` is how `/readyz` names it
    /// (`keys of https://issuer`).
    pub fn block(&self, what: impl Into<String>) -> BlockReady {
        let mut pending = self.pending();
        let number = pending.next;
        pending.next += 1;
        pending.waiting.insert(number, what.into());
        BlockReady {
            readiness: self.clone(),
            number,
        }
    }

    pub fn is_ready(&self) -> bool {
        self.pending().waiting.is_empty()
    }

    /// What readiness still waits for, in the order the guards were taken; empty when
    /// ready.
    pub fn waiting_for(&self) -> Vec<String> {
        self.pending().waiting.values().cloned().collect()
    }

    /// The state behind the lock. A panic while it was held cannot leave it half-changed
    /// (every change is one map operation), so a poisoned lock is used as is.
    fn pending(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for BlockReady {
    fn drop(&mut self) {
        self.readiness.pending().waiting.remove(&self.number);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_when_every_guard_is_gone() {
        let r = Readiness::default();
        assert!(r.is_ready());
        let a = r.block("a");
        let b = r.block("b");
        drop(a);
        assert!(!r.is_ready());
        drop(b);
        assert!(r.is_ready());
    }

    #[test]
    fn readiness_names_what_it_still_waits_for_in_the_order_it_began_waiting() {
        let r = Readiness::default();
        let start = r.block("start-up");
        let a = r.block("keys of https://a");
        let b = r.block("keys of https://b");
        // Two guards may share a name (two loaders of one thing): each counts.
        let b_again = r.block("keys of https://b");
        assert_eq!(
            r.waiting_for(),
            [
                "start-up",
                "keys of https://a",
                "keys of https://b",
                "keys of https://b"
            ]
        );
        drop(start);
        drop(b);
        assert_eq!(r.waiting_for(), ["keys of https://a", "keys of https://b"]);
        drop(a);
        drop(b_again);
        assert!(r.waiting_for().is_empty());
    }
}
