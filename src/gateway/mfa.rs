//! TOTP (RFC 6238) with `totp-rs`: SHA-1, 6 digits, 30-second steps, one step of clock skew
//! either way. `check` returns the matched time step; the account refuses a step it has already
//! accepted, so each code works once.

use totp_rs::{Builder, Secret};

/// 160-bit secrets, as RFC 4226 recommends.
pub const SECRET_BYTES: usize = 20;

pub fn new_secret() -> Vec<u8> {
    let mut b = vec![0u8; SECRET_BYTES];
    aws_lc_rs::rand::fill(&mut b).expect("system randomness");
    b
}

pub fn base32(secret: &[u8]) -> String {
    Secret::from(secret.to_vec()).to_base32()
}

fn totp(secret: &[u8]) -> Option<totp_rs::Totp> {
    Builder::new().with_secret(secret.to_vec()).build().ok()
}

/// The time step a code is valid for at `now_secs`, if it is valid.
pub fn check(secret: &[u8], code: &str, now_secs: u64) -> Option<u64> {
    let code = code.trim();
    if code.len() != 6 || !code.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    totp(secret)?.check(code, now_secs)
}

/// The code for `now_secs` (tests and tools).
pub fn code_at(secret: &[u8], now_secs: u64) -> Option<String> {
    Some(totp(secret)?.generate(now_secs).to_string())
}

fn uri_escape(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'@' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The `otpauth://` URI authenticator apps read (Key Uri Format).
pub fn otpauth_uri(issuer: &str, account: &str, secret_b32: &str) -> String {
    let (i, a) = (uri_escape(issuer), uri_escape(account));
    format!("otpauth://totp/{i}:{a}?secret={secret_b32}&issuer={i}&algorithm=SHA1&digits=6&period=30")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc6238_vector_and_steps() {
        // RFC 6238 appendix B, SHA-1 secret "12345678901234567890", T = 59 → 94287082 (8 digits);
        // the 6-digit code is its last six digits.
        let secret = b"12345678901234567890";
        assert_eq!(code_at(secret, 59).unwrap(), "287082");
        assert_eq!(check(secret, "287082", 59), Some(1));
        // One step of skew is accepted, two are not.
        assert!(check(secret, "287082", 89).is_some());
        assert!(check(secret, "287082", 150).is_none());
        assert!(check(secret, "28708", 59).is_none());
        assert!(check(secret, "abcdef", 59).is_none());
    }

    #[test]
    fn uri_shape() {
        let u = otpauth_uri("Moneta", "ada@example.com", "ABC");
        assert_eq!(
            u,
            "otpauth://totp/Moneta:ada@example.com?secret=ABC&issuer=Moneta&algorithm=SHA1&digits=6&period=30"
        );
    }
}
