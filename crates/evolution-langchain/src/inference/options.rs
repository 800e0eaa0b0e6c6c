//! Sampling parameters: the client's defaults (`ChatParams`) and per-call
//! overrides (`ChatOptions`).

use serde::Serialize;

use super::wire::{ChatMessage, ChatRequest, ResponseFormat, StreamOptions, Tool, ToolChoice};
use crate::error::{Error, Result};

/// Most choices one request may ask for (OpenAI's limit).
pub const MAX_N: u32 = 128;

/// The parameters every request carries unless a call overrides them.
/// Defaults follow the original client.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChatParams {
    /// Model name (default empty: the endpoint's own model).
    pub model: String,
    /// Most tokens to generate (default 512, at least 1).
    pub max_tokens: u32,
    /// Sampling temperature, 0–2 (default 1.0).
    pub temperature: f32,
    /// Nucleus sampling mass, 0–1 (default 1.0).
    pub top_p: f32,
    /// −2–2 (default 0).
    pub frequency_penalty: f32,
    /// −2–2 (default 0).
    pub presence_penalty: f32,
    /// Stop sequences (default none).
    pub stop: Option<Vec<String>>,
    /// Choices per prompt (default 1, 1–128).
    pub n: u32,
    /// Stream answers even for `invoke`/`chat` (default false).
    pub streaming: bool,
    /// Seed for reproducible sampling (default none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// Ask for a usage chunk at the end of streams (default true).
    #[serde(skip)]
    pub stream_usage: bool,
    /// Tools offered on every call (default none).
    #[serde(skip)]
    pub tools: Option<Vec<Tool>>,
    /// Tool choice on every call (default: the server's).
    #[serde(skip)]
    pub tool_choice: Option<ToolChoice>,
    /// Answer format on every call (default: the server's).
    #[serde(skip)]
    pub response_format: Option<ResponseFormat>,
}

impl Default for ChatParams {
    fn default() -> Self {
        Self {
            model: String::new(),
            max_tokens: 512,
            temperature: 1.0,
            top_p: 1.0,
            frequency_penalty: 0.0,
            presence_penalty: 0.0,
            stop: None,
            n: 1,
            streaming: false,
            seed: None,
            stream_usage: true,
            tools: None,
            tool_choice: None,
            response_format: None,
        }
    }
}

/// Overrides for one call; `None` keeps the client's setting.
///
/// ```
/// use evolution_langchain::ChatOptions;
/// let options = ChatOptions::new().temperature(0.0).stop(["\n\n"]);
/// # let _ = options;
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ChatOptions {
    /// Model name.
    pub model: Option<String>,
    /// Most tokens to generate.
    pub max_tokens: Option<u32>,
    /// Sampling temperature, 0–2.
    pub temperature: Option<f32>,
    /// Nucleus sampling mass, 0–1.
    pub top_p: Option<f32>,
    /// −2–2.
    pub frequency_penalty: Option<f32>,
    /// −2–2.
    pub presence_penalty: Option<f32>,
    /// Stop sequences (replace the client's).
    pub stop: Option<Vec<String>>,
    /// Choices per prompt.
    pub n: Option<u32>,
    /// Seed for reproducible sampling.
    pub seed: Option<u64>,
    /// Tools the model may call.
    pub tools: Option<Vec<Tool>>,
    /// Whether/which tool to call.
    pub tool_choice: Option<ToolChoice>,
    /// Answer format.
    pub response_format: Option<ResponseFormat>,
}

impl ChatOptions {
    /// No overrides.
    pub fn new() -> Self {
        Self::default()
    }
    /// Sets `model`.
    pub fn model(mut self, model: impl Into<String>) -> Self {
        self.model = Some(model.into());
        self
    }
    /// Sets `max_tokens`.
    pub fn max_tokens(mut self, max_tokens: u32) -> Self {
        self.max_tokens = Some(max_tokens);
        self
    }
    /// Sets `temperature`.
    pub fn temperature(mut self, temperature: f32) -> Self {
        self.temperature = Some(temperature);
        self
    }
    /// Sets `top_p`.
    pub fn top_p(mut self, top_p: f32) -> Self {
        self.top_p = Some(top_p);
        self
    }
    /// Sets `frequency_penalty`.
    pub fn frequency_penalty(mut self, penalty: f32) -> Self {
        self.frequency_penalty = Some(penalty);
        self
    }
    /// Sets `presence_penalty`.
    pub fn presence_penalty(mut self, penalty: f32) -> Self {
        self.presence_penalty = Some(penalty);
        self
    }
    /// Sets the stop sequences.
    pub fn stop<I, S>(mut self, stop: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.stop = Some(stop.into_iter().map(Into::into).collect());
        self
    }
    /// Sets `n`.
    pub fn n(mut self, n: u32) -> Self {
        self.n = Some(n);
        self
    }
    /// Sets `seed`.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }
    /// Offers tools.
    pub fn tools(mut self, tools: Vec<Tool>) -> Self {
        self.tools = Some(tools);
        self
    }
    /// Sets `tool_choice`.
    pub fn tool_choice(mut self, choice: ToolChoice) -> Self {
        self.tool_choice = Some(choice);
        self
    }
    /// Sets `response_format`.
    pub fn response_format(mut self, format: ResponseFormat) -> Self {
        self.response_format = Some(format);
        self
    }
}

