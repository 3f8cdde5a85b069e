//! The cluster's secrets are the cluster's, not a node's: two nodes given the same secrets
//! folder compute the same email index and verify each other's tokens; a node with other
//! secrets does neither (the control that shows the test can fail).

use moneta::config::Config;
use moneta::domain::account::Role;

async fn node(data: &std::path::Path, secrets: &std::path::Path) -> std::sync::Arc<moneta::gateway::AppState> {
    let env = vec![
        ("MONETA_NODE_DATA_DIR".to_string(), data.display().to_string()),
        ("MONETA_SECURITY_SECRETS_DIR".to_string(), secrets.display().to_string()),
        ("MONETA_GDPR_ERASURE_LIST".to_string(), data.with_extension("erasures").display().to_string()),
    ];
    let config = Config::load_with_env(None, &env).unwrap();
    moneta::node::open_state(&config).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_sharing_the_secrets_folder_share_the_email_index_and_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let shared = dir.path().join("cluster-secrets");
    let a = node(&dir.path().join("a"), &shared).await;
    let b = node(&dir.path().join("b"), &shared).await;
    let other = node(&dir.path().join("c"), &dir.path().join("other-secrets")).await;

    // The first node generated the secrets; the second read them.
    for f in ["email-index.key", "jwt-ed25519.pk8", "master.key"] {
        assert!(shared.join(f).exists(), "{f} is in the shared folder");
        assert!(!dir.path().join("a/keys").join(f).exists(), "{f} is not kept per node");
    }

    let email = "someone@example.com";
    assert_eq!(
        a.email_hash(email),
        b.email_hash(email),
        "one email, one index entity, whichever node computes it"
    );
    assert_ne!(a.email_hash(email), other.email_hash(email), "control: other secrets, another index");

    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let token = a.auth.issue("usr_1", &[Role::User], &["pwd".to_string()], Some("fam_1"), now);
    let claims = b.auth.verify(&token).expect("a token issued by one node verifies on another");
    assert_eq!(claims.sub, "usr_1");
    assert!(other.auth.verify(&token).is_err(), "control: a node of another cluster refuses it");
    assert_eq!(a.auth.jwks(), b.auth.jwks(), "both publish the same keys");
}
