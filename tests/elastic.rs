//! Elastic membership with real `moneta serve` processes on loopback (issue 12), one cluster
//! shared by the phases, under a steady client load that records every answer:
//! (d) one node (first a cluster of one with the embedded default, then restarted with the
//!     cluster secret) grows to three: every group gets three replicas;
//! (a) a fourth and a fifth node join: replicas and leaders balance within one of the mean;
//! (b) one of the five is decommissioned: it ends with no replicas and exits 0;
//! (c) a node is killed with SIGKILL in the middle of moves (the source of a decommission,
//!     then the target of a join): the moves complete once it is back.
//! Every acknowledged deposit is present exactly once and the client history is linearizable.

mod common;
use common::*;
use moneta::cluster::history::{BankOp, BankRet, Event};
use rand::{Rng, SeedableRng};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

struct Member {
    child: Option<Child>,
    id: String,
    api: u16,
    peer: u16,
    base: String,
    root: PathBuf,
    join: Vec<u16>,
    /// Started with the cluster secret (without it, and with no one to join: a cluster of one
    /// that does not listen for peers — the embedded default).
    secret: bool,
}

impl Drop for Member {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

struct Elastic {
    members: Vec<Member>,
    root: PathBuf,
    secret: PathBuf,
    secrets_dir: PathBuf,
    http: Client,
}

impl Elastic {
    fn new(root: &Path) -> Elastic {
        let secret = root.join("cluster.secret");
        let out = Command::new(env!("CARGO_BIN_EXE_moneta"))
            .args(["cluster", "new-secret", "--out"])
            .arg(&secret)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        Elastic {
            members: Vec::new(),
            root: root.to_path_buf(),
            secret,
            secrets_dir: root.join("cluster-secrets"),
            http: Client::builder().timeout(Duration::from_secs(30)).build().unwrap(),
        }
    }

    /// A new node `n<k>` that joins through the members at `via` (none: it starts a cluster
    /// of one that others can join).
    fn add(&mut self, via: &[usize]) -> usize {
        let k = self.members.len() + 1;
        let root = self.root.join(format!("n{k}"));
        std::fs::create_dir_all(&root).unwrap();
        let api = free_port();
        self.members.push(Member {
            child: None,
            id: format!("n{k}"),
            api,
            peer: free_port(),
            base: format!("http://127.0.0.1:{api}"),
            root,
            join: via.iter().map(|&i| self.members[i].peer).collect(),
            secret: !via.is_empty(),
        });
        let i = self.members.len() - 1;
        self.spawn(i);
        self.wait_healthy(i, Duration::from_secs(90));
        i
    }

