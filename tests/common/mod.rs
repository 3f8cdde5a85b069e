//! The harness every black-box test shares: start the real `moneta serve` binary on a free
//! port with its own data folder, talk HTTP to it, and collect findings.
#![allow(dead_code, unused_imports)]

pub use aws_lc_rs::signature::{Ed25519KeyPair, UnparsedPublicKey, ED25519};
pub use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
pub use base64::Engine as _;
pub use reqwest::blocking::{Body, Client, RequestBuilder};
pub use reqwest::header::HeaderMap;
pub use reqwest::Method;
pub use rust_decimal::Decimal;
pub use serde_json::{json, Value};
pub use std::fs::File;
pub use std::net::TcpListener;
pub use std::path::{Path, PathBuf};
pub use std::process::{Child, Command, ExitStatus, Output, Stdio};
pub use std::str::FromStr;
pub use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub const PASSWORD: &str = "correct-horse-battery-staple-42";
pub const MAX_DECIMAL: &str = "79228162514264337593543950335";

// ---------------------------------------------------------------------------------------------
// The node under test
// ---------------------------------------------------------------------------------------------

/// Questionnaire answers that give risk score 7 with complex products allowed.
pub fn adventurous() -> Value {
    json!({
        "objective": "speculation", "horizon_years": 20, "loss_tolerance": "large", "investment_experience_years": 10,
        "knows_complex_products": true, "annual_income": "120000.00", "liquid_net_worth": "500000.00", "emergency_fund_months": 12
    })
}

mod ports;
pub use ports::free_port;

/// The environment every `moneta` invocation of one test shares.
pub fn configure(cmd: &mut Command, root: &Path, port: u16) {
    cmd.env("MONETA_NODE_DATA_DIR", root.join("data"))
        // Files that live outside the data folder stay inside the test's own directory.
        .env("MONETA_GDPR_ERASURE_LIST", root.join("erasures.list"))
        .env("MONETA_BACKUP_KEY_FILE", root.join("backup.key"))
        .env("MONETA_GATEWAY_LISTEN", format!("127.0.0.1:{port}"))
        .env("MONETA_LOG_LEVEL", "warn");
}

/// A running `moneta serve`; killed when dropped.
pub struct Node {
    pub child: Child,
    pub pid: u32,
    pub port: u16,
    pub base: String,
    pub root: PathBuf,
    pub log: PathBuf,
    pub client: Client,
}

impl Node {
    /// Starts a node whose data lives under `root` and waits until `/healthz` answers.
    pub fn start(root: &Path) -> Node {
        Node::start_with(root, &[])
    }

    /// Starts a node with extra `MONETA_*` settings. A port another process took between
    /// picking and binding it is given up for a new one (bounded).
    pub fn start_with(root: &Path, settings: &[(&str, &str)]) -> Node {
        // A node id of this data folder's own (stable across restarts): /healthz then proves
        // the answer comes from this node, not from another test's node that took the port.
        let node_id = settings
            .iter()
            .find(|(k, _)| *k == "MONETA_NODE_ID")
            .map(|(_, v)| v.to_string())
            .unwrap_or_else(|| {
                use std::hash::{Hash, Hasher};
                let mut h = std::collections::hash_map::DefaultHasher::new();
                root.hash(&mut h);
                format!("node-{:016x}", h.finish())
            });
        let mut why = String::new();
        for _ in 0..5 {
            match Node::launch(root, settings, &node_id) {
                Ok(node) => return node,
                Err(e) => why = e,
            }
        }
        panic!("the node did not start: {why}");
    }

