//! AI advice against the real binary: consent and suitability gating, content (labelled as AI,
//! model version, disclosure, rationale), acceptance through the order path (idempotent), the
//! human review of unusual advice, consent withdrawal deleting it, and fairness.

mod common;
use common::*;

fn consent(node: &Node, token: &str, ai: bool) {
    let body = json!({"ai_profiling": ai, "marketing": false, "analytics": false});
    let r = node.call("PUT", "/v1/me/consents", node.builder("PUT", "/v1/me/consents", Some(token), None).json(&body));
    assert_eq!(r.status, 200, "{}", r.what());
}

fn cautious() -> Value {
    json!({"objective": "income", "horizon_years": 10, "loss_tolerance": "small", "investment_experience_years": 3,
        "knows_complex_products": false, "annual_income": "50000.00", "liquid_net_worth": "60000.00", "emergency_fund_months": 6})
}

#[test]
fn advice_is_gated_labelled_accepted_through_orders_and_deleted_with_consent() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path());
    let user = node.new_user("advised");
    node.get("/v1/advice", Some(&user.token)).problem(&[409], &["consent_required"]).unwrap();
    consent(&node, &user.token, true);
    assert_eq!(node.deposit(&user, "d1", "10000.00").status, 201);
    let r = node.get("/v1/advice", Some(&user.token));
    assert_eq!(r.status, 200, "{}", r.what());
    assert!(has_no_store(&r));
    let a = r.json();
    assert_eq!(a["generated_by"], "ai");
    assert!(a["model_version"].as_str().is_some_and(|v| !v.is_empty()));
    assert!(a["disclosure"].as_str().is_some_and(|d| d.contains("automated")), "{a}");
    assert!(a["rationale"].as_str().is_some_and(|t| t.contains("risk score 7")), "{a}");
    assert_eq!(a["risk_band"], "aggressive");
    assert_eq!(a["status"], "published", "{a}");
    // The allocation a client draws sums to 1: the cash buffer is a line of its own.
    let weight = |v: &Value| {
        v.as_str()
            .and_then(|w| w.parse::<rust_decimal::Decimal>().ok())
            .unwrap_or_else(|| panic!("a weight: {v}"))
    };
    let cash_weight = weight(&a["cash_weight"]);
    assert!(cash_weight > rust_decimal::Decimal::ZERO, "{a}");
    let invested: rust_decimal::Decimal = a["target_allocation"].as_array().unwrap().iter().map(|l| weight(&l["weight"])).sum();
    assert_eq!(invested + cash_weight, rust_decimal::Decimal::ONE, "{a}");
    let orders = a["proposed_orders"].as_array().unwrap().clone();
    assert!(!orders.is_empty() && orders.iter().all(|o| o["side"] == "buy"), "{a}");
    // Unchanged numbers: the same advice, same id.
    assert_eq!(node.get("/v1/advice", Some(&user.token)).json()["advice_id"], a["advice_id"]);

    // Accepting places its orders through the order path, idempotently.
    let id = a["advice_id"].as_str().unwrap();
    let path = format!("/v1/advice/{id}/accept");
    node.post(&path, Some(&user.token), None, &json!({}))
        .problem(&[400], &["idempotency_key_required"])
        .unwrap();
    node.post(&path, Some(&user.token), Some("accept-body"), &json!({"quantity": "1"}))
        .problem(&[400], &["invalid_request"])
        .unwrap();
    // A key already spent on a deposit cannot accept advice.
    node.post(&path, Some(&user.token), Some("d1"), &json!({}))
        .problem(&[422], &["idempotency_key_reused"])
        .unwrap();
    // Any key the API allows (1–128 visible characters) accepts advice.
    let accept_key = format!("accept-1-{}", "k".repeat(119));
    assert_eq!(accept_key.len(), 128);
    let r = node.post(&path, Some(&user.token), Some(&accept_key), &json!({}));
    assert_eq!(r.status, 201, "{}", r.what());
    let placed = r.json();
    assert_eq!(placed["orders"].as_array().unwrap().len(), orders.len());
    assert!(placed["orders"].as_array().unwrap().iter().all(|o| o["status"] == "filled"), "{placed}");
    let again = node.post(&path, Some(&user.token), Some(&accept_key), &json!({}));
    assert_eq!(again.json()["orders"], placed["orders"], "a retry replays the same orders");
    // The accept's key is spent for every other request.
    node.order(&user, &accept_key, "ACME", "buy", "1")
        .problem(&[422], &["idempotency_key_reused"])
        .unwrap();
    // Newer advice replaces the accepted one (the portfolio changed); a late retry of the accept
    // still answers what it did, and the key cannot accept the newer advice.
    let newer = node.get("/v1/advice", Some(&user.token)).json();
    assert_ne!(newer["advice_id"], a["advice_id"], "{newer}");
    let late = node.post(&path, Some(&user.token), Some(&accept_key), &json!({}));
    assert_eq!(late.status, 201, "{}", late.what());
    assert_eq!(late.json()["orders"], placed["orders"], "a retry after new advice replays the same orders");
    let other = format!("/v1/advice/{}/accept", newer["advice_id"].as_str().unwrap());
    node.post(&other, Some(&user.token), Some(&accept_key), &json!({}))
        .problem(&[422], &["idempotency_key_reused"])
        .unwrap();
    // Nothing was accepted (prices tick meanwhile, so the current advice may be newer still: a
    // slow run saw its id change between the two reads).
    let still = node.get("/v1/advice", Some(&user.token)).json();
    assert_eq!(still["status"], newer["status"], "the refused key changed nothing: {still}");
    let listed = node.get("/v1/orders", Some(&user.token)).json();
    assert_eq!(listed.as_array().unwrap().len(), orders.len(), "no order placed twice");

    // Withdrawing ai_profiling stops advice and deletes it.
    consent(&node, &user.token, false);
    node.get("/v1/advice", Some(&user.token)).problem(&[409], &["consent_required"]).unwrap();
    let export = node.get("/v1/me/export", Some(&user.token)).json();
    assert_eq!(export["advice"], json!([]), "advice data deleted");
    let actions: Vec<&str> = export["audit_records"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["action"].as_str())
        .collect();
    for a in ["advice.issued", "advice.accepted", "advice.deleted"] {
        assert!(actions.contains(&a), "{a} not audited: {actions:?}");
    }

    // Before the questionnaire: suitability_required.
    let fresh = {
        let r = node.register("no.questionnaire@example.com", PASSWORD);
        assert_eq!(r.status, 201);
        let token = node.login("no.questionnaire@example.com", PASSWORD).json()["access_token"]
            .as_str()
            .unwrap()
            .to_string();
        let r = node.post(
            "/v1/me/kyc",
            Some(&token),
            None,
            &json!({"document_type": "passport", "document_number": "123456789", "address": "1 High Street"}),
        );
        assert_eq!(r.status, 200);
        token
    };
    consent(&node, &fresh, true);
    node.get("/v1/advice", Some(&fresh)).problem(&[409], &["suitability_required"]).unwrap();
}

