use super::*;

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// Found in review: a billion-year retention wrapped round and redacted everything at once,
/// a huge request timeout or tick interval panicked at start, a zero timeout refused every
/// request. Each is refused, naming its key.
#[test]
fn durations_out_of_range_are_refused_naming_their_key() {
    for (var, value, key) in [
        ("MONETA_RETENTION_SECURITY_EVENTS", "1000000000y", "retention.security_events"),
        ("MONETA_RETENTION_NOTIFICATIONS", "101y", "retention.notifications"),
        ("MONETA_RETENTION_REGULATORY_RECORDS", "1000000000y", "retention.regulatory_records"),
        ("MONETA_GATEWAY_REQUEST_TIMEOUT", "0s", "gateway.request_timeout"),
        ("MONETA_GATEWAY_REQUEST_TIMEOUT", "300000000000y", "gateway.request_timeout"),
        ("MONETA_MARKET_TICK_INTERVAL", "300000000000y", "market.tick_interval"),
        ("MONETA_ENTITIES_RESTART_LIMIT", "0", "entities.restart_limit"),
        ("MONETA_ENTITIES_RESTART_WINDOW", "0s", "entities.restart_window"),
    ] {
        match Config::load_with_env(None, &env(&[(var, value)])) {
            Ok(_) => panic!("{var}={value} was accepted"),
            Err(e) => assert!(e.to_string().contains(key), "{var}={value}: {e}"),
        }
    }
    for (var, value) in [("MONETA_RETENTION_REGULATORY_RECORDS", "100y"), ("MONETA_GATEWAY_REQUEST_TIMEOUT", "10m")] {
        Config::load_with_env(None, &env(&[(var, value)])).unwrap_or_else(|e| panic!("{var}={value}: {e}"));
    }
}

#[test]
fn default_loads_with_every_kind() {
    let c = Config::load_with_env(None, &[]).unwrap();
    assert!(c.market.instruments.len() >= 12);
    for kind in [
        InstrumentKind::Equity,
        InstrumentKind::Etf,
        InstrumentKind::Bond,
        InstrumentKind::Fund,
        InstrumentKind::Derivative,
        InstrumentKind::LeveragedEtf,
    ] {
        assert!(c.market.instruments.iter().any(|i| i.kind == kind), "{kind:?} missing");
    }
    assert_eq!(c.entities.idle_timeout, Duration::from_secs(300));
}

