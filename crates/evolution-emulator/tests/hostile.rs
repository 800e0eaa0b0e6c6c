//! Faults that play a hostile or broken server: redirects, stalled and endless bodies,
//! oversized answers, odd access tokens and answers without content.

mod common;

use std::time::{Duration, Instant};

use common::{client, credentials, post, read_sse, streamed, token, user};
use evolution_emulator::{Emulator, EmulatorHandle, Fault, Target};
use futures::StreamExt;
use serde_json::{json, Value};

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(15))
        .build()
        .unwrap()
}

async fn auth_response(emu: &EmulatorHandle) -> reqwest::Response {
    client()
        .post(emu.auth_url())
        .json(&credentials(emu))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn redirects_on_every_target() {
    let emu = Emulator::start().await.unwrap();
    let token = token(&emu).await;
    let http = no_redirects();
    let elsewhere = "http://127.0.0.1:9/elsewhere";

    emu.inject(Target::Auth, Fault::Redirect(307, elsewhere.into()), 1);
    let response = http
        .post(emu.auth_url())
        .json(&credentials(&emu))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 307);
    assert_eq!(response.headers()["location"], elsewhere);
    assert!(response.bytes().await.unwrap().is_empty());

    let fault: Fault = format!("redirect:308:{elsewhere}").parse().unwrap();
    assert_eq!(fault, Fault::Redirect(308, elsewhere.into()));
    emu.inject(Target::Api, fault, 2);
    for path in ["/chat/completions", "/embeddings"] {
        let response = http
            .post(format!("{}{path}", emu.base_url()))
            .bearer_auth(&token)
            .json(&user("hi"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 308, "{path}");
        assert_eq!(response.headers()["location"], elsewhere);
        assert!(response.headers().contains_key("x-request-id"));
        assert!(response.bytes().await.unwrap().is_empty());
    }
    // A programmatic redirect HTTP cannot express is a 500, not a panic.
    emu.inject(Target::Models, Fault::Redirect(200, "x".into()), 1);
    emu.inject(Target::Models, Fault::Redirect(302, "bad\nurl".into()), 1);
    for _ in 0..2 {
        let response = http
            .get(format!("{}/models", emu.base_url()))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 500);
    }
    emu.shutdown().await;
}

#[tokio::test]
async fn stall_body_sends_a_head_and_nothing_more() {
    let emu = Emulator::start().await.unwrap();
    let token = token(&emu).await;

    emu.inject(Target::Chat, "stall-body:500".parse().unwrap(), 2);
    let response = post(&emu, &token, "/chat/completions", user("hi")).await;
    assert_eq!(response.status(), 500);
    assert_eq!(response.headers()["content-type"], "application/json");
    let waited = tokio::time::timeout(Duration::from_millis(300), response.bytes()).await;
    assert!(waited.is_err(), "the body must not arrive");

    let response = post(&emu, &token, "/chat/completions", streamed("hi")).await;
    assert_eq!(response.status(), 500);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let mut body = response.bytes_stream();
    let waited = tokio::time::timeout(Duration::from_millis(300), body.next()).await;
    assert!(waited.is_err(), "no chunk must arrive");

    // Auth too; and shutdown ends a stalled body at once instead of waiting it out.
    emu.inject(Target::Auth, Fault::StallBody(200), 1);
    let response = auth_response(&emu).await;
    assert_eq!(response.status(), 200);
    let reading = tokio::spawn(response.bytes());
    tokio::time::sleep(Duration::from_millis(50)).await;
    let started = Instant::now();
    emu.shutdown().await;
    assert!(
        started.elapsed() < Duration::from_millis(900),
        "shutdown took {:?}",
        started.elapsed()
    );
    let result = tokio::time::timeout(Duration::from_secs(5), reading)
        .await
        .expect("the body ends after shutdown")
        .unwrap();
    assert!(result.is_err(), "a stalled body never completes");
    drop(body);
}

