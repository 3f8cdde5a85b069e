//! Sessions: login (password, second factor, new devices) and refresh-token rotation with
//! reuse detection.

use super::*;

impl Account {
    pub(super) fn live_session(&self, family: &str, now: Timestamp) -> Option<&Session> {
        self.sessions.get(family).filter(|s| !s.revoked && s.expires_at > now)
    }

    pub(super) fn decide_login(
        &self,
        device: Option<TokenHash>,
        totp_step: Option<u64>,
        session: NewSession,
        ctx: &mut Ctx<'_>,
    ) -> Result<Decision<AccountEvent, AccountReply>, AccountRejection> {
        let mut amr = vec!["pwd".to_string()];
        if let Some(totp) = self.totp.as_ref().filter(|t| t.confirmed) {
            match totp_step {
                Some(step) if step > totp.last_step => amr.push("otp".into()),
                _ => {
                    let why = if totp_step.is_some() { "code_reused" } else { "code_missing_or_wrong" };
                    ctx.audit(AuditDraft::refused("security.login", "mfa_required").detail("why", why));
                    return Err(AccountRejection::MfaRequired);
                }
            }
        }
        let mut events = vec![AccountEvent::LoggedIn {
            family: session.family.clone(),
            token_hash: session.token_hash,
            expires_at: session.expires_at,
            amr: amr.clone(),
            totp_step: if self.mfa_enabled() { totp_step } else { None },
            at: ctx.now,
        }];
        let new_device = device.is_some_and(|d| !self.devices.contains(&d));
        if let (true, Some(device)) = (new_device, device) {
            let notification = Notification {
                id: ctx.new_id("ntf"),
                at: ctx.now,
                kind: "new_device".into(),
                message: "A sign-in from a device not seen before on this account. If it was not you, change your password.".into(),
            };
            ctx.audit(AuditDraft::ok("security.new_device").detail("device", hex::encode(&device[..8])));
            events.push(AccountEvent::DeviceAdded { device, notification });
        }
        ctx.audit(AuditDraft::ok("security.login").detail("session", &session.family).detail("amr", amr.join(",")));
        Ok(Decision::new(
            events,
            AccountReply::LoggedIn {
                roles: self.roles.clone(),
                amr,
                new_device,
            },
        ))
    }

    pub(super) fn decide_refresh(
        &self,
        family: String,
        presented: TokenHash,
        next: TokenHash,
        expires_at: Timestamp,
        ctx: &mut Ctx<'_>,
    ) -> Result<Decision<AccountEvent, AccountReply>, AccountRejection> {
        let Some(session) = self.live_session(&family, ctx.now) else {
            // A spent token presented again after its reuse revoked the family is still reuse
            // (API.md: a spent refresh token answers refresh_token_reused); the family is
            // revoked already, so nothing changes.
            if self.sessions.get(&family).is_some_and(|s| s.revoked && s.spent.contains(&presented)) {
                ctx.audit(AuditDraft::refused("security.refresh_token_reused", "refresh_token_reused").detail("session", &family));
                return Ok(Decision::replay(AccountReply::Reused));
            }
            ctx.audit(AuditDraft::refused("security.refresh", "invalid_refresh_token").detail("session", &family));
            return Err(AccountRejection::InvalidRefreshToken);
        };
        if session.current == presented {
            ctx.audit(AuditDraft::ok("security.refresh").detail("session", &family));
            let reply = AccountReply::Refreshed {
                roles: self.roles.clone(),
                amr: session.amr.clone(),
            };
            return Ok(Decision::new(vec![AccountEvent::TokenRotated { family, next, expires_at }], reply));
        }
        if session.spent.contains(&presented) {
            ctx.audit(AuditDraft::refused("security.refresh_token_reused", "refresh_token_reused").detail("session", &family));
            return Ok(Decision::new(
                vec![AccountEvent::SessionRevoked {
                    family,
                    reason: "refresh_token_reused".into(),
                }],
                AccountReply::Reused,
            ));
        }
        ctx.audit(AuditDraft::refused("security.refresh", "invalid_refresh_token").detail("session", &family));
        Err(AccountRejection::InvalidRefreshToken)
    }
}
