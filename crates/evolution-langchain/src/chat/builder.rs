//! `EvolutionInferenceBuilder`: the connection settings, the default
//! options and the batch bound of a client, checked once by `build`.

use std::fmt;
use std::marker::PhantomData;

use super::client::{EvolutionInference, DEFAULT_MAX_CONCURRENCY};
use super::options::{for_each_option, ChatOptions};
use crate::config::EnvSettings;
use crate::error::{Error, Result};
use crate::flavor::Async;
use crate::transport::connection::{connection_setters, Connection};

/// Writes a builder setter for each option: it sets the option in the
/// builder's `options` through `ChatOptions`' own setter.
macro_rules! option_setters {
    ($(
        $(#[$doc:meta])*
        $name:ident: $ty:ty, ($arg:ident: $arg_ty:ty) => $convert:expr, $wire:ident, $check:expr;
    )*) => {
        $(
            $(#[$doc])*
            pub fn $name(mut self, $arg: $arg_ty) -> Self {
                self.options = self.options.$name($arg);
                self
            }
        )*
    };
}

/// Settings for an [`EvolutionInference`]; methods are named after the fields.
///
/// `M` says what `build` returns: the async client (the default), or with
/// [`Blocking`](crate::flavor::Blocking) the
/// [blocking](crate::blocking::EvolutionInference) one. The setters are the
/// same either way.
#[derive(Clone)]
pub struct EvolutionInferenceBuilder<M = Async> {
    pub(crate) connection: Connection,
    pub(crate) options: ChatOptions,
    pub(crate) max_concurrency: Option<usize>,
    pub(crate) record_content: bool,
    flavor: PhantomData<M>,
}

impl<M> Default for EvolutionInferenceBuilder<M> {
    fn default() -> Self {
        Self {
            connection: Connection::default(),
            options: ChatOptions::client_defaults(),
            max_concurrency: None,
            record_content: false,
            flavor: PhantomData,
        }
    }
}

impl<M> EvolutionInferenceBuilder<M> {
    connection_setters!();
    for_each_option!(option_setters);

    /// Lays `options` over the defaults set so far: every parameter it sets
    /// replaces the builder's.
    pub fn options(mut self, options: ChatOptions) -> Self {
        self.options.apply(options);
        self
    }

    /// Most requests in flight at once in batches (default 8).
    pub fn max_concurrency(mut self, max_concurrency: usize) -> Self {
        self.max_concurrency = Some(max_concurrency);
        self
    }

    /// Records message content on the calls' GenAI spans (default `false`):
    /// the messages sent as `gen_ai.input.messages`, the answers as
    /// `gen_ai.output.messages` (see [`telemetry`](crate::telemetry)).
    ///
    /// Prompts and answers may hold personal or secret data; turn this on
    /// only where the trace backend may keep them.
    pub fn record_content(mut self, record: bool) -> Self {
        self.record_content = record;
        self
    }

    /// Fills every setting not given yet from the environment (loading
    /// `.env` first, without overriding the process environment); see
    /// [`EvolutionInference::from_env`] for the variables.
    pub fn from_env(mut self) -> Result<Self> {
        let env = EnvSettings::read()?;
        self.connection.fill_from_env(&env)?;
        if self.options.model_name().is_empty() {
            if let Some(model) = env.model {
                self.options.model = Some(model);
            }
        }
        Ok(self)
    }

    /// Same settings, another kind of client.
    #[cfg(feature = "blocking")]
    pub(crate) fn into_flavor<N>(self) -> EvolutionInferenceBuilder<N> {
        EvolutionInferenceBuilder {
            connection: self.connection,
            options: self.options,
            max_concurrency: self.max_concurrency,
            record_content: self.record_content,
            flavor: PhantomData,
        }
    }

    /// Checks every setting and creates the async client.
    pub(crate) fn build_async(self) -> Result<EvolutionInference> {
        self.options.check_config()?;
        let max_concurrency = self.max_concurrency.unwrap_or(DEFAULT_MAX_CONCURRENCY);
        if max_concurrency == 0 {
            return Err(Error::config("max_concurrency", "must be at least 1"));
        }
        Ok(EvolutionInference::from_parts(
            self.connection.into_transport()?,
            self.options,
            max_concurrency,
            self.record_content,
        ))
    }
}

impl EvolutionInferenceBuilder<Async> {
    /// Checks every setting and creates the client. Nothing is sent yet.
    pub fn build(self) -> Result<EvolutionInference> {
        self.build_async()
    }
}

impl<M> fmt::Debug for EvolutionInferenceBuilder<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EvolutionInferenceBuilder")
            .field("connection", &self.connection)
            .field("options", &self.options)
            .field("max_concurrency", &self.max_concurrency)
            .field("record_content", &self.record_content)
            .finish()
    }
}
