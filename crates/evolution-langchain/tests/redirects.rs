//! Redirects and broken servers through both kinds of HTTP client a client
//! can have: the crate's own (same-origin redirects only, at most five) and
//! a caller's `reqwest::Client` (its own policy): the redirects followed, the
//! limit, 303 turning a POST into a GET, a body that stalls, a port nobody
//! listens on.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use evolution_langchain::{Error, EvolutionInference};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

/// A chat reply.
const CHAT_JSON: &str = r#"{"choices":[{"index":0,"finish_reason":"stop","message":{"role":"assistant","content":"redirected fine"}}]}"#;

/// What the server saw: method, path and body of each request.
type Seen = Arc<Mutex<Vec<(String, String, String)>>>;

type Body = BoxBody<Bytes, Infallible>;

fn full(text: &'static str) -> Body {
    Full::new(Bytes::from_static(text.as_bytes())).boxed()
}

/// The scripted server; returns its address (`http://127.0.0.1:port`).
async fn server(seen: Seen) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request| {
                    let seen = seen.clone();
                    async move { Ok::<_, Infallible>(answer(request, seen).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    url
}

async fn answer(request: Request<Incoming>, seen: Seen) -> Response<Body> {
    let method = request.method().to_string();
    let path = request.uri().path().to_string();
    let body = request.into_body().collect().await.unwrap().to_bytes();
    let body = String::from_utf8_lossy(&body).into_owned();
    seen.lock()
        .unwrap()
        .push((method.clone(), path.clone(), body.clone()));
    let redirect = |status: u16, location: &str| {
        Response::builder()
            .status(status)
            .header("location", location)
            .body(full(""))
            .unwrap()
    };
    let ok = || {
        Response::builder()
            .header("content-type", "application/json")
            .body(full(CHAT_JSON))
            .unwrap()
    };
    match (method.as_str(), path.as_str()) {
        ("POST", "/a/v1/chat/completions") => redirect(307, "/b/v1/chat/completions"),
        ("POST", "/b/v1/chat/completions") if body.contains("\"messages\"") => ok(),
        (_, "/loop/v1/chat/completions") => redirect(308, "/loop/v1/chat/completions"),
        ("POST", "/see/v1/chat/completions") => redirect(303, "/done"),
        ("GET", "/done") if body.is_empty() => ok(),
        (_, "/stall/v1/chat/completions") => {
            // Ten bytes of an announced thousand, then nothing.
            let start = futures::stream::once(async {
                Ok::<_, Infallible>(Frame::data(Bytes::from_static(b"{\"choices\"")))
            });
            let never = futures::stream::pending();
            Response::builder()
                .header("content-type", "application/json")
                .header("content-length", "1000")
                .body(BodyExt::boxed(StreamBody::new(futures::StreamExt::chain(
                    start, never,
                ))))
                .unwrap()
        }
        _ => Response::builder()
            .status(StatusCode::NOT_FOUND)
            .body(full("not here"))
            .unwrap(),
    }
}

/// The two ways a client reaches `base_url`.
fn clients(base_url: &str) -> [(&'static str, EvolutionInference); 2] {
    let builder = || {
        EvolutionInference::builder()
            .base_url(base_url)
            .api_key("sk-redirects")
            .model("m")
            .max_retries(0)
            .request_timeout(Duration::from_millis(500))
    };
    let own = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::limited(5))
        .build()
        .unwrap();
    let default = builder().build().unwrap();
    let theirs = builder().http_client(own).build().unwrap();
    [
        ("default client", default),
        ("caller's reqwest client", theirs),
    ]
}

/// Asks through each client of [`clients`] under `path` and checks the
/// answer came; returns the requests the server saw for each.
async fn answered_through_both(path: &str) -> Vec<(&'static str, Vec<(String, String, String)>)> {
    let seen = Seen::default();
    let url = server(seen.clone()).await;
    let mut requests = Vec::new();
    for (which, llm) in clients(&format!("{url}{path}")) {
        seen.lock().unwrap().clear();
        let answer = llm
            .invoke("hi")
            .await
            .unwrap_or_else(|e| panic!("{which}: {e}"));
        assert_eq!(answer, "redirected fine", "{which}");
        requests.push((which, seen.lock().unwrap().clone()));
    }
    requests
}

#[tokio::test]
async fn a_same_origin_307_is_followed_with_its_body() {
    for (which, seen) in answered_through_both("/a/v1").await {
        assert_eq!(seen.len(), 2, "{which}: {seen:?}");
        assert_eq!(seen[1].0, "POST", "{which}");
        assert_eq!(seen[0].2, seen[1].2, "{which}: the body went again");
    }
}

#[tokio::test]
async fn a_303_goes_on_as_a_get_without_the_body() {
    for (which, seen) in answered_through_both("/see/v1").await {
        assert_eq!(
            seen.iter()
                .map(|(m, p, _)| (m.as_str(), p.as_str()))
                .collect::<Vec<_>>(),
            [("POST", "/see/v1/chat/completions"), ("GET", "/done")],
            "{which}"
        );
    }
}

#[tokio::test]
async fn redirects_stop_after_five() {
    let seen = Seen::default();
    let url = server(seen.clone()).await;
    for (which, llm) in clients(&format!("{url}/loop/v1")) {
        seen.lock().unwrap().clear();
        let err = llm.invoke("hi").await.unwrap_err();
        let requests = seen.lock().unwrap().len();
        match (which, &err) {
            // Ours: the sixth 308 comes back and is reported.
            ("default client", Error::Redirected { status, .. }) => {
                assert_eq!(*status, Some(308));
                assert_eq!(requests, 6, "the first and five redirects");
            }
            // reqwest's own policy reports the limit as a transport error.
            ("caller's reqwest client", Error::Connection { message, .. }) => {
                assert!(message.contains("redirect"), "{message}");
                assert_eq!(requests, 6);
            }
            _ => panic!("{which}: {err:?}"),
        }
    }
}

#[tokio::test]
async fn a_body_that_stalls_times_out() {
    let url = server(Seen::default()).await;
    for (which, llm) in clients(&format!("{url}/stall/v1")) {
        let started = std::time::Instant::now();
        let err = llm.invoke("hi").await.unwrap_err();
        assert!(matches!(err, Error::Timeout { .. }), "{which}: {err:?}");
        assert!(started.elapsed() < Duration::from_secs(5), "{which}");
    }
}

#[tokio::test]
async fn nobody_listening_is_a_connection_error() {
    // A port that was just free.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    drop(listener);
    for (which, llm) in clients(&url) {
        let err = llm.invoke("hi").await.unwrap_err();
        match &err {
            Error::Connection { message, .. } => {
                assert!(
                    message.to_lowercase().contains("refused"),
                    "{which}: {message}"
                )
            }
            other => panic!("{which}: {other:?}"),
        }
        assert!(err.is_retryable(), "{which}");
    }
}
