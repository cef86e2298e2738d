//! TLS to PostgreSQL with rustls, following libpq's `sslmode` semantics.
//!
//! | sslmode     | handshake            | certificate checks                       |
//! |-------------|----------------------|------------------------------------------|
//! | disable     | never                | -                                        |
//! | prefer      | if the server offers | none                                     |
//! | require     | always               | none, or chain if `sslrootcert` is given |
//! | verify-ca   | always               | chain against `sslrootcert`              |
//! | verify-full | always               | chain and host name                      |
//!
//! `sslrootcert=system` uses the operating system's trust store, as libpq 16 does.

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, DigitallySignedStruct, Error as TlsError, RootCertStore, SignatureScheme,
};
use tokio_postgres::config::SslMode as PgSslMode;
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::dsn::{SslMode, TlsOptions};

/// The connector and the tokio-postgres mode to use with it.
pub struct Tls {
    pub connector: MakeRustlsConnect,
    pub mode: PgSslMode,
}

/// Builds the connector for a target; errors name the file or mode at fault.
pub fn build(options: &TlsOptions) -> Result<Tls, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let roots = match &options.root_cert {
        Some(path) => Some(Arc::new(load_roots(path, "sslrootcert")?)),
        None => None,
    };
    let verifier: Arc<dyn ServerCertVerifier> = match (options.mode, roots) {
        (SslMode::Disable | SslMode::Prefer, _) | (SslMode::Require, None) => {
            Arc::new(AcceptAnyCertificate(provider.clone()))
        }
        (SslMode::VerifyCa | SslMode::VerifyFull, None) => {
            return Err(format!(
                "sslmode={} needs sslrootcert: a PEM file of the CA that signed the server \
                 certificate, or sslrootcert=system for the operating system's trust store",
                options.mode
            ))
        }
        (SslMode::Require | SslMode::VerifyCa, Some(roots)) => {
            Arc::new(IgnoreHostName(webpki(roots, &provider)?))
        }
        (SslMode::VerifyFull, Some(roots)) => webpki(roots, &provider)?,
    };
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("tls setup: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    let mode = match options.mode {
        SslMode::Disable => PgSslMode::Disable,
        SslMode::Prefer => PgSslMode::Prefer,
        SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => PgSslMode::Require,
    };
    Ok(Tls {
        connector: MakeRustlsConnect::new(config),
        mode,
    })
}

fn webpki(
    roots: Arc<RootCertStore>,
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<WebPkiServerVerifier>, String> {
    WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
        .build()
        .map_err(|e| format!("tls setup: {e}"))
}

/// The trust anchors in `path` (PEM), or the operating system's store for `system`; errors
/// name the setting the path came from (`setting`, e.g. "sslrootcert").
pub fn load_roots(path: &Path, setting: &str) -> Result<RootCertStore, String> {
    let mut store = RootCertStore::empty();
    if path == Path::new("system") {
        let found = rustls_native_certs::load_native_certs();
        for cert in found.certs {
            let _ = store.add(cert);
        }
        if store.is_empty() {
            return Err(format!("{setting}=system: no trusted certificates found in the operating system's store; install ca-certificates or give a PEM file"));
        }
        return Ok(store);
    }
    let pem = std::fs::read(path).map_err(|e| {
        format!(
            "{setting} {}: cannot read it ({e}); give the path of a PEM file",
            path.display()
        )
    })?;
    for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
        let cert =
            cert.map_err(|e| format!("{setting} {}: not valid PEM ({e})", path.display()))?;
        store
            .add(cert)
            .map_err(|e| format!("{setting} {}: unusable certificate ({e})", path.display()))?;
    }
    if store.is_empty() {
        return Err(format!("{setting} {}: no certificate found in the file; it must hold PEM 'BEGIN CERTIFICATE' blocks", path.display()));
    }
    Ok(store)
}

/// libpq's prefer/require without a root certificate: encryption without authentication.
#[derive(Debug)]
struct AcceptAnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, TlsError> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// verify-ca: the chain must lead to a trusted root, the name may differ.
#[derive(Debug)]
struct IgnoreHostName(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for IgnoreHostName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, TlsError> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(TlsError::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}
