//! Per-key rate limits (requests and tokens per minute) and answer latency, over real
//! HTTP with the real clock and small numbers.

mod common;

use std::time::{Duration, Instant};

use clap::Parser;
use common::{chat, client, post, streamed, token, token_reply, user};
use evolution_emulator::{Emulator, EmulatorArgs, EmulatorHandle, Fault, Target};
use serde_json::{json, Value};

fn header<'a>(response: &'a reqwest::Response, name: &str) -> Option<&'a str> {
    response.headers().get(name).map(|v| v.to_str().unwrap())
}

async fn chat_response(emu: &EmulatorHandle, token: &str, body: Value) -> reqwest::Response {
    post(emu, token, "/chat/completions", body).await
}

#[tokio::test]
async fn requests_per_minute_allow_a_burst_then_the_sustained_rate() {
    let emu = Emulator::builder()
        .requests_per_minute(60)
        .start()
        .await
        .unwrap();
    let token = token(&emu).await;
    // The bucket starts full: the whole burst fits, however long it takes to send.
    let started = Instant::now();
    for i in 0..60u32 {
        let response = chat_response(&emu, &token, user("hi")).await;
        assert_eq!(response.status(), 200, "request {i} of the burst");
        assert_eq!(header(&response, "x-ratelimit-limit-requests"), Some("60"));
        if i == 0 {
            assert_eq!(
                header(&response, "x-ratelimit-remaining-requests"),
                Some("59")
            );
            // One request spent, refilled at one per second.
            assert_eq!(header(&response, "x-ratelimit-reset-requests"), Some("1s"));
        }
        // No tokens-per-minute limit, so no tokens headers.
        assert_eq!(header(&response, "x-ratelimit-limit-tokens"), None);
    }
    // Then only what dripped in meanwhile (one a second) fits, so the bucket soon refuses.
    let mut extra = 0u64;
    let response = loop {
        let response = chat_response(&emu, &token, user("one too many")).await;
        if response.status() == 429 {
            break response;
        }
        assert_eq!(response.status(), 200);
        extra += 1;
        assert!(extra <= 5, "the bucket keeps paying");
    };
    assert!(
        extra <= started.elapsed().as_secs() + 1,
        "{extra} extra requests"
    );
    assert_eq!(header(&response, "retry-after"), Some("1"));
    assert_eq!(header(&response, "x-ratelimit-limit-requests"), Some("60"));
    assert_eq!(
        header(&response, "x-ratelimit-remaining-requests"),
        Some("0")
    );
    // Full again in just under a minute.
    let reset = header(&response, "x-ratelimit-reset-requests").unwrap();
    assert!(reset.starts_with("59") || reset == "1m0s", "{reset}");
    assert!(header(&response, "x-request-id").is_some());
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["type"], "requests");
    assert_eq!(body["error"]["code"], "rate_limit_exceeded");
    assert_eq!(body["error"]["param"], Value::Null);
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("Rate limit reached for requests per minute"),
        "{message}"
    );
    assert!(message.ends_with("Please try again in 1s."), "{message}");

    // After the announced wait exactly one more request fits: refused requests cost
    // nothing, and the bucket refills at one per second.
    tokio::time::sleep(Duration::from_millis(1050)).await;
    assert_eq!(chat(&emu, &token, user("later")).await.0, 200);
    assert_eq!(chat(&emu, &token, user("too soon")).await.0, 429);

    let c = emu.counters();
    assert_eq!(c.rate_limited, 2);
    assert_eq!(
        c.chat_requests,
        63 + extra,
        "refused requests are still requests"
    );
    assert_eq!(emu.requests().len() as u64, 63 + extra, "and are logged");

    emu.reset_rate_limits();
    assert_eq!(chat(&emu, &token, user("after reset")).await.0, 200);
    emu.shutdown().await;
}

