//! Request plumbing shared by every route: the request context, strict JSON bodies, the
//! idempotency key and request fingerprint, and JSON responses.

use crate::gateway::problem::ApiError;
use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Serialize;
use warp::http::header::{HeaderMap, HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use warp::http::{Method, Response, StatusCode};

/// Request bodies larger than this are refused with 413 (API.md).
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Idempotency keys: 1–128 visible ASCII characters.
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 128;

pub type Reply = Response<Bytes>;

/// One request as the routes see it.
pub struct Req {
    pub method: Method,
    pub path: String,
    pub query: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub request_id: String,
    /// The client's address (absent when the transport does not say).
    pub remote: Option<std::net::SocketAddr>,
    /// The verified access token, once a route asked for it.
    pub claims: std::sync::OnceLock<crate::gateway::auth::Claims>,
}

impl Req {
    /// Parses the body as JSON into `T` (which denies unknown fields). A body that is not
    /// declared `application/json` (parameters allowed) is a 415 `unsupported_media_type`;
    /// any other problem is a 400.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, ApiError> {
        if self.body.is_empty() {
            return Err(ApiError::bad_request("a JSON body is required"));
        }
        if !is_json_media_type(self.header("content-type")) {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "the body must be sent as Content-Type: application/json (UTF-8)",
            ));
        }
        // Every body of the API is an object; serde's derive would also fill a struct from a
        // JSON array by position, which `deny_unknown_fields` does not stop.
        if self.body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return Err(ApiError::bad_request("the JSON body must be an object"));
        }
        serde_json::from_slice(&self.body).map_err(|e| ApiError::bad_request(format!("invalid JSON body: {}", describe_json_error(&e))))
    }

    /// For a request that takes no fields: no body, or a JSON object with none (`{}`). Any
    /// field is unknown (400 `invalid_request`), as on every other route.
    pub fn no_fields(&self) -> Result<(), ApiError> {
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct NoFields {}
        if self.body.iter().all(u8::is_ascii_whitespace) {
            return Ok(());
        }
        self.json::<NoFields>().map(|NoFields {}| ())
    }

    /// The `Idempotency-Key` header, validated.
    pub fn idempotency_key(&self) -> Result<String, ApiError> {
        let Some(v) = self.headers.get("idempotency-key") else {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "idempotency_key_required",
                "this request moves money or creates an order: send an Idempotency-Key header",
            ));
        };
        let s = v.to_str().map_err(|_| ApiError::bad_request("Idempotency-Key must be visible ASCII"))?;
        if s.is_empty() || s.len() > MAX_IDEMPOTENCY_KEY_LEN || !s.bytes().all(|c| c.is_ascii_graphic()) {
            return Err(ApiError::bad_request("Idempotency-Key must be 1–128 visible ASCII characters"));
        }
        Ok(s.to_string())
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn query_param(&self, name: &str) -> Option<String> {
        url_query_pairs(&self.query).into_iter().find(|(k, _)| k == name).map(|(_, v)| v)
    }
}

/// True for `application/json`, with or without parameters (`; charset=utf-8`), in any case.
pub fn is_json_media_type(content_type: Option<&str>) -> bool {
    let Some(v) = content_type else { return false };
    let mut parts = v.split(';');
    let json = parts.next().is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"));
    // JSON is UTF-8 (RFC 8259): a body declared in another charset would be read as other text
    // than the client meant, so it is refused rather than read as UTF-8.
    let charset_ok = parts.all(|p| match p.split_once('=') {
        Some((name, value)) if name.trim().eq_ignore_ascii_case("charset") => value.trim().trim_matches('"').eq_ignore_ascii_case("utf-8"),
        _ => true,
    });
    json && charset_ok
}

/// serde_json messages name the problem and position; keep them, they contain no secrets
/// beyond what the client sent.
fn describe_json_error(e: &serde_json::Error) -> String {
    let msg = e.to_string();
    if msg.len() > 300 {
        // The message repeats what the client sent (a field name, a string): cut it at a
        // character boundary, never inside one (that panicked the handler, and the client got
        // no answer at all).
        let end = (0..=300).rev().find(|&i| msg.is_char_boundary(i)).unwrap_or(0);
        format!("{}…", &msg[..end])
    } else {
        msg
    }
}

