//! `EvolutionEmbeddings`: vectors from the `/embeddings` endpoint, with the
//! same authentication, retries and pooling as the chat client.

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use tracing::Instrument;

use crate::config::{env_var, EnvSettings};
use crate::error::{Error, Result};
use crate::flavor::Async;
use crate::inference::wire::{EmbeddingRequest, EmbeddingResponse, Usage};
use crate::inference::EvolutionInference;
use crate::telemetry;
use crate::transport::connection::{connection_setters, Connection};
use crate::transport::{Endpoint, Transport};

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
            let input: Vec<String> = batch.iter().map(|t| t.as_ref().to_string()).collect();
            let (batch_vectors, usage) = self.request(&input).await?;
            vectors.extend(batch_vectors);
            input_tokens = input_tokens
                .zip(usage)
                .map(|(sum, usage)| sum + i64::from(usage.prompt_tokens));
        }
        Ok((vectors, input_tokens))
    }

    async fn request(&self, input: &[String]) -> Result<(Vec<Vec<f32>>, Option<Usage>)> {
        let request = EmbeddingRequest {
            model: &self.model,
            input,
            dimensions: self.dimensions,
        };
        let reply: EmbeddingResponse = self
            .transport
            .post_json(Endpoint::Embeddings, &request)
            .await?;
        let invalid = |message: String| {
            Error::invalid_response(self.transport.url(Endpoint::Embeddings), message)
        };
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

/// Settings for [`EvolutionEmbeddings`]; `M` as for
/// [`EvolutionInferenceBuilder`](crate::EvolutionInferenceBuilder).
#[derive(Clone, Default)]
pub struct EvolutionEmbeddingsBuilder<M = Async> {
    pub(crate) connection: Connection,
    model: String,
    dimensions: Option<u32>,
    flavor: PhantomData<M>,
}

impl<M> EvolutionEmbeddingsBuilder<M> {
    connection_setters!();

    /// Fills unset settings from the environment (as
    /// [`EvolutionInference::from_env`]; the model from
    /// `EVOLUTION_EMBEDDINGS_MODEL`, else `EVOLUTION_MODEL`).
    pub fn from_env(mut self) -> Result<Self> {
        let env = EnvSettings::read()?;
        self.connection.fill_from_env(&env)?;
        if self.model.is_empty() {
            if let Some(model) = env_var(ENV_EMBEDDINGS_MODEL).or(env.model) {
                self.model = model;
            }
        }
        Ok(self)
    }

    /// The embedding model.
    pub fn model(mut self, model: impl Into<String>) -> Self {
        self.model = model.into();
        self
    }

    /// Ask for vectors of this size (models that support it).
    pub fn dimensions(mut self, dimensions: u32) -> Self {
        self.dimensions = Some(dimensions);
        self
    }

    /// Same settings, another kind of client.
    #[cfg(feature = "blocking")]
    pub(crate) fn into_flavor<N>(self) -> EvolutionEmbeddingsBuilder<N> {
        EvolutionEmbeddingsBuilder {
            connection: self.connection,
            model: self.model,
            dimensions: self.dimensions,
            flavor: PhantomData,
        }
    }

    pub(crate) fn build_async(self) -> Result<EvolutionEmbeddings> {
        if self.dimensions == Some(0) {
            return Err(Error::config("dimensions", "must be at least 1"));
        }
        Ok(EvolutionEmbeddings {
            transport: Arc::new(self.connection.into_transport()?),
            model: self.model,
            dimensions: self.dimensions,
        })
    }
}

impl EvolutionEmbeddingsBuilder<Async> {
    /// Checks the settings and creates the client.
    pub fn build(self) -> Result<EvolutionEmbeddings> {
        self.build_async()
    }
}

impl<M> fmt::Debug for EvolutionEmbeddingsBuilder<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EvolutionEmbeddingsBuilder")
            .field("connection", &self.connection)
            .field("model", &self.model)
            .field("dimensions", &self.dimensions)
            .finish()
    }
}
