//! What a person registers with: the profile's rules (email shape, password strength, age).

use super::*;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Profile {
    pub email: String,
    pub full_name: String,
    /// Staff accounts carry no date of birth or country.
    pub date_of_birth: Option<Date>,
    pub country: Option<String>,
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
    // NFKC first, then lower case: `ａｌｉｃｅ@example.com` (fullwidth) is `alice@example.com`,
    // so one person cannot hold two accounts under two spellings of one address.
    use unicode_normalization::UnicodeNormalization;
    let e = raw.trim().nfkc().collect::<String>().to_lowercase();
    // Invisible characters (a zero-width space, a soft hyphen) survive NFKC: refused, or
    // `a\u{200B}@example.com` would be a second account for `a@example.com`.
    // (The blank Braille pattern and the replacement characters show nothing meant either.)
    let blank = |c: char| matches!(c, '\u{2800}' | '\u{FFFC}' | '\u{FFFD}');
    if e.len() > 254
        || e.chars()
            .any(|c| c.is_whitespace() || c.is_control() || is_bidi_control(c) || is_default_ignorable(c) || blank(c))
    {
        return None;
    }
    let (local, domain) = e.split_once('@')?;
    let ok = !local.is_empty() && local.len() <= 64 && !domain.contains('@') && domain.contains('.') && !domain.starts_with('.') && !domain.ends_with('.');
    ok.then_some(e)
}

/// Bidirectional embedding, override and isolate controls (U+202A–U+202E, U+2066–U+2069):
/// they make a name display as other text than it is, so names and emails refuse them.
pub fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// Unicode's default-ignorable code points (DerivedCoreProperties: `Default_Ignorable_Code_Point`):
/// characters that display as nothing — zero-width spaces and joiners, the soft hyphen,
/// direction marks, variation selectors, tags, the byte-order mark.
pub fn is_default_ignorable(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{034F}'
            | '\u{061C}'
            | '\u{115F}'..='\u{1160}'
            | '\u{17B4}'..='\u{17B5}'
            | '\u{180B}'..='\u{180F}'
            | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{206F}'
            | '\u{3164}'
            | '\u{FE00}'..='\u{FE0F}'
            | '\u{FEFF}'
            | '\u{FFA0}'
            | '\u{FFF0}'..='\u{FFF8}'
            | '\u{1BCA0}'..='\u{1BCA3}'
            | '\u{1D173}'..='\u{1D17A}'
            | '\u{E0000}'..='\u{E0FFF}'
    )
}

/// Whether `text` shows anything: a character that is neither white space nor invisible.
pub fn has_visible_text(text: &str) -> bool {
    // (U+2800, the blank Braille pattern, is a letter to Unicode but shows nothing.)
    text.chars()
        .any(|c| !c.is_whitespace() && !c.is_control() && !is_default_ignorable(c) && c != '\u{2800}')
}

/// A name shown to people (a person's, an instrument's): 1–200 characters once trimmed, no
/// control or bidirectional-control characters, and something visible (a zero-width space
/// alone is not a name; joiners inside a name are, as some scripts write with them).
pub fn is_plain_name(name: &str) -> bool {
    let name = name.trim();
    has_visible_text(name) && name.chars().count() <= 200 && !name.chars().any(|c| c.is_control() || is_bidi_control(c))
}

/// The longest password accepted (Argon2id hashes whatever it is given; a limit on everything).
pub const PASSWORD_MAX_BYTES: usize = 1024;

/// Why a password is refused: a stable code and a sentence for the person, or `None`.
pub fn password_problem(password: &str) -> Option<(&'static str, String)> {
    if password.len() > PASSWORD_MAX_BYTES {
        return Some(("invalid_request", "password is too long".to_string()));
    }
    if is_weak_password(password) {
        return Some((
            "weak_password",
            format!("use at least {PASSWORD_MIN_CHARS} characters and not a common password"),
        ));
    }
    None
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
    if !is_plain_name(full_name) {
        return Err(ProfileError::InvalidName);
    }
    let name = full_name.trim();
    let dob = Date::parse(date_of_birth).ok_or(ProfileError::InvalidDateOfBirth)?;
    let age = age_years(dob, today);
    if dob >= today || age > 130 {
        return Err(ProfileError::ImplausibleDateOfBirth);
    }
    if age < MIN_AGE_YEARS {
        return Err(ProfileError::Underage);
    }
    if !super::countries::is_assigned(country) {
        return Err(ProfileError::InvalidCountry);
    }
    Ok(Profile {
        email,
        full_name: name.to_string(),
        date_of_birth: Some(dob),
        country: Some(country.to_string()),
    })
}
