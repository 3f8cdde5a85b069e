//! The refresh token as a cookie, for the web app: a page keeps its access token in memory
//! only, and the refresh token in a cookie no script can read (`HttpOnly`), sent only to the
//! token routes (`Path=/v1/auth`) and only by this site's own pages (`SameSite=Strict`);
//! `Secure` when the gateway serves TLS. A client opts in per login (`session_cookie: true`);
//! others get the refresh token in the body, as API.md says.
//!
//! Cross-site requests cannot use it: besides SameSite, the token routes take only
//! `application/json` bodies (a form cannot send one) and the gateway answers no CORS preflight.

use warp::http::header::{HeaderMap, HeaderValue, SET_COOKIE};

pub const NAME: &str = "moneta_refresh";

/// The refresh token from the request's `Cookie` header, if it carries ours.
pub fn read(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all("cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == NAME)
        .map(|(_, v)| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

/// Sets the cookie to `token` for `max_age_secs`.
pub fn set(headers: &mut HeaderMap, token: &str, max_age_secs: u64, secure: bool) {
    // Refresh tokens are URL-safe base64 and ids joined by dots: valid cookie octets.
    let value = format!(
        "{NAME}={token}; Path=/v1/auth; HttpOnly; SameSite=Strict; Max-Age={max_age_secs}{}",
        if secure { "; Secure" } else { "" }
    );
    if let Ok(v) = HeaderValue::from_str(&value) {
        headers.append(SET_COOKIE, v);
    }
}

/// Removes the cookie (sign-out, or a refresh token the server refused).
pub fn clear(headers: &mut HeaderMap, secure: bool) {
    let value = format!(
        "{NAME}=; Path=/v1/auth; HttpOnly; SameSite=Strict; Max-Age=0{}",
        if secure { "; Secure" } else { "" }
    );
    if let Ok(v) = HeaderValue::from_str(&value) {
        headers.append(SET_COOKIE, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_only_our_cookie_and_writes_a_strict_one() {
        let mut h = HeaderMap::new();
        h.insert("cookie", HeaderValue::from_static("a=1; moneta_refresh=rt1.usr_x.ses_y.abc ; b=2"));
        assert_eq!(read(&h).as_deref(), Some("rt1.usr_x.ses_y.abc"));
        h.insert("cookie", HeaderValue::from_static("moneta_refreshx=1; other=2"));
        assert_eq!(read(&h), None);
        let mut out = HeaderMap::new();
        set(&mut out, "rt1.a.b.c", 60, true);
        let v = out.get(SET_COOKIE).unwrap().to_str().unwrap();
        for part in [
            "moneta_refresh=rt1.a.b.c",
            "Path=/v1/auth",
            "HttpOnly",
            "SameSite=Strict",
            "Max-Age=60",
            "Secure",
        ] {
            assert!(v.contains(part), "{v}");
        }
        let mut out = HeaderMap::new();
        clear(&mut out, false);
        let v = out.get(SET_COOKIE).unwrap().to_str().unwrap();
        assert!(v.starts_with("moneta_refresh=;") && v.contains("Max-Age=0") && !v.contains("Secure"), "{v}");
    }
}
