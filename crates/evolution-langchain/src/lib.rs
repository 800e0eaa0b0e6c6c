//! # evolution-langchain
//!
//! Cloud.ru Evolution Inference / Foundation Models for Rust: IAM access
//! tokens managed for you, OpenAI-compatible chat completions, and
//! [langchain-rust](https://docs.rs/langchain-rust) integration.
//!
//! ```
//! use evolution_langchain::{ChatMessage, ChatOptions, EvolutionInference};
//! use futures::StreamExt;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # // The local emulator stands in for Cloud.ru here.
//! # let emulator = evolution_emulator::Emulator::start().await?;
//! # let (key_id, secret) = (emulator.key_id(), emulator.secret());
//! # let base_url = emulator.base_url();
//! let llm = EvolutionInference::builder()
//!     .key_id(key_id)                    // or EvolutionInference::from_env()
//!     .secret(secret)
//!     .base_url(base_url)                // default: https://foundation-models.api.cloud.ru/v1
//! #   .auth_url(emulator.auth_url())
//!     .build()?;
//!
//! // The IAM token is fetched on first use, cached, and refreshed before it expires.
//! let answer = llm.invoke("Hello there").await?;
//! assert_eq!(answer, "Hello there"); // the emulator's model echoes
//!
//! // Real streaming, over server-sent events.
//! let mut stream = llm.stream("one two three").await?;
//! let mut text = String::new();
//! while let Some(chunk) = stream.next().await {
//!     text.push_str(chunk?.content().unwrap_or_default());
//! }
//! assert_eq!(text, "one two three");
//!
//! // Conversations with per-call options; every choice, tool calls and usage come back.
//! let reply = llm
//!     .chat(
//!         &[ChatMessage::system("Be brief."), ChatMessage::user("a b c d")],
//!         &ChatOptions::new().max_tokens(2),
//!     )
//!     .await?;
//! assert_eq!(reply.finish_reason(), Some("length"));
//! # Ok(()) }
//! ```
//!
//! [`TokenManager`] works on its own too: any HTTP request can carry its
//! token as `Authorization: Bearer …`. [`EvolutionEmbeddings`] serves
//! `/embeddings`, [`EvolutionRerank`] `/rerank`; the [`langchain`] module makes the client a langchain-rust
//! `LLM`; [`blocking`] offers the same calls to synchronous code.
//!
//! ## Features
//!
//! | feature | default | what it adds |
//! |---|---|---|
//! | `langchain` | yes | langchain-rust `LLM` and `Embedder` implementations |
//! | `native-tls` | yes | TLS through the platform library |
//! | `rustls` | no | TLS through rustls (platform roots, read on the first handshake); chosen over `native-tls` when both are on |
//! | `blocking` | yes | [`blocking`]: a synchronous facade for plain threads |
//! | `fernet` | yes | [`Credentials::from_fernet`]: Fernet-encrypted credentials |
//! | `async-openai` | no | `bridges::async_openai`: async-openai's client on Cloud.ru with managed tokens |
//! | `rig` | no | `bridges::rig`: rig 0.46's completion and embedding models and agents on Cloud.ru, with managed tokens |
//! | `otel` | no | `telemetry::otel`: the GenAI spans through an OpenTelemetry tracer (tracing-opentelemetry 0.34), and the GenAI client metrics |
//!
//! ## Secrets
//!
//! Key secrets and access tokens live in zeroizing [`secrecy`] boxes. No
//! `Debug` or `Display` output, error message or log event contains them; a
//! token appears in debug logs as at most its first eight characters.

/// The repository README's Rust blocks, compiled (and run, where they are
/// not marked `no_run`) as doctests of this crate.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
pub struct ReadmeDoctests;