impl ChatParams {
    /// Checks every range; the error names the field and what is allowed.
    pub fn validate(&self) -> Result<()> {
        check_range("temperature", self.temperature, 0.0, 2.0)?;
        check_range("top_p", self.top_p, 0.0, 1.0)?;
        check_range("frequency_penalty", self.frequency_penalty, -2.0, 2.0)?;
        check_range("presence_penalty", self.presence_penalty, -2.0, 2.0)?;
        if self.max_tokens == 0 {
            return Err(Error::config("max_tokens", "must be at least 1"));
        }
        if !(1..=MAX_N).contains(&self.n) {
            return Err(Error::config(
                "n",
                format!("must be between 1 and {MAX_N}, got {}", self.n),
            ));
        }
        Ok(())
    }

    /// These parameters with `options` applied.
    pub fn merged(&self, options: &ChatOptions) -> ChatParams {
        let mut params = self.clone();
        if let Some(model) = &options.model {
            params.model = model.clone();
        }
        params.max_tokens = options.max_tokens.unwrap_or(params.max_tokens);
        params.temperature = options.temperature.unwrap_or(params.temperature);
        params.top_p = options.top_p.unwrap_or(params.top_p);
        params.frequency_penalty = options
            .frequency_penalty
            .unwrap_or(params.frequency_penalty);
        params.presence_penalty = options.presence_penalty.unwrap_or(params.presence_penalty);
        if options.stop.is_some() {
            params.stop = options.stop.clone();
        }
        params.n = options.n.unwrap_or(params.n);
        params.seed = options.seed.or(params.seed);
        if options.tools.is_some() {
            params.tools = options.tools.clone();
        }
        if options.tool_choice.is_some() {
            params.tool_choice = options.tool_choice.clone();
        }
        if options.response_format.is_some() {
            params.response_format = options.response_format.clone();
        }
        params
    }

    /// The request body for `messages` with these parameters (consumed, so
    /// the per-call copy made by [`merged`](Self::merged) is not copied again).
    pub fn request(self, messages: Vec<ChatMessage>, stream: bool) -> ChatRequest {
        ChatRequest {
            model: self.model,
            messages,
            max_tokens: Some(self.max_tokens),
            temperature: Some(self.temperature),
            top_p: Some(self.top_p),
            frequency_penalty: Some(self.frequency_penalty),
            presence_penalty: Some(self.presence_penalty),
            stop: self.stop.filter(|stop| !stop.is_empty()),
            stream: Some(stream),
            n: Some(self.n),
            seed: self.seed,
            tools: self.tools.filter(|tools| !tools.is_empty()),
            tool_choice: self.tool_choice,
            response_format: self.response_format,
            stream_options: (stream && self.stream_usage).then_some(StreamOptions {
                include_usage: true,
            }),
        }
    }
}

fn check_range(field: &str, value: f32, min: f32, max: f32) -> Result<()> {
    // `contains` is false for NaN, which is what we want.
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(Error::config(
            field,
            format!("must be between {min} and {max}, got {value}"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_original() {
        let p = ChatParams::default();
        assert_eq!(
            (p.max_tokens, p.temperature, p.top_p, p.n),
            (512, 1.0, 1.0, 1)
        );
        assert_eq!((p.frequency_penalty, p.presence_penalty), (0.0, 0.0));
        assert!(!p.streaming && p.stop.is_none());
    }

    #[test]
    fn ranges_are_checked() {
        let bad = [
            ChatParams {
                temperature: 2.1,
                ..Default::default()
            },
            ChatParams {
                temperature: f32::NAN,
                ..Default::default()
            },
            ChatParams {
                top_p: -0.1,
                ..Default::default()
            },
            ChatParams {
                frequency_penalty: 2.5,
                ..Default::default()
            },
            ChatParams {
                presence_penalty: -3.0,
                ..Default::default()
            },
            ChatParams {
                max_tokens: 0,
                ..Default::default()
            },
            ChatParams {
                n: 0,
                ..Default::default()
            },
        ];
        for (params, field) in bad.iter().zip([
            "temperature",
            "temperature",
            "top_p",
            "frequency_penalty",
            "presence_penalty",
            "max_tokens",
            "n",
        ]) {
            let err = params.validate().unwrap_err();
            assert!(
                matches!(&err, Error::Config { field: f, .. } if f == field),
                "{err}"
            );
        }
        assert!(ChatParams {
            temperature: 2.0,
            top_p: 0.0,
            ..Default::default()
        }
        .validate()
        .is_ok());
    }

    #[test]
    fn options_override_and_stop_replaces() {
        let base = ChatParams {
            stop: Some(vec!["a".into()]),
            ..Default::default()
        };
        let merged = base.merged(&ChatOptions::new().temperature(0.0).stop(["b"]));
        assert_eq!(merged.temperature, 0.0);
        assert_eq!(merged.stop, Some(vec!["b".to_string()]));
        assert_eq!(merged.max_tokens, 512);
    }
}
