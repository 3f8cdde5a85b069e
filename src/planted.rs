//! Planted bugs: classic mistakes compiled in only with the test-only cargo feature
//! `planted-bugs`, switched on at run time by `simulate --plant BUG`, so the simulator can show
//! that it catches them (issue: the deterministic cluster simulator). Without the feature
//! `planted` is a constant `false` and every hook folds away; production builds never have it.
//!
//! Each hook sits in the production code the mistake would be made in:
//! - `AckBeforeCommit` — the raft driver reports a proposal applied once the leader's own round
//!   is durable, before a majority holds it (`cluster::raft::node`);
//! - `ReadWithoutLease` — a leader serves a read at its commit index without confirming with a
//!   quorum that it still leads (`cluster::raft::group`);
//! - `ForgetIdempotencyOnRestart` — an entity recovered from disk comes back without its
//!   idempotency memory: the request ids it remembered (`domain::entity::RequestLog::restore`)
//!   and the idempotency keys its state holds (left out of the stored state, see
//!   `idempotency_memory`).
//! - `ErasureKeepsDataKey` — the GDPR erasure forgets the crypto-shredding: it erases the
//!   account and frees the email but never destroys the person's data key, so every sealed
//!   copy of their data stays readable (`workflows::erasure`).

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bug {
    AckBeforeCommit,
    ReadWithoutLease,
    ForgetIdempotencyOnRestart,
    ErasureKeepsDataKey,
}

impl Bug {
    pub const ALL: [Bug; 4] = [
        Bug::AckBeforeCommit,
        Bug::ReadWithoutLease,
        Bug::ForgetIdempotencyOnRestart,
        Bug::ErasureKeepsDataKey,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Bug::AckBeforeCommit => "ack-before-commit",
            Bug::ReadWithoutLease => "read-without-lease",
            Bug::ForgetIdempotencyOnRestart => "forget-idempotency-on-restart",
            Bug::ErasureKeepsDataKey => "erasure-keeps-data-key",
        }
    }

    pub fn parse(name: &str) -> Option<Bug> {
        Bug::ALL.into_iter().find(|b| b.name() == name)
    }
}

#[cfg(feature = "planted-bugs")]
static PLANTED: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);

#[cfg(feature = "planted-bugs")]
fn code(bug: Option<Bug>) -> u8 {
    match bug {
        None => 0,
        Some(Bug::AckBeforeCommit) => 1,
        Some(Bug::ReadWithoutLease) => 2,
        Some(Bug::ForgetIdempotencyOnRestart) => 3,
        Some(Bug::ErasureKeepsDataKey) => 4,
    }
}

/// Switches one planted bug on (or none) for the whole process.
#[cfg(feature = "planted-bugs")]
pub fn plant(bug: Option<Bug>) {
    PLANTED.store(code(bug), std::sync::atomic::Ordering::SeqCst);
}

/// Whether `bug` is planted in this process (always false without the feature).
#[inline]
pub fn planted(bug: Bug) -> bool {
    #[cfg(feature = "planted-bugs")]
    {
        PLANTED.load(std::sync::atomic::Ordering::SeqCst) == code(Some(bug))
    }
    #[cfg(not(feature = "planted-bugs"))]
    {
        let _ = bug;
        false
    }
}

/// Serializes an entity's idempotency memory with its state — as an empty map when
/// `ForgetIdempotencyOnRestart` is planted (the classic mistake: the stored form of the state
/// leaves it out, so an entity loaded from disk forgets the keys it answered).
pub fn idempotency_memory<S, K, V>(memory: &std::collections::BTreeMap<K, V>, serializer: S) -> Result<S::Ok, S::Error>
where
    S: serde::Serializer,
    K: serde::Serialize + Ord,
    V: serde::Serialize,
{
    use serde::Serialize;
    if planted(Bug::ForgetIdempotencyOnRestart) {
        std::collections::BTreeMap::<K, V>::new().serialize(serializer)
    } else {
        memory.serialize(serializer)
    }
}
