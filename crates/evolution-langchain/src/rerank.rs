//! `EvolutionRerank`: documents ordered by their relevance to a query, from
//! the `/rerank` endpoint (vLLM-style), with the same authentication,
//! retries, token recovery and request ids as the chat client.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};
use tracing::Instrument;

use crate::builder::ClientBuilder;
use crate::chat::wire::Usage;
use crate::chat::EvolutionInference;
use crate::config::env_var;
use crate::error::{Error, Result};
use crate::flavor::Async;
use crate::telemetry;
use crate::transport::{Body, Request, Transport};

/// The path of the rerank endpoint under the base URL.
const PATH: &str = "rerank";

/// Environment variable naming the reranker model. (`EVOLUTION_MODEL` is
/// not used: it names a chat model, which cannot rerank.)
pub const ENV_RERANK_MODEL: &str = "EVOLUTION_RERANK_MODEL";

/// A client for `POST {base_url}/rerank`.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let emulator = evolution_emulator::Emulator::start().await?;
/// use evolution_langchain::{EvolutionRerank, RerankOptions};
///
/// # let (key_id, secret) = (emulator.key_id(), emulator.secret());
/// let reranker = EvolutionRerank::builder()
///     .model("BAAI/bge-reranker-v2-m3")
///     .key_id(key_id)           // or .api_key(..), or EvolutionRerank::from_env()
///     .secret(secret)
/// #   .base_url(emulator.base_url())
/// #   .auth_url(emulator.auth_url())
///     .build()?;
/// let documents = ["cats purr", "the capital of France is Paris", "Paris in spring"];
/// let ranked = reranker
///     .rerank_with("capital of France", &documents, RerankOptions::new().top_n(2))
///     .await?;
/// assert_eq!(ranked.results[0].index, 1); // best first, with its original index
/// assert_eq!(ranked.results[0].text(), Some("the capital of France is Paris"));
/// assert_eq!(ranked.results.len(), 2);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct EvolutionRerank {
    transport: Arc<Transport>,
    model: String,
}

/// Per-call settings of [`EvolutionRerank::rerank_with`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RerankOptions {
    /// Return only the best `top_n` results (at least 1; unset: all).
    pub top_n: Option<usize>,
    /// Whether the server returns each document's text with its result
    /// (default true). With `false` the results carry no
    /// [`document`](RerankResult::document).
    pub return_documents: Option<bool>,
}

impl RerankOptions {
    /// Every setting left to the server.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets [`top_n`](Self::top_n).
    pub fn top_n(mut self, top_n: usize) -> Self {
        self.top_n = Some(top_n);
        self
    }

    /// Sets [`return_documents`](Self::return_documents).
    pub fn return_documents(mut self, return_documents: bool) -> Self {
        self.return_documents = Some(return_documents);
        self
    }
}

/// The body of `POST /rerank`.
#[derive(Debug, Serialize)]
struct RerankRequest<'a> {
    #[serde(skip_serializing_if = "str::is_empty")]
    model: &'a str,
    query: &'a str,
    documents: Vec<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_n: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    return_documents: Option<bool>,
}

/// A document as the server returned it with a result.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RerankDocument {
    /// Its text.
    pub text: String,
}

/// Servers send `{"text": …}` (vLLM) or the bare string.
impl<'de> Deserialize<'de> for RerankDocument {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Shape {
            Text(String),
            Object { text: String },
        }
        Ok(match Shape::deserialize(deserializer)? {
            Shape::Text(text) | Shape::Object { text } => RerankDocument { text },
        })
    }
}

/// One document's place in the ranking.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RerankResult {
    /// Its position in the documents passed in.
    pub index: usize,
    /// How relevant it is to the query (higher is better; the scale is
    /// the model's, often 0–1).
    pub relevance_score: f64,
    /// Its text, unless `return_documents` was false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub document: Option<RerankDocument>,
    /// Fields the server sent that this type does not name.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl RerankResult {
    /// The document's text, when the result carries it.
    pub fn text(&self) -> Option<&str> {
        self.document.as_ref().map(|d| d.text.as_str())
    }
}

