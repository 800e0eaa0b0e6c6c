//! The scripted responder: turns a chat completion request into a deterministic answer
//! (echo, tool call or tool result, a JSON document fitting a `json_schema` response
//! format, preceded by thinking for the reasoning model) with OpenAI's knobs
//! (`max_tokens`, `stop`, `n`) applied. Pure logic, no I/O, so that every rule is easy to reason about.

use serde_json::{json, Map, Value};

use crate::structured::{self, Filler};
use crate::util::word_count;

const ROLES: &[&str] = &[
    "system",
    "developer",
    "user",
    "assistant",
    "tool",
    "function",
];

/// A validated chat completion request, reduced to what the responder needs.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ChatRequest {
    pub model: String,
    pub stream: bool,
    pub include_usage: bool,
    pub n: usize,
    pub max_tokens: Option<usize>,
    pub stop: Vec<String>,
    /// Function names and parameter schemas of the offered tools, unless `tool_choice`
    /// is `"none"`.
    pub tools: Vec<(String, Value)>,
    /// The function `tool_choice` forces (`{"type":"function","function":{"name"}}`), or
    /// the first offered tool for `"required"` when the prompt names none.
    pub forced_tool: Option<String>,
    /// `response_format` `{"type":"json_schema","json_schema":{...}}`.
    pub json_schema: Option<JsonSchemaFormat>,
    /// Answer JSON that does not fit the schema ([`crate::Fault::OffSchema`]).
    pub off_schema: bool,
    pub messages: Vec<Message>,
}

/// The `json_schema` of a `response_format`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct JsonSchemaFormat {
    pub name: String,
    /// `{}` when the request sent none.
    pub schema: Value,
    pub strict: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Message {
    pub role: String,
    /// The text content (text parts of an array joined with spaces).
    pub text: String,
}

/// What one choice says.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Reply {
    Text(String),
    ToolCall {
        id: String,
        name: String,
        arguments: String,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Choice {
    /// What the reasoning model thought first (`None` for other models).
    pub thinking: Option<String>,
    pub reply: Reply,
    pub finish_reason: &'static str,
    /// Thinking and answer words together.
    pub completion_tokens: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Answer {
    pub choices: Vec<Choice>,
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    /// `Some(thinking words over all choices)` for the reasoning model.
    pub reasoning_tokens: Option<usize>,
}

impl Answer {
    pub fn usage(&self) -> Value {
        let mut usage = json!({
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
        });
        if let Some(reasoning_tokens) = self.reasoning_tokens {
            usage["completion_tokens_details"] = json!({"reasoning_tokens": reasoning_tokens});
            usage["prompt_tokens_details"] = json!({"cached_tokens": 0});
        }
        usage
    }
}

/// What the reasoning model ([`crate::REASONING_MODEL`]) thinks before answering:
/// `Thinking about N words.`, N being the word count of the last user message.
pub(crate) fn thinking(words_in_prompt: usize) -> String {
    format!("Thinking about {words_in_prompt} words.")
}

fn optional<'a>(body: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    body.get(key).filter(|v| !v.is_null())
}

fn check_range(body: &Map<String, Value>, key: &str, min: f64, max: f64) -> Result<(), String> {
    match optional(body, key) {
        None => Ok(()),
        Some(v) => match v.as_f64() {
            Some(x) if (min..=max).contains(&x) => Ok(()),
            Some(x) => Err(format!("'{key}' must be between {min} and {max}, got {x}")),
            None => Err(format!("'{key}' must be a number")),
        },
    }
}

fn positive_int(body: &Map<String, Value>, key: &str) -> Result<Option<usize>, String> {
    match optional(body, key) {
        None => Ok(None),
        Some(v) => match v.as_u64() {
            Some(n) if n >= 1 => Ok(Some(usize::try_from(n).unwrap_or(usize::MAX))),
            _ => Err(format!("'{key}' must be a positive integer, got {v}")),
        },
    }
}

fn content_text(content: Option<&Value>, index: usize) -> Result<String, String> {
    match content {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Array(parts)) => {
            let mut texts = Vec::new();
            for (j, part) in parts.iter().enumerate() {
                match part {
                    Value::String(s) => texts.push(s.as_str()),
                    Value::Object(obj) => {
                        let kind = obj.get("type").and_then(Value::as_str).unwrap_or("text");
                        if kind == "text" {
                            match obj.get("text") {
                                Some(Value::String(s)) => texts.push(s),
                                _ => {
                                    return Err(format!(
                                        "'messages[{index}].content[{j}].text' must be a string"
                                    ))
                                }
                            }
                        }
                    }
                    _ => {
                        return Err(format!(
                            "'messages[{index}].content[{j}]' must be a content part object"
                        ))
                    }
                }
            }
            Ok(texts.join(" "))
        }
        Some(_) => Err(format!(
            "'messages[{index}].content' must be a string, an array of content parts or null"
        )),
    }
}

