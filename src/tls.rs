//! TLS termination (Apache's mod_ssl `SSLEngine`, `SSLCertificateFile`,
//! `SSLCertificateKeyFile`, name-based virtual hosts by SNI) with rustls.
//!
//! `[tls]` names the TLS listeners and the certificates; each certificate serves the
//! host names listed with it, chosen by the name the client sends (SNI). Clients that
//! send no name, or a name no certificate lists, get the default certificate (the one
//! marked `default = true`, else the first). TLS 1.2 and 1.3; ALPN offers `h2` (unless
//! HTTP/2 is switched off) and `http/1.1`.
//!
//! [`load`] reads every file and checks each key against its certificate and each name
//! against the certificate's names; a config reload calls it again and swaps the result
//! into the [`Certificates`] the listeners read at each new connection.
//!
//! `redirect_http` listeners answer every request with a redirect to the same host and
//! path over `https://` (301 for GET and HEAD, 308, which keeps the method and body,
//! for the rest).

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use serde::Deserialize;
use towergate_proxy::ProxyBody;

/// `[tls]`: TLS listeners and their certificates.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// Addresses to serve TLS on (Apache `Listen 443` with `SSLEngine on`).
    pub listen: Vec<SocketAddr>,
    /// Plain-HTTP listeners that redirect every request to `https://`.
    #[serde(default)]
    pub redirect_http: Vec<SocketAddr>,
    /// The certificates, chosen by SNI.
    #[serde(rename = "certificate")]
    pub certificates: Vec<CertificateConfig>,
    /// Connections on `listen` and `redirect_http` start with a PROXY protocol header
    /// (v1 or v2), before the TLS handshake; as `server.proxy_protocol`.
    #[serde(default)]
    pub proxy_protocol: bool,
    /// The balancers trusted to send it; as `server.proxy_protocol_from`.
    #[serde(default, deserialize_with = "crate::config::proxy_protocol_from::tls")]
    pub proxy_protocol_from: Vec<towergate_client_addr::NetSpec>,
}

/// `[[tls.certificate]]`: one certificate chain, its key and the names it serves.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertificateConfig {
    /// PEM file: the server certificate first, then its intermediates
    /// (`SSLCertificateFile` with the chain appended).
    pub cert: PathBuf,
    /// PEM file: the private key (PKCS#8, PKCS#1 or SEC1) (`SSLCertificateKeyFile`).
    pub key: PathBuf,
    /// Host names this certificate serves (`ServerName`/`ServerAlias`); `*.example.com`
    /// serves every name one label below. Each must be covered by the certificate.
    pub names: Vec<String>,
    /// Serve this certificate to clients that send no name or an unknown one.
    #[serde(default)]
    pub default: bool,
}

impl TlsConfig {
    /// Makes relative file names relative to `base` (the config file's directory).
    pub fn resolve_paths(&mut self, base: &Path) {
        for c in &mut self.certificates {
            if c.cert.is_relative() {
                c.cert = base.join(&c.cert);
            }
            if c.key.is_relative() {
                c.key = base.join(&c.key);
            }
        }
    }
}

/// A certificate that cannot be served, naming the file and the key to fix.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// No certificate configured.
    #[error(
        "tls.certificate: name at least one certificate: [[tls.certificate]] cert = \"site.pem\", key = \"site.key\", names = [\"example.com\"]"
    )]
    NoCertificate,
    /// A file could not be read.
    #[error("{key}: cannot read {}: {source}", path.display())]
    Read {
        /// The config key.
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file holds no (usable) PEM item of the kind expected.
    #[error("{key}: {}: {message}", path.display())]
    Pem {
        /// The config key.
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The key does not belong to the certificate.
    #[error(
        "tls.certificate: the key {} does not belong to the certificate {}",
        key.display(),
        cert.display()
    )]
    Mismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
    /// A name is not covered by the certificate.
    #[error(
        "tls.certificate.names: the certificate {} is not valid for `{name}` (list only names the certificate covers)",
        cert.display()
    )]
    Name {
        /// The certificate file.
        cert: PathBuf,
        /// The name.
        name: String,
    },
    /// A name is listed for two certificates.
    #[error(
        "tls.certificate.names: `{name}` is listed for both {} and {}; each name may have one certificate",
        first.display(),
        second.display()
    )]
    Duplicate {
        /// The name.
        name: String,
        /// The first certificate naming it.
        first: PathBuf,
        /// The second.
        second: PathBuf,
    },
    /// More than one default.
    #[error("tls.certificate.default: only one certificate may be the default")]
    TwoDefaults,
}

