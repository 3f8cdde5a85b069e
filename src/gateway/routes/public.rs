//! Public routes: health, readiness, metrics, the OpenAPI document and the JWKS.

use crate::gateway::http::{json_response, text_response, Reply, Req};
use crate::gateway::problem::ApiError;
use crate::gateway::AppState;
use warp::http::StatusCode;

pub fn healthz(state: &AppState) -> Result<Reply, ApiError> {
    Ok(json_response(StatusCode::OK, &serde_json::json!({"status": "ok", "node_id": state.node_id})))
}

pub fn readyz(state: &AppState) -> Result<Reply, ApiError> {
    if !state.caught_up.load(std::sync::atomic::Ordering::SeqCst) {
        Err(ApiError::unavailable("the node is joining its cluster or catching up with it"))
    } else if !state.router.hears_majority() {
        Err(ApiError::unavailable("the node is cut off from a majority of its cluster"))
    } else if state.is_ready() && !state.router.journal().is_failed() {
        Ok(json_response(StatusCode::OK, &serde_json::json!({"status": "ready"})))
    } else {
        Err(ApiError::unavailable("the node is starting or shutting down"))
    }
}

/// The metrics in Prometheus's text format (0.0.4), or in OpenMetrics when the scraper asks
/// for it (`Accept: application/openmetrics-text`, as Prometheus itself does).
pub fn metrics(state: &AppState, req: &Req) -> Result<Reply, ApiError> {
    let openmetrics = req.header("accept").is_some_and(asks_openmetrics);
    let text = state.metrics.encode();
    Ok(if openmetrics {
        text_response(StatusCode::OK, "application/openmetrics-text; version=1.0.0; charset=utf-8", text)
    } else {
        text_response(
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            crate::telemetry::prometheus_text(&text),
        )
    })
}

/// Whether an `Accept` header asks for OpenMetrics: it names it, with a quality above zero.
fn asks_openmetrics(accept: &str) -> bool {
    accept.split(',').any(|entry| {
        let mut parts = entry.split(';').map(str::trim);
        parts.next().is_some_and(|t| t.eq_ignore_ascii_case("application/openmetrics-text"))
            && !parts.any(|p| p.strip_prefix("q=").and_then(|q| q.parse::<f32>().ok()).is_some_and(|q| q <= 0.0))
    })
}

pub fn openapi() -> Result<Reply, ApiError> {
    Ok(json_response(StatusCode::OK, &crate::gateway::openapi::document()))
}

pub async fn jwks(state: &AppState) -> Result<Reply, ApiError> {
    // Every member's keys, as the metadata group holds them (a token from any node verifies);
    // a node without a replica of it asks a member.
    let members = state.router.metadata().await.map(|m| m.verification_keys()).unwrap_or_default();
    Ok(json_response(StatusCode::OK, &state.auth.jwks_with(&members)))
}

#[cfg(test)]
mod tests {
    #[test]
    fn openmetrics_is_served_only_when_asked_for_with_a_quality_above_zero() {
        use super::asks_openmetrics as asks;
        assert!(asks("application/openmetrics-text; version=1.0.0,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"));
        assert!(asks("Application/OpenMetrics-Text"));
        assert!(!asks("application/openmetrics-text;q=0,text/plain"));
        assert!(!asks("text/plain"));
        assert!(!asks("*/*"));
    }
}
