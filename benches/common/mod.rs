//! Helpers the load benchmarks share: a closed-loop load generator with latency percentiles,
//! and onboarded investors with a funded portfolio on a running node.

#![allow(dead_code)]

use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub const CLIENTS: usize = 32;
pub const RUN: Duration = Duration::from_secs(5);

pub struct Figures {
    pub rps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

impl Figures {
    /// A load that was not run.
    pub fn none() -> Figures {
        Figures {
            rps: 0.0,
            p50_ms: 0.0,
            p99_ms: 0.0,
        }
    }
}

pub async fn load<F, Fut>(make: F) -> Figures
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

pub fn client() -> reqwest::Client {
    reqwest::Client::builder().pool_max_idle_per_host(CLIENTS).build().unwrap()
}

/// Deposits 1 000 000 into each investor's portfolio (before the orders), investor `u` at
/// gateway `u % bases.len()`.
pub async fn fund(bases: &[String], tokens: &[String]) {
    let c = client();
    for (u, t) in tokens.iter().enumerate() {
        let r = c
            .post(format!("{}/v1/portfolio/deposits", bases[u % bases.len()]))
            .bearer_auth(t)
            .header("Idempotency-Key", format!("fund-{u}"))
            .json(&json!({"amount": "1000000.00"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 201);
    }
}

/// Registers, onboards and funds `n` investors (each holding one WRLD); returns their tokens.
pub async fn investors(base: &str, n: usize) -> Vec<String> {
    investors_named(base, n, "load").await
}

/// As [`investors`], with emails `<prefix><n>@example.com`.
pub async fn investors_named(base: &str, n: usize, prefix: &str) -> Vec<String> {
    let c = client();
    let mut tokens = Vec::new();
    for u in 0..n {
        let email = format!("{prefix}{u}@example.com");
        let body = json!({"email": email, "password": "a long enough passphrase", "full_name": "Load Tester", "date_of_birth": "1980-01-01", "country": "GB"});
        let r = c.post(format!("{base}/v1/auth/register")).json(&body).send().await.unwrap();
        let status = r.status();
        assert!(
            status.is_success(),
            "registering {email} at {base}: {status} {}",
            r.text().await.unwrap_or_default()
        );
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
    tokens
}
