//! Everything about calling the model: the client, its parameters, the wire
//! format, streaming and batches.

mod batch;
mod client;
mod options;
pub mod sse;
mod stream;
pub(crate) mod transport;
pub mod wire;

pub use batch::{Generation, LLMResult};
pub use client::{
    EvolutionInference, EvolutionInferenceBuilder, DEFAULT_MAX_CONCURRENCY, LLM_TYPE,
};
pub use options::{ChatOptions, ChatParams};
pub use stream::{ChatStream, StreamAccumulator, StreamReadError};