/// The TLS settings every TLS listener serves, swappable while running (config reload).
#[derive(Clone)]
pub struct Certificates {
    current: Arc<ArcSwap<rustls::ServerConfig>>,
}

impl Certificates {
    /// Listeners' shared settings, starting with `config`.
    pub fn new(config: Arc<rustls::ServerConfig>) -> Self {
        Self {
            current: Arc::new(ArcSwap::new(config)),
        }
    }

    /// The settings for a new connection.
    pub fn current(&self) -> Arc<rustls::ServerConfig> {
        self.current.load_full()
    }

    /// Serves `config` to connections from now on; open connections keep theirs.
    pub fn replace(&self, config: Arc<rustls::ServerConfig>) {
        self.current.store(config);
    }
}

impl fmt::Debug for Certificates {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Certificates").finish_non_exhaustive()
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads every certificate and key in `config` and builds the TLS server settings;
/// `http2` offers `h2` in ALPN. Call again to reload.
pub fn load(config: &TlsConfig, http2: bool) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let provider = provider();
    if config.certificates.is_empty() {
        return Err(TlsError::NoCertificate);
    }
    if config.certificates.iter().filter(|c| c.default).count() > 1 {
        return Err(TlsError::TwoDefaults);
    }
    let mut resolver = SniResolver::default();
    let mut owner: HashMap<String, PathBuf> = HashMap::new();
    for c in &config.certificates {
        let key = Arc::new(load_one(c, &provider)?);
        for name in &c.names {
            let lower = name.to_ascii_lowercase();
            if let Some(first) = owner.insert(lower.clone(), c.cert.clone()) {
                return Err(TlsError::Duplicate {
                    name: name.clone(),
                    first,
                    second: c.cert.clone(),
                });
            }
            match lower.strip_prefix("*.") {
                Some(parent) => resolver.wildcard.insert(parent.to_owned(), key.clone()),
                None => resolver.exact.insert(lower, key.clone()),
            };
        }
        if c.default || resolver.default.is_none() {
            resolver.default = Some(key);
        }
    }
    let mut server = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .expect("the ring provider supports TLS 1.2 and 1.3")
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(resolver));
    server.alpn_protocols = if http2 {
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    if let Ok(ticketer) = rustls::crypto::ring::Ticketer::new() {
        server.ticketer = ticketer;
    }
    Ok(Arc::new(server))
}

