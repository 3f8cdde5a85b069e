//! Load against the running gateway (the same `node::start` the binary runs, on loopback),
//! against a bare warp handler measured in the same run:
//! - `bare warp GET`: a warp filter answering a small JSON body (the baseline);
//! - `GET /v1/portfolio`: authenticated, routed to the portfolio entity and instrument quotes;
//! - `POST /v1/portfolio/deposits`: authenticated, idempotent, durable (group commit) deposits.
//! - `POST /v1/orders`: the order path — quote, compliance facts from the account, the
//!   portfolio's decision durable (group commit), the broker's confirmation durable.
//!
//! Each runs `CLIENTS` concurrent HTTP/1.1 clients for a fixed time and reports requests per
//! second and p50/p99 latency; ratios are against the bare handler.
//!
//! Run: `cargo bench --bench gateway_load`; against a running node (to profile it apart from
//! the load generator): `GATEWAY_LOAD_BASE=http://127.0.0.1:8080 cargo bench --bench gateway_load`.

mod common;

use common::{client, load, Figures, CLIENTS, RUN};
use moneta::config::Config;
use serde_json::json;
use std::sync::Arc;
use warp::Filter;

#[tokio::main]
async fn main() {
    // Baseline: a bare warp handler on loopback.
    let bare = warp::path("ping").map(|| warp::reply::json(&json!({"status": "ok"})));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let bare_addr = listener.local_addr().unwrap();
    tokio::spawn(warp::serve(bare).incoming(listener).run());

    // The real node: started here, or (`GATEWAY_LOAD_BASE=http://127.0.0.1:8080`) a running
    // `moneta serve` — to profile the server on its own (`perf record -p <pid>`) while this
    // process generates the load.
    let dir = tempfile::tempdir().unwrap();
    let (node, base) = match std::env::var("GATEWAY_LOAD_BASE") {
        Ok(base) => (None, base),
        Err(_) => {
            let mut config = Config::load_with_env(None, &[]).unwrap();
            config.node.data_dir = dir.path().to_path_buf();
            config.gateway.listen = "127.0.0.1:0".parse().unwrap();
            config.log.level = "warn".into();
            let node = moneta::node::start(config).await.unwrap();
            let base = format!("http://{}", node.addr);
            (Some(node), base)
        }
    };
    let tokens = common::investors(&base, CLIENTS).await;
    let tokens = Arc::new(tokens);

    // `GATEWAY_LOAD_ONLY=orders` (or `deposits`): only the baseline and that load (to profile
    // one path).
    let only = std::env::var("GATEWAY_LOAD_ONLY").unwrap_or_default();
    let only_orders = only == "orders";
    let only_deposits = only == "deposits";
    let cb = client();
    let baseline = load(move |_, _| {
        let cb = cb.clone();
        async move { cb.get(format!("http://{bare_addr}/ping")).send().await.is_ok_and(|r| r.status().is_success()) }
    })
    .await;

    let (cg, tg, bg) = (client(), tokens.clone(), base.clone());
    let portfolio = if only_orders || only_deposits {
        Figures::none()
    } else {
        load(move |u, _| {
            let (cg, t, b) = (cg.clone(), tg[u].clone(), bg.clone());
            async move {
                cg.get(format!("{b}/v1/portfolio"))
                    .bearer_auth(t)
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success())
            }
        })
        .await
    };

    let (cd, td, bd) = (client(), tokens.clone(), base.clone());
    let deposits = if only_orders {
        Figures::none()
    } else {
        load(move |u, i| {
            let (cd, t, b) = (cd.clone(), td[u].clone(), bd.clone());
            async move {
                cd.post(format!("{b}/v1/portfolio/deposits"))
                    .bearer_auth(t)
                    .header("Idempotency-Key", format!("load-{i}"))
                    .json(&json!({"amount": "1.00"}))
                    .send()
                    .await
                    .is_ok_and(|r| r.status().as_u16() == 201)
            }
        })
        .await
    };

    // Orders: every investor funded first, then market buys of the money-market fund.
    common::fund(std::slice::from_ref(&base), &tokens).await;
    let (co, to, bo) = (client(), tokens.clone(), base.clone());
    let orders = if only_deposits {
        Figures::none()
    } else {
        load(move |u, i| {
            let (co, t, b) = (co.clone(), to[u].clone(), bo.clone());
            async move {
                let r = co
                    .post(format!("{b}/v1/orders"))
                    .bearer_auth(t)
                    .header("Idempotency-Key", format!("order-{i}"))
                    .json(&json!({"symbol": "MMKT", "side": "buy", "quantity": "1"}))
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status().as_u16() == 201 => true,
                    Ok(r) => {
                        eprintln!("order answered {}: {}", r.status(), r.text().await.unwrap_or_default());
                        false
                    }
                    Err(e) => {
                        eprintln!("order failed: {e}");
                        false
                    }
                }
            }
        })
        .await
    };

    println!(
        "\n== gateway load, {CLIENTS} concurrent clients, {}s each (ratios against the bare warp handler of this run) ==",
        RUN.as_secs()
    );
    println!("{:<28} {:>10} {:>9} {:>9} {:>10}", "", "req/s", "p50 ms", "p99 ms", "vs bare");
    for (name, f) in [
        ("bare warp GET", &baseline),
        ("GET /v1/portfolio", &portfolio),
        ("POST deposits (durable)", &deposits),
        ("POST orders (durable)", &orders),
    ] {
        println!(
            "{name:<28} {:>10.0} {:>9.2} {:>9.2} {:>9.0}%",
            f.rps,
            f.p50_ms,
            f.p99_ms,
            100.0 * f.rps / baseline.rps
        );
    }
    if let Some(node) = node {
        node.shutdown().await.unwrap();
    }
}
