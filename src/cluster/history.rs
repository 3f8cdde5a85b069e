//! Linearizability of a portfolio's client history, checked with stateright's
//! `LinearizabilityTester` against a bank-style sequential model: deposits, withdrawals (refused
//! when cash is short), orders of one instrument at a price the client saw (refused when cash or
//! holdings are short; fees as the default schedule charges them) and reads of cash, in integer
//! cents.
//!
//! A history is what clients saw, in real-time order from one monotonic clock: each call is
//! invoked by a client thread and returns later — or never (a call whose outcome stayed
//! unknown is left open, and its client carries on under a new thread id). The search is
//! exponential in concurrency: check per portfolio, a few hundred calls each.

use stateright::semantics::{ConsistencyTester, LinearizabilityTester, SequentialSpec};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BankOp {
    Deposit(i64),
    Withdraw(i64),
    ReadCash,
    /// Buy `qty` units at `price` cents each (plus the fee).
    Buy {
        qty: i64,
        price: i64,
    },
    /// Sell `qty` units at `price` cents each (less the fee).
    Sell {
        qty: i64,
        price: i64,
    },
}

impl BankOp {
    /// What an order moves if filled: (cash in cents, units). Fees as `FeeSchedule::default()`
    /// charges them on the rounded notional, computed by the domain's own function.
    pub fn order_effect(self) -> Option<(i64, i64)> {
        let (qty, price, sign) = match self {
            BankOp::Buy { qty, price } => (qty, price, -1),
            BankOp::Sell { qty, price } => (qty, price, 1),
            _ => return None,
        };
        let notional = qty * price;
        let fee = crate::domain::fees::FeeSchedule::default().fee_for(rust_decimal::Decimal::new(notional, 2));
        let fee: i64 = (fee * rust_decimal::Decimal::from(100)).trunc().try_into().expect("a fee fits in i64 cents");
        Some(match sign {
            -1 => (-(notional + fee), qty),
            _ => (notional - fee, -qty),
        })
    }
}

/// What a call answered: the cash after it (deposits and withdrawals answer it too, which
/// pins their order and keeps the search short), or a refused withdrawal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BankRet {
    Refused,
    Cash(i64),
    /// An order filled, moving this much cash (cents; negative for a buy).
    Filled(i64),
}

/// The sequential model: one portfolio's cash.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Bank {
    pub cash: i64,
    /// Units held of the one instrument the client trades.
    pub held: i64,
}

impl SequentialSpec for Bank {
    type Op = BankOp;
    type Ret = BankRet;

    fn invoke(&mut self, op: &BankOp) -> BankRet {
        match *op {
            BankOp::Deposit(a) => {
                self.cash += a;
                BankRet::Cash(self.cash)
            }
            BankOp::Withdraw(a) if a <= self.cash => {
                self.cash -= a;
                BankRet::Cash(self.cash)
            }
            BankOp::Withdraw(_) => BankRet::Refused,
            BankOp::ReadCash => BankRet::Cash(self.cash),
            BankOp::Buy { .. } | BankOp::Sell { .. } => {
                let (cash, units) = op.order_effect().expect("an order");
                if self.cash + cash < 0 || self.held + units < 0 {
                    BankRet::Refused
                } else {
                    self.cash += cash;
                    self.held += units;
                    BankRet::Filled(cash)
                }
            }
        }
    }
}

/// One event of a recorded history, in real-time order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    Invoke { thread: u64, op: BankOp },
    Return { thread: u64, ret: BankRet },
}

/// Checks a history against the model starting from `initial` cash. `Err` names why the
/// history is malformed or that no linearization exists.
pub fn check(initial: i64, events: &[Event]) -> Result<(), String> {
    check_from(Bank { cash: initial, held: 0 }, events)
}

/// Checks a history against the model starting from `initial`.
pub fn check_from(initial: Bank, events: &[Event]) -> Result<(), String> {
    let mut t = LinearizabilityTester::<u64, Bank>::new(initial);
    for e in events {
        match *e {
            Event::Invoke { thread, op } => {
                t.on_invoke(thread, op)?;
            }
            Event::Return { thread, ret } => {
                t.on_return(thread, ret)?;
            }
        }
    }
    if t.is_consistent() {
        Ok(())
    } else {
        Err(format!("no linearization of {} calls matches the bank model", t.len()))
    }
}

