//! TLS towards `https://` upstreams: which certificates an upstream must present.
//!
//! By default an upstream's certificate is verified against the system's root
//! certificates (the operating system's trust store, as `curl` and `openssl` use it, read
//! once per process by `rustls-native-certs`), for the host named in the upstream URL,
//! which is also sent as SNI. A private CA (the usual case inside a cluster) is named
//! with [`UpstreamTls::from_ca_file`]; [`UpstreamTls::danger_accept_invalid_certs`] turns
//! verification off and says so in its name.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

/// How `https://` upstreams are verified: a rustls client configuration.
#[derive(Clone)]
pub struct UpstreamTls {
    config: Arc<ClientConfig>,
    what: Verification,
}

#[derive(Debug, Clone)]
enum Verification {
    SystemRoots(usize),
    CaFile(PathBuf),
    Roots,
    None,
}

/// Why an upstream TLS setting could not be used.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamTlsError {
    /// The CA file could not be read.
    #[error("cannot read the CA file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The CA file holds no usable PEM certificate.
    #[error("the CA file {path} holds no PEM certificate (\"-----BEGIN CERTIFICATE-----\")")]
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// A certificate in the CA file is not a usable trust anchor.
    #[error("the CA file {path} holds a certificate that is not a usable CA: {message}")]
    BadCertificate {
        /// The file.
        path: PathBuf,
        /// What rustls said.
        message: String,
    },
}

/// The ring provider, named explicitly so the process-wide default never matters.
pub(crate) fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}

fn client_config(roots: RootCertStore) -> Arc<ClientConfig> {
    Arc::new(
        ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("the ring provider supports the default protocol versions")
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

impl UpstreamTls {
    /// Verification against the system's root certificates. They are read once per
    /// process; a store that cannot be read is logged and leaves no roots, so every
    /// `https://` upstream then fails verification (502) rather than being trusted.
    pub fn system_roots() -> Self {
        static SYSTEM: OnceLock<UpstreamTls> = OnceLock::new();
        SYSTEM
            .get_or_init(|| {
                let found = rustls_native_certs::load_native_certs();
                for e in &found.errors {
                    tracing::warn!(target: "towergate_proxy", error = %e, "reading the system's root certificates");
                }
                let mut roots = RootCertStore::empty();
                let (added, _ignored) = roots.add_parsable_certificates(found.certs);
                if added == 0 {
                    tracing::warn!(target: "towergate_proxy", "no system root certificates found: https upstreams cannot be verified (name a ca_file)");
                }
                UpstreamTls {
                    config: client_config(roots),
                    what: Verification::SystemRoots(added),
                }
            })
            .clone()
    }

    /// Verification against the CA certificates in a PEM file (and only those).
    pub fn from_ca_file(path: &Path) -> Result<Self, UpstreamTlsError> {
        let pem = std::fs::read(path).map_err(|source| UpstreamTlsError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(&pem) {
            let cert = cert.map_err(|e| UpstreamTlsError::BadCertificate {
                path: path.to_owned(),
                message: e.to_string(),
            })?;
            roots
                .add(cert)
                .map_err(|e| UpstreamTlsError::BadCertificate {
                    path: path.to_owned(),
                    message: e.to_string(),
                })?;
        }
        if roots.is_empty() {
            return Err(UpstreamTlsError::NoCertificate {
                path: path.to_owned(),
            });
        }
        Ok(Self {
            config: client_config(roots),
            what: Verification::CaFile(path.to_owned()),
        })
    }

    /// Verification against the given roots.
    pub fn from_roots(roots: RootCertStore) -> Self {
        Self {
            config: client_config(roots),
            what: Verification::Roots,
        }
    }

    /// No verification at all: any certificate for any name is accepted, so anybody on
    /// the path to the upstream can read and change the traffic. For a test bench only.
    pub fn danger_accept_invalid_certs() -> Self {
        let provider = provider();
        let config = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .expect("the ring provider supports the default protocol versions")
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCert(provider)))
            .with_no_client_auth();
        Self {
            config: Arc::new(config),
            what: Verification::None,
        }
    }

    /// True when certificates are not verified.
    pub fn is_dangerous(&self) -> bool {
        matches!(self.what, Verification::None)
    }

    /// The rustls client configuration.
    pub fn client_config(&self) -> &Arc<ClientConfig> {
        &self.config
    }
}

impl fmt::Debug for UpstreamTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.what {
            Verification::SystemRoots(n) => write!(f, "UpstreamTls(system roots: {n})"),
            Verification::CaFile(p) => write!(f, "UpstreamTls(CA file {})", p.display()),
            Verification::Roots => f.write_str("UpstreamTls(given roots)"),
            Verification::None => f.write_str("UpstreamTls(NOT VERIFIED)"),
        }
    }
}

/// Accepts every certificate; still checks the handshake signatures, so the connection
/// is encrypted to whoever holds the presented key.
#[derive(Debug)]
struct AcceptAnyCert(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
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
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ca_file_errors_name_the_file() {
        let err = UpstreamTls::from_ca_file(Path::new("/nonexistent/ca.pem")).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/ca.pem"), "{err}");
        let dir = std::env::temp_dir().join(format!("towergate-ca-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let err = UpstreamTls::from_ca_file(&empty).unwrap_err();
        assert!(
            matches!(err, UpstreamTlsError::NoCertificate { .. }),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn danger_is_visible() {
        let tls = UpstreamTls::danger_accept_invalid_certs();
        assert!(tls.is_dangerous());
        assert_eq!(format!("{tls:?}"), "UpstreamTls(NOT VERIFIED)");
    }
}
