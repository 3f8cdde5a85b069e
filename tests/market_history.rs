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
            ("MONETA_MARKET_CSV_TIMING", "replay"),
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

    // On a new folder it stops start-up before anything is written: no data folder, no
    // secrets made (found in review: both were, and jobs had started).
    let fresh = tempfile::tempdir().unwrap();
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_moneta"));
    configure(&mut cmd, fresh.path(), free_port());
    let out = cmd
        .arg("serve")
        .env("MONETA_MARKET_FEED", "csv")
        .env("MONETA_MARKET_CSV_FILE", &csv)
        .env("MONETA_SECURITY_SECRETS_DIR", fresh.path().join("secrets"))
        .env("MONETA_CLUSTER_LISTEN", format!("127.0.0.1:{}", free_port()))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("line 2") && err.contains("NOSUCH"), "{err}");
    assert!(!fresh.path().join("data").exists(), "a data folder was made");
    assert!(!fresh.path().join("secrets").exists(), "secrets were made");
}

/// A file of real prices at their own times: its past becomes the instrument's history (daily
/// closes) and its latest price the instrument's price; a line in the future applies when its
/// time comes; the same file at the next start adds nothing.
#[test]
fn a_csv_of_recorded_prices_becomes_history_at_its_own_times() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("prices.csv");
    let soon = {
        let at = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() + 4;
        let out = std::process::Command::new("date")
            .args(["-u", "-d", &format!("@{at}"), "+%Y-%m-%dT%H:%M:%SZ"])
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    std::fs::write(
        &csv,
        format!(
            "timestamp,symbol,price\n2024-03-01T14:30:00Z,ACME,190.10\n2024-03-01T20:59:00Z,ACME,191.25\n\
             2024-03-04T14:30:00Z,ACME,189.80\n2024-03-04T14:30:00Z,WRLD,99.00\n{soon},ACME,201.50\n"
        ),
    )
    .unwrap();
    let settings = [("MONETA_MARKET_FEED", "csv"), ("MONETA_MARKET_CSV_FILE", csv.to_str().unwrap())];
    let mut node = Node::start_with(dir.path(), &settings);
    let march = "/v1/instruments/ACME/history?from=2024-03-01T00:00:00Z&to=2024-03-31T00:00:00Z";
    // Each symbol's price is applied on its own: wait for both (CI once read WRLD before its
    // line of the file was applied).
    wait_for(
        || node.get("/v1/instruments/ACME", None).json()["price"] == "189.8" && node.get("/v1/instruments/WRLD", None).json()["price"] == "99",
        "the file's latest past prices",
    );
    let days = |node: &Node| -> Vec<(f64, Value)> {
        node.get(march, None)
            .json()
            .as_array()
            .unwrap()
            .iter()
            .map(|p| (rfc3339_utc(p["at"].as_str().unwrap()).unwrap(), p["price"].clone()))
            .collect()
    };
    let day = |d: i64| (days_from_civil(2024, 3, d) * 86_400) as f64;
    let expected = vec![(day(1), json!("191.25")), (day(4), json!("189.8"))];
    assert_eq!(days(&node), expected, "daily closes of the file's days");
    wait_for(
        || node.get("/v1/instruments/ACME", None).json()["price"] == "201.5",
        "the future line at its time",
    );

    // The same file again: nothing added twice, the price stays the file's latest.
    assert_eq!(node.terminate(Duration::from_secs(30)).map(|s| s.success()), Some(true));
    let node = Node::start_with(dir.path(), &settings);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(days(&node), expected);
    assert_eq!(node.get("/v1/instruments/ACME", None).json()["price"], "201.5");
}

