//! Assembles a node: storage, the audit journal and entity router, the demo instruments, the
//! market feed and the gateway; and takes it down gracefully (stop accepting, finish in-flight
//! requests, flush, exit 0).

mod folder_keys;
mod peers;

pub use folder_keys::check_stopped_folder_keys;
use peers::join_cluster;

use crate::actors::RequestMeta;
use crate::cluster::router::RouteFailure;
use crate::cluster::router::RouterSettings;
use crate::cluster::{RouteError, Router};
use crate::config::Config;
use crate::domain::instrument::{Instrument, InstrumentCommand, InstrumentRejection};
use crate::gateway::auth::{load_or_create_signing_key, load_retired_keys, Auth};
use crate::gateway::limits::LoginGuard;
use crate::gateway::AppState;
use crate::storage::vault::{load_or_create_master_key, Vault};
use crate::storage::Store;
use crate::telemetry::Metrics;
use crate::workflows::feed::{instruments_from_config, run_feed};
use crate::workflows::services::Services;
use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::{oneshot, watch};

/// How long shutdown waits for in-flight requests before flushing anyway.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

pub struct RunningNode {
    pub addr: SocketAddr,
    pub state: Arc<AppState>,
    stop_feed: watch::Sender<bool>,
    feed: tokio::task::JoinHandle<()>,
    /// The GDPR erasure job and the control socket (stopped with the feed).
    erasures: tokio::task::JoinHandle<()>,
    control: tokio::task::JoinHandle<Result<(), String>>,
    retention: tokio::task::JoinHandle<()>,
    /// End of day, reconciliation and the advice worker (stopped with the feed).
    jobs: Vec<tokio::task::JoinHandle<()>>,
    stop_server: oneshot::Sender<()>,
    server: tokio::task::JoinHandle<()>,
}

/// How long start-up tries to list an instrument before the node gives up: a cluster restarted
/// whole elects its leaders only once a majority of its nodes is back, which may take a while.
const LISTING_WAIT: Duration = Duration::from_secs(300);

