//! Data subject rights against the real binary: the export has everything held about the
//! caller (JSON and CSV), and an erasure after the grace period leaves no way to log in, no
//! readable personal data, and the regulatory records (trades, audit chain) intact.

mod common;
use common::*;
use moneta::domain::account::AccountEvent;
use moneta::domain::ids::{EntityId, EntityKind};
use moneta::domain::portfolio::PortfolioEvent;
use moneta::storage::vault::{load_or_create_master_key, Vault, VaultError};
use moneta::storage::Store;

const NAME: &str = "Ottoline Fairweather-Quillby";
const EMAIL: &str = "ottoline.quillby.5521@example.net";
const DOC: &str = "OFQ55210987";
const ADDRESS: &str = "7 Marrowbone Crescent, Quillby";

fn register_distinctive(node: &Node) -> (String, String) {
    let r = node.post(
        "/v1/auth/register",
        None,
        None,
        &json!({"email": EMAIL, "password": PASSWORD, "full_name": NAME, "date_of_birth": "1979-09-14", "country": "GB"}),
    );
    assert_eq!(r.status, 201, "{}", r.what());
    let uid = r.json()["user_id"].as_str().unwrap().to_string();
    let r = node.post(
        "/v1/auth/login",
        None,
        None,
        &json!({"email": EMAIL, "password": PASSWORD, "device_id": "tablet-1"}),
    );
    assert_eq!(r.status, 200, "{}", r.what());
    let token = r.json()["access_token"].as_str().unwrap().to_string();
    let r = node.post(
        "/v1/me/kyc",
        Some(&token),
        None,
        &json!({"document_type": "passport", "document_number": DOC, "address": ADDRESS}),
    );
    assert_eq!(r.status, 200, "{}", r.what());
    let r = node.post("/v1/me/suitability", Some(&token), None, &json!({"answers": adventurous()}));
    assert_eq!(r.status, 200, "{}", r.what());
    (uid, token)
}

fn files_containing(dir: &std::path::Path, needles: &[&str]) -> Vec<String> {
    let mut hits = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let bytes = std::fs::read(&p).unwrap();
                for n in needles {
                    if bytes.windows(n.len()).any(|w| w.eq_ignore_ascii_case(n.as_bytes())) {
                        hits.push(format!("{} contains {n:?}", p.display()));
                    }
                }
            }
        }
    }
    hits
}

