//! EvolutionRerank against the emulator's word-overlap scorer: order,
//! indices, top_n, documents on or off, errors, token recovery and retries.

use evolution_emulator::{Emulator, EmulatorHandle, Fault, Target};
use evolution_langchain::{Error, EvolutionRerank, EvolutionRerankBuilder, RerankOptions};

mod common;

const DOCUMENTS: [&str; 4] = [
    "cats sleep all day",
    "the capital of France is Paris",
    "Paris is lovely in spring",
    "capital gains tax in France",
];

fn reranker(emu: &EmulatorHandle) -> EvolutionRerankBuilder {
    EvolutionRerank::builder()
        .model("emulator/reranker")
        .key_id(emu.key_id())
        .secret(emu.secret())
        .base_url(emu.base_url())
        .auth_url(emu.auth_url())
}

#[tokio::test]
async fn results_come_best_first_with_their_original_indices() {
    let emu = common::emulator().await;
    let reply = reranker(&emu)
        .build()
        .unwrap()
        .rerank("capital of France", &DOCUMENTS)
        .await
        .unwrap();
    let order: Vec<usize> = reply.results.iter().map(|r| r.index).collect();
    // 3/3 words, then 2/3 ("capital", "france"), then 0.
    assert_eq!(order[..2], [1, 3]);
    assert_eq!(reply.results.len(), 4);
    assert!(reply
        .results
        .windows(2)
        .all(|w| w[0].relevance_score >= w[1].relevance_score));
    assert_eq!(reply.results[0].relevance_score, 1.0);
    for result in &reply.results {
        assert_eq!(result.text(), Some(DOCUMENTS[result.index]));
    }
    assert!(reply.usage.unwrap().prompt_tokens > 0);
    assert_eq!(reply.model.as_deref(), Some("emulator/reranker"));

    let body = common::last_body(&emu);
    assert_eq!(body["model"], "emulator/reranker");
    assert_eq!(body["query"], "capital of France");
    assert_eq!(body["documents"].as_array().unwrap().len(), 4);
    assert!(body.get("top_n").is_none());
    assert_eq!(emu.counters().rerank_requests, 1);
}

#[tokio::test]
async fn top_n_and_return_documents() {
    let emu = common::emulator().await;
    let client = reranker(&emu).build().unwrap();
    let reply = client
        .rerank_with(
            "Paris",
            &DOCUMENTS,
            RerankOptions::new().top_n(2).return_documents(false),
        )
        .await
        .unwrap();
    assert_eq!(reply.results.len(), 2);
    let mut indices: Vec<usize> = reply.results.iter().map(|r| r.index).collect();
    indices.sort_unstable();
    assert_eq!(indices, [1, 2], "both Paris documents");
    // Ties keep the original order.
    assert_eq!(reply.results[0].index, 1);
    assert!(reply.results.iter().all(|r| r.document.is_none()));
    let body = common::last_body(&emu);
    assert_eq!(body["top_n"], 2);
    assert_eq!(body["return_documents"], false);
}

#[tokio::test]
async fn bad_input_is_refused_before_anything_is_sent() {
    let emu = common::emulator().await;
    let client = reranker(&emu).build().unwrap();
    let err = client.rerank("q", &[] as &[&str]).await.unwrap_err();
    assert!(
        matches!(err, Error::InvalidRequest { ref field, .. } if field == "documents"),
        "{err:?}"
    );
    let err = client
        .rerank_with("q", &["a"], RerankOptions::new().top_n(0))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidRequest { .. }), "{err:?}");
    assert_eq!(emu.counters().rerank_requests, 0);
    assert_eq!(emu.counters().auth_requests, 0);
}

#[tokio::test]
async fn a_401_refreshes_the_token_once_and_5xx_is_retried() {
    let emu = common::emulator().await;
    let client = reranker(&emu).build().unwrap();
    client.rerank("warm", &["up"]).await.unwrap();
    emu.inject(Target::Rerank, Fault::Status(401), 1);
    client.rerank("again", &["again and again"]).await.unwrap();
    let counters = emu.counters();
    assert_eq!(counters.auth_requests, 2, "one refresh");
    assert_eq!(counters.rerank_requests, 3);

    emu.inject(Target::Rerank, Fault::Status(403), 1);
    client.rerank("forbidden once", &["x"]).await.unwrap();
    assert_eq!(emu.counters().auth_requests, 3);

    emu.inject(Target::Rerank, Fault::Status(503), 1);
    let reply = client.rerank("retried", &["retried"]).await.unwrap();
    assert_eq!(reply.results[0].relevance_score, 1.0);
    assert_eq!(emu.counters().rerank_requests, 7);

    // Retries run out: the unavailable error, after 1 + 2 attempts.
    emu.inject(Target::Rerank, Fault::Status(503), 3);
    let err = client.rerank("down", &["x"]).await.unwrap_err();
    assert_eq!(err.status(), Some(503), "{err:?}");
    assert_eq!(emu.counters().rerank_requests, 10);

    // A reply without results: an invalid response.
    emu.inject(Target::Rerank, Fault::MissingField, 1);
    let err = client.rerank("no results", &["x"]).await.unwrap_err();
    assert!(matches!(err, Error::InvalidResponse { .. }), "{err:?}");
}

#[tokio::test]
async fn shares_an_inference_clients_connection_and_tokens() {
    let emu = Emulator::builder()
        .api_key("rerank-key")
        .start()
        .await
        .unwrap();
    let llm = evolution_langchain::EvolutionInference::builder()
        .api_key("rerank-key")
        .base_url(emu.base_url())
        .build()
        .unwrap();
    let client = EvolutionRerank::from_inference(&llm, "");
    assert_eq!(client.model(), "");
    client.rerank("a b", &["a", "b c"]).await.unwrap();
    let request = emu.last_request().unwrap();
    assert_eq!(request.bearer.as_deref(), Some("rerank-key"));
    assert!(
        request.body.get("model").is_none(),
        "an empty model is omitted"
    );
    assert_eq!(emu.counters().auth_requests, 0);
}

#[test]
fn the_blocking_twin_ranks_the_same() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let emu = runtime.block_on(common::emulator());
    let client = evolution_langchain::blocking::EvolutionRerank::builder()
        .key_id(emu.key_id())
        .secret(emu.secret())
        .base_url(emu.base_url())
        .auth_url(emu.auth_url())
        .build()
        .unwrap();
    let reply = client.rerank("capital of France", &DOCUMENTS).unwrap();
    assert_eq!(reply.results[0].index, 1);
    let async_client = reranker(&emu).build_blocking().unwrap();
    let top = async_client
        .rerank_with("spring", &DOCUMENTS, RerankOptions::new().top_n(1))
        .unwrap();
    assert_eq!(top.results.len(), 1);
    assert_eq!(top.results[0].index, 2);
}
