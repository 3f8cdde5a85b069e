//! Three real `moneta serve` processes on loopback form one cluster (bootstrap_expect = 3,
//! a shared private-network secret and shared cluster secrets) and serve any request at any
//! node: a user registers at one node, logs in at another, deposits and trades at a third,
//! and every node answers the same. Then the node leading the most groups is killed with
//! SIGKILL: the other two serve again, nothing acknowledged is lost, retries of acknowledged
//! requests return their first answer; the killed node restarts from its folder and catches up.
//! One cluster is shared by the cases (multi-node start-up is slow); every wait is bounded.

mod common;
use common::*;

const NODES: usize = 3;

struct Member {
    child: Option<Child>,
    id: String,
    api: u16,
    peer: u16,
    base: String,
    root: PathBuf,
    client: Client,
}

impl Drop for Member {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

struct Cluster {
    members: Vec<Member>,
    secret: PathBuf,
    secrets_dir: PathBuf,
    /// Settings over the defaults below for the next starts.
    extra_env: Vec<(&'static str, &'static str)>,
}

impl Cluster {
    fn spawn(&mut self, i: usize) {
        let peers: Vec<String> = self
            .members
            .iter()
            .filter(|m| m.id != self.members[i].id)
            .map(|m| format!("127.0.0.1:{}", m.peer))
            .collect();
        let m = &mut self.members[i];
        let log = File::create(m.root.join(format!("{}.log", m.id))).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_moneta"));
        cmd.arg("serve").stdin(Stdio::null()).stdout(log.try_clone().unwrap()).stderr(log);
        configure(&mut cmd, &m.root, m.api);
        cmd.env("MONETA_NODE_ID", &m.id)
            .env("MONETA_CLUSTER_LISTEN", format!("127.0.0.1:{}", m.peer))
            .env("MONETA_CLUSTER_JOIN", peers.join(","))
            .env("MONETA_CLUSTER_BOOTSTRAP_EXPECT", NODES.to_string())
            .env("MONETA_CLUSTER_SECRET_FILE", &self.secret)
            .env("MONETA_CLUSTER_GROUPS", "8")
            .env("MONETA_SECURITY_SECRETS_DIR", &self.secrets_dir)
            .env("MONETA_MARKET_TICK_INTERVAL", "200ms")
            .env("MONETA_GATEWAY_REQUEST_TIMEOUT", "4s")
            .env("MONETA_GDPR_ERASURE_GRACE_PERIOD", "0s")
            .env("MONETA_GDPR_ERASURE_CHECK_INTERVAL", "200ms")
            // Test-only: lets the test cut links between members (a partition) over the
            // control socket; a node started without it refuses.
            .env("MONETA_CLUSTER_TEST_FAULTS", "true");
        cmd.envs(self.extra_env.iter().copied());
        m.child = Some(cmd.spawn().unwrap());
    }

