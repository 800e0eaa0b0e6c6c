//! Our client against the best Rust peer, async-openai 0.43: the same calls,
//! in the same process, against one canned local HTTPS server, the path
//! calls to Cloud.ru take.
//!
//! ```text
//! cargo bench -p evolution-langchain --bench peers
//! cargo bench -p evolution-langchain --bench peers -- --seconds 3
//! cargo bench -p evolution-langchain --bench peers -- --only seq   # or conc, stream, build, batch
//! cargo bench -p evolution-langchain --bench peers -- --ours-http2 # our client offering HTTP/2
//! ```
//!
//! `--calls ours|theirs N [--in-flight C] [--stream]` makes only N calls
//! (or streams) of one client (C at a time), for a profiler: two runs under `valgrind --tool=callgrind`
//! with different N give the instructions per call, server included, a
//! figure that does not move with the machine's load as wall time does.
//!
//! `--seconds S` is how long each client runs in each measurement (default
//! 2.5), split into rounds that alternate between the two clients (and
//! which goes first), so a noisy neighbour hurts both alike; the figure is
//! the median round. `--only` picks one measurement; other arguments (cargo
//! passes `--bench`) are ignored.
//!
//! The server runs hyper on a current-thread runtime of its own thread,
//! behind TLS 1.3 (rustls, the test certificate for `localhost` from
//! `tests/fixtures/tls`, trusted through `SSL_CERT_FILE`), and offers HTTP/2
//! and HTTP/1.1 by ALPN, with at most [`STREAM_CAP`] concurrent HTTP/2
//! streams per connection (nginx allows 128). It answers from memory:
//! `POST …/chat/completions` gets the body of
//! `tests/fixtures/llama-server.chat.json`, or with `"stream":true` in the
//! request the 1,003-chunk `tests/fixtures/llama-server.stream-long.sse`:
//! once as one body written at once (a client then reads many events per
//! read), once one event per write (as a server generating tokens sends
//! them; the `/trickle/v1` base URL). It reads each request body fully
//! before answering and keeps connections alive.
//!
//! Each client runs with its default settings: ours as a user gets it
//! (HTTP/1.1, the crate's TLS feature), async-openai with its own default
//! TLS (rustls) and HTTP/1.1 (async-openai does not enable reqwest's
//! `http2` feature; in this one binary reqwest has it, so their client is
//! built with `http1_only` to stay what a user of async-openai gets).
//! `--ours-http2` and `--theirs-http2` offer HTTP/2 instead.
//!
//! The measurements: sequential non-streamed calls (one client, a
//! current-thread runtime); 16 calls in flight through one client (a
//! multi-thread runtime with 2 workers); streams read one after another,
//! counted in chunks (current-thread), both ways the server sends them;
//! building a client, alone and with its first call (medians of 50 and
//! 30); and a batch: 600 calls, 16 and then 128 at a time, from a fresh
//! client, through a proxy that delays every read by 10 ms each way (a link
//! with 20 ms round trips: `tc netem` is not available here) to a server
//! that takes 100 ms per answer; ours over HTTP/1.1 and over HTTP/2, and
//! theirs.
//!
//! Every call's answer is checked against the fixture (the text, and for
//! streams the chunk count and the concatenated text), so a client that
//! skips work cannot post a good figure. Both send the same request body:
//! async-openai's request carries the sampling defaults ours sends
//! (`max_tokens` 512, `temperature` and `top_p` 1, both penalties 0, `n` 1),
//! and the warm-up asserts that the server read equal JSON from both.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use async_openai::config::OpenAIConfig;
use async_openai::types::chat::{
    ChatCompletionRequestUserMessage, ChatCompletionStreamOptions, CreateChatCompletionRequest,
    CreateChatCompletionRequestArgs,
};
use bytes::Bytes;
use evolution_langchain::{ChatMessage, ChatOptions, EvolutionInference};
use futures::StreamExt;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The non-streamed answer the server sends.
const CHAT_JSON: &[u8] = include_bytes!("../tests/fixtures/llama-server.chat.json");
/// The streamed answer the server sends: 1,003 chunks, then `[DONE]`.
const STREAM_SSE: &[u8] = include_bytes!("../tests/fixtures/llama-server.stream-long.sse");
/// The model named in every request (the fixture's).
const MODEL: &str = "smollm2-135m-instruct";
/// The prompt of every request.
const PROMPT: &str = "What is the capital of France?";
/// The API key both clients send.
const API_KEY: &str = "sk-peers-bench";
/// Rounds per client in each timed measurement.
const ROUNDS: u32 = 5;
/// Tasks in flight in the concurrent measurement.
const CONCURRENCY: usize = 16;
/// Clients built for each construction figure.
const BUILDS: usize = 50;
/// Clients built and used once for each "build + first call" figure.
const FIRST_CALLS: usize = 30;
/// Most concurrent HTTP/2 streams the server allows on one connection.
const STREAM_CAP: u32 = 100;
/// Calls in the batch measurement.
const BATCH_CALLS: usize = 600;
/// Calls in flight in the batch measurement.
const BATCH_CONCURRENCY: [usize; 2] = [16, 128];
/// The one-way delay of the batch measurement's link.
const LINK_DELAY: Duration = Duration::from_millis(10);
/// How long the server takes per answer in the batch measurement.
const SERVER_TIME: Duration = Duration::from_millis(100);
/// The server's certificate and key, for `localhost`.
const SERVER_CERT: &[u8] = include_bytes!("../tests/fixtures/tls/trusted-server.pem");
const SERVER_KEY: &[u8] = include_bytes!("../tests/fixtures/tls/trusted-server.key");

