//! What `/readyz` waits for. Each loader holds a [`BlockReady`] guard until its first
//! successful load; the process is ready once every guard is dropped. Readiness is a latch,
//! not a guess: nothing probes a component to decide.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Shared readiness state.
#[derive(Clone, Default)]
pub struct Readiness(Arc<AtomicUsize>);

/// Held by a component that is not loaded yet.
#[must_use = "readiness is blocked only while the guard lives"]
pub struct BlockReady(Arc<AtomicUsize>);

impl Readiness {
    pub fn block(&self) -> BlockReady {
        self.0.fetch_add(1, Ordering::SeqCst);
        BlockReady(self.0.clone())
    }

    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::SeqCst) == 0
    }
}

impl Drop for BlockReady {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_when_every_guard_is_gone() {
        let r = Readiness::default();
        assert!(r.is_ready());
        let a = r.block();
        let b = r.block();
        drop(a);
        assert!(!r.is_ready());
        drop(b);
        assert!(r.is_ready());
    }
}
