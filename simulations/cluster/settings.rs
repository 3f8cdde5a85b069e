//! What a cluster run is made of (its settings, from the flags or drawn from the seed) and
//! what it did (its report).

use super::Faults;
use moneta::cluster::raft::sim::TICK_MS;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// What a run is made of (from the flags, or drawn from the seed).
#[derive(Clone, Debug)]
pub struct Settings {
    pub seed: u64,
    pub nodes: u64,
    pub groups: u32,
    pub users: usize,
    pub ops_per_client: usize,
    /// Ticks of the safety phase (faults on).
    pub ticks: u64,
    /// The bound on the liveness phase (faults off): grows with the work left to finish
    /// (`Settings::scale_liveness`), so a large valid workload is never reported unconverged
    /// for want of time.
    pub liveness_ticks: u64,
    pub faults: Faults,
    /// Test hook (a planted bug): a retry goes out under a new request id and idempotency key,
    /// as if the client had forgotten them — exactly-once must then fail on some seed.
    pub sabotage_retries: bool,
}

impl Settings {
    pub fn from_seed(seed: u64) -> Settings {
        let mut r = ChaCha8Rng::seed_from_u64(seed ^ 0x4e4f_4445_5300);
        Settings {
            seed,
            nodes: r.random_range(3..=5),
            groups: 4,
            users: 6,
            ops_per_client: 60,
            ticks: 3_000,
            liveness_ticks: 6_000,
            faults: Faults::draw(seed),
            sabotage_retries: false,
        }
    }

    /// Sets the liveness bound for the workload: 6 000 ticks (a minute of simulated time) for
    /// the default one, plus time for every client's requests and every investor's workflows
    /// and end-of-day close (about 30 ticks a request and 6 an investor).
    pub fn scale_liveness(&mut self) {
        let requests = self.ops_per_client.saturating_sub(60) as u64;
        let users = self.users.saturating_sub(6) as u64;
        self.liveness_ticks = 6_000 + requests.saturating_mul(30) + users.saturating_mul(6);
    }

    pub fn describe(&self) -> String {
        let f = &self.faults;
        format!(
            "nodes {} · groups {} · users {} (2 clients each, {} requests per client) · safety {} ticks, liveness ≤ {} ticks ({} ms per tick)\n\
             faults: loss {} · duplicate {} · latency 1–{} ms · crash {}/tick · restart {}/tick · isolate {}/tick · one-way cut {}/tick · heal {}/tick · clog {}/tick · pause {}/tick · compact {}/tick · join {}/tick · decommission {}/tick · disk error {}/tick · corrupt {}/tick",
            self.nodes,
            self.groups,
            self.users,
            self.ops_per_client,
            self.ticks,
            self.liveness_ticks,
            TICK_MS,
            f.loss,
            f.duplicate,
            f.latency_max_ms,
            f.crash,
            f.restart,
            f.isolate,
            f.one_way,
            f.heal,
            f.clog,
            f.pause,
            f.compact,
            f.join,
            f.decommission,
            f.disk_error,
            f.corrupt
        )
    }
}

/// What the run did.
#[derive(Debug, Default)]
pub struct Report {
    pub ticks: u64,
    pub liveness_ticks: u64,
    pub crashes: u64,
    pub restarts: u64,
    pub isolations: u64,
    pub one_way_cuts: u64,
    pub clogs: u64,
    pub pauses: u64,
    pub compactions: u64,
    pub requests: u64,
    pub retries: u64,
    /// Answered requests sent again under the same ids (answers lost on the way back).
    pub resent: u64,
    /// Orders filled (acknowledged).
    pub fills: u64,
    /// Events of the run (what `--trace` writes).
    pub events: u64,
    /// The trace file could not be written (the run itself passed its checks).
    pub trace_error: Option<String>,
    pub elections: u64,
    pub snapshots: u64,
    pub refused: u64,
    /// Nodes admitted and started; decommissions proposed; nodes removed (exited for good).
    pub joins: u64,
    pub decommissions: u64,
    pub removed: u64,
    /// Placements the planner changed; raft membership steps taken; replicas dropped.
    pub placements: u64,
    pub conf_steps: u64,
    pub dropped: u64,
    /// Metadata commands that no longer fitted when applied (refused alike on every replica).
    pub meta_refused: u64,
    /// Disk errors injected (a write that stopped its node, or a read that failed a restart).
    pub disk_errors: u64,
    /// Records damaged at rest; nodes replaced because of one.
    pub corruptions: u64,
    pub replaced: u64,
    /// The workflows: investors registered, erasures asked for and carried out; a workflow's
    /// calls and effects sent again after a failure or a timeout.
    pub registered: u64,
    /// Investors through KYC and the suitability questionnaire.
    pub onboarded: u64,
    pub erasures_requested: u64,
    pub erasures: u64,
    pub flow_retries: u64,
    /// Portfolios the end of day closed with a statement.
    pub statements: u64,
    /// Advised investors: advice issued, accepted, the orders it filled; the broker's
    /// confirmations of workflow orders.
    pub advised: u64,
    pub advice_accepted: u64,
    pub advice_orders: u64,
    pub confirmations: u64,
    pub digest: String,
}