/// How long the server waits before each answer, in microseconds.
static SERVER_DELAY_US: AtomicU64 = AtomicU64::new(0);
/// Whether our client offers HTTP/2 (`--ours-http2`).
static OURS_HTTP2: AtomicBool = AtomicBool::new(false);
/// Whether async-openai's client offers HTTP/2 (`--theirs-http2`).
static THEIRS_HTTP2: AtomicBool = AtomicBool::new(false);

/// What the clients must get back, read from the fixtures.
#[derive(Clone)]
struct Expected {
    /// The non-streamed answer's text.
    answer: String,
    /// Chunks in the stream (`[DONE]` excluded).
    chunks: usize,
    /// The streamed text, all deltas joined.
    streamed_text: String,
}

impl Expected {
    /// Reads the fixtures the server serves.
    fn from_fixtures() -> Self {
        let chat: Value = serde_json::from_slice(CHAT_JSON).expect("chat fixture is JSON");
        let answer = chat["choices"][0]["message"]["content"]
            .as_str()
            .expect("chat fixture has an answer")
            .to_string();
        let text = std::str::from_utf8(STREAM_SSE).expect("stream fixture is UTF-8");
        let mut chunks = 0;
        let mut streamed_text = String::new();
        for data in text.lines().filter_map(|line| line.strip_prefix("data: ")) {
            if data == "[DONE]" {
                break;
            }
            chunks += 1;
            let chunk: Value = serde_json::from_str(data).expect("stream chunk is JSON");
            if let Some(content) = chunk["choices"][0]["delta"]["content"].as_str() {
                streamed_text.push_str(content);
            }
        }
        Self {
            answer,
            chunks,
            streamed_text,
        }
    }
}

/// The command line: `--seconds S`, `--only NAME`; anything else is ignored.
struct Args {
    /// Seconds each client runs in each timed measurement.
    seconds: f64,
    /// The one measurement to run, if chosen.
    only: Option<String>,
    /// `--calls ours|theirs N`: only N sequential calls of one client, for
    /// a profiler (e.g. callgrind, where two runs with different N give the
    /// instructions per call, server included).
    calls: Option<(Kind, u64)>,
    /// `--in-flight N`: with `--calls`, N calls at a time (default 1).
    in_flight: usize,
    /// `--stream`: with `--calls`, streams (1,003 chunks each) instead.
    stream: bool,
    /// `--ours-http2`: our client offers HTTP/2.
    ours_http2: bool,
    /// `--theirs-http2`: async-openai's client offers HTTP/2.
    theirs_http2: bool,
}

