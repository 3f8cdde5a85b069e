use super::*;
use crate::domain::compliance::InvestorStatus;
use rand::SeedableRng;

fn d(s: &str) -> Decimal {
    s.parse().unwrap()
}

fn idem(key: &str) -> IdemTag {
    IdemTag {
        key: key.into(),
        fingerprint: [0; 32],
    }
}

fn buy(symbol: &str, quantity: &str, price: &str, key: &str) -> PortfolioCommand {
    PortfolioCommand::PlaceOrder {
        symbol: symbol.into(),
        side: Side::Buy,
        quantity: d(quantity),
        quote: Some(OrderQuote {
            price: d(price),
            product: ProductFacts { complex: false, risk_class: 3 },
        }),
        investor: InvestorStatus::onboarded(5, false),
        fees: FeeSchedule {
            commission_bps: d("10"),
            minimum: d("1.00"),
        },
        idem: idem(key),
    }
}

/// A portfolio with its journal, as its actor keeps them (a day close reads the journal).
struct Journaled {
    p: Portfolio,
    journal: Vec<PortfolioEvent>,
}

impl Journaled {
    fn new(owner: &str) -> Journaled {
        Journaled {
            p: Portfolio::empty(owner),
            journal: Vec::new(),
        }
    }

    fn run(&mut self, cmd: PortfolioCommand, now: i64) -> Result<PortfolioReply, PortfolioRejection> {
        // A seed per step, so ids differ as a real node's do.
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(self.journal.len() as u64);
        let mut ctx = Ctx::new(Timestamp(now), &mut rng);
        self.p.decide(cmd, &mut ctx).map(|dec| {
            for e in &dec.events {
                self.p.apply(e);
            }
            self.journal.extend(dec.events);
            dec.reply
        })
    }

    /// Closes `date` with its close time at `cutoff`, at `now`.
    fn close_at(&mut self, date: &str, prices: &[(&str, &str)], cutoff: i64, now: i64) -> Result<PortfolioReply, PortfolioRejection> {
        let cmd = PortfolioCommand::CloseDay {
            date: Date::parse(date).unwrap(),
            prices: prices.iter().map(|(s, p)| (s.to_string(), d(p))).collect(),
            cutoff: Timestamp(cutoff),
            journal: self.journal.clone(),
        };
        self.run(cmd, now)
    }

    /// Closes `date` at `now`, everything so far before its close time.
    fn close(&mut self, date: &str, prices: &[(&str, &str)], now: i64) -> Result<PortfolioReply, PortfolioRejection> {
        self.close_at(date, prices, i64::MAX, now)
    }
}

fn deposit(amount: &str, key: &str) -> PortfolioCommand {
    PortfolioCommand::Deposit {
        amount: d(amount),
        idem: idem(key),
    }
}

fn statement(r: Result<PortfolioReply, PortfolioRejection>) -> Statement {
    match r {
        Ok(PortfolioReply::Statement(s)) => *s,
        other => panic!("expected a statement, got {other:?}"),
    }
}

/// Events are stamped by the clock of the node that led the group: after a fail-over to a
/// node whose clock is behind, a buy can carry an earlier time than the deposit before it.
/// A close between the two stamps states a prefix of the journal, never a buy without the
/// deposit that paid for it (which broke the invariants and panicked before).
#[test]
fn a_close_after_the_clock_stepped_back_states_a_prefix_of_the_journal() {
    let mut j = Journaled::new("u");
    j.run(deposit("500", "k0"), 10).unwrap();
    j.run(deposit("1000", "k1"), 100).unwrap();
    // 500 and a fee: more than the first deposit alone.
    j.run(buy("AAA", "5", "100", "k2"), 50).unwrap();
    let s = statement(j.close_at("2026-11-21", &[("AAA", "100")], 75, 200));
    assert!(s.holdings.is_empty(), "neither the second deposit nor the buy after it: {s:?}");
    assert_eq!(s.cash, d("500"));
    // The next close states both.
    let s = statement(j.close_at("2026-11-22", &[("AAA", "100")], 150, 300));
    assert_eq!(s.holdings.len(), 1, "{s:?}");
}

