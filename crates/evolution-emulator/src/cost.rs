//! What a request costs against the tokens-per-minute limit, estimated before it is
//! answered as the service does: the prompt's tokens (characters / 4, rounded up) plus
//! the most the answer may use. Malformed bodies are estimated from whatever they hold;
//! they are refused with a `400` later, once the limiter has charged them.

use serde_json::Value;

use crate::limiter::text_tokens;

/// The `max_tokens` assumed for a chat request that names none (OpenAI's old default).
pub(crate) const DEFAULT_CHAT_MAX_TOKENS: u64 = 16;

/// Characters of a message `content`: a string, or the `text` of each part of an array.
fn content_chars(content: &Value) -> usize {
    match content {
        Value::String(s) => s.chars().count(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .map(|t| t.chars().count())
            .sum(),
        _ => 0,
    }
}

/// Chat: characters of every message's text content / 4 (rounded up), plus
/// `max_completion_tokens` (else `max_tokens`, else [`DEFAULT_CHAT_MAX_TOKENS`]) times `n`.
pub(crate) fn chat(body: &Value) -> u64 {
    let chars: usize = body
        .get("messages")
        .and_then(Value::as_array)
        .map_or(0, |messages| {
            messages
                .iter()
                .filter_map(|m| m.get("content"))
                .map(content_chars)
                .sum()
        });
    let max_tokens = ["max_completion_tokens", "max_tokens"]
        .iter()
        .find_map(|key| body.get(*key).and_then(Value::as_u64))
        .unwrap_or(DEFAULT_CHAT_MAX_TOKENS);
    let n = body.get("n").and_then(Value::as_u64).unwrap_or(1).max(1);
    text_tokens(chars).saturating_add(max_tokens.saturating_mul(n))
}

/// Embeddings: characters of the text inputs / 4 (rounded up), plus one per token id of
/// token-id inputs. Nothing for the answer.
pub(crate) fn embeddings(body: &Value) -> u64 {
    let mut chars = 0usize;
    let mut ids = 0u64;
    let mut visit = |item: &Value| match item {
        Value::String(s) => chars += s.chars().count(),
        Value::Number(_) => ids += 1,
        Value::Array(inner) => ids += inner.iter().filter(|v| v.is_number()).count() as u64,
        _ => {}
    };
    match body.get("input") {
        Some(Value::Array(items)) => items.iter().for_each(&mut visit),
        Some(item) => visit(item),
        None => {}
    }
    text_tokens(chars).saturating_add(ids)
}

/// Rerank: characters of the query and the documents (strings or `{"text"}`) / 4,
/// rounded up. Nothing for the answer.
pub(crate) fn rerank(body: &Value) -> u64 {
    let query = body.get("query").map_or(0, content_chars);
    let documents: usize = body
        .get("documents")
        .and_then(Value::as_array)
        .map_or(0, |docs| {
            docs.iter()
                .map(|d| match d {
                    Value::String(s) => s.chars().count(),
                    other => other
                        .get("text")
                        .and_then(Value::as_str)
                        .map_or(0, |t| t.chars().count()),
                })
                .sum()
        });
    text_tokens(query + documents)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn chat_costs_prompt_characters_and_answer_budget() {
        // 12 characters -> 3 tokens, plus the default 16.
        let body = json!({"messages": [{"role": "user", "content": "hello world!"}]});
        assert_eq!(chat(&body), 3 + 16);
        let body = json!({
            "messages": [
                {"role": "system", "content": "abcd"},
                {"role": "user", "content": [{"type": "text", "text": "efghi"}, {"type": "image_url"}]}
            ],
            "max_tokens": 100,
            "n": 2
        });
        assert_eq!(chat(&body), 3 + 200);
        let body = json!({"messages": [], "max_tokens": 5, "max_completion_tokens": 7});
        assert_eq!(chat(&body), 7);
        assert_eq!(chat(&json!("not an object")), 16);
    }

    #[test]
    fn embeddings_and_rerank_cost_their_inputs() {
        assert_eq!(embeddings(&json!({"input": "abcdefgh"})), 2);
        assert_eq!(embeddings(&json!({"input": ["abc", "de"]})), 2);
        assert_eq!(embeddings(&json!({"input": [1, 2, 3]})), 3);
        assert_eq!(embeddings(&json!({"input": [[1, 2], [3]]})), 3);
        assert_eq!(embeddings(&json!({})), 0);
        let body = json!({"query": "abcd", "documents": ["efgh", {"text": "ij"}]});
        assert_eq!(rerank(&body), 3);
    }
}
