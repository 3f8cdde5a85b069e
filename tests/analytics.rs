//! The anonymised analytics export: consenting investors only, stable pseudonyms, coarse bands,
//! no personal data; withdrawing consent excludes the person from the next export.

mod common;
use common::*;

fn export(root: &std::path::Path, out: &std::path::Path) -> String {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_moneta"));
    configure(&mut cmd, root, 0);
    let o = cmd.args(["analytics", "export", "--out", out.to_str().unwrap()]).output().unwrap();
    let text = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(o.status.success(), "{text}{}", String::from_utf8_lossy(&o.stderr));
    text
}

fn consents(node: &Node, token: &str, analytics: bool) {
    let body = json!({"ai_profiling": false, "marketing": false, "analytics": analytics});
    let r = node.call("PUT", "/v1/me/consents", node.builder("PUT", "/v1/me/consents", Some(token), None).json(&body));
    assert_eq!(r.status, 200, "{}", r.what());
}

#[test]
fn only_consenting_investors_are_exported_without_personal_data() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let mut node = Node::start(root);
    let yes = node.new_user("analytics.yes");
    let no = node.new_user("analytics.no");
    consents(&node, &yes.token, true);
    consents(&node, &no.token, false);
    for u in [&yes, &no] {
        assert_eq!(node.deposit(u, "d", "1000.00").status, 201);
        assert_eq!(node.order(u, "o", "WRLD", "buy", "2").status, 201);
    }

    // While the node runs, it writes the export itself (control socket).
    let first = root.join("export-1");
    let text = export(root, &first);
    assert!(text.contains("investors 1 (without analytics consent, left out: 1), orders 1"), "{text}");
    let investors = std::fs::read_to_string(first.join("investors.csv")).unwrap();
    let orders = std::fs::read_to_string(first.join("orders.csv")).unwrap();
    let lines: Vec<&str> = investors.lines().collect();
    assert_eq!(lines.len(), 2, "{investors}");
    assert!(lines[0].starts_with("investor,age_band,country"), "{investors}");
    // Born 1990-04-01 (the harness): a band, never the date.
    assert!(
        lines[1].contains("\"35-44\"") && lines[1].contains("\"GB\"") && lines[1].contains("\"aggressive\""),
        "{investors}"
    );
    let pseudonym = lines[1].split(',').next().unwrap().trim_matches('"').to_string();
    assert!(pseudonym.starts_with("anon_"));
    assert!(orders.contains(&pseudonym) && orders.contains("\"WRLD\""), "{orders}");
    for needle in [
        yes.id.as_str(),
        no.id.as_str(),
        "Ada Lovelace",
        "Lovelace",
        "1990-04-01",
        "example.com",
        "123456789",
        "High Street",
    ] {
        assert!(!investors.contains(needle) && !orders.contains(needle), "the export holds {needle}");
    }

    // Withdrawing consent excludes them from the next export.
    consents(&node, &yes.token, false);
    let second = root.join("export-2");
    let text = export(root, &second);
    assert!(text.contains("investors 0 (without analytics consent, left out: 2), orders 0"), "{text}");
    assert_eq!(std::fs::read_to_string(second.join("investors.csv")).unwrap().lines().count(), 1);

    // Offline (node stopped), with consent again: the same pseudonym (stable across exports).
    consents(&node, &yes.token, true);
    assert!(node.terminate(Duration::from_secs(20)).is_some_and(|s| s.success()));
    let third = root.join("export-3");
    export(root, &third);
    let investors = std::fs::read_to_string(third.join("investors.csv")).unwrap();
    assert!(investors.contains(&pseudonym), "{investors}");
    // Each export is an audit record.
    let store = moneta::storage::Store::open(&root.join("data")).unwrap();
    let n = store.audit_records().unwrap().iter().filter(|r| r.action == "gdpr.analytics_export").count();
    assert_eq!(n, 3);
}
