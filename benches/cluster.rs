//! The cluster, each figure against a baseline measured in the same run:
//! - (ii) durable deposits and orders over HTTP, `CLIENTS` clients spread over the gateways of
//!   three real `moneta serve` processes on loopback, against the same load on one node and
//!   against a bare warp handler in this process;
//! - (iii) one client's requests at a node that forwards them to the leader of the user's group
//!   (libp2p) against the same requests at the leader (local): the added p50 and p99;
//! - (iv) our libp2p round trips (tcp + pnet + noise + yamux): request-response with the
//!   cluster's codec, and a call down a lane (`cluster::lanes`), against a raw TCP
//!   request/reply with a 4-byte length prefix.
//!
//! Run: `cargo bench --bench cluster`. Every process it starts is stopped at the end (also on a
//! panic: the children are killed when dropped); every wait is bounded.

mod common;

use common::{client, load, CLIENTS, RUN};
use serde_json::json;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Shard groups of the benchmark's clusters (fewer than the default, as the tests do).
const GROUPS: &str = "8";
/// Sequential requests per target in (iii) and (iv).
const ROUND_TRIPS: usize = 2000;

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

fn serve(root: &Path, api: u16, env: &[(&str, String)]) -> Proc {
    std::fs::create_dir_all(root).unwrap();
    let log = std::fs::File::create(root.join("node.log")).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_moneta"));
    cmd.arg("serve")
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .env("MONETA_NODE_DATA_DIR", root.join("data"))
        .env("MONETA_GDPR_ERASURE_LIST", root.join("erasures.list"))
        .env("MONETA_BACKUP_KEY_FILE", root.join("backup.key"))
        .env("MONETA_GATEWAY_LISTEN", format!("127.0.0.1:{api}"))
        .env("MONETA_LOG_LEVEL", "warn")
        .env("MONETA_CLUSTER_GROUPS", GROUPS);
    for (k, v) in env {
        cmd.env(k, v);
    }
    Proc(cmd.spawn().unwrap())
}

async fn wait_ready(base: &str) {
    let c = client();
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if c.get(format!("{base}/readyz")).send().await.is_ok_and(|r| r.status().is_success()) {
            return;
        }
        assert!(Instant::now() < deadline, "{base} not ready in 90 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Three nodes forming one cluster (a shared private-network secret and shared secrets).
async fn three_nodes(root: &Path) -> (Vec<Proc>, Vec<String>) {
    std::fs::create_dir_all(root).unwrap();
    let secret = root.join("cluster.secret");
    let out = Command::new(env!("CARGO_BIN_EXE_moneta"))
        .args(["cluster", "new-secret", "--out"])
        .arg(&secret)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let secrets_dir = root.join("cluster-secrets");
    let env = vec![
        ("MONETA_NODE_DATA_DIR".to_string(), root.join("scratch").display().to_string()),
        ("MONETA_SECURITY_SECRETS_DIR".to_string(), secrets_dir.display().to_string()),
        ("MONETA_GDPR_ERASURE_LIST".to_string(), root.join("scratch.erasures").display().to_string()),
    ];
    let config = moneta::config::Config::load_with_env(None, &env).unwrap();
    drop(moneta::node::open_state(&config).await.unwrap());
    let ports: Vec<(u16, u16)> = (0..3).map(|_| (free_port(), free_port())).collect();
    let mut procs = Vec::new();
    for (i, (api, peer)) in ports.iter().enumerate() {
        let join: Vec<String> = ports
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, (_, p))| format!("127.0.0.1:{p}"))
            .collect();
        procs.push(serve(
            &root.join(format!("n{}", i + 1)),
            *api,
            &[
                ("MONETA_NODE_ID", format!("n{}", i + 1)),
                ("MONETA_CLUSTER_LISTEN", format!("127.0.0.1:{peer}")),
                ("MONETA_CLUSTER_JOIN", join.join(",")),
                ("MONETA_CLUSTER_BOOTSTRAP_EXPECT", "3".into()),
                ("MONETA_CLUSTER_SECRET_FILE", secret.display().to_string()),
                ("MONETA_SECURITY_SECRETS_DIR", secrets_dir.display().to_string()),
            ],
        ));
    }
    let bases: Vec<String> = ports.iter().map(|(api, _)| format!("http://127.0.0.1:{api}")).collect();
    for b in &bases {
        wait_ready(b).await;
    }
    (procs, bases)
}

/// The bare warp handler of `gateway_load` (the baseline of the HTTP figures), in this process.
async fn bare() -> common::Figures {
    use warp::Filter;
    let bare = warp::path("ping").map(|| warp::reply::json(&json!({"status": "ok"})));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(warp::serve(bare).incoming(listener).run());
    let c = client();
    let figures = load(move |_, _| {
        let c = c.clone();
        async move { c.get(format!("http://{addr}/ping")).send().await.is_ok_and(|r| r.status().is_success()) }
    })
    .await;
    server.abort();
    figures
}

