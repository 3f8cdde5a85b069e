//! Where a call for a shard group goes from this node, decided without IO from what the node
//! knows: its replica's view of the group (`Leadership`) and the leader the members spoke of
//! lately (the directory's gossip, for a group with no replica here). The router follows it
//! (`Router::destination`, waiting and asking again while it says `Nowhere`), and the cluster
//! simulator routes its workflows' calls by it.

use super::raft::board::Leadership;
use super::raft::RaftId;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// This node serves the group (it leads, an entry of its term committed and applied).
    Here,
    /// Forward to this member, the group's leader as far as this node knows.
    To(RaftId),
    /// No leader that serves is known yet (an election, or this node leads and is not serving
    /// yet): wait and ask again.
    Nowhere,
}

/// Where a call for a group goes from node `me`: here when it serves the group; else to the
/// leader its replica knows (or, with no replica here, the one `heard` of), unless that is
/// `me` itself (leading, not serving yet).
pub fn route(me: RaftId, here: Leadership, heard: Option<RaftId>) -> Route {
    if here.served {
        return Route::Here;
    }
    let leader = if here.replica { here.leader } else { heard };
    match leader.filter(|&l| l != me) {
        Some(l) => Route::To(l),
        None => Route::Nowhere,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(leader: Option<RaftId>, served: bool, replica: bool) -> Leadership {
        Leadership {
            leader,
            served,
            replica,
            sole: false,
        }
    }

    #[test]
    fn served_here_else_the_replicas_leader_else_the_one_heard_of() {
        assert_eq!(route(1, at(Some(1), true, true), Some(3)), Route::Here);
        assert_eq!(
            route(1, at(Some(2), false, true), Some(3)),
            Route::To(2),
            "a replica's own view wins over gossip"
        );
        assert_eq!(route(1, at(None, false, false), Some(3)), Route::To(3), "no replica here: the leader heard of");
        assert_eq!(route(1, at(None, false, true), Some(3)), Route::Nowhere, "an election under way at the replica");
        assert_eq!(route(1, at(Some(1), false, true), None), Route::Nowhere, "leading, not serving yet");
        assert_eq!(route(1, at(None, false, false), Some(1)), Route::Nowhere, "stale gossip naming this node");
    }
}