#[test]
fn export_returns_everything_held_in_json_and_csv() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path());
    let (uid, token) = register_distinctive(&node);
    let user = User {
        id: uid.clone(),
        email: EMAIL.into(),
        token: token.clone(),
    };
    let r = node.call(
        "PUT",
        "/v1/me/consents",
        node.builder("PUT", "/v1/me/consents", Some(&token), None)
            .json(&json!({"ai_profiling": true, "marketing": false, "analytics": true})),
    );
    assert_eq!(r.status, 200, "{}", r.what());
    assert_eq!(node.deposit(&user, "d1", "5000.00").status, 201);
    let r = node.order(&user, "o1", "ACME", "buy", "2");
    assert_eq!(r.status, 201, "{}", r.what());
    let order_id = r.json()["order_id"].as_str().unwrap().to_string();
    // A sign-in to the person's account with a wrong password is about them: in their export.
    let r = node.post("/v1/auth/login", None, None, &json!({"email": EMAIL, "password": "not the password at all"}));
    assert_eq!(r.status, 401, "{}", r.what());
    // (A failed sign-in's record is written without holding up the answer: bounded wait.)
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    let mut polls = 0;
    while {
        polls += 1;
        !node.get("/v1/me/export?format=json", Some(&token)).body.contains("security.login_failed")
    } {
        assert!(std::time::Instant::now() < deadline, "the failed sign-in never reached the export");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }

    let r = node.get("/v1/me/export?format=json", Some(&token));
    assert_eq!(r.status, 200, "{}", r.what());
    assert!(has_no_store(&r), "personal data needs Cache-Control: no-store");
    let v = r.json();
    assert_eq!(v["user_id"], uid.as_str());
    assert_eq!(v["profile"]["email"], EMAIL);
    assert_eq!(v["profile"]["full_name"], NAME);
    assert_eq!(v["profile"]["date_of_birth"], "1979-09-14");
    assert_eq!(v["kyc"]["status"], "verified");
    assert_eq!(v["kyc"]["document_number"], DOC);
    assert_eq!(v["kyc"]["address"], ADDRESS);
    assert_eq!(v["screening"]["status"], "clear");
    assert_eq!(v["consents"]["analytics"], true);
    assert_eq!(v["suitability"]["risk_profile"]["risk_score"], 7);
    assert_eq!(v["suitability"]["answers"]["objective"], "speculation");
    assert_eq!(v["notifications"][0]["kind"], "new_device");
    assert_eq!(v["portfolio"]["holdings"][0]["symbol"], "ACME");
    assert_eq!(v["orders"][0]["order_id"], order_id.as_str());
    assert_eq!(v["transactions"].as_array().map(Vec::len), Some(2), "{}", v["transactions"]);
    let actions: Vec<&str> = v["audit_records"].as_array().unwrap().iter().filter_map(|r| r["action"].as_str()).collect();
    for a in [
        "account.register",
        "security.login",
        "kyc.submit",
        "consent.change",
        "portfolio.deposit",
        "order.filled",
    ] {
        assert!(actions.contains(&a), "audit records about the caller lack {a}: {actions:?}");
    }
    assert!(v["security_events"].as_array().unwrap().iter().any(|e| e["action"] == "security.new_device"));
    let failed = v["security_events"].as_array().unwrap().iter().find(|e| e["action"] == "security.login_failed");
    let failed = failed.unwrap_or_else(|| panic!("the failed sign-in is not in the export: {}", v["security_events"]));
    assert_eq!(failed["actor"], "anonymous", "who failed is not known to be the person: {failed}");

    // CSV: one file with a kind column.
    let r = node.get("/v1/me/export?format=csv", Some(&token));
    assert_eq!(r.status, 200, "{}", r.what());
    assert!(
        r.header("content-type").unwrap_or_default().starts_with("text/csv"),
        "{:?}",
        r.header("content-type")
    );
    assert!(r.body.starts_with("kind,id,field,value\n"), "{}", &r.body[..80.min(r.body.len())]);
    assert!(r.body.contains(&format!("\"order\",\"{order_id}\",\"symbol\",\"ACME\"")), "no order row");
    assert!(r.body.contains(&format!("\"profile\",\"{uid}\",\"full_name\",\"{NAME}\"")), "no profile row");
    // Each export is itself audited, and an unknown format is refused.
    let v = node.get("/v1/me/export", Some(&token)).json();
    let exports = v["audit_records"].as_array().unwrap().iter().filter(|r| r["action"] == "gdpr.export").count();
    assert_eq!(exports, polls + 2, "every earlier export is an audit record");
    node.get("/v1/me/export?format=xml", Some(&token))
        .problem(&[400], &["invalid_request"])
        .unwrap();
    node.get("/v1/me/export", None).problem(&[401], &[]).unwrap();
}

