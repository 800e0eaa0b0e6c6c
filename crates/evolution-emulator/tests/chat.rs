//! The scripted responder behind `POST /v1/chat/completions`, non-streamed.

mod common;

use common::{chat, token, user};
use evolution_emulator::Emulator;
use serde_json::{json, Value};

fn content(body: &Value) -> &str {
    body["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or_else(|| panic!("no content in {body}"))
}

#[tokio::test]
async fn echoes_the_last_user_message_as_an_openai_completion() {
    let emu = Emulator::start().await.unwrap();
    let token = token(&emu).await;
    let (status, body) = chat(
        &emu,
        &token,
        json!({
            "model": "deepseek-ai/DeepSeek-R1-Distill-Llama-70B",
            "messages": [
                {"role": "system", "content": "You are terse."},
                {"role": "user", "content": "first question"},
                {"role": "assistant", "content": "first answer"},
                {"role": "user", "content": "  What is\tthe capital\n of France?  "}
            ]
        }),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(content(&body), "What is the capital of France?");
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["model"], "deepseek-ai/DeepSeek-R1-Distill-Llama-70B");
    assert!(body["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert!(body["created"].as_u64().unwrap() > 1_700_000_000);
    let choice = &body["choices"][0];
    assert_eq!(choice["index"], 0);
    assert_eq!(choice["finish_reason"], "stop");
    assert_eq!(choice["message"]["role"], "assistant");
    // 3 + 2 + 2 + 6 words in all messages; 6 in the answer.
    assert_eq!(
        body["usage"],
        json!({"prompt_tokens": 13, "completion_tokens": 6, "total_tokens": 19})
    );
    emu.shutdown().await;
}

#[tokio::test]
async fn content_arrays_and_empty_prompts() {
    let emu = Emulator::start().await.unwrap();
    let token = token(&emu).await;
    let (_, body) = chat(
        &emu,
        &token,
        json!({"model": "m", "messages": [{"role": "user", "content": [
            {"type": "text", "text": "look at"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
            {"type": "text", "text": "this picture"}
        ]}]}),
    )
    .await;
    assert_eq!(content(&body), "look at this picture");

    for messages in [
        json!([{"role": "user", "content": "   "}]),
        json!([{"role": "user", "content": null}]),
        json!([{"role": "system", "content": "no user message at all"}]),
    ] {
        let (status, body) = chat(&emu, &token, json!({"model": "m", "messages": messages})).await;
        assert_eq!(status, 200);
        assert_eq!(content(&body), "(empty prompt)");
    }
    emu.shutdown().await;
}

#[tokio::test]
async fn model_defaults_to_the_first_configured_one() {
    let emu = Emulator::builder()
        .models(vec!["a/first".into(), "b/second".into()])
        .start()
        .await
        .unwrap();
    let token = token(&emu).await;
    let (_, body) = chat(
        &emu,
        &token,
        json!({"messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(body["model"], "a/first");
    emu.shutdown().await;
}

#[tokio::test]
async fn max_tokens_is_a_word_budget() {
    let emu = Emulator::start().await.unwrap();
    let token = token(&emu).await;
    let mut request = user("one two three four five");
    request["max_tokens"] = json!(3);
    let (_, body) = chat(&emu, &token, request).await;
    assert_eq!(content(&body), "one two three");
    assert_eq!(body["choices"][0]["finish_reason"], "length");
    assert_eq!(body["usage"]["completion_tokens"], 3);

    let mut request = user("one two three");
    request["max_tokens"] = json!(3);
    let (_, body) = chat(&emu, &token, request).await;
    assert_eq!(content(&body), "one two three");
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    emu.shutdown().await;
}

#[tokio::test]
async fn stop_sequences_cut_before_the_first_match() {
    let emu = Emulator::start().await.unwrap();
    let token = token(&emu).await;
    let mut request = user("alpha beta. gamma delta END epsilon");
    request["stop"] = json!(["END", "."]);
    let (_, body) = chat(&emu, &token, request).await;
    assert_eq!(content(&body), "alpha beta");
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    assert_eq!(body["usage"]["completion_tokens"], 2);

    let mut request = user("alpha beta gamma");
    request["stop"] = json!("gamma");
    let (_, body) = chat(&emu, &token, request).await;
    assert_eq!(content(&body), "alpha beta");
    emu.shutdown().await;
}

#[tokio::test]
async fn n_gives_that_many_choices() {
    let emu = Emulator::start().await.unwrap();
    let token = token(&emu).await;
    let mut request = user("same for all");
    request["n"] = json!(3);
    let (_, body) = chat(&emu, &token, request).await;
    let choices = body["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 3);
    for (i, choice) in choices.iter().enumerate() {
        assert_eq!(choice["index"], i);
        assert_eq!(choice["message"]["content"], "same for all");
    }
    assert_eq!(body["usage"]["completion_tokens"], 9, "summed over choices");
    emu.shutdown().await;
}

fn weather_tools() -> Value {
    json!([
        {"type": "function", "function": {
            "name": "get_weather",
            "description": "Weather for a city",
            "parameters": {"type": "object", "properties": {
                "city": {"type": "string"},
                "days": {"type": "integer"},
                "scale": {"type": "number"},
                "detailed": {"type": "boolean"}
            }, "required": ["city"]}
        }},
        {"type": "function", "function": {"name": "get", "parameters": {"type": "object"}}}
    ])
}

#[tokio::test]
async fn tool_call_when_the_prompt_names_a_tool() {
    let emu = Emulator::start().await.unwrap();
    let token = token(&emu).await;
    let mut request = user("please call get_weather   Paris in 3 days");
    request["tools"] = weather_tools();
    let (status, body) = chat(&emu, &token, request.clone()).await;
    assert_eq!(status, 200);
    let choice = &body["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls");
    let message = &choice["message"];
    assert_eq!(message["role"], "assistant");
    assert_eq!(message["content"], Value::Null);
    let call = &message["tool_calls"][0];
    let id = call["id"].as_str().unwrap();
    assert!(
        id.starts_with("call_") && id[5..].parse::<u64>().is_ok(),
        "{id}"
    );
    assert_eq!(call["type"], "function");
    assert_eq!(call["function"]["name"], "get_weather");
    let args: Value =
        serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(
        args,
        json!({"city": "Paris in 3 days", "days": 3, "scale": 3, "detailed": null})
    );

    // Another call gets another id.
    let (_, again) = chat(&emu, &token, request.clone()).await;
    assert_ne!(
        again["choices"][0]["message"]["tool_calls"][0]["id"],
        call["id"]
    );

    // tool_choice "none" and prompts that do not name a tool get text.
    request["tool_choice"] = json!("none");
    let (_, body) = chat(&emu, &token, request).await;
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    let mut request = user("what is the weather like");
    request["tools"] = weather_tools();
    let (_, body) = chat(&emu, &token, request).await;
    assert_eq!(content(&body), "what is the weather like");
    emu.shutdown().await;
}

#[tokio::test]
async fn tool_results_are_reported() {
    let emu = Emulator::start().await.unwrap();
    let token = token(&emu).await;
    let (_, body) = chat(
        &emu,
        &token,
        json!({"model": "m", "tools": weather_tools(), "messages": [
            {"role": "user", "content": "get_weather Paris"},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function",
                "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "22 C and  sunny"}
        ]}),
    )
    .await;
    assert_eq!(content(&body), "Tool result: 22 C and sunny");
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    assert_eq!(body["usage"]["completion_tokens"], 6);
    assert_eq!(body["usage"]["prompt_tokens"], 2 + 4);
    emu.shutdown().await;
}

#[tokio::test]
async fn malformed_chat_requests_get_400_naming_the_field() {
    let emu = Emulator::start().await.unwrap();
    let token = token(&emu).await;
    let m = |extra: Value| {
        let mut body = user("hi");
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        body
    };
    let cases = [
        (json!({"model": "m"}), "messages"),
        (
            json!({"model": "m", "messages": "hi"}),
            "Expected 'messages' to be an array",
        ),
        (json!({"model": "m", "messages": []}), "must not be empty"),
        (json!({"model": "m", "messages": [42]}), "messages[0]"),
        (
            json!({"model": "m", "messages": [{"content": "x"}]}),
            "messages[0].role",
        ),
        (
            json!({"model": "m", "messages": [{"role": "wizard", "content": "x"}]}),
            "wizard",
        ),
        (
            json!({"model": "m", "messages": [{"role": "user", "content": 5}]}),
            "messages[0].content",
        ),
        (
            json!({"model": 7, "messages": [{"role": "user", "content": "x"}]}),
            "'model'",
        ),
        (m(json!({"stream": "yes"})), "'stream'"),
        (m(json!({"n": 0})), "'n'"),
        (m(json!({"max_tokens": -1})), "'max_tokens'"),
        (m(json!({"max_tokens": "ten"})), "'max_tokens'"),
        (m(json!({"stop": [1]})), "'stop'"),
        (m(json!({"temperature": 3.5})), "'temperature'"),
        (m(json!({"top_p": "high"})), "'top_p'"),
        (m(json!({"presence_penalty": -2.5})), "'presence_penalty'"),
        (
            m(json!({"tools": [{"type": "function"}]})),
            "tools[0].function",
        ),
        (m(json!({"stream_options": true})), "'stream_options'"),
    ];
    for (body, needle) in cases {
        let (status, reply) = chat(&emu, &token, body.clone()).await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(reply["error"]["type"], "invalid_request_error");
        let message = reply["error"]["message"].as_str().unwrap();
        assert!(
            message.contains(needle),
            "{message:?} should mention {needle:?}"
        );
    }

    let response = common::client()
        .post(format!("{}/chat/completions", emu.base_url()))
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body("{\"model\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let reply: Value = response.json().await.unwrap();
    assert!(reply["error"]["message"]
        .as_str()
        .unwrap()
        .contains("not valid JSON"));
    emu.shutdown().await;
}

#[tokio::test]
async fn oversized_bodies_get_a_json_413() {
    let emu = Emulator::start().await.unwrap();
    let token = token(&emu).await;
    let response = common::client()
        .post(format!("{}/chat/completions", emu.base_url()))
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body(vec![b' '; 33 * 1024 * 1024])
        .send()
        .await;
    // The server may answer before reading the whole body and close; either way no panic
    // and, when an answer arrives, it is the JSON error.
    if let Ok(response) = response {
        assert_eq!(response.status(), 413);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "payload_too_large");
    }
    assert_eq!(chat(&emu, &token, user("still fine")).await.0, 200);
    emu.shutdown().await;
}

#[tokio::test]
async fn unknown_routes_answer_json_errors() {
    let emu = Emulator::start().await.unwrap();
    let token = token(&emu).await;
    let http = common::client();
    let response = http
        .get(format!("{}/nope", emu.base_url()))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    let body: Value = response.json().await.unwrap();
    assert!(body["error"]["message"].is_string());
    assert_eq!(emu.last_request().unwrap().path, "/v1/nope");

    // Unknown /v1 routes sit behind the bearer check like the real API.
    let response = http
        .get(format!("{}/nope", emu.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);

    let response = http
        .get(format!("{}/chat/completions", emu.base_url()))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 405);
    let body: Value = response.json().await.unwrap();
    assert!(body["error"]["message"].as_str().unwrap().contains("GET"));
    emu.shutdown().await;
}
