//! The replicas' entities: every replica of every group executes the entries its node applied,
//! in order, through the real entity host; after each entry its events, cash, holdings and audit
//! records are hashed into a chain that every replica must reach alike at that index, and the
//! portfolio's books are checked. Reads are answered from the state where they were served.

use super::{cents, user_id, Body, ClusterSim, Entry, Failure, ServedRead, Waiting};
use moneta::cluster::history::BankRet;
use moneta::cluster::raft::{GroupId, RaftId};
use moneta::domain::envelope::Envelope;
use moneta::domain::portfolio::{Portfolio, PortfolioRejection, PortfolioReply};
use moneta::domain::time::Timestamp;
use moneta::storage::codec;
use rust_decimal::Decimal;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

impl ClusterSim {
    /// Each replica's host executes the entries its node applied since the last tick (from the
    /// start again when the node crashed or installed a snapshot), then is checked.
    pub(super) fn sync_replicas(&mut self) -> Result<(), Failure> {
        // Reads served since the last tick, by replica: each must see the state at the index
        // its node had applied when it served it.
        let mut reads: BTreeMap<(RaftId, GroupId), Vec<ServedRead>> = BTreeMap::new();
        for (id, point) in std::mem::take(&mut self.raft.read_points) {
            let Some(&i) = self.pending.get(&id) else { continue };
            if let Some(Waiting::Read { node, .. }) = self.clients[i].waiting {
                let user = self.clients[i].user;
                reads.entry((node, self.group_of_user(user))).or_default().push((point, id, user));
            }
        }
        let keys: Vec<(RaftId, GroupId)> = self.replicas.keys().copied().collect();
        for (n, g) in keys {
            let mut reads = reads.remove(&(n, g)).unwrap_or_default();
            let (len, diverged) = {
                let applied = self.raft.applied_entries(n, g);
                let r = &self.replicas[&(n, g)];
                (
                    applied.len(),
                    r.consumed > applied.len() || (r.consumed > 0 && applied[r.consumed - 1].0 != r.last_index),
                )
            };
            if diverged {
                self.rebuild(n, g);
            }
            let start = self.replicas[&(n, g)].consumed;
            if start == len {
                self.reload_if_rebuilt(n, g);
                self.serve_reads(n, g, &mut reads, u64::MAX);
                continue;
            }
            let new: Vec<(u64, Vec<u8>)> = self.raft.applied_entries(n, g)[start..].to_vec();
            let last = new.last().map_or(0, |e| e.0);
            for (index, data) in &new {
                self.serve_reads(n, g, &mut reads, *index);
                if data.is_empty() {
                    continue;
                }
                let Ok(entry) = codec::decode::<Entry>(data) else {
                    return self.fail(format!("group {g} index {index}: an entry that does not decode"));
                };
                let r = self.replicas.get_mut(&(n, g)).expect("replica");
                let now = Timestamp(entry.at.max(r.host.now().millis()));
                r.host.set_now(now);
                let envelope = match entry.body {
                    // A client's deposit, withdrawal or order (a workflow's close goes below).
                    Body::Call(envelope @ Envelope::Portfolio { .. }) if !super::flows::is_flow_call(&envelope) => envelope,
                    // The workflows' calls and writes (accounts, the email index, records).
                    Body::Call(envelope) => {
                        self.apply_flow_call(n, g, *index, envelope)?;
                        continue;
                    }
                    Body::Write(writes) => {
                        self.apply_write(n, g, *index, &writes)?;
                        continue;
                    }
                };
                let Some(request_id) = envelope.command_meta().map(|m| m.request_id.clone()) else {
                    return self.fail(format!("group {g} index {index}: a portfolio read in the log"));
                };
                let entity = envelope.entity_id().to_string();
                let r = self.replicas.get_mut(&(n, g)).expect("replica");
                let journal_before = r.host.portfolios.get(&entity).map_or(0, |h| h.journal.len());
                let answer = match r.host.dispatch(envelope).map(|a| a.executed::<Portfolio>()) {
                    Ok(Some(Ok(PortfolioReply::Cash { cash }))) => BankRet::Cash(cents(cash)),
                    Ok(Some(Ok(PortfolioReply::Order(o)))) => BankRet::Filled(cents(o.cash_effect)),
                    // A refusal is remembered under the idempotency key (a reply) or not (a rejection).
                    Ok(Some(Err(PortfolioRejection::InsufficientFunds | PortfolioRejection::InsufficientHoldings)))
                    | Ok(Some(Ok(PortfolioReply::Refused(PortfolioRejection::InsufficientFunds | PortfolioRejection::InsufficientHoldings)))) => {
                        BankRet::Refused
                    }
                    other => return self.fail(format!("node {n} group {g} index {index}: the entity answered {other:?}")),
                };
                let p = &r.host.portfolios[&entity].state;
                if let Some(why) = books_broken(p) {
                    return self.fail(format!("node {n} group {g} index {index}: {entity}: {why}"));
                }
                // What the entry did to the entity — its events, then cash and holdings (the
                // state follows from the events: hashing the whole state, idempotency memory
                // and all, at every entry cost a fifth of a large run).
                let journal = &r.host.portfolios[&entity].journal;
                let events = codec::encode(&&journal[journal_before.min(journal.len())..]);
                let book = codec::encode(&(p.cash, &p.holdings));
                self.note(
                    "apply",
                    Some(n),
                    Some(g),
                    Some(entity.clone()),
                    format!("index {index}: {request_id} → {answer:?}"),
                );
                self.answers.insert((n, request_id), answer);
                self.extend_chain(n, g, *index, &entity, &[&events, &book])?;
            }
            self.reload_if_rebuilt(n, g);
            self.serve_reads(n, g, &mut reads, u64::MAX);
            let r = self.replicas.get_mut(&(n, g)).expect("replica");
            r.consumed = len;
            r.last_index = last;
            if r.consumed >= r.checkpoint.as_ref().map_or(0, |c| c.consumed) + super::CHECKPOINT_EVERY {
                r.checkpoint = Some(Box::new(super::Checkpoint {
                    host: r.host.clone(),
                    chain: r.chain,
                    consumed: r.consumed,
                    last_index: r.last_index,
                }));
            }
        }
        Ok(())
    }