    fn launch(root: &Path, settings: &[(&str, &str)], node_id: &str) -> Result<Node, String> {
        let port = free_port();
        let log = root.join(format!("node-{port}.log"));
        let out = File::create(&log).expect("create the node's log file");
        let err = out.try_clone().expect("clone the log file handle");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_moneta"));
        cmd.arg("serve").stdin(Stdio::null()).stdout(out).stderr(err);
        configure(&mut cmd, root, port);
        cmd.env("MONETA_NODE_ID", node_id);
        cmd.envs(settings.iter().copied());
        let child = cmd.spawn().expect("start `moneta serve`");
        let client = Client::builder().timeout(Duration::from_secs(20)).build().expect("an HTTP client");
        let mut node = Node {
            pid: child.id(),
            child,
            port,
            base: format!("http://127.0.0.1:{port}"),
            root: root.to_path_buf(),
            log,
            client,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        let probe = Client::builder().timeout(Duration::from_millis(500)).build().expect("an HTTP client");
        loop {
            if let Some(status) = node.child.try_wait().expect("poll the child") {
                let logs = node.logs();
                if logs.contains("in use") || logs.contains("bind") {
                    return Err(format!("port {port} was taken: {logs}"));
                }
                panic!("the node exited during start-up with {status}; its output:\n{logs}");
            }
            if let Ok(r) = probe.get(format!("{}/healthz", node.base)).send() {
                if r.status().as_u16() == 200 {
                    let said = r.json::<Value>().unwrap_or(Value::Null)["node_id"].clone();
                    if said == node_id {
                        return Ok(node);
                    }
                    // Another test's node answers on this port; ours cannot bind it.
                    return Err(format!("port {port} answers as {said}"));
                }
            }
            assert!(
                Instant::now() < deadline,
                "GET /healthz did not answer 200 within 20 s; node output:\n{}",
                node.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn wait_until_healthy(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        let probe = Client::builder().timeout(Duration::from_millis(500)).build().expect("an HTTP client");
        loop {
            if let Some(status) = self.child.try_wait().expect("poll the child") {
                panic!("the node exited during start-up with {status}; its output:\n{}", self.logs());
            }
            if let Ok(r) = probe.get(format!("{}/healthz", self.base)).send() {
                if r.status().as_u16() == 200 {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "GET /healthz did not answer 200 within 20 s; node output:\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sends SIGTERM and waits up to `within` for the process to exit.
    pub fn terminate(&mut self, within: Duration) -> Option<ExitStatus> {
        let status = Command::new("kill").args(["-TERM", &self.pid.to_string()]).status().expect("run kill");
        assert!(status.success(), "kill -TERM {} failed", self.pid);
        let deadline = Instant::now() + within;
        loop {
            if let Some(s) = self.child.try_wait().expect("poll the child") {
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Runs another `moneta` command with this node's environment.
    pub fn cli(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_moneta"));
        cmd.args(args).stdin(Stdio::null());
        configure(&mut cmd, &self.root, self.port);
        cmd
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn call(&self, method: &str, path: &str, rb: RequestBuilder) -> Resp {
        match rb.send() {
            Ok(r) => {
                let status = r.status().as_u16();
                let headers = r.headers().clone();
                let body = r.text().unwrap_or_else(|e| format!("<unreadable body: {e}>"));
                Resp {
                    label: format!("{method} {path}"),
                    status,
                    headers,
                    body,
                }
            }
            Err(e) => Resp {
                label: format!("{method} {path}"),
                status: 0,
                headers: HeaderMap::new(),
                body: format!("<transport error: {e}>"),
            },
        }
    }

    pub fn builder(&self, method: &str, path: &str, token: Option<&str>, key: Option<&str>) -> RequestBuilder {
        let m = Method::from_bytes(method.as_bytes()).expect("an HTTP method");
        let mut rb = self.client.request(m, self.url(path));
        if let Some(t) = token {
            rb = rb.header("Authorization", format!("Bearer {t}"));
        }
        if let Some(k) = key {
            rb = rb.header("Idempotency-Key", k);
        }
        rb
    }

    pub fn get(&self, path: &str, token: Option<&str>) -> Resp {
        self.call("GET", path, self.builder("GET", path, token, None))
    }

    pub fn request(&self, method: &str, path: &str) -> Resp {
        self.call(method, path, self.builder(method, path, None, None))
    }

    pub fn post(&self, path: &str, token: Option<&str>, key: Option<&str>, body: &Value) -> Resp {
        self.post_raw(path, token, key, serde_json::to_vec(body).expect("serialise a body"))
    }

    pub fn post_raw(&self, path: &str, token: Option<&str>, key: Option<&str>, body: Vec<u8>) -> Resp {
        let rb = self.builder("POST", path, token, key).header("Content-Type", "application/json").body(body);
        self.call("POST", path, rb)
    }

    /// POST with a body of unknown length (sent with chunked transfer encoding).
    pub fn post_chunked(&self, path: &str, token: Option<&str>, key: Option<&str>, body: Vec<u8>) -> Resp {
        let rb = self
            .builder("POST", path, token, key)
            .header("Content-Type", "application/json")
            .body(Body::new(std::io::Cursor::new(body)));
        self.call("POST", path, rb)
    }

    pub fn get_with_auth_header(&self, path: &str, authorization: &str) -> Resp {
        self.call("GET", path, self.builder("GET", path, None, None).header("Authorization", authorization))
    }

    pub fn register(&self, email: &str, password: &str) -> Resp {
        self.post(
            "/v1/auth/register",
            None,
            None,
            &json!({"email": email, "password": password, "full_name": "Ada Lovelace", "date_of_birth": "1990-04-01", "country": "GB"}),
        )
    }

    pub fn login(&self, email: &str, password: &str) -> Resp {
        self.post("/v1/auth/login", None, None, &json!({"email": email, "password": password}))
    }

    /// Registers and logs in a fresh user.
    pub fn new_user(&self, tag: &str) -> User {
        let email = format!("{tag}@example.com");
        let r = self.register(&email, PASSWORD);
        assert_eq!(r.status, 201, "register {email}: {}", r.what());
        let id = r.json()["user_id"]
            .as_str()
            .unwrap_or_else(|| panic!("register: no user_id: {}", r.what()))
            .to_string();
        let r = self.login(&email, PASSWORD);
        assert_eq!(r.status, 200, "login {email}: {}", r.what());
        let token = r.json()["access_token"]
            .as_str()
            .unwrap_or_else(|| panic!("login: no access_token: {}", r.what()))
            .to_string();
        // Onboarding: identity verified (sandbox), screened clear, questionnaire answered with a
        // profile that may hold every demo instrument.
        let r = self.post(
            "/v1/me/kyc",
            Some(&token),
            None,
            &json!({"document_type": "passport", "document_number": "123456789", "address": "1 High Street, London"}),
        );
        assert_eq!(r.status, 200, "kyc {email}: {}", r.what());
        let r = self.post("/v1/me/suitability", Some(&token), None, &json!({"answers": adventurous()}));
        assert_eq!(r.status, 200, "suitability {email}: {}", r.what());
        User { id, email, token }
    }

    pub fn deposit(&self, user: &User, key: &str, amount: &str) -> Resp {
        self.post("/v1/portfolio/deposits", Some(&user.token), Some(key), &json!({ "amount": amount }))
    }

    pub fn withdraw(&self, user: &User, key: &str, amount: &str) -> Resp {
        self.post("/v1/portfolio/withdrawals", Some(&user.token), Some(key), &json!({ "amount": amount }))
    }

    pub fn order(&self, user: &User, key: &str, symbol: &str, side: &str, quantity: &str) -> Resp {
        self.post(
            "/v1/orders",
            Some(&user.token),
            Some(key),
            &json!({"symbol": symbol, "side": side, "quantity": quantity}),
        )
    }

    pub fn portfolio(&self, user: &User) -> Value {
        let r = self.get("/v1/portfolio", Some(&user.token));
        assert_eq!(r.status, 200, "{}", r.what());
        r.json()
    }

    /// What a rejected request must not change: cash, holdings, transactions and orders.
    pub fn snapshot(&self, user: &User) -> Snapshot {
        let p = self.portfolio(user);
        let mut holdings: Vec<(String, String, String)> = p["holdings"]
            .as_array()
            .expect("holdings is an array")
            .iter()
            .map(|h| (h["symbol"].to_string(), h["quantity"].to_string(), h["average_cost"].to_string()))
            .collect();
        holdings.sort();
        let tx = self.get("/v1/portfolio/transactions", Some(&user.token));
        let orders = self.get("/v1/orders", Some(&user.token));
        Snapshot {
            cash: p["cash"].to_string(),
            holdings,
            transactions: tx.body,
            orders: orders.body,
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

pub struct User {
    pub id: String,
    pub email: String,
    pub token: String,
}

#[derive(Debug, PartialEq)]
pub struct Snapshot {
    pub cash: String,
    pub holdings: Vec<(String, String, String)>,
    pub transactions: String,
    pub orders: String,
}

// ---------------------------------------------------------------------------------------------
// Responses and checks
// ---------------------------------------------------------------------------------------------

pub struct Resp {
    pub label: String,
    pub status: u16,
    pub headers: HeaderMap,
    pub body: String,
}

impl Resp {
    pub fn what(&self) -> String {
        let body: String = self.body.chars().take(400).collect();
        format!("{} -> {} {body}", self.label, self.status)
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers.get(name).map(|v| v.to_str().unwrap_or("<non-ASCII>").to_string())
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.what()))
    }

    /// Asserts a problem+json answer with one of `statuses` and (when `codes` is not empty) one of `codes`.
    pub fn problem(&self, statuses: &[u16], codes: &[&str]) -> Result<Value, String> {
        let mut errs = Vec::new();
        if !statuses.contains(&self.status) {
            errs.push(format!("status {} (expected one of {statuses:?})", self.status));
        }
        let ct = self.header("content-type").unwrap_or_default();
        if !ct.starts_with("application/problem+json") {
            errs.push(format!("Content-Type {ct:?} (expected application/problem+json)"));
        }
        match serde_json::from_str::<Value>(&self.body) {
            Ok(v) => {
                for field in ["type", "title", "detail", "code"] {
                    if !v[field].is_string() {
                        errs.push(format!("field `{field}` missing or not a string"));
                    }
                }
                if v["status"].as_u64() != Some(u64::from(self.status)) {
                    errs.push(format!("field `status` is {} but the HTTP status is {}", v["status"], self.status));
                }
                let code = v["code"].as_str().unwrap_or_default();
                if !code.is_empty() && !code.bytes().all(|c| c.is_ascii_lowercase() || c == b'_' || c.is_ascii_digit()) {
                    errs.push(format!("code {code:?} is not snake_case"));
                }
                if !codes.is_empty() && !codes.contains(&code) {
                    errs.push(format!("code {code:?} (expected one of {codes:?})"));
                }
                if errs.is_empty() {
                    return Ok(v);
                }
            }
            Err(e) => errs.push(format!("body is not JSON: {e}")),
        }
        Err(format!("{}: {}", self.what(), errs.join("; ")))
    }
}

/// Collects independent failures so one run reports all of them.
#[derive(Default)]
pub struct Findings(pub Vec<String>);

impl Findings {
    pub fn check(&mut self, ok: bool, msg: impl FnOnce() -> String) {
        if !ok {
            self.0.push(msg());
        }
    }

    pub fn ok<T>(&mut self, context: &str, r: Result<T, String>) -> Option<T> {
        match r {
            Ok(v) => Some(v),
            Err(e) => {
                self.0.push(format!("{context}: {e}"));
                None
            }
        }
    }

    pub fn status(&mut self, context: &str, r: &Resp, expected: u16) -> bool {
        let ok = r.status == expected;
        self.check(ok, || format!("{context}: expected {expected}, got {}", r.what()));
        ok
    }

    pub fn finish(self) {
        if !self.0.is_empty() {
            panic!("{} deviation(s) from the contract:\n  - {}", self.0.len(), self.0.join("\n  - "));
        }
    }
}

pub fn is_decimal_string(s: &str) -> bool {
    let t = s.strip_prefix('-').unwrap_or(s);
    let (int, frac) = t.split_once('.').unwrap_or((t, "0"));
    !int.is_empty() && !frac.is_empty() && int.bytes().all(|c| c.is_ascii_digit()) && frac.bytes().all(|c| c.is_ascii_digit())
}

/// A decimal-string field; panics (with context) when it is anything else.
pub fn dec(v: &Value, what: &str) -> Decimal {
    let s = v.as_str().unwrap_or_else(|| panic!("{what} must be a decimal string, got {v}"));
    assert!(is_decimal_string(s), "{what} is not a plain decimal string: {s:?}");
    Decimal::from_str(s).unwrap_or_else(|e| panic!("{what} {s:?}: {e}"))
}

pub fn close(a: Decimal, b: Decimal) -> bool {
    (a - b).abs() <= Decimal::new(1, 2)
}

pub fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Parses an RFC 3339 UTC time (`Z` or `+00:00`) into Unix seconds.
pub fn rfc3339_utc(s: &str) -> Result<f64, String> {
    let b = s.as_bytes();
    let shape_ok = b.len() >= 20
        && b[4] == b'-'
        && b[7] == b'-'
        && (b[10] == b'T' || b[10] == b't')
        && b[13] == b':'
        && b[16] == b':'
        && [0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18].iter().all(|&i| b[i].is_ascii_digit());
    if !shape_ok {
        return Err(format!("{s:?} is not an RFC 3339 date-time"));
    }
    let rest = &s[19..];
    let (frac, zone) = match rest.strip_prefix('.') {
        Some(r) => {
            let n = r.bytes().take_while(|c| c.is_ascii_digit()).count();
            if n == 0 {
                return Err(format!("{s:?}: empty fraction"));
            }
            (format!("0.{}", &r[..n]), &r[n..])
        }
        None => ("0".to_string(), rest),
    };
    if zone != "Z" && zone != "z" && zone != "+00:00" {
        return Err(format!("{s:?} is not UTC (zone {zone:?})"));
    }
    let n = |a: usize, len: usize| s[a..a + len].parse::<i64>().expect("digits");
    let (mo, d, h, mi, sec) = (n(5, 2), n(8, 2), n(11, 2), n(14, 2), n(17, 2));
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return Err(format!("{s:?} has an out-of-range field"));
    }
    let days = days_from_civil(n(0, 4), mo, d);
    Ok((days * 86_400 + h * 3_600 + mi * 60 + sec) as f64 + frac.parse::<f64>().expect("fraction"))
}

pub fn now_unix() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock after 1970").as_secs_f64()
}

/// An RFC 3339 UTC time within five minutes of now.
pub fn recent_time(v: &Value) -> Result<f64, String> {
    let s = v.as_str().ok_or_else(|| format!("{v} is not a string"))?;
    let t = rfc3339_utc(s)?;
    if (t - now_unix()).abs() > 300.0 {
        return Err(format!("{s:?} is not close to the current time"));
    }
    Ok(t)
}

/// The time of a list item (transactions do not name their time field in API.md).
pub fn item_time(item: &Value) -> Option<f64> {
    ["at", "executed_at", "created_at", "occurred_at", "timestamp", "time"]
        .iter()
        .find_map(|k| item[*k].as_str().and_then(|s| rfc3339_utc(s).ok()))
}

pub fn expected_fee(notional: Decimal) -> Decimal {
    // config.toml: commission_bps = "10", minimum = "1.00".
    (notional * Decimal::new(10, 4)).round_dp(2).max(Decimal::new(100, 2))
}

/// The gateway answers 413 without reading the rest of an oversized body and then closes the
/// connection; under load the client now and then sees the connection reset before it reads the
/// 413 (reported as a robustness issue). Retry such transport errors so checks stay stable.
pub fn retry_on_reset(send: impl Fn() -> Resp) -> Resp {
    let mut r = send();
    for _ in 0..3 {
        if r.status != 0 {
            break;
        }
        eprintln!("note: {} (retrying)", r.what());
        r = send();
    }
    r
}

pub fn has_no_store(r: &Resp) -> bool {
    r.header("cache-control").is_some_and(|v| v.to_ascii_lowercase().contains("no-store"))
}

pub fn jwt_parts(token: &str) -> (Value, Value, Vec<u8>) {
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "a JWS compact token has three parts: {token}");
    let header = serde_json::from_slice(&B64.decode(parts[0]).expect("base64url header")).expect("JSON header");
    let claims = serde_json::from_slice(&B64.decode(parts[1]).expect("base64url claims")).expect("JSON claims");
    let sig = B64.decode(parts[2]).expect("base64url signature");
    (header, claims, sig)
}

pub fn b64_json(v: &Value) -> String {
    B64.encode(serde_json::to_vec(v).expect("serialise"))
}

/// Creates a staff account with `moneta staff add` (the node must not be running on `root`).
pub fn add_staff(root: &Path, email: &str, role: &str) {
    use std::io::Write as _;
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_moneta"));
    cmd.args(["staff", "add", "--email", email, "--role", role])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    configure(&mut cmd, root, free_port());
    let mut child = cmd.spawn().expect("start `moneta staff add`");
    child
        .stdin
        .take()
        .expect("the child's stdin")
        .write_all(format!("{PASSWORD}\n").as_bytes())
        .expect("write the password to `moneta staff add`");
    let out = child.wait_with_output().expect("wait for `moneta staff add`");
    assert!(
        out.status.success(),
        "`moneta staff add --email {email} --role {role}` failed with {}: stdout {:?} stderr {:?}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
