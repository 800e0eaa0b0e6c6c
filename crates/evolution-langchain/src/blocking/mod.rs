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

mod chat;
mod rerank;
mod token_manager;

use std::future::Future;
use std::sync::OnceLock;

pub use chat::{
    BatchResults, ChatStream, EvolutionEmbeddings, EvolutionEmbeddingsBuilder, EvolutionInference,
    EvolutionInferenceBuilder,
};
pub use rerank::{EvolutionRerank, EvolutionRerankBuilder};
pub use token_manager::{TokenManager, TokenManagerBuilder};

use crate::error::{Error, Result};

/// The runtime behind every facade, started on first use and kept for the
/// life of the process (one idle thread).
fn runtime() -> Result<&'static tokio::runtime::Runtime> {
    static RUNTIME: OnceLock<std::result::Result<tokio::runtime::Runtime, String>> =
        OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("evolution-blocking")
                .enable_all()
                .build()
                .map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| Error::Runtime {
            message: format!("the blocking facade's runtime could not be started: {e}"),
        })
}

/// Runs `future` on the facades' runtime and blocks this thread until it is
/// done. The wait is a plain thread park, not a Tokio `block_on`, so it is
/// allowed on every thread (Tokio forbids nesting its own).
fn wait<F>(future: F) -> Result<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let task = runtime()?.spawn(future);
    futures::executor::block_on(task).map_err(|e| Error::Runtime {
        message: format!("a blocking call did not finish: {e}"),
    })
}
