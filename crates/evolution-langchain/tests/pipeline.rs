//! The pipeline's table of statuses and `Retry-After` forms
//! (`common::pipeline_cases`) through the crate's own client.

mod common;

use evolution_langchain::EvolutionInference;

#[tokio::test]
async fn every_status_and_retry_after_form() {
    common::pipeline_cases::run_all("EvolutionInference", |base_url, tokens| async move {
        let llm = EvolutionInference::builder()
            .base_url(base_url)
            .shared_token_source(tokens)
            .model("m")
            .build()
            .unwrap();
        llm.invoke("hi").await.map_err(|e| e.status())
    })
    .await;
}

#[tokio::test]
async fn one_user_agent_and_the_callers_wins() {
    let server = common::pipeline_cases::serve(Vec::new()).await;
    let builder = || {
        EvolutionInference::builder()
            .base_url(&server.base_url)
            .api_key("k")
    };
    builder().build().unwrap().invoke("hi").await.unwrap();
    builder()
        .default_header("User-Agent", "my-app/2.0")
        .build()
        .unwrap()
        .invoke("hi")
        .await
        .unwrap();
    let seen = server.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].user_agents.len(), 1, "{seen:?}");
    assert!(seen[0].user_agents[0].starts_with("evolution-langchain-rs/"));
    assert_eq!(seen[1].user_agents, ["my-app/2.0"]);
}
