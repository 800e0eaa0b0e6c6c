//! A synchronous facade for programs without an async runtime, mirroring the
//! async API name for name (as `reqwest::blocking` does): switch by changing
//! the import.
//!
//! Each facade owns a small Tokio runtime (one worker thread) on which the
//! async implementation runs; calls block the calling thread until done.
//! Do not call these methods from inside an async task: they return
//! [`Error::Config`] there instead of blocking the executor.
//!
//! ```no_run
//! use evolution_langchain::blocking::TokenManager;
//!
//! let manager = TokenManager::new("my-key-id", "my-secret")?;
//! let token = manager.get_token()?;
//! # let _ = token;
//! # Ok::<(), evolution_langchain::Error>(())
//! ```

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::{AccessToken, Credentials, RetryPolicy, TokenInfo, TokenStats};

/// The runtime behind the facades. Shut down in the background when the last
/// user goes away, so dropping a facade never blocks or panics, even inside
/// an async context.
#[derive(Debug)]
pub(crate) struct BlockingRuntime(Option<tokio::runtime::Runtime>);

impl BlockingRuntime {
    pub(crate) fn new() -> Result<Arc<Self>> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("evolution-blocking")
            .enable_all()
            .build()
            .map_err(|e| Error::config("blocking runtime", format!("could not be started: {e}")))?;
        Ok(Arc::new(Self(Some(runtime))))
    }

    /// Runs `future` to completion on this runtime, blocking the caller.
    pub(crate) fn block_on<F: Future>(&self, future: F) -> Result<F::Output> {
        if tokio::runtime::Handle::try_current().is_ok() {
            return Err(Error::config(
                "blocking API",
                "was called from inside an async runtime, where it would stall the executor; use the async API there",
            ));
        }
        let runtime = self.0.as_ref().expect("present until drop");
        Ok(runtime.block_on(future))
    }

    /// Runs `make()`'s future inside the runtime context, so code that needs a
    /// runtime while *building* things (e.g. spawning) finds one.
    pub(crate) fn enter<T>(&self, make: impl FnOnce() -> T) -> T {
        let _guard = self.0.as_ref().expect("present until drop").enter();
        make()
    }
}

impl Drop for BlockingRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

/// Blocking counterpart of [`crate::TokenManager`]. Cloning shares the cache
/// and the runtime; clones may be used from many threads at once.
#[derive(Debug, Clone)]
pub struct TokenManager {
    inner: crate::TokenManager,
    runtime: Arc<BlockingRuntime>,
}

impl TokenManager {
    /// A manager for the Cloud.ru IAM endpoint with default settings.
    pub fn new(key_id: impl Into<String>, secret: impl Into<String>) -> Result<Self> {
        Self::builder().key_id(key_id).secret(secret).build()
    }

    /// A builder for every setting.
    pub fn builder() -> TokenManagerBuilder {
        TokenManagerBuilder(crate::TokenManager::builder())
    }

    /// Wraps an async manager, sharing its cache.
    pub fn from_async(inner: crate::TokenManager) -> Result<Self> {
        Ok(Self {
            inner,
            runtime: BlockingRuntime::new()?,
        })
    }

    /// A valid access token; see [`crate::TokenManager::get_token`].
    pub fn get_token(&self) -> Result<AccessToken> {
        self.runtime.block_on(self.inner.get_token())?
    }

    /// Forgets the cached token.
    pub fn invalidate(&self) {
        self.inner.invalidate();
    }

    /// The cached token's state, without revealing it.
    pub fn info(&self) -> TokenInfo {
        self.runtime.enter(|| self.inner.info())
    }

    /// Counters and averages over all refreshes so far.
    pub fn stats(&self) -> TokenStats {
        self.inner.stats()
    }

    /// The async manager behind this facade (shares the cache).
    pub fn as_async(&self) -> &crate::TokenManager {
        &self.inner
    }
}

/// Blocking counterpart of [`crate::TokenManagerBuilder`]; same methods.
#[derive(Debug, Clone)]
pub struct TokenManagerBuilder(crate::TokenManagerBuilder);

impl TokenManagerBuilder {
    /// The access key id.
    pub fn key_id(self, key_id: impl Into<String>) -> Self {
        Self(self.0.key_id(key_id))
    }
    /// The access key secret.
    pub fn secret(self, secret: impl Into<String>) -> Self {
        Self(self.0.secret(secret))
    }
    /// Key id and secret together.
    pub fn credentials(self, credentials: Credentials) -> Self {
        Self(self.0.credentials(credentials))
    }
    /// Backup credentials, used when IAM refuses the ones before them.
    pub fn fallback_credentials(self, credentials: Credentials) -> Self {
        Self(self.0.fallback_credentials(credentials))
    }
    /// The IAM token endpoint.
    pub fn auth_url(self, auth_url: impl Into<String>) -> Self {
        Self(self.0.auth_url(auth_url))
    }
    /// How long before expiry a token is treated as expired.
    pub fn refresh_buffer(self, refresh_buffer: Duration) -> Self {
        Self(self.0.refresh_buffer(refresh_buffer))
    }
    /// How long before the buffer a background refresh starts.
    pub fn refresh_ahead(self, refresh_ahead: Duration) -> Self {
        Self(self.0.refresh_ahead(refresh_ahead))
    }
    /// Timeout for each request to IAM.
    pub fn timeout(self, timeout: Duration) -> Self {
        Self(self.0.timeout(timeout))
    }
    /// How transient failures are retried.
    pub fn retry(self, retry: RetryPolicy) -> Self {
        Self(self.0.retry(retry))
    }
    /// Requests sent at most per refresh.
    pub fn max_attempts(self, max_attempts: u32) -> Self {
        Self(self.0.max_attempts(max_attempts))
    }
    /// The HTTP client to use.
    pub fn http_client(self, client: reqwest::Client) -> Self {
        Self(self.0.http_client(client))
    }
    /// Checks the settings and creates the manager.
    pub fn build(self) -> Result<TokenManager> {
        let runtime = BlockingRuntime::new()?;
        // reqwest's client must be created inside a runtime context.
        let inner = runtime.enter(|| self.0.build())?;
        Ok(TokenManager { inner, runtime })
    }
}

