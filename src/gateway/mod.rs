//! The warp HTTP gateway: one warp filter collects the request (with a 64 KiB body cap), then a
//! small explicit router dispatches on (method, route template). Every answer carries
//! `X-Request-Id`; every error is problem+json; every request is counted and timed per route.

pub mod attempts;
pub mod auth;
pub mod http;
pub mod limits;
pub mod malformed;
pub mod mfa;
pub mod openapi;
pub mod problem;
pub mod refresh_cookie;
pub mod routes;

pub mod server;
pub mod tls;
pub mod token_cache;
pub mod web;

use crate::gateway::auth::{Auth, Claims};
use crate::gateway::http::{problem_response, Reply, Req, MAX_BODY_BYTES};
use crate::gateway::limits::LoginGuard;
use crate::gateway::problem::ApiError;
use crate::telemetry::{RouteLabels, RouteLatencyLabels};
pub use crate::workflows::services::Services;
use bytes::{Buf, Bytes, BytesMut};
use futures_util::StreamExt;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;
use tracing::Instrument;
use warp::http::header::HeaderValue;
use warp::http::{HeaderMap, Method, StatusCode};
use warp::Filter;

/// How long a node trusts its last look at a session in its account (`AppState::session_live`).
pub const SESSION_RECHECK: std::time::Duration = std::time::Duration::from_secs(5);
/// How long a request waits for that look, for a session issued since this node started.
pub const SESSION_LOOKUP_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// What the gateway keeps of its own beside the node's services (which it derefs to).
pub struct AppState {
    pub services: Arc<Services>,
    pub auth: Auth,
    pub logins: LoginGuard,
    /// Sessions their account showed live → until when to trust that (`SESSION_RECHECK`).
    pub sessions_checked: std::sync::Mutex<std::collections::HashMap<String, Instant>>,
    /// When this node started (seconds since the epoch, as token `iat`s are).
    pub started_at_secs: i64,
    pub ready: AtomicBool,
    /// Every replica of this node caught up with its group's leader once since it started.
    pub caught_up: AtomicBool,
}

impl std::ops::Deref for AppState {
    type Target = Services;
    fn deref(&self) -> &Services {
        &self.services
    }
}

impl AppState {
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
    }
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }
    /// Verifies the bearer token once per request; 401 when missing or invalid.
    pub fn claims(&self, req: &Req) -> Result<Claims, ApiError> {
        if let Some(c) = req.claims.get() {
            return Ok(c.clone());
        }
        let c = self.verify_bearer(req)?;
        if let Some(sid) = &c.sid {
            let mut revoked = self.revoked_sessions.lock().expect("revoked sessions lock");
            if revoked.get(sid).is_some_and(|until| *until > Instant::now()) {
                return Err(ApiError::unauthorized("this session was logged out or revoked"));
            }
            if revoked.len() > 10_000 {
                let now = Instant::now();
                revoked.retain(|_, until| *until > now);
            }
        }
        let _ = req.claims.set(c.clone());
        Ok(c)
    }
    /// `revoked_sessions` knows the revocations this node made or was told of; not one made
    /// before it started, nor one whose broadcast it missed (cut off or stalled when another
    /// node logged the session out: the broadcast waits 2 s per member, then goes on). So a
    /// session is also looked up in the user's account, where revocation is durable, at most
    /// every `SESSION_RECHECK` — the longest a missed revocation is honoured here once the
    /// account can be reached — and 401 when it was revoked or is gone. A session issued before
    /// this node started must be found live (503 while its account cannot be reached); a later
    /// one whose account does not answer within `SESSION_LOOKUP_WAIT` is served as before the
    /// recheck existed (this node saw no revocation of it), so a request that does not touch
    /// the account — an operator's look at a cut-off node — does not wait on it.
    pub async fn session_live(&self, c: &Claims) -> Result<(), ApiError> {
        let Some(sid) = c.sid.as_deref() else { return Ok(()) };
        let now = Instant::now();
        if self
            .sessions_checked
            .lock()
            .expect("sessions checked lock")
            .get(sid)
            .is_some_and(|until| *until > now)
        {
            return Ok(());
        }
        let family = sid.to_string();
        let lookup = self
            .router
            .query::<crate::domain::account::Account, _>(&c.sub, crate::domain::queries::SessionRevoked { family });
        let revoked = if c.iat > self.started_at_secs {
            match tokio::time::timeout(SESSION_LOOKUP_WAIT, lookup).await {
                Ok(Ok(revoked)) => revoked,
                Ok(Err(e)) => {
                    tracing::debug!(error = ?e, "a session's account could not be looked up; served on this node's word");
                    false
                }
                Err(_) => false,
            }
        } else {
            lookup.await.map_err(routes::unavailable)?
        };
        if revoked {
            self.revoke_session(sid);
            return Err(ApiError::unauthorized("this session was logged out or revoked"));
        }
        let mut checked = self.sessions_checked.lock().expect("sessions checked lock");
        if checked.len() > 10_000 {
            checked.retain(|_, until| *until > now);
        }
        checked.insert(sid.to_string(), now + SESSION_RECHECK);
        Ok(())
    }
    fn verify_bearer(&self, req: &Req) -> Result<Claims, ApiError> {
        let h = req
            .header("authorization")
            .ok_or_else(|| ApiError::unauthorized("send Authorization: Bearer <access token>"))?;
        // The scheme is case-insensitive (RFC 9110 §11.1): `Bearer`, `bearer`, `BEARER`.
        let token = h
            .split_once(' ')
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token)
            .ok_or_else(|| ApiError::unauthorized("the Authorization header must be a Bearer token"))?;
        self.auth.verify(token.trim())
    }
}

