//! Black-box tests of onboarding and compliance against API.md: the KYC sandbox, the suitability
//! questionnaire, every code of the compliance rules engine, sanctions screening and its review by
//! compliance officers, the authorization matrix of every served route (with staff accounts made by
//! `moneta staff add` before the node starts), personal data encrypted at rest, and audited consents.
//! Each test starts the real `moneta serve` binary with its own data folder; independent checks are
//! collected (`Findings`) so that one run reports every deviation of a test.
mod common;
use common::*;

use std::collections::{BTreeMap, BTreeSet};

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// Logs in and returns the access token.
fn token_of(node: &Node, email: &str) -> String {
    let r = node.login(email, PASSWORD);
    assert_eq!(r.status, 200, "login {email}: expected 200, got {}", r.what());
    r.json()["access_token"]
        .as_str()
        .unwrap_or_else(|| panic!("login {email}: no access_token: {}", r.what()))
        .to_string()
}

/// Registers a person with the given identity and logs them in (no KYC, no questionnaire).
fn register_person(node: &Node, email: &str, full_name: &str, dob: &str, country: &str) -> User {
    let body = json!({"email": email, "password": PASSWORD, "full_name": full_name, "date_of_birth": dob, "country": country});
    let r = node.post("/v1/auth/register", None, None, &body);
    assert_eq!(r.status, 201, "register {full_name} ({email}): expected 201, got {}", r.what());
    let id = r.json()["user_id"]
        .as_str()
        .unwrap_or_else(|| panic!("register {email}: no user_id: {}", r.what()))
        .to_string();
    User {
        id,
        email: email.to_string(),
        token: token_of(node, email),
    }
}

/// Registers "Ada Lovelace" (harness default) and logs in; no KYC, no questionnaire.
fn plain_user(node: &Node, email: &str) -> User {
    let r = node.register(email, PASSWORD);
    assert_eq!(r.status, 201, "register {email}: expected 201, got {}", r.what());
    let id = r.json()["user_id"].as_str().expect("user_id").to_string();
    User {
        id,
        email: email.to_string(),
        token: token_of(node, email),
    }
}

fn kyc(node: &Node, user: &User, number: &str) -> Resp {
    node.post(
        "/v1/me/kyc",
        Some(&user.token),
        None,
        &json!({"document_type": "passport", "document_number": number, "address": "1 High Street, London"}),
    )
}

fn kyc_ok(node: &Node, user: &User) -> Value {
    let r = kyc(node, user, "123456789");
    assert_eq!(r.status, 200, "KYC for {}: expected 200, got {}", user.email, r.what());
    r.json()
}

fn answer(node: &Node, user: &User, answers: &Value) -> Resp {
    node.post("/v1/me/suitability", Some(&user.token), None, &json!({ "answers": answers }))
}

fn answer_ok(node: &Node, user: &User, answers: &Value) -> Value {
    let r = answer(node, user, answers);
    assert_eq!(r.status, 200, "questionnaire for {}: expected 200, got {}", user.email, r.what());
    r.json()
}

fn me(node: &Node, token: &str) -> Value {
    let r = node.get("/v1/me", Some(token));
    assert_eq!(r.status, 200, "GET /v1/me: expected 200, got {}", r.what());
    r.json()
}

fn put_json(node: &Node, path: &str, token: Option<&str>, body: Vec<u8>) -> Resp {
    let rb = node.builder("PUT", path, token, None).header("Content-Type", "application/json").body(body);
    node.call("PUT", path, rb)
}

/// Score 1, band conservative, no complex products (a cautious retiree).
fn cautious() -> Value {
    json!({
        "objective": "preservation", "horizon_years": 3, "loss_tolerance": "none", "investment_experience_years": 30,
        "knows_complex_products": false, "annual_income": "24000.00", "liquid_net_worth": "300000.00", "emergency_fund_months": 24
    })
}

/// Score 5, band growth, no complex products (the typical saver of suitability.rs).
fn saver() -> Value {
    json!({
        "objective": "growth", "horizon_years": 20, "loss_tolerance": "medium", "investment_experience_years": 5,
        "knows_complex_products": false, "annual_income": "52000.00", "liquid_net_worth": "20000.00", "emergency_fund_months": 6
    })
}

/// `adventurous()` without complex-product knowledge: score 7, complex products not appropriate.
fn bold_but_inexperienced_with_complex() -> Value {
    let mut a = adventurous();
    a["knows_complex_products"] = json!(false);
    a
}

/// GET /v1/admin/audit/verify as `token` (admin or compliance): (ok, entries, head_hash).
fn audit(node: &Node, token: &str) -> (bool, u64, String) {
    let r = node.get("/v1/admin/audit/verify", Some(token));
    assert_eq!(r.status, 200, "audit verify: expected 200, got {}", r.what());
    let v = r.json();
    let ok = v["ok"].as_bool().unwrap_or_else(|| panic!("audit verify: `ok` is not a bool: {}", r.what()));
    let entries = v["entries"]
        .as_u64()
        .unwrap_or_else(|| panic!("audit verify: `entries` is not a number: {}", r.what()));
    let head = v["head_hash"].as_str().unwrap_or_default().to_string();
    (ok, entries, head)
}

/// An order refused with 422 `code` that changes nothing (cash, holdings, transactions, orders).
fn expect_refused(f: &mut Findings, node: &Node, user: &User, what: &str, key: &str, order: (&str, &str, &str), code: &str) {
    let before = node.snapshot(user);
    let (symbol, side, quantity) = order;
    let r = node.order(user, key, symbol, side, quantity);
    f.ok(
        &format!("{what}: {side} {quantity} {symbol} must be refused 422 {code}"),
        r.problem(&[422], &[code]),
    );
    let after = node.snapshot(user);
    f.check(before == after, || {
        format!("{what}: the refused {side} of {symbol} changed the account: before {before:?} after {after:?}")
    });
}

/// A user fully onboarded (KYC verified, screening clear) with the given answers and cash.
fn onboarded(node: &Node, email: &str, answers: &Value, cash: &str) -> User {
    let u = plain_user(node, email);
    let k = kyc_ok(node, &u);
    assert_eq!(k["kyc_status"], "verified", "KYC of {email}: {k}");
    answer_ok(node, &u, answers);
    if cash != "0" {
        let r = node.deposit(&u, &format!("dep-{email}"), cash);
        assert_eq!(r.status, 201, "deposit for {email}: expected 201, got {}", r.what());
    }
    u
}

// ---------------------------------------------------------------------------------------------
// 1. KYC sandbox
// ---------------------------------------------------------------------------------------------