    fn spawn(&mut self, i: usize) {
        let m = &mut self.members[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(m.root.join(format!("{}.log", m.id)))
            .unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_moneta"));
        cmd.arg("serve").stdin(Stdio::null()).stdout(log.try_clone().unwrap()).stderr(log);
        configure(&mut cmd, &m.root, m.api);
        let join: Vec<String> = m.join.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        cmd.env("MONETA_NODE_ID", &m.id)
            .env("MONETA_LOG_LEVEL", "info")
            .env("MONETA_CLUSTER_LISTEN", format!("127.0.0.1:{}", m.peer))
            .env("MONETA_CLUSTER_JOIN", join.join(","))
            .env("MONETA_CLUSTER_SECRET_FILE", if m.secret { self.secret.as_os_str() } else { "".as_ref() })
            .env("MONETA_CLUSTER_GROUPS", "8")
            .env("MONETA_SECURITY_SECRETS_DIR", &self.secrets_dir)
            .env("MONETA_MARKET_TICK_INTERVAL", "200ms")
            .env("MONETA_GATEWAY_REQUEST_TIMEOUT", "4s")
            // Long enough for the kills and restarts of (c), short enough for (e).
            .env("MONETA_CLUSTER_DEAD_AFTER", "15s");
        m.child = Some(cmd.spawn().unwrap());
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
            if self
                .http
                .get(format!("{}/healthz", self.members[i].base))
                .send()
                .is_ok_and(|r| r.status().is_success())
            {
                return;
            }
            assert!(Instant::now() < deadline, "{} not healthy in {within:?}:\n{}", self.members[i].id, self.logs(i));
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops node `i` with SIGTERM (bounded).
    fn stop(&mut self, i: usize) {
        if let Some(c) = self.members[i].child.as_ref() {
            let _ = Command::new("kill").arg("-TERM").arg(c.id().to_string()).status();
        }
        let status = self.wait_exit(i, Duration::from_secs(30));
        assert!(status.success(), "{} did not stop cleanly: {status}", self.members[i].id);
    }

    fn kill9(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Waits (bounded) for node `i` to exit by itself; its exit status.
    fn wait_exit(&mut self, i: usize, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        let c = self.members[i].child.as_mut().unwrap();
        loop {
            if let Some(status) = c.try_wait().unwrap() {
                self.members[i].child = None;
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not exit in {within:?}:\n{}",
                self.members[i].id,
                self.logs(i)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn post(&self, i: usize, path: &str, token: Option<&str>, key: Option<&str>, body: &Value) -> (u16, Value) {
        let mut rb = self.http.post(format!("{}{path}", self.members[i].base)).json(body);
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
        match self.http.get(format!("{}{path}", self.members[i].base)).bearer_auth(token).send() {
            Ok(r) => (r.status().as_u16(), r.json().unwrap_or(Value::Null)),
            Err(_) => (0, Value::Null),
        }
    }

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

    fn staff_admin(&self, i: usize) -> String {
        self.staff(i, "ops@example.com", "admin")
    }

    /// A staff account made at running node `i` (`moneta staff add`), signed in there.
    fn staff(&self, i: usize, email: &str, role: &str) -> String {
        use std::io::Write;
        let m = &self.members[i];
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_moneta"));
        cmd.args(["staff", "add", "--email", email, "--role", role]);
        configure(&mut cmd, &m.root, m.api);
        cmd.env("MONETA_NODE_ID", &m.id).env("MONETA_SECURITY_SECRETS_DIR", &self.secrets_dir);
        let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        writeln!(child.stdin.take().unwrap(), "{PASSWORD}").unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "staff add: {}", String::from_utf8_lossy(&out.stderr));
        let (s, v) = self.until_served(Duration::from_secs(30), || {
            self.post(i, "/v1/auth/login", None, None, &json!({"email": email, "password": PASSWORD}))
        });
        assert_eq!(s, 200, "{v}");
        v["access_token"].as_str().unwrap().to_string()
    }

    /// Waits until the cluster seen from node `at` is settled on exactly `nodes`: no move in
    /// flight, every group with min(3, n) replicas on those nodes, replicas and leaders per
    /// node within one of each other, the metadata group on min(5, n), every node active.
    /// `dead`: members that are down for good and must hold nothing.
    fn wait_settled(&self, at: usize, token: &str, nodes: &[usize], dead: &[usize], within: Duration) -> Value {
        let names: Vec<String> = nodes.iter().map(|&i| self.members[i].id.clone()).collect();
        let dead: Vec<String> = dead.iter().map(|&i| self.members[i].id.clone()).collect();
        let deadline = Instant::now() + within;
        let mut last = String::new();
        loop {
            let (s, v) = self.get(at, "/v1/cluster", token);
            if s == 200 {
                match settled(&v, &names, &dead) {
                    Ok(()) => return v,
                    Err(e) => last = format!("{e}\n{v}"),
                }
            }
            assert!(Instant::now() < deadline, "not settled on {names:?} in {within:?}: {last}");
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

fn settled(v: &Value, names: &[String], dead: &[String]) -> Result<(), String> {
    let n = names.len();
    if !v["moves"].as_array().is_some_and(|m| m.is_empty()) {
        return Err(format!("moves in flight: {}", v["moves"]));
    }
    let mut replicas: std::collections::BTreeMap<&str, usize> = names.iter().map(|x| (x.as_str(), 0)).collect();
    let mut leads = replicas.clone();
    for g in v["groups"].as_array().unwrap() {
        let r: Vec<&str> = g["replicas"].as_array().unwrap().iter().map(|x| x.as_str().unwrap()).collect();
        if r.len() != n.min(3) {
            return Err(format!("group {} has replicas {r:?}", g["group"]));
        }
        for x in &r {
            *replicas.get_mut(x).ok_or(format!("a replica on {x}"))? += 1;
        }
        let leader = g["leader"].as_str().ok_or(format!("group {} has no leader", g["group"]))?;
        *leads.get_mut(leader).ok_or(format!("a leader on {leader}"))? += 1;
    }
    let spread = |m: &std::collections::BTreeMap<&str, usize>| m.values().max().unwrap() - m.values().min().unwrap();
    if spread(&replicas) > 1 || spread(&leads) > 1 {
        return Err(format!("not balanced: replicas {replicas:?}, leaders {leads:?}"));
    }
    let meta = v["metadata"]["replicas"].as_array().map_or(0, Vec::len);
    if meta != n.min(5) {
        return Err(format!("the metadata group has {meta} replicas"));
    }
    let nodes = v["nodes"].as_array().unwrap();
    // A decommissioned node stays listed as `removed` (holding nothing).
    for x in nodes.iter().filter(|x| x["state"] == "removed") {
        if x["replicas"] != 0 || x["groups_led"] != 0 || names.iter().any(|m| x["node_id"] == m.as_str()) {
            return Err(format!("a removed node still counts: {x}"));
        }
    }
    let live: Vec<&Value> = nodes
        .iter()
        .filter(|x| x["state"] != "removed" && !dead.iter().any(|d| x["node_id"] == d.as_str()))
        .collect();
    if live.len() != n || !live.iter().all(|x| x["state"] == "active" && names.iter().any(|m| x["node_id"] == m.as_str())) {
        return Err(format!("members {nodes:?}"));
    }
    Ok(())
}

fn cents(s: &str) -> i64 {
    let (whole, frac) = s.split_once('.').unwrap_or((s, "0"));
    whole.parse::<i64>().unwrap() * 100 + format!("{frac:0<2}")[..2].parse::<i64>().unwrap()
}

/// What the load saw: every call (for the linearizability check), acknowledged deposits,
/// 503s and the slowest acknowledged call.
#[derive(Default)]
struct Load {
    history: Mutex<Vec<Event>>,
    deposited: AtomicU64,
    unavailable: AtomicU64,
    worst_ms: AtomicU64,
    calls: AtomicU64,
}

/// A client of one portfolio: deposits and reads of cash at random live nodes, each retried
/// under its idempotency key while the cluster answers 503 or a node is down.
fn client(bases: Arc<Mutex<Vec<String>>>, token: String, load: Arc<Load>, stop: Arc<AtomicBool>, id: u64) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let http = Client::builder().timeout(Duration::from_secs(6)).build().unwrap();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(id);
        let mut thread = id * 100_000;
        for n in 0..100_000u64 {
            if stop.load(Ordering::SeqCst) {
                break;
            }
            let deposit = rng.random_range(0..3) < 2;
            let op = if deposit { BankOp::Deposit(100) } else { BankOp::ReadCash };
            let key = format!("e{id}-{n}");
            load.history.lock().unwrap().push(Event::Invoke { thread, op });
            let started = Instant::now();
            let deadline = started + Duration::from_secs(30);
            let ret = loop {
                let base = {
                    let b = bases.lock().unwrap();
                    b[rng.random_range(0..b.len())].clone()
                };
                let r = if deposit {
                    http.post(format!("{base}/v1/portfolio/deposits"))
                        .bearer_auth(&token)
                        .header("Idempotency-Key", &key)
                        .json(&json!({"amount": "1.00"}))
                        .send()
                } else {
                    http.get(format!("{base}/v1/portfolio")).bearer_auth(&token).send()
                };
                match r.map(|r| (r.status().as_u16(), r.json::<Value>().unwrap_or(Value::Null))) {
                    Ok((201, v)) if deposit => break Some(BankRet::Cash(cents(v["cash"].as_str().unwrap()))),
                    Ok((200, v)) if !deposit => break Some(BankRet::Cash(cents(v["cash"].as_str().unwrap()))),
                    Ok((503, _)) => {
                        load.unavailable.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(_) => {}
                    Ok((s, v)) => panic!("client {id}: {op:?} answered {s} {v}"),
                }
                if Instant::now() >= deadline {
                    break None;
                }
                std::thread::sleep(Duration::from_millis(100));
            };
            match ret {
                Some(ret) => {
                    load.worst_ms.fetch_max(started.elapsed().as_millis() as u64, Ordering::Relaxed);
                    load.calls.fetch_add(1, Ordering::Relaxed);
                    if deposit {
                        load.deposited.fetch_add(100, Ordering::Relaxed);
                    }
                    load.history.lock().unwrap().push(Event::Return { thread, ret });
                }
                None => thread += 1,
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    })
}

#[test]
fn nodes_join_and_leave_a_running_cluster_under_load_and_nothing_is_lost() {
    // ELASTIC_KEEP=1 keeps the nodes' folders and logs (for a failure's post-mortem).
    let keep = std::env::var("ELASTIC_KEEP").is_ok();
    let dir = tempfile::Builder::new().prefix("elastic").disable_cleanup(keep).tempdir().unwrap();
    if keep {
        eprintln!("[elastic test] keeping {}", dir.path().display());
    }
    let started = Instant::now();
    let phase = |name: &str| eprintln!("[elastic test] {:>6.1}s {name}", started.elapsed().as_secs_f64());
    let mut c = Elastic::new(dir.path());
    let long = Duration::from_secs(30);

    // (d) One node, then two more join it: every group gets three replicas.
    let n1 = c.add(&[]);
    let admin = c.staff_admin(n1);
    let body = json!({"email": "grace@example.com", "password": PASSWORD, "full_name": "Grace Hopper", "date_of_birth": "1990-04-01", "country": "GB"});
    let (s, v) = c.until_served(long, || c.post(n1, "/v1/auth/register", None, None, &body));
    assert_eq!(s, 201, "{v}");
    let (s, v) = c.post(n1, "/v1/auth/login", None, None, &json!({"email": "grace@example.com", "password": PASSWORD}));
    assert_eq!(s, 200, "{v}");
    let token = v["access_token"].as_str().unwrap().to_string();
    let (s, v) = c.post(
        n1,
        "/v1/me/kyc",
        Some(&token),
        None,
        &json!({"document_type": "passport", "document_number": "123456789", "address": "1 High Street, London"}),
    );
    assert_eq!(s, 200, "{v}");
    let (s, v) = c.post(n1, "/v1/me/suitability", Some(&token), None, &json!({"answers": adventurous()}));
    assert_eq!(s, 200, "{v}");
    let (s, v) = c.post(n1, "/v1/portfolio/deposits", Some(&token), Some("seed"), &json!({"amount": "100.00"}));
    assert_eq!(s, 201, "{v}");
    let initial = 10_000;
    phase("one node serving");
    // The node ran as a cluster of one (no peer listener); restarted with the cluster secret
    // it listens for peers, and others can join it.
    c.stop(n1);
    c.members[n1].secret = true;
    c.spawn(n1);
    c.wait_healthy(n1, Duration::from_secs(60));
    let (s, v) = c.until_served(long, || c.get(n1, "/v1/portfolio", &token));
    assert_eq!((s, v["cash"].as_str()), (200, Some("100.00")), "{v}");
    let n2 = c.add(&[n1]);
    let n3 = c.add(&[n1]);
    c.wait_settled(n1, &admin, &[n1, n2, n3], &[], Duration::from_secs(120));
    phase("(d) grown to three");
    let (s, v) = c.until_served(long, || c.get(n3, "/v1/portfolio", &token));
    assert_eq!((s, v["cash"].as_str()), (200, Some("100.00")), "{v}");
    // Three nodes and a replication factor of three: none may leave.
    let (s, v) = c.post(
        n1,
        &format!("/v1/cluster/nodes/{}/decommission", c.members[n2].id),
        Some(&admin),
        None,
        &json!({}),
    );
    assert_eq!((s, v["code"].as_str()), (409, Some("cluster_too_small")), "{v}");
    let (s, v) = c.post(n1, "/v1/cluster/nodes/nobody/decommission", Some(&admin), None, &json!({}));
    assert_eq!(s, 404, "{v}");

    // Steady load from here on.
    let bases = Arc::new(Mutex::new(vec![
        c.members[n1].base.clone(),
        c.members[n2].base.clone(),
        c.members[n3].base.clone(),
    ]));
    let load = Arc::new(Load::default());
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..2).map(|k| client(bases.clone(), token.clone(), load.clone(), stop.clone(), k)).collect();

    // (a) A fourth and a fifth node join under load: balanced.
    let before = (load.unavailable.load(Ordering::Relaxed), load.worst_ms.load(Ordering::Relaxed));
    let t = Instant::now();
    let n4 = c.add(&[n1, n2, n3]);
    let n5 = c.add(&[n1, n2, n3]);
    bases.lock().unwrap().extend([c.members[n4].base.clone(), c.members[n5].base.clone()]);
    c.wait_settled(n4, &admin, &[n1, n2, n3, n4, n5], &[], Duration::from_secs(180));
    phase("(a) five nodes balanced");
    // Five nodes, three replicas a group: each node lacks some groups. Every member still
    // opens a user's personal data (a node without a replica of the user's group reads the
    // data key from the group's leader), and registers users whichever group they fall in
    // (their data key is created at that group's leader).
    let mut member_tokens = Vec::new();
    for i in [n1, n2, n3, n4, n5] {
        let (s, v) = c.until_served(long, || c.get(i, "/v1/me", &token));
        assert_eq!((s, v["full_name"].as_str()), (200, Some("Grace Hopper")), "GET /v1/me at node {i}: {v}");
        for k in 0..3 {
            let email = format!("member{i}-{k}@example.com");
            let body = json!({"email": email, "password": PASSWORD, "full_name": "Ada Lovelace", "date_of_birth": "1990-04-01", "country": "GB"});
            let (s, v) = c.until_served(long, || c.post(i, "/v1/auth/register", None, None, &body));
            assert_eq!(s, 201, "registering at node {i}: {v}");
            let (s, v) = c.post(i, "/v1/auth/login", None, None, &json!({"email": email, "password": PASSWORD}));
            assert_eq!(s, 200, "{v}");
            let theirs = v["access_token"].as_str().unwrap().to_string();
            member_tokens.push(theirs.clone());
            let next = [n1, n2, n3, n4, n5][(i + k + 1) % 5];
            let (s, v) = c.until_served(long, || c.get(next, "/v1/me", &theirs));
            assert_eq!((s, v["full_name"].as_str()), (200, Some("Ada Lovelace")), "GET /v1/me at node {next}: {v}");
        }
    }
    phase("(a) personal data served by every member");
    // An instrument listed at run time reaches every member: each lists it and takes orders
    // for it, though its catalog record is in one group, on three of the five nodes (the
    // others learn it from the prices the feed's node shares).
    let listing = json!({"symbol": "ELAST", "name": "Elastic Holdings", "kind": "equity", "risk_class": 3, "price": "5.00"});
    let (s, v) = c.until_served(long, || c.post(n4, "/v1/admin/instruments", Some(&admin), None, &listing));
    assert!(s == 201 || s == 200, "{s} {v}");
    let buyer = &member_tokens[1];
    let mut elast_orders = Vec::new();
    let onboard = [
        (
            "/v1/me/kyc",
            None,
            json!({"document_type": "passport", "document_number": "123456789", "address": "1 High Street, London"}),
        ),
        ("/v1/me/suitability", None, json!({"answers": adventurous()})),
        ("/v1/portfolio/deposits", Some("elast-cash"), json!({"amount": "100.00"})),
    ];
    for (path, key, body) in onboard {
        let (s, v) = c.until_served(long, || c.post(n2, path, Some(buyer), key, &body));
        // (A retry of the KYC after a lost answer finds it done: 409.)
        assert!(s == 200 || s == 201 || (s == 409 && path == "/v1/me/kyc"), "{path}: {s} {v}");
    }
    for i in [n1, n2, n3, n4, n5] {
        let deadline = Instant::now() + long;
        loop {
            let (s, v) = c.get(i, "/v1/instruments", buyer);
            if s == 200 && v.as_array().is_some_and(|a| a.iter().any(|x| x["symbol"] == "ELAST")) {
                break;
            }
            assert!(Instant::now() < deadline, "node {i} never listed ELAST: {s} {v}");
            std::thread::sleep(Duration::from_millis(200));
        }
        let order = json!({"symbol": "ELAST", "side": "buy", "quantity": "1"});
        let (s, v) = c.until_served(long, || c.post(i, "/v1/orders", Some(buyer), Some(&format!("elast-{i}")), &order));
        assert_eq!(s, 201, "an order for ELAST at node {i}: {v}");
        elast_orders.push((
            v["order_id"].as_str().unwrap().to_string(),
            v["executed_at"].as_str().unwrap()[..10].to_string(),
        ));
    }
    phase("(a) an instrument listed at run time is listed and traded at every member");
    // A compliance officer at any member sees the whole cluster's trail, though each node holds
    // three of the five nodes' groups: the same daily report (the ELAST trades, whichever group
    // their buyer is in), the same KYC review list and screening hits.
    let compliance = c.staff(n5, "compliance@example.com", "compliance");
    let reviewed = &member_tokens[2];
    let (_, me) = c.until_served(long, || c.get(n1, "/v1/me", reviewed));
    let reviewed_id = me["user_id"].as_str().unwrap().to_string();
    let kyc = json!({"document_type": "passport", "document_number": "REVIEW42", "address": "2 High Street, London"});
    let (s, v) = c.until_served(long, || c.post(n3, "/v1/me/kyc", Some(reviewed), None, &kyc));
    assert!(s == 200 && v["kyc_status"] == "review", "{s} {v}");
    let days: std::collections::BTreeSet<&String> = elast_orders.iter().map(|(_, d)| d).collect();
    let mut hits_seen = Vec::new();
    for i in [n1, n2, n3, n4, n5] {
        let mut traded = std::collections::BTreeSet::new();
        for day in &days {
            let (s, v) = c.until_served(long, || c.get(i, &format!("/v1/compliance/reports/daily?date={day}"), &compliance));
            assert_eq!(s, 200, "the daily report at node {i}: {v}");
            traded.extend(
                v["trades"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|t| t["symbol"] == "ELAST")
                    .map(|t| t["order_id"].as_str().unwrap().to_string()),
            );
        }
        let placed: std::collections::BTreeSet<String> = elast_orders.iter().map(|(o, _)| o.clone()).collect();
        assert_eq!(traded, placed, "the daily report at node {i} holds every ELAST trade of the cluster");
        let (s, v) = c.until_served(long, || c.get(i, "/v1/compliance/kyc-reviews", &compliance));
        assert_eq!(s, 200, "{v}");
        assert!(
            v.as_array().unwrap().iter().any(|x| x["user_id"] == reviewed_id.as_str()),
            "the KYC review list at node {i} names the person waiting: {v}"
        );
        let (s, v) = c.until_served(long, || c.get(i, "/v1/compliance/screening-hits?limit=1000", &compliance));
        assert_eq!(s, 200, "{v}");
        hits_seen.push(v);
    }
    assert!(
        hits_seen.windows(2).all(|w| w[0] == w[1]),
        "the screening hits differ between members: {hits_seen:?}"
    );
    // The person's documents are decided at a member, whichever group they are in.
    let decision = json!({"decision": "approve", "note": "documents checked by hand"});
    let (s, v) = c.until_served(long, || {
        c.post(n4, &format!("/v1/compliance/kyc-reviews/{reviewed_id}"), Some(&compliance), None, &decision)
    });
    assert!(s == 200 && v["kyc_status"] == "verified", "{s} {v}");
    phase("(a) the compliance officer's lists and report whole at every member");
    // A GDPR export is whole at every member, including those without a replica of the
    // person's groups: the same audit records everywhere (the exports' own records aside).
    let theirs = &member_tokens[0];
    let mut trails = Vec::new();
    for i in [n1, n2, n3, n4, n5] {
        let (s, v) = c.until_served(long, || c.get(i, "/v1/me/export?format=json", theirs));
        assert_eq!(s, 200, "export at node {i}: {v}");
        let trail: Vec<(String, String, String)> = v["audit_records"]
            .as_array()
            .expect("audit records")
            .iter()
            .filter(|r| r["action"] != "gdpr.export")
            .map(|r| (r["action"].to_string(), r["subject"].to_string(), r["request_id"].to_string()))
            .collect();
        let actions: Vec<&str> = trail.iter().map(|t| t.0.as_str()).collect();
        assert!(
            actions.contains(&"\"account.register\"") && actions.contains(&"\"security.login\""),
            "export at node {i}: {actions:?}"
        );
        trails.push(trail);
    }
    assert!(trails.windows(2).all(|w| w[0] == w[1]), "the exports differ between members: {trails:?}");
    phase("(a) a GDPR export whole at every member");
    eprintln!(
        "[elastic test] balanced in {:.1}s; 503s during the moves: {}; slowest acknowledged call so far: {} ms (before: {} 503s, {} ms)",
        t.elapsed().as_secs_f64(),
        load.unavailable.load(Ordering::Relaxed),
        load.worst_ms.load(Ordering::Relaxed),
        before.0,
        before.1
    );

    // (b) Decommission n2 under load: it ends with no replicas and exits 0.
    bases.lock().unwrap().retain(|b| *b != c.members[n2].base);
    let (s, v) = c.post(
        n1,
        &format!("/v1/cluster/nodes/{}/decommission", c.members[n2].id),
        Some(&admin),
        None,
        &json!({}),
    );
    assert_eq!(s, 202, "{v}");
    let status = c.wait_exit(n2, Duration::from_secs(180));
    assert!(status.success(), "a decommissioned node exits 0: {status}\n{}", c.logs(n2));
    assert!(c.logs(n2).contains("removed from the cluster"), "it says so in its log");
    let v = c.wait_settled(n1, &admin, &[n1, n3, n4, n5], &[], Duration::from_secs(120));
    // The operator sees the node they decommissioned as removed, not gone without a trace.
    let listed = v["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["node_id"] == c.members[n2].id.as_str())
        .cloned();
    assert!(
        listed
            .as_ref()
            .is_some_and(|x| x["state"] == "removed" && x["replicas"] == 0 && x["groups_led"] == 0),
        "n2 is listed as removed: {v}"
    );
    phase("(b) n2 decommissioned");

    // A removed node does not come back with its old data; on a wiped folder it joins as new.
    c.spawn(n2);
    let status = c.wait_exit(n2, Duration::from_secs(60));
    assert!(!status.success(), "a removed node refuses to start on its old folder:\n{}", c.logs(n2));
    assert!(c.logs(n2).contains("not a member"), "{}", c.logs(n2));
    std::fs::remove_dir_all(c.members[n2].root.join("data")).unwrap();
    c.spawn(n2);
    c.wait_healthy(n2, Duration::from_secs(90));
    c.wait_settled(n1, &admin, &[n1, n2, n3, n4, n5], &[], Duration::from_secs(120));
    bases.lock().unwrap().push(c.members[n2].base.clone());
    phase("(b) n2 back as a new node");

    // (c) SIGKILL in the middle of moves: the source (a node being decommissioned), then the
    // target (a node joining); each comes back and the moves complete.
    bases.lock().unwrap().retain(|b| *b != c.members[n3].base);
    let out = {
        let m = &c.members[n1];
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_moneta"));
        cmd.args(["cluster", "decommission", &c.members[n3].id]);
        configure(&mut cmd, &m.root, m.api);
        cmd.output().unwrap()
    };
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    wait_for_moves(&c, n1, &admin, long);
    c.kill9(n3);
    phase("(c) source killed mid-move");
    std::thread::sleep(Duration::from_secs(2));
    c.spawn(n3);
    // Back, it finishes draining and exits 0 — or, when the others finished moving its
    // replicas while it was down, it learns at start that it was removed and stops.
    let status = c.wait_exit(n3, Duration::from_secs(180));
    assert!(
        status.success() || c.logs(n3).contains("was removed from the cluster"),
        "the source finishes its decommission after its restart: {status}\n{}",
        c.logs(n3)
    );
    c.wait_settled(n1, &admin, &[n1, n2, n4, n5], &[], Duration::from_secs(120));
    let n6 = c.add(&[n1, n4]);
    wait_for_moves(&c, n1, &admin, long);
    c.kill9(n6);
    phase("(c) target killed mid-move");
    std::thread::sleep(Duration::from_secs(2));
    c.spawn(n6);
    c.wait_healthy(n6, Duration::from_secs(60));
    c.wait_settled(n1, &admin, &[n1, n2, n4, n5, n6], &[], Duration::from_secs(180));
    phase("(c) settled after both kills");

    // (e) A node that stays dead past dead_after is replaced: its replicas are rebuilt on the
    // others, so a second failure later loses nothing.
    c.kill9(n6);
    c.wait_settled(n1, &admin, &[n1, n2, n4, n5], &[n6], Duration::from_secs(180));
    phase("(e) the dead node's replicas rebuilt elsewhere");
    bases.lock().unwrap().retain(|b| *b != c.members[n5].base);
    c.kill9(n5);
    let (s, v) = c.until_served(Duration::from_secs(60), || c.get(n4, "/v1/portfolio", &token));
    assert_eq!(s, 200, "served after a second failure: {v}");
    phase("(e) a second failure later: still served");
    // The killed node's folder holds replicas of some groups only: a backup of it would leave
    // everyone else out without a word, so it is refused.
    let out = {
        let m = &c.members[n5];
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_moneta"));
        configure(&mut cmd, &m.root, m.api);
        cmd.env("MONETA_NODE_ID", &m.id)
            .env("MONETA_CLUSTER_GROUPS", "8")
            .env("MONETA_SECURITY_SECRETS_DIR", &c.secrets_dir)
            .args(["backup", "create", "--out"])
            .arg(m.root.join("part.backup"));
        cmd.output().unwrap()
    };
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("holds replicas of") && stderr.contains("of the cluster's 8 shard groups"),
        "{stderr}"
    );
    assert!(!c.members[n5].root.join("part.backup").exists(), "no partial backup is left");

    stop.store(true, Ordering::SeqCst);
    for h in clients {
        h.join().unwrap();
    }
    let events = load.history.lock().unwrap().clone();
    // The checker's search recurses once per event: a long history needs a deep stack.
    let checked = std::thread::Builder::new()
        .stack_size(1 << 30)
        .spawn(move || moneta::cluster::history::check(initial, &events))
        .unwrap()
        .join()
        .unwrap();
    checked.unwrap_or_else(|e| panic!("the clients' history across joins and leaves: {e}"));
    // Every acknowledged deposit exactly once: the cash is what the answers add up to, at
    // every node (deposits whose outcome stayed unknown are not in `deposited`: at most they
    // add, and the history check above admits them only if they linearize).
    let deposited = load.deposited.load(Ordering::Relaxed) as i64;
    for i in [n1, n2, n4] {
        let (s, v) = c.until_served(long, || c.get(i, "/v1/portfolio", &token));
        assert_eq!(s, 200, "{v}");
        assert!(cents(v["cash"].as_str().unwrap()) >= initial + deposited, "node {i}: {v}");
        let (s, tx) = c.until_served(long, || c.get(i, "/v1/portfolio/transactions", &token));
        assert_eq!(s, 200, "{tx}");
    }
    let (_, v) = c.get(n1, "/v1/portfolio", &token);
    eprintln!(
        "[elastic test] {} calls acknowledged, {} 503s in all, slowest acknowledged call {} ms; cash {}",
        load.calls.load(Ordering::Relaxed),
        load.unavailable.load(Ordering::Relaxed),
        load.worst_ms.load(Ordering::Relaxed),
        v["cash"]
    );
    for i in [n1, n2, n4] {
        let (s, v) = c.get(i, "/v1/admin/audit/verify", &admin);
        assert_eq!((s, v["ok"].as_bool()), (200, Some(true)), "audit at node {i}: {v}");
    }
    phase("done");
}

/// Waits (bounded) until the cluster seen from `at` has a move in flight.
fn wait_for_moves(c: &Elastic, at: usize, token: &str, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let (_, v) = c.get(at, "/v1/cluster", token);
        if v["moves"].as_array().is_some_and(|m| !m.is_empty()) {
            return;
        }
        assert!(Instant::now() < deadline, "no move started: {v}");
        std::thread::sleep(Duration::from_millis(100));
    }
}