#[test]
fn cluster_keys_come_from_the_environment_and_a_joining_node_needs_the_secret() {
    let c = Config::load_with_env(None, &[]).unwrap();
    assert!(c.cluster.is_single_node(), "the embedded default is a cluster of one");
    let e = Config::load_with_env(None, &env(&[("MONETA_CLUSTER_JOIN", "127.0.0.1:7071, 127.0.0.1:7072")]))
        .unwrap_err()
        .to_string();
    assert!(e.contains("cluster.secret_file"), "{e}");
    let c = Config::load_with_env(
        None,
        &env(&[
            ("MONETA_CLUSTER_JOIN", "127.0.0.1:7071, 127.0.0.1:7072"),
            ("MONETA_CLUSTER_SECRET_FILE", "/tmp/secret"),
            ("MONETA_CLUSTER_BOOTSTRAP_EXPECT", "3"),
        ]),
    )
    .unwrap();
    assert_eq!(c.cluster.join, vec!["127.0.0.1:7071", "127.0.0.1:7072"]);
    assert_eq!(c.cluster.bootstrap_expect, 3);
    // A join list of nothing but commas, or with an empty entry, is refused (it formed a
    // cluster of its own); an empty value is an empty list; one comma after the last entry
    // (README's recipe builds the list in a shell loop) is not an entry.
    for join in [",,", " , ", ",", "127.0.0.1:7071,,127.0.0.1:7072", "127.0.0.1:7071,,", ",127.0.0.1:7071"] {
        let e = Config::load_with_env(None, &env(&[("MONETA_CLUSTER_JOIN", join), ("MONETA_CLUSTER_SECRET_FILE", "/tmp/secret")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("MONETA_CLUSTER_JOIN") && e.contains("empty entry"), "{join:?}: {e}");
    }
    let c = Config::load_with_env(None, &env(&[("MONETA_CLUSTER_JOIN", " ")])).unwrap();
    assert!(c.cluster.join.is_empty());
    let c = Config::load_with_env(
        None,
        &env(&[
            ("MONETA_CLUSTER_JOIN", "127.0.0.1:7072,127.0.0.1:7073,"),
            ("MONETA_CLUSTER_SECRET_FILE", "/tmp/secret"),
        ]),
    )
    .unwrap();
    assert_eq!(c.cluster.join, vec!["127.0.0.1:7072", "127.0.0.1:7073"]);
    // A host is an IP address or a host name: a list joined with ';' is not one address.
    for join in ["127.0.0.1:7071;127.0.0.1:7072", "bad host:7071", "-x.example:7071", "a..b:7071"] {
        let e = Config::load_with_env(None, &env(&[("MONETA_CLUSTER_JOIN", join), ("MONETA_CLUSTER_SECRET_FILE", "/tmp/secret")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("cluster.join"), "{join:?}: {e}");
    }
    let c = Config::load_with_env(
        None,
        &env(&[
            ("MONETA_CLUSTER_JOIN", "moneta-0.moneta.default.svc.cluster.local:7070,[::1]:7070"),
            ("MONETA_CLUSTER_SECRET_FILE", "/tmp/secret"),
        ]),
    )
    .unwrap();
    assert_eq!(c.cluster.join.len(), 2);
    let e = Config::load_with_env(None, &env(&[("MONETA_CLUSTER_LISTEN", "nowhere")]))
        .unwrap_err()
        .to_string();
    assert!(e.contains("cluster.listen"), "{e}");
    let e = Config::load_with_env(None, &env(&[("MONETA_CLUSTER_GROUPS", "0")])).unwrap_err().to_string();
    assert!(e.contains("cluster.groups"), "{e}");
}

#[test]
fn env_overrides_and_errors_name_the_key() {
    let c = Config::load_with_env(
        None,
        &env(&[
            ("MONETA_NODE_DATA_DIR", "/tmp/x"),
            ("MONETA_GATEWAY_LISTEN", "127.0.0.1:9999"),
            ("MONETA_ENTITIES_IDLE_TIMEOUT", "30d"),
        ]),
    )
    .unwrap();
    assert_eq!(c.node.data_dir, PathBuf::from("/tmp/x"));
    assert_eq!(c.gateway.listen.port(), 9999);
    assert_eq!(c.entities.idle_timeout, Duration::from_secs(30 * 86400));
    let e = Config::load_with_env(None, &env(&[("MONETA_GATEWAY_LISTEN", "nope")])).unwrap_err().to_string();
    assert!(e.contains("gateway.listen"), "{e}");
    let e = Config::load_with_env(None, &env(&[("MONETA_ENTITIES_IDLE_TIMEOUT", "soon")]))
        .unwrap_err()
        .to_string();
    assert!(e.contains("entities.idle_timeout"), "{e}");
    let e = Config::load_with_env(None, &env(&[("MONETA_GATEWAY_LISTN", "x")])).unwrap_err().to_string();
    assert!(e.contains("MONETA_GATEWAY_LISTN"), "{e}");
    let e = Config::load_with_env(None, &env(&[("MONETA_ENTITIES_MAILBOX_CAPACITY", "ten")]))
        .unwrap_err()
        .to_string();
    assert!(e.contains("MONETA_ENTITIES_MAILBOX_CAPACITY"), "{e}");
}

#[test]
fn file_overlay_unknown_key_and_bad_value() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("c.toml");
    std::fs::write(&p, "[gateway]\nlisten = \"127.0.0.1:1234\"\n").unwrap();
    assert_eq!(Config::load_with_env(Some(&p), &[]).unwrap().gateway.listen.port(), 1234);
    std::fs::write(&p, "[gateway]\nlisen = \"127.0.0.1:1234\"\n").unwrap();
    let e = Config::load_with_env(Some(&p), &[]).unwrap_err().to_string();
    assert!(e.contains("lisen"), "{e}");
    std::fs::write(&p, "[market]\nseed = -1\n").unwrap();
    let e = Config::load_with_env(Some(&p), &[]).unwrap_err().to_string();
    assert!(e.contains("market.seed"), "{e}");
    std::fs::write(
        &p,
        "[[market.instruments]]\nsymbol = \"X\"\nname = \"X\"\nkind = \"equity\"\nprice = \"1\"\ndrift = 0.0\nvolatility = 0.1\nrisk_class = 9\n",
    )
    .unwrap();
    let e = Config::load_with_env(Some(&p), &[]).unwrap_err().to_string();
    assert!(e.contains("market.instruments[0].risk_class"), "{e}");
}
