//! TLS as a client, for the connections pa-auth makes (PostgreSQL, webhook receivers): one
//! rustls configuration built from a PEM file of the certificate authorities the server must
//! chain to. A leaf: it names nothing else of the crate.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

/// Where Debian keeps the system's trusted certificate authorities.
pub const SYSTEM_ROOTS: &str = "/etc/ssl/certs/ca-certificates.crt";

/// A client configuration trusting exactly the certificates in the PEM file `ca`; errors
/// name `flag` (the option that gave the file) and the file.
pub fn config_trusting(ca: &Path, flag: &str) -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    let certs =
        CertificateDer::pem_file_iter(ca).map_err(|e| format!("{flag} {}: {e}", ca.display()))?;
    for cert in certs {
        let cert = cert.map_err(|e| format!("{flag} {}: {e}", ca.display()))?;
        roots
            .add(cert)
            .map_err(|e| format!("{flag} {}: {e}", ca.display()))?;
    }
    if roots.is_empty() {
        return Err(format!("{flag} {}: no certificate found", ca.display()));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}
