//! https through the clients' shared TLS setup (native-tls by default,
//! rustls with `--no-default-features --features rustls`): a server whose
//! certificate chains to a trusted root is reached, one signed by an unknown
//! CA is refused, and later clients reuse the setup. Loopback TLS servers,
//! certificates from `tests/fixtures/tls`.
#![cfg(any(feature = "native-tls", feature = "rustls"))]

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::Arc;
use std::thread;

use evolution_langchain::{Error, EvolutionInference};

const MODELS: &str = r#"{"object":"list","data":[{"id":"tls/model-1","object":"model"}]}"#;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/tls")
        .join(name)
}

/// An https server on loopback presenting `which`'s certificate; answers
/// every request with the model list. Returns its base URL.
fn serve(which: &str) -> String {
    let cert = std::fs::read(fixture(&format!("{which}-server.pem"))).unwrap();
    let key = std::fs::read(fixture(&format!("{which}-server.key"))).unwrap();
    let identity = native_tls::Identity::from_pkcs8(&cert, &key).unwrap();
    let acceptor = Arc::new(native_tls::TlsAcceptor::new(identity).unwrap());
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let acceptor = acceptor.clone();
            thread::spawn(move || {
                // A refused handshake ends here; that is the point of one test.
                let Ok(mut tls) = acceptor.accept(stream) else {
                    return;
                };
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let reply = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{MODELS}",
                    MODELS.len()
                );
                let _ = tls.write_all(reply.as_bytes());
                let _ = tls.shutdown();
            });
        }
    });
    format!("https://localhost:{port}/v1")
}

fn client(base_url: &str) -> EvolutionInference {
    EvolutionInference::builder()
        .base_url(base_url)
        .api_key("test-key")
        .max_retries(0)
        .build()
        .unwrap()
}

#[tokio::test]
async fn trusted_servers_are_reached_and_unknown_issuers_refused() {
    // Before any client exists: the roots of this process are the test CA.
    // (Both backends read SSL_CERT_FILE; the setup is built once per process.)
    std::env::set_var("SSL_CERT_FILE", fixture("trusted-ca.pem"));
    std::env::remove_var("SSL_CERT_DIR");

    let trusted = serve("trusted");
    let models = client(&trusted).list_models().await.unwrap();
    assert_eq!(models[0].id, "tls/model-1");

    // Another client, built after the first: the shared setup still verifies.
    let untrusted = serve("untrusted");
    let error = client(&untrusted).list_models().await.unwrap_err();
    assert!(matches!(error, Error::Connection { .. }), "{error:?}");
    let text = error.to_string().to_lowercase();
    assert!(
        text.contains("certificate") || text.contains("issuer"),
        "the refusal names the certificate: {text}"
    );

    // And the trusted server again, through a third client, and through one
    // that offers HTTP/2 (this server speaks HTTP/1.1 only: ALPN falls back).
    let models = client(&trusted).list_models().await.unwrap();
    assert_eq!(models.len(), 1);
    let offering_http2 = EvolutionInference::builder()
        .base_url(&trusted)
        .api_key("test-key")
        .http2(true)
        .build()
        .unwrap();
    assert_eq!(offering_http2.list_models().await.unwrap().len(), 1);
}
