//! The langchain-rust integration against the emulator over loopback: each
//! chain and agent the examples show runs here, and the assertions are on
//! what the emulator received.

#![cfg(feature = "langchain")]

use std::error::Error as StdError;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use evolution_emulator::{Fault, Target};
use evolution_langchain::langchain::{Embedder, LLM};
use evolution_langchain::langchain_rust::agent::{
    AgentExecutor, ConversationalAgentBuilder, OpenAiToolAgentBuilder,
};
use evolution_langchain::langchain_rust::chain::conversational::builder::ConversationalChainBuilder;
use evolution_langchain::langchain_rust::chain::options::ChainCallOptions;
use evolution_langchain::langchain_rust::chain::{
    Chain, LLMChain, LLMChainBuilder, SequentialChainBuilder,
};
use evolution_langchain::langchain_rust::embedding::EmbedderError;
use evolution_langchain::langchain_rust::language_models::llm::LLMClone;
use evolution_langchain::langchain_rust::language_models::options::CallOptions;
use evolution_langchain::langchain_rust::language_models::{LLMError, LLMEvent};
use evolution_langchain::langchain_rust::llm::openai::OpenAI;
use evolution_langchain::langchain_rust::llm::{CachedLLM, InMemoryLLMCache};
use evolution_langchain::langchain_rust::memory::SimpleMemory;
use evolution_langchain::langchain_rust::prompt::{
    HumanMessagePromptTemplate, SystemMessagePromptTemplate,
};
use evolution_langchain::langchain_rust::schemas::{
    FunctionCallBehavior, FunctionDefinition, ImageContent, Message, ResponseFormat, ToolCall,
};
use evolution_langchain::langchain_rust::tools::Tool;
use evolution_langchain::langchain_rust::{
    fmt_template, message_formatter, prompt_args, template_fstring,
};
use evolution_langchain::EvolutionEmbeddings;
use futures::StreamExt;
use serde_json::{json, Value};

mod common;
use common::{chat_bodies, emulator, last_body, llm};

/// A prompt with a system template and a human template.
fn translation_chain(llm: impl Into<Box<dyn LLM>>, options: ChainCallOptions) -> LLMChain {
    let prompt = message_formatter![
        fmt_template!(SystemMessagePromptTemplate::new(template_fstring!(
            "You translate into {language}.",
            "language"
        ))),
        fmt_template!(HumanMessagePromptTemplate::new(template_fstring!(
            "Translate: {text}",
            "text"
        )))
    ];
    LLMChainBuilder::new()
        .prompt(prompt)
        .llm(llm)
        .options(options)
        .build()
        .expect("chain builds")
}

#[tokio::test]
async fn llm_chain_sends_the_rendered_template_and_the_chain_options() {
    let emu = emulator().await;
    let options = ChainCallOptions::new()
        .with_top_p(0.25)
        .with_temperature(0.5)
        .with_max_tokens(40)
        .with_seed(7)
        .with_stop_words(vec!["STOP".into()]);
    let chain = translation_chain(llm(&emu), options);

    let answer = chain
        .invoke(prompt_args! {"language" => "French", "text" => "good morning STOP friends"})
        .await
        .unwrap();

    let body = last_body(&emu);
    assert_eq!(
        body["messages"],
        json!([
            {"role": "system", "content": "You translate into French."},
            {"role": "user", "content": "Translate: good morning STOP friends"},
        ])
    );
    assert_eq!(body["top_p"], 0.25);
    assert_eq!(body["temperature"], 0.5);
    assert_eq!(body["max_tokens"], 40);
    assert_eq!(body["seed"], 7);
    assert_eq!(body["stop"], json!(["STOP"]));
    assert_eq!(body["model"], emu.default_model());
    // The emulator echoes, cut before the stop word.
    assert_eq!(answer, "Translate: good morning");
}

