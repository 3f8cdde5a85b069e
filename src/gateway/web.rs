//! The web app: the files under `web/`, embedded in the binary at build time, served at `/`
//! (the page) and `/app/{file}` (its scripts, styles and vendored libraries), and the security
//! headers every answer of the gateway carries (a strict Content-Security-Policy: no inline
//! script or style, no third-party origin, no framing).
//!
//! The app calls the public HTTP API only; nothing here reads state.

use crate::gateway::http::Reply;
use crate::gateway::problem::ApiError;
use bytes::Bytes;
use warp::http::header::{HeaderMap, HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use warp::http::{Response, StatusCode};

/// One embedded file.
pub struct Asset {
    pub name: &'static str,
    pub content_type: &'static str,
    pub body: &'static [u8],
}

macro_rules! asset {
    ($name:literal, $content_type:literal) => {
        Asset {
            name: $name,
            content_type: $content_type,
            body: include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/web/", $name)),
        }
    };
}

/// Every file of `web/` (a unit test checks the folder and this list agree).
pub const ASSETS: &[Asset] = &[
    asset!("index.html", "text/html; charset=utf-8"),
    asset!("app.css", "text/css; charset=utf-8"),
    asset!("favicon.svg", "image/svg+xml"),
    asset!("app.js", "text/javascript; charset=utf-8"),
    asset!("api.js", "text/javascript; charset=utf-8"),
    asset!("ui.js", "text/javascript; charset=utf-8"),
    asset!("words.js", "text/javascript; charset=utf-8"),
    asset!("charts.js", "text/javascript; charset=utf-8"),
    asset!("auth.js", "text/javascript; charset=utf-8"),
    asset!("onboarding.js", "text/javascript; charset=utf-8"),
    asset!("portfolio.js", "text/javascript; charset=utf-8"),
    asset!("market.js", "text/javascript; charset=utf-8"),
    asset!("advice.js", "text/javascript; charset=utf-8"),
    asset!("account.js", "text/javascript; charset=utf-8"),
    asset!("staff.js", "text/javascript; charset=utf-8"),
    asset!("uPlot.esm.js", "text/javascript; charset=utf-8"),
    asset!("uPlot.min.css", "text/css; charset=utf-8"),
    asset!("qrcode.mjs", "text/javascript; charset=utf-8"),
    asset!("THIRD-PARTY-NOTICES.txt", "text/plain; charset=utf-8"),
];

/// The policy of every answer. Scripts, styles, images and API calls come from this origin
/// only; images may also be `data:` (none are); nothing may frame the app, nor load plugins,
/// nor change the base URL; forms post nowhere else.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
     connect-src 'self'; font-src 'self'; manifest-src 'self'; form-action 'self'; base-uri 'none'; \
     frame-ancestors 'none'; object-src 'none'";

/// The headers every answer carries (API answers too: a JSON body opened in a browser tab is
/// not run, framed or sniffed as something else either).
pub fn secure(headers: &mut HeaderMap) {
    headers.insert("content-security-policy", HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    headers.insert("x-frame-options", HeaderValue::from_static("DENY"));
    headers.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    headers.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    headers.insert("cross-origin-opener-policy", HeaderValue::from_static("same-origin"));
    headers.insert(
        "permissions-policy",
        HeaderValue::from_static("camera=(), microphone=(), geolocation=(), payment=()"),
    );
}

/// GET /: the app's page.
pub fn index() -> Result<Reply, ApiError> {
    asset("index.html")
}

/// GET /app/{file}: one embedded file; 404 `not_found` for any other name.
pub fn asset(name: &str) -> Result<Reply, ApiError> {
    let Some(a) = ASSETS.iter().find(|a| a.name == name) else {
        return Err(ApiError::not_found(format!("no file {name} in the web app")));
    };
    let mut r = Response::new(Bytes::from_static(a.body));
    *r.status_mut() = StatusCode::OK;
    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(a.content_type));
    // Revalidated on every load: a node upgraded in place serves its own files at once.
    r.headers_mut().insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_of_the_web_folder_is_embedded_and_nothing_else() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/web");
        let mut on_disk: Vec<String> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        on_disk.sort();
        let mut listed: Vec<String> = ASSETS.iter().map(|a| a.name.to_string()).collect();
        listed.sort();
        assert_eq!(on_disk, listed);
        for a in ASSETS {
            assert!(!a.body.is_empty(), "{} is empty", a.name);
            if a.content_type.starts_with("text/javascript") {
                assert!(a.name.ends_with(".js") || a.name.ends_with(".mjs"), "{}", a.name);
            }
        }
    }

    #[test]
    fn the_page_loads_no_inline_script_or_style_and_nothing_from_another_origin() {
        let page = std::str::from_utf8(ASSETS[0].body).unwrap();
        assert!(!page.contains("style=") && !page.contains("<style"), "inline style in index.html");
        for tag in page.split("<script").skip(1) {
            assert!(tag.starts_with(r#" type="module" src="/app/"#), "an inline script in index.html: <script{tag}");
        }
        assert!(!page.contains("http://") && !page.contains("https://"), "a third-party origin in index.html");
        assert!(page.contains(r#"<script type="module" src="/app/app.js">"#));
        // Our own scripts (the vendored uPlot and qrcode are not ours to edit).
        for a in ASSETS.iter().filter(|a| a.name.ends_with(".js") && a.name != "uPlot.esm.js") {
            let text = std::str::from_utf8(a.body).unwrap();
            assert!(!text.contains("innerHTML") && !text.contains("insertAdjacentHTML"), "{} writes HTML", a.name);
            // No token in web storage or a script's cookie: the one thing kept in the browser is
            // the device id (auth.js), which is not a secret.
            assert!(
                !text.contains("sessionStorage") && !text.contains("document.cookie"),
                "{} stores in the browser",
                a.name
            );
            if a.name == "auth.js" {
                for use_ in text.split("localStorage.").skip(1) {
                    assert!(
                        use_.starts_with("getItem('moneta.device')") || use_.starts_with("setItem('moneta.device', id)"),
                        "auth.js: localStorage.{}",
                        &use_[..use_.len().min(40)]
                    );
                }
            } else {
                assert!(!text.contains("localStorage"), "{} uses localStorage", a.name);
            }
        }
    }
}