/// The filter serving every route.
pub fn filter(state: Arc<AppState>) -> impl Filter<Extract = (warp::reply::Response,), Error = warp::Rejection> + Clone {
    warp::any()
        .and(warp::method())
        .and(warp::path::full())
        .and(warp::query::raw().or(warp::any().map(String::new)).unify())
        .and(warp::header::headers_cloned())
        .and(warp::addr::remote())
        .and(warp::ext::optional::<server::ClientAddr>())
        .map(|method, path, query, headers, remote: Option<SocketAddr>, ours: Option<server::ClientAddr>| {
            (method, path, query, headers, ours.map(|c| c.0).or(remote))
        })
        .untuple_one()
        .and(warp::body::stream())
        .then(
            move |method: Method, path: warp::path::FullPath, query: String, headers: HeaderMap, remote: Option<SocketAddr>, body| {
                let state = state.clone();
                async move { handle(state, method, path.as_str().to_string(), query, headers, remote, body).await }
            },
        )
}

async fn read_body<S, B>(headers: &HeaderMap, body: S) -> Result<Bytes, ApiError>
where
    S: futures_util::Stream<Item = Result<B, warp::Error>> + Unpin,
    B: Buf,
{
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("request bodies are limited to {MAX_BODY_BYTES} bytes"),
        )
    };
    if let Some(len) = headers.get("content-length").and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok()) {
        if len > MAX_BODY_BYTES as u64 {
            return Err(too_large());
        }
    }
    let mut body = body;
    let mut buf = BytesMut::new();
    while let Some(chunk) = body.next().await {
        let mut chunk = chunk.map_err(|_| ApiError::bad_request("the request body could not be read"))?;
        if buf.len() + chunk.remaining() > MAX_BODY_BYTES {
            return Err(too_large());
        }
        while chunk.has_remaining() {
            let part = chunk.chunk();
            buf.extend_from_slice(part);
            let n = part.len();
            chunk.advance(n);
        }
    }
    Ok(buf.freeze())
}

/// The id logs correlate a request by: the client's `X-Request-Id` when it is short and plain,
/// else the server's own request id. Only a log correlation id: the commands of a request carry
/// the server's request id, which no client can choose or repeat.
fn correlation_id(headers: &HeaderMap, request_id: &str) -> String {
    if let Some(v) = headers.get("x-request-id").and_then(|v| v.to_str().ok()) {
        if !v.is_empty() && v.len() <= 64 && v.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_' || c == b'.') {
            return v.to_string();
        }
    }
    request_id.to_string()
}

