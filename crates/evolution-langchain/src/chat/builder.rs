//! The chat client's builder: [`ClientBuilder`] with [`ChatSettings`], the
//! client's default options, the batch bound and span content recording.

use super::client::{EvolutionInference, DEFAULT_MAX_CONCURRENCY};
use super::options::{for_each_option, ChatOptions};
use crate::builder::ClientBuilder;
use crate::error::{Error, Result};
use crate::flavor::Async;

/// Settings for an [`EvolutionInference`]: [`ClientBuilder`] with the chat
/// settings. Methods are named after the fields.
pub type EvolutionInferenceBuilder<M = Async> = ClientBuilder<ChatSettings, M>;

/// The chat client's own settings in its [builder](EvolutionInferenceBuilder).
#[derive(Debug, Clone)]
pub struct ChatSettings {
    pub(crate) options: ChatOptions,
    pub(crate) max_concurrency: Option<usize>,
    pub(crate) record_content: bool,
}

impl Default for ChatSettings {
    fn default() -> Self {
        Self {
            options: ChatOptions::client_defaults(),
            max_concurrency: None,
            record_content: false,
        }
    }
}

/// Writes a builder setter for each option: it sets the option in the
/// builder's options through `ChatOptions`' own setter.
macro_rules! option_setters {
    ($(
        $(#[$doc:meta])*
        $name:ident: $ty:ty, ($arg:ident: $arg_ty:ty) => $convert:expr, $wire:ident, $check:expr;
    )*) => {
        $(
            $(#[$doc])*
            pub fn $name(mut self, $arg: $arg_ty) -> Self {
                self.settings.options = self.settings.options.$name($arg);
                self
            }
        )*
    };
}

impl<M> ClientBuilder<ChatSettings, M> {
    for_each_option!(option_setters);

    /// Lays `options` over the defaults set so far: every parameter it sets
    /// replaces the builder's.
    pub fn options(mut self, options: ChatOptions) -> Self {
        self.settings.options.apply(options);
        self
    }

    /// Most requests in flight at once in batches (default 8).
    pub fn max_concurrency(mut self, max_concurrency: usize) -> Self {
        self.settings.max_concurrency = Some(max_concurrency);
        self
    }

    /// Records message content on the calls' GenAI spans (default `false`):
    /// the messages sent as `gen_ai.input.messages`, the answers as
    /// `gen_ai.output.messages` (see [`telemetry`](crate::telemetry)).
    ///
    /// Prompts and answers may hold personal or secret data; turn this on
    /// only where the trace backend may keep them.
    pub fn record_content(mut self, record: bool) -> Self {
        self.settings.record_content = record;
        self
    }

    /// Fills every setting not given yet from the environment (loading
    /// `.env` first, without overriding the process environment); see
    /// [`EvolutionInference::from_env`] for the variables.
    pub fn from_env(self) -> Result<Self> {
        self.fill_from_env(|settings, env| {
            if settings.options.model_name().is_empty() {
                if let Some(model) = &env.model {
                    settings.options.model = Some(model.clone());
                }
            }
        })
    }

    /// Checks every setting and creates the async client.
    pub(crate) fn build_async(self) -> Result<EvolutionInference> {
        self.settings.options.check_config()?;
        let max_concurrency = self
            .settings
            .max_concurrency
            .unwrap_or(DEFAULT_MAX_CONCURRENCY);
        if max_concurrency == 0 {
            return Err(Error::config("max_concurrency", "must be at least 1"));
        }
        let (settings, transport) = self.into_parts()?;
        Ok(EvolutionInference::from_parts(
            transport,
            settings.options,
            max_concurrency,
            settings.record_content,
        ))
    }
}

impl ClientBuilder<ChatSettings, Async> {
    /// Checks every setting and creates the client. Nothing is sent yet.
    pub fn build(self) -> Result<EvolutionInference> {
        self.build_async()
    }
}