#[tokio::test]
async fn add_options_maps_every_wire_field() {
    let emu = emulator().await;
    let mut llm = llm(&emu);
    let weather = FunctionDefinition::new(
        "get_weather",
        "Weather in a city",
        json!({"type": "object", "properties": {"city": {"type": "string"}}}),
    );
    let time = FunctionDefinition::new("get_time", "", json!({"type": "object"}));
    llm.add_options(
        CallOptions::new()
            .with_max_tokens(64)
            .with_temperature(0.0)
            .with_top_p(0.5)
            .with_frequency_penalty(0.5)
            .with_presence_penalty(-0.5)
            .with_seed(42)
            .with_candidate_count(2)
            .with_stop_words(vec!["END".into()])
            .with_functions(vec![weather.clone()])
            .with_function_call_behavior(FunctionCallBehavior::Named("get_weather".into()))
            .with_response_format(ResponseFormat::JsonSchema {
                description: Some("a forecast".into()),
                name: "forecast".into(),
                schema: Some(json!({"type": "object"})),
                strict: Some(true),
            })
            // No wire equivalent: warned about and not sent.
            .with_top_k(5)
            .with_repetition_penalty(1.1),
    );
    // A second merge: scalars replace, lists append (a same-named tool is replaced).
    llm.add_options(
        CallOptions::new()
            .with_n(3)
            .with_stop_words(vec!["END".into(), "FIN".into()])
            .with_functions(vec![weather, time]),
    );

    LLM::generate(&llm, &[Message::new_human_message("hello")])
        .await
        .unwrap();
    let body = last_body(&emu);
    assert_eq!(body["max_tokens"], 64);
    assert_eq!(body["temperature"], 0.0);
    assert_eq!(body["top_p"], 0.5);
    assert_eq!(body["frequency_penalty"], 0.5);
    assert_eq!(body["presence_penalty"], -0.5);
    assert_eq!(body["seed"], 42);
    assert_eq!(body["n"], 3, "n wins over candidate_count");
    assert_eq!(body["stop"], json!(["END", "FIN"]));
    assert_eq!(
        body["tools"],
        json!([
            {"type": "function", "function": {
                "name": "get_weather",
                "description": "Weather in a city",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
            }},
            {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}},
        ])
    );
    assert_eq!(
        body["tool_choice"],
        json!({"type": "function", "function": {"name": "get_weather"}})
    );
    assert_eq!(
        body["response_format"],
        json!({"type": "json_schema", "json_schema": {
            "name": "forecast", "description": "a forecast",
            "schema": {"type": "object"}, "strict": true,
        }})
    );
    for absent in ["top_k", "repetition_penalty", "min_length", "max_length"] {
        assert!(body.get(absent).is_none(), "{absent} was sent");
    }

    // stream_usage, and the remaining behaviours and formats.
    llm.add_options(
        CallOptions::new()
            .with_stream_usage(false)
            .with_function_call_behavior(FunctionCallBehavior::None)
            .with_response_format(ResponseFormat::JsonObject),
    );
    let events: Vec<_> = llm
        .generate_stream(&[Message::new_human_message("hi")])
        .collect()
        .await;
    assert!(events.last().unwrap().is_ok());
    let body = last_body(&emu);
    assert_eq!(body["stream"], true);
    assert!(body.get("stream_options").is_none(), "{body}");
    assert_eq!(body["tool_choice"], "none");
    assert_eq!(body["response_format"], json!({"type": "json_object"}));
    llm.add_options(CallOptions::new().with_function_call_behavior(FunctionCallBehavior::Auto));
    assert_eq!(
        serde_json::to_value(&llm.options().tool_choice).unwrap(),
        "auto"
    );
}