/// One portfolio's history checked as it grows, in segments cut at quiescent points (no call
/// pending). Real-time order puts every call of a segment before every call of the next, so
/// the whole history linearizes exactly when each segment does from the cash at its start —
/// and for this model that state is unique: the sum of what the answered deposits, withdrawals
/// and fills moved (a refusal moves nothing), whatever their order. So each check costs the current segment,
/// not the whole history. (Every call must return eventually: a call left open keeps its
/// segment open.)
#[derive(Clone, Debug, Default)]
pub struct Segmented {
    /// The portfolio at the start of the open segment.
    base: Bank,
    events: Vec<Event>,
    open: std::collections::BTreeMap<u64, BankOp>,
    /// Cash and units moved by the calls of the open segment that returned.
    moved: (i64, i64),
    /// Calls checked in closed segments.
    pub closed_calls: usize,
}

impl Segmented {
    pub fn invoke(&mut self, thread: u64, op: BankOp) {
        self.open.insert(thread, op);
        self.events.push(Event::Invoke { thread, op });
    }

    /// Records a return and checks the open segment; closes it when nothing is pending.
    pub fn ret(&mut self, thread: u64, ret: BankRet) -> Result<(), String> {
        let op = self
            .open
            .remove(&thread)
            .ok_or_else(|| format!("thread {thread} returned with no call pending"))?;
        self.events.push(Event::Return { thread, ret });
        let (cash, units) = match (op, ret) {
            (BankOp::Deposit(a), BankRet::Cash(_)) => (a, 0),
            (BankOp::Withdraw(a), BankRet::Cash(_)) => (-a, 0),
            (BankOp::Buy { .. } | BankOp::Sell { .. }, BankRet::Filled(_)) => op.order_effect().expect("an order"),
            _ => (0, 0),
        };
        self.moved = (self.moved.0 + cash, self.moved.1 + units);
        check_from(self.base.clone(), &self.events)?;
        if self.open.is_empty() {
            self.base.cash += self.moved.0;
            self.base.held += self.moved.1;
            self.moved = (0, 0);
            self.closed_calls += self.events.len() / 2;
            self.events.clear();
        }
        Ok(())
    }

    /// Checks what is open now.
    pub fn check(&self) -> Result<(), String> {
        check_from(self.base.clone(), &self.events)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use BankOp::*;
    use Event::*;

    #[test]
    fn concurrent_deposits_and_a_read_between_them_linearize() {
        let h = [
            Invoke { thread: 1, op: Deposit(100) },
            Invoke { thread: 2, op: Deposit(50) },
            Invoke { thread: 3, op: ReadCash },
            Return {
                thread: 2,
                ret: BankRet::Cash(50),
            },
            Return {
                thread: 3,
                ret: BankRet::Cash(50),
            },
            Return {
                thread: 1,
                ret: BankRet::Cash(150),
            },
            Invoke { thread: 3, op: Withdraw(500) },
            Return {
                thread: 3,
                ret: BankRet::Refused,
            },
            Invoke { thread: 3, op: ReadCash },
            Return {
                thread: 3,
                ret: BankRet::Cash(150),
            },
        ];
        assert_eq!(check(0, &h), Ok(()));
    }

    #[test]
    fn a_lost_deposit_or_a_stale_read_is_rejected() {
        // The deposit returned before the read began, yet the read misses it.
        let stale = [
            Invoke { thread: 1, op: Deposit(100) },
            Return {
                thread: 1,
                ret: BankRet::Cash(100),
            },
            Invoke { thread: 2, op: ReadCash },
            Return {
                thread: 2,
                ret: BankRet::Cash(0),
            },
        ];
        assert!(check(0, &stale).is_err());
        // A call left open (outcome unknown) may or may not have happened: both reads pass.
        let open = [
            Invoke { thread: 1, op: Deposit(100) },
            Invoke { thread: 2, op: ReadCash },
            Return {
                thread: 2,
                ret: BankRet::Cash(100),
            },
        ];
        assert_eq!(check(0, &open), Ok(()));
    }

    #[test]
    fn a_segmented_history_catches_a_stale_read_after_a_quiescent_point() {
        let mut h = Segmented::default();
        h.invoke(1, Deposit(100));
        h.invoke(2, Deposit(50));
        assert_eq!(h.ret(2, BankRet::Cash(50)), Ok(()));
        assert_eq!(h.ret(1, BankRet::Cash(150)), Ok(()));
        // Quiescent: the segment closed at 150 cents.
        assert_eq!(h.closed_calls, 2);
        h.invoke(1, Withdraw(500));
        assert_eq!(h.ret(1, BankRet::Refused), Ok(()));
        h.invoke(2, ReadCash);
        assert!(h.ret(2, BankRet::Cash(100)).is_err(), "a read that misses the deposit of a closed segment");
        let mut h = Segmented::default();
        h.invoke(1, Deposit(100));
        assert!(h.ret(2, BankRet::Cash(100)).is_err(), "a return with no call");
    }
}
