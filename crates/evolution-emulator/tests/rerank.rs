//! `POST /v1/rerank`: word-overlap scores, ordering, `top_n`, `return_documents`, errors
//! and faults.

mod common;

use common::{post, token};
use evolution_emulator::{Emulator, Fault, Target};
use serde_json::{json, Value};

async fn rerank(
    emu: &evolution_emulator::EmulatorHandle,
    token: &str,
    body: Value,
) -> (u16, Value) {
    let response = post(emu, token, "/rerank", body).await;
    let status = response.status().as_u16();
    (status, response.json().await.expect("JSON reply"))
}

#[tokio::test]
async fn documents_come_back_best_first_with_their_original_indices() {
    let emu = Emulator::start().await.unwrap();
    let token = token(&emu).await;
    let (status, body) = rerank(
        &emu,
        &token,
        json!({
            "model": "BAAI/bge-reranker-v2-m3",
            "query": "Capital of France?",
            "documents": [
                "Berlin is the capital of Germany",
                {"text": "Paris is the capital of France"},
                "Bananas are yellow",
                "France: capital Paris",
            ],
        }),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(body["id"].as_str().unwrap().starts_with("rerank-"));
    assert_eq!(body["model"], "BAAI/bge-reranker-v2-m3");
    // 3 + 6 + 6 + 3 + 3 words.
    assert_eq!(
        body["usage"],
        json!({"prompt_tokens": 21, "total_tokens": 21})
    );

    let results = body["results"].as_array().unwrap();
    let order: Vec<u64> = results
        .iter()
        .map(|r| r["index"].as_u64().unwrap())
        .collect();
    // "capital of france": 3/3 for 1; 2/3 for 0 and 3 (a tie: original order); 0 for 2.
    assert_eq!(order, [1, 0, 3, 2]);
    let scores: Vec<f64> = results
        .iter()
        .map(|r| r["relevance_score"].as_f64().unwrap())
        .collect();
    assert_eq!(scores, [1.0, 2.0 / 3.0, 2.0 / 3.0, 0.0]);
    assert_eq!(
        results[0]["document"],
        json!({"text": "Paris is the capital of France"})
    );
    assert_eq!(results[3]["document"]["text"], "Bananas are yellow");

    let c = emu.counters();
    assert_eq!(
        (c.rerank_requests, c.in_flight, c.peak_in_flight),
        (1, 0, 1)
    );
    assert_eq!(emu.last_request().unwrap().path, "/v1/rerank");
    emu.shutdown().await;
}

#[tokio::test]
async fn top_n_and_return_documents() {
    let emu = Emulator::start().await.unwrap();
    let token = token(&emu).await;
    let documents = json!(["a", "b c", "c", "a b c"]);
    let (_, body) = rerank(
        &emu,
        &token,
        json!({"query": "a b c", "documents": documents, "top_n": 2, "return_documents": false}),
    )
    .await;
    assert_eq!(body["model"], emu.default_model(), "no model: the default");
    assert_eq!(
        body["results"],
        json!([
            {"index": 3, "relevance_score": 1.0},
            {"index": 1, "relevance_score": 2.0 / 3.0},
        ])
    );

    for top_n in [json!(0), Value::Null, json!(99)] {
        let (_, body) = rerank(
            &emu,
            &token,
            json!({"query": "a", "documents": documents, "top_n": top_n}),
        )
        .await;
        assert_eq!(
            body["results"].as_array().unwrap().len(),
            4,
            "top_n {top_n}"
        );
        assert!(body["results"][0]["document"]["text"].is_string());
    }
    emu.shutdown().await;
}

#[tokio::test]
async fn malformed_requests_are_400s() {
    let emu = Emulator::start().await.unwrap();
    let token = token(&emu).await;
    let cases = [
        (json!({"query": "q", "documents": []}), "must not be empty"),
        (json!({"query": "q"}), "documents"),
        (json!({"documents": ["d"]}), "query"),
        (json!({"query": 5, "documents": ["d"]}), "query"),
        (json!({"query": "q", "documents": "d"}), "array"),
        (json!({"query": "q", "documents": ["d", 7]}), "documents[1]"),
        (
            json!({"query": "q", "documents": [{"body": "d"}]}),
            "documents[0].text",
        ),
        (
            json!({"query": "q", "documents": [{"text": 1}]}),
            "documents[0].text",
        ),
        (
            json!({"query": "q", "documents": ["d"], "top_n": -1}),
            "top_n",
        ),
        (
            json!({"query": "q", "documents": ["d"], "return_documents": "no"}),
            "return_documents",
        ),
        (json!(["not", "an", "object"]), "object"),
    ];
    for (body, needle) in cases {
        let (status, reply) = rerank(&emu, &token, body.clone()).await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(reply["error"]["type"], "invalid_request_error");
        let message = reply["error"]["message"].as_str().unwrap();
        assert!(message.contains(needle), "{body}: {message:?}");
    }
    let unauthorized = rerank(&emu, "nope", json!({"query": "q", "documents": ["d"]})).await;
    assert_eq!(unauthorized.0, 401);
    emu.shutdown().await;
}

#[tokio::test]
async fn rerank_faults_have_their_own_queue_and_api_covers_it() {
    let emu = Emulator::start().await.unwrap();
    let token = token(&emu).await;
    let body = json!({"query": "q", "documents": ["q"]});
    assert_eq!("rerank".parse::<Target>().unwrap(), Target::Rerank);

    emu.inject(Target::Rerank, Fault::Status(503), 1);
    emu.inject(Target::Api, Fault::Status(502), 1);
    emu.inject(Target::Embeddings, Fault::Status(500), 1);
    assert_eq!(rerank(&emu, &token, body.clone()).await.0, 503);
    assert_eq!(rerank(&emu, &token, body.clone()).await.0, 502);
    let (status, reply) = rerank(&emu, &token, body.clone()).await;
    assert_eq!(status, 200, "the embeddings fault is not rerank's");
    assert_eq!(reply["results"][0]["relevance_score"], 1.0);

    emu.inject(Target::Rerank, Fault::MissingField, 1);
    let (status, reply) = rerank(&emu, &token, body).await;
    assert_eq!(status, 200);
    assert!(reply.get("results").is_none(), "{reply}");
    assert!(reply["id"].is_string());
    assert_eq!(emu.counters().rerank_requests, 4);
    emu.shutdown().await;
}

#[tokio::test]
async fn upstream_mode_forwards_rerank() {
    let up = Emulator::start().await.unwrap();
    let front = Emulator::builder()
        .upstream(up.base_url())
        .upstream_api_key(token(&up).await)
        .start()
        .await
        .unwrap();
    let token = token(&front).await;
    let (status, body) = rerank(&front, &token, json!({"query": "x y", "documents": ["y"]})).await;
    assert_eq!(status, 200);
    assert_eq!(body["results"][0]["relevance_score"], 0.5);
    assert_eq!(up.counters().rerank_requests, 1);
    assert_eq!(front.counters().rerank_requests, 1);
    front.shutdown().await;
    up.shutdown().await;
}
