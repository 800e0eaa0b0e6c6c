//! Structured output: the schema a type becomes, extraction over HTTP from
//! the emulator's scripted model, the repair round, the typed error, the
//! fallback to a forced tool call after a refusal (remembered, shared by
//! clones; what real servers say when they refuse, and complaints about a
//! schema that are no refusal), a forced call the model did not make,
//! reasoning models, the caller's conflicting options, and the blocking
//! twin.

mod common;

use std::collections::HashMap;

use common::scripted::{Reply, Scripted};
use common::{chat_bodies, client, emulator, llm};
use evolution_emulator::{Emulator, EmulatorHandle, Fault, Target, REASONING_MODEL};
use evolution_langchain::{
    ChatMessage, ChatOptions, Error, EvolutionInference, ExtractionMode, OutputSchema,
    ResponseFormat, Tool, ToolChoice,
};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{json, Value};

/// A postal address.
#[derive(Debug, PartialEq, Deserialize, JsonSchema)]
struct Address {
    street: String,
    zip: u32,
}

#[derive(Debug, PartialEq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
enum Role {
    Admin,
    User,
}

#[derive(Debug, PartialEq, Deserialize, JsonSchema)]
#[serde(tag = "kind")]
enum Contact {
    Email { address: String },
    Phone { number: String },
}

/// A person.
#[derive(Debug, PartialEq, Deserialize, JsonSchema)]
struct Person {
    name: String,
    /// Age in years.
    age: Option<u8>,
    role: Role,
    home: Address,
    work: Option<Address>,
    #[serde(default)]
    tags: Vec<String>,
    contacts: Vec<Contact>,
}

/// The prompt the emulator's model fills a `Person` from (it takes
/// `property: value` mentions; unmentioned nullable properties are null).
const ADA: &str = "name: Ada Lovelace, role: admin, street: 12 St James's Square, zip: 1815";

fn ada() -> Person {
    Person {
        name: "Ada Lovelace".into(),
        age: None,
        role: Role::Admin,
        home: Address {
            street: "12 St James's Square".into(),
            zip: 1815,
        },
        work: None,
        tags: vec![],
        contacts: vec![Contact::Email {
            address: "address".into(),
        }],
    }
}

/// The `Person` schema as sent: every property required, no additional
/// properties anywhere, options nullable, `#[serde(default)]` nullable too,
/// `oneOf` as `anyOf`, `format: uint8/uint32` gone (their bounds stay),
/// `$defs` kept and referenced.
fn person_schema() -> Value {
    let address = json!({
        "type": "object",
        "description": "A postal address.",
        "properties": {
            "street": {"type": "string"},
            "zip": {"type": "integer", "minimum": 0}
        },
        "required": ["street", "zip"],
        "additionalProperties": false
    });
    json!({
        "title": "Person",
        "description": "A person.",
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "age": {"description": "Age in years.", "type": ["integer", "null"], "minimum": 0, "maximum": 255},
            "role": {"$ref": "#/$defs/Role"},
            "home": {"$ref": "#/$defs/Address"},
            "work": {"anyOf": [{"$ref": "#/$defs/Address"}, {"type": "null"}]},
            "tags": {"type": ["array", "null"], "items": {"type": "string"}},
            "contacts": {"type": "array", "items": {"$ref": "#/$defs/Contact"}}
        },
        "required": ["age", "contacts", "home", "name", "role", "tags", "work"],
        "additionalProperties": false,
        "$defs": {
            "Address": address,
            "Role": {"type": "string", "enum": ["admin", "user"]},
            "Contact": {"anyOf": [
                {"type": "object", "properties": {
                    "kind": {"type": "string", "const": "Email"},
                    "address": {"type": "string"}
                }, "required": ["address", "kind"], "additionalProperties": false},
                {"type": "object", "properties": {
                    "kind": {"type": "string", "const": "Phone"},
                    "number": {"type": "string"}
                }, "required": ["kind", "number"], "additionalProperties": false}
            ]}
        }
    })
}

/// The property the emulator's `Fault::OffSchema` leaves out: the first
/// in the schema's `required` list.
fn first_required<T: JsonSchema>() -> String {
    OutputSchema::of::<T>().schema()["required"][0]
        .as_str()
        .unwrap()
        .to_owned()
}

