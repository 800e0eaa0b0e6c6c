//! TokenManager against the emulator's IAM endpoint over real loopback HTTP.

use std::sync::Arc;
use std::time::Duration;

use evolution_emulator::{Emulator, EmulatorHandle, Fault, Target};
use evolution_langchain::{AuthError, Credentials, Error, RetryPolicy, TokenManager};
use serde_json::json;
use tokio::time::Instant;

mod common;
use common::{captured_logs, manager_for};

async fn emulator(ttl: Duration) -> EmulatorHandle {
    Emulator::builder()
        .token_ttl(ttl)
        .forbidden_credentials("no-rights-key", "no-rights-secret")
        .add_credentials("backup-key", "backup-secret")
        .start()
        .await
        .expect("emulator starts")
}

fn auth_calls(emu: &EmulatorHandle) -> u64 {
    emu.counters().auth_requests
}

#[tokio::test]
async fn second_call_is_served_from_cache() {
    let emu = emulator(Duration::from_secs(3600)).await;
    let manager = manager_for(&emu).build().unwrap();
    let first = manager.get_token().await.unwrap();
    let second = manager.get_token().await.unwrap();
    assert!(first.same_as(&second));
    assert_eq!(auth_calls(&emu), 1);
    let info = manager.info();
    assert!(info.has_token && info.is_valid);
    assert_eq!(info.lifetime, Some(Duration::from_secs(3600)));
    assert_eq!(info.key_id, emu.key_id());
    assert!(!info.using_fallback);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_cold_callers_share_one_request() {
    let emu = emulator(Duration::from_secs(3600)).await;
    // A slow IAM makes sure the callers really overlap.
    emu.inject(Target::Auth, Fault::Delay(Duration::from_millis(200)), 1);
    let manager = manager_for(&emu).build().unwrap();
    let tasks: Vec<_> = (0..1000)
        .map(|_| {
            let manager = manager.clone();
            tokio::spawn(async move { manager.get_token().await })
        })
        .collect();
    let mut tokens = Vec::new();
    for task in tasks {
        tokens.push(task.await.unwrap().unwrap());
    }
    assert_eq!(auth_calls(&emu), 1);
    assert!(tokens.iter().all(|t| t.same_as(&tokens[0])));
    assert_eq!(manager.stats().total_refreshes, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_failure_is_shared_too() {
    let emu = emulator(Duration::from_secs(3600)).await;
    emu.inject(Target::Auth, Fault::Delay(Duration::from_millis(100)), 1);
    let manager = manager_for(&emu).secret("wrong").build().unwrap();
    let tasks: Vec<_> = (0..200)
        .map(|_| {
            let manager = manager.clone();
            tokio::spawn(async move { manager.get_token().await })
        })
        .collect();
    for task in tasks {
        let err = task.await.unwrap().unwrap_err();
        assert!(matches!(
            err,
            Error::Auth(AuthError::InvalidCredentials { .. })
        ));
    }
    assert_eq!(auth_calls(&emu), 1);
}

#[cfg(feature = "blocking")]
#[test]
fn blocking_facade_from_eight_threads() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let emu = runtime.block_on(emulator(Duration::from_secs(3600)));
    emu.inject(Target::Auth, Fault::Delay(Duration::from_millis(200)), 1);
    let manager = evolution_langchain::blocking::TokenManager::builder()
        .key_id(emu.key_id())
        .secret(emu.secret())
        .auth_url(emu.auth_url())
        .build()
        .unwrap();
    let barrier = Arc::new(std::sync::Barrier::new(8));
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let manager = manager.clone();
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                barrier.wait();
                manager.get_token().unwrap().expose_secret().to_string()
            })
        })
        .collect();
    let tokens: Vec<String> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert!(tokens.iter().all(|t| t == &tokens[0]));
    assert_eq!(emu.counters().auth_requests, 1);
    assert_eq!(manager.stats().successful_refreshes, 1);
    assert!(manager.info().is_valid);
}

