//! Abuse protection for logins: failed attempts are counted per account (keyed by the email's
//! keyed hash, so unknown emails are limited too) and per client address with `governor`'s GCRA
//! limiters. When an allowance is used up the account or address is locked out until the limiter
//! would admit another attempt; locked-out attempts get 429 `too_many_attempts` with
//! `Retry-After`, before any password is checked.
//!
//! Per address, the counters live in this node's memory (an address is one client's, whichever
//! node it reaches). Per account, the gateway counts failures in the email-index entity, so
//! every node of a cluster counts them together (`account_locked`, `account_failed`).

pub use crate::actors::locks::KeyedLocks;
use crate::config::AuthConfig;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Past this many lockouts held, expired ones are pruned (memory bound).
const LOCKOUTS_PRUNE_AT: usize = 10_000;

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Key {
    Account(String),
    Address(IpAddr),
}

pub struct LoginGuard {
    /// Every request to the unauthenticated identity routes (register, login, refresh), per
    /// client address: they cost an Argon2id hash or a disk write each.
    requests: DefaultKeyedRateLimiter<IpAddr>,
    per_account: DefaultKeyedRateLimiter<String>,
    per_address: DefaultKeyedRateLimiter<IpAddr>,
    clock: DefaultClock,
    lockouts: Mutex<HashMap<Key, Instant>>,
    /// One login attempt per account and per address at a time (`gateway::attempts`).
    pub attempts: super::attempts::AttemptLanes,
}

/// Why a failed attempt led to a lockout (for the security event).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockedBy {
    Account,
    Address,
}

fn quota(allowance: u32, window: Duration) -> Quota {
    let n = NonZeroU32::new(allowance.max(1)).expect("non-zero");
    let period = (window / n.get()).max(Duration::from_millis(1));
    Quota::with_period(period).expect("non-zero period").allow_burst(n)
}

impl LoginGuard {
    pub fn new(cfg: &AuthConfig) -> LoginGuard {
        LoginGuard {
            requests: RateLimiter::keyed(quota(cfg.identity_requests_per_minute, Duration::from_secs(60))),
            per_account: RateLimiter::keyed(quota(cfg.failed_logins_per_account, cfg.failed_login_window)),
            per_address: RateLimiter::keyed(quota(cfg.failed_logins_per_address, cfg.failed_login_window)),
            clock: DefaultClock::default(),
            lockouts: Mutex::new(HashMap::new()),
            attempts: super::attempts::AttemptLanes::default(),
        }
    }

    /// Admits one request to an unauthenticated identity route, or says how many seconds to wait.
    pub fn admit(&self, address: Option<IpAddr>) -> Result<(), u64> {
        let Some(ip) = address else { return Ok(()) };
        self.requests
            .check_key(&ip)
            .map_err(|not_until| not_until.wait_time_from(self.clock.now()).as_secs() + 1)
    }

    /// Seconds to wait when the account or the address is locked out now.
    pub fn locked(&self, account: &str, address: Option<IpAddr>) -> Option<u64> {
        let now = Instant::now();
        let lockouts = self.lockouts.lock().expect("lockouts lock");
        let keys = [Some(Key::Account(account.to_string())), address.map(Key::Address)];
        keys.into_iter()
            .flatten()
            .filter_map(|k| lockouts.get(&k).copied())
            .filter(|until| *until > now)
            .map(|until| (until - now).as_secs() + 1)
            .max()
    }

    /// Seconds to wait when the address is locked out now.
    pub fn address_locked(&self, address: Option<IpAddr>) -> Option<u64> {
        let now = Instant::now();
        let lockouts = self.lockouts.lock().expect("lockouts lock");
        address
            .and_then(|a| lockouts.get(&Key::Address(a)).copied())
            .filter(|until| *until > now)
            .map(|until| (until - now).as_secs() + 1)
    }

    /// Counts a failed attempt of an address; when it uses up the allowance, starts a lockout.
    pub fn address_failed(&self, address: Option<IpAddr>) -> Option<u64> {
        let ip = address?;
        match self.per_address.check_key(&ip) {
            Ok(_) => None,
            Err(not_until) => {
                let wait = not_until.wait_time_from(self.clock.now());
                Some(self.lock(Key::Address(ip), wait))
            }
        }
    }

    /// Counts a failed attempt; when it uses up an allowance, starts a lockout and says which.
    pub fn failed(&self, account: &str, address: Option<IpAddr>) -> Option<(LockedBy, u64)> {
        let mut locked = None;
        if let Err(not_until) = self.per_account.check_key(&account.to_string()) {
            let wait = not_until.wait_time_from(self.clock.now());
            locked = Some((LockedBy::Account, self.lock(Key::Account(account.to_string()), wait)));
        }
        if let Some(ip) = address {
            if let Err(not_until) = self.per_address.check_key(&ip) {
                let wait = not_until.wait_time_from(self.clock.now());
                let secs = self.lock(Key::Address(ip), wait);
                if locked.is_none() {
                    locked = Some((LockedBy::Address, secs));
                }
            }
        }
        locked
    }

    fn lock(&self, key: Key, wait: Duration) -> u64 {
        let now = Instant::now();
        let mut lockouts = self.lockouts.lock().expect("lockouts lock");
        if lockouts.len() >= LOCKOUTS_PRUNE_AT {
            lockouts.retain(|_, until| *until > now);
            self.per_account.retain_recent();
            self.per_address.retain_recent();
        }
        lockouts.insert(key, now + wait);
        wait.as_secs() + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> AuthConfig {
        let mut c = crate::config::Config::load(None).unwrap().auth;
        c.failed_logins_per_account = 3;
        c.failed_logins_per_address = 5;
        c.failed_login_window = Duration::from_secs(60);
        c.identity_requests_per_minute = 4;
        c
    }

    #[test]
    fn identity_requests_are_limited_per_address() {
        let g = LoginGuard::new(&cfg());
        let a: IpAddr = "127.0.0.20".parse().unwrap();
        for _ in 0..4 {
            assert_eq!(g.admit(Some(a)), Ok(()));
        }
        assert!(g.admit(Some(a)).is_err_and(|s| (1..=16).contains(&s)));
        assert_eq!(g.admit(Some("127.0.0.21".parse().unwrap())), Ok(()));
        assert_eq!(g.admit(None), Ok(()));
    }

    #[test]
    fn locks_out_after_the_allowance() {
        let g = LoginGuard::new(&cfg());
        let ip: IpAddr = "127.0.0.9".parse().unwrap();
        for _ in 0..3 {
            assert_eq!(g.locked("acct", Some(ip)), None);
            assert_eq!(g.failed("acct", Some(ip)), None);
        }
        let (by, secs) = g.failed("acct", Some(ip)).unwrap();
        assert_eq!(by, LockedBy::Account);
        assert!((1..=21).contains(&secs), "{secs}");
        assert!(g.locked("acct", Some(ip)).is_some());
        // Another account from another address is unaffected.
        assert_eq!(g.locked("other", Some("127.0.0.10".parse().unwrap())), None);
        // The address allowance (5) runs out across accounts.
        assert_eq!(g.failed("b", Some(ip)), None);
        let (by, _) = g.failed("c", Some(ip)).unwrap();
        assert_eq!(by, LockedBy::Address);
        assert!(g.locked("d", Some(ip)).is_some());
    }
}
