//! The audio API group: `POST /audio/transcriptions`, speech to text with
//! Whisper (`openai/whisper-large-v3` on Cloud.ru), an OpenAI multipart
//! upload through the same pipeline as chat: the same authentication,
//! `401`/`403` recovery, retries (each attempt sends the whole upload
//! again), request ids and GenAI spans (operation `"transcription"`).
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let emulator = evolution_emulator::Emulator::start().await?;
//! use evolution_langchain::{EvolutionAudio, TranscriptionFormat, TranscriptionOptions};
//!
//! let audio = EvolutionAudio::builder()
//!     .key_id(emulator.key_id())          // or .api_key(..), or EvolutionAudio::from_env()
//!     .secret(emulator.secret())
//! #   .base_url(emulator.base_url())
//! #   .auth_url(emulator.auth_url())
//!     .build()?;                          // model: openai/whisper-large-v3
//! // (The emulator "transcribes" a text file as its text.)
//! let transcript = audio
//!     .transcribe_bytes("hello.wav", "Hello from the emulator.", TranscriptionOptions::new())
//!     .await?;
//! assert_eq!(transcript.text, "Hello from the emulator.");
//!
//! let subtitles = audio
//!     .transcribe_bytes(
//!         "hello.wav",
//!         "Hello again.",
//!         TranscriptionOptions::new().response_format(TranscriptionFormat::Srt),
//!     )
//!     .await?;
//! assert!(subtitles.text.starts_with("1\n00:00:00,000 --> "));
//! # Ok(()) }
//! ```

mod wire;

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use reqwest::multipart::{Form, Part};
use tokio::io::{AsyncRead, AsyncReadExt};
use tracing::Instrument;

use crate::builder::ClientBuilder;
use crate::chat::EvolutionInference;
use crate::config::env_var;
use crate::error::{Error, Result};
use crate::flavor::Async;
use crate::telemetry;
use crate::transport::{Body, Request, Transport};

pub use wire::{
    Segment, TimestampGranularity, Transcription, TranscriptionFormat, TranscriptionOptions, Word,
};

/// The path of the transcription endpoint under the base URL.
const PATH: &str = "audio/transcriptions";

/// The GenAI operation name on this group's spans (the conventions name
/// none for speech to text).
const OPERATION: &str = "transcription";

/// The model used unless one is set: Whisper as Cloud.ru serves it.
pub const DEFAULT_TRANSCRIPTION_MODEL: &str = "openai/whisper-large-v3";

/// Environment variable naming the transcription model.
pub const ENV_TRANSCRIPTION_MODEL: &str = "EVOLUTION_TRANSCRIPTION_MODEL";

/// Default limit on an upload: 25 MiB, what Cloud.ru (like OpenAI) takes
/// per file.
pub const DEFAULT_MAX_UPLOAD_SIZE: u64 = 25 * 1024 * 1024;

/// A client for `POST {base_url}/audio/transcriptions`.
///
/// Cheap to clone; clones share the connection pool and the token cache.
#[derive(Clone)]
pub struct EvolutionAudio {
    transport: Arc<Transport>,
    model: String,
    max_upload_size: u64,
}

impl EvolutionAudio {
    /// A builder.
    pub fn builder() -> EvolutionAudioBuilder {
        EvolutionAudioBuilder::default()
    }

    /// A client configured from the `EVOLUTION_*` variables (see
    /// [`EvolutionInference::from_env`]; the model from
    /// `EVOLUTION_TRANSCRIPTION_MODEL`, else
    /// [`DEFAULT_TRANSCRIPTION_MODEL`]).
    pub fn from_env() -> Result<Self> {
        Self::builder().from_env()?.build()
    }

    /// A transcription client sharing `llm`'s connection pool, token cache
    /// and rate limits; `model` is the transcription model.
    pub fn from_inference(llm: &EvolutionInference, model: impl Into<String>) -> Self {
        Self {
            transport: Arc::clone(&llm.transport),
            model: model.into(),
            max_upload_size: DEFAULT_MAX_UPLOAD_SIZE,
        }
    }

    /// The model name.
    pub fn model(&self) -> &str {
        &self.model
    }

    /// Transcribes the audio file at `path`. A file over the upload limit is
    /// refused ([`Error::UploadTooLarge`]) before it is read; one whose size
    /// is not known ahead (a pipe, a device, a file still growing) is read
    /// only up to the limit.
    pub async fn transcribe_file(
        &self,
        path: impl AsRef<Path>,
        options: TranscriptionOptions,
    ) -> Result<Transcription> {
        let path = path.as_ref();
        let unreadable = |e: std::io::Error| {
            Error::invalid_request("file", format!("could not read {}: {e}", path.display()))
        };
        let file = tokio::fs::File::open(path).await.map_err(unreadable)?;
        self.check_size(file.metadata().await.map_err(unreadable)?.len())?;
        let bytes = read_within(file, self.max_upload_size).await?;
        let name = path
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_else(|| "audio".to_string());
        self.transcribe_bytes(&name, bytes, options).await
    }

