//! An advised user's day: when they check in, what they do then (deposits, withdrawals,
//! re-answering the questionnaire), and the sharp moves that wake advice in between.

use super::*;

impl Sim {
    /// At each open: when every advised user checks in today and what they do.
    pub(crate) fn plan_day(&mut self) {
        let day = (self.step - 1) / STEPS_PER_DAY;
        let b = self.adv().scenario.behaviour.clone();
        for u in self.advised() {
            let rng = &mut self.advisory.as_mut().expect("a scenario run").rng;
            let plan = DayPlan {
                checkin: rng.random_range(0..STEPS_PER_DAY),
                deposit: rng.random_ratio(b.deposit_per_mille, 1000),
                withdraw: rng.random_ratio(b.withdraw_per_mille, 1000),
                reprofile: day > 0 && rng.random_ratio(b.reprofile_per_mille, 1000),
            };
            self.advisee_mut(u).today = plan;
        }
    }

    /// One simulated minute of the advised users, after the market tick and the self-directed
    /// users: sharp moves, check-ins, the officer's reviews, the queue and the value samples.
    pub(crate) fn advisory_step(&mut self, minute: i64, t: Timestamp, touched: &mut Vec<usize>) -> Result<(), Failure> {
        self.adv().in_step = 0;
        self.sharp_moves(t, touched)?;
        let of_day = minute % STEPS_PER_DAY;
        for u in self.advised() {
            if self.advisee(u).today.checkin == of_day {
                self.check_in(u, t, touched)?;
            }
        }
        self.officer(t, touched)?;
        self.sample_queue();
        let adv = self.advisory.as_ref().expect("a scenario run");
        let span = adv.scenario.shock_span();
        let every = i64::from(adv.scenario.sample_every_minutes);
        let at_edge = span.is_some_and(|(first, end)| minute + 1 == first || minute + 1 == end);
        if minute % every == 0 || of_day == STEPS_PER_DAY - 1 || at_edge {
            self.sample_values(minute, t)?;
        }
        Ok(())
    }

    /// Every advised user's live valuation takes the new prices; a sharp move of a held
    /// instrument asks for advice at once (or, a fall, sometimes a more cautious questionnaire).
    pub(super) fn sharp_moves(&mut self, t: Timestamp, touched: &mut Vec<usize>) -> Result<(), Failure> {
        let prices: Vec<(String, Decimal)> = self.instruments.iter().map(|(s, m)| (s.clone(), m.state.price)).collect();
        let threshold = self.adv().threshold;
        let panic_per_mille = self.adv().scenario.behaviour.panic_per_mille;
        for u in self.advised() {
            let a = self.advisee_mut(u);
            let Some(moved) = a.live.on_prices(prices.iter().cloned(), t, threshold) else {
                continue;
            };
            let band = a.band();
            self.adv().stats.sharp_moves += 1;
            let fall = moved.change < Decimal::ZERO && band != RiskBand::Conservative;
            if fall && self.adv().rng.random_ratio(panic_per_mille, 1000) {
                let cautious = ALL_BANDS[band as usize - 1];
                self.reprofile(u, cautious, Trigger::Panic, t, touched)?;
            } else {
                self.advise_user(u, Trigger::SharpMove, t, touched)?;
            }
        }
        Ok(())
    }

    /// The user opens the app: sometimes deposits or withdraws, sometimes re-answers the
    /// questionnaire, and asks for advice (the first time, it invests the first deposit).
    pub(super) fn check_in(&mut self, u: usize, t: Timestamp, touched: &mut Vec<usize>) -> Result<(), Failure> {
        let plan = self.advisee(u).today;
        if plan.deposit {
            let share = Decimal::new(self.adv().rng.random_range(1..=20), 2);
            let amount = round_cash(self.value_of(u) * share).max(Decimal::ONE);
            self.flow(u, Request::Deposit { amount }, t, touched)?;
        }
        let cash = self.users[u].state.cash;
        if plan.withdraw && cash >= Decimal::new(1, 2) {
            let share = Decimal::new(self.adv().rng.random_range(10..=90), 2);
            let amount = (cash * share).round_dp_with_strategy(2, RoundingStrategy::ToZero).max(Decimal::new(1, 2));
            self.flow(u, Request::Withdraw { amount }, t, touched)?;
        }
        if plan.reprofile {
            let band = self.advisee(u).band();
            let others: Vec<RiskBand> = ALL_BANDS.into_iter().filter(|b| *b != band).collect();
            let to = others[self.adv().rng.random_range(0..others.len())];
            self.reprofile(u, to, Trigger::Reprofile, t, touched)
        } else {
            self.advise_user(u, Trigger::Daily, t, touched)
        }
    }

    /// A deposit or withdrawal through the portfolio (checked by the oracle like any request);
    /// it is a cash flow of the user's band.
    pub(super) fn flow(&mut self, u: usize, request: Request, t: Timestamp, touched: &mut Vec<usize>) -> Result<(), Failure> {
        let now = self.moment(t);
        let idem = IdemTag {
            key: format!("flow-{:08}", self.stats.commands),
            fingerprint: request.fingerprint(),
        };
        self.submit(u, request.clone(), idem, Expect::Fresh)?;
        self.touch(u, touched);
        let band = self.advisee(u).band() as usize;
        let (signed, deposit) = match request {
            Request::Deposit { amount } => (amount, true),
            Request::Withdraw { amount } => (-amount, false),
            Request::Order { .. } => unreachable!("flows are deposits and withdrawals"),
        };
        match self.users[u].recent.back().map(|s| &s.reply) {
            Some(PortfolioReply::Cash { .. }) => {}
            other => return self.fail(format!("user {}: a valid {request:?} answered {other:?}", self.users[u].id)),
        }
        let adv = self.adv();
        adv.flows[band] += signed;
        if deposit {
            adv.stats.deposits += 1;
        } else {
            adv.stats.withdrawals += 1;
        }
        let positions = Positions::of(&self.users[u].state);
        self.advisee_mut(u).live.set_positions(positions, now);
        Ok(())
    }

    /// The user re-answers the questionnaire into `band` (their value moves to that band's
    /// series) and asks for advice on the new profile.
    pub(super) fn reprofile(&mut self, u: usize, band: RiskBand, trigger: Trigger, t: Timestamp, touched: &mut Vec<usize>) -> Result<(), Failure> {
        self.moment(t);
        let answers = draw_answers(&mut self.adv().rng, band);
        let from = self.advisee(u).band();
        let value = self.value_of(u);
        self.set_suitability(u, &answers, &format!("reprofile-{}", self.step))?;
        self.touch(u, touched);
        let adv = self.adv();
        adv.flows[from as usize] -= value;
        adv.flows[band as usize] += value;
        self.advise_user(u, trigger, t, touched)
    }
}