#[tokio::test]
async fn messages_convert_to_chat_messages() {
    let emu = emulator().await;
    let llm = llm(&emu);
    let call = ToolCall::new("call_9", "get_weather", r#"{"city":"Lima"}"#);
    let messages = [
        Message::new_system_message("Be brief."),
        Message::new_human_message("What is on this picture?").with_images(vec![
            ImageContent::from("https://example.com/cat.png").with_detail("low"),
            ImageContent::from("iVBORw0KGgoAAAA"),
        ]),
        Message::new_ai_message("A cat."),
        Message::new_ai_message_with_tool_calls("", &[call]),
        Message::new_tool_message("Sunny, 24 C", "call_9"),
    ];
    let result = LLM::generate(&llm, &messages).await.unwrap();

    assert_eq!(
        last_body(&emu)["messages"],
        json!([
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": [
                {"type": "text", "text": "What is on this picture?"},
                {"type": "image_url", "image_url": {"url": "https://example.com/cat.png", "detail": "low"}},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgoAAAA"}},
            ]},
            {"role": "assistant", "content": "A cat."},
            {"role": "assistant", "tool_calls": [{"id": "call_9", "type": "function",
                "function": {"name": "get_weather", "arguments": "{\"city\":\"Lima\"}"}}]},
            {"role": "tool", "content": "Sunny, 24 C", "tool_call_id": "call_9"},
        ])
    );
    assert_eq!(result.generation, "Tool result: Sunny, 24 C");
    let tokens = result.tokens.expect("usage is reported");
    assert!(tokens.completion_tokens > 0);
    assert_eq!(
        tokens.total_tokens,
        tokens.prompt_tokens + tokens.completion_tokens
    );

    // A tool message must say which call it answers.
    let mut orphan = Message::new_tool_message("x", "");
    orphan.id = None;
    let err = LLM::generate(&llm, &[orphan]).await.unwrap_err();
    assert!(
        matches!(&err, LLMError::OtherError(m) if m.contains("without the id")),
        "{err}"
    );
    let broken = Message::new_ai_message("").with_tool_calls(json!([{"id": 1}]));
    let err = LLM::generate(&llm, &[broken]).await.unwrap_err();
    assert!(matches!(err, LLMError::ParsingError(_)), "{err}");
}

#[tokio::test]
async fn tool_calls_come_back_typed() {
    let emu = emulator().await;
    let mut llm = llm(&emu);
    llm.add_options(
        CallOptions::new().with_functions(vec![FunctionDefinition::new(
            "get_weather",
            "Weather in a city",
            json!({"type": "object", "properties": {"city": {"type": "string"}}}),
        )]),
    );
    let messages = [Message::new_human_message("get_weather Lima")];

    let result = LLM::generate(&llm, &messages).await.unwrap();
    assert_eq!(result.tool_calls.len(), 1);
    let call = &result.tool_calls[0];
    assert_eq!(call.name, "get_weather");
    assert!(call.id.starts_with("call_"), "{call:?}");
    assert_eq!(
        serde_json::from_str::<Value>(&call.arguments).unwrap(),
        json!({"city": "Lima"})
    );
    // langchain-rust mirrors the calls into `generation` as JSON.
    assert_eq!(
        ToolCall::parse_list(&result.generation).unwrap(),
        result.tool_calls
    );

    // Streamed, the fragments are joined by index.
    let mut events = llm.generate_stream(&messages);
    let mut done = None;
    while let Some(event) = events.next().await {
        match event.unwrap() {
            LLMEvent::Done(result) => done = Some(result),
            LLMEvent::Text(text) => panic!("tool calls are not answer text: {text:?}"),
            _ => {}
        }
    }
    let streamed = done.expect("Done arrives");
    assert_eq!(streamed.tool_calls[0].name, "get_weather");
    assert_eq!(
        serde_json::from_str::<Value>(&streamed.tool_calls[0].arguments).unwrap(),
        json!({"city": "Lima"})
    );
}

