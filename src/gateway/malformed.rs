//! A request hyper cannot parse gets problem+json like every other refusal.
//!
//! hyper answers such a request itself, before any route runs: a control byte or a space in a
//! header, a request line that is not `METHOD target HTTP/1.x`, two or a non-numeric
//! `Content-Length`, a target or headers past what it reads. Its answer is a bare status line
//! with `content-length: 0`, and the connection is closed. The gateway's contract is that every
//! error is `application/problem+json` with a stable `code`, so [`ProblemOnMalformed`] sits
//! between hyper and the connection (under TLS, on the plaintext side) and replaces that one
//! answer with the same status as a problem:
//! - 400 `malformed_request`;
//! - 414 `uri_too_long`;
//! - 431 `headers_too_large`.
//!
//! hyper's answer is recognised by its shape: a whole response head written alone, status 400,
//! 414 or 431, `content-length: 0` and no `content-type`. Every answer of the gateway's own
//! routes carries a `content-type`, so none of them matches. Each replaced answer is counted in
//! `moneta_http_requests_total{method="OTHER",route="malformed",status=…}`.

use crate::gateway::problem::ApiError;
use crate::telemetry::{Metrics, RouteLabels};
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use warp::http::{HeaderMap, StatusCode};

/// The connection's IO with hyper's bare answers to malformed requests replaced.
pub struct ProblemOnMalformed<T> {
    inner: T,
    /// A replacement answer and how much of it is written.
    pending: Vec<u8>,
    written: usize,
    metrics: Option<Arc<Metrics>>,
}

impl<T> ProblemOnMalformed<T> {
    pub fn new(inner: T, metrics: Option<Arc<Metrics>>) -> ProblemOnMalformed<T> {
        ProblemOnMalformed {
            inner,
            pending: Vec::new(),
            written: 0,
            metrics,
        }
    }
}

/// Counts a malformed request answered `status`, in
/// `moneta_http_requests_total{method="OTHER",route="malformed"}`.
pub fn count(metrics: &Metrics, status: u16) {
    metrics
        .http_requests
        .get_or_create(&RouteLabels {
            method: "OTHER".into(),
            route: "malformed".into(),
            status,
        })
        .inc();
}

/// If `buf` is hyper's own answer to a request it could not parse (a response head alone,
/// status 400, 414 or 431, `content-length: 0`, no `content-type`), its status.
pub fn bare_answer_status(buf: &[u8]) -> Option<u16> {
    let rest = buf.strip_prefix(b"HTTP/1.1 ")?;
    let digits = rest.get(..3)?;
    if !digits.iter().all(u8::is_ascii_digit) || rest.get(3) != Some(&b' ') {
        return None;
    }
    let status = digits.iter().fold(0u16, |n, d| n * 10 + u16::from(d - b'0'));
    if !matches!(status, 400 | 414 | 431) {
        return None;
    }
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    if end + 4 != buf.len() {
        return None;
    }
    let head = &buf[..end + 2];
    let has = |line: &[u8]| head.windows(line.len()).any(|w| w.eq_ignore_ascii_case(line));
    (has(b"\r\ncontent-length: 0\r\n") && !has(b"\r\ncontent-type:")).then_some(status)
}

/// The problem+json answer that replaces hyper's bare `head` of `status`: same status, its
/// `date` line kept, the connection closed.
pub fn problem_answer(status: u16, head: &[u8]) -> Vec<u8> {
    let (code, detail) = match status {
        414 => ("uri_too_long", "the request target is longer than the server reads"),
        431 => ("headers_too_large", "the request's headers are larger than the server reads"),
        _ => (
            "malformed_request",
            "the request is not well-formed HTTP/1.1 (its request line, a header's name or value, or its Content-Length); nothing was done",
        ),
    };
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
    let body = ApiError::new(status, code, detail).body();
    let mut out = Vec::with_capacity(1024 + body.len());
    out.extend_from_slice(format!("HTTP/1.1 {} {}\r\n", status.as_u16(), status.canonical_reason().unwrap_or("Error")).as_bytes());
    out.extend_from_slice(b"content-type: application/problem+json\r\ncache-control: no-store\r\nconnection: close\r\n");
    out.extend_from_slice(format!("content-length: {}\r\n", body.len()).as_bytes());
    // Every answer carries an `X-Request-Id` (API.md), this one too.
    out.extend_from_slice(format!("x-request-id: {}\r\n", crate::actors::new_request_id()).as_bytes());
    let mut headers = HeaderMap::new();
    crate::gateway::web::secure(&mut headers);
    for (name, value) in &headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    for line in head.split(|b| *b == b'\n') {
        if line.len() > 5 && line[..5].eq_ignore_ascii_case(b"date:") {
            out.extend_from_slice(line);
            out.push(b'\n');
        }
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&body);
    out
}

