//! The transcription wire format: the options sent as form fields, and the
//! reply in each response format. Plain serde types, no I/O.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The format the server answers in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum TranscriptionFormat {
    /// `{"text": …}` (the default).
    #[default]
    Json,
    /// The text alone.
    Text,
    /// JSON with the language, the duration, segments and (when asked
    /// for) words, with their timings.
    VerboseJson,
    /// SubRip subtitles.
    Srt,
    /// WebVTT subtitles.
    Vtt,
}

impl TranscriptionFormat {
    /// The form value.
    pub fn as_str(self) -> &'static str {
        match self {
            TranscriptionFormat::Json => "json",
            TranscriptionFormat::Text => "text",
            TranscriptionFormat::VerboseJson => "verbose_json",
            TranscriptionFormat::Srt => "srt",
            TranscriptionFormat::Vtt => "vtt",
        }
    }

    /// Whether the reply is JSON (else text).
    pub(crate) fn is_json(self) -> bool {
        matches!(
            self,
            TranscriptionFormat::Json | TranscriptionFormat::VerboseJson
        )
    }
}

impl std::str::FromStr for TranscriptionFormat {
    type Err = String;

    /// `json`, `text`, `verbose_json` (or `verbose-json`), `srt` or `vtt`.
    fn from_str(text: &str) -> Result<Self, String> {
        match text.trim().to_ascii_lowercase().replace('-', "_").as_str() {
            "json" => Ok(TranscriptionFormat::Json),
            "text" => Ok(TranscriptionFormat::Text),
            "verbose_json" => Ok(TranscriptionFormat::VerboseJson),
            "srt" => Ok(TranscriptionFormat::Srt),
            "vtt" => Ok(TranscriptionFormat::Vtt),
            other => Err(format!(
                "unknown response format {other:?}: expected json, text, verbose_json, srt or vtt"
            )),
        }
    }
}

/// Which timings `verbose_json` carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimestampGranularity {
    /// Per segment (the default).
    Segment,
    /// Per word.
    Word,
}

impl TimestampGranularity {
    /// The form value.
    pub fn as_str(self) -> &'static str {
        match self {
            TimestampGranularity::Segment => "segment",
            TimestampGranularity::Word => "word",
        }
    }
}

/// Per-call settings of [`EvolutionAudio::transcribe_file`](crate::EvolutionAudio::transcribe_file) and its siblings;
/// every one left unset is the server's choice.
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct TranscriptionOptions {
    /// The spoken language, ISO-639-1 (`"ru"`, `"en"`, …); detected when unset.
    pub language: Option<String>,
    /// Text that guides the style, or continues an earlier piece.
    pub prompt: Option<String>,
    /// Sampling temperature, 0–1.
    pub temperature: Option<f32>,
    /// The reply's format (default [`TranscriptionFormat::Json`]).
    pub response_format: TranscriptionFormat,
    /// The timings of a `verbose_json` reply.
    pub timestamp_granularities: Vec<TimestampGranularity>,
}

impl TranscriptionOptions {
    /// Every setting left to the server.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets [`language`](Self::language).
    pub fn language(mut self, language: impl Into<String>) -> Self {
        self.language = Some(language.into());
        self
    }

    /// Sets [`prompt`](Self::prompt).
    pub fn prompt(mut self, prompt: impl Into<String>) -> Self {
        self.prompt = Some(prompt.into());
        self
    }

    /// Sets [`temperature`](Self::temperature).
    pub fn temperature(mut self, temperature: f32) -> Self {
        self.temperature = Some(temperature);
        self
    }

    /// Sets [`response_format`](Self::response_format).
    pub fn response_format(mut self, format: TranscriptionFormat) -> Self {
        self.response_format = format;
        self
    }

    /// Adds a timestamp granularity (`verbose_json` only).
    pub fn timestamp_granularity(mut self, granularity: TimestampGranularity) -> Self {
        if !self.timestamp_granularities.contains(&granularity) {
            self.timestamp_granularities.push(granularity);
        }
        self
    }

    /// Checks the options before anything is sent, as every transcription call
    /// does: the temperature is between 0 and 1, timestamp granularities come
    /// with [`TranscriptionFormat::VerboseJson`], and a language, when set, is
    /// not blank. The error names the first field at fault (`temperature`,
    /// `timestamp_granularities` or `language`) and what is wrong with it,
    /// like [`ChatOptions::check`](crate::ChatOptions::check), so a caller can
    /// report it under its own name for the field (a command-line flag, say).
    ///
    /// ```
    /// use evolution_langchain::{TimestampGranularity, TranscriptionFormat, TranscriptionOptions};
    ///
    /// let options = TranscriptionOptions::new()
    ///     .response_format(TranscriptionFormat::Srt)
    ///     .timestamp_granularity(TimestampGranularity::Word);
    /// let (field, message) = options.check().unwrap_err();
    /// assert_eq!(field, "timestamp_granularities");
    /// assert!(message.contains("verbose_json"));
    /// assert!(TranscriptionOptions::new().temperature(0.5).check().is_ok());
    /// ```
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        if let Some(t) = self.temperature {
            if !(0.0..=1.0).contains(&t) {
                return Err(("temperature", format!("must be between 0 and 1, got {t}")));
            }
        }
        if !self.timestamp_granularities.is_empty()
            && self.response_format != TranscriptionFormat::VerboseJson
        {
            return Err((
                "timestamp_granularities",
                "need response_format verbose_json".to_string(),
            ));
        }
        if self
            .language
            .as_deref()
            .is_some_and(|l| l.trim().is_empty())
        {
            return Err(("language", "is empty: leave it unset to detect it".into()));
        }
        Ok(())
    }
}

/// A transcript. For `json` and `verbose_json` replies the fields are the
/// server's; for `text`, `srt` and `vtt` the whole reply is [`text`](Self::text).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Transcription {
    /// The text (or, for `srt`/`vtt`, the subtitle document).
    pub text: String,
    /// The language (`verbose_json`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
    /// The audio's length in seconds (`verbose_json`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<f64>,
    /// Timed pieces of the text (`verbose_json`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub segments: Vec<Segment>,
    /// Timed words (`verbose_json` with word granularity).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub words: Vec<Word>,
    /// Fields the server sent that this type does not name (e.g. `usage`).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A timed piece of a transcript.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Segment {
    /// Its position.
    #[serde(default)]
    pub id: u32,
    /// Where it starts, in seconds.
    pub start: f64,
    /// Where it ends, in seconds.
    pub end: f64,
    /// Its text.
    pub text: String,
    /// Fields the server sent that this type does not name.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A timed word.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Word {
    /// The word.
    pub word: String,
    /// Where it starts, in seconds.
    pub start: f64,
    /// Where it ends, in seconds.
    pub end: f64,
}