fn load_one(c: &CertificateConfig, provider: &CryptoProvider) -> Result<CertifiedKey, TlsError> {
    let read = |key: &'static str, path: &Path| {
        std::fs::read(path).map_err(|source| TlsError::Read {
            key,
            path: path.to_owned(),
            source,
        })
    };
    let pem_error = |key: &'static str, path: &Path, message: String| TlsError::Pem {
        key,
        path: path.to_owned(),
        message,
    };
    let cert_pem = read("tls.certificate.cert", &c.cert)?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error("tls.certificate.cert", &c.cert, e.to_string()))?;
    if chain.is_empty() {
        return Err(pem_error(
            "tls.certificate.cert",
            &c.cert,
            "holds no certificate (\"-----BEGIN CERTIFICATE-----\")".into(),
        ));
    }
    let key_pem = read("tls.certificate.key", &c.key)?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
        pem_error(
            "tls.certificate.key",
            &c.key,
            format!("holds no private key ({e}); expected \"-----BEGIN PRIVATE KEY-----\" (or RSA/EC PRIVATE KEY)"),
        )
    })?;
    let signing = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| pem_error("tls.certificate.key", &c.key, format!("unusable key: {e}")))?;
    let certified = CertifiedKey::new(chain, signing);
    match certified.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(rustls::Error::InconsistentKeys(_)) => {
            return Err(TlsError::Mismatch {
                cert: c.cert.clone(),
                key: c.key.clone(),
            });
        }
        Err(e) => {
            return Err(pem_error(
                "tls.certificate.cert",
                &c.cert,
                format!("unusable certificate: {e}"),
            ));
        }
    }
    let end_entity = webpki::EndEntityCert::try_from(&certified.cert[0]).map_err(|e| {
        pem_error(
            "tls.certificate.cert",
            &c.cert,
            format!("unusable certificate: {e}"),
        )
    })?;
    if c.names.is_empty() {
        return Err(pem_error(
            "tls.certificate.names",
            &c.cert,
            "list the host names this certificate serves, e.g. names = [\"example.com\"]".into(),
        ));
    }
    for name in &c.names {
        // A wildcard name is covered when any name one label below is.
        let probe = match name.strip_prefix("*.") {
            Some(parent) => format!("wildcard-probe.{parent}"),
            None => name.clone(),
        };
        let covered = ServerName::try_from(probe.as_str())
            .ok()
            .is_some_and(|n| end_entity.verify_is_valid_for_subject_name(&n).is_ok());
        if !covered {
            return Err(TlsError::Name {
                cert: c.cert.clone(),
                name: name.clone(),
            });
        }
    }
    Ok(certified)
}

/// Picks the certificate by SNI: exact name, then wildcard, then the default.
#[derive(Debug, Default)]
struct SniResolver {
    exact: HashMap<String, Arc<CertifiedKey>>,
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    default: Option<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let Some(name) = hello.server_name() else {
            return self.default.clone();
        };
        let lower;
        let name = if name.bytes().any(|b| b.is_ascii_uppercase()) {
            lower = name.to_ascii_lowercase();
            lower.as_str()
        } else {
            name
        };
        if let Some(key) = self.exact.get(name) {
            return Some(key.clone());
        }
        if let Some((_, parent)) = name.split_once('.') {
            if let Some(key) = self.wildcard.get(parent) {
                return Some(key.clone());
            }
        }
        self.default.clone()
    }
}

/// The redirect listener's answer: the same host and path over `https://`.
/// `https_port` is the TLS listener's port, written into the URL unless it is 443;
/// `names` (the server's names) replace a `Host` that is not one of them.
pub fn redirect_to_https<B>(
    req: &Request<B>,
    https_port: u16,
    names: &[String],
) -> Response<ProxyBody> {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.parse::<http::uri::Authority>().ok())
        .map(|a| a.host().to_owned())
        .or_else(|| req.uri().host().map(str::to_owned));
    let host = match host {
        Some(h) if names.is_empty() || names.iter().any(|n| n.eq_ignore_ascii_case(&h)) => h,
        _ => match names.first() {
            Some(n) => n.clone(),
            None => return towergate_proxy::status_response(StatusCode::BAD_REQUEST),
        },
    };
    let path = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
    let location = if https_port == 443 {
        format!("https://{host}{path}")
    } else {
        format!("https://{host}:{https_port}{path}")
    };
    let Ok(location) = HeaderValue::from_str(&location) else {
        return towergate_proxy::status_response(StatusCode::BAD_REQUEST);
    };
    let status = if req.method() == http::Method::GET || req.method() == http::Method::HEAD {
        StatusCode::MOVED_PERMANENTLY
    } else {
        StatusCode::PERMANENT_REDIRECT
    };
    let text = if status == StatusCode::MOVED_PERMANENTLY {
        "301 Moved Permanently\n"
    } else {
        "308 Permanent Redirect\n"
    };
    let mut res = Response::new(ProxyBody::from(Bytes::from_static(text.as_bytes())));
    *res.status_mut() = status;
    let h = res.headers_mut();
    h.insert(header::LOCATION, location);
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(text.len()));
    res
}

