//! The checks a configuration must pass before anything starts: every key's range and how
//! keys fit together, each refusal naming its key.

use super::*;

impl Config {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
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
            if !crate::domain::instrument::is_instrument_name(&inst.name) {
                return bad(
                    &key("name"),
                    "must be 1–200 characters, without control, bidirectional-override or invisible characters",
                );
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
