//! `POST /v1/rerank` (vLLM / Cohere style): documents ordered by a deterministic
//! word-overlap score against the query.

use std::collections::HashSet;

use axum::response::Response;
use serde_json::{json, Map, Value};

use crate::extract::ApiRequest;
use crate::{reply, util};

/// A validated rerank request.
struct RerankRequest<'a> {
    model: String,
    query: &'a str,
    documents: Vec<&'a str>,
    /// `None` for "all of them" (absent, `null` or 0).
    top_n: Option<usize>,
    return_documents: bool,
}

fn parse<'a>(
    body: &'a Map<String, Value>,
    default_model: &str,
) -> Result<RerankRequest<'a>, String> {
    let present = |key: &str| body.get(key).filter(|v| !v.is_null());
    let model = match present("model") {
        None => default_model.to_owned(),
        Some(Value::String(m)) => m.clone(),
        Some(_) => return Err("'model' must be a string".into()),
    };
    let query = match present("query") {
        None => return Err("missing required field 'query'".into()),
        Some(Value::String(q)) => q.as_str(),
        Some(_) => return Err("'query' must be a string".into()),
    };
    let raw = match present("documents") {
        None => return Err("missing required field 'documents'".into()),
        Some(Value::Array(items)) if items.is_empty() => {
            return Err("'documents' must not be empty".into())
        }
        Some(Value::Array(items)) => items,
        Some(_) => return Err("'documents' must be an array".into()),
    };
    let documents = raw
        .iter()
        .enumerate()
        .map(|(i, item)| match item {
            Value::String(text) => Ok(text.as_str()),
            Value::Object(obj) => match obj.get("text") {
                Some(Value::String(text)) => Ok(text.as_str()),
                _ => Err(format!("'documents[{i}].text' must be a string")),
            },
            _ => Err(format!(
                "'documents[{i}]' must be a string or an object with a string 'text'"
            )),
        })
        .collect::<Result<Vec<_>, _>>()?;
    let top_n = match present("top_n") {
        None => None,
        Some(v) => match v.as_u64() {
            Some(0) => None,
            Some(n) => Some(usize::try_from(n).unwrap_or(usize::MAX)),
            None => return Err(format!("'top_n' must be a non-negative integer, got {v}")),
        },
    };
    let return_documents = match present("return_documents") {
        None => true,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err("'return_documents' must be a boolean".into()),
    };
    Ok(RerankRequest {
        model,
        query,
        documents,
        top_n,
        return_documents,
    })
}

/// The distinct lower-case alphanumeric words of a text.
fn words(text: &str) -> HashSet<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

/// The share of the query's distinct words that occur in the document, in `[0, 1]`;
/// 0 for a query without words.
pub(crate) fn relevance(query: &HashSet<String>, document: &str) -> f64 {
    if query.is_empty() {
        return 0.0;
    }
    let document = words(document);
    let shared = query.iter().filter(|w| document.contains(*w)).count();
    shared as f64 / query.len() as f64
}

/// `(original index, score)`, best first; equal scores keep their original order.
fn ranking(query: &str, documents: &[&str]) -> Vec<(usize, f64)> {
    let query = words(query);
    let mut ranked: Vec<(usize, f64)> = documents
        .iter()
        .enumerate()
        .map(|(index, doc)| (index, relevance(&query, doc)))
        .collect();
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    ranked
}

pub(crate) async fn rerank(request: ApiRequest) -> Response {
    let ApiRequest {
        state,
        body,
        shape,
        guard,
        ..
    } = request;
    let object = match body.object() {
        Ok(object) => object,
        Err(message) => return reply::bad_request(message),
    };
    let request = match parse(object, state.config.default_model()) {
        Ok(request) => request,
        Err(message) => return reply::bad_request(message),
    };

    let mut ranked = ranking(request.query, &request.documents);
    if let Some(n) = request.top_n {
        ranked.truncate(n);
    }
    let results: Vec<Value> = ranked
        .into_iter()
        .map(|(index, score)| {
            let mut result = json!({"index": index, "relevance_score": score});
            if request.return_documents {
                result["document"] = json!({"text": request.documents[index]});
            }
            result
        })
        .collect();
    let tokens = util::word_count(request.query)
        + request
            .documents
            .iter()
            .map(|d| util::word_count(d))
            .sum::<usize>();
    let answer = json!({
        "id": format!("rerank-{}", state.next_id()),
        "model": request.model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        "results": results,
    });
    let response = reply::json_answer(&answer, shape.as_ref());
    drop(guard);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores_are_the_share_of_query_words_found() {
        let query = words("Red apple, red PIE");
        assert_eq!(query.len(), 3);
        assert_eq!(relevance(&query, "an apple pie"), 2.0 / 3.0);
        assert_eq!(relevance(&query, "RED-apple/pie!"), 1.0);
        assert_eq!(relevance(&query, "nothing here"), 0.0);
        assert_eq!(relevance(&words("  ,;  "), "anything"), 0.0);
    }

    #[test]
    fn ties_keep_their_original_order() {
        let ranked = ranking("cat dog", &["fish", "dog", "cat", "cat dog", "bird"]);
        let order: Vec<usize> = ranked.iter().map(|r| r.0).collect();
        assert_eq!(order, [3, 1, 2, 0, 4]);
    }
}
