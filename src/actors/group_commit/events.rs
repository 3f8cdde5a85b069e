//! The writer's handling of what raft reports after a round: committed entries applied (the
//! metadata group's commands among them), read barriers released, logs compacted, and the
//! status every reader sees published.

use super::*;

impl Writer {
    /// Applies an entry's metadata commands to `meta` (the round's copy); a refused command
    /// changes nothing and is logged and counted — every replica refuses it alike. Commands in
    /// an entry of a shard group, or at a node without the metadata, are corrupt.
    pub(super) fn apply_meta(&self, group: u32, index: u64, meta: &mut Option<MetaState>, commands: &[crate::cluster::meta::MetaCommand]) -> bool {
        let Some(state) = meta.as_mut().filter(|_| group == self.meta_group) else {
            self.metrics.corrupt_records.inc();
            tracing::error!(
                group,
                index,
                "metadata commands in an entry of a shard group (or with no metadata here); not applied"
            );
            return false;
        };
        let mut moved = false;
        for cmd in commands {
            match state.apply(cmd) {
                Ok(()) => moved = true,
                Err(why) => {
                    self.metrics.raft.messages_refused.get_or_create(&RaftStats::group(group)).inc();
                    tracing::warn!(index, %why, "a metadata command was refused");
                }
            }
        }
        moved
    }

    pub(super) fn on_event(&mut self, e: Event) {
        match e {
            Event::Proposal(id, outcome) => {
                let Some((group, proposed, callbacks)) = self.pending.remove(&id) else {
                    return;
                };
                if outcome == Outcome::Applied {
                    self.metrics
                        .raft
                        .commit_latency
                        .get_or_create(&RaftStats::group(group))
                        .observe(proposed.elapsed().as_secs_f64());
                }
                for cb in callbacks {
                    cb(match outcome {
                        Outcome::Applied => Ok(()),
                        Outcome::NotApplied => Err(StoreError::Unavailable("the write was not committed (leadership moved)".into())),
                        Outcome::Unknown => Err(StoreError::Unavailable("leadership moved before the write was known to commit".into())),
                    });
                }
            }
            Event::Role(rc) => {
                self.metrics.raft.leader_changes.get_or_create(&RaftStats::group(rc.group)).inc();
                tracing::debug!(group = rc.group, leader = ?rc.leader, term = rc.term, leading = rc.leading, "shard group leadership");
                let _ = self.shared.roles.send(rc);
            }
            Event::Read(id, confirmed) => {
                if let Some((g, _, callbacks)) = self.reads.remove(&id) {
                    for cb in callbacks {
                        cb(if confirmed {
                            Ok(())
                        } else {
                            Err(StoreError::Unavailable(format!("shard group {g}: leadership moved during a read")))
                        });
                    }
                }
            }
            Event::SnapshotWanted(g) => match (self.raft.snapshot_point(g), self.store.group_snapshot(g)) {
                (Some((index, term)), Ok(data)) => {
                    tracing::info!(
                        group = g,
                        index,
                        bytes = data.len(),
                        "a snapshot of the group was built for a replica that fell behind"
                    );
                    self.raft.offer_snapshot(g, index, term, data);
                }
                (_, Err(e)) => tracing::error!(group = g, error = %e, "cannot build a snapshot of the group"),
                (None, _) => {}
            },
        }
    }

    pub(super) fn release_barriers(&mut self) {
        if self.barriers.is_empty() {
            return;
        }
        let lowest_pending = self.pending.keys().next().copied().unwrap_or(ProposalId::MAX);
        let (ready, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.barriers).into_iter().partition(|(w, _)| *w < lowest_pending);
        self.barriers = waiting;
        let failed = self.shared.failed.load(Ordering::SeqCst);
        for (_, cb) in ready {
            cb(if failed { Err(StoreError::Failed) } else { Ok(()) });
        }
    }

    pub(super) fn compact(&mut self) {
        let groups: Vec<u32> = self.raft.groups().collect();
        for g in groups {
            if self.raft.log_len(g) > LOG_COMPACT_AT {
                if let Some(s) = self.raft.status(g) {
                    self.raft.compact(g, s.applied_index.saturating_sub(LOG_KEEP));
                }
            }
        }
    }

    /// Publishes every group's status, and the lock-free leadership words the router and the
    /// entities read. A new leader serves once everything committed when it could first serve
    /// in its term is applied here (its entities then load the whole committed state).
    pub(super) fn publish_status(&mut self) {
        self.publish_status_and(false)
    }

    /// `publish_status`, also setting each group's apply-lag gauge (once a round is enough).
    pub(super) fn publish_status_and(&mut self, gauges: bool) {
        let status: Vec<_> = self.raft.groups().filter_map(|g| self.raft.status(g)).collect();
        let mut words = Vec::with_capacity(self.meta_group as usize + 1);
        // Groups with no replica here (never had one, or dropped it).
        for g in 0..=self.meta_group {
            if !self.raft.has_group(g) {
                words.push((g, placement::NO_REPLICA));
            }
        }
        for s in status.iter().filter(|_| gauges) {
            self.metrics
                .raft
                .apply_lag
                .get_or_create(&RaftStats::group(s.group))
                .set(s.commit_index.saturating_sub(s.applied_index) as i64);
        }
        for s in &status {
            let served = if s.serving {
                let from = self.serve_from.entry(s.group).or_insert((s.term, s.commit_index));
                if from.0 != s.term {
                    *from = (s.term, s.commit_index);
                }
                s.applied_index >= from.1
            } else {
                self.serve_from.remove(&s.group);
                false
            };
            words.push((s.group, s.leadership(self.raft.id(), served)));
        }
        let applied: Vec<(u32, u64)> = status.iter().map(|s| (s.group, s.applied_index)).collect();
        self.shared.board.publish(status, words);
        for (g, index) in applied {
            if let Some(w) = self.shared.applied.get(g as usize) {
                w.send_if_modified(|a| {
                    let moved = index > *a;
                    *a = (*a).max(index);
                    moved
                });
            }
        }
    }
}
