//! A user account: registration data, credentials and roles.
//!
//! The password hash is computed outside (Argon2id on a blocking pool) and arrives in the
//! command; the account only records it. Personal fields are held here until the identity work
//! moves them behind per-user encryption.

use crate::domain::audit::AuditDraft;
use crate::domain::ctx::Ctx;
use crate::domain::entity::{Decision, Entity};
use crate::domain::ids::EntityKind;
use crate::domain::time::{Date, Timestamp};
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    User,
    Support,
    Compliance,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Support => "support",
            Role::Compliance => "compliance",
            Role::Admin => "admin",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Profile {
    pub email: String,
    pub full_name: String,
    pub date_of_birth: Date,
    pub country: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Account {
    pub user_id: String,
    pub profile: Option<Profile>,
    pub password_hash: String,
    pub roles: Vec<Role>,
    pub created_at: Timestamp,
}

#[derive(Clone, Debug)]
pub enum AccountCommand {
    Register {
        profile: Profile,
        password_hash: String,
        roles: Vec<Role>,
    },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum AccountEvent {
    Registered {
        profile: Profile,
        password_hash: String,
        roles: Vec<Role>,
        at: Timestamp,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AccountRejection {
    AlreadyRegistered,
}

impl Account {
    pub fn exists(&self) -> bool {
        self.profile.is_some()
    }
}

impl Entity for Account {
    type Command = AccountCommand;
    type Event = AccountEvent;
    type Reply = ();
    type Rejection = AccountRejection;
    const KIND: EntityKind = EntityKind::Account;

    fn empty(id: &str) -> Self {
        Account {
            user_id: id.to_string(),
            profile: None,
            password_hash: String::new(),
            roles: Vec::new(),
            created_at: Timestamp(0),
        }
    }

    fn decide(&self, cmd: AccountCommand, ctx: &mut Ctx<'_>) -> Result<Decision<AccountEvent, ()>, AccountRejection> {
        match cmd {
            AccountCommand::Register { profile, password_hash, roles } => {
                if self.exists() {
                    ctx.audit(AuditDraft::refused("account.register", "email_taken"));
                    return Err(AccountRejection::AlreadyRegistered);
                }
                let role_list = roles.iter().map(|r| r.as_str()).collect::<Vec<_>>().join(",");
                ctx.audit(
                    AuditDraft::ok("account.register")
                        .detail("roles", role_list)
                        .detail("country", &profile.country),
                );
                Ok(Decision::new(
                    vec![AccountEvent::Registered {
                        profile,
                        password_hash,
                        roles,
                        at: ctx.now,
                    }],
                    (),
                ))
            }
        }
    }

    fn apply(&mut self, event: &AccountEvent) {
        match event {
            AccountEvent::Registered {
                profile,
                password_hash,
                roles,
                at,
            } => {
                self.profile = Some(profile.clone());
                self.password_hash = password_hash.clone();
                self.roles = roles.clone();
                self.created_at = *at;
            }
        }
    }

    fn check_invariants(&self) {
        if self.exists() {
            assert!(!self.roles.is_empty(), "account {} has no role", self.user_id);
            assert!(!self.password_hash.is_empty(), "account {} has no credential", self.user_id);
        }
    }
}