#[test]
fn kyc_sandbox_values_and_input_errors() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let node = Node::start(dir.path());
    let mut f = Findings::default();

    for (tag, number, expected) in [
        ("rejected", "000000000", "rejected"),
        ("review", "REVIEW123", "review"),
        ("review-lower", "review-42", "review"),
        ("verified", "123456789", "verified"),
        ("verified-spaced", "GB 1234 567", "verified"),
    ] {
        let u = plain_user(&node, &format!("kyc.{tag}@example.com"));
        let before = me(&node, &u.token);
        f.check(before["kyc_status"] == "pending", || {
            format!("{tag}: kyc_status before any submission should be \"pending\", GET /v1/me gave {before}")
        });
        let r = kyc(&node, &u, number);
        if f.status(&format!("KYC with document_number {number:?}"), &r, 200) {
            let v = r.json();
            f.check(v["kyc_status"] == expected, || {
                format!("KYC with {number:?}: expected kyc_status {expected:?}, got {}", r.what())
            });
            f.check(v["screening"] == "clear", || {
                format!("KYC of \"Ada Lovelace\" with {number:?}: expected screening \"clear\", got {}", r.what())
            });
            f.check(has_no_store(&r), || {
                format!("KYC response carries personal data but no Cache-Control: no-store: {:?}", r.headers)
            });
        }
        let after = me(&node, &u.token);
        f.check(after["kyc_status"] == expected, || {
            format!("after KYC with {number:?}: GET /v1/me kyc_status should be {expected:?}, got {after}")
        });
        if expected == "verified" {
            let r = kyc(&node, &u, "987654321");
            f.ok("resubmitting KYC after verified", r.problem(&[409], &["kyc_already_verified"]));
            let again = me(&node, &u.token);
            f.check(again["kyc_status"] == "verified", || {
                format!("after the refused resubmission kyc_status should stay \"verified\", GET /v1/me gave {again}")
            });
        }
    }

    // Malformed submissions: 400 problem+json, and nothing changes (the user stays pending).
    let u = plain_user(&node, "kyc.malformed@example.com");
    let good = json!({"document_type": "passport", "document_number": "123456789", "address": "1 High Street, London"});
    let with = |field: &str, v: Value| {
        let mut b = good.clone();
        b[field] = v;
        serde_json::to_vec(&b).expect("serialise")
    };
    let without = |field: &str| {
        let mut b = good.clone();
        b.as_object_mut().expect("object").remove(field);
        serde_json::to_vec(&b).expect("serialise")
    };
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("unknown field", with("nickname", json!("Ada"))),
        ("document_type \"visa\"", with("document_type", json!("visa"))),
        ("document_type \"Passport\" (case)", with("document_type", json!("Passport"))),
        ("2-character document_number", with("document_number", json!("12"))),
        ("21-character document_number", with("document_number", json!("12345678901234567890X"))),
        ("document_number with '/'", with("document_number", json!("1234/5678"))),
        ("document_number as a JSON number", with("document_number", json!(123456789))),
        ("empty address", with("address", json!(""))),
        ("blank address", with("address", json!("    "))),
        ("address with a control character", with("address", json!("1 High\u{0}Street"))),
        ("missing address", without("address")),
        ("missing document_type", without("document_type")),
        ("not JSON", b"document_number=123456789".to_vec()),
        ("empty body", Vec::new()),
        // A JSON array is not the documented object, even when its items are in field order.
        ("a JSON array in field order", br#"["passport","123456789","1 High Street, London"]"#.to_vec()),
    ];
    for (what, body) in cases {
        let before = me(&node, &u.token)["kyc_status"].clone();
        let r = node.post_raw("/v1/me/kyc", Some(&u.token), None, body);
        f.ok(&format!("KYC with {what}"), r.problem(&[400], &[]));
        let now = me(&node, &u.token);
        f.check(now["kyc_status"] == before, || {
            format!("the malformed KYC ({what}) must change nothing: kyc_status was {before}, GET /v1/me after gave {now}")
        });
    }
    f.finish();
}

#[test]
fn documents_in_review_wait_for_a_compliance_decision_and_cannot_be_gone_round() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    add_staff(dir.path(), "officer.kyc@example.com", "compliance");
    let node = Node::start(dir.path());
    let officer = token_of(&node, "officer.kyc@example.com");
    let queue = |token: &str| node.get("/v1/compliance/kyc-reviews", Some(token));
    let waiting = |id: &str| {
        let r = queue(&officer);
        assert_eq!(r.status, 200, "{}", r.what());
        r.json().as_array().expect("a list").iter().any(|e| e["user_id"] == id)
    };
    let u = plain_user(&node, "kyc.inreview@example.com");
    assert_eq!(kyc(&node, &u, "REVIEW123").json()["kyc_status"], "review");
    // Other documents do not go round the review, and nothing changes.
    let r = kyc(&node, &u, "123456789");
    assert!(r.problem(&[409], &["kyc_in_review"]).is_ok(), "{}", r.what());
    assert_eq!(me(&node, &u.token)["kyc_status"], "review");
    assert!(waiting(&u.id), "the person waits in the queue");
    let r = queue(&u.token);
    assert!(r.problem(&[403], &[]).is_ok(), "an investor does not read the queue: {}", r.what());
    // A decision needs a note and a known decision.
    let decide = |id: &str, body: Value| node.post(&format!("/v1/compliance/kyc-reviews/{id}"), Some(&officer), None, &body);
    assert!(decide(&u.id, json!({"decision": "approve"})).problem(&[400], &[]).is_ok());
    assert!(decide(&u.id, json!({"decision": "maybe", "note": "x"})).problem(&[400], &[]).is_ok());
    assert_eq!(me(&node, &u.token)["kyc_status"], "review", "refused decisions change nothing");
    let r = decide(&u.id, json!({"decision": "approve", "note": "passport checked against the issuer"}));
    assert_eq!(r.status, 200, "{}", r.what());
    assert_eq!(r.json()["kyc_status"], "verified", "{}", r.what());
    assert_eq!(me(&node, &u.token)["kyc_status"], "verified");
    assert!(!waiting(&u.id), "decided: off the queue");
    let r = decide(&u.id, json!({"decision": "reject", "note": "again"}));
    assert!(r.problem(&[409], &["kyc_not_in_review"]).is_ok(), "{}", r.what());
    // A rejection: the person may send other documents, which the provider decides.
    let v = plain_user(&node, "kyc.rejected@example.com");
    assert_eq!(kyc(&node, &v, "REVIEW-77").json()["kyc_status"], "review");
    let r = decide(&v.id, json!({"decision": "reject", "note": "the document is expired"}));
    assert_eq!(r.json()["kyc_status"], "rejected", "{}", r.what());
    assert_eq!(kyc(&node, &v, "123456789").json()["kyc_status"], "verified");
    // The decision is in the audit trail, about the person (their export shows it).
    let r = node.get("/v1/me/export?format=json", Some(&v.token));
    assert_eq!(r.status, 200, "{}", r.what());
    assert!(
        r.body.contains("kyc.review") && r.body.contains("the document is expired"),
        "no kyc.review record in the export"
    );
}

// ---------------------------------------------------------------------------------------------
// 2. Suitability questionnaire
// ---------------------------------------------------------------------------------------------