/// Advice accepted under key `k` places order `i` under `series_key(k, i)`. A key a client
/// sends (visible ASCII) never names one of them: an order the client placed under `k/1`
/// neither stands in for the advice's second order nor is refused as a reuse of the key.
#[test]
fn the_orders_of_accepted_advice_have_keys_no_client_key_names() {
    use crate::domain::fingerprint::accepted_order;
    let mut j = Journaled::new("u");
    j.run(deposit("100000", "funding"), 1).unwrap();
    let client = |key: &str| IdemTag {
        key: key.into(),
        fingerprint: [7; 32],
    };
    let advised = |i: usize| IdemTag {
        key: series_key("k", i),
        fingerprint: accepted_order("adv_1", i),
    };
    // The test's `buy`, under another idempotency tag.
    let order = |idem: IdemTag| {
        let mut cmd = buy("AAA", "1", "100", "unused");
        if let PortfolioCommand::PlaceOrder { idem: tag, .. } = &mut cmd {
            *tag = idem;
        }
        cmd
    };
    j.run(order(client("k/1")), 2).unwrap();
    j.run(order(client("k/2")), 3).unwrap();
    assert_eq!(j.p.remembered_series("k", |i| accepted_order("adv_1", i)).map(|r| r.len()), Ok(0));
    j.run(order(advised(0)), 4).unwrap();
    j.run(order(advised(1)), 5)
        .expect("the advice's second order is not a reuse of the client's k/1");
    assert_eq!(j.p.remembered_series("k", |i| accepted_order("adv_1", i)).map(|r| r.len()), Ok(2));
    assert!(series_key("k", 1).bytes().any(|c| !c.is_ascii_graphic()));
}

#[test]
fn a_day_close_states_holdings_value_trades_and_fees_once() {
    let mut j = Journaled::new("usr_a");
    assert_eq!(j.close("2026-11-20", &[], 0), Err(PortfolioRejection::NothingToState));
    j.run(deposit("1000", "k1"), 1).unwrap();
    j.run(buy("AAA", "5", "100", "k2"), 2).unwrap();
    let s = statement(j.close("2026-11-21", &[("AAA", "110"), ("BBB", "5")], 3));
    assert_eq!(s.date.to_string(), "2026-11-21");
    assert_eq!(s.cash, d("499.00"));
    assert_eq!(s.holdings.len(), 1);
    assert_eq!(
        (s.holdings[0].quantity, s.holdings[0].price, s.holdings[0].market_value),
        (d("5"), Some(d("110")), d("550"))
    );
    assert_eq!(s.value, d("1049.00"));
    assert_eq!((s.deposits, s.withdrawals, s.fees, s.contributions), (d("1000"), d("0"), d("1.00"), d("1000")));
    assert_eq!(s.trades.len(), 1);
    // The same day again, or an earlier one, is refused and changes nothing.
    let before = j.p.clone();
    assert_eq!(j.close("2026-11-21", &[], 4), Err(PortfolioRejection::DayAlreadyClosed));
    assert_eq!(j.close("2026-11-20", &[], 4), Err(PortfolioRejection::DayAlreadyClosed));
    assert_eq!(j.p, before);
    // The next statement holds only what happened since; a holding without a price counts at cost.
    j.run(
        PortfolioCommand::Withdraw {
            amount: d("100"),
            idem: idem("k3"),
            investor: InvestorStatus::onboarded(5, false),
        },
        5,
    )
    .unwrap();
    let s2 = statement(j.close("2026-11-22", &[], 6));
    assert!(s2.trades.is_empty());
    assert_eq!((s2.deposits, s2.withdrawals, s2.fees, s2.contributions), (d("0"), d("100"), d("0"), d("900")));
    assert_eq!((s2.holdings[0].price, s2.holdings[0].market_value), (None, d("500")));
    assert_eq!(s2.value, d("899.00"));
    // Statements are in the history, in order.
    assert_eq!(j.p.last_close.unwrap().date.to_string(), "2026-11-22");
}

#[test]
fn a_late_close_states_the_day_as_it_stood_at_its_close_time() {
    let day = |date: &str, hours: i64| Date::parse(date).unwrap().days_since_epoch() * crate::domain::time::MS_PER_DAY + hours * MS_PER_HOUR;
    let close_21 = day("2026-11-21", 22);
    // A portfolio opened after the close time has nothing to state for that day.
    let mut late = Journaled::new("usr_late");
    late.run(deposit("100", "k1"), day("2026-11-22", 9)).unwrap();
    assert_eq!(
        late.close_at("2026-11-21", &[], close_21, day("2026-11-22", 10)),
        Err(PortfolioRejection::NothingToState)
    );

    let mut j = Journaled::new("usr_a");
    j.run(deposit("1000", "k1"), day("2026-11-21", 10)).unwrap();
    j.run(buy("AAA", "5", "100", "k2"), day("2026-11-21", 11)).unwrap();
    // After the close time, before the close runs.
    j.run(deposit("500", "k3"), day("2026-11-21", 23)).unwrap();
    j.run(buy("AAA", "2", "110", "k4"), day("2026-11-22", 9)).unwrap();
    let s = statement(j.close_at("2026-11-21", &[("AAA", "105")], close_21, day("2026-11-22", 10)));
    assert_eq!((s.cash, s.value, s.contributions), (d("499.00"), d("1024.00"), d("1000")));
    assert_eq!((s.holdings.len(), s.holdings[0].quantity), (1, d("5")));
    assert_eq!((s.deposits, s.fees, s.trades.len()), (d("1000"), d("1.00"), 1));
    assert_eq!(s.closed_at, Timestamp(day("2026-11-22", 10)));
    // What came after the close time is the next statement's, not lost.
    assert_eq!((j.p.day.deposits, j.p.day.orders.len()), (d("500"), 1));
    let s2 = statement(j.close_at("2026-11-22", &[("AAA", "110")], day("2026-11-22", 22), day("2026-11-22", 22)));
    assert_eq!((s2.deposits, s2.fees, s2.trades.len()), (d("500"), d("1.00"), 1));
    assert_eq!((s2.holdings[0].quantity, s2.cash, s2.contributions), (d("7"), d("778.00"), d("1500")));
    assert_eq!(j.p.day, DayBook::default());
    // A journal that is not this portfolio's is refused.
    let mut other = Journaled::new("usr_b");
    other.journal = late.journal.clone();
    other.p = Portfolio::as_of("usr_b", &j.journal, Timestamp(i64::MAX));
    assert_eq!(other.close("2026-11-23", &[], day("2026-11-23", 23)), Err(PortfolioRejection::JournalMismatch));
}

