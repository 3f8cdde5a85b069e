//! The node's services: what the workflows, the jobs and the gateway share (the router, the
//! vault, the adapters, the configuration, the clock). The gateway keeps only its own parts
//! (tokens, login limits, readiness) beside them.

use crate::adapters::kyc::KycProvider;
use crate::adapters::sanctions::LoadedList;
use crate::cluster::Router;
use crate::config::Config;
use crate::domain::time::Timestamp;
use crate::storage::vault::Vault;
use crate::telemetry::Metrics;
use std::sync::{Arc, RwLock};
use std::time::Instant;

pub type SessionBroadcast = std::sync::Arc<dyn Fn(Vec<String>) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> + Send + Sync>;

/// Hands a round of quotes to every other member (set once the node joined a cluster); sent
/// without waiting (a member that misses a round prices from its instruments until the next).
pub type PriceBroadcast = std::sync::Arc<dyn Fn(Vec<crate::domain::instrument::Quote>) + Send + Sync>;

pub struct Services {
    pub router: Router,
    /// The cluster's key of the email index.
    pub email_key: aws_lc_rs::hmac::Key,
    /// Envelope encryption of personal data (per-user data keys under the master key).
    pub vault: Vault,
    /// The sanctions list screened against (replaced on reload).
    pub sanctions: RwLock<Arc<LoadedList>>,
    pub kyc: Box<dyn KycProvider>,
    /// Sessions revoked on this node (logout, refresh-token reuse, erasure) → when their last
    /// access token expires: access tokens of a revoked session are refused at once, not after
    /// their natural expiry.
    pub revoked_sessions: std::sync::Mutex<std::collections::HashMap<String, Instant>>,
    /// Hands instruments listed at run time to the simulated feed (set when the feed starts).
    pub feed_additions: std::sync::Mutex<Option<tokio::sync::mpsc::UnboundedSender<crate::workflows::feed::FeedInstrument>>>,
    pub config: Config,
    pub metrics: Arc<Metrics>,
    /// Listed instrument symbols, in listing order.
    pub catalog: RwLock<Vec<String>>,
    pub node_id: String,
    /// Live valuations of the portfolios, fed by the price fan-out.
    pub valuations: Arc<crate::actors::fanout::Valuations>,
    /// Why users' advice should be recomputed, for the advice worker (taken when it starts).
    pub advice_triggers: std::sync::Mutex<Option<tokio::sync::mpsc::Receiver<(String, crate::domain::advice::AdviceTrigger)>>>,
    pub broker: Box<dyn crate::adapters::broker::Broker>,
    /// The node's clock: every "now" a workflow or route turns into a fact comes from here.
    pub clock: fn() -> Timestamp,
    /// One creation at a time per data key at the leader of its group (check, then write
    /// through the journal; see `workflows::data_keys`).
    pub data_key_creation: crate::actors::locks::KeyedLocks,
    /// Accepting advice is one account command and several orders: one user's accepts run one
    /// at a time, so a concurrent retry finds the first one's orders and replays them. (On this
    /// node: in a cluster it belongs with the owner of the user's shard.)
    pub accepting: crate::actors::locks::KeyedLocks,
    /// Tells every other member of the cluster that sessions were revoked (set once the node
    /// joined a cluster); answered when they all acknowledged, or after a bound.
    pub session_broadcast: std::sync::OnceLock<SessionBroadcast>,
    /// The latest committed quotes, learnt from the feed (here or at another member).
    pub quotes: crate::workflows::prices::QuoteBook,
    pub price_broadcast: std::sync::OnceLock<PriceBroadcast>,
    /// Notified once this node is removed from its cluster (decommissioned): it stops and exits.
    pub left_cluster: Arc<tokio::sync::Notify>,
}

