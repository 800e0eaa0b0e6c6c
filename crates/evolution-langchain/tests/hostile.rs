//! Hostile and broken servers: redirects to other origins, error heads with
//! bodies that never come, replies over the size limits, absurd
//! `Retry-After` values, tokens no header can carry, streams kept open.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use evolution_emulator::{Fault, Target};
use evolution_langchain::{
    AuthError, ChatMessage, ChatOptions, Error, EvolutionInference, TokenManager,
};
use futures::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use common::{client, emulator};

/// A loopback port that counts the connections it receives and answers
/// none of them.
async fn bystander() -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            seen.fetch_add(1, Ordering::SeqCst);
            drop(socket);
        }
    });
    (url, count)
}

/// A server that answers every request with `200`, `content_type` and
/// `body`, without `Content-Length` (the body ends when the connection does).
async fn fixed_server(content_type: &'static str, body: Vec<u8>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let body = Arc::new(body);
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let body = body.clone();
            tokio::spawn(async move {
                // Read the request head and whatever body came with it.
                let mut buffer = vec![0u8; 64 * 1024];
                let _ = socket.read(&mut buffer).await;
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: {content_type}\r\nconnection: close\r\n\r\n"
                );
                let _ = socket.write_all(head.as_bytes()).await;
                let _ = socket.write_all(&body).await;
                let _ = socket.shutdown().await;
            });
        }
    });
    url
}

/// `json` padded with spaces to exactly `len` bytes.
fn padded(json: &str, len: usize) -> Vec<u8> {
    assert!(json.len() <= len);
    let mut body = json.as_bytes().to_vec();
    body.resize(len, b' ');
    body
}

fn quick(builder: evolution_langchain::EvolutionInferenceBuilder) -> EvolutionInference {
    builder
        .max_retries(0)
        .request_timeout(Duration::from_millis(400))
        .build()
        .unwrap()
}

#[tokio::test]
async fn an_iam_redirect_to_another_port_is_not_followed() {
    let emu = emulator().await;
    let (elsewhere, connections) = bystander().await;
    for status in [307, 308, 302] {
        emu.inject(
            Target::Auth,
            Fault::Redirect(status, format!("{elsewhere}/api/v1/auth/token")),
            1,
        );
        let err = quick(client(&emu)).invoke("hi").await.unwrap_err();
        match &err {
            Error::Auth(AuthError::Redirected {
                status: got,
                location,
                ..
            }) => {
                assert_eq!(*got, Some(status));
                assert!(location.starts_with(&elsewhere), "{location}");
            }
            other => panic!("{status}: {other:?}"),
        }
        assert!(err.to_string().contains(&elsewhere), "{err}");
        assert!(err.to_string().contains("auth_url"), "{err}");
    }
    assert_eq!(connections.load(Ordering::SeqCst), 0);
    assert_eq!(emu.counters().auth_requests, 3, "a redirect is not retried");
    assert_eq!(emu.counters().chat_requests, 0);
}

#[tokio::test]
async fn a_model_api_redirect_is_not_an_auth_failure() {
    let emu = emulator().await;
    let (elsewhere, connections) = bystander().await;
    let llm = quick(client(&emu));
    for status in [302, 307] {
        emu.inject(
            Target::Chat,
            Fault::Redirect(status, format!("{elsewhere}/v1/chat/completions")),
            1,
        );
        let err = llm.invoke("hi").await.unwrap_err();
        assert!(
            matches!(&err, Error::Redirected { status: Some(s), location, .. }
                if *s == status && location.starts_with(&elsewhere)),
            "{err:?}"
        );
        assert!(err.request_id().is_some(), "{err:?}");
        assert!(err.to_string().contains("base_url"), "{err}");
        // Streams too.
        emu.inject(
            Target::Chat,
            Fault::Redirect(status, format!("{elsewhere}/v1/chat/completions")),
            1,
        );
        let err = llm.stream("hi").await.unwrap_err();
        assert!(matches!(err, Error::Redirected { .. }), "{err:?}");
    }
    assert_eq!(connections.load(Ordering::SeqCst), 0);
    // One token for all four calls: a redirect is no reason to refresh it.
    assert_eq!(emu.counters().auth_requests, 1);
}

