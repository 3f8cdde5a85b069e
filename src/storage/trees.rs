//! Names of the sled trees beside the main `state` tree. One place, so the backup carries every
//! tree and no layer above storage has to be imported to name one.

/// The simulated broker's confirmations (order id → confirmation).
pub const CONFIRMATIONS_TREE: &str = "broker_confirmations";
/// Reconciliation alerts already raised (so each is raised once).
pub const ALERTED_TREE: &str = "reconciliation_alerts";
/// Progress of the periodic jobs (end of day, reconciliation).
pub const JOBS_TREE: &str = "jobs";
