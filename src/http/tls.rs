//! HTTPS for the HTTP layer: rustls with the ring provider (no cmake in the build), TLS 1.2
//! and 1.3 only, HTTP/1.1 over ALPN. The certificate can be reloaded (SIGHUP) without
//! dropping connections: existing ones keep the config they started with, new handshakes
//! use the new one. A failed reload keeps the old certificate.

use std::io;
use std::path::Path;
use std::sync::{Arc, RwLock};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ServerConfig, ServerConnection};

use super::error::TlsError;

type Result<T> = std::result::Result<T, TlsError>;

/// Reads PEM files into a rustls server config.
pub fn load_server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| TlsError(format!("--tls-cert {}: {e}", cert.display())))?
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| TlsError(format!("--tls-cert {}: {e}", cert.display())))?;
    if certs.is_empty() {
        return Err(TlsError(format!(
            "--tls-cert {}: no certificate found",
            cert.display()
        )));
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| TlsError(format!("--tls-key {}: {e}", key.display())))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsError(format!("TLS: {e}")))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| {
            TlsError(format!(
                "--tls-cert/--tls-key do not form a usable pair: {e}"
            ))
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The current server certificate, swappable at run time.
pub struct TlsContext {
    current: RwLock<Arc<ServerConfig>>,
}

impl std::fmt::Debug for TlsContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TlsContext")
    }
}

impl TlsContext {
    pub fn new(config: Arc<ServerConfig>) -> Self {
        TlsContext {
            current: RwLock::new(config),
        }
    }

    /// Loads the files again; on error the old certificate stays in use.
    pub fn reload(&self, cert: &Path, key: &Path) -> Result<()> {
        let config = load_server_config(cert, key)?;
        *super::sync::write(&self.current) = config;
        Ok(())
    }

    /// A new server-side TLS connection with the current certificate.
    pub(super) fn accept(&self) -> io::Result<ServerConnection> {
        let config = Arc::clone(&super::sync::read(&self.current));
        ServerConnection::new(config).map_err(io::Error::other)
    }
}
