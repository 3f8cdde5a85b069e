//! The gateway's accept loop, for plain HTTP and HTTPS alike: `hyper-util` serves each
//! connection with the warp filter, `tokio-rustls` terminates TLS when it is configured.
//!
//! warp's own server has no limit on how long a client may take to send its request headers,
//! nor on how many connections it holds, so a client that trickles its headers holds a
//! connection (and a graceful stop) for ever. Here:
//! - a request's headers must arrive within [`HEADER_READ_TIMEOUT`] of the connection turning
//!   to read them (hyper closes the connection otherwise; an idle keep-alive connection is
//!   closed after the same time);
//! - a TLS handshake must end within [`HANDSHAKE_TIMEOUT`];
//! - at most [`MAX_CONNECTIONS`] connections are served at once; past that the listener stops
//!   accepting (the kernel's backlog holds the rest) until one closes.
//!
//! A request hyper cannot parse is answered with problem+json (`gateway::malformed`), and so
//! is one whose target is not a path (`a:1`, `CONNECT host:443`: the authority form, which
//! warp cannot route).
//!
//! The gateway speaks HTTP/1.1 only, plain and under TLS (ALPN offers `http/1.1` alone):
//! hyper's HTTP/2 server has no header or idle timeout, so silent HTTP/2 connections would
//! hold every connection slot. No connection waits for its first bytes without the header
//! timeout: a client that connects and sends nothing is closed after [`HEADER_READ_TIMEOUT`].
//!
//! The client address travels in a request extension ([`ClientAddr`]) because
//! `warp::addr::remote()` is empty outside warp's own server.

use crate::gateway::malformed::ProblemOnMalformed;
use crate::telemetry::Metrics;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;

/// How long a client may take to send a request's headers, and how long an idle keep-alive
/// connection stays open.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a client may take to complete the TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The most connections served at once.
pub const MAX_CONNECTIONS: usize = 16_384;

/// Whether a request's target can be routed: origin form (`/path?query`) or absolute form
/// (`http://host/path`), not the authority form (`host:port`) nor `*`.
fn routable(uri: &warp::http::Uri) -> bool {
    uri.path_and_query().is_some_and(|pq| pq.path().starts_with('/'))
}

/// The answer to a request whose target is not a path: 400 `malformed_request`, counted with
/// the requests hyper could not parse.
fn unroutable(metrics: &Metrics) -> warp::reply::Response {
    let e = crate::gateway::problem::ApiError::new(
        warp::http::StatusCode::BAD_REQUEST,
        "malformed_request",
        "the request target must be a path (`/v1/...`); nothing was done",
    );
    crate::gateway::malformed::count(metrics, 400);
    let mut reply = crate::gateway::http::problem_response(&e);
    crate::gateway::web::secure(reply.headers_mut());
    if let Ok(id) = warp::http::HeaderValue::from_str(&crate::actors::new_request_id()) {
        reply.headers_mut().insert("x-request-id", id);
    }
    reply.headers_mut().insert("connection", warp::http::HeaderValue::from_static("close"));
    let (parts, body) = reply.into_parts();
    warp::reply::Response::from_parts(parts, body.into())
}

/// The client's address, set on every request by the accept loop.
#[derive(Clone, Copy, Debug)]
pub struct ClientAddr(pub SocketAddr);

/// Accepts connections until `stop` fires, then lets in-flight requests finish (bounded by
/// `grace`). With `tls`, every connection is a TLS one.
pub async fn serve<F>(
    listener: tokio::net::TcpListener,
    tls: Option<Arc<ServerConfig>>,
    filter: F,
    metrics: Arc<Metrics>,
    stop: tokio::sync::oneshot::Receiver<()>,
    grace: Duration,
) where
    F: warp::Filter<Extract = (warp::reply::Response,), Error = warp::Rejection> + Clone + Send + Sync + 'static,
{
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    use hyper_util::server::conn::auto::Builder;
    use hyper_util::server::graceful::GracefulShutdown;

    let acceptor = tls.map(TlsAcceptor::from);
    let graceful = GracefulShutdown::new();
    let mut builder = Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(HEADER_READ_TIMEOUT);
    // The version is settled before hyper reads (no protocol sniffing), so no connection waits
    // for its first bytes outside the header timeout.
    let http1 = builder.http1_only();
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    tokio::pin!(stop);
    loop {
        let slot = tokio::select! {
            _ = &mut stop => break,
            slot = slots.clone().acquire_owned() => slot.expect("the connection semaphore is never closed"),
        };
        let (tcp, peer) = tokio::select! {
            _ = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "gateway listener accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let service = hyper_util::service::TowerToHyperService::new(warp::service(filter.clone()));
        let counted = metrics.clone();
        let service = hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
            use futures_util::future::{ready, Either};
            if !routable(req.uri()) {
                return Either::Left(ready(Ok(unroutable(&counted))));
            }
            req.extensions_mut().insert(ClientAddr(peer));
            Either::Right(hyper::service::Service::call(&service, req))
        });
        let watcher = graceful.watcher();
        let http1 = http1.clone();
        let acceptor = acceptor.clone();
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let result = match acceptor {
                None => {
                    watcher
                        .watch(
                            http1
                                .serve_connection(TokioIo::new(ProblemOnMalformed::new(tcp, Some(metrics))), service)
                                .into_owned(),
                        )
                        .await
                }
                Some(acceptor) => {
                    let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => {
                            tracing::debug!(error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => return,
                    };
                    watcher
                        .watch(
                            http1
                                .serve_connection(TokioIo::new(ProblemOnMalformed::new(stream, Some(metrics))), service)
                                .into_owned(),
                        )
                        .await
                }
            };
            if let Err(e) = result {
                tracing::debug!(error = %e, "gateway connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(grace, graceful.shutdown()).await.is_err() {
        tracing::warn!("gateway connections still open after the grace period");
    }
}
