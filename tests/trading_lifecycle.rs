//! The trading lifecycle against the real binary: prices fanned out to live valuations and
//! performance (TWR), a sharp move recomputing advice, the end-of-day statements, and the
//! reconciliation of broker confirmations raising alerts for injected discrepancies.

mod common;

use common::*;
use rust_decimal::Decimal;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

fn wait_for<T>(what: &str, within: Duration, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = probe() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn consent(node: &Node, token: &str) {
    let body = json!({"marketing": false, "analytics": false, "ai_profiling": true});
    let r = node.call("PUT", "/v1/me/consents", node.builder("PUT", "/v1/me/consents", Some(token), None).json(&body));
    assert_eq!(r.status, 200, "{}", r.what());
}

fn performance(node: &Node, user: &User, period: &str) -> Value {
    let r = node.get(&format!("/v1/portfolio/performance?period={period}"), Some(&user.token));
    assert_eq!(r.status, 200, "{}", r.what());
    assert!(has_no_store(&r));
    r.json()
}

/// The user's `advice.recomputed` audit record with this reason (from their data export).
fn recomputed(node: &Node, user: &User, reason: &str) -> Option<Value> {
    let export = node.get("/v1/me/export?format=json", Some(&user.token)).json();
    export["audit_records"]
        .as_array()?
        .iter()
        .find(|r| r["action"] == "advice.recomputed" && r["details"]["reason"] == reason)
        .cloned()
}

fn run_cli(node: &Node, args: &[&str]) -> String {
    let out = node.cli(args).env(CLOSE_TIME.0, CLOSE_TIME.1).output().expect("run the moneta CLI");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "moneta {args:?} failed: {stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// A replayed price file: ACME flat at 100 long enough to set up, then a 20% fall.
#[test]
fn a_sharp_fall_revalues_the_portfolio_and_recomputes_advice() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("prices.csv");
    let mut rows = String::from("timestamp,symbol,price\n");
    for i in 0..60 {
        let price = if i < 50 { "100.00" } else { "80.00" };
        rows.push_str(&format!("2024-03-01T14:{:02}:00Z,ACME,{price}\n", i));
    }
    std::fs::write(&csv, rows).unwrap();
    let node = Node::start_with(
        dir.path(),
        &[
            ("MONETA_MARKET_FEED", "csv"),
            ("MONETA_MARKET_CSV_FILE", csv.to_str().unwrap()),
            ("MONETA_MARKET_CSV_TIMING", "replay"),
            ("MONETA_MARKET_TICK_INTERVAL", "400ms"),
            ("MONETA_ADVICE_SHARP_MOVE_THRESHOLD", "0.1"),
        ],
    );
    let price = |node: &Node| dec(&node.get("/v1/instruments/ACME", None).json()["price"], "price");
    let user = node.new_user("faller");
    consent(&node, &user.token);
    assert_eq!(node.deposit(&user, "d1", "10000.00").status, 201);
    wait_for("the replay to start", Duration::from_secs(20), || {
        (price(&node) == Decimal::from(100)).then_some(())
    });
    let r = node.order(&user, "o1", "ACME", "buy", "50");
    assert_eq!(r.status, 201, "{}", r.what());
    // The simulated broker fills against the client by the configured slippage (5 bps).
    assert_eq!(dec(&r.json()["price"], "fill price"), "100.05".parse::<Decimal>().unwrap());
    assert!(
        price(&node) == Decimal::from(100),
        "the fall came before the set-up finished; lengthen the flat period"
    );
    let r = node.get("/v1/advice", Some(&user.token));
    assert_eq!(r.status, 200, "{}", r.what());
    // Moving cash changes what the advice must be: it is recomputed without being asked for.
    assert_eq!(node.deposit(&user, "d2", "500.00").status, 201);
    wait_for("advice recomputed after a deposit", Duration::from_secs(20), || {
        recomputed(&node, &user, "portfolio_changed")
    });

    // Nothing reads the portfolio between the order and the fall: the live valuation learns of
    // the ACME bought from the node's refresh of valuations its writes marked stale, off the
    // request path — else the fall would be no sharp move of anything held.
    wait_for("the fall", Duration::from_secs(40), || (price(&node) == Decimal::from(80)).then_some(()));
    let before = performance(&node, &user, "1d");
    assert!(!before["series"].as_array().unwrap().is_empty());
    // The live valuation follows the fan-out: the last point values 50 ACME at 80.
    let after = wait_for("the valuation to follow the price", Duration::from_secs(20), || {
        let p = performance(&node, &user, "1d");
        let last = p["series"].as_array().unwrap().last().cloned().unwrap();
        let value = dec(&last["value"], "value");
        (value < Decimal::from(9600)).then_some(p)
    });
    let cash = dec(&node.portfolio(&user)["cash"], "cash");
    let last = after["series"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(dec(&last["value"], "value"), cash + Decimal::from(4000), "{after}");
    assert!(rfc3339_utc(last["at"].as_str().unwrap()).is_ok());
    let twr = dec(&after["twr"], "twr");
    // Deposits 10500, bought 50 at 100.05 plus fees, fell to 80: about −10%.
    assert!(twr < "-0.09".parse().unwrap() && twr > "-0.11".parse().unwrap(), "twr {twr}: {after}");
    for period in ["1m", "1y", "all"] {
        assert_eq!(dec(&performance(&node, &user, period)["twr"], "twr"), twr, "period {period}");
    }
    let bad = node.get("/v1/portfolio/performance?period=5y", Some(&user.token));
    bad.problem(&[400], &["invalid_request"]).unwrap();

    // The sharp move recomputed the user's advice (recorded in their audit trail).
    let r = wait_for("advice recomputed after the fall", Duration::from_secs(20), || {
        recomputed(&node, &user, "sharp_move")
    });
    assert_eq!(r["details"]["symbol"], "ACME");
    let metrics = node.get("/metrics", None).body;
    assert!(metrics.contains("moneta_fanout_prices_published_total"), "fan-out metrics are exported");
}

/// The day closes at 23:59 UTC in the end-of-day test: it trades "today" and closes today on
/// demand before the close time, whatever the hour it runs at (with the default 22:00, a run
/// between 22:00 and midnight found its trades belonging to tomorrow's statement).
const CLOSE_TIME: (&str, &str) = ("MONETA_STATEMENTS_CLOSE_TIME", "23:59");

/// Waits (at most a few minutes) while the UTC day is about to end, so the test's "today"
/// stays one day from its trades to its close.
fn away_from_midnight() {
    let s = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() % 86_400;
    if s >= 86_400 - 180 {
        std::thread::sleep(Duration::from_secs(86_400 - s + 30));
    }
}

#[test]
fn end_of_day_statements_and_reconciliation_alerts() {
    away_from_midnight();
    let dir = tempfile::tempdir().unwrap();
    add_staff(dir.path(), "admin@moneta.test", "admin");
    add_staff(dir.path(), "officer@moneta.test", "compliance");
    let mut node = Node::start_with(dir.path(), &[("MONETA_MARKET_TICK_INTERVAL", "100ms"), CLOSE_TIME]);
    let user = node.new_user("stated");
    let idle = node.new_user("idle");
    assert_eq!(node.deposit(&user, "d1", "5000.00").status, 201);
    let mut order_ids = Vec::new();
    for (i, (symbol, qty)) in [("ACME", "3"), ("GLOBX", "2"), ("ACME", "1")].iter().enumerate() {
        let r = node.order(&user, &format!("o{i}"), symbol, "buy", qty);
        assert_eq!(r.status, 201, "{}", r.what());
        order_ids.push(r.json()["order_id"].as_str().unwrap().to_string());
    }

    let today = {
        let now = node.portfolio(&user)["as_of"].as_str().unwrap().to_string();
        now[..10].to_string()
    };
    assert_eq!(node.terminate(Duration::from_secs(30)).map(|s| s.success()), Some(true));
    // End of day on demand, on the stopped node's data folder. Yesterday, closed late: today's
    // activity is not yesterday's, so there is nothing to state.
    let yesterday = std::process::Command::new("date")
        .args(["-u", "-d", &format!("{today} -1 day"), "+%F"])
        .output()
        .unwrap();
    let yesterday = String::from_utf8(yesterday.stdout).unwrap().trim().to_string();
    let out = run_cli(&node, &["eod", "run", "--date", &yesterday]);
    assert!(out.contains("statements written: 0;"), "{out}");
    let out = run_cli(&node, &["eod", "run", "--date", &today]);
    assert!(out.contains("statements written: 1;"), "{out}");
    let out = node.cli(&["eod", "run", "--date", "2999-01-01"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("has not begun"), "a future day is refused: {stderr}");

    // Inject a missing and a mismatched confirmation into the broker's ledger.
    {
        use moneta::storage::keys::{shard_record_key, ShardRecord};
        let store = moneta::storage::Store::open(&dir.path().join("data")).unwrap();
        let confirmed = store.raw_records(ShardRecord::Confirmation).unwrap();
        assert_eq!(confirmed.len(), 3, "the broker confirmed every order");
        let key = |order_id: &str| shard_record_key(moneta::storage::records::user_shard(&user.id), ShardRecord::Confirmation, order_id);
        store.tree().remove(key(&order_ids[0])).unwrap();
        let mut c: Value = serde_json::from_slice(&store.tree().get(key(&order_ids[1])).unwrap().unwrap()).unwrap();
        c["quantity"] = json!("20");
        store.tree().insert(key(&order_ids[1]), serde_json::to_vec(&c).unwrap()).unwrap();
        store.flush().unwrap();
    }
    let node = Node::start_with(dir.path(), &[("MONETA_MARKET_TICK_INTERVAL", "100ms"), CLOSE_TIME]);
    // End of day on demand, through the running node's control socket.
    // Closed once (above, offline): the running node closes it again with nothing to write.
    let out = run_cli(&node, &["eod", "run", "--date", &today]);
    assert!(out.contains("statements written: 0;"), "a day is closed once: {out}");
    let r = node.get("/v1/portfolio/statements", Some(&user.token));
    assert_eq!(r.status, 200, "{}", r.what());
    let list = r.json();
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    let s = node.get(&format!("/v1/portfolio/statements/{today}"), Some(&user.token)).json();
    assert_eq!(s["date"], today.as_str());
    assert_eq!(s["trades"].as_array().unwrap().len(), 3);
    assert_eq!(s["holdings"].as_array().unwrap().len(), 2);
    assert!(s["holdings"].as_array().unwrap().iter().all(|h| h["price"].is_string()), "closing prices: {s}");
    let fees: Decimal = s["trades"].as_array().unwrap().iter().map(|t| dec(&t["fees"], "fees")).sum();
    assert_eq!(dec(&s["fees"], "fees"), fees);
    assert_eq!(dec(&s["deposits"], "deposits"), Decimal::from(5000));
    let lines: Decimal = s["holdings"].as_array().unwrap().iter().map(|h| dec(&h["market_value"], "market_value")).sum();
    assert_eq!(dec(&s["total_value"], "total_value"), dec(&s["cash"], "cash") + lines);
    assert_eq!(node.get("/v1/portfolio/statements/2001-01-01", Some(&user.token)).status, 404);
    node.get("/v1/portfolio/statements/yesterday", Some(&user.token))
        .problem(&[400], &["invalid_request"])
        .unwrap();
    assert_eq!(
        node.get("/v1/portfolio/statements", Some(&idle.token)).json(),
        json!([]),
        "nothing to state, no statement"
    );
    // The close is a point of the daily value series.
    let perf = performance(&node, &user, "all");
    assert!(perf["series"].as_array().unwrap().iter().any(|p| p["value"] == s["total_value"]), "{perf}");

    std::thread::sleep(Duration::from_secs(5));
    let out = run_cli(&node, &["reconcile"]);
    assert!(out.contains("discrepancies: 2 (new alerts: 2)"), "{out}");
    let out = run_cli(&node, &["reconcile"]);
    assert!(out.contains("discrepancies: 2 (new alerts: 0)"), "each discrepancy alerts once: {out}");
    let admin = node.login("admin@moneta.test", PASSWORD).json()["access_token"].as_str().unwrap().to_string();
    let events = node.get("/v1/admin/security-events", Some(&admin)).json();
    let alerts: Vec<&Value> = events
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "security.reconciliation_discrepancy")
        .collect();
    assert_eq!(alerts.len(), 2, "{events}");
    let find = |kind: &str| alerts.iter().find(|e| e["outcome"].as_str().is_some_and(|o| o.contains(kind))).copied();
    let missing = find("missing_confirmation").unwrap_or_else(|| panic!("no missing-confirmation alert: {events}"));
    assert_eq!(missing["details"]["order_id"], order_ids[0].as_str());
    let mismatch = find("mismatched_confirmation").unwrap_or_else(|| panic!("no mismatch alert: {events}"));
    assert_eq!(mismatch["details"]["order_id"], order_ids[1].as_str());
    assert_eq!(mismatch["details"]["field"], "quantity");
    assert_eq!(
        (mismatch["details"]["booked"].as_str(), mismatch["details"]["confirmed"].as_str()),
        (Some("2"), Some("20"))
    );
    // The compliance daily report lists the day's statements and the alerts.
    let officer = node.login("officer@moneta.test", PASSWORD).json()["access_token"].as_str().unwrap().to_string();
    let report = node.get(&format!("/v1/compliance/reports/daily?date={today}"), Some(&officer)).json();
    assert_eq!(report["totals"]["statements"], 1, "{report}");
    assert_eq!(report["totals"]["reconciliation_alerts"], 2, "{report}");
    assert!(
        report["reconciliation_alerts"].as_array().unwrap().iter().any(|a| a["field"] == "quantity"),
        "{report}"
    );
    // A new order after the injection is confirmed and reconciles cleanly.
    let r = node.order(&user, "o9", "ACME", "sell", "1");
    assert_eq!(r.status, 201, "{}", r.what());
    assert!(!node.logs().contains(&user.email), "no personal data in the logs");
}