#[tokio::test]
async fn generate_stream_yields_text_events_then_done_with_usage() {
    let emu = emulator().await;
    let llm = llm(&emu);
    let messages = [Message::new_human_message(
        "one two three four five six seven",
    )];
    let events: Vec<LLMEvent> = llm
        .generate_stream(&messages)
        .map(Result::unwrap)
        .collect()
        .await;

    let texts: Vec<&str> = events
        .iter()
        .filter_map(|e| match e {
            LLMEvent::Text(text) => Some(text.as_str()),
            _ => None,
        })
        .collect();
    assert!(texts.len() > 1, "one event per word or so, got {texts:?}");
    let Some(LLMEvent::Done(result)) = events.last() else {
        panic!("the last event is Done: {events:?}");
    };
    assert_eq!(texts.concat(), result.generation);
    assert_eq!(result.generation, "one two three four five six seven");
    assert_eq!(result.tokens.as_ref().unwrap().completion_tokens, 7);

    let body = last_body(&emu);
    assert_eq!(body["stream"], true);
    assert_eq!(body["stream_options"], json!({"include_usage": true}));
}

#[tokio::test]
async fn legacy_stream_yields_stream_data() {
    let emu = emulator().await;
    let llm = llm(&emu);
    let stream = LLM::stream(&llm, &[Message::new_human_message("alpha beta gamma")])
        .await
        .unwrap();
    let chunks: Vec<_> = stream.map(Result::unwrap).collect().await;
    let text: String = chunks.iter().map(|c| c.content.as_str()).collect();
    assert_eq!(text, "alpha beta gamma");
    assert!(chunks.iter().filter(|c| !c.content.is_empty()).count() > 1);
    let usage = chunks.iter().find_map(|c| c.tokens.clone()).expect("usage");
    assert_eq!(usage.completion_tokens, 3);
    assert!(chunks[0].value.get("choices").is_some());
}

#[tokio::test]
async fn streaming_func_gets_each_chunk_during_generate() {
    let emu = emulator().await;
    let received = Arc::new(Mutex::new(Vec::<String>::new()));
    let sink = Arc::clone(&received);
    let options = ChainCallOptions::new().with_streaming_func(move |chunk: String| {
        sink.lock().unwrap().push(chunk);
        async { Ok(()) }
    });
    let chain = translation_chain(llm(&emu), options);

    let answer = chain
        .invoke(prompt_args! {"language" => "Spanish", "text" => "red green blue"})
        .await
        .unwrap();

    let received = received.lock().unwrap().clone();
    assert!(received.len() > 1, "{received:?}");
    assert_eq!(received.concat(), answer);
    assert_eq!(last_body(&emu)["stream"], true);

    // A failing streaming_func stops the generation.
    let mut llm = llm(&emu);
    llm.add_options(CallOptions::new().with_streaming_func(|_: String| async { Err(()) }));
    let err = LLM::invoke(&llm, "a b c").await.unwrap_err();
    assert!(err.to_string().contains("streaming_func"), "{err}");
}

#[tokio::test]
async fn llm_chain_call_stream_streams() {
    let emu = emulator().await;
    let chain = translation_chain(llm(&emu), ChainCallOptions::new());
    let events: Vec<LLMEvent> = chain
        .call_stream(prompt_args! {"language" => "German", "text" => "the cat sat down"})
        .map(Result::unwrap)
        .collect()
        .await;
    let texts = events
        .iter()
        .filter(|e| matches!(e, LLMEvent::Text(_)))
        .count();
    assert!(texts > 1, "{events:?}");
    assert!(
        matches!(events.last(), Some(LLMEvent::Done(r)) if r.generation == "Translate: the cat sat down")
    );
}

#[tokio::test]
async fn sequential_chain_feeds_one_output_into_the_next_prompt() {
    let emu = emulator().await;
    let base = llm(&emu);
    let slogan = LLMChainBuilder::new()
        .prompt(message_formatter![fmt_template!(
            HumanMessagePromptTemplate::new(template_fstring!("Slogan for {product}", "product"))
        )])
        .llm(base.clone())
        .output_key("slogan")
        .build()
        .unwrap();
    let translation = LLMChainBuilder::new()
        .prompt(message_formatter![fmt_template!(
            HumanMessagePromptTemplate::new(template_fstring!("In French: {slogan}", "slogan"))
        )])
        .llm(base)
        .output_key("translation")
        .build()
        .unwrap();
    let chain = SequentialChainBuilder::new()
        .add_chain(slogan)
        .add_chain(translation)
        .build();

    let output = chain
        .execute(prompt_args! {"product" => "a solar lamp"})
        .await
        .unwrap();

    let bodies = chat_bodies(&emu);
    assert_eq!(bodies.len(), 2);
    assert_eq!(
        bodies[0]["messages"][0]["content"],
        "Slogan for a solar lamp"
    );
    assert_eq!(
        bodies[1]["messages"][0]["content"],
        "In French: Slogan for a solar lamp"
    );
    assert_eq!(output["slogan"], "Slogan for a solar lamp");
    assert_eq!(output["translation"], "In French: Slogan for a solar lamp");
}

