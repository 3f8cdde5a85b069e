//! Crash safety against the real binary: concurrent deposits and orders, `kill -9` in the middle,
//! restart, then: every acknowledged request is present exactly once (its replay returns the
//! same answer and moves nothing), nothing unacknowledged is half-applied (cash, holdings,
//! transactions, orders and audit records all agree), and `moneta audit verify` passes.

use moneta::domain::audit::Outcome;
use moneta::storage::Store;
use reqwest::blocking::Client;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rust_decimal::Decimal;

const USERS: usize = 6;
const CLIENT_THREADS: usize = 12;

struct Node {
    child: Child,
    base: String,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[path = "common/ports.rs"]
mod ports;
use ports::free_port;

// The child is waited for by `Node`'s Drop on every path.
#[allow(clippy::zombie_processes)]
fn start(dir: &Path) -> Node {
    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_moneta"))
        .arg("serve")
        .env("MONETA_NODE_DATA_DIR", dir)
        .env("MONETA_GATEWAY_LISTEN", format!("127.0.0.1:{port}"))
        .env("MONETA_MARKET_TICK_INTERVAL", "50ms")
        .env("MONETA_LOG_LEVEL", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let client = Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if client.get(format!("{base}/readyz")).send().is_ok_and(|r| r.status().is_success()) {
            return Node { child, base };
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("node did not become ready");
}

fn client() -> Client {
    Client::builder().timeout(Duration::from_secs(10)).build().unwrap()
}

fn login(c: &Client, base: &str, email: &str) -> String {
    let r: Value = c
        .post(format!("{base}/v1/auth/login"))
        .json(&json!({"email": email, "password": "a long enough passphrase"}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    r["access_token"].as_str().unwrap().to_string()
}

/// KYC (sandbox: verified) and a questionnaire that allows every demo instrument.
fn onboard(c: &Client, base: &str, token: &str) {
    let r = c
        .post(format!("{base}/v1/me/kyc"))
        .bearer_auth(token)
        .json(&json!({"document_type": "passport", "document_number": "123456789", "address": "1 High Street, London"}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let answers = json!({
        "objective": "speculation", "horizon_years": 20, "loss_tolerance": "large", "investment_experience_years": 10,
        "knows_complex_products": true, "annual_income": "120000.00", "liquid_net_worth": "500000.00", "emergency_fund_months": 12
    });
    let r = c
        .post(format!("{base}/v1/me/suitability"))
        .bearer_auth(token)
        .json(&json!({"answers": answers}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[derive(Clone, Debug)]
struct Sent {
    user: usize,
    path: &'static str,
    key: String,
    body: Value,
    /// `Some((status, body))` when the node answered.
    answer: Option<(u16, Value)>,
}

fn dec(v: &Value) -> Decimal {
    Decimal::from_str(v.as_str().unwrap()).unwrap()
}

#[test]
fn acknowledged_requests_survive_kill_9_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path());
    let c = client();
    let emails: Vec<String> = (0..USERS).map(|u| format!("crash-{u}@example.com")).collect();
    let mut tokens = Vec::new();
    for e in &emails {
        let r = c
            .post(format!("{}/v1/auth/register", node.base))
            .json(&json!({"email": e, "password": "a long enough passphrase", "full_name": "Crash Tester", "date_of_birth": "1980-01-01", "country": "GB"}))
            .send()
            .unwrap();
        assert_eq!(r.status().as_u16(), 201);
        let token = login(&c, &node.base, e);
        onboard(&c, &node.base, &token);
        tokens.push(token);
    }

    // Fire concurrent deposits and orders until the node is killed.
    let log: Arc<Mutex<Vec<Sent>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    for t in 0..CLIENT_THREADS {
        let (log, stop, base, tokens) = (log.clone(), stop.clone(), node.base.clone(), tokens.clone());
        threads.push(std::thread::spawn(move || {
            let c = client();
            for i in 0.. {
                if stop.load(Ordering::SeqCst) || i >= 400 {
                    break;
                }
                let user = (t + i) % USERS;
                let (path, body) = match i % 3 {
                    0 => ("/v1/portfolio/deposits", json!({"amount": "100.00"})),
                    1 => ("/v1/orders", json!({"symbol": "MMKT", "side": "buy", "quantity": "3"})),
                    _ => ("/v1/orders", json!({"symbol": "MMKT", "side": "sell", "quantity": "1"})),
                };
                let key = format!("t{t}-i{i}");
                let r = c
                    .post(format!("{base}{path}"))
                    .bearer_auth(&tokens[user])
                    .header("Idempotency-Key", &key)
                    .json(&body)
                    .send();
                let answer = r.ok().and_then(|r| {
                    let status = r.status().as_u16();
                    r.json::<Value>().ok().map(|b| (status, b))
                });
                let failed = answer.is_none();
                log.lock().unwrap().push(Sent { user, path, key, body, answer });
                if failed {
                    break;
                }
            }
        }));
    }
    // Kill -9 mid-stream, once a fair number of requests were answered.
    let deadline = Instant::now() + Duration::from_secs(60);
    while log.lock().unwrap().iter().filter(|s| s.answer.is_some()).count() < 300 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut node = node;
    node.child.kill().unwrap(); // SIGKILL
    node.child.wait().unwrap();
    stop.store(true, Ordering::SeqCst);
    for t in threads {
        t.join().unwrap();
    }
    drop(node);
    let sent = log.lock().unwrap().clone();
    let acked: Vec<&Sent> = sent.iter().filter(|s| s.answer.as_ref().is_some_and(|(st, _)| *st == 201)).collect();
    assert!(acked.len() >= 100, "too few acknowledged requests before the kill: {}", acked.len());
    // Restart on the same folder.
    let node = start(dir.path());
    let tokens: Vec<String> = emails.iter().map(|e| login(&c, &node.base, e)).collect();
    let snapshot = |u: usize| -> (Value, Value, Value) {
        let get = |p: &str| {
            c.get(format!("{}{p}", node.base))
                .bearer_auth(&tokens[u])
                .send()
                .unwrap()
                .json::<Value>()
                .unwrap()
        };
        // Prices move with the feed: compare what requests can change, not valuations.
        let mut p = get("/v1/portfolio");
        let holdings: Vec<Value> = p["holdings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| json!({"symbol": h["symbol"], "quantity": h["quantity"], "average_cost": h["average_cost"]}))
            .collect();
        p = json!({"cash": p["cash"], "holdings": holdings});
        (p, get("/v1/portfolio/transactions"), get("/v1/orders"))
    };
    let before: Vec<_> = (0..USERS).map(snapshot).collect();

    // Every acknowledged request replays to the same answer...
    for s in &acked {
        let r = c
            .post(format!("{}{}", node.base, s.path))
            .bearer_auth(&tokens[s.user])
            .header("Idempotency-Key", &s.key)
            .json(&s.body)
            .send()
            .unwrap();
        let status = r.status().as_u16();
        let body: Value = r.json().unwrap();
        assert_eq!(
            (status, &body),
            (201, &s.answer.as_ref().unwrap().1),
            "acknowledged request {} {} lost or changed",
            s.path,
            s.key
        );
    }
    // ...and the replays moved nothing.
    let after: Vec<_> = (0..USERS).map(snapshot).collect();
    assert!(before == after, "replaying acknowledged requests changed state");

    let mut acked_orders: HashMap<String, usize> = HashMap::new();
    for s in &acked {
        if s.path == "/v1/orders" {
            acked_orders.insert(s.answer.as_ref().unwrap().1["order_id"].as_str().unwrap().to_string(), s.user);
        }
    }
    let mut all_orders = BTreeMap::new();
    let mut tx_count = 0usize;
    for (u, (portfolio, txs, orders)) in after.iter().enumerate() {
        // Cash equals the sum of the transactions; holdings equal buys minus sells.
        let txs = txs.as_array().unwrap();
        tx_count += txs.len();
        let cash: Decimal = txs.iter().map(|t| dec(&t["amount"])).sum();
        assert_eq!(dec(&portfolio["cash"]), cash, "user {u}: cash disagrees with its transactions");
        let mut qty = Decimal::ZERO;
        for o in orders.as_array().unwrap() {
            let q = dec(&o["quantity"]);
            qty += if o["side"] == "buy" { q } else { -q };
            let id = o["order_id"].as_str().unwrap().to_string();
            assert_eq!(
                txs.iter().filter(|t| t["order_id"].as_str() == Some(id.as_str())).count(),
                1,
                "order {id} has exactly one transaction"
            );
            assert!(all_orders.insert(id, u).is_none());
        }
        let held = portfolio["holdings"]
            .as_array()
            .unwrap()
            .iter()
            .find(|h| h["symbol"] == "MMKT")
            .map(|h| dec(&h["quantity"]))
            .unwrap_or_default();
        assert_eq!(held, qty, "user {u}: holdings disagree with orders");
    }
    for (id, u) in &acked_orders {
        assert_eq!(all_orders.get(id), Some(u), "acknowledged order {id} is missing");
    }

    // Stop gracefully, then check the audit journal offline.
    let pid = node.child.id();
    assert!(Command::new("kill").args(["-TERM", &pid.to_string()]).status().unwrap().success());
    let mut node = node;
    let status = node.child.wait().unwrap();
    assert!(status.success(), "graceful shutdown exits 0: {status:?}");
    drop(node);
    // The broker confirmed every acknowledged order durably before it was acknowledged: its
    // confirmation's raft entry was flushed before it committed. The record itself may still be
    // in the applying round's unflushed batch at the kill; the restart replays that entry before
    // the node serves or reconciles anything, so no false "missing confirmation" is raised.
    {
        let store = Store::open(dir.path()).unwrap();
        let confirmed: std::collections::BTreeSet<String> = store
            .raw_records(moneta::storage::keys::ShardRecord::Confirmation)
            .unwrap()
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        for s in acked.iter().filter(|s| s.path == "/v1/orders") {
            let id = s.answer.as_ref().unwrap().1["order_id"].as_str().unwrap().to_string();
            assert!(
                confirmed.contains(&id),
                "acknowledged order {id} has no broker confirmation after kill -9 and the restart"
            );
        }
    }
    let out = Command::new(env!("CARGO_BIN_EXE_moneta"))
        .args(["audit", "verify"])
        .env("MONETA_NODE_DATA_DIR", dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "audit verify failed: {}", String::from_utf8_lossy(&out.stdout));

    // Every executed trade is in the audit journal exactly once; every transaction has one record.
    let store = Store::open(dir.path()).unwrap();
    let records = store.audit_records().unwrap();
    let mut audited_orders: HashMap<&str, usize> = HashMap::new();
    let mut ok_money = 0usize;
    for r in &records {
        if r.outcome == Outcome::Ok && matches!(r.action.as_str(), "portfolio.deposit" | "portfolio.withdrawal" | "order.filled") {
            ok_money += 1;
        }
        if r.action == "order.filled" {
            *audited_orders.entry(r.details["order_id"].as_str()).or_default() += 1;
        }
    }
    assert_eq!(ok_money, tx_count, "one audit record per transaction");
    for id in all_orders.keys() {
        assert_eq!(audited_orders.get(id.as_str()), Some(&1), "order {id} audited exactly once");
    }
}
