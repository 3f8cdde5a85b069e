//! Metrics (Prometheus text format at `/metrics`) and log set-up.
//!
//! Labels carry route templates and kinds only, never ids or personal data.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub method: String,
    pub route: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLatencyLabels {
    pub method: String,
    pub route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    /// An entity kind name: static, so labelling a hot-path observation allocates nothing.
    pub kind: &'static str,
}

/// A shard group, for the raft metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GroupLabels {
    pub group: u32,
}

/// Per shard group: what its raft replica on this node did.
#[derive(Clone)]
pub struct RaftStats {
    pub leader_changes: Family<GroupLabels, Counter>,
    pub proposals: Family<GroupLabels, Counter>,
    pub commit_latency: Family<GroupLabels, Histogram, fn() -> Histogram>,
    /// Committed entries not yet applied here (as of the last round).
    pub apply_lag: Family<GroupLabels, Gauge>,
    /// Peer raft messages refused (unknown group, wrong address, refused by raft).
    pub messages_refused: Family<GroupLabels, Counter>,
    /// What this node sent to a group's leader on another node, by kind: `call` (an entity
    /// call), `step` (a user's order or accept), `write` (a write set).
    pub forwarded: Family<KindLabels, Counter>,
    /// Membership steps this node took as a group's leader, by kind (`add_learner`,
    /// `promote`, `remove_learner`, `remove_voter`, `transfer_leader`).
    pub conf_steps: Family<KindLabels, Counter>,
    /// Placement changes and node state changes the planner proposed (on the metadata leader).
    pub placements: Family<KindLabels, Counter>,
    /// Replicas this node dropped after it was removed from a group.
    pub replicas_dropped: Counter,
    /// Writes refused because this node no longer led their group in the term of the read
    /// they were decided on (`AuditJournal::commit_fenced`).
    pub fenced_refusals: Counter,
}

impl RaftStats {
    pub fn group(g: u32) -> GroupLabels {
        GroupLabels { group: g }
    }
}

fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_05, 2.0, 18))
}

fn depth_histogram() -> Histogram {
    Histogram::new(exponential_buckets(1.0, 2.0, 14))
}

pub struct Metrics {
    registry: Registry,
    pub raft: RaftStats,
    pub http_requests: Family<RouteLabels, Counter>,
    pub http_latency: Family<RouteLatencyLabels, Histogram, fn() -> Histogram>,
    pub entities_active: Family<KindLabels, Gauge>,
    pub entity_activations: Family<KindLabels, Counter>,
    pub entity_passivations: Family<KindLabels, Counter>,
    pub entity_restarts: Family<KindLabels, Counter>,
    pub entity_mailbox_depth: Family<KindLabels, Histogram, fn() -> Histogram>,
    pub journal_mailbox_depth: Gauge,
    pub commit_batch_size: Histogram,
    pub commit_batch_records: Histogram,
    pub flush_latency: Histogram,
    pub corrupt_records: Counter,
    /// The corrupt records counted so far, by where they are (a record found again by a retry
    /// or a restart is not counted again); at most `CORRUPT_SEEN_MAX` remembered.
    corrupt_seen: std::sync::Arc<std::sync::Mutex<std::collections::HashSet<String>>>,
    /// Commands answered again from an entity's memory of their request id (retries).
    pub request_replays: Counter,
    /// A request id that came again with another command (refused; a driver bug).
    pub request_id_conflicts: Counter,
    /// The price fan-out's counters (shared with `actors::fanout::PriceBus`).
    pub fanout: FanoutStats,
    /// The peer transport's and the peer layer's counters.
    pub peer: PeerStats,
}

/// What the cluster's peer links refused, dropped or lost.
#[derive(Clone, Debug, Default)]
pub struct PeerStats {
    pub transport: crate::cluster::transport::Counters,
    pub layer: crate::cluster::peer::PeerCounters,
}

