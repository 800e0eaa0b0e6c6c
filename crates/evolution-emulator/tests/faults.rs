//! Every fault kind on the routes it is meant for, and the queue semantics.

mod common;

use std::time::{Duration, Instant};

use common::{chat, client, credentials, get_json, post, read_sse, streamed, token, user};
use evolution_emulator::{Emulator, EmulatorHandle, Fault, Target};
use serde_json::{json, Value};

async fn auth_response(emu: &EmulatorHandle) -> reqwest::Response {
    client()
        .post(emu.auth_url())
        .json(&credentials(emu))
        .send()
        .await
        .unwrap()
}

async fn models_response(emu: &EmulatorHandle, token: &str) -> reqwest::Response {
    client()
        .get(format!("{}/models", emu.base_url()))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn status_faults_on_every_target() {
    let emu = Emulator::start().await.unwrap();
    let token = token(&emu).await;

    emu.inject(Target::Auth, Fault::Status(500), 1);
    let response = auth_response(&emu).await;
    assert_eq!(response.status(), 500);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["type"], "server_error");
    assert!(body["error"]["message"].is_string());
    assert!(body["error"]["code"].is_string());

    emu.inject(Target::Chat, Fault::Status(503), 1);
    let (status, body) = chat(&emu, &token, user("hi")).await;
    assert_eq!(status, 503);
    assert_eq!(body["error"]["code"], "service_unavailable");

    emu.inject(Target::Models, Fault::Status(404), 1);
    assert_eq!(models_response(&emu, &token).await.status(), 404);

    emu.inject(Target::Embeddings, Fault::Status(400), 1);
    let response = post(&emu, &token, "/embeddings", json!({"input": "x"})).await;
    assert_eq!(response.status(), 400);

    emu.inject(Target::Api, Fault::Status(502), 1);
    assert_eq!(models_response(&emu, &token).await.status(), 502);

    // Each fault was consumed by exactly one request.
    assert_eq!(auth_response(&emu).await.status(), 200);
    assert_eq!(chat(&emu, &token, user("hi")).await.0, 200);
    assert_eq!(models_response(&emu, &token).await.status(), 200);
    emu.shutdown().await;
}

#[tokio::test]
async fn retry_after_header() {
    let emu = Emulator::start().await.unwrap();
    let token = token(&emu).await;
    emu.inject(Target::Chat, Fault::StatusRetryAfter(429, 2), 1);
    let response = post(&emu, &token, "/chat/completions", user("hi")).await;
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["retry-after"], "2");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["type"], "rate_limit_error");

    emu.inject(Target::Auth, Fault::StatusRetryAfter(503, 7), 1);
    let response = auth_response(&emu).await;
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "7");
    emu.shutdown().await;
}

#[tokio::test]
async fn delay_then_normal_answer() {
    let emu = Emulator::start().await.unwrap();
    let delay = Duration::from_millis(300);
    emu.inject(Target::Auth, Fault::Delay(delay), 1);
    let started = Instant::now();
    let token = token(&emu).await;
    assert!(started.elapsed() >= delay);

    emu.inject(Target::Chat, Fault::Delay(delay), 1);
    let started = Instant::now();
    let (status, body) = chat(&emu, &token, user("late answer")).await;
    assert!(started.elapsed() >= delay);
    assert_eq!(status, 200);
    assert_eq!(body["choices"][0]["message"]["content"], "late answer");
    emu.shutdown().await;
}

#[tokio::test]
async fn not_json_and_html_bodies() {
    let emu = Emulator::start().await.unwrap();
    let token = token(&emu).await;

    emu.inject(Target::Auth, Fault::NotJson, 1);
    let response = auth_response(&emu).await;
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let text = response.text().await.unwrap();
    assert!(serde_json::from_str::<Value>(&text).is_err());

    emu.inject(Target::Chat, Fault::Html, 1);
    let response = post(&emu, &token, "/chat/completions", user("hi")).await;
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    assert!(response.text().await.unwrap().contains("<html>"));

    emu.inject(Target::Embeddings, Fault::NotJson, 1);
    let response = post(&emu, &token, "/embeddings", json!({"input": "x"})).await;
    assert!(response.json::<Value>().await.is_err());
    emu.shutdown().await;
}

