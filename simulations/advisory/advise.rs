//! Advice for one user (`GET /v1/advice` through the account), the compliance officer who
//! decides held advice, and the samples of the review queue and the bands' values.

use super::*;

impl Sim {
    /// `GET /v1/advice`: the advice engine on the user's profile, cash, holdings and the listed
    /// instruments, issued through the account; published advice with orders is accepted at
    /// once, advice held for review joins the officer's queue.
    pub(super) fn advise_user(&mut self, u: usize, trigger: Trigger, t: Timestamp, touched: &mut Vec<usize>) -> Result<(), Failure> {
        let now = self.moment(t);
        self.touch(u, touched);
        let stats = &mut self.adv().stats;
        match trigger {
            Trigger::Daily => stats.requests_daily += 1,
            Trigger::SharpMove => stats.requests_sharp += 1,
            Trigger::Reprofile => stats.requests_reprofile += 1,
            Trigger::Panic => stats.requests_panic += 1,
        }
        let request_id = format!("advice-{}", stats.requests());
        let id = self.users[u].id.clone();
        let account = &self.advisee(u).account;
        // The node's gate: consent, then the compliance rules (KYC, screening, questionnaire).
        let investor = account.investor_status();
        if let Err((code, _)) = moneta::domain::advice::gate(account.consents.ai_profiling, &investor) {
            return self.fail(format!(
                "account {id}: an advised user may not be advised ({code}: {investor:?}, {:?})",
                account.consents
            ));
        }
        let Some(profile) = account.suitability.as_ref().map(|s| s.profile.clone()) else {
            return self.fail(format!("account {id}: no risk profile"));
        };
        let before = account.advice.clone();
        let state = &self.users[u].state;
        let cash = state.cash;
        let holdings: BTreeMap<String, Decimal> = state.holdings.iter().map(|(s, h)| (s.clone(), h.quantity)).collect();
        let universe = self.universe();
        let policy = self.adv().policy.clone();
        let advice = advise(&profile, &universe, cash, &holdings, &self.fees, &policy);
        if let Err(why) = oracle::check_advice(&profile, &universe, cash, &holdings, &self.fees, &policy, &advice) {
            return self.fail(format!("account {id}: advice breaks the rules: {why}; advice {advice:?}"));
        }
        // Unchanged advice keeps its record (and id and status) unless it was acted on; a
        // person's decision (held, approved, rejected) stands while it is materially the same.
        let unchanged = before.clone().filter(|r| match r.status {
            AdviceStatus::Published => r.advice == advice,
            AdviceStatus::PendingReview | AdviceStatus::Approved | AdviceStatus::Rejected => r.advice.materially_same(&advice) && r.advice.fits(&holdings),
            AdviceStatus::Accepted => false,
        });
        let audit: &[&str] = if unchanged.is_some() { &[] } else { &["advice.issued"] };
        let cmd = AccountCommand::IssueAdvice {
            advice: advice.clone(),
            held: holdings.clone(),
        };
        let d = self.account_ok(u, cmd, &id, &request_id, audit, "issue advice")?;
        let AccountReply::Advice(record) = d.reply else {
            return self.fail(format!("account {id}: issuing advice answered {:?}", d.reply));
        };
        let band = profile.risk_band as usize;
        if let Some(old) = unchanged {
            if !d.events.is_empty() || record != old {
                return self.fail(format!("account {id}: unchanged advice was not kept: {:?}", d.events));
            }
            self.adv().stats.unchanged += 1;
        } else {
            let status = if advice.review_reason.is_some() {
                AdviceStatus::PendingReview
            } else {
                AdviceStatus::Published
            };
            let kept = self.advisee(u).account.advice.as_ref() == Some(&record);
            let fresh_id = is_well_formed_id("adv", &record.advice_id) && before.as_ref().is_none_or(|b| b.advice_id != record.advice_id);
            let ok = d.events == [AccountEvent::AdviceIssued { record: record.clone() }]
                && record.advice == advice
                && record.status == status
                && record.generated_at == now
                && record.review_note.is_none();
            if !ok || !kept || !fresh_id {
                return self.fail(format!("account {id}: advice issued wrongly: {:?}", d.events));
            }
            let stats = &mut self.adv().stats;
            stats.issued += 1;
            stats.per_band[band].issued += 1;
            match status {
                AdviceStatus::PendingReview => {
                    stats.pending_review += 1;
                    stats.per_band[band].pending_review += 1;
                    self.enqueue(u, &record);
                }
                _ if record.advice.proposed_orders.is_empty() => {
                    stats.published += 1;
                    stats.no_orders += 1;
                }
                _ => {
                    stats.published += 1;
                    self.accept(u, &record, t, Prices::Advice)?;
                }
            }
        }
        // The reference prices for the next sharp move are those the advice was computed at.
        self.advisee_mut(u).live.rebase();
        Ok(())
    }

