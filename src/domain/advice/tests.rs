use super::*;

#[test]
fn advice_asks_for_the_questionnaire_before_anything_but_consent() {
    let mut investor = InvestorStatus::onboarded(4, false);
    assert_eq!(gate(true, &investor), Ok(()));
    investor.risk_score = None;
    investor.kyc = crate::domain::kyc::KycStatus::Pending;
    assert_eq!(gate(false, &investor).map_err(|e| e.0), Err("consent_required"));
    assert_eq!(gate(true, &investor).map_err(|e| e.0), Err("suitability_required"));
    investor.risk_score = Some(4);
    assert_eq!(gate(true, &investor).map_err(|e| e.0), Err("kyc_required"));
}

fn universe() -> Vec<Product> {
    let p = |s: &str, kind, risk, price: i64| Product {
        symbol: s.into(),
        kind,
        risk_class: risk,
        price: Decimal::from(price),
    };
    vec![
        p("GILT", InstrumentKind::Bond, 2, 100),
        p("CORP", InstrumentKind::Bond, 3, 10),
        p("MMKT", InstrumentKind::Fund, 1, 1),
        p("WRLD", InstrumentKind::Etf, 4, 100),
        p("ACME", InstrumentKind::Equity, 5, 200),
        p("INIT", InstrumentKind::Equity, 6, 300),
        p("SPX3L", InstrumentKind::LeveragedEtf, 7, 50),
    ]
}

fn profile(score: u8, complex: bool) -> RiskProfile {
    RiskProfile {
        risk_score: score,
        risk_band: RiskBand::of_score(score),
        complex_products_allowed: complex,
    }
}

fn fees() -> FeeSchedule {
    FeeSchedule {
        commission_bps: Decimal::from(10),
        minimum: Decimal::ONE,
    }
}

#[test]
fn each_band_gets_only_products_it_may_hold() {
    for score in 1..=7u8 {
        for complex in [false, true] {
            let a = advise(
                &profile(score, complex),
                &universe(),
                Decimal::from(100_000),
                &BTreeMap::new(),
                &fees(),
                &AdvicePolicy::default(),
            );
            for (s, w) in &a.target_allocation {
                let p = universe().into_iter().find(|p| &p.symbol == s).unwrap();
                assert!(p.risk_class <= score, "score {score} advised {s}");
                assert!(complex || !p.kind.is_complex(), "complex product {s} advised without appropriateness");
                assert!(*w > Decimal::ZERO);
            }
            let sum: Decimal = a.target_allocation.iter().map(|(_, w)| *w).sum();
            assert!((sum - Decimal::new(98, 2)).abs() < Decimal::new(1, 4), "score {score}: weights sum to {sum}");
            // All cash at first: only buys, within the cash and fees available.
            assert!(a.proposed_orders.iter().all(|o| o.side == Side::Buy));
            let spent: Decimal = a
                .proposed_orders
                .iter()
                .map(|o| {
                    let n = round_cash(o.quantity * universe().iter().find(|p| p.symbol == o.symbol).unwrap().price);
                    n + fees().fee_for(n)
                })
                .sum();
            assert!(spent <= Decimal::from(100_000), "score {score}: spends {spent}");
            // Every position of the model is bought, however small its weight (5/25 rule):
            // the cash is invested but for the buffer, fees and rounding.
            for (s, _) in &a.target_allocation {
                assert!(a.proposed_orders.iter().any(|o| &o.symbol == s), "score {score}: model position {s} not bought");
            }
            assert!(spent >= Decimal::from(97_000), "score {score}: only {spent} of 100000 invested");
            assert!(a.rationale.contains(&format!("risk score {score} of 7")), "{}", a.rationale);
        }
    }
    // Complex products only for an aggressive investor who may hold them.
    let all_cash = |complex| {
        advise(
            &profile(7, complex),
            &universe(),
            Decimal::from(100_000),
            &BTreeMap::new(),
            &fees(),
            &AdvicePolicy::default(),
        )
    };
    let a = all_cash(true);
    assert!(a.target_allocation.iter().any(|(s, _)| s == "SPX3L"));
    let a = all_cash(false);
    assert!(!a.target_allocation.iter().any(|(s, _)| s == "SPX3L"));
    assert!(a.rationale.contains("excluding complex products"));
}

#[test]
fn positions_are_rebalanced_outside_the_5_25_band_only() {
    // A balanced investor's model at 100,000, with an absolute band (20 points) wider than
    // any of this small universe's shortfalls below, so the relative band decides.
    let policy = AdvicePolicy {
        drift_threshold: Decimal::new(20, 2),
        ..AdvicePolicy::default()
    };
    let model = advise(&profile(4, false), &universe(), Decimal::from(100_000), &BTreeMap::new(), &fees(), &policy);
    let (small, small_weight) = model.target_allocation.iter().min_by_key(|(_, w)| *w).cloned().unwrap();
    assert!(small_weight * Decimal::new(3, 1) < policy.drift_threshold, "{small_weight}");
    let price = |s: &str| universe().into_iter().find(|p| p.symbol == s).unwrap().price;
    // Holding the model exactly but the small position at 80% of its target: outside the
    // relative band (25%) though within the absolute one (5 points) — it is topped up.
    let holdings_at = |share: Decimal| -> BTreeMap<String, Decimal> {
        model
            .target_allocation
            .iter()
            .map(|(s, w)| {
                let w = if *s == small { *w * share } else { *w };
                (s.clone(), (w * Decimal::from(100_000) / price(s)).round_dp(4))
            })
            .collect()
    };
    let cash_for = |h: &BTreeMap<String, Decimal>| Decimal::from(100_000) - h.iter().map(|(s, q)| round_cash(*q * price(s))).sum::<Decimal>();
    let off = holdings_at(Decimal::new(7, 1));
    let a = advise(&profile(4, false), &universe(), cash_for(&off), &off, &fees(), &policy);
    assert!(
        a.proposed_orders.iter().any(|o| o.symbol == small && o.side == Side::Buy),
        "{small} at 70% of its target is not topped up: {:?}",
        a.proposed_orders
    );
    // At 90% of its target it is within both bands: left alone.
    let near = holdings_at(Decimal::new(9, 1));
    let a = advise(&profile(4, false), &universe(), cash_for(&near), &near, &fees(), &policy);
    assert!(!a.proposed_orders.iter().any(|o| o.symbol == small), "{:?}", a.proposed_orders);
}

