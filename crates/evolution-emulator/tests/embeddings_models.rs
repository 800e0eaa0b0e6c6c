//! `POST /v1/embeddings` and `GET /v1/models`.

mod common;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use common::{client, get_json, post, token};
use evolution_emulator::Emulator;
use serde_json::{json, Value};

async fn embed(emu: &evolution_emulator::EmulatorHandle, token: &str, body: Value) -> (u16, Value) {
    let response = post(emu, token, "/embeddings", body).await;
    (response.status().as_u16(), response.json().await.unwrap())
}

fn vectors(body: &Value) -> Vec<Vec<f64>> {
    body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            d["embedding"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect()
        })
        .collect()
}

#[tokio::test]
async fn embeddings_are_deterministic_ordered_unit_vectors() {
    let emu = Emulator::start().await.unwrap();
    let token = token(&emu).await;
    let (status, body) = embed(
        &emu,
        &token,
        json!({"model": "emb-model", "input": ["alpha", "beta gamma", "alpha"]}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["object"], "list");
    assert_eq!(body["model"], "emb-model");
    assert_eq!(
        body["usage"],
        json!({"prompt_tokens": 4, "total_tokens": 4})
    );
    let data = body["data"].as_array().unwrap();
    for (i, item) in data.iter().enumerate() {
        assert_eq!(item["object"], "embedding");
        assert_eq!(item["index"], i);
    }
    let v = vectors(&body);
    assert_eq!(v.len(), 3);
    for vector in &v {
        assert_eq!(vector.len(), 8);
        let norm: f64 = vector.iter().map(|x| x * x).sum::<f64>().sqrt();
        assert!((norm - 1.0).abs() < 1e-9, "{norm}");
    }
    assert_eq!(v[0], v[2], "same text, same vector");
    assert_ne!(v[0], v[1]);

    // A single string gives the same vector as in the batch, in another emulator too.
    let other = Emulator::start().await.unwrap();
    let other_token = common::token(&other).await;
    let (_, single) = embed(&other, &other_token, json!({"input": "beta gamma"})).await;
    assert_eq!(vectors(&single), vec![v[1].clone()]);
    assert_eq!(single["model"], "emulator/echo-1");
    emu.shutdown().await;
    other.shutdown().await;
}

#[tokio::test]
async fn embedding_dimensions_are_configurable() {
    let emu = Emulator::builder()
        .embedding_dimensions(32)
        .start()
        .await
        .unwrap();
    let token = token(&emu).await;
    let (_, body) = embed(&emu, &token, json!({"input": "x"})).await;
    assert_eq!(vectors(&body)[0].len(), 32);
    let (_, body) = embed(&emu, &token, json!({"input": "x", "dimensions": 3})).await;
    assert_eq!(vectors(&body)[0].len(), 3);

    let (_, floats) = embed(&emu, &token, json!({"input": "x"})).await;
    let (_, body) = embed(
        &emu,
        &token,
        json!({"input": "x", "encoding_format": "base64"}),
    )
    .await;
    let encoded = body["data"][0]["embedding"].as_str().unwrap();
    let decoded: Vec<f64> = STANDARD
        .decode(encoded)
        .expect("padded standard base64")
        .chunks(4)
        .map(|b| f64::from(f32::from_le_bytes([b[0], b[1], b[2], b[3]])))
        .collect();
    let expected = &vectors(&floats)[0];
    assert_eq!(decoded.len(), expected.len());
    for (got, want) in decoded.iter().zip(expected) {
        assert!((got - want).abs() < 1e-6, "{got} vs {want}");
    }
    emu.shutdown().await;
}

#[tokio::test]
async fn token_id_inputs_are_accepted() {
    let emu = Emulator::start().await.unwrap();
    let token = token(&emu).await;
    let (status, body) = embed(&emu, &token, json!({"input": [1, 2, 3]})).await;
    assert_eq!(status, 200);
    assert_eq!(body["data"].as_array().unwrap().len(), 1);
    assert_eq!(body["usage"]["prompt_tokens"], 3);
    let (status, body) = embed(&emu, &token, json!({"input": [[1, 2], [3]]})).await;
    assert_eq!(status, 200);
    assert_eq!(body["data"].as_array().unwrap().len(), 2);
    emu.shutdown().await;
}

#[tokio::test]
async fn malformed_embedding_requests_get_400() {
    let emu = Emulator::start().await.unwrap();
    let token = token(&emu).await;
    for (body, needle) in [
        (json!({}), "'input'"),
        (json!({"input": []}), "'input' must not be empty"),
        (json!({"input": 5}), "'input'"),
        (json!({"input": ["ok", 5]}), "input[1]"),
        (json!({"input": "x", "dimensions": 0}), "'dimensions'"),
        (
            json!({"input": "x", "encoding_format": "hex"}),
            "'encoding_format'",
        ),
        (json!({"input": "x", "model": 1}), "'model'"),
    ] {
        let (status, reply) = embed(&emu, &token, body.clone()).await;
        assert_eq!(status, 400, "{body}");
        let message = reply["error"]["message"].as_str().unwrap();
        assert!(
            message.contains(needle),
            "{message:?} should mention {needle:?}"
        );
    }
    emu.shutdown().await;
}

#[tokio::test]
async fn models_lists_the_configured_models() {
    let emu = Emulator::builder()
        .models(vec!["org/model-a".into(), "model-b".into()])
        .start()
        .await
        .unwrap();
    let token = token(&emu).await;
    let http = client();
    let body: Value = get_json(format!("{}/models", emu.base_url()), Some(&token)).await;
    assert_eq!(body["object"], "list");
    let data = body["data"].as_array().unwrap();
    assert_eq!(data.len(), 3);
    assert_eq!(data[0]["id"], "org/model-a");
    assert_eq!(data[1]["id"], "model-b");
    assert_eq!(data[2]["id"], evolution_emulator::REASONING_MODEL);
    for model in data {
        assert_eq!(model["object"], "model");
        assert_eq!(model["owned_by"], "emulator");
        assert_eq!(model["is_billable"], false);
        assert_eq!(model["cost"], 0);
        assert!(model["created"].as_u64().unwrap() > 1_700_000_000);
    }

    let one: Value = get_json(
        format!("{}/models/org/model-a", emu.base_url()),
        Some(&token),
    )
    .await;
    assert_eq!(one, data[0]);
    let missing = http
        .get(format!("{}/models/nope", emu.base_url()))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    assert_eq!(emu.counters().models_requests, 3);
    emu.shutdown().await;
}