    /// Held advice joins the queue; the officer's delay and decision are drawn now.
    pub(super) fn enqueue(&mut self, u: usize, record: &AdviceRecord) {
        let now = self.now;
        let adv = self.adv();
        let [lo, hi] = adv.scenario.behaviour.review_delay_minutes;
        let delay = i64::from(adv.review_rng.random_range(lo..=hi));
        let approve = !adv.review_rng.random_ratio(adv.scenario.behaviour.reject_per_mille, 1000);
        let due = now.millis() + delay * STEP_MS;
        adv.queue_seq += 1;
        let review = Review {
            user: u,
            advice_id: record.advice_id.clone(),
            queued_at: now,
            approve,
        };
        adv.queue.insert((due, adv.queue_seq), review);
    }

    /// The compliance officer decides on the advice that is due. Advice superseded since (the
    /// user asked again and got different advice) is no longer the account's: the decision is
    /// refused as unknown advice and changes nothing.
    pub(super) fn officer(&mut self, t: Timestamp, touched: &mut Vec<usize>) -> Result<(), Failure> {
        loop {
            let adv = self.adv();
            let Some(entry) = adv.queue.first_entry() else { break };
            if entry.key().0 > t.millis() {
                break;
            }
            let review = entry.remove();
            let u = review.user;
            let now = self.moment(t);
            self.touch(u, touched);
            let id = self.users[u].id.clone();
            let current = self.advisee(u).account.advice.clone();
            let note = if review.approve {
                "approved: consistent with the client's profile (simulated officer)"
            } else {
                "rejected: the turnover is not justified (simulated officer)"
            };
            let cmd = AccountCommand::ReviewAdvice {
                advice_id: review.advice_id.clone(),
                approve: review.approve,
                note: note.to_string(),
            };
            let request_id = format!("review-{}", review.advice_id);
            match current {
                Some(r) if r.advice_id == review.advice_id && r.status == AdviceStatus::PendingReview => {
                    let d = self.account_ok(u, cmd, OFFICER, &request_id, &["advice.reviewed"], "review advice")?;
                    let status = if review.approve { AdviceStatus::Approved } else { AdviceStatus::Rejected };
                    let event = AccountEvent::AdviceStatusChanged {
                        advice_id: review.advice_id.clone(),
                        status,
                        note: Some(note.to_string()),
                    };
                    let AccountReply::Advice(record) = d.reply else {
                        return self.fail(format!("account {id}: reviewing answered {:?}", d.reply));
                    };
                    if d.events != [event] || record.status != status || record.advice != r.advice {
                        return self.fail(format!("account {id}: reviewing {} answered {record:?} with {:?}", review.advice_id, d.events));
                    }
                    let stats = &mut self.adv().stats;
                    stats.review_delay_ms_total += now.millis() - review.queued_at.millis();
                    if review.approve {
                        stats.approved += 1;
                        self.accept(u, &record, t, Prices::Later)?;
                    } else {
                        stats.rejected += 1;
                    }
                }
                Some(r) if r.advice_id == review.advice_id => {
                    return self.fail(format!("account {id}: held advice {} became {:?} without a review", r.advice_id, r.status));
                }
                _ => {
                    let result = self.account_exec(u, cmd, OFFICER, &request_id, &[], "review superseded advice")?;
                    if !matches!(result, Err(AccountRejection::UnknownAdvice)) {
                        return self.fail(format!("account {id}: a review of superseded advice answered {result:?}"));
                    }
                    self.adv().stats.superseded += 1;
                }
            }
        }
        Ok(())
    }

