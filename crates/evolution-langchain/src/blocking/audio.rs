//! Blocking `EvolutionAudio` and its builder.

use std::io::Read;
use std::path::Path;

use bytes::Bytes;

use super::{call, wait, EvolutionInference};
use crate::audio::{AudioSettings, Transcription, TranscriptionOptions};
use crate::builder::ClientBuilder;
use crate::error::{Error, Result};
use crate::flavor::{Async, Blocking};

/// Blocking counterpart of [`crate::EvolutionAudio`].
#[derive(Debug, Clone)]
pub struct EvolutionAudio {
    inner: crate::audio::EvolutionAudio,
}

/// Blocking counterpart of [`crate::EvolutionAudioBuilder`]: the same type
/// and setters; `build` returns the blocking client.
pub type EvolutionAudioBuilder = crate::audio::EvolutionAudioBuilder<Blocking>;

impl ClientBuilder<AudioSettings, Blocking> {
    /// Checks the settings and creates the blocking client.
    pub fn build(self) -> Result<EvolutionAudio> {
        Ok(EvolutionAudio {
            inner: self.build_async()?,
        })
    }
}

impl ClientBuilder<AudioSettings, Async> {
    /// Checks the settings and creates a [blocking](EvolutionAudio) client.
    pub fn build_blocking(self) -> Result<EvolutionAudio> {
        self.into_flavor::<Blocking>().build()
    }
}

impl EvolutionAudio {
    /// A builder with the same settings as [`crate::EvolutionAudioBuilder`].
    pub fn builder() -> EvolutionAudioBuilder {
        EvolutionAudioBuilder::default()
    }

    /// A client configured from the `EVOLUTION_*` variables.
    pub fn from_env() -> Result<Self> {
        Self::builder().from_env()?.build()
    }

    /// See [`crate::EvolutionAudio::from_inference`].
    pub fn from_inference(llm: &EvolutionInference, model: impl Into<String>) -> Self {
        Self {
            inner: crate::audio::EvolutionAudio::from_inference(llm.as_async(), model),
        }
    }

    /// Wraps an async client.
    pub fn from_async(inner: crate::audio::EvolutionAudio) -> Self {
        Self { inner }
    }

    /// The async client behind this facade.
    pub fn as_async(&self) -> &crate::audio::EvolutionAudio {
        &self.inner
    }

    /// The model name.
    pub fn model(&self) -> &str {
        self.inner.model()
    }

    /// See [`crate::EvolutionAudio::transcribe_file`].
    pub fn transcribe_file(
        &self,
        path: impl AsRef<Path>,
        options: TranscriptionOptions,
    ) -> Result<Transcription> {
        let path = path.as_ref().to_path_buf();
        call!(self, |audio| audio.transcribe_file(&path, options))
    }

    /// See [`crate::EvolutionAudio::transcribe_bytes`].
    pub fn transcribe_bytes(
        &self,
        file_name: &str,
        bytes: impl Into<Bytes>,
        options: TranscriptionOptions,
    ) -> Result<Transcription> {
        let (file_name, bytes) = (file_name.to_string(), bytes.into());
        call!(self, |audio| audio
            .transcribe_bytes(&file_name, bytes, options))
    }

    /// See [`crate::EvolutionAudio::transcribe_reader`]; `reader` is read on
    /// the calling thread, within the upload limit.
    pub fn transcribe_reader(
        &self,
        file_name: &str,
        mut reader: impl Read,
        options: TranscriptionOptions,
    ) -> Result<Transcription> {
        // As the async reader does: keep up to the limit, count the rest.
        let unreadable =
            |e: std::io::Error| Error::invalid_request("file", format!("could not be read: {e}"));
        let limit = self.inner.max_upload_size();
        let mut kept = Vec::new();
        (&mut reader)
            .take(limit.saturating_add(1))
            .read_to_end(&mut kept)
            .map_err(unreadable)?;
        if kept.len() as u64 > limit {
            let rest = std::io::copy(&mut reader, &mut std::io::sink()).map_err(unreadable)?;
            return Err(crate::audio::over_limit(kept.len() as u64 + rest, limit));
        }
        self.transcribe_bytes(file_name, kept, options)
    }
}