async fn oversized(response: reqwest::Response, limit: usize) -> Value {
    assert_eq!(response.status(), 200);
    assert!(
        response.headers().get("content-length").is_none(),
        "streamed, not declared"
    );
    let bytes = response.bytes().await.unwrap();
    assert!(bytes.len() > limit, "{} <= {limit}", bytes.len());
    assert!(
        bytes.len() < limit + 4096,
        "{} is far beyond {limit}",
        bytes.len()
    );
    serde_json::from_slice(&bytes).expect("valid JSON")
}

#[tokio::test]
async fn oversize_bodies_have_the_route_shape() {
    let emu = Emulator::start().await.unwrap();
    let token = token(&emu).await;
    let limit = 3 * 1024 * 1024;

    emu.inject(Target::Chat, Fault::Oversize(limit), 1);
    let body = oversized(
        post(&emu, &token, "/chat/completions", user("hi")).await,
        limit,
    )
    .await;
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["model"], "test-model");
    assert!(
        body["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .len()
            > limit - 512
    );

    emu.inject(Target::Auth, "oversize:1000".parse().unwrap(), 1);
    let body = oversized(auth_response(&emu).await, 1000).await;
    assert!(body["access_token"].as_str().unwrap().len() > 900);
    assert_eq!(body["expires_in"], 3600);

    emu.inject(Target::Embeddings, Fault::Oversize(5000), 1);
    let response = post(&emu, &token, "/embeddings", json!({"input": "x"})).await;
    let body = oversized(response, 5000).await;
    assert!(body["data"][0]["embedding"].as_array().unwrap().len() > 2000);

    emu.inject(Target::Rerank, Fault::Oversize(5000), 1);
    let response = post(
        &emu,
        &token,
        "/rerank",
        json!({"query": "q", "documents": ["d"]}),
    )
    .await;
    let body = oversized(response, 5000).await;
    assert!(
        body["results"][0]["document"]["text"]
            .as_str()
            .unwrap()
            .len()
            > 4000
    );

    emu.inject(Target::Models, Fault::Oversize(5000), 1);
    let response = client()
        .get(format!("{}/models", emu.base_url()))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    let body = oversized(response, 5000).await;
    assert!(body["data"][0]["id"].as_str().unwrap().len() > 4000);

    // Streaming: one `data:` line of exactly N bytes and no line break, then the end.
    emu.inject(Target::Chat, Fault::Oversize(100_000), 1);
    let response = post(&emu, &token, "/chat/completions", streamed("hi")).await;
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let bytes = response.bytes().await.unwrap();
    assert_eq!(bytes.len(), 100_000);
    assert!(bytes.starts_with(b"data: "));
    assert!(!bytes.contains(&b'\n'));
    emu.shutdown().await;
}

#[tokio::test]
async fn injected_access_tokens() {
    let emu = Emulator::start().await.unwrap();
    emu.inject(Target::Auth, Fault::AccessToken("custom-token".into()), 1);
    let body: Value = auth_response(&emu).await.json().await.unwrap();
    assert_eq!(
        body,
        json!({"access_token": "custom-token", "expires_in": 3600})
    );
    // It was issued like any other token.
    let (status, _) = common::chat(&emu, "custom-token", user("hi")).await;
    assert_eq!(status, 200);
    assert_eq!(emu.counters().tokens_issued, 1);

    let newline: Fault = "access-token-newline".parse().unwrap();
    assert_eq!(
        newline,
        Fault::AccessToken(Fault::NEWLINE_ACCESS_TOKEN.into())
    );
    emu.inject(Target::Auth, newline, 1);
    let body: Value = auth_response(&emu).await.json().await.unwrap();
    let token = body["access_token"].as_str().unwrap();
    assert!(token.contains('\n') && !token.starts_with('\n') && !token.ends_with('\n'));

    // Elsewhere it is consumed harmlessly.
    let good = common::token(&emu).await;
    emu.inject(Target::Chat, Fault::AccessToken("x".into()), 1);
    let (status, body) = common::chat(&emu, &good, user("still fine")).await;
    assert_eq!(
        (status, body["choices"][0]["message"]["content"].clone()),
        (200, json!("still fine"))
    );
    let left = common::get_json(format!("{}/_emulator/faults", emu.url()), None).await;
    assert_eq!(
        left["faults"],
        json!([]),
        "every injected fault was consumed"
    );
    emu.shutdown().await;
}

