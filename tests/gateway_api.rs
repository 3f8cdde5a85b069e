//! Black-box tests of the HTTP gateway against the contract in API.md: every test starts the real
//! `moneta serve` binary on a free port with its own data directory and talks HTTP to it, as a new
//! user would. Checks that do not depend on each other are collected (`Findings`) so that one run
//! reports every deviation of a test, not only the first.

mod common;
use common::*;

// ---------------------------------------------------------------------------------------------
// 1. The walk-through
// ---------------------------------------------------------------------------------------------

#[test]
fn walk_through_register_login_deposit_trade_and_read_back() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let node = Node::start(dir.path());
    let mut f = Findings::default();

    // Register and log in.
    let email = "ada.walkthrough@example.com";
    let r = node.register(email, PASSWORD);
    assert_eq!(r.status, 201, "{}", r.what());
    f.check(r.header("content-type").unwrap_or_default().starts_with("application/json"), || {
        format!("register: Content-Type {:?}", r.header("content-type"))
    });
    let user_id = r.json()["user_id"].as_str().unwrap_or_else(|| panic!("no user_id: {}", r.what())).to_string();
    f.check(!user_id.is_empty(), || "register: empty user_id".into());

    let r = node.login(email, PASSWORD);
    assert_eq!(r.status, 200, "{}", r.what());
    let v = r.json();
    let token = v["access_token"]
        .as_str()
        .unwrap_or_else(|| panic!("no access_token: {}", r.what()))
        .to_string();
    f.check(v["token_type"] == "Bearer", || {
        format!("login: token_type {} (expected \"Bearer\")", v["token_type"])
    });
    f.check(v["expires_in"].as_u64().is_some_and(|n| n > 0), || {
        format!("login: expires_in {} is not a positive integer", v["expires_in"])
    });
    f.check(token.split('.').count() == 3, || "login: access_token is not a compact JWS".into());
    let user = User {
        id: user_id.clone(),
        email: email.into(),
        token: token.clone(),
    };

    // The profile.
    let r = node.get("/v1/me", Some(&token));
    assert_eq!(r.status, 200, "{}", r.what());
    let me = r.json();
    for field in [
        "user_id",
        "email",
        "full_name",
        "country",
        "kyc_status",
        "screening",
        "risk_profile",
        "consents",
        "mfa_enabled",
        "roles",
    ] {
        f.check(me.get(field).is_some(), || format!("GET /v1/me lacks `{field}`: {me}"));
    }
    f.check(me["user_id"] == user_id.as_str(), || {
        format!("GET /v1/me user_id {} != registered {user_id}", me["user_id"])
    });
    f.check(me["email"] == email, || format!("GET /v1/me email {}", me["email"]));
    f.check(me["full_name"] == "Ada Lovelace", || format!("GET /v1/me full_name {}", me["full_name"]));
    f.check(me["country"] == "GB", || format!("GET /v1/me country {}", me["country"]));
    f.check(me["mfa_enabled"] == false, || format!("GET /v1/me mfa_enabled {}", me["mfa_enabled"]));
    f.check(me["roles"].as_array().is_some_and(|a| a.iter().any(|x| x == "user")), || {
        format!("GET /v1/me roles {}", me["roles"])
    });
    f.check(has_no_store(&r), || {
        format!("GET /v1/me: Cache-Control {:?} (personal data needs no-store)", r.header("cache-control"))
    });

    // A new portfolio is empty.
    let p = node.portfolio(&user);
    f.check(p["currency"] == "USD", || {
        format!("portfolio currency {} (config portfolio.currency = USD)", p["currency"])
    });
    f.check(dec(&p["cash"], "cash").is_zero(), || format!("a new portfolio has cash {}", p["cash"]));
    f.check(p["holdings"].as_array().is_some_and(|h| h.is_empty()), || {
        format!("a new portfolio has holdings {}", p["holdings"])
    });

    // Deposit.
    let r = node.deposit(&user, "walk-dep-1", "10000.00");
    assert_eq!(r.status, 201, "{}", r.what());
    f.check(dec(&r.json()["cash"], "deposit cash") == Decimal::new(10000, 0), || {
        format!("deposit answered {}", r.body)
    });
    f.check(has_no_store(&r), || format!("POST deposit: Cache-Control {:?}", r.header("cache-control")));

    // The compliance gates, in order: identity verification, then the questionnaire.
    let r = node.order(&user, "walk-gate-1", "ACME", "buy", "1");
    f.ok("order before KYC", r.problem(&[422], &["kyc_required"]));
    let r = node.post(
        "/v1/me/kyc",
        Some(&token),
        None,
        &json!({"document_type": "passport", "document_number": "123456789", "address": "1 High Street, London"}),
    );
    assert_eq!(r.status, 200, "{}", r.what());
    f.check(r.json()["kyc_status"] == "verified" && r.json()["screening"] == "clear", || {
        format!("kyc answered {}", r.body)
    });
    let r = node.order(&user, "walk-gate-2", "ACME", "buy", "1");
    f.ok("order before the questionnaire", r.problem(&[422], &["suitability_required"]));
    let r = node.post("/v1/me/suitability", Some(&token), None, &json!({"answers": adventurous()}));
    assert_eq!(r.status, 200, "{}", r.what());
    f.check(r.json()["risk_score"] == 7 && r.json()["complex_products_allowed"] == true, || {
        format!("suitability answered {}", r.body)
    });

    // Buy.
    let r = node.order(&user, "walk-buy-1", "ACME", "buy", "3");
    assert_eq!(r.status, 201, "{}", r.what());
    let buy = r.json();
    let buy_id = buy["order_id"].as_str().unwrap_or_else(|| panic!("no order_id: {}", r.what())).to_string();
    f.check(buy["status"] == "filled", || format!("buy status {}", buy["status"]));
    f.check(buy["symbol"] == "ACME", || format!("buy symbol {}", buy["symbol"]));
    f.check(buy["side"] == "buy", || format!("buy side {}", buy["side"]));
    f.check(dec(&buy["quantity"], "buy quantity") == Decimal::new(3, 0), || {
        format!("buy quantity {}", buy["quantity"])
    });
    let buy_price = dec(&buy["price"], "buy price");
    let buy_fees = dec(&buy["fees"], "buy fees");
    f.check(buy_price > Decimal::ZERO, || format!("buy price {buy_price}"));
    f.check(close(buy_fees, expected_fee(Decimal::new(3, 0) * buy_price)), || {
        format!(
            "buy fees {buy_fees}, expected max(10 bps of notional, 1.00) = {}",
            expected_fee(Decimal::new(3, 0) * buy_price)
        )
    });
    f.ok("buy executed_at", recent_time(&buy["executed_at"]));

    // The portfolio after the buy.
    let p = node.portfolio(&user);
    let cash = dec(&p["cash"], "cash");
    let expected_cash = Decimal::new(10000, 0) - Decimal::new(3, 0) * buy_price - buy_fees;
    f.check(close(cash, expected_cash), || {
        format!("cash {cash}, expected 10000 - 3 x {buy_price} - {buy_fees} = {expected_cash}")
    });
    let holdings = p["holdings"].as_array().cloned().unwrap_or_default();
    f.check(holdings.len() == 1, || format!("holdings after one buy: {}", p["holdings"]));
    let mut sum = Decimal::ZERO;
    for h in &holdings {
        for field in ["symbol", "quantity", "average_cost", "price", "market_value"] {
            f.check(h.get(field).is_some(), || format!("holding lacks `{field}`: {h}"));
        }
        let (q, pr, mv) = (
            dec(&h["quantity"], "quantity"),
            dec(&h["price"], "price"),
            dec(&h["market_value"], "market_value"),
        );
        f.check(close(mv, q * pr), || format!("market_value {mv} != quantity {q} x price {pr}"));
        sum += mv;
    }
    if let Some(h) = holdings.first() {
        f.check(h["symbol"] == "ACME" && dec(&h["quantity"], "quantity") == Decimal::new(3, 0), || {
            format!("holding {h}")
        });
        let avg = dec(&h["average_cost"], "average_cost");
        let with_fees = (Decimal::new(3, 0) * buy_price + buy_fees) / Decimal::new(3, 0);
        f.check(close(avg, buy_price) || close(avg, with_fees), || {
            format!("average_cost {avg}, fill price {buy_price}")
        });
        // One documented precision: four decimal places, always.
        let text = h["average_cost"].as_str().unwrap_or_default();
        f.check(text.split_once('.').is_some_and(|(_, places)| places.len() == 4), || {
            format!("average_cost {text:?} is not written with 4 decimal places")
        });
    }
    let total = dec(&p["total_value"], "total_value");
    f.check(close(total, cash + sum), || format!("total_value {total} != cash {cash} + market values {sum}"));
    f.ok("portfolio as_of", recent_time(&p["as_of"]));

    // Transactions, newest first.
    let r = node.get("/v1/portfolio/transactions", Some(&token));
    assert_eq!(r.status, 200, "{}", r.what());
    f.check(has_no_store(&r), || format!("GET transactions: Cache-Control {:?}", r.header("cache-control")));
    let txs = r.json().as_array().cloned().unwrap_or_else(|| panic!("transactions is not a list: {}", r.body));
    f.check(txs.len() == 2, || format!("expected 2 transactions (deposit, buy): {}", r.body));
    if let Some(first) = txs.first() {
        f.check(first.to_string().contains(&buy_id), || {
            format!("the newest transaction should be the buy {buy_id}: {}", r.body)
        });
    }
    let times: Vec<Option<f64>> = txs.iter().map(item_time).collect();
    f.check(times.iter().all(Option::is_some), || {
        format!("transactions without an RFC 3339 time: {}", r.body)
    });
    f.check(times.windows(2).all(|w| w[0] >= w[1]), || {
        format!("transactions are not newest first: {}", r.body)
    });

    // Orders: the list and the one.
    let r = node.get("/v1/orders", Some(&token));
    assert_eq!(r.status, 200, "{}", r.what());
    f.check(has_no_store(&r), || format!("GET /v1/orders: Cache-Control {:?}", r.header("cache-control")));
    let list = r.json();
    f.check(list.as_array().is_some_and(|l| l.len() == 1 && l[0] == buy), || {
        format!("GET /v1/orders {list}, expected [{buy}]")
    });
    let r = node.get(&format!("/v1/orders/{buy_id}"), Some(&token));
    f.status("GET /v1/orders/{id}", &r, 200);
    if r.status == 200 {
        f.check(r.json() == buy, || format!("GET /v1/orders/{buy_id} = {}, POST answered {buy}", r.body));
        f.check(has_no_store(&r), || {
            format!("GET /v1/orders/{{id}}: Cache-Control {:?}", r.header("cache-control"))
        });
    }
    let r = node.get("/v1/orders/ord_does_not_exist", Some(&token));
    let unknown_order = f.ok("unknown order id", r.problem(&[404], &[]));

    // Sell back.
    std::thread::sleep(Duration::from_millis(20));
    let r = node.order(&user, "walk-sell-1", "ACME", "sell", "3");
    assert_eq!(r.status, 201, "{}", r.what());
    let sell = r.json();
    let sell_id = sell["order_id"].as_str().unwrap_or_default().to_string();
    f.check(sell["side"] == "sell" && sell["status"] == "filled" && sell["symbol"] == "ACME", || {
        format!("sell answered {sell}")
    });
    f.check(sell_id != buy_id && !sell_id.is_empty(), || {
        format!("sell order_id {sell_id:?} (buy was {buy_id})")
    });
    let sell_price = dec(&sell["price"], "sell price");
    let sell_fees = dec(&sell["fees"], "sell fees");
    f.ok("sell executed_at", recent_time(&sell["executed_at"]));
    let p = node.portfolio(&user);
    let cash_after = dec(&p["cash"], "cash");
    let expected = cash + Decimal::new(3, 0) * sell_price - sell_fees;
    f.check(close(cash_after, expected), || {
        format!("cash after the sell {cash_after}, expected {cash} + 3 x {sell_price} - {sell_fees} = {expected}")
    });
    let left: Vec<&Value> = p["holdings"]
        .as_array()
        .map(|h| h.iter().filter(|h| dec(&h["quantity"], "quantity") > Decimal::ZERO).collect())
        .unwrap_or_default();
    f.check(left.is_empty(), || format!("holdings after selling everything: {}", p["holdings"]));
    f.check(close(dec(&p["total_value"], "total_value"), cash_after), || {
        format!("total_value with no holdings {} != cash {cash_after}", p["total_value"])
    });

    let r = node.get("/v1/orders", Some(&token));
    let ids: Vec<String> = r
        .json()
        .as_array()
        .map(|l| l.iter().map(|o| o["order_id"].as_str().unwrap_or_default().to_string()).collect())
        .unwrap_or_default();
    f.check(ids == [sell_id.clone(), buy_id.clone()], || {
        format!("orders should be [sell, buy] newest first: {ids:?}")
    });
    let r = node.get("/v1/portfolio/transactions", Some(&token));
    let txs = r.json().as_array().cloned().unwrap_or_default();
    f.check(txs.len() == 3 && txs[0].to_string().contains(&sell_id), || {
        format!("transactions after the sell (newest first): {}", r.body)
    });

    // Withdraw.
    let r = node.withdraw(&user, "walk-wd-1", "100.00");
    f.status("withdrawal", &r, 201);
    if r.status == 201 {
        let c = dec(&r.json()["cash"], "withdrawal cash");
        f.check(c == cash_after - Decimal::new(100, 0), || {
            format!("withdrawal answered cash {c}, expected {}", cash_after - Decimal::new(100, 0))
        });
    }

    // Another user sees none of it, and cannot read the first user's order.
    let other = node.new_user("other.walkthrough");
    let r = node.get(&format!("/v1/orders/{buy_id}"), Some(&other.token));
    if let (Some(theirs), Some(none)) = (f.ok("another user's order", r.problem(&[404], &[])), unknown_order) {
        let same = ["type", "title", "detail", "code"].iter().all(|k| theirs[*k] == none[*k]);
        f.check(same, || {
            format!("another user's order {theirs} is told apart from a missing one {none} (existence leaks)")
        });
    }
    let p = node.portfolio(&other);
    f.check(
        dec(&p["cash"], "cash").is_zero() && p["holdings"].as_array().is_some_and(|h| h.is_empty()),
        || format!("another user's portfolio: {p}"),
    );
    let r = node.get("/v1/orders", Some(&other.token));
    f.check(r.status == 200 && r.json() == json!([]), || format!("another user's orders: {}", r.what()));
    let r = node.get("/v1/portfolio/transactions", Some(&other.token));
    f.check(r.status == 200 && r.json() == json!([]), || {
        format!("another user's transactions: {}", r.what())
    });
    f.check(other.id != user.id, || "two users got the same user_id".into());
    f.finish();
}