#[test]
fn an_admin_lists_a_new_instrument_that_trades_and_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    add_staff(dir.path(), "ops@example.com", "admin");
    let settings = [("MONETA_MARKET_TICK_INTERVAL", "50ms")];
    let mut node = Node::start_with(dir.path(), &settings);
    let admin = node.login("ops@example.com", PASSWORD).json()["access_token"].as_str().unwrap().to_string();
    let body = json!({"symbol": "NEWCO", "name": "New Company plc", "kind": "equity", "risk_class": 4, "price": "10.00"});
    let r = node.post("/v1/admin/instruments", Some(&admin), None, &body);
    assert_eq!(r.status, 201, "{}", r.what());
    assert_eq!(r.json()["complex"], false);
    // Again, identical: 200; other details: 409.
    assert_eq!(node.post("/v1/admin/instruments", Some(&admin), None, &body).status, 200);
    let other = json!({"symbol": "NEWCO", "name": "Another", "kind": "equity", "risk_class": 4, "price": "10.00"});
    node.post("/v1/admin/instruments", Some(&admin), None, &other)
        .problem(&[409], &["instrument_exists"])
        .unwrap();
    for bad in [
        json!({"symbol": "bad sym", "name": "x", "kind": "equity", "risk_class": 4, "price": "1"}),
        json!({"symbol": "OK", "name": "x", "kind": "crypto", "risk_class": 4, "price": "1"}),
        json!({"symbol": "OK", "name": "x", "kind": "equity", "risk_class": 9, "price": "1"}),
        json!({"symbol": "OK", "name": "x", "kind": "equity", "risk_class": 4, "price": "-1"}),
        json!({"symbol": "OK", "name": "x", "kind": "equity", "risk_class": 4, "price": "1", "extra": 1}),
        // The money fields' number forms only (these were listed at 100 and 1, for good).
        json!({"symbol": "OK", "name": "x", "kind": "equity", "risk_class": 4, "price": "1e2"}),
        json!({"symbol": "OK", "name": "x", "kind": "equity", "risk_class": 4, "price": "1."}),
        json!({"symbol": "OK", "name": "x", "kind": "equity", "risk_class": 4, "price": "+1"}),
        // A name that shows nothing.
        json!({"symbol": "OK", "name": "\u{200b}", "kind": "equity", "risk_class": 4, "price": "1"}),
        json!({"symbol": "OK", "name": "New\u{200b}Company plc", "kind": "equity", "risk_class": 4, "price": "1"}),
    ] {
        node.post("/v1/admin/instruments", Some(&admin), None, &bad)
            .problem(&[400], &["invalid_request"])
            .unwrap();
    }
    // Listed, moved by the feed, tradable.
    assert!(node
        .get("/v1/instruments", None)
        .json()
        .as_array()
        .unwrap()
        .iter()
        .any(|i| i["symbol"] == "NEWCO"));
    wait_for(|| node.get("/v1/instruments/NEWCO", None).json()["price"] != "10", "the feed to move NEWCO");
    let user = node.new_user("newco.buyer");
    assert_eq!(node.deposit(&user, "d", "1000.00").status, 201);
    let r = node.order(&user, "o", "NEWCO", "buy", "3");
    assert_eq!(r.status, 201, "{}", r.what());
    // A user may not list instruments.
    node.post("/v1/admin/instruments", Some(&user.token), None, &body).problem(&[403], &[]).unwrap();
    assert!(node.terminate(Duration::from_secs(20)).is_some_and(|s| s.success()));

    let node = Node::start_with(dir.path(), &settings);
    let v = node.get("/v1/instruments/NEWCO", None);
    assert_eq!(v.status, 200, "{}", v.what());
    assert_eq!(v.json()["name"], "New Company plc");
}

#[test]
fn a_new_node_backfills_a_year_of_daily_closes_for_the_seeded_feed_only() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start_with(dir.path(), &[]);
    let year = |node: &Node| {
        let r = node.get("/v1/instruments/ACME/history?from=2000-01-01T00:00:00Z", None);
        assert_eq!(r.status, 200, "{}", r.what());
        r.json().as_array().unwrap().clone()
    };
    let points = year(&node);
    let day = 86_400.0;
    let now = common::now_unix();
    let daily: Vec<f64> = points
        .iter()
        .map(|p| rfc3339_utc(p["at"].as_str().unwrap()).unwrap())
        .filter(|t| *t < now - day)
        .collect();
    assert!(daily.len() >= 364, "a year of closes before today: {} points", daily.len());
    assert!(daily.first().is_some_and(|t| *t <= now - 364.0 * day), "{:?}", daily.first());
    assert!(daily.windows(2).all(|w| w[1] - w[0] == day), "one close per day");
    assert!(points.iter().all(|p| p["price"].as_str().is_some_and(is_decimal_string)));
    // A restart adds nothing before the history (the same year, the same closes).
    drop(node);
    let node = Node::start_with(dir.path(), &[]);
    let again = year(&node);
    assert_eq!(again[..daily.len()], points[..daily.len()], "the backfill is made once");
    drop(node);

    // A CSV feed brings its own history: nothing is made up.
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("prices.csv");
    std::fs::write(&csv, "timestamp,symbol,price\n2024-03-01T14:30:00Z,ACME,190.10\n").unwrap();
    let node = Node::start_with(
        dir.path(),
        &[
            ("MONETA_MARKET_FEED", "csv"),
            ("MONETA_MARKET_CSV_FILE", csv.to_str().unwrap()),
            ("MONETA_MARKET_CSV_TIMING", "replay"),
        ],
    );
    let before_today = year(&node)
        .iter()
        .filter(|p| rfc3339_utc(p["at"].as_str().unwrap()).unwrap() < common::now_unix() - day)
        .count();
    assert_eq!(before_today, 0, "no made-up history under a CSV feed");
}
