//! The membership this node works with, as it changes: members join and leave through the
//! metadata group, and every part of the node that addresses peers (the raft sink, forwarded
//! calls, the peer server's check of who may speak) reads the current one from here.
//!
//! Beside it, what members tell each other about the groups they lead (`LedGroup`, sent every
//! gossip round): a node routes a request for a group it holds no replica of to the leader it
//! heard of last, and the planner sees every group's raft configuration.

use super::membership::Membership;
use super::raft::{GroupId, RaftId};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

/// What a leader says of a group it leads.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedGroup {
    pub group: GroupId,
    pub term: u64,
    pub voters: Vec<RaftId>,
    pub learners: Vec<RaftId>,
    pub commit_index: u64,
    /// A membership change of the group is proposed and not yet applied.
    pub changing: bool,
    /// Every voter has committed the group's latest membership change: a replica it removed
    /// is no longer needed by any of them to elect a leader, and may be dropped.
    pub settled: bool,
}

/// Limits on a gossip message (a peer's message is untrusted input).
pub const LED_GROUPS_MAX: usize = 4096;
pub const REPLICAS_MAX: usize = 16;

impl LedGroup {
    pub fn is_well_formed(&self) -> bool {
        self.voters.len() <= REPLICAS_MAX && self.learners.len() <= REPLICAS_MAX && !self.voters.is_empty()
    }
}

/// How long what a leader said of its group is believed without hearing it again.
pub const LED_FRESH_FOR: Duration = Duration::from_secs(5);

#[derive(Clone, Debug)]
struct Heard {
    leader: RaftId,
    led: LedGroup,
    at: Instant,
}

pub struct Directory {
    current: RwLock<Arc<Membership>>,
    changed: tokio::sync::watch::Sender<u64>,
    led: Mutex<BTreeMap<GroupId, Heard>>,
}

impl std::fmt::Debug for Directory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Directory").field("members", &self.get().members.len()).finish()
    }
}

impl Directory {
    pub fn new(m: Membership) -> Arc<Directory> {
        Arc::new(Directory {
            current: RwLock::new(Arc::new(m)),
            changed: tokio::sync::watch::channel(0).0,
            led: Mutex::new(BTreeMap::new()),
        })
    }

    /// The membership as of now.
    pub fn get(&self) -> Arc<Membership> {
        self.current.read().expect("directory lock").clone()
    }

    /// Replaces the membership (a newer metadata version was applied); true when it changed.
    pub fn replace(&self, m: Membership) -> bool {
        let mut cur = self.current.write().expect("directory lock");
        if **cur == m {
            return false;
        }
        *cur = Arc::new(m);
        drop(cur);
        self.changed.send_modify(|v| *v += 1);
        true
    }

    /// Wakes on every change of the membership.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// What `leader` said of the groups it leads (a later term replaces an earlier one; a
    /// claim from an older term than the one known is ignored). A group the cluster does not
    /// have is ignored too — the map holds one entry per group, never more — and the number
    /// of those is returned (the peer server refuses such a message before it gets here).
    pub fn heard_leads(&self, leader: RaftId, groups: Vec<LedGroup>) -> usize {
        let membership = self.get();
        let now = Instant::now();
        let mut ignored = 0;
        let mut led = self.led.lock().expect("led lock");
        for g in groups {
            if !membership.has_group(g.group) {
                ignored += 1;
                continue;
            }
            let newer = led
                .get(&g.group)
                .is_none_or(|h| g.term > h.led.term || (g.term == h.led.term && h.leader == leader));
            if newer {
                led.insert(g.group, Heard { leader, led: g, at: now });
            }
        }
        ignored
    }

    /// The leader of `group` heard of lately (None: none heard within `LED_FRESH_FOR`).
    pub fn leader_of(&self, group: GroupId) -> Option<RaftId> {
        let led = self.led.lock().expect("led lock");
        led.get(&group).filter(|h| h.at.elapsed() < LED_FRESH_FOR).map(|h| h.leader)
    }

    /// Every group's configuration as its leader told it lately: (leader, what it said).
    pub fn led_groups(&self) -> BTreeMap<GroupId, (RaftId, LedGroup)> {
        let led = self.led.lock().expect("led lock");
        led.iter()
            .filter(|(_, h)| h.at.elapsed() < LED_FRESH_FOR)
            .map(|(g, h)| (*g, (h.leader, h.led.clone())))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn led(group: GroupId, term: u64) -> LedGroup {
        LedGroup {
            group,
            term,
            voters: vec![1, 2, 3],
            learners: vec![],
            commit_index: 10,
            changing: false,
            settled: true,
        }
    }

    #[test]
    fn a_later_term_wins_and_an_older_claim_is_ignored() {
        let d = Directory::new(Membership::single("solo", 4, "fp"));
        d.heard_leads(2, vec![led(0, 5)]);
        assert_eq!(d.leader_of(0), Some(2));
        d.heard_leads(3, vec![led(0, 4)]);
        assert_eq!(d.leader_of(0), Some(2), "an older term does not replace a newer one");
        d.heard_leads(3, vec![led(0, 6)]);
        assert_eq!(d.leader_of(0), Some(3));
        assert_eq!(d.leader_of(1), None);
    }

    #[test]
    fn what_a_leader_says_of_a_group_the_cluster_has_not_is_ignored() {
        let d = Directory::new(Membership::single("solo", 4, "fp"));
        d.heard_leads(2, vec![led(4_000_000_000, 1), led(5, 1)]);
        assert!(d.led_groups().is_empty(), "no entry for a group outside the cluster");
        assert_eq!(d.leader_of(4_000_000_000), None);
        assert_eq!(d.heard_leads(2, vec![led(4, 1), led(7, 1)]), 1, "the one ignored is counted");
        assert_eq!(
            d.led_groups().keys().copied().collect::<Vec<_>>(),
            vec![4],
            "the metadata group is numbered `groups`"
        );
    }

    #[test]
    fn replacing_with_the_same_membership_is_no_change() {
        let d = Directory::new(Membership::single("solo", 4, "fp"));
        let rx = d.subscribe();
        assert!(!d.replace(Membership::single("solo", 4, "fp")));
        assert!(!rx.has_changed().unwrap());
        let mut m = Membership::single("solo", 4, "fp");
        m.placed = vec![vec![1]; 5];
        assert!(d.replace(m));
        assert!(rx.has_changed().unwrap());
    }
}