async fn handle<S, B>(
    state: Arc<AppState>,
    method: Method,
    path: String,
    query: String,
    headers: HeaderMap,
    remote: Option<SocketAddr>,
    body: S,
) -> warp::reply::Response
where
    S: futures_util::Stream<Item = Result<B, warp::Error>> + Unpin,
    B: Buf,
{
    let started = Instant::now();
    let rid = crate::actors::new_request_id();
    let correlation = correlation_id(&headers, &rid);
    let route = routes::template_of(&path);
    let span = tracing::info_span!("request", request_id = %rid, correlation_id = %correlation, method = %method, route = route.unwrap_or("unmatched"));
    let timeout = state.config.gateway.request_timeout;
    let result = async {
        // The body is read under the same bound as the request: a client that sends its body
        // slowly (or never) does not hold a connection and a task without end.
        let body = match tokio::time::timeout(timeout, read_body(&headers, body)).await {
            Ok(body) => body?,
            Err(_) => {
                return Err(ApiError::new(
                    StatusCode::REQUEST_TIMEOUT,
                    "request_timeout",
                    format!("the request body did not arrive within {} s", timeout.as_secs_f64()),
                ))
            }
        };
        let req = Req {
            method: method.clone(),
            path: path.clone(),
            query,
            headers,
            body,
            request_id: rid.clone(),
            remote,
            claims: std::sync::OnceLock::new(),
        };
        let result = match tokio::time::timeout(timeout, routes::dispatch(&state, route, &req)).await {
            Ok(r) => r,
            Err(_) => Err(ApiError::unavailable(
                "the request took too long; retry it (a write with the same Idempotency-Key)",
            )),
        };
        if let Err(e) = &result {
            // Failed logins are audited by the login route itself (with the lockout logic).
            if (e.status == StatusCode::UNAUTHORIZED || e.status == StatusCode::FORBIDDEN) && route != Some("/v1/auth/login") {
                audit_denied(&state, &req, route, e).await;
            }
        }
        result
    }
    .instrument(span.clone())
    .await;
    let mut reply: Reply = match result {
        Ok(r) => r,
        Err(e) => problem_response(&e),
    };
    web::secure(reply.headers_mut());
    reply.headers_mut().insert(
        "x-request-id",
        HeaderValue::from_str(&correlation).unwrap_or(HeaderValue::from_static("invalid")),
    );
    match reply.status() {
        StatusCode::METHOD_NOT_ALLOWED => {
            if let Some(Ok(allow)) = route.map(|t| HeaderValue::from_str(&routes::allowed_methods(t))) {
                reply.headers_mut().insert("allow", allow);
            }
        }
        // The rest of an oversized or late body was not read: close rather than parse it as a
        // request.
        StatusCode::PAYLOAD_TOO_LARGE | StatusCode::REQUEST_TIMEOUT => {
            reply.headers_mut().insert("connection", HeaderValue::from_static("close"));
        }
        _ => {}
    }
    let status = reply.status().as_u16();
    let route_label = route.unwrap_or("unmatched").to_string();
    let method_label = method_label(&method);
    let elapsed = started.elapsed();
    state
        .metrics
        .http_requests
        .get_or_create(&RouteLabels {
            method: method_label.to_string(),
            route: route_label.clone(),
            status,
        })
        .inc();
    state
        .metrics
        .http_latency
        .get_or_create(&RouteLatencyLabels {
            method: method_label.to_string(),
            route: route_label,
        })
        .observe(elapsed.as_secs_f64());
    span.in_scope(|| tracing::info!(status, latency_us = elapsed.as_micros() as u64, "request served"));
    let (parts, body) = reply.into_parts();
    warp::reply::Response::from_parts(parts, body.into())
}

/// The method as a metric label: a client can send any token as a method, and each would be a
/// new series, so methods HTTP does not define are counted as one, `OTHER`.
fn method_label(method: &Method) -> &'static str {
    const KNOWN: [&str; 9] = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE"];
    KNOWN.into_iter().find(|m| *m == method.as_str()).unwrap_or("OTHER")
}

/// Every denied request (401, 403) is an audit record and a security event. It is queued, not
/// waited for: an unauthenticated caller must not make the node wait on the disk.
async fn audit_denied(state: &AppState, req: &Req, route: Option<&'static str>, e: &ApiError) {
    let actor = req.claims.get().map(|c| c.sub.clone()).unwrap_or_else(|| "anonymous".into());
    let mut draft = crate::domain::audit::AuditDraft::refused("security.access_denied", e.code)
        .detail("method", req.method.as_str())
        .detail("route", route.unwrap_or("unmatched"))
        .detail("status", e.status.as_u16());
    if let Some(ip) = req.remote {
        draft = draft.detail("address", ip.ip());
    }
    let meta = crate::actors::RequestMeta {
        request_id: req.request_id.clone(),
        actor,
    };
    if let Err(err) = state.router.audit(draft, "gateway", &meta, false).await {
        tracing::error!(error = %err, "could not record a denied request");
    }
}

/// The set of methods each route template answers (for 405 and the OpenAPI document).
pub fn route_inventory() -> BTreeSet<(&'static str, &'static str)> {
    routes::ROUTES.iter().map(|r| (r.method, r.template)).collect()
}
