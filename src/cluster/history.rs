//! Linearizability of a portfolio's client history, checked with stateright's
//! `LinearizabilityTester` against a bank-style sequential model: deposits, withdrawals (refused
//! when cash is short) and reads of cash, in integer cents.
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
}

/// What a call answered: the cash after it (deposits and withdrawals answer it too, which
/// pins their order and keeps the search short), or a refused withdrawal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BankRet {
    Refused,
    Cash(i64),
}

/// The sequential model: one portfolio's cash.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Bank {
    pub cash: i64,
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
    let mut t = LinearizabilityTester::<u64, Bank>::new(Bank { cash: initial });
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
}