#[tokio::test]
async fn a_client_of_the_callers_is_still_held_to_the_origin() {
    let emu = emulator().await;
    let (elsewhere, _) = bystander().await;
    let own = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let llm = quick(client(&emu).http_client(own));
    emu.inject(Target::Chat, Fault::Redirect(302, elsewhere.clone()), 1);
    let err = llm.invoke("hi").await.unwrap_err();
    assert!(matches!(err, Error::Redirected { .. }), "{err:?}");
    emu.inject(Target::Auth, Fault::Redirect(307, elsewhere), 1);
    llm.token_manager().unwrap().invalidate();
    let err = llm.invoke("hi").await.unwrap_err();
    assert!(
        matches!(err, Error::Auth(AuthError::Redirected { .. })),
        "{err:?}"
    );
}

/// Runs `call` and checks it failed with a timeout within three request
/// timeouts (one attempt, generously bounded).
async fn times_out<F, T>(what: &str, timeout: Duration, call: F)
where
    F: std::future::Future<Output = Result<T, Error>>,
    T: std::fmt::Debug,
{
    let started = Instant::now();
    let outcome = tokio::time::timeout(timeout * 10, call)
        .await
        .unwrap_or_else(|_| panic!("{what}: hung"));
    let err = outcome.expect_err(what);
    assert!(matches!(err, Error::Timeout { .. }), "{what}: {err:?}");
    assert!(
        started.elapsed() < timeout * 3,
        "{what}: took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn error_heads_with_stalled_bodies_time_out() {
    let emu = emulator().await;
    let timeout = Duration::from_millis(400);
    let llm = quick(client(&emu));
    let streaming = quick(client(&emu).streaming(true));
    let messages = [ChatMessage::user("hi")];

    for status in [500, 401] {
        // 401 twice: the first one makes the client refresh and try again.
        let times = if status == 401 { 2 } else { 1 };
        emu.inject(Target::Chat, Fault::StallBody(status), times);
        times_out(
            &format!("stream_chat {status}"),
            timeout,
            llm.stream_chat(&messages, ChatOptions::default()),
        )
        .await;
        emu.inject(Target::Chat, Fault::StallBody(status), times);
        times_out(
            &format!("streaming chat {status}"),
            timeout,
            streaming.chat(&messages, ChatOptions::default()),
        )
        .await;
        emu.inject(Target::Chat, Fault::StallBody(status), times);
        times_out(
            &format!("chat {status}"),
            timeout,
            llm.chat(&messages, ChatOptions::default()),
        )
        .await;
    }
    // And with a fixed API key (no refresh), the 401 body itself.
    let keyed = Emulator::builder_with_key().await;
    let llm = quick(
        EvolutionInference::builder()
            .model(keyed.default_model())
            .api_key(keyed.api_key().unwrap())
            .base_url(keyed.base_url()),
    );
    keyed.inject(Target::Chat, Fault::StallBody(401), 1);
    times_out("api key 401", timeout, llm.stream("hi")).await;
}

/// A second emulator, with an API key.
struct Emulator;
impl Emulator {
    async fn builder_with_key() -> evolution_emulator::EmulatorHandle {
        evolution_emulator::Emulator::builder()
            .api_key("hostile-test-key")
            .start()
            .await
            .unwrap()
    }
}

#[tokio::test]
async fn a_stalled_iam_body_times_out() {
    let emu = emulator().await;
    emu.inject(Target::Auth, Fault::StallBody(200), 1);
    let manager = TokenManager::builder()
        .key_id(emu.key_id())
        .secret(emu.secret())
        .auth_url(emu.auth_url())
        .timeout(Duration::from_millis(400))
        .max_retries(0)
        .build()
        .unwrap();
    let started = Instant::now();
    let err = manager.get_token().await.unwrap_err();
    assert!(
        matches!(err, Error::Auth(AuthError::Timeout { .. })),
        "{err:?}"
    );
    assert!(started.elapsed() < Duration::from_millis(1200));
}

#[tokio::test]
async fn json_replies_over_the_limit_fail_with_the_limit() {
    const LIMIT: usize = 4096;
    let models = r#"{"object":"list","data":[{"id":"m","object":"model"}]}"#;
    for (len, ok) in [(LIMIT, true), (LIMIT + 1, false)] {
        let url = fixed_server("application/json", padded(models, len)).await;
        let llm = quick(
            EvolutionInference::builder()
                .api_key("k")
                .base_url(format!("{url}/v1"))
                .max_response_size(LIMIT),
        );
        let outcome = llm.list_models().await;
        if ok {
            assert_eq!(outcome.unwrap()[0].id, "m");
        } else {
            let err = outcome.unwrap_err();
            assert!(
                matches!(&err, Error::TooLarge { limit: LIMIT, .. }),
                "{err:?}"
            );
            assert!(err.to_string().contains("max_response_size"), "{err}");
            assert!(err.to_string().contains("4096"), "{err}");
        }
    }

    // The emulator's oversize reply: chat, with a huge content.
    let emu = emulator().await;
    let llm = quick(client(&emu).max_response_size(64 * 1024));
    emu.inject(Target::Chat, Fault::Oversize(64 * 1024), 1);
    let err = llm.invoke("hi").await.unwrap_err();
    assert!(matches!(err, Error::TooLarge { .. }), "{err:?}");
    assert!(err.request_id().is_some());
    // The default limit lets a normal answer through.
    assert_eq!(llm.invoke("still fine").await.unwrap(), "still fine");
}

#[tokio::test]
async fn iam_replies_over_the_limit_fail_with_the_limit() {
    const LIMIT: usize = 1024;
    let reply = r#"{"access_token":"tok","expires_in":3600}"#;
    for (len, ok) in [(LIMIT, true), (LIMIT + 1, false)] {
        let url = fixed_server("application/json", padded(reply, len)).await;
        let manager = TokenManager::builder()
            .key_id("k")
            .secret("s")
            .auth_url(url)
            .max_retries(0)
            .max_response_size(LIMIT)
            .build()
            .unwrap();
        let outcome = manager.get_token().await;
        if ok {
            assert_eq!(outcome.unwrap().expose_secret(), "tok");
        } else {
            let err = outcome.unwrap_err();
            assert!(
                matches!(err, Error::Auth(AuthError::TooLarge { limit: LIMIT, .. })),
                "{err:?}"
            );
            assert!(err.to_string().contains("max_auth_response_size"), "{err}");
        }
    }

    let emu = emulator().await;
    emu.inject(Target::Auth, Fault::Oversize(8 * 1024), 1);
    let llm = quick(client(&emu).max_auth_response_size(8 * 1024));
    let err = llm.invoke("hi").await.unwrap_err();
    assert!(
        matches!(err, Error::Auth(AuthError::TooLarge { .. })),
        "{err:?}"
    );
    // The default limit (64 KiB) refuses a 1 MB token reply too.
    emu.inject(Target::Auth, Fault::Oversize(1 << 20), 1);
    let err = quick(client(&emu)).invoke("hi").await.unwrap_err();
    assert!(
        matches!(err, Error::Auth(AuthError::TooLarge { limit: 65536, .. })),
        "{err:?}"
    );
}

#[tokio::test]
async fn stream_events_over_the_limit_fail_with_the_limit() {
    const LIMIT: usize = 2048;
    let chunk = r#"data: {"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"hi"},"finish_reason":"stop"}]}"#;
    for (len, ok) in [(LIMIT, true), (LIMIT + 1, false)] {
        let mut body = padded(chunk, len);
        body.extend_from_slice(b"\n\ndata: [DONE]\n\n");
        let url = fixed_server("text/event-stream", body).await;
        let llm = quick(
            EvolutionInference::builder()
                .api_key("k")
                .base_url(format!("{url}/v1"))
                .max_event_size(LIMIT),
        );
        let outcome = llm.stream("hi").await.unwrap().collect_response().await;
        if ok {
            assert_eq!(outcome.unwrap().content(), "hi");
        } else {
            let err = outcome.unwrap_err();
            assert!(
                matches!(&err, Error::TooLarge { limit: LIMIT, .. }),
                "{err:?}"
            );
            assert!(err.to_string().contains("max_event_size"), "{err}");
            assert!(err.request_id().is_some());
        }
    }

    // The emulator's one giant line without a newline.
    let emu = emulator().await;
    let llm = quick(client(&emu).max_event_size(LIMIT));
    emu.inject(Target::Chat, Fault::Oversize(LIMIT + 1), 1);
    let mut stream = llm.stream("hi").await.unwrap();
    let mut last = None;
    while let Some(item) = stream.next().await {
        last = Some(item);
    }
    assert!(
        matches!(last, Some(Err(Error::TooLarge { .. }))),
        "{last:?}"
    );
}

#[tokio::test]
async fn an_absurd_retry_after_is_not_waited_for() {
    let emu = emulator().await;
    emu.inject(Target::Chat, Fault::StatusRetryAfter(503, 99_999_999), 2);
    let llm = client(&emu).max_retries(2).build().unwrap();
    // Capped at 60 s it would take two minutes; the backoff takes < 1 s.
    let answer = tokio::time::timeout(Duration::from_secs(30), llm.invoke("hi"))
        .await
        .expect("the Retry-After was waited for");
    assert_eq!(answer.unwrap(), "hi");
    assert_eq!(emu.counters().chat_requests, 3);
}

#[tokio::test]
async fn a_token_no_header_can_carry_is_an_invalid_iam_reply() {
    let emu = emulator().await;
    emu.inject(Target::Auth, "access-token-newline".parse().unwrap(), 1);
    let err = client(&emu)
        .build()
        .unwrap()
        .invoke("hi")
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Auth(AuthError::InvalidResponse { .. })),
        "{err:?}"
    );
    assert!(!err.is_retryable());
    assert!(!err.to_string().contains("X-Injected"), "{err}");
    assert_eq!(emu.counters().auth_requests, 1);
    assert_eq!(emu.counters().chat_requests, 0);
}