// ---------------------------------------------------------------------------------------------
// 2. Idempotency
// ---------------------------------------------------------------------------------------------

#[test]
fn idempotency_keys_replay_refuse_reuse_and_are_required() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let node = Node::start(dir.path());
    let mut f = Findings::default();
    let user = node.new_user("idem.alice");
    let cash = |node: &Node| dec(&node.portfolio(&user)["cash"], "cash");

    // Deposits.
    let first = node.deposit(&user, "dep-1", "100.00");
    assert_eq!(first.status, 201, "{}", first.what());
    let again = node.deposit(&user, "dep-1", "100.00");
    f.check(again.status == first.status && again.body == first.body, || {
        format!("deposit replay: first {}, then {}", first.what(), again.what())
    });
    f.check(cash(&node) == Decimal::new(100, 0), || {
        format!("cash after a replayed deposit is {} (expected 100)", cash(&node))
    });
    let r = node.deposit(&user, "dep-1", "200.00");
    f.ok("deposit, same key, other body", r.problem(&[422], &["idempotency_key_reused"]));
    let r = node.post("/v1/portfolio/deposits", Some(&user.token), None, &json!({"amount": "5.00"}));
    f.ok("deposit without a key", r.problem(&[400], &["idempotency_key_required"]));
    f.check(cash(&node) == Decimal::new(100, 0), || {
        format!("cash after refused deposits is {} (expected 100)", cash(&node))
    });

    // Withdrawals.
    let first = node.withdraw(&user, "wd-1", "10.00");
    assert_eq!(first.status, 201, "{}", first.what());
    f.check(dec(&first.json()["cash"], "cash") == Decimal::new(90, 0), || {
        format!("withdrawal answered {}", first.body)
    });
    let again = node.withdraw(&user, "wd-1", "10.00");
    f.check(again.status == first.status && again.body == first.body, || {
        format!("withdrawal replay: first {}, then {}", first.what(), again.what())
    });
    f.check(cash(&node) == Decimal::new(90, 0), || {
        format!("cash after a replayed withdrawal is {} (expected 90)", cash(&node))
    });
    let r = node.withdraw(&user, "wd-1", "20.00");
    f.ok("withdrawal, same key, other body", r.problem(&[422], &["idempotency_key_reused"]));
    let r = node.post("/v1/portfolio/withdrawals", Some(&user.token), None, &json!({"amount": "5.00"}));
    f.ok("withdrawal without a key", r.problem(&[400], &["idempotency_key_required"]));
    f.check(cash(&node) == Decimal::new(90, 0), || {
        format!("cash after refused withdrawals is {} (expected 90)", cash(&node))
    });

    // Orders.
    let first = node.order(&user, "ord-1", "MMKT", "buy", "5");
    assert_eq!(first.status, 201, "{}", first.what());
    let cash_after_order = cash(&node);
    std::thread::sleep(Duration::from_millis(1100)); // let the feed tick: a replay must not re-price
    let again = node.order(&user, "ord-1", "MMKT", "buy", "5");
    f.check(again.status == first.status && again.body == first.body, || {
        format!("order replay: first {}, then {}", first.what(), again.what())
    });
    f.check(cash(&node) == cash_after_order, || {
        format!("cash after a replayed order is {} (expected {cash_after_order})", cash(&node))
    });
    let orders = node.get("/v1/orders", Some(&user.token)).json();
    f.check(orders.as_array().is_some_and(|o| o.len() == 1), || {
        format!("orders after a replayed order: {orders}")
    });
    let r = node.order(&user, "ord-1", "MMKT", "buy", "6");
    f.ok("order, same key, other quantity", r.problem(&[422], &["idempotency_key_reused"]));
    let r = node.order(&user, "ord-1", "MMKT", "sell", "5");
    f.ok("order, same key, other side", r.problem(&[422], &["idempotency_key_reused"]));
    let r = node.post(
        "/v1/orders",
        Some(&user.token),
        None,
        &json!({"symbol": "MMKT", "side": "buy", "quantity": "1"}),
    );
    f.ok("order without a key", r.problem(&[400], &["idempotency_key_required"]));
    let holdings = node.portfolio(&user)["holdings"].clone();
    f.check(
        holdings
            .as_array()
            .is_some_and(|h| h.len() == 1 && dec(&h[0]["quantity"], "quantity") == Decimal::new(5, 0)),
        || format!("holdings after refused orders: {holdings}"),
    );

    // A key used on one route is not silently replayed as another route's answer.
    let before = node.snapshot(&user);
    let r = node.withdraw(&user, "dep-1", "100.00");
    f.check(r.status != 201, || format!("a deposit's key reused for a withdrawal was answered {}", r.what()));
    let r = node.deposit(&user, "ord-1", "1.00");
    f.check(
        r.status == 422 || (r.status == 201 && dec(&r.json()["cash"], "cash") == cash_after_order + Decimal::ONE),
        || format!("an order's key reused for a deposit: {}", r.what()),
    );
    if r.status == 422 {
        f.check(node.snapshot(&user) == before, || {
            "a refused cross-route key reuse changed the portfolio".into()
        });
    }

    // Keys belong to their user: another user with the same key gets their own deposit.
    let bob = node.new_user("idem.bob");
    let r = node.deposit(&bob, "dep-1", "250.00");
    f.check(r.status == 201 && r.body.contains("250"), || {
        format!("another user's first use of key dep-1: {}", r.what())
    });
    f.check(dec(&node.portfolio(&bob)["cash"], "cash") == Decimal::new(250, 0), || {
        "the other user's deposit did not land".into()
    });

    // Key syntax: 1-128 visible ASCII characters.
    let carol = node.new_user("idem.carol");
    let long_ok = "k".repeat(128);
    let r = node.deposit(&carol, &long_ok, "1.00");
    f.status("a 128-character key", &r, 201);
    let before = node.snapshot(&carol);
    for (what, key) in [
        ("129 characters", "k".repeat(129)),
        ("empty", String::new()),
        ("a space", "has space".into()),
        ("a tab", "tab\tkey".into()),
    ] {
        let r = node.deposit(&carol, &key, "1.00");
        f.ok(&format!("an Idempotency-Key with {what}"), r.problem(&[400], &[]));
    }
    f.check(node.snapshot(&carol) == before, || "refused keys changed the portfolio".into());

    // Concurrent retries with one key apply once.
    let dave = node.new_user("idem.dave");
    let url = node.url("/v1/portfolio/deposits");
    let answers: Vec<(u16, String)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let (client, url, token) = (node.client.clone(), url.clone(), dave.token.clone());
                s.spawn(move || {
                    let r = client
                        .post(url)
                        .bearer_auth(token)
                        .header("Idempotency-Key", "race-1")
                        .json(&json!({"amount": "7.00"}))
                        .send()
                        .expect("send");
                    (r.status().as_u16(), r.text().unwrap_or_default())
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("thread")).collect()
    });
    f.check(dec(&node.portfolio(&dave)["cash"], "cash") == Decimal::new(7, 0), || {
        format!("8 concurrent requests with one key: cash {}", node.portfolio(&dave)["cash"])
    });
    let created: Vec<&(u16, String)> = answers.iter().filter(|(s, _)| *s == 201).collect();
    f.check(!created.is_empty() && created.iter().all(|a| a.1 == created[0].1), || {
        format!("concurrent answers differ: {answers:?}")
    });
    f.check(answers.iter().all(|(s, _)| *s == 201), || {
        format!("concurrent retries with one key were not all answered 201 (API.md: the first response again): {answers:?}")
    });
    f.finish();
}

