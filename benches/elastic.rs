//! Elastic membership (issue 12), each figure against a baseline of the same run:
//! - the time for a cluster holding N users (N = 10 000 and 100 000; `ELASTIC_USERS` picks
//!   others, comma-separated) to balance after a node joins: a cluster of one grows to three
//!   (every group copied twice), then a fourth node joins (a quarter of the replicas move);
//! - the clients' latency while the fourth node's replicas move against the same load just
//!   before it joined (p50, p99, requests per second).
//!
//! The N users are registered through the registration workflow offline on the first node's
//! folder before it starts (account, email index, data key, sealed and screened profile — what
//! a user who registered holds), with one password hash shared by all of them: hashing costs
//! CPU at registration, not bytes to move. The load is durable deposits by 32 clients over the
//! gateways of the first three nodes.
//!
//! Run: `cargo bench --bench elastic`. Every process it starts is stopped at the end (also on
//! a panic: children are killed when dropped); every wait is bounded.

mod common;

use common::{client, investors_named, CLIENTS};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const GROUPS: &str = "8";
/// How long the load runs before the fourth node joins.
const BEFORE: Duration = Duration::from_secs(10);
const SETTLE_MAX: Duration = Duration::from_secs(1800);

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[path = "../tests/common/ports.rs"]
mod ports;
use ports::free_port;

struct Cluster {
    root: PathBuf,
    secret: PathBuf,
    secrets_dir: PathBuf,
    peers: Vec<u16>,
    bases: Vec<String>,
    procs: Vec<Proc>,
}

fn node_env(root: &Path, k: usize, secrets_dir: &Path) -> Vec<(String, String)> {
    let dir = root.join(format!("n{k}"));
    vec![
        ("MONETA_NODE_ID".into(), format!("n{k}")),
        ("MONETA_NODE_DATA_DIR".into(), dir.join("data").display().to_string()),
        ("MONETA_GDPR_ERASURE_LIST".into(), dir.join("erasures.list").display().to_string()),
        ("MONETA_BACKUP_KEY_FILE".into(), dir.join("backup.key").display().to_string()),
        ("MONETA_SECURITY_SECRETS_DIR".into(), secrets_dir.display().to_string()),
        ("MONETA_CLUSTER_GROUPS".into(), GROUPS.into()),
        ("MONETA_LOG_LEVEL".into(), "warn".into()),
    ]
}

impl Cluster {
    fn new(root: &Path) -> Cluster {
        std::fs::create_dir_all(root).unwrap();
        let secret = root.join("cluster.secret");
        let out = Command::new(env!("CARGO_BIN_EXE_moneta"))
            .args(["cluster", "new-secret", "--out"])
            .arg(&secret)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        Cluster {
            root: root.to_path_buf(),
            secret,
            secrets_dir: root.join("secrets"),
            peers: Vec::new(),
            bases: Vec::new(),
            procs: Vec::new(),
        }
    }

    /// Starts node `n<k>` (k = 1, 2, …) joining the first node (none for the first).
    fn start(&mut self, k: usize) {
        let (api, peer) = (free_port(), free_port());
        let dir = self.root.join(format!("n{k}"));
        std::fs::create_dir_all(&dir).unwrap();
        let log = std::fs::File::create(dir.join("node.log")).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_moneta"));
        cmd.arg("serve").stdin(Stdio::null()).stdout(log.try_clone().unwrap()).stderr(log);
        for (key, v) in node_env(&self.root, k, &self.secrets_dir) {
            cmd.env(key, v);
        }
        let join = self.peers.first().map(|p| format!("127.0.0.1:{p}")).unwrap_or_default();
        cmd.env("MONETA_GATEWAY_LISTEN", format!("127.0.0.1:{api}"))
            .env("MONETA_CLUSTER_LISTEN", format!("127.0.0.1:{peer}"))
            .env("MONETA_CLUSTER_JOIN", join)
            .env("MONETA_CLUSTER_SECRET_FILE", &self.secret);
        self.procs.push(Proc(cmd.spawn().unwrap()));
        self.peers.push(peer);
        self.bases.push(format!("http://127.0.0.1:{api}"));
    }
}

