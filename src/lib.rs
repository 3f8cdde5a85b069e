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