// ---------------------------------------------------------------------------------------------
// 3. Bad input
// ---------------------------------------------------------------------------------------------

#[test]
fn bad_input_gets_problem_json_and_changes_nothing() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let node = Node::start(dir.path());
    let mut f = Findings::default();
    let user = node.new_user("bad.input");
    assert_eq!(node.deposit(&user, "setup-dep", "1000.00").status, 201);
    let r = node.order(&user, "setup-buy", "WRLD", "buy", "2");
    assert_eq!(r.status, 201, "{}", r.what());
    let before = node.snapshot(&user);
    let tok = Some(user.token.as_str());
    let mut n = 0;
    let mut key = || {
        n += 1;
        format!("bad-{n}")
    };

    // Bodies that are not what the route takes, on every money-moving route.
    let over = {
        let mut b = br#"{"amount":"1.00","pad":""#.to_vec();
        b.resize(b.len() + 70 * 1024, b'x');
        b.extend_from_slice(br#""}"#);
        b
    };
    for route in ["/v1/portfolio/deposits", "/v1/portfolio/withdrawals", "/v1/orders"] {
        let good = if route == "/v1/orders" {
            json!({"symbol": "WRLD", "side": "buy", "quantity": "1"})
        } else {
            json!({"amount": "1.00"})
        };
        let mut unknown = good.clone();
        unknown["extra"] = json!(1);
        let r = node.post(route, tok, Some(&key()), &unknown);
        f.ok(&format!("{route}: unknown field"), r.problem(&[400], &["invalid_request"]));
        for (what, raw) in [
            ("malformed JSON", br#"{"amount": "1.00""#.to_vec()),
            ("an empty body", Vec::new()),
            ("a JSON array", b"[]".to_vec()),
            ("JSON null", b"null".to_vec()),
            ("an empty object", b"{}".to_vec()),
            ("not JSON at all", b"amount=1.00".to_vec()),
            ("JSON nested 20,000 deep", [vec![b'['; 20_000], vec![b']'; 20_000]].concat()),
            ("invalid UTF-8", b"{\"amount\": \"\xff\xfe\"}".to_vec()),
            ("a duplicated field", br#"{"amount": "1.00", "amount": "2.00"}"#.to_vec()),
            ("trailing garbage", br#"{"amount": "1.00"} {"#.to_vec()),
        ] {
            let r = node.post_raw(route, tok, Some(&key()), raw);
            f.ok(&format!("{route}: {what}"), r.problem(&[400], &[]));
        }
        let r = retry_on_reset(|| node.post_raw(route, tok, Some(&format!("big-{route}")), over.clone()));
        f.ok(&format!("{route}: a 70 KiB body"), r.problem(&[413], &[]));
        let r = retry_on_reset(|| node.post_chunked(route, tok, Some(&format!("big-chunked-{route}")), over.clone()));
        f.ok(&format!("{route}: a 70 KiB chunked body"), r.problem(&[413], &[]));
    }

    // Amounts.
    for route in ["/v1/portfolio/deposits", "/v1/portfolio/withdrawals"] {
        for amount in [json!(10), json!(10.5), json!(true), json!(null), json!(["10"]), json!({"v": "10"})] {
            let r = node.post(route, tok, Some(&key()), &json!({ "amount": amount }));
            f.ok(&format!("{route}: amount {amount}"), r.problem(&[400, 422], &[]));
        }
        for amount in [
            "ten", "", " 10", "10 ", "1e3", "10.0.0", "0x10", "NaN", "Infinity", "+5", "1,000.00", ".", "--5", "١٠",
        ] {
            let r = node.post(route, tok, Some(&key()), &json!({ "amount": amount }));
            f.ok(&format!("{route}: amount {amount:?}"), r.problem(&[400, 422], &[]));
        }
        for amount in ["0", "0.00", "-5.00", "-0.01", "10.001"] {
            let r = node.post(route, tok, Some(&key()), &json!({ "amount": amount }));
            f.ok(&format!("{route}: amount {amount:?}"), r.problem(&[400, 422], &[]));
        }
    }
    let r = node.withdraw(&user, &key(), "5000.00");
    f.ok("withdrawal over cash", r.problem(&[422], &["insufficient_funds"]));

    // Orders.
    for q in ["0", "0.0", "-1", "1.0000000000001", "0.0000000000001"] {
        let r = node.order(&user, &key(), "WRLD", "buy", q);
        f.ok(&format!("order quantity {q:?}"), r.problem(&[422], &["invalid_quantity"]));
    }
    for q in [json!(1), json!("one"), json!(""), json!(null)] {
        let r = node.post("/v1/orders", tok, Some(&key()), &json!({"symbol": "WRLD", "side": "buy", "quantity": q}));
        f.ok(&format!("order quantity {q}"), r.problem(&[400, 422], &[]));
    }
    for side in [json!("hold"), json!("BUY"), json!(""), json!(1)] {
        let r = node.post("/v1/orders", tok, Some(&key()), &json!({"symbol": "WRLD", "side": side, "quantity": "1"}));
        f.ok(&format!("order side {side}"), r.problem(&[400], &[]));
    }
    for symbol in ["NOPE", "ZZZZZZ"] {
        let r = node.order(&user, &key(), symbol, "buy", "1");
        f.ok(&format!("order for {symbol}"), r.problem(&[404], &["unknown_instrument"]));
    }
    let r = node.order(&user, &key(), "INIT", "buy", "1000");
    f.ok("buy beyond cash", r.problem(&[422], &["insufficient_funds"]));
    let r = node.order(&user, &key(), "WRLD", "buy", MAX_DECIMAL);
    f.ok("buy of 7.9e28 units", r.problem(&[422], &["insufficient_funds", "invalid_quantity"]));
    let r = node.order(&user, &key(), "ACME", "sell", "1");
    f.ok("selling an instrument not held", r.problem(&[422], &["insufficient_holdings"]));
    let r = node.order(&user, &key(), "WRLD", "sell", "3");
    f.ok("selling more than held", r.problem(&[422], &["insufficient_holdings"]));
    let r = node.order(&user, &key(), "NOPE", "sell", "1");
    f.ok(
        "selling an unknown instrument",
        r.problem(&[404, 422], &["unknown_instrument", "insufficient_holdings"]),
    );

    let after = node.snapshot(&user);
    f.check(after == before, || {
        format!("refused requests changed the portfolio:\nbefore {before:?}\nafter  {after:?}")
    });

    // The limit is "over 64 KiB": a body of exactly 64 KiB is accepted.
    let mut exact = br#"{"amount":"1.00"}"#.to_vec();
    exact.resize(64 * 1024, b' ');
    let r = node.post_raw("/v1/portfolio/deposits", tok, Some(&key()), exact);
    f.status("a deposit body of exactly 64 KiB", &r, 201);

    // Routes that take no fields refuse unknown ones too, and change nothing.
    let unknown = br#"{"x": 1}"#.to_vec();
    let r = node.call(
        "DELETE",
        "/v1/me",
        node.builder("DELETE", "/v1/me", tok, None)
            .header("content-type", "application/json")
            .body(unknown.clone()),
    );
    f.ok("DELETE /v1/me with an unknown field", r.problem(&[400], &["invalid_request"]));
    let r = node.post_raw("/v1/me/mfa/totp", tok, None, unknown.clone());
    f.ok("TOTP enrolment with an unknown field", r.problem(&[400], &["invalid_request"]));
    let r = node.post_raw("/v1/auth/logout", tok, None, unknown);
    f.ok("logout with an unknown field", r.problem(&[400], &["invalid_request"]));
    let me = node.get("/v1/me", tok);
    f.status("GET /v1/me after the refused logout (the session lives)", &me, 200);
    f.check(me.json()["mfa_enabled"] == false, || {
        format!("a refused enrolment changed the account: {}", me.what())
    });
    let export = node.get("/v1/me/export?format=json", tok);
    f.check(export.status == 200 && export.json()["erasure"].is_null(), || {
        format!("a refused DELETE /v1/me scheduled an erasure: {}", export.what())
    });
    f.finish();
}

// ---------------------------------------------------------------------------------------------
// 4. Authentication and registration
// ---------------------------------------------------------------------------------------------

#[test]
fn authentication_rejects_bad_tokens_and_registration_rules_hold() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let node = Node::start(dir.path());
    let mut f = Findings::default();
    let alice = node.new_user("auth.alice");
    let bob = node.new_user("auth.bob");
    let r = node.get("/v1/me", Some(&alice.token));
    assert_eq!(r.status, 200, "{}", r.what());
    assert_eq!(r.json()["user_id"], alice.id.as_str());

    // Tokens the gateway must refuse.
    let parts: Vec<&str> = alice.token.split('.').collect();
    let (header, claims, sig) = jwt_parts(&alice.token);
    let kid = header["kid"].clone();
    let signing_input = |h: &Value, c: &Value| format!("{}.{}", b64_json(h), b64_json(c));
    let mut forged: Vec<(&str, String)> = Vec::new();
    let mut c = claims.clone();
    c["sub"] = json!(bob.id);
    forged.push(("payload with another user's sub", format!("{}.{}.{}", parts[0], b64_json(&c), parts[2])));
    let mut c = claims.clone();
    c["exp"] = json!(c["exp"].as_i64().unwrap_or(0) + 86_400);
    forged.push(("payload with a later exp", format!("{}.{}.{}", parts[0], b64_json(&c), parts[2])));
    let mut bad_sig = sig.clone();
    bad_sig[10] ^= 0x01;
    forged.push(("altered signature", format!("{}.{}.{}", parts[0], parts[1], B64.encode(&bad_sig))));
    forged.push(("no signature", format!("{}.{}.", parts[0], parts[1])));
    let none = json!({"alg": "none", "typ": header["typ"], "kid": kid});
    forged.push(("alg none, empty signature", format!("{}.", signing_input(&none, &claims))));
    forged.push(("alg none, original signature", format!("{}.{}", signing_input(&none, &claims), parts[2])));
    let jwks = node.get("/.well-known/jwks.json", None).json();
    let x = jwks["keys"][0]["x"].as_str().unwrap_or_default().to_string();
    let hs = json!({"alg": "HS256", "typ": header["typ"], "kid": kid});
    for (what, secret) in [
        ("HS256 keyed with the public key bytes", B64.decode(&x).unwrap_or_default()),
        ("HS256 keyed with the JWK x string", x.clone().into_bytes()),
    ] {
        let input = signing_input(&hs, &claims);
        let tag = aws_lc_rs::hmac::sign(&aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &secret), input.as_bytes());
        forged.push((what, format!("{input}.{}", B64.encode(tag.as_ref()))));
    }
    let foreign = Ed25519KeyPair::generate().expect("an Ed25519 key");
    let input = signing_input(&header, &claims);
    forged.push((
        "EdDSA signed by another key with our kid",
        format!("{input}.{}", B64.encode(foreign.sign(input.as_bytes()).as_ref())),
    ));
    forged.push(("garbage", "garbage".into()));
    forged.push(("three garbage parts", "aaa.bbb.ccc".into()));
    for (what, token) in &forged {
        for path in ["/v1/me", "/v1/portfolio"] {
            let r = node.get(path, Some(token));
            f.ok(&format!("{path} with a token with {what}"), r.problem(&[401], &[]));
        }
    }
    let r = node.get("/v1/me", None);
    f.ok("/v1/me without a token", r.problem(&[401], &[]));
    // A 401 names the scheme it accepts (RFC 9110 §15.5.2), and the scheme's case is free.
    f.check(r.header("www-authenticate").is_some_and(|h| h.starts_with("Bearer")), || {
        format!("401 without WWW-Authenticate: Bearer: {:?}", r.header("www-authenticate"))
    });
    for scheme in ["bearer", "BEARER", "Bearer"] {
        let r = node.get_with_auth_header("/v1/me", &format!("{scheme} {}", alice.token));
        f.status(&format!("/v1/me with the scheme written {scheme}"), &r, 200);
    }
    let r = node.get_with_auth_header("/v1/portfolio", &format!("Basic {}", B64.encode("alice:pw")));
    f.ok("/v1/portfolio with Basic auth", r.problem(&[401], &[]));
    let r = node.get_with_auth_header("/v1/portfolio", &alice.token);
    f.ok("/v1/portfolio with a token but no Bearer scheme", r.problem(&[401], &[]));
    let r = node.post("/v1/portfolio/deposits", Some("garbage"), Some("k-1"), &json!({"amount": "1.00"}));
    f.ok("deposit with a garbage token", r.problem(&[401], &[]));
    let r = node.post("/v1/orders", None, Some("k-2"), &json!({"symbol": "ACME", "side": "buy", "quantity": "1"}));
    f.ok("order without a token", r.problem(&[401], &[]));
    for path in ["/v1/portfolio/transactions", "/v1/orders", "/v1/orders/ord_x"] {
        f.ok(&format!("{path} without a token"), node.get(path, None).problem(&[401], &[]));
    }

    // Weak passwords, and a refused registration leaves the email free.
    for pw in ["", "short", "Sh0rt-pass!", "password1234"] {
        let r = node.register("weak@example.com", pw);
        f.ok(&format!("register with password {pw:?}"), r.problem(&[400], &["weak_password"]));
    }
    let r = node.register("weak@example.com", "Zq7!mK2#pL9x");
    f.status("register with an uncommon 12-character password after weak attempts", &r, 201);

    // Duplicate emails, whatever their case.
    let r = node.register("Grace.Hopper@Example.com", PASSWORD);
    assert_eq!(r.status, 201, "{}", r.what());
    for email in ["Grace.Hopper@Example.com", "grace.hopper@example.com", "GRACE.HOPPER@EXAMPLE.COM"] {
        let r = node.register(email, "another-long-passphrase-99");
        f.ok(&format!("register {email} again"), r.problem(&[409], &["email_taken"]));
    }
    let r = node.login("Grace.Hopper@Example.com", PASSWORD);
    f.status("login with the registered email", &r, 200);
    let r = node.login("grace.hopper@example.com", PASSWORD);
    f.status(
        "login with the email in another case (emails are case-insensitive: duplicates in any case are email_taken)",
        &r,
        200,
    );

    // Wrong credentials are indistinguishable.
    let wrong = node.login(&alice.email, "not-the-right-password");
    let wrong = f.ok("login with a wrong password", wrong.problem(&[401], &["invalid_credentials"]));
    let unknown = node.login("nobody@example.com", PASSWORD);
    let unknown = f.ok("login with an unknown email", unknown.problem(&[401], &["invalid_credentials"]));
    if let (Some(a), Some(b)) = (wrong, unknown) {
        f.check(a["detail"] == b["detail"] && a["title"] == b["title"], || {
            format!("wrong password {a} vs unknown email {b} differ")
        });
    }

    // Malformed registration and login bodies.
    let base = json!({"email": "shape@example.com", "password": PASSWORD, "full_name": "Shape Tester", "date_of_birth": "1990-04-01", "country": "GB"});
    let mut extra = base.clone();
    extra["role"] = json!("admin");
    f.ok(
        "register with an unknown field (role)",
        node.post("/v1/auth/register", None, None, &extra).problem(&[400], &["invalid_request"]),
    );
    for (field, value) in [
        ("date_of_birth", json!("01/04/1990")),
        ("date_of_birth", json!("1990-13-45")),
        ("email", json!("not-an-email")),
        ("email", json!("")),
    ] {
        let mut b = base.clone();
        b[field] = value.clone();
        f.ok(
            &format!("register with {field} {value}"),
            node.post("/v1/auth/register", None, None, &b).problem(&[400, 422], &[]),
        );
    }
    let mut missing = base.clone();
    missing.as_object_mut().expect("object").remove("full_name");
    f.ok(
        "register without full_name",
        node.post("/v1/auth/register", None, None, &missing).problem(&[400], &[]),
    );
    f.ok(
        "login without a password",
        node.post("/v1/auth/login", None, None, &json!({"email": alice.email})).problem(&[400], &[]),
    );
    f.ok(
        "login with an unknown field",
        node.post(
            "/v1/auth/login",
            None,
            None,
            &json!({"email": alice.email, "password": PASSWORD, "remember": true}),
        )
        .problem(&[400], &["invalid_request"]),
    );
    f.check(node.login("shape@example.com", PASSWORD).status == 401, || {
        "a refused registration created an account".into()
    });
    f.finish();
}

// ---------------------------------------------------------------------------------------------
// 5. Public routes, request ids, metrics, OpenAPI, JWKS
// ---------------------------------------------------------------------------------------------

#[test]
fn public_routes_request_ids_metrics_openapi_and_jwks() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let node = Node::start(dir.path());
    let mut f = Findings::default();
    let user = node.new_user("public.user");
    assert_eq!(node.deposit(&user, "pub-dep", "50.00").status, 201);

    let r = node.get("/healthz", None);
    f.status("healthz", &r, 200);
    let v = r.json();
    f.check(v["status"] == "ok" && v["node_id"].as_str().is_some_and(|s| !s.is_empty()), || {
        format!("healthz body {v}")
    });
    f.status("readyz", &node.get("/readyz", None), 200);

    // Every response carries a request id, including errors.
    let mut oversized = br#"{"amount":""#.to_vec();
    oversized.resize(70 * 1024, b'1');
    let responses = vec![
        node.get("/healthz", None),
        node.get("/readyz", None),
        node.get("/metrics", None),
        node.get("/openapi.json", None),
        node.get("/.well-known/jwks.json", None),
        node.get("/v1/instruments", None),
        node.get("/v1/instruments/NOPE", None),
        node.get("/v1/me", None),
        node.get("/v1/me", Some(&user.token)),
        node.get("/no/such/route", None),
        node.request("DELETE", "/v1/instruments"),
        node.login(&user.email, "wrong-password-123"),
        retry_on_reset(|| node.post_raw("/v1/portfolio/deposits", Some(&user.token), Some("pub-413"), oversized.clone())),
        node.post_raw("/v1/portfolio/deposits", Some(&user.token), Some("pub-400"), b"{".to_vec()),
        node.deposit(&user, "pub-dep", "50.00"),
    ];
    let mut ids = Vec::new();
    for r in &responses {
        match r.header("x-request-id") {
            Some(id) if !id.is_empty() => ids.push(id),
            _ => f.0.push(format!("no X-Request-Id on {}", r.what())),
        }
    }
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    f.check(unique.len() == ids.len(), || format!("request ids repeat: {ids:?}"));

    // Metrics.
    let r = node.get("/metrics", None);
    f.status("metrics", &r, 200);
    let ct = r.header("content-type").unwrap_or_default();
    f.check(ct.starts_with("text/plain; version=0.0.4"), || format!("/metrics Content-Type {ct:?}"));
    f.check(!r.body.contains("# EOF"), || "/metrics in Prometheus text ends with # EOF".into());
    // A scraper that asks for OpenMetrics gets it.
    let om = node.call(
        "GET",
        "/metrics",
        node.builder("GET", "/metrics", None, None)
            .header("accept", "application/openmetrics-text; version=1.0.0"),
    );
    f.check(
        om.header("content-type").unwrap_or_default().starts_with("application/openmetrics-text") && om.body.trim_end().ends_with("# EOF"),
        || format!("/metrics asked for OpenMetrics: {:?}", om.header("content-type")),
    );
    // A method HTTP does not define is counted under one label, not under its own series.
    node.request("FROBNICATE", "/healthz");
    let r = node.get("/metrics", None);
    let samples: Vec<&str> = r.body.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()).collect();
    f.check(r.body.contains("# TYPE"), || "/metrics has no # TYPE lines".into());
    f.check(!r.body.contains("FROBNICATE") && r.body.contains("method=\"OTHER\""), || {
        "/metrics: an unknown method should be counted as OTHER".into()
    });
    for route in ["/healthz", "/v1/auth/register", "/v1/portfolio/deposits"] {
        let counted = samples.iter().any(|l| {
            let name = l.split(['{', ' ']).next().unwrap_or_default();
            name.contains("request") && !name.contains("duration") && !name.contains("bucket") && l.contains(&format!("\"{route}\""))
        });
        f.check(counted, || format!("/metrics has no request count for route {route}"));
    }
    let commit: Vec<&&str> = samples
        .iter()
        .filter(|l| l.split(['{', ' ']).next().unwrap_or_default().contains("commit"))
        .collect();
    f.check(!commit.is_empty(), || "/metrics has no group-commit figures".into());
    f.check(
        commit
            .iter()
            .any(|l| l.split_whitespace().last().and_then(|v| v.parse::<f64>().ok()).is_some_and(|v| v > 0.0)),
        || format!("/metrics group-commit figures are all zero after writes: {commit:?}"),
    );

    // OpenAPI.
    let r = node.get("/openapi.json", None);
    f.status("openapi.json", &r, 200);
    f.check(r.header("content-type").unwrap_or_default().starts_with("application/json"), || {
        format!("/openapi.json Content-Type {:?}", r.header("content-type"))
    });
    let doc = r.json();
    f.check(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")), || {
        format!("openapi version {}", doc["openapi"])
    });
    f.check(doc["info"]["title"].is_string() && doc["info"]["version"].is_string(), || {
        format!("openapi info {}", doc["info"])
    });
    for (method, path) in [
        ("get", "/healthz"),
        ("get", "/readyz"),
        ("get", "/metrics"),
        ("get", "/openapi.json"),
        ("get", "/.well-known/jwks.json"),
        ("post", "/v1/auth/register"),
        ("post", "/v1/auth/login"),
        ("get", "/v1/me"),
        ("get", "/v1/instruments"),
        ("get", "/v1/instruments/{symbol}"),
        ("get", "/v1/portfolio"),
        ("post", "/v1/portfolio/deposits"),
        ("post", "/v1/portfolio/withdrawals"),
        ("get", "/v1/portfolio/transactions"),
        ("post", "/v1/orders"),
        ("get", "/v1/orders"),
        ("get", "/v1/orders/{order_id}"),
    ] {
        f.check(doc["paths"][path][method].is_object(), || format!("openapi.json lacks {method} {path}"));
    }
    // ...and everything it documents is served (not the "no route" 404, not 405).
    let no_route = node.get("/no/such/route", None).json()["code"].clone();
    for (path, item) in doc["paths"].as_object().cloned().unwrap_or_default() {
        let concrete = path.replace("{symbol}", "ACME").replace("{order_id}", "ord_x").replace("{file}", "app.js");
        for method in item.as_object().map(|m| m.keys().cloned().collect::<Vec<_>>()).unwrap_or_default() {
            if !["get", "post", "put", "patch", "delete"].contains(&method.as_str()) {
                continue;
            }
            let r = node.request(&method.to_uppercase(), &concrete);
            let unrouted = r.status == 405 || (r.status == 404 && serde_json::from_str::<Value>(&r.body).map(|v| v["code"] == no_route).unwrap_or(true));
            f.check(!unrouted || concrete == "/v1/orders/ord_x", || {
                format!("openapi.json documents {method} {path} but the gateway answers {}", r.what())
            });
        }
    }

    // JWKS and the access token.
    let r = node.get("/.well-known/jwks.json", None);
    f.status("jwks", &r, 200);
    let jwks = r.json();
    let (header, claims, sig) = jwt_parts(&user.token);
    f.check(header["alg"] == "EdDSA", || format!("access token alg {}", header["alg"]));
    let key = jwks["keys"]
        .as_array()
        .and_then(|keys| keys.iter().find(|k| k["kid"] == header["kid"]).cloned());
    match key {
        None => f.0.push(format!("no JWKS key has the token's kid {}: {jwks}", header["kid"])),
        Some(k) => {
            f.check(k["kty"] == "OKP" && k["crv"] == "Ed25519", || format!("JWKS key is not OKP/Ed25519: {k}"));
            f.check(k.get("d").is_none(), || "the JWKS publishes a private key (`d`)".into());
            let x = B64.decode(k["x"].as_str().unwrap_or_default()).unwrap_or_default();
            f.check(x.len() == 32, || format!("JWKS x is not a 32-byte Ed25519 key: {}", k["x"]));
            let signed = user.token.rsplit_once('.').map(|(s, _)| s).unwrap_or_default();
            f.check(UnparsedPublicKey::new(&ED25519, &x).verify(signed.as_bytes(), &sig).is_ok(), || {
                "the JWKS key does not verify the access token".into()
            });
        }
    }
    let login = node.login(&user.email, PASSWORD).json();
    let (_, fresh, _) = jwt_parts(login["access_token"].as_str().unwrap_or("a.b.c"));
    let (iat, exp) = (fresh["iat"].as_i64(), fresh["exp"].as_i64());
    f.check(exp.is_some_and(|e| e as f64 > now_unix()), || {
        format!("token exp {:?} is not in the future", fresh["exp"])
    });
    if let (Some(iat), Some(exp), Some(ttl)) = (iat, exp, login["expires_in"].as_i64()) {
        f.check((exp - iat - ttl).abs() <= 2, || {
            format!("expires_in {ttl} does not match exp - iat = {}", exp - iat)
        });
    }
    f.check(claims.get("email").is_none() && claims.get("full_name").is_none(), || {
        format!("the access token carries personal data: {claims}")
    });
    f.finish();
}