#[tokio::test]
async fn conversational_chain_sends_earlier_turns_from_memory() {
    let emu = emulator().await;
    let chain = ConversationalChainBuilder::new()
        .llm(llm(&emu))
        .memory(SimpleMemory::new().into())
        .build()
        .unwrap();

    let first = chain
        .invoke(prompt_args! {"input" => "My name is Ana."})
        .await
        .unwrap();
    chain
        .invoke(prompt_args! {"input" => "What is my name?"})
        .await
        .unwrap();

    let bodies = chat_bodies(&emu);
    assert_eq!(bodies.len(), 2);
    let second = bodies[1]["messages"][0]["content"].as_str().unwrap();
    // SimpleMemory renders turns as "human: …" / "ai: …".
    assert!(second.contains("human: My name is Ana.\n"), "{second}");
    assert!(second.contains(&format!("ai: {first}\n")), "{second}");
    assert!(second.contains("Human: What is my name?"), "{second}");
    let first_prompt = bodies[0]["messages"][0]["content"].as_str().unwrap();
    assert!(!first_prompt.contains("human: "), "{first_prompt}");
}

/// Upper-cases its input; what the agents are given to call.
struct Uppercase;

#[async_trait]
impl Tool for Uppercase {
    fn name(&self) -> String {
        "uppercase".into()
    }
    fn description(&self) -> String {
        "Converts text to upper case".into()
    }
    async fn run(&self, input: Value) -> Result<String, Box<dyn StdError>> {
        Ok(input.as_str().unwrap_or_default().to_uppercase())
    }
}

#[tokio::test]
async fn openai_tool_agent_calls_the_tool_natively() {
    let emu = emulator().await;
    let agent = OpenAiToolAgentBuilder::new()
        .tools(&[Arc::new(Uppercase)])
        .options(ChainCallOptions::new().with_max_tokens(200))
        .build(llm(&emu))
        .unwrap();
    let executor = AgentExecutor::from_agent(agent).with_max_iterations(3);

    let answer = executor
        .invoke(prompt_args! {"input" => "Please uppercase the quick brown fox"})
        .await
        .unwrap();

    let bodies = chat_bodies(&emu);
    assert_eq!(bodies.len(), 2, "{bodies:#?}");
    assert_eq!(
        bodies[0]["tools"],
        json!([{"type": "function", "function": {
            "name": "uppercase",
            "description": "Converts text to upper case",
            "parameters": {"type": "object",
                "properties": {"input": {"type": "string", "description": "Converts text to upper case"}},
                "required": ["input"]},
        }}])
    );
    assert_eq!(bodies[0]["max_tokens"], 200);
    let follow_up = bodies[1]["messages"].as_array().unwrap();
    let n = follow_up.len();
    let call = &follow_up[n - 2];
    assert_eq!(call["role"], "assistant");
    assert_eq!(call["tool_calls"][0]["function"]["name"], "uppercase");
    let id = call["tool_calls"][0]["id"].as_str().unwrap();
    assert_eq!(
        follow_up[n - 1],
        json!({"role": "tool", "content": "THE QUICK BROWN FOX", "tool_call_id": id})
    );
    assert_eq!(answer, "Tool result: THE QUICK BROWN FOX");
}

