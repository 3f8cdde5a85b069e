//! The login index: a keyed hash of a normalised email → the user id that owns it.
//!
//! Registration first claims the email here (first claim wins), then creates the account. If a
//! registration died between the two steps, the claim names an account that does not exist; the
//! next registration for that email completes it (see the gateway's register flow).

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
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum EmailIndexCommand {
    /// Claims the email for `user_id` unless someone holds it; replies with the holder.
    Claim { user_id: String },
    /// Frees the email when `user_id` holds it (erasure); replies with the user id.
    Release { user_id: String },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum EmailIndexEvent {
    Claimed { user_id: String, at: Timestamp },
    Released { user_id: String, at: Timestamp },
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
        }
    }
}
