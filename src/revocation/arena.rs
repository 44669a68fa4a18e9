//! [`ArenaMap`]: a map from string keys to small values, laid out to stay small at a
//! million keys. It knows nothing of rules; [`RuleTable`](super::RuleTable) keeps its
//! session, subject and claim-value rules in it.
//!
//! A `HashMap<String, Vec<V>>` costs over 200 bytes a key (a string allocation, a vector
//! allocation with spare capacity, a wide bucket), so the map is flat instead:
//! - every key's bytes live in one arena, with a length prefix;
//! - per key, an 8-byte arena offset and its first value, in parallel vectors; the rare
//!   further values of the same key (another [`Slotted::slot`]) sit in a side map;
//! - the hash index holds 4-byte entry numbers, so its buckets are small.

use std::collections::HashMap;
use std::hash::BuildHasher;

use hashbrown::HashTable;

/// A value kept under a key: values of one key with the same slot merge, values of other
/// slots are kept side by side (for rules: one scope per issuer).
pub(super) trait Slotted: Copy {
    fn slot(&self) -> u32;
    fn merge(&mut self, other: Self);
}

/// String keys, each with one value per slot.
#[derive(Clone)]
pub(super) struct ArenaMap<V> {
    /// Each key as a 4-byte little-endian length and its bytes.
    arena: Vec<u8>,
    /// Arena offset of each entry's key.
    offsets: Vec<u64>,
    /// Each entry's first value.
    first: Vec<V>,
    /// Further values of an entry (the same key for other slots), rare.
    more: HashMap<u32, Vec<V>>,
    /// Entry numbers, found by the hash of their key.
    index: HashTable<u32>,
    hasher: std::collections::hash_map::RandomState,
}

// Not derived: a derived `Default` would ask `V: Default`, which an empty map does not need.
impl<V> Default for ArenaMap<V> {
    fn default() -> Self {
        ArenaMap {
            arena: Vec::new(),
            offsets: Vec::new(),
            first: Vec::new(),
            more: HashMap::new(),
            index: HashTable::new(),
            hasher: std::collections::hash_map::RandomState::new(),
        }
    }
}

impl<V> std::fmt::Debug for ArenaMap<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArenaMap")
            .field("keys", &self.offsets.len())
            .finish()
    }
}

impl<V: Slotted> ArenaMap<V> {
    fn key(&self, entry: u32) -> &str {
        key_in(&self.arena, &self.offsets, entry)
    }

    fn find(&self, key: &str) -> Option<u32> {
        let hash = self.hasher.hash_one(key);
        self.index.find(hash, |&e| self.key(e) == key).copied()
    }

    fn values(&self, entry: u32) -> impl Iterator<Item = &V> {
        self.first
            .get(entry as usize)
            .into_iter()
            .chain(self.more.get(&entry).into_iter().flatten())
    }

    /// The values stored under `key`.
    pub(super) fn get(&self, key: &str) -> impl Iterator<Item = &V> {
        self.find(key).into_iter().flat_map(|e| self.values(e))
    }

    /// Adds a value under `key`, merging with the value of the same slot; true when a value
    /// was added rather than merged.
    pub(super) fn insert(&mut self, key: &str, value: V) -> bool {
        if let Some(entry) = self.find(key) {
            let e = entry as usize;
            if self.first[e].slot() == value.slot() {
                self.first[e].merge(value);
                return false;
            }
            let more = self.more.entry(entry).or_default();
            if let Some(m) = more.iter_mut().find(|m| m.slot() == value.slot()) {
                m.merge(value);
                return false;
            }
            more.push(value);
            return true;
        }
        // Entry numbers are u32: a map of more than 4 billion keys is far beyond what
        // a 64 MiB rules file or the admin API can produce.
        let entry = u32::try_from(self.offsets.len()).unwrap_or(u32::MAX);
        self.offsets.push(self.arena.len() as u64);
        let len = u32::try_from(key.len()).unwrap_or(u32::MAX);
        self.arena.extend_from_slice(&len.to_le_bytes());
        self.arena.extend_from_slice(key.as_bytes());
        self.first.push(value);
        let hasher = &self.hasher;
        let (offsets, arena) = (&self.offsets, &self.arena);
        let hash = hasher.hash_one(key);
        self.index
            .insert_unique(hash, entry, |&e| hasher.hash_one(key_in(arena, offsets, e)));
        true
    }

