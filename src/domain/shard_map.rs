//! Shard ownership: which node serves each of the `SHARD_COUNT` shards, at which epoch. Sans-IO,
//! so the cluster protocol that moves shards between nodes can be driven by the simulator too.
//!
//! Today a node owns every shard. The map is consulted on every send — by the router before it
//! reaches an actor and by the entity actor itself for each message — so once a shard moves
//! (a newer epoch), a live actor of it refuses work instead of serving a second copy.

pub use crate::domain::envelope::OwnerHint;
use crate::domain::ids::SHARD_COUNT;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardMap {
    /// Grows with every change; a node never goes back to an older map.
    epoch: u64,
    owners: Vec<String>,
}

impl ShardMap {
    /// Every shard owned by `node`, at epoch 1.
    pub fn single(node: &str) -> ShardMap {
        ShardMap {
            epoch: 1,
            owners: vec![node.to_string(); SHARD_COUNT as usize],
        }
    }

    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    pub fn owner(&self, shard: u16) -> &str {
        assert_eq!(self.owners.len(), SHARD_COUNT as usize, "a shard map covers every shard");
        &self.owners[usize::from(shard) % self.owners.len()]
    }

    /// `Ok` when `node` owns `shard`; else where it lives.
    pub fn check(&self, shard: u16, node: &str) -> Result<(), OwnerHint> {
        let owner = self.owner(shard);
        if owner == node {
            Ok(())
        } else {
            Err(OwnerHint {
                shard,
                owner: owner.to_string(),
                epoch: self.epoch,
            })
        }
    }

    /// Moves one shard to `node`: a new epoch.
    pub fn assign(&mut self, shard: u16, node: &str) {
        let i = usize::from(shard) % self.owners.len();
        self.owners[i] = node.to_string();
        self.epoch += 1;
    }

    /// How many shards `node` owns.
    pub fn owned_by(&self, node: &str) -> usize {
        self.owners.iter().filter(|o| o.as_str() == node).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_node_owns_everything_and_assignment_moves_one_shard_at_a_new_epoch() {
        let mut m = ShardMap::single("n1");
        assert_eq!(m.owned_by("n1"), SHARD_COUNT as usize);
        assert_eq!(m.check(17, "n1"), Ok(()));
        let before = m.epoch();
        m.assign(17, "n2");
        assert_eq!(m.epoch(), before + 1);
        assert_eq!(m.owner(17), "n2");
        assert_eq!(m.owner(18), "n1");
        assert_eq!(m.owned_by("n1"), SHARD_COUNT as usize - 1);
        let hint = m.check(17, "n1").unwrap_err();
        assert_eq!((hint.shard, hint.owner.as_str(), hint.epoch), (17, "n2", before + 1));
    }
}
