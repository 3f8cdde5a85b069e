//! Configuration: the embedded default `config.toml`, an optional file merged over it, then
//! `MONETA_<SECTION>_<KEY>` environment overrides; finally typed and validated. Every error
//! names the key (or variable) and the problem.

use crate::domain::fees::FeeSchedule;
use crate::domain::instrument::InstrumentKind;
use rust_decimal::Decimal;
use serde::{Deserialize, Deserializer};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The default configuration, compiled into the binary.
pub const DEFAULT_CONFIG: &str = include_str!("../../config.toml");

#[derive(Debug, thiserror::Error)]
#[error("configuration error: {0}")]
pub struct ConfigError(pub String);

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub node: NodeConfig,
    pub cluster: ClusterConfig,
    pub gateway: GatewayConfig,
    pub log: LogConfig,
    pub entities: EntitiesConfig,
    pub storage: StorageConfig,
    pub auth: AuthConfig,
    pub portfolio: PortfolioConfig,
    pub fees: FeesConfig,
    pub market: MarketConfig,
    pub security: SecurityConfig,
    pub compliance: ComplianceConfig,
    pub gdpr: GdprConfig,
    pub backup: BackupConfig,
    pub retention: RetentionConfig,
    pub advice: AdviceConfig,
    pub broker: BrokerConfig,
    pub statements: StatementsConfig,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BrokerConfig {
    pub slippage_bps: Decimal,
    #[serde(deserialize_with = "duration")]
    pub reconcile_interval: Duration,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatementsConfig {
    /// `HH:MM`, UTC.
    pub close_time: String,
}

impl StatementsConfig {
    /// Milliseconds after midnight UTC at which the day closes.
    pub fn close_offset_ms(&self) -> Option<i64> {
        let (h, m) = self.close_time.split_once(':')?;
        if h.len() != 2 || m.len() != 2 || !h.bytes().chain(m.bytes()).all(|c| c.is_ascii_digit()) {
            return None;
        }
        let (h, m): (i64, i64) = (h.parse().ok()?, m.parse().ok()?);
        (h < 24 && m < 60).then_some((h * 60 + m) * 60_000)
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdviceConfig {
    pub drift_threshold: Decimal,
    pub relative_drift_threshold: Decimal,
    pub min_trade: Decimal,
    pub review_turnover: Decimal,
    pub cash_buffer: Decimal,
    pub sharp_move_threshold: Decimal,
}

impl AdviceConfig {
    pub fn policy(&self) -> crate::domain::advice::AdvicePolicy {
        crate::domain::advice::AdvicePolicy {
            drift_threshold: self.drift_threshold,
            relative_drift_threshold: self.relative_drift_threshold,
            min_trade: self.min_trade,
            review_turnover: self.review_turnover,
            cash_buffer: self.cash_buffer,
            slippage_bps: Decimal::ZERO,
        }
    }
}

/// How long each class of data is kept; the retention job enforces it.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionConfig {
    /// Security events holding personal data (sign-ins, lockouts, denied requests … see
    /// `workflows::retention::PERSONAL_SECURITY_EVENTS`): redacted after this long.
    #[serde(deserialize_with = "duration")]
    pub security_events: Duration,
    /// Notifications shown to users: deleted after this long.
    #[serde(deserialize_with = "duration")]
    pub notifications: Duration,
    /// The identity behind an erased person's trades, kept (sealed under its own retention key)
    /// for this long after the erasure; then the key is destroyed.
    #[serde(deserialize_with = "duration")]
    pub regulatory_records: Duration,
    #[serde(deserialize_with = "duration")]
    pub check_interval: Duration,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupConfig {
    /// The key that encrypts and authenticates backups (32 bytes, 0600; created by the first
    /// `moneta backup create`). Keep it outside the data folder and apart from the backups.
    pub key_file: PathBuf,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GdprConfig {
    /// Time between `DELETE /v1/me` and the erasure ("0s" allowed).
    #[serde(deserialize_with = "duration")]
    pub erasure_grace_period: Duration,
    /// How often the node looks for erasures that are due.
    #[serde(deserialize_with = "duration")]
    pub erasure_check_interval: Duration,
    /// Who was erased (user id and email-index key, no personal data), kept outside the data
    /// folder: a restore replays it so a backup never brings an erased person back.
    pub erasure_list: PathBuf,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecurityConfig {
    /// The master key wrapping per-user data keys; empty → `<secrets dir>/master.key`.
    pub master_key_file: PathBuf,
    /// The cluster's shared secrets (email-index key, token signing keys, analytics key, and
    /// by default the master key): every node of a cluster is given the same folder's files, so
    /// any node computes the same email index and verifies any node's tokens. Empty →
    /// `<data_dir>/keys`, generated on the first start of a cluster of one.
    pub secrets_dir: PathBuf,
}

impl SecurityConfig {
    pub fn master_key_path(&self, data_dir: &Path) -> PathBuf {
        if self.master_key_file.as_os_str().is_empty() {
            self.secrets_path(data_dir).join("master.key")
        } else {
            self.master_key_file.clone()
        }
    }

    /// Where the cluster's shared secrets are.
    pub fn secrets_path(&self, data_dir: &Path) -> PathBuf {
        if self.secrets_dir.as_os_str().is_empty() {
            data_dir.join("keys")
        } else {
            self.secrets_dir.clone()
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComplianceConfig {
    /// A sanctions list in the OFAC SDN `sdn.csv` layout; empty → the bundled sample list.
    pub sanctions_list: PathBuf,
    /// The KYC verification provider: `sandbox` (built in).
    pub kyc_provider: String,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    pub id: String,
    pub data_dir: PathBuf,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    pub listen: String,
    pub advertise: String,
    pub join: Vec<String>,
    pub bootstrap_expect: usize,
    pub replication_factor: usize,
    pub groups: u32,
    pub secret_file: PathBuf,
    #[serde(deserialize_with = "duration")]
    pub tick_interval: Duration,
    pub election_tick: usize,
    pub heartbeat_tick: usize,
    /// A member unheard of for this long is dead: its replicas are rebuilt on other nodes.
    #[serde(deserialize_with = "duration")]
    pub dead_after: Duration,
    /// Groups whose replicas are moving at once, cluster-wide.
    pub moves_in_flight: usize,
    /// Moves in flight that add or remove a replica on one node.
    pub moves_per_node: usize,
    /// Snapshot bytes a node sends to the replicas it is rebuilding, per second.
    pub snapshot_bytes_per_second: u64,
    /// Test-only: the control socket may cut links to members (partition tests).
    pub test_faults: bool,
}

impl ClusterConfig {
    /// A cluster of one that talks to no peer (the embedded default). A node given the
    /// cluster secret listens for peers even alone, so that others can join it.
    pub fn is_single_node(&self) -> bool {
        self.join.is_empty() && self.bootstrap_expect <= 1 && self.secret_file.as_os_str().is_empty()
    }

    pub fn planner_limits(&self) -> crate::cluster::planner::Limits {
        crate::cluster::planner::Limits {
            moves_in_flight: self.moves_in_flight,
            moves_per_node: self.moves_per_node,
        }
    }

    /// What peers dial to reach this node.
    pub fn advertised(&self) -> &str {
        if self.advertise.is_empty() {
            &self.listen
        } else {
            &self.advertise
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    pub listen: SocketAddr,
    #[serde(deserialize_with = "duration")]
    pub request_timeout: Duration,
    /// PEM certificate chain and private key: when both are set the gateway speaks HTTPS only.
    pub tls_cert_file: PathBuf,
    pub tls_key_file: PathBuf,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    pub format: LogFormat,
    pub level: String,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntitiesConfig {
    #[serde(deserialize_with = "duration")]
    pub idle_timeout: Duration,
    pub mailbox_capacity: usize,
    pub restart_limit: u32,
    #[serde(deserialize_with = "duration")]
    pub restart_window: Duration,
    /// How long an entity remembers the request ids it applied (and their answers), so a
    /// command retried after an ambiguous failure is applied once.
    #[serde(deserialize_with = "duration")]
    pub request_memory: Duration,
    /// The most request ids one entity remembers (the oldest go first).
    pub request_memory_max: usize,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    pub snapshot_every: u64,
    pub max_batch: usize,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    pub issuer: String,
    pub audience: String,
    #[serde(deserialize_with = "duration")]
    pub access_token_ttl: Duration,
    #[serde(deserialize_with = "duration")]
    pub refresh_token_ttl: Duration,
    pub hash_concurrency: usize,
    /// Failed logins allowed per account (and per client address) within `failed_login_window`
    /// before further attempts get 429 `too_many_attempts`.
    pub failed_logins_per_account: u32,
    pub failed_logins_per_address: u32,
    #[serde(deserialize_with = "duration")]
    pub failed_login_window: Duration,
    /// Requests per minute one client address may send to register, login and refresh together.
    pub identity_requests_per_minute: u32,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortfolioConfig {
    pub currency: String,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeesConfig {
    pub commission_bps: Decimal,
    pub minimum: Decimal,
}

impl FeesConfig {
    pub fn schedule(&self) -> FeeSchedule {
        FeeSchedule {
            commission_bps: self.commission_bps,
            minimum: self.minimum,
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MarketConfig {
    /// `gbm` (seeded simulation) or `csv` (replay `csv_file`).
    pub feed: String,
    pub csv_file: PathBuf,
    /// `recorded`: the file's prices at their own times (the past as history, the future when
    /// its time comes); `replay`: one timestamp per tick from now on (a what-if drill).
    pub csv_timing: String,
    pub seed: u64,
    #[serde(deserialize_with = "duration")]
    pub tick_interval: Duration,
    #[serde(deserialize_with = "duration")]
    pub revalue_interval: Duration,
    pub instruments: Vec<InstrumentConfig>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstrumentConfig {
    pub symbol: String,
    pub name: String,
    pub kind: InstrumentKind,
    pub price: Decimal,
    pub drift: f64,
    pub volatility: f64,
    pub risk_class: u8,
}

impl InstrumentConfig {
    /// The listing this configured instrument gets (complexity follows from its kind).
    pub fn listing(&self, currency: &str) -> crate::domain::instrument::Listing {
        crate::domain::instrument::Listing {
            symbol: self.symbol.clone(),
            name: self.name.clone(),
            kind: self.kind,
            complex: self.kind.is_complex(),
            currency: currency.to_string(),
            risk_class: self.risk_class,
        }
    }
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    parse_duration(&s).map_err(serde::de::Error::custom)
}

/// Parses `"500ms"`, `"30s"`, `"15m"`, `"2h"`, `"30d"` (and combinations such as `"1h30m"`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim()).map_err(|e| format!("`{s}` is not a duration like \"30s\", \"15m\" or \"30d\" ({e})"))
}

impl Config {
    /// The embedded default, a file merged over it when given, then the environment.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        let vars: Vec<(String, String)> = std::env::vars().filter(|(k, _)| k.starts_with("MONETA_")).collect();
        Self::load_with_env(file, &vars)
    }

    pub fn load_with_env(file: Option<&Path>, env: &[(String, String)]) -> Result<Config, ConfigError> {
        let mut table: toml::Table = DEFAULT_CONFIG.parse().map_err(|e| ConfigError(format!("embedded default: {e}")))?;
        let schema = table.clone();
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|e| ConfigError(format!("cannot read {}: {e}", path.display())))?;
            let overlay: toml::Table = text.parse().map_err(|e| ConfigError(format!("{}: {e}", path.display())))?;
            merge(&mut table, overlay, "")?;
        }
        for (name, value) in env {
            apply_env(&mut table, &schema, name, value)?;
        }
        let config: Config = serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|e| {
            let path = e.path().to_string();
            ConfigError(format!("key `{path}`: {}", e.into_inner()))
        })?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key: &str, why: &str| Err(ConfigError(format!("key `{key}`: {why}")));
        if self.node.id.is_empty() || self.node.id.len() > 64 {
            return bad("node.id", "must be 1 to 64 characters");
        }
        // It names the node in logs, metrics labels and the cluster's membership.
        if !self.node.id.bytes().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.')) || !self.node.id.as_bytes()[0].is_ascii_alphanumeric() {
            return bad("node.id", "must start with a letter or digit, then letters, digits, '-', '_' or '.' only");
        }
        if self.node.data_dir.as_os_str().is_empty() {
            return bad("node.data_dir", "must not be empty");
        }
        let c = &self.cluster;
        for (key, v) in [("cluster.listen", &c.listen), ("cluster.advertise", &c.advertise)] {
            if !(v.is_empty() && key == "cluster.advertise") && crate::cluster::transport::multiaddr(v).is_err() {
                return bad(key, "must be host:port");
            }
        }
        if let Some(j) = c.join.iter().find(|j| crate::cluster::transport::multiaddr(j).is_err()) {
            return Err(ConfigError(format!("key `cluster.join`: `{j}` is not host:port")));
        }
        if c.bootstrap_expect == 0 || c.bootstrap_expect > 64 {
            return bad("cluster.bootstrap_expect", "must be between 1 and 64");
        }
        if c.replication_factor == 0 || c.replication_factor > 7 {
            return bad("cluster.replication_factor", "must be between 1 and 7");
        }
        if c.groups == 0 || c.groups > u32::from(crate::domain::ids::SHARD_COUNT) {
            return bad("cluster.groups", "must be between 1 and 1024");
        }
        if !c.is_single_node() && c.secret_file.as_os_str().is_empty() {
            return bad(
                "cluster.secret_file",
                "a node that joins a cluster needs the cluster's secret (create one with `moneta cluster new-secret --out FILE`)",
            );
        }
        if c.dead_after < Duration::from_secs(5) || c.dead_after > Duration::from_secs(7 * 24 * 3600) {
            return bad("cluster.dead_after", "must be between 5s and 7 days");
        }
        if c.moves_in_flight == 0 || c.moves_in_flight > 256 {
            return bad("cluster.moves_in_flight", "must be between 1 and 256");
        }
        if c.snapshot_bytes_per_second < 64 * 1024 {
            return bad("cluster.snapshot_bytes_per_second", "must be at least 65536");
        }
        if c.moves_per_node == 0 || c.moves_per_node > 64 {
            return bad("cluster.moves_per_node", "must be between 1 and 64");
        }
        if c.tick_interval < Duration::from_millis(10) || c.tick_interval > Duration::from_secs(5) {
            return bad("cluster.tick_interval", "must be between 10ms and 5s");
        }
        if c.heartbeat_tick == 0 || c.election_tick <= c.heartbeat_tick || c.election_tick > 1000 {
            return bad("cluster.election_tick", "must be greater than heartbeat_tick (at least 1) and at most 1000");
        }
        if self.entities.mailbox_capacity == 0 || self.entities.mailbox_capacity > 65_536 {
            return bad("entities.mailbox_capacity", "must be between 1 and 65536");
        }
        if self.entities.request_memory < Duration::from_secs(1) {
            return bad("entities.request_memory", "must be at least 1s");
        }
        if self.entities.request_memory_max == 0 || self.entities.request_memory_max > 1_000_000 {
            return bad("entities.request_memory_max", "must be between 1 and 1000000");
        }
        if self.entities.idle_timeout < Duration::from_millis(100) {
            return bad("entities.idle_timeout", "must be at least 100ms");
        }
        if self.storage.snapshot_every == 0 {
            return bad("storage.snapshot_every", "must be at least 1");
        }
        if self.storage.max_batch == 0 || self.storage.max_batch > 1_000_000 {
            return bad("storage.max_batch", "must be between 1 and 1000000");
        }
        if self.auth.hash_concurrency == 0 {
            return bad("auth.hash_concurrency", "must be at least 1");
        }
        if self.auth.access_token_ttl < Duration::from_secs(30) || self.auth.access_token_ttl > Duration::from_secs(24 * 3600) {
            return bad("auth.access_token_ttl", "must be between 30s and 24h");
        }
        if self.auth.refresh_token_ttl < self.auth.access_token_ttl || self.auth.refresh_token_ttl > Duration::from_secs(365 * 24 * 3600) {
            return bad("auth.refresh_token_ttl", "must be at least access_token_ttl and at most 365d");
        }
        if self.auth.failed_logins_per_account == 0 || self.auth.failed_logins_per_address == 0 {
            return bad("auth.failed_logins_per_account", "failed login allowances must be at least 1");
        }
        if self.auth.identity_requests_per_minute == 0 {
            return bad("auth.identity_requests_per_minute", "must be at least 1");
        }
        if self.auth.failed_login_window < Duration::from_secs(1) || self.auth.failed_login_window > Duration::from_secs(24 * 3600) {
            return bad("auth.failed_login_window", "must be between 1s and 24h");
        }
        if self.gateway.tls_cert_file.as_os_str().is_empty() != self.gateway.tls_key_file.as_os_str().is_empty() {
            return bad("gateway.tls_cert_file", "set both tls_cert_file and tls_key_file, or neither");
        }
        if self.gdpr.erasure_grace_period > Duration::from_secs(400 * 24 * 3600) {
            return bad("gdpr.erasure_grace_period", "must be at most 400d");
        }
        if self.gdpr.erasure_check_interval < Duration::from_millis(100) || self.gdpr.erasure_check_interval > Duration::from_secs(24 * 3600) {
            return bad("gdpr.erasure_check_interval", "must be between 100ms and 24h");
        }
        if self.gdpr.erasure_list.as_os_str().is_empty() {
            return bad("gdpr.erasure_list", "must name a file (outside the data folder)");
        }
        if self.backup.key_file.as_os_str().is_empty() {
            return bad("backup.key_file", "must name a file (outside the data folder)");
        }
        if self.retention.security_events < Duration::from_secs(1) || self.retention.notifications < Duration::from_secs(1) {
            return bad("retention", "security_events and notifications must be at least 1s");
        }
        if self.retention.check_interval < Duration::from_millis(100) || self.retention.check_interval > Duration::from_secs(7 * 24 * 3600) {
            return bad("retention.check_interval", "must be between 100ms and 7d");
        }
        // Durations become clock arithmetic (a cutoff is now minus a period, a deadline now plus
        // a timeout): an unbounded one overflows it. A retention period of a billion years
        // wrapped round to a cutoff in the future and redacted every record at once.
        let century = Duration::from_secs(100 * 366 * 24 * 3600);
        for (key, period) in [
            ("retention.security_events", self.retention.security_events),
            ("retention.notifications", self.retention.notifications),
            ("retention.regulatory_records", self.retention.regulatory_records),
        ] {
            if period > century {
                return bad(key, "must be at most 100y");
            }
        }
        if self.gateway.request_timeout < Duration::from_millis(100) || self.gateway.request_timeout > Duration::from_secs(600) {
            return bad("gateway.request_timeout", "must be between 100ms and 10m");
        }
        if self.entities.restart_limit == 0 || self.entities.restart_limit > 10_000 {
            return bad("entities.restart_limit", "must be between 1 and 10000");
        }
        if self.entities.restart_window < Duration::from_millis(100) || self.entities.restart_window > Duration::from_secs(24 * 3600) {
            return bad("entities.restart_window", "must be between 100ms and 24h");
        }
        let unit = |d: Decimal| d >= Decimal::ZERO && d < Decimal::ONE;
        if !unit(self.advice.drift_threshold)
            || !unit(self.advice.relative_drift_threshold)
            || !unit(self.advice.cash_buffer)
            || !unit(self.advice.review_turnover)
            || self.advice.min_trade < Decimal::ZERO
        {
            return bad(
                "advice",
                "drift_threshold, relative_drift_threshold, review_turnover and cash_buffer must be in [0, 1); min_trade ≥ 0",
            );
        }
        if self.market.revalue_interval > Duration::from_secs(3600) {
            return bad("market.revalue_interval", "must be at most 1h");
        }
        if !unit(self.advice.sharp_move_threshold) {
            return bad("advice.sharp_move_threshold", "must be in [0, 1)");
        }
        if self.broker.slippage_bps < Decimal::ZERO || self.broker.slippage_bps > Decimal::from(1000) {
            return bad("broker.slippage_bps", "must be between 0 and 1000");
        }
        if self.broker.reconcile_interval < Duration::from_secs(1) {
            return bad("broker.reconcile_interval", "must be at least 1s");
        }
        if self.statements.close_offset_ms().is_none() {
            return bad("statements.close_time", "must be HH:MM (UTC), e.g. \"22:00\"");
        }
        if self.compliance.kyc_provider != "sandbox" {
            return bad("compliance.kyc_provider", "the only built-in provider is \"sandbox\"");
        }
        if self.portfolio.currency.len() != 3 || !self.portfolio.currency.bytes().all(|c| c.is_ascii_uppercase()) {
            return bad("portfolio.currency", "must be a three-letter ISO 4217 code such as \"USD\"");
        }
        if !self.fees.schedule().is_valid() {
            return bad(
                "fees",
                "commission_bps must be 0–1000 and minimum a non-negative amount with at most 2 decimals",
            );
        }
        match (self.market.feed.as_str(), self.market.csv_file.as_os_str().is_empty()) {
            ("gbm", _) | ("csv", false) => {}
            ("csv", true) => return bad("market.csv_file", "the csv feed needs a price file"),
            _ => return bad("market.feed", "must be \"gbm\" or \"csv\""),
        }
        if !matches!(self.market.csv_timing.as_str(), "recorded" | "replay") {
            return bad("market.csv_timing", "must be \"recorded\" or \"replay\"");
        }
        if self.market.tick_interval < Duration::from_millis(10) || self.market.tick_interval > Duration::from_secs(3600) {
            return bad("market.tick_interval", "must be between 10ms and 1h");
        }
        let mut seen = std::collections::BTreeSet::new();
        for (i, inst) in self.market.instruments.iter().enumerate() {
            let key = |k: &str| format!("market.instruments[{i}].{k}");
            let valid_symbol = !inst.symbol.is_empty()
                && inst.symbol.len() <= 16
                && inst
                    .symbol
                    .bytes()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == b'-' || c == b'.');
            if !valid_symbol {
                return bad(&key("symbol"), "must be 1–16 characters of A–Z, 0–9, '-' or '.'");
            }
            if !seen.insert(inst.symbol.clone()) {
                return bad(&key("symbol"), "is listed twice");
            }
            if !crate::domain::account::is_plain_name(&inst.name) {
                return bad(&key("name"), "must be 1–200 characters, without control or bidirectional-override characters");
            }
            if !crate::domain::money::is_valid_price(inst.price) {
                return bad(&key("price"), "must be positive, at most 4 decimal places and within the price limit");
            }
            if !(1..=7).contains(&inst.risk_class) {
                return bad(&key("risk_class"), "must be between 1 and 7");
            }
            if !inst.volatility.is_finite() || inst.volatility < 0.0 || inst.volatility > 5.0 || !inst.drift.is_finite() || inst.drift.abs() > 5.0 {
                return bad(&key("volatility"), "drift and volatility must be finite, |drift| ≤ 5 and 0 ≤ volatility ≤ 5");
            }
        }
        Ok(())
    }
}

use sources::{apply_env, merge};

mod sources;

#[cfg(test)]
mod tests;