/// A sanctions match, or a potential match not yet resolved, freezes the investor's cash: a
/// withdrawal is refused `sanctions_block` (remembered under its key) and moves nothing. KYC is
/// not needed to take back what was deposited.
#[test]
fn a_sanctioned_investors_cash_is_frozen() {
    use crate::domain::kyc::KycStatus;
    use crate::domain::screening::ScreeningStatus;
    let mut j = Journaled::new("usr_frozen");
    j.run(deposit("500", "k1"), 1).unwrap();
    let withdraw = |key: &str, screening| PortfolioCommand::Withdraw {
        amount: d("100"),
        idem: idem(key),
        investor: InvestorStatus {
            kyc: KycStatus::Review,
            screening,
            risk_score: None,
            complex_products_allowed: false,
        },
    };
    for (key, screening) in [("k2", ScreeningStatus::Match), ("k3", ScreeningStatus::PotentialMatch)] {
        let before = j.p.clone();
        let r = j.run(withdraw(key, screening), 2);
        assert_eq!(
            r,
            Ok(PortfolioReply::Refused(PortfolioRejection::Compliance(
                crate::domain::compliance::ComplianceRefusal::SanctionsBlock
            ))),
            "{screening:?}"
        );
        assert_eq!(j.p.cash, before.cash, "{screening:?}: cash moved");
    }
    // Cleared (KYC still in review): the money goes back to its owner.
    assert!(matches!(j.run(withdraw("k4", ScreeningStatus::Clear), 3), Ok(PortfolioReply::Cash { .. })));
    assert_eq!(j.p.cash, d("400"));
}

fn sell(symbol: &str, quantity: &str, price: &str, key: &str) -> PortfolioCommand {
    match buy(symbol, quantity, price, key) {
        PortfolioCommand::PlaceOrder {
            symbol,
            quantity,
            quote,
            investor,
            fees,
            idem,
            ..
        } => PortfolioCommand::PlaceOrder {
            symbol,
            side: Side::Sell,
            quantity,
            quote,
            investor,
            fees,
            idem,
        },
        _ => unreachable!(),
    }
}

#[test]
fn a_partial_sale_leaves_the_units_kept_at_their_average_cost() {
    let mut j = Journaled::new("usr_avg");
    j.run(deposit("1000.00", "d"), 1).unwrap();
    // 1.000001 units for 98.35: an average of 98.3499 a unit.
    j.run(buy("WRLD", "1.000001", "98.3515", "b1"), 2).unwrap();
    assert_eq!(j.p.holdings["WRLD"].average_cost(), d("98.3499"));
    // Selling all but 0.000001 keeps that unit's cost (to cents, the sale took the whole
    // basis and left an average cost of 0.0000).
    j.run(sell("WRLD", "1", "98.3515", "s1"), 3).unwrap();
    assert_eq!(j.p.holdings["WRLD"].quantity, d("0.000001"));
    assert_eq!(j.p.holdings["WRLD"].average_cost(), d("98.3499"));
    // 1.5 for 273.90, then 0.5 and 0.999 sold: 0.001 left at 182.6000 (it showed 180.0000).
    j.run(buy("ACME", "1.5", "182.5979", "b2"), 4).unwrap();
    j.run(sell("ACME", "0.5", "182.5979", "s2"), 5).unwrap();
    j.run(sell("ACME", "0.999", "182.5979", "s3"), 6).unwrap();
    assert_eq!(j.p.holdings["ACME"].quantity, d("0.001"));
    assert_eq!(j.p.holdings["ACME"].average_cost(), d("182.6000"));
    // The books still balance exactly: cash + cost basis = deposits − withdrawals − fees + realised P&L.
    let basis: Decimal = j.p.holdings.values().map(|h| h.cost_basis).sum();
    let t = &j.p.totals;
    assert_eq!(j.p.cash + basis, t.deposits - t.withdrawals - t.fees + t.realised_pnl);
    // Selling the last units takes the rest of the basis.
    j.run(sell("ACME", "0.001", "182.5979", "s4"), 7).unwrap();
    assert!(!j.p.holdings.contains_key("ACME"));
}
