//! Structured output from the scripted model: `response_format` `json_schema` answered
//! with a document that fits the schema, forced tool calls with arguments that fit the
//! parameters, strict-mode checks, and the rehearsals of failure: a server refusing
//! `json_schema` (setting and fault) and answers off the schema.

mod common;

use clap::Parser;
use common::{chat, read_sse, streamed, user};
use evolution_emulator::{Emulator, EmulatorArgs, Fault, Target, REASONING_MODEL};
use serde_json::{json, Value};

/// A strict schema with nesting, an enum, a nullable property, a list and `$defs`.
fn order_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "customer": {"type": "string"},
            "quantity": {"type": "integer", "minimum": 1},
            "express": {"type": "boolean"},
            "size": {"type": "string", "enum": ["small", "large"]},
            "note": {"type": ["string", "null"]},
            "items": {"type": "array", "items": {"$ref": "#/$defs/Item"}},
            "placed": {"type": "string", "format": "date-time"}
        },
        "required": ["customer", "quantity", "express", "size", "note", "items", "placed"],
        "additionalProperties": false,
        "$defs": {"Item": {
            "type": "object",
            "properties": {"sku": {"type": "string"}, "price": {"type": "number"}},
            "required": ["sku", "price"],
            "additionalProperties": false
        }}
    })
}

fn with_schema(mut body: Value, name: &str, schema: Value, strict: bool) -> Value {
    body["response_format"] = json!({"type": "json_schema", "json_schema": {
        "name": name, "schema": schema, "strict": strict
    }});
    body
}

fn content(body: &Value) -> Value {
    let text = body["choices"][0]["message"]["content"].as_str().unwrap();
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON: {text:?}: {e}"))
}