impl Args {
    /// Reads the process arguments.
    fn parse() -> Self {
        let mut args = Self {
            seconds: 2.5,
            only: None,
            calls: None,
            in_flight: 1,
            stream: false,
            ours_http2: false,
            theirs_http2: false,
        };
        let mut argv = std::env::args().skip(1);
        while let Some(arg) = argv.next() {
            let (name, inline) = match arg.split_once('=') {
                Some((name, value)) => (name.to_string(), Some(value.to_string())),
                None => (arg, None),
            };
            match name.as_str() {
                "--seconds" => {
                    let value = inline.or_else(|| argv.next()).unwrap_or_default();
                    args.seconds = value
                        .parse()
                        .ok()
                        .filter(|s: &f64| *s > 0.0)
                        .unwrap_or_else(|| {
                            panic!("--seconds wants a positive number, not {value:?}")
                        });
                }
                "--only" => {
                    let value = inline.or_else(|| argv.next()).unwrap_or_default();
                    assert!(
                        ["seq", "conc", "stream", "build", "batch"].contains(&value.as_str()),
                        "--only wants seq, conc, stream, build or batch, not {value:?}"
                    );
                    args.only = Some(value);
                }
                "--calls" => {
                    let kind = inline.or_else(|| argv.next()).unwrap_or_default();
                    let kind = match kind.as_str() {
                        "ours" => Kind::Ours,
                        "theirs" => Kind::Theirs,
                        _ => panic!("--calls wants ours or theirs, not {kind:?}"),
                    };
                    let count = argv.next().unwrap_or_default();
                    let count = count
                        .parse()
                        .unwrap_or_else(|_| panic!("--calls wants a count, not {count:?}"));
                    args.calls = Some((kind, count));
                }
                "--in-flight" => {
                    let value = inline.or_else(|| argv.next()).unwrap_or_default();
                    args.in_flight = value
                        .parse()
                        .ok()
                        .filter(|n| *n > 0)
                        .unwrap_or_else(|| panic!("--in-flight wants a count, not {value:?}"));
                }
                "--stream" => args.stream = true,
                "--ours-http2" => args.ours_http2 = true,
                "--theirs-http2" => args.theirs_http2 = true,
                _ => {} // `--bench` from cargo, filters and the like
            }
        }
        args
    }

    /// Whether measurement `name` runs.
    fn runs(&self, name: &str) -> bool {
        self.only.as_deref().is_none_or(|only| only == name)
    }

    /// How long each round lasts.
    fn round(&self) -> Duration {
        Duration::from_secs_f64(self.seconds / f64::from(ROUNDS))
    }
}

/// Starts the canned HTTPS server on a thread of its own; returns its
/// address.
fn start_server() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    let addr: SocketAddr = listener.local_addr().expect("local address");
    listener
        .set_nonblocking(true)
        .expect("non-blocking listener");
    std::thread::Builder::new()
        .name("canned-server".into())
        .spawn(move || current_thread().block_on(serve(listener)))
        .expect("server thread");
    addr
}

/// The server's TLS setup: the `localhost` certificate, HTTP/2 and HTTP/1.1
/// offered.
fn acceptor() -> tokio_rustls::TlsAcceptor {
    let certs = CertificateDer::pem_slice_iter(SERVER_CERT)
        .collect::<Result<Vec<_>, _>>()
        .expect("the server certificate");
    let key = PrivateKeyDer::from_pem_slice(SERVER_KEY).expect("the server key");
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("a server TLS setup");
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

/// Accepts connections forever, each served over TLS with keep-alive, in
/// HTTP/2 or HTTP/1.1 as the client chose.
async fn serve(listener: std::net::TcpListener) {
    let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
    let acceptor = acceptor();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(stream).await else {
                return;
            };
            let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            builder.http2().max_concurrent_streams(STREAM_CAP);
            let _ = builder
                .serve_connection(TokioIo::new(tls), hyper::service::service_fn(answer))
                .await;
        });
    }
}

/// A TCP proxy to `target` that delays everything it forwards by `delay`,
/// each way, keeping the order: a link with `2 × delay` round trips.
fn start_delaying_proxy(target: SocketAddr, delay: Duration) -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("local address");
    listener
        .set_nonblocking(true)
        .expect("non-blocking listener");
    std::thread::Builder::new()
        .name("delaying-proxy".into())
        .spawn(move || {
            current_thread().block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                loop {
                    let Ok((client, _)) = listener.accept().await else {
                        continue;
                    };
                    tokio::spawn(async move {
                        let Ok(server) = tokio::net::TcpStream::connect(target).await else {
                            return;
                        };
                        let _ = (client.set_nodelay(true), server.set_nodelay(true));
                        let (client_read, client_write) = client.into_split();
                        let (server_read, server_write) = server.into_split();
                        tokio::spawn(delayed_copy(client_read, server_write, delay));
                        tokio::spawn(delayed_copy(server_read, client_write, delay));
                    });
                }
            })
        })
        .expect("proxy thread");
    addr
}

