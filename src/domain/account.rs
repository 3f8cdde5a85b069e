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

/// Passwords that are refused even when long enough (a bundled list of common choices).
const COMMON_PASSWORDS: &str = include_str!("common_passwords.txt");
pub const PASSWORD_MIN_CHARS: usize = 12;
/// Investors must be adults.
pub const MIN_AGE_YEARS: i32 = 18;

/// Why registration data is not acceptable.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProfileError {
    #[error("email is not a valid address")]
    InvalidEmail,
    #[error("full_name must be 1–200 characters without control characters")]
    InvalidName,
    #[error("date_of_birth must be a real date written YYYY-MM-DD")]
    InvalidDateOfBirth,
    #[error("date_of_birth is not plausible")]
    ImplausibleDateOfBirth,
    #[error("investors must be 18 or older")]
    Underage,
    #[error("country must be an ISO 3166-1 alpha-2 code such as \"GB\"")]
    InvalidCountry,
}

/// Lower-cases and trims an email and checks its shape (not deliverability).
pub fn normalise_email(raw: &str) -> Option<String> {
    let e = raw.trim().to_lowercase();
    if e.len() > 254 || e.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return None;
    }
    let (local, domain) = e.split_once('@')?;
    let ok = !local.is_empty() && local.len() <= 64 && !domain.contains('@') && domain.contains('.') && !domain.starts_with('.') && !domain.ends_with('.');
    ok.then_some(e)
}

/// Under 12 characters, on the bundled list of common passwords, or one repeated character.
pub fn is_weak_password(p: &str) -> bool {
    if p.chars().count() < PASSWORD_MIN_CHARS {
        return true;
    }
    let lower = p.to_lowercase();
    COMMON_PASSWORDS.lines().map(str::trim).any(|c| !c.is_empty() && c == lower) || p.chars().all(|c| c == p.chars().next().unwrap_or(' '))
}

/// Completed years between `dob` and `today`.
pub fn age_years(dob: Date, today: Date) -> i32 {
    today.year - dob.year - i32::from((today.month, today.day) < (dob.month, dob.day))
}

/// Checks and normalises what a person registers with; `today` comes from the caller's clock.
pub fn validate_registration(email: &str, full_name: &str, date_of_birth: &str, country: &str, today: Date) -> Result<Profile, ProfileError> {
    let email = normalise_email(email).ok_or(ProfileError::InvalidEmail)?;
    let name = full_name.trim();
    if name.is_empty() || name.chars().count() > 200 || name.chars().any(char::is_control) {
        return Err(ProfileError::InvalidName);
    }
    let dob = Date::parse(date_of_birth).ok_or(ProfileError::InvalidDateOfBirth)?;
    let age = age_years(dob, today);
    if dob >= today || age > 130 {
        return Err(ProfileError::ImplausibleDateOfBirth);
    }
    if age < MIN_AGE_YEARS {
        return Err(ProfileError::Underage);
    }
    if country.len() != 2 || !country.bytes().all(|c| c.is_ascii_uppercase()) {
        return Err(ProfileError::InvalidCountry);
    }
    Ok(Profile {
        email,
        full_name: name.to_string(),
        date_of_birth: dob,
        country: country.to_string(),
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn email_and_password_rules() {
        assert_eq!(normalise_email("  Ada@Example.COM "), Some("ada@example.com".into()));
        assert_eq!(normalise_email("no-at-sign"), None);
        assert_eq!(normalise_email("a@b"), None);
        assert_eq!(normalise_email("a b@example.com"), None);
        assert!(is_weak_password("short"));
        assert!(is_weak_password("password1234"));
        assert!(is_weak_password("aaaaaaaaaaaaaaaa"));
        assert!(!is_weak_password("correct horse battery staple"));
    }

    #[test]
    fn registration_rules() {
        let today = Date::parse("2026-11-22").unwrap();
        let ok = validate_registration("A@example.com", " Ada ", "1990-12-10", "GB", today).unwrap();
        assert_eq!((ok.email.as_str(), ok.full_name.as_str()), ("a@example.com", "Ada"));
        assert_eq!(
            validate_registration("a@example.com", "Ada", "2008-11-23", "GB", today),
            Err(ProfileError::Underage)
        );
        assert!(validate_registration("a@example.com", "Ada", "2008-11-22", "GB", today).is_ok());
        assert_eq!(
            validate_registration("a@example.com", "Ada", "2030-01-01", "GB", today),
            Err(ProfileError::ImplausibleDateOfBirth)
        );
        assert_eq!(
            validate_registration("a@example.com", "Ada", "1990-02-30", "GB", today),
            Err(ProfileError::InvalidDateOfBirth)
        );
        assert_eq!(
            validate_registration("a@example.com", "", "1990-01-01", "GB", today),
            Err(ProfileError::InvalidName)
        );
        assert_eq!(
            validate_registration("a@example.com", "Ada", "1990-01-01", "gb", today),
            Err(ProfileError::InvalidCountry)
        );
    }
}