/// Lists the configured instruments (idempotent) and returns the catalog of symbols.
async fn list_instruments(router: &Router, config: &Config) -> Result<Vec<String>, String> {
    let mut catalog = Vec::new();
    for i in &config.market.instruments {
        let listing = i.listing(&config.portfolio.currency);
        // A cluster that has just formed or restarted may still be electing or moving leaders:
        // each try follows leadership for a request timeout; tries go on, under the same
        // request id (the listing is idempotent), until `LISTING_WAIT` has passed.
        let started = tokio::time::Instant::now();
        loop {
            let cmd = InstrumentCommand::List {
                listing: listing.clone(),
                price: i.price,
            };
            match router.execute::<Instrument>(&i.symbol, cmd, RequestMeta::system("startup-listing")).await {
                Ok(()) => break,
                Err(RouteError::Rejected(InstrumentRejection::ListingConflict)) => {
                    tracing::warn!(symbol = %i.symbol, "instrument already listed with other details; keeping the stored listing");
                    break;
                }
                // Not applied (no leader serves the group yet), unavailable or of unknown outcome:
                // each is safe to try again.
                Err(RouteError::Failed(f @ (RouteFailure::Unavailable(_) | RouteFailure::OutcomeUnknown(_) | RouteFailure::NotApplied(_))))
                    if started.elapsed() < LISTING_WAIT =>
                {
                    // A node removed from the cluster while it was down hears from no leader of
                    // the groups it had: it stops at once, saying so, rather than wait.
                    if is_removed(router, &config.node.id).await {
                        return Err(format!("cannot list instrument {}: {f}", i.symbol));
                    }
                    tracing::warn!(symbol = %i.symbol, error = %f, "listing an instrument failed; trying again");
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                Err(RouteError::Failed(f @ (RouteFailure::Unavailable(_) | RouteFailure::OutcomeUnknown(_) | RouteFailure::NotApplied(_)))) => {
                    return Err(format!(
                        "cannot list instrument {} within {}s: {f}; no leader served its group — check that a majority of the members is running and that this node has the cluster's `[cluster] secret_file` (the warnings above say when peers refused its handshake)",
                        i.symbol,
                        LISTING_WAIT.as_secs()
                    ))
                }
                Err(RouteError::Failed(f)) => return Err(format!("cannot list instrument {}: {f}", i.symbol)),
                Err(RouteError::Rejected(r)) => return Err(format!("cannot list instrument {}: refused ({r:?})", i.symbol)),
            }
        }
        catalog.push(i.symbol.clone());
    }
    Ok(catalog)
}

/// Opens the node's storage, keys, vault, sanctions list and entity router — everything but the
/// listener and the feed (the CLI's offline commands use this too).
pub async fn open_state(config: &Config) -> Result<Arc<AppState>, String> {
    open_state_with(config, false).await
}

/// How long a quote learnt from the feed prices orders: three feed ticks, at least a second
/// (a node that stops hearing the feed asks the instruments).
fn quote_age(config: &Config) -> std::time::Duration {
    (config.market.tick_interval * 3).max(std::time::Duration::from_secs(1))
}

/// `with_peers`: a serving node joins its cluster; offline tools open the folder alone.
pub async fn open_state_with(config: &Config, with_peers: bool) -> Result<Arc<AppState>, String> {
    let store = Store::open_with_groups(&config.node.data_dir, Some(config.cluster.groups)).map_err(|e| e.to_string())?;
    open_state_on(config, store, with_peers).await
}

/// Opens the node's state on a store already opened (and so locked) by the caller: an offline
/// CLI command that found no node running keeps the lock it proved that with.
pub async fn open_state_on(config: &Config, store: Store, with_peers: bool) -> Result<Arc<AppState>, String> {
    open_state_loaded(config, store, with_peers, None).await
}

/// `sanctions`: the list as `start` read it before touching the folder (None: read it here).
async fn open_state_loaded(
    config: &Config,
    store: Store,
    with_peers: bool,
    sanctions: Option<crate::adapters::sanctions::LoadedList>,
) -> Result<Arc<AppState>, String> {
    let data_dir = config.node.data_dir.clone();
    let keys_dir = config.security.secrets_path(&data_dir);
    let master_path = config.security.master_key_path(&data_dir);
    folder_keys::require_key_files(config, &store)?;
    let signing = load_or_create_signing_key(&keys_dir).map_err(|e| e.to_string())?;
    let retired = load_retired_keys(&keys_dir).map_err(|e| e.to_string())?;
    let (email_key, email_key_bytes) = folder_keys::load_or_create_index_key(&keys_dir)?;
    let master = load_or_create_master_key(&master_path).map_err(|e| format!("{e} (key `security.master_key_file`)"))?;
    folder_keys::keys_fit(config, &store, &master, &email_key_bytes, true)?;
    let vault = Vault::new(&store, &master).map_err(|e| e.to_string())?;
    let sanctions = match sanctions {
        Some(s) => s,
        None => crate::adapters::sanctions::load(&config.compliance)?,
    };
    let metrics = Arc::new(Metrics::new());
    // The instruments known so far (the CLI's offline commands need them; `start` lists the
    // configured ones and replaces this).
    let mut known: Vec<String> = config.market.instruments.iter().map(|i| i.symbol.clone()).collect();
    for (symbol, _) in store.catalog().map_err(|e| e.to_string())? {
        if !known.contains(&symbol) {
            known.push(symbol);
        }
    }
    let mut settings = RouterSettings::from_config(config);
    settings.erasure_list = Some(config.gdpr.erasure_list.clone());
    settings.master_fingerprint = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(&master))
    };
    let mut peers = None;
    if with_peers && !config.cluster.is_single_node() {
        let (cluster, service) = join_cluster(config, &store, &master, &metrics).await?;
        settings.cluster = Some(cluster);
        peers = Some(service);
    } else if crate::cluster::peer::stored_membership(&store)?.is_some_and(|m| m.members.len() > 1) && with_peers {
        return Err("this data folder belongs to a cluster of several nodes; start it with its [cluster] join and secret_file".into());
    }
    let router = Router::start(store, metrics.clone(), settings).await.map_err(|e| e.to_string())?;

    let broker = Box::new(crate::adapters::broker::SimulatedBroker::new(
        router.store().clone(),
        router.journal().clone(),
        config.broker.slippage_bps,
    ));
    let (valuations, advice_triggers) = crate::actors::fanout::Valuations::new(
        crate::actors::fanout::PriceBus::with(metrics.fanout.clone(), config.market.revalue_interval),
        config.advice.sharp_move_threshold,
    );
    let services = Arc::new(Services {
        valuations,
        advice_triggers: std::sync::Mutex::new(Some(advice_triggers)),
        broker,
        router,
        email_key,
        vault,
        sanctions: RwLock::new(Arc::new(sanctions)),
        kyc: crate::adapters::kyc::from_config(&config.compliance.kyc_provider),
        revoked_sessions: std::sync::Mutex::new(std::collections::HashMap::new()),
        feed_additions: std::sync::Mutex::new(None),
        node_id: config.node.id.clone(),
        metrics,
        catalog: RwLock::new(known),
        config: config.clone(),
        clock: crate::actors::wall_clock_now,
        data_key_creation: Default::default(),
        accepting: Default::default(),
        session_broadcast: Default::default(),
        quotes: crate::workflows::prices::QuoteBook::new(quote_age(config)),
        price_broadcast: Default::default(),
        left_cluster: Default::default(),
    });
    // A user's steps run here when this node leads the user's group (the services stay alive
    // as long as the router they own).
    let weak = Arc::downgrade(&services);
    services.router.set_steps(Arc::new(move |step| {
        let s = weak.upgrade();
        Box::pin(async move {
            match s {
                Some(s) => crate::workflows::steps::run_step(&s, step).await,
                None => Err(crate::cluster::RouteFailure::NotApplied("the node is stopping".into())),
            }
        })
    }));
    if let Some(p) = peers {
        p.spawn(&services.router, &services);
    }
    Ok(Arc::new(AppState {
        services,
        auth: Auth::new(signing, retired, &config.auth),
        logins: LoginGuard::new(&config.auth),
        sessions_checked: std::sync::Mutex::new(std::collections::HashMap::new()),
        started_at_secs: crate::actors::wall_clock_now().millis() / 1000,
        ready: AtomicBool::new(false),
        caught_up: AtomicBool::new(false),
    }))
}

