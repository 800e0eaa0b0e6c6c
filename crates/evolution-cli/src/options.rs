//! Model and sampling flags shared by `chat` and `batch`.
//!
//! The flags are the library's [`ChatOptions`] under their own names, and
//! their ranges are the library's: [`SamplingArgs::chat_options`] fills one
//! `ChatOptions` and asks it to check itself, then names the flag in the
//! error. Numbers are taken as they come (`-t -1` is a temperature, not a
//! flag), so the error can say what is allowed.

use clap::Args;
use evolution_langchain::config::ENV_MODEL;
use evolution_langchain::{ChatMessage, ChatOptions};

use crate::exit::CliError;
use crate::message::setting;

/// The model and how it samples.
#[derive(Debug, Clone, Default, Args)]
#[command(next_help_heading = "Model")]
pub struct SamplingArgs {
    /// Model name [default: the endpoint's].
    #[arg(short, long, value_name = "NAME", env = ENV_MODEL)]
    pub model: Option<String>,

    /// System prompt, sent before the conversation.
    #[arg(short, long, value_name = "TEXT")]
    pub system: Option<String>,

    /// Sampling temperature, 0–2 [default: 1].
    #[arg(short, long, value_name = "T", allow_negative_numbers = true)]
    pub temperature: Option<f32>,

    /// Most tokens to generate, at least 1 [default: 512].
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub max_tokens: Option<u32>,

    /// Nucleus sampling mass, 0–1 [default: 1].
    #[arg(long, value_name = "P", allow_negative_numbers = true)]
    pub top_p: Option<f32>,

    /// Penalty for tokens by how often they appeared, −2–2 [default: 0].
    #[arg(long, value_name = "X", allow_negative_numbers = true)]
    pub frequency_penalty: Option<f32>,

    /// Penalty for tokens that appeared at all, −2–2 [default: 0].
    #[arg(long, value_name = "X", allow_negative_numbers = true)]
    pub presence_penalty: Option<f32>,

    /// Seed for reproducible sampling (where the model supports it).
    #[arg(long, value_name = "N")]
    pub seed: Option<u64>,

    /// Stop sequence (repeatable; one starting with a hyphen: --stop=-x).
    #[arg(long, value_name = "TEXT")]
    pub stop: Vec<String>,

    /// How hard a reasoning model thinks: none, minimal, low, medium, high, …
    #[arg(long, value_name = "LEVEL")]
    pub reasoning_effort: Option<String>,
}

impl SamplingArgs {
    /// The per-call options these flags stand for (unset flags keep the
    /// client's defaults), checked by the library; a value out of range is
    /// a usage error naming its flag and what is allowed (and pointing at
    /// the help of `command`, the subcommand).
    pub fn chat_options(&self, command: &str) -> Result<ChatOptions, CliError> {
        let mut options = ChatOptions::new();
        options.model = self
            .model
            .as_deref()
            .map(str::trim)
            .filter(|m| !m.is_empty())
            .map(str::to_string);
        options.temperature = self.temperature;
        options.max_tokens = self.max_tokens;
        options.top_p = self.top_p;
        options.frequency_penalty = self.frequency_penalty;
        options.presence_penalty = self.presence_penalty;
        options.seed = self.seed;
        if !self.stop.is_empty() {
            options.stop = Some(self.stop.clone());
        }
        options.reasoning_effort = self.reasoning_effort.as_deref().map(Into::into);
        options.check().map_err(|(field, message)| {
            CliError::usage(format!(
                "invalid value for {}: {message} (see 'evolution {command} --help')",
                setting(field)
            ))
        })?;
        Ok(options)
    }

    /// The system message, if one was given.
    pub fn system_message(&self) -> Option<ChatMessage> {
        self.system
            .as_deref()
            .filter(|s| !s.trim().is_empty())
            .map(ChatMessage::system)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_the_librarys_and_name_the_flag() {
        let with = |temperature: f32| SamplingArgs {
            temperature: Some(temperature),
            ..SamplingArgs::default()
        };
        assert_eq!(
            with(2.0).chat_options("chat").unwrap().temperature,
            Some(2.0)
        );
        let error = with(-1.0).chat_options("chat").unwrap_err();
        assert_eq!(error.exit, crate::exit::Exit::Usage);
        assert!(
            error
                .message
                .contains("invalid value for --temperature: must be between 0 and 2, got -1"),
            "{}",
            error.message
        );
        assert!(with(f32::NAN).chat_options("chat").is_err());
        let effort = SamplingArgs {
            reasoning_effort: Some("very hard".into()),
            ..SamplingArgs::default()
        };
        let error = effort.chat_options("chat").unwrap_err().message;
        assert!(error.contains("--reasoning-effort"), "{error}");
        let tokens = SamplingArgs {
            max_tokens: Some(0),
            ..SamplingArgs::default()
        };
        let error = tokens.chat_options("chat").unwrap_err().message;
        assert!(
            error.contains("--max-tokens: must be at least 1"),
            "{error}"
        );
    }

    #[test]
    fn unset_flags_override_nothing() {
        assert_eq!(
            SamplingArgs::default().chat_options("chat").unwrap(),
            ChatOptions::new()
        );
        let args = SamplingArgs {
            model: Some("m".into()),
            temperature: Some(0.0),
            seed: Some(7),
            presence_penalty: Some(-0.5),
            stop: vec!["END".into()],
            ..SamplingArgs::default()
        };
        let options = args.chat_options("chat").unwrap();
        assert_eq!(options.model.as_deref(), Some("m"));
        assert_eq!(options.temperature, Some(0.0));
        assert_eq!(options.seed, Some(7));
        assert_eq!(options.presence_penalty, Some(-0.5));
        assert_eq!(options.stop, Some(vec!["END".to_string()]));
    }
}
