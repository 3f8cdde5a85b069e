//! Input strictness (issue 16, points 6 to 9): bodies are JSON only when declared so (415
//! otherwise), decimals are exactly `-?digits(.digits)?`, a refused amount or quantity names
//! the limit it broke, emails compare after NFKC and names refuse bidirectional controls.

mod common;

use common::Node;

#[test]
fn decimals_are_strict_and_refusals_name_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start_with(dir.path(), &[]);
    let user = node.new_user("strict");
    let mut findings = Vec::new();

    for (i, bad) in ["100.", ".5", "1e3", " 5", "5 ", "+5", "1.2.3", "-", "."].iter().enumerate() {
        let r = node.deposit(&user, &format!("bad-{i}"), bad);
        if r.status != 400 || r.json()["code"] != "invalid_request" {
            findings.push(format!("amount {bad:?}: expected 400 invalid_request, got {}", r.what()));
        }
    }
    let expect = |findings: &mut Vec<String>, what: &str, r: common::Resp, code: &str, says: &str| {
        let body = r.json();
        if r.status != 422 || body["code"] != code || !body["detail"].as_str().unwrap_or_default().contains(says) {
            findings.push(format!("{what}: expected 422 {code} saying {says:?}, got {}", r.what()));
        }
    };
    expect(
        &mut findings,
        "too large an amount",
        node.deposit(&user, "big", "1000000000000.00"),
        "invalid_amount",
        "at most 1000000000",
    );
    expect(
        &mut findings,
        "too many places",
        node.deposit(&user, "places", "10.555"),
        "invalid_amount",
        "at most 2 decimal places",
    );
    expect(
        &mut findings,
        "a negative amount",
        node.deposit(&user, "neg", "-5"),
        "invalid_amount",
        "must be positive",
    );
    assert_eq!(node.deposit(&user, "ok", "100.50").status, 201, "a plain amount still works");
    expect(
        &mut findings,
        "too large a quantity",
        node.order(&user, "q-big", "ACME", "buy", "1000000000000"),
        "invalid_quantity",
        "at most 1000000000",
    );
    expect(
        &mut findings,
        "too many places",
        node.order(&user, "q-places", "ACME", "buy", "0.0000001"),
        "invalid_quantity",
        "at most 6 decimal places",
    );
    assert!(findings.is_empty(), "{} deviation(s):\n  - {}", findings.len(), findings.join("\n  - "));
}

/// Point 9: one email, one account, whatever its Unicode spelling; names refuse bidi controls.
#[test]
fn emails_are_compared_after_nfkc_and_names_refuse_bidi_controls() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start_with(dir.path(), &[]);
    assert_eq!(node.register("alice@example.com", common::PASSWORD).status, 201);
    let r = node.register("ａｌｉｃｅ@example.com", common::PASSWORD);
    assert_eq!((r.status, r.json()["code"].as_str()), (409, Some("email_taken")), "{}", r.what());
    let login = node.login("ａｌｉｃｅ@ｅｘａｍｐｌｅ.com", common::PASSWORD);
    assert_eq!(login.status, 200, "the fullwidth spelling logs in to the same account: {}", login.what());
    let r = node.post(
        "/v1/auth/register",
        None,
        None,
        &serde_json::json!({"email": "mallory@example.com", "password": common::PASSWORD, "full_name": "Mal\u{202E}yrol", "date_of_birth": "1990-04-01", "country": "GB"}),
    );
    assert_eq!(r.status, 400, "{}", r.what());
}

#[test]
fn bodies_are_accepted_only_as_application_json() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start_with(dir.path(), &[]);
    let user = node.new_user("media");
    let body = br#"{"amount":"10.00"}"#.to_vec();
    let send = |key: &str, content_type: Option<&str>| {
        let mut rb = node.builder("POST", "/v1/portfolio/deposits", Some(&user.token), Some(key));
        if let Some(t) = content_type {
            rb = rb.header("Content-Type", t);
        }
        node.call("POST", "/v1/portfolio/deposits", rb.body(body.clone()))
    };
    let mut findings = Vec::new();
    for (i, t) in [
        Some("text/plain"),
        Some("application/xml"),
        Some("application/x-www-form-urlencoded"),
        Some("application/jsonp"),
        // JSON in another charset would be read as other text than was meant.
        Some("application/json; charset=latin1"),
        Some("application/json; charset=utf-16"),
        None,
    ]
    .into_iter()
    .enumerate()
    {
        let r = send(&format!("media-{i}"), t);
        if r.status != 415 || r.json()["code"] != "unsupported_media_type" {
            findings.push(format!("Content-Type {t:?}: expected 415 unsupported_media_type, got {}", r.what()));
        }
    }
    // Registration (no token) is held to it as well.
    let r = node.call(
        "POST",
        "/v1/auth/register",
        node.builder("POST", "/v1/auth/register", None, None)
            .header("Content-Type", "text/plain")
            .body(r#"{"email":"x@example.com"}"#),
    );
    if r.status != 415 {
        findings.push(format!("register as text/plain: expected 415, got {}", r.what()));
    }
    // Nothing moved; JSON with parameters is JSON.
    let p = node.get("/v1/portfolio", Some(&user.token));
    if p.json()["cash"] != "0.00" {
        findings.push(format!("a refused body moved money: {}", p.what()));
    }
    let r = send("media-ok", Some("application/json; charset=utf-8"));
    if r.status != 201 {
        findings.push(format!("application/json; charset=utf-8: expected 201, got {}", r.what()));
    }
    assert!(findings.is_empty(), "{findings:#?}");
}

#[test]
fn a_query_parameter_given_twice_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path());
    let user = node.new_user("query.twice");
    for path in ["/v1/portfolio/performance?period=1d&period=all", "/v1/me/export?format=json&format=csv"] {
        node.get(path, Some(&user.token)).problem(&[400], &["invalid_request"]).unwrap();
    }
    // Once is fine, and a parameter the route does not take is left alone.
    assert_eq!(node.get("/v1/portfolio/performance?period=1d&x=1&x=2", Some(&user.token)).status, 200);
}