#[tokio::test]
async fn content_null_in_both_forms() {
    let emu = Emulator::start().await.unwrap();
    let token = token(&emu).await;
    emu.inject(Target::Chat, Fault::ContentNull, 2);
    let (status, body) = common::chat(&emu, &token, user("hi")).await;
    assert_eq!(status, 200);
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(
        body["choices"],
        json!([{"index": 0, "message": {"role": "assistant", "content": null}, "finish_reason": null}])
    );

    let response = post(&emu, &token, "/chat/completions", streamed("hi")).await;
    let events = read_sse(response).await.unwrap();
    assert_eq!(events.len(), 3, "{events:?}");
    assert_eq!(
        events[0].json()["choices"][0]["delta"],
        json!({"role": "assistant"})
    );
    let second = events[1].json();
    assert_eq!(second["choices"][0]["delta"], json!({}));
    assert_eq!(second["choices"][0]["finish_reason"], Value::Null);
    assert_eq!(events[2].data, "[DONE]");

    // Not a chat request: consumed, answered normally.
    emu.inject(Target::Embeddings, "content-null".parse().unwrap(), 1);
    let response = post(&emu, &token, "/embeddings", json!({"input": "x"})).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["data"][0]["index"], 0);
    emu.shutdown().await;
}

#[tokio::test]
async fn trickle_keeps_the_stream_alive_without_an_answer() {
    let emu = Emulator::start().await.unwrap();
    let token = token(&emu).await;
    emu.inject(Target::Chat, "trickle:40ms".parse().unwrap(), 2);
    let response = post(&emu, &token, "/chat/completions", streamed("hi")).await;
    assert_eq!(response.status(), 200);
    let mut body = response.bytes_stream();
    let mut text = String::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while text.matches(": keep-alive\n\n").count() < 3 {
        assert!(Instant::now() < deadline, "too few keep-alives: {text:?}");
        let chunk = body.next().await.expect("more body").unwrap();
        text.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    let (first, rest) = text.split_once("\n\n").unwrap();
    let role: Value = serde_json::from_str(first.strip_prefix("data: ").unwrap()).unwrap();
    assert_eq!(role["choices"][0]["delta"], json!({"role": "assistant"}));
    assert!(
        rest.split("\n\n")
            .all(|e| e.is_empty() || e == ": keep-alive"),
        "{rest:?}"
    );
    drop(body);

    // A non-streamed request has nothing to trickle: a normal answer.
    let (status, body) = common::chat(&emu, &token, user("plain")).await;
    assert_eq!(
        (status, body["choices"][0]["message"]["content"].clone()),
        (200, json!("plain"))
    );

    // Shutdown ends a trickle promptly.
    emu.inject(Target::Chat, Fault::Trickle(Duration::from_millis(30)), 1);
    let response = post(&emu, &token, "/chat/completions", streamed("hi")).await;
    let reading = tokio::spawn(response.bytes());
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    emu.shutdown().await;
    assert!(started.elapsed() < Duration::from_millis(900));
    let result = tokio::time::timeout(Duration::from_secs(5), reading)
        .await
        .unwrap()
        .unwrap();
    assert!(result.is_err(), "a trickle never completes");
}

#[tokio::test]
async fn new_faults_round_trip_through_the_admin_route() {
    let emu = Emulator::start().await.unwrap();
    let url = format!("{}/_emulator/faults", emu.url());
    for (target, fault) in [
        ("auth", "redirect:307:http://127.0.0.1:9/a?b=c"),
        ("chat", "stall-body:503"),
        ("api", "oversize:1024"),
        ("auth", "access-token-newline"),
        ("auth", "access-token:\"a b\""),
        ("chat", "content-null"),
        ("chat", "trickle:250ms"),
    ] {
        let reply: Value = client()
            .post(&url)
            .json(&json!({"target": target, "fault": fault}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(reply["fault"], fault, "{reply}");
    }
    let listing = common::get_json(&url, None).await;
    let faults: Vec<&str> = listing["faults"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["fault"].as_str().unwrap())
        .collect();
    assert_eq!(faults.len(), 7);
    assert!(faults.contains(&"access-token-newline"));
    emu.shutdown().await;
}
