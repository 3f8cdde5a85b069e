//! The end of day in the cluster: at the day's close (nine tenths into the safety phase) the
//! job at each group's leader closes the portfolios of its group one after another, as
//! production's `close_day` does, each through the real `ClosePortfolio` workflow: already
//! closed? then the portfolio's journal (read through a barrier at the leader), then its
//! `CloseDay` through the group's log. A flow lost with its node, or refused, is taken up again
//! by the job. Checked at the end, on every replica: each portfolio the job closed with a
//! statement holds the day's close (replicas hold the same statement: their chains agree), and
//! none it found nothing to state for does.

use super::flows::Machine;
use super::{ClusterSim, Failure, EPOCH_MS, SYMBOLS};
use moneta::cluster::raft::sim::TICK_MS;
use moneta::cluster::raft::GroupId;
use moneta::domain::envelope::RequestMeta;
use moneta::domain::portfolio::Portfolio;
use moneta::domain::queries::ClosedThrough;
use moneta::domain::time::{Date, Timestamp};
use moneta::workflows::end_of_day::{ClosePortfolio, Closed};
use rust_decimal::Decimal;
use std::collections::{BTreeMap, BTreeSet};

#[derive(Default)]
pub(super) struct Eod {
    /// The day closed, its cutoff and closing prices (set at the close).
    day: Option<(Date, Timestamp, BTreeMap<String, Decimal>)>,
    /// Portfolios closed: with a statement, or with nothing to state.
    stated: BTreeSet<String>,
    nothing: BTreeSet<String>,
    /// Per group: the portfolio being closed now, and the last one closed (the job's cursor).
    running: BTreeMap<GroupId, String>,
    cursor: BTreeMap<GroupId, String>,
    /// Groups whose leader found nothing left to close (the group's day is recorded closed:
    /// portfolios opened after it are not the day's).
    finished: BTreeSet<GroupId>,
    runs: u64,
}

impl ClusterSim {
    fn close_tick(&self) -> u64 {
        self.s.ticks - self.s.ticks / 10
    }

    /// The job, every tick from the close on: at each group's leader, the next portfolio of the
    /// group not closed yet (one at a time per group).
    pub(super) fn end_of_day(&mut self) {
        if self.tick < self.close_tick() {
            return;
        }
        if self.eod.day.is_none() {
            let now = Timestamp(EPOCH_MS + (self.tick * TICK_MS) as i64);
            let prices = SYMBOLS
                .iter()
                .zip(&self.prices)
                .map(|((s, _), &p)| (s.to_string(), Decimal::new(p, 2)))
                .collect();
            self.eod.day = Some((Date::from_timestamp(now), now, prices));
            self.note("end_of_day", None, None, None, format!("the day {} closes", Date::from_timestamp(now)));
        }
        for g in 0..self.s.groups {
            if self.eod.running.contains_key(&g) || self.eod.finished.contains(&g) {
                continue;
            }
            let Some(next) = self.next_to_close(g) else {
                if self.raft.leader(g).is_some_and(|l| self.replicas.contains_key(&(l, g))) {
                    self.eod.finished.insert(g);
                }
                continue;
            };
            let Some(l) = self.raft.leader(g) else { continue };
            // The investor whose account it is (a registration retried under another id
            // opens its portfolio under that id), or whose clients trade it.
            let owner = self.owners.get(&next).copied();
            let Some(u) = owner.or_else(|| next.strip_prefix("usr_sim").and_then(|n| n.parse::<usize>().ok())) else {
                continue;
            };
            let (date, cutoff, prices) = self.eod.day.clone().expect("the day");
            self.eod.runs += 1;
            let meta = RequestMeta {
                request_id: format!("eod-{date}/{}", self.eod.runs),
                actor: "system".into(),
            };
            self.eod.running.insert(g, next.clone());
            self.start_flow(u, l, Machine::Close(Box::new(ClosePortfolio::new(next, date, prices, cutoff, meta))));
        }
    }

    /// The next portfolio of group `g` its leader's replica holds and the job has not closed.
    fn next_to_close(&self, g: GroupId) -> Option<String> {
        let l = self.raft.leader(g)?;
        let portfolios = &self.replicas.get(&(l, g))?.host.portfolios;
        let open = |id: &&String| !self.eod.stated.contains(*id) && !self.eod.nothing.contains(*id);
        let after = self.eod.cursor.get(&g);
        let later = match after {
            Some(c) => portfolios
                .range::<String, _>((std::ops::Bound::Excluded(c), std::ops::Bound::Unbounded))
                .map(|(k, _)| k)
                .find(open),
            None => None,
        };
        later.or_else(|| portfolios.keys().find(open)).cloned()
    }

    /// A close ended (or its flow died: `None`).
    pub(super) fn close_ended(&mut self, portfolio: &str, result: Option<Result<Closed, String>>) {
        let g = self.group_of_id(portfolio);
        self.eod.running.remove(&g);
        match result {
            Some(Ok(Closed::Statement | Closed::AlreadyClosed)) => {
                self.eod.stated.insert(portfolio.to_string());
                self.report.statements += 1;
            }
            Some(Ok(Closed::NothingToState)) => {
                self.eod.nothing.insert(portfolio.to_string());
            }
            Some(Err(_)) | None => return,
        }
        self.eod.cursor.insert(g, portfolio.to_string());
    }

    /// The job's state, for a liveness failure's report.
    pub(super) fn describe_eod(&self) -> String {
        format!(
            "day {:?}, closing {:?}, groups finished {:?}",
            self.eod.day.as_ref().map(|d| d.0),
            self.eod.running,
            self.eod.finished
        )
    }

    /// The day is closed for every portfolio its groups' leaders hold.
    pub(super) fn eod_settled(&self) -> bool {
        self.eod.day.is_some() && self.eod.running.is_empty() && (0..self.s.groups).all(|g| self.eod.finished.contains(&g))
    }

    /// At the end: the statements the job made are on every replica; none where it found
    /// nothing to state.
    pub(super) fn check_statements(&mut self) -> Result<(), Failure> {
        let Some((date, _, _)) = self.eod.day.clone() else { return Ok(()) };
        for (ids, want) in [(self.eod.stated.clone(), true), (self.eod.nothing.clone(), false)] {
            for id in ids {
                let g = self.group_of_id(&id);
                for n in self.members_of(g) {
                    let Some(r) = self.replicas.get_mut(&(n, g)) else { continue };
                    let closed = r.host.query::<Portfolio, _>(&id, ClosedThrough { date });
                    if closed != want {
                        return self.fail(format!(
                            "{id} at node {n}: closed through {date}: {closed}, but the job's close answered {want}"
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}