/// How many corrupt records' locations are remembered (past it, each finding counts).
const CORRUPT_SEEN_MAX: usize = 10_000;

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("moneta");
        let http_requests = Family::<RouteLabels, Counter>::default();
        let http_latency = Family::<RouteLatencyLabels, Histogram, fn() -> Histogram>::new_with_constructor(latency_histogram as fn() -> Histogram);
        let entities_active = Family::<KindLabels, Gauge>::default();
        let entity_activations = Family::<KindLabels, Counter>::default();
        let entity_passivations = Family::<KindLabels, Counter>::default();
        let entity_restarts = Family::<KindLabels, Counter>::default();
        let entity_mailbox_depth = Family::<KindLabels, Histogram, fn() -> Histogram>::new_with_constructor(depth_histogram as fn() -> Histogram);
        let journal_mailbox_depth = Gauge::default();
        let commit_batch_size = Histogram::new(exponential_buckets(1.0, 2.0, 14));
        let commit_batch_records = Histogram::new(exponential_buckets(1.0, 2.0, 16));
        let flush_latency = Histogram::new(exponential_buckets(0.000_05, 2.0, 18));
        let corrupt_records = Counter::default();
        let request_replays = Counter::default();
        let request_id_conflicts = Counter::default();
        registry.register("http_requests", "HTTP requests by route and status", http_requests.clone());
        registry.register("http_request_duration_seconds", "HTTP request latency by route", http_latency.clone());
        registry.register("entities_active", "Entity actors currently active", entities_active.clone());
        registry.register("entity_activations", "Entity activations from storage", entity_activations.clone());
        registry.register("entity_passivations", "Entities passivated after idling", entity_passivations.clone());
        registry.register("entity_restarts", "Entity restarts after a panic", entity_restarts.clone());
        registry.register(
            "entity_mailbox_depth",
            "Mailbox depth seen when a message is sent to an entity",
            entity_mailbox_depth.clone(),
        );
        registry.register(
            "journal_mailbox_depth",
            "Messages waiting in the audit journal's mailbox",
            journal_mailbox_depth.clone(),
        );
        registry.register("group_commit_batch_size", "Commits carried by one group flush", commit_batch_size.clone());
        registry.register("group_commit_batch_records", "Records written by one group flush", commit_batch_records.clone());
        registry.register("group_commit_flush_seconds", "Write + flush latency of one group commit", flush_latency.clone());
        registry.register("corrupt_records", "Corrupt records found on disk", corrupt_records.clone());
        registry.register(
            "request_replays",
            "Commands answered again from the entity's memory of their request id",
            request_replays.clone(),
        );
        registry.register(
            "request_id_conflicts",
            "Request ids that came again with another command (refused)",
            request_id_conflicts.clone(),
        );
        let raft = RaftStats {
            leader_changes: Family::default(),
            proposals: Family::default(),
            commit_latency: Family::new_with_constructor(latency_histogram as fn() -> Histogram),
            apply_lag: Family::default(),
            messages_refused: Family::default(),
            forwarded: Family::default(),
            conf_steps: Family::default(),
            placements: Family::default(),
            replicas_dropped: Counter::default(),
            fenced_refusals: Counter::default(),
        };
        registry.register(
            "raft_leader_changes",
            "Leadership changes seen by this node's replica, per group",
            raft.leader_changes.clone(),
        );
        registry.register("raft_proposals", "Raft entries proposed by this node, per group", raft.proposals.clone());
        registry.register(
            "raft_commit_seconds",
            "From proposal to committed and applied here, per group",
            raft.commit_latency.clone(),
        );
        registry.register("raft_apply_lag", "Committed entries not yet applied here, per group", raft.apply_lag.clone());
        registry.register("raft_messages_refused", "Peer raft messages refused, per group", raft.messages_refused.clone());
        registry.register(
            "cluster_forwarded",
            "Calls, users' steps and write sets sent to a group's leader on another node",
            raft.forwarded.clone(),
        );
        registry.register(
            "cluster_conf_steps",
            "Raft membership steps taken as a group's leader, by kind",
            raft.conf_steps.clone(),
        );
        registry.register(
            "cluster_placements",
            "Placement and node-state changes proposed by the planner, by kind",
            raft.placements.clone(),
        );
        registry.register(
            "cluster_replicas_dropped",
            "Replicas dropped after this node was removed from their group",
            raft.replicas_dropped.clone(),
        );
        registry.register(
            "raft_fenced_refusals",
            "Writes refused because leadership changed since the read they were decided on",
            raft.fenced_refusals.clone(),
        );
        let peer = PeerStats::default();
        registry.register(
            "peer_frames_refused",
            "Peer frames refused by the transport: over the limit, unreadable, a full queue, a failed handshake",
            peer.transport.frames_refused.clone(),
        );
        registry.register(
            "peer_requests_failed",
            "Requests to peers that got no answer (outcome unknown)",
            peer.transport.requests_failed.clone(),
        );
        registry.register(
            "peer_lane_frames_dropped",
            "Frames for a peer's lane dropped before they left (a full queue, or no lane)",
            peer.transport.lane_frames_dropped.clone(),
        );
        registry.register(
            "peer_messages_refused",
            "Peer messages refused by the cluster layer: undecodable, from a non-member, or malformed",
            peer.layer.refused.clone(),
        );
        let fanout = FanoutStats::default();
        registry.register(
            "fanout_prices_published",
            "Prices published to the fan-out by the feed",
            fanout.published.clone(),
        );
        registry.register("fanout_prices_delivered", "Prices put into portfolio inboxes", fanout.delivered.clone());
        registry.register(
            "fanout_prices_coalesced",
            "Prices that replaced an unseen older price in a slow portfolio's inbox",
            fanout.coalesced.clone(),
        );
        registry.register("portfolio_revaluations", "Live portfolio revaluations applied", fanout.revaluations.clone());
        registry.register(
            "valuation_refreshes_dropped",
            "Live valuation refreshes not queued because too many users were waiting for one",
            fanout.refreshes_dropped.clone(),
        );
        Metrics {
            registry,
            raft,
            http_requests,
            http_latency,
            entities_active,
            entity_activations,
            entity_passivations,
            entity_restarts,
            entity_mailbox_depth,
            journal_mailbox_depth,
            commit_batch_size,
            commit_batch_records,
            flush_latency,
            corrupt_records,
            corrupt_seen: Default::default(),
            request_replays,
            request_id_conflicts,
            fanout,
            peer,
        }
    }

    /// Counts a corrupt record found at `location` once, however often it is read again.
    pub fn corrupt_record(&self, location: &str) {
        let mut seen = self.corrupt_seen.lock().expect("corrupt records lock");
        if seen.contains(location) {
            return;
        }
        if seen.len() < CORRUPT_SEEN_MAX {
            seen.insert(location.to_string());
        }
        self.corrupt_records.inc();
    }

    pub fn kind(kind: &'static str) -> KindLabels {
        KindLabels { kind }
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("encoding metrics into a String");
        out
    }
}