/// `required` lists compared as sets (their order follows the map's keys).
fn normalized(mut schema: Value) -> Value {
    fn walk(value: &mut Value) {
        match value {
            Value::Object(map) => {
                if let Some(Value::Array(required)) = map.get_mut("required") {
                    required.sort_by_key(|v| v.to_string());
                }
                map.values_mut().for_each(walk);
            }
            Value::Array(items) => items.iter_mut().for_each(walk),
            _ => {}
        }
    }
    walk(&mut schema);
    schema
}

#[test]
fn nested_types_enums_and_options_become_a_strict_schema() {
    let schema = OutputSchema::of::<Person>();
    assert_eq!(schema.name(), "Person");
    assert!(schema.is_strict());
    assert_eq!(
        normalized(schema.schema().clone()),
        normalized(person_schema())
    );
    assert_eq!(
        serde_json::to_value(schema.response_format()).unwrap(),
        json!({"type": "json_schema", "json_schema": {
            "name": "Person", "schema": schema.schema(), "strict": true
        }})
    );
    let tool = schema.tool();
    assert_eq!(tool.function.name, "Person");
    assert_eq!(tool.function.description.as_deref(), Some("A person."));
    assert_eq!(tool.function.parameters.as_ref(), Some(schema.schema()));
}

#[test]
fn roots_that_are_not_objects_are_wrapped_and_maps_are_not_strict() {
    let role = OutputSchema::of::<Role>();
    assert_eq!(
        role.schema(),
        &json!({
            "type": "object",
            "properties": {"value": {"title": "Role", "type": "string", "enum": ["admin", "user"]}},
            "required": ["value"],
            "additionalProperties": false
        })
    );
    assert_eq!(role.parse(r#"{"value": "user"}"#), Ok(json!("user")));
    assert!(role.parse(r#""user""#).is_err(), "the wrapper is required");

    let list = OutputSchema::of::<Vec<Address>>();
    assert_eq!(list.name(), "Array_of_Address");
    assert_eq!(
        list.schema()["properties"]["value"]["items"],
        json!({"$ref": "#/$defs/Address"})
    );
    assert!(
        list.schema()["$defs"]["Address"].is_object(),
        "definitions move to the wrapper"
    );
    assert_eq!(
        list.parse(r#"{"value": [{"street": "s", "zip": 1}]}"#),
        Ok(json!([{"street": "s", "zip": 1}]))
    );

    // Arbitrary keys cannot be strict: kept as they are, sent with strict false.
    let map = OutputSchema::of::<HashMap<String, u32>>();
    assert!(!map.is_strict());
    assert_eq!(
        map.schema()["additionalProperties"],
        json!({"type": "integer", "minimum": 0})
    );
    assert_eq!(
        serde_json::to_value(map.response_format()).unwrap()["json_schema"]["strict"],
        false
    );
}

#[test]
fn documents_are_adjusted_like_types() {
    let schema = OutputSchema::from_value(
        "météo du jour",
        json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "type": "object",
            "properties": {
                "city": {"type": "string", "minLength": 1, "default": "Paris"},
                "when": {"type": "string", "format": "date"},
                "count": {"type": "integer", "format": "uint32", "minimum": 0},
                "unit": {"oneOf": [{"const": "C"}, {"const": "F"}]},
                "home": {"$ref": "#/$defs/Place", "description": "Where it is measured."},
                "next": {"$ref": "#/$defs/Place"}
            },
            "required": ["city", "home"],
            "$defs": {"Place": {"type": "object", "properties": {
                "name": {"type": "string"},
                "parent": {"$ref": "#/$defs/Place", "description": "The enclosing place."}
            }}}
        }),
    )
    .unwrap();
    assert_eq!(schema.name(), "m_t_o_du_jour");
    let place = json!({"type": "object", "properties": {
        "name": {"type": ["string", "null"]},
        // A recursive reference stays a reference (its doc comment goes).
        "parent": {"anyOf": [{"$ref": "#/$defs/Place"}, {"type": "null"}]}
    }, "required": ["name", "parent"], "additionalProperties": false});
    let mut home = place.clone();
    home["description"] = json!("Where it is measured.");
    assert_eq!(
        normalized(schema.schema().clone()),
        normalized(json!({
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "when": {"type": ["string", "null"], "format": "date"},
                "count": {"type": ["integer", "null"], "minimum": 0},
                "unit": {"anyOf": [{"const": "C"}, {"const": "F"}, {"type": "null"}]},
                // A reference with siblings is inlined with them.
                "home": home,
                "next": {"anyOf": [{"$ref": "#/$defs/Place"}, {"type": "null"}]}
            },
            "required": ["city", "when", "count", "unit", "home", "next"],
            "additionalProperties": false,
            "$defs": {"Place": place}
        }))
    );
    // Nulls of the properties the document left optional are dropped, at
    // every depth and through references.
    assert_eq!(
        schema.parse(
            r#"```json
            {"city": "Oslo", "when": null, "count": 3, "unit": null,
             "home": {"name": null, "parent": {"name": "Norway", "parent": null}}, "next": null}
            ```"#
        ),
        Ok(json!({"city": "Oslo", "count": 3, "home": {"parent": {"name": "Norway"}}}))
    );
    let wrong = schema
        .parse(r#"{"city": "Oslo", "when": null, "count": 3, "unit": "K", "home": {"name": null, "parent": null}, "next": null}"#)
        .unwrap_err();
    assert!(
        wrong.contains("string \"K\" matches none of the allowed alternatives at `/unit`"),
        "{wrong}"
    );
    assert!(OutputSchema::from_value("x", json!([1])).is_err());
}

#[tokio::test]
async fn a_nested_struct_is_extracted_in_one_request() {
    let emu = emulator().await;
    let llm = llm(&emu);
    let person: Person = llm
        .extract(
            &[
                ChatMessage::system("Extract the person."),
                ChatMessage::user(ADA),
            ],
            &ChatOptions::new().temperature(0.0),
        )
        .await
        .unwrap();
    assert_eq!(person, ada());

    let bodies = chat_bodies(&emu);
    assert_eq!(bodies.len(), 1);
    let body = &bodies[0];
    assert_eq!(body["response_format"]["type"], "json_schema");
    assert_eq!(body["response_format"]["json_schema"]["name"], "Person");
    assert_eq!(body["response_format"]["json_schema"]["strict"], true);
    assert_eq!(
        normalized(body["response_format"]["json_schema"]["schema"].clone()),
        normalized(person_schema())
    );
    assert_eq!(body["temperature"], 0.0);
    assert!(body.get("tools").is_none() && body.get("tool_choice").is_none());
    // The conversation goes as it is: nothing added.
    assert_eq!(body["messages"].as_array().unwrap().len(), 2);

    // The prompt shortcut.
    let address: Address = llm
        .extract_prompt("street: Baker Street, zip: 221")
        .await
        .unwrap();
    assert_eq!(
        address,
        Address {
            street: "Baker Street".into(),
            zip: 221
        }
    );
    emu.shutdown().await;
}

#[tokio::test]
async fn an_answer_off_the_schema_is_repaired_in_one_round() {
    let emu = emulator().await;
    let llm = llm(&emu);
    emu.inject(Target::Chat, Fault::OffSchema, 1);
    let person: Person = llm
        .extract(&[ChatMessage::user(ADA)], &ChatOptions::default())
        .await
        .unwrap();
    assert_eq!(person, ada());

    let bodies = chat_bodies(&emu);
    assert_eq!(bodies.len(), 2, "one answer, one repair");
    let repair = bodies[1]["messages"].as_array().unwrap();
    assert_eq!(repair.len(), 3);
    assert_eq!(repair[0], json!({"role": "user", "content": ADA}));
    // The model's own answer, as it was: without its first required property.
    assert_eq!(repair[1]["role"], "assistant");
    let first: Value = serde_json::from_str(repair[1]["content"].as_str().unwrap()).unwrap();
    assert!(first.get(first_required::<Person>()).is_none(), "{first}");
    assert_eq!(first.as_object().unwrap().len(), 6, "{first}");
    // The error, and the schema asked for.
    assert_eq!(repair[2]["role"], "user");
    let text = repair[2]["content"].as_str().unwrap();
    let dropped = first_required::<Person>();
    assert!(
        text.contains(&format!(
            "missing required property `{dropped}` at the top level"
        )),
        "{text}"
    );
    assert!(
        text.contains(&OutputSchema::of::<Person>().schema().to_string()),
        "{text}"
    );
    assert_eq!(bodies[1]["response_format"], bodies[0]["response_format"]);
    emu.shutdown().await;
}

#[tokio::test]
async fn an_answer_that_stays_off_the_schema_is_a_typed_error() {
    let emu = emulator().await;
    let llm = llm(&emu);
    emu.inject(Target::Chat, Fault::OffSchema, usize::MAX);
    let error = llm
        .extract::<Person>(&[ChatMessage::user(ADA)], &ChatOptions::default())
        .await
        .unwrap_err();
    let Error::Extraction {
        schema,
        reason,
        raw,
        attempts,
        ..
    } = &error
    else {
        panic!("{error:?}");
    };
    assert_eq!(schema, "Person");
    assert_eq!(*attempts, 2);
    let dropped = first_required::<Person>();
    assert!(
        reason.contains(&format!(
            "the JSON does not match the schema: missing required property `{dropped}`"
        )),
        "{reason}"
    );
    let raw: Value = serde_json::from_str(raw).unwrap();
    assert_eq!(raw["home"]["zip"], 1815);
    assert!(error
        .to_string()
        .contains("does not fit the schema `Person` after 2 attempt(s)"));
    assert!(!error.is_retryable());
    assert_eq!(chat_bodies(&emu).len(), 2, "one repair round, no more");

    // JSON that matches the schema but not the type is refused too, with
    // serde's reason (here the schema says string where the type wants u32).
    emu.clear_faults();
    emu.clear_requests();
    #[derive(Debug, Deserialize, JsonSchema)]
    struct Mismatched {
        #[allow(dead_code)]
        #[schemars(with = "String")]
        n: u32,
    }
    let error = llm
        .extract::<Mismatched>(&[ChatMessage::user("n: 11")], ChatOptions::default())
        .await
        .unwrap_err();
    assert!(
        error.to_string().contains(
            "the JSON does not fit `Mismatched`: invalid type: string \"11\", expected u32"
        ),
        "{error}"
    );
    assert_eq!(chat_bodies(&emu).len(), 2);
    emu.shutdown().await;
}

#[tokio::test]
async fn an_answer_cut_at_max_tokens_says_so() {
    let emu = emulator().await;
    let llm = llm(&emu);
    let error = llm
        .extract::<Address>(
            &[ChatMessage::user("street: a long street name, zip: 1")],
            ChatOptions::new().max_tokens(2),
        )
        .await
        .unwrap_err();
    let Error::Extraction { reason, raw, .. } = &error else {
        panic!("{error:?}");
    };
    assert!(
        reason.starts_with("the answer is not valid JSON"),
        "{reason}"
    );
    assert!(reason.contains("finish_reason \"length\""), "{reason}");
    assert!(raw.starts_with('{'), "{raw}");
    emu.shutdown().await;
}

/// The bodies' shapes: `"json_schema"` or `"tool"` per chat request.
fn forms(emu: &EmulatorHandle) -> Vec<&'static str> {
    forms_of(&chat_bodies(emu))
}

/// [`forms`] of request bodies.
fn forms_of(bodies: &[Value]) -> Vec<&'static str> {
    bodies
        .iter()
        .map(
            |body| match (body.get("response_format"), body.get("tools")) {
                (Some(_), None) => "json_schema",
                (None, Some(_)) => "tool",
                other => panic!("unexpected body shape {other:?}: {body}"),
            },
        )
        .collect()
}

#[tokio::test]
async fn a_refused_json_schema_becomes_a_forced_tool_call_remembered_by_clones() {
    let emu = Emulator::builder()
        .refuse_json_schema(true)
        .start()
        .await
        .unwrap();
    let llm = llm(&emu);
    let person: Person = llm
        .extract(&[ChatMessage::user(ADA)], &ChatOptions::default())
        .await
        .unwrap();
    assert_eq!(person, ada());
    assert_eq!(forms(&emu), ["json_schema", "tool"]);
    let schema = OutputSchema::of::<Person>();
    let tool_body = &chat_bodies(&emu)[1];
    assert_eq!(
        tool_body["tools"],
        serde_json::to_value(vec![Tool::function(
            "Person",
            "A person.",
            schema.schema().clone()
        )])
        .unwrap()
    );
    assert_eq!(
        tool_body["tool_choice"],
        json!({"type": "function", "function": {"name": "Person"}})
    );

    // Remembered: the next call, and a clone's, go straight to the tool form.
    emu.clear_requests();
    let again: Address = llm.extract_prompt("street: Elm, zip: 7").await.unwrap();
    assert_eq!(again.zip, 7);
    let clone = llm.clone();
    let _: Address = clone.extract_prompt("street: Oak, zip: 8").await.unwrap();
    assert_eq!(forms(&emu), ["tool", "tool"]);

    // Per model, and per client: another model, or a new client, asks first.
    emu.clear_requests();
    let _: Address = llm
        .extract(
            &[ChatMessage::user("street: Elm, zip: 7")],
            ChatOptions::new().model("other/model"),
        )
        .await
        .unwrap();
    let _: Address = common::llm(&emu)
        .extract_prompt("street: Elm, zip: 7")
        .await
        .unwrap();
    assert_eq!(forms(&emu), ["json_schema", "tool", "json_schema", "tool"]);
    emu.shutdown().await;
}

#[tokio::test]
async fn one_refusal_is_enough_and_the_repair_round_works_in_the_tool_form() {
    let emu = emulator().await;
    let llm = llm(&emu);
    emu.inject(Target::Chat, Fault::RefuseJsonSchema, 1);
    let _: Address = llm.extract_prompt("street: Elm, zip: 7").await.unwrap();
    assert_eq!(forms(&emu), ["json_schema", "tool"]);

    // The server would accept json_schema now; the client remembers it did not.
    emu.clear_requests();
    emu.inject(Target::Chat, Fault::OffSchema, 1);
    let extracted = llm
        .extract_with_schema(
            &[ChatMessage::user("street: Elm, zip: 7")],
            &ChatOptions::default(),
            &OutputSchema::of::<Address>(),
        )
        .await
        .unwrap();
    assert_eq!(extracted.value, json!({"street": "Elm", "zip": 7}));
    assert_eq!(extracted.mode, ExtractionMode::ToolCall);
    assert_eq!(extracted.attempts, 2);
    let usage = extracted.usage.unwrap();
    assert!(
        usage.total_tokens > extracted.response.usage.unwrap().total_tokens,
        "summed"
    );
    assert_eq!(forms(&emu), ["tool", "tool"]);

    let repair = chat_bodies(&emu)[1]["messages"].as_array().unwrap().clone();
    assert_eq!(repair.len(), 4);
    let call = &repair[1]["tool_calls"][0];
    assert_eq!(call["function"]["name"], "Address");
    let first: Value =
        serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(
        first,
        json!({"zip": 7}),
        "the off-schema arguments, as they were"
    );
    assert_eq!(repair[2]["role"], "tool");
    assert_eq!(repair[2]["tool_call_id"], call["id"]);
    assert!(repair[2]["content"]
        .as_str()
        .unwrap()
        .contains("missing required property `street`"));
    assert_eq!(repair[3]["role"], "user");
    assert!(repair[3]["content"]
        .as_str()
        .unwrap()
        .contains("Call the function `Address` again"));
    emu.shutdown().await;
}

#[tokio::test]
async fn streaming_clients_extract_in_both_forms() {
    let emu = emulator().await;
    let llm = client(&emu).streaming(true).build().unwrap();
    let address: Address = llm.extract_prompt("street: Elm, zip: 7").await.unwrap();
    assert_eq!(address.street, "Elm");
    emu.inject(Target::Chat, Fault::RefuseJsonSchema, 1);
    let person: Person = llm.extract_prompt(ADA).await.unwrap();
    assert_eq!(person, ada());
    assert_eq!(forms(&emu), ["json_schema", "json_schema", "tool"]);
    assert!(chat_bodies(&emu).iter().all(|b| b["stream"] == true));
    emu.shutdown().await;
}

#[tokio::test]
async fn a_reasoning_models_thinking_is_never_parsed() {
    for field in ["reasoning_content", "reasoning"] {
        let emu = Emulator::builder()
            .reasoning_field(field)
            .start()
            .await
            .unwrap();
        let llm = client(&emu).model(REASONING_MODEL).build().unwrap();
        let extracted = llm
            .extract_with_schema(
                &[ChatMessage::user("street: Elm, zip: 7")],
                &ChatOptions::default(),
                &OutputSchema::of::<Address>(),
            )
            .await
            .unwrap();
        assert_eq!(extracted.value, json!({"street": "Elm", "zip": 7}));
        assert_eq!(extracted.attempts, 1);
        assert_eq!(
            extracted.response.reasoning(),
            Some("Thinking about 4 words.")
        );
        // Streamed, the thinking comes first, as deltas of its own.
        let streaming = client(&emu)
            .model(REASONING_MODEL)
            .streaming(true)
            .build()
            .unwrap();
        let address: Address = streaming
            .extract_prompt("street: Elm, zip: 7")
            .await
            .unwrap();
        assert_eq!(address.zip, 7);
        assert_eq!(chat_bodies(&emu).len(), 2);
        emu.shutdown().await;
    }
}

#[tokio::test]
async fn the_callers_own_format_and_tools_are_refused_the_clients_are_not_sent() {
    let emu = emulator().await;
    let llm = llm(&emu);
    let weather = Tool::function("get_weather", "Weather", json!({"type": "object"}));
    let cases = [
        (
            ChatOptions::new().response_format(ResponseFormat::JsonObject),
            "response_format",
        ),
        (ChatOptions::new().tools(vec![weather.clone()]), "tools"),
        (
            ChatOptions::new().tool_choice(ToolChoice::Auto),
            "tool_choice",
        ),
    ];
    for (options, field) in cases {
        let error = llm
            .extract::<Address>(&[ChatMessage::user("x")], options)
            .await
            .unwrap_err();
        assert!(
            matches!(&error, Error::InvalidRequest { field: f, .. } if f == field),
            "{error:?}"
        );
        assert!(error.to_string().contains("leave it unset"), "{error}");
    }
    assert!(chat_bodies(&emu).is_empty(), "nothing was sent");

    // A client whose defaults carry tools (an agent's) still extracts: its
    // tools, tool choice and response format are not sent along.
    let agent = client(&emu)
        .tools(vec![weather])
        .tool_choice(ToolChoice::Auto)
        .response_format(ResponseFormat::JsonObject)
        .build()
        .unwrap();
    let address: Address = agent
        .extract_prompt("get_weather street: Elm, zip: 7")
        .await
        .unwrap();
    assert_eq!(address.zip, 7);
    let body = common::last_body(&emu);
    assert_eq!(body["response_format"]["json_schema"]["name"], "Address");
    assert!(body.get("tools").is_none() && body.get("tool_choice").is_none());
    emu.shutdown().await;
}

#[tokio::test]
async fn server_errors_other_than_a_refusal_pass_through() {
    let emu = emulator().await;
    let llm = client(&emu).max_retries(0).build().unwrap();
    emu.inject(Target::Chat, Fault::Status(400), 1);
    let error = llm
        .extract_prompt::<Address>("street: Elm, zip: 7")
        .await
        .unwrap_err();
    assert!(matches!(error, Error::Api { status: 400, .. }), "{error:?}");
    assert_eq!(forms(&emu), ["json_schema"], "no fallback for another 400");
    let _: Address = llm.extract_prompt("street: Elm, zip: 7").await.unwrap();
    assert_eq!(
        forms(&emu),
        ["json_schema", "json_schema"],
        "and nothing remembered"
    );
    emu.shutdown().await;
}

#[test]
fn the_blocking_twin_extracts_the_same() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let emu = runtime.block_on(emulator());
    let llm = client(&emu).build_blocking().unwrap();
    let person: Person = llm
        .extract([ChatMessage::user(ADA)], ChatOptions::default())
        .unwrap();
    assert_eq!(person, ada());
    let address: Address = llm.extract_prompt("street: Elm, zip: 7").unwrap();
    assert_eq!(address.zip, 7);
    let extracted = llm
        .extract_with_schema(
            [ChatMessage::user("street: Elm, zip: 7")],
            ChatOptions::default(),
            &OutputSchema::of::<Address>(),
        )
        .unwrap();
    assert_eq!(extracted.value, json!({"street": "Elm", "zip": 7}));
    emu.inject(Target::Chat, Fault::OffSchema, usize::MAX);
    let error = llm
        .extract_prompt::<Address>("street: Elm, zip: 7")
        .unwrap_err();
    assert!(
        matches!(error, Error::Extraction { attempts: 2, .. }),
        "{error:?}"
    );
    runtime.block_on(emu.shutdown());
}

/// Serves `script` (then `500`s) from a scripted OpenAI-compatible server,
/// for what the emulator's model does not do (leave a forced call unmade)
/// and for other servers' error texts.
async fn scripted(script: Vec<(u16, Value)>) -> Scripted {
    let replies = script
        .iter()
        .map(|(status, body)| Reply::json(*status, body))
        .collect();
    let done = json!({"error": {"message": "the script is done"}});
    Scripted::serve(replies, Reply::json(500, &done)).await
}

/// A client of `server`: an API key, no retries.
fn scripted_llm(server: &Scripted) -> EvolutionInference {
    EvolutionInference::builder()
        .api_key("scripted")
        .model("scripted/model")
        .base_url(&server.base_url)
        .max_retries(0)
        .build()
        .unwrap()
}

/// A `200` whose one choice says `content` (`None`: `null`).
fn said(content: Option<&str>) -> (u16, Value) {
    (
        200,
        json!({
            "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "scripted/model",
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": content}}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}
        }),
    )
}

/// A `200` whose one choice calls `name` with `arguments`.
fn called(name: &str, arguments: &str) -> (u16, Value) {
    (
        200,
        json!({
            "id": "chatcmpl-2", "object": "chat.completion", "created": 1, "model": "scripted/model",
            "choices": [{"index": 0, "finish_reason": "tool_calls",
                         "message": {"role": "assistant", "content": null, "tool_calls": [{
                             "id": "call_1", "type": "function",
                             "function": {"name": name, "arguments": arguments}
                         }]}}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}
        }),
    )
}

/// An OpenAI-style error: `status`, `message`, `param` `response_format`.
fn failed(status: u16, message: &str) -> (u16, Value) {
    (
        status,
        json!({"error": {"message": message, "type": "invalid_request_error",
                         "param": "response_format", "code": null}}),
    )
}

/// OpenAI's refusal of `json_schema` for a model without structured output.
const OPENAI_REFUSAL: &str =
    "Invalid parameter: 'response_format' of type 'json_schema' is not supported with this model.";

#[tokio::test]
async fn a_forced_call_the_model_did_not_make_is_asked_for_again() {
    let server = scripted(vec![
        failed(400, OPENAI_REFUSAL),
        // The model answers in prose instead of calling the function.
        said(Some("It is on Elm street, number 7.")),
        called("Address", r#"{"street": "Elm", "zip": 7}"#),
        // Remembered: straight to the tool form; the model says nothing at all.
        said(None),
        called("Address", r#"{"street": "Oak", "zip": 8}"#),
        // It never calls the function: the typed error.
        said(Some("No.")),
        said(Some("Still no.")),
    ])
    .await;
    let llm = scripted_llm(&server);
    let address = OutputSchema::of::<Address>();
    let schema_text = address.schema().to_string();
    let extracted = llm
        .extract_with_schema(
            &[ChatMessage::user("street: Elm, zip: 7")],
            &ChatOptions::default(),
            &address,
        )
        .await
        .unwrap();
    assert_eq!(extracted.value, json!({"street": "Elm", "zip": 7}));
    assert_eq!(extracted.mode, ExtractionMode::ToolCall);
    assert_eq!(extracted.attempts, 2);
    let bodies = server.bodies();
    assert_eq!(forms_of(&bodies), ["json_schema", "tool", "tool"]);
    // The repair round still forces the call, and asks for it, not for a
    // bare JSON document.
    assert_eq!(
        bodies[2]["tool_choice"],
        json!({"type": "function", "function": {"name": "Address"}})
    );
    let repair = bodies[2]["messages"].as_array().unwrap();
    assert_eq!(repair.len(), 3, "{repair:?}");
    assert_eq!(
        repair[0],
        json!({"role": "user", "content": "street: Elm, zip: 7"})
    );
    assert_eq!(
        repair[1],
        json!({"role": "assistant", "content": "It is on Elm street, number 7."})
    );
    assert_eq!(repair[2]["role"], "user");
    let text = repair[2]["content"].as_str().unwrap();
    assert!(
        text.contains("the model did not call the function `Address` it was asked to call"),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "Call the function `Address` now, with arguments that are one JSON object matching \
             its JSON schema: {schema_text}"
        )),
        "{text}"
    );
    assert!(
        !text.contains("Answer again with only a JSON document"),
        "{text}"
    );

    // A reply with no text is not sent back as an empty assistant message.
    let oak: Address = llm.extract_prompt("street: Oak, zip: 8").await.unwrap();
    assert_eq!(oak.zip, 8);
    let bodies = server.bodies();
    assert_eq!(forms_of(&bodies[3..]), ["tool", "tool"]);
    let repair = bodies[4]["messages"].as_array().unwrap();
    assert_eq!(repair.len(), 2, "{repair:?}");
    assert!(
        repair.iter().all(|m| m["role"] == "user"),
        "no assistant message: {repair:?}"
    );
    assert!(repair[1]["content"]
        .as_str()
        .unwrap()
        .contains("Call the function `Address` now"));

    // Twice no call: the typed error, with the last reply's text.
    let error = llm
        .extract_prompt::<Address>("street: Elm, zip: 7")
        .await
        .unwrap_err();
    let Error::Extraction {
        reason,
        raw,
        attempts,
        ..
    } = &error
    else {
        panic!("{error:?}");
    };
    assert_eq!(*attempts, 2);
    assert_eq!(raw, "Still no.");
    assert!(
        reason.contains("did not call the function `Address`"),
        "{reason}"
    );
    assert_eq!(server.bodies().len(), 7);
}

#[tokio::test]
async fn what_real_servers_say_when_they_refuse_json_schema_is_a_refusal() {
    let refusals = [
        failed(400, OPENAI_REFUSAL),
        // llama.cpp before structured output
        failed(
            400,
            "response_format type must be one of \"text\" or \"json_object\", but got: json_schema",
        ),
        // text-generation-inference: its JSON body extractor's 422
        failed(
            422,
            "Failed to deserialize the JSON body into the target type: response_format: unknown \
             variant `json_schema`, expected one of `json`, `regex`, `json_object` at line 1 column 98",
        ),
        // vLLM before structured output: the request validation error
        failed(
            400,
            "1 validation error: {'type': 'literal_error', 'loc': ('body', 'response_format', \
             'type'), 'msg': \"Input should be 'text' or 'json_object'\", 'input': 'json_schema'}",
        ),
    ];
    for refusal in refusals {
        let message = refusal.1["error"]["message"].clone();
        let server = scripted(vec![
            refusal,
            called("Address", r#"{"street": "Elm", "zip": 7}"#),
        ])
        .await;
        let extracted = scripted_llm(&server)
            .extract_with_schema(
                &[ChatMessage::user("street: Elm, zip: 7")],
                &ChatOptions::default(),
                &OutputSchema::of::<Address>(),
            )
            .await
            .unwrap_or_else(|e| panic!("{message}: {e}"));
        assert_eq!(extracted.value, json!({"street": "Elm", "zip": 7}));
        assert_eq!(extracted.mode, ExtractionMode::ToolCall, "{message}");
        assert_eq!(
            forms_of(&server.bodies()),
            ["json_schema", "tool"],
            "{message}"
        );
    }
}

#[tokio::test]
async fn a_complaint_about_the_schema_is_an_error_not_a_refusal() {
    let complaints = [
        // OpenAI's strict-mode check (the emulator says the same)
        "Invalid schema for response_format 'Address': In context=(), 'patternProperties' is not \
         permitted.",
        "response_format.json_schema.schema uses an unsupported keyword 'patternProperties'",
        // vLLM's grammar backend
        "The provided JSON schema contains features not supported by xgrammar.",
    ];
    let mut script: Vec<_> = complaints.iter().map(|m| failed(400, m)).collect();
    script.push(said(Some(r#"{"street": "Elm", "zip": 7}"#)));
    let server = scripted(script).await;
    let llm = scripted_llm(&server);
    for complaint in complaints {
        let error = llm
            .extract_prompt::<Address>("street: Elm, zip: 7")
            .await
            .unwrap_err();
        assert!(
            matches!(&error, Error::Api { status: 400, message, .. } if message == complaint),
            "{error:?}"
        );
    }
    // No fallback to the tool form, and nothing remembered: the next call
    // (another schema, or this one mended) goes as json_schema again.
    let address: Address = llm.extract_prompt("street: Elm, zip: 7").await.unwrap();
    assert_eq!(address.zip, 7);
    assert_eq!(
        forms_of(&server.bodies()),
        ["json_schema", "json_schema", "json_schema", "json_schema"]
    );
}