/// Copies `from` to `to`, each piece written `delay` after it was read.
async fn delayed_copy(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    delay: Duration,
) {
    let (sender, mut receiver) = tokio::sync::mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let writer = tokio::spawn(async move {
        while let Some((due, piece)) = receiver.recv().await {
            tokio::time::sleep_until(due.into()).await;
            if to.write_all(&piece).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    });
    let mut buffer = vec![0u8; 64 * 1024];
    while let Ok(n) = from.read(&mut buffer).await {
        if n == 0
            || sender
                .send((Instant::now() + delay, buffer[..n].to_vec()))
                .is_err()
        {
            break;
        }
    }
    drop(sender);
    let _ = writer.await;
}

/// The base URL of the server at `addr` (by name: the certificate is for
/// `localhost`).
fn base_url(addr: SocketAddr) -> String {
    format!("https://localhost:{}/v1", addr.port())
}

/// The body of the last non-streamed chat request the server read.
static LAST_REQUEST: std::sync::Mutex<Option<Bytes>> = std::sync::Mutex::new(None);

/// A reply body: all at once, or one SSE event per write.
type Body = BoxBody<Bytes, Infallible>;

/// The path prefix under which streams come one event per write.
const TRICKLE: &str = "/trickle";

/// The stream fixture cut into its events (each with its blank line).
fn sse_events() -> &'static [Bytes] {
    static EVENTS: OnceLock<Vec<Bytes>> = OnceLock::new();
    EVENTS.get_or_init(|| {
        let mut events = Vec::new();
        let mut start = 0;
        for end in memchr::memmem::find_iter(STREAM_SSE, b"\n\n") {
            events.push(Bytes::from_static(&STREAM_SSE[start..end + 2]));
            start = end + 2;
        }
        if start < STREAM_SSE.len() {
            events.push(Bytes::from_static(&STREAM_SSE[start..]));
        }
        events
    })
}

/// One canned reply, after reading the whole request body. Under
/// [`TRICKLE`] a stream is written one event at a time, each after a
/// yield, so that hyper flushes it on its own, as a server generating
/// tokens does; elsewhere the whole body goes out at once.
async fn answer(request: Request<Incoming>) -> Result<Response<Body>, hyper::Error> {
    let path = request.uri().path();
    let is_chat = request.method() == Method::POST && path.ends_with("/chat/completions");
    let trickle = path.starts_with(TRICKLE);
    let body = request.into_body().collect().await?.to_bytes();
    let delay = SERVER_DELAY_US.load(Ordering::Relaxed);
    if delay > 0 {
        tokio::time::sleep(Duration::from_micros(delay)).await;
    }
    if is_chat && memchr::memmem::find(&body, b"\"stream\":true").is_none() {
        *LAST_REQUEST.lock().expect("request lock") = Some(body.clone());
    }
    let reply = |status, content_type, body: Body| {
        Response::builder()
            .status(status)
            .header("content-type", content_type)
            .body(body)
            .expect("a valid response")
    };
    let whole = |bytes: &'static [u8]| Full::new(Bytes::from_static(bytes)).boxed();
    Ok(if !is_chat {
        reply(StatusCode::NOT_FOUND, "text/plain", whole(b"not found"))
    } else if memchr::memmem::find(&body, b"\"stream\":true").is_none() {
        reply(StatusCode::OK, "application/json", whole(CHAT_JSON))
    } else if trickle {
        let frames = futures::stream::iter(sse_events().iter().cloned()).then(|event| async {
            tokio::task::yield_now().await;
            Ok::<_, Infallible>(Frame::data(event))
        });
        reply(
            StatusCode::OK,
            "text/event-stream",
            BodyExt::boxed(StreamBody::new(frames)),
        )
    } else {
        reply(StatusCode::OK, "text/event-stream", whole(STREAM_SSE))
    })
}

/// Which client.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    /// `evolution_langchain::EvolutionInference`.
    Ours,
    /// `async_openai::Client<OpenAIConfig>`.
    Theirs,
}

impl Kind {
    /// Both, in the order a round runs them: alternating who goes first.
    fn order(round: u32) -> [Kind; 2] {
        if round.is_multiple_of(2) {
            [Kind::Ours, Kind::Theirs]
        } else {
            [Kind::Theirs, Kind::Ours]
        }
    }
}

/// A client with its prepared request.
#[allow(clippy::large_enum_variant)] // two of them live for the whole run
enum Peer {
    /// Ours, with the conversation it sends.
    Ours {
        /// The client.
        client: EvolutionInference,
        /// The one user message.
        messages: Vec<ChatMessage>,
        /// No per-call options.
        options: ChatOptions,
    },
    /// async-openai's, with the request it sends (cloned for each call, as
    /// `create` takes it by value).
    Theirs {
        /// The client.
        client: async_openai::Client<OpenAIConfig>,
        /// The request.
        request: CreateChatCompletionRequest,
    },
}

