//! The route table and dispatch. `ROUTES` is the single inventory: the dispatcher, the 405
//! answers and `/openapi.json` all read it, so a route cannot exist without being documented.

mod identity;
mod market;
mod portfolio;
mod public;

use crate::gateway::http::{Reply, Req};
use crate::gateway::problem::ApiError;
use crate::gateway::AppState;
use warp::http::StatusCode;

pub struct RouteSpec {
    pub method: &'static str,
    pub template: &'static str,
    pub summary: &'static str,
    pub auth: bool,
    pub idempotent_key: bool,
}

const fn r(method: &'static str, template: &'static str, summary: &'static str, auth: bool, idempotent_key: bool) -> RouteSpec {
    RouteSpec {
        method,
        template,
        summary,
        auth,
        idempotent_key,
    }
}

pub const ROUTES: &[RouteSpec] = &[
    r("GET", "/healthz", "Liveness: the node is up", false, false),
    r("GET", "/readyz", "Readiness: 200 when the node can serve, 503 otherwise", false, false),
    r("GET", "/metrics", "Prometheus metrics", false, false),
    r("GET", "/openapi.json", "This OpenAPI document", false, false),
    r("GET", "/.well-known/jwks.json", "Public keys that verify access tokens", false, false),
    r("POST", "/v1/auth/register", "Register a user account", false, false),
    r("POST", "/v1/auth/login", "Log in with email and password", false, false),
    r("GET", "/v1/me", "The caller's profile", true, false),
    r("GET", "/v1/instruments", "Listed instruments with their latest prices", false, false),
    r("GET", "/v1/instruments/{symbol}", "One instrument", false, false),
    r("GET", "/v1/portfolio", "The caller's portfolio valued at the latest prices", true, false),
    r("POST", "/v1/portfolio/deposits", "Deposit cash", true, true),
    r("POST", "/v1/portfolio/withdrawals", "Withdraw cash", true, true),
    r("GET", "/v1/portfolio/transactions", "Cash movements, newest first", true, false),
    r("POST", "/v1/orders", "Place a market order (filled at the latest price)", true, true),
    r("GET", "/v1/orders", "The caller's orders, newest first", true, false),
    r("GET", "/v1/orders/{order_id}", "One of the caller's orders", true, false),
];

/// The route template a path matches (whatever the method). Allocation-free: runs per request.
pub fn template_of(path: &str) -> Option<&'static str> {
    let path = path.trim_start_matches('/');
    ROUTES.iter().map(|r| r.template).find(|t| {
        let (mut ts, mut ps) = (t.trim_start_matches('/').split('/'), path.split('/'));
        loop {
            match (ts.next(), ps.next()) {
                (None, None) => return true,
                (Some(t), Some(s)) if (t.starts_with('{') && !s.is_empty()) || t == s => {}
                _ => return false,
            }
        }
    })
}

/// The value of the last path segment (the one `{…}` parameter our routes have), decoded.
fn last_segment(req: &Req) -> String {
    crate::gateway::http::percent_decode(req.path.rsplit('/').next().unwrap_or_default())
}

/// The methods a route template answers, for the `Allow` header of a 405.
pub fn allowed_methods(template: &str) -> String {
    let mut methods: Vec<&str> = ROUTES.iter().filter(|r| r.template == template).map(|r| r.method).collect();
    if methods.contains(&"GET") {
        methods.push("HEAD");
    }
    methods.join(", ")
}

pub async fn dispatch(state: &AppState, template: Option<&'static str>, req: &Req) -> Result<Reply, ApiError> {
    let Some(template) = template else {
        return Err(ApiError::not_found(format!("no route for {}", req.path)));
    };
    // HEAD is GET without a body (hyper leaves the body out).
    let method = if req.method == warp::http::Method::HEAD { "GET" } else { req.method.as_str() };
    match (method, template) {
        ("GET", "/healthz") => public::healthz(state),
        ("GET", "/readyz") => public::readyz(state),
        ("GET", "/metrics") => public::metrics(state),
        ("GET", "/openapi.json") => public::openapi(),
        ("GET", "/.well-known/jwks.json") => public::jwks(state),
        ("POST", "/v1/auth/register") => identity::register(state, req).await,
        ("POST", "/v1/auth/login") => identity::login(state, req).await,
        ("GET", "/v1/me") => identity::me(state, req).await,
        ("GET", "/v1/instruments") => market::list(state).await,
        ("GET", "/v1/instruments/{symbol}") => market::one(state, &last_segment(req)).await,
        ("GET", "/v1/portfolio") => portfolio::view(state, req).await,
        ("POST", "/v1/portfolio/deposits") => portfolio::deposit(state, req).await,
        ("POST", "/v1/portfolio/withdrawals") => portfolio::withdraw(state, req).await,
        ("GET", "/v1/portfolio/transactions") => portfolio::transactions(state, req).await,
        ("POST", "/v1/orders") => portfolio::place_order(state, req).await,
        ("GET", "/v1/orders") => portfolio::orders(state, req).await,
        ("GET", "/v1/orders/{order_id}") => portfolio::order(state, req, &last_segment(req)).await,
        _ => {
            let allowed: Vec<&str> = ROUTES.iter().filter(|r| r.template == template).map(|r| r.method).collect();
            let mut e = ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                format!("{template} accepts {}", allowed.join(", ")),
            );
            e.retry_after = None;
            Err(e)
        }
    }
}

/// Maps router failures onto 503 (the detail is logged, not shown: it may name internals).
fn unavailable(e: impl std::fmt::Display) -> ApiError {
    tracing::error!(error = %e, "entity unavailable");
    ApiError::unavailable("the service is temporarily unavailable; retry with the same Idempotency-Key")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_match_whole_paths_only() {
        assert_eq!(template_of("/v1/orders"), Some("/v1/orders"));
        assert_eq!(template_of("/v1/orders/ord_1"), Some("/v1/orders/{order_id}"));
        assert_eq!(template_of("/v1/orders/"), None);
        assert_eq!(template_of("/v1/orders/a/b"), None);
        assert_eq!(template_of("/v1/instruments/ACME"), Some("/v1/instruments/{symbol}"));
        assert_eq!(template_of("/nope"), None);
        assert_eq!(allowed_methods("/v1/orders"), "POST, GET, HEAD");
    }
}
