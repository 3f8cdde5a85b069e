//! The board: what the writer thread publishes, after each round, for the rest of the node —
//! per shard group, who leads and whether this node serves it (one atomic word per group, read
//! lock-free on every entity message and route), and the groups' raft status (behind a mutex,
//! read by routes, peers and operators).
//!
//! Publishing protocol: the status is stored first, then each group's word (Release). A
//! reader that loads a word (Acquire) and then reads the status sees that publication's status
//! or a later one — never an older one: a node that sees "served" finds the status of a round
//! in which it serves (its applied index is what peers are told to wait for). The words are the
//! one concurrent primitive of the driver shared across threads (the write batch, the proposal
//! and read trackers are the writer thread's alone); `tests/loom_driver.rs` model-checks the
//! protocol over every interleaving with loom's atomics and mutex (through `super::sync`).

use super::sync::{AtomicU64, Mutex, Ordering};

/// What this node knows of a group's leadership.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Leadership {
    /// The leader this node's replica knows of (None: none known, or no replica here).
    pub leader: Option<u64>,
    /// This node leads the group, an entry of its term committed and everything committed
    /// before it is applied here: its entities may be served here.
    pub served: bool,
    pub replica: bool,
    /// This node is the group's only voter (no membership change half-way): nobody else can
    /// lead it or commit to it, so a served sole voter reads its own state linearizably at
    /// once, with no read barrier through raft.
    pub sole: bool,
}

impl Leadership {
    /// `leader << 3 | sole << 2 | replica << 1 | served`.
    pub fn word(self) -> u64 {
        (self.leader.unwrap_or(0) << 3) | (u64::from(self.sole) << 2) | (u64::from(self.replica) << 1) | u64::from(self.served)
    }

    /// Reads of the group's state here need no read barrier: this node serves it and is its
    /// only voter (every write goes through it, and one it answered is applied here).
    pub fn reads_here(self) -> bool {
        self.served && self.sole
    }

    pub fn from_word(v: u64) -> Leadership {
        Leadership {
            leader: match v >> 3 {
                0 => None,
                id => Some(id),
            },
            served: v & 1 == 1,
            replica: v & 2 == 2,
            sole: v & 4 == 4,
        }
    }
}

pub struct Board<S> {
    words: Vec<AtomicU64>,
    status: Mutex<Vec<S>>,
}

impl<S: Clone> Board<S> {
    /// A board for `groups` groups: no leader known, no replica, nothing published.
    pub fn new(groups: u32) -> Board<S> {
        Board {
            words: (0..groups).map(|_| AtomicU64::new(0)).collect(),
            status: Mutex::new(Vec::new()),
        }
    }

    /// Publishes one round: the status of every replica here, then each group's leadership.
    pub fn publish(&self, status: Vec<S>, leadership: impl IntoIterator<Item = (u32, Leadership)>) {
        *self.status.lock().expect("board status lock") = status;
        for (g, l) in leadership {
            if let Some(w) = self.words.get(g as usize) {
                w.store(l.word(), Ordering::Release);
            }
        }
    }

    /// Who leads `group`, as of the last round published (lock-free).
    pub fn leadership(&self, group: u32) -> Leadership {
        Leadership::from_word(self.words.get(group as usize).map_or(0, |w| w.load(Ordering::Acquire)))
    }

    /// The status of every replica here, as of the last round published (or a later one).
    pub fn status(&self) -> Vec<S> {
        self.status.lock().expect("board status lock").clone()
    }

    /// The status of one replica (`pick` finds it).
    pub fn status_where(&self, pick: impl Fn(&S) -> bool) -> Option<S> {
        self.status.lock().expect("board status lock").iter().find(|s| pick(s)).cloned()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn a_word_round_trips() {
        for l in [
            Leadership {
                leader: None,
                served: false,
                replica: false,
                sole: false,
            },
            Leadership {
                leader: Some(3),
                served: true,
                replica: true,
                sole: true,
            },
            Leadership {
                leader: Some(u64::MAX >> 3),
                served: false,
                replica: true,
                sole: false,
            },
        ] {
            assert_eq!(Leadership::from_word(l.word()), l);
        }
    }

    #[test]
    fn only_a_served_sole_voter_reads_without_a_barrier() {
        let at = |served, sole| Leadership {
            leader: Some(1),
            served,
            replica: true,
            sole,
        };
        assert!(at(true, true).reads_here());
        assert!(!at(false, true).reads_here(), "leading, not serving yet");
        assert!(!at(true, false).reads_here(), "other voters: a quorum confirms the read");
    }
}
