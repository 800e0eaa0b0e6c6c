//! API-key mode, the default base URL and model runs with auth off, against
//! the emulator on loopback. (The environment and `.env` are tested in
//! `environment.rs`, a binary of their own, as the environment is global.)

mod common;
use common::captured_logs;

use evolution_emulator::{Emulator, Fault, Target};
use evolution_langchain::{
    AuthError, Error, EvolutionEmbeddings, EvolutionInference, DEFAULT_BASE_URL,
};

const KEY: &str = "fm-api-key-Zq81mXv0-do-not-print";

#[tokio::test]
async fn an_api_key_is_the_bearer_and_iam_is_never_asked() {
    let emu = Emulator::builder().api_key(KEY).start().await.unwrap();
    let llm = EvolutionInference::builder()
        .api_key(KEY)
        .base_url(emu.base_url())
        .model(emu.default_model())
        .build()
        .unwrap();
    assert!(llm.token_manager().is_none());
    assert_eq!(llm.invoke("with a key").await.unwrap(), "with a key");
    let mut stream = llm.stream("streamed too").await.unwrap();
    while let Some(chunk) = futures::StreamExt::next(&mut stream).await {
        chunk.unwrap();
    }
    llm.list_models().await.unwrap();
    let embeddings = EvolutionEmbeddings::from_inference(&llm, "emb");
    embeddings.embed("vector").await.unwrap();

    let requests = emu.requests();
    assert_eq!(requests.len(), 4);
    for request in &requests {
        assert_eq!(request.bearer.as_deref(), Some(KEY), "{}", request.path);
    }
    let counters = emu.counters();
    assert_eq!(counters.auth_requests, 0, "no IAM exchange in API-key mode");
    assert_eq!(counters.api_key_requests, 4);
}

#[tokio::test]
async fn a_401_for_an_api_key_is_not_retried_with_iam() {
    let emu = Emulator::builder().api_key(KEY).start().await.unwrap();
    let llm = EvolutionInference::builder()
        .api_key(KEY)
        .base_url(emu.base_url())
        .build()
        .unwrap();
    emu.inject(Target::Chat, Fault::Status(401), 1);
    let err = llm.invoke("hi").await.unwrap_err();
    assert!(
        matches!(err, Error::Auth(AuthError::KeyRejected { .. })),
        "{err:?}"
    );
    assert_eq!(
        emu.counters().chat_requests,
        1,
        "a fixed key cannot be refreshed"
    );
    assert_eq!(emu.counters().auth_requests, 0);
}

#[tokio::test]
async fn both_ways_of_authenticating_are_refused_by_name() {
    let err = EvolutionInference::builder()
        .api_key(KEY)
        .key_id("id")
        .secret("secret")
        .build()
        .unwrap_err();
    assert!(
        matches!(err, Error::Config { ref field, .. } if field == "api_key"),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(text.contains("key id/secret"), "{text}");
    assert!(!text.contains(KEY), "{text}");

    let err = EvolutionInference::builder()
        .api_key("  ")
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("EVOLUTION_API_KEY"), "{err}");
}

#[test]
fn without_a_base_url_the_public_endpoint_is_used() {
    // Built, never sent: nothing leaves loopback.
    let llm = EvolutionInference::builder().api_key(KEY).build().unwrap();
    assert_eq!(llm.base_url(), DEFAULT_BASE_URL);
    assert_eq!(
        DEFAULT_BASE_URL,
        "https://foundation-models.api.cloud.ru/v1"
    );
    let llm = EvolutionInference::builder()
        .api_key(KEY)
        .base_url("   ")
        .build()
        .unwrap();
    assert_eq!(llm.base_url(), DEFAULT_BASE_URL);
    // A model run's URL is taken as it is (trailing slash dropped).
    let llm = EvolutionInference::builder()
        .no_auth()
        .base_url("https://abc123.modelrun.inference.cloud.ru/v1/")
        .build()
        .unwrap();
    assert_eq!(
        llm.base_url(),
        "https://abc123.modelrun.inference.cloud.ru/v1"
    );
}

#[tokio::test]
async fn a_model_run_with_auth_off_gets_no_authorization_header() {
    let emu = Emulator::builder()
        .require_auth(false)
        .start()
        .await
        .unwrap();
    let llm = EvolutionInference::builder()
        .no_auth()
        .base_url(emu.base_url())
        .build()
        .unwrap();
    assert!(llm.token_manager().is_none());
    assert_eq!(llm.invoke("open run").await.unwrap(), "open run");
    llm.list_models().await.unwrap();
    for request in emu.requests() {
        assert_eq!(request.bearer, None, "{}", request.path);
    }
    assert_eq!(emu.counters().auth_requests, 0);

    // The same client against a run with auth on: a clear 401, no IAM.
    let guarded = Emulator::start().await.unwrap();
    let llm = EvolutionInference::builder()
        .no_auth()
        .base_url(guarded.base_url())
        .max_retries(0)
        .build()
        .unwrap();
    let err = llm.invoke("hi").await.unwrap_err();
    assert_eq!(err.status(), Some(401), "{err:?}");
    assert_eq!(guarded.counters().auth_requests, 0);

    // no_auth together with a key id/secret: refused.
    assert!(EvolutionInference::builder()
        .no_auth()
        .key_id("id")
        .secret("s")
        .build()
        .is_err());
}

#[tokio::test]
async fn the_key_is_in_no_debug_output_error_or_log_line() {
    let captured = captured_logs();
    let emu = Emulator::builder().api_key(KEY).start().await.unwrap();
    let builder = EvolutionInference::builder()
        .api_key(KEY)
        .base_url(emu.base_url())
        .max_retries(1);
    let mut shown = vec![format!("{builder:?}")];
    let llm = builder.build().unwrap();
    shown.push(format!("{llm:?}"));
    llm.invoke("logged call").await.unwrap();
    // Recovery paths log too: a retried 503, then a rejected key.
    emu.inject(Target::Chat, Fault::Status(503), 1);
    llm.invoke("after a 503").await.unwrap();
    emu.inject(Target::Chat, Fault::Status(401), 1);
    let err = llm.invoke("rejected").await.unwrap_err();
    shown.push(format!("{err:?}"));
    shown.push(err.to_string());
    // A wrong key: its error must not quote it either.
    let wrong = EvolutionInference::builder()
        .api_key("wrong-key-Hq2-secret")
        .base_url(emu.base_url())
        .build()
        .unwrap();
    let err = wrong.invoke("x").await.unwrap_err();
    shown.push(format!("{err:?} {err}"));
    shown.push(format!("{:?}", emu.requests()));
    let embeddings = EvolutionEmbeddings::builder()
        .api_key(KEY)
        .base_url(emu.base_url());
    shown.push(format!("{embeddings:?}"));
    shown.push(format!("{:?}", embeddings.build().unwrap()));

    let logs = captured.text();
    assert!(!logs.is_empty(), "TRACE logging captured nothing");
    for text in shown.iter().chain([&logs]) {
        assert!(!text.contains(KEY), "the API key leaked: {text}");
        assert!(
            !text.contains("wrong-key-Hq2-secret"),
            "a key leaked: {text}"
        );
        // Not even a long prefix of it.
        assert!(!text.contains(&KEY[..12]), "a key prefix leaked: {text}");
    }
}
