//! `EvolutionEmbeddings`: vectors from the `/embeddings` endpoint, with the
//! same authentication, retries and pooling as the chat client.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tracing::Instrument;

use crate::builder::ClientBuilder;
use crate::chat::wire::Usage;
use crate::chat::EvolutionInference;
use crate::config::env_var;
use crate::error::{Error, Result};
use crate::flavor::Async;
use crate::telemetry;
use crate::transport::{Body, Request, Transport};

/// The path of the embeddings endpoint under the base URL.
const PATH: &str = "embeddings";

/// Environment variable naming the embedding model (else `EVOLUTION_MODEL`).
pub const ENV_EMBEDDINGS_MODEL: &str = "EVOLUTION_EMBEDDINGS_MODEL";

/// Texts in one request at most; longer inputs are split into several
/// requests. OpenAI-compatible servers commonly cap a request at 2048 inputs.
const MAX_INPUTS_PER_REQUEST: usize = 256;

/// A client for `POST {base_url}/embeddings`.
///
/// ```no_run
/// # async fn run() -> evolution_langchain::Result<()> {
/// use evolution_langchain::EvolutionEmbeddings;
///
/// let embeddings = EvolutionEmbeddings::builder()
///     .model("BAAI/bge-m3")
///     .api_key("my-api-key")
///     .build()?;
/// let vectors = embeddings.embed_many(&["first", "second"]).await?;
/// assert_eq!(vectors.len(), 2);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct EvolutionEmbeddings {
    transport: Arc<Transport>,
    model: String,
    dimensions: Option<u32>,
}

impl EvolutionEmbeddings {
    /// A builder.
    pub fn builder() -> EvolutionEmbeddingsBuilder {
        EvolutionEmbeddingsBuilder::default()
    }

    /// A client configured from the `EVOLUTION_*` variables (see
    /// [`EvolutionInference::from_env`]).
    pub fn from_env() -> Result<Self> {
        Self::builder().from_env()?.build()
    }

    /// An embeddings client sharing `llm`'s connection pool and token cache.
    pub fn from_inference(llm: &EvolutionInference, model: impl Into<String>) -> Self {
        Self {
            transport: Arc::clone(&llm.transport),
            model: model.into(),
            dimensions: None,
        }
    }

    /// The model name.
    pub fn model(&self) -> &str {
        &self.model
    }

    /// The vector for one text.
    pub async fn embed(&self, text: &str) -> Result<Vec<f32>> {
        let mut vectors = self.embed_many(&[text]).await?;
        Ok(vectors.pop().expect("one vector per input, checked"))
    }

    /// One vector per text, in the order given.
    pub async fn embed_many<S: AsRef<str>>(&self, texts: &[S]) -> Result<Vec<Vec<f32>>> {
        let span = telemetry::span(
            telemetry::OPERATION_EMBEDDINGS,
            &self.model,
            &self.transport.base_url,
        );
        if let Some(dimensions) = self.dimensions {
            span.record(telemetry::EMBEDDINGS_DIMENSION_COUNT, i64::from(dimensions));
        }
        let outcome = self.embed_all(texts).instrument(span.clone()).await;
        telemetry::record_outcome(&span, &outcome, |span, (_, input_tokens)| {
            if let Some(tokens) = input_tokens {
                span.record(telemetry::USAGE_INPUT_TOKENS, *tokens);
            }
        });
        outcome.map(|(vectors, _)| vectors)
    }

    /// The vectors, and the input tokens the server reported (summed over
    /// the requests; `None` when a reply had no usage).
    async fn embed_all<S: AsRef<str>>(&self, texts: &[S]) -> Result<(Vec<Vec<f32>>, Option<i64>)> {
        let mut vectors = Vec::with_capacity(texts.len());
        let mut input_tokens = Some(0i64);
        for batch in texts.chunks(MAX_INPUTS_PER_REQUEST) {
            let input: Vec<&str> = batch.iter().map(AsRef::as_ref).collect();
            let (batch_vectors, usage) = self.request(&input).await?;
            vectors.extend(batch_vectors);
            input_tokens = input_tokens
                .zip(usage)
                .map(|(sum, usage)| sum + i64::from(usage.prompt_tokens));
        }
        Ok((vectors, input_tokens))
    }