impl Peer {
    /// Builds a client of `kind` for `base_url`, offering HTTP/2 as the
    /// command line says.
    fn build(kind: Kind, base_url: &str) -> Peer {
        let http2 = match kind {
            Kind::Ours => OURS_HTTP2.load(Ordering::Relaxed),
            Kind::Theirs => THEIRS_HTTP2.load(Ordering::Relaxed),
        };
        Self::build_with(kind, base_url, http2)
    }

    /// Builds a client of `kind` for `base_url`, offering HTTP/2 if `http2`.
    fn build_with(kind: Kind, base_url: &str, http2: bool) -> Peer {
        match kind {
            Kind::Ours => Peer::Ours {
                client: EvolutionInference::builder()
                    .base_url(base_url)
                    .api_key(API_KEY)
                    .model(MODEL)
                    .http2(http2)
                    .build()
                    .expect("our client builds"),
                messages: vec![ChatMessage::user(PROMPT)],
                options: ChatOptions::default(),
            },
            Kind::Theirs => {
                // What async-openai builds itself (`reqwest::Client::new()`),
                // with the HTTP versions of a build of async-openai alone.
                let mut http = reqwest::Client::builder();
                if !http2 {
                    http = http.http1_only();
                }
                Peer::Theirs {
                    client: async_openai::Client::build(
                        http.build().expect("their reqwest client"),
                        OpenAIConfig::new()
                            .with_api_base(base_url)
                            .with_api_key(API_KEY),
                    ),
                    request: their_request(),
                }
            }
        }
    }

    /// The last non-streamed request body the server got from this peer's
    /// calls, as JSON.
    async fn request_body(&self, expected: &Expected) -> Value {
        self.call(expected).await;
        let body = LAST_REQUEST
            .lock()
            .expect("request lock")
            .clone()
            .expect("the server saw a request");
        serde_json::from_slice(&body).expect("the request body is JSON")
    }

    /// One non-streamed call; panics unless the answer is the fixture's.
    async fn call(&self, expected: &Expected) {
        match self {
            Peer::Ours {
                client,
                messages,
                options,
            } => {
                let response = client.chat(messages, options).await.expect("our call");
                assert_eq!(response.answer(), Some(expected.answer.as_str()));
            }
            Peer::Theirs { client, request } => {
                let response = client
                    .chat()
                    .create(request.clone())
                    .await
                    .expect("async-openai call");
                assert_eq!(
                    response.choices[0].message.content.as_deref(),
                    Some(expected.answer.as_str())
                );
            }
        }
    }

    /// One stream read to its end; panics unless every chunk came and the
    /// text is the fixture's. Returns the chunks received.
    async fn stream(&self, expected: &Expected) -> usize {
        let mut chunks = 0;
        let mut text = String::with_capacity(expected.streamed_text.len());
        match self {
            Peer::Ours {
                client,
                messages,
                options,
            } => {
                let mut stream = client
                    .stream_chat(messages, options)
                    .await
                    .expect("our stream opens");
                while let Some(chunk) = stream.next().await {
                    let chunk = chunk.expect("our stream chunk");
                    chunks += 1;
                    text.push_str(chunk.content().unwrap_or_default());
                }
            }
            Peer::Theirs { client, request } => {
                // Streamed as ours streams: usage asked for in the last chunk.
                let mut request = request.clone();
                request.stream = Some(true);
                request.stream_options = Some(ChatCompletionStreamOptions {
                    include_usage: Some(true),
                    ..Default::default()
                });
                let mut stream = client
                    .chat()
                    .create_stream(request)
                    .await
                    .expect("async-openai stream opens");
                while let Some(chunk) = stream.next().await {
                    let chunk = chunk.expect("async-openai stream chunk");
                    chunks += 1;
                    if let Some(content) = chunk
                        .choices
                        .first()
                        .and_then(|c| c.delta.content.as_deref())
                    {
                        text.push_str(content);
                    }
                }
            }
        }
        assert_eq!(chunks, expected.chunks, "chunks received");
        assert!(text == expected.streamed_text, "streamed text differs");
        chunks
    }
}

/// async-openai's request: the one our client sends by default, field for
/// field (the sampling defaults of the original Python client included), so
/// that the server reads the same bytes from both; [`warm_peers`] checks it.
fn their_request() -> CreateChatCompletionRequest {
    #[allow(deprecated)] // `max_tokens` is what our client sends
    CreateChatCompletionRequestArgs::default()
        .model(MODEL)
        .messages([ChatCompletionRequestUserMessage::from(PROMPT).into()])
        .max_tokens(512u32)
        .temperature(1.0)
        .top_p(1.0)
        .frequency_penalty(0.0)
        .presence_penalty(0.0)
        .n(1)
        .stream(false)
        .build()
        .expect("a valid async-openai request")
}