fn parse_tools(body: &Map<String, Value>) -> Result<Vec<(String, Value)>, String> {
    let Some(tools) = optional(body, "tools") else {
        return Ok(Vec::new());
    };
    let tools = tools.as_array().ok_or("'tools' must be an array")?;
    let mut out = Vec::with_capacity(tools.len());
    for (i, tool) in tools.iter().enumerate() {
        let function = tool
            .get("function")
            .and_then(Value::as_object)
            .ok_or_else(|| format!("'tools[{i}].function' must be an object"))?;
        let name = function
            .get("name")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
            .ok_or_else(|| format!("'tools[{i}].function.name' must be a non-empty string"))?;
        let parameters = function.get("parameters").cloned().unwrap_or(Value::Null);
        out.push((name.to_owned(), parameters));
    }
    if optional(body, "tool_choice").and_then(Value::as_str) == Some("none") {
        out.clear();
    }
    Ok(out)
}

/// What `tool_choice` forces: `Some(None)` for `"required"`, `Some(Some(name))` for a
/// named function (which must be among `tools`), `None` when nothing is forced.
fn parse_tool_choice(
    body: &Map<String, Value>,
    tools: &[(String, Value)],
) -> Result<Option<Option<String>>, String> {
    let Some(choice) = optional(body, "tool_choice") else {
        return Ok(None);
    };
    match choice {
        Value::String(mode) => match mode.as_str() {
            "none" | "auto" => Ok(None),
            "required" => Ok(Some(None)),
            other => Err(format!(
                "'tool_choice' must be \"none\", \"auto\", \"required\" or a function, got {other:?}"
            )),
        },
        Value::Object(object) => {
            let name = object
                .get("function")
                .and_then(|f| f.get("name"))
                .and_then(Value::as_str)
                .ok_or("'tool_choice.function.name' must be a string")?;
            if !tools.iter().any(|(tool, _)| tool == name) {
                return Err(format!(
                    "'tool_choice' names function {name:?}, which is not among 'tools'"
                ));
            }
            Ok(Some(Some(name.to_owned())))
        }
        _ => Err("'tool_choice' must be a string or an object".into()),
    }
}

/// `response_format`: `text`, `json_object` or `json_schema` (whose `name` must match
/// `[a-zA-Z0-9_-]{1,64}` and whose `schema`, when sent, must be an object).
fn parse_response_format(body: &Map<String, Value>) -> Result<Option<JsonSchemaFormat>, String> {
    let Some(format) = optional(body, "response_format") else {
        return Ok(None);
    };
    let kind = format
        .get("type")
        .and_then(Value::as_str)
        .ok_or("'response_format.type' must be a string")?;
    match kind {
        "text" | "json_object" => Ok(None),
        "json_schema" => {
            let spec = format
                .get("json_schema")
                .and_then(Value::as_object)
                .ok_or("'response_format.json_schema' must be an object")?;
            let name = spec.get("name").and_then(Value::as_str).unwrap_or_default();
            if !structured::valid_name(name) {
                return Err(format!(
                    "'response_format.json_schema.name' must match ^[a-zA-Z0-9_-]{{1,64}}$, got {name:?}"
                ));
            }
            let schema = match spec.get("schema") {
                None | Some(Value::Null) => json!({}),
                Some(schema @ Value::Object(_)) => schema.clone(),
                Some(_) => {
                    return Err("'response_format.json_schema.schema' must be an object".into())
                }
            };
            let strict = match spec.get("strict") {
                None | Some(Value::Null) => false,
                Some(Value::Bool(b)) => *b,
                Some(_) => {
                    return Err("'response_format.json_schema.strict' must be a boolean".into())
                }
            };
            Ok(Some(JsonSchemaFormat {
                name: name.to_owned(),
                schema,
                strict,
            }))
        }
        other => Err(format!(
            "'response_format.type' must be one of text, json_object, json_schema, got {other:?}"
        )),
    }
}