#[test]
fn suitability_scores_and_rejects_bad_answers() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let node = Node::start(dir.path());
    let mut f = Findings::default();
    let u = plain_user(&node, "suitability@example.com");

    let m = me(&node, &u.token);
    f.check(m.get("risk_profile").is_some_and(Value::is_null), || {
        format!("before the questionnaire GET /v1/me risk_profile should be null, got {m}")
    });

    let profiles = [
        (
            "cautious",
            cautious(),
            json!({"risk_score": 1, "risk_band": "conservative", "complex_products_allowed": false}),
        ),
        (
            "saver",
            saver(),
            json!({"risk_score": 5, "risk_band": "growth", "complex_products_allowed": false}),
        ),
    ];
    for (name, answers, expected) in &profiles {
        let r = answer(&node, &u, answers);
        if f.status(&format!("questionnaire ({name})"), &r, 200) {
            let v = r.json();
            f.check(&v == expected, || format!("questionnaire ({name}): expected {expected}, got {}", r.what()));
        }
        let m = me(&node, &u.token);
        f.check(&m["risk_profile"] == expected, || {
            format!(
                "after the {name} questionnaire GET /v1/me risk_profile should be {expected}, got {}",
                m["risk_profile"]
            )
        });
    }
    let current = profiles[1].2.clone();

    // Every bad answer is 400 naming the answer, and the stored profile stays as it was.
    let names = [
        "objective",
        "horizon_years",
        "loss_tolerance",
        "investment_experience_years",
        "knows_complex_products",
        "annual_income",
        "liquid_net_worth",
        "emergency_fund_months",
    ];
    let mut cases: Vec<(String, Value, &str)> = Vec::new();
    for name in names {
        let mut a = saver();
        a.as_object_mut().expect("object").remove(name);
        cases.push((format!("missing {name}"), a, name));
        let mut a = saver();
        a[name] = Value::Null;
        cases.push((format!("{name}: null"), a, name));
    }
    #[rustfmt::skip]
    let bad: &[(&str, Value)] = &[
        ("horizon_years", json!(51)), ("horizon_years", json!(-1)), ("horizon_years", json!(3.5)), ("horizon_years", json!("3")),
        ("investment_experience_years", json!(81)), ("emergency_fund_months", json!(121)), ("emergency_fund_months", json!(u64::MAX)),
        ("objective", json!("yolo")), ("objective", json!(["growth"])), ("loss_tolerance", json!("huge")), ("loss_tolerance", json!(5)),
        ("annual_income", json!("-1.00")), ("annual_income", json!("1.005")), ("annual_income", json!("abc")), ("annual_income", json!(52000)),
        ("liquid_net_worth", json!("1000000000000.01")), ("liquid_net_worth", json!("1e5")),
        ("knows_complex_products", json!("true")), ("knows_complex_products", json!(1)),
    ];
    for (name, v) in bad {
        let mut a = saver();
        a[*name] = v.clone();
        cases.push((format!("{name} = {v}"), a, name));
    }
    let mut a = saver();
    a["favourite_colour"] = json!("blue");
    cases.push(("unknown answer favourite_colour".into(), a, "favourite_colour"));
    for (what, answers, name) in &cases {
        let r = answer(&node, &u, answers);
        if let Some(p) = f.ok(&format!("questionnaire with {what}"), r.problem(&[400], &[])) {
            let detail = p["detail"].as_str().unwrap_or_default();
            f.check(detail.contains(name), || {
                format!("questionnaire with {what}: the problem detail should name `{name}`, got {}", r.what())
            });
        }
    }
    // Malformed envelopes.
    let envelopes: [(&str, Vec<u8>); 5] = [
        ("answers not an object", br#"{"answers": [1]}"#.to_vec()),
        ("no answers", b"{}".to_vec()),
        (
            "unknown top-level field",
            serde_json::to_vec(&json!({"answers": saver(), "extra": 1})).expect("serialise"),
        ),
        ("not JSON", b"answers".to_vec()),
        (
            "a JSON array instead of the object",
            serde_json::to_vec(&json!([adventurous()])).expect("serialise"),
        ),
    ];
    for (what, body) in envelopes {
        let r = node.post_raw("/v1/me/suitability", Some(&u.token), None, body);
        f.ok(&format!("questionnaire with {what}"), r.problem(&[400], &[]));
    }
    let m = me(&node, &u.token);
    f.check(m["risk_profile"] == current, || {
        format!(
            "after only rejected questionnaires GET /v1/me risk_profile should still be {current}, got {}",
            m["risk_profile"]
        )
    });

    // The adventurous profile: 7 with complex products.
    let expected = json!({"risk_score": 7, "risk_band": "aggressive", "complex_products_allowed": true});
    let r = answer(&node, &u, &adventurous());
    if f.status("questionnaire (adventurous)", &r, 200) {
        f.check(r.json() == expected, || {
            format!("questionnaire (adventurous): expected {expected}, got {}", r.what())
        });
        f.check(has_no_store(&r), || "questionnaire response without Cache-Control: no-store".into());
    }
    let m = me(&node, &u.token);
    f.check(m["risk_profile"] == expected, || {
        format!(
            "after the adventurous questionnaire GET /v1/me risk_profile should be {expected}, got {}",
            m["risk_profile"]
        )
    });
    f.finish();
}

// ---------------------------------------------------------------------------------------------
// 3. Every code of the rules engine
// ---------------------------------------------------------------------------------------------

#[test]
fn every_rules_engine_code() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    add_staff(dir.path(), "officer.rules@example.com", "compliance");
    let node = Node::start(dir.path());
    let officer = token_of(&node, "officer.rules@example.com");
    let mut f = Findings::default();
    let (ok0, entries0, _) = audit(&node, &officer);
    f.check(ok0, || "the audit chain does not verify at the start".into());
    let mut refusals = 0u64;

    // kyc_required: no KYC at all, KYC rejected, KYC in review (buys and sells).
    let u = plain_user(&node, "rules.nokyc@example.com");
    answer_ok(&node, &u, &adventurous());
    assert_eq!(node.deposit(&u, "nokyc-dep", "5000.00").status, 201);
    expect_refused(&mut f, &node, &u, "no KYC", "nokyc-1", ("ACME", "buy", "1"), "kyc_required");
    expect_refused(&mut f, &node, &u, "no KYC", "nokyc-2", ("ACME", "sell", "1"), "kyc_required");
    refusals += 2;
    for (tag, number) in [("rejected", "000000000"), ("review", "REVIEW77")] {
        let u = plain_user(&node, &format!("rules.kyc-{tag}@example.com"));
        let r = kyc(&node, &u, number);
        assert_eq!(r.status, 200, "{}", r.what());
        answer_ok(&node, &u, &adventurous());
        assert_eq!(node.deposit(&u, &format!("kyc-{tag}-dep"), "5000.00").status, 201);
        expect_refused(
            &mut f,
            &node,
            &u,
            &format!("KYC {tag}"),
            &format!("kyc-{tag}-1"),
            ("ACME", "buy", "1"),
            "kyc_required",
        );
        refusals += 1;
    }

    // sanctions_block: a listed person (exact name and date of birth).
    let listed = register_person(&node, "rules.listed@example.com", "Dmitry Kovalenko", "1968-03-14", "UA");
    let k = kyc_ok(&node, &listed);
    f.check(k["screening"] == "match" || k["screening"] == "potential_match", || {
        format!("KYC of the listed \"Dmitry Kovalenko\" 1968-03-14: screening should be match or potential_match, got {k}")
    });
    answer_ok(&node, &listed, &adventurous());
    assert_eq!(node.deposit(&listed, "listed-dep", "5000.00").status, 201);
    expect_refused(&mut f, &node, &listed, "listed person", "listed-1", ("ACME", "buy", "1"), "sanctions_block");
    expect_refused(&mut f, &node, &listed, "listed person", "listed-2", ("MMKT", "buy", "1"), "sanctions_block");
    expect_refused(
        &mut f,
        &node,
        &listed,
        "listed person (sell)",
        "listed-3",
        ("ACME", "sell", "1"),
        "sanctions_block",
    );
    refusals += 3;

    // suitability_required: verified and clear, no questionnaire.
    let u = plain_user(&node, "rules.noquestionnaire@example.com");
    kyc_ok(&node, &u);
    assert_eq!(node.deposit(&u, "noq-dep", "5000.00").status, 201);
    expect_refused(&mut f, &node, &u, "no questionnaire", "noq-1", ("MMKT", "buy", "1"), "suitability_required");
    expect_refused(&mut f, &node, &u, "no questionnaire", "noq-2", ("SPX3L", "buy", "1"), "suitability_required");
    refusals += 2;

    // not_appropriate — the README scenario: no complex-product knowledge, a leveraged ETF is
    // refused, a plain instrument within the score is bought.
    let u = onboarded(&node, "rules.inexperienced@example.com", &bold_but_inexperienced_with_complex(), "5000.00");
    let m = me(&node, &u.token);
    f.check(
        m["risk_profile"]["risk_score"] == 7 && m["risk_profile"]["complex_products_allowed"] == false,
        || format!("adventurous answers without complex knowledge should give score 7, complex false; GET /v1/me gave {m}"),
    );
    expect_refused(&mut f, &node, &u, "no complex knowledge", "inexp-1", ("SPX3L", "buy", "1"), "not_appropriate");
    expect_refused(
        &mut f,
        &node,
        &u,
        "no complex knowledge",
        "inexp-2",
        ("ACME-C200", "buy", "1"),
        "not_appropriate",
    );
    refusals += 2;
    let r = node.order(&u, "inexp-3", "ACME", "buy", "1");
    f.status("no complex knowledge: buying the plain ACME (risk 5 within score 7)", &r, 201);

    // unsuitable: score 1 buying non-complex instruments of risk class 6, 5 and 2; class 1 is fine.
    let u = onboarded(&node, "rules.cautious@example.com", &cautious(), "5000.00");
    expect_refused(&mut f, &node, &u, "risk score 1", "caut-1", ("INIT", "buy", "1"), "unsuitable");
    expect_refused(&mut f, &node, &u, "risk score 1", "caut-2", ("ACME", "buy", "1"), "unsuitable");
    expect_refused(&mut f, &node, &u, "risk score 1", "caut-3", ("GILT10", "buy", "1"), "unsuitable");
    refusals += 3;
    let r = node.order(&u, "caut-4", "MMKT", "buy", "10");
    f.status("risk score 1: buying MMKT (risk class 1)", &r, 201);

    // insufficient_funds and insufficient_holdings (after the rules pass).
    let u = onboarded(&node, "rules.poor@example.com", &adventurous(), "10.00");
    expect_refused(&mut f, &node, &u, "10.00 cash", "poor-1", ("ACME", "buy", "1"), "insufficient_funds");
    expect_refused(&mut f, &node, &u, "no holdings", "poor-2", ("ACME", "sell", "1"), "insufficient_holdings");
    expect_refused(&mut f, &node, &u, "no holdings", "poor-3", ("SPX3L", "sell", "0.5"), "insufficient_holdings");
    refusals += 3;
    let r = node.order(&u, "poor-4", "MMKT", "buy", "2");
    f.status("10.00 cash: buying 2 MMKT", &r, 201);
    expect_refused(&mut f, &node, &u, "holding 2 MMKT", "poor-5", ("MMKT", "sell", "3"), "insufficient_holdings");
    refusals += 1;

    // Each refusal is an audit record: the chain grew by at least one per refusal and verifies.
    let (ok1, entries1, head1) = audit(&node, &officer);
    f.check(ok1, || {
        format!("the audit chain does not verify after the refusals (entries {entries1}, head {head1})")
    });
    f.check(entries1 >= entries0 + refusals, || {
        format!("{refusals} refused orders should add at least {refusals} audit entries; entries went {entries0} -> {entries1}")
    });
    f.finish();
}