/// Runs `work` (which returns how many units it did) over and over for
/// `duration`; returns units per second.
async fn rate<F, Fut>(duration: Duration, mut work: F) -> f64
where
    F: FnMut() -> Fut,
    Fut: Future<Output = usize>,
{
    let started = Instant::now();
    let mut units = 0;
    while started.elapsed() < duration {
        units += work().await;
    }
    units as f64 / started.elapsed().as_secs_f64()
}

/// The middle value (the upper one of an even count).
fn median(values: &mut [f64]) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values[values.len() / 2]
}

/// A figure for both clients.
struct Row {
    /// What was measured, with its unit.
    name: &'static str,
    /// Ours.
    ours: f64,
    /// async-openai's.
    theirs: f64,
    /// Whether higher is better (a rate) or lower (a time).
    higher_is_better: bool,
}

impl Row {
    /// Ours / theirs.
    fn ratio(&self) -> f64 {
        self.ours / self.theirs
    }

    /// Prints the row as a table line.
    fn print(&self) {
        let figure = |v: f64| {
            if self.higher_is_better {
                format!("{v:.0}")
            } else {
                format!("{:.1} µs", v * 1e6)
            }
        };
        println!(
            "{:<31} ours {:>11}  async-openai {:>11}  ratio {:.2}× ({} is better)",
            self.name,
            figure(self.ours),
            figure(self.theirs),
            self.ratio(),
            if self.higher_is_better {
                "higher"
            } else {
                "lower"
            },
        );
    }
}

/// Timed rounds of `work` for both clients (0 ours, 1 theirs),
/// alternating; the medians.
async fn rounds<F, Fut>(args: &Args, what: &str, mut work: F) -> (f64, f64)
where
    F: FnMut(usize, Duration) -> Fut,
    Fut: Future<Output = f64>,
{
    let mut ours = Vec::new();
    let mut theirs = Vec::new();
    for round in 0..ROUNDS {
        for kind in Kind::order(round) {
            let (index, figures) = match kind {
                Kind::Ours => (0, &mut ours),
                Kind::Theirs => (1, &mut theirs),
            };
            figures.push(work(index, args.round()).await);
        }
    }
    println!(
        "  {what} rounds: ours [{}]  async-openai [{}]",
        join(&ours),
        join(&theirs)
    );
    (median(&mut ours), median(&mut theirs))
}

/// Both clients, built in the current runtime and warmed up (connection
/// open, first reply decoded).
async fn warm_peers(base_url: &str, expected: &Expected) -> [Peer; 2] {
    let peers = [
        Peer::build(Kind::Ours, base_url),
        Peer::build(Kind::Theirs, base_url),
    ];
    assert_eq!(
        peers[0].request_body(expected).await,
        peers[1].request_body(expected).await,
        "both clients send the same request"
    );
    for peer in &peers {
        for _ in 0..200 {
            peer.call(expected).await;
        }
        peer.stream(expected).await;
    }
    peers
}

/// (a) One client, one call at a time, on a current-thread runtime.
fn sequential(args: &Args, base_url: &str, expected: &Expected) -> Row {
    let runtime = current_thread();
    let (ours, theirs) = runtime.block_on(async {
        let peers = warm_peers(base_url, expected).await;
        let peers = &peers;
        rounds(args, "sequential calls/s", |index, duration| {
            let peer = &peers[index];
            rate(duration, move || async move {
                peer.call(expected).await;
                1
            })
        })
        .await
    });
    Row {
        name: "sequential calls/s",
        ours,
        theirs,
        higher_is_better: true,
    }
}

/// (b) One client shared by 16 tasks, each calling in a loop, on a
/// multi-thread runtime with 2 workers (the machine's cores; the server
/// thread competes with them).
fn concurrent(args: &Args, base_url: &str, expected: &Expected) -> Row {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("multi-thread runtime");
    let expected = std::sync::Arc::new(expected.clone());
    let (ours, theirs) = runtime.block_on(async {
        let peers = std::sync::Arc::new(warm_peers(base_url, &expected).await);
        let mut ours = Vec::new();
        let mut theirs = Vec::new();
        for round in 0..ROUNDS {
            for kind in Kind::order(round) {
                let index = usize::from(kind == Kind::Theirs);
                let duration = args.round();
                let started = Instant::now();
                let tasks: Vec<_> = (0..CONCURRENCY)
                    .map(|_| {
                        let peers = std::sync::Arc::clone(&peers);
                        let expected = std::sync::Arc::clone(&expected);
                        tokio::spawn(async move {
                            let mut calls = 0usize;
                            while started.elapsed() < duration {
                                peers[index].call(&expected).await;
                                calls += 1;
                            }
                            calls
                        })
                    })
                    .collect();
                let mut calls = 0;
                for task in tasks {
                    calls += task.await.expect("a concurrent task");
                }
                let figure = calls as f64 / started.elapsed().as_secs_f64();
                match kind {
                    Kind::Ours => ours.push(figure),
                    Kind::Theirs => theirs.push(figure),
                }
            }
        }
        println!(
            "  {CONCURRENCY} concurrent calls/s rounds: ours [{}]  async-openai [{}]",
            join(&ours),
            join(&theirs)
        );
        (median(&mut ours), median(&mut theirs))
    });
    Row {
        name: "16 concurrent calls/s",
        ours,
        theirs,
        higher_is_better: true,
    }
}

