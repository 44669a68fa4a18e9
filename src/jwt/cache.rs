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
use serde_json::Value;

use super::Verified;

/// Fixed overhead counted per entry besides the claims and the issuer string (the slot,
/// the `Verified`, the Arcs).
const ENTRY_OVERHEAD: usize = 256;

/// Share of a `BTreeMap` node counted per map entry (its keys' and values' slots are counted
/// on their own).
const MAP_ENTRY_OVERHEAD: usize = 16;

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

    /// Remembers a successful verification.
    pub fn insert(&self, digest: [u8; 32], verified: Arc<Verified>) {
        let Some(slot) = self.slot(&digest) else {
            return;
        };
        // The parsed claims, not the token's length: a short token can parse into many JSON
        // values (`[0,0,...]` is two bytes a value in JSON, 32 in memory).
        let cost = ENTRY_OVERHEAD + verified.iss.len() + map_bytes(&verified.claims);
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

/// About the memory a claims map holds.
fn map_bytes(map: &serde_json::Map<String, Value>) -> usize {
    map.iter()
        .map(|(k, v)| MAP_ENTRY_OVERHEAD + size_of::<String>() + k.len() + value_bytes(v))
        .sum()
}

/// About the memory a JSON value holds, its own slot included.
fn value_bytes(v: &Value) -> usize {
    size_of::<Value>()
        + match v {
            Value::String(s) => s.len(),
            Value::Array(items) => items.iter().map(value_bytes).sum(),
            Value::Object(map) => map_bytes(map),
            Value::Null | Value::Bool(_) | Value::Number(_) => 0,
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

    #[test]
    fn the_byte_budget_counts_the_claims_an_entry_holds() {
        // A 27 KB token of `{"a":[0,0,...]}` parses into ten thousand JSON values: far more
        // memory than its length suggests (issue 13).
        let zeros: Vec<u8> = vec![0; 10_000];
        let claims = serde_json::json!({ "a": zeros });
        let mut v = verified();
        Arc::get_mut(&mut v).unwrap().claims = claims.as_object().unwrap().clone();
        let cache = VerifyCache::new(16, 1 << 30);
        cache.insert(digest(1), v);
        let held = 10_000 * std::mem::size_of::<serde_json::Value>();
        assert!(
            cache.bytes() >= held,
            "counted {} bytes for claims holding at least {held}",
            cache.bytes()
        );
    }

    fn digest(n: u32) -> [u8; 32] {
        crate::revocation::token_hash::sha256(&n.to_string())
    }

    #[test]
    fn a_flood_of_distinct_tokens_never_grows_past_the_bounds() {
        let cache = VerifyCache::new(100, 1 << 20);
        for n in 0..10_000 {
            cache.insert(digest(n), verified());
        }
        assert!(cache.len() <= 128, "{}", cache.len());
        assert!(cache.bytes() <= 1 << 20);

        let small = VerifyCache::new(1024, 10_000);
        for n in 0..10_000 {
            small.insert(digest(n), verified());
        }
        assert!(small.bytes() <= 10_000, "{}", small.bytes());
    }

    #[test]
    fn only_the_same_digest_hits() {
        let cache = VerifyCache::new(16, 1 << 20);
        cache.insert(digest(1), verified());
        assert!(cache.get(&digest(1)).is_some());
        assert!(cache.get(&digest(2)).is_none());
        let off = VerifyCache::new(0, 1 << 20);
        off.insert(digest(1), verified());
        assert!(off.get(&digest(1)).is_none());
    }
}
