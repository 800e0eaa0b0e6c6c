//! Blocking `EvolutionRerank` and its builder.

use super::{call, wait};
use crate::builder::ClientBuilder;
use crate::error::Result;
use crate::flavor::{Async, Blocking};
use crate::rerank::{RerankOptions, RerankResponse, RerankSettings};

/// Blocking counterpart of [`crate::EvolutionRerank`].
#[derive(Debug, Clone)]
pub struct EvolutionRerank {
    inner: crate::rerank::EvolutionRerank,
}

/// Blocking counterpart of [`crate::EvolutionRerankBuilder`]: the same type
/// and setters; `build` returns the blocking client.
pub type EvolutionRerankBuilder = crate::rerank::EvolutionRerankBuilder<Blocking>;

impl ClientBuilder<RerankSettings, Blocking> {
    /// Checks the settings and creates the blocking client.
    pub fn build(self) -> Result<EvolutionRerank> {
        Ok(EvolutionRerank {
            inner: self.build_async()?,
        })
    }
}

impl ClientBuilder<RerankSettings, Async> {
    /// Checks the settings and creates a [blocking](EvolutionRerank) client.
    pub fn build_blocking(self) -> Result<EvolutionRerank> {
        self.into_flavor::<Blocking>().build()
    }
}

impl EvolutionRerank {
    /// A builder with the same settings as [`crate::EvolutionRerankBuilder`].
    pub fn builder() -> EvolutionRerankBuilder {
        EvolutionRerankBuilder::default()
    }

    /// A client configured from the `EVOLUTION_*` variables.
    pub fn from_env() -> Result<Self> {
        Self::builder().from_env()?.build()
    }

    /// See [`crate::EvolutionRerank::from_inference`].
    pub fn from_inference(llm: &super::EvolutionInference, model: impl Into<String>) -> Self {
        Self {
            inner: crate::rerank::EvolutionRerank::from_inference(llm.as_async(), model),
        }
    }

    /// Wraps an async client.
    pub fn from_async(inner: crate::rerank::EvolutionRerank) -> Self {
        Self { inner }
    }

    /// The async client behind this facade.
    pub fn as_async(&self) -> &crate::rerank::EvolutionRerank {
        &self.inner
    }

    /// The model name.
    pub fn model(&self) -> &str {
        self.inner.model()
    }

    /// See [`crate::EvolutionRerank::rerank`].
    pub fn rerank<S: AsRef<str>>(&self, query: &str, documents: &[S]) -> Result<RerankResponse> {
        self.rerank_with(query, documents, RerankOptions::default())
    }

    /// See [`crate::EvolutionRerank::rerank_with`].
    pub fn rerank_with<S: AsRef<str>>(
        &self,
        query: &str,
        documents: &[S],
        options: RerankOptions,
    ) -> Result<RerankResponse> {
        let query = query.to_string();
        let documents: Vec<String> = documents.iter().map(|d| d.as_ref().to_string()).collect();
        call!(self, |reranker| reranker
            .rerank_with(&query, &documents, options))
    }
}