/// Registers `n` users on node 1's folder before it starts (a cluster of one, offline).
async fn seed(c: &Cluster, n: usize) -> Duration {
    use futures_util::StreamExt;
    let env = node_env(&c.root, 1, &c.secrets_dir);
    let config = moneta::config::Config::load_with_env(None, &env).unwrap();
    let state = moneta::node::open_state(&config).await.unwrap();
    let hash = state.auth.hash_password("a long enough passphrase".into()).await.ok().unwrap();
    let started = Instant::now();
    let services = state.services.clone();
    futures_util::stream::iter(0..n)
        .for_each_concurrent(64, |i| {
            let (services, hash) = (services.clone(), hash.clone());
            async move {
                let profile = moneta::domain::account::Profile {
                    email: format!("seeded{i}@example.com"),
                    full_name: "Seeded Investor".into(),
                    date_of_birth: moneta::domain::time::Date::parse("1980-01-01"),
                    country: Some("GB".into()),
                };
                moneta::workflows::registration::create_account(&services, profile, hash, vec![moneta::domain::account::Role::User], &format!("seed-{i}"))
                    .await
                    .unwrap();
            }
        })
        .await;
    let took = started.elapsed();
    state.router.drain().await.unwrap();
    drop(services);
    drop(state);
    // The folder's lock goes with the last handle (the journal thread's): wait for it, bounded.
    let data = c.root.join("n1").join("data");
    let deadline = Instant::now() + Duration::from_secs(120);
    while moneta::storage::Store::open(&data).is_err() {
        assert!(Instant::now() < deadline, "the seeded folder stayed locked");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    took
}

async fn admin_token(c: &Cluster) -> String {
    use std::io::Write;
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_moneta"));
    cmd.args(["staff", "add", "--email", "ops@example.com", "--role", "admin"]);
    for (key, v) in node_env(&c.root, 1, &c.secrets_dir) {
        cmd.env(key, v);
    }
    let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    writeln!(child.stdin.take().unwrap(), "a long enough passphrase").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "staff add: {}", String::from_utf8_lossy(&out.stderr));
    let r: Value = client()
        .post(format!("{}/v1/auth/login", c.bases[0]))
        .json(&json!({"email": "ops@example.com", "password": "a long enough passphrase"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    r["access_token"].as_str().unwrap().to_string()
}

async fn wait_ready(base: &str) {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        if client().get(format!("{base}/readyz")).send().await.is_ok_and(|r| r.status().is_success()) {
            return;
        }
        assert!(Instant::now() < deadline, "{base} not ready");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// No move in flight, every group with min(3, n) replicas, replicas and leaders per node within
/// one of each other.
fn settled(v: &Value, n: usize) -> bool {
    if !v["moves"].as_array().is_some_and(|m| m.is_empty()) || v["nodes"].as_array().map_or(0, Vec::len) != n {
        return false;
    }
    let nodes = v["nodes"].as_array().unwrap();
    let spread = |key: &str| {
        let xs: Vec<u64> = nodes.iter().map(|x| x[key].as_u64().unwrap_or(0)).collect();
        xs.iter().max().unwrap() - xs.iter().min().unwrap()
    };
    v["groups"]
        .as_array()
        .unwrap()
        .iter()
        .all(|g| g["replicas"].as_array().map_or(0, Vec::len) == n.min(3) && g["leader"].is_string())
        && spread("replicas") <= 1
        && spread("groups_led") <= 1
}

async fn time_to_settle(base: &str, token: &str, n: usize) -> Duration {
    let started = Instant::now();
    loop {
        if let Ok(r) = client().get(format!("{base}/v1/cluster")).bearer_auth(token).send().await {
            if let Ok(v) = r.json::<Value>().await {
                if settled(&v, n) {
                    return started.elapsed();
                }
            }
        }
        assert!(started.elapsed() < SETTLE_MAX, "not settled on {n} nodes");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Durable deposits by `CLIENTS` clients over `bases` until `stop`; every latency.
async fn deposits(bases: Vec<String>, tokens: Vec<String>, stop: Arc<AtomicBool>) -> (Vec<Duration>, f64) {
    let lat = Arc::new(Mutex::new(Vec::new()));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let (bases, tokens, stop, lat) = (bases.clone(), tokens.clone(), stop.clone(), lat.clone());
        tasks.push(tokio::spawn(async move {
            let http = client();
            let mut i = 0u64;
            while !stop.load(Ordering::SeqCst) {
                let base = &bases[(c + i as usize) % bases.len()];
                let t = Instant::now();
                let r = http
                    .post(format!("{base}/v1/portfolio/deposits"))
                    .bearer_auth(&tokens[c % tokens.len()])
                    .header("Idempotency-Key", format!("d{c}-{i}"))
                    .json(&json!({"amount": "1.00"}))
                    .send()
                    .await;
                if r.is_ok_and(|r| r.status().as_u16() == 201) {
                    lat.lock().unwrap().push(t.elapsed());
                    i += 1;
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let elapsed = started.elapsed().as_secs_f64();
    let mut all = std::mem::take(&mut *lat.lock().unwrap());
    all.sort();
    let rps = all.len() as f64 / elapsed;
    (all, rps)
}

fn pct(all: &[Duration], p: f64) -> f64 {
    all[((all.len() as f64 * p) as usize).min(all.len() - 1)].as_secs_f64() * 1000.0
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let sizes: Vec<usize> = std::env::var("ELASTIC_USERS")
        .ok()
        .map(|s| s.split(',').filter_map(|x| x.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![10_000, 100_000]);
    println!("| users | seeding (offline) | 1 → 3 nodes settled | 3 → 4 nodes settled | p50 / p99 before | p50 / p99 during the moves | p99 ratio | deposits/s before / during |");
    println!("|---|---|---|---|---|---|---|---|");
    for n in sizes {
        let dir = tempfile::tempdir().unwrap();
        let mut c = Cluster::new(dir.path());
        let seeding = seed(&c, n).await;
        c.start(1);
        wait_ready(&c.bases[0]).await;
        let token = admin_token(&c).await;
        let tokens = investors_named(&c.bases[0], 4, "live").await;
        c.start(2);
        c.start(3);
        let grow = time_to_settle(&c.bases[0], &token, 3).await;
        let three: Vec<String> = c.bases.clone();
        let stop = Arc::new(AtomicBool::new(false));
        let before = tokio::spawn(deposits(three.clone(), tokens.clone(), stop.clone()));
        tokio::time::sleep(BEFORE).await;
        stop.store(true, Ordering::SeqCst);
        let (before, rps_before) = before.await.unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let during = tokio::spawn(deposits(three, tokens.clone(), stop.clone()));
        c.start(4);
        let add = time_to_settle(&c.bases[0], &token, 4).await;
        stop.store(true, Ordering::SeqCst);
        let (during, rps_during) = during.await.unwrap();
        println!(
            "| {n} | {:.1} s | {:.1} s | {:.1} s | {:.1} / {:.1} ms | {:.1} / {:.1} ms | {:.2}× | {:.0} / {:.0} |",
            seeding.as_secs_f64(),
            grow.as_secs_f64(),
            add.as_secs_f64(),
            pct(&before, 0.5),
            pct(&before, 0.99),
            pct(&during, 0.5),
            pct(&during, 0.99),
            pct(&during, 0.99) / pct(&before, 0.99),
            rps_before,
            rps_during
        );
        drop(c);
    }
}
