//! A fleet sharing one key through a real `redis-server` (started here on a
//! free loopback port): the rate limit kept together, one IAM exchange for
//! the whole fleet, the token encrypted at rest, and Redis dying mid-batch
//! costing nothing but one warning.
#![cfg(feature = "redis")]

mod common;

use std::time::{Duration, Instant};

use evolution_emulator::{Emulator, EmulatorHandle, Fault, RedisServer, Target};
use evolution_langchain::{
    AuthError, ChatOptions, Error, EvolutionInference, EvolutionInferenceBuilder, TokenManager,
};

/// Every key of `redis` and its value, read with a plain client.
async fn dump(redis: &RedisServer) -> Vec<(String, Vec<u8>)> {
    let client = redis::Client::open(redis.url()).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut connection)
        .await
        .unwrap();
    let mut all = Vec::new();
    for key in keys {
        let kind: String = redis::cmd("TYPE")
            .arg(&key)
            .query_async(&mut connection)
            .await
            .unwrap();
        let value: Vec<u8> = if kind == "string" {
            redis::cmd("GET")
                .arg(&key)
                .query_async(&mut connection)
                .await
                .unwrap()
        } else {
            Vec::new()
        };
        all.push((key, value));
    }
    all
}

/// Waits (up to 5 s) until a process holds the lock of a token exchange.
async fn wait_for_exchange_lock(redis: &RedisServer) {
    let started = Instant::now();
    while !dump(redis)
        .await
        .iter()
        .any(|(key, _)| key.starts_with("evolution:token:") && key.ends_with(":lock"))
    {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "nobody took the exchange lock"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// An emulator allowing `rpm` a minute per key, enforced per second.
async fn limited(rpm: u32) -> EmulatorHandle {
    Emulator::builder()
        .requests_per_minute(rpm)
        .rate_burst(Duration::from_secs(1))
        .latency(Duration::from_millis(50))
        .start()
        .await
        .unwrap()
}

/// A client of the fleet: its own token manager and limiter, sharing them
/// through `redis`.
fn member(emu: &EmulatorHandle, redis: &RedisServer) -> EvolutionInferenceBuilder {
    common::client(emu)
        .max_tokens(4)
        .max_concurrency(8)
        .requests_per_minute(600)
        .redis_url(redis.url())
}

fn prompts(n: usize, tag: &str) -> Vec<String> {
    (0..n).map(|i| format!("{tag} {i}")).collect()
}

#[tokio::test]
async fn four_members_stay_under_the_limit_together_with_one_iam_exchange() {
    let redis = RedisServer::start();
    let emu = limited(600).await;
    let members: Vec<EvolutionInference> = (0..4)
        .map(|_| member(&emu, &redis).build().unwrap())
        .collect();
    let batches: Vec<Vec<String>> = (0..4).map(|i| prompts(20, &format!("m{i}"))).collect();
    let started = Instant::now();
    let outcomes = futures::future::join_all(
        members
            .iter()
            .zip(&batches)
            .map(|(llm, prompts)| llm.invoke_batch(prompts, ChatOptions::new())),
    )
    .await;
    for outcome in &outcomes {
        assert!(outcome.is_ok(), "{outcome:?}");
    }
    let counters = emu.counters();
    assert_eq!(
        counters.tokens_issued, 1,
        "one IAM exchange for the fleet: {counters:?}"
    );
    assert!(
        counters.rate_limited <= 2,
        "together under the limit: {counters:?}"
    );
    // 80 calls at 10 a second (5 at once): about 7.5 s, not 4 × 20 at once.
    assert!(
        started.elapsed() >= Duration::from_secs(7),
        "{:?}",
        started.elapsed()
    );

    // At rest: no secret, key id, API key or token in a key or a value.
    let token = members[0]
        .token_manager()
        .unwrap()
        .get_token()
        .await
        .unwrap();
    let dump = dump(&redis).await;
    assert!(
        dump.iter()
            .any(|(key, _)| key.starts_with("evolution:token:")),
        "{dump:?}"
    );
    assert!(
        dump.iter()
            .any(|(key, _)| key.starts_with("evolution:rate:")),
        "{dump:?}"
    );
    for (key, value) in &dump {
        let value = String::from_utf8_lossy(value);
        for secret in [token.expose_secret(), emu.secret(), emu.key_id()] {
            assert!(
                !key.contains(secret) && !value.contains(secret),
                "{key} = {value}"
            );
        }
    }
}

#[tokio::test]
async fn a_rejected_shared_token_is_replaced_for_the_fleet() {
    let redis = RedisServer::start();
    let emu = common::emulator().await;
    let a = member(&emu, &redis).build().unwrap();
    let b = member(&emu, &redis).build().unwrap();
    a.invoke("one").await.unwrap();
    b.invoke("two").await.unwrap();
    assert_eq!(emu.counters().tokens_issued, 1);
    emu.revoke_tokens();
    a.invoke("three").await.unwrap();
    b.invoke("four").await.unwrap();
    assert_eq!(
        emu.counters().tokens_issued,
        2,
        "one new token, shared: {:?}",
        emu.counters()
    );
}

#[tokio::test]
async fn redis_dying_mid_batch_costs_one_warning_and_nothing_else() {
    let logs = common::captured_logs();
    let mut redis = RedisServer::start();
    let emu = limited(600).await;
    let llm = member(&emu, &redis).build().unwrap();
    let prompts = prompts(40, "p");
    let batch = llm.invoke_batch(&prompts, ChatOptions::new());
    let kill = async {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        redis.stop();
    };
    let (outcome, ()) = tokio::join!(batch, kill);
    let result = outcome.unwrap_or_else(|e| panic!("nothing is lost: {e}"));
    assert_eq!(result.texts().len(), 40);
    let text = logs.text();
    let warnings = text.matches("Redis failed").count();
    assert_eq!(warnings, 1, "one warning: {text}");
    assert!(!text.contains(&format!(":{}@", redis.port())));
    // Still paced by the local limiter after Redis went.
    assert!(emu.counters().rate_limited <= 2, "{:?}", emu.counters());
}

#[test]
fn a_bad_redis_url_is_a_configuration_error_that_shows_no_password() {
    let err = EvolutionInference::builder()
        .api_key("k")
        .redis_url("http://:hunter2@example.invalid")
        .build()
        .unwrap_err();
    let text = err.to_string();
    assert!(text.contains("redis_url"), "{text}");
    assert!(!text.contains("hunter2"), "{text}");
}

/// A token manager of the fleet, with the emulator's credentials.
fn fleet_manager(emu: &EmulatorHandle, redis: &RedisServer) -> TokenManager {
    common::manager_for(emu)
        .redis_url(redis.url())
        .build()
        .unwrap()
}

#[tokio::test]
async fn a_failed_exchange_frees_the_lock_for_a_waiting_member_at_once() {
    let redis = RedisServer::start();
    let emu = common::emulator().await;
    // The first member's IAM answer takes 800 ms, and refuses its secret.
    emu.inject(Target::Auth, Fault::Delay(Duration::from_millis(800)), 1);
    let refused = common::manager_for(&emu)
        .secret("not the secret")
        .redis_url(redis.url())
        .build()
        .unwrap();
    let waiting = fleet_manager(&emu, &redis);
    let holder = tokio::spawn(async move { refused.get_token().await });
    wait_for_exchange_lock(&redis).await;
    // The holder is exchanging: this member waits, then takes the lock the
    // holder released on failing (it waited 15 s before).
    let token = tokio::time::timeout(Duration::from_secs(8), waiting.get_token())
        .await
        .expect("the waiting member exchanged once the holder failed")
        .expect("a token");
    assert!(
        holder.is_finished(),
        "the waiting member exchanged only after the holder gave up"
    );
    let refusal = holder.await.unwrap().unwrap_err();
    assert!(
        matches!(refusal, Error::Auth(AuthError::InvalidCredentials { .. })),
        "{refusal}"
    );
    let counters = emu.counters();
    assert_eq!(
        counters.auth_requests, 2,
        "the holder's exchange, then the waiting member's: {counters:?}"
    );
    assert_eq!(counters.tokens_issued, 1, "{counters:?}");
    // The token is the fleet's: another member takes it from Redis.
    let third = fleet_manager(&emu, &redis).get_token().await.unwrap();
    assert_eq!(third.expose_secret(), token.expose_secret());
    assert_eq!(emu.counters().auth_requests, 2);
}

#[tokio::test]
async fn a_slow_iam_exchange_is_made_once_for_the_fleet() {
    let redis = RedisServer::start();
    let emu = common::emulator().await;
    // IAM takes 2 s to answer the first exchange.
    emu.inject(Target::Auth, Fault::Delay(Duration::from_secs(2)), 1);
    let members: Vec<TokenManager> = (0..4).map(|_| fleet_manager(&emu, &redis)).collect();
    let first = members[0].clone();
    let holder = tokio::spawn(async move { first.get_token().await });
    wait_for_exchange_lock(&redis).await;
    let waiters = futures::future::join_all(members[1..].iter().map(TokenManager::get_token));
    let tokens = tokio::time::timeout(Duration::from_secs(8), waiters)
        .await
        .expect("the fleet got the holder's token");
    let held = holder.await.unwrap().unwrap();
    for token in tokens {
        assert_eq!(token.unwrap().expose_secret(), held.expose_secret());
    }
    let counters = emu.counters();
    assert_eq!(counters.auth_requests, 1, "one exchange: {counters:?}");
    assert_eq!(counters.tokens_issued, 1, "{counters:?}");
}