/// The reply of `POST /rerank`: results best first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RerankResponse {
    /// The server's id for the reply.
    #[serde(default)]
    pub id: Option<String>,
    /// The model that ranked.
    #[serde(default)]
    pub model: Option<String>,
    /// The results, sorted by score, best first (ties: original order).
    pub results: Vec<RerankResult>,
    /// Token counts (`completion_tokens` is 0 for reranking).
    #[serde(default)]
    pub usage: Option<Usage>,
    /// Fields the server sent that this type does not name.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl EvolutionRerank {
    /// A builder.
    pub fn builder() -> EvolutionRerankBuilder {
        EvolutionRerankBuilder::default()
    }

    /// A client configured from the `EVOLUTION_*` variables (see
    /// [`EvolutionInference::from_env`]; the model from
    /// `EVOLUTION_RERANK_MODEL`).
    pub fn from_env() -> Result<Self> {
        Self::builder().from_env()?.build()
    }

    /// A reranking client sharing `llm`'s connection pool and token cache.
    pub fn from_inference(llm: &EvolutionInference, model: impl Into<String>) -> Self {
        Self {
            transport: Arc::clone(&llm.transport),
            model: model.into(),
        }
    }

    /// The model name ("" for the endpoint's own).
    pub fn model(&self) -> &str {
        &self.model
    }

    /// Ranks all `documents` by relevance to `query`, best first.
    pub async fn rerank<S: AsRef<str>>(
        &self,
        query: &str,
        documents: &[S],
    ) -> Result<RerankResponse> {
        self.rerank_with(query, documents, RerankOptions::default())
            .await
    }

    /// Ranks `documents` by relevance to `query` with `options`.
    ///
    /// An empty document list or `top_n` 0 is an [`Error::InvalidRequest`],
    /// and nothing is sent. The results are sorted here too (score
    /// descending, then original index), cut to `top_n`, and their indices
    /// checked against the documents passed in.
    pub async fn rerank_with<S: AsRef<str>>(
        &self,
        query: &str,
        documents: &[S],
        options: RerankOptions,
    ) -> Result<RerankResponse> {
        let span = telemetry::span(
            telemetry::OPERATION_RERANK,
            &self.model,
            &self.transport.base_url,
        );
        let outcome = self
            .rerank_in(query, documents, options)
            .instrument(span.clone())
            .await;
        telemetry::record_outcome(&span, &outcome, |span, reply| {
            telemetry::record_response_ids(span, reply.id.as_deref(), reply.model.as_deref());
            if let Some(usage) = &reply.usage {
                telemetry::record_usage(span, usage, false);
            }
        });
        outcome
    }

    async fn rerank_in<S: AsRef<str>>(
        &self,
        query: &str,
        documents: &[S],
        options: RerankOptions,
    ) -> Result<RerankResponse> {
        if documents.is_empty() {
            return Err(Error::invalid_request(
                "documents",
                "is empty: pass at least one document to rerank",
            ));
        }
        if options.top_n == Some(0) {
            return Err(Error::invalid_request(
                "top_n",
                "must be at least 1 (leave it unset for all results)",
            ));
        }
        let request = RerankRequest {
            model: self.model.trim(),
            query,
            documents: documents.iter().map(AsRef::as_ref).collect(),
            top_n: options.top_n,
            return_documents: options.return_documents,
        };
        let estimated = self
            .transport
            .estimate(std::iter::once(query).chain(request.documents.iter().copied()));
        let mut reply: RerankResponse = self
            .transport
            .json(Request::post(PATH, Body::json(&request)?).tokens(estimated))
            .await?;
        if let Some(usage) = &reply.usage {
            self.transport.settle(estimated, usage.charged()).await;
        }
        let mut seen = vec![false; documents.len()];
        for result in &reply.results {
            match seen.get_mut(result.index) {
                Some(slot) if !*slot => *slot = true,
                Some(_) => {
                    return Err(self.invalid(format!("index {} appears twice", result.index)))
                }
                None => {
                    return Err(self.invalid(format!(
                        "result index {} is out of range for {} documents",
                        result.index,
                        documents.len()
                    )))
                }
            }
        }
        reply.results.sort_by(|a, b| {
            b.relevance_score
                .total_cmp(&a.relevance_score)
                .then(a.index.cmp(&b.index))
        });
        if let Some(top_n) = options.top_n {
            reply.results.truncate(top_n);
        }
        Ok(reply)
    }

    fn invalid(&self, message: String) -> Error {
        Error::invalid_response(self.transport.url(PATH), message)
    }
}

