//! A client's return does not change because the server restarted or closed a day (issue 16,
//! points 1–3): the performance series is rebuilt from the journal and the price histories,
//! and its time-weighted return equals a closed-form oracle computed from the client's own
//! flows and fill.

mod common;

use common::{dec, Node};
use rust_decimal::Decimal;
use serde_json::Value;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// RFC 3339 (UTC, whole seconds) of a Unix time.
fn rfc3339(unix: i64) -> String {
    let (days, secs) = (unix.div_euclid(86_400), unix.rem_euclid(86_400));
    let (y, m, d) = civil(days);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", secs / 3600, secs % 3600 / 60, secs % 60)
}

/// Howard Hinnant's civil_from_days.
fn civil(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

fn performance(node: &Node, token: &str) -> (Decimal, Vec<Value>) {
    let r = node.get("/v1/portfolio/performance?period=all", Some(token));
    assert_eq!(r.status, 200, "{}", r.what());
    let v = r.json();
    (dec(&v["twr"], "twr"), v["series"].as_array().unwrap().clone())
}

#[test]
fn the_return_survives_a_restart_and_a_close_and_matches_the_oracle() {
    let dir = tempfile::tempdir().unwrap();
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
    // Stay clear of midnight: the close below closes today.
    if now.rem_euclid(86_400) > 86_400 - 120 {
        std::thread::sleep(Duration::from_secs((86_400 - now.rem_euclid(86_400) + 5) as u64));
    }
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
    // ACME: 100 until now+8s, 110 until now+14s, then 121 for good (the file's own times).
    let csv = dir.path().join("prices.csv");
    let rows = [(now - 120, "100.00"), (now - 60, "100.00"), (now + 8, "110.00"), (now + 14, "121.00")]
        .iter()
        .map(|(t, p)| format!("{},ACME,{p}\n", rfc3339(*t)))
        .collect::<String>();
    std::fs::write(&csv, format!("timestamp,symbol,price\n{rows}")).unwrap();
    let settings = [
        ("MONETA_MARKET_FEED", "csv"),
        ("MONETA_MARKET_CSV_FILE", csv.to_str().unwrap()),
        ("MONETA_MARKET_CSV_TIMING", "recorded"),
        ("MONETA_MARKET_TICK_INTERVAL", "100ms"),
    ];
    let node = Node::start_with(dir.path(), &settings);
    let user = node.new_user("steady");
    assert_eq!(node.deposit(&user, "d1", "1000.00").status, 201);
    let r = node.order(&user, "o1", "ACME", "buy", "5");
    assert_eq!(r.status, 201, "{}", r.what());
    let (fill, fees) = (dec(&r.json()["price"], "price"), dec(&r.json()["fees"], "fees"));
    let deadline = Instant::now() + Duration::from_secs(40);
    while node.get("/v1/instruments/ACME", None).json()["price"] != "121" {
        assert!(Instant::now() < deadline, "the recorded prices did not arrive");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(node.deposit(&user, "d2", "500.00").status, 201);

    // Oracle: chain-linking the sub-periods (deposit → fill → 110 → 121 → deposit) telescopes
    // to (cash after the fill + 5 × 121) / 1000 − 1, the second deposit adding no return.
    let cash_after_fill = Decimal::from(1000) - Decimal::from(5) * fill - fees;
    let oracle = ((cash_after_fill + Decimal::from(605)) / Decimal::from(1000) - Decimal::ONE).round_dp(6);
    let (twr, series) = performance(&node, &user.token);
    assert_eq!(twr, oracle, "fill {fill}, fees {fees}: {series:?}");
    let first = dec(&series[0]["value"], "value");
    assert_eq!(first, Decimal::from(1000), "the series starts at the first deposit: {series:?}");
    // Never a point at cost: every value is cash plus 5 × a market price (the fill's, 100, 110 or 121).
    drop(node);

    // After a restart: the same series (the deposit and every point before the restart are
    // still there) and the same return.
    let node = Node::start_with(dir.path(), &settings);
    let (after_restart, series_after) = performance(&node, &user.token);
    assert_eq!(after_restart, twr, "the restart changed the return: {series:?} → {series_after:?}");
    let values = |s: &[Value]| s.iter().map(|p| p["value"].as_str().unwrap().to_string()).collect::<Vec<_>>();
    assert_eq!(values(&series_after[..series.len() - 1]), values(&series[..series.len() - 1]));

    // Closing today does not change the return of the period it closes.
    let today = rfc3339(now)[..10].to_string();
    let out = node.cli(&["eod", "run", "--date", &today]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (after_close, series_closed) = performance(&node, &user.token);
    assert_eq!(after_close, twr, "the close changed the return: {series_closed:?}");
}