/// Validates the request body; the error names the offending field.
pub(crate) fn parse_request(
    body: &Map<String, Value>,
    default_model: &str,
) -> Result<ChatRequest, String> {
    let model = match optional(body, "model") {
        None => default_model.to_owned(),
        Some(Value::String(m)) => m.clone(),
        Some(_) => return Err("'model' must be a string".into()),
    };
    let raw_messages = match body.get("messages") {
        Some(Value::Array(m)) => m,
        None => return Err("missing required field 'messages'".into()),
        Some(_) => return Err("Expected 'messages' to be an array".into()),
    };
    if raw_messages.is_empty() {
        return Err("'messages' must not be empty".into());
    }
    let mut messages = Vec::with_capacity(raw_messages.len());
    for (i, m) in raw_messages.iter().enumerate() {
        let obj = m
            .as_object()
            .ok_or_else(|| format!("'messages[{i}]' must be an object"))?;
        let role = obj
            .get("role")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("'messages[{i}].role' must be a string"))?;
        if !ROLES.contains(&role) {
            return Err(format!(
                "'messages[{i}].role' must be one of {}, got {role:?}",
                ROLES.join(", ")
            ));
        }
        messages.push(Message {
            role: role.to_owned(),
            text: content_text(obj.get("content"), i)?,
        });
    }

    let stream = match optional(body, "stream") {
        None => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err("'stream' must be a boolean".into()),
    };
    let include_usage = match optional(body, "stream_options") {
        None => false,
        Some(Value::Object(o)) => match o.get("include_usage") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => return Err("'stream_options.include_usage' must be a boolean".into()),
        },
        Some(_) => return Err("'stream_options' must be an object".into()),
    };
    let n = positive_int(body, "n")?.unwrap_or(1);
    if n > 128 {
        return Err(format!("'n' must be at most 128, got {n}"));
    }
    let max_tokens = match positive_int(body, "max_tokens")? {
        Some(m) => Some(m),
        None => positive_int(body, "max_completion_tokens")?,
    };
    let stop = match optional(body, "stop") {
        None => Vec::new(),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) => items
            .iter()
            .map(|s| s.as_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()
            .ok_or("'stop' must be a string or an array of strings")?,
        Some(_) => return Err("'stop' must be a string or an array of strings".into()),
    };
    check_range(body, "temperature", 0.0, 2.0)?;
    check_range(body, "top_p", 0.0, 1.0)?;
    check_range(body, "frequency_penalty", -2.0, 2.0)?;
    check_range(body, "presence_penalty", -2.0, 2.0)?;

    let tools = parse_tools(body)?;
    let forced_tool = match parse_tool_choice(body, &tools)? {
        Some(Some(name)) => Some(name),
        // "required": the tool the prompt names, else the first offered.
        Some(None) => {
            let prompt = messages
                .iter()
                .rev()
                .find(|m| m.role == "user")
                .map(|m| normalize(&m.text))
                .unwrap_or_default();
            named_tool(&tools, &prompt)
                .map(|(name, _, _)| name.to_owned())
                .or_else(|| tools.first().map(|(name, _)| name.clone()))
        }
        None => None,
    };
    Ok(ChatRequest {
        model,
        stream,
        include_usage,
        n,
        max_tokens,
        stop: stop.into_iter().filter(|s| !s.is_empty()).collect(),
        forced_tool,
        json_schema: parse_response_format(body)?,
        off_schema: false,
        tools,
        messages,
    })
}

fn normalize(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn is_ident_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// Where a tool's name occurs in the prompt as a whole word.
fn find_word(haystack: &str, word: &str) -> Option<usize> {
    haystack.match_indices(word).map(|(i, _)| i).find(|&i| {
        let before_ok = haystack[..i]
            .chars()
            .next_back()
            .is_none_or(|c| !is_ident_char(c));
        let after_ok = haystack[i + word.len()..]
            .chars()
            .next()
            .is_none_or(|c| !is_ident_char(c));
        before_ok && after_ok
    })
}

/// The first number in the text, as written (sign, digits, optional fraction).
fn first_number(text: &str) -> Option<&str> {
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let starts_negative = bytes[i] == b'-'
            && bytes.get(i + 1).is_some_and(u8::is_ascii_digit)
            && (i == 0 || !bytes[i - 1].is_ascii_alphanumeric());
        if bytes[i].is_ascii_digit() || starts_negative {
            let start = i;
            i += 1;
            while i < bytes.len() && bytes[i].is_ascii_digit() {
                i += 1;
            }
            if i + 1 < bytes.len() && bytes[i] == b'.' && bytes[i + 1].is_ascii_digit() {
                i += 1;
                while i < bytes.len() && bytes[i].is_ascii_digit() {
                    i += 1;
                }
            }
            return Some(&text[start..i]);
        }
        i += 1;
    }
    None
}

