//! Counters, the request log, and the `/_emulator` admin routes.

mod common;

use std::time::Duration;

use clap::Parser;
use common::{chat, client, credentials, post, streamed, token, user};
use evolution_emulator::{
    Counters, Emulator, EmulatorArgs, EmulatorHandle, Fault, FaultSpec, Target,
    DEFAULT_REQUEST_LOG_LIMIT,
};
use serde_json::{json, Value};

#[tokio::test]
async fn counters_are_exact() {
    let emu = Emulator::start().await.unwrap();
    assert_eq!(emu.counters(), Counters::default());
    let token = token(&emu).await;
    let _ = client()
        .post(emu.auth_url())
        .json(&json!({"keyId": "x", "secret": "y"}))
        .send()
        .await
        .unwrap();
    chat(&emu, &token, user("one")).await;
    post(&emu, &token, "/chat/completions", streamed("two"))
        .await
        .text()
        .await
        .unwrap();
    chat(&emu, "bad-token", user("three")).await;
    post(&emu, &token, "/embeddings", json!({"input": "e"}))
        .await
        .text()
        .await
        .unwrap();
    client()
        .get(format!("{}/models", emu.base_url()))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();

    let c = emu.counters();
    assert_eq!(
        c,
        Counters {
            auth_requests: 2,
            tokens_issued: 1,
            chat_requests: 3,
            stream_requests: 1,
            models_requests: 1,
            embeddings_requests: 1,
            unauthorized: 1,
            api_key_requests: 0,
            rerank_requests: 0,
            in_flight: 0,
            peak_in_flight: 1,
            rate_limited: 0,
            transcription_requests: 0,
        }
    );
    assert_eq!(emu.requests().len(), 5, "auth is not a /v1 request");

    emu.reset_counters();
    assert_eq!(emu.counters(), Counters::default());
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peak_in_flight_under_concurrent_requests() {
    let emu = Emulator::builder()
        .word_delay(Duration::from_millis(200))
        .start()
        .await
        .unwrap();
    let token = token(&emu).await;
    let tasks: Vec<_> = (0..5)
        .map(|i| {
            let emu = emu.clone();
            let token = token.clone();
            tokio::spawn(async move {
                let mut body = user("a b c d");
                body["stream"] = json!(i % 2 == 0);
                post(&emu, &token, "/chat/completions", body)
                    .await
                    .text()
                    .await
                    .unwrap()
            })
        })
        .collect();
    // Each answer takes 4 × 200 ms, so all five are in flight together at some point.
    tokio::time::timeout(Duration::from_secs(5), async {
        while emu.counters().in_flight < 5 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("five requests in flight at once");
    for task in tasks {
        task.await.unwrap();
    }
    tokio::time::timeout(Duration::from_secs(2), async {
        while emu.counters().in_flight != 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("in_flight returns to 0");
    let c = emu.counters();
    assert_eq!(c.peak_in_flight, 5);
    assert_eq!((c.chat_requests, c.stream_requests), (5, 3));
    emu.shutdown().await;
}

#[tokio::test]
async fn request_log_keeps_arrival_order_and_bodies() {
    let emu = Emulator::start().await.unwrap();
    let token = token(&emu).await;
    chat(&emu, &token, user("first")).await;
    post(&emu, &token, "/embeddings", json!({"input": "second"})).await;
    let log = emu.requests();
    assert_eq!(log.len(), 2);
    assert_eq!(log[0].path, "/v1/chat/completions");
    assert_eq!(log[0].body["messages"][0]["content"], "first");
    assert_eq!(log[1].method, "POST");
    assert_eq!(log[1].body, json!({"input": "second"}));
    assert_eq!(emu.last_request().unwrap(), log[1]);
    emu.clear_requests();
    assert!(emu.requests().is_empty());
    emu.shutdown().await;
}

async fn admin(method: reqwest::Method, url: String, body: Option<Value>) -> (u16, Value) {
    let mut request = client().request(method, url);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

#[tokio::test]
async fn admin_routes_control_the_emulator() {
    use reqwest::Method;
    let emu = Emulator::start().await.unwrap();
    let base = format!("{}/_emulator", emu.url());
    let token = token(&emu).await;
    chat(&emu, &token, user("hello there")).await;

    let (status, counters) = admin(Method::GET, format!("{base}/counters"), None).await;
    assert_eq!(status, 200);
    assert_eq!(counters["chat_requests"], 1);
    assert_eq!(counters["tokens_issued"], 1);
    assert_eq!(counters["peak_in_flight"], 1);

    let (status, requests) = admin(Method::GET, format!("{base}/requests"), None).await;
    assert_eq!(status, 200);
    assert_eq!(requests[0]["path"], "/v1/chat/completions");
    assert_eq!(requests[0]["authorized"], true);
    assert_eq!(requests[0]["project_id"], Value::Null);
    assert_eq!(requests[0]["body"]["messages"][0]["content"], "hello there");

    let (status, added) = admin(
        Method::POST,
        format!("{base}/faults"),
        Some(json!({"target": "chat", "fault": "status:503", "times": 2})),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(added["times"], 2);
    let (_, pending) = admin(Method::GET, format!("{base}/faults"), None).await;
    assert_eq!(
        pending["faults"],
        json!([{"target": "chat", "fault": "status:503", "times": 2}])
    );
    assert_eq!(chat(&emu, &token, user("x")).await.0, 503);
    let (_, pending) = admin(Method::GET, format!("{base}/faults"), None).await;
    assert_eq!(
        pending["faults"],
        json!([{"target": "chat", "fault": "status:503", "times": 1}])
    );
    let (_, _) = admin(Method::DELETE, format!("{base}/faults"), None).await;
    assert_eq!(chat(&emu, &token, user("x")).await.0, 200);

    // times defaults to 1
    admin(
        Method::POST,
        format!("{base}/faults"),
        Some(json!({"target": "auth", "fault": "status:429:3"})),
    )
    .await;
    let response = client()
        .post(emu.auth_url())
        .json(&credentials(&emu))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["retry-after"], "3");

    let (status, revoked) = admin(Method::POST, format!("{base}/revoke"), None).await;
    assert_eq!(status, 200);
    assert_eq!(revoked["revoked"], 1);
    assert_eq!(chat(&emu, &token, user("x")).await.0, 401);

    let (status, reset) = admin(Method::POST, format!("{base}/reset"), None).await;
    assert_eq!(status, 200);
    assert_eq!(reset["chat_requests"], 0);
    admin(Method::DELETE, format!("{base}/requests"), None).await;
    assert!(emu.requests().is_empty());
    emu.shutdown().await;
}

#[tokio::test]
async fn admin_rejects_bad_fault_requests() {
    use reqwest::Method;
    let emu = Emulator::start().await.unwrap();
    let url = format!("{}/_emulator/faults", emu.url());
    for (body, needle) in [
        (json!({"fault": "drop"}), "'target'"),
        (json!({"target": "chat"}), "'fault'"),
        (json!({"target": "moon", "fault": "drop"}), "moon"),
        (json!({"target": "chat", "fault": "explode"}), "explode"),
        (
            json!({"target": "chat", "fault": "drop", "times": 0}),
            "'times'",
        ),
        (
            json!({"target": "chat", "fault": "drop", "times": 1_000_001}),
            "between 1 and 1000000",
        ),
        (json!({"target": "chat", "fault": 5}), "'fault'"),
    ] {
        let (status, reply) = admin(Method::POST, url.clone(), Some(body.clone())).await;
        assert_eq!(status, 400, "{body}");
        let message = reply["error"]["message"].as_str().unwrap();
        assert!(
            message.contains(needle),
            "{message:?} should mention {needle:?}"
        );
    }
    let response = client().post(&url).body("nope").send().await.unwrap();
    assert_eq!(response.status(), 400);
    emu.inject(Target::Chat, Fault::Html, 1);
    emu.shutdown().await;
}

#[tokio::test]
async fn handle_clones_share_the_emulator_and_shutdown_stops_it() {
    let emu = Emulator::start().await.unwrap();
    let clone = emu.clone();
    drop(emu);
    // Dropping a handle does not stop the server.
    let token = token(&clone).await;
    assert_eq!(chat(&clone, &token, user("still here")).await.0, 200);
    assert!(clone.url().starts_with("http://127.0.0.1:"));
    assert_eq!(clone.base_url(), format!("{}/v1", clone.url()));
    assert_eq!(
        clone.auth_url(),
        format!("{}/api/v1/auth/token", clone.url())
    );
    assert_eq!(clone.addr().ip(), std::net::Ipv4Addr::LOCALHOST);

    clone.shutdown().await;
    clone.shutdown().await;
    let result = client()
        .get(format!("{}/models", clone.base_url()))
        .send()
        .await;
    assert!(result.is_err(), "nothing listens after shutdown");
}

fn logged_prompts(emu: &EmulatorHandle) -> Vec<String> {
    emu.requests()
        .iter()
        .map(|r| {
            r.body["messages"][0]["content"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect()
}

#[tokio::test]
async fn request_log_keeps_only_the_newest_requests() {
    let emu = Emulator::builder()
        .request_log_limit(3)
        .start()
        .await
        .unwrap();
    let token = token(&emu).await;
    for i in 0..5 {
        assert_eq!(
            chat(&emu, &token, user(&format!("message {i}"))).await.0,
            200
        );
    }
    assert_eq!(
        logged_prompts(&emu),
        ["message 2", "message 3", "message 4"]
    );
    assert_eq!(
        emu.last_request().unwrap().body["messages"][0]["content"],
        "message 4"
    );
    let (status, logged) = admin(
        reqwest::Method::GET,
        format!("{}/_emulator/requests", emu.url()),
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(logged.as_array().unwrap().len(), 3);
    assert_eq!(logged[0]["body"]["messages"][0]["content"], "message 2");
    // The counters are exact whatever the log keeps.
    assert_eq!(emu.counters().chat_requests, 5);

    emu.clear_requests();
    chat(&emu, &token, user("after clear")).await;
    assert_eq!(logged_prompts(&emu), ["after clear"]);
    emu.shutdown().await;
}

#[tokio::test]
async fn a_zero_request_log_limit_records_nothing() {
    let emu = Emulator::builder()
        .request_log_limit(0)
        .start()
        .await
        .unwrap();
    let token = token(&emu).await;
    for text in ["one", "two"] {
        assert_eq!(chat(&emu, &token, user(text)).await.0, 200);
    }
    chat(&emu, "bad-token", user("three")).await;
    assert!(emu.requests().is_empty());
    assert!(emu.last_request().is_none());
    let c = emu.counters();
    assert_eq!((c.chat_requests, c.unauthorized), (3, 1));
    emu.shutdown().await;
}

#[derive(Debug, Parser)]
struct Cli {
    #[command(flatten)]
    emulator: EmulatorArgs,
}

#[tokio::test]
async fn request_log_limit_flag_configures_the_log() {
    assert_eq!(DEFAULT_REQUEST_LOG_LIMIT, 10_000);
    let defaults = Cli::try_parse_from(["x"]).unwrap().emulator;
    assert_eq!(defaults.request_log_limit, DEFAULT_REQUEST_LOG_LIMIT);
    assert_eq!(EmulatorArgs::default().request_log_limit, 10_000);
    assert!(Cli::try_parse_from(["x", "--request-log-limit", "-1"]).is_err());

    let args = Cli::try_parse_from(["x", "--request-log-limit", "2"])
        .unwrap()
        .emulator;
    assert_eq!(args.request_log_limit, 2);
    let emu = args.builder().start().await.unwrap();
    let token = token(&emu).await;
    for text in ["a", "b", "c"] {
        chat(&emu, &token, user(text)).await;
    }
    assert_eq!(logged_prompts(&emu), ["b", "c"]);
    emu.shutdown().await;
}

#[test]
fn fault_repeat_cap_matches_the_admin_route() {
    assert_eq!(FaultSpec::MAX_TIMES, 1_000_000);
}
