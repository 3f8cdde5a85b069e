//! Shard ownership: which node serves each of the `SHARD_COUNT` shards. Sans-IO, so the cluster
//! protocol that will move shards between nodes can be driven by the simulator too.
//!
//! Today a node owns every shard; the router consults the map on every activation, so when the
//! cluster work assigns shards elsewhere, requests for them are refused here (and, later,
//! forwarded) instead of silently activating a second copy of an entity.

use crate::domain::ids::SHARD_COUNT;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardMap {
    owners: Vec<String>,
}

impl ShardMap {
    /// Every shard owned by `node`.
    pub fn single(node: &str) -> ShardMap {
        ShardMap {
            owners: vec![node.to_string(); SHARD_COUNT as usize],
        }
    }

    pub fn owner(&self, shard: u16) -> &str {
        &self.owners[usize::from(shard) % self.owners.len()]
    }

    pub fn assign(&mut self, shard: u16, node: &str) {
        let i = usize::from(shard) % self.owners.len();
        self.owners[i] = node.to_string();
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
    fn single_node_owns_everything_and_assignment_moves_one_shard() {
        let mut m = ShardMap::single("n1");
        assert_eq!(m.owned_by("n1"), SHARD_COUNT as usize);
        m.assign(17, "n2");
        assert_eq!(m.owner(17), "n2");
        assert_eq!(m.owner(18), "n1");
        assert_eq!(m.owned_by("n1"), SHARD_COUNT as usize - 1);
    }
}
