//! The checks after every step and at the end (books, invariants, replay from the journals),
//! and what a run reports: its summary and its digest.

use super::*;

impl Sim {
    pub(super) fn check_step(&self, touched: &[usize]) -> Result<(), Failure> {
        for &u in touched {
            self.users[u].state.check_invariants();
            if let Some(a) = &self.users[u].advisee {
                a.account.check_invariants();
            }
        }
        for m in self.instruments.values() {
            m.state.check_invariants();
            if m.state.as_of != self.last_tick {
                return self.fail(format!(
                    "instrument {} priced as of {}, last tick {}",
                    m.state.symbol, m.state.as_of, self.last_tick
                ));
            }
        }
        Ok(())
    }

    /// End of day: the books of all portfolios together agree with what the clients moved.
    pub(super) fn check_books(&self) -> Result<(), Failure> {
        let [mut deposits, mut withdrawals, mut fees, mut pnl, mut cash, mut basis] = [Decimal::ZERO; 6];
        for user in &self.users {
            let t = &user.state.totals;
            deposits += t.deposits;
            withdrawals += t.withdrawals;
            fees += t.fees;
            pnl += t.realised_pnl;
            cash += user.state.cash;
            basis += user.state.holdings.values().map(|h| h.cost_basis).sum::<Decimal>();
        }
        let s = &self.stats;
        if deposits != s.deposited || withdrawals != s.withdrawn || fees != s.fees {
            return self.fail(format!(
                "books: portfolios record deposits {deposits}, withdrawals {withdrawals}, fees {fees}; clients moved {}, {}, {}",
                s.deposited, s.withdrawn, s.fees
            ));
        }
        if cash + basis != deposits - withdrawals - fees + pnl {
            return self.fail(format!(
                "books: cash {cash} + cost basis {basis} ≠ deposits − withdrawals − fees + realised P&L {pnl}"
            ));
        }
        Ok(())
    }

    pub(super) fn sabotage(&mut self) {
        for user in &mut self.users {
            for event in &mut user.journal {
                if let PortfolioEvent::Deposited { amount, .. } = event {
                    *amount += Decimal::new(1, 2);
                    return;
                }
            }
        }
    }

    /// Rebuilds every entity from its journal and compares it with the live state.
    pub(super) fn check_replay(&self) -> Result<(), Failure> {
        for user in &self.users {
            let rebuilt = replay::<Portfolio>(&user.id, &user.journal);
            if rebuilt != user.state || codec::encode(&rebuilt) != codec::encode(&user.state) {
                return self.fail(format!(
                    "replay: portfolio {} rebuilt from its {} events differs from the live state",
                    user.id,
                    user.journal.len()
                ));
            }
        }
        for user in &self.users {
            let Some(a) = &user.advisee else { continue };
            let rebuilt = replay::<moneta::domain::account::Account>(&user.id, &a.journal);
            if rebuilt != a.account || codec::encode(&rebuilt) != codec::encode(&a.account) {
                return self.fail(format!(
                    "replay: account {} rebuilt from its {} events differs from the live state",
                    user.id,
                    a.journal.len()
                ));
            }
        }
        for (symbol, m) in &self.instruments {
            let rebuilt = replay::<Instrument>(symbol, &m.journal);
            if rebuilt != m.state || codec::encode(&rebuilt) != codec::encode(&m.state) {
                return self.fail(format!(
                    "replay: instrument {symbol} rebuilt from its {} events differs from the live state",
                    m.journal.len()
                ));
            }
        }
        Ok(())
    }

