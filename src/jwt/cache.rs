//! The verification cache: most traffic repeats the same tokens, and a signature check
//! (tens of microseconds for RS256) is the most expensive step of a Check.
//!
//! Design, and why:
//! - Keyed by the SHA-256 of the exact token bytes, so a lookup can never return another
//!   token's verification (a weaker hash would let a crafted token collide with a cached
//!   valid one).
//! - Only successful verifications are stored. Invalid tokens never reach it, so a flood of
//!   forged tokens can neither grow it nor evict anything.
//! - A fixed array of slots, direct-mapped by the digest, each an `arc-swap`: lookups are
//!   lock-free, memory is bounded by the slot count and a byte budget, and a flood of distinct
//!   valid tokens only replaces entries, it never grows the cache.
//! - An entry is trusted only while its issuer's key generation is unchanged and its time
//!   claims still hold (checked by the caller), and the revocation snapshot is consulted on
//!   every Check regardless, so a cached token revoked a moment ago is denied.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use arc_swap::ArcSwapOption;

use super::Verified;

/// Fixed overhead counted per entry besides the token-dependent part (the claims map, the
/// issuer string, the Arcs).
const ENTRY_OVERHEAD: usize = 256;

/// The claims map of a token takes roughly this many times the token's length.
const COST_PER_TOKEN_BYTE: usize = 2;

struct Slot {
    digest: [u8; 32],
    verified: Arc<Verified>,
    cost: usize,
}

/// A bounded, lock-free cache of successful verifications.
pub struct VerifyCache {
    slots: Box<[ArcSwapOption<Slot>]>,
    /// Approximate bytes held, against `max_bytes`.
    bytes: AtomicUsize,
    max_bytes: usize,
}

impl VerifyCache {
    /// A cache of about `max_entries` entries (rounded up to a power of two) holding at most
    /// about `max_bytes`; `max_entries == 0` turns it off.
    pub fn new(max_entries: usize, max_bytes: usize) -> VerifyCache {
        let n = if max_entries == 0 {
            0
        } else {
            max_entries.next_power_of_two()
        };
        VerifyCache {
            slots: (0..n).map(|_| ArcSwapOption::empty()).collect(),
            bytes: AtomicUsize::new(0),
            max_bytes,
        }
    }

    fn slot(&self, digest: &[u8; 32]) -> Option<&ArcSwapOption<Slot>> {
        if self.slots.is_empty() {
            return None;
        }
        let mut word = [0u8; 8];
        word.copy_from_slice(&digest[..8]);
        // The digest is uniformly distributed, so its low bits are a fine index; the mask
        // keeps it in range (the length is a power of two).
        let index = (u64::from_le_bytes(word) as usize) & (self.slots.len() - 1);
        self.slots.get(index)
    }

    /// The cached verification of the token with this digest, if any.
    pub fn get(&self, digest: &[u8; 32]) -> Option<Arc<Verified>> {
        let guard = self.slot(digest)?.load();
        let slot = guard.as_ref()?;
        (slot.digest == *digest).then(|| slot.verified.clone())
    }

    /// Remembers a successful verification of a token of `token_len` bytes.
    pub fn insert(&self, digest: [u8; 32], verified: Arc<Verified>, token_len: usize) {
        let Some(slot) = self.slot(&digest) else {
            return;
        };
        let cost = ENTRY_OVERHEAD + token_len * COST_PER_TOKEN_BYTE;
        let replaced = slot.load().as_ref().map_or(0, |s| s.cost);
        let held = self.bytes.load(Ordering::Relaxed);
        if held.saturating_sub(replaced).saturating_add(cost) > self.max_bytes {
            return;
        }
        let old = slot.swap(Some(Arc::new(Slot {
            digest,
            verified,
            cost,
        })));
        self.bytes.fetch_add(cost, Ordering::Relaxed);
        if let Some(old) = old {
            self.bytes.fetch_sub(old.cost, Ordering::Relaxed);
        }
    }

    /// Entries held now (for tests and diagnostics; walks every slot).
    pub fn len(&self) -> usize {
        self.slots.iter().filter(|s| s.load().is_some()).count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Approximate bytes held now.
    pub fn bytes(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::super::TimeClaims;
    use super::*;

    fn verified() -> Arc<Verified> {
        Arc::new(Verified {
            alg: jsonwebtoken::Algorithm::RS256,
            claims: serde_json::Map::new(),
            iss: "i".into(),
            iat: None,
            times: TimeClaims {
                exp: 10,
                nbf: None,
                iat: None,
                leeway: 0,
            },
            generation: 0,
        })
    }

    fn digest(n: u32) -> [u8; 32] {
        crate::revocation::token_hash::sha256(&n.to_string())
    }

    #[test]
    fn a_flood_of_distinct_tokens_never_grows_past_the_bounds() {
        let cache = VerifyCache::new(100, 1 << 20);
        for n in 0..10_000 {
            cache.insert(digest(n), verified(), 800);
        }
        assert!(cache.len() <= 128, "{}", cache.len());
        assert!(cache.bytes() <= 1 << 20);

        let small = VerifyCache::new(1024, 10_000);
        for n in 0..10_000 {
            small.insert(digest(n), verified(), 800);
        }
        assert!(small.bytes() <= 10_000, "{}", small.bytes());
    }

    #[test]
    fn only_the_same_digest_hits() {
        let cache = VerifyCache::new(16, 1 << 20);
        cache.insert(digest(1), verified(), 100);
        assert!(cache.get(&digest(1)).is_some());
        assert!(cache.get(&digest(2)).is_none());
        let off = VerifyCache::new(0, 1 << 20);
        off.insert(digest(1), verified(), 100);
        assert!(off.get(&digest(1)).is_none());
    }
}