impl fmt::Debug for EvolutionRerank {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EvolutionRerank")
            .field("model", &self.model)
            .field("transport", &self.transport)
            .finish()
    }
}

/// Settings for [`EvolutionRerank`]: [`ClientBuilder`] with the reranker
/// model.
pub type EvolutionRerankBuilder<M = Async> = ClientBuilder<RerankSettings, M>;

/// The rerank client's own settings in its [builder](EvolutionRerankBuilder).
#[derive(Debug, Clone, Default)]
pub struct RerankSettings {
    model: String,
}

impl<M> ClientBuilder<RerankSettings, M> {
    /// Fills unset settings from the environment (as
    /// [`EvolutionInference::from_env`]; the model from
    /// `EVOLUTION_RERANK_MODEL`).
    pub fn from_env(self) -> Result<Self> {
        self.fill_from_env(|settings, _| {
            if settings.model.is_empty() {
                if let Some(model) = env_var(ENV_RERANK_MODEL) {
                    settings.model = model;
                }
            }
        })
    }

    /// The reranker model (e.g. `BAAI/bge-reranker-v2-m3`); empty: the
    /// endpoint's own.
    pub fn model(mut self, model: impl Into<String>) -> Self {
        self.settings.model = model.into();
        self
    }

    pub(crate) fn build_async(self) -> Result<EvolutionRerank> {
        let (settings, transport) = self.into_parts()?;
        Ok(EvolutionRerank {
            transport: Arc::new(transport),
            model: settings.model,
        })
    }
}

impl ClientBuilder<RerankSettings, Async> {
    /// Checks the settings and creates the client.
    pub fn build(self) -> Result<EvolutionRerank> {
        self.build_async()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn replies_parse_in_both_document_shapes_and_keep_unknown_fields() {
        let reply: RerankResponse = serde_json::from_value(json!({
            "id": "r1", "model": "m", "usage": {"prompt_tokens": 5, "total_tokens": 5},
            "results": [
                {"index": 1, "relevance_score": 0.5, "document": {"text": "b"}},
                {"index": 0, "relevance_score": 0.9, "document": "a", "logit": 2.1}
            ],
            "meta": {"billed": 1}
        }))
        .unwrap();
        assert_eq!(reply.results[0].text(), Some("b"));
        assert_eq!(reply.results[1].text(), Some("a"));
        assert_eq!(reply.results[1].extra["logit"], 2.1);
        assert_eq!(reply.extra["meta"], json!({"billed": 1}));
        assert_eq!(reply.usage.unwrap().prompt_tokens, 5);
        let again = serde_json::to_value(&reply).unwrap();
        assert_eq!(again["meta"], json!({"billed": 1}));
        assert_eq!(again["results"][1]["logit"], 2.1);
    }

    #[test]
    fn the_request_omits_what_is_unset() {
        let request = RerankRequest {
            model: "",
            query: "q",
            documents: vec!["a"],
            top_n: None,
            return_documents: None,
        };
        assert_eq!(
            serde_json::to_value(&request).unwrap(),
            json!({"query": "q", "documents": ["a"]})
        );
    }
}
