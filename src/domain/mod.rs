//! The sans-IO core: every rule that decides about money, orders and the audit trail.
//!
//! Nothing in here performs IO, reads a clock or draws OS randomness: time and randomness come
//! in through [`ctx::Ctx`], so the production actors and the deterministic simulator drive the
//! very same state machines (DESIGN.md §2). `clippy.toml` forbids the obvious escapes.

#![deny(clippy::disallowed_methods, clippy::disallowed_types)]

pub mod account;
pub mod advice;
pub mod audit;
pub mod compliance;
pub mod ctx;
pub mod email_index;
pub mod entity;
pub mod envelope;
pub mod fees;
pub mod fingerprint;
pub mod ids;
pub mod instrument;
pub mod kyc;
pub mod market;
pub mod money;
pub mod performance;
pub mod portfolio;
pub mod price_history;
pub mod queries;
pub mod reconcile;
pub mod screening;
pub mod shard_map;
pub mod steps;
pub mod suitability;
pub mod time;
pub mod valuation;