impl<T: AsyncWrite + Unpin> ProblemOnMalformed<T> {
    /// Writes what is left of a replacement answer.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.written < self.pending.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.pending[self.written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
        }
        self.pending = Vec::new();
        self.written = 0;
        Poll::Ready(Ok(()))
    }

    /// Takes `buf` in place of hyper's bare answer when it is one: true if it was.
    fn replace(&mut self, buf: &[u8]) -> bool {
        let Some(status) = bare_answer_status(buf) else {
            return false;
        };
        self.pending = problem_answer(status, buf);
        self.written = 0;
        if let Some(m) = &self.metrics {
            count(m, status);
        }
        tracing::debug!(status, "a request hyper could not parse was answered with a problem");
        true
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for ProblemOnMalformed<T> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for ProblemOnMalformed<T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        if this.replace(buf) {
            // The whole of hyper's answer counts as written; the replacement goes out here or
            // in the flush or shutdown that follows.
            let _ = this.poll_drain(cx)?;
            return Poll::Ready(Ok(buf.len()));
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        let mut full = bufs.iter().filter(|b| !b.is_empty());
        if let (Some(only), None) = (full.next(), full.next()) {
            if this.replace(only) {
                let _ = this.poll_drain(cx)?;
                return Poll::Ready(Ok(only.len()));
            }
        }
        Pin::new(&mut this.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BARE: &[u8] = b"HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\ndate: Mon, 07 Dec 2026 12:27:52 GMT\r\n\r\n";

    #[test]
    fn hypers_bare_answers_are_recognised_and_nothing_else() {
        assert_eq!(bare_answer_status(BARE), Some(400));
        let too_large = b"HTTP/1.1 431 Request Header Fields Too Large\r\nconnection: close\r\ncontent-length: 0\r\n\r\n";
        assert_eq!(bare_answer_status(too_large), Some(431));
        // The gateway's own problems carry a content-type.
        let ours = b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/problem+json\r\ncontent-length: 0\r\n\r\n";
        assert_eq!(bare_answer_status(ours), None);
        // Another status, a body after the head, a head not ended, a response of HTTP/1.0.
        assert_eq!(bare_answer_status(b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n"), None);
        assert_eq!(bare_answer_status(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\nx"), None);
        assert_eq!(bare_answer_status(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n"), None);
        assert_eq!(bare_answer_status(b"HTTP/1.0 400 Bad Request\r\ncontent-length: 0\r\n\r\n"), None);
        assert_eq!(bare_answer_status(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 01\r\n\r\n"), None);
        assert_eq!(bare_answer_status(b"{\"a\":1}"), None);
        assert_eq!(bare_answer_status(b""), None);
    }

    #[test]
    fn the_replacement_is_a_problem_with_a_stable_code_and_keeps_the_date() {
        let out = problem_answer(400, BARE);
        let text = String::from_utf8(out).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 400 Bad Request\r\n"));
        assert!(head.contains("\r\ncontent-type: application/problem+json\r\n"));
        assert!(head.contains("\r\nconnection: close\r\n"));
        assert!(head.contains("\r\nx-request-id: req_"), "{head}");
        assert!(head.contains("\r\ndate: Mon, 07 Dec 2026 12:27:52 GMT"));
        assert!(head.contains(&format!("\r\ncontent-length: {}\r\n", body.len())));
        let problem: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(problem["code"], "malformed_request");
        assert_eq!(problem["status"], 400);
        let problem: serde_json::Value = serde_json::from_str(String::from_utf8(problem_answer(431, b"")).unwrap().split_once("\r\n\r\n").unwrap().1).unwrap();
        assert_eq!(problem["code"], "headers_too_large");
    }

    #[tokio::test]
    async fn a_bare_answer_written_in_pieces_or_vectored_leaves_as_the_problem() {
        use tokio::io::AsyncWriteExt;
        let mut io = ProblemOnMalformed::new(Vec::<u8>::new(), None);
        io.write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}")
            .await
            .unwrap();
        let n = io.write_vectored(&[io::IoSlice::new(b""), io::IoSlice::new(BARE)]).await.unwrap();
        assert_eq!(n, BARE.len());
        io.shutdown().await.unwrap();
        let text = String::from_utf8(io.inner).unwrap();
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"));
        let second = &text[text.find("{}").unwrap() + 2..];
        assert!(
            second.starts_with("HTTP/1.1 400 Bad Request\r\ncontent-type: application/problem+json"),
            "{second}"
        );
        assert!(second.ends_with('}'));
    }
}
