//! The login index: a keyed hash of a normalised email → the user id that owns it.
//!
//! Registration first claims the email here (first claim wins), then creates the account. If a
//! registration died between the two steps, the claim names an account that does not exist; the
//! next registration for that email completes it (see the gateway's register flow).
//!
//! It also counts failed logins for the email (known or not — the key is the email's keyed
//! hash), so that every node of a cluster counts them together and a lockout holds wherever
//! the next attempt arrives.

use crate::domain::audit::AuditDraft;
use crate::domain::ctx::Ctx;
use crate::domain::entity::{Decision, Entity};
use crate::domain::ids::EntityKind;
use crate::domain::time::Timestamp;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EmailIndex {
    pub email_hash: String,
    pub owner: Option<String>,
    /// The latest failed logins, oldest first (at most `FAILURES_KEPT`).
    #[serde(default)]
    pub failures: std::collections::VecDeque<Timestamp>,
}

/// Failed logins remembered per email: more than any allowance a configuration may set.
pub const FAILURES_KEPT: usize = 256;

impl EmailIndex {
    /// Seconds until another attempt is allowed once more than `allowance` failures fell
    /// within the last `window_ms` (the lockout lasts until the oldest of them leaves the
    /// window); None when allowed.
    pub fn locked_for(&self, now: Timestamp, allowance: u32, window_ms: i64) -> Option<u64> {
        let allowance = allowance.max(1) as usize;
        let recent: Vec<Timestamp> = self.failures.iter().copied().filter(|t| t.millis() > now.millis() - window_ms).collect();
        if recent.len() <= allowance {
            return None;
        }
        let until = recent[recent.len() - allowance - 1].millis() + window_ms;
        (until > now.millis()).then(|| ((until - now.millis()) as u64).div_ceil(1000).max(1))
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum EmailIndexCommand {
    /// Claims the email for `user_id` unless someone holds it; replies with the holder.
    Claim { user_id: String },
    /// Frees the email when `user_id` holds it (erasure); replies with the user id.
    Release { user_id: String },
    /// Counts a failed login for this email; replies with the holder (or "").
    LoginFailed,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum EmailIndexEvent {
    Claimed { user_id: String, at: Timestamp },
    Released { user_id: String, at: Timestamp },
    LoginFailed { at: Timestamp },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EmailIndexRejection {}

impl Entity for EmailIndex {
    type Command = EmailIndexCommand;
    type Event = EmailIndexEvent;
    /// The user id that holds the email after the command.
    type Reply = String;
    type Rejection = EmailIndexRejection;
    type Query = crate::domain::queries::EmailIndexQuery;
    type View = crate::domain::queries::EmailIndexView;
    const KIND: EntityKind = EntityKind::EmailIndex;

    fn query(&self, query: &Self::Query) -> Self::View {
        query.run(self)
    }

    fn empty(id: &str) -> Self {
        EmailIndex {
            email_hash: id.to_string(),
            owner: None,
            failures: Default::default(),
        }
    }

    fn decide(&self, cmd: EmailIndexCommand, ctx: &mut Ctx<'_>) -> Result<Decision<EmailIndexEvent, String>, EmailIndexRejection> {
        match cmd {
            EmailIndexCommand::Claim { user_id } => match &self.owner {
                Some(owner) => Ok(Decision::replay(owner.clone())),
                None => {
                    ctx.audit(AuditDraft::ok("email_index.claim").detail("user_id", &user_id));
                    Ok(Decision::new(
                        vec![EmailIndexEvent::Claimed {
                            user_id: user_id.clone(),
                            at: ctx.now,
                        }],
                        user_id,
                    ))
                }
            },
            EmailIndexCommand::LoginFailed => Ok(Decision::new(
                vec![EmailIndexEvent::LoginFailed { at: ctx.now }],
                self.owner.clone().unwrap_or_default(),
            )),
            EmailIndexCommand::Release { user_id } => {
                if self.owner.as_deref() != Some(user_id.as_str()) {
                    return Ok(Decision::replay(user_id));
                }
                ctx.audit(AuditDraft::ok("email_index.release").detail("user_id", &user_id));
                Ok(Decision::new(
                    vec![EmailIndexEvent::Released {
                        user_id: user_id.clone(),
                        at: ctx.now,
                    }],
                    user_id,
                ))
            }
        }
    }

    fn apply(&mut self, event: &EmailIndexEvent) {
        match event {
            EmailIndexEvent::Claimed { user_id, .. } => self.owner = Some(user_id.clone()),
            EmailIndexEvent::Released { .. } => self.owner = None,
            EmailIndexEvent::LoginFailed { at } => {
                self.failures.push_back(*at);
                while self.failures.len() > FAILURES_KEPT {
                    self.failures.pop_front();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn more_failures_than_the_allowance_within_the_window_lock_until_the_oldest_leaves_it() {
        let mut e = EmailIndex::empty("h");
        for t in [1_000, 2_000, 3_000] {
            e.apply(&EmailIndexEvent::LoginFailed { at: Timestamp(t) });
        }
        assert_eq!(e.locked_for(Timestamp(3_500), 3, 60_000), None, "three failures are allowed");
        e.apply(&EmailIndexEvent::LoginFailed { at: Timestamp(4_000) });
        assert_eq!(e.locked_for(Timestamp(4_000), 3, 60_000), Some(57), "until 1 000 + 60 000");
        assert_eq!(e.locked_for(Timestamp(61_001), 3, 60_000), None, "the oldest left the window");
    }
}
