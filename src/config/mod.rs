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
}

use sources::{apply_env, merge};

mod sources;
mod validate;

#[cfg(test)]
mod tests;
