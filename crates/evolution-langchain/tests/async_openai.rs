//! async-openai's own client, configured through our bridge, against the
//! emulator over loopback: key id + secret and API key, short-lived and
//! revoked tokens, and what the `Config` alone can and cannot do.

#![cfg(feature = "async-openai")]

mod common;

use std::time::Duration;

use async_openai::error::OpenAIError;
use async_openai::types::chat::{
    ChatCompletionRequestUserMessage, CreateChatCompletionRequest, CreateChatCompletionRequestArgs,
};
use async_openai::Client;
use evolution_emulator::{Emulator, EmulatorHandle};
use evolution_langchain::bridges::async_openai::{client_with_config, EvolutionConfig};
use evolution_langchain::{Error, TokenManager};
use futures::StreamExt;
use tokio::time::Instant;

fn request(emu: &EmulatorHandle, prompt: &str) -> CreateChatCompletionRequest {
    CreateChatCompletionRequestArgs::default()
        .model(emu.default_model())
        .messages([ChatCompletionRequestUserMessage::from(prompt).into()])
        .build()
        .expect("a valid request")
}

fn config(emu: &EmulatorHandle, manager: TokenManager) -> EvolutionConfig {
    EvolutionConfig::from_token_manager(manager).with_api_base(emu.base_url())
}

fn bridged(emu: &EmulatorHandle, manager: TokenManager) -> Client<EvolutionConfig> {
    client_with_config(config(emu, manager))
}

async fn chat(client: &Client<EvolutionConfig>, emu: &EmulatorHandle, prompt: &str) -> String {
    let reply = client
        .chat()
        .create(request(emu, prompt))
        .await
        .expect("the chat succeeds");
    reply.choices[0].message.content.clone().unwrap_or_default()
}

async fn stream(client: &Client<EvolutionConfig>, emu: &EmulatorHandle, prompt: &str) -> String {
    let mut stream = client
        .chat()
        .create_stream(request(emu, prompt))
        .await
        .expect("the stream opens");
    let mut text = String::new();
    while let Some(chunk) = stream.next().await {
        for choice in chunk.expect("every chunk arrives").choices {
            text.push_str(choice.delta.content.as_deref().unwrap_or_default());
        }
    }
    text
}

#[tokio::test]
async fn key_id_and_secret_complete_a_chat_and_a_stream() {
    let emu = common::emulator().await;
    let manager = common::manager_for(&emu).build().unwrap();
    let client = bridged(&emu, manager.clone());

    assert_eq!(
        chat(&client, &emu, "hello from async-openai").await,
        "hello from async-openai"
    );
    assert_eq!(
        stream(&client, &emu, "one two three").await,
        "one two three"
    );

    let counters = emu.counters();
    assert_eq!(counters.unauthorized, 0);
    assert_eq!(counters.tokens_issued, 1, "one token serves both calls");
    assert_eq!(counters.stream_requests, 1);
    // The bearer went out as a header, never into what Debug shows.
    let shown = format!("{:?}", client.config());
    let token = manager.get_token().await.unwrap();
    assert!(!shown.contains(token.expose_secret()), "{shown}");
    assert!(!shown.contains(emu.secret()), "{shown}");
}

