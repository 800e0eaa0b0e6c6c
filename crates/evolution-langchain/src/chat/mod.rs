//! The chat-completions API group: the client and its builder, the one
//! parameter type, the wire format, streaming and batches.

mod batch;
mod builder;
mod client;
mod extract;
mod options;
pub mod sse;
mod stream;
pub mod wire;

pub use batch::{BatchError, Generation, LLMResult};
pub use builder::{ChatSettings, EvolutionInferenceBuilder};
pub use client::{EvolutionInference, DEFAULT_MAX_CONCURRENCY, LLM_TYPE};
pub use extract::{Extracted, ExtractionMode, OutputSchema};
pub use options::{ChatOptions, ReasoningEffort, MAX_N};
pub use stream::{ChatStream, StreamAccumulator, StreamReadError};

/// The path of the chat-completions endpoint under the base URL.
pub(crate) const PATH: &str = "chat/completions";