#[tokio::test]
async fn missing_field_per_target() {
    let emu = Emulator::start().await.unwrap();
    let token = token(&emu).await;

    emu.inject(Target::Auth, Fault::MissingField, 1);
    let body: Value = auth_response(&emu).await.json().await.unwrap();
    assert!(body.get("access_token").is_none(), "{body}");
    assert!(body.is_object());

    emu.inject(Target::Chat, Fault::MissingField, 1);
    let (status, body) = chat(&emu, &token, user("hi")).await;
    assert_eq!(status, 200);
    assert!(body.get("choices").is_none(), "{body}");
    assert_eq!(body["object"], "chat.completion");

    emu.inject(Target::Embeddings, Fault::MissingField, 1);
    let body: Value = post(&emu, &token, "/embeddings", json!({"input": "x"}))
        .await
        .json()
        .await
        .unwrap();
    assert!(body.get("data").is_none(), "{body}");

    emu.inject(Target::Models, Fault::MissingField, 1);
    let body: Value = models_response(&emu, &token).await.json().await.unwrap();
    assert!(body.get("data").is_none(), "{body}");

    emu.inject(Target::Chat, Fault::MissingField, 1);
    let events = read_sse(post(&emu, &token, "/chat/completions", streamed("hi")).await)
        .await
        .unwrap();
    assert!(events[0].json().get("choices").is_none());
    assert_eq!(
        emu.counters().tokens_issued,
        1,
        "no token in a MissingField answer"
    );
    emu.shutdown().await;
}

#[tokio::test]
async fn expires_in_values_are_served_with_a_real_token() {
    let emu = Emulator::start().await.unwrap();
    for value in [json!(-5), json!("soon"), json!(null), json!(1.5)] {
        emu.inject(Target::Auth, Fault::ExpiresIn(value.clone()), 1);
        let body: Value = auth_response(&emu).await.json().await.unwrap();
        assert_eq!(body["expires_in"], value);
        assert!(body.as_object().unwrap().contains_key("expires_in"));
        let token = body["access_token"].as_str().unwrap();
        assert_eq!(models_response(&emu, token).await.status(), 200);
    }
    // On other targets the fault is consumed and harmless.
    let token = token(&emu).await;
    emu.inject(Target::Chat, Fault::ExpiresIn(json!(1)), 1);
    assert_eq!(chat(&emu, &token, user("hi")).await.0, 200);
    emu.shutdown().await;
}

fn assert_dropped(result: Result<reqwest::Response, reqwest::Error>) {
    match result {
        Ok(response) => panic!("expected a dropped connection, got {}", response.status()),
        Err(e) => {
            assert!(e.status().is_none(), "{e:?}");
            assert!(e.is_request() || e.is_connect() || e.is_body(), "{e:?}");
        }
    }
}