// ---------------------------------------------------------------------------------------------
// 4. Screening and its review
// ---------------------------------------------------------------------------------------------

#[test]
fn screening_review_flow() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    add_staff(dir.path(), "officer.screening@example.com", "compliance");
    let node = Node::start(dir.path());
    let officer = token_of(&node, "officer.screening@example.com");
    let mut f = Findings::default();

    let onboard = |u: &User, tag: &str| {
        let k = kyc_ok(&node, u);
        answer_ok(&node, u, &adventurous());
        assert_eq!(node.deposit(u, &format!("{tag}-dep"), "5000.00").status, 201);
        k
    };

    // The listed name with the same birth year but another day: potential match.
    let p1 = register_person(&node, "screen.p1@example.com", "Dmitry Kovalenko", "1968-03-01", "UA");
    let m = me(&node, &p1.token);
    f.check(m["screening"] == "potential_match", || {
        format!("\"Dmitry Kovalenko\" 1968-03-01 should be screened potential_match at registration; GET /v1/me gave {m}")
    });
    let k = onboard(&p1, "p1");
    f.check(k["kyc_status"] == "verified" && k["screening"] == "potential_match", || {
        format!("KYC of \"Dmitry Kovalenko\" 1968-03-01: expected verified + potential_match, got {k}")
    });
    expect_refused(
        &mut f,
        &node,
        &p1,
        "unresolved potential match",
        "p1-1",
        ("ACME", "buy", "1"),
        "sanctions_block",
    );

    // The compliance officer sees the hit, without the person's name or date of birth.
    let r = node.get("/v1/compliance/screening-hits", Some(&officer));
    if f.status("GET /v1/compliance/screening-hits", &r, 200) {
        let hits = r.json();
        let mine: Vec<&Value> = hits
            .as_array()
            .map(|a| a.iter().filter(|h| h.to_string().contains(&p1.id)).collect())
            .unwrap_or_default();
        f.check(mine.iter().any(|h| h["details"]["status"] == "potential_match"), || {
            format!("screening-hits should list {} as potential_match, got {}", p1.id, r.what())
        });
        f.check(mine.iter().all(|h| h["resolution"].is_null()), || {
            format!("a hit nobody decided yet shows a resolution: {}", r.what())
        });
        f.check(!r.body.contains("Kovalenko") && !r.body.contains("1968-03-01"), || {
            format!("screening-hits shows personal data (name / date of birth): {}", r.what())
        });
    }

    // Bad resolutions change nothing.
    let path = format!("/v1/compliance/screening/{}", p1.id);
    let r = node.post(&path, Some(&officer), None, &json!({"decision": "maybe", "note": "?"}));
    f.ok("resolution with decision \"maybe\"", r.problem(&[400], &[]));
    let r = node.post(&path, Some(&officer), None, &json!({"decision": "clear", "note": "x", "extra": true}));
    f.ok("resolution with an unknown field", r.problem(&[400], &[]));
    let r = node.post(
        "/v1/compliance/screening/usr_doesnotexist",
        Some(&officer),
        None,
        &json!({"decision": "clear", "note": "x"}),
    );
    f.ok("resolution for an unknown user", r.problem(&[404], &[]));
    // A decision carries its reason for the record.
    for body in [
        json!({"decision": "clear"}),
        json!({"decision": "clear", "note": "  "}),
        json!({"decision": "clear", "note": null}),
    ] {
        let r = node.post(&path, Some(&officer), None, &body);
        f.ok(&format!("resolution without a note ({body})"), r.problem(&[400], &["invalid_request"]));
    }
    let m = me(&node, &p1.token);
    f.check(m["screening"] == "potential_match", || format!("bad resolutions changed the screening: {m}"));

    // Cleared by review: the user can trade, also after the list is reloaded.
    let r = node.post(&path, Some(&officer), None, &json!({"decision": "clear", "note": "different person"}));
    if f.status("resolving the potential match as clear", &r, 200) {
        f.check(r.json()["screening"] == "clear", || {
            format!("resolution clear: expected screening \"clear\", got {}", r.what())
        });
    }
    let m = me(&node, &p1.token);
    f.check(m["screening"] == "clear", || {
        format!("after the clear resolution GET /v1/me screening should be clear, got {m}")
    });
    // The same decision again is not recorded a second time.
    let r = node.post(&path, Some(&officer), None, &json!({"decision": "clear", "note": "different person"}));
    f.ok("the same resolution again", r.problem(&[422], &["nothing_to_resolve"]));
    // The hit now says who resolved it, and how.
    let r = node.get("/v1/compliance/screening-hits", Some(&officer));
    let resolved = r.json().as_array().and_then(|a| {
        a.iter()
            .find(|h| h["subject"] == format!("account/{}", p1.id).as_str() && h["details"]["status"] == "potential_match")
            .cloned()
    });
    f.check(
        resolved
            .as_ref()
            .is_some_and(|h| h["resolution"]["decision"] == "clear" && h["resolution"]["by"].is_string()),
        || format!("the resolved hit should carry its resolution: {}", r.what()),
    );
    f.status("order after the clear resolution", &node.order(&p1, "p1-2", "ACME", "buy", "1"), 201);
    let r = node.post("/v1/compliance/sanctions/reload", Some(&officer), None, &json!({}));
    f.status("POST /v1/compliance/sanctions/reload", &r, 200);
    let m = me(&node, &p1.token);
    f.check(m["screening"] == "clear", || {
        format!("after a list reload the reviewed user should stay clear, got {m}")
    });
    f.status("order after the list reload", &node.order(&p1, "p1-3", "ACME", "buy", "1"), 201);

    // Confirmed by review: the user stays blocked.
    let p2 = register_person(&node, "screen.p2@example.com", "Dmitry Kovalenko", "1968-07-20", "UA");
    let k = onboard(&p2, "p2");
    f.check(k["screening"] == "potential_match", || {
        format!("KYC of \"Dmitry Kovalenko\" 1968-07-20: expected potential_match, got {k}")
    });
    let r = node.post(
        &format!("/v1/compliance/screening/{}", p2.id),
        Some(&officer),
        None,
        &json!({"decision": "match", "note": "same person"}),
    );
    if f.status("resolving the potential match as match", &r, 200) {
        f.check(r.json()["screening"] == "match", || {
            format!("resolution match: expected screening \"match\", got {}", r.what())
        });
    }
    let m = me(&node, &p2.token);
    f.check(m["screening"] == "match", || {
        format!("after the match resolution GET /v1/me screening should be match, got {m}")
    });
    expect_refused(&mut f, &node, &p2, "confirmed match", "p2-1", ("ACME", "buy", "1"), "sanctions_block");

    // A definite match (name and date of birth) is not lifted by a "clear" review.
    let p3 = register_person(&node, "screen.p3@example.com", "Dmitry Kovalenko", "1968-03-14", "UA");
    let k = onboard(&p3, "p3");
    f.check(k["screening"] == "match", || {
        format!("KYC of \"Dmitry Kovalenko\" 1968-03-14: expected match, got {k}")
    });
    let r = node.post(
        &format!("/v1/compliance/screening/{}", p3.id),
        Some(&officer),
        None,
        &json!({"decision": "clear", "note": "trying to clear a definite match"}),
    );
    // Refused, so the reviewer is told (it was 200 and changed nothing).
    f.ok("clearing a definite match", r.problem(&[409], &["match_not_clearable"]));
    let m = me(&node, &p3.token);
    f.check(m["screening"] == "match", || {
        format!("a definite match must stay match after a \"clear\" review, GET /v1/me gave {m}")
    });
    expect_refused(
        &mut f,
        &node,
        &p3,
        "definite match after a clear review",
        "p3-1",
        ("ACME", "buy", "1"),
        "sanctions_block",
    );
    // Their cash is frozen: what arrives is credited, nothing leaves (the withdrawal answered
    // 201 before), and the refusal is remembered under its key.
    f.status("deposit by a definite match", &node.deposit(&p3, "p3-d", "50.00"), 201);
    let before = node.portfolio(&p3)["cash"].clone();
    for _ in 0..2 {
        let r = node.withdraw(&p3, "p3-w", "50.00");
        f.ok("withdrawal by a definite match", r.problem(&[422], &["sanctions_block"]));
    }
    let cash = node.portfolio(&p3)["cash"].clone();
    f.check(cash == before, || format!("a refused withdrawal moved cash: {before} → {cash}"));

    // A near miss is clear, and there is nothing to resolve for them.
    let anna = register_person(&node, "screen.anna@example.com", "Anna Kovalenko", "1990-05-01", "GB");
    let k = onboard(&anna, "anna");
    f.check(k["screening"] == "clear", || {
        format!("KYC of \"Anna Kovalenko\" 1990-05-01: expected clear, got {k}")
    });
    f.status("order by the near miss", &node.order(&anna, "anna-1", "ACME", "buy", "1"), 201);
    let r = node.post(
        &format!("/v1/compliance/screening/{}", anna.id),
        Some(&officer),
        None,
        &json!({"decision": "match", "note": "same name"}),
    );
    f.check(r.status == 404 || r.status == 409 || r.status == 422, || {
        format!("resolving a user with no screening hit should be refused (404/409/422), got {}", r.what())
    });
    let m = me(&node, &anna.token);
    f.check(m["screening"] == "clear", || format!("the near miss should stay clear, GET /v1/me gave {m}"));

    let (ok, _, _) = audit(&node, &officer);
    f.check(ok, || "the audit chain does not verify after the screening reviews".into());
    f.finish();
}

