//! Model and sampling flags shared by `chat` and `batch`.
//!
//! Ranges are checked here, while parsing, so the message names the flag
//! (`--temperature`) rather than the library's field (`temperature`).

use clap::Args;
use evolution_langchain::config::ENV_MODEL;
use evolution_langchain::{ChatMessage, ChatOptions};

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
    #[arg(short, long, value_name = "T", value_parser = range(0.0, 2.0))]
    pub temperature: Option<f32>,

    /// Most tokens to generate [default: 512].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_tokens: Option<u32>,

    /// Nucleus sampling mass, 0–1 [default: 1].
    #[arg(long, value_name = "P", value_parser = range(0.0, 1.0))]
    pub top_p: Option<f32>,

    /// Stop sequence (repeatable).
    #[arg(long, value_name = "TEXT")]
    pub stop: Vec<String>,

    /// How hard a reasoning model thinks: none, minimal, low, medium, high, …
    #[arg(long, value_name = "LEVEL", value_parser = reasoning_effort)]
    pub reasoning_effort: Option<String>,
}

/// A reasoning level: one word of letters, digits and `_`.
fn reasoning_effort(text: &str) -> Result<String, String> {
    let level = text.trim().to_ascii_lowercase();
    if level.is_empty() || !level.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err("expected a level such as low, medium or high".into());
    }
    Ok(level)
}

/// A parser for a number within `min..=max`.
fn range(min: f32, max: f32) -> impl Fn(&str) -> Result<f32, String> + Clone {
    move |text: &str| {
        let value: f32 = text
            .trim()
            .parse()
            .map_err(|_| format!("expected a number between {min} and {max}"))?;
        // `contains` is false for NaN, which is what we want.
        if (min..=max).contains(&value) {
            Ok(value)
        } else {
            Err(format!("must be between {min} and {max}"))
        }
    }
}

impl SamplingArgs {
    /// The per-call options these flags stand for; unset flags keep the
    /// client's defaults.
    pub fn chat_options(&self) -> ChatOptions {
        let mut options = ChatOptions::new();
        if let Some(model) = self.model.as_deref().map(str::trim) {
            if !model.is_empty() {
                options = options.model(model);
            }
        }
        options.temperature = self.temperature;
        options.max_tokens = self.max_tokens;
        options.top_p = self.top_p;
        if !self.stop.is_empty() {
            options = options.stop(self.stop.iter().cloned());
        }
        if let Some(level) = &self.reasoning_effort {
            options = options.reasoning_effort(level.as_str());
        }
        options
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
    fn ranges_name_the_limits() {
        let temperature = range(0.0, 2.0);
        assert_eq!(temperature("1.5"), Ok(1.5));
        assert_eq!(temperature("2"), Ok(2.0));
        assert!(temperature("2.5").unwrap_err().contains("between 0 and 2"));
        assert!(temperature("NaN").is_err());
        assert!(temperature("warm").is_err());
    }

    #[test]
    fn unset_flags_override_nothing() {
        assert_eq!(SamplingArgs::default().chat_options(), ChatOptions::new());
        let args = SamplingArgs {
            model: Some("m".into()),
            temperature: Some(0.0),
            stop: vec!["END".into()],
            ..SamplingArgs::default()
        };
        let options = args.chat_options();
        assert_eq!(options.model.as_deref(), Some("m"));
        assert_eq!(options.temperature, Some(0.0));
        assert_eq!(options.stop, Some(vec!["END".to_string()]));
    }
}