    /// Extends replica (n, g)'s chain with entry `index` — what it concerns, the bytes of what
    /// it did, then the audit records it asked for (out of the host once in the chain, so that
    /// a checkpoint does not copy the whole trail) — and compares it with the chain the first
    /// replica to execute that index reached: replicas hold the same entities and audit chain.
    pub(super) fn extend_chain(&mut self, n: RaftId, g: GroupId, index: u64, what: &str, parts: &[&[u8]]) -> Result<(), Failure> {
        let r = self.replicas.get_mut(&(n, g)).expect("replica");
        let mut h = Sha256::new();
        h.update(r.chain);
        h.update(index.to_be_bytes());
        h.update(what.as_bytes());
        for part in parts {
            h.update(part);
        }
        for record in r.host.audit.drain(..) {
            h.update(codec::encode(&record));
        }
        r.chain = h.finalize().into();
        let digest = r.chain;
        match self.states.get(&(g, index)) {
            Some(d) if *d != digest => self.fail(format!(
                "group {g}: node {n}'s entities (or audit records) differ from another replica's after index {index} ({what})"
            )),
            Some(_) => Ok(()),
            None => {
                self.states.insert((g, index), digest);
                Ok(())
            }
        }
    }

    /// Answers the reads of `reads` served before entry `next` (their point is below it) from
    /// the replica's state now.
    pub(super) fn serve_reads(&mut self, n: RaftId, g: GroupId, reads: &mut Vec<ServedRead>, next: u64) {
        let r = self.replicas.get_mut(&(n, g)).expect("replica");
        reads.retain(|&(point, id, user)| {
            if point >= next {
                return true;
            }
            let cash = r.host.query::<Portfolio, _>(&user_id(user), moneta::domain::queries::Cash);
            self.read_cash.insert(id, cents(cash));
            false
        });
    }

    /// A rebuilt replica has replayed what its disk kept: its host reloads its entities.
    pub(super) fn reload_if_rebuilt(&mut self, n: RaftId, g: GroupId) {
        let r = self.replicas.get_mut(&(n, g)).expect("replica");
        if std::mem::take(&mut r.reload) {
            r.host.reload();
        }
    }
}

/// The bank-style invariant of one portfolio: no negative cash or holdings, and cash plus cost
/// basis moved only by deposits, withdrawals, fees and realised P&L.
pub(super) fn books_broken(p: &Portfolio) -> Option<String> {
    if p.cash < Decimal::ZERO {
        return Some(format!("negative cash {}", p.cash));
    }
    let mut basis = Decimal::ZERO;
    for (symbol, h) in &p.holdings {
        if h.quantity <= Decimal::ZERO || h.cost_basis < Decimal::ZERO {
            return Some(format!("holding {symbol}: quantity {} cost basis {}", h.quantity, h.cost_basis));
        }
        basis += h.cost_basis;
    }
    let t = &p.totals;
    let moved = t.deposits - t.withdrawals - t.fees + t.realised_pnl;
    (p.cash + basis != moved).then(|| {
        format!(
            "cash {} + cost basis {basis} ≠ deposits {} − withdrawals {} − fees {} + realised P&L {} (money created or lost)",
            p.cash, t.deposits, t.withdrawals, t.fees, t.realised_pnl
        )
    })
}