#[cfg(feature = "blocking")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocking_facade_works_from_any_thread() {
    let emu = emulator(Duration::from_secs(3600)).await;
    let manager = evolution_langchain::blocking::TokenManager::builder()
        .key_id(emu.key_id())
        .secret(emu.secret())
        .auth_url(emu.auth_url())
        .build()
        .unwrap();
    // Even inside an async task it neither panics (as a nested Tokio
    // block_on would) nor deadlocks; it only holds that thread meanwhile.
    let in_task = manager.clone();
    let token = tokio::spawn(async move { in_task.get_token() })
        .await
        .unwrap()
        .unwrap();
    assert!(!token.expose_secret().is_empty());
    // Through spawn_blocking, where blocking code belongs: it works.
    let token = tokio::task::spawn_blocking(move || manager.get_token())
        .await
        .unwrap()
        .unwrap();
    assert!(!token.expose_secret().is_empty());
    // `new` mirrors the async API: empty credentials surface on first use.
    let empty = evolution_langchain::blocking::TokenManager::new("", "s");
    let err = tokio::task::spawn_blocking(move || empty.get_token())
        .await
        .unwrap()
        .unwrap_err();
    assert!(
        matches!(err, Error::Config { ref field, .. } if field == "key_id"),
        "{err}"
    );
}

#[tokio::test(start_paused = true)]
async fn refreshes_exactly_at_expiry_minus_buffer() {
    let emu = emulator(Duration::from_secs(3600)).await;
    let manager = manager_for(&emu)
        .refresh_ahead(Duration::ZERO)
        .build()
        .unwrap();
    let first = manager.get_token().await.unwrap();
    tokio::time::advance(Duration::from_secs(3569)).await;
    assert!(manager.get_token().await.unwrap().same_as(&first));
    assert_eq!(auth_calls(&emu), 1, "refreshed before expiry - buffer");
    tokio::time::advance(Duration::from_millis(1001)).await;
    let second = manager.get_token().await.unwrap();
    assert!(!second.same_as(&first));
    assert_eq!(auth_calls(&emu), 2);
}

#[tokio::test(start_paused = true)]
async fn custom_buffer_is_honoured() {
    let emu = emulator(Duration::from_secs(600)).await;
    let manager = manager_for(&emu)
        .refresh_buffer(Duration::from_secs(60))
        .refresh_ahead(Duration::ZERO)
        .build()
        .unwrap();
    manager.get_token().await.unwrap();
    tokio::time::advance(Duration::from_secs(539)).await;
    manager.get_token().await.unwrap();
    assert_eq!(auth_calls(&emu), 1);
    tokio::time::advance(Duration::from_secs(2)).await;
    manager.get_token().await.unwrap();
    assert_eq!(auth_calls(&emu), 2);
    assert_eq!(manager.info().refresh_buffer, Duration::from_secs(60));
}

#[tokio::test(start_paused = true)]
async fn refresh_ahead_serves_the_old_token_and_refreshes_once_in_background() {
    let emu = emulator(Duration::from_secs(3600)).await;
    let manager = manager_for(&emu).build().unwrap(); // buffer 30 s, window 30 s
    let old = manager.get_token().await.unwrap();
    // Into the window [3540 s, 3570 s), with a slow IAM.
    tokio::time::advance(Duration::from_secs(3545)).await;
    emu.inject(Target::Auth, Fault::Delay(Duration::from_secs(2)), 1);
    let before = Instant::now();
    for _ in 0..50 {
        let token = manager.get_token().await.unwrap();
        assert!(token.same_as(&old), "window callers get the cached token");
    }
    assert_eq!(Instant::now(), before, "no caller waited");
    // Let the background refresh finish.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let new = manager.get_token().await.unwrap();
    assert!(!new.same_as(&old));
    assert_eq!(auth_calls(&emu), 2, "exactly one background refresh");
}

