//! Adapters to the world outside: identity verification providers (and, with the trading work,
//! brokers). Each is a trait with a built-in implementation, so a real provider plugs in without
//! touching the code that decides.

pub mod broker;
pub mod kyc;
pub mod sanctions;
