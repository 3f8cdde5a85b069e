//! Reloading the sanctions list re-screens every account holder: a person added to the list
//! after they registered is blocked from trading once the list is reloaded, and a compliance
//! officer sees the hit.

mod common;
use common::*;

const LIST_BEFORE: &str = r#"9001,"KOVALENKO, Dmitro Ivanovych","individual","UKRAINE-EO13660","-0- ","-0- ","-0- ","-0- ","-0- ","-0- ","-0- ","DOB 14 Mar 1968; POB Donetsk; nationality Ukraine."
"#;

const ADDED: &str = r#"9100,"ROEBUCK, Jennifer Ann","individual","SDGT","-0- ","-0- ","-0- ","-0- ","-0- ","-0- ","-0- ","DOB 03 Feb 1985; nationality United Kingdom."
"#;

#[test]
fn reloading_the_list_rescreens_every_user() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::write(root.join("sdn.csv"), LIST_BEFORE).unwrap();
    add_staff(root, "officer@example.com", "compliance");
    let list = root.join("sdn.csv");
    let node = Node::start_with(root, &[("MONETA_COMPLIANCE_SANCTIONS_LIST", list.to_str().unwrap())]);

    // Jennifer registers, passes KYC (screened clear against the first list) and trades.
    let r = node.post(
        "/v1/auth/register",
        None,
        None,
        &json!({"email": "jen@example.com", "password": PASSWORD, "full_name": "Jennifer Roebuck", "date_of_birth": "1985-02-03", "country": "GB"}),
    );
    assert_eq!(r.status, 201, "{}", r.what());
    let token = node.login("jen@example.com", PASSWORD).json()["access_token"].as_str().unwrap().to_string();
    let r = node.post(
        "/v1/me/kyc",
        Some(&token),
        None,
        &json!({"document_type": "passport", "document_number": "123456789", "address": "1 High Street, London"}),
    );
    assert_eq!(r.json()["screening"], "clear", "{}", r.what());
    let r = node.post("/v1/me/suitability", Some(&token), None, &json!({"answers": adventurous()}));
    assert_eq!(r.status, 200, "{}", r.what());
    let user = User {
        id: String::new(),
        email: "jen@example.com".into(),
        token: token.clone(),
    };
    assert_eq!(node.deposit(&user, "d1", "1000.00").status, 201);
    assert_eq!(node.order(&user, "o1", "ACME", "buy", "1").status, 201);

    // The list gains her; a compliance officer reloads it.
    std::fs::write(&list, format!("{LIST_BEFORE}{ADDED}")).unwrap();
    let officer = node.login("officer@example.com", PASSWORD).json()["access_token"].as_str().unwrap().to_string();
    let r = node.post("/v1/compliance/sanctions/reload", Some(&officer), None, &json!({}));
    assert_eq!(r.status, 200, "{}", r.what());
    let v = r.json();
    assert_eq!(v["entries"], 2, "{v}");
    assert_eq!(v["screened"], 1, "{v}");
    assert_eq!(v["not_clear"], 1, "{v}");

    // She is now blocked, and the hit is listed for review.
    let r = node.get("/v1/me", Some(&token));
    assert_eq!(r.json()["screening"], "match", "{}", r.what());
    let r = node.order(&user, "o2", "ACME", "buy", "1");
    r.problem(&[422], &["sanctions_block"]).unwrap();
    let r = node.get("/v1/compliance/screening-hits", Some(&officer));
    assert_eq!(r.status, 200, "{}", r.what());
    assert!(r.body.contains("9100"), "the hit names the list entry: {}", r.body);

    // A malformed list is refused with a clear error and the loaded list stays in force.
    std::fs::write(&list, "9001,\"unterminated\n").unwrap();
    let r = node.post("/v1/compliance/sanctions/reload", Some(&officer), None, &json!({}));
    r.problem(&[422], &["invalid_sanctions_list"]).unwrap();
    let r = node.order(&user, "o3", "ACME", "buy", "1");
    r.problem(&[422], &["sanctions_block"]).unwrap();
}
