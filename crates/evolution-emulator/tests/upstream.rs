//! Upstream mode: a second emulator plays the real Foundation Models server.

mod common;

use std::time::{Duration, Instant};

use common::{chat, client, get_json, post, read_sse, streamed, token, user};
use evolution_emulator::{Emulator, EmulatorHandle, Fault, Target};
use futures::StreamExt;
use serde_json::{json, Value};

/// An upstream emulator and a front emulator forwarding to it with a valid key.
async fn pair(upstream: EmulatorHandle) -> (EmulatorHandle, EmulatorHandle) {
    let key = token(&upstream).await;
    let front = Emulator::builder()
        .credentials("front-id", "front-secret")
        .upstream(upstream.base_url())
        .upstream_api_key(key)
        .start()
        .await
        .unwrap();
    (upstream, front)
}

#[tokio::test]
async fn chat_models_and_embeddings_are_forwarded() {
    let up = Emulator::builder()
        .models(vec!["up/model".into()])
        .start()
        .await
        .unwrap();
    let (up, front) = pair(up).await;
    let token = token(&front).await;

    let response = client()
        .post(format!("{}/chat/completions", front.base_url()))
        .bearer_auth(&token)
        .header("x-project-id", "p-1")
        .json(&user("forwarded words"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["choices"][0]["message"]["content"], "forwarded words");
    let seen = up.last_request().unwrap();
    assert_eq!(seen.path, "/v1/chat/completions");
    assert_eq!(seen.project_id.as_deref(), Some("p-1"));
    assert!(seen.authorized);
    assert_eq!(seen.body, user("forwarded words"));

    let models: Value = get_json(format!("{}/models", front.base_url()), Some(&token)).await;
    assert_eq!(models["data"][0]["id"], "up/model");

    let up_token = common::token(&up).await;
    let direct: Value = post(&up, &up_token, "/embeddings", json!({"input": ["a", "b"]}))
        .await
        .json()
        .await
        .unwrap();
    let via_front: Value = post(&front, &token, "/embeddings", json!({"input": ["a", "b"]}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(direct, via_front);

    let (f, u) = (front.counters(), up.counters());
    assert_eq!(
        (f.chat_requests, f.models_requests, f.embeddings_requests),
        (1, 1, 1)
    );
    assert_eq!(
        (u.chat_requests, u.models_requests, u.embeddings_requests),
        (1, 1, 2)
    );
    assert_eq!(f.tokens_issued, 1, "auth stays the front's own");
    front.shutdown().await;
    up.shutdown().await;
}

#[tokio::test]
async fn sse_is_relayed_as_it_arrives() {
    let delay = Duration::from_millis(150);
    let up = Emulator::builder().word_delay(delay).start().await.unwrap();
    let (up, front) = pair(up).await;
    let token = token(&front).await;

    let started = Instant::now();
    let response = post(
        &front,
        &token,
        "/chat/completions",
        streamed("w1 w2 w3 w4 w5"),
    )
    .await;
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let mut body = response.bytes_stream();
    let mut seen = String::new();
    while !seen.contains("\"w1\"") {
        seen.push_str(std::str::from_utf8(&body.next().await.unwrap().unwrap()).unwrap());
    }
    let first = started.elapsed();
    assert!(!seen.contains("w5"), "relayed before the upstream finished");
    assert_eq!(front.counters().in_flight, 1);
    while let Some(chunk) = body.next().await {
        seen.push_str(std::str::from_utf8(&chunk.unwrap()).unwrap());
    }
    assert!(started.elapsed() - first >= delay * 3);
    assert!(seen.ends_with("data: [DONE]\n\n"));
    assert_eq!(front.counters().stream_requests, 1);
    assert_eq!(up.counters().stream_requests, 1);
    front.shutdown().await;
    up.shutdown().await;
}

#[tokio::test]
async fn upstream_status_and_body_come_back_as_they_are() {
    let (up, front) = pair(Emulator::start().await.unwrap()).await;
    let token = token(&front).await;

    up.inject(Target::Chat, Fault::StatusRetryAfter(429, 4), 1);
    let response = post(&front, &token, "/chat/completions", user("hi")).await;
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["retry-after"], "4");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limit_exceeded");

    // The upstream's own 401 (its key revoked) is passed through too.
    up.revoke_tokens();
    let (status, body) = chat(&front, &token, user("hi")).await;
    assert_eq!(status, 401);
    assert_eq!(body["error"]["code"], "invalid_api_key");
    assert_eq!(
        front.counters().unauthorized,
        0,
        "the front accepted the token"
    );

    // The front's own bearer check happens before forwarding.
    let before = up.requests().len();
    let (status, _) = chat(&front, "bogus", user("hi")).await;
    assert_eq!(status, 401);
    assert_eq!(up.requests().len(), before);
    front.shutdown().await;
    up.shutdown().await;
}

#[tokio::test]
async fn upstream_stream_cuts_reach_the_client() {
    let (up, front) = pair(Emulator::start().await.unwrap()).await;
    let token = token(&front).await;
    up.inject(Target::Chat, Fault::CutStream(2), 1);
    let response = post(&front, &token, "/chat/completions", streamed("a b c d")).await;
    let (events, _) = read_sse(response)
        .await
        .expect_err("cut upstream, cut relay");
    assert_eq!(events.len(), 2);
    front.shutdown().await;
    up.shutdown().await;
}

#[tokio::test]
async fn front_faults_apply_to_forwarded_streams() {
    let (up, front) = pair(Emulator::start().await.unwrap()).await;
    let token = token(&front).await;

    front.inject(Target::Chat, Fault::CutStream(3), 1);
    let response = post(&front, &token, "/chat/completions", streamed("a b c d e")).await;
    let (events, _) = read_sse(response).await.expect_err("cut by the front");
    assert_eq!(events.len(), 3);

    front.inject(Target::Chat, Fault::StreamError(2), 1);
    let response = post(&front, &token, "/chat/completions", streamed("a b c d e")).await;
    let events = read_sse(response).await.unwrap();
    assert_eq!(events.len(), 3);
    assert!(events[2].json()["error"]["message"].is_string());

    front.inject(Target::Chat, Fault::Status(500), 1);
    assert_eq!(chat(&front, &token, user("hi")).await.0, 500);
    assert_eq!(
        up.counters().chat_requests,
        2,
        "the 500 never reached the upstream"
    );
    front.shutdown().await;
    up.shutdown().await;
}

#[tokio::test]
async fn unreachable_upstream_is_a_502() {
    let gone = Emulator::start().await.unwrap();
    let url = gone.base_url();
    gone.shutdown().await;
    let front = Emulator::builder().upstream(url).start().await.unwrap();
    let token = token(&front).await;
    let (status, body) = chat(&front, &token, user("hi")).await;
    assert_eq!(status, 502);
    assert_eq!(body["error"]["code"], "bad_gateway");
    front.shutdown().await;
}

#[tokio::test]
async fn invalid_upstream_urls_are_refused_at_start() {
    for url in ["not a url", "ftp://example.com/v1"] {
        let err = Emulator::builder().upstream(url).start().await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput, "{url}");
    }
}
