//! TLS for TCP listeners, as dockerd's `--tlsverify`: the server presents `--tlscert` /
//! `--tlskey`, and clients must present a certificate that chains to `--tlscacert`.

use std::path::Path;
use std::sync::Arc;

use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

use crate::config::Config;
use crate::error::{Error, Result};

fn required<'a>(p: &'a Option<std::path::PathBuf>, flag: &str) -> Result<&'a Path> {
    p.as_deref()
        .ok_or_else(|| Error::Config(format!("TLS needs {flag}")))
}

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<std::result::Result<Vec<_>, _>>())
        .map_err(|e| Error::Config(format!("read certificates from {}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(Error::Config(format!(
            "no certificate in {}",
            path.display()
        )));
    }
    Ok(certs)
}

/// Builds the acceptor: mutual TLS when `tls_verify`, server-only TLS otherwise.
pub fn acceptor(config: &Config) -> Result<TlsAcceptor> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cert = certs(required(&config.tls_cert, "--tlscert")?)?;
    let key_path = required(&config.tls_key, "--tlskey")?;
    let key = PrivateKeyDer::from_pem_file(key_path)
        .map_err(|e| Error::Config(format!("read private key from {}: {e}", key_path.display())))?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Config(format!("TLS protocol versions: {e}")))?;
    let builder = if config.tls_verify {
        let mut roots = RootCertStore::empty();
        for ca in certs(required(&config.tls_ca, "--tlscacert")?)? {
            roots
                .add(ca)
                .map_err(|e| Error::Config(format!("bad CA certificate: {e}")))?;
        }
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .map_err(|e| Error::Config(format!("client certificate verifier: {e}")))?;
        builder.with_client_cert_verifier(verifier)
    } else {
        builder.with_no_client_auth()
    };
    let server = builder
        .with_single_cert(cert, key)
        .map_err(|e| Error::Config(format!("server certificate and key: {e}")))?;
    Ok(TlsAcceptor::from(Arc::new(server)))
}