    async fn request(&self, input: &[&str]) -> Result<(Vec<Vec<f32>>, Option<Usage>)> {
        let request = EmbeddingRequest {
            model: &self.model,
            input,
            dimensions: self.dimensions,
        };
        let estimated = self.transport.estimate(input);
        let reply: EmbeddingResponse = self
            .transport
            .json(Request::post(PATH, Body::json(&request)?).tokens(estimated))
            .await?;
        if let Some(usage) = reply.usage {
            self.transport.settle(estimated, usage.charged()).await;
        }
        let invalid = |message: String| Error::invalid_response(self.transport.url(PATH), message);
        if reply.data.len() != input.len() {
            return Err(invalid(format!(
                "{} vectors for {} inputs",
                reply.data.len(),
                input.len()
            )));
        }
        // Servers may answer out of order; `index` says where each belongs.
        let mut slots: Vec<Option<Vec<f32>>> = vec![None; input.len()];
        for (position, item) in reply.data.into_iter().enumerate() {
            let index = item.index.unwrap_or(position);
            let slot = slots
                .get_mut(index)
                .ok_or_else(|| invalid(format!("vector index {index} out of range")))?;
            if slot.replace(item.embedding).is_some() {
                return Err(invalid(format!("vector index {index} appears twice")));
            }
        }
        let vectors = slots.into_iter().map(|s| s.expect("all filled")).collect();
        Ok((vectors, reply.usage))
    }
}

impl fmt::Debug for EvolutionEmbeddings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EvolutionEmbeddings")
            .field("model", &self.model)
            .field("dimensions", &self.dimensions)
            .field("transport", &self.transport)
            .finish()
    }
}

/// Settings for [`EvolutionEmbeddings`]: [`ClientBuilder`] with the
/// embedding model and vector size.
pub type EvolutionEmbeddingsBuilder<M = Async> = ClientBuilder<EmbeddingsSettings, M>;

/// The embeddings client's own settings in its [builder](EvolutionEmbeddingsBuilder).
#[derive(Debug, Clone, Default)]
pub struct EmbeddingsSettings {
    model: String,
    dimensions: Option<u32>,
}

impl<M> ClientBuilder<EmbeddingsSettings, M> {
    /// Fills unset settings from the environment (as
    /// [`EvolutionInference::from_env`]; the model from
    /// `EVOLUTION_EMBEDDINGS_MODEL`, else `EVOLUTION_MODEL`).
    pub fn from_env(self) -> Result<Self> {
        self.fill_from_env(|settings, env| {
            if settings.model.is_empty() {
                if let Some(model) = env_var(ENV_EMBEDDINGS_MODEL).or(env.model.clone()) {
                    settings.model = model;
                }
            }
        })
    }

    /// The embedding model.
    pub fn model(mut self, model: impl Into<String>) -> Self {
        self.settings.model = model.into();
        self
    }

    /// Ask for vectors of this size (models that support it).
    pub fn dimensions(mut self, dimensions: u32) -> Self {
        self.settings.dimensions = Some(dimensions);
        self
    }

    pub(crate) fn build_async(self) -> Result<EvolutionEmbeddings> {
        if self.settings.dimensions == Some(0) {
            return Err(Error::config("dimensions", "must be at least 1"));
        }
        let (settings, transport) = self.into_parts()?;
        Ok(EvolutionEmbeddings {
            transport: Arc::new(transport),
            model: settings.model,
            dimensions: settings.dimensions,
        })
    }
}

impl ClientBuilder<EmbeddingsSettings, Async> {
    /// Checks the settings and creates the client.
    pub fn build(self) -> Result<EvolutionEmbeddings> {
        self.build_async()
    }
}

/// The body of `POST /embeddings`.
#[derive(Debug, Clone, Serialize)]
struct EmbeddingRequest<'a> {
    model: &'a str,
    input: &'a [&'a str],
    #[serde(skip_serializing_if = "Option::is_none")]
    dimensions: Option<u32>,
}

#[derive(Debug, Deserialize)]
struct EmbeddingData {
    /// Absent on some servers; the position in `data` then.
    #[serde(default)]
    index: Option<usize>,
    embedding: Vec<f32>,
}

#[derive(Debug, Deserialize)]
struct EmbeddingResponse {
    data: Vec<EmbeddingData>,
    #[serde(default)]
    usage: Option<Usage>,
}