// ---------------------------------------------------------------------------------------------
// 6. Unknown routes and wrong methods
// ---------------------------------------------------------------------------------------------

#[test]
fn unknown_routes_are_404_and_wrong_methods_405_as_problem_json() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let node = Node::start(dir.path());
    let mut f = Findings::default();
    for path in ["/nope", "/v1", "/v1/instrument", "/v1/orders/a/b", "/v2/orders", "/healthz/extra", "/V1/ME"] {
        f.ok(&format!("GET {path}"), node.get(path, None).problem(&[404], &[]));
    }
    f.ok("POST /nope", node.post("/nope", None, None, &json!({})).problem(&[404], &[]));
    for (method, path) in [
        ("POST", "/healthz"),
        ("DELETE", "/v1/instruments"),
        ("PUT", "/v1/instruments/ACME"),
        ("GET", "/v1/auth/login"),
        ("GET", "/v1/auth/register"),
        ("DELETE", "/v1/portfolio"),
        ("GET", "/v1/portfolio/deposits"),
        ("PATCH", "/v1/orders/ord_1"),
        ("PUT", "/v1/orders"),
    ] {
        let r = node.request(method, path);
        f.ok(&format!("{method} {path}"), r.problem(&[405], &[]));
    }
    f.finish();
}

/// Not in API.md but required by HTTP (RFC 9110): a 405 carries `Allow` (section 15.5.6), and a
/// general-purpose server supports HEAD wherever it supports GET (section 9.1) - load balancers
/// commonly probe health with HEAD.
#[test]
fn http_semantics_allow_header_on_405_and_head_where_get_works() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let node = Node::start(dir.path());
    let mut f = Findings::default();
    for (method, path, allowed) in [
        ("POST", "/healthz", "GET"),
        ("DELETE", "/v1/instruments", "GET"),
        ("GET", "/v1/auth/login", "POST"),
        ("PUT", "/v1/orders", "POST"),
    ] {
        let r = node.request(method, path);
        let allow = r.header("allow").unwrap_or_default();
        f.check(r.status == 405 && allow.contains(allowed), || {
            format!("{method} {path}: 405 must carry Allow naming {allowed}; got {} with Allow {allow:?}", r.status)
        });
    }
    for path in ["/healthz", "/readyz", "/v1/instruments"] {
        let r = node.request("HEAD", path);
        f.check(r.status == 200, || format!("HEAD {path} -> {} (GET {path} is 200)", r.status));
    }
    f.finish();
}

