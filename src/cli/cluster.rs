//! `moneta cluster decommission` and `moneta cluster status`.

use super::*;

pub(super) fn cluster_decommission(path: Option<PathBuf>, node_id: String) -> ExitCode {
    let config = match load_config(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    match crate::control::call(&config.node.data_dir, &crate::control::Request::Decommission { node_id: node_id.clone() }) {
        Ok(crate::control::Response { ok: true, .. }) => {
            println!("decommissioning {node_id}: its replicas and leaderships move to the other nodes; it exits once it holds none (follow with `moneta cluster status`)");
            ExitCode::SUCCESS
        }
        Ok(r) => fail(format!("refused: {}", r.error.unwrap_or_default()), 1),
        Err(e) => fail(format!("no running node answered on {} ({e})", config.node.data_dir.display()), 1),
    }
}

pub(super) fn cluster_status(path: Option<PathBuf>, json: bool) -> ExitCode {
    let config = match load_config(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let doc = match crate::control::call(&config.node.data_dir, &crate::control::Request::ClusterStatus) {
        Ok(crate::control::Response { ok: true, json: Some(doc), .. }) => doc,
        Ok(r) => return fail(format!("the node refused: {}", r.error.unwrap_or_default()), 1),
        Err(e) => return fail(format!("no running node answered on {} ({e})", config.node.data_dir.display()), 1),
    };
    use std::io::Write;
    // A closed pipe (`| head`) ends the output quietly.
    let mut out = std::io::stdout().lock();
    if json {
        let _ = writeln!(out, "{doc}");
        return ExitCode::SUCCESS;
    }
    let v: serde_json::Value = match serde_json::from_str(&doc) {
        Ok(v) => v,
        Err(e) => return fail(format!("the node's answer does not parse: {e}"), 1),
    };
    let _ = writeln!(out, "cluster {}", v["cluster_id"].as_str().unwrap_or("?"));
    let _ = writeln!(
        out,
        "{:<16} {:<24} {:<8} {:<10} {:>10} {:>9}",
        "NODE", "ADDRESS", "STATE", "REACHABLE", "GROUPS_LED", "REPLICAS"
    );
    for n in v["nodes"].as_array().into_iter().flatten() {
        let _ = writeln!(
            out,
            "{:<16} {:<24} {:<8} {:<10} {:>10} {:>9}",
            n["node_id"].as_str().unwrap_or(""),
            n["address"].as_str().unwrap_or(""),
            n["state"].as_str().unwrap_or(""),
            n["reachable"].to_string(),
            n["groups_led"].to_string(),
            n["replicas"].to_string()
        );
    }
    let _ = writeln!(
        out,
        "{:<6} {:<16} {:>6} {:>12} {:>12}  REPLICAS",
        "GROUP", "LEADER", "TERM", "COMMIT", "APPLIED"
    );
    let names = |list: &serde_json::Value| list.as_array().into_iter().flatten().filter_map(|r| r.as_str()).collect::<Vec<_>>().join(",");
    // The shard groups, then the metadata group (membership and placement) as `meta`.
    let meta = &v["metadata"];
    let rows = v["groups"].as_array().into_iter().flatten().map(|g| (g["group"].to_string(), g));
    for (label, g) in rows.chain(meta.is_object().then(|| ("meta".to_string(), meta))) {
        let _ = writeln!(
            out,
            "{:<6} {:<16} {:>6} {:>12} {:>12}  {}",
            label,
            g["leader"].as_str().unwrap_or("-"),
            g["term"].to_string(),
            g["commit_index"].to_string(),
            g["applied_index"].to_string(),
            names(&g["replicas"])
        );
    }
    for m in v["moves"].as_array().into_iter().flatten() {
        let _ = writeln!(
            out,
            "move: group {} adding [{}] removing [{}]",
            m["group"],
            names(&m["adding"]),
            names(&m["removing"])
        );
    }
    ExitCode::SUCCESS
}
