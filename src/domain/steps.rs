//! A user's operations that span several of their entities (an order: the investor's facts,
//! the portfolio's decision, the broker's confirmation; accepting advice: the account's
//! decision, then its orders). A user's account and portfolio share a shard, so each of these
//! runs as one step at the leader of the user's shard group: the gateway makes one hop, and the
//! entity calls inside the step are local to that node. These are the step's wire forms.

use super::advice::ProposedOrder;
use super::envelope::RequestMeta;
use super::portfolio::{IdemTag, PortfolioRejection, PortfolioReply, Side};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// What an order asks.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OrderRequest {
    pub user_id: String,
    pub symbol: String,
    pub side: Side,
    pub quantity: Decimal,
    pub idem: IdemTag,
    pub meta: RequestMeta,
}

/// What a withdrawal asks (it runs as a step: the investor's screening is read from their
/// account for the portfolio's decision).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WithdrawalRequest {
    pub user_id: String,
    pub amount: Decimal,
    pub idem: IdemTag,
    pub meta: RequestMeta,
}

/// The portfolio's answer: the fill (or a refusal remembered under the key), or a rejection.
pub type OrderOutcome = Result<PortfolioReply, PortfolioRejection>;

/// What accepting advice did.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Accepted {
    /// The advice's orders, each with what the order path answered.
    Orders(Vec<(ProposedOrder, OrderOutcome)>),
    /// The advice was accepted under this key before and has been replaced since: what the
    /// key's orders answered then.
    Remembered(Vec<PortfolioReply>),
}

/// Why nothing was accepted.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum NotAccepted {
    /// The key was used for another request.
    Portfolio(PortfolioRejection),
    /// The account refused (no such advice, under review, rejected, already accepted).
    Account(super::account::AccountRejection),
    /// The account answered something other than the advice (a driver bug, reported).
    Unexpected,
}

/// A user's operation, run at the leader of the user's group.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum UserStep {
    PlaceOrder(OrderRequest),
    AcceptAdvice {
        user_id: String,
        advice_id: String,
        /// The request's idempotency key (the orders use its series).
        key: String,
        meta: RequestMeta,
    },
    /// The data key `key_id` (`usr_…`, or `retention:usr_…`) exists: created unless it does,
    /// at the leader of the user's group only, one creation at a time (a second creation
    /// elsewhere would replace the key the first one sealed with).
    DataKey {
        key_id: String,
    },
    /// The data key `key_id` as the user's group holds it (wrapped by the master key), read
    /// linearizably; `None` once destroyed (or never created).
    WrappedKey {
        key_id: String,
    },
    /// A withdrawal: the investor's screening, then the portfolio's decision.
    Withdraw(WithdrawalRequest),
}

/// The user a data key belongs to (`retention:usr_…` belongs to `usr_…`): its group holds it.
pub fn key_owner(key_id: &str) -> &str {
    key_id.strip_prefix("retention:").unwrap_or(key_id)
}

impl UserStep {
    /// Whose operation it is (its shard decides where it runs).
    pub fn user_id(&self) -> &str {
        match self {
            UserStep::PlaceOrder(r) => &r.user_id,
            UserStep::Withdraw(r) => &r.user_id,
            UserStep::AcceptAdvice { user_id, .. } => user_id,
            UserStep::DataKey { key_id } | UserStep::WrappedKey { key_id } => key_owner(key_id),
        }
    }

    /// Bounded sizes, checked before a step that came from a peer runs (ids and keys are
    /// checked again by the entities).
    pub fn is_well_formed(&self) -> bool {
        const MAX: usize = 256;
        let meta_ok = |m: &RequestMeta| m.request_id.len() <= MAX && m.actor.len() <= MAX;
        match self {
            UserStep::PlaceOrder(r) => r.user_id.len() <= MAX && r.symbol.len() <= MAX && r.idem.key.len() <= MAX && meta_ok(&r.meta),
            UserStep::AcceptAdvice { user_id, advice_id, key, meta } => user_id.len() <= MAX && advice_id.len() <= MAX && key.len() <= MAX && meta_ok(meta),
            UserStep::DataKey { key_id } | UserStep::WrappedKey { key_id } => !key_id.is_empty() && key_id.len() <= MAX,
            UserStep::Withdraw(r) => r.user_id.len() <= MAX && r.idem.key.len() <= MAX && meta_ok(&r.meta),
        }
    }
}

/// What a step answered.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum StepAnswer {
    Order(OrderOutcome),
    Accept(Result<Accepted, NotAccepted>),
    /// The data key exists now.
    KeyReady,
    /// The wrapped data key, if the group holds one.
    Wrapped(Option<Vec<u8>>),
    /// What a withdrawal answered: the cash left, or a refusal.
    Cash(OrderOutcome),
}