    /// Removes the value of `slot` under `key`; true when it was there.
    pub(super) fn remove(&mut self, key: &str, slot: u32) -> bool {
        let Some(entry) = self.find(key) else {
            return false;
        };
        let e = entry as usize;
        if let Some(more) = self.more.get_mut(&entry)
            && let Some(pos) = more.iter().position(|m| m.slot() == slot)
        {
            more.remove(pos);
            if more.is_empty() {
                self.more.remove(&entry);
            }
            return true;
        }
        if self.first[e].slot() != slot {
            return false;
        }
        if let Some(mut more) = self.more.remove(&entry) {
            self.first[e] = more.remove(0);
            if !more.is_empty() {
                self.more.insert(entry, more);
            }
            return true;
        }
        // The key goes: drop its index slot, and move the last entry into its place. The
        // key's bytes stay in the arena until the map is next rebuilt (pruning does).
        let hash = self.hasher.hash_one(key);
        if let Ok(slot) = self.index.find_entry(hash, |&x| x == entry) {
            slot.remove();
        }
        let last = u32::try_from(self.offsets.len() - 1).unwrap_or(u32::MAX);
        if entry != last {
            let moved_hash = self.hasher.hash_one(self.key(last));
            if let Some(slot) = self.index.find_mut(moved_hash, |&x| x == last) {
                *slot = entry;
            }
            if let Some(more) = self.more.remove(&last) {
                self.more.insert(entry, more);
            }
        }
        self.offsets.swap_remove(e);
        self.first.swap_remove(e);
        true
    }

    /// Every key with each of its values.
    pub(super) fn entries(&self) -> impl Iterator<Item = (&str, &V)> {
        (0..self.offsets.len()).flat_map(move |e| {
            let e = u32::try_from(e).unwrap_or(u32::MAX);
            let key = self.key(e);
            self.values(e).map(move |v| (key, v))
        })
    }

    pub(super) fn is_empty(&self) -> bool {
        self.offsets.is_empty()
    }

    /// Room for `n` more keys of a typical length.
    pub(super) fn reserve(&mut self, n: usize) {
        const TYPICAL_KEY_BYTES: usize = 24;
        self.arena.reserve(n.saturating_mul(TYPICAL_KEY_BYTES + 4));
        self.offsets.reserve(n);
        self.first.reserve(n);
        let (hasher, offsets, arena) = (&self.hasher, &self.offsets, &self.arena);
        self.index
            .reserve(n, |&e| hasher.hash_one(key_in(arena, offsets, e)));
    }

    /// Gives back the spare capacity of a finished map.
    pub(super) fn shrink(&mut self) {
        self.arena.shrink_to_fit();
        self.offsets.shrink_to_fit();
        self.first.shrink_to_fit();
        let (hasher, offsets, arena) = (&self.hasher, &self.offsets, &self.arena);
        self.index
            .shrink_to_fit(|&e| hasher.hash_one(key_in(arena, offsets, e)));
    }
}

/// The key of `entry`, read straight from the arena: also while the map is borrowed in
/// parts (rehashing the index).
fn key_in<'a>(arena: &'a [u8], offsets: &[u64], entry: u32) -> &'a str {
    let Some(start) = offsets
        .get(entry as usize)
        .and_then(|o| usize::try_from(*o).ok())
    else {
        return "";
    };
    let len = arena
        .get(start..start.saturating_add(4))
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .map_or(0, |b| u32::from_le_bytes(b) as usize);
    arena
        .get(start + 4..start + 4 + len)
        .and_then(|b| std::str::from_utf8(b).ok())
        .unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A value in slot `.0` that merges by keeping the larger `.1`.
    #[derive(Clone, Copy, Debug, PartialEq)]
    struct V(u32, u32);

    impl Slotted for V {
        fn slot(&self) -> u32 {
            self.0
        }
        fn merge(&mut self, other: V) {
            self.1 = self.1.max(other.1);
        }
    }

    #[test]
    fn removing_keys_keeps_every_other_key_findable() {
        let mut m = ArenaMap::default();
        for i in 0..1000 {
            assert!(m.insert(&format!("k{i}"), V(0, i)));
        }
        assert!(m.insert("k7", V(1, 0)));
        for i in (0..1000).step_by(3) {
            assert!(m.remove(&format!("k{i}"), 0));
        }
        for i in 0..1000 {
            let found: Vec<V> = m.get(&format!("k{i}")).copied().collect();
            let expected = match (i % 3, i) {
                (0, _) => vec![],
                (_, 7) => vec![V(0, 7), V(1, 0)],
                _ => vec![V(0, i)],
            };
            assert_eq!(found, expected, "k{i}");
        }
        assert_eq!(m.entries().count(), 1000 - 334 + 1);
        let mut shrunk = m.clone();
        shrunk.shrink();
        assert_eq!(shrunk.get("k1").count(), 1);
    }

    #[test]
    fn values_of_one_slot_merge_and_other_slots_stay_apart() {
        let mut m = ArenaMap::default();
        assert!(m.insert("k", V(0, 1)));
        assert!(!m.insert("k", V(0, 5)));
        assert!(m.insert("k", V(2, 1)));
        assert!(!m.insert("k", V(2, 3)));
        assert_eq!(m.get("k").copied().collect::<Vec<_>>(), [V(0, 5), V(2, 3)]);
        assert!(m.remove("k", 0));
        assert!(!m.remove("k", 0));
        assert_eq!(m.get("k").copied().collect::<Vec<_>>(), [V(2, 3)]);
        assert!(m.remove("k", 2));
        assert!(m.is_empty());
    }
}