#[test]
fn proposed_buys_are_affordable_at_fill_prices_with_fees() {
    // No cash buffer and a large minimum fee: the buys must be scaled, and scaling alone
    // would leave the minimum fees and the slippage unpaid.
    let policy = AdvicePolicy {
        cash_buffer: Decimal::ZERO,
        slippage_bps: Decimal::from(50),
        min_trade: Decimal::from(5),
        ..AdvicePolicy::default()
    };
    let fees = FeeSchedule {
        commission_bps: Decimal::from(25),
        minimum: Decimal::from(10),
    };
    for score in 1..=7u8 {
        for cash in [300, 1_000, 2_345, 10_000, 99_999] {
            let cash = Decimal::from(cash);
            let a = advise(&profile(score, true), &universe(), cash, &BTreeMap::new(), &fees, &policy);
            let spent: Decimal = a
                .proposed_orders
                .iter()
                .map(|o| {
                    let market = universe().iter().find(|p| p.symbol == o.symbol).unwrap().price;
                    let n = round_cash(o.quantity * crate::domain::fees::fill_price(Side::Buy, market, policy.slippage_bps));
                    n + fees.fee_for(n)
                })
                .sum();
            assert!(spent <= cash, "score {score}, cash {cash}: the proposed buys cost {spent}");
            assert!(
                !a.proposed_orders.is_empty() || cash < Decimal::from(400),
                "score {score}, cash {cash}: nothing proposed"
            );
        }
    }
}

#[test]
fn rebalancing_respects_drift_minimum_trades_and_review() {
    let policy = AdvicePolicy::default();
    let p = profile(4, false);
    // Invest first, then hold exactly what was advised: nothing more to do.
    let first = advise(&p, &universe(), Decimal::from(10_000), &BTreeMap::new(), &fees(), &policy);
    assert!(first.review_reason.is_none(), "investing idle cash is not turnover: {:?}", first.review_reason);
    assert_eq!(first.turnover, Decimal::ZERO);
    let mut holdings = BTreeMap::new();
    let mut cash = Decimal::from(10_000);
    for o in &first.proposed_orders {
        let px = universe().iter().find(|u| u.symbol == o.symbol).unwrap().price;
        let n = round_cash(o.quantity * px);
        cash -= n + fees().fee_for(n);
        holdings.insert(o.symbol.clone(), o.quantity);
    }
    let again = advise(&p, &universe(), cash, &holdings, &fees(), &policy);
    assert!(again.proposed_orders.is_empty(), "{:?}", again.proposed_orders);
    assert!(again.review_reason.is_none());
    assert!(again.rationale.contains("no trades are proposed"));
    // A product outside the model (too risky now) is sold; small drifts are ignored.
    holdings.insert("INIT".into(), Decimal::from(2));
    let third = advise(&p, &universe(), cash, &holdings, &fees(), &policy);
    assert!(third
        .proposed_orders
        .iter()
        .any(|o| o.symbol == "INIT" && o.side == Side::Sell && o.quantity == Decimal::from(2)));
    assert!(third.proposed_orders.iter().all(|o| o.symbol == "INIT" || o.side == Side::Buy));
    // Everything in one product the profile no longer allows: sell it all, buy the model —
    // more than half the portfolio turns over, so a person reviews it first.
    let concentrated = BTreeMap::from([("INIT".to_string(), Decimal::from(30))]);
    let swap = advise(&p, &universe(), Decimal::from(100), &concentrated, &fees(), &policy);
    assert!(swap.turnover > Decimal::new(5, 1), "turnover {}", swap.turnover);
    assert!(
        swap.review_reason.as_deref().is_some_and(|r| r.contains("of the portfolio")),
        "{:?}",
        swap.review_reason
    );
    // Nothing below the minimum trade.
    let tiny = advise(&p, &universe(), Decimal::from(40), &BTreeMap::new(), &fees(), &policy);
    assert!(tiny.proposed_orders.is_empty());
}

#[test]
fn advice_is_a_pure_function_of_the_numbers() {
    let holdings = BTreeMap::from([("ACME".to_string(), Decimal::from(3))]);
    let a = advise(
        &profile(5, false),
        &universe(),
        Decimal::from(5_000),
        &holdings,
        &fees(),
        &AdvicePolicy::default(),
    );
    let b = advise(
        &profile(5, false),
        &universe(),
        Decimal::from(5_000),
        &holdings,
        &fees(),
        &AdvicePolicy::default(),
    );
    assert_eq!(a, b);
}
