//! The simulated clients: two per investor, each sending its requests in turn to a node (kept
//! while it answers), retrying under the same request id and idempotency key until answered,
//! now and then losing an answer and sending the request again. Every call is recorded in the
//! investor's history, checked for linearizability at each answer.

use super::{cents, user_id, Body, ClusterSim, Entry, Failure, CLIENT_TIMEOUT_TICKS, EPOCH_MS, RESEND, SWITCH};
use moneta::cluster::history::{BankOp, BankRet};
use moneta::cluster::raft::sim::TICK_MS;
use moneta::cluster::raft::{Outcome, ProposalId, RaftId};
use moneta::domain::envelope::{Envelope, RequestMeta};
use moneta::domain::portfolio::{IdemTag, Portfolio, PortfolioCommand};
use moneta::storage::codec;
use rand::Rng;
use rust_decimal::Decimal;

#[derive(Clone, Debug)]
pub(super) enum Waiting {
    /// Not sent yet (or to be sent again) at this tick.
    Send {
        at: u64,
    },
    Proposal {
        id: ProposalId,
        node: RaftId,
        since: u64,
    },
    Read {
        id: ProposalId,
        node: RaftId,
        since: u64,
    },
}

pub(super) struct Client {
    pub(super) user: usize,
    pub(super) thread: u64,
    pub(super) ops: Vec<BankOp>,
    pub(super) next: usize,
    pub(super) attempt: u32,
    pub(super) waiting: Option<Waiting>,
    /// The current request was answered this, and the client sends it again as if the answer
    /// had been lost on the way back: the same answer must come back, nothing applied twice.
    pub(super) echo: Option<BankRet>,
    /// The node this client talks to (kept while it answers, as a client keeps a connection).
    pub(super) node: Option<RaftId>,
    /// The current request is in the history (invoked once, however often it is sent).
    pub(super) invoked: bool,
}

impl ClusterSim {
    /// The request id (and idempotency key) of client `c`'s current request: the same on every
    /// retry (unless the planted bug is on).
    pub(super) fn request_id(&self, c: &Client) -> String {
        match self.s.sabotage_retries {
            false => format!("sim-{}-{}", c.thread, c.next),
            true => format!("sim-{}-{}-{}", c.thread, c.next, c.attempt),
        }
    }

    /// Puts client `i` in state `w` and schedules when to look at it again: at its send time,
    /// or when its wait for an answer times out. An answer wakes it through `pending`.
    pub(super) fn set_waiting(&mut self, i: usize, w: Option<Waiting>) {
        let wake = match &w {
            None => None,
            Some(Waiting::Send { at }) => Some((*at).max(self.tick + 1)),
            Some(Waiting::Proposal { id, since, .. } | Waiting::Read { id, since, .. }) => {
                self.pending.insert(*id, i);
                Some(since + CLIENT_TIMEOUT_TICKS + 1)
            }
        };
        if let Some(t) = wake {
            self.wake.entry(t).or_default().push(i);
        }
        self.clients[i].waiting = w;
    }

    /// The client still waiting on proposal or read `id` (a client that gave up on it and
    /// moved on is not), and the node it waits on.
    fn waiting_on(&mut self, id: ProposalId) -> Option<(usize, RaftId)> {
        let i = self.pending.remove(&id)?;
        match self.clients[i].waiting {
            Some(Waiting::Proposal { id: want, node, .. } | Waiting::Read { id: want, node, .. }) if want == id => Some((i, node)),
            _ => None,
        }
    }