    /// SHA-256 over every portfolio then every instrument, in id order, each as
    /// `kind byte ‖ id length ‖ id ‖ state length ‖ codec::encode(state)`, then the head of the
    /// audit chain (so every decision's audit record is covered too, including the reused keys,
    /// which leave no state behind). A scenario run then adds every account (kind 1, in id
    /// order) and the advised world (kind 4: the scenario, each band's value series, the sample
    /// minutes, the advice statistics, the shock marks and the review queue).
    pub fn digest(&self) -> String {
        let mut h = Sha256::new();
        h.update(b"moneta-simulation-digest-v1");
        let mut put = |kind: u8, id: &str, bytes: Vec<u8>| {
            h.update([kind]);
            h.update((id.len() as u64).to_le_bytes());
            h.update(id.as_bytes());
            h.update((bytes.len() as u64).to_le_bytes());
            h.update(&bytes);
        };
        let by_id: BTreeMap<&str, &Portfolio> = self.users.iter().map(|u| (u.id.as_str(), &u.state)).collect();
        for (id, p) in by_id {
            put(2, id, codec::encode(p));
        }
        for (symbol, m) in &self.instruments {
            put(3, symbol, codec::encode(&m.state));
        }
        put(0, "audit-head", self.audit.head.to_vec());
        // Scenario runs add (without one the digest is what it always was): the scenario, every
        // account (its advice record included), the value series and the advice statistics.
        if let Some(adv) = &self.advisory {
            let accounts: BTreeMap<&str, &moneta::domain::account::Account> = self
                .users
                .iter()
                .filter_map(|u| u.advisee.as_ref().map(|a| (u.id.as_str(), &a.account)))
                .collect();
            for (id, a) in accounts {
                put(1, id, codec::encode(a));
            }
            for (name, bytes) in adv.digest_parts() {
                put(4, &name, bytes);
            }
        }
        hex::encode(h.finalize())
    }

    /// The summary printed before the digest.
    pub fn summary(&self) -> String {
        let s = &self.stats;
        let mut out = String::new();
        let steps = self.args.days * STEPS_PER_DAY;
        let _ = writeln!(
            out,
            "users: {}  days: {}  steps: {steps} ({STEPS_PER_DAY} per day, one per simulated minute)",
            self.users.len(),
            self.args.days
        );
        let _ = writeln!(out, "instruments: {}  ticks applied: {}", self.instruments.len(), s.instrument_events);
        let _ = writeln!(
            out,
            "commands: {} (deposits {}, withdrawals {}, orders {})",
            s.commands, s.deposits, s.withdrawals, s.orders
        );
        let _ = writeln!(
            out,
            "accepted: {}  fills: {} (buys {}, sells {})",
            s.accepted,
            s.buys_filled + s.sells_filled,
            s.buys_filled,
            s.sells_filled
        );
        let rejected: u64 = s.rejections.values().sum();
        let _ = writeln!(
            out,
            "rejections: {rejected} ({} refusals journalled and remembered, {} reused keys refused with no event)",
            s.portfolio_refusals, s.key_reuses
        );
        for (code, n) in &s.rejections {
            let _ = writeln!(out, "  {code}: {n}");
        }
        let _ = writeln!(
            out,
            "replays: {} (stored reply, no events)  key reuses refused: {}  retries after refusal: {}",
            s.replays, s.key_reuses, s.retries
        );
        let _ = writeln!(
            out,
            "replayed refusals: {} (the stored refusal, no events), {} of them would now succeed as fresh requests",
            s.refusal_replays, s.stale_refusals_held
        );
        let _ = writeln!(
            out,
            "audit effects: {} ok, {} refused  audit-head: {}",
            s.audit_ok,
            s.audit_refused,
            hex::encode(self.audit.head)
        );
        let _ = writeln!(out, "instrument re-listing probes: {} (no-op, conflict refused)", s.instrument_replays);
        let events: usize = self.users.iter().map(|u| u.journal.len()).sum();
        let _ = writeln!(
            out,
            "journal replay: {} portfolios ({events} events) and {} instruments rebuilt, all equal",
            self.users.len(),
            self.instruments.len()
        );
        let cash: Decimal = self.users.iter().map(|u| u.state.cash).sum();
        let value: Decimal = self
            .users
            .iter()
            .map(|u| u.state.total_value(|sym| self.instruments.get(sym).map(|m| m.state.price)))
            .sum();
        let _ = writeln!(
            out,
            "money: deposited {}  withdrawn {}  fees {}  total cash {}  total value {}",
            cash_string(s.deposited),
            cash_string(s.withdrawn),
            cash_string(s.fees),
            cash_string(cash),
            cash_string(value)
        );
        let prices: Vec<String> = self
            .instruments
            .iter()
            .map(|(sym, m)| format!("{sym} {}→{}", m.opening, m.state.price))
            .collect();
        let _ = writeln!(out, "prices: {}", prices.join("  "));
        out
    }
}

fn replay<E: Entity>(id: &str, journal: &[E::Event]) -> E {
    let mut state = E::empty(id);
    for event in journal {
        state.apply(event);
    }
    state
}