// ---------------------------------------------------------------------------------------------
// 5. Authorization matrix of every route
// ---------------------------------------------------------------------------------------------

/// Every route the gateway serves and the roles that may call it (empty = public).
const EXPECTED: &[(&str, &str, &[&str])] = &[
    ("GET", "/", &[]),
    ("GET", "/app/{file}", &[]),
    ("GET", "/v1/fees", &[]),
    ("GET", "/v1/instruments/{symbol}/quote", &[]),
    ("GET", "/healthz", &[]),
    ("GET", "/readyz", &[]),
    ("GET", "/metrics", &[]),
    ("GET", "/openapi.json", &[]),
    ("GET", "/.well-known/jwks.json", &[]),
    ("POST", "/v1/auth/register", &[]),
    ("POST", "/v1/auth/login", &[]),
    ("POST", "/v1/auth/refresh", &[]),
    ("POST", "/v1/auth/logout", &["user", "support", "compliance", "admin"]),
    ("GET", "/v1/me", &["user", "support", "compliance", "admin"]),
    ("DELETE", "/v1/me", &["user"]),
    ("GET", "/v1/me/export", &["user"]),
    ("POST", "/v1/me/mfa/totp", &["user", "support", "compliance", "admin"]),
    ("POST", "/v1/me/mfa/totp/confirm", &["user", "support", "compliance", "admin"]),
    ("GET", "/v1/me/notifications", &["user", "support", "compliance", "admin"]),
    ("PUT", "/v1/me/consents", &["user"]),
    ("POST", "/v1/me/kyc", &["user"]),
    ("POST", "/v1/me/suitability", &["user"]),
    ("GET", "/v1/instruments", &[]),
    ("GET", "/v1/instruments/{symbol}", &[]),
    ("GET", "/v1/instruments/{symbol}/history", &[]),
    ("GET", "/v1/portfolio", &["user"]),
    ("POST", "/v1/portfolio/deposits", &["user"]),
    ("POST", "/v1/portfolio/withdrawals", &["user"]),
    ("GET", "/v1/portfolio/transactions", &["user"]),
    ("GET", "/v1/portfolio/performance", &["user"]),
    ("GET", "/v1/portfolio/statements", &["user"]),
    ("GET", "/v1/portfolio/statements/{date}", &["user"]),
    ("POST", "/v1/orders", &["user"]),
    ("GET", "/v1/orders", &["user"]),
    ("GET", "/v1/orders/{order_id}", &["user"]),
    ("GET", "/v1/advice", &["user"]),
    ("POST", "/v1/advice/{advice_id}/accept", &["user"]),
    ("GET", "/v1/compliance/review-queue", &["compliance"]),
    ("POST", "/v1/compliance/review-queue/{advice_id}", &["compliance"]),
    ("GET", "/v1/support/users/{user_id}", &["support"]),
    ("GET", "/v1/compliance/screening-hits", &["compliance"]),
    ("POST", "/v1/compliance/screening/{user_id}", &["compliance"]),
    ("GET", "/v1/compliance/kyc-reviews", &["compliance"]),
    ("POST", "/v1/compliance/kyc-reviews/{user_id}", &["compliance"]),
    ("POST", "/v1/compliance/sanctions/reload", &["admin", "compliance"]),
    ("GET", "/v1/compliance/reports/daily", &["compliance"]),
    ("GET", "/v1/admin/audit/verify", &["admin", "compliance"]),
    ("GET", "/v1/admin/security-events", &["admin"]),
    ("GET", "/v1/cluster", &["admin"]),
    ("POST", "/v1/cluster/nodes/{node_id}/decommission", &["admin"]),
    ("POST", "/v1/admin/instruments", &["admin"]),
];