fn number_value(text: &str, integer: bool) -> Value {
    let Some(raw) = first_number(text) else {
        return Value::Null;
    };
    if let Ok(i) = raw.parse::<i64>() {
        return json!(i);
    }
    match raw.parse::<f64>() {
        // An integer parameter gets the whole part, as a model filling one would.
        Ok(f) if integer && f.is_finite() && f.abs() < 9.0e15 => json!(f.trunc() as i64),
        Ok(f) => serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number),
        Err(_) => Value::Null,
    }
}

/// The schema `type` of a property, skipping `"null"` in a type list.
fn property_type(schema: &Value) -> Option<&str> {
    match schema.get("type")? {
        Value::String(t) => Some(t),
        Value::Array(types) => types
            .iter()
            .filter_map(Value::as_str)
            .find(|t| *t != "null"),
        _ => None,
    }
}

fn tool_arguments(parameters: &Value, prompt: &str, after_name: &str) -> String {
    let mut args = Map::new();
    if let Some(properties) = parameters.get("properties").and_then(Value::as_object) {
        for (name, schema) in properties {
            let value = match property_type(schema) {
                Some("string") => json!(after_name.trim()),
                Some("number") => number_value(prompt, false),
                Some("integer") => number_value(prompt, true),
                _ => Value::Null,
            };
            args.insert(name.clone(), value);
        }
    }
    Value::Object(args).to_string()
}

/// The tool the prompt names (earliest mention; the longer name on a tie) and the
/// prompt text after that mention.
fn named_tool<'a>(
    tools: &'a [(String, Value)],
    prompt: &'a str,
) -> Option<(&'a str, &'a Value, &'a str)> {
    tools
        .iter()
        .filter_map(|(name, params)| find_word(prompt, name).map(|pos| (pos, name, params)))
        .min_by(|a, b| a.0.cmp(&b.0).then(b.1.len().cmp(&a.1.len())))
        .map(|(pos, name, params)| (name.as_str(), params, &prompt[pos + name.len()..]))
}

/// Cuts `text` before the earliest stop sequence. Trailing whitespace goes too, so the
/// answer stays a run of single-space-separated words that streams back identically.
fn apply_stop(text: &str, stop: &[String]) -> String {
    match stop.iter().filter_map(|s| text.find(s.as_str())).min() {
        Some(pos) => text[..pos].trim_end().to_owned(),
        None => text.to_owned(),
    }
}

/// A JSON document (compact) fitting `schema`, or one that does not when `off_schema`.
fn structured_text(schema: &Value, request: &ChatRequest) -> String {
    let prompts = request
        .messages
        .iter()
        .rev()
        .filter(|m| m.role == "user")
        .map(|m| m.text.as_str())
        .collect();
    let filler = Filler::new(schema, prompts);
    let document = if request.off_schema {
        filler.off_schema()
    } else {
        filler.document()
    };
    document.to_string()
}