/// The web app (issue 14): `/` and `/app/{file}` are served from the binary; every answer, the
/// API's included, carries a Content-Security-Policy with no inline script, no third-party
/// origin and no framing, plus X-Frame-Options, Referrer-Policy and nosniff.
#[test]
fn the_web_app_is_served_under_a_strict_content_security_policy() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let node = Node::start(dir.path());
    let mut f = Findings::default();
    let page = node.get("/", None);
    f.check(
        page.status == 200 && page.header("content-type").unwrap_or_default().starts_with("text/html"),
        || page.what(),
    );
    f.check(page.body.contains(r#"<script type="module" src="/app/app.js"></script>"#), || page.what());
    for (path, kind) in [
        ("/app/app.js", "text/javascript"),
        ("/app/app.css", "text/css"),
        ("/app/uPlot.esm.js", "text/javascript"),
    ] {
        let r = node.get(path, None);
        f.check(r.status == 200 && r.header("content-type").unwrap_or_default().starts_with(kind), || r.what());
    }
    f.ok("GET /app/missing.js", node.get("/app/missing.js", None).problem(&[404], &["not_found"]));
    f.ok(
        "GET /app/../config.toml",
        node.get("/app/..%2Fconfig.toml", None).problem(&[404], &["not_found"]),
    );
    for path in ["/", "/app/app.js", "/v1/instruments", "/nope"] {
        let r = node.get(path, None);
        let csp = r.header("content-security-policy").unwrap_or_default();
        let directives: std::collections::BTreeMap<&str, &str> = csp.split(';').filter_map(|d| d.trim().split_once(' ')).collect();
        for (name, want) in [
            ("default-src", "'none'"),
            ("script-src", "'self'"),
            ("style-src", "'self'"),
            ("connect-src", "'self'"),
            ("frame-ancestors", "'none'"),
            ("object-src", "'none'"),
            ("base-uri", "'none'"),
        ] {
            f.check(directives.get(name) == Some(&want), || format!("GET {path}: {name} must be {want}: {csp}"));
        }
        f.check(!csp.contains("unsafe") && !csp.contains("http"), || format!("GET {path}: {csp}"));
        f.check(r.header("x-frame-options").as_deref() == Some("DENY"), || {
            format!("GET {path}: X-Frame-Options")
        });
        f.check(r.header("referrer-policy").as_deref() == Some("no-referrer"), || {
            format!("GET {path}: Referrer-Policy")
        });
        f.check(r.header("x-content-type-options").as_deref() == Some("nosniff"), || {
            format!("GET {path}: nosniff")
        });
    }
    // The order's estimate, priced by the domain as the order path prices it.
    let q = node.get("/v1/instruments/ACME/quote?side=buy&quantity=10", None);
    f.check(q.status == 200, || q.what());
    if q.status == 200 {
        let v = q.json();
        let d = |k: &str| v[k].as_str().unwrap_or_default().parse::<f64>().unwrap_or(f64::NAN);
        f.check((d("price") - d("market_price") * 1.0005).abs() < 0.0001, || format!("5 bps of slippage: {v}"));
        f.check((d("notional") - (d("price") * 10.0 * 100.0).round() / 100.0).abs() < 0.001, || {
            format!("notional: {v}")
        });
        f.check((d("fees") - (d("notional") * 0.001).max(1.0)).abs() < 0.006, || format!("fee: {v}"));
        f.check((d("total") - d("notional") - d("fees")).abs() < 0.001, || format!("total: {v}"));
    }
    f.ok(
        "quote, no side",
        node.get("/v1/instruments/ACME/quote?quantity=1", None).problem(&[400], &["invalid_request"]),
    );
    f.ok(
        "quote, zero",
        node.get("/v1/instruments/ACME/quote?side=sell&quantity=0", None)
            .problem(&[422], &["invalid_quantity"]),
    );
    f.ok(
        "quote, unlisted",
        node.get("/v1/instruments/NOPE/quote?side=buy&quantity=1", None)
            .problem(&[404], &["unknown_instrument"]),
    );
    let fees = node.get("/v1/fees", None);
    f.check(fees.status == 200, || fees.what());
    if fees.status == 200 {
        let v = fees.json();
        f.check(
            v["currency"] == "USD" && v["commission_bps"] == "10" && v["minimum"] == "1.00" && v["slippage_bps"] == "5",
            || fees.what(),
        );
    }
    f.finish();
}

// ---------------------------------------------------------------------------------------------
// 7. Instruments
// ---------------------------------------------------------------------------------------------

#[test]
fn instruments_are_listed_with_every_kind_and_complexity_flags() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let node = Node::start(dir.path());
    let mut f = Findings::default();
    let r = node.get("/v1/instruments", None);
    assert_eq!(r.status, 200, "{}", r.what());
    let list = r.json().as_array().cloned().unwrap_or_else(|| panic!("not a list: {}", r.body));
    f.check(list.len() >= 12, || format!("only {} instruments", list.len()));
    let mut kinds = std::collections::BTreeSet::new();
    let mut symbols = Vec::new();
    for i in &list {
        for field in ["symbol", "name", "kind", "complex", "currency", "price", "as_of"] {
            f.check(i.get(field).is_some(), || format!("instrument lacks `{field}`: {i}"));
        }
        let kind = i["kind"].as_str().unwrap_or_default().to_string();
        f.check(
            ["equity", "etf", "bond", "fund", "derivative", "leveraged_etf"].contains(&kind.as_str()),
            || format!("unknown kind: {i}"),
        );
        let complex = kind == "derivative" || kind == "leveraged_etf";
        f.check(i["complex"].as_bool() == Some(complex), || {
            format!("complex should be {complex} for kind {kind}: {i}")
        });
        f.check(i["name"].as_str().is_some_and(|s| !s.is_empty()), || format!("instrument name: {i}"));
        f.check(i["currency"].as_str().is_some_and(|s| s.len() == 3), || format!("instrument currency: {i}"));
        f.check(
            i["price"].as_str().is_some_and(is_decimal_string) && dec(&i["price"], "price") > Decimal::ZERO,
            || format!("instrument price: {i}"),
        );
        f.ok(&format!("instrument {} as_of", i["symbol"]), recent_time(&i["as_of"]));
        kinds.insert(kind);
        symbols.push(i["symbol"].as_str().unwrap_or_default().to_string());
    }
    f.check(kinds.len() == 6, || format!("kinds present: {kinds:?}"));
    let mut unique = symbols.clone();
    unique.sort();
    unique.dedup();
    f.check(unique.len() == symbols.len(), || format!("duplicate symbols: {symbols:?}"));
    for (i, symbol) in list.iter().zip(&symbols) {
        let r = node.get(&format!("/v1/instruments/{symbol}"), None);
        if f.status(&format!("GET /v1/instruments/{symbol}"), &r, 200) {
            let one = r.json();
            f.check(
                one["symbol"] == i["symbol"] && one["kind"] == i["kind"] && one["complex"] == i["complex"] && one["name"] == i["name"],
                || format!("GET /v1/instruments/{symbol} = {one}, listed as {i}"),
            );
        }
    }
    for symbol in ["NOPE", "acme-nope", "%20"] {
        f.ok(
            &format!("GET /v1/instruments/{symbol}"),
            node.get(&format!("/v1/instruments/{symbol}"), None).problem(&[404], &["unknown_instrument"]),
        );
    }
    f.finish();
}

