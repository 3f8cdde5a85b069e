//! Typed identifiers and the entity → shard mapping.
//!
//! Ids are drawn from the context's seeded RNG (so simulations reproduce them) and rendered as
//! lowercase hex with a kind prefix. The shard of an entity is a stable hash of its id alone
//! (FNV-1a, fixed forever: changing it would move every entity), so a user's account and
//! portfolio — both named by the user id — share a shard, and so a shard group (DESIGN.md §8).

use rand::RngCore;
use serde::{Deserialize, Serialize};
use std::fmt;

/// Number of shards. Fixed for the life of a cluster: keys on disk begin with the shard number.
pub const SHARD_COUNT: u16 = 1024;

/// Shard groups of a new cluster (`[cluster] groups`); fixed when the cluster is created.
pub const DEFAULT_GROUPS: u32 = 32;

/// The shard group of a shard: shard s is in group s mod G.
pub fn group_of(shard: u16, groups: u32) -> u32 {
    assert!(groups >= 1 && groups <= u32::from(SHARD_COUNT), "1 to {SHARD_COUNT} groups");
    u32::from(shard) % groups
}

/// What kind of entity an id names. The byte value is part of every storage key: never reuse one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum EntityKind {
    Account = 1,
    Portfolio = 2,
    Instrument = 3,
    EmailIndex = 4,
}

impl EntityKind {
    pub fn as_byte(self) -> u8 {
        self as u8
    }
    pub fn from_byte(b: u8) -> Option<EntityKind> {
        Some(match b {
            1 => EntityKind::Account,
            2 => EntityKind::Portfolio,
            3 => EntityKind::Instrument,
            4 => EntityKind::EmailIndex,
            _ => return None,
        })
    }
    pub fn name(self) -> &'static str {
        match self {
            EntityKind::Account => "account",
            EntityKind::Portfolio => "portfolio",
            EntityKind::Instrument => "instrument",
            EntityKind::EmailIndex => "email_index",
        }
    }
}

/// The longest entity id accepted (ids are length-prefixed with one byte in storage keys).
pub const MAX_ID_LEN: usize = 128;

/// The address of one entity.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct EntityId {
    pub kind: EntityKind,
    pub id: String,
}

impl EntityId {
    pub fn new(kind: EntityKind, id: impl Into<String>) -> EntityId {
        let id = id.into();
        assert!(!id.is_empty() && id.len() <= MAX_ID_LEN, "entity id length out of range");
        EntityId { kind, id }
    }
    pub fn shard(&self) -> u16 {
        shard_of(&self.id)
    }
}

impl fmt::Display for EntityId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.kind.name(), self.id)
    }
}

/// FNV-1a 64 over the id, reduced to a shard number.
pub fn shard_of(id: &str) -> u16 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h = OFFSET;
    for b in id.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(PRIME);
    }
    (h % SHARD_COUNT as u64) as u16
}

/// A fresh random id: prefix + 128 bits of hex, e.g. `usr_3f2a…`.
pub fn new_id(prefix: &str, rng: &mut dyn RngCore) -> String {
    let mut bytes = [0u8; 16];
    rng.fill_bytes(&mut bytes);
    format!("{prefix}_{}", hex::encode(bytes))
}

/// True for ids this service issues: `prefix_` + 32 lowercase hex digits.
pub fn is_well_formed_id(prefix: &str, s: &str) -> bool {
    s.strip_prefix(prefix)
        .and_then(|r| r.strip_prefix('_'))
        .is_some_and(|h| h.len() == 32 && h.bytes().all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    const PINNED_ACME_SHARD: u16 = {
        // FNV-1a 64 of "ACME" mod 1024, computed by hand-rolled const code.
        let bytes = [b'A', b'C', b'M', b'E'];
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        let mut i = 0;
        while i < bytes.len() {
            h ^= bytes[i] as u64;
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
            i += 1;
        }
        (h % 1024) as u16
    };

    #[test]
    fn shard_is_stable_and_in_range() {
        // Pinned: a change here would move every entity on disk.
        assert_eq!(shard_of("ACME"), PINNED_ACME_SHARD);
        for i in 0..1000 {
            let user = format!("usr_{i}");
            assert!(shard_of(&user) < SHARD_COUNT);
            // A user's entities live together.
            assert_eq!(
                EntityId::new(EntityKind::Account, &user).shard(),
                EntityId::new(EntityKind::Portfolio, &user).shard()
            );
        }
        assert_eq!(group_of(1023, 32), 31);
    }

    #[test]
    fn ids_are_well_formed() {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(7);
        let id = new_id("usr", &mut rng);
        assert!(is_well_formed_id("usr", &id));
        assert!(!is_well_formed_id("ord", &id));
        assert!(!is_well_formed_id("usr", "usr_xyz"));
    }
}