    /// The last lines of every member's log (what a failed start needs to be understood).
    fn all_logs(&self) -> String {
        (0..self.members.len())
            .map(|i| {
                let log = self.logs(i);
                let lines: Vec<&str> = log.lines().collect();
                format!(
                    "--- {} (last 80 lines)\n{}",
                    self.members[i].id,
                    lines[lines.len().saturating_sub(80)..].join("\n")
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn logs(&self, i: usize) -> String {
        let m = &self.members[i];
        std::fs::read_to_string(m.root.join(format!("{}.log", m.id))).unwrap_or_default()
    }

    fn wait_healthy(&mut self, i: usize, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.members[i].child.as_mut().unwrap().try_wait().unwrap() {
                panic!("{} exited during start-up with {status}:\n{}", self.members[i].id, self.logs(i));
            }
            if self.members[i]
                .client
                .get(format!("{}/healthz", self.members[i].base))
                .send()
                .is_ok_and(|r| r.status().is_success())
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{} not healthy in {within:?}:\n{}",
                self.members[i].id,
                self.all_logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `moneta <args>` with node `i`'s environment.
    fn cli(&self, i: usize, args: &[&str]) -> Command {
        let m = &self.members[i];
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_moneta"));
        cmd.args(args);
        configure(&mut cmd, &m.root, m.api);
        cmd.env("MONETA_NODE_ID", &m.id).env("MONETA_SECURITY_SECRETS_DIR", &self.secrets_dir);
        cmd
    }

    /// `moneta staff add` against the running node `i` (the password on standard input).
    fn staff_add(&self, i: usize, email: &str, role: &str) -> String {
        use std::io::Write;
        let mut child = self
            .cli(i, &["staff", "add", "--email", email, "--role", role])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        writeln!(child.stdin.take().unwrap(), "{PASSWORD}").unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "staff add: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Cuts node `i`'s links to these members (both directions need a call at each end).
    fn cut(&self, i: usize, others: &[usize]) {
        let ids = others.iter().map(|&o| self.members[o].id.clone()).collect();
        let r = moneta::control::call(&self.members[i].root.join("data"), &moneta::control::Request::CutLinks { node_ids: ids }).unwrap();
        assert!(r.ok, "{:?}", r.error);
    }

    /// Every node's view of who leads each group in which term (for the one-leader-per-term check).
    fn observe(&self, token: &str, seen: &mut std::collections::BTreeMap<(u64, u64), String>) {
        for i in 0..NODES {
            if self.members[i].child.is_none() {
                continue;
            }
            let (s, v) = self.get(i, "/v1/cluster", token);
            if s != 200 {
                continue;
            }
            for g in v["groups"].as_array().unwrap() {
                let (Some(leader), Some(term)) = (g["leader"].as_str(), g["term"].as_u64()) else {
                    continue;
                };
                let key = (g["group"].as_u64().unwrap(), term);
                if let Some(prev) = seen.insert(key, leader.to_string()) {
                    assert_eq!(prev, leader, "group {} had two leaders in term {term}", key.0);
                }
            }
        }
    }

    /// Stops node `i` gracefully (SIGTERM), bounded.
    fn stop(&mut self, i: usize) {
        let c = self.members[i].child.as_mut().unwrap();
        let _ = Command::new("kill").arg("-TERM").arg(c.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while c.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = c.kill();
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = c.wait();
        self.members[i].child = None;
    }

    fn kill9(&mut self, i: usize) {
        let c = self.members[i].child.as_mut().unwrap();
        let _ = c.kill();
        let _ = c.wait();
        self.members[i].child = None;
    }

    fn post(&self, i: usize, path: &str, token: Option<&str>, key: Option<&str>, body: &Value) -> (u16, Value) {
        let m = &self.members[i];
        let mut rb = m.client.post(format!("{}{path}", m.base)).json(body);
        if let Some(t) = token {
            rb = rb.bearer_auth(t);
        }
        if let Some(k) = key {
            rb = rb.header("Idempotency-Key", k);
        }
        match rb.send() {
            Ok(r) => (r.status().as_u16(), r.json().unwrap_or(Value::Null)),
            Err(_) => (0, Value::Null),
        }
    }

    fn get(&self, i: usize, path: &str, token: &str) -> (u16, Value) {
        let m = &self.members[i];
        match m.client.get(format!("{}{path}", m.base)).bearer_auth(token).send() {
            Ok(r) => (r.status().as_u16(), r.json().unwrap_or(Value::Null)),
            Err(_) => (0, Value::Null),
        }
    }

    /// Retries a request while the cluster answers 503 (no leader yet), bounded.
    fn until_served(&self, within: Duration, mut f: impl FnMut() -> (u16, Value)) -> (u16, Value) {
        let deadline = Instant::now() + within;
        loop {
            let (s, v) = f();
            if s != 503 && s != 0 {
                return (s, v);
            }
            assert!(Instant::now() < deadline, "still unavailable after {within:?}: {v}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

use moneta::cluster::history::{BankOp, BankRet, Event};
use rand::{Rng, SeedableRng};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

fn cents(s: &str) -> i64 {
    let (whole, frac) = s.split_once('.').unwrap_or((s, "0"));
    whole.parse::<i64>().unwrap() * 100 + format!("{frac:0<2}")[..2].parse::<i64>().unwrap()
}

/// A client of one portfolio: deposits, withdrawals and reads of cash at random nodes, each
/// retried under its idempotency key while the cluster answers 503 or a node is down; every
/// call is recorded (invoke and return, in real-time order) for the linearizability check. A
/// call still unanswered at its deadline stays open and the client goes on as a new thread.
fn client(bases: Vec<String>, token: String, history: Arc<Mutex<Vec<Event>>>, stop: Arc<AtomicBool>, id: u64) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let http = Client::builder().timeout(Duration::from_secs(6)).build().unwrap();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(id);
        let mut thread = id * 1000;
        for n in 0..40 {
            if stop.load(Ordering::SeqCst) {
                break;
            }
            let (op, path, body) = match rng.random_range(0..5) {
                0 | 1 => (BankOp::Deposit(100), "/v1/portfolio/deposits", Some(json!({"amount": "1.00"}))),
                2 => (BankOp::Withdraw(200), "/v1/portfolio/withdrawals", Some(json!({"amount": "2.00"}))),
                _ => (BankOp::ReadCash, "/v1/portfolio", None),
            };
            let key = format!("c{id}-{n}");
            if std::env::var("CLUSTER_TEST_TRACE").is_ok() {
                eprintln!("client {id} op {n}: {op:?}");
            }
            history.lock().unwrap().push(Event::Invoke { thread, op });
            let deadline = Instant::now() + Duration::from_secs(25);
            let ret = loop {
                let base = &bases[rng.random_range(0..bases.len())];
                let r = match &body {
                    Some(b) => http
                        .post(format!("{base}{path}"))
                        .bearer_auth(&token)
                        .header("Idempotency-Key", &key)
                        .json(b)
                        .send(),
                    None => http.get(format!("{base}{path}")).bearer_auth(&token).send(),
                };
                match r.map(|r| (r.status().as_u16(), r.json::<Value>().unwrap_or(Value::Null))) {
                    Ok((201, v)) if body.is_some() => break Some(BankRet::Cash(cents(v["cash"].as_str().unwrap()))),
                    Ok((422, v)) if v["code"] == "insufficient_funds" => break Some(BankRet::Refused),
                    Ok((200, v)) if body.is_none() => break Some(BankRet::Cash(cents(v["cash"].as_str().unwrap()))),
                    Ok((503, _)) | Err(_) => {}
                    Ok((s, v)) => panic!("client {id}: {op:?} answered {s} {v}"),
                }
                if Instant::now() >= deadline {
                    break None;
                }
                std::thread::sleep(Duration::from_millis(100));
            };
            match ret {
                Some(ret) => history.lock().unwrap().push(Event::Return { thread, ret }),
                // Outcome unknown: the call stays open; this client carries on as another thread.
                None => thread += 1,
            }
        }
    })
}

/// What a scripted session of one user answered, with what differs between runs (ids, times,
/// prices moved by the feed) left out: status codes, problem codes, filled quantities, sides,
/// symbols, holdings. Plus the check that the cash every answer implies is the cash read.
fn trading_session(bases: &[String], user: usize, seed: u64) -> Vec<String> {
    use rust_decimal::Decimal;
    use std::str::FromStr;
    let http = Client::builder().timeout(Duration::from_secs(20)).build().unwrap();
    // The script's choices, and (apart) the nodes it goes to: the same script on any cluster.
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed * 1000 + user as u64);
    let mut nodes = rand_chacha::ChaCha8Rng::seed_from_u64(seed * 1000 + user as u64 + 1);
    let n = bases.len();
    let first = nodes.random_range(0..n);
    let at = |rng: &mut rand_chacha::ChaCha8Rng, avoid: Option<usize>| loop {
        let i = rng.random_range(0..n);
        if n == 1 || Some(i) != avoid {
            break i;
        }
    };
    // Retries 503 (a group between leaders) under the same idempotency key, bounded.
    let call = |base: &str, method: &str, path: &str, token: Option<&str>, key: Option<&str>, body: Option<Value>| -> (u16, Value) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let mut rb = if method == "GET" {
                http.get(format!("{base}{path}"))
            } else {
                http.post(format!("{base}{path}"))
            };
            if let Some(t) = token {
                rb = rb.bearer_auth(t);
            }
            if let Some(k) = key {
                rb = rb.header("Idempotency-Key", k);
            }
            if let Some(b) = &body {
                rb = rb.json(b);
            }
            let (s, v) = match rb.send() {
                Ok(r) => (r.status().as_u16(), r.json::<Value>().unwrap_or(Value::Null)),
                Err(_) => (0, Value::Null),
            };
            if s != 503 && s != 0 {
                return (s, v);
            }
            assert!(Instant::now() < deadline, "user {user}: {method} {path} unavailable for 30 s: {v}");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let names = ["Grace Hopper", "Alan Turing", "Edsger Dijkstra", "Barbara Liskov", "Donald Knuth"];
    let email = format!("trader{user}-{seed}@example.com");
    let mut seen = Vec::new();
    let mut note = |what: &str, s: u16, v: &Value| {
        let code = v["code"].as_str().unwrap_or("");
        seen.push(format!("{what}: {s} {code}"));
    };
    let body = json!({"email": email, "password": PASSWORD, "full_name": names[user % names.len()], "date_of_birth": "1985-02-03", "country": "GB"});
    let (s, v) = call(&bases[first], "POST", "/v1/auth/register", None, None, Some(body));
    note("register", s, &v);
    let login_at = at(&mut nodes, Some(first));
    let (s, v) = call(
        &bases[login_at],
        "POST",
        "/v1/auth/login",
        None,
        None,
        Some(json!({"email": email, "password": PASSWORD})),
    );
    note("login elsewhere", s, &v);
    let token = v["access_token"].as_str().unwrap_or_default().to_string();
    let t = Some(token.as_str());
    let kyc = json!({"document_type": "passport", "document_number": format!("P{user:08}"), "address": "1 High Street, London"});
    let (s, v) = call(&bases[at(&mut nodes, None)], "POST", "/v1/me/kyc", t, None, Some(kyc));
    note("kyc", s, &v);
    let (s, v) = call(
        &bases[at(&mut nodes, None)],
        "POST",
        "/v1/me/suitability",
        t,
        None,
        Some(json!({"answers": adventurous()})),
    );
    note("suitability", s, &v);
    let (s, v) = call(
        &bases[at(&mut nodes, None)],
        "POST",
        "/v1/portfolio/deposits",
        t,
        Some("d1"),
        Some(json!({"amount": "1000.00"})),
    );
    note(&format!("deposit -> {}", v["cash"]), s, &v);
    let symbol = ["ACME", "GLOBX", "WRLD"][rng.random_range(0..3)];
    let q: u32 = rng.random_range(2..=5);
    let buy = json!({"symbol": symbol, "side": "buy", "quantity": q.to_string()});
    let (s, bought) = call(&bases[at(&mut nodes, None)], "POST", "/v1/orders", t, Some("o1"), Some(buy.clone()));
    note(&format!("buy {symbol} {q} -> {} {}", bought["status"], bought["quantity"]), s, &bought);
    let oversell = json!({"symbol": symbol, "side": "sell", "quantity": (q + 1).to_string()});
    let (s, v) = call(&bases[at(&mut nodes, None)], "POST", "/v1/orders", t, Some("o2"), Some(oversell));
    note("sell too many", s, &v);
    let (s, sold) = call(
        &bases[at(&mut nodes, None)],
        "POST",
        "/v1/orders",
        t,
        Some("o3"),
        Some(json!({"symbol": symbol, "side": "sell", "quantity": "1"})),
    );
    note(&format!("sell {symbol} 1 -> {} {}", sold["status"], sold["quantity"]), s, &sold);
    let (s, v) = call(
        &bases[at(&mut nodes, None)],
        "POST",
        "/v1/portfolio/withdrawals",
        t,
        Some("w1"),
        Some(json!({"amount": "100000.00"})),
    );
    note("withdraw too much", s, &v);
    let (s, v) = call(
        &bases[at(&mut nodes, None)],
        "POST",
        "/v1/portfolio/withdrawals",
        t,
        Some("w2"),
        Some(json!({"amount": "10.00"})),
    );
    note("withdraw", s, &v);
    // A retry of the buy at another node answers its first answer, exactly.
    let (s, again) = call(&bases[at(&mut nodes, None)], "POST", "/v1/orders", t, Some("o1"), Some(buy));
    note("buy again", s, &again);
    assert_eq!(again, bought, "user {user}: a retried order answers its first fill");
    // The history reads at any node: two fills, three cash movements.
    let (s, v) = call(&bases[at(&mut nodes, None)], "GET", "/v1/orders", t, None, None);
    note(&format!("orders {}", v.as_array().map_or(0, Vec::len)), s, &v);
    let (s, v) = call(&bases[at(&mut nodes, None)], "GET", "/v1/portfolio/transactions", t, None, None);
    note(&format!("transactions {}", v.as_array().map_or(0, Vec::len)), s, &v);
    let (s, p) = call(&bases[at(&mut nodes, None)], "GET", "/v1/portfolio", t, None, None);
    let holdings: Vec<String> = p["holdings"]
        .as_array()
        .map(|h| {
            h.iter()
                .map(|h| format!("{} {}", h["symbol"].as_str().unwrap(), h["quantity"].as_str().unwrap()))
                .collect()
        })
        .unwrap_or_default();
    note(&format!("portfolio {holdings:?}"), s, &p);
    // The cash is what the answers imply: the deposit, the two fills at their own prices and
    // fees, the withdrawal.
    if s == 200 && bought["price"].is_string() && sold["price"].is_string() {
        let d = |v: &Value, f: &str| Decimal::from_str(v[f].as_str().unwrap()).unwrap();
        let notional = |o: &Value| (d(o, "quantity") * d(o, "price")).round_dp_with_strategy(2, rust_decimal::RoundingStrategy::MidpointAwayFromZero);
        let expected = Decimal::from(1000) - (notional(&bought) + d(&bought, "fees")) + (notional(&sold) - d(&sold, "fees")) - Decimal::from(10);
        assert_eq!(d(&p, "cash"), expected, "user {user}: cash {p} after {bought} and {sold}");
    }
    seen
}

/// Runs the scripted sessions of `users` users, four at a time.
fn trading_sessions(bases: &[String], users: usize, seed: u64) -> Vec<Vec<String>> {
    let mut all = vec![Vec::new(); users];
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..4)
            .map(|w| scope.spawn(move || (w..users).step_by(4).map(|u| (u, trading_session(bases, u, seed))).collect::<Vec<_>>()))
            .collect();
        for h in handles {
            for (u, seen) in h.join().unwrap() {
                all[u] = seen;
            }
        }
    });
    all
}

fn start_cluster(root: &Path) -> Cluster {
    let secret = root.join("cluster.secret");
    let out = Command::new(env!("CARGO_BIN_EXE_moneta"))
        .args(["cluster", "new-secret", "--out"])
        .arg(&secret)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // The cluster's shared secrets (JWT keys, email-index key, master key), made once.
    let secrets_dir = root.join("cluster-secrets");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let env = vec![
            ("MONETA_NODE_DATA_DIR".to_string(), root.join("scratch").display().to_string()),
            ("MONETA_SECURITY_SECRETS_DIR".to_string(), secrets_dir.display().to_string()),
            ("MONETA_GDPR_ERASURE_LIST".to_string(), root.join("scratch.erasures").display().to_string()),
        ];
        let config = moneta::config::Config::load_with_env(None, &env).unwrap();
        drop(moneta::node::open_state(&config).await.unwrap());
    });
    drop(rt);
    let members = (0..NODES)
        .map(|i| {
            let r = root.join(format!("n{}", i + 1));
            std::fs::create_dir_all(&r).unwrap();
            let api = free_port();
            Member {
                child: None,
                id: format!("n{}", i + 1),
                api,
                peer: free_port(),
                base: format!("http://127.0.0.1:{api}"),
                root: r,
                client: Client::builder().timeout(Duration::from_secs(30)).build().unwrap(),
            }
        })
        .collect();
    let mut c = Cluster {
        members,
        secret,
        secrets_dir,
        extra_env: Vec::new(),
    };
    for i in 0..NODES {
        c.spawn(i);
    }
    for i in 0..NODES {
        c.wait_healthy(i, Duration::from_secs(60));
    }
    c
}

#[test]
fn three_nodes_form_serve_any_request_anywhere_and_survive_a_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let phase = |name: &str| eprintln!("[cluster test] {:>6.1}s {name}", started.elapsed().as_secs_f64());
    let mut c = start_cluster(dir.path());
    let long = Duration::from_secs(30);
    phase("formed");

    // Register at n1, log in at n2, onboard and deposit at n3; every node reads the same.
    let email = "ada@example.com";
    let body = json!({"email": email, "password": PASSWORD, "full_name": "Ada Lovelace", "date_of_birth": "1990-04-01", "country": "GB"});
    let (s, v) = c.until_served(long, || c.post(0, "/v1/auth/register", None, None, &body));
    assert_eq!(s, 201, "register at n1: {v}");
    let (s, v) = c.until_served(long, || c.post(1, "/v1/auth/login", None, None, &json!({"email": email, "password": PASSWORD})));
    assert_eq!(s, 200, "login at n2 of a user registered at n1: {v}");
    let token = v["access_token"].as_str().unwrap().to_string();
    let (s, v) = c.post(
        2,
        "/v1/me/kyc",
        Some(&token),
        None,
        &json!({"document_type": "passport", "document_number": "123456789", "address": "1 High Street, London"}),
    );
    assert_eq!(s, 200, "kyc at n3 with n2's token: {v}");
    let (s, v) = c.post(2, "/v1/me/suitability", Some(&token), None, &json!({"answers": adventurous()}));
    assert_eq!(s, 200, "suitability at n3: {v}");
    let mut acknowledged = Vec::new();
    for k in 0..6 {
        let node = k % NODES;
        let key = format!("dep-{k}");
        let (s, v) = c.post(node, "/v1/portfolio/deposits", Some(&token), Some(&key), &json!({"amount": "100.00"}));
        assert_eq!(s, 201, "deposit {k} at node {node}: {v}");
        acknowledged.push((key, v));
    }
    for node in 0..NODES {
        let (s, p) = c.get(node, "/v1/portfolio", &token);
        assert_eq!(s, 200, "{p}");
        assert_eq!(p["cash"], "600.00", "node {node} reads the same cash: {p}");
    }

    // An operator: a staff account made through the running n1 works at every node, and the
    // cluster view shows three reachable members sharing the leaderships.
    let admin = c.staff_add(0, "ops@example.com", "admin");
    let (s, v) = c.until_served(long, || {
        c.post(1, "/v1/auth/login", None, None, &json!({"email": "ops@example.com", "password": PASSWORD}))
    });
    assert_eq!(s, 200, "staff login at n2: {v}");
    let admin_token = v["access_token"].as_str().unwrap().to_string();
    let _ = admin;
    let deadline = Instant::now() + Duration::from_secs(20);
    let view = loop {
        let (s, v) = c.get(2, "/v1/cluster", &admin_token);
        assert_eq!(s, 200, "{v}");
        let led: Vec<u64> = v["nodes"].as_array().unwrap().iter().map(|n| n["groups_led"].as_u64().unwrap()).collect();
        // 8 groups over 3 nodes: each leads 2 or 3 once leadership has moved to the placement.
        if led.iter().sum::<u64>() == 8 && led.iter().all(|&l| (2..=3).contains(&l)) {
            break v;
        }
        assert!(Instant::now() < deadline, "leaders did not spread: {v}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(view["nodes"].as_array().unwrap().len(), 3, "{view}");
    assert!(
        view["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|n| n["reachable"] == true && n["state"] == "active"),
        "{view}"
    );
    for g in view["groups"].as_array().unwrap() {
        assert_eq!(g["replicas"].as_array().unwrap().len(), 3, "{g}");
    }
    // The metadata group: one more raft group on the three nodes, with a leader, holding every
    // member's verification keys (each node published its own: three changes at least).
    let deadline = Instant::now() + long;
    loop {
        let (_, v) = c.get(1, "/v1/cluster", &admin_token);
        let m = &v["metadata"];
        assert_eq!(m["group"], 8, "the metadata group follows the shard groups: {m}");
        assert_eq!(m["replicas"].as_array().map(Vec::len), Some(3), "{m}");
        if m["leader"].is_string() && m["version"].as_u64().unwrap_or(0) >= 3 {
            break;
        }
        assert!(Instant::now() < deadline, "the members' keys did not reach the metadata group: {m}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let out = c.cli(0, &["cluster", "status", "--json"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let status: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["cluster_id"], view["cluster_id"], "the CLI and the route show one cluster");
    // The text form lists the metadata group too.
    let out = c.cli(0, &["cluster", "status"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.lines().any(|l| l.starts_with("meta ")), "{text}");

    phase("(a) trading sessions");
    // (a) Twenty users register at random nodes, log in at another, onboard, deposit and trade
    // at random nodes (four at a time); their answers are the ones a single node gives to the
    // same script, and every user's cash is what their answers imply.
    let bases: Vec<String> = c.members.iter().map(|m| m.base.clone()).collect();
    let on_cluster = trading_sessions(&bases, 20, 7);
    let solo_root = dir.path().join("solo");
    std::fs::create_dir_all(&solo_root).unwrap();
    let solo = Node::start_with(&solo_root, &[("MONETA_MARKET_TICK_INTERVAL", "200ms")]);
    let on_one_node = trading_sessions(std::slice::from_ref(&solo.base), 20, 7);
    drop(solo);
    for (u, (a, b)) in on_cluster.iter().zip(&on_one_node).enumerate() {
        assert_eq!(a, b, "user {u}: three nodes and one node answer alike");
    }
    assert!(
        on_cluster[0].iter().any(|l| l.starts_with("buy ") && l.ends_with(": 201 ")),
        "{:?}",
        on_cluster[0]
    );
    phase("prices");
    // Every node learns every price (the feed node shares each committed round), and orders
    // that came in at a node not leading the user's group went there as one step.
    let mut steps_forwarded = 0;
    for (i, m) in c.members.iter().enumerate() {
        let text = m.client.get(format!("{}/metrics", m.base)).send().unwrap().text().unwrap();
        let value = |prefix: &str| -> f64 {
            text.lines()
                .filter(|l| l.starts_with(prefix))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum()
        };
        assert!(value("moneta_fanout_prices_published") > 0.0, "node {i} learnt no prices");
        steps_forwarded += value("moneta_cluster_forwarded_total{kind=\"step\"}") as u64;
    }
    assert!(steps_forwarded > 0, "no order was forwarded as a step");

    // An instrument listed at one node is listed at every node: it quotes and trades at the
    // others (each node follows the replicated catalog), and the feed ticks it.
    let newco = json!({"symbol": "NEWCO", "name": "New Company plc", "kind": "equity", "risk_class": 4, "price": "10.00"});
    let (s, v) = c.post(0, "/v1/admin/instruments", Some(&admin_token), None, &newco);
    assert_eq!(s, 201, "{v}");
    // Read at once through the other gateways (not when their catalogs catch up): the 201
    // said it is listed.
    for i in [1, 2] {
        let m = &c.members[i];
        for path in ["/v1/instruments/NEWCO", "/v1/instruments/NEWCO/history"] {
            let r = m.client.get(format!("{}{path}", m.base)).send().unwrap();
            assert_eq!(
                r.status().as_u16(),
                200,
                "{path} at node {i} right after the listing: {}",
                r.text().unwrap_or_default()
            );
        }
    }
    let deadline = Instant::now() + long;
    // (A refusal is remembered under its idempotency key: each attempt uses a new one.)
    for attempt in 0.. {
        let (s, v) = c.post(
            2,
            "/v1/orders",
            Some(&token),
            Some(&format!("newco-{attempt}")),
            &json!({"symbol": "NEWCO", "side": "buy", "quantity": "1"}),
        );
        if s == 201 {
            assert_eq!(v["symbol"], "NEWCO", "{v}");
            break;
        }
        assert!(s == 404 || s == 503, "{s} {v}");
        assert!(Instant::now() < deadline, "NEWCO is not traded at n3: {s} {v}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let deadline = Instant::now() + long;
    loop {
        let m = &c.members[1];
        let r = m.client.get(format!("{}/v1/instruments/NEWCO", m.base)).send().unwrap();
        let price = r.json::<Value>().unwrap_or(Value::Null)["price"].clone();
        if price.is_string() && price != "10.00" && price != "10" {
            break;
        }
        assert!(Instant::now() < deadline, "NEWCO never moved as seen at n2: {price}");
        std::thread::sleep(Duration::from_millis(200));
    }

    // Per-group raft metrics: proposals, leadership changes, commit latency, apply lag.
    let metrics = c.members[0]
        .client
        .get(format!("{}/metrics", c.members[0].base))
        .send()
        .unwrap()
        .text()
        .unwrap();
    for name in [
        "moneta_raft_proposals_total{group=",
        "moneta_raft_leader_changes_total{group=",
        "moneta_raft_commit_seconds_bucket{",
        "moneta_raft_apply_lag{group=",
    ] {
        assert!(metrics.contains(name), "/metrics lacks {name}");
    }

    // Every replica of a group holds the same audit chain: equal heads at equal entry counts.
    let heads: Vec<Value> = (0..NODES)
        .map(|i| {
            let (s, v) = c.get(i, "/v1/admin/audit/verify", &admin_token);
            assert_eq!(s, 200, "{v}");
            assert_eq!(v["ok"], true, "node {i}: {v}");
            v
        })
        .collect();
    for g in heads[0]["groups"].as_array().unwrap() {
        for other in &heads[1..] {
            // (A replica with no record of a group yet leaves its empty chain out.)
            let Some(same) = other["groups"].as_array().unwrap().iter().find(|o| o["group"] == g["group"]) else {
                continue;
            };
            if same["entries"] == g["entries"] {
                assert_eq!(same["head_hash"], g["head_hash"], "group {}: replicas disagree", g["group"]);
            }
        }
    }

    phase("logout");
    // Logout at one node revokes the session at every node at once.
    let (s, v) = c.post(1, "/v1/auth/login", None, None, &json!({"email": email, "password": PASSWORD}));
    assert_eq!(s, 200, "{v}");
    let (short, refresh) = (
        v["access_token"].as_str().unwrap().to_string(),
        v["refresh_token"].as_str().unwrap().to_string(),
    );
    assert_eq!(c.get(2, "/v1/portfolio", &short).0, 200);
    let (s, v) = c.post(0, "/v1/auth/logout", Some(&short), None, &json!({"refresh_token": refresh}));
    assert!(s == 204 || s == 200, "logout at n1: {s} {v}");
    assert_eq!(c.get(2, "/v1/portfolio", &short).0, 401, "the session logged out at n1 still works at n3");

    // Failed logins at different nodes count together: the allowance (5 per window) is used up
    // by attempts spread over n1, n2 and n3; the sixth failure locks the account out at every
    // node (one node alone saw at most two of them).
    let wrong = json!({"email": email, "password": "not the right passphrase"});
    for attempt in 0..6 {
        let (s, v) = c.post(attempt % NODES, "/v1/auth/login", None, None, &wrong);
        let expected = if attempt < 5 { 401 } else { 429 };
        assert_eq!(s, expected, "failed login {attempt} at node {}: {v}", attempt % NODES);
    }
    for node in 0..NODES {
        let (s, v) = c.post(node, "/v1/auth/login", None, None, &json!({"email": email, "password": PASSWORD}));
        assert_eq!(s, 429, "node {node} lets a locked-out account try again: {v}");
        assert_eq!(v["code"], "too_many_attempts", "{v}");
    }

    phase("kill -9");
    // Under load from three clients of the portfolio, SIGKILL the node leading the most
    // groups; the other two elect leaders for its groups and serve everything again. The
    // clients' history must linearize.
    let (_, view) = c.get(1, "/v1/cluster", &admin_token);
    let busiest = view["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .max_by_key(|n| n["groups_led"].as_u64().unwrap())
        .map(|n| n["node_id"].as_str().unwrap().to_string())
        .unwrap();
    let victim = c.members.iter().position(|m| m.id == busiest).unwrap();
    let (o1, o2) = ((victim + 1) % NODES, (victim + 2) % NODES);
    let (_, p) = c.get(o1, "/v1/portfolio", &token);
    let initial = cents(p["cash"].as_str().unwrap());
    let history = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let bases: Vec<String> = c.members.iter().map(|m| m.base.clone()).collect();
    let clients: Vec<_> = (1..=3)
        .map(|id| client(bases.clone(), token.clone(), history.clone(), stop.clone(), id))
        .collect();
    std::thread::sleep(Duration::from_millis(800));
    c.kill9(victim);
    for t in clients {
        t.join().unwrap();
    }
    let events = history.lock().unwrap().clone();
    moneta::cluster::history::check(initial, &events).unwrap_or_else(|e| panic!("the clients' history around the kill: {e}\n{events:?}"));
    phase("kill -9: history checked");
    // The check can fail: a corrupted copy of the history's start (a prefix, so that the
    // search that proves no order fits stays small) is rejected, while the prefix itself passes.
    let prefix: Vec<Event> = events.iter().take(24).cloned().collect();
    moneta::cluster::history::check(initial, &prefix).unwrap_or_else(|e| panic!("a prefix of a linearizable history: {e}\n{prefix:?}"));
    let mut corrupted = prefix;
    if let Some(Event::Return { ret, .. }) = corrupted.iter_mut().rev().find(|e| matches!(e, Event::Return { ret: BankRet::Cash(_), .. })) {
        *ret = BankRet::Cash(-1);
        assert!(
            moneta::cluster::history::check(initial, &corrupted).is_err(),
            "a corrupted history must be rejected"
        );
    }
    let (_, p) = c.until_served(long, || c.get(o1, "/v1/portfolio", &token));
    let after_load = cents(p["cash"].as_str().unwrap());
    let expected_cash = |extra: i64| format!("{}.{:02}", (after_load + extra) / 100, (after_load + extra) % 100);
    let (s, v) = c.until_served(long, || {
        c.post(o2, "/v1/portfolio/deposits", Some(&token), Some("after-kill"), &json!({"amount": "50.00"}))
    });
    assert_eq!(s, 201, "a deposit after the kill: {v}");
    // A retry of an acknowledged request returns its first answer and moves nothing.
    let (key, first) = &acknowledged[0];
    let (s, again) = c.post(o1, "/v1/portfolio/deposits", Some(&token), Some(key), &json!({"amount": "100.00"}));
    assert_eq!(s, 201);
    assert_eq!(&again, first, "the retry answers as the first time");
    let (_, p) = c.get(o2, "/v1/portfolio", &token);
    assert_eq!(p["cash"], expected_cash(5000), "{p}");
    // Audit verification is ok on the survivors, with equal heads where their replicas hold
    // as many entries.
    let heads: Vec<Value> = [o1, o2]
        .iter()
        .map(|&i| {
            let (s, v) = c.until_served(long, || c.get(i, "/v1/admin/audit/verify", &admin_token));
            assert_eq!(s, 200, "{v}");
            assert_eq!(v["ok"], true, "node {i}: {v}");
            v
        })
        .collect();
    for g in heads[0]["groups"].as_array().unwrap() {
        let Some(same) = heads[1]["groups"].as_array().unwrap().iter().find(|o| o["group"] == g["group"]) else {
            continue;
        };
        if same["entries"] == g["entries"] {
            assert_eq!(same["head_hash"], g["head_hash"], "group {}: replicas disagree after the kill", g["group"]);
        }
    }

    phase("restart");
    // The killed node restarts from its own folder, catches up and serves: /readyz turns 200
    // once each of its replicas applied what its leader had committed, and its applied index
    // reaches what the others had committed.
    c.spawn(victim);
    c.wait_healthy(victim, Duration::from_secs(60));
    let deadline = Instant::now() + long;
    while c.members[victim]
        .client
        .get(format!("{}/readyz", c.members[victim].base))
        .send()
        .map_or(0, |r| r.status().as_u16())
        != 200
    {
        assert!(Instant::now() < deadline, "the restarted node never became ready:\n{}", c.logs(victim));
        std::thread::sleep(Duration::from_millis(100));
    }
    let (_, others) = c.get(o1, "/v1/cluster", &admin_token);
    let deadline = Instant::now() + long;
    loop {
        let (_, mine) = c.get(victim, "/v1/cluster", &admin_token);
        let behind: Vec<String> = others["groups"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|g| {
                let m = mine["groups"].as_array()?.iter().find(|x| x["group"] == g["group"])?;
                (m["applied_index"].as_u64()? < g["commit_index"].as_u64()?).then(|| format!("{} {} < {}", g["group"], m["applied_index"], g["commit_index"]))
            })
            .collect();
        if behind.is_empty() && mine["groups"].as_array().is_some_and(|g| g.len() == 8) {
            break;
        }
        assert!(Instant::now() < deadline, "the restarted node did not catch up: {behind:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let (s, p) = c.until_served(long, || c.get(victim, "/v1/portfolio", &token));
    assert_eq!(s, 200, "{p}");
    assert_eq!(
        p["cash"],
        expected_cash(5000),
        "the restarted node serves what was committed while it was down: {p}"
    );

    phase("partition");
    // A partition (test-only cut links, both ways) isolates the leader of the user's group:
    // the minority commits nothing and answers 503; the majority elects a leader and serves;
    // after healing nothing acknowledged is lost and no term ever had two leaders.
    let user_id = {
        let (_, me) = c.get(1, "/v1/me", &token);
        me["user_id"].as_str().or(me["id"].as_str()).map(str::to_string)
    };
    let mut seen = std::collections::BTreeMap::new();
    c.observe(&admin_token, &mut seen);
    let group = match &user_id {
        Some(uid) => u64::from(moneta::domain::ids::shard_of(uid)) % 8,
        None => 0,
    };
    // (Leadership may be moving back to the restarted node: wait for a leader, bounded.)
    let deadline = Instant::now() + long;
    let leader_id = loop {
        let (_, view) = c.get(1, "/v1/cluster", &admin_token);
        if let Some(l) = view["groups"][group as usize]["leader"].as_str() {
            break l.to_string();
        }
        assert!(Instant::now() < deadline, "group {group} has no leader: {view}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let isolated = c.members.iter().position(|m| m.id == leader_id).unwrap();
    let majority: Vec<usize> = (0..NODES).filter(|&i| i != isolated).collect();
    phase("bob's clients");
    // (d) for the partition too: a second investor's portfolio is used by three clients at
    // random nodes from before the cut until after the healing; their history must linearize.
    let bob = json!({"email": "bob@example.com", "password": PASSWORD, "full_name": "Robert Brown", "date_of_birth": "1980-06-01", "country": "GB"});
    let (s, v) = c.until_served(long, || c.post(majority[0], "/v1/auth/register", None, None, &bob));
    assert_eq!(s, 201, "{v}");
    let (s, v) = c.until_served(long, || {
        c.post(
            majority[1],
            "/v1/auth/login",
            None,
            None,
            &json!({"email": "bob@example.com", "password": PASSWORD}),
        )
    });
    assert_eq!(s, 200, "{v}");
    let bob_token = v["access_token"].as_str().unwrap().to_string();
    let (_, p) = c.until_served(long, || c.get(majority[0], "/v1/portfolio", &bob_token));
    let bob_initial = cents(p["cash"].as_str().unwrap());
    let bob_history = Arc::new(Mutex::new(Vec::new()));
    let bob_clients: Vec<_> = (11..=13)
        .map(|id| client(bases.clone(), bob_token.clone(), bob_history.clone(), stop.clone(), id))
        .collect();
    // A second session of the operator, seen live at the node about to be cut off.
    let (s, v) = c.until_served(long, || {
        c.post(
            majority[0],
            "/v1/auth/login",
            None,
            None,
            &json!({"email": "ops@example.com", "password": PASSWORD}),
        )
    });
    assert_eq!(s, 200, "{v}");
    let (second, second_refresh) = (
        v["access_token"].as_str().unwrap().to_string(),
        v["refresh_token"].as_str().unwrap().to_string(),
    );
    assert_eq!(c.until_served(long, || c.get(isolated, "/v1/cluster", &second)).0, 200);
    std::thread::sleep(Duration::from_millis(500));
    c.cut(isolated, &majority);
    for &m in &majority {
        c.cut(m, &[isolated]);
    }
    let (s, v) = c.post(
        isolated,
        "/v1/portfolio/deposits",
        Some(&token),
        Some("in-partition"),
        &json!({"amount": "7.00"}),
    );
    assert_eq!(s, 503, "the isolated leader must not acknowledge: {v}");
    // Cut off from a majority, the node says it cannot serve (API.md: /readyz 503 otherwise);
    // the majority's nodes stay ready.
    let readyz = |i: usize| {
        let m = &c.members[i];
        m.client.get(format!("{}/readyz", m.base)).send().map(|r| r.status().as_u16()).unwrap_or(0)
    };
    let deadline = Instant::now() + long;
    while readyz(isolated) != 503 {
        assert!(Instant::now() < deadline, "the isolated node still says it is ready");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(readyz(majority[0]), 200, "a node of the majority is not ready");
    c.observe(&admin_token, &mut seen);
    let (s, v) = c.until_served(long, || {
        c.post(
            majority[0],
            "/v1/portfolio/deposits",
            Some(&token),
            Some("in-partition"),
            &json!({"amount": "7.00"}),
        )
    });
    assert_eq!(s, 201, "the majority serves the retried deposit: {v}");
    // The second session is logged out on the majority side: the cut-off node misses the
    // revocation's broadcast.
    let (s, v) = c.until_served(long, || {
        c.post(majority[0], "/v1/auth/logout", Some(&second), None, &json!({"refresh_token": second_refresh}))
    });
    assert!(s == 204 || s == 200, "logout on the majority side: {s} {v}");
    c.observe(&admin_token, &mut seen);
    for i in 0..NODES {
        c.cut(i, &[]);
    }
    let deadline = Instant::now() + long;
    while readyz(isolated) != 200 {
        assert!(Instant::now() < deadline, "the healed node does not say it is ready again");
        std::thread::sleep(Duration::from_millis(100));
    }
    // Once healed, the node that missed it refuses the session within its recheck of the
    // account (found in review: it honoured the token until it expired).
    let deadline = Instant::now() + long;
    loop {
        let (s, _) = c.get(isolated, "/v1/cluster", &second);
        if s == 401 {
            break;
        }
        assert!(Instant::now() < deadline, "the node that missed the logout still serves the session: {s}");
        std::thread::sleep(Duration::from_millis(250));
    }
    let deadline = Instant::now() + long;
    loop {
        c.observe(&admin_token, &mut seen);
        let (s, p) = c.get(isolated, "/v1/portfolio", &token);
        if s == 200 && p["cash"] == expected_cash(5700) {
            break;
        }
        assert!(Instant::now() < deadline, "after healing the old leader reads {s} {p}");
        std::thread::sleep(Duration::from_millis(200));
    }
    for i in 0..NODES {
        // (A 503 while leadership moves back to its preferred node after healing is allowed.)
        let (_, p) = c.until_served(long, || c.get(i, "/v1/portfolio", &token));
        assert_eq!(p["cash"], expected_cash(5700), "node {i}: the deposit counted once: {p}");
    }
    for t in bob_clients {
        t.join().unwrap();
    }
    let events = bob_history.lock().unwrap().clone();
    assert!(events.len() > 10, "the clients did too little around the partition: {events:?}");
    moneta::cluster::history::check(bob_initial, &events).unwrap_or_else(|e| panic!("the clients' history around the partition: {e}\n{events:?}"));

    phase("performance");
    // Every gateway values bob's portfolio as his group holds it: each node is asked for his
    // performance (so each tracks him), then a deposit through one node shows at all of them.
    let performance_value = |i: usize| {
        let (s, v) = c.until_served(long, || c.get(i, "/v1/portfolio/performance?period=all", &bob_token));
        assert_eq!(s, 200, "{v}");
        let series = v["series"].as_array().unwrap().clone();
        cents(series.last().unwrap()["value"].as_str().unwrap())
    };
    for i in 0..NODES {
        performance_value(i);
    }
    let (s, v) = c.until_served(long, || {
        c.post(0, "/v1/portfolio/deposits", Some(&bob_token), Some("perf-1"), &json!({"amount": "12.34"}))
    });
    assert_eq!(s, 201, "{v}");
    let (s, p) = c.get(0, "/v1/portfolio", &bob_token);
    assert_eq!(s, 200, "{p}");
    let cash = cents(p["cash"].as_str().unwrap());
    for i in 0..NODES {
        assert_eq!(performance_value(i), cash, "node {i} values bob's portfolio as his group holds it");
    }

    phase("backup");
    // A backup of the running cluster, taken at one node (every group brought to its leader's
    // commit first), restores into a node of its own: a cluster of one serving the same data.
    let backup = dir.path().join("cluster.backup");
    let out = c.cli(1, &["backup", "create", "--out", backup.to_str().unwrap()]).output().unwrap();
    assert!(out.status.success(), "backup create: {}", String::from_utf8_lossy(&out.stderr));
    let restored_root = dir.path().join("restored");
    std::fs::create_dir_all(&restored_root).unwrap();
    std::fs::copy(c.members[1].root.join("backup.key"), restored_root.join("backup.key")).unwrap();
    let mut restore = Command::new(env!("CARGO_BIN_EXE_moneta"));
    restore.args(["backup", "restore", "--from", backup.to_str().unwrap()]);
    configure(&mut restore, &restored_root, free_port());
    let out = restore.output().unwrap();
    assert!(out.status.success(), "backup restore: {}", String::from_utf8_lossy(&out.stderr));
    {
        let restored = Node::start_with(&restored_root, &[("MONETA_CLUSTER_GROUPS", "8")]);
        let r = restored.get("/v1/portfolio", Some(&token));
        assert_eq!(r.status, 200, "{}", r.what());
        assert_eq!(r.json()["cash"], expected_cash(5700), "the restored node serves the cluster's data");
        let r = restored.get("/v1/orders", Some(&token));
        assert_eq!(r.status, 200, "{}", r.what());
    }

    phase("erasure");
    // Crypto-shredding reaches every copy: bob asks to be erased; once the erasure job ran
    // (grace period 0 here), his data key is in no replica's state and in no replica's raft
    // log (compacted past the entry that destroyed it) — read from every node's folder.
    let (_, me) = c.get(0, "/v1/me", &bob_token);
    let bob_id = me["user_id"].as_str().or(me["id"].as_str()).unwrap().to_string();
    let bob_group = u32::from(moneta::domain::ids::shard_of(&bob_id)) % 8;
    // A replica of bob's group is down through his erasure: it comes back to a log compacted
    // past the key's destruction, so a snapshot taken after the erasure ended brings it up to
    // date — and its erasure list must still name him (it did not, before the shard kept a
    // mark of each erasure carried out).
    let (_, view) = c.get(0, "/v1/cluster", &admin_token);
    let bob_leader = view["groups"][bob_group as usize]["leader"].as_str().unwrap_or_default().to_string();
    let away = (0..NODES).find(|&i| c.members[i].id != bob_leader).unwrap();
    let (via, other) = {
        let up: Vec<usize> = (0..NODES).filter(|&i| i != away).collect();
        (up[0], up[1])
    };
    c.stop(away);
    let m = &c.members[via];
    let r = m.client.delete(format!("{}/v1/me", m.base)).bearer_auth(&bob_token).send().unwrap();
    assert_eq!(r.status().as_u16(), 202, "{:?}", r.text());
    let deadline = Instant::now() + long;
    loop {
        let (s, _) = c.post(other, "/v1/auth/login", None, None, &json!({"email": "bob@example.com", "password": PASSWORD}));
        if s == 401 {
            break;
        }
        assert!(Instant::now() < deadline, "bob can still log in: {s}");
        std::thread::sleep(Duration::from_millis(200));
    }
    // Both running replicas listed him (the one whose job ran it, and the other as it applied
    // the key's destruction); the erasure's last step, which removes its schedule, follows.
    let deadline = Instant::now() + long;
    while !(0..NODES)
        .filter(|&i| i != away)
        .all(|i| std::fs::read_to_string(c.members[i].root.join("erasures.list")).is_ok_and(|l| l.contains(bob_id.as_str())))
    {
        assert!(Instant::now() < deadline, "the running replicas never listed bob's erasure");
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_secs(2));
    c.spawn(away);
    c.wait_healthy(away, Duration::from_secs(60));
    // Every replica applied the group's commit before the nodes stop.
    let deadline = Instant::now() + long;
    'applied: loop {
        let views: Vec<Value> = (0..NODES).map(|i| c.get(i, "/v1/cluster", &admin_token).1).collect();
        let of = |v: &Value, f: &str| v["groups"][bob_group as usize][f].as_u64().unwrap_or(0);
        let commit = views.iter().map(|v| of(v, "commit_index")).max().unwrap();
        if views.iter().all(|v| of(v, "applied_index") >= commit) {
            break 'applied;
        }
        assert!(Instant::now() < deadline, "replicas of group {bob_group} did not apply: {views:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let location = moneta::storage::keys::shard_record_key(
        moneta::storage::records::user_shard(&bob_id),
        moneta::storage::keys::ShardRecord::DataKey,
        &bob_id,
    );
    // The erasure refuses logins before its last step destroys the data key: a replica may
    // stop before that step was proposed. Then the nodes run again (the erasure job carries
    // on) and are stopped again — bounded.
    for attempt in 0..4 {
        for i in 0..NODES {
            c.stop(i);
        }
        let kept = c.members.iter().any(|m| {
            let store = moneta::storage::Store::open(&m.root.join("data")).unwrap();
            let kept = store.tree().get(&location).unwrap().is_some();
            drop(store);
            kept
        });
        if !kept || attempt == 3 {
            break;
        }
        for i in 0..NODES {
            c.spawn(i);
        }
        for i in 0..NODES {
            c.wait_healthy(i, Duration::from_secs(60));
        }
        std::thread::sleep(Duration::from_secs(3));
    }
    let mut metas = Vec::new();
    for m in &c.members {
        let store = moneta::storage::Store::open(&m.root.join("data")).unwrap();
        assert!(store.tree().get(&location).unwrap().is_none(), "{}: the data key is still in the state", m.id);
        // Every replica of bob's group listed the erasure beside its own folder, not only the
        // node whose job ran it: a restore of any node's backup must not bring him back.
        let list = std::fs::read_to_string(m.root.join("erasures.list")).unwrap_or_default();
        assert!(
            list.lines().any(|l| l.split_whitespace().next() == Some(bob_id.as_str())),
            "{}: bob's erasure is not on this node's erasure list: {list:?}",
            m.id
        );
        // Every replica of the metadata group applied the same membership and keys.
        let meta = store.meta_state().unwrap().expect("every node holds a replica of the metadata group");
        assert_eq!(meta.members.len(), 3);
        assert!(
            meta.members.values().all(|r| !r.keys.is_empty()),
            "{}: a member's keys are missing: {meta:?}",
            m.id
        );
        metas.push(meta);
        // Each group's leader closed the day for its group at start and recorded it in the
        // group (so every replica knows, and the next leader carries on from it).
        let closed: std::collections::BTreeSet<String> = store
            .audit_records()
            .unwrap()
            .into_iter()
            .filter(|r| r.action == "eod.closed")
            .filter_map(|r| r.details.get("group").cloned())
            .collect();
        assert_eq!(closed.len(), 8, "{}: every group's close is on its chain: {closed:?}", m.id);
        for g in 0..8 {
            assert!(
                store.group_job(g, "eod/last_close").unwrap().is_some(),
                "{}: group {g} has no record of its close",
                m.id
            );
        }
        let groups = store.raft_groups().unwrap();
        let log = &groups[&bob_group];
        for e in &log.entries {
            if e.data.is_empty() {
                continue;
            }
            let Ok(sets) = moneta::storage::codec::decode::<Vec<moneta::storage::store::WriteSet>>(&e.data) else {
                continue;
            };
            for set in sets {
                assert!(
                    !set.puts.iter().any(|(k, _)| *k == location),
                    "{}: entry {} of group {bob_group}'s raft log still holds the destroyed data key",
                    m.id,
                    e.index
                );
            }
        }
    }
    assert!(
        metas.windows(2).all(|w| w[0].members == w[1].members && w[0].placement == w[1].placement),
        "the metadata replicas differ: {metas:?}"
    );
    // The offline tools on a stopped member's folder refuse at once, naming why (end of day
    // waited for ever for a majority a single folder does not have).
    for args in [&["eod", "run"][..], &["reconcile"][..]] {
        let started = Instant::now();
        let out = c.cli(0, args).env("MONETA_CLUSTER_GROUPS", "8").output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(stderr.contains("belongs to a cluster of 3 nodes"), "{args:?}: {stderr}");
        assert!(started.elapsed() < Duration::from_secs(10), "{args:?} took {:?}", started.elapsed());
    }

    phase("cold restart");
    // The whole cluster starts again at once, with a short request timeout: no group has a
    // leader until a majority is back, and start-up waits for one rather than giving up (it
    // gave up after three request timeouts, found by acceptance testing with a 5 s timeout).
    // Two nodes starting together dial each other at once; both handshakes may fail, and the
    // swarm then forgot the peer's address: the two never reached each other again, and
    // groups led by one of them had no leader the other could learn of (one run in five).
    c.extra_env = vec![("MONETA_GATEWAY_REQUEST_TIMEOUT", "200ms"), ("MONETA_LOG_LEVEL", "info")];
    // (At info level: a failed start prints each member's last lines, say what the links did.)
    for i in 0..NODES {
        c.spawn(i);
    }
    for i in 0..NODES {
        c.wait_healthy(i, Duration::from_secs(90));
    }
    for i in 0..NODES {
        let (s, p) = c.until_served(long, || c.get(i, "/v1/portfolio", &token));
        assert_eq!(
            (s, p["cash"].as_str()),
            (200, Some(expected_cash(5700).as_str())),
            "node {i} after the cold restart: {p}"
        );
    }
}