#[test]
fn erasure_after_the_grace_period_leaves_no_readable_identity_and_keeps_the_trades() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = Node::start_with(
        dir.path(),
        &[("MONETA_GDPR_ERASURE_GRACE_PERIOD", "0s"), ("MONETA_GDPR_ERASURE_CHECK_INTERVAL", "200ms")],
    );
    let (uid, token) = register_distinctive(&node);
    let user = User {
        id: uid.clone(),
        email: EMAIL.into(),
        token: token.clone(),
    };
    assert_eq!(node.deposit(&user, "d1", "5000.00").status, 201);
    let r = node.order(&user, "o1", "WRLD", "buy", "3");
    assert_eq!(r.status, 201, "{}", r.what());
    let order_id = r.json()["order_id"].as_str().unwrap().to_string();

    let r = node.call("DELETE", "/v1/me", node.builder("DELETE", "/v1/me", Some(&token), None));
    assert_eq!(r.status, 202, "{}", r.what());
    assert!(r.json()["erasure_due_at"].as_str().is_some_and(|s| s.ends_with('Z')), "{}", r.body);

    // The job erases within a few checks: login becomes impossible.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let r = node.login(EMAIL, PASSWORD);
        if r.status == 401 {
            r.problem(&[401], &["invalid_credentials"]).unwrap();
            break;
        }
        assert!(std::time::Instant::now() < deadline, "still able to log in: {}", r.what());
        std::thread::sleep(Duration::from_millis(100));
    }
    // Tokens issued before are dead too.
    node.get("/v1/me", Some(&token)).problem(&[401], &[]).unwrap();
    node.get("/v1/portfolio", Some(&token)).problem(&[401], &[]).unwrap();
    node.get("/v1/me/export", Some(&token)).problem(&[401], &[]).unwrap();
    let log = node.logs();
    assert!(node.terminate(Duration::from_secs(20)).is_some_and(|s| s.success()));

    // No file of the data folder and no log line holds the identity.
    let needles = [NAME, EMAIL, DOC, ADDRESS, "1979-09-14", "Fairweather"];
    let hits = files_containing(&dir.path().join("data"), &needles);
    assert!(hits.is_empty(), "{hits:?}");
    for n in needles {
        assert!(!log.contains(n), "the log holds {n}");
    }

    // The regulatory records stay: the trade in the portfolio's journal, the audit chain
    // intact; the sealed personal data in older journal entries can no longer be opened.
    let data = dir.path().join("data");
    let store = Store::open(&data).unwrap();
    let journal = store
        .journal::<moneta::domain::portfolio::Portfolio>(&EntityId::new(EntityKind::Portfolio, &uid), u64::MAX)
        .unwrap();
    assert!(journal
        .iter()
        .any(|e| matches!(&e.event, PortfolioEvent::OrderFilled { order, .. } if order.order_id == order_id)));
    let account = store
        .journal::<moneta::domain::account::Account>(&EntityId::new(EntityKind::Account, &uid), u64::MAX)
        .unwrap();
    let sealed = account
        .iter()
        .find_map(|e| match &e.event {
            AccountEvent::Registered { sealed_profile, .. } => Some(sealed_profile.clone()),
            _ => None,
        })
        .expect("the registration is still in the journal (sealed)");
    assert!(account.iter().any(|e| matches!(e.event, AccountEvent::Erased { .. })));
    let master = load_or_create_master_key(&data.join("keys/master.key")).unwrap();
    let vault = Vault::new(&store, &master).unwrap();
    assert!(matches!(vault.open(&uid, "profile", &sealed), Err(VaultError::NoKey)));
    // The identity regulation needs is kept, sealed under its own retention key, for 7 years.
    let kept = store.regulatory(&uid).unwrap().expect("a regulatory identity record");
    assert_eq!(kept.key_id, format!("retention:{uid}"));
    let identity: serde_json::Value = vault.open_json(&kept.key_id, "regulatory", &kept.sealed).unwrap();
    assert_eq!(identity["full_name"], NAME);
    assert_eq!(identity["document_number"], DOC);
    assert!(identity.get("email").is_none(), "the email is not needed for regulatory records");
    let years = (kept.expires_at.millis() as f64 / 1000.0 - now_unix()) / (365.25 * 86_400.0);
    assert!((6.9..7.1).contains(&years), "kept for {years} years");
    let report = store.verify_audit();
    assert!(report.ok, "{report:?}");
    let records = store.audit_records().unwrap();
    assert!(records.iter().any(|r| r.action == "gdpr.erasure" && r.entity == format!("account/{uid}")));
    drop(vault);
    drop(store);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_moneta"))
        .args(["audit", "verify"])
        .env("MONETA_NODE_DATA_DIR", &data)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));

    // A backup made afterwards holds no readable identity either: not in its bytes, not in a
    // folder restored from it.
    let backup = dir.path().join("after.backup");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_moneta"))
        .args(["backup", "create", "--out", backup.to_str().unwrap()])
        .env("MONETA_NODE_DATA_DIR", &data)
        .env("MONETA_BACKUP_KEY_FILE", dir.path().join("backup.key"))
        .env("MONETA_GDPR_ERASURE_LIST", dir.path().join("erasures.list"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let restored = dir.path().join("restored");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_moneta"))
        .args(["backup", "restore", "--from", backup.to_str().unwrap()])
        .env("MONETA_NODE_DATA_DIR", &restored)
        .env("MONETA_BACKUP_KEY_FILE", dir.path().join("backup.key"))
        .env("MONETA_GDPR_ERASURE_LIST", dir.path().join("erasures.list"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let hits = files_containing(dir.path(), &needles);
    assert!(hits.is_empty(), "{hits:?}");

    // The email is free again: a new person may register with it.
    let node = Node::start(dir.path());
    assert_eq!(node.register(EMAIL, PASSWORD).status, 201);
}

#[test]
fn erasure_waits_for_the_grace_period() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path());
    let user = node.new_user("patient");
    let delete = || node.call("DELETE", "/v1/me", node.builder("DELETE", "/v1/me", Some(&user.token), None));
    let r = delete();
    assert_eq!(r.status, 202, "{}", r.what());
    let due = r.json()["erasure_due_at"].as_str().unwrap().to_string();
    let due_secs = rfc3339_utc(&due).unwrap();
    let expected = now_unix() + 30.0 * 86_400.0;
    assert!((due_secs - expected).abs() < 120.0, "due {due}, expected about 30 days from now");
    // Asking again answers the same date; nothing is erased yet.
    assert_eq!(delete().json()["erasure_due_at"], due.as_str());
    assert_eq!(node.login(&user.email, PASSWORD).status, 200);
    assert_eq!(node.get("/v1/me", Some(&user.token)).status, 200);
}
