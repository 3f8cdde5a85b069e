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
//! A request hyper cannot parse is answered with problem+json (`gateway::malformed`).
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
        let service = hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
            req.extensions_mut().insert(ClientAddr(peer));
            hyper::service::Service::call(&service, req)
        });
        let watcher = graceful.watcher();
        let builder = builder.clone();
        let acceptor = acceptor.clone();
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let result = match acceptor {
                None => {
                    watcher
                        .watch(
                            builder
                                .serve_connection_with_upgrades(TokioIo::new(ProblemOnMalformed::new(tcp, Some(metrics))), service)
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
                            builder
                                .serve_connection_with_upgrades(TokioIo::new(ProblemOnMalformed::new(stream, Some(metrics))), service)
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