    /// Transcribes `bytes`, sent as a file named `file_name` (its extension
    /// tells the server the format: `.mp3`, `.wav`, `.ogg`, `.flac`, `.m4a`,
    /// `.webm`, …).
    pub async fn transcribe_bytes(
        &self,
        file_name: &str,
        bytes: impl Into<Bytes>,
        options: TranscriptionOptions,
    ) -> Result<Transcription> {
        let span = telemetry::span(OPERATION, &self.model, &self.transport.base_url);
        let outcome = self
            .send(file_name, bytes.into(), &options)
            .instrument(span.clone())
            .await;
        telemetry::record_outcome(&span, &outcome, |_, _| {});
        outcome
    }

    /// Transcribes what `reader` gives until its end (e.g. standard input),
    /// sent as a file named `file_name`. Only up to the upload limit is held
    /// in memory: a longer input is read to its end to learn its size, then
    /// refused.
    pub async fn transcribe_reader(
        &self,
        file_name: &str,
        reader: impl AsyncRead + Unpin + Send,
        options: TranscriptionOptions,
    ) -> Result<Transcription> {
        let bytes = read_within(reader, self.max_upload_size).await?;
        self.transcribe_bytes(file_name, bytes, options).await
    }

    /// The largest upload this client sends.
    #[cfg(feature = "blocking")]
    pub(crate) fn max_upload_size(&self) -> u64 {
        self.max_upload_size
    }

    fn check_size(&self, size: u64) -> Result<()> {
        if size > self.max_upload_size {
            return Err(over_limit(size, self.max_upload_size));
        }
        Ok(())
    }

    async fn send(
        &self,
        file_name: &str,
        bytes: Bytes,
        options: &TranscriptionOptions,
    ) -> Result<Transcription> {
        let size = bytes.len() as u64;
        if size == 0 {
            return Err(Error::invalid_request(
                "file",
                "is empty: there is no audio to transcribe",
            ));
        }
        self.check_size(size)?;
        options
            .check()
            .map_err(|(field, message)| Error::invalid_request(field, message))?;
        let form = form(&self.model, file_name, bytes, options);
        let received = self
            .transport
            .receive(Request::post(PATH, Body::Multipart(Arc::new(form))))
            .await
            .map_err(|error| match error {
                // The server's own limit: the same error as ours.
                Error::Api {
                    status: 413,
                    request_id,
                    ..
                } => Error::UploadTooLarge {
                    size,
                    limit: None,
                    request_id,
                },
                other => other,
            })?;
        let invalid = |message: String| {
            Error::invalid_response(self.transport.url(PATH), message)
                .with_request_id(&received.request_id)
        };
        if options.response_format.is_json() {
            serde_json::from_slice(&received.body)
                .map_err(|e| invalid(format!("not a transcription: {e}")))
        } else {
            let text = String::from_utf8(received.body.to_vec())
                .map_err(|_| invalid("the text is not UTF-8".into()))?;
            Ok(Transcription {
                text,
                ..Transcription::default()
            })
        }
    }
}

/// The multipart form of one request, made anew for each attempt.
fn form(
    model: &str,
    file_name: &str,
    bytes: Bytes,
    options: &TranscriptionOptions,
) -> impl Fn() -> Form + Send + Sync + 'static {
    let mut fields: Vec<(&'static str, String)> = vec![
        ("model", model.to_string()),
        (
            "response_format",
            options.response_format.as_str().to_string(),
        ),
    ];
    fields.extend(options.language.clone().map(|l| ("language", l)));
    fields.extend(options.prompt.clone().map(|p| ("prompt", p)));
    fields.extend(options.temperature.map(|t| ("temperature", t.to_string())));
    for granularity in &options.timestamp_granularities {
        fields.push((
            "timestamp_granularities[]",
            granularity.as_str().to_string(),
        ));
    }
    let file_name = file_name.to_string();
    let content_type = content_type(&file_name);
    move || {
        let length = bytes.len() as u64;
        let part = Part::stream_with_length(reqwest::Body::from(bytes.clone()), length)
            .file_name(file_name.clone())
            .mime_str(content_type)
            .expect("a valid MIME type");
        let mut form = Form::new().part("file", part);
        for (name, value) in &fields {
            form = form.text(*name, value.clone());
        }
        form
    }
}