struct Caller {
    role: &'static str,
    email: Option<String>,
    token: Option<String>,
    user_id: Option<String>,
    order_id: Option<String>,
}

fn fill(template: &str, value: &str) -> String {
    template
        .split('/')
        .map(|seg| if seg.starts_with('{') && seg.ends_with('}') { value } else { seg })
        .collect::<Vec<_>>()
        .join("/")
}

#[test]
fn authorization_matrix_covers_every_route() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    for role in ["support", "compliance", "admin"] {
        add_staff(dir.path(), &format!("{role}.matrix@example.com"), role);
    }
    let node = Node::start(dir.path());
    let mut f = Findings::default();

    // Two investors with an order each.
    let a = node.new_user("matrix.a");
    let b = node.new_user("matrix.b");
    let order_of = |u: &User| {
        assert_eq!(node.deposit(u, &format!("dep-{}", u.id), "1000.00").status, 201);
        let r = node.order(u, &format!("ord-{}", u.id), "ACME", "buy", "1");
        assert_eq!(r.status, 201, "order for {}: {}", u.email, r.what());
        r.json()["order_id"].as_str().expect("order_id").to_string()
    };
    let a_order = order_of(&a);
    let b_order = order_of(&b);

    let mut callers = vec![
        Caller {
            role: "anonymous",
            email: None,
            token: None,
            user_id: None,
            order_id: None,
        },
        Caller {
            role: "user",
            email: Some(a.email.clone()),
            token: Some(a.token.clone()),
            user_id: Some(a.id.clone()),
            order_id: Some(a_order.clone()),
        },
    ];
    for role in ["support", "compliance", "admin"] {
        let email = format!("{role}.matrix@example.com");
        let token = token_of(&node, &email);
        let m = me(&node, &token);
        f.check(m["roles"] == json!([role]), || {
            format!("{role} staff account: GET /v1/me roles should be [{role:?}], got {m}")
        });
        callers.push(Caller {
            role,
            email: Some(email),
            user_id: m["user_id"].as_str().map(str::to_string),
            token: Some(token),
            order_id: None,
        });
    }

    // The served inventory against the table, both ways.
    let r = node.get("/openapi.json", None);
    assert_eq!(r.status, 200, "{}", r.what());
    let doc = r.json();
    let mut served: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for (path, item) in doc["paths"]
        .as_object()
        .unwrap_or_else(|| panic!("openapi.json has no `paths` object: {}", r.what()))
    {
        for (method, op) in item.as_object().expect("a path item object") {
            if !["get", "put", "post", "delete", "patch", "head", "options", "trace"].contains(&method.as_str()) {
                continue;
            }
            let mut roles: Vec<String> = op["x-roles"]
                .as_array()
                .map(|a| a.iter().filter_map(|r| r.as_str().map(str::to_string)).collect())
                .unwrap_or_default();
            roles.sort();
            f.check(op.get("x-roles").is_none() || !roles.is_empty(), || {
                format!("{} {path}: x-roles is present but empty: {op}", method.to_uppercase())
            });
            served.insert((method.to_uppercase(), path.clone()), roles);
        }
    }
    let period = &doc["paths"]["/v1/portfolio/performance"]["get"]["parameters"][0]["schema"]["enum"];
    f.check(*period == json!(["1d", "1m", "1y", "all"]), || format!("the period's values: {period}"));
    // The query parameters the handlers read are described.
    for (path, names) in [
        ("/v1/instruments/{symbol}/history", &["from", "to"][..]),
        ("/v1/portfolio/performance", &["period"]),
        ("/v1/compliance/reports/daily", &["date"]),
        ("/v1/me/export", &["format"]),
        ("/v1/admin/security-events", &["limit"]),
    ] {
        let params = doc["paths"][path]["get"]["parameters"].as_array().cloned().unwrap_or_default();
        for name in names {
            f.check(
                params
                    .iter()
                    .any(|p| p["in"] == "query" && p["name"] == *name && p["schema"]["type"].is_string()),
                || format!("GET {path}: query parameter {name} (with a schema) is not in the OpenAPI document: {params:?}"),
            );
        }
    }
    let expected: BTreeMap<(String, String), Vec<String>> = EXPECTED
        .iter()
        .map(|(m, p, roles)| {
            let mut roles: Vec<String> = roles.iter().map(|r| r.to_string()).collect();
            roles.sort();
            ((m.to_string(), p.to_string()), roles)
        })
        .collect();
    for (key, roles) in &served {
        match expected.get(key) {
            None => f.0.push(format!(
                "the served OpenAPI document has {} {} (x-roles {roles:?}) but the EXPECTED table has no row for it",
                key.0, key.1
            )),
            Some(want) => f.check(want == roles, || {
                format!("{} {}: the served x-roles are {roles:?} but EXPECTED says {want:?}", key.0, key.1)
            }),
        }
    }
    for key in expected.keys() {
        f.check(served.contains_key(key), || {
            format!("EXPECTED has {} {} but the served OpenAPI document does not list it", key.0, key.1)
        });
    }

    // The matrix: every served route × every caller × the path parameters of another user and
    // of the caller.
    let mut counter = 0u32;
    for ((method, template), served_roles) in &served {
        let roles: Vec<String> = expected
            .get(&(method.clone(), template.clone()))
            .cloned()
            .unwrap_or_else(|| served_roles.clone());
        let public = roles.is_empty();
        for c in &callers {
            let mut values: Vec<Option<String>> = Vec::new();
            if template.contains("{symbol}") {
                values.push(Some("ACME".into()));
            } else if template.contains("{order_id}") {
                values.push(Some(b_order.clone()));
                values.extend(c.order_id.clone().map(Some));
            } else if template.contains("{user_id}") {
                values.push(Some(b.id.clone()));
                values.extend(c.user_id.clone().map(Some));
            } else {
                values.push(None);
            }
            for value in values {
                let path = value.as_deref().map_or_else(|| template.clone(), |v| fill(template, v));
                // Logging out spends the session: use a fresh token for it.
                let token = match (method.as_str(), template.as_str(), &c.email) {
                    ("POST", "/v1/auth/logout", Some(email)) => Some(token_of(&node, email)),
                    _ => c.token.clone(),
                };
                counter += 1;
                let mut rb = node
                    .builder(method, &path, token.as_deref(), Some(&format!("matrix-{counter}")))
                    .header("X-Access-Reason", "authorization matrix test");
                if method == "POST" || method == "PUT" {
                    rb = rb.header("Content-Type", "application/json").body("{}");
                }
                let r = node.call(method, &path, rb);
                let label = format!("{method} {path} as {}", c.role);
                if public {
                    f.check(![401, 403].contains(&r.status) && (200..500).contains(&r.status), || {
                        format!("{label}: a public route must not answer 401/403 or fail; got {}", r.what())
                    });
                } else if c.role == "anonymous" {
                    f.ok(&format!("{label} (no token) must be 401"), r.problem(&[401], &[]));
                } else if !roles.iter().any(|x| x == c.role) {
                    f.ok(&format!("{label} (role not in {roles:?}) must be 403"), r.problem(&[403], &[]));
                } else {
                    f.check([200, 201, 202, 204, 400, 404, 409, 422].contains(&r.status), || {
                        format!("{label} (an allowed role): expected 200/201/202/204/400/404/409/422, got {}", r.what())
                    });
                }
            }
        }
    }

    // Own vs other: an investor never sees another's order.
    let r = node.get(&format!("/v1/orders/{a_order}"), Some(&b.token));
    if let Some(_p) = f.ok("user B reading user A's order", r.problem(&[404], &["not_found"])) {
        f.check(!r.body.contains("ACME"), || {
            format!("the 404 for another user's order leaks its content: {}", r.what())
        });
    }
    let r = node.get(&format!("/v1/orders/{a_order}"), Some(&a.token));
    f.check(r.status == 200 && r.json()["order_id"] == a_order.as_str(), || {
        format!("user A reading their own order: {}", r.what())
    });

    // Support: a reason is required, the view is limited, and each read is audited.
    let support = callers
        .iter()
        .find(|c| c.role == "support")
        .and_then(|c| c.token.clone())
        .expect("support token");
    let admin = callers.iter().find(|c| c.role == "admin").and_then(|c| c.token.clone()).expect("admin token");
    let admin_id = callers.iter().find(|c| c.role == "admin").and_then(|c| c.user_id.clone()).expect("admin id");
    let path = format!("/v1/support/users/{}", a.id);
    let r = node.get(&path, Some(&support));
    f.ok("support read without X-Access-Reason", r.problem(&[400], &["access_reason_required"]));
    let r = node.call("GET", &path, node.builder("GET", &path, Some(&support), None).header("X-Access-Reason", "   "));
    f.ok("support read with a blank X-Access-Reason", r.problem(&[400], &["access_reason_required"]));
    let (_, before, _) = audit(&node, &admin);
    let reads = 3u64;
    for i in 0..reads {
        let rb = node
            .builder("GET", &path, Some(&support), None)
            .header("X-Access-Reason", format!("ticket 42{i}: customer asked about KYC"));
        let r = node.call("GET", &path, rb);
        if !f.status("support read with a reason", &r, 200) {
            continue;
        }
        let v = r.json();
        let email = v["email"].as_str().unwrap_or_default();
        f.check(email.contains("***") && email != a.email, || {
            format!("support view: email should be masked (contain ***), got {}", r.what())
        });
        for field in ["date_of_birth", "document_number", "address"] {
            f.check(v.get(field).is_none(), || format!("support view must not contain `{field}`: {}", r.what()));
        }
        for secret in [a.email.as_str(), "1990-04-01", "123456789", "1 High Street"] {
            f.check(!r.body.contains(secret), || format!("support view contains {secret:?}: {}", r.what()));
        }
        f.check(v["user_id"] == a.id.as_str(), || format!("support view of {}: {}", a.id, r.what()));
        f.check(has_no_store(&r), || "support view without Cache-Control: no-store".into());
    }
    let (ok, after, _) = audit(&node, &admin);
    f.check(ok, || "the audit chain does not verify after the support reads".into());
    f.check(after >= before + reads, || {
        format!("{reads} support reads should add at least {reads} audit entries; entries went {before} -> {after}")
    });

    // Admin reaches no personal data; its /v1/me is its own.
    let rb = node.builder("GET", &path, Some(&admin), None).header("X-Access-Reason", "admin curiosity");
    let r = node.call("GET", &path, rb);
    f.ok("admin GET /v1/support/users/{id}", r.problem(&[403], &[]));
    f.check(!r.body.contains("Lovelace"), || format!("the 403 to admin leaks the user's name: {}", r.what()));
    for path in ["/v1/me".to_string(), format!("/v1/me?user_id={}", a.id)] {
        let r = node.get(&path, Some(&admin));
        if f.status(&format!("admin GET {path}"), &r, 200) {
            let v = r.json();
            f.check(
                v["user_id"] == admin_id.as_str() && v["email"] == "admin.matrix@example.com" && v["roles"] == json!(["admin"]),
                || format!("admin GET {path} should return only the admin's own profile ({admin_id}), got {}", r.what()),
            );
            f.check(!r.body.contains("Lovelace") && !r.body.contains(&a.email), || {
                format!("admin GET {path} shows a user's data: {}", r.what())
            });
        }
    }
    f.finish();
}

