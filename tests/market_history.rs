//! Price history (downsampled on the instrument) and the CSV replay feed, against the binary.

mod common;
use common::*;

fn wait_for(mut ok: impl FnMut() -> bool, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn history_follows_the_feed_and_refuses_bad_ranges() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start_with(dir.path(), &[("MONETA_MARKET_TICK_INTERVAL", "50ms")]);
    wait_for(
        || node.get("/v1/instruments/ACME/history", None).json().as_array().is_some_and(|a| !a.is_empty()),
        "history",
    );
    let r = node.get("/v1/instruments/ACME/history", None);
    assert_eq!(r.status, 200, "{}", r.what());
    let points = r.json();
    let points = points.as_array().unwrap();
    let times: Vec<f64> = points.iter().map(|p| rfc3339_utc(p["at"].as_str().unwrap()).unwrap()).collect();
    assert!(times.windows(2).all(|w| w[0] < w[1]), "in time order: {points:?}");
    assert!(points.iter().all(|p| p["price"].as_str().is_some_and(is_decimal_string)));
    // Minute bars: one point per minute, stamped at the minute's start.
    assert!(times.iter().all(|t| t % 60.0 == 0.0), "{times:?}");
    // The last bar closes at the latest price (read both until the feed holds still between).
    wait_for(
        || {
            let last = node.get("/v1/instruments/ACME/history", None).json().as_array().unwrap().last().unwrap()["price"].clone();
            node.get("/v1/instruments/ACME", None).json()["price"] == last
        },
        "the last bar to equal the latest price",
    );
    // Ranges.
    let empty = node.get("/v1/instruments/ACME/history?from=2001-01-01T00:00:00Z&to=2001-01-02T00:00:00Z", None);
    assert_eq!(empty.json(), json!([]));
    node.get("/v1/instruments/ACME/history?from=yesterday", None)
        .problem(&[400], &["invalid_request"])
        .unwrap();
    node.get("/v1/instruments/ACME/history?from=2026-01-02T00:00:00Z&to=2026-01-01T00:00:00Z", None)
        .problem(&[400], &["invalid_request"])
        .unwrap();
    node.get("/v1/instruments/NOPE/history", None).problem(&[404], &["unknown_instrument"]).unwrap();
}

#[test]
fn a_csv_of_real_prices_can_drive_the_market() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("prices.csv");
    std::fs::write(
        &csv,
        "timestamp,symbol,price\n2024-03-01T14:30:00Z,ACME,190.10\n2024-03-01T14:30:00Z,WRLD,99.00\n2024-03-01T14:31:00Z,ACME,191.25\n2024-03-01T14:32:00Z,ACME,189.80\n",
    )
    .unwrap();
    let node = Node::start_with(
        dir.path(),
        &[
            ("MONETA_MARKET_FEED", "csv"),
            ("MONETA_MARKET_CSV_FILE", csv.to_str().unwrap()),
            ("MONETA_MARKET_TICK_INTERVAL", "100ms"),
        ],
    );
    wait_for(
        || node.get("/v1/instruments/ACME", None).json()["price"] == "189.8",
        "the replay to reach its last ACME price",
    );
    assert_eq!(node.get("/v1/instruments/WRLD", None).json()["price"], "99");
    // Instruments not in the file keep their listing price.
    assert_eq!(node.get("/v1/instruments/GLOBX", None).json()["price"], "64.2");
    drop(node);

    // A bad line stops start-up with an error naming it.
    std::fs::write(&csv, "2024-03-01T14:30:00Z,ACME,190.10\n2024-03-01T14:31:00Z,NOSUCH,1.00\n").unwrap();
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_moneta"));
    configure(&mut cmd, dir.path(), free_port());
    let out = cmd
        .arg("serve")
        .env("MONETA_MARKET_FEED", "csv")
        .env("MONETA_MARKET_CSV_FILE", &csv)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("line 2") && err.contains("NOSUCH"), "{err}");
}
