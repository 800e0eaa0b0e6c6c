//! The IAM endpoint and the bearer check on `/v1`.

mod common;

use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use common::{client, credentials, token};
use evolution_emulator::Emulator;
use serde_json::{json, Value};

async fn auth(url: &str, body: Value) -> (u16, Value) {
    let response = client().post(url).json(&body).send().await.unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

#[tokio::test]
async fn issues_tokens_for_valid_credentials() {
    let emu = Emulator::start().await.unwrap();
    assert_eq!(emu.key_id(), "emulator-key-id");
    assert_eq!(emu.secret(), "emulator-secret");
    let (status, body) = auth(
        &emu.auth_url(),
        json!({"keyId": "emulator-key-id", "secret": "emulator-secret"}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["expires_in"], 3600);
    let token = body["access_token"].as_str().unwrap();
    assert_eq!(token.split('.').count(), 3, "JWT-shaped: {token}");
    // Each segment is unpadded base64url; the claims name the key the token is for.
    let segments: Vec<Vec<u8>> = token
        .split('.')
        .map(|s| URL_SAFE_NO_PAD.decode(s).expect("base64url segment"))
        .collect();
    let header: Value = serde_json::from_slice(&segments[0]).unwrap();
    assert_eq!(header["typ"], "JWT");
    let claims: Value = serde_json::from_slice(&segments[1]).unwrap();
    assert_eq!(claims["sub"], "emulator-key-id");
    assert_eq!(
        claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(),
        3600
    );
    assert_eq!(segments[2].len(), 32);
    assert_eq!(body.as_object().unwrap().len(), 2);

    let second = common::token(&emu).await;
    assert_ne!(token, second, "every token is new");
    let c = emu.counters();
    assert_eq!((c.auth_requests, c.tokens_issued), (2, 2));
    emu.shutdown().await;
}

#[tokio::test]
async fn refuses_bad_credentials_with_401_and_forbidden_with_403() {
    let emu = Emulator::builder()
        .credentials("id", "s3cret")
        .forbidden_credentials("viewer", "pw")
        .start()
        .await
        .unwrap();
    let url = emu.auth_url();
    for body in [
        json!({"keyId": "id", "secret": "wrong"}),
        json!({"keyId": "unknown", "secret": "s3cret"}),
        json!({"keyId": "viewer", "secret": "not-pw"}),
    ] {
        let (status, reply) = auth(&url, body.clone()).await;
        assert_eq!(status, 401, "{body}");
        assert!(reply["error"]["message"].is_string());
        assert!(reply["error"]["type"].is_string());
        assert!(reply["error"]["code"].is_string());
    }
    let (status, reply) = auth(&url, json!({"keyId": "viewer", "secret": "pw"})).await;
    assert_eq!(status, 403);
    assert_eq!(reply["error"]["type"], "permission_error");

    let c = emu.counters();
    assert_eq!((c.auth_requests, c.tokens_issued), (4, 0));
    emu.shutdown().await;
}

#[tokio::test]
async fn malformed_token_requests_get_400_naming_the_problem() {
    let emu = Emulator::start().await.unwrap();
    let http = client();
    let cases: Vec<(reqwest::RequestBuilder, &str)> = vec![
        (http.post(emu.auth_url()).body("not json"), "not valid JSON"),
        (http.post(emu.auth_url()), "empty"),
        (
            http.post(emu.auth_url()).json(&json!([1, 2])),
            "JSON object",
        ),
        (
            http.post(emu.auth_url()).json(&json!({"secret": "x"})),
            "keyId",
        ),
        (
            http.post(emu.auth_url()).json(&json!({"keyId": "x"})),
            "secret",
        ),
        (
            http.post(emu.auth_url())
                .json(&json!({"keyId": 5, "secret": "x"})),
            "'keyId' must be a string",
        ),
    ];
    for (request, needle) in cases {
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 400);
        let body: Value = response.json().await.unwrap();
        let message = body["error"]["message"].as_str().unwrap();
        assert!(
            message.contains(needle),
            "{message:?} should mention {needle:?}"
        );
    }
    emu.shutdown().await;
}

#[tokio::test]
async fn additional_credentials_are_valid_too() {
    let emu = Emulator::builder()
        .add_credentials("backup-id", "backup-secret")
        .start()
        .await
        .unwrap();
    let (status, _) = auth(
        &emu.auth_url(),
        json!({"keyId": "backup-id", "secret": "backup-secret"}),
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = auth(&emu.auth_url(), credentials(&emu)).await;
    assert_eq!(status, 200);
    emu.shutdown().await;
}

#[tokio::test]
async fn expires_in_is_whole_seconds_rounded_up_or_omitted() {
    let emu = Emulator::builder()
        .token_ttl(Duration::from_millis(1500))
        .start()
        .await
        .unwrap();
    let (_, body) = auth(&emu.auth_url(), credentials(&emu)).await;
    assert_eq!(body["expires_in"], 2);
    emu.shutdown().await;

    let emu = Emulator::builder()
        .omit_expires_in(true)
        .start()
        .await
        .unwrap();
    let (status, body) = auth(&emu.auth_url(), credentials(&emu)).await;
    assert_eq!(status, 200);
    assert!(body["access_token"].is_string());
    assert!(body.get("expires_in").is_none(), "{body}");
    emu.shutdown().await;
}

async fn models_status(
    emu: &evolution_emulator::EmulatorHandle,
    auth: Option<&str>,
) -> (u16, Value) {
    let mut request = client().get(format!("{}/models", emu.base_url()));
    if let Some(value) = auth {
        request = request.header("authorization", value);
    }
    let response = request.send().await.unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

#[tokio::test]
async fn v1_requires_a_bearer_token_issued_here() {
    let emu = Emulator::start().await.unwrap();
    let other = Emulator::start().await.unwrap();
    let foreign = token(&other).await;
    for header in [
        None,
        Some("Bearer".to_owned()),
        Some("Basic abc".to_owned()),
        Some("Bearer not-a-token".to_owned()),
        Some(format!("Bearer {foreign}")),
    ] {
        let (status, body) = models_status(&emu, header.as_deref()).await;
        assert_eq!(status, 401, "{header:?}");
        assert_eq!(body["error"]["type"], "invalid_request_error");
        assert_eq!(body["error"]["code"], "invalid_api_key");
        assert!(body["error"]["message"].is_string());
    }
    let good = token(&emu).await;
    let (status, _) = models_status(&emu, Some(&format!("Bearer {good}"))).await;
    assert_eq!(status, 200);
    let (status, _) = models_status(&emu, Some(&format!("bearer {good}"))).await;
    assert_eq!(status, 200, "the scheme is case-insensitive");

    let c = emu.counters();
    assert_eq!(c.unauthorized, 5);
    assert_eq!(c.models_requests, 7);
    let log = emu.requests();
    assert_eq!(log.len(), 7);
    assert_eq!(
        log.iter().map(|r| r.authorized).collect::<Vec<_>>(),
        [false, false, false, false, false, true, true]
    );
    emu.shutdown().await;
    other.shutdown().await;
}

#[tokio::test]
async fn tokens_expire_on_the_real_clock() {
    let emu = Emulator::builder()
        .token_ttl(Duration::from_secs(1))
        .start()
        .await
        .unwrap();
    let token = token(&emu).await;
    let bearer = format!("Bearer {token}");
    assert_eq!(models_status(&emu, Some(&bearer)).await.0, 200);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let (status, body) = models_status(&emu, Some(&bearer)).await;
    assert_eq!(status, 401);
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("expired"));
    assert_eq!(emu.counters().unauthorized, 1);
    emu.shutdown().await;
}

#[tokio::test]
async fn revoked_tokens_are_refused_but_new_ones_work() {
    let emu = Emulator::start().await.unwrap();
    let old = format!("Bearer {}", token(&emu).await);
    assert_eq!(models_status(&emu, Some(&old)).await.0, 200);
    emu.revoke_tokens();
    let (status, body) = models_status(&emu, Some(&old)).await;
    assert_eq!(status, 401);
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("revoked"));
    let fresh = format!("Bearer {}", token(&emu).await);
    assert_eq!(models_status(&emu, Some(&fresh)).await.0, 200);
    emu.shutdown().await;
}

#[tokio::test]
async fn project_id_is_recorded() {
    let emu = Emulator::start().await.unwrap();
    let token = token(&emu).await;
    client()
        .get(format!("{}/models", emu.base_url()))
        .bearer_auth(&token)
        .header("x-project-id", "proj-42")
        .send()
        .await
        .unwrap();
    let last = emu.last_request().unwrap();
    assert_eq!(last.method, "GET");
    assert_eq!(last.path, "/v1/models");
    assert_eq!(last.project_id.as_deref(), Some("proj-42"));
    assert!(last.authorized);
    assert_eq!(last.body, Value::Null);
    emu.shutdown().await;
}

#[tokio::test]
async fn absurd_ttls_are_capped_at_366_days() {
    for ttl in [
        Duration::from_secs(u64::MAX),
        Duration::MAX,
        Duration::from_secs(31_622_401),
    ] {
        let emu = Emulator::builder().token_ttl(ttl).start().await.unwrap();
        let (status, body) = auth(&emu.auth_url(), credentials(&emu)).await;
        assert_eq!(status, 200);
        assert_eq!(body["expires_in"], 31_622_400, "{ttl:?}");
        let bearer = format!("Bearer {}", body["access_token"].as_str().unwrap());
        assert_eq!(models_status(&emu, Some(&bearer)).await.0, 200);
        emu.shutdown().await;
    }
}

#[tokio::test]
async fn a_zero_ttl_means_the_one_second_minimum() {
    let emu = Emulator::builder()
        .token_ttl(Duration::ZERO)
        .start()
        .await
        .unwrap();
    let (status, body) = auth(&emu.auth_url(), credentials(&emu)).await;
    assert_eq!(status, 200);
    assert_eq!(body["expires_in"], 1);
    let bearer = format!("Bearer {}", body["access_token"].as_str().unwrap());
    assert_eq!(
        models_status(&emu, Some(&bearer)).await.0,
        200,
        "a token advertised for 1 s is usable at once"
    );
    emu.shutdown().await;
}

#[tokio::test]
async fn tokens_live_as_long_as_the_expires_in_they_report() {
    // 1.5 s is reported as `expires_in: 2`, so the token must last 2 s, not 1.5 s.
    let emu = Emulator::builder()
        .token_ttl(Duration::from_millis(1500))
        .start()
        .await
        .unwrap();
    let (_, body) = auth(&emu.auth_url(), credentials(&emu)).await;
    assert_eq!(body["expires_in"], 2);
    let bearer = format!("Bearer {}", body["access_token"].as_str().unwrap());
    tokio::time::sleep(Duration::from_millis(1700)).await;
    assert_eq!(
        models_status(&emu, Some(&bearer)).await.0,
        200,
        "still inside the advertised 2 s"
    );
    tokio::time::sleep(Duration::from_millis(600)).await;
    let (status, body) = models_status(&emu, Some(&bearer)).await;
    assert_eq!(status, 401, "expired after the advertised 2 s");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("expired"));
    emu.shutdown().await;
}