/// A start-up failure, named for what it is when the cause is that this node was removed from
/// its cluster (decommissioned) meanwhile: the members refuse it.
async fn removed_or(router: &Router, node_id: &str, e: String) -> String {
    if is_removed(router, node_id).await {
        format!(
            "node `{node_id}` was removed from the cluster (decommissioned) and does not come back with its old data; start it on an empty data folder to join as a new node"
        )
    } else {
        e
    }
}

/// Whether the cluster's metadata (this node's replica's, or a member's) says this node was
/// removed.
async fn is_removed(router: &Router, node_id: &str) -> bool {
    let removed = |m: Option<crate::cluster::meta::MetaState>| m.and_then(|m| m.state_of(node_id)) == Some(crate::cluster::meta::NodeState::Removed);
    removed(router.metadata().await) || removed(router.metadata_of_members().await)
}

/// Starts every part of the node and begins serving on `gateway.listen`.
pub async fn start(config: Config) -> Result<RunningNode, String> {
    let data_dir = config.node.data_dir.clone();
    // The files start-up needs are read before anything is written (the data folder, the
    // secrets made on first start): a bad one stops it having changed nothing. On a new
    // folder the configured instruments are every instrument a price file may name.
    let tls = match &config.gateway {
        g if g.tls_cert_file.as_os_str().is_empty() => None,
        g => Some(crate::gateway::tls::server_config(&g.tls_cert_file, &g.tls_key_file)?),
    };
    let sanctions = crate::adapters::sanctions::load(&config.compliance)?;
    if !config.cluster.is_single_node() {
        crate::cluster::secret::load(&config.cluster.secret_file)?;
        if let Ok(peers) = config.cluster.listen.parse::<std::net::SocketAddr>() {
            if peers.port() != 0 {
                std::net::TcpListener::bind(peers).map_err(|e| format!("cannot listen for peers on {peers} (key `cluster.listen`): {e}"))?;
            }
        }
    }
    // The gateway's address, tried (and let go) before the folder is touched: an address in
    // use is the commonest mistake of a second node on one machine.
    if config.gateway.listen.port() != 0 {
        std::net::TcpListener::bind(config.gateway.listen).map_err(|e| format!("cannot listen on {} (key `gateway.listen`): {e}", config.gateway.listen))?;
    }
    if config.market.feed == "csv" && !data_dir.join("db").exists() {
        let configured: Vec<String> = config.market.instruments.iter().map(|i| i.symbol.clone()).collect();
        crate::workflows::feed::load_replay(&config.market.csv_file, &configured)?;
    }
    let store = Store::open_with_groups(&config.node.data_dir, Some(config.cluster.groups)).map_err(|e| e.to_string())?;
    let state = open_state_loaded(&config, store, true, Some(sanctions)).await?;
    let router = state.router.clone();
    let mut catalog = match list_instruments(&router, &config).await {
        Ok(c) => c,
        Err(e) => return Err(removed_or(&router, &config.node.id, e).await),
    };
    if config.market.feed == "gbm" {
        let demo = instruments_from_config(&config.market.instruments);
        crate::workflows::feed::backfill_demo_history(&router, &demo, config.market.seed).await;
    }
    // Instruments an admin listed at run time (their listing is on the instrument entity).
    let mut feed_instruments = instruments_from_config(&config.market.instruments);
    for (symbol, entry) in state.router.store().catalog().map_err(|e| e.to_string())? {
        if catalog.contains(&symbol) {
            continue;
        }
        let quote = router
            .query::<Instrument, _>(&symbol, crate::domain::queries::CurrentQuote)
            .await
            .map_err(|e| e.to_string())?;
        let Some(quote) = quote else {
            return Err(format!("catalog entry {symbol} names an instrument that is not listed"));
        };
        feed_instruments.push(crate::workflows::feed::FeedInstrument {
            symbol: symbol.clone(),
            price: quote.price,
            params: crate::domain::market::GbmParams {
                drift: entry.drift,
                volatility: entry.volatility,
            },
        });
        catalog.push(symbol);
    }
    // What this node's feed is given: the catalog as of now (the catalog may learn symbols
    // from other members' prices later, which its feed is not given until their records are
    // found here: `feed::follow_catalog`).
    let fed: std::collections::BTreeSet<String> = catalog.iter().cloned().collect();
    *state.catalog.write().expect("catalog lock") = catalog;
    // Erasures already due (a restored backup replays its erasure list as due now) are carried
    // out before anyone is served: an erased person must not sign in again, not even until the
    // job's first check. In a cluster, the groups this node does not lead yet are their
    // leaders' to do.
    let led = router.led_groups();
    if !led.is_empty() {
        if let Err(e) = crate::workflows::erasure::run_due_erasures(&state.services, led).await {
            tracing::error!(error = %e, "an erasure due at start failed; the erasure job retries it");
        }
    }
    // Before any job starts: a bad price file stops start-up with nothing done.
    let price_file = match config.market.feed.as_str() {
        "csv" => Some(crate::workflows::feed::load_replay(&config.market.csv_file, &state.symbols())?),
        _ => None,
    };
    let listener = tokio::net::TcpListener::bind(config.gateway.listen)
        .await
        .map_err(|e| format!("cannot listen on {} (key `gateway.listen`): {e}", config.gateway.listen))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let (stop_feed, feed_rx) = watch::channel(false);
    let feed_rx_ready = feed_rx.clone();
    let erasures = tokio::spawn(crate::workflows::erasure::erasure_job(state.services.clone(), feed_rx.clone()));
    let control = tokio::spawn(crate::control::serve(state.clone(), feed_rx.clone()));
    let retention = tokio::spawn(crate::workflows::retention::retention_job(state.services.clone(), feed_rx.clone()));
    let end_of_day = tokio::spawn(crate::workflows::end_of_day::end_of_day_job(state.services.clone(), feed_rx.clone()));
    let reconciliation = tokio::spawn(crate::workflows::reconcile::reconciliation_job(state.services.clone(), feed_rx.clone()));
    let advice_worker = tokio::spawn(crate::workflows::advice::advice_worker(state.services.clone(), feed_rx.clone()));
    tokio::spawn(crate::workflows::end_of_day::track_all(state.services.clone()));
    tokio::spawn(crate::workflows::end_of_day::refresh_stale(state.services.clone(), feed_rx.clone()));
    tokio::spawn(crate::workflows::feed::follow_catalog(state.services.clone(), fed, feed_rx.clone()));
    let feed = if let Some(groups) = price_file {
        if config.market.csv_timing == "replay" {
            tokio::spawn(crate::workflows::feed::run_replay(
                state.services.clone(),
                groups,
                config.market.tick_interval,
                feed_rx,
            ))
        } else {
            tokio::spawn(crate::workflows::feed::run_recorded(state.services.clone(), groups, feed_rx))
        }
    } else {
        let (additions_tx, additions) = tokio::sync::mpsc::unbounded_channel();
        *state.feed_additions.lock().expect("feed additions lock") = Some(additions_tx);
        tokio::spawn(run_feed(
            state.services.clone(),
            feed_instruments,
            config.market.seed,
            config.market.tick_interval,
            additions,
            feed_rx,
        ))
    };
    let (stop_server, stop_rx) = oneshot::channel::<()>();
    let filter = crate::gateway::filter(state.clone());
    let scheme = if tls.is_some() { "https" } else { "http" };
    let server = tokio::spawn(crate::gateway::server::serve(
        listener,
        tls,
        filter,
        state.services.metrics.clone(),
        stop_rx,
        SHUTDOWN_GRACE,
    ));
    state.set_ready(true);
    // Ready once every replica here applied what its group's leader had committed (a cluster
    // of one at once).
    let stop_keys = feed_rx_ready.clone();
    let (s, mut stop) = (state.clone(), feed_rx_ready);
    tokio::spawn(async move {
        loop {
            if s.router.journal().caught_up().await {
                s.caught_up.store(true, std::sync::atomic::Ordering::SeqCst);
                tracing::info!("every shard-group replica of this node has caught up");
                return;
            }
            tokio::select! {
                _ = tokio::time::sleep(std::time::Duration::from_millis(200)) => {}
                _ = stop.changed() => return,
            }
        }
    });
    tokio::spawn(publish_verification_keys(
        state.router.journal().clone(),
        config.node.id.clone(),
        state.auth.verification_keys(),
        stop_keys,
    ));
    tracing::info!(node_id = %config.node.id, %addr, scheme, data_dir = %data_dir.display(), "moneta node serving");
    Ok(RunningNode {
        addr,
        state,
        stop_feed,
        feed,
        erasures,
        control,
        retention,
        jobs: vec![end_of_day, reconciliation, advice_worker],
        stop_server,
        server,
    })
}