/// The MIME type of an audio file, from its extension.
fn content_type(file_name: &str) -> &'static str {
    let extension = Path::new(file_name)
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    match extension.as_str() {
        "mp3" | "mpga" | "mpeg" => "audio/mpeg",
        "wav" => "audio/wav",
        "ogg" | "oga" | "opus" => "audio/ogg",
        "flac" => "audio/flac",
        "m4a" | "mp4" => "audio/mp4",
        "webm" => "audio/webm",
        _ => "application/octet-stream",
    }
}

/// Everything `reader` gives, or [`Error::UploadTooLarge`] with its whole
/// size once it passes `limit` (the rest is read and counted, not kept).
async fn read_within(mut reader: impl AsyncRead + Unpin + Send, limit: u64) -> Result<Bytes> {
    let unreadable =
        |e: std::io::Error| Error::invalid_request("file", format!("could not be read: {e}"));
    let mut kept = Vec::new();
    (&mut reader)
        .take(limit.saturating_add(1))
        .read_to_end(&mut kept)
        .await
        .map_err(unreadable)?;
    if kept.len() as u64 > limit {
        let rest = tokio::io::copy(&mut reader, &mut tokio::io::sink())
            .await
            .map_err(unreadable)?;
        return Err(over_limit(kept.len() as u64 + rest, limit));
    }
    Ok(Bytes::from(kept))
}

/// Our refusal of an upload of `size` bytes over `limit`.
pub(crate) fn over_limit(size: u64, limit: u64) -> Error {
    Error::UploadTooLarge {
        size,
        limit: Some(limit),
        request_id: None,
    }
}

impl fmt::Debug for EvolutionAudio {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EvolutionAudio")
            .field("model", &self.model)
            .field("max_upload_size", &self.max_upload_size)
            .field("transport", &self.transport)
            .finish()
    }
}

/// Settings for [`EvolutionAudio`]: [`ClientBuilder`] with the
/// transcription model and the upload limit.
pub type EvolutionAudioBuilder<M = Async> = ClientBuilder<AudioSettings, M>;

/// The audio client's own settings in its [builder](EvolutionAudioBuilder).
#[derive(Debug, Clone, Default)]
pub struct AudioSettings {
    model: Option<String>,
    max_upload_size: Option<u64>,
}

impl<M> ClientBuilder<AudioSettings, M> {
    /// Fills unset settings from the environment (as
    /// [`EvolutionInference::from_env`]; the model from
    /// `EVOLUTION_TRANSCRIPTION_MODEL`).
    pub fn from_env(self) -> Result<Self> {
        self.fill_from_env(|settings, _| {
            if settings.model.is_none() {
                settings.model = env_var(ENV_TRANSCRIPTION_MODEL);
            }
        })
    }

    /// The transcription model (default [`DEFAULT_TRANSCRIPTION_MODEL`]).
    pub fn model(mut self, model: impl Into<String>) -> Self {
        self.settings.model = Some(model.into());
        self
    }

    /// Largest upload sent, in bytes (default [`DEFAULT_MAX_UPLOAD_SIZE`],
    /// 25 MiB); a larger file is refused before anything is sent.
    pub fn max_upload_size(mut self, bytes: u64) -> Self {
        self.settings.max_upload_size = Some(bytes);
        self
    }

    pub(crate) fn build_async(self) -> Result<EvolutionAudio> {
        let max_upload_size = self
            .settings
            .max_upload_size
            .unwrap_or(DEFAULT_MAX_UPLOAD_SIZE);
        if max_upload_size == 0 {
            return Err(Error::config("max_upload_size", "must be at least 1 byte"));
        }
        let (settings, transport) = self.into_parts()?;
        let model = settings
            .model
            .filter(|m| !m.trim().is_empty())
            .unwrap_or_else(|| DEFAULT_TRANSCRIPTION_MODEL.to_string());
        Ok(EvolutionAudio {
            transport: Arc::new(transport),
            model,
            max_upload_size,
        })
    }
}

impl ClientBuilder<AudioSettings, Async> {
    /// Checks the settings and creates the client.
    pub fn build(self) -> Result<EvolutionAudio> {
        self.build_async()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types_follow_the_extension() {
        assert_eq!(content_type("a.MP3"), "audio/mpeg");
        assert_eq!(content_type("dir/b.wav"), "audio/wav");
        assert_eq!(content_type("c"), "application/octet-stream");
    }

    #[tokio::test]
    async fn a_reader_past_the_limit_is_measured_and_refused() {
        let data = vec![7u8; 1000];
        let error = read_within(&data[..], 100).await.unwrap_err();
        match error {
            Error::UploadTooLarge { size, limit, .. } => {
                assert_eq!((size, limit), (1000, Some(100)))
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(read_within(&data[..], 1000).await.unwrap().len(), 1000);
    }
}