// ---------------------------------------------------------------------------------------------
// 8. Graceful shutdown, the offline audit check and a restart
// ---------------------------------------------------------------------------------------------

fn run_with_timeout(mut cmd: Command, within: Duration) -> Option<Output> {
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn");
    let deadline = Instant::now() + within;
    while child.try_wait().expect("poll").is_none() {
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Some(child.wait_with_output().expect("collect output"))
}

#[test]
fn sigterm_shuts_down_cleanly_audit_verifies_and_state_survives_a_restart() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut f = Findings::default();
    let mut node = Node::start(dir.path());
    let user = node.new_user("durable.user");
    let dep = node.deposit(&user, "dur-dep", "500.00");
    assert_eq!(dep.status, 201, "{}", dep.what());
    let buy = node.order(&user, "dur-buy", "BALF", "buy", "1.5");
    assert_eq!(buy.status, 201, "{}", buy.what());
    let order_id = buy.json()["order_id"].as_str().unwrap_or_default().to_string();
    let before = node.snapshot(&user);

    // While the node runs the offline verifier must not hang (or corrupt anything).
    let out = run_with_timeout(node.cli(&["audit", "verify"]), Duration::from_secs(10));
    f.check(out.as_ref().is_some_and(|o| !o.status.success()), || {
        format!("`moneta audit verify` while the node runs: {out:?}")
    });

    let started = Instant::now();
    let status = node.terminate(Duration::from_secs(10));
    match status {
        None => panic!("the node did not exit within 10 s of SIGTERM; output:\n{}", node.logs()),
        Some(s) => f.check(s.success(), || format!("exit status after SIGTERM: {s}; output:\n{}", node.logs())),
    }
    f.check(started.elapsed() < Duration::from_secs(5), || format!("shutdown took {:?}", started.elapsed()));

    let out = run_with_timeout(node.cli(&["audit", "verify"]), Duration::from_secs(20)).expect("`moneta audit verify` finishes within 20 s");
    let stdout = String::from_utf8_lossy(&out.stdout);
    f.check(out.status.success() && stdout.contains("OK"), || {
        format!(
            "`moneta audit verify`: {} stdout {stdout:?} stderr {:?}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )
    });

    // Restart on the same data: the account, the portfolio and idempotency survive.
    let mut node = Node::start(dir.path());
    let r = node.login(&user.email, PASSWORD);
    assert_eq!(r.status, 200, "login after a restart: {}", r.what());
    let token = r.json()["access_token"].as_str().unwrap_or_default().to_string();
    let user = User { token, ..user };
    f.check(node.snapshot(&user) == before, || {
        format!("state changed over a restart: before {before:?}, after {:?}", node.snapshot(&user))
    });
    let again = node.deposit(&user, "dur-dep", "500.00");
    f.check(again.status == dep.status && again.body == dep.body, || {
        format!("deposit replay after a restart: first {}, then {}", dep.what(), again.what())
    });
    let again = node.order(&user, "dur-buy", "BALF", "buy", "1.5");
    f.check(again.status == buy.status && again.body == buy.body, || {
        format!("order replay after a restart: first {}, then {}", buy.what(), again.what())
    });
    f.check(node.snapshot(&user) == before, || "replays after a restart changed the portfolio".into());
    f.status(
        "GET the order after a restart",
        &node.get(&format!("/v1/orders/{order_id}"), Some(&user.token)),
        200,
    );
    let status = node.terminate(Duration::from_secs(10));
    f.check(status.is_some_and(|s| s.success()), || format!("second shutdown: {status:?}"));
    f.finish();
}

// ---------------------------------------------------------------------------------------------
// Robustness: extreme numbers must not take the node down
// ---------------------------------------------------------------------------------------------

#[test]
fn extreme_amounts_and_quantities_never_cause_server_errors() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let node = Node::start(dir.path());
    let mut f = Findings::default();
    let user = node.new_user("extreme.user");
    let mut n = 0;
    let mut key = || {
        n += 1;
        format!("x-{n}")
    };
    let mut answers = Vec::new();
    for amount in [
        MAX_DECIMAL,
        MAX_DECIMAL,
        "792281625142643375935439503.35",
        "1000000000000000000000000000000000000000",
        "0.0000000000000000000000000001",
    ] {
        answers.push(node.deposit(&user, &key(), amount));
        answers.push(node.get("/v1/portfolio", Some(&user.token)));
    }
    for q in [MAX_DECIMAL, "0.0000000000000000000000000001", "1"] {
        answers.push(node.order(&user, &key(), "ACME", "buy", q));
        answers.push(node.get("/v1/portfolio", Some(&user.token)));
    }
    answers.push(node.withdraw(&user, &key(), MAX_DECIMAL));
    answers.push(node.get("/v1/portfolio/transactions", Some(&user.token)));
    for r in &answers {
        f.check(r.status != 0 && r.status < 500, || format!("server error or dropped connection: {}", r.what()));
        if (400..500).contains(&r.status) {
            f.ok("a refused extreme request", r.problem(&[r.status], &[]).map(|_| ()));
        }
    }
    f.status("healthz after extreme requests", &node.get("/healthz", None), 200);
    f.finish();
}