impl RunningNode {
    /// Resolves once this node has been removed from its cluster (decommissioned).
    pub async fn left_cluster(&self) {
        self.state.left_cluster.notified().await
    }

    /// Graceful shutdown: not ready, stop the feed, stop accepting, finish in-flight requests,
    /// then make sure everything is flushed.
    pub async fn shutdown(self) -> Result<(), String> {
        self.state.set_ready(false);
        let _ = self.stop_feed.send(true);
        // The feed and the jobs stop at their next step; one waiting on a group that has no
        // majority (the last node of a cluster left up) would hold the stop for as long as
        // its writes wait. Past the grace they are stopped where they are: each carries on
        // from its records at the next start, as after a crash.
        let deadline = tokio::time::Instant::now() + JOBS_GRACE;
        finish_or_abort("the price feed", self.feed, deadline).await;
        finish_or_abort("the erasure job", self.erasures, deadline).await;
        finish_or_abort("the retention job", self.retention, deadline).await;
        for job in self.jobs {
            finish_or_abort("a scheduled job", job, deadline).await;
        }
        if let Some(Err(e)) = finish_or_abort("the control socket", self.control, deadline).await {
            tracing::warn!(error = %e, "the control socket was not available");
        }
        let _ = self.stop_server.send(());
        if tokio::time::timeout(SHUTDOWN_GRACE, self.server).await.is_err() {
            tracing::warn!("in-flight requests did not finish within the grace period");
        }
        // Everything committed is made durable. Proposals still waiting for a majority that is
        // not there (nobody was told they are done) are not waited for past the grace.
        match tokio::time::timeout(JOBS_GRACE, self.state.router.drain()).await {
            Ok(drained) => drained?,
            Err(_) => tracing::warn!("writes waiting for a majority did not resolve within the grace period; what is committed is flushed"),
        }
        self.state.router.journal().flush_and_mark().map_err(|e| e.to_string())?;
        tracing::info!("moneta node stopped cleanly");
        Ok(())
    }
}

