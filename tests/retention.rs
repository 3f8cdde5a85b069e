//! Retention against the real binary (short periods stand in for a year): security events are
//! redacted from the audit chain, which still verifies; notifications are deleted; a redaction
//! without a retention record listing it is detected as tampering; reconciliation
//! discrepancies (transaction records, not personal data) are kept.

mod common;
use common::*;
use moneta::storage::{audit_log, keys, Store};

#[test]
fn security_events_and_notifications_expire_and_the_chain_still_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    add_staff(root, "root@example.com", "admin");
    let node = Node::start_with(
        root,
        &[
            ("MONETA_RETENTION_SECURITY_EVENTS", "3s"),
            ("MONETA_RETENTION_NOTIFICATIONS", "3s"),
            ("MONETA_RETENTION_CHECK_INTERVAL", "300ms"),
        ],
    );
    let user = node.new_user("kept.briefly");
    let r = node.post(
        "/v1/auth/login",
        None,
        None,
        &json!({"email": user.email, "password": PASSWORD, "device_id": "phone"}),
    );
    assert_eq!(r.status, 200);
    assert_eq!(node.login(&user.email, "wrong password entirely").status, 401);
    let notes = node.get("/v1/me/notifications", Some(&user.token)).json();
    assert_eq!(notes.as_array().map(Vec::len), Some(1), "{notes}");
    let token = node.login("root@example.com", PASSWORD).json()["access_token"].as_str().unwrap().to_string();
    let events = node.get("/v1/admin/security-events?limit=1000", Some(&token)).json();
    assert!(events.as_array().unwrap().iter().any(|e| e["action"] == "security.login_failed"), "{events}");

    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let events = node.get("/v1/admin/security-events?limit=1000", Some(&token)).json();
        let notes = node.get("/v1/me/notifications", Some(&user.token)).json();
        let failed_gone = !events.as_array().unwrap().iter().any(|e| e["action"] == "security.login_failed");
        if failed_gone && notes.as_array().is_some_and(|n| n.is_empty()) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "not expired: {events} {notes}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let v = node.get("/v1/admin/audit/verify", Some(&token)).json();
    assert_eq!(v["ok"], true, "{v}");
    // Business records are not security events: the deposit-less user's registration and KYC stay.
    drop(node);

    let store = Store::open(&root.join("data")).unwrap();
    let records = store.audit_records().unwrap();
    assert!(records.iter().any(|r| r.action == "kyc.submit"));
    assert!(!records.iter().any(|r| r.action == "security.login_failed"));
    let redactions: Vec<_> = records.iter().filter(|r| r.action == audit_log::REDACT_ACTION).collect();
    assert!(!redactions.is_empty() && redactions.iter().all(|r| r.details.contains_key("seqs")));
    assert!(store.verify_audit().ok);

    // Redacting anything else by hand is tampering, and named.
    let victim = records.iter().find(|r| r.action == "kyc.submit").unwrap();
    let (group, victim) = (victim.group, victim.seq);
    let key = keys::audit_key(group, victim);
    let value = store.tree().get(&key).unwrap().unwrap();
    store.tree().insert(&key, audit_log::redacted_value(&value).unwrap()).unwrap();
    store.flush().unwrap();
    let report = store.verify_audit();
    assert!(!report.ok);
    assert_eq!(report.first_bad_entry, Some(victim), "{report:?}");
    assert!(report.problem.unwrap_or_default().contains("without a retention record"));
}