/// Answers the request. `next_call_id` supplies the numbers of `call_<n>` ids.
pub(crate) fn answer(request: &ChatRequest, mut next_call_id: impl FnMut() -> u64) -> Answer {
    let prompt_tokens = request.messages.iter().map(|m| word_count(&m.text)).sum();
    let last_is_tool = request.messages.last().is_some_and(|m| m.role == "tool");
    let prompt = request
        .messages
        .iter()
        .rev()
        .find(|m| m.role == "user")
        .map(|m| normalize(&m.text))
        .unwrap_or_default();

    // A forced function is called whatever the conversation says, with arguments that
    // fit its parameters; otherwise a tool the last user message names.
    let forced = request.forced_tool.as_deref().and_then(|name| {
        let (name, parameters) = request.tools.iter().find(|(tool, _)| tool == name)?;
        Some((name.as_str(), structured_text(parameters, request)))
    });
    let tool = if last_is_tool || forced.is_some() {
        None
    } else {
        named_tool(&request.tools, &prompt)
    };
    let thoughts = (request.model == crate::REASONING_MODEL).then(|| thinking(word_count(&prompt)));
    let thinking_tokens = thoughts.as_deref().map_or(0, word_count);

    let mut choices = Vec::with_capacity(request.n);
    for _ in 0..request.n {
        let call = match (&forced, tool) {
            (Some((name, arguments)), _) => Some((*name, arguments.clone())),
            (None, Some((name, parameters, after_name))) => {
                Some((name, tool_arguments(parameters, &prompt, after_name)))
            }
            (None, None) => None,
        };
        let choice = if let Some((name, arguments)) = call {
            Choice {
                thinking: thoughts.clone(),
                completion_tokens: word_count(&arguments).max(1) + thinking_tokens,
                reply: Reply::ToolCall {
                    id: format!("call_{}", next_call_id()),
                    name: name.to_owned(),
                    arguments,
                },
                finish_reason: "tool_calls",
            }
        } else {
            let full = if let Some(format) = &request.json_schema {
                structured_text(&format.schema, request)
            } else if last_is_tool {
                let result = request.messages.last().map(|m| normalize(&m.text));
                format!("Tool result: {}", result.unwrap_or_default())
                    .trim_end()
                    .to_owned()
            } else if prompt.is_empty() {
                "(empty prompt)".to_owned()
            } else {
                prompt.clone()
            };
            let text = apply_stop(&full, &request.stop);
            let words: Vec<&str> = text.split_whitespace().collect();
            let (text, finish_reason) = match request.max_tokens {
                Some(budget) if words.len() > budget => (words[..budget].join(" "), "length"),
                _ => (text.clone(), "stop"),
            };
            // The word budget covers the answer only: thinking comes on top.
            Choice {
                thinking: thoughts.clone(),
                completion_tokens: word_count(&text) + thinking_tokens,
                reply: Reply::Text(text),
                finish_reason,
            }
        };
        choices.push(choice);
    }
    let completion_tokens = choices.iter().map(|c| c.completion_tokens).sum();
    let reasoning_tokens = thoughts.is_some().then(|| thinking_tokens * choices.len());
    Answer {
        choices,
        prompt_tokens,
        completion_tokens,
        reasoning_tokens,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(body: Value) -> ChatRequest {
        parse_request(body.as_object().unwrap(), "m").unwrap()
    }

    fn text_of(a: &Answer) -> &str {
        match &a.choices[0].reply {
            Reply::Text(t) => t,
            other => panic!("expected text, got {other:?}"),
        }
    }

    #[test]
    fn stop_and_budget_combine() {
        let r = request(json!({"messages":[{"role":"user","content":"a b c d e"}],
            "stop":["d"], "max_tokens": 2}));
        let a = answer(&r, || 1);
        assert_eq!(text_of(&a), "a b");
        assert_eq!(a.choices[0].finish_reason, "length");

        let r = request(json!({"messages":[{"role":"user","content":"hello world"}],"stop":"orl"}));
        assert_eq!(text_of(&answer(&r, || 1)), "hello w");
    }

    #[test]
    fn the_reasoning_model_thinks_first() {
        let r = request(json!({"model": crate::REASONING_MODEL,
            "messages":[{"role":"user","content":"one two  three"}], "max_tokens": 2, "n": 2}));
        let a = answer(&r, || 1);
        assert_eq!(
            a.choices[0].thinking.as_deref(),
            Some("Thinking about 3 words.")
        );
        assert_eq!(text_of(&a), "one two");
        assert_eq!(a.choices[0].completion_tokens, 2 + 4);
        assert_eq!(a.reasoning_tokens, Some(8));
        assert_eq!(
            a.usage()["completion_tokens_details"]["reasoning_tokens"],
            8
        );
        assert_eq!(a.usage()["prompt_tokens_details"]["cached_tokens"], 0);

        let plain = answer(
            &request(json!({"messages":[{"role":"user","content":"x"}]})),
            || 1,
        );
        assert_eq!(plain.choices[0].thinking, None);
        assert!(plain.usage().get("completion_tokens_details").is_none());
    }

    #[test]
    fn tool_name_must_be_a_whole_word() {
        let tools = vec![
            ("get".to_owned(), Value::Null),
            ("get_weather".to_owned(), Value::Null),
        ];
        let (name, _, rest) = named_tool(&tools, "please get_weather Paris").unwrap();
        assert_eq!((name, rest), ("get_weather", " Paris"));
        assert!(named_tool(&tools, "forget it").is_none());
    }

    #[test]
    fn numbers_are_found() {
        assert_eq!(first_number("in 3 days"), Some("3"));
        assert_eq!(first_number("t=-4.5C"), Some("-4.5"));
        assert_eq!(first_number("x-5"), Some("5"));
        assert_eq!(first_number("none"), None);
        assert_eq!(number_value("2.75 apples", true), json!(2));
        assert_eq!(number_value("2.75 apples", false), json!(2.75));
    }
}
