//! Everything about calling the model: the client and its builder, the one
//! parameter type, the wire format, streaming and batches.

mod batch;
mod builder;
mod client;
mod options;
pub mod sse;
mod stream;
pub mod wire;

pub use batch::{BatchError, Generation, LLMResult};
pub use builder::EvolutionInferenceBuilder;
pub use client::{EvolutionInference, DEFAULT_MAX_CONCURRENCY, LLM_TYPE};
pub use options::{ChatOptions, ReasoningEffort, MAX_N};
pub use stream::{ChatStream, StreamAccumulator, StreamReadError};

/// The former name of [`ChatOptions`], which now holds both the client's
/// defaults and a call's overrides.
#[deprecated(since = "0.2.0", note = "use `ChatOptions`")]
pub type ChatParams = ChatOptions;