/// The text-based agent's suffix with the user's input first: the emulator
/// echoes the prompt, and the agent parses the first JSON block it sees.
const INPUT_FIRST_SUFFIX: &str = "{{input}}\n\nTOOLS\n------\n{{tools}}\n\n{{format_instructions}}";

#[tokio::test]
async fn conversational_agent_uses_the_tool_through_text() {
    let emu = emulator().await;
    let agent = ConversationalAgentBuilder::new()
        .tools(&[Arc::new(Uppercase)])
        .suffix(INPUT_FIRST_SUFFIX)
        .build(llm(&emu))
        .unwrap();
    let executor = AgentExecutor::from_agent(agent).with_max_iterations(3);

    // What a model following the format instructions would answer.
    let reply = "```json\n{\"action\": \"uppercase\", \"action_input\": \"hello agent\"}\n```";
    let answer = executor
        .invoke(prompt_args! {"input" => reply})
        .await
        .unwrap();

    let bodies = chat_bodies(&emu);
    assert_eq!(bodies.len(), 2, "{bodies:#?}");
    let first = bodies[0]["messages"].as_array().unwrap();
    let prompt = first.last().unwrap()["content"].as_str().unwrap();
    assert!(
        prompt.contains("> uppercase: Converts text to upper case"),
        "{prompt}"
    );
    assert!(bodies[0].get("tools").is_none(), "no native tools");
    let follow_up = bodies[1]["messages"].as_array().unwrap();
    let tool_turn = follow_up.last().unwrap();
    assert_eq!(tool_turn["role"], "user");
    assert!(
        tool_turn["content"]
            .as_str()
            .unwrap()
            .contains("HELLO AGENT"),
        "{tool_turn}"
    );
    assert_eq!(follow_up[follow_up.len() - 2]["role"], "assistant");
    assert!(answer.contains("HELLO AGENT"), "{answer}");
}

#[tokio::test]
async fn retrieval_embeds_documents_and_answers_from_the_nearest() {
    let emu = emulator().await;
    let llm = llm(&emu);
    let embeddings = EvolutionEmbeddings::from_inference(&llm, "emulator/embed-1");
    let documents: Vec<String> = [
        "Lima is the capital of Peru.",
        "Rust has no garbage collector.",
        "Tea is a drink.",
    ]
    .map(String::from)
    .to_vec();

    let vectors = embeddings.embed_documents(&documents).await.unwrap();
    assert_eq!(vectors.len(), 3);
    assert!(vectors.iter().all(|v| v.len() == 8));
    let request = emu.last_request().unwrap();
    assert_eq!(request.path, "/v1/embeddings");
    assert_eq!(request.body["input"], json!(documents));
    assert_eq!(request.body["model"], "emulator/embed-1");

    // The emulator's vectors are a hash of the text: the document itself is
    // its own nearest neighbour.
    let query = embeddings
        .embed_query("Rust has no garbage collector.")
        .await
        .unwrap();
    let nearest = (0..3)
        .max_by(|&a, &b| cosine(&query, &vectors[a]).total_cmp(&cosine(&query, &vectors[b])))
        .unwrap();
    assert_eq!(nearest, 1);

    let chain = LLMChainBuilder::new()
        .prompt(message_formatter![fmt_template!(
            HumanMessagePromptTemplate::new(template_fstring!(
                "Context: {context} Question: {question}",
                "context",
                "question"
            ))
        )])
        .llm(llm)
        .build()
        .unwrap();
    let answer = chain
        .invoke(prompt_args! {"context" => documents[nearest], "question" => "garbage collector?"})
        .await
        .unwrap();
    assert!(
        answer.contains("Rust has no garbage collector."),
        "{answer}"
    );
    assert_eq!(chat_bodies(&emu).len(), 1);
}

fn cosine(a: &[f64], b: &[f64]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let norm = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>().sqrt();
    dot / (norm(a) * norm(b))
}

