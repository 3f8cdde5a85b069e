//! A coalescing inbox: the one concurrent primitive of the price fan-out.
//!
//! Producers put the latest value for a key (a price per symbol); the consumer takes everything
//! at once. A key holds one value, so however slow the consumer, the inbox never holds more than
//! one entry per key: a slow portfolio gets the latest prices, never a growing queue, and a
//! producer never waits for it (a put is one short, uncontended critical section).
//!
//! Waking protocol: `put` answers `true` exactly when it made the inbox non-empty; that producer
//! must then wake the consumer (a permit-keeping notify, `tokio::sync::Notify::notify_one` in
//! production). The consumer, once woken, takes the whole inbox. Every transition to non-empty
//! is thus followed by a wake that comes after it, so no value is left unseen; a wake that finds
//! the inbox already drained is harmless. `tests/loom_inbox.rs` model-checks this protocol with
//! loom over every interleaving of two producers and a consumer: this file is compiled there
//! with loom's `Mutex` (through `super::sync`).

use super::sync::Mutex;

/// Pending values, one per key, in arrival order of their keys. A consumer holds few keys (a
/// portfolio's instruments), so a vector beats a map, and swapping it with the consumer's
/// buffer means no allocation once both have grown.
pub struct Inbox<K: PartialEq, V> {
    slots: Mutex<Vec<(K, V)>>,
}

impl<K: PartialEq, V> Default for Inbox<K, V> {
    fn default() -> Self {
        Inbox { slots: Mutex::new(Vec::new()) }
    }
}

impl<K: PartialEq, V> Inbox<K, V> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Stores `value` as the latest for `key` (replacing an unseen older one). Returns whether
    /// the inbox was empty before, i.e. whether the caller must wake the consumer.
    pub fn put(&self, key: K, value: V) -> bool {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        let was_empty = slots.is_empty();
        match slots.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = value,
            None => slots.push((key, value)),
        }
        was_empty
    }

    /// Moves every pending value into `out` (cleared first); the inbox is empty afterwards and
    /// keeps `out`'s old allocation.
    pub fn take_into(&self, out: &mut Vec<(K, V)>) {
        out.clear();
        std::mem::swap(&mut *self.slots.lock().unwrap_or_else(|p| p.into_inner()), out);
    }

    /// Takes every pending value (the inbox is empty afterwards).
    pub fn take(&self) -> Vec<(K, V)> {
        let mut out = Vec::new();
        self.take_into(&mut out);
        out
    }

    pub fn len(&self) -> usize {
        self.slots.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
