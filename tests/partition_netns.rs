//! A real network partition (issue 11 c): three `moneta serve` processes, each in its own
//! network namespace joined to a bridge by a veth pair; the leader of a user's group is cut off
//! from the other two by blackhole routes on both sides (its gateway stays reachable from the
//! test). The minority commits nothing and answers 503; the majority elects a leader and
//! serves; after healing nothing acknowledged is lost, a retried request counts once, and no
//! (group, term) was ever seen with two leaders. A client at random nodes records its history
//! throughout, which must linearize.
//!
//! Needs root and `ip` (iproute2). Where network namespaces cannot be made, the test says so
//! and stops; `tests/cluster.rs` covers the same with a test-only peer deny-list.

mod common;
use common::*;
use moneta::cluster::history::{BankOp, BankRet, Event};
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

const NODES: usize = 3;
const GROUPS: u64 = 4;

fn ip(args: &[&str]) -> bool {
    Command::new("ip")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn ip_must(args: &[&str]) {
    let out = Command::new("ip").args(args).output().unwrap();
    assert!(out.status.success(), "ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
}

/// The namespaces, veth pairs and bridge of one run; removed when dropped (also on a panic).
struct Net {
    tag: String,
    subnet: String,
}

impl Net {
    fn ns(&self, i: usize) -> String {
        format!("mn{}-{i}", self.tag)
    }

    fn addr(&self, i: usize) -> String {
        format!("{}.{}", self.subnet, 10 + i)
    }

    /// Makes the namespaces, veth pairs and bridge (None where this machine cannot: no root,
    /// no iproute2, no network namespaces — whatever was made is removed again).
    fn make() -> Option<Net> {
        let id = Command::new("id").arg("-u").output().ok()?;
        if String::from_utf8_lossy(&id.stdout).trim() != "0" {
            return None;
        }
        let pid = std::process::id() % 100_000;
        let net = Net {
            tag: pid.to_string(),
            subnet: format!("10.231.{}", pid % 250),
        };
        let bridge = format!("mb{}", net.tag);
        let ok = ip(&["link", "add", &bridge, "type", "bridge"])
            && ip(&["addr", "add", &format!("{}.1/24", net.subnet), "dev", &bridge])
            && ip(&["link", "set", &bridge, "up"])
            && (0..NODES).all(|i| {
                let ns = net.ns(i);
                let (host, inner) = (format!("mv{}{i}a", net.tag), format!("mv{}{i}b", net.tag));
                ip(&["netns", "add", &ns])
                    && ip(&["link", "add", &host, "type", "veth", "peer", "name", &inner])
                    && ip(&["link", "set", &host, "master", &bridge])
                    && ip(&["link", "set", &host, "up"])
                    && ip(&["link", "set", &inner, "netns", &ns])
                    && ip(&["-n", &ns, "addr", "add", &format!("{}/24", net.addr(i)), "dev", &inner])
                    && ip(&["-n", &ns, "link", "set", &inner, "up"])
                    && ip(&["-n", &ns, "link", "set", "lo", "up"])
            });
        // (Dropping `net` removes whatever was made.)
        ok.then_some(net)
    }

    /// Cuts (or heals) the links between node `i` and the others, both ways.
    fn cut(&self, i: usize, cut: bool) {
        let verb = if cut { "add" } else { "del" };
        for j in (0..NODES).filter(|&j| j != i) {
            ip_must(&["-n", &self.ns(i), "route", verb, "blackhole", &format!("{}/32", self.addr(j))]);
            ip_must(&["-n", &self.ns(j), "route", verb, "blackhole", &format!("{}/32", self.addr(i))]);
        }
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for i in 0..NODES {
            ip(&["netns", "del", &self.ns(i)]);
            ip(&["link", "del", &format!("mv{}{i}a", self.tag)]);
        }
        ip(&["link", "del", &format!("mb{}", self.tag)]);
    }
}

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn cents(s: &str) -> i64 {
    let (whole, frac) = s.split_once('.').unwrap_or((s, "0"));
    whole.parse::<i64>().unwrap() * 100 + format!("{frac:0<2}")[..2].parse::<i64>().unwrap()
}

#[test]
fn a_real_partition_isolating_a_leader_loses_nothing_and_never_has_two_leaders() {
    let Some(net) = Net::make() else {
        eprintln!("skipped: network namespaces need root and iproute2 here (tests/cluster.rs covers partitions with a peer deny-list)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let secret = root.join("cluster.secret");
    let out = Command::new(env!("CARGO_BIN_EXE_moneta"))
        .args(["cluster", "new-secret", "--out"])
        .arg(&secret)
        .output()
        .unwrap();
    assert!(out.status.success());
    // The cluster's shared secrets, made once.
    let secrets_dir = root.join("cluster-secrets");
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let env = vec![
            ("MONETA_NODE_DATA_DIR".to_string(), root.join("scratch").display().to_string()),
            ("MONETA_SECURITY_SECRETS_DIR".to_string(), secrets_dir.display().to_string()),
            ("MONETA_GDPR_ERASURE_LIST".to_string(), root.join("scratch.erasures").display().to_string()),
        ];
        let config = moneta::config::Config::load_with_env(None, &env).unwrap();
        drop(moneta::node::open_state(&config).await.unwrap());
    });
    let mut procs = Vec::new();
    let bases: Vec<String> = (0..NODES).map(|i| format!("http://{}:8080", net.addr(i))).collect();
    for i in 0..NODES {
        let r = root.join(format!("n{}", i + 1));
        std::fs::create_dir_all(&r).unwrap();
        let log = File::create(r.join("node.log")).unwrap();
        let join: Vec<String> = (0..NODES).filter(|&j| j != i).map(|j| format!("{}:7070", net.addr(j))).collect();
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &net.ns(i), env!("CARGO_BIN_EXE_moneta"), "serve"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        configure(&mut cmd, &r, 8080);
        cmd.env("MONETA_GATEWAY_LISTEN", format!("{}:8080", net.addr(i)))
            .env("MONETA_NODE_ID", format!("n{}", i + 1))
            .env("MONETA_CLUSTER_LISTEN", format!("{}:7070", net.addr(i)))
            .env("MONETA_CLUSTER_JOIN", join.join(","))
            .env("MONETA_CLUSTER_BOOTSTRAP_EXPECT", NODES.to_string())
            .env("MONETA_CLUSTER_SECRET_FILE", &secret)
            .env("MONETA_CLUSTER_GROUPS", GROUPS.to_string())
            .env("MONETA_SECURITY_SECRETS_DIR", &secrets_dir)
            .env("MONETA_GATEWAY_REQUEST_TIMEOUT", "4s");
        procs.push(Proc(cmd.spawn().unwrap()));
    }
    let logs = |i: usize| std::fs::read_to_string(root.join(format!("n{}", i + 1)).join("node.log")).unwrap_or_default();
    let http = Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
    for (i, base) in bases.iter().enumerate() {
        let deadline = Instant::now() + Duration::from_secs(90);
        while !http.get(format!("{base}/healthz")).send().is_ok_and(|r| r.status().is_success()) {
            assert!(Instant::now() < deadline, "n{} not healthy:\n{}", i + 1, logs(i));
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    let post = |i: usize, path: &str, token: Option<&str>, key: Option<&str>, body: &Value| -> (u16, Value) {
        let mut rb = http.post(format!("{}{path}", bases[i])).json(body);
        if let Some(t) = token {
            rb = rb.bearer_auth(t);
        }
        if let Some(k) = key {
            rb = rb.header("Idempotency-Key", k);
        }
        rb.send().map_or((0, Value::Null), |r| (r.status().as_u16(), r.json().unwrap_or(Value::Null)))
    };
    let get = |i: usize, path: &str, token: &str| -> (u16, Value) {
        http.get(format!("{}{path}", bases[i]))
            .bearer_auth(token)
            .send()
            .map_or((0, Value::Null), |r| (r.status().as_u16(), r.json().unwrap_or(Value::Null)))
    };
    let until_served = |within: Duration, f: &dyn Fn() -> (u16, Value)| -> (u16, Value) {
        let deadline = Instant::now() + within;
        loop {
            let (s, v) = f();
            if s != 503 && s != 0 {
                return (s, v);
            }
            assert!(Instant::now() < deadline, "still unavailable after {within:?}: {v}");
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    let long = Duration::from_secs(30);

    // An investor with cash, and an admin to read the cluster view.
    let body = json!({"email": "ada@example.com", "password": PASSWORD, "full_name": "Ada Lovelace", "date_of_birth": "1990-04-01", "country": "GB"});
    let (s, v) = until_served(long, &|| post(0, "/v1/auth/register", None, None, &body));
    assert_eq!(s, 201, "{v}");
    let (s, v) = until_served(long, &|| {
        post(1, "/v1/auth/login", None, None, &json!({"email": "ada@example.com", "password": PASSWORD}))
    });
    assert_eq!(s, 200, "{v}");
    let token = v["access_token"].as_str().unwrap().to_string();
    let (s, v) = until_served(long, &|| {
        post(2, "/v1/portfolio/deposits", Some(&token), Some("first"), &json!({"amount": "100.00"}))
    });
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["cash"], "100.00", "{v}");
    // The recording client's own investor (its history holds every change of its cash).
    let bob = json!({"email": "bob@example.com", "password": PASSWORD, "full_name": "Robert Brown", "date_of_birth": "1980-06-01", "country": "GB"});
    let (s, v) = until_served(long, &|| post(1, "/v1/auth/register", None, None, &bob));
    assert_eq!(s, 201, "{v}");
    let (s, v) = until_served(long, &|| {
        post(2, "/v1/auth/login", None, None, &json!({"email": "bob@example.com", "password": PASSWORD}))
    });
    assert_eq!(s, 200, "{v}");
    let bob_token = v["access_token"].as_str().unwrap().to_string();
    let (_, p) = until_served(long, &|| get(0, "/v1/portfolio", &bob_token));
    let initial = cents(p["cash"].as_str().unwrap());
    {
        use std::io::Write;
        let r = root.join("n1");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_moneta"));
        cmd.args(["staff", "add", "--email", "ops@example.com", "--role", "admin"]);
        configure(&mut cmd, &r, 8080);
        cmd.env("MONETA_NODE_ID", "n1").env("MONETA_SECURITY_SECRETS_DIR", &secrets_dir);
        let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        writeln!(child.stdin.take().unwrap(), "{PASSWORD}").unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let (s, v) = until_served(long, &|| {
        post(0, "/v1/auth/login", None, None, &json!({"email": "ops@example.com", "password": PASSWORD}))
    });
    assert_eq!(s, 200, "{v}");
    let admin = v["access_token"].as_str().unwrap().to_string();
    let mut seen: BTreeMap<(u64, u64), String> = BTreeMap::new();
    let observe = |seen: &mut BTreeMap<(u64, u64), String>| {
        for i in 0..NODES {
            let (s, v) = get(i, "/v1/cluster", &admin);
            if s != 200 {
                continue;
            }
            for g in v["groups"].as_array().unwrap() {
                let (Some(leader), Some(term)) = (g["leader"].as_str(), g["term"].as_u64()) else {
                    continue;
                };
                if let Some(prev) = seen.insert((g["group"].as_u64().unwrap(), term), leader.to_string()) {
                    assert_eq!(prev, leader, "group {} had two leaders in term {term}", g["group"]);
                }
            }
        }
    };
    observe(&mut seen);
    let (_, me) = get(0, "/v1/me", &token);
    let user_id = me["user_id"].as_str().or(me["id"].as_str()).expect("/v1/me names the user").to_string();
    let group = u64::from(moneta::domain::ids::shard_of(&user_id)) % GROUPS;
    let deadline = Instant::now() + long;
    let leader = loop {
        let (_, view) = get(0, "/v1/cluster", &admin);
        if let Some(l) = view["groups"][group as usize]["leader"].as_str() {
            break l.trim_start_matches('n').parse::<usize>().unwrap() - 1;
        }
        assert!(Instant::now() < deadline, "group {group} has no leader: {view}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let majority: Vec<usize> = (0..NODES).filter(|&i| i != leader).collect();

    // A client at random nodes throughout (deposits and reads, retried under their keys).
    let history = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let worker = {
        let (bases, token, history, stop) = (bases.clone(), bob_token.clone(), history.clone(), stop.clone());
        std::thread::spawn(move || {
            let http = Client::builder().timeout(Duration::from_secs(6)).build().unwrap();
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
            let mut thread = 0u64;
            for n in 0..400 {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let deposit = rng.random_range(0..2) == 0;
                history.lock().unwrap().push(Event::Invoke {
                    thread,
                    op: if deposit { BankOp::Deposit(100) } else { BankOp::ReadCash },
                });
                let deadline = Instant::now() + Duration::from_secs(25);
                let ret = loop {
                    let base = &bases[rng.random_range(0..bases.len())];
                    let r = if deposit {
                        http.post(format!("{base}/v1/portfolio/deposits"))
                            .bearer_auth(&token)
                            .header("Idempotency-Key", format!("w{n}"))
                            .json(&json!({"amount": "1.00"}))
                            .send()
                    } else {
                        http.get(format!("{base}/v1/portfolio")).bearer_auth(&token).send()
                    };
                    match r.map(|r| (r.status().as_u16(), r.json::<Value>().unwrap_or(Value::Null))) {
                        Ok((201 | 200, v)) => break Some(BankRet::Cash(cents(v["cash"].as_str().unwrap()))),
                        Ok((503, _)) | Err(_) => {}
                        Ok((s, v)) => panic!("the client was answered {s} {v}"),
                    }
                    if Instant::now() >= deadline {
                        break None;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                };
                match ret {
                    Some(ret) => history.lock().unwrap().push(Event::Return { thread, ret }),
                    None => thread += 1,
                }
                std::thread::sleep(Duration::from_millis(30));
            }
        })
    };
    std::thread::sleep(Duration::from_millis(500));

    // The cut: the leader of the user's group alone on one side.
    net.cut(leader, true);
    let (s, v) = post(leader, "/v1/portfolio/deposits", Some(&token), Some("in-partition"), &json!({"amount": "7.00"}));
    assert_eq!(s, 503, "the isolated leader must not acknowledge: {v}");
    assert_eq!(v["code"], "unavailable", "{v}");
    observe(&mut seen);
    let (s, v) = until_served(long, &|| {
        post(
            majority[0],
            "/v1/portfolio/deposits",
            Some(&token),
            Some("in-partition"),
            &json!({"amount": "7.00"}),
        )
    });
    assert_eq!(s, 201, "the majority serves the retried deposit: {v}");
    observe(&mut seen);
    std::thread::sleep(Duration::from_secs(2));
    net.cut(leader, false);
    stop.store(true, Ordering::SeqCst);
    worker.join().unwrap();

    // Healed: every node reads the same cash, the retried deposit counted once.
    let (_, p) = until_served(long, &|| get(majority[0], "/v1/portfolio", &token));
    let expected = p["cash"].clone();
    let deadline = Instant::now() + long;
    for i in 0..NODES {
        loop {
            observe(&mut seen);
            let (s, p) = get(i, "/v1/portfolio", &token);
            if s == 200 && p["cash"] == expected {
                break;
            }
            assert!(Instant::now() < deadline, "after healing n{} reads {s} {p} (expected {expected})", i + 1);
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    let (s, tx) = until_served(long, &|| get(leader, "/v1/portfolio/transactions", &token));
    assert_eq!(s, 200, "{tx}");
    let sevens = tx.to_string().matches("\"7.00\"").count();
    assert_eq!(sevens, 1, "the deposit retried across the partition is in the books once: {tx}");
    let events = history.lock().unwrap().clone();
    assert!(events.len() > 10, "the client did too little: {events:?}");
    let checked = std::thread::Builder::new()
        .stack_size(1 << 28)
        .spawn(move || moneta::cluster::history::check(initial, &events))
        .unwrap()
        .join()
        .unwrap();
    checked.unwrap_or_else(|e| panic!("the client's history around the partition: {e}"));
    drop(procs);
    drop(net);
}