impl Services {
    /// Now, by the node's clock.
    pub fn now(&self) -> Timestamp {
        (self.clock)()
    }
    pub fn is_listed(&self, symbol: &str) -> bool {
        self.catalog.read().expect("catalog lock").iter().any(|s| s == symbol)
    }
    pub fn symbols(&self) -> Vec<String> {
        self.catalog.read().expect("catalog lock").clone()
    }
    /// The keyed hash that indexes a normalised email (the plaintext is never a key).
    pub fn email_hash(&self, normalised_email: &str) -> String {
        hex::encode(aws_lc_rs::hmac::sign(&self.email_key, normalised_email.as_bytes()).as_ref())
    }
    pub fn sanctions_list(&self) -> Arc<LoadedList> {
        self.sanctions.read().expect("sanctions lock").clone()
    }
    /// Destroys the data key `id` (crypto-shredding); durable when it returns.
    pub async fn destroy_data_key(&self, id: &str) -> Result<(), String> {
        self.router.journal().write(self.vault.destroy_data_key(id)).await.map_err(|e| e.to_string())
    }

    /// Adds a listed instrument to this node's catalog and hands it to the feed (which ticks it
    /// when this node drives the feed).
    pub fn join_catalog(&self, symbol: &str, price: rust_decimal::Decimal, entry: &crate::storage::store::CatalogEntry) {
        self.list_symbol(symbol);
        if let Some(tx) = self.feed_additions.lock().expect("feed additions lock").as_ref() {
            let _ = tx.send(crate::workflows::feed::FeedInstrument {
                symbol: symbol.to_string(),
                price,
                params: crate::domain::market::GbmParams {
                    drift: entry.drift,
                    volatility: entry.volatility,
                },
            });
        }
    }

    /// Adds a symbol to this node's catalog (the instruments it lists), once.
    fn list_symbol(&self, symbol: &str) {
        let mut catalog = self.catalog.write().expect("catalog lock");
        if !catalog.iter().any(|s| s == symbol) {
            catalog.push(symbol.to_string());
        }
    }

    /// Learns a round of committed quotes and publishes what is news to this node's fan-out;
    /// `share`: the round comes from this node's feed and goes to every other member too. A
    /// quote of an instrument this node does not list yet (listed at run time, its catalog
    /// record in a group this node holds no replica of) lists it here.
    pub fn publish_quotes(&self, quotes: Vec<crate::domain::instrument::Quote>, share: bool) {
        if quotes.is_empty() {
            return;
        }
        for q in &quotes {
            if !self.is_listed(&q.listing.symbol) {
                self.list_symbol(&q.listing.symbol);
            }
        }
        if share {
            if let Some(b) = self.price_broadcast.get() {
                b(quotes.clone());
            }
        }
        let bus = self.valuations.bus();
        for q in self.quotes.learn(quotes) {
            bus.publish(&q.listing.symbol, crate::actors::fanout::PriceUpdate { price: q.price, at: q.as_of });
        }
    }

    /// What the configuration fixes for every order.
    pub fn order_terms(&self) -> crate::workflows::order::OrderTerms {
        crate::workflows::order::OrderTerms {
            fees: self.config.fees.schedule(),
            slippage_bps: self.config.broker.slippage_bps,
        }
    }

    /// Refuses the access tokens of these sessions from now on, at every node of the cluster:
    /// the other members acknowledge before this returns (each node checks its own list on
    /// every request; the account keeps the revocation durably for nodes that restart).
    pub async fn revoke_sessions_everywhere(&self, sids: Vec<String>) {
        for sid in &sids {
            self.revoke_session(sid);
        }
        if let Some(b) = self.session_broadcast.get() {
            b(sids).await;
        }
    }

    /// Refuses the access tokens of a session from now on, on this node (they would expire
    /// within the TTL).
    pub fn revoke_session(&self, sid: &str) {
        let until = Instant::now() + self.config.auth.access_token_ttl + std::time::Duration::from_secs(60);
        self.revoked_sessions.lock().expect("revoked sessions lock").insert(sid.to_string(), until);
    }
}