    /// Answers that came back this tick, then the clients whose time has come (to send, or to
    /// give up waiting): only those are visited, so a run's cost follows its requests, not
    /// its clients times its ticks.
    pub(super) fn serve_clients(&mut self) -> Result<(), Failure> {
        // (Those a workflow waits on stay for it: a read may be answered the moment it is
        // asked, before its flow's next turn.)
        let flows = &self.flow_pending;
        let (outcomes, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut self.raft.outcomes).into_iter().partition(|(id, _)| !flows.contains_key(id));
        let (reads, keep_reads): (Vec<_>, Vec<_>) = std::mem::take(&mut self.raft.reads).into_iter().partition(|(id, _)| !flows.contains_key(id));
        self.raft.outcomes.extend(keep);
        self.raft.reads.extend(keep_reads);
        for (id, (_, outcome)) in outcomes {
            let Some((i, node)) = self.waiting_on(id) else { continue };
            match outcome {
                Outcome::Applied => {
                    let rid = self.request_id(&self.clients[i]);
                    match self.answers.get(&(node, rid.clone())).copied() {
                        Some(ret) => self.answered(i, ret)?,
                        None => return self.fail(format!("request {rid} was applied at node {node} with no answer there")),
                    }
                }
                _ => self.retry(i),
            }
        }
        for (id, ok) in reads {
            // The state where the read was served (see `sync_replicas`).
            let seen = self.read_cash.remove(&id);
            let Some((i, node)) = self.waiting_on(id) else { continue };
            if ok {
                let c = &self.clients[i];
                let (u, g) = (c.user, self.group_of_user(c.user));
                // Else the state now.
                let cash = match seen {
                    Some(cash) => cash,
                    None => match self.replicas.get_mut(&(node, g)) {
                        Some(r) => cents(r.host.query::<Portfolio, _>(&user_id(u), moneta::domain::queries::Cash)),
                        // Dropped from its group since it served the read: ask again.
                        None => {
                            self.retry(i);
                            continue;
                        }
                    },
                };
                self.answered(i, BankRet::Cash(cash))?;
            } else {
                self.retry(i);
            }
        }
        while let Some(entry) = self.wake.first_entry() {
            if *entry.key() > self.tick {
                break;
            }
            for i in entry.remove() {
                match self.clients[i].waiting.clone() {
                    Some(Waiting::Send { at }) if at <= self.tick => self.send(i),
                    Some(Waiting::Proposal { id, since, .. } | Waiting::Read { id, since, .. }) if self.tick - since > CLIENT_TIMEOUT_TICKS => {
                        self.pending.remove(&id);
                        self.retry(i);
                    }
                    // A wake-up left from an earlier state.
                    _ => {}
                }
            }
        }
        Ok(())
    }

    /// Sends client `i`'s current request to a random node, which passes it to the group's
    /// leader it knows (if it can reach it); otherwise the client tries again a little later.
    pub(super) fn send(&mut self, i: usize) {
        let (user, mut op) = {
            let c = &self.clients[i];
            (c.user, c.ops[c.next])
        };
        // An order goes out at the price the client sees when it first sends it (and keeps it
        // on every retry: the same request).
        if let (false, BankOp::Buy { qty, price: 0 } | BankOp::Sell { qty, price: 0 }) = (self.clients[i].invoked, op) {
            let price = self.price_of(user);
            op = match op {
                BankOp::Buy { .. } => BankOp::Buy { qty, price },
                _ => BankOp::Sell { qty, price },
            };
            let c = &mut self.clients[i];
            c.ops[c.next] = op;
        }
        if !self.clients[i].invoked {
            self.clients[i].invoked = true;
            self.history[user].invoke(self.clients[i].thread, op);
            self.report.requests += 1;
        }
        let g = self.group_of_user(user);
        let at = match self.clients[i].node {
            Some(n) if self.raft.nodes.contains_key(&n) && !self.rng.random_bool(SWITCH) => n,
            _ => {
                let nodes: Vec<RaftId> = self.raft.nodes.keys().copied().collect();
                nodes[self.rng.random_range(0..nodes.len())]
            }
        };
        self.clients[i].node = Some(at);
        if let Some(until) = self.raft.paused_until(at) {
            // The node is frozen: the request waits in its socket until it wakes.
            self.set_waiting(i, Some(Waiting::Send { at: until / TICK_MS }));
            return;
        }
        let leader = self.raft.nodes[&at].raft.as_ref().and_then(|r| r.status(g)).and_then(|s| s.leader);
        let reachable = leader.filter(|&l| self.raft.connected(at, l) && (l == at || self.raft.paused_until(l).is_none()));
        let Some(l) = reachable else { return self.retry(i) };
        let since = self.tick;
        let waiting = match op {
            BankOp::ReadCash => self.raft.read_at(l, g).map(|id| Waiting::Read { id, node: l, since }),
            _ => {
                let request_id = self.request_id(&self.clients[i]);
                let cmd = command(op, &symbol_of(user), format!("k-{request_id}"));
                let meta = RequestMeta {
                    request_id,
                    actor: user_id(user),
                };
                let entry = Entry {
                    at: EPOCH_MS + (self.tick * TICK_MS) as i64,
                    body: Body::Call(Envelope::execute::<Portfolio>(user_id(user), cmd, meta)),
                };
                self.raft
                    .propose_at(l, g, codec::encode(&entry))
                    .map(|id| Waiting::Proposal { id, node: l, since })
            }
        };
        match waiting {
            Some(w) => {
                let c = &self.clients[i];
                let detail = format!("{op:?} {} at node {at} to leader {l}, attempt {}", self.request_id(c), c.attempt);
                self.note("send", Some(l), Some(g), Some(user_id(user)), detail);
                self.set_waiting(i, Some(w));
            }
            None => self.retry(i),
        }
    }

    pub(super) fn retry(&mut self, i: usize) {
        let backoff = self.rng.random_range(5..30);
        let c = &mut self.clients[i];
        c.attempt += 1;
        c.node = None;
        let (user, detail) = (user_id(c.user), format!("client {} tries again in {backoff} ticks", c.thread));
        self.set_waiting(i, Some(Waiting::Send { at: self.tick + backoff }));
        self.report.retries += 1;
        self.note("retry", None, None, Some(user), detail);
    }

