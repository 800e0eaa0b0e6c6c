//! Throughput at the provider's limit, against an emulator that enforces
//! one (a bucket per key, `429` with `Retry-After` when empty): no prompt
//! lost to `429`s, the limit used, the client paused by a `Retry-After`,
//! the batch window adapting, and the patience bound.

mod common;

use std::time::{Duration, Instant};

use evolution_emulator::{Emulator, EmulatorHandle, Fault, Target};
use evolution_langchain::{ChatOptions, Error, EvolutionInference, EvolutionInferenceBuilder};

/// An emulator allowing `rpm` requests a minute per key, enforced per
/// second (a burst of one second's worth), answering after `latency`.
async fn limited(rpm: u32, latency: Duration) -> EmulatorHandle {
    Emulator::builder()
        .requests_per_minute(rpm)
        .rate_burst(Duration::from_secs(1))
        .latency(latency)
        .start()
        .await
        .unwrap()
}

fn client(emu: &EmulatorHandle) -> EvolutionInferenceBuilder {
    common::client(emu).max_tokens(4)
}

fn prompts(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("prompt {i}")).collect()
}

#[tokio::test]
async fn without_a_limit_configured_the_window_adapts_and_no_prompt_fails() {
    let emu = limited(600, Duration::from_millis(100)).await;
    let llm = client(&emu).max_concurrency(16).build().unwrap();
    let prompts = prompts(40);
    let result = llm.invoke_batch(&prompts, ChatOptions::new()).await;
    let result = result.unwrap_or_else(|e| panic!("no prompt may fail: {e}"));
    assert_eq!(result.texts().len(), 40);
    for (text, prompt) in result.texts().iter().zip(&prompts) {
        assert_eq!(
            text,
            &prompt.split(' ').take(4).collect::<Vec<_>>().join(" ")
        );
    }
    let stats = llm.throttle_stats();
    let counters = emu.counters();
    assert!(counters.rate_limited > 0, "the burst of 16 met the limit");
    assert_eq!(stats.rate_limited, counters.rate_limited);
    assert!(stats.window < 16, "the window shrank: {stats:?}");
    assert!(!stats.waited.is_zero());
    assert_eq!(stats.in_flight, 0);
}

#[tokio::test]
async fn with_the_limit_configured_calls_wait_instead_of_meeting_429s() {
    let emu = limited(600, Duration::from_millis(100)).await;
    let llm = client(&emu)
        .max_concurrency(16)
        .requests_per_minute(600)
        .build()
        .unwrap();
    let started = Instant::now();
    let result = llm.invoke_batch(&prompts(40), ChatOptions::new()).await;
    assert!(result.is_ok(), "{result:?}");
    // Five at once, then ten a second: 35 more take three and a half seconds.
    assert!(
        started.elapsed() >= Duration::from_millis(2900),
        "{:?}",
        started.elapsed()
    );
    let counters = emu.counters();
    assert!(
        counters.rate_limited <= 1,
        "paced at the limit, at most a stray 429: {counters:?}"
    );
    assert_eq!(counters.chat_requests, 40 + counters.rate_limited);
    assert!(!llm.throttle_stats().waited.is_zero());
    // Clones and clients made from it share the limiter.
    let clone = llm.clone();
    let ten = prompts(10);
    let started = Instant::now();
    let (a, b) = tokio::join!(
        llm.invoke_batch(&ten, ChatOptions::new()),
        clone.invoke_batch(&ten, ChatOptions::new())
    );
    assert!(a.is_ok() && b.is_ok());
    assert!(
        started.elapsed() >= Duration::from_millis(1900),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_retry_after_pauses_every_new_send_of_the_client() {
    let emu = common::emulator().await;
    let llm = common::llm(&emu);
    llm.invoke("warm up").await.unwrap();
    emu.inject(Target::Chat, Fault::StatusRetryAfter(429, 2), 1);
    let started = Instant::now();
    let first = {
        let llm = llm.clone();
        tokio::spawn(async move { llm.invoke("first").await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = emu.counters().chat_requests;
    let second = llm.invoke("second").await.unwrap();
    assert_eq!(second, "second");
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "the second call waited for the pause: {:?}",
        started.elapsed()
    );
    assert_eq!(before, 2, "during the pause nothing more was sent");
    assert_eq!(first.await.unwrap().unwrap(), "first");
    assert_eq!(llm.throttle_stats().rate_limited, 1);
}

#[tokio::test]
async fn many_429s_are_not_failed_attempts_but_patience_has_a_bound() {
    // One request a second; three calls at once, no retries for errors.
    let emu = limited(60, Duration::ZERO).await;
    let patient = client(&emu).max_retries(0).build().unwrap();
    let (a, b, c) = tokio::join!(
        patient.invoke("a"),
        patient.invoke("b"),
        patient.invoke("c")
    );
    assert_eq!((a.unwrap(), b.unwrap(), c.unwrap()).0, "a");
    assert!(emu.counters().rate_limited > 0);

    let impatient = client(&emu)
        .max_rate_limit_wait(Duration::from_millis(500))
        .build()
        .unwrap();
    let outcomes =
        futures::future::join_all((0..4).map(|i| impatient.invoke(["w", "x", "y", "z"][i]))).await;
    let limited: Vec<_> = outcomes.into_iter().filter_map(Result::err).collect();
    assert!(!limited.is_empty(), "some call ran out of patience");
    for error in &limited {
        assert!(matches!(error, Error::RateLimited { .. }), "{error:?}");
        assert_eq!(error.status(), Some(429));
        let text = error.to_string();
        assert!(text.contains("requests_per_minute"), "{text}");
        assert!(text.contains("max_rate_limit_wait"), "{text}");
        assert!(error.request_id().is_some());
    }
}

#[tokio::test]
async fn the_tokens_limit_paces_by_estimated_and_reported_tokens() {
    let emu = Emulator::builder()
        .tokens_per_minute(3000)
        .rate_burst(Duration::from_secs(1))
        .start()
        .await
        .unwrap();
    // Each call: a few prompt tokens plus max_tokens 4; a second holds 50.
    let llm = client(&emu)
        .max_concurrency(8)
        .tokens_per_minute(3000)
        .build()
        .unwrap();
    let started = Instant::now();
    let result = llm.invoke_batch(&prompts(30), ChatOptions::new()).await;
    assert!(result.is_ok(), "{result:?}");
    assert!(
        emu.counters().rate_limited <= 1,
        "paced: {:?}",
        emu.counters()
    );
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert!(!llm.throttle_stats().waited.is_zero());
}

#[tokio::test]
async fn limits_are_checked_and_read_from_the_environment_names() {
    let err = EvolutionInference::builder()
        .api_key("k")
        .requests_per_minute(0)
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("requests_per_minute"), "{err}");
}
