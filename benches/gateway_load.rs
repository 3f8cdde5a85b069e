//! Load against the running gateway (the same `node::start` the binary runs, on loopback),
//! against a bare warp handler measured in the same run:
//! - `bare warp GET`: a warp filter answering a small JSON body (the baseline);
//! - `GET /v1/portfolio`: authenticated, routed to the portfolio entity and instrument quotes;
//! - `POST /v1/portfolio/deposits`: authenticated, idempotent, durable (group commit) deposits.
//!
//! Each runs `CLIENTS` concurrent HTTP/1.1 clients for a fixed time and reports requests per
//! second and p50/p99 latency; ratios are against the bare handler.
//!
//! Run: `cargo bench --bench gateway_load`.

use moneta::config::Config;
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};
use warp::Filter;

const CLIENTS: usize = 32;
const RUN: Duration = Duration::from_secs(5);

struct Figures {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
}

async fn load<F, Fut>(make: F) -> Figures
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let make = Arc::new(make);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let make = make.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut i = 0u64;
            while start.elapsed() < RUN {
                let t = Instant::now();
                assert!(make(c, i).await, "request failed");
                lat.push(t.elapsed());
                i += 1;
            }
            lat
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let elapsed = start.elapsed().as_secs_f64();
    all.sort();
    let pct = |p: f64| all[((all.len() as f64 * p) as usize).min(all.len() - 1)].as_secs_f64() * 1000.0;
    Figures {
        rps: all.len() as f64 / elapsed,
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().pool_max_idle_per_host(CLIENTS).build().unwrap()
}

#[tokio::main]
async fn main() {
    // Baseline: a bare warp handler on loopback.
    let bare = warp::path("ping").map(|| warp::reply::json(&json!({"status": "ok"})));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let bare_addr = listener.local_addr().unwrap();
    tokio::spawn(warp::serve(bare).incoming(listener).run());

    // The real node.
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::load_with_env(None, &[]).unwrap();
    config.node.data_dir = dir.path().to_path_buf();
    config.gateway.listen = "127.0.0.1:0".parse().unwrap();
    config.log.level = "warn".into();
    let node = moneta::node::start(config).await.unwrap();
    let base = format!("http://{}", node.addr);
    let c = client();
    let mut tokens = Vec::new();
    for u in 0..CLIENTS {
        let email = format!("load{u}@example.com");
        let body = json!({"email": email, "password": "a long enough passphrase", "full_name": "Load Tester", "date_of_birth": "1980-01-01", "country": "GB"});
        assert!(c
            .post(format!("{base}/v1/auth/register"))
            .json(&body)
            .send()
            .await
            .unwrap()
            .status()
            .is_success());
        let r: serde_json::Value = c
            .post(format!("{base}/v1/auth/login"))
            .json(&json!({"email": email, "password": "a long enough passphrase"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let token = r["access_token"].as_str().unwrap().to_string();
        // Onboarding (KYC, questionnaire) so the compliance rules let the seed order through.
        let kyc = json!({"document_type": "passport", "document_number": "123456789", "address": "1 High Street, London"});
        let answers = json!({"answers": {
            "objective": "growth", "horizon_years": 20, "loss_tolerance": "large", "investment_experience_years": 10,
            "knows_complex_products": false, "annual_income": "90000.00", "liquid_net_worth": "300000.00", "emergency_fund_months": 12
        }});
        for (path, body) in [("/v1/me/kyc", kyc), ("/v1/me/suitability", answers)] {
            let r = c.post(format!("{base}{path}")).bearer_auth(&token).json(&body).send().await.unwrap();
            assert!(r.status().is_success(), "{path}: {}", r.status());
        }
        let buy = json!({"symbol": "WRLD", "side": "buy", "quantity": "1"});
        c.post(format!("{base}/v1/portfolio/deposits"))
            .bearer_auth(&token)
            .header("Idempotency-Key", "seed")
            .json(&json!({"amount": "100000.00"}))
            .send()
            .await
            .unwrap();
        let r = c
            .post(format!("{base}/v1/orders"))
            .bearer_auth(&token)
            .header("Idempotency-Key", "seed-buy")
            .json(&buy)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 201, "the seed order must fill");
        tokens.push(token);
    }
    let tokens = Arc::new(tokens);

    let cb = client();
    let baseline = load(move |_, _| {
        let cb = cb.clone();
        async move { cb.get(format!("http://{bare_addr}/ping")).send().await.is_ok_and(|r| r.status().is_success()) }
    })
    .await;

    let (cg, tg, bg) = (client(), tokens.clone(), base.clone());
    let portfolio = load(move |u, _| {
        let (cg, t, b) = (cg.clone(), tg[u].clone(), bg.clone());
        async move {
            cg.get(format!("{b}/v1/portfolio"))
                .bearer_auth(t)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
        }
    })
    .await;

    let (cd, td, bd) = (client(), tokens.clone(), base.clone());
    let deposits = load(move |u, i| {
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
    .await;

    println!(
        "\n== gateway load, {CLIENTS} concurrent clients, {}s each (ratios against the bare warp handler of this run) ==",
        RUN.as_secs()
    );
    println!("{:<28} {:>10} {:>9} {:>9} {:>10}", "", "req/s", "p50 ms", "p99 ms", "vs bare");
    for (name, f) in [
        ("bare warp GET", &baseline),
        ("GET /v1/portfolio", &portfolio),
        ("POST deposits (durable)", &deposits),
    ] {
        println!(
            "{name:<28} {:>10.0} {:>9.2} {:>9.2} {:>9.0}%",
            f.rps,
            f.p50_ms,
            f.p99_ms,
            100.0 * f.rps / baseline.rps
        );
    }
    node.shutdown().await.unwrap();
}