#[tokio::test]
async fn cached_llm_answers_a_repeat_without_a_request() {
    let emu = emulator().await;
    let cached = CachedLLM::new(llm(&emu), Arc::new(InMemoryLLMCache::new()))
        .with_namespace(emu.default_model());
    let messages = [Message::new_human_message("cache me")];

    let first = cached.generate(&messages).await.unwrap();
    let second = cached.generate(&messages).await.unwrap();

    assert_eq!(emu.counters().chat_requests, 1);
    assert_eq!(first.generation, "cache me");
    assert_eq!(second.generation, first.generation);
    assert!(first.tokens.is_some() && second.tokens.is_none());

    // Different messages do reach the model.
    cached
        .generate(&[Message::new_human_message("something else")])
        .await
        .unwrap();
    assert_eq!(emu.counters().chat_requests, 2);
}

#[tokio::test]
async fn clones_share_the_token_cache_and_keep_their_own_options() {
    let emu = emulator().await;
    let original = llm(&emu);
    let mut hot = original.clone();
    hot.add_options(CallOptions::new().with_temperature(1.5));

    LLM::invoke(&original, "a").await.unwrap();
    assert_eq!(last_body(&emu)["temperature"], 1.0);
    LLM::invoke(&hot, "b").await.unwrap();
    assert_eq!(last_body(&emu)["temperature"], 1.5);
    original.clone_box().invoke("c").await.unwrap();

    assert_eq!(emu.counters().tokens_issued, 1, "one token for every clone");
    assert_eq!(emu.counters().auth_requests, 1);
}

#[tokio::test]
async fn errors_keep_their_message() {
    let emu = emulator().await;
    let llm = llm(&emu);

    emu.inject(Target::Chat, Fault::Status(400), 1);
    let err = LLM::invoke(&llm, "x").await.unwrap_err();
    assert!(matches!(err, LLMError::OtherError(_)), "{err:?}");
    assert!(err.to_string().contains("400"), "{err}");
    assert!(err.to_string().contains("fix the request"), "{err}");

    emu.inject(Target::Chat, Fault::NotJson, 1);
    let err = LLM::invoke(&llm, "x").await.unwrap_err();
    assert!(matches!(err, LLMError::ParsingError(_)), "{err:?}");
    assert!(err.to_string().contains("invalid response"), "{err}");

    // Out-of-range options surface on the next call, naming the field.
    let mut bad = llm.clone();
    bad.add_options(CallOptions::new().with_temperature(3.0));
    let err = LLM::invoke(&bad, "x").await.unwrap_err();
    assert!(err.to_string().contains("temperature"), "{err}");

    let embeddings = EvolutionEmbeddings::from_inference(&llm, "emulator/embed-1");
    emu.inject(Target::Embeddings, Fault::Status(404), 1);
    let err = embeddings.embed_query("x").await.unwrap_err();
    match err {
        EmbedderError::HttpError {
            status_code,
            error_message,
        } => {
            assert_eq!(status_code.as_u16(), 404);
            assert!(error_message.contains("404"), "{error_message}");
        }
        other => panic!("expected HttpError, got {other:?}"),
    }
}

/// Chain code written once against `Box<dyn LLM>`.
fn summary_chain(llm: Box<dyn LLM>) -> LLMChain {
    LLMChainBuilder::new()
        .prompt(message_formatter![fmt_template!(
            HumanMessagePromptTemplate::new(template_fstring!("Summarize: {text}", "text"))
        )])
        .llm(llm)
        .options(ChainCallOptions::new().with_top_p(0.9))
        .build()
        .expect("chain builds")
}

#[tokio::test]
async fn drop_in_for_langchain_rusts_openai() {
    let emu = emulator().await;
    let ours = summary_chain(Box::new(llm(&emu)));
    // Compiles with the crate's own OpenAI LLM too; never called (no network).
    let _theirs = summary_chain(Box::new(OpenAI::default()));

    let answer = ours
        .invoke(prompt_args! {"text" => "short text"})
        .await
        .unwrap();
    assert_eq!(answer, "Summarize: short text");
    assert_eq!(last_body(&emu)["top_p"], 0.9);
}
