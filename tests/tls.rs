//! HTTPS: the node started with a certificate and key (here a self-signed certificate made for
//! the test) speaks TLS on its listener, serves the API over it, and refuses plain HTTP there.

use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore};

struct Node(Child);

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One HTTP/1.1 request over TLS; returns the raw response text.
fn https(port: u16, roots: &RootCertStore, request: &str) -> std::io::Result<String> {
    let config = ClientConfig::builder().with_root_certificates(roots.clone()).with_no_client_auth();
    let mut conn =
        tokio_rustls::rustls::ClientConnection::new(Arc::new(config), ServerName::try_from("localhost").unwrap().to_owned()).map_err(std::io::Error::other)?;
    let mut tcp = std::net::TcpStream::connect(("127.0.0.1", port))?;
    tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut tls = tokio_rustls::rustls::Stream::new(&mut conn, &mut tcp);
    tls.write_all(request.as_bytes())?;
    let mut out = Vec::new();
    match tls.read_to_end(&mut out) {
        Ok(_) => {}
        // A peer that closes without close_notify after the response is fine for this test.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !out.is_empty() => {}
        Err(e) => return Err(e),
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

#[path = "common/ports.rs"]
mod ports;

#[test]
fn the_gateway_serves_https_with_a_configured_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let cert_path = dir.path().join("cert.pem");
    let key_path = dir.path().join("key.pem");
    std::fs::write(&cert_path, certified.cert.pem()).unwrap();
    std::fs::write(&key_path, certified.signing_key.serialize_pem()).unwrap();
    let mut roots = RootCertStore::empty();
    roots.add(CertificateDer::from(certified.cert.der().to_vec())).unwrap();

    let port = ports::free_port();
    let log = std::fs::File::create(dir.path().join("node.log")).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_moneta"))
        .arg("serve")
        .env("MONETA_NODE_DATA_DIR", dir.path().join("data"))
        .env("MONETA_GATEWAY_LISTEN", format!("127.0.0.1:{port}"))
        .env("MONETA_GATEWAY_TLS_CERT_FILE", &cert_path)
        .env("MONETA_GATEWAY_TLS_KEY_FILE", &key_path)
        .env("MONETA_LOG_LEVEL", "warn")
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let mut node = Node(child);

    let get = |path: &str| format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    let deadline = Instant::now() + Duration::from_secs(30);
    let health = loop {
        if let Some(status) = node.0.try_wait().unwrap() {
            panic!(
                "node exited with {status}: {}",
                std::fs::read_to_string(dir.path().join("node.log")).unwrap_or_default()
            );
        }
        match https(port, &roots, &get("/healthz")) {
            Ok(r) if r.starts_with("HTTP/1.1 200") => break r,
            _ if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(100)),
            other => panic!("no HTTPS answer on /healthz: {other:?}"),
        }
    };
    assert!(health.contains("\"status\":\"ok\""), "{health}");
    assert!(health.to_ascii_lowercase().contains("x-request-id:"), "{health}");

    // The API works over TLS: registration, then an authenticated call.
    let body =
        r#"{"email":"tls.user@example.com","password":"correct-horse-battery-staple-42","full_name":"Tess Ellis","date_of_birth":"1985-02-03","country":"GB"}"#;
    let post = format!(
        "POST /v1/auth/register HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let r = https(port, &roots, &post).unwrap();
    assert!(r.starts_with("HTTP/1.1 201"), "register over TLS: {r}");
    let r = https(port, &roots, &get("/v1/me")).unwrap();
    assert!(r.starts_with("HTTP/1.1 401") && r.contains("application/problem+json"), "{r}");

    // Plain HTTP on the TLS port gets no HTTP answer.
    let mut tcp = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    tcp.write_all(get("/healthz").as_bytes()).unwrap();
    let mut buf = Vec::new();
    let _ = tcp.read_to_end(&mut buf);
    assert!(
        !String::from_utf8_lossy(&buf).starts_with("HTTP/1.1 200"),
        "plain HTTP was served on the TLS port"
    );

    // A client that does not trust the certificate cannot talk to it.
    assert!(https(port, &RootCertStore::empty(), &get("/healthz")).is_err());

    // A client offering HTTP/2 gets HTTP/1.1 (HTTP/2 connections had no idle or header
    // timeout: 16 384 silent ones held every slot), and one that then says nothing is closed.
    let mut config = ClientConfig::builder().with_root_certificates(roots.clone()).with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let mut conn = tokio_rustls::rustls::ClientConnection::new(Arc::new(config), ServerName::try_from("localhost").unwrap().to_owned()).unwrap();
    let mut tcp = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(45))).unwrap();
    while conn.is_handshaking() {
        conn.complete_io(&mut tcp).unwrap();
    }
    assert_eq!(conn.alpn_protocol(), Some(&b"http/1.1"[..]), "the protocol agreed");
    let started = Instant::now();
    let mut tls = tokio_rustls::rustls::Stream::new(&mut conn, &mut tcp);
    let mut nothing = Vec::new();
    let read = tls.read_to_end(&mut nothing);
    assert!(
        read.is_ok() || matches!(&read, Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof),
        "a silent TLS connection was still held after {:?}: {read:?}",
        started.elapsed()
    );
    drop(node);
}

#[test]
fn a_bad_certificate_file_stops_start_up_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("cert.pem"), "not a certificate").unwrap();
    std::fs::write(dir.path().join("key.pem"), "not a key").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_moneta"))
        .arg("serve")
        .env("MONETA_NODE_DATA_DIR", dir.path().join("data"))
        .env("MONETA_GATEWAY_LISTEN", "127.0.0.1:0")
        .env("MONETA_GATEWAY_TLS_CERT_FILE", dir.path().join("cert.pem"))
        .env("MONETA_GATEWAY_TLS_KEY_FILE", dir.path().join("key.pem"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("gateway.tls_cert_file"), "{err}");
    assert!(!dir.path().join("data").exists(), "a bad certificate stops start-up before anything is written");
    // Only one of the two set is a configuration error (exit 2) naming the key.
    let out = Command::new(env!("CARGO_BIN_EXE_moneta"))
        .arg("serve")
        .env("MONETA_NODE_DATA_DIR", dir.path().join("data"))
        .env("MONETA_GATEWAY_TLS_CERT_FILE", dir.path().join("cert.pem"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("tls_cert_file"));
}
