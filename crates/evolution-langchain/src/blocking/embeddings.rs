//! Blocking `EvolutionEmbeddings` and its builder.

use super::{call, wait, EvolutionInference};
use crate::builder::ClientBuilder;
use crate::embeddings::EmbeddingsSettings;
use crate::error::Result;
use crate::flavor::{Async, Blocking};

/// Blocking counterpart of [`crate::EvolutionEmbeddings`].
#[derive(Debug, Clone)]
pub struct EvolutionEmbeddings {
    inner: crate::embeddings::EvolutionEmbeddings,
}

/// Blocking counterpart of [`crate::EvolutionEmbeddingsBuilder`]: the same
/// type and setters; `build` returns the blocking client.
pub type EvolutionEmbeddingsBuilder = crate::embeddings::EvolutionEmbeddingsBuilder<Blocking>;

impl ClientBuilder<EmbeddingsSettings, Blocking> {
    /// Checks the settings and creates the blocking client.
    pub fn build(self) -> Result<EvolutionEmbeddings> {
        Ok(EvolutionEmbeddings {
            inner: self.build_async()?,
        })
    }
}

impl ClientBuilder<EmbeddingsSettings, Async> {
    /// Checks the settings and creates a [blocking](EvolutionEmbeddings) client.
    pub fn build_blocking(self) -> Result<EvolutionEmbeddings> {
        self.into_flavor::<Blocking>().build()
    }
}

impl EvolutionEmbeddings {
    /// A builder with the same settings as [`crate::EvolutionEmbeddingsBuilder`].
    pub fn builder() -> EvolutionEmbeddingsBuilder {
        EvolutionEmbeddingsBuilder::default()
    }

    /// A client configured from the `EVOLUTION_*` variables.
    pub fn from_env() -> Result<Self> {
        Self::builder().from_env()?.build()
    }

    /// See [`crate::EvolutionEmbeddings::from_inference`].
    pub fn from_inference(llm: &EvolutionInference, model: impl Into<String>) -> Self {
        Self {
            inner: crate::embeddings::EvolutionEmbeddings::from_inference(llm.as_async(), model),
        }
    }

    /// Wraps an async client.
    pub fn from_async(inner: crate::embeddings::EvolutionEmbeddings) -> Self {
        Self { inner }
    }

    /// The async client behind this facade.
    pub fn as_async(&self) -> &crate::embeddings::EvolutionEmbeddings {
        &self.inner
    }

    /// The model name.
    pub fn model(&self) -> &str {
        self.inner.model()
    }

    /// See [`crate::EvolutionEmbeddings::embed`].
    pub fn embed(&self, text: &str) -> Result<Vec<f32>> {
        let text = text.to_string();
        call!(self, |embeddings| embeddings.embed(&text))
    }

    /// See [`crate::EvolutionEmbeddings::embed_many`].
    pub fn embed_many<S: AsRef<str>>(&self, texts: &[S]) -> Result<Vec<Vec<f32>>> {
        let texts: Vec<String> = texts.iter().map(|t| t.as_ref().to_string()).collect();
        call!(self, |embeddings| embeddings.embed_many(&texts))
    }
}