#[tokio::test]
async fn two_second_tokens_never_cause_a_401_over_six_seconds() {
    let emu = Emulator::builder()
        .token_ttl(Duration::from_secs(2))
        .start()
        .await
        .unwrap();
    let manager = common::manager_for(&emu)
        .refresh_buffer(Duration::from_secs(1))
        .build()
        .unwrap();
    let client = bridged(&emu, manager);

    let until = Instant::now() + Duration::from_secs(6);
    let mut calls = 0;
    while Instant::now() < until {
        if calls % 4 == 3 {
            assert_eq!(stream(&client, &emu, "tick tock").await, "tick tock");
        } else {
            assert_eq!(chat(&client, &emu, "tick").await, "tick");
        }
        calls += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let counters = emu.counters();
    assert_eq!(counters.unauthorized, 0, "{counters:?}");
    assert!(calls > 20, "{calls} calls");
    // About one token per usable second (lifetime minus buffer).
    assert!(counters.tokens_issued >= 4, "{counters:?}");
}

#[tokio::test]
async fn revoking_every_token_costs_one_refresh_and_no_failed_call() {
    let emu = common::emulator().await;
    let manager = common::manager_for(&emu).build().unwrap();
    let client = bridged(&emu, manager);
    assert_eq!(chat(&client, &emu, "warm up").await, "warm up");

    let until = Instant::now() + Duration::from_millis(1_200);
    let tasks: Vec<_> = (0..4)
        .map(|task| {
            let (client, emu) = (client.clone(), emu.clone());
            tokio::spawn(async move {
                let mut calls = 0;
                while Instant::now() < until {
                    let prompt = format!("task {task} call {calls}");
                    if calls % 3 == 2 {
                        assert_eq!(stream(&client, &emu, &prompt).await, prompt);
                    } else {
                        assert_eq!(chat(&client, &emu, &prompt).await, prompt);
                    }
                    calls += 1;
                }
                calls
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    emu.revoke_tokens();
    let mut calls = 0;
    for task in tasks {
        calls += task.await.expect("no call failed");
    }
    let counters = emu.counters();
    assert!(calls > 8, "{calls} calls");
    assert!(
        counters.unauthorized >= 1,
        "the revoked token was used: {counters:?}"
    );
    assert_eq!(
        counters.tokens_issued, 2,
        "exactly one refresh: {counters:?}"
    );
}

#[tokio::test]
async fn an_api_key_works_and_a_wrong_one_is_not_retried() {
    let emu = Emulator::builder().api_key("k").start().await.unwrap();
    let client =
        client_with_config(EvolutionConfig::from_api_key("k").with_api_base(emu.base_url()));
    assert_eq!(chat(&client, &emu, "with a key").await, "with a key");
    assert_eq!(
        stream(&client, &emu, "streamed with a key").await,
        "streamed with a key"
    );
    let counters = emu.counters();
    assert_eq!(counters.api_key_requests, 2);
    assert_eq!(counters.auth_requests, 0, "an API key needs no IAM");

    let wrong = client_with_config(
        EvolutionConfig::from_api_key("not-the-key").with_api_base(emu.base_url()),
    );
    let err = wrong.chat().create(request(&emu, "x")).await.unwrap_err();
    assert!(matches!(err, OpenAIError::ApiError(_)), "{err:?}");
    assert!(!format!("{err} {err:?}").contains("not-the-key"), "{err:?}");
    assert_eq!(emu.counters().unauthorized, 1, "a fixed key is not retried");
}

#[tokio::test]
async fn a_token_error_reaches_the_caller_as_ours_without_the_secret() {
    let emu = common::emulator().await;
    let manager = common::manager_for(&emu)
        .secret("wrong-secret-value")
        .build()
        .unwrap();
    let err = bridged(&emu, manager)
        .chat()
        .create(request(&emu, "x"))
        .await
        .unwrap_err();
    let OpenAIError::Boxed(boxed) = &err else {
        panic!("expected our error, boxed: {err:?}");
    };
    let ours = boxed
        .downcast_ref::<Error>()
        .expect("an evolution_langchain::Error");
    assert!(matches!(ours, Error::Auth(_)), "{ours:?}");
    assert!(!format!("{err} {err:?}").contains("wrong-secret-value"));
    assert_eq!(
        emu.counters().chat_requests,
        0,
        "nothing was sent without a token"
    );
}

#[tokio::test]
async fn the_config_alone_needs_a_first_token_then_keeps_it_fresh() {
    let emu = Emulator::builder()
        .token_ttl(Duration::from_secs(2))
        .start()
        .await
        .unwrap();
    let manager = common::manager_for(&emu)
        .refresh_buffer(Duration::from_secs(1))
        .build()
        .unwrap();
    // No layer: async-openai's own client with only our Config.
    let client = Client::with_config(config(&emu, manager.clone()));

    // Nothing cached yet: the first request goes out without a bearer.
    let err = client.chat().create(request(&emu, "x")).await.unwrap_err();
    assert!(matches!(err, OpenAIError::ApiError(_)), "{err:?}");
    assert_eq!(emu.counters().unauthorized, 1);

    // Once the manager holds a token, header reads refresh it ahead.
    manager.get_token().await.unwrap();
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        assert_eq!(chat(&client, &emu, "fresh").await, "fresh");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let counters = emu.counters();
    assert_eq!(counters.unauthorized, 1, "{counters:?}");
    assert!(counters.tokens_issued >= 3, "{counters:?}");
}

#[tokio::test]
async fn embeddings_and_models_go_through_the_bridge_too() {
    use async_openai::types::embeddings::CreateEmbeddingRequestArgs;

    let emu = common::emulator().await;
    let client = bridged(&emu, common::manager_for(&emu).build().unwrap());
    let request = CreateEmbeddingRequestArgs::default()
        .model(emu.default_model())
        .input(["one", "two", "three"])
        .build()
        .unwrap();
    let embeddings = client.embeddings().create(request).await.unwrap();
    assert_eq!(embeddings.data.len(), 3);
    assert!(embeddings.data.iter().all(|e| !e.embedding.is_empty()));

    let models = client.models().list().await.unwrap();
    assert!(
        models.data.iter().any(|m| m.id == emu.default_model()),
        "{models:?}"
    );
    assert_eq!(emu.counters().unauthorized, 0);
}

#[tokio::test]
async fn a_403_also_gets_one_new_token_and_one_retry_but_not_two() {
    use evolution_emulator::{Fault, Target};

    let emu = common::emulator().await;
    let client = bridged(&emu, common::manager_for(&emu).build().unwrap());
    assert_eq!(chat(&client, &emu, "before").await, "before");

    emu.inject(Target::Chat, Fault::Status(403), 1);
    assert_eq!(stream(&client, &emu, "after a 403").await, "after a 403");
    assert_eq!(emu.counters().tokens_issued, 2, "one new token");

    // Rejected twice: the second answer is the caller's error, no third try.
    emu.inject(Target::Chat, Fault::Status(403), 2);
    let before = emu.counters().chat_requests;
    let err = client.chat().create(request(&emu, "x")).await.unwrap_err();
    assert!(matches!(err, OpenAIError::ApiError(_)), "{err:?}");
    assert_eq!(emu.counters().chat_requests - before, 2);
}

#[tokio::test]
async fn the_pipeline_table_through_the_layer() {
    use async_openai::middleware::ReqwestService;
    use evolution_langchain::bridges::async_openai::EvolutionAuthLayer;

    common::pipeline_cases::run_all("async-openai", |base_url, tokens| async move {
        let http = reqwest::Client::new();
        let service = tower::ServiceBuilder::new()
            .layer(EvolutionAuthLayer::new(tokens))
            .service(ReqwestService::new(http.clone()));
        let client = Client::build(
            http,
            EvolutionConfig::from_api_key("unused").with_api_base(base_url),
        )
        .with_http_service(service);
        let request = CreateChatCompletionRequestArgs::default()
            .model("m")
            .messages([ChatCompletionRequestUserMessage::from("hi").into()])
            .build()
            .unwrap();
        match client.chat().create(request).await {
            Ok(reply) => Ok(reply.choices[0].message.content.clone().unwrap_or_default()),
            Err(OpenAIError::ApiError(error)) => Err(Some(error.status_code.as_u16())),
            Err(other) => panic!("{other:?}"),
        }
    })
    .await;
}