/// `CLIENTS` investors registered at the first gateway, then durable deposits for `RUN` and
/// (each investor funded first) durable market buys for `RUN`, client `u` at gateway
/// `u % bases.len()`.
async fn deposits_and_orders(bases: Vec<String>) -> (common::Figures, common::Figures) {
    let tokens = Arc::new(common::investors(&bases[0], CLIENTS).await);
    let (c, bases) = (client(), Arc::new(bases));
    let (cd, td, bd) = (c.clone(), tokens.clone(), bases.clone());
    let deposits = load(move |u, i| {
        let (c, t, b) = (cd.clone(), td[u].clone(), bd[u % bd.len()].clone());
        async move {
            c.post(format!("{b}/v1/portfolio/deposits"))
                .bearer_auth(t)
                .header("Idempotency-Key", format!("load-{i}"))
                .json(&json!({"amount": "1.00"}))
                .send()
                .await
                .is_ok_and(|r| r.status().as_u16() == 201)
        }
    })
    .await;
    common::fund(&bases, &tokens).await;
    let orders = load(move |u, i| {
        let (c, t, b) = (c.clone(), tokens[u].clone(), bases[u % bases.len()].clone());
        async move {
            c.post(format!("{b}/v1/orders"))
                .bearer_auth(t)
                .header("Idempotency-Key", format!("order-{i}"))
                .json(&json!({"symbol": "MMKT", "side": "buy", "quantity": "1"}))
                .send()
                .await
                .is_ok_and(|r| r.status().as_u16() == 201)
        }
    })
    .await;
    (deposits, orders)
}

/// Sequential latencies of `n` calls of `f`: (p50 ms, p99 ms, calls/s).
async fn sequential<F, Fut>(n: usize, mut f: F) -> (f64, f64, f64)
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let start = Instant::now();
    let mut lat = Vec::with_capacity(n);
    for i in 0..n {
        let t = Instant::now();
        f(i).await;
        lat.push(t.elapsed());
    }
    let rate = n as f64 / start.elapsed().as_secs_f64();
    lat.sort();
    let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)].as_secs_f64() * 1000.0;
    (pct(0.50), pct(0.99), rate)
}

