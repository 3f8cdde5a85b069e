//! What a registered account decides: sessions, MFA, consents, KYC, screening, suitability,
//! erasure and the advice kept about the person.

use super::*;

fn consent_text(c: Consents) -> String {
    format!("ai_profiling={},marketing={},analytics={}", c.ai_profiling, c.marketing, c.analytics)
}

impl Account {
    pub(super) fn decide_registered(&self, cmd: AccountCommand, ctx: &mut Ctx<'_>) -> Result<Decision<AccountEvent, AccountReply>, AccountRejection> {
        let done = |events: Vec<AccountEvent>| Ok(Decision::new(events, AccountReply::Done));
        match cmd {
            AccountCommand::Register { .. } => {
                ctx.audit(AuditDraft::refused("account.register", "email_taken"));
                Err(AccountRejection::AlreadyRegistered)
            }
            AccountCommand::Login { device, totp_step, session } => self.decide_login(device, totp_step, session, ctx),
            AccountCommand::Refresh {
                family,
                presented,
                next,
                expires_at,
            } => self.decide_refresh(family, presented, next, expires_at, ctx),
            AccountCommand::Logout { family } => {
                ctx.audit(AuditDraft::ok("security.logout").detail("session", &family));
                if self.sessions.get(&family).is_some_and(|s| !s.revoked) {
                    done(vec![AccountEvent::SessionRevoked {
                        family,
                        reason: "logout".into(),
                    }])
                } else {
                    done(vec![])
                }
            }
            AccountCommand::EnrolTotp { sealed_secret } => {
                if self.mfa_enabled() {
                    ctx.audit(AuditDraft::refused("mfa.totp.enrol", "mfa_already_enabled"));
                    return Err(AccountRejection::MfaAlreadyEnabled);
                }
                ctx.audit(AuditDraft::ok("mfa.totp.enrol"));
                done(vec![AccountEvent::TotpEnrolled { sealed_secret }])
            }
            AccountCommand::ConfirmTotp { step } => match &self.totp {
                Some(t) if !t.confirmed && step > t.last_step => {
                    ctx.audit(AuditDraft::ok("mfa.totp.confirm"));
                    done(vec![AccountEvent::TotpConfirmed { step }])
                }
                _ => {
                    ctx.audit(AuditDraft::refused("mfa.totp.confirm", "invalid_code"));
                    Err(AccountRejection::InvalidCode)
                }
            },
            AccountCommand::SetConsents(consents) => {
                ctx.audit(
                    AuditDraft::ok("consent.change")
                        .detail("before", consent_text(self.consents))
                        .detail("after", consent_text(consents)),
                );
                let mut events = if consents == self.consents {
                    vec![]
                } else {
                    vec![AccountEvent::ConsentsChanged { consents, at: ctx.now }]
                };
                // Without ai_profiling consent no advice is kept about the person.
                if !consents.ai_profiling && self.advice.is_some() {
                    ctx.audit(AuditDraft::ok("advice.deleted").detail("reason", "ai_profiling consent withdrawn"));
                    events.push(AccountEvent::AdviceDeleted);
                }
                Ok(Decision::new(events, AccountReply::Consents(consents)))
            }
            AccountCommand::SubmitKyc {
                document_type,
                sealed_document,
                provider,
                status,
                screening,
            } => {
                if self.kyc_status() == KycStatus::Verified {
                    ctx.audit(AuditDraft::refused("kyc.submit", "kyc_already_verified"));
                    return Err(AccountRejection::KycAlreadyVerified);
                }
                if self.kyc_status() == KycStatus::Review {
                    ctx.audit(AuditDraft::refused("kyc.submit", "kyc_in_review"));
                    return Err(AccountRejection::KycInReview);
                }
                ctx.audit(
                    AuditDraft::ok("kyc.submit")
                        .detail("document_type", document_type.as_str())
                        .detail("provider", &provider)
                        .detail("status", status.as_str()),
                );
                let mut events = vec![AccountEvent::KycDecided {
                    kyc: Kyc {
                        status,
                        document_type: Some(document_type),
                        sealed_document: Some(sealed_document),
                        provider,
                        decided_at: ctx.now,
                    },
                }];
                events.extend(self.screen(screening, ctx));
                done(events)
            }
            AccountCommand::Rescreen(outcome) => done(self.screen(outcome, ctx).into_iter().collect()),
            AccountCommand::ReviewKyc { approve, note } => {
                let Some(kyc) = self.kyc.as_ref().filter(|k| k.status == KycStatus::Review) else {
                    ctx.audit(AuditDraft::refused("kyc.review", "kyc_not_in_review"));
                    return Err(AccountRejection::KycNotInReview);
                };
                let status = if approve { KycStatus::Verified } else { KycStatus::Rejected };
                ctx.audit(
                    AuditDraft::ok("kyc.review")
                        .detail("decision", if approve { "approve" } else { "reject" })
                        .detail("note", &note)
                        .detail("status", status.as_str()),
                );
                let mut decided = kyc.clone();
                decided.status = status;
                decided.decided_at = ctx.now;
                done(vec![AccountEvent::KycDecided { kyc: decided }])
            }
            AccountCommand::ResolveScreening { entry, decision, note } => {
                let pending = self
                    .screening
                    .as_ref()
                    .is_some_and(|s| s.outcome.entry.as_deref() == Some(entry.as_str()) && s.outcome.status != ScreeningStatus::Clear);
                // The same decision on the same entry again would be recorded twice and change
                // nothing (another decision, a reviewer's reversal, is a decision like any other).
                let repeated = self
                    .screening
                    .as_ref()
                    .and_then(|s| s.resolution.as_ref())
                    .is_some_and(|(resolved, d, _)| *resolved == entry && *d == decision);
                if !pending || repeated {
                    ctx.audit(AuditDraft::refused("screening.resolve", "nothing_to_resolve").detail("entry", &entry));
                    return Err(AccountRejection::NothingToResolve);
                }
                // Clearing a full match would be recorded and change nothing (`Screening::effective`
                // keeps it a match): refused, so the reviewer is told.
                if decision == ScreeningDecision::Clear && self.screening.as_ref().is_some_and(|s| s.outcome.status == ScreeningStatus::Match) {
                    ctx.audit(AuditDraft::refused("screening.resolve", "match_not_clearable").detail("entry", &entry));
                    return Err(AccountRejection::MatchNotClearable);
                }
                let d = match decision {
                    ScreeningDecision::Clear => "clear",
                    ScreeningDecision::Match => "match",
                };
                ctx.audit(AuditDraft::ok("screening.resolve").detail("entry", &entry).detail("decision", d));
                done(vec![AccountEvent::ScreeningResolved { entry, decision, note }])
            }
            AccountCommand::RequestErasure { due_at } => {
                if let Some(e) = self.erasure {
                    return Ok(Decision::replay(AccountReply::ErasureDue(e.due_at)));
                }
                ctx.audit(AuditDraft::ok("gdpr.erasure_requested").detail("due_at", due_at.to_rfc3339()));
                Ok(Decision::new(
                    vec![AccountEvent::ErasureRequested { at: ctx.now, due_at }],
                    AccountReply::ErasureDue(due_at),
                ))
            }
            AccountCommand::Erase { replayed } => match self.erasure {
                _ if replayed => {
                    ctx.audit(AuditDraft::ok("gdpr.erasure").detail("replayed", "true"));
                    let sessions = self.sessions.keys().cloned().collect();
                    let at = ctx.now;
                    let mut events = Vec::new();
                    if self.erasure.is_none() {
                        events.push(AccountEvent::ErasureRequested { at, due_at: at });
                    }
                    events.push(AccountEvent::Erased { at });
                    Ok(Decision::new(events, AccountReply::Erased { sessions }))
                }
                Some(e) if e.due_at <= ctx.now => {
                    ctx.audit(AuditDraft::ok("gdpr.erasure").detail("requested_at", e.requested_at.to_rfc3339()));
                    let sessions = self.sessions.iter().filter(|(_, s)| !s.revoked).map(|(f, _)| f.clone()).collect();
                    Ok(Decision::new(vec![AccountEvent::Erased { at: ctx.now }], AccountReply::Erased { sessions }))
                }
                _ => Err(AccountRejection::ErasureNotDue),
            },
            AccountCommand::IssueAdvice { advice, held } => {
                // Unchanged advice keeps its record. A person's decision sticks while the advice
                // stays materially the same (prices moving a little change its numbers, not
                // what it recommends): held advice is not queued again, approved advice stays
                // acceptable, rejected advice stays rejected with its note. Advice acted on
                // (accepted) is followed by new advice.
                if let Some(r) = self.advice.as_ref().filter(|r| match r.status {
                    AdviceStatus::Published => r.advice == advice,
                    AdviceStatus::PendingReview | AdviceStatus::Approved | AdviceStatus::Rejected => r.advice.materially_same(&advice) && r.advice.fits(&held),
                    AdviceStatus::Accepted => false,
                }) {
                    return Ok(Decision::replay(AccountReply::Advice(r.clone())));
                }
                let status = if advice.review_reason.is_some() {
                    AdviceStatus::PendingReview
                } else {
                    AdviceStatus::Published
                };
                let record = AdviceRecord {
                    advice_id: ctx.new_id("adv"),
                    generated_at: ctx.now,
                    advice,
                    status,
                    review_note: None,
                };
                ctx.audit(
                    AuditDraft::ok("advice.issued")
                        .detail("advice_id", &record.advice_id)
                        .detail("model_version", crate::domain::advice::MODEL_VERSION)
                        .detail("risk_band", record.advice.risk_band.as_str())
                        .detail("orders", record.advice.proposed_orders.len())
                        .detail("turnover", record.advice.turnover)
                        .detail("status", if status == AdviceStatus::Published { "published" } else { "pending_review" }),
                );
                Ok(Decision::new(
                    vec![AccountEvent::AdviceIssued { record: record.clone() }],
                    AccountReply::Advice(record),
                ))
            }
            AccountCommand::ReviewAdvice { advice_id, approve, note } => {
                let Some(r) = self.advice.as_ref().filter(|r| r.advice_id == advice_id) else {
                    return Err(AccountRejection::UnknownAdvice);
                };
                if r.status != AdviceStatus::PendingReview {
                    return Err(AccountRejection::AdviceNotActionable(r.status));
                }
                let status = if approve { AdviceStatus::Approved } else { AdviceStatus::Rejected };
                ctx.audit(
                    AuditDraft::ok("advice.reviewed")
                        .detail("advice_id", &advice_id)
                        .detail("decision", if approve { "approve" } else { "reject" })
                        .detail("note", &note),
                );
                let mut record = r.clone();
                record.status = status;
                record.review_note = Some(note.clone());
                Ok(Decision::new(
                    vec![AccountEvent::AdviceStatusChanged {
                        advice_id,
                        status,
                        note: Some(note),
                    }],
                    AccountReply::Advice(record),
                ))
            }
            AccountCommand::AcceptAdvice { advice_id, replay, held } => {
                let Some(r) = self.advice.as_ref().filter(|r| r.advice_id == advice_id) else {
                    return Err(AccountRejection::UnknownAdvice);
                };
                match r.status {
                    AdviceStatus::Accepted if replay => Ok(Decision::replay(AccountReply::Advice(r.clone()))),
                    AdviceStatus::Published | AdviceStatus::Approved if !r.advice.fits(&held) => {
                        ctx.audit(AuditDraft::refused("advice.accepted", "advice_outdated").detail("advice_id", &advice_id));
                        Err(AccountRejection::AdviceOutdated)
                    }
                    AdviceStatus::Published | AdviceStatus::Approved => {
                        ctx.audit(AuditDraft::ok("advice.accepted").detail("advice_id", &advice_id));
                        let mut record = r.clone();
                        record.status = AdviceStatus::Accepted;
                        Ok(Decision::new(
                            vec![AccountEvent::AdviceStatusChanged {
                                advice_id,
                                status: AdviceStatus::Accepted,
                                note: None,
                            }],
                            AccountReply::Advice(record),
                        ))
                    }
                    other => Err(AccountRejection::AdviceNotActionable(other)),
                }
            }
            AccountCommand::PruneNotifications { before } => {
                let due = self.notifications.iter().any(|n| n.at < before);
                Ok(Decision::new(
                    if due { vec![AccountEvent::NotificationsPruned { before }] } else { vec![] },
                    AccountReply::Done,
                ))
            }
            AccountCommand::SetSuitability { profile, sealed_answers } => {
                ctx.audit(
                    AuditDraft::ok("suitability.assess")
                        .detail("risk_score", profile.risk_score)
                        .detail("risk_band", profile.risk_band.as_str())
                        .detail("complex_products_allowed", profile.complex_products_allowed),
                );
                done(vec![AccountEvent::SuitabilityAssessed {
                    suitability: Suitability {
                        profile,
                        sealed_answers,
                        assessed_at: ctx.now,
                    },
                }])
            }
        }
    }

    /// Records a screening result (audited, also when unchanged: it shows the check ran).
    pub(super) fn screen(&self, outcome: ScreeningOutcome, ctx: &mut Ctx<'_>) -> Option<AccountEvent> {
        let status = serde_json::to_value(outcome.status)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        let mut draft = AuditDraft::ok("screening.check")
            .detail("status", status)
            .detail("score", &outcome.score)
            .detail("list_version", &outcome.list_version);
        if let Some(e) = &outcome.entry {
            draft = draft.detail("entry", e);
        }
        ctx.audit(draft);
        let unchanged = self.screening.as_ref().is_some_and(|s| s.outcome == outcome);
        (!unchanged).then_some(AccountEvent::Screened { outcome, at: ctx.now })
    }
}