/// Rates as a space-separated list.
fn join(values: &[f64]) -> String {
    values
        .iter()
        .map(|f| format!("{f:.0}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// (c) Streams read one after another on a current-thread runtime; chunks
/// per second. `trickle`: the server writes one event at a time (else the
/// whole body at once, so the client gets many events per read).
fn streaming(args: &Args, base_url: &str, expected: &Expected, trickle: bool) -> Row {
    let (name, base_url) = if trickle {
        let (origin, path) =
            base_url.split_at(base_url.find("/v1").expect("the base URL ends in /v1"));
        (
            "stream chunks/s, 1 event/write",
            format!("{origin}{TRICKLE}{path}"),
        )
    } else {
        ("stream chunks/s, whole body", base_url.to_string())
    };
    let runtime = current_thread();
    let (ours, theirs) = runtime.block_on(async {
        let peers = warm_peers(&base_url, expected).await;
        let peers = &peers;
        rounds(args, name, |index, duration| {
            let peer = &peers[index];
            rate(duration, move || peer.stream(expected))
        })
        .await
    });
    Row {
        name,
        ours,
        theirs,
        higher_is_better: true,
    }
}

/// (d) Building a client, and building one and making its first call (a
/// fresh connection): medians, in seconds, on a current-thread runtime.
fn construction(base_url: &str, expected: &Expected) -> [Row; 2] {
    let runtime = current_thread();
    runtime.block_on(async {
        // Warm the process (TLS library initialisation, lazy statics) first.
        for kind in [Kind::Ours, Kind::Theirs] {
            Peer::build(kind, base_url).call(expected).await;
        }
        // In rounds of ten builds of one client after the other's ten, so
        // that a build is not charged for freeing the other's garbage
        // (glibc consolidates freed blocks on a later allocation: after
        // async-openai drops a parsed CA bundle, that took our next build
        // from 16 µs to over a millisecond).
        let mut build = [Vec::new(), Vec::new()];
        for round in 0..(BUILDS / 10) {
            for kind in Kind::order(round as u32) {
                for _ in 0..10 {
                    let started = Instant::now();
                    let peer = Peer::build(kind, base_url);
                    build[usize::from(kind == Kind::Theirs)].push(started.elapsed().as_secs_f64());
                    drop(peer);
                }
            }
        }
        let mut first = [Vec::new(), Vec::new()];
        for round in 0..(FIRST_CALLS / 10) {
            for kind in Kind::order(round as u32) {
                for _ in 0..10 {
                    let started = Instant::now();
                    let peer = Peer::build(kind, base_url);
                    peer.call(expected).await;
                    first[usize::from(kind == Kind::Theirs)].push(started.elapsed().as_secs_f64());
                    drop(peer);
                }
            }
        }
        let [build_ours, build_theirs] = &mut build;
        let [first_ours, first_theirs] = &mut first;
        [
            Row {
                name: "client build (median)",
                ours: median(build_ours),
                theirs: median(build_theirs),
                higher_is_better: false,
            },
            Row {
                name: "build + first call (median)",
                ours: median(first_ours),
                theirs: median(first_theirs),
                higher_is_better: false,
            },
        ]
    })
}

/// (e) A batch from a fresh client: [`BATCH_CALLS`] calls, `concurrency`
/// at a time, over a link with [`LINK_DELAY`] each way to a server that
/// takes [`SERVER_TIME`] per answer; calls per second (wall clock). Ours
/// over HTTP/1.1, ours over HTTP/2, theirs as set.
fn batch(server: SocketAddr, expected: &Expected) -> Vec<Row> {
    let proxy = base_url(start_delaying_proxy(server, LINK_DELAY));
    SERVER_DELAY_US.store(SERVER_TIME.as_micros() as u64, Ordering::Relaxed);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("multi-thread runtime");
    let expected = Arc::new(expected.clone());
    let run = |kind: Kind, http2: bool, concurrency: usize| {
        let expected = Arc::clone(&expected);
        let proxy = proxy.clone();
        runtime.block_on(async move {
            let peer = Arc::new(Peer::build_with(kind, &proxy, http2));
            let started = Instant::now();
            let done = futures::stream::iter(0..BATCH_CALLS)
                .map(|_| {
                    let (peer, expected) = (Arc::clone(&peer), Arc::clone(&expected));
                    async move { peer.call(&expected).await }
                })
                .buffer_unordered(concurrency)
                .count()
                .await;
            assert_eq!(done, BATCH_CALLS);
            BATCH_CALLS as f64 / started.elapsed().as_secs_f64()
        })
    };
    let theirs_http2 = THEIRS_HTTP2.load(Ordering::Relaxed);
    let mut rows = Vec::new();
    for concurrency in BATCH_CONCURRENCY {
        // Two rounds each, alternating, the better kept (a batch is long
        // enough that the machine's noise shows as a slow round, not a fast one).
        let mut figures = [0.0f64; 3];
        for _ in 0..2 {
            for (slot, (kind, http2)) in [
                (Kind::Ours, false),
                (Kind::Ours, true),
                (Kind::Theirs, theirs_http2),
            ]
            .into_iter()
            .enumerate()
            {
                figures[slot] = figures[slot].max(run(kind, http2, concurrency));
            }
        }
        println!(
            "  batch of {BATCH_CALLS}, {concurrency} in flight: ours HTTP/1.1 {:.0}/s, ours HTTP/2 {:.0}/s, async-openai {:.0}/s",
            figures[0], figures[1], figures[2]
        );
        let name: &'static str = if concurrency == BATCH_CONCURRENCY[0] {
            "batch calls/s, 16 in flight"
        } else {
            "batch calls/s, 128 in flight"
        };
        rows.push(Row {
            name,
            ours: figures[0],
            theirs: figures[2],
            higher_is_better: true,
        });
    }
    SERVER_DELAY_US.store(0, Ordering::Relaxed);
    rows
}

/// A current-thread runtime with time and I/O.
fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("current-thread runtime")
}

fn main() {
    let args = Args::parse();
    OURS_HTTP2.store(args.ours_http2, Ordering::Relaxed);
    THEIRS_HTTP2.store(args.theirs_http2, Ordering::Relaxed);
    // Both clients trust the test CA, as the system's roots, before either
    // is built (both TLS setups read SSL_CERT_FILE).
    std::env::set_var(
        "SSL_CERT_FILE",
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/tls/trusted-ca.pem"
        ),
    );
    std::env::remove_var("SSL_CERT_DIR");
    let expected = Expected::from_fixtures();
    let server = start_server();
    let base_url = base_url(server);
    if let Some((kind, count)) = args.calls {
        current_thread().block_on(async {
            let peer = Peer::build(kind, &base_url);
            let peer = &peer;
            let expected = &expected;
            futures::stream::iter(0..count)
                .for_each_concurrent(args.in_flight, |_| async move {
                    if args.stream {
                        peer.stream(expected).await;
                    } else {
                        peer.call(expected).await;
                    }
                })
                .await;
        });
        println!(
            "{count} {} made, {} at a time",
            if args.stream { "streams" } else { "calls" },
            args.in_flight
        );
        return;
    }
    println!(
        "peers: evolution-langchain (HTTP/{}) vs async-openai 0.43 (HTTP/{}) against {base_url} \
         ({:.1} s per client per measurement, {ROUNDS} alternating rounds, medians)",
        if args.ours_http2 { "2 offered" } else { "1.1" },
        if args.theirs_http2 {
            "2 offered"
        } else {
            "1.1"
        },
        args.seconds
    );
    let mut rows = Vec::new();
    if args.runs("seq") {
        rows.push(sequential(&args, &base_url, &expected));
        rows.last().unwrap().print();
    }
    if args.runs("conc") {
        rows.push(concurrent(&args, &base_url, &expected));
        rows.last().unwrap().print();
    }
    if args.runs("stream") {
        for trickle in [false, true] {
            rows.push(streaming(&args, &base_url, &expected, trickle));
            rows.last().unwrap().print();
        }
    }
    if args.runs("build") {
        for row in construction(&base_url, &expected) {
            row.print();
            rows.push(row);
        }
    }
    if args.runs("batch") {
        for row in batch(server, &expected) {
            row.print();
            rows.push(row);
        }
    }
    println!();
    for row in &rows {
        row.print();
    }
}