#[tokio::test]
async fn unauthorized_and_forbidden_fail_after_one_request() {
    let emu = emulator(Duration::from_secs(3600)).await;
    let bad = manager_for(&emu).secret("wrong").build().unwrap();
    let err = bad.get_token().await.unwrap_err();
    assert!(
        matches!(&err, Error::Auth(AuthError::InvalidCredentials { key_id }) if key_id == emu.key_id()),
        "{err:?}"
    );
    assert!(!err.is_retryable());
    assert_eq!(auth_calls(&emu), 1);

    let forbidden = manager_for(&emu)
        .key_id("no-rights-key")
        .secret("no-rights-secret")
        .build()
        .unwrap();
    let err = forbidden.get_token().await.unwrap_err();
    assert!(
        matches!(err, Error::Auth(AuthError::Forbidden { .. })),
        "{err:?}"
    );
    assert_eq!(auth_calls(&emu), 2);
}

#[tokio::test]
async fn transient_errors_are_retried() {
    let emu = emulator(Duration::from_secs(3600)).await;
    let manager = manager_for(&emu).build().unwrap();
    emu.inject(Target::Auth, Fault::Status(503), 2);
    manager.get_token().await.unwrap();
    assert_eq!(auth_calls(&emu), 3);
    assert_eq!(manager.stats().iam_requests, 3);

    manager.invalidate();
    emu.inject(Target::Auth, Fault::Status(503), 3);
    let err = manager.get_token().await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::Auth(AuthError::Transient {
                status: 503,
                attempts: 3,
                ..
            })
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("3 attempt"), "{err}");
    assert!(err.is_retryable());
    assert_eq!(auth_calls(&emu), 6);
}

#[tokio::test(start_paused = true)]
async fn retry_after_is_honoured() {
    let emu = emulator(Duration::from_secs(3600)).await;
    let manager = manager_for(&emu).build().unwrap();
    emu.inject(Target::Auth, Fault::StatusRetryAfter(429, 4), 1);
    let start = Instant::now();
    manager.get_token().await.unwrap();
    assert!(start.elapsed() >= Duration::from_secs(4));
    assert_eq!(auth_calls(&emu), 2);
}

#[tokio::test]
async fn malformed_replies_are_invalid_responses() {
    let emu = emulator(Duration::from_secs(3600)).await;
    let manager = manager_for(&emu).build().unwrap();
    let faults = [
        Fault::NotJson,
        Fault::Html,
        Fault::MissingField,
        Fault::ExpiresIn(json!(-5)),
        Fault::ExpiresIn(json!("soon")),
    ];
    for (n, fault) in faults.into_iter().enumerate() {
        emu.inject(Target::Auth, fault.clone(), 1);
        let err = manager.get_token().await.unwrap_err();
        assert!(
            matches!(err, Error::Auth(AuthError::InvalidResponse { .. })),
            "{fault:?}: {err:?}"
        );
        assert!(err.to_string().contains("auth_url"), "{err}");
        assert_eq!(auth_calls(&emu), n as u64 + 1, "{fault:?} is not retried");
    }
}

#[tokio::test]
async fn missing_expires_in_means_an_hour() {
    let emu = Emulator::builder()
        .omit_expires_in(true)
        .start()
        .await
        .unwrap();
    let manager = manager_for(&emu).build().unwrap();
    manager.get_token().await.unwrap();
    assert_eq!(manager.info().lifetime, Some(Duration::from_secs(3600)));
}

#[tokio::test]
async fn dropped_connection_is_a_connection_error() {
    let emu = emulator(Duration::from_secs(3600)).await;
    let manager = manager_for(&emu).max_retries(0).build().unwrap();
    emu.inject(Target::Auth, Fault::DropConnection, 1);
    let err = manager.get_token().await.unwrap_err();
    assert!(
        matches!(err, Error::Auth(AuthError::Connection { .. })),
        "{err:?}"
    );
    assert!(err.is_retryable());
    // With retries the next attempt gets through.
    let manager = manager_for(&emu).build().unwrap();
    emu.inject(Target::Auth, Fault::DropConnection, 1);
    manager.get_token().await.unwrap();
}