/// How long a stop waits for the feed and the jobs before it stops them where they are.
const JOBS_GRACE: Duration = Duration::from_secs(15);

/// Waits for a task until `deadline`, then aborts it (logged).
async fn finish_or_abort<T>(what: &str, mut task: tokio::task::JoinHandle<T>, deadline: tokio::time::Instant) -> Option<T> {
    match tokio::time::timeout_at(deadline, &mut task).await {
        Ok(done) => done.ok(),
        Err(_) => {
            task.abort();
            tracing::warn!(
                task = what,
                "did not stop within the grace period: stopped where it was (it carries on at the next start)"
            );
            None
        }
    }
}

/// Waits for Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Publishes this node's token-verification keys to the metadata group (so every member's
/// JWKS lists them), retrying while the group has no leader; done once the metadata this node
/// holds shows them, or — on a node without a replica of it — once the change is applied.
async fn publish_verification_keys(
    journal: crate::actors::journal::AuditJournal,
    node_id: String,
    mut keys: Vec<crate::cluster::meta::VerificationKey>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    const ATTEMPTS_MAX: usize = 120;
    keys.sort();
    keys.dedup();
    for _ in 0..ATTEMPTS_MAX {
        let published = journal.meta().and_then(|m| m.members.get(&node_id).map(|r| r.keys == keys)).unwrap_or(false);
        if published {
            return;
        }
        let command = crate::cluster::meta::MetaCommand::PublishKeys {
            node_id: node_id.clone(),
            keys: keys.clone(),
        };
        match journal.propose_meta(vec![command]).await {
            Ok(()) if journal.meta().is_none() => return,
            Ok(()) => {}
            Err(e) => tracing::debug!(error = %e, "verification keys not published yet; retrying"),
        }
        tokio::select! {
            _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
            _ = stop.changed() => return,
        }
    }
    tracing::warn!("this node's token-verification keys could not be published to the metadata group; other members' JWKS may not list them");
}