// ---------------------------------------------------------------------------------------------
// 6. Personal data at rest
// ---------------------------------------------------------------------------------------------

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("read {}: {e}", dir.display())) {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            files_under(&path, out);
        } else {
            out.push(path);
        }
    }
}

fn find_ci(haystack_lower: &[u8], needle: &str) -> Option<usize> {
    let n = needle.to_ascii_lowercase().into_bytes();
    haystack_lower.windows(n.len()).position(|w| w == n.as_slice())
}

#[test]
fn personal_data_never_stored_in_plaintext() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let name = "Zebulon Quixotic-Wraithmoor";
    let email = "zebulon.wraithmoor.7731@example.org";
    let dob = "1987-06-05";
    let document = "ZQW987654321";
    let address = "42 Quillfeather Lane, Wraithmoor";

    let mut node = Node::start(dir.path());
    let u = register_person(&node, email, name, dob, "GB");
    let r = node.post(
        "/v1/me/kyc",
        Some(&u.token),
        None,
        &json!({"document_type": "passport", "document_number": document, "address": address}),
    );
    assert_eq!(r.status, 200, "{}", r.what());
    answer_ok(&node, &u, &adventurous());
    let r = put_json(
        &node,
        "/v1/me/consents",
        Some(&u.token),
        br#"{"ai_profiling":true,"marketing":false,"analytics":true}"#.to_vec(),
    );
    assert_eq!(r.status, 200, "{}", r.what());
    assert_eq!(node.deposit(&u, "zq-dep", "2500.00").status, 201);
    let r = node.order(&u, "zq-order", "WRLD", "buy", "3");
    assert_eq!(r.status, 201, "{}", r.what());
    let m = me(&node, &u.token);
    assert_eq!(m["full_name"], name, "{m}");

    let status = node.terminate(Duration::from_secs(20));
    assert!(
        status.is_some_and(|s| s.success()),
        "the node should exit cleanly within 20 s of SIGTERM, got {status:?}; output:\n{}",
        node.logs()
    );

    let mut files = Vec::new();
    files_under(&dir.path().join("data"), &mut files);
    assert!(!files.is_empty(), "the data folder {} has no files", dir.path().join("data").display());
    let mut f = Findings::default();
    let secrets = [
        name,
        "Zebulon",
        "Quixotic",
        "Wraithmoor",
        email,
        "zebulon.wraithmoor.7731",
        document,
        address,
        "Quillfeather",
        dob,
    ];
    let controls = [u.id.as_str(), "WRLD"];
    let mut found_controls = BTreeSet::new();
    let mut total = 0usize;
    for file in &files {
        let bytes = std::fs::read(file).unwrap_or_else(|e| panic!("read {}: {e}", file.display()));
        total += bytes.len();
        let lower = bytes.to_ascii_lowercase();
        for s in secrets {
            if let Some(at) = find_ci(&lower, s) {
                let from = at.saturating_sub(40);
                let to = (at + s.len() + 40).min(bytes.len());
                f.0.push(format!(
                    "{s:?} is stored in plaintext (any case) in {} at byte {at}: …{}…",
                    file.display(),
                    String::from_utf8_lossy(&bytes[from..to])
                ));
            }
        }
        for c in controls {
            if find_ci(&lower, c).is_some() {
                found_controls.insert(c);
            }
        }
    }
    // Positive control: the scan does find what is stored in plaintext.
    for c in controls {
        f.check(found_controls.contains(c), || {
            format!(
                "positive control: {c:?} was not found in any of {} files ({total} bytes) — the scan does not see stored data",
                files.len()
            )
        });
    }

    // The data is still there, and opens.
    let node = Node::start(dir.path());
    let token = token_of(&node, email);
    let m = me(&node, &token);
    f.check(m["full_name"] == name && m["email"] == email && m["date_of_birth"] == dob, || {
        format!("after a restart GET /v1/me should show the decrypted name, email and date of birth, got {m}")
    });
    f.check(m["kyc_status"] == "verified" && m["risk_profile"]["risk_score"] == 7, || {
        format!("after a restart: {m}")
    });
    f.finish();
}

