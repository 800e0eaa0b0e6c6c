//! Foundation Models API keys (a bearer accepted as it is, no IAM exchange), auth
//! switched off, and what the request log keeps of the credentials.

mod common;

use clap::Parser;
use common::{chat, client, token, user};
use evolution_emulator::{env_lines, env_lines_api_key, Emulator, EmulatorArgs, EmulatorHandle};
use serde_json::Value;

async fn models_with(emu: &EmulatorHandle, authorization: Option<&str>) -> (u16, Value) {
    let mut request = client().get(format!("{}/models", emu.base_url()));
    if let Some(value) = authorization {
        request = request.header("authorization", value);
    }
    let response = request.send().await.unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

#[tokio::test]
async fn an_api_key_is_served_without_any_iam_request() {
    let emu = Emulator::builder()
        .api_key("fm-key-1")
        .api_key("fm-key-2")
        .start()
        .await
        .unwrap();
    assert_eq!(emu.api_key(), Some("fm-key-1"));

    let (status, body) = chat(&emu, "fm-key-1", user("keyed hello")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["choices"][0]["message"]["content"], "keyed hello");
    let (status, _) = models_with(&emu, Some("Bearer fm-key-2")).await;
    assert_eq!(status, 200, "every configured key is accepted");

    let c = emu.counters();
    assert_eq!((c.auth_requests, c.tokens_issued), (0, 0));
    assert_eq!(c.api_key_requests, 2);
    assert_eq!(c.unauthorized, 0);
    emu.shutdown().await;
}

#[tokio::test]
async fn a_wrong_key_gets_the_same_401_as_a_bad_token() {
    let emu = Emulator::builder().api_key("right").start().await.unwrap();
    let (key_status, key_body) = models_with(&emu, Some("Bearer wrong")).await;
    let (token_status, token_body) = models_with(&emu, Some("Bearer not-a-token")).await;
    assert_eq!((key_status, token_status), (401, 401));
    assert_eq!(key_body, token_body);
    assert_eq!(key_body["error"]["code"], "invalid_api_key");
    let c = emu.counters();
    assert_eq!((c.unauthorized, c.api_key_requests), (2, 0));
    emu.shutdown().await;
}

#[tokio::test]
async fn api_keys_survive_token_revocation() {
    let emu = Emulator::builder().api_key("steady").start().await.unwrap();
    let issued = token(&emu).await;
    emu.revoke_tokens();
    assert_eq!(
        models_with(&emu, Some(&format!("Bearer {issued}"))).await.0,
        401
    );
    assert_eq!(models_with(&emu, Some("Bearer steady")).await.0, 200);
    // The admin route revokes tokens the same way, and keys survive that too.
    client()
        .post(format!("{}/_emulator/revoke", emu.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(models_with(&emu, Some("Bearer steady")).await.0, 200);
    emu.shutdown().await;
}

#[tokio::test]
async fn with_auth_off_anything_is_served() {
    let emu = Emulator::builder()
        .require_auth(false)
        .api_key("known")
        .start()
        .await
        .unwrap();
    for header in [
        None,
        Some("Bearer whatever"),
        Some("Basic abc"),
        Some("Bearer known"),
    ] {
        let (status, body) = models_with(&emu, header).await;
        assert_eq!(status, 200, "{header:?}: {body}");
    }
    let c = emu.counters();
    assert_eq!(c.unauthorized, 0);
    assert_eq!(
        c.api_key_requests, 1,
        "a configured key still counts as one"
    );
    assert!(emu.requests().iter().all(|r| r.authorized));
    emu.shutdown().await;
}

#[tokio::test]
async fn the_log_keeps_bearer_and_request_id_but_debug_hides_the_bearer() {
    let emu = Emulator::builder()
        .api_key("sk-secret-value")
        .start()
        .await
        .unwrap();
    client()
        .get(format!("{}/models", emu.base_url()))
        .bearer_auth("sk-secret-value")
        .header("x-request-id", "req-77")
        .send()
        .await
        .unwrap();
    client()
        .get(format!("{}/models", emu.base_url()))
        .send()
        .await
        .unwrap();
    let log = emu.requests();
    assert_eq!(log[0].bearer.as_deref(), Some("sk-secret-value"));
    assert_eq!(log[0].request_id.as_deref(), Some("req-77"));
    assert!(log[0].authorized);
    assert_eq!(
        (log[1].bearer.as_deref(), log[1].request_id.as_deref()),
        (None, None)
    );

    let debug = format!("{:?}", log[0]);
    assert!(!debug.contains("sk-secret-value"), "{debug}");
    assert!(debug.contains("bearer: Some(\"<redacted>\")"), "{debug}");
    assert!(format!("{:?}", log[1]).contains("bearer: None"));

    // The admin log is for out-of-process tests asserting the wire: it carries the value.
    let admin = common::get_json(format!("{}/_emulator/requests", emu.url()), None).await;
    assert_eq!(admin[0]["bearer"], "sk-secret-value");
    assert_eq!(admin[0]["request_id"], "req-77");
    emu.shutdown().await;
}

#[tokio::test]
async fn env_lines_in_both_modes() {
    let plain = Emulator::start().await.unwrap();
    assert_eq!(env_lines_api_key(&plain), None);
    assert_eq!(plain.api_key(), None);
    plain.shutdown().await;

    let emu = Emulator::builder()
        .api_key("k-1")
        .api_key("k-2")
        .start()
        .await
        .unwrap();
    assert_eq!(
        env_lines_api_key(&emu).unwrap(),
        format!(
            "EVOLUTION_API_KEY=k-1\nEVOLUTION_BASE_URL={}\nEVOLUTION_MODEL={}\n",
            emu.base_url(),
            emu.default_model()
        )
    );
    // The IAM form is unchanged by configuring keys.
    let iam = env_lines(&emu);
    assert!(
        iam.starts_with("EVOLUTION_KEY_ID=emulator-key-id\n"),
        "{iam}"
    );
    assert!(!iam.contains("EVOLUTION_API_KEY"));
    emu.shutdown().await;
}

#[tokio::test]
async fn empty_api_keys_are_refused() {
    for key in ["", "  "] {
        let err = Emulator::builder().api_key(key).start().await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    }
}

#[derive(Debug, Parser)]
struct Cli {
    #[command(flatten)]
    emulator: EmulatorArgs,
}

#[tokio::test]
async fn api_key_and_no_auth_flags() {
    let args = Cli::try_parse_from(["x", "--api-key", "a", "--api-key", "b"])
        .unwrap()
        .emulator;
    assert_eq!(args.api_key, ["a", "b"]);
    assert!(!args.no_auth);
    let emu = args.builder().start().await.unwrap();
    assert_eq!(emu.api_key(), Some("a"));
    assert_eq!(models_with(&emu, Some("Bearer b")).await.0, 200);
    assert_eq!(models_with(&emu, None).await.0, 401);
    emu.shutdown().await;

    let args = Cli::try_parse_from(["x", "--no-auth"]).unwrap().emulator;
    assert!(args.no_auth);
    let emu = args.builder().start().await.unwrap();
    assert_eq!(models_with(&emu, None).await.0, 200);
    emu.shutdown().await;
}
