//! `POST /v1/embeddings`: deterministic unit vectors derived from a hash of each input.

use axum::response::Response;
use serde_json::{json, Map, Value};

use crate::extract::ApiRequest;
use crate::{reply, util};

const MAX_DIMENSIONS: u64 = 65_536;

/// One input, as text to hash plus its token count for `usage`.
struct Input {
    text: String,
    tokens: usize,
}

fn token_list(items: &[Value]) -> Option<Input> {
    let ids: Option<Vec<String>> = items
        .iter()
        .map(|v| v.as_u64().map(|n| n.to_string()))
        .collect();
    let ids = ids?;
    Some(Input {
        tokens: ids.len(),
        // Token arrays hash differently from the same digits as text.
        text: format!("\u{0}tokens:{}", ids.join(",")),
    })
}

/// `input` may be a string, an array of strings, an array of token ids, or an array of
/// token-id arrays, as in OpenAI's API.
fn parse_inputs(body: &Map<String, Value>) -> Result<Vec<Input>, String> {
    let text_input = |s: &str| Input {
        text: s.to_owned(),
        tokens: util::word_count(s),
    };
    match body.get("input") {
        None | Some(Value::Null) => Err("missing required field 'input'".into()),
        Some(Value::String(s)) => Ok(vec![text_input(s)]),
        Some(Value::Array(items)) if items.is_empty() => Err("'input' must not be empty".into()),
        Some(Value::Array(items)) if items.iter().all(Value::is_u64) => {
            Ok(token_list(items).into_iter().collect())
        }
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, item)| match item {
                Value::String(s) => Ok(text_input(s)),
                Value::Array(ids) => token_list(ids)
                    .ok_or_else(|| format!("'input[{i}]' must contain only token ids")),
                _ => Err(format!(
                    "'input[{i}]' must be a string or an array of token ids"
                )),
            })
            .collect(),
        Some(_) => Err("'input' must be a string or an array".into()),
    }
}

/// A unit vector determined by the text alone: same text, same vector, on any machine.
pub(crate) fn embed(text: &str, dimensions: usize) -> Vec<f64> {
    let mut seed = util::fnv1a64(text.as_bytes());
    let mut v: Vec<f64> = (0..dimensions)
        .map(|_| {
            let bits = util::splitmix64(&mut seed) >> 11;
            (bits as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
        })
        .collect();
    let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    } else if let Some(first) = v.first_mut() {
        *first = 1.0;
    }
    v
}

fn encode(vector: &[f64], base64: bool) -> Value {
    if base64 {
        let bytes: Vec<u8> = vector
            .iter()
            .flat_map(|&x| (x as f32).to_le_bytes())
            .collect();
        Value::String(util::base64_standard(&bytes))
    } else {
        json!(vector)
    }
}

pub(crate) async fn embeddings(request: ApiRequest) -> Response {
    let ApiRequest {
        state,
        body,
        shape,
        guard,
        ..
    } = request;
    let model = body.model_or(state.config.default_model());
    let object = match body.object() {
        Ok(object) => object,
        Err(message) => return reply::bad_request(message),
    };
    if let Some(m) = object
        .get("model")
        .filter(|m| !m.is_null() && !m.is_string())
    {
        return reply::bad_request(format!("'model' must be a string, got {m}"));
    }
    let inputs = match parse_inputs(object) {
        Ok(inputs) => inputs,
        Err(message) => return reply::bad_request(message),
    };
    let dimensions = match object.get("dimensions").filter(|d| !d.is_null()) {
        None => state.config.embedding_dimensions,
        Some(d) => match d.as_u64() {
            Some(n) if (1..=MAX_DIMENSIONS).contains(&n) => n as usize,
            _ => {
                return reply::bad_request(format!(
                    "'dimensions' must be an integer between 1 and {MAX_DIMENSIONS}, got {d}"
                ))
            }
        },
    };
    let base64 = match object.get("encoding_format") {
        None | Some(Value::Null) => false,
        Some(Value::String(f)) if f == "float" => false,
        Some(Value::String(f)) if f == "base64" => true,
        Some(other) => {
            return reply::bad_request(format!(
                "'encoding_format' must be \"float\" or \"base64\", got {other}"
            ))
        }
    };

    let tokens: usize = inputs.iter().map(|i| i.tokens).sum();
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(index, input)| {
            json!({
                "object": "embedding",
                "index": index,
                "embedding": encode(&embed(&input.text, dimensions), base64),
            })
        })
        .collect();
    let answer = json!({
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    });
    let response = reply::json_answer(&answer, shape.as_ref());
    drop(guard);
    response
}
