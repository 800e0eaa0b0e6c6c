//! A scripted HTTP server for what the emulator does not do: it answers
//! each request with the next reply of its script, then with one fixed
//! reply, and records what it saw of every request.

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::Value;

/// One scripted reply: a status, its headers and a JSON body.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: String,
}

impl Reply {
    /// `status` with `body`.
    pub fn json(status: u16, body: &Value) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: body.to_string(),
        }
    }
}

/// What the server saw of one request.
#[derive(Debug, Clone)]
pub struct Seen {
    pub bearer: Option<String>,
    pub request_id: Option<String>,
    /// Every `User-Agent` header of the request.
    pub user_agents: Vec<String>,
    pub body: Bytes,
}

/// A running server: its base URL (`…/v1`) and what it saw.
pub struct Scripted {
    pub base_url: String,
    pub seen: Arc<Mutex<Vec<Seen>>>,
}

impl Scripted {
    /// Serves `script` in turn, then `then` to every further request.
    pub async fn serve(script: Vec<Reply>, then: Reply) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base_url = format!("http://{}/v1", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let script = Arc::new((script, then));
        let served = Arc::new(AtomicUsize::new(0));
        let recorded = Arc::clone(&seen);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (script, served, seen) = (script.clone(), served.clone(), recorded.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                        let (script, served, seen) = (script.clone(), served.clone(), seen.clone());
                        async move {
                            let text = |value: &hyper::header::HeaderValue| {
                                value.to_str().unwrap().to_string()
                            };
                            let headers = request.headers();
                            let bearer = headers.get("authorization").map(text);
                            let request_id = headers.get("x-request-id").map(text);
                            let user_agents =
                                headers.get_all("user-agent").iter().map(text).collect();
                            let body = request.into_body().collect().await.unwrap().to_bytes();
                            seen.lock().unwrap().push(Seen {
                                bearer,
                                request_id,
                                user_agents,
                                body,
                            });
                            let (replies, then) = &*script;
                            let index = served.fetch_add(1, Ordering::SeqCst);
                            let reply = replies.get(index).unwrap_or(then);
                            let mut builder = Response::builder().status(reply.status);
                            for (name, value) in &reply.headers {
                                builder = builder.header(*name, value);
                            }
                            let response = builder
                                .header("content-type", "application/json")
                                .body(Full::new(Bytes::from(reply.body.clone())))
                                .unwrap();
                            Ok::<_, Infallible>(response)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Scripted { base_url, seen }
    }

    /// The JSON bodies of the requests so far.
    pub fn bodies(&self) -> Vec<Value> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .map(|seen| serde_json::from_slice(&seen.body).unwrap())
            .collect()
    }
}