#[tokio::test]
async fn a_stream_deadline_ends_a_trickling_stream() {
    let emu = emulator().await;
    emu.inject(Target::Chat, Fault::Trickle(Duration::from_millis(20)), 1);
    let llm = client(&emu)
        .request_timeout(Duration::from_secs(5))
        .stream_deadline(Duration::from_millis(500))
        .build()
        .unwrap();
    let started = Instant::now();
    let err = tokio::time::timeout(
        Duration::from_secs(10),
        llm.stream("hi").await.unwrap().collect_response(),
    )
    .await
    .expect("the deadline held")
    .unwrap_err();
    assert!(matches!(err, Error::Stream { .. }), "{err:?}");
    assert!(err.to_string().contains("stream_deadline"), "{err}");
    assert!(started.elapsed() < Duration::from_millis(1500));
    // Off by default: a normal stream is not cut.
    let fine = client(&emu).build().unwrap();
    let text = fine.stream("a b c").await.unwrap().collect_response().await;
    assert_eq!(text.unwrap().content(), "a b c");
}

/// The same defences over TLS, the path calls to Cloud.ru take: the
/// emulator behind a TLS front, IAM included.
#[tokio::test]
async fn over_https_the_limits_timeouts_and_recovery_hold() {
    let emu = emulator().await;
    let front = common::tls_front::tls_front(emu.addr()).await;
    let secure = || {
        EvolutionInference::builder()
            .model(emu.default_model())
            .key_id(emu.key_id())
            .secret(emu.secret())
            .base_url(format!("{front}/v1"))
            .auth_url(format!("{front}/api/v1/auth/token"))
            .max_retries(0)
    };
    let llm = secure().build().unwrap();
    assert_eq!(llm.invoke("over tls").await.unwrap(), "over tls");

    // A reply over the limit.
    emu.inject(Target::Chat, Fault::Oversize(2 * 1024 * 1024), 1);
    let small = secure().max_response_size(64 * 1024).build().unwrap();
    let err = small.invoke("big").await.unwrap_err();
    assert!(matches!(err, Error::TooLarge { .. }), "{err:?}");

    // A body that stalls.
    emu.inject(Target::Chat, Fault::StallBody(200), 1);
    let quick = secure()
        .request_timeout(Duration::from_millis(400))
        .build()
        .unwrap();
    let started = Instant::now();
    let err = quick.invoke("stall").await.unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(5));

    // A stream cut midway.
    emu.inject(Target::Chat, Fault::CutStream(2), 1);
    let items: Vec<_> = llm.stream("a b c d e").await.unwrap().collect().await;
    assert!(
        matches!(items.last(), Some(Err(Error::Stream { .. }))),
        "{items:?}"
    );

    // A revoked token: refreshed over TLS, and the call goes through.
    let issued = emu.counters().tokens_issued;
    emu.revoke_tokens();
    assert_eq!(
        llm.invoke("after revocation").await.unwrap(),
        "after revocation"
    );
    assert_eq!(emu.counters().tokens_issued, issued + 1);
}