/// A self-signed certificate and its key, PEM-encoded, for `names` (the first is the
/// subject's common name): for trying TLS out (`towergate gen-cert`) and for tests.
pub fn self_signed(names: &[String]) -> Result<(String, String), rcgen::Error> {
    let rcgen::CertifiedKey { cert, signing_key } =
        rcgen::generate_simple_self_signed(names.to_vec())?;
    Ok((cert.pem(), signing_key.serialize_pem()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_cert(dir: &Path, stem: &str, names: &[&str]) -> (PathBuf, PathBuf) {
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let (cert, key) = self_signed(&names).unwrap();
        let (c, k) = (
            dir.join(format!("{stem}.pem")),
            dir.join(format!("{stem}.key")),
        );
        std::fs::write(&c, cert).unwrap();
        std::fs::write(&k, key).unwrap();
        (c, k)
    }

    fn config(certs: Vec<CertificateConfig>) -> TlsConfig {
        TlsConfig {
            listen: vec![],
            redirect_http: vec![],
            certificates: certs,
            proxy_protocol: false,
            proxy_protocol_from: vec![],
        }
    }

    fn cert(c: &Path, k: &Path, names: &[&str]) -> CertificateConfig {
        CertificateConfig {
            cert: c.to_owned(),
            key: k.to_owned(),
            names: names.iter().map(|s| s.to_string()).collect(),
            default: false,
        }
    }

    #[test]
    fn errors_name_the_file_and_key() {
        let dir = tempfile::tempdir().unwrap();
        let (a, a_key) = write_cert(dir.path(), "a", &["a.test", "*.wild.test"]);
        let (_b, b_key) = write_cert(dir.path(), "b", &["b.test"]);
        assert!(
            load(
                &config(vec![cert(&a, &a_key, &["a.test", "*.wild.test"])]),
                true
            )
            .is_ok()
        );

        let err = load(&config(vec![cert(&a, &b_key, &["a.test"])]), true).unwrap_err();
        assert!(matches!(err, TlsError::Mismatch { .. }), "{err}");
        assert!(err.to_string().contains("b.key"), "{err}");

        let err = load(&config(vec![cert(&a, &a_key, &["b.test"])]), true).unwrap_err();
        assert!(
            err.to_string().contains("a.pem") && err.to_string().contains("`b.test`"),
            "{err}"
        );
        let err = load(&config(vec![cert(&a, &a_key, &["*.a.test"])]), true).unwrap_err();
        assert!(matches!(err, TlsError::Name { .. }), "{err}");

        let missing = dir.path().join("missing.pem");
        let err = load(&config(vec![cert(&missing, &a_key, &["a.test"])]), true).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("tls.certificate.cert: cannot read")
                && err.to_string().contains("missing.pem"),
            "{err}"
        );
        let err = load(&config(vec![cert(&a, &a, &["a.test"])]), true).unwrap_err();
        assert!(
            err.to_string().starts_with("tls.certificate.key:")
                && err.to_string().contains("a.pem"),
            "{err}"
        );
        let err = load(
            &config(vec![
                cert(&a, &a_key, &["a.test"]),
                cert(&a, &a_key, &["A.test"]),
            ]),
            true,
        )
        .unwrap_err();
        assert!(matches!(err, TlsError::Duplicate { .. }), "{err}");
    }

    #[test]
    fn redirects_keep_host_and_path() {
        let req = Request::get("/a/b?c=1")
            .header("host", "front.test:80")
            .body(())
            .unwrap();
        let res = redirect_to_https(&req, 443, &[]);
        assert_eq!(res.status(), 301);
        assert_eq!(res.headers()["location"], "https://front.test/a/b?c=1");
        let res = redirect_to_https(&req, 8443, &["other.test".into()]);
        assert_eq!(res.headers()["location"], "https://other.test:8443/a/b?c=1");
        let post = Request::post("/form")
            .header("host", "front.test")
            .body(())
            .unwrap();
        assert_eq!(redirect_to_https(&post, 443, &[]).status(), 308);
        let no_host = Request::get("/").body(()).unwrap();
        assert_eq!(redirect_to_https(&no_host, 443, &[]).status(), 400);
    }
}