/// SIGTERM while clients are depositing: the node still exits 0, the audit chain verifies, and
/// every deposit that was answered 201 survives the restart (and replays with the same answer).
#[test]
fn sigterm_under_load_keeps_every_acknowledged_deposit() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut f = Findings::default();
    let mut node = Node::start(dir.path());
    let user = node.new_user("load.user");
    let url = node.url("/v1/portfolio/deposits");
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (acked, attempted, status) = std::thread::scope(|s| {
        let workers: Vec<_> = (0..4)
            .map(|w| {
                let (client, url, token, stop) = (node.client.clone(), url.clone(), user.token.clone(), &stop);
                s.spawn(move || {
                    let (mut acked, mut attempted) = (Vec::new(), 0u32);
                    let mut after_signal = 0;
                    for i in 0..2_000 {
                        if stop.load(std::sync::atomic::Ordering::SeqCst) {
                            after_signal += 1;
                            if after_signal > 50 {
                                break; // the node keeps answering after SIGTERM: stop hammering it
                            }
                        }
                        let key = format!("load-{w}-{i}");
                        attempted += 1;
                        match client
                            .post(&url)
                            .bearer_auth(&token)
                            .header("Idempotency-Key", &key)
                            .json(&json!({"amount": "1.00"}))
                            .send()
                        {
                            Ok(r) if r.status().as_u16() == 201 => acked.push((key, r.text().unwrap_or_default())),
                            Ok(r) if r.status().as_u16() == 503 => {}
                            Ok(r) => panic!("deposit {key}: unexpected {} {}", r.status(), r.text().unwrap_or_default()),
                            Err(_) => break,
                        }
                    }
                    (acked, attempted)
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(400));
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let status = node.terminate(Duration::from_secs(10));
        let mut acked = Vec::new();
        let mut attempted = 0;
        for w in workers {
            let (a, n) = w.join().expect("a worker");
            acked.extend(a);
            attempted += n;
        }
        (acked, attempted, status)
    });
    match status {
        None => panic!("the node did not exit within 10 s of SIGTERM under load; output:\n{}", node.logs()),
        Some(s) => f.check(s.success(), || format!("exit status after SIGTERM under load: {s}; output:\n{}", node.logs())),
    }
    assert!(!acked.is_empty(), "no deposit was acknowledged before the shutdown");
    eprintln!("{} deposits acknowledged of {attempted} attempted around SIGTERM", acked.len());
    let out = run_with_timeout(node.cli(&["audit", "verify"]), Duration::from_secs(20)).expect("`moneta audit verify` finishes");
    let stdout = String::from_utf8_lossy(&out.stdout);
    f.check(out.status.success() && stdout.contains("OK"), || {
        format!("`moneta audit verify` after a loaded shutdown: {} {stdout:?}", out.status)
    });

    let node = Node::start(dir.path());
    let r = node.login(&user.email, PASSWORD);
    assert_eq!(r.status, 200, "{}", r.what());
    let user = User {
        token: r.json()["access_token"].as_str().unwrap_or_default().to_string(),
        ..user
    };
    let cash = dec(&node.portfolio(&user)["cash"], "cash");
    let (lo, hi) = (Decimal::from(acked.len()), Decimal::from(attempted));
    f.check(cash >= lo && cash <= hi, || {
        format!("cash after the restart is {cash}; {lo} deposits of 1.00 were acknowledged, {hi} attempted")
    });
    for (key, body) in acked.iter().rev().take(20) {
        let r = node.deposit(&user, key, "1.00");
        f.check(r.status == 201 && &r.body == body, || {
            format!("acknowledged deposit {key} ({body}) replays after the restart as {}", r.what())
        });
    }
    f.check(dec(&node.portfolio(&user)["cash"], "cash") == cash, || {
        "replaying acknowledged deposits after the restart moved cash".into()
    });
    f.finish();
}

/// API.md: "The same key with the same body returns the first response again and changes nothing"
/// - including when that first response was a refusal.
#[test]
fn idempotency_replays_a_refused_first_response() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let node = Node::start(dir.path());
    let mut f = Findings::default();
    let user = node.new_user("idem.refused");
    let first = node.order(&user, "refused-1", "ACME", "buy", "1");
    assert_eq!(first.status, 422, "{}", first.what());
    let first_w = node.withdraw(&user, "refused-2", "5.00");
    assert_eq!(first_w.status, 422, "{}", first_w.what());
    assert_eq!(node.deposit(&user, "refused-funding", "1000.00").status, 201);
    let before = node.snapshot(&user);
    let again = node.order(&user, "refused-1", "ACME", "buy", "1");
    f.check(again.status == first.status && again.body == first.body, || {
        format!("order key first answered {}, the same request later {}", first.what(), again.what())
    });
    let again = node.withdraw(&user, "refused-2", "5.00");
    f.check(again.status == first_w.status && again.body == first_w.body, || {
        format!("withdrawal key first answered {}, the same request later {}", first_w.what(), again.what())
    });
    f.check(node.snapshot(&user) == before, || {
        "replaying keys whose first answer was a refusal changed the portfolio".into()
    });
    f.finish();
}

/// Fees, fractional quantities, partial sells, emptying the account and concurrent spending:
/// cash never goes negative and positions stay consistent.
#[test]
fn cash_never_goes_negative_and_positions_stay_consistent() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let node = Node::start(dir.path());
    let mut f = Findings::default();
    let cash_of = |u: &User| dec(&node.portfolio(u)["cash"], "cash");

    // The fee must fit in the cash too.
    let u = node.new_user("edge.fees");
    assert_eq!(node.deposit(&u, "e-dep", "10.00").status, 201);
    let r = node.order(&u, "e-1", "MMKT", "buy", "9.5"); // ~9.50 + 1.00 minimum fee > 10.00
    f.ok("buy whose fee does not fit", r.problem(&[422], &["insufficient_funds"]));
    let r = node.order(&u, "e-2", "MMKT", "buy", "8.5");
    f.status("buy 8.5 MMKT with 10.00", &r, 201);
    for (i, q) in ["0.01", "0.5", "1"].iter().enumerate() {
        let r = node.order(&u, &format!("e-sell-{i}"), "MMKT", "sell", q);
        f.check(r.status == 201 || r.status == 422, || format!("sell {q} MMKT: {}", r.what()));
        let c = cash_of(&u);
        f.check(c >= Decimal::ZERO, || {
            format!("cash went negative ({c}) after selling {q} MMKT, whose proceeds are below the 1.00 fee")
        });
    }
    let c = cash_of(&u);
    if c > Decimal::ZERO {
        let r = node.withdraw(&u, "e-wd-all", &c.to_string());
        f.status(&format!("withdraw all the cash ({c})"), &r, 201);
        if r.status == 201 {
            f.check(dec(&r.json()["cash"], "cash").is_zero(), || {
                format!("withdrawing everything answered {}", r.body)
            });
        }
    }
    let r = node.withdraw(&u, "e-wd-more", "0.01");
    f.ok("withdraw from an empty account", r.problem(&[422], &["insufficient_funds"]));

    // Fractional quantities and weighted average cost; a partial sell keeps the average.
    let u = node.new_user("edge.avg");
    assert_eq!(node.deposit(&u, "a-dep", "5000.00").status, 201);
    let b1 = node.order(&u, "a-1", "INIT", "buy", "1.234567");
    assert_eq!(b1.status, 201, "{}", b1.what());
    let b1 = b1.json();
    f.check(dec(&b1["quantity"], "quantity") == Decimal::from_str("1.234567").expect("decimal"), || {
        format!("fractional buy answered {b1}")
    });
    std::thread::sleep(Duration::from_millis(1100));
    let b2 = node.order(&u, "a-2", "INIT", "buy", "2").json();
    let (q1, p1, fee1) = (dec(&b1["quantity"], "q"), dec(&b1["price"], "p"), dec(&b1["fees"], "fees"));
    let (q2, p2, fee2) = (dec(&b2["quantity"], "q"), dec(&b2["price"], "p"), dec(&b2["fees"], "fees"));
    let p = node.portfolio(&u);
    let cash = dec(&p["cash"], "cash");
    let spent = (q1 * p1).round_dp(2) + fee1 + (q2 * p2).round_dp(2) + fee2;
    f.check(close(cash, Decimal::from(5000) - spent), || {
        format!("cash {cash} after two buys costing {spent} in all")
    });
    let h = &p["holdings"][0];
    let avg = dec(&h["average_cost"], "average_cost");
    let plain = (q1 * p1 + q2 * p2) / (q1 + q2);
    let with_fees = (q1 * p1 + fee1 + q2 * p2 + fee2) / (q1 + q2);
    f.check(dec(&h["quantity"], "quantity") == q1 + q2, || format!("holding after two buys: {h}"));
    f.check(close(avg, plain) || close(avg, with_fees), || {
        format!("average_cost {avg}, expected the weighted {plain} (or {with_fees} with fees)")
    });
    let r = node.order(&u, "a-3", "INIT", "sell", "1.5");
    f.status("partial sell", &r, 201);
    let h = node.portfolio(&u)["holdings"][0].clone();
    f.check(dec(&h["quantity"], "quantity") == q1 + q2 - Decimal::from_str("1.5").expect("decimal"), || {
        format!("holding after a partial sell: {h}")
    });
    f.check(close(dec(&h["average_cost"], "average_cost"), avg), || {
        format!("a partial sell changed average_cost from {avg}: {h}")
    });

    // Concurrent orders with different keys cannot overspend.
    let u = node.new_user("edge.race");
    assert_eq!(node.deposit(&u, "r-dep", "100.00").status, 201);
    let url = node.url("/v1/orders");
    let answers: Vec<(u16, Value)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|i| {
                let (client, url, token) = (node.client.clone(), url.clone(), u.token.clone());
                s.spawn(move || {
                    let r = client
                        .post(url)
                        .bearer_auth(token)
                        .header("Idempotency-Key", format!("race-order-{i}"))
                        .json(&json!({"symbol": "MMKT", "side": "buy", "quantity": "60"}))
                        .send()
                        .expect("send");
                    let status = r.status().as_u16();
                    (status, r.json::<Value>().unwrap_or(Value::Null))
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("thread")).collect()
    });
    let filled: Vec<&Value> = answers.iter().filter(|(s, _)| *s == 201).map(|(_, v)| v).collect();
    f.check(filled.len() == 1, || {
        format!("8 concurrent buys of ~61.00 with 100.00 cash: {} filled: {answers:?}", filled.len())
    });
    f.check(
        answers.iter().all(|(s, v)| *s == 201 || (*s == 422 && v["code"] == "insufficient_funds")),
        || format!("concurrent buys answered {answers:?}"),
    );
    let cost: Decimal = filled
        .iter()
        .map(|o| (dec(&o["quantity"], "q") * dec(&o["price"], "p")).round_dp(2) + dec(&o["fees"], "fees"))
        .sum();
    let c = cash_of(&u);
    f.check(c >= Decimal::ZERO && close(c, Decimal::from(100) - cost), || {
        format!("cash {c} after concurrent buys costing {cost}")
    });
    f.finish();
}