/// Blocking counterpart of [`crate::EvolutionInference`]: the same calls,
/// returning when the answer is complete.
///
/// Configure it with the async builder and finish with
/// [`build_blocking`](crate::EvolutionInferenceBuilder::build_blocking):
///
/// ```no_run
/// use evolution_langchain::blocking::EvolutionInference;
///
/// let llm = EvolutionInference::builder()
///     .key_id("my-key-id")
///     .secret("my-secret")
///     .base_url("https://foundation-models.api.cloud.ru/api/gigacube/openai/v1")
///     .build_blocking()?;
/// for chunk in llm.stream("Tell me a story")? {
///     print!("{}", chunk?.content().unwrap_or_default());
/// }
/// # Ok::<(), evolution_langchain::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct EvolutionInference {
    inner: crate::EvolutionInference,
    runtime: Arc<BlockingRuntime>,
}

impl EvolutionInference {
    /// The async builder; finish it with `build_blocking()`.
    pub fn builder() -> crate::EvolutionInferenceBuilder {
        crate::EvolutionInference::builder()
    }

    /// A client configured from the `EVOLUTION_*` variables.
    pub fn from_env() -> Result<Self> {
        crate::EvolutionInference::builder()
            .from_env()?
            .build_blocking()
    }

    /// Wraps an async client, sharing its pool and token cache.
    pub fn from_async(inner: crate::EvolutionInference) -> Result<Self> {
        Ok(Self {
            inner,
            runtime: BlockingRuntime::new()?,
        })
    }

    /// The async client behind this facade.
    pub fn as_async(&self) -> &crate::EvolutionInference {
        &self.inner
    }

    /// See [`crate::EvolutionInference::invoke`].
    pub fn invoke(&self, prompt: &str) -> Result<String> {
        self.runtime.block_on(self.inner.invoke(prompt))?
    }

    /// See [`crate::EvolutionInference::chat`].
    pub fn chat(
        &self,
        messages: impl AsRef<[crate::ChatMessage]>,
        options: impl std::borrow::Borrow<crate::ChatOptions>,
    ) -> Result<crate::ChatResponse> {
        self.runtime.block_on(self.inner.chat(messages, options))?
    }

    /// See [`crate::EvolutionInference::generate`].
    pub fn generate<S: AsRef<str>>(&self, prompts: &[S]) -> Result<crate::LLMResult> {
        self.runtime.block_on(self.inner.generate(prompts))?
    }

    /// See [`crate::EvolutionInference::generate_with_options`].
    pub fn generate_with_options<S: AsRef<str>>(
        &self,
        prompts: &[S],
        options: impl std::borrow::Borrow<crate::ChatOptions>,
    ) -> Result<crate::LLMResult> {
        self.runtime
            .block_on(self.inner.generate_with_options(prompts, options))?
    }

    /// See [`crate::EvolutionInference::stream`]; chunks come from an iterator.
    pub fn stream(&self, prompt: &str) -> Result<ChatStream> {
        self.stream_chat(
            &[crate::ChatMessage::user(prompt)],
            crate::ChatOptions::default(),
        )
    }

    /// See [`crate::EvolutionInference::stream_chat`].
    pub fn stream_chat(
        &self,
        messages: impl AsRef<[crate::ChatMessage]>,
        options: impl std::borrow::Borrow<crate::ChatOptions>,
    ) -> Result<ChatStream> {
        let inner = self
            .runtime
            .block_on(self.inner.stream_chat(messages, options))??;
        Ok(ChatStream {
            inner,
            runtime: Arc::clone(&self.runtime),
        })
    }
}

/// A streamed answer read by blocking the calling thread for each chunk.
#[derive(Debug)]
pub struct ChatStream {
    inner: crate::ChatStream,
    runtime: Arc<BlockingRuntime>,
}

impl Iterator for ChatStream {
    type Item = Result<crate::ChatChunk>;

    fn next(&mut self) -> Option<Self::Item> {
        use futures::StreamExt;
        match self.runtime.block_on(self.inner.next()) {
            Ok(item) => item,
            Err(error) => Some(Err(error)),
        }
    }
}

impl crate::EvolutionInferenceBuilder {
    /// Checks the settings and creates a [blocking](EvolutionInference) client.
    pub fn build_blocking(self) -> Result<EvolutionInference> {
        let runtime = BlockingRuntime::new()?;
        let inner = runtime.enter(|| self.build())?;
        Ok(EvolutionInference { inner, runtime })
    }
}