pub(crate) fn url_query_pairs(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

pub(crate) fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => match u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("zz"), 16) {
                Ok(v) => {
                    out.push(v);
                    i += 2;
                }
                Err(_) => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A digest of what a request asked: method, route and the canonical form of its parsed body.
/// The same key with another fingerprint is `idempotency_key_reused`.
pub fn fingerprint<T: Serialize>(method: &Method, route: &str, body: &T) -> [u8; 32] {
    crate::domain::fingerprint::request_fingerprint(method.as_str(), route, body)
}

pub fn json_response<T: Serialize>(status: StatusCode, value: &T) -> Reply {
    let body = serde_json::to_vec(value).expect("serialising a response");
    let mut r = Response::new(Bytes::from(body));
    *r.status_mut() = status;
    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

/// A JSON response that carries personal data: never cached.
pub fn private_json<T: Serialize>(status: StatusCode, value: &T) -> Reply {
    let mut r = json_response(status, value);
    r.headers_mut().insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

pub fn text_response(status: StatusCode, content_type: &'static str, body: String) -> Reply {
    let mut r = Response::new(Bytes::from(body));
    *r.status_mut() = status;
    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

pub fn empty_response(status: StatusCode) -> Reply {
    let mut r = Response::new(Bytes::new());
    *r.status_mut() = status;
    r
}

pub fn problem_response(e: &ApiError) -> Reply {
    let mut r = Response::new(Bytes::from(e.body()));
    *r.status_mut() = e.status;
    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
    r.headers_mut().insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Some(s) = e.retry_after {
        r.headers_mut().insert("retry-after", HeaderValue::from(s));
    }
    if e.status == StatusCode::UNAUTHORIZED {
        // A 401 names the scheme that would be accepted (RFC 9110 §15.5.2, RFC 6750 §3).
        r.headers_mut().insert("www-authenticate", HeaderValue::from_static("Bearer realm=\"moneta\""));
    }
    if let Some(secure) = e.clear_refresh_cookie {
        crate::gateway::refresh_cookie::clear(r.headers_mut(), secure);
    }
    r
}

/// 204 with no body.
pub fn no_content() -> Reply {
    let mut r = Response::new(Bytes::new());
    *r.status_mut() = StatusCode::NO_CONTENT;
    r.headers_mut().insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_application_json_is_a_json_body() {
        for ok in ["application/json", "application/json; charset=utf-8", "Application/JSON ;charset=UTF-8"] {
            assert!(is_json_media_type(Some(ok)), "{ok}");
        }
        for bad in [
            "text/plain",
            "application/xml",
            "application/x-www-form-urlencoded",
            "application/jsonx",
            "",
            "application/json; charset=latin1",
            "application/json; charset=utf-16",
        ] {
            assert!(!is_json_media_type(Some(bad)), "{bad}");
        }
        assert!(!is_json_media_type(None));
    }

    /// serde's message repeats the client's field name; cut at byte 300 inside a character it
    /// panicked the handler (no answer at all). Every offset of the cut is tried.
    #[test]
    fn a_long_error_about_non_ascii_input_is_cut_between_characters() {
        #[derive(Debug, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)]
        struct Body {
            amount: Option<String>,
        }
        for pad in 0..4 {
            let name = format!("{}{}", "x".repeat(pad), "é".repeat(200));
            let e = serde_json::from_str::<Body>(&format!("{{\"{name}\":1}}")).unwrap_err();
            let d = describe_json_error(&e);
            assert!(d.ends_with('…') && d.len() <= 300 + '…'.len_utf8(), "{d}");
        }
    }

    #[test]
    fn query_decoding() {
        assert_eq!(
            url_query_pairs("a=1&b=x%20y&c"),
            vec![("a".into(), "1".into()), ("b".into(), "x y".into()), ("c".into(), "".into())]
        );
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
    }
}