/// "401 without a valid token": an expired access token is refused. The TTL is shortened with the
/// documented MONETA_<SECTION>_<KEY> override to its minimum (30 s), and a token is refused from
/// its expiry on (no leeway past `exp`), so this waits ~32 s (it runs alongside the other tests
/// of this file).
#[test]
fn expired_access_tokens_are_refused() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let node = Node::start_with(dir.path(), &[("MONETA_AUTH_ACCESS_TOKEN_TTL", "30s")]);
    let mut f = Findings::default();
    let email = "expiry@example.com";
    assert_eq!(node.register(email, PASSWORD).status, 201);
    let login = node.login(email, PASSWORD);
    assert_eq!(login.status, 200, "{}", login.what());
    let v = login.json();
    f.check(v["expires_in"] == 30, || format!("expires_in {} with access_token_ttl = 30s", v["expires_in"]));
    let token = v["access_token"].as_str().unwrap_or_default().to_string();
    f.status("GET /v1/me with a fresh token", &node.get("/v1/me", Some(&token)), 200);
    std::thread::sleep(Duration::from_secs(25));
    f.status("GET /v1/me 25 s into a 30 s token", &node.get("/v1/me", Some(&token)), 200);
    std::thread::sleep(Duration::from_secs(7));
    f.ok("GET /v1/me 2 s after the token expired", node.get("/v1/me", Some(&token)).problem(&[401], &[]));
    f.ok(
        "GET /v1/portfolio with an expired token",
        node.get("/v1/portfolio", Some(&token)).problem(&[401], &[]),
    );
    f.finish();
}

#[test]
fn a_body_that_does_not_arrive_is_answered_408_within_the_request_timeout() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().expect("a temporary directory");
    let node = Node::start_with(dir.path(), &[("MONETA_GATEWAY_REQUEST_TIMEOUT", "1s")]);
    let mut s = std::net::TcpStream::connect(("127.0.0.1", node.port)).expect("connect to the node");
    s.set_read_timeout(Some(Duration::from_secs(15))).expect("a read timeout");
    // One byte of the hundred promised, then nothing.
    s.write_all(b"POST /v1/auth/login HTTP/1.1\r\nHost: moneta\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{")
        .expect("send the head");
    let mut answer = Vec::new();
    // The node closes the connection after its answer; the read timeout bounds the wait if not.
    let _ = s.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 408"), "expected 408, got {text:?}");
    assert!(
        text.contains("\"request_timeout\"") && text.to_ascii_lowercase().contains("x-request-id"),
        "{text}"
    );
    // The node is unharmed.
    assert_eq!(node.get("/healthz", None).status, 200);
}

/// A request hyper cannot parse (hyper answers it before any route runs) is a problem with a
/// stable code like every other refusal, and does nothing; a client that never ends its request
/// head is disconnected.
#[test]
fn a_request_head_that_does_not_parse_is_a_problem_and_one_that_never_ends_is_disconnected() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().expect("a temporary directory");
    let node = Node::start(dir.path());
    let mut f = Findings::default();
    let user = node.new_user("malformed.head");
    let raw = |request: &[u8]| -> String {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", node.port)).expect("connect to the node");
        s.set_read_timeout(Some(Duration::from_secs(10))).expect("a read timeout");
        s.write_all(request).expect("send the request");
        let mut answer = Vec::new();
        let _ = s.read_to_end(&mut answer);
        String::from_utf8_lossy(&answer).into_owned()
    };
    let deposit = |header: &str| -> Vec<u8> {
        let body = r#"{"amount":"100.00"}"#;
        format!(
            "POST /v1/portfolio/deposits HTTP/1.1\r\nHost: moneta\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\n{header}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            user.token,
            body.len()
        )
        .into_bytes()
    };
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        (
            "a control byte in a header value",
            deposit("Idempotency-Key: k\u{1}1"),
            400,
            "malformed_request",
        ),
        ("a space in a header name", deposit("Idempotency Key: k2"), 400, "malformed_request"),
        (
            "two Content-Lengths",
            deposit("Idempotency-Key: k3\r\nContent-Length: 3"),
            400,
            "malformed_request",
        ),
        ("a request line that is not HTTP", b"HELLO\r\n\r\n".to_vec(), 400, "malformed_request"),
        (
            "an HTTP version not spoken",
            b"GET /healthz HTTP/3.0\r\nHost: moneta\r\n\r\n".to_vec(),
            400,
            "malformed_request",
        ),
        (
            "headers larger than the server reads",
            format!("GET /healthz HTTP/1.1\r\nHost: moneta\r\nX-Big: {}\r\n\r\n", "a".repeat(600_000)).into_bytes(),
            431,
            "headers_too_large",
        ),
        // The authority form: warp panicked on it, and the client got no answer at all.
        (
            "a target that is not a path",
            b"GET a:1 HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
            400,
            "malformed_request",
        ),
        (
            "CONNECT to a host",
            b"CONNECT evil.example:443 HTTP/1.1\r\nHost: evil.example:443\r\n\r\n".to_vec(),
            400,
            "malformed_request",
        ),
    ];
    for (what, request, status, code) in cases {
        let answer = raw(&request);
        let Some((head, body)) = answer.split_once("\r\n\r\n") else {
            f.check(false, || format!("{what}: no answer head in {answer:?}"));
            continue;
        };
        let problem: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
        f.check(
            head.starts_with(&format!("HTTP/1.1 {status} "))
                && head.to_ascii_lowercase().contains("content-type: application/problem+json")
                && head.to_ascii_lowercase().contains("x-request-id: req_")
                && problem["code"] == code
                && problem["status"] == status,
            || format!("{what}: expected {status} problem+json {code}, got {answer:?}"),
        );
    }
    f.check(dec(&node.portfolio(&user)["cash"], "cash").is_zero(), || {
        "a deposit whose request head did not parse moved cash".into()
    });
    let metrics = node.get("/metrics", None);
    f.check(
        metrics
            .body
            .contains(r#"moneta_http_requests_total{method="OTHER",route="malformed",status="400"} 7"#),
        || {
            format!(
                "the seven malformed requests answered 400 are not counted in moneta_http_requests_total: {}",
                metrics.body
            )
        },
    );
    f.finish();

    // HTTP/2 without TLS (prior knowledge) is not spoken: it skipped HTTP/1.1's header limits.
    // The connection is closed unserved (an HTTP/2 client would not read an HTTP/1.1 answer).
    let answer = raw(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00");
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 4"),
        "the HTTP/2 preface was served: {answer:?}"
    );

    // A client that connects and sends nothing is closed after the header timeout (it held its
    // connection, one of a bounded number, for ever).
    let mut s = std::net::TcpStream::connect(("127.0.0.1", node.port)).expect("connect to the node");
    s.set_read_timeout(Some(Duration::from_secs(45))).expect("a read timeout");
    let mut nothing = Vec::new();
    let read = s.read_to_end(&mut nothing);
    assert!(read.is_ok(), "the node still held a silent connection after 45 s: {read:?}");

    let mut s = std::net::TcpStream::connect(("127.0.0.1", node.port)).expect("connect to the node");
    // The node allows 10 s for a request's headers; this bounds the wait if it never closes.
    s.set_read_timeout(Some(Duration::from_secs(45))).expect("a read timeout");
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: moneta\r\nX-Slow: ")
        .expect("send part of the head");
    let mut answer = Vec::new();
    let read = s.read_to_end(&mut answer);
    assert!(read.is_ok(), "the node still held a connection whose headers never ended after 45 s: {read:?}");
    let text = String::from_utf8_lossy(&answer);
    assert!(!text.starts_with("HTTP/1.1 2"), "a request with no end to its headers was served: {text:?}");
    // The node is unharmed.
    assert_eq!(node.get("/healthz", None).status, 200);
}
