//! HTTPS for the gateway: the server configuration. `tokio-rustls` (aws-lc-rs, TLS 1.2 and 1.3)
//! terminates TLS in the gateway's accept loop ([`super::server`]).

use std::path::Path;
use std::sync::Arc;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::ServerConfig;

/// Reads the PEM certificate chain and private key named by `[gateway] tls_cert_file` and
/// `tls_key_file`.
pub fn server_config(cert_file: &Path, key_file: &Path) -> Result<Arc<ServerConfig>, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_file)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("TLS certificate {} (key `gateway.tls_cert_file`): {e}", cert_file.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "TLS certificate {} (key `gateway.tls_cert_file`): no certificate in the file",
            cert_file.display()
        ));
    }
    let key = PrivateKeyDer::from_pem_file(key_file).map_err(|e| format!("TLS private key {} (key `gateway.tls_key_file`): {e}", key_file.display()))?;
    let mut config = ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("TLS certificate and key do not fit together: {e}"))?;
    // HTTP/1.1 only: hyper's HTTP/2 server has no idle or header timeout, so 16 384 silent h2
    // connections held every slot for ever.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