    pub(super) fn answered(&mut self, i: usize, ret: BankRet) -> Result<(), Failure> {
        let c = &self.clients[i];
        let (user, detail) = (user_id(c.user), format!("client {}: {:?} answered {ret:?}", c.thread, c.ops[c.next]));
        self.note("answer", None, None, Some(user), detail);
        let c = &mut self.clients[i];
        let op = c.ops[c.next];
        if let Some(first) = c.echo.take() {
            if first != ret {
                let why = format!(
                    "{}: request sim-{}-{} sent again after its answer was lost: answered {ret:?}, first {first:?} (applied twice?)",
                    user_id(c.user),
                    c.thread,
                    c.next
                );
                return self.fail(why);
            }
        } else {
            match (op, ret) {
                (BankOp::Deposit(a), BankRet::Cash(_)) => self.acknowledged[c.user] += a,
                (BankOp::Withdraw(a), BankRet::Cash(_)) => self.acknowledged[c.user] -= a,
                (BankOp::Buy { .. } | BankOp::Sell { .. }, BankRet::Filled(_)) => {
                    let (cash, units) = op.order_effect().expect("an order");
                    self.acknowledged[c.user] += cash;
                    self.acknowledged_units[c.user] += units;
                    self.report.fills += 1;
                }
                _ => {}
            }
            let user = c.user;
            let result = self.history[user].ret(c.thread, ret);
            // Checked at every answer: the run stops at the first history that no order of
            // the calls explains.
            if let Err(e) = result {
                return self.fail(format!("{}: the client history is not linearizable: {e}", user_id(user)));
            }
            let c = &mut self.clients[i];
            if op != BankOp::ReadCash && !self.live && self.rng.random_bool(RESEND) {
                c.echo = Some(ret);
                c.attempt += 1;
                let at = self.tick + self.rng.random_range(1..CLIENT_TIMEOUT_TICKS);
                self.set_waiting(i, Some(Waiting::Send { at }));
                self.report.resent += 1;
                return Ok(());
            }
        }
        let c = &mut self.clients[i];
        c.next += 1;
        c.attempt = 0;
        c.invoked = false;
        // Think time: a client's requests spread over the safety phase.
        let think = match self.live {
            true => 20,
            false => (2 * self.s.ticks / self.s.ops_per_client.max(1) as u64).max(20),
        };
        let next = (c.next < c.ops.len()).then(|| Waiting::Send {
            at: self.tick + self.rng.random_range(1..think),
        });
        self.set_waiting(i, next);
        Ok(())
    }

    pub(super) fn clients_done(&self) -> bool {
        self.clients.iter().all(|c| c.waiting.is_none())
    }
}

/// The instrument user `u` trades (one each, so its history stays one model).
pub(super) fn symbol_of(u: usize) -> String {
    super::SYMBOLS[u % super::SYMBOLS.len()].0.to_string()
}

/// The portfolio command for a client's deposit, withdrawal or order under idempotency key
/// `key` (the same on every retry).
fn command(op: BankOp, symbol: &str, key: String) -> PortfolioCommand {
    use moneta::domain::compliance::{InvestorStatus, ProductFacts};
    use moneta::domain::fingerprint;
    use moneta::domain::portfolio::{OrderQuote, Side};
    match op {
        BankOp::Deposit(a) => {
            let amount = Decimal::new(a, 2);
            let fingerprint = fingerprint::deposit(amount);
            PortfolioCommand::Deposit {
                amount,
                idem: IdemTag { key, fingerprint },
            }
        }
        BankOp::Withdraw(a) => {
            let amount = Decimal::new(a, 2);
            let fingerprint = fingerprint::withdrawal(amount);
            PortfolioCommand::Withdraw {
                amount,
                idem: IdemTag { key, fingerprint },
                investor: InvestorStatus::onboarded(7, true),
            }
        }
        BankOp::Buy { qty, price } | BankOp::Sell { qty, price } => {
            let side = if matches!(op, BankOp::Buy { .. }) { Side::Buy } else { Side::Sell };
            let quantity = Decimal::from(qty);
            let fingerprint = fingerprint::order(symbol, side, quantity);
            PortfolioCommand::PlaceOrder {
                symbol: symbol.to_string(),
                side,
                quantity,
                quote: Some(OrderQuote {
                    price: Decimal::new(price, 2),
                    product: ProductFacts { complex: false, risk_class: 3 },
                }),
                investor: InvestorStatus::onboarded(7, true),
                fees: Default::default(),
                idem: IdemTag { key, fingerprint },
            }
        }
        BankOp::ReadCash => unreachable!("a read is not a command"),
    }
}