#[tokio::test]
async fn json_schema_requests_get_a_document_that_fits() {
    let emu = Emulator::start().await.unwrap();
    let token = common::token(&emu).await;
    let prompt = "customer: Ada, size: LARGE, sku: A-1, price: 9.5, express: no";
    let (status, body) = chat(
        &emu,
        &token,
        with_schema(user(prompt), "order", order_schema(), true),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    assert_eq!(
        content(&body),
        json!({
            "customer": "Ada",
            "quantity": 1,
            "express": false,
            "size": "large",
            "note": null,
            "items": [{"sku": "A-1", "price": 9.5}],
            "placed": "2024-01-01T00:00:00Z"
        })
    );
    // Deterministic: the same request, the same document; a mention fills the nullable.
    let (_, again) = chat(
        &emu,
        &token,
        with_schema(user(prompt), "order", order_schema(), true),
    )
    .await;
    assert_eq!(content(&again), content(&body));
    let (_, noted) = chat(
        &emu,
        &token,
        with_schema(
            user("note: ring twice; quantity = 3"),
            "order",
            order_schema(),
            true,
        ),
    )
    .await;
    assert_eq!(content(&noted)["note"], "ring twice");
    assert_eq!(content(&noted)["quantity"], 3);
    assert_eq!(
        content(&noted)["customer"],
        "customer",
        "unmentioned: the name"
    );

    // Streamed, the deltas join to the same document.
    let response = common::post(
        &emu,
        &token,
        "/chat/completions",
        with_schema(streamed(prompt), "order", order_schema(), true),
    )
    .await;
    let events = read_sse(response).await.unwrap();
    let joined: String = events
        .iter()
        .filter(|e| e.data != "[DONE]")
        .filter_map(|e| {
            e.json()["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    assert_eq!(
        serde_json::from_str::<Value>(&joined).unwrap(),
        content(&body)
    );
    emu.shutdown().await;
}

#[tokio::test]
async fn the_reasoning_model_thinks_then_answers_json() {
    let emu = Emulator::start().await.unwrap();
    let token = common::token(&emu).await;
    let mut request = with_schema(user("customer: Bo"), "order", order_schema(), true);
    request["model"] = json!(REASONING_MODEL);
    let (_, body) = chat(&emu, &token, request).await;
    let message = &body["choices"][0]["message"];
    assert_eq!(message["reasoning_content"], "Thinking about 2 words.");
    assert_eq!(content(&body)["customer"], "Bo");
    emu.shutdown().await;
}

#[tokio::test]
async fn forced_tool_calls_get_arguments_that_fit() {
    let emu = Emulator::start().await.unwrap();
    let token = common::token(&emu).await;
    let mut request = user("customer: Cy, quantity: 2");
    request["tools"] = json!([
        {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}},
        {"type": "function", "function": {"name": "order", "parameters": order_schema()}}
    ]);
    request["tool_choice"] = json!({"type": "function", "function": {"name": "order"}});
    let (status, body) = chat(&emu, &token, request.clone()).await;
    assert_eq!(status, 200, "{body}");
    let choice = &body["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls");
    let call = &choice["message"]["tool_calls"][0]["function"];
    assert_eq!(call["name"], "order");
    let arguments: Value = serde_json::from_str(call["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(arguments["customer"], "Cy");
    assert_eq!(arguments["quantity"], 2);
    assert_eq!(arguments["items"], json!([{"sku": "sku", "price": 1}]));

    // "required" calls the tool the prompt names, else the first offered.
    request["tool_choice"] = json!("required");
    let (_, body) = chat(&emu, &token, request.clone()).await;
    assert_eq!(
        body["choices"][0]["message"]["tool_calls"][0]["function"]["name"],
        "get_time"
    );
    request["messages"][0]["content"] = json!("please order: customer: Di");
    let (_, body) = chat(&emu, &token, request.clone()).await;
    assert_eq!(
        body["choices"][0]["message"]["tool_calls"][0]["function"]["name"],
        "order"
    );

    // A forced function that is not offered is the caller's mistake.
    request["tool_choice"] = json!({"type": "function", "function": {"name": "nope"}});
    let (status, body) = chat(&emu, &token, request).await;
    assert_eq!(status, 400);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("\"nope\""),
        "{body}"
    );
    emu.shutdown().await;
}

#[tokio::test]
async fn strict_schemas_are_checked_and_names_validated() {
    let emu = Emulator::start().await.unwrap();
    let token = common::token(&emu).await;
    let open =
        json!({"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]});
    let (status, body) = chat(
        &emu,
        &token,
        with_schema(user("x"), "t", open.clone(), true),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["param"], "response_format");
    assert_eq!(
        body["error"]["message"],
        "Invalid schema for response_format 't': In context=(), 'additionalProperties' is \
         required to be supplied and to be false."
    );
    let mut partial = order_schema();
    partial["$defs"]["Item"]["required"] = json!(["sku"]);
    let (status, body) = chat(&emu, &token, with_schema(user("x"), "t", partial, true)).await;
    assert_eq!(status, 400);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("In context=('$defs', 'Item'), 'required' is required to be supplied and to be an array including every key in properties. Missing 'price'."),
        "{body}"
    );
    // Not strict: anything goes.
    let (status, _) = chat(&emu, &token, with_schema(user("x"), "t", open, false)).await;
    assert_eq!(status, 200);

    for bad_name in ["", "has space", &"x".repeat(65)] {
        let (status, body) = chat(
            &emu,
            &token,
            with_schema(user("x"), bad_name, json!({"type": "object"}), false),
        )
        .await;
        assert_eq!(status, 400, "{bad_name:?}");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("'response_format.json_schema.name' must match"),
            "{body}"
        );
    }
    let mut bad_type = user("x");
    bad_type["response_format"] = json!({"type": "yaml"});
    let (status, _) = chat(&emu, &token, bad_type).await;
    assert_eq!(status, 400);
    emu.shutdown().await;
}

#[tokio::test]
async fn a_server_without_structured_output_refuses_json_schema() {
    let refusal = json!({"error": {
        "message": "response_format json_schema is not supported",
        "type": "invalid_request_error",
        "code": "invalid_request",
        "param": "response_format"
    }});
    let emu = Emulator::builder()
        .refuse_json_schema(true)
        .start()
        .await
        .unwrap();
    let token = common::token(&emu).await;
    for _ in 0..2 {
        let (status, body) = chat(
            &emu,
            &token,
            with_schema(user("x"), "order", order_schema(), true),
        )
        .await;
        assert_eq!((status, body), (400, refusal.clone()));
    }
    // Everything else is served: plain chat, json_object, forced tool calls.
    let (status, _) = chat(&emu, &token, user("x")).await;
    assert_eq!(status, 200);
    let mut tool = user("x");
    tool["tools"] =
        json!([{"type": "function", "function": {"name": "order", "parameters": order_schema()}}]);
    tool["tool_choice"] = json!({"type": "function", "function": {"name": "order"}});
    let (status, _) = chat(&emu, &token, tool).await;
    assert_eq!(status, 200);
    emu.shutdown().await;

    // The fault refuses as many requests as it is queued for (and is used up only by
    // requests asking for json_schema or not: one request, one fault).
    let emu = Emulator::start().await.unwrap();
    let token = common::token(&emu).await;
    emu.inject(Target::Chat, Fault::RefuseJsonSchema, 1);
    let request = with_schema(user("x"), "order", order_schema(), true);
    let (status, body) = chat(&emu, &token, request.clone()).await;
    assert_eq!((status, body), (400, refusal));
    let (status, _) = chat(&emu, &token, request).await;
    assert_eq!(status, 200);
    emu.shutdown().await;

    // The command line's flag.
    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        emulator: EmulatorArgs,
    }
    let cli = Cli::try_parse_from(["x", "--refuse-json-schema"]).unwrap();
    assert!(cli.emulator.refuse_json_schema);
    let emu = cli.emulator.builder().start().await.unwrap();
    let token = common::token(&emu).await;
    let (status, _) = chat(
        &emu,
        &token,
        with_schema(user("x"), "order", order_schema(), true),
    )
    .await;
    assert_eq!(status, 400);
    emu.shutdown().await;
}

#[tokio::test]
async fn off_schema_answers_rehearse_a_model_that_ignores_the_schema() {
    let emu = Emulator::start().await.unwrap();
    let token = common::token(&emu).await;
    emu.inject(Target::Chat, Fault::OffSchema, 1);
    let request = with_schema(user("customer: Ed"), "order", order_schema(), true);
    let (status, body) = chat(&emu, &token, request.clone()).await;
    assert_eq!(status, 200);
    let document = content(&body);
    assert!(
        document.get("customer").is_none(),
        "the first required property goes: {document}"
    );
    assert_eq!(document["quantity"], 1);
    let (_, body) = chat(&emu, &token, request.clone()).await;
    assert_eq!(content(&body)["customer"], "Ed", "once only");

    // Forced tool calls too; a request asking for neither is answered as usual.
    emu.inject(Target::Chat, Fault::OffSchema, 1);
    let (_, body) = chat(&emu, &token, user("plain")).await;
    assert_eq!(body["choices"][0]["message"]["content"], "plain");
    let mut tool = user("customer: Ed");
    tool["tools"] =
        json!([{"type": "function", "function": {"name": "order", "parameters": order_schema()}}]);
    tool["tool_choice"] = json!({"type": "function", "function": {"name": "order"}});
    emu.inject(Target::Chat, Fault::OffSchema, 1);
    let (_, body) = chat(&emu, &token, tool).await;
    let arguments: Value = serde_json::from_str(
        body["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert!(arguments.get("customer").is_none(), "{arguments}");
    // A schema whose document is not an object gets a string instead.
    emu.inject(Target::Chat, Fault::OffSchema, 1);
    let (_, body) = chat(
        &emu,
        &token,
        with_schema(
            user("x"),
            "n",
            json!({"type": "object", "properties": {}}),
            false,
        ),
    )
    .await;
    assert_eq!(content(&body), json!("off-schema"));
    emu.shutdown().await;
}