mod audio;
pub mod auth;
#[cfg(feature = "blocking")]
pub mod blocking {
    //! A synchronous facade for programs without an async runtime, mirroring the
    //! async API name for name (as `reqwest::blocking` does): switch by changing
    //! the import.
    //!
    //! The calls run on one small Tokio runtime shared by every facade (a single
    //! worker thread, started on first use) and block the calling thread until
    //! they are done. Because the waiting happens outside Tokio, they work from
    //! any thread, `spawn_blocking` included, and never panic for being called
    //! near a runtime; inside an async task they would hold up that executor
    //! thread for the call, so use the async API there.
    //!
    //! ```no_run
    //! use evolution_langchain::blocking::{EvolutionInference, TokenManager};
    //!
    //! let manager = TokenManager::new("my-key-id", "my-secret");
    //! let token = manager.get_token()?;
    //!
    //! let llm = EvolutionInference::builder()
    //!     .key_id("my-key-id")
    //!     .secret("my-secret")
    //!     .build()?;
    //! for chunk in llm.stream("Tell me a story")? {
    //!     print!("{}", chunk?.content().unwrap_or_default());
    //! }
    //! # let _ = token;
    //! # Ok::<(), evolution_langchain::Error>(())
    //! ```
    //!
    //! Each twin lives in `src/blocking/` under its API group's name.

    mod audio;
    mod chat;
    mod embeddings;
    mod rerank;
    mod runtime;
    mod token_manager;

    use runtime::{call, runtime, wait};

    pub use audio::{EvolutionAudio, EvolutionAudioBuilder};
    pub use chat::{BatchResults, ChatStream, EvolutionInference, EvolutionInferenceBuilder};
    pub use embeddings::{EvolutionEmbeddings, EvolutionEmbeddingsBuilder};
    pub use rerank::{EvolutionRerank, EvolutionRerankBuilder};
    pub use token_manager::{TokenManager, TokenManagerBuilder};
}
#[cfg(any(feature = "async-openai", feature = "rig", feature = "genai"))]
pub mod bridges;
mod builder;
pub mod chat;
pub mod config;
mod embeddings;
mod error;
#[cfg(feature = "langchain")]
pub mod langchain;
mod models;
mod rerank;
pub mod telemetry;
mod transport;

/// Which client a builder's `build` returns; the setters are the same.
pub mod flavor {
    /// `build` returns the async client (the default).
    #[derive(Debug, Clone, Copy, Default)]
    pub struct Async;

    /// `build` returns the [blocking](crate::blocking) client.
    #[derive(Debug, Clone, Copy, Default)]
    pub struct Blocking;
}

pub use audio::{
    AudioSettings, EvolutionAudio, EvolutionAudioBuilder, Segment, TimestampGranularity,
    Transcription, TranscriptionFormat, TranscriptionOptions, Word, DEFAULT_MAX_UPLOAD_SIZE,
    DEFAULT_TRANSCRIPTION_MODEL, ENV_TRANSCRIPTION_MODEL,
};
pub use auth::{
    AccessToken, Credentials, StaticToken, TokenInfo, TokenManager, TokenManagerBuilder,
    TokenSource, TokenStats,
};
pub use builder::ClientBuilder;
pub use chat::wire::{
    ChatChunk, ChatMessage, ChatRequest, ChatResponse, Choice, CompletionTokensDetails,
    PromptTokensDetails, ResponseFormat, Role, Tool, ToolCall, ToolChoice, Usage,
};
pub use chat::{
    BatchError, ChatOptions, ChatSettings, ChatStream, EvolutionInference,
    EvolutionInferenceBuilder, Generation, LLMResult, ReasoningEffort,
};
pub use chat::{Extracted, ExtractionMode, OutputSchema};
pub use embeddings::{EmbeddingsSettings, EvolutionEmbeddings, EvolutionEmbeddingsBuilder};
pub use error::{AuthError, Error, Result};
/// The langchain-rust this crate integrates with, so users get a matching version.
#[cfg(feature = "langchain")]
pub use langchain_rust;
pub use models::ModelInfo;
pub use rerank::{
    EvolutionRerank, EvolutionRerankBuilder, RerankDocument, RerankOptions, RerankResponse,
    RerankResult, RerankSettings, ENV_RERANK_MODEL,
};
/// The schemars [`EvolutionInference::extract`] takes types of (1.x), so users get a
/// matching version (derive with `#[schemars(crate = "evolution_langchain::schemars")]`
/// when depending on it only through this crate).
pub use schemars;
pub use transport::connection::{DEFAULT_BASE_URL, DEFAULT_MAX_RETRIES, DEFAULT_REQUEST_TIMEOUT};
pub use transport::retry::RetryPolicy;
pub use transport::throttle::{BatchPermit, ThrottleStats, DEFAULT_MAX_RATE_LIMIT_WAIT};
pub use {
    error::RequestId,
    transport::connection::{DEFAULT_MAX_EVENT_SIZE, DEFAULT_MAX_RESPONSE_SIZE},
};