#[tokio::test]
async fn unreachable_iam_is_a_connection_error() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let manager = TokenManager::builder()
        .key_id("k")
        .secret("s")
        .auth_url(format!("http://127.0.0.1:{port}/api/v1/auth/token"))
        .max_retries(1)
        .build()
        .unwrap();
    let err = manager.get_token().await.unwrap_err();
    assert!(
        matches!(err, Error::Auth(AuthError::Connection { attempts: 2, .. })),
        "{err:?}"
    );
}

#[tokio::test]
async fn slow_iam_is_a_timeout() {
    let emu = emulator(Duration::from_secs(3600)).await;
    let manager = manager_for(&emu)
        .timeout(Duration::from_millis(200))
        .max_retries(0)
        .build()
        .unwrap();
    emu.inject(Target::Auth, Fault::Delay(Duration::from_secs(3)), 1);
    let started = std::time::Instant::now();
    let err = manager.get_token().await.unwrap_err();
    assert!(
        matches!(err, Error::Auth(AuthError::Timeout { .. })),
        "{err:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn fallback_credentials_take_over_and_stay() {
    let emu = emulator(Duration::from_secs(3600)).await;
    let manager = manager_for(&emu)
        .secret("revoked-primary-secret")
        .fallback_credentials(Credentials::new("backup-key", "backup-secret"))
        .build()
        .unwrap();
    manager.get_token().await.unwrap();
    assert_eq!(auth_calls(&emu), 2, "primary refused once, backup accepted");
    let info = manager.info();
    assert!(info.using_fallback);
    assert_eq!(info.key_id, "backup-key");
    let stats = manager.stats();
    assert!(stats.using_fallback);
    assert_eq!(stats.fallback_switches, 1);

    manager.invalidate();
    manager.get_token().await.unwrap();
    assert_eq!(auth_calls(&emu), 3, "the primary is not tried again");
}

#[tokio::test]
async fn invalidate_forces_a_refresh() {
    let emu = emulator(Duration::from_secs(3600)).await;
    let manager = manager_for(&emu).build().unwrap();
    let first = manager.get_token().await.unwrap();
    manager.invalidate();
    assert!(!manager.info().has_token);
    let second = manager.get_token().await.unwrap();
    assert!(!first.same_as(&second));
    assert_eq!(auth_calls(&emu), 2);
    // invalidate_token only forgets the token it names.
    manager.invalidate_token(&first);
    assert!(manager.get_token().await.unwrap().same_as(&second));
    manager.invalidate_token(&second);
    manager.get_token().await.unwrap();
    assert_eq!(auth_calls(&emu), 3);
}

#[tokio::test]
async fn stats_are_exact_after_a_scripted_sequence() {
    let emu = emulator(Duration::from_secs(1200)).await;
    let manager = manager_for(&emu).build().unwrap();
    manager.get_token().await.unwrap(); // success, 1 request
    manager.invalidate();
    emu.inject(Target::Auth, Fault::Status(500), 3);
    manager.get_token().await.unwrap_err(); // failure, 3 requests
    emu.inject(Target::Auth, Fault::NotJson, 1);
    manager.get_token().await.unwrap_err(); // failure, 1 request
    manager.get_token().await.unwrap(); // success, 1 request
    let stats = manager.stats();
    assert_eq!(stats.total_refreshes, 4);
    assert_eq!(stats.successful_refreshes, 2);
    assert_eq!(stats.failed_refreshes, 2);
    assert_eq!(stats.success_rate, 50.0);
    assert_eq!(stats.iam_requests, 6);
    assert_eq!(stats.average_token_lifetime, Duration::from_secs(1200));
    assert!(stats.average_refresh_duration > Duration::ZERO);
    assert!(stats
        .last_error
        .as_deref()
        .unwrap()
        .contains("invalid response"));
    assert!(stats.last_refresh.is_some());
    assert_eq!(stats.fallback_switches, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_caller_does_not_wedge_the_others() {
    let emu = emulator(Duration::from_secs(3600)).await;
    emu.inject(Target::Auth, Fault::Delay(Duration::from_millis(400)), 1);
    let manager = manager_for(&emu).build().unwrap();
    let first = tokio::spawn({
        let manager = manager.clone();
        async move { manager.get_token().await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    first.abort();
    assert!(first.await.unwrap_err().is_cancelled());
    let token = tokio::time::timeout(Duration::from_secs(5), manager.get_token())
        .await
        .expect("not wedged")
        .unwrap();
    assert!(!token.expose_secret().is_empty());
    assert_eq!(
        auth_calls(&emu),
        1,
        "the refresh outlived its cancelled caller"
    );
}

#[tokio::test]
async fn secrets_never_appear_in_debug_errors_or_logs() {
    let captured = captured_logs();

    let secret = "s3cr3t-Value-7f2a9c";
    let emu = Emulator::builder()
        .credentials("visible-key", secret)
        .token_ttl(Duration::from_secs(3600))
        .start()
        .await
        .unwrap();
    let builder = TokenManager::builder()
        .key_id("visible-key")
        .secret(secret)
        .auth_url(emu.auth_url())
        .retry(RetryPolicy {
            initial_backoff: Duration::from_millis(5),
            ..RetryPolicy::default()
        })
        .fallback_credentials(Credentials::new("other", secret));
    let mut shown = vec![format!("{builder:?}")];
    let manager = builder.build().unwrap();
    let token = manager.get_token().await.unwrap();
    let token_text = token.expose_secret().to_string();
    assert!(token_text.len() > 8);

    // Errors of every kind, with the same secret in play.
    emu.inject(Target::Auth, Fault::Status(503), 3);
    manager.invalidate();
    shown.push(format!("{:?}", manager.get_token().await.unwrap_err()));
    let wrong = TokenManager::builder()
        .key_id("visible-key")
        .secret("wrong-secret-value-123")
        .auth_url(emu.auth_url())
        .build()
        .unwrap();
    let err = wrong.get_token().await.unwrap_err();
    shown.push(err.to_string());
    shown.push(format!("{err:?}"));
    manager.get_token().await.unwrap();

    shown.push(format!("{manager:?}"));
    shown.push(format!("{token:?} {token}"));
    shown.push(format!("{:?}", manager.info()));
    shown.push(format!("{:?}", manager.stats()));
    shown.push(format!("{:?}", Credentials::new("visible-key", secret)));
    shown.push(format!(
        "{:?}",
        evolution_langchain::StaticToken::new(token_text.clone())
    ));
    let logs = captured.text();
    assert!(
        logs.contains("obtained an access token"),
        "logs captured: {logs}"
    );
    shown.push(logs);

    for text in &shown {
        assert!(!text.contains(secret), "secret leaked in: {text}");
        assert!(
            !text.contains("wrong-secret-value-123"),
            "secret leaked in: {text}"
        );
        assert!(!text.contains(&token_text), "token leaked in: {text}");
    }
}

#[cfg(feature = "blocking")]
#[test]
fn blocking_inference_facade() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let emu = runtime.block_on(emulator(Duration::from_secs(3600)));
    let llm = evolution_langchain::blocking::EvolutionInference::builder()
        .key_id(emu.key_id())
        .secret(emu.secret())
        .base_url(emu.base_url())
        .auth_url(emu.auth_url())
        .build()
        .unwrap();
    assert_eq!(
        llm.invoke("plain threads work").unwrap(),
        "plain threads work"
    );
    let result = llm
        .invoke_batch(&["a b", "c d"], evolution_langchain::ChatOptions::default())
        .unwrap();
    assert_eq!(result.texts(), vec!["a b", "c d"]);
    let chunks: Vec<_> = llm
        .stream("one two three")
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let text: String = chunks.iter().filter_map(|c| c.content()).collect();
    assert_eq!(text, "one two three");
    let response = llm
        .chat(
            &[evolution_langchain::ChatMessage::user("x y")],
            evolution_langchain::ChatOptions::new().max_tokens(1),
        )
        .unwrap();
    assert_eq!(response.content(), "x");
    assert_eq!(response.finish_reason(), Some("length"));
    // Threads share one client.
    let threads: Vec<_> = (0..4)
        .map(|i| {
            let llm = llm.clone();
            std::thread::spawn(move || llm.invoke(&format!("thread {i}")).unwrap())
        })
        .collect();
    for (i, t) in threads.into_iter().enumerate() {
        assert_eq!(t.join().unwrap(), format!("thread {i}"));
    }
    assert_eq!(emu.counters().auth_requests, 1);
}

#[tokio::test(start_paused = true)]
async fn a_simulated_week_of_hourly_tokens() {
    let emu = emulator(Duration::from_secs(3600)).await;
    let manager = manager_for(&emu).build().unwrap();
    let mut previous = manager.get_token().await.unwrap();
    let mut changes = 0;
    // A call every five minutes for seven days.
    for _ in 0..(7 * 24 * 12) {
        tokio::time::advance(Duration::from_secs(300)).await;
        let token = manager.get_token().await.unwrap();
        // Let a background refresh, if one started, finish.
        tokio::time::sleep(Duration::from_millis(1)).await;
        if !token.same_as(&previous) {
            changes += 1;
            previous = token;
        }
        assert!(manager.info().expires_in.unwrap() > Duration::from_secs(30));
    }
    let stats = manager.stats();
    // About one refresh per hour of simulated time, never an expired token.
    assert!(
        (165..=175).contains(&stats.successful_refreshes),
        "{stats:?}"
    );
    assert_eq!(stats.failed_refreshes, 0);
    assert_eq!(stats.iam_requests, emu.counters().auth_requests);
    assert!(changes >= 165, "{changes} token changes");
}

/// An emulator whose first IAM answer takes 500 ms, served by a runtime of
/// its own that outlives the test's other runtimes (keep the first value).
fn slow_iam_on_its_own_runtime() -> (tokio::runtime::Runtime, EmulatorHandle) {
    let server = tokio::runtime::Runtime::new().unwrap();
    let emu = server.block_on(emulator(Duration::from_secs(3600)));
    emu.inject(Target::Auth, Fault::Delay(Duration::from_millis(500)), 1);
    (server, emu)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn a_refresh_orphaned_by_its_runtime_does_not_wedge_the_manager() {
    let (_server, emu) = slow_iam_on_its_own_runtime();
    let manager = manager_for(&emu).build().unwrap();

    // Runtime A starts a refresh, then goes away while it is in flight
    // (a manager in a static shared by tests does exactly this).
    let a = runtime();
    a.block_on(async {
        let pending = tokio::time::timeout(Duration::from_millis(100), manager.get_token()).await;
        assert!(pending.is_err(), "IAM was still answering");
    });
    drop(a);

    let b = runtime();
    let token = b
        .block_on(async { tokio::time::timeout(Duration::from_secs(5), manager.get_token()).await })
        .expect("not wedged")
        .expect("a new refresh on the live runtime");
    assert!(!token.expose_secret().is_empty());
}

#[test]
fn a_refresh_stuck_on_an_idle_runtime_is_replaced() {
    let (_server, emu) = slow_iam_on_its_own_runtime();
    // One attempt of at most 300 ms: any refresh is over within 1.3 s.
    let manager = manager_for(&emu)
        .timeout(Duration::from_millis(300))
        .max_retries(0)
        .build()
        .unwrap();
    // Runtime A starts a refresh and is then never driven again, but stays alive.
    let a = runtime();
    a.block_on(async {
        let pending = tokio::time::timeout(Duration::from_millis(50), manager.get_token()).await;
        assert!(pending.is_err());
    });
    let started = std::time::Instant::now();
    let token = runtime()
        .block_on(async {
            tokio::time::timeout(Duration::from_secs(10), manager.get_token()).await
        })
        .expect("not stuck behind the idle runtime")
        .unwrap();
    assert!(!token.expose_secret().is_empty());
    assert!(started.elapsed() < Duration::from_secs(5));
    drop(a);
}