    /// Review-queue load: how much advice is held for review at the end of this minute.
    pub(super) fn sample_queue(&mut self) {
        let held = self
            .advised()
            .filter(|&u| self.advisee(u).account.advice.as_ref().is_some_and(|r| r.status == AdviceStatus::PendingReview))
            .count() as u64;
        let stats = &mut self.adv().stats;
        stats.queue_max = stats.queue_max.max(held);
        stats.queue_sum += held;
        stats.queue_samples += 1;
    }

    /// Values every advised portfolio (`Positions::of(..).value(..)`), which must agree with its
    /// live valuation, and appends one point per band.
    pub(super) fn sample_values(&mut self, minute: i64, t: Timestamp) -> Result<(), Failure> {
        let mut values = [Decimal::ZERO; BANDS];
        let mut exposed = [Decimal::ZERO; BANDS];
        let mut members = [0usize; BANDS];
        let mut contributions = Decimal::ZERO;
        let adv = self.advisory.as_ref().expect("a scenario run");
        let before_first_shock = adv.scenario.shock_span().is_some_and(|(first, _)| minute + 1 == first);
        for u in self.advised() {
            let a = self.advisee(u);
            let positions = Positions::of(&self.users[u].state);
            let value = positions.value(|s| self.price(s));
            if value != a.live.value {
                return self.fail(format!(
                    "user {}: the live valuation says {} but the portfolio is worth {value}",
                    self.users[u].id, a.live.value
                ));
            }
            let band = a.band() as usize;
            values[band] += value;
            members[band] += 1;
            contributions += positions.contributions;
            if before_first_shock {
                for (symbol, h) in &positions.holdings {
                    let class = self.instruments.get(symbol).map(|m| AssetClass::of(m.listing.kind));
                    if matches!(class, Some(AssetClass::Equities | AssetClass::Complex)) {
                        exposed[band] += round_cash(h.quantity * self.price(symbol).unwrap_or_default());
                    }
                }
            }
        }
        let flows: Decimal = adv.flows.iter().sum();
        if flows != contributions {
            return self.fail(format!(
                "band flows add up to {flows}, but the advised portfolios' deposits − withdrawals are {contributions}"
            ));
        }
        let at = t.plus_ms(STEP_MS - 1);
        let prices: BTreeMap<String, Decimal> = self.instruments.iter().map(|(s, m)| (s.clone(), m.state.price)).collect();
        let adv = self.adv();
        for ((series, value), flow) in adv.series.iter_mut().zip(values).zip(adv.flows) {
            series.push(ValuePoint {
                at,
                value,
                contributions: flow,
            });
        }
        adv.sample_minutes.push(minute);
        adv.members_end = members;
        let index = adv.sample_minutes.len() - 1;
        let span = adv.scenario.shock_span();
        if before_first_shock {
            adv.marks.start = Some(index);
            adv.marks.prices_start = prices.clone();
            for ((share, exposed), value) in adv.marks.exposure.iter_mut().zip(exposed).zip(values) {
                *share = if value > Decimal::ZERO {
                    (exposed / value).round_dp(4)
                } else {
                    Decimal::ZERO
                };
            }
        }
        if span.is_some_and(|(_, end)| minute + 1 == end) {
            adv.marks.end = Some(index);
            adv.marks.prices_end = prices;
        }
        Ok(())
    }
}