#[test]
fn regulatory_identity_of_an_erased_person_expires_with_its_retention_key() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let node = Node::start_with(
        root,
        &[
            ("MONETA_GDPR_ERASURE_GRACE_PERIOD", "0s"),
            ("MONETA_GDPR_ERASURE_CHECK_INTERVAL", "200ms"),
            ("MONETA_GDPR_ERASURE_LIST", root.join("erasures.list").to_str().unwrap()),
            ("MONETA_RETENTION_REGULATORY_RECORDS", "2s"),
            ("MONETA_RETENTION_CHECK_INTERVAL", "300ms"),
        ],
    );
    let user = node.new_user("short.retention");
    assert_eq!(node.deposit(&user, "d", "100.00").status, 201);
    let r = node.call("DELETE", "/v1/me", node.builder("DELETE", "/v1/me", Some(&user.token), None));
    assert_eq!(r.status, 202, "{}", r.what());
    // Erased, then (2 s later) the regulatory identity's retention key is destroyed.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut erased = false;
    loop {
        erased |= node.login(&user.email, PASSWORD).status == 401;
        if erased {
            // Comfortably past the 2 s retention plus a few job runs, even on a loaded machine.
            std::thread::sleep(Duration::from_secs(5));
            break;
        }
        assert!(std::time::Instant::now() < deadline, "not erased");
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(node);
    let store = Store::open(&root.join("data")).unwrap();
    assert!(store.regulatory(&user.id).unwrap().is_none(), "the regulatory record outlived its retention");
    let master = moneta::storage::vault::load_or_create_master_key(&root.join("data/keys/master.key")).unwrap();
    let vault = moneta::storage::vault::Vault::new(&store, &master).unwrap();
    assert!(!vault.has_data_key(&format!("retention:{}", user.id)).unwrap());
    let records = store.audit_records().unwrap();
    assert!(records
        .iter()
        .any(|r| r.action == "retention.expire" && r.details.get("user_ids").is_some_and(|u| u.contains(&user.id))));
    // The trades stay (pseudonymous) and the chain verifies.
    let journal = store
        .journal::<moneta::domain::portfolio::Portfolio>(
            &moneta::domain::ids::EntityId::new(moneta::domain::ids::EntityKind::Portfolio, &user.id),
            u64::MAX,
        )
        .unwrap();
    assert!(!journal.is_empty());
    assert!(store.verify_audit().ok);
}

#[test]
fn reconciliation_discrepancies_outlive_the_security_event_retention() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    add_staff(root, "root@example.com", "admin");
    let mut node = Node::start(root);
    let user = node.new_user("reconciled");
    assert_eq!(node.deposit(&user, "d", "1000.00").status, 201);
    let r = node.order(&user, "o", "ACME", "buy", "1");
    assert_eq!(r.status, 201, "{}", r.what());
    let order_id = r.json()["order_id"].as_str().unwrap().to_string();
    let booked = Instant::now();
    assert_eq!(node.terminate(Duration::from_secs(30)).map(|s| s.success()), Some(true));
    // The broker's confirmation of the order goes missing: a discrepancy to raise.
    {
        use moneta::storage::keys::{shard_record_key, ShardRecord};
        let store = Store::open(&root.join("data")).unwrap();
        let key = shard_record_key(moneta::storage::records::user_shard(&user.id), ShardRecord::Confirmation, &order_id);
        assert!(store.tree().remove(key).unwrap().is_some(), "the broker confirmed the order");
        store.flush().unwrap();
    }
    let node = Node::start_with(
        root,
        &[("MONETA_RETENTION_SECURITY_EVENTS", "3s"), ("MONETA_RETENTION_CHECK_INTERVAL", "300ms")],
    );
    // A booked order is expected to be confirmed 5 s after it was booked.
    std::thread::sleep(Duration::from_secs(6).saturating_sub(booked.elapsed()));
    let out = node.cli(&["reconcile"]).output().expect("run the moneta CLI");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("discrepancies: 1 "), "{stdout}");
    // A personal security event recorded after the alert: once retention redacted it, every
    // run since has passed over the (older) alert too.
    assert_eq!(node.login(&user.email, "wrong password entirely").status, 401);
    let token = node.login("root@example.com", PASSWORD).json()["access_token"].as_str().unwrap().to_string();
    let discrepancies = |events: &Value| -> usize {
        events
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["action"] == "security.reconciliation_discrepancy" && e["details"]["order_id"] == order_id.as_str())
            .count()
    };
    let events = node.get("/v1/admin/security-events?limit=1000", Some(&token)).json();
    assert_eq!(discrepancies(&events), 1, "{events}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let events = node.get("/v1/admin/security-events?limit=1000", Some(&token)).json();
        if !events.as_array().unwrap().iter().any(|e| e["action"] == "security.login_failed") {
            break;
        }
        assert!(Instant::now() < deadline, "the failed login was not redacted: {events}");
        std::thread::sleep(Duration::from_millis(200));
    }
    // A few more runs, well past the alert's retention.
    std::thread::sleep(Duration::from_secs(1));
    let events = node.get("/v1/admin/security-events?limit=1000", Some(&token)).json();
    assert_eq!(discrepancies(&events), 1, "retention redacted the reconciliation alert: {events}");
    drop(node);

    let store = Store::open(&root.join("data")).unwrap();
    let records = store.audit_records().unwrap();
    assert!(!records.iter().any(|r| r.action == "security.login_failed"));
    let kept = records
        .iter()
        .find(|r| r.action == "security.reconciliation_discrepancy")
        .expect("the reconciliation alert is kept");
    assert_eq!(kept.details.get("order_id").map(String::as_str), Some(order_id.as_str()));
    assert!(store.verify_audit().ok);
}
