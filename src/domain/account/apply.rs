//! How each account event changes the state (total and deterministic: events were valid when
//! decided).

use super::*;

impl Account {
    pub(super) fn apply_event(&mut self, event: &AccountEvent) {
        match event {
            AccountEvent::Registered {
                sealed_profile,
                password_hash,
                roles,
                at,
            } => {
                self.sealed_profile = sealed_profile.clone();
                self.password_hash = password_hash.clone();
                self.roles = roles.clone();
                self.created_at = *at;
            }
            AccountEvent::LoggedIn {
                family,
                token_hash,
                expires_at,
                amr,
                totp_step,
                at,
            } => {
                // Expired and revoked sessions are pruned; beyond the cap the oldest goes.
                self.sessions.retain(|_, s| !s.revoked && s.expires_at > *at);
                while self.sessions.len() >= SESSIONS_MAX {
                    let oldest = self.sessions.iter().min_by_key(|(_, s)| s.created_at).map(|(f, _)| f.clone());
                    if let Some(f) = oldest {
                        self.sessions.remove(&f);
                    }
                }
                self.sessions.insert(
                    family.clone(),
                    Session {
                        current: *token_hash,
                        spent: Vec::new(),
                        created_at: *at,
                        expires_at: *expires_at,
                        revoked: false,
                        amr: amr.clone(),
                    },
                );
                if let (Some(step), Some(t)) = (totp_step, self.totp.as_mut()) {
                    t.last_step = t.last_step.max(*step);
                }
            }
            AccountEvent::DeviceAdded { device, notification } => {
                if self.devices.len() < DEVICES_MAX {
                    self.devices.insert(*device);
                }
                self.notifications.push(notification.clone());
                if self.notifications.len() > NOTIFICATIONS_MAX {
                    self.notifications.remove(0);
                }
            }
            AccountEvent::TokenRotated { family, next, expires_at } => {
                if let Some(s) = self.sessions.get_mut(family) {
                    let spent = std::mem::replace(&mut s.current, *next);
                    s.spent.push(spent);
                    if s.spent.len() > SPENT_REMEMBERED {
                        s.spent.remove(0);
                    }
                    s.expires_at = *expires_at;
                }
            }
            AccountEvent::SessionRevoked { family, .. } => {
                if let Some(s) = self.sessions.get_mut(family) {
                    s.revoked = true;
                }
            }
            AccountEvent::TotpEnrolled { sealed_secret } => {
                let last_step = self.totp.as_ref().map_or(0, |t| t.last_step);
                self.totp = Some(Totp {
                    sealed_secret: sealed_secret.clone(),
                    confirmed: false,
                    last_step,
                });
            }
            AccountEvent::TotpConfirmed { step } => {
                if let Some(t) = self.totp.as_mut() {
                    t.confirmed = true;
                    t.last_step = *step;
                }
            }
            AccountEvent::ConsentsChanged { consents, .. } => self.consents = *consents,
            AccountEvent::KycDecided { kyc } => self.kyc = Some(kyc.clone()),
            AccountEvent::Screened { outcome, at } => {
                let resolution = self.screening.take().and_then(|s| s.resolution);
                self.screening = Some(Screening {
                    outcome: outcome.clone(),
                    screened_at: *at,
                    resolution,
                });
            }
            AccountEvent::ScreeningResolved { entry, decision, note } => {
                if let Some(s) = self.screening.as_mut() {
                    s.resolution = Some((entry.clone(), *decision, note.clone()));
                }
            }
            AccountEvent::SuitabilityAssessed { suitability } => self.suitability = Some(suitability.clone()),
            AccountEvent::NotificationsPruned { before } => self.notifications.retain(|n| n.at >= *before),
            AccountEvent::AdviceIssued { record } => self.advice = Some(record.clone()),
            AccountEvent::AdviceStatusChanged { advice_id, status, note } => {
                if let Some(r) = self.advice.as_mut().filter(|r| &r.advice_id == advice_id) {
                    r.status = *status;
                    if note.is_some() {
                        r.review_note = note.clone();
                    }
                }
            }
            AccountEvent::AdviceDeleted => self.advice = None,
            AccountEvent::ErasureRequested { at, due_at } => {
                self.erasure = Some(Erasure {
                    requested_at: *at,
                    due_at: *due_at,
                    erased_at: None,
                })
            }
            AccountEvent::Erased { at } => {
                // Personal data and credentials go; what regulation keeps (the KYC outcome and
                // document type, screening, the risk profile) stays, identified only by the
                // random user id. The sealed copies in older journal entries become unreadable
                // when the user's data key is destroyed.
                self.sealed_profile.clear();
                self.password_hash.clear();
                self.totp = None;
                self.sessions.clear();
                self.devices.clear();
                self.notifications.clear();
                self.consents = Consents::default();
                self.advice = None;
                if let Some(k) = self.kyc.as_mut() {
                    k.sealed_document = None;
                }
                if let Some(s) = self.suitability.as_mut() {
                    s.sealed_answers.clear();
                }
                if let Some(s) = self.screening.as_mut() {
                    if let Some(r) = s.resolution.as_mut() {
                        r.2.clear();
                    }
                }
                if let Some(e) = self.erasure.as_mut() {
                    e.erased_at = Some(*at);
                }
            }
        }
    }
}
