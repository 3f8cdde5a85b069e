//! Moneta: an intelligent investing platform built as an actor-based system.
//!
//! Layers (DESIGN.md §4), dependencies pointing downward:
//! `gateway` → `workflows` (jobs, cross-entity steps) → `cluster` (router) → `actors` → `storage`
//! → `domain` (sans-IO core).

pub mod actors;
pub mod adapters;
pub mod analytics;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod control;
pub mod domain;
pub mod gateway;
pub mod node;
pub mod planted;
pub mod storage;
pub mod telemetry;
pub mod workflows;

/// jemalloc for every binary that links the crate (the node, the tools, tests and benches), as
/// TiKV does: sled and the request path allocate per key, per page copy and per header, and
/// glibc's malloc was about 15% of the group-commit writer's samples. Measured in the same runs
/// (BENCHMARKS.md, "Third pass"): reads +80%, the bare HTTP handler +58%, durable deposits and
/// orders +13–28%; mimalloc gained as much on reads but its durable writes' p99 rose from 10 to
/// 36 ms. Building it needs `cc` and `make` (README, set-up).
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;
