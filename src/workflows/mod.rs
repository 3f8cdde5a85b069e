//! Workflows and jobs: what spans more than one entity or runs on its own schedule, below the
//! gateway and above the router (DESIGN.md §4). The gateway parses, authorises and calls one
//! workflow or entity; the CLI and the control socket call the same code.

pub mod accept_advice;
pub mod feed;
pub mod flow;
pub mod order;

pub use flow::{run, run_with, BrokerEffects, Effects, Input, Next, Workflow};