/// What node `base` forwarded so far (calls and steps), from its metrics.
async fn forwarded(base: &str) -> f64 {
    let text = client().get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap();
    text.lines()
        .filter(|l| l.starts_with("moneta_cluster_forwarded_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// (iii): one investor's reads and deposits at the leader of their group and at a node that
/// forwards them. The leader is the node whose forwarding counter moves least.
async fn forwarding(bases: &[String]) -> Vec<(String, (f64, f64, f64), (f64, f64, f64))> {
    let token = common::investors_named(&bases[0], 1, "single").await.remove(0);
    let c = client();
    // The leader forwards the fewest calls for the investor's reads (a node that does not lead
    // the group forwards each read; any node may forward a quote of an instrument elsewhere).
    let mut deltas = Vec::new();
    for b in bases {
        let before = forwarded(b).await;
        for _ in 0..5 {
            let r = c.get(format!("{b}/v1/portfolio")).bearer_auth(&token).send().await.unwrap();
            assert!(r.status().is_success());
        }
        deltas.push((forwarded(b).await - before, b.clone()));
    }
    deltas.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (least, most) = (deltas.first().unwrap(), deltas.last().unwrap());
    assert!(least.0 < most.0, "no node forwards fewer of the investor's reads: {deltas:?}");
    let (local, remote) = (least.1.clone(), most.1.clone());
    let mut rows = Vec::new();
    for (name, deposit) in [("GET /v1/portfolio", false), ("POST deposits (durable)", true)] {
        let mut figures = Vec::new();
        for (tag, b) in [("local", &local), ("forwarded", &remote)] {
            let (c, t) = (c.clone(), token.clone());
            figures.push(
                sequential(ROUND_TRIPS / 2, |i| {
                    let (c, t, b) = (c.clone(), t.clone(), b.clone());
                    async move {
                        let r = if deposit {
                            c.post(format!("{b}/v1/portfolio/deposits"))
                                .bearer_auth(t)
                                .header("Idempotency-Key", format!("{tag}-{i}"))
                                .json(&json!({"amount": "1.00"}))
                                .send()
                                .await
                        } else {
                            c.get(format!("{b}/v1/portfolio")).bearer_auth(t).send().await
                        };
                        assert!(r.is_ok_and(|r| r.status().is_success()), "{name} at {b}");
                    }
                })
                .await,
            );
        }
        rows.push((name.to_string(), figures[0], figures[1]));
    }
    rows
}

/// (iv): request/reply of a 256-byte frame over our libp2p transport (request-response, and a
/// call down a lane) and over raw TCP.
async fn transports() -> ((f64, f64, f64), (f64, f64, f64), (f64, f64, f64)) {
    use moneta::cluster::transport::{multiaddr, Inbound, Limits, Transport};
    let secret = [9u8; 32];
    let start = |k| Transport::start(k, secret, multiaddr("127.0.0.1:0").unwrap(), Limits::default(), Default::default());
    let (b, mut b_in, b_addr) = start(libp2p::identity::Keypair::generate_ed25519()).await.unwrap();
    tokio::spawn(async move {
        while let Some(i) = b_in.recv().await {
            if let Inbound::Request { bytes, reply, .. } = i {
                let _ = reply.send(bytes);
            }
        }
    });
    let (a, _a_in, _) = start(libp2p::identity::Keypair::generate_ed25519()).await.unwrap();
    a.add_address(b.local_peer, b_addr).await;
    let frame = vec![7u8; 256];
    // Connected (handshakes done) before measuring.
    tokio::time::timeout(Duration::from_secs(10), a.request(b.local_peer, frame.clone()))
        .await
        .unwrap()
        .unwrap();
    let p2p = sequential(ROUND_TRIPS, |_| {
        let (a, f, to) = (a.clone(), frame.clone(), b.local_peer);
        async move {
            assert_eq!(a.request(to, f).await.unwrap().len(), 256);
        }
    })
    .await;
    let lane = sequential(ROUND_TRIPS, |_| {
        let (a, f, to) = (a.clone(), frame.clone(), b.local_peer);
        async move {
            assert_eq!(a.call(to, &f).await.unwrap().len(), 256);
        }
    })
    .await;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        s.set_nodelay(true).unwrap();
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let Ok(n) = s.read_u32().await else { return };
            let n = n as usize;
            if s.read_exact(&mut buf[..n]).await.is_err() {
                return;
            }
            if s.write_u32(n as u32).await.is_err() || s.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    });
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let stream = Arc::new(tokio::sync::Mutex::new(stream));
    let tcp = sequential(ROUND_TRIPS, |_| {
        let (s, f) = (stream.clone(), frame.clone());
        async move {
            let mut s = s.lock().await;
            s.write_u32(f.len() as u32).await.unwrap();
            s.write_all(&f).await.unwrap();
            let n = s.read_u32().await.unwrap() as usize;
            let mut back = vec![0u8; n];
            s.read_exact(&mut back).await.unwrap();
        }
    })
    .await;
    (p2p, lane, tcp)
}

#[tokio::main]
async fn main() {
    // Removed when dropped (after the processes, declared later, are stopped).
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    // (iv) first: nothing else runs meanwhile.
    let (p2p, lane, tcp) = transports().await;

    // (ii) the bare handler, one node, then three.
    let baseline = bare().await;
    let solo_api = free_port();
    let solo = serve(&dir.join("solo"), solo_api, &[]);
    let solo_base = format!("http://127.0.0.1:{solo_api}");
    wait_ready(&solo_base).await;
    let (one, one_orders) = deposits_and_orders(vec![solo_base]).await;
    drop(solo);
    let (procs, bases) = three_nodes(&dir.join("three")).await;
    let (three, three_orders) = deposits_and_orders(bases.clone()).await;

    // (iii) on the three nodes.
    let rows = forwarding(&bases).await;
    drop(procs);

    println!("\n== (ii) durable requests over HTTP, {CLIENTS} clients, {}s each ==", RUN.as_secs());
    println!("{:<40} {:>9} {:>8} {:>8} {:>9} {:>9}", "", "req/s", "p50 ms", "p99 ms", "vs bare", "vs one");
    for (name, f, base) in [
        ("bare warp GET (baseline)", &baseline, &baseline),
        ("deposits, one node", &one, &one),
        ("deposits, three nodes, clients spread", &three, &one),
        ("orders, one node", &one_orders, &one_orders),
        ("orders, three nodes, clients spread", &three_orders, &one_orders),
    ] {
        println!(
            "{name:<40} {:>9.0} {:>8.2} {:>8.2} {:>8.1}% {:>8.2}x",
            f.rps,
            f.p50_ms,
            f.p99_ms,
            100.0 * f.rps / baseline.rps,
            f.rps / base.rps
        );
    }
    println!(
        "\n== (iii) one client, {} sequential requests each: forwarded vs at the leader ==",
        ROUND_TRIPS / 2
    );
    println!("{:<26} {:>16} {:>16} {:>10} {:>10}", "", "local p50/p99", "fwd p50/p99", "+p50 ms", "+p99 ms");
    for (name, l, f) in rows {
        println!(
            "{name:<26} {:>7.2} / {:>6.2} {:>7.2} / {:>6.2} {:>10.2} {:>10.2}",
            l.0,
            l.1,
            f.0,
            f.1,
            f.0 - l.0,
            f.1 - l.1
        );
    }
    println!("\n== (iv) request/reply of 256 bytes, {ROUND_TRIPS} sequential round trips ==");
    println!("{:<34} {:>9} {:>8} {:>8} {:>9}", "", "rt/s", "p50 ms", "p99 ms", "vs tcp");
    for (name, f) in [
        ("raw TCP, length-prefixed (baseline)", tcp),
        ("libp2p request-response", p2p),
        ("libp2p lane call", lane),
    ] {
        println!("{name:<34} {:>9.0} {:>8.3} {:>8.3} {:>8.2}x", f.2, f.0, f.1, f.2 / tcp.2);
    }
}