#[tokio::test]
async fn drop_connection_closes_without_a_response() {
    let emu = Emulator::start().await.unwrap();
    let token = token(&emu).await;

    emu.inject(Target::Auth, Fault::DropConnection, 1);
    assert_dropped(
        client()
            .post(emu.auth_url())
            .json(&credentials(&emu))
            .send()
            .await,
    );

    emu.inject(Target::Chat, Fault::DropConnection, 1);
    assert_dropped(
        client()
            .post(format!("{}/chat/completions", emu.base_url()))
            .bearer_auth(&token)
            .json(&user("hi"))
            .send()
            .await,
    );

    emu.inject(Target::Api, Fault::DropConnection, 1);
    assert_dropped(
        client()
            .get(format!("{}/models", emu.base_url()))
            .bearer_auth(&token)
            .send()
            .await,
    );

    // The server itself is unharmed, and so is a pooled client after the drop.
    let shared = common::pooled_client();
    emu.inject(Target::Embeddings, Fault::DropConnection, 1);
    assert_dropped(
        shared
            .post(format!("{}/embeddings", emu.base_url()))
            .bearer_auth(&token)
            .json(&json!({"input": "x"}))
            .send()
            .await,
    );
    let response = shared
        .post(format!("{}/embeddings", emu.base_url()))
        .bearer_auth(&token)
        .json(&json!({"input": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(emu.counters().embeddings_requests, 2);
    emu.shutdown().await;
}

#[tokio::test]
async fn cut_stream_aborts_after_n_chunks() {
    let emu = Emulator::start().await.unwrap();
    let token = token(&emu).await;
    emu.inject(Target::Chat, Fault::CutStream(3), 1);
    let response = post(&emu, &token, "/chat/completions", streamed("a b c d e f")).await;
    assert_eq!(response.status(), 200);
    let (events, error) = read_sse(response).await.expect_err("the body must fail");
    assert_eq!(events.len(), 3, "{events:?}");
    assert!(events.iter().all(|e| e.data != "[DONE]"));
    assert!(!error.is_empty());

    // More chunks than the stream has: everything but [DONE], then the cut.
    emu.inject(Target::Chat, Fault::CutStream(100), 1);
    let response = post(&emu, &token, "/chat/completions", streamed("a b")).await;
    let (events, _) = read_sse(response).await.expect_err("the body must fail");
    assert_eq!(events.len(), 4);

    // A non-streamed answer is cut mid-JSON.
    emu.inject(Target::Chat, Fault::CutStream(1), 1);
    let response = post(&emu, &token, "/chat/completions", user("hi")).await;
    assert_eq!(response.status(), 200);
    assert!(response.json::<Value>().await.is_err());

    let events = read_sse(post(&emu, &token, "/chat/completions", streamed("a b")).await)
        .await
        .unwrap();
    assert_eq!(events.last().unwrap().data, "[DONE]", "fault consumed");
    emu.shutdown().await;
}

#[tokio::test]
async fn stream_error_sends_an_error_event_and_ends() {
    let emu = Emulator::start().await.unwrap();
    let token = token(&emu).await;
    emu.inject(Target::Chat, Fault::StreamError(2), 1);
    let response = post(&emu, &token, "/chat/completions", streamed("a b c d")).await;
    assert_eq!(response.status(), 200);
    let events = read_sse(response).await.expect("the stream ends cleanly");
    assert_eq!(events.len(), 3);
    assert_eq!(events[1].json()["choices"][0]["delta"]["content"], "a");
    let error = events[2].json();
    assert!(error["error"]["message"].is_string(), "{error}");
    assert!(error["error"]["type"].is_string());
    assert!(events.iter().all(|e| e.data != "[DONE]"));

    emu.inject(Target::Chat, Fault::StreamError(0), 1);
    let (status, body) = chat(&emu, &token, user("hi")).await;
    assert_eq!(status, 200);
    assert!(body["error"]["message"].is_string());
    assert!(body.get("choices").is_none());
    emu.shutdown().await;
}

#[tokio::test]
async fn queue_is_consumed_one_per_request_in_order() {
    let emu = Emulator::start().await.unwrap();
    let token = token(&emu).await;
    emu.inject(Target::Chat, Fault::Status(503), 2);
    emu.inject(Target::Chat, Fault::Status(429), 1);
    emu.inject(Target::Api, Fault::Status(502), 1);
    let mut statuses = Vec::new();
    for _ in 0..6 {
        statuses.push(chat(&emu, &token, user("hi")).await.0);
    }
    assert_eq!(statuses, [503, 503, 429, 502, 200, 200]);

    // Chat faults never leak into other routes; clear_faults empties every queue.
    emu.inject(Target::Chat, Fault::Status(500), 3);
    assert_eq!(models_response(&emu, &token).await.status(), 200);
    assert_eq!(auth_response(&emu).await.status(), 200);
    emu.clear_faults();
    assert_eq!(chat(&emu, &token, user("hi")).await.0, 200);
    emu.shutdown().await;
}

#[tokio::test]
async fn huge_repeat_counts_are_stored_once() {
    let emu = Emulator::start().await.unwrap();
    let token = token(&emu).await;
    // Used to allocate one queue entry per repetition: a capacity-overflow panic here.
    emu.inject(Target::Chat, Fault::Status(500), usize::MAX);
    // The same fault again extends the count, saturating rather than overflowing.
    emu.inject(Target::Chat, Fault::Status(500), usize::MAX);
    emu.inject(Target::Models, Fault::Status(503), usize::MAX / 2);
    emu.inject(Target::Models, Fault::Html, 0);
    for _ in 0..3 {
        assert_eq!(chat(&emu, &token, user("hi")).await.0, 500);
    }
    assert_eq!(models_response(&emu, &token).await.status(), 503);

    let listed: Value = get_json(format!("{}/_emulator/faults", emu.url()), None).await;
    assert_eq!(
        listed["faults"],
        json!([
            {"target": "chat", "fault": "status:500", "times": usize::MAX - 3},
            {"target": "models", "fault": "status:503",
             "times": usize::MAX / 2 - 1},
        ])
    );

    emu.clear_faults();
    assert_eq!(chat(&emu, &token, user("hi")).await.0, 200);
    assert_eq!(models_response(&emu, &token).await.status(), 200);
    emu.shutdown().await;
}

#[tokio::test]
async fn faults_come_before_the_bearer_check() {
    let emu = Emulator::start().await.unwrap();
    emu.inject(Target::Chat, Fault::Status(503), 1);
    let (status, _) = chat(&emu, "bogus", user("hi")).await;
    assert_eq!(status, 503);
    let (status, _) = chat(&emu, "bogus", user("hi")).await;
    assert_eq!(status, 401);
    assert_eq!(emu.counters().unauthorized, 1);
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_take_each_fault_exactly_once() {
    let emu = Emulator::start().await.unwrap();
    let token = token(&emu).await;
    emu.inject(Target::Chat, Fault::Status(503), 7);
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let emu = emu.clone();
            let token = token.clone();
            tokio::spawn(async move { chat(&emu, &token, user("hi")).await.0 })
        })
        .collect();
    let mut failed = 0;
    for task in tasks {
        if task.await.unwrap() == 503 {
            failed += 1;
        }
    }
    assert_eq!(failed, 7);
    assert_eq!(emu.counters().chat_requests, 20);
    emu.shutdown().await;
}

#[tokio::test]
async fn streaming_faults_on_json_routes() {
    let emu = Emulator::start().await.unwrap();
    let token = token(&emu).await;

    emu.inject(Target::Auth, Fault::CutStream(1), 1);
    let response = auth_response(&emu).await;
    assert_eq!(response.status(), 200);
    assert!(response.json::<Value>().await.is_err(), "cut mid-JSON");

    emu.inject(Target::Auth, Fault::StreamError(1), 1);
    let body: Value = auth_response(&emu).await.json().await.unwrap();
    assert!(body.get("access_token").is_none());
    assert!(body["error"]["message"].is_string());
    assert_eq!(
        emu.counters().tokens_issued,
        1,
        "neither answer delivered a token"
    );

    emu.inject(Target::Embeddings, Fault::CutStream(0), 1);
    let response = post(&emu, &token, "/embeddings", json!({"input": "x"})).await;
    assert!(response.json::<Value>().await.is_err());

    emu.inject(Target::Models, Fault::StreamError(0), 1);
    let body: Value = models_response(&emu, &token).await.json().await.unwrap();
    assert!(body["error"].is_object());
    emu.shutdown().await;
}