/// Prometheus's text format (0.0.4) from OpenMetrics text. The two differ in three places: a
/// counter family is named with its `_total` suffix (OpenMetrics names the family without it),
/// there is no `# UNIT` or `# EOF` line, and an untyped family is `untyped`, not `unknown`.
pub fn prometheus_text(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let described = ["# HELP ", "# TYPE "].into_iter().find_map(|p| line.strip_prefix(p).map(|rest| (p, rest)));
        match described {
            Some((prefix, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                let tail = if prefix == "# TYPE " && tail == "unknown" { "untyped" } else { tail };
                let suffix = if counters.contains(name) && !name.ends_with("_total") { "_total" } else { "" };
                out.push_str(&format!("{prefix}{name}{suffix} {tail}"));
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

/// Installs the global tracing subscriber (text or JSON). Safe to call more than once.
pub fn init_logging(format: crate::config::LogFormat, level: &str) -> Result<(), String> {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_new(level).map_err(|e| format!("key `log.level`: {e}"))?;
    // Colours only on a terminal: a log file or a journal gets plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    let result = match format {
        crate::config::LogFormat::Json => builder.json().flatten_event(true).with_current_span(true).try_init(),
        crate::config::LogFormat::Text => builder.try_init(),
    };
    // A second initialisation (tests) is not an error.
    let _ = result;
    Ok(())
}

/// Counters of the fan-out (exported on /metrics).
#[derive(Clone, Default, Debug)]
pub struct FanoutStats {
    /// Prices published by the feed.
    pub published: Counter,
    /// Prices put into inboxes.
    pub delivered: Counter,
    /// Of those, how many replaced an unseen older price (coalesced) rather than waking anyone.
    pub coalesced: Counter,
    /// Revaluations applied by the portfolios' valuers (one per batch of latest prices).
    pub revaluations: Counter,
    /// Valuation refreshes not queued because `fanout::STALE_LIMIT` users were waiting.
    pub refreshes_dropped: Counter,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openmetrics_becomes_prometheus_text() {
        let om = "# HELP moneta_requests Requests served.\n# TYPE moneta_requests counter\nmoneta_requests_total{route=\"/\"} 3\n# HELP moneta_depth Depth.\n# TYPE moneta_depth gauge\n# UNIT moneta_depth items\nmoneta_depth 2\n# TYPE moneta_x unknown\nmoneta_x 1\n# EOF\n";
        let text = prometheus_text(om);
        assert_eq!(
            text,
            "# HELP moneta_requests_total Requests served.\n# TYPE moneta_requests_total counter\nmoneta_requests_total{route=\"/\"} 3\n# HELP moneta_depth Depth.\n# TYPE moneta_depth gauge\nmoneta_depth 2\n# TYPE moneta_x untyped\nmoneta_x 1\n"
        );
    }

    #[test]
    fn every_sample_of_the_nodes_metrics_belongs_to_a_declared_family() {
        let m = Metrics::new();
        let text = prometheus_text(&m.encode());
        assert!(!text.contains("# EOF"));
        let families: Vec<(&str, &str)> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|r| r.split_once(' '))
            .collect();
        assert!(!families.is_empty());
        for (name, kind) in &families {
            assert!(kind != &"counter" || name.ends_with("_total"), "{name}");
        }
        for line in text.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
            let sample = line.split(['{', ' ']).next().unwrap_or_default();
            let declared = families.iter().any(|(name, kind)| match *kind {
                "histogram" => [name.to_string(), format!("{name}_bucket"), format!("{name}_sum"), format!("{name}_count")].contains(&sample.to_string()),
                _ => sample == *name,
            });
            assert!(declared, "{line}");
        }
    }
}