#[tokio::test]
async fn each_credential_has_its_own_bucket() {
    let emu = Emulator::builder()
        .requests_per_minute(1)
        .add_credentials("second-id", "second-secret")
        .api_key("key-one")
        .api_key("key-two")
        .start()
        .await
        .unwrap();
    let first = token(&emu).await;
    let first_again = token(&emu).await;
    let second = token_reply(&emu.auth_url(), "second-id", "second-secret").await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();

    assert_eq!(chat(&emu, &first, user("a")).await.0, 200);
    // Another token of the same key id pays from the same bucket.
    assert_eq!(chat(&emu, &first_again, user("b")).await.0, 429);
    // Another key id, and each API key, have their own.
    assert_eq!(chat(&emu, &second, user("c")).await.0, 200);
    assert_eq!(chat(&emu, "key-one", user("d")).await.0, 200);
    assert_eq!(chat(&emu, "key-one", user("e")).await.0, 429);
    assert_eq!(chat(&emu, "key-two", user("f")).await.0, 200);

    // The admin route lists the buckets by label, never showing an API key.
    let limits: Value = client()
        .get(format!("{}/_emulator/rate-limits", emu.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(limits["requests_per_minute"], 1);
    assert_eq!(limits["tokens_per_minute"], 0);
    let keys = limits["keys"].as_object().unwrap();
    let mut labels: Vec<&str> = keys.keys().map(String::as_str).collect();
    labels.sort_unstable();
    assert_eq!(
        labels,
        [
            "api-key#1",
            "api-key#2",
            "key-id:emulator-key-id",
            "key-id:second-id"
        ]
    );
    assert_eq!(keys["api-key#1"]["requests"]["limit"], 1);
    assert_eq!(keys["api-key#1"]["requests"]["remaining"], 0);
    assert_eq!(keys["api-key#1"]["tokens"], Value::Null);
    assert!(!limits.to_string().contains("key-one"));

    let response = client()
        .delete(format!("{}/_emulator/rate-limits", emu.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(chat(&emu, &first_again, user("g")).await.0, 200);
    emu.shutdown().await;
}

#[tokio::test]
async fn with_auth_off_everyone_shares_one_bucket() {
    let emu = Emulator::builder()
        .require_auth(false)
        .requests_per_minute(2)
        .start()
        .await
        .unwrap();
    let token = token(&emu).await;
    assert_eq!(chat(&emu, "anything", user("a")).await.0, 200);
    assert_eq!(chat(&emu, &token, user("b")).await.0, 200);
    assert_eq!(chat(&emu, "something-else", user("c")).await.0, 429);
    emu.shutdown().await;
}

#[tokio::test]
async fn bad_tokens_are_401_and_refusals_consume_no_fault() {
    let emu = Emulator::builder()
        .requests_per_minute(1)
        .start()
        .await
        .unwrap();
    let token = token(&emu).await;
    assert_eq!(chat(&emu, &token, user("a")).await.0, 200);
    // The bucket is empty, but a bad token is refused for what it is.
    let (status, body) = chat(&emu, "bad-token", user("b")).await;
    assert_eq!(status, 401);
    assert_eq!(body["error"]["code"], "invalid_api_key");

    // The limiter answers before the fault queue: the fault waits for a request let in.
    emu.inject(Target::Chat, Fault::Status(503), 1);
    assert_eq!(chat(&emu, &token, user("c")).await.0, 429);
    emu.reset_rate_limits();
    assert_eq!(chat(&emu, &token, user("d")).await.0, 503);

    // An injected 429 is not the limiter's.
    emu.reset_rate_limits();
    emu.inject(Target::Chat, Fault::StatusRetryAfter(429, 7), 1);
    let response = chat_response(&emu, &token, user("e")).await;
    assert_eq!(response.status(), 429);
    assert_eq!(header(&response, "retry-after"), Some("7"));
    assert_eq!(header(&response, "x-ratelimit-limit-requests"), None);

    let c = emu.counters();
    assert_eq!((c.rate_limited, c.unauthorized), (1, 1));
    emu.shutdown().await;
}

#[tokio::test]
async fn models_and_iam_are_not_counted() {
    let emu = Emulator::builder()
        .requests_per_minute(1)
        .start()
        .await
        .unwrap();
    let token = token(&emu).await;
    assert_eq!(chat(&emu, &token, user("a")).await.0, 200);
    for _ in 0..3 {
        let response = client()
            .get(format!("{}/models", emu.base_url()))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(header(&response, "x-ratelimit-limit-requests"), None);
        common::token(&emu).await;
    }
    // Embeddings and rerank count, on the same bucket as chat.
    let response = post(&emu, &token, "/embeddings", json!({"input": "x"})).await;
    assert_eq!(response.status(), 429);
    let body = json!({"query": "q", "documents": ["d"]});
    assert_eq!(post(&emu, &token, "/rerank", body).await.status(), 429);
    assert_eq!(emu.counters().rate_limited, 2);
    emu.shutdown().await;
}

#[tokio::test]
async fn tokens_per_minute_charge_prompt_and_max_tokens() {
    let emu = Emulator::builder()
        .tokens_per_minute(60)
        .start()
        .await
        .unwrap();
    let token = token(&emu).await;
    // 40 characters -> 10 tokens, plus max_tokens 25: 35 of 60.
    let mut body = user("");
    body["messages"][0]["content"] = json!("abcd ".repeat(8));
    body["max_tokens"] = json!(25);
    let response = chat_response(&emu, &token, body.clone()).await;
    assert_eq!(response.status(), 200);
    assert_eq!(header(&response, "x-ratelimit-limit-tokens"), Some("60"));
    assert_eq!(
        header(&response, "x-ratelimit-remaining-tokens"),
        Some("25")
    );
    // 35 tokens back at 1 per second.
    assert_eq!(header(&response, "x-ratelimit-reset-tokens"), Some("35s"));
    assert_eq!(header(&response, "x-ratelimit-limit-requests"), None);

    // Embeddings cost their input: 16 characters -> 4 tokens, no answer budget.
    let response = post(
        &emu,
        &token,
        "/embeddings",
        json!({"input": "a".repeat(16)}),
    )
    .await;
    assert_eq!(response.status(), 200);
    let remaining: u64 = header(&response, "x-ratelimit-remaining-tokens")
        .unwrap()
        .parse()
        .unwrap();
    assert!((21..=25).contains(&remaining), "{remaining}");

    // 35 more do not fit into ~21: wait ~14 s for the missing ones.
    let response = chat_response(&emu, &token, body).await;
    assert_eq!(response.status(), 429);
    let retry_after: u64 = header(&response, "retry-after").unwrap().parse().unwrap();
    assert!((10..=14).contains(&retry_after), "{retry_after}");
    assert_eq!(header(&response, "x-ratelimit-limit-tokens"), Some("60"));
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["error"]["type"], "tokens");
    assert_eq!(error["error"]["code"], "rate_limit_exceeded");
    assert_eq!(error["error"]["param"], Value::Null);
    let message = error["error"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("Rate limit reached for tokens per minute"),
        "{message}"
    );
    assert!(message.contains("Requested 35"), "{message}");
    assert!(
        message.ends_with(&format!("Please try again in {retry_after}s.")),
        "{message}"
    );

    // A request costing more than the whole limit can never fit.
    let mut huge = user("x");
    huge["max_tokens"] = json!(500);
    let response = chat_response(&emu, &token, huge).await;
    assert_eq!(response.status(), 429);
    assert_eq!(header(&response, "retry-after"), None);
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["error"]["type"], "tokens");
    let message = error["error"]["message"].as_str().unwrap();
    assert!(message.contains("can never fit"), "{message}");
    assert!(message.contains("Limit 60, Requested 501"), "{message}");

    // Without max_tokens a chat request is charged 16 for its answer.
    emu.reset_rate_limits();
    let response = chat_response(&emu, &token, user("abcd")).await;
    assert_eq!(
        header(&response, "x-ratelimit-remaining-tokens"),
        Some("43")
    );
    assert_eq!(emu.counters().rate_limited, 2);
    emu.shutdown().await;
}

#[tokio::test]
async fn both_limits_report_both_header_families() {
    let emu = Emulator::builder()
        .requests_per_minute(10)
        .tokens_per_minute(1000)
        .start()
        .await
        .unwrap();
    let token = token(&emu).await;
    let response = chat_response(&emu, &token, user("hello")).await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        header(&response, "x-ratelimit-remaining-requests"),
        Some("9")
    );
    assert_eq!(header(&response, "x-ratelimit-reset-requests"), Some("6s"));
    // "hello" is 2 tokens, plus 16.
    assert_eq!(
        header(&response, "x-ratelimit-remaining-tokens"),
        Some("982")
    );
    assert_eq!(header(&response, "x-ratelimit-reset-tokens"), Some("1.08s"));
    // Streams carry them in their head.
    let response = chat_response(&emu, &token, streamed("hello")).await;
    assert_eq!(
        header(&response, "x-ratelimit-remaining-requests"),
        Some("8")
    );
    response.text().await.unwrap();
    emu.shutdown().await;
}

#[tokio::test]
async fn latency_delays_every_counted_answer_and_counts_in_flight() {
    let latency = Duration::from_millis(300);
    let emu = Emulator::builder().latency(latency).start().await.unwrap();
    let token = token(&emu).await;

    let started = Instant::now();
    assert_eq!(chat(&emu, &token, user("hi")).await.0, 200);
    assert!(started.elapsed() >= latency, "chat");

    let started = Instant::now();
    let response = chat_response(&emu, &token, streamed("hi")).await;
    assert!(started.elapsed() >= latency, "the stream's head");
    response.text().await.unwrap();

    let started = Instant::now();
    let response = post(&emu, &token, "/embeddings", json!({"input": "x"})).await;
    assert_eq!(response.status(), 200);
    assert!(started.elapsed() >= latency, "embeddings");

    let started = Instant::now();
    let body = json!({"query": "q", "documents": ["d"]});
    assert_eq!(post(&emu, &token, "/rerank", body).await.status(), 200);
    assert!(started.elapsed() >= latency, "rerank");

    // A request waiting out the latency is in flight.
    let waiting = {
        let emu = emu.clone();
        let token = token.clone();
        tokio::spawn(async move { chat(&emu, &token, user("slow")).await.0 })
    };
    tokio::time::timeout(Duration::from_secs(5), async {
        while emu.counters().in_flight == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the waiting request is in flight");
    assert_eq!(waiting.await.unwrap(), 200);
    assert_eq!(emu.counters().in_flight, 0);
    emu.shutdown().await;
}

#[derive(Debug, Parser)]
struct Cli {
    #[command(flatten)]
    emulator: EmulatorArgs,
}

#[tokio::test]
async fn rpm_tpm_and_latency_flags_configure_the_emulator() {
    let defaults = Cli::try_parse_from(["x"]).unwrap().emulator;
    assert_eq!(defaults, EmulatorArgs::default());
    assert_eq!((defaults.rpm, defaults.tpm, defaults.latency_ms), (0, 0, 0));
    assert_eq!(defaults.max_audio_bytes, 26_214_400);
    assert!(Cli::try_parse_from(["x", "--rpm", "-1"]).is_err());

    let args = Cli::try_parse_from([
        "x",
        "--rpm",
        "2",
        "--tpm",
        "1000",
        "--latency-ms",
        "150",
        "--max-audio-bytes",
        "10",
    ])
    .unwrap()
    .emulator;
    assert_eq!(
        (args.rpm, args.tpm, args.latency_ms, args.max_audio_bytes),
        (2, 1000, 150, 10)
    );
    let emu = args.builder().start().await.unwrap();
    let token = token(&emu).await;
    let started = Instant::now();
    let response = chat_response(&emu, &token, user("a")).await;
    assert!(started.elapsed() >= Duration::from_millis(150));
    assert_eq!(header(&response, "x-ratelimit-limit-requests"), Some("2"));
    assert_eq!(header(&response, "x-ratelimit-limit-tokens"), Some("1000"));
    assert_eq!(chat(&emu, &token, user("b")).await.0, 200);
    assert_eq!(chat(&emu, &token, user("c")).await.0, 429);
    let counters: Value = client()
        .get(format!("{}/_emulator/counters", emu.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(counters["rate_limited"], 1);
    emu.shutdown().await;
}

#[tokio::test]
async fn a_request_larger_than_a_short_burst_fits_a_full_bucket() {
    // 60,000 tokens a minute enforced per second: the bucket holds 1,000.
    let emu = Emulator::builder()
        .tokens_per_minute(60_000)
        .rate_burst(Duration::from_secs(1))
        .start()
        .await
        .unwrap();
    let token = token(&emu).await;
    // "x" is 1 token, plus max_tokens 1,099: 1,100, more than the bucket, less than the limit.
    let mut large = user("x");
    large["max_tokens"] = json!(1_099);
    let response = chat_response(&emu, &token, large.clone()).await;
    assert_eq!(response.status(), 200, "a full bucket lets it in");
    assert_eq!(header(&response, "x-ratelimit-remaining-tokens"), Some("0"));
    // 100 tokens of debt and the whole bucket, back at 1,000 a second.
    assert_eq!(header(&response, "x-ratelimit-reset-tokens"), Some("1.1s"));

    // The next one waits for the bucket to be full again: a 429 that can fit later.
    let response = chat_response(&emu, &token, large.clone()).await;
    assert_eq!(response.status(), 429);
    assert_eq!(header(&response, "retry-after"), Some("2"));
    let error: Value = response.json().await.unwrap();
    let message = error["error"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("Rate limit reached for tokens per minute"),
        "{message}"
    );
    assert!(message.contains("Requested 1100"), "{message}");
    tokio::time::sleep(Duration::from_millis(1_150)).await;
    assert_eq!(chat(&emu, &token, large).await.0, 200);

    // Only a request over the whole per-minute limit can never fit.
    emu.reset_rate_limits();
    let mut huge = user("x");
    huge["max_tokens"] = json!(60_000);
    let response = chat_response(&emu, &token, huge).await;
    assert_eq!(response.status(), 429);
    assert_eq!(header(&response, "retry-after"), None);
    let error: Value = response.json().await.unwrap();
    let message = error["error"]["message"].as_str().unwrap();
    assert!(message.contains("can never fit"), "{message}");
    assert!(
        message.contains("Limit 60000, Requested 60001"),
        "{message}"
    );
    assert_eq!(emu.counters().rate_limited, 2);
    emu.shutdown().await;
}

#[test]
fn rate_burst_secs_out_of_range_is_an_error_naming_the_range() {
    let parse = |value: &str| Cli::try_parse_from(["x", "--rate-burst-secs", value]);
    assert_eq!(parse("1").unwrap().emulator.rate_burst_secs, 1.0);
    assert_eq!(parse("0.5").unwrap().emulator.rate_burst_secs, 0.5);
    assert_eq!(parse("0").unwrap().emulator.rate_burst_secs, 0.0);
    for bad in ["-1", "NaN", "inf", "86401", "soon"] {
        let error = parse(bad).expect_err(bad).to_string();
        assert!(error.contains("--rate-burst-secs"), "{bad}: {error}");
        assert!(
            error.contains("a number of seconds from 0 to 86400"),
            "{bad}: {error}"
        );
    }
}
