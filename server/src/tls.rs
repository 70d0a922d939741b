//! HTTPS: rustls (ring) with HTTP/2 and HTTP/1.1 by ALPN, a certificate that can be replaced
//! while the server runs, and a plain answer to a plain HTTP request sent to the HTTPS port.
//!
//! - **Reloading.** The certificate and key live in a [`CertStore`], a rustls certificate
//!   resolver that every new handshake asks. `SIGHUP` reads both files again
//!   ([`CertStore::reload`]); if they load, the next handshake gets the new certificate, and
//!   connections already open (an upload half sent) keep theirs: nothing is restarted. If they do
//!   not load (a half-copied file), the old certificate stays and the error is logged.
//! - **Plain HTTP on the HTTPS port.** The first byte of a connection tells a TLS handshake
//!   (`0x16`) from a plain request (a method's capital letter); the latter gets a `400` JSON error
//!   `https_required` saying to use `https://`, instead of the TLS alert bytes a browser or
//!   `curl` would show as garbage.
//! - **Who is on HTTPS.** [`is_https`]: with `[tls]` every request is; without it, a request is
//!   when `X-Forwarded-Proto: https` comes from one of `trusted_proxies` (a reverse proxy that
//!   terminates TLS). Cookies are `Secure` and `Strict-Transport-Security` is sent only then.

use std::path::Path;
use std::sync::{Arc, RwLock};

use actix_web::HttpRequest;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::settings::{Settings, TlsSettings};

/// Why a certificate or key could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or holds no usable PEM block.
    #[error("{path}: {reason}")]
    File {
        /// The file.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The key is not one rustls can sign with, or does not belong to the certificate.
    #[error("the key does not fit the certificate: {0}")]
    Key(rustls::Error),
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Config(rustls::Error),
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn file_error(path: &Path, reason: impl ToString) -> TlsError {
    TlsError::File { path: path.display().to_string(), reason: reason.to_string() }
}

/// Reads the certificate chain and its key, and checks that they belong together.
pub fn load(settings: &TlsSettings) -> Result<CertifiedKey, TlsError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&settings.cert_file)
        .map_err(|e| file_error(&settings.cert_file, e))?
        .collect::<Result<_, _>>()
        .map_err(|e| file_error(&settings.cert_file, e))?;
    if chain.is_empty() {
        return Err(file_error(&settings.cert_file, "no CERTIFICATE block"));
    }
    let key = PrivateKeyDer::from_pem_file(&settings.key_file)
        .map_err(|e| file_error(&settings.key_file, e))?;
    CertifiedKey::from_der(chain, key, &provider()).map_err(TlsError::Key)
}

/// The certificate new handshakes get; replaced by [`CertStore::reload`].
#[derive(Debug)]
pub struct CertStore {
    settings: TlsSettings,
    current: RwLock<Arc<CertifiedKey>>,
}

impl CertStore {
    /// Loads the certificate and key of `settings`.
    pub fn open(settings: &TlsSettings) -> Result<Arc<Self>, TlsError> {
        let key = load(settings)?;
        Ok(Arc::new(Self { settings: settings.clone(), current: RwLock::new(Arc::new(key)) }))
    }

    /// Reads the files again; on success new handshakes get the new certificate, on failure
    /// the old one stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let key = Arc::new(load(&self.settings)?);
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = key;
        Ok(())
    }

    /// The rustls configuration of the HTTPS listener (ALPN is set by actix: h2, http/1.1).
    pub fn server_config(self: &Arc<Self>) -> Result<rustls::ServerConfig, TlsError> {
        Ok(rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(TlsError::Config)?
            .with_no_client_auth()
            .with_cert_resolver(self.clone()))
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.read().unwrap_or_else(|p| p.into_inner()).clone())
    }
}

/// The answer to a plain HTTP request on the HTTPS port.
pub const PLAIN_HTTP_ANSWER: &[u8] = b"HTTP/1.1 400 Bad Request\r\n\
Content-Type: application/json\r\n\
Connection: close\r\n\
Content-Length: 100\r\n\
\r\n\
{\"error\":\"https_required\",\"message\":\"this port speaks HTTPS only: use https:// instead of http://\"}\n";

/// Whether the first byte of a connection starts a plain HTTP request rather than a TLS
/// handshake (a TLS record of type handshake starts with 0x16).
pub fn looks_like_plain_http(first: u8) -> bool {
    first.is_ascii_uppercase()
}

/// Whether `req` reached the server over HTTPS (see the module docs).
pub fn is_https(req: &HttpRequest, settings: &Settings) -> bool {
    if settings.tls.is_some() {
        return true;
    }
    let from_proxy = req
        .peer_addr()
        .is_some_and(|peer| settings.trusted_proxies.iter().any(|net| net.contains(&peer.ip())));
    // The proxy next to us appends its own value last.
    from_proxy
        && req
            .headers()
            .get_all("X-Forwarded-Proto")
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .next_back()
            .is_some_and(|proto| proto.trim().eq_ignore_ascii_case("https"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plain_answer_has_the_length_it_says() {
        let text = std::str::from_utf8(PLAIN_HTTP_ANSWER).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.contains(&format!("Content-Length: {}", body.len())), "{head} / {body:?}");
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(json["error"], "https_required");
    }

    #[test]
    fn a_handshake_is_not_taken_for_plain_http() {
        assert!(!looks_like_plain_http(0x16));
        for method in ["GET", "POST", "HEAD", "PATCH", "OPTIONS", "PRI"] {
            assert!(looks_like_plain_http(method.as_bytes()[0]), "{method}");
        }
    }
}
