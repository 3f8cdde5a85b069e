//! The route table and dispatch. `ROUTES` is the single inventory: the dispatcher, the 405
//! answers and `/openapi.json` all read it, so a route cannot exist without being documented.

pub mod advice;
pub mod gdpr;
pub mod identity;
mod kyc_review;
mod market;
mod onboarding;
mod portfolio;
mod public;
mod staff;

use crate::actors::RequestMeta;
use crate::domain::account::Role;
use crate::gateway::http::{Reply, Req};
use crate::gateway::problem::ApiError;
use crate::gateway::AppState;
use utoipa::openapi::{RefOr, Schema};
use utoipa::ToSchema;
use warp::http::StatusCode;

pub struct RouteSpec {
    pub method: &'static str,
    pub template: &'static str,
    pub summary: &'static str,
    /// The roles that may call it; empty = public (no token).
    pub roles: &'static [Role],
    pub idempotent_key: bool,
    /// The JSON schema of the request body (derived from the struct the handler parses).
    pub body: Option<BodySchema>,
    /// Optional query parameters: name, what it takes, and its JSON schema.
    pub query: &'static [QueryParam],
}

/// A query parameter: name, description, JSON schema (as JSON text).
pub type QueryParam = (&'static str, &'static str, &'static str);

/// A request body's component name and JSON schema.
pub type BodySchema = fn() -> (String, RefOr<Schema>);

fn schema_of<T: ToSchema>() -> (String, RefOr<Schema>) {
    (T::name().into_owned(), T::schema())
}

impl RouteSpec {
    const fn body(mut self, f: BodySchema) -> RouteSpec {
        self.body = Some(f);
        self
    }

    const fn query(mut self, params: &'static [QueryParam]) -> RouteSpec {
        self.query = params;
        self
    }

    pub fn auth(&self) -> bool {
        !self.roles.is_empty()
    }
}

const PUBLIC: &[Role] = &[];
const ANY: &[Role] = &[Role::User, Role::Support, Role::Compliance, Role::Admin];
const USER: &[Role] = &[Role::User];
const SUPPORT: &[Role] = &[Role::Support];
const COMPLIANCE: &[Role] = &[Role::Compliance];
const ADMIN: &[Role] = &[Role::Admin];
const OVERSIGHT: &[Role] = &[Role::Admin, Role::Compliance];

/// The `limit` of the audit-log listings.
const LIMIT: &[QueryParam] = &[(
    "limit",
    "how many, newest first (default 100)",
    r#"{"type":"integer","minimum":1,"maximum":1000}"#,
)];
const DATE_TIME: &str = r#"{"type":"string","format":"date-time"}"#;

const fn r(method: &'static str, template: &'static str, summary: &'static str, roles: &'static [Role], idempotent_key: bool) -> RouteSpec {
    RouteSpec {
        method,
        template,
        summary,
        roles,
        idempotent_key,
        body: None,
        query: &[],
    }
}

pub const ROUTES: &[RouteSpec] = &[
    r("GET", "/", "The web app (investors and staff)", PUBLIC, false),
    r("GET", "/app/{file}", "The web app's scripts, styles and vendored libraries", PUBLIC, false),
    r("GET", "/healthz", "Liveness: the node is up", PUBLIC, false),
    r("GET", "/readyz", "Readiness: 200 when the node can serve, 503 otherwise", PUBLIC, false),
    r("GET", "/metrics", "Prometheus metrics", PUBLIC, false),
    r("GET", "/openapi.json", "This OpenAPI document", PUBLIC, false),
    r("GET", "/.well-known/jwks.json", "Public keys that verify access tokens", PUBLIC, false),
    r("POST", "/v1/auth/register", "Register a user account", PUBLIC, false).body(schema_of::<identity::RegisterBody>),
    r(
        "POST",
        "/v1/auth/login",
        "Log in with email, password and (when enrolled) a TOTP code",
        PUBLIC,
        false,
    )
    .body(schema_of::<identity::LoginBody>),
    r(
        "POST",
        "/v1/auth/refresh",
        "Exchange a refresh token for a new pair (the old one is spent)",
        PUBLIC,
        false,
    )
    .body(schema_of::<identity::RefreshBody>),
    r("POST", "/v1/auth/logout", "Revoke the caller's refresh-token family", ANY, false),
    r("GET", "/v1/me", "The caller's profile", ANY, false),
    r("DELETE", "/v1/me", "Erase the caller's personal data after the grace period", USER, false),
    r("GET", "/v1/me/export", "Everything held about the caller (format=json|csv)", USER, false).query(&[(
        "format",
        "json (default) or csv",
        r#"{"type":"string","enum":["json","csv"]}"#,
    )]),
    r("POST", "/v1/me/mfa/totp", "Start TOTP enrolment (active once confirmed)", ANY, false),
    r("POST", "/v1/me/mfa/totp/confirm", "Confirm TOTP enrolment with a code", ANY, false).body(schema_of::<identity::CodeBody>),
    r(
        "GET",
        "/v1/me/notifications",
        "The caller's notifications (new devices), newest first",
        ANY,
        false,
    ),
    r("PUT", "/v1/me/consents", "Set the caller's consents", USER, false).body(schema_of::<onboarding::ConsentsBody>),
    r(
        "POST",
        "/v1/me/kyc",
        "Submit identity documents for verification (and sanctions screening)",
        USER,
        false,
    )
    .body(schema_of::<onboarding::KycBody>),
    r(
        "POST",
        "/v1/me/suitability",
        "Answer the suitability and appropriateness questionnaire",
        USER,
        false,
    )
    .body(schema_of::<onboarding::SuitabilityBody>),
    r(
        "GET",
        "/v1/fees",
        "The fee schedule and the broker's slippage every order is charged (for the cost estimate before an order)",
        PUBLIC,
        false,
    ),
    r("GET", "/v1/instruments", "Listed instruments with their latest prices", PUBLIC, false),
    r("GET", "/v1/instruments/{symbol}", "One instrument", PUBLIC, false),
    r(
        "GET",
        "/v1/instruments/{symbol}/history",
        "Price history: daily closes, then minute bars for the last day (from, to: RFC 3339)",
        PUBLIC,
        false,
    )
    .query(&[
        ("from", "RFC 3339 UTC time; default: a day before `to`", DATE_TIME),
        ("to", "RFC 3339 UTC time; default: now", DATE_TIME),
    ]),
    r(
        "GET",
        "/v1/instruments/{symbol}/quote",
        "What a market order would cost or bring now: fill price (slippage), notional, fees, total",
        PUBLIC,
        false,
    )
    .query(&[
        ("side", "buy or sell", r#"{"type":"string","enum":["buy","sell"]}"#),
        ("quantity", "units, a decimal string", r#"{"type":"string"}"#),
    ]),
    r("GET", "/v1/portfolio", "The caller's portfolio valued at the latest prices", USER, false),
    r("POST", "/v1/portfolio/deposits", "Deposit cash", USER, true).body(schema_of::<portfolio::AmountBody>),
    r("POST", "/v1/portfolio/withdrawals", "Withdraw cash", USER, true).body(schema_of::<portfolio::AmountBody>),
    r("GET", "/v1/portfolio/transactions", "Cash movements, newest first", USER, false),
    r(
        "GET",
        "/v1/portfolio/performance",
        "Time-weighted return and value series (?period=1d|1m|1y|all)",
        USER,
        false,
    )
    .query(&[("period", "the period; default 1m", r#"{"type":"string","enum":["1d","1m","1y","all"]}"#)]),
    r("GET", "/v1/portfolio/statements", "Daily statements, newest first", USER, false),
    r("GET", "/v1/portfolio/statements/{date}", "One day's statement", USER, false),
    r(
        "POST",
        "/v1/orders",
        "Place a market order (compliance rules, then filled at the latest price)",
        USER,
        true,
    )
    .body(schema_of::<portfolio::OrderBody>),
    r("GET", "/v1/orders", "The caller's orders, newest first", USER, false),
    r("GET", "/v1/orders/{order_id}", "One of the caller's orders", USER, false),
    r("GET", "/v1/advice", "The caller's current AI-generated advice", USER, false),
    r(
        "POST",
        "/v1/advice/{advice_id}/accept",
        "Accept advice: its orders go through the order path",
        USER,
        true,
    ),
    r("GET", "/v1/compliance/review-queue", "Advice held for human review", COMPLIANCE, false),
    r(
        "POST",
        "/v1/compliance/review-queue/{advice_id}",
        "Approve or reject held advice",
        COMPLIANCE,
        false,
    )
    .body(schema_of::<ReviewBody>),
    r(
        "GET",
        "/v1/support/users/{user_id}",
        "Support's limited view of a user (X-Access-Reason required; audited)",
        SUPPORT,
        false,
    ),
    r(
        "GET",
        "/v1/compliance/screening-hits",
        "Screening results that were not clear, newest first",
        COMPLIANCE,
        false,
    )
    .query(LIMIT),
    r(
        "POST",
        "/v1/compliance/screening/{user_id}",
        "Resolve a user's potential sanctions match",
        COMPLIANCE,
        false,
    )
    .body(schema_of::<staff::ResolveBody>),
    r(
        "GET",
        "/v1/compliance/kyc-reviews",
        "People whose identity documents wait for a compliance decision, oldest first",
        COMPLIANCE,
        false,
    ),
    r(
        "POST",
        "/v1/compliance/kyc-reviews/{user_id}",
        "Approve or reject identity documents in review",
        COMPLIANCE,
        false,
    )
    .body(schema_of::<ReviewBody>),
    r(
        "POST",
        "/v1/compliance/sanctions/reload",
        "Reload the sanctions list and re-screen every user",
        OVERSIGHT,
        false,
    ),
    r(
        "GET",
        "/v1/compliance/reports/daily",
        "The day's trades, rejections, screening hits, erasures and advice (date=YYYY-MM-DD)",
        COMPLIANCE,
        false,
    )
    .query(&[("date", "the UTC day; default today", r#"{"type":"string","format":"date"}"#)]),
    r("GET", "/v1/admin/audit/verify", "Verify the audit hash chain", OVERSIGHT, false),
    r("GET", "/v1/admin/security-events", "Security events, newest first", ADMIN, false).query(LIMIT),
    r(
        "GET",
        "/v1/cluster",
        "Members, shard groups (leader, replicas, term, indexes) and moves",
        ADMIN,
        false,
    ),
    r(
        "POST",
        "/v1/cluster/nodes/{node_id}/decommission",
        "Move every replica and leadership off a node, then remove it (it exits)",
        ADMIN,
        false,
    ),
    r("POST", "/v1/admin/instruments", "List a new instrument", ADMIN, false).body(schema_of::<market::NewInstrumentBody>),
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

/// The value of path segment `i` (0 = the empty string before the first slash), decoded.
fn segment(req: &Req, i: usize) -> String {
    crate::gateway::http::percent_decode(req.path.split('/').nth(i).unwrap_or_default())
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
    // Authorization from the route table: a valid token (401), then a permitted role (403).
    if let Some(spec) = ROUTES.iter().find(|r| r.method == method && r.template == template) {
        if spec.auth() {
            let claims = state.claims(req)?;
            state.session_live(&claims).await?;
            if !claims.roles.iter().any(|role| spec.roles.contains(role)) {
                return Err(ApiError::forbidden("your role may not do this"));
            }
        }
        // A parameter of the route given twice (`period=1d&period=all`) has no one meaning:
        // refused rather than the first one taken.
        if !spec.query.is_empty() {
            let pairs = crate::gateway::http::url_query_pairs(&req.query);
            if let Some((name, _, _)) = spec.query.iter().find(|(name, _, _)| pairs.iter().filter(|(k, _)| k == name).count() > 1) {
                return Err(ApiError::bad_request(format!("the query parameter `{name}` is given more than once")));
            }
        }
    }
    if matches!(template, "/v1/auth/register" | "/v1/auth/login" | "/v1/auth/refresh") && method == "POST" {
        if let Err(secs) = state.logins.admit(req.remote.map(|a| a.ip())) {
            let mut e = ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", "too many requests from this address; slow down");
            e.retry_after = Some(secs);
            return Err(e);
        }
    }
    match (method, template) {
        ("GET", "/") => crate::gateway::web::index(),
        ("GET", "/app/{file}") => crate::gateway::web::asset(&last_segment(req)),
        ("GET", "/healthz") => public::healthz(state),
        ("GET", "/readyz") => public::readyz(state),
        ("GET", "/metrics") => public::metrics(state, req),
        ("GET", "/openapi.json") => public::openapi(),
        ("GET", "/.well-known/jwks.json") => public::jwks(state).await,
        ("POST", "/v1/auth/register") => identity::register(state, req).await,
        ("POST", "/v1/auth/login") => identity::login(state, req).await,
        ("POST", "/v1/auth/refresh") => identity::refresh(state, req).await,
        ("POST", "/v1/auth/logout") => identity::logout(state, req).await,
        ("GET", "/v1/me") => identity::me(state, req).await,
        ("DELETE", "/v1/me") => gdpr::delete_me(state, req).await,
        ("GET", "/v1/me/export") => gdpr::export(state, req).await,
        ("POST", "/v1/me/mfa/totp") => identity::totp_enrol(state, req).await,
        ("POST", "/v1/me/mfa/totp/confirm") => identity::totp_confirm(state, req).await,
        ("GET", "/v1/me/notifications") => identity::notifications(state, req).await,
        ("PUT", "/v1/me/consents") => onboarding::put_consents(state, req).await,
        ("POST", "/v1/me/kyc") => onboarding::submit_kyc(state, req).await,
        ("POST", "/v1/me/suitability") => onboarding::suitability(state, req).await,
        ("GET", "/v1/advice") => advice::get(state, req).await,
        ("POST", "/v1/advice/{advice_id}/accept") => advice::accept(state, req, &segment(req, 3)).await,
        ("GET", "/v1/compliance/review-queue") => advice::review_queue(state, req).await,
        ("POST", "/v1/compliance/review-queue/{advice_id}") => advice::review(state, req, &last_segment(req)).await,
        ("GET", "/v1/support/users/{user_id}") => staff::support_user(state, req, &last_segment(req)).await,
        ("GET", "/v1/compliance/screening-hits") => staff::screening_hits(state, req).await,
        ("POST", "/v1/compliance/screening/{user_id}") => staff::resolve_screening(state, req, &last_segment(req)).await,
        ("GET", "/v1/compliance/kyc-reviews") => kyc_review::list(state, req).await,
        ("POST", "/v1/compliance/kyc-reviews/{user_id}") => kyc_review::decide(state, req, &last_segment(req)).await,
        ("POST", "/v1/compliance/sanctions/reload") => staff::reload_sanctions(state, req).await,
        ("GET", "/v1/compliance/reports/daily") => staff::daily_report(state, req).await,
        ("GET", "/v1/admin/audit/verify") => staff::audit_verify(state, req).await,
        ("GET", "/v1/admin/security-events") => staff::security_events(state, req).await,
        ("GET", "/v1/cluster") => staff::cluster(state, req).await,
        ("POST", "/v1/cluster/nodes/{node_id}/decommission") => staff::decommission(state, req, &segment(req, 4)).await,
        ("POST", "/v1/admin/instruments") => market::create(state, req).await,
        ("GET", "/v1/fees") => market::fees(state),
        ("GET", "/v1/instruments") => market::list(state).await,
        ("GET", "/v1/instruments/{symbol}") => market::one(state, &last_segment(req)).await,
        ("GET", "/v1/instruments/{symbol}/history") => market::history(state, req, &segment(req, 3)).await,
        ("GET", "/v1/instruments/{symbol}/quote") => market::order_quote(state, req, &segment(req, 3)).await,
        ("GET", "/v1/portfolio") => portfolio::view(state, req).await,
        ("POST", "/v1/portfolio/deposits") => portfolio::deposit(state, req).await,
        ("POST", "/v1/portfolio/withdrawals") => portfolio::withdraw(state, req).await,
        ("GET", "/v1/portfolio/transactions") => portfolio::transactions(state, req).await,
        ("GET", "/v1/portfolio/performance") => portfolio::performance(state, req).await,
        ("GET", "/v1/portfolio/statements") => portfolio::statements(state, req).await,
        ("GET", "/v1/portfolio/statements/{date}") => portfolio::statement(state, req, &last_segment(req)).await,
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
pub(crate) fn unavailable(e: impl std::fmt::Display) -> ApiError {
    let text = e.to_string();
    if text.contains(crate::domain::envelope::CORRUPT_MARK) {
        // Damage on disk: retrying cannot help, so it is not a 503.
        tracing::error!(error = %text, "a stored record does not read");
        return ApiError::new(
            warp::http::StatusCode::INTERNAL_SERVER_ERROR,
            "corrupt_record",
            "a stored record this request needs does not read; it has been logged for the operator, and retrying will not help",
        );
    }
    tracing::error!(error = %text, "entity unavailable");
    ApiError::unavailable("the service is temporarily unavailable; retry it (a write with the same Idempotency-Key)")
}

/// A staff decision's body (advice review, KYC review): `{decision: "approve"|"reject", note}`.
#[derive(serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReviewBody {
    /// "approve" or "reject".
    decision: String,
    /// Why: required, 1–1000 characters.
    #[schema(required = true)]
    note: Option<String>,
}

/// Reads a staff decision from the request's body: whether it approves, and its note.
pub(crate) fn review_of(req: &Req) -> Result<(bool, String), ApiError> {
    let b: ReviewBody = req.json()?;
    let approve = match b.decision.as_str() {
        "approve" => true,
        "reject" => false,
        _ => return Err(ApiError::bad_request("decision must be approve or reject")),
    };
    Ok((approve, decision_note(b.note)?))
}

/// A staff decision's note (advice review, screening resolution): required, the reason kept in
/// the audit trail and the daily report, 1–1000 characters, no control characters but line
/// breaks and tabs.
pub(crate) fn decision_note(note: Option<String>) -> Result<String, ApiError> {
    let note = note.unwrap_or_default();
    if !crate::domain::account::has_visible_text(&note) {
        return Err(ApiError::bad_request("note is required: the reason for the decision, kept in the audit trail"));
    }
    if note.chars().count() > 1000 {
        return Err(ApiError::bad_request("note is limited to 1000 characters"));
    }
    if note.chars().any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t')) {
        return Err(ApiError::bad_request("note holds a control character"));
    }
    // A note is read in the audit trail: an override would make it show as other text.
    if note.chars().any(crate::domain::account::is_bidi_control) {
        return Err(ApiError::bad_request("note holds a bidirectional-control character"));
    }
    Ok(note)
}

/// Who asked, under which request id (travels with the command into the audit trail).
pub(crate) fn meta(req: &Req, actor: &str) -> RequestMeta {
    RequestMeta {
        request_id: req.request_id.clone(),
        actor: actor.to_string(),
    }
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
