//! TLS set up once per process for the clients this crate builds.
//!
//! Reading and parsing the system's trust roots is by far the most expensive
//! part of building an HTTP client: OpenSSL (through native-tls) parses the
//! whole CA bundle, twice, on every `reqwest::Client` built, some 500 million
//! instructions (~70 ms). So the TLS configuration is built once, on the
//! first client, and every later client reuses it.
//!
//! - With the `rustls` feature (chosen when both TLS features are on, as the
//!   one asked for explicitly): rustls with the platform's roots through
//!   `rustls-platform-verifier`, whose roots are loaded on the first TLS
//!   handshake, not before. A program that only talks plain HTTP (an
//!   emulator, a local gateway) never reads them.
//! - With `native-tls` alone: one `native_tls::TlsConnector` (roots loaded
//!   when the first client is built), shared.
//!
//! ALPN offers HTTP/1.1 only, or HTTP/2 and HTTP/1.1 when the client speaks
//! both: what reqwest's own setup does for its HTTP version setting, which
//! it leaves alone in a preconfigured TLS setup.

#[cfg(any(feature = "rustls", feature = "native-tls"))]
use crate::error::{Error, Result};

/// The protocols ALPN offers.
#[cfg(any(feature = "rustls", feature = "native-tls"))]
fn alpn(http2: bool) -> &'static [&'static str] {
    if http2 {
        &["h2", "http/1.1"]
    } else {
        &["http/1.1"]
    }
}

/// Gives `builder` the process's shared TLS configuration, offering HTTP/2
/// by ALPN when `http2`.
#[cfg(feature = "rustls")]
pub(crate) fn configure(
    builder: reqwest::ClientBuilder,
    http2: bool,
) -> Result<reqwest::ClientBuilder> {
    let mut config = rustls_backend::config()?;
    config.alpn_protocols = alpn(http2).iter().map(|p| p.as_bytes().to_vec()).collect();
    Ok(builder.tls_backend_preconfigured(config))
}

/// Gives `builder` the process's shared TLS configuration, offering HTTP/2
/// by ALPN when `http2`.
#[cfg(all(feature = "native-tls", not(feature = "rustls")))]
pub(crate) fn configure(
    builder: reqwest::ClientBuilder,
    http2: bool,
) -> Result<reqwest::ClientBuilder> {
    Ok(builder.tls_backend_preconfigured(native::connector(http2)?))
}

/// Without a TLS feature there is nothing to configure (and no https).
#[cfg(not(any(feature = "native-tls", feature = "rustls")))]
pub(crate) fn configure(
    builder: reqwest::ClientBuilder,
    _http2: bool,
) -> crate::error::Result<reqwest::ClientBuilder> {
    Ok(builder)
}

#[cfg(any(feature = "rustls", feature = "native-tls"))]
fn tls_error(message: String) -> Error {
    Error::config("http_client", format!("could not set up TLS: {message}"))
}

#[cfg(all(feature = "native-tls", not(feature = "rustls")))]
mod native {
    use std::sync::OnceLock;

    use super::{alpn, tls_error, Result};

    /// One connector per ALPN list (HTTP/1.1 only; HTTP/2 too), each made
    /// when first needed.
    static CONNECTORS: [OnceLock<native_tls::TlsConnector>; 2] = [OnceLock::new(), OnceLock::new()];

    /// The shared connector (a cheap clone of one OpenSSL context). A
    /// failure is not kept: the next client tries again.
    pub(super) fn connector(http2: bool) -> Result<native_tls::TlsConnector> {
        let slot = &CONNECTORS[usize::from(http2)];
        if let Some(connector) = slot.get() {
            return Ok(connector.clone());
        }
        let connector = native_tls::TlsConnector::builder()
            .request_alpns(alpn(http2))
            .build()
            .map_err(|e| tls_error(e.to_string()))?;
        Ok(slot.get_or_init(|| connector).clone())
    }
}

#[cfg(feature = "rustls")]
mod rustls_backend {
    use std::sync::{Arc, OnceLock};

    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::crypto::CryptoProvider;
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    use rustls::{DigitallySignedStruct, SignatureScheme};

    use super::{tls_error, Result};

    static CONFIG: OnceLock<rustls::ClientConfig> = OnceLock::new();

    /// The shared configuration (its parts are behind `Arc`s: cloning it
    /// copies a few pointers and the ALPN list, which the caller sets).
    pub(super) fn config() -> Result<rustls::ClientConfig> {
        if let Some(config) = CONFIG.get() {
            return Ok(config.clone());
        }
        // A provider the program installed wins; otherwise aws-lc-rs, as
        // reqwest's own rustls setup uses.
        let provider = CryptoProvider::get_default()
            .cloned()
            .unwrap_or_else(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()));
        let verifier = LazyPlatformVerifier {
            provider: provider.clone(),
            platform: OnceLock::new(),
        };
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| tls_error(e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth();
        Ok(CONFIG.get_or_init(|| config).clone())
    }

    /// The platform verifier, created (and the system's roots read) on the
    /// first certificate it is asked to check.
    #[derive(Debug)]
    struct LazyPlatformVerifier {
        provider: Arc<CryptoProvider>,
        platform: OnceLock<std::result::Result<rustls_platform_verifier::Verifier, rustls::Error>>,
    }

    impl LazyPlatformVerifier {
        fn platform(
            &self,
        ) -> std::result::Result<&rustls_platform_verifier::Verifier, rustls::Error> {
            self.platform
                .get_or_init(|| rustls_platform_verifier::Verifier::new(self.provider.clone()))
                .as_ref()
                .map_err(Clone::clone)
        }
    }

    impl ServerCertVerifier for LazyPlatformVerifier {
        fn verify_server_cert(
            &self,
            end_entity: &CertificateDer<'_>,
            intermediates: &[CertificateDer<'_>],
            server_name: &ServerName<'_>,
            ocsp_response: &[u8],
            now: UnixTime,
        ) -> std::result::Result<ServerCertVerified, rustls::Error> {
            self.platform()?.verify_server_cert(
                end_entity,
                intermediates,
                server_name,
                ocsp_response,
                now,
            )
        }

        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
            self.platform()?.verify_tls12_signature(message, cert, dss)
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
            self.platform()?.verify_tls13_signature(message, cert, dss)
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            // The provider's schemes, which the platform verifier also
            // offers, without loading the roots just to list them.
            self.provider
                .signature_verification_algorithms
                .supported_schemes()
        }
    }
}
