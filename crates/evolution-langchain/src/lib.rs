//! # evolution-langchain
//!
//! Cloud.ru Evolution Inference / Foundation Models for Rust: IAM access
//! tokens managed for you, OpenAI-compatible chat completions, and
//! [langchain-rust](https://docs.rs/langchain-rust) integration.
//!
//! ```no_run
//! # async fn run() -> evolution_langchain::Result<()> {
//! use evolution_langchain::TokenManager;
//!
//! let manager = TokenManager::builder()
//!     .key_id("my-key-id")
//!     .secret("my-secret")
//!     .build()?;
//! // Cached, refreshed before expiry, one IAM request however many tasks ask.
//! let token = manager.get_token().await?;
//! println!("token valid for {:?}", manager.info().expires_in);
//! # let _ = token;
//! # Ok(()) }
//! ```
//!
//! ## Features
//!
//! | feature | default | what it adds |
//! |---|---|---|
//! | `langchain` | yes | langchain-rust `LLM` and `Embedder` implementations |
//! | `native-tls` | yes | TLS through the platform library |
//! | `rustls` | no | TLS through rustls |
//! | `blocking` | yes | [`blocking`]: a synchronous facade for plain threads |
//! | `fernet` | yes | [`Credentials::from_fernet`]: Fernet-encrypted credentials |
//!
//! ## Secrets
//!
//! Key secrets and access tokens live in zeroizing [`secrecy`] boxes. No
//! `Debug` or `Display` output, error message or log event contains them; a
//! token appears in debug logs as at most its first eight characters.

pub mod auth;
#[cfg(feature = "blocking")]
pub mod blocking;
pub mod config;
mod embeddings;
mod error;
mod http;
pub mod inference;
#[cfg(feature = "langchain")]
pub mod langchain;
pub mod retry;

pub use auth::{
    AccessToken, Credentials, StaticToken, TokenInfo, TokenManager, TokenManagerBuilder,
    TokenSource, TokenStats,
};
pub use embeddings::{EvolutionEmbeddings, EvolutionEmbeddingsBuilder};
pub use error::{AuthError, Error, Result};
pub use inference::wire::{
    ChatChunk, ChatMessage, ChatResponse, ModelInfo, ResponseFormat, Role, Tool, ToolCall,
    ToolChoice, Usage,
};
pub use inference::{
    ChatOptions, ChatParams, ChatStream, EvolutionInference, EvolutionInferenceBuilder, Generation,
    LLMResult,
};
/// The langchain-rust this crate integrates with, so users get a matching version.
#[cfg(feature = "langchain")]
pub use langchain_rust;
pub use retry::RetryPolicy;
