//! Workflows and jobs: what spans more than one entity or runs on its own schedule, below the
//! gateway and above the router (DESIGN.md §4). The gateway parses, authorises and calls one
//! workflow or entity; the CLI and the control socket call the same code.

pub mod accept_advice;
pub mod advice;
pub mod advise;
pub mod daily_report;
pub mod data_keys;
pub mod end_of_day;
pub mod erasure;
pub mod erasure_request;
pub mod feed;
pub mod flow;
pub mod onboarding;
pub mod order;
pub mod performance;
pub mod prices;
pub mod reconcile;
pub mod registration;
pub mod rescreen;
pub mod retention;
pub mod services;
pub mod steps;
pub mod withdrawal;

pub use flow::{run, run_with, Effect, Effected, Effects, Input, Next, NodeEffects, Workflow};

use crate::cluster::{RouteFailure, Router};
use crate::domain::portfolio::{History, Portfolio};
use crate::storage::scope::Groups;

/// Runs `job` every `every` until `stop` is set (the node's scheduled jobs), for the shard
/// groups this node leads at that moment: each group's job runs at its leader only, so none runs
/// twice and none is skipped when leadership moves (the next leader's next run covers it).
pub async fn periodically<F, Fut>(every: std::time::Duration, mut stop: tokio::sync::watch::Receiver<bool>, router: Router, mut job: F)
where
    F: FnMut(Groups) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.changed() => return,
        }
        if *stop.borrow() {
            return;
        }
        let led = router.led_groups();
        if !led.is_empty() {
            job(led).await;
        }
    }
}

/// A portfolio's history (every transaction, order and statement), from its journal.
pub async fn portfolio_history(router: &Router, user_id: &str) -> Result<History, RouteFailure> {
    let journal = router.read_journal::<Portfolio>(user_id).await?;
    Ok(History::from_events(journal.iter().map(|e| &e.event)))
}