#[test]
fn unusual_advice_waits_for_a_compliance_officer() {
    let dir = tempfile::tempdir().unwrap();
    add_staff(dir.path(), "reviewer@example.com", "compliance");
    let node = Node::start_with(dir.path(), &[("MONETA_MARKET_TICK_INTERVAL", "50ms")]);
    let user = node.new_user("concentrated");
    consent(&node, &user.token, true);
    assert_eq!(node.deposit(&user, "d1", "5000.00").status, 201);
    // Everything in a leveraged ETF, then a cautious profile: the advice sells it all and
    // rebuys the model — more than half the portfolio turns over.
    assert_eq!(node.order(&user, "o1", "SPX3L", "buy", "80").status, 201);
    let r = node.post("/v1/me/suitability", Some(&user.token), None, &json!({"answers": cautious()}));
    assert_eq!(r.status, 200, "{}", r.what());
    let a = node.get("/v1/advice", Some(&user.token)).json();
    assert_eq!(a["status"], "pending_review", "{a}");
    assert!(
        a["proposed_orders"]
            .as_array()
            .unwrap()
            .iter()
            .any(|o| o["symbol"] == "SPX3L" && o["side"] == "sell"),
        "{a}"
    );
    let id = a["advice_id"].as_str().unwrap().to_string();
    let path = format!("/v1/advice/{id}/accept");
    node.post(&path, Some(&user.token), Some("acc"), &json!({}))
        .problem(&[409], &["advice_pending_review"])
        .unwrap();

    let officer = node.login("reviewer@example.com", PASSWORD).json()["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    let queue = node.get("/v1/compliance/review-queue", Some(&officer)).json();
    assert!(
        queue
            .as_array()
            .unwrap()
            .iter()
            .any(|q| q["advice_id"] == id.as_str() && q["user_id"] == user.id.as_str()),
        "{queue}"
    );
    let decide = format!("/v1/compliance/review-queue/{id}");
    node.post(&decide, Some(&officer), None, &json!({"decision": "maybe", "note": "?"}))
        .problem(&[400], &[])
        .unwrap();
    // A decision carries its reason for the record.
    node.post(&decide, Some(&officer), None, &json!({"decision": "approve"}))
        .problem(&[400], &["invalid_request"])
        .unwrap();
    // A note shows what it says: none that is invisible, none that reads backwards.
    for note in ["\u{200b}", "fine \u{202e}txet"] {
        node.post(&decide, Some(&officer), None, &json!({"decision": "approve", "note": note}))
            .problem(&[400], &["invalid_request"])
            .unwrap();
    }
    let r = node.post(
        &decide,
        Some(&officer),
        None,
        &json!({"decision": "approve", "note": "de-risking is right for this client"}),
    );
    assert_eq!(r.status, 200, "{}", r.what());
    // API.md: the investor's advice is "published" | "pending_review"; approved advice is
    // published, and says it was reviewed.
    assert_eq!((&r.json()["status"], &r.json()["review_decision"]), (&json!("published"), &json!("approved")));
    assert!(node.get("/v1/compliance/review-queue", Some(&officer)).json().as_array().unwrap().is_empty());
    // Prices move on (a tick every 50 ms): the investor still sees the advice that was approved,
    // and it is not queued again.
    std::thread::sleep(std::time::Duration::from_millis(600));
    let seen = node.get("/v1/advice", Some(&user.token)).json();
    assert_eq!(
        (&seen["advice_id"], &seen["status"], &seen["review_decision"]),
        (&json!(id), &json!("published"), &json!("approved")),
        "{seen}"
    );
    assert!(node.get("/v1/compliance/review-queue", Some(&officer)).json().as_array().unwrap().is_empty());
    let r = node.post(&path, Some(&user.token), Some("acc"), &json!({}));
    assert_eq!(r.status, 201, "{}", r.what());
    assert!(node.portfolio(&user)["holdings"].as_array().unwrap().iter().all(|h| h["symbol"] != "SPX3L"));
    // The compliance daily report shows who decided, and why.
    let report = node.get("/v1/compliance/reports/daily", Some(&officer)).json();
    let reviewed = report["advice"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["event"] == "advice.reviewed" && e["advice_id"] == id.as_str())
        .cloned()
        .unwrap_or_else(|| panic!("no review in the daily report: {report}"));
    assert_eq!(reviewed["decision"], "approve");
    assert_eq!(reviewed["note"], "de-risking is right for this client");
    assert!(reviewed["by"].as_str().is_some_and(|b| b.starts_with("usr_") && b != user.id), "{reviewed}");
    // Accepted advice is acted on once: another key cannot accept it again.
    node.post(&path, Some(&user.token), Some("acc-again"), &json!({}))
        .problem(&[409], &["advice_already_accepted"])
        .unwrap();

    // A rejection sticks too: the investor sees it, with the officer's note, and cannot accept.
    let other = node.new_user("concentrated.too");
    consent(&node, &other.token, true);
    assert_eq!(node.deposit(&other, "d1", "5000.00").status, 201);
    assert_eq!(node.order(&other, "o1", "SPX3L", "buy", "80").status, 201);
    let r = node.post("/v1/me/suitability", Some(&other.token), None, &json!({"answers": cautious()}));
    assert_eq!(r.status, 200, "{}", r.what());
    let held = node.get("/v1/advice", Some(&other.token)).json();
    assert_eq!(held["status"], "pending_review", "{held}");
    let held_id = held["advice_id"].as_str().unwrap();
    let r = node.post(
        &format!("/v1/compliance/review-queue/{held_id}"),
        Some(&officer),
        None,
        &json!({"decision": "reject", "note": "talk to the client first"}),
    );
    assert_eq!(r.status, 200, "{}", r.what());
    std::thread::sleep(std::time::Duration::from_millis(600));
    let seen = node.get("/v1/advice", Some(&other.token)).json();
    assert_eq!(
        (&seen["advice_id"], &seen["status"], &seen["review_note"]),
        (&json!(held_id), &json!("rejected"), &json!("talk to the client first")),
        "{seen}"
    );
    assert!(node.get("/v1/compliance/review-queue", Some(&officer)).json().as_array().unwrap().is_empty());
    node.post(&format!("/v1/advice/{held_id}/accept"), Some(&other.token), Some("acc"), &json!({}))
        .problem(&[409], &["advice_rejected"])
        .unwrap();

    // Approved advice stops standing when the investor's own trade took what it sells: its
    // acceptance is refused (nothing traded), and the next advice is computed on what is held.
    // (The advice worker, woken by the trade, may have replaced it already: then it is gone.)
    let third = node.new_user("concentrated.three");
    consent(&node, &third.token, true);
    assert_eq!(node.deposit(&third, "d1", "5000.00").status, 201);
    assert_eq!(node.order(&third, "o1", "SPX3L", "buy", "80").status, 201);
    let r = node.post("/v1/me/suitability", Some(&third.token), None, &json!({"answers": cautious()}));
    assert_eq!(r.status, 200, "{}", r.what());
    let held = node.get("/v1/advice", Some(&third.token)).json();
    let held_id = held["advice_id"].as_str().unwrap().to_string();
    let r = node.post(
        &format!("/v1/compliance/review-queue/{held_id}"),
        Some(&officer),
        None,
        &json!({"decision": "approve", "note": "de-risk"}),
    );
    assert_eq!(r.status, 200, "{}", r.what());
    assert_eq!(node.order(&third, "o2", "SPX3L", "sell", "2").status, 201);
    let before = node.portfolio(&third);
    node.post(&format!("/v1/advice/{held_id}/accept"), Some(&third.token), Some("acc"), &json!({}))
        .problem(&[409, 404], &["advice_outdated", "not_found"])
        .unwrap();
    let quantities = |p: &Value| -> Vec<(Value, Value)> {
        p["holdings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| (h["symbol"].clone(), h["quantity"].clone()))
            .collect()
    };
    assert_eq!(quantities(&node.portfolio(&third)), quantities(&before), "a refused acceptance traded");
    assert_eq!(node.portfolio(&third)["cash"], before["cash"], "a refused acceptance traded");
    let fresh = node.get("/v1/advice", Some(&third.token)).json();
    assert_ne!(fresh["advice_id"], json!(held_id), "{fresh}");
    assert_eq!(fresh["status"], "pending_review", "{fresh}");
    assert!(
        fresh["proposed_orders"]
            .as_array()
            .unwrap()
            .iter()
            .any(|o| o["symbol"] == "SPX3L" && o["side"] == "sell" && o["quantity"] == "78"),
        "{fresh}"
    );
}

#[test]
fn financially_identical_people_get_identical_advice() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path());
    let mut advice = Vec::new();
    for (email, name, country) in [("amara@example.com", "Amara Okafor", "NG"), ("henrik@example.com", "Henrik Larsen", "DK")] {
        let r = node.post(
            "/v1/auth/register",
            None,
            None,
            &json!({"email": email, "password": PASSWORD, "full_name": name, "date_of_birth": "1985-06-15", "country": country}),
        );
        assert_eq!(r.status, 201, "{}", r.what());
        let token = node.login(email, PASSWORD).json()["access_token"].as_str().unwrap().to_string();
        let kyc = json!({"document_type": "passport", "document_number": "123456789", "address": "1 High Street"});
        assert_eq!(node.post("/v1/me/kyc", Some(&token), None, &kyc).status, 200);
        assert_eq!(node.post("/v1/me/suitability", Some(&token), None, &json!({"answers": cautious()})).status, 200);
        consent(&node, &token, true);
        let user = User {
            id: String::new(),
            email: email.into(),
            token: token.clone(),
        };
        assert_eq!(node.deposit(&user, "d", "25000.00").status, 201);
        advice.push(node.get("/v1/advice", Some(&token)).json());
    }
    // Prices move between the two requests, so compare what does not depend on the tick: the
    // model, the band, the orders' symbols and sides; then the whole advice at equal prices.
    let strip = |a: &Value| {
        json!({"risk_band": a["risk_band"], "target": a["target_allocation"], "status": a["status"],
            "orders": a["proposed_orders"].as_array().unwrap().iter().map(|o| json!([o["symbol"], o["side"]])).collect::<Vec<_>>()})
    };
    assert_eq!(strip(&advice[0]), strip(&advice[1]));
}

/// A client that times out and retries while its first accept is still running: every attempt
/// with the key gets the first one's answer, and the orders are placed once.
#[test]
fn concurrent_retries_of_an_accept_all_get_its_answer() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path());
    let user = node.new_user("impatient");
    consent(&node, &user.token, true);
    assert_eq!(node.deposit(&user, "d1", "20000.00").status, 201);
    let a = node.get("/v1/advice", Some(&user.token)).json();
    let path = format!("/v1/advice/{}/accept", a["advice_id"].as_str().unwrap());
    let answers: Vec<Resp> = std::thread::scope(|s| {
        let tries: Vec<_> = (0..4)
            .map(|_| s.spawn(|| node.post(&path, Some(&user.token), Some("accept-once"), &json!({}))))
            .collect();
        tries.into_iter().map(|t| t.join().unwrap()).collect()
    });
    let first = answers[0].json();
    for r in &answers {
        assert_eq!(r.status, 201, "{}", r.what());
        assert_eq!(r.json()["orders"], first["orders"]);
    }
    let orders = node.get("/v1/orders", Some(&user.token)).json();
    assert_eq!(orders.as_array().unwrap().len(), a["proposed_orders"].as_array().unwrap().len(), "placed once");
}