// ---------------------------------------------------------------------------------------------
// 7. Consents
// ---------------------------------------------------------------------------------------------

#[test]
fn consents_are_audited() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    add_staff(dir.path(), "admin.consents@example.com", "admin");
    let node = Node::start(dir.path());
    let admin = token_of(&node, "admin.consents@example.com");
    let mut f = Findings::default();
    let u = plain_user(&node, "consents@example.com");

    let m = me(&node, &u.token);
    let none = json!({"ai_profiling": false, "marketing": false, "analytics": false});
    f.check(m["consents"] == none, || {
        format!("a new user's consents should all be false, GET /v1/me gave {m}")
    });

    let (ok0, e0, h0) = audit(&node, &admin);
    f.check(ok0, || "the audit chain does not verify at the start".into());
    let wanted = json!({"ai_profiling": true, "marketing": false, "analytics": true});
    let r = put_json(&node, "/v1/me/consents", Some(&u.token), serde_json::to_vec(&wanted).expect("serialise"));
    if f.status("PUT /v1/me/consents", &r, 200) {
        f.check(r.json() == wanted, || format!("PUT /v1/me/consents should echo {wanted}, got {}", r.what()));
    }
    let m = me(&node, &u.token);
    f.check(m["consents"] == wanted, || {
        format!("after PUT GET /v1/me consents should be {wanted}, got {}", m["consents"])
    });
    // The same consents again: still answered (and audited: it records the decision).
    let r = put_json(&node, "/v1/me/consents", Some(&u.token), serde_json::to_vec(&wanted).expect("serialise"));
    f.status("PUT /v1/me/consents (unchanged)", &r, 200);

    let cases: [(&str, &[u8]); 8] = [
        ("missing analytics", br#"{"ai_profiling":false,"marketing":true}"#),
        (
            "unknown field",
            br#"{"ai_profiling":false,"marketing":true,"analytics":false,"newsletter":true}"#,
        ),
        ("string instead of bool", br#"{"ai_profiling":"yes","marketing":true,"analytics":false}"#),
        ("number instead of bool", br#"{"ai_profiling":1,"marketing":true,"analytics":false}"#),
        ("null instead of bool", br#"{"ai_profiling":null,"marketing":true,"analytics":false}"#),
        ("array body", br#"[true,true,true]"#),
        ("not JSON", b"ai_profiling=true"),
        ("empty body", b""),
    ];
    for (what, body) in cases {
        let r = put_json(&node, "/v1/me/consents", Some(&u.token), body.to_vec());
        f.ok(&format!("PUT /v1/me/consents with {what}"), r.problem(&[400], &[]));
    }
    let m = me(&node, &u.token);
    f.check(m["consents"] == wanted, || {
        format!("after rejected PUTs the consents should stay {wanted}, got {}", m["consents"])
    });
    f.ok(
        "PUT /v1/me/consents without a token",
        put_json(&node, "/v1/me/consents", None, serde_json::to_vec(&wanted).expect("serialise")).problem(&[401], &[]),
    );

    let (ok1, e1, h1) = audit(&node, &admin);
    f.check(ok1, || {
        format!("the audit chain does not verify after the consent changes (entries {e1}, head {h1})")
    });
    f.check(e1 >= e0 + 2, || {
        format!("two consent decisions should add at least 2 audit entries; entries went {e0} -> {e1}")
    });
    f.check(h1 != h0 && h1.len() >= 32 && h1.bytes().all(|c| c.is_ascii_hexdigit()), || {
        format!("head_hash should be a new hex digest after the changes: {h0:?} -> {h1:?}")
    });
    f.finish();
}

// ---------------------------------------------------------------------------------------------
// 8. The compliance daily report
// ---------------------------------------------------------------------------------------------

#[test]
fn daily_report_lists_trades_rejections_screening_hits_and_erasures() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    add_staff(dir.path(), "reporter@example.com", "compliance");
    let node = Node::start_with(
        dir.path(),
        &[("MONETA_GDPR_ERASURE_GRACE_PERIOD", "0s"), ("MONETA_GDPR_ERASURE_CHECK_INTERVAL", "200ms")],
    );
    let trader = onboarded(&node, "reported.trader@example.com", &adventurous(), "1000.00");
    let r = node.order(&trader, "rep-buy", "ACME", "buy", "2");
    assert_eq!(r.status, 201, "{}", r.what());
    let order_id = r.json()["order_id"].as_str().unwrap().to_string();
    node.order(&trader, "rep-big", "ACME", "buy", "1000")
        .problem(&[422], &["insufficient_funds"])
        .unwrap();
    let listed = register_person(&node, "listed@example.com", "Dmitry Kovalenko", "1968-03-14", "UA");
    let leaving = plain_user(&node, "leaving@example.com");
    let r = node.call("DELETE", "/v1/me", node.builder("DELETE", "/v1/me", Some(&leaving.token), None));
    assert_eq!(r.status, 202, "{}", r.what());
    let deadline = Instant::now() + Duration::from_secs(20);
    while node.login("leaving@example.com", PASSWORD).status != 401 {
        assert!(Instant::now() < deadline, "the erasure did not happen");
        std::thread::sleep(Duration::from_millis(100));
    }

    let officer = token_of(&node, "reporter@example.com");
    let r = node.get("/v1/compliance/reports/daily", Some(&officer));
    assert_eq!(r.status, 200, "{}", r.what());
    let v = r.json();
    assert!(
        v["trades"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["order_id"] == order_id.as_str() && t["user_id"] == trader.id.as_str()),
        "{v}"
    );
    assert!(
        v["rejections"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["code"] == "insufficient_funds" && t["user_id"] == trader.id.as_str()),
        "{v}"
    );
    assert!(
        v["screening_hits"].as_array().unwrap().iter().any(|h| h["user_id"] == listed.id.as_str()),
        "{v}"
    );
    assert!(v["erasures"].as_array().unwrap().iter().any(|e| e["user_id"] == leaving.id.as_str()), "{v}");
    assert_eq!(v["totals"]["trades"], 1, "{v}");
    assert!(v["advice"].as_array().is_some_and(|a| a.is_empty()), "no advice was given today: {v}");
    // No personal data in the report.
    for needle in ["Kovalenko", "listed@example.com", "1968-03-14", "Lovelace"] {
        assert!(!r.body.contains(needle), "the report holds {needle}");
    }
    // Another day is empty; a malformed date is refused; only compliance may read it.
    let other = node.get("/v1/compliance/reports/daily?date=2001-01-01", Some(&officer)).json();
    assert_eq!(other["totals"]["trades"], 0, "{other}");
    assert_eq!(other["date"], "2001-01-01");
    node.get("/v1/compliance/reports/daily?date=2026-02-30", Some(&officer))
        .problem(&[400], &["invalid_request"])
        .unwrap();
    // Every list is oldest first (the trail is kept group by group).
    for list in ["trades", "rejections", "screening_hits", "erasures", "advice"] {
        let at: Vec<&str> = v[list].as_array().unwrap().iter().filter_map(|e| e["at"].as_str()).collect();
        assert!(at.windows(2).all(|w| w[0] <= w[1]), "{list} not in time order: {at:?}");
    }
    node.get("/v1/compliance/reports/daily", Some(&trader.token)).problem(&[403], &[]).unwrap();
}
