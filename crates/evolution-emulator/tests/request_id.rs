//! `x-request-id` on every `/v1` response: echoed when the caller sent a usable one,
//! generated (`emu-<n>`) otherwise.

mod common;

use common::{client, read_sse, streamed, token, user};
use evolution_emulator::{Emulator, EmulatorHandle, Fault, Target};
use serde_json::json;

fn id_of(response: &reqwest::Response) -> String {
    response
        .headers()
        .get("x-request-id")
        .unwrap_or_else(|| panic!("no x-request-id on {}", response.url()))
        .to_str()
        .unwrap()
        .to_owned()
}

async fn chat_with_id(emu: &EmulatorHandle, token: &str, id: Option<&str>) -> reqwest::Response {
    let mut request = client()
        .post(format!("{}/chat/completions", emu.base_url()))
        .bearer_auth(token)
        .json(&user("hi"));
    if let Some(id) = id {
        request = request.header("x-request-id", id);
    }
    request.send().await.unwrap()
}

#[tokio::test]
async fn incoming_ids_are_echoed_and_recorded() {
    let emu = Emulator::start().await.unwrap();
    let token = token(&emu).await;
    let response = chat_with_id(&emu, &token, Some("client-req-1")).await;
    assert_eq!(response.status(), 200);
    assert_eq!(id_of(&response), "client-req-1");
    assert_eq!(
        emu.last_request().unwrap().request_id.as_deref(),
        Some("client-req-1")
    );

    let longest = "r".repeat(200);
    let response = chat_with_id(&emu, &token, Some(&longest)).await;
    assert_eq!(id_of(&response), longest);
    emu.shutdown().await;
}

#[tokio::test]
async fn missing_or_unusable_ids_are_generated() {
    let emu = Emulator::start().await.unwrap();
    let token = token(&emu).await;
    let first = id_of(&chat_with_id(&emu, &token, None).await);
    let second = id_of(&chat_with_id(&emu, &token, None).await);
    assert!(first.starts_with("emu-"), "{first}");
    assert!(second.starts_with("emu-"), "{second}");
    assert_ne!(first, second);
    assert_eq!(emu.last_request().unwrap().request_id, None);

    let too_long = "r".repeat(201);
    let response = chat_with_id(&emu, &token, Some(&too_long)).await;
    assert!(id_of(&response).starts_with("emu-"));
    // What was received is still recorded as received.
    assert_eq!(
        emu.last_request().unwrap().request_id.as_deref(),
        Some(too_long.as_str())
    );
    emu.shutdown().await;
}

#[tokio::test]
async fn errors_streams_and_faults_carry_it_too() {
    let emu = Emulator::start().await.unwrap();
    let token = token(&emu).await;
    let base = emu.base_url();
    let http = client();

    let unauthorized = chat_with_id(&emu, "bad", Some("e-401")).await;
    assert_eq!(
        (unauthorized.status().as_u16(), id_of(&unauthorized)),
        (401, "e-401".into())
    );

    let bad = http
        .post(format!("{base}/chat/completions"))
        .bearer_auth(&token)
        .header("x-request-id", "e-400")
        .json(&json!({"messages": "nope"}))
        .send()
        .await
        .unwrap();
    assert_eq!((bad.status().as_u16(), id_of(&bad)), (400, "e-400".into()));

    let missing = http
        .get(format!("{base}/no/such/route"))
        .bearer_auth(&token)
        .header("x-request-id", "e-404")
        .send()
        .await
        .unwrap();
    assert_eq!(
        (missing.status().as_u16(), id_of(&missing)),
        (404, "e-404".into())
    );

    let wrong_method = http
        .post(format!("{base}/models"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(wrong_method.status(), 405);
    assert!(id_of(&wrong_method).starts_with("emu-"));

    let stream = http
        .post(format!("{base}/chat/completions"))
        .bearer_auth(&token)
        .header("x-request-id", "s-1")
        .json(&streamed("a b c"))
        .send()
        .await
        .unwrap();
    assert_eq!(id_of(&stream), "s-1");
    assert!(read_sse(stream).await.is_ok());

    emu.inject(Target::Chat, Fault::Status(503), 1);
    let fault = chat_with_id(&emu, &token, Some("f-503")).await;
    assert_eq!(
        (fault.status().as_u16(), id_of(&fault)),
        (503, "f-503".into())
    );

    // The IAM and admin routes are not /v1 and carry none.
    let auth = http
        .post(emu.auth_url())
        .json(&common::credentials(&emu))
        .send()
        .await
        .unwrap();
    assert!(auth.headers().get("x-request-id").is_none());
    emu.shutdown().await;
}

#[tokio::test]
async fn upstream_mode_passes_the_id_on() {
    let up = Emulator::start().await.unwrap();
    let front = Emulator::builder()
        .upstream(up.base_url())
        .upstream_api_key(token(&up).await)
        .start()
        .await
        .unwrap();
    let token = token(&front).await;
    let response = chat_with_id(&front, &token, Some("through-1")).await;
    assert_eq!(response.status(), 200);
    assert_eq!(id_of(&response), "through-1");
    assert_eq!(
        up.last_request().unwrap().request_id.as_deref(),
        Some("through-1")
    );
    front.shutdown().await;
    up.shutdown().await;
}
