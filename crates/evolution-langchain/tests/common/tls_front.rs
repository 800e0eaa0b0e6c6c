//! A TLS front for a plain-HTTP server (the emulator): TLS 1.3 with the
//! test certificate for `localhost`, every byte passed through, so tests
//! run the path calls to Cloud.ru take. The certificate's CA is made the
//! process's trust root (`SSL_CERT_FILE`) before any client is built.

use std::net::SocketAddr;
use std::sync::{Arc, Once};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

const CERT: &[u8] = include_bytes!("../fixtures/tls/trusted-server.pem");
const KEY: &[u8] = include_bytes!("../fixtures/tls/trusted-server.key");

/// Makes the test CA the trust root of this process. Call it before the
/// first HTTPS handshake of the process (the TLS setups read the roots then).
pub fn trust_test_ca() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        std::env::set_var(
            "SSL_CERT_FILE",
            concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/fixtures/tls/trusted-ca.pem"
            ),
        );
        std::env::remove_var("SSL_CERT_DIR");
    });
}

/// Serves TLS on a free loopback port, forwarding to `target`; returns
/// `https://localhost:PORT`.
pub async fn tls_front(target: SocketAddr) -> String {
    trust_test_ca();
    let certs = CertificateDer::pem_slice_iter(CERT)
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_slice(KEY).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(client).await else {
                    return;
                };
                let Ok(mut server) = tokio::net::TcpStream::connect(target).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut server).await;
            });
        }
    });
    format!("https://localhost:{port}")
}
