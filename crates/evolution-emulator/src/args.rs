//! Command-line options, shared by the `evolution-emulator` binary and any CLI that
//! embeds the emulator (flatten [`EmulatorArgs`] into its own parser).

use std::time::Duration;

use crate::fault::FaultSpec;
use crate::{
    EmulatorBuilder, EmulatorHandle, DEFAULT_KEY_ID, DEFAULT_MAX_AUDIO_BYTES,
    DEFAULT_REASONING_FIELD, DEFAULT_REQUEST_LOG_LIMIT, DEFAULT_SECRET, MAX_TOKEN_TTL_SECS,
    REASONING_FIELDS,
};

/// Options that configure an emulator.
#[derive(Debug, Clone, PartialEq, clap::Args)]
pub struct EmulatorArgs {
    /// Port to listen on, on 127.0.0.1 (0 picks a free one).
    #[arg(long, default_value_t = 0)]
    pub port: u16,

    /// The key id the token service accepts.
    #[arg(long, default_value = DEFAULT_KEY_ID)]
    pub key_id: String,

    /// The secret the token service accepts.
    #[arg(long, default_value = DEFAULT_SECRET)]
    pub secret: String,

    /// Accept this Foundation Models API key as a bearer on /v1, without IAM
    /// (repeatable).
    #[arg(long = "api-key", value_name = "KEY")]
    pub api_key: Vec<String>,

    /// Serve /v1 without checking the Authorization header at all, like a model run
    /// with auth switched off.
    #[arg(long)]
    pub no_auth: bool,

    /// Lifetime of issued tokens, in seconds (1 to 31622400, i.e. 366 days).
    #[arg(long, default_value_t = 3600, value_name = "SECS",
          value_parser = clap::value_parser!(u64).range(1..=MAX_TOKEN_TTL_SECS))]
    pub token_ttl: u64,

    /// Pause before each streamed word, in milliseconds.
    #[arg(long, default_value_t = 0, value_name = "MS")]
    pub word_delay_ms: u64,

    /// Forward chat, models, embeddings and rerank to this OpenAI-compatible base URL
    /// (transcriptions are always answered by the emulator).
    #[arg(long, value_name = "URL")]
    pub upstream: Option<String>,

    /// Bearer token to send to the upstream.
    #[arg(long, value_name = "KEY", requires = "upstream")]
    pub upstream_api_key: Option<String>,

    /// A model to list (repeatable; default emulator/echo-1). emulator/reasoner-1 is
    /// always listed after them.
    #[arg(long = "model", value_name = "ID")]
    pub model: Vec<String>,

    /// The JSON field the reasoning model's thinking goes in.
    #[arg(long, default_value = DEFAULT_REASONING_FIELD, value_name = "FIELD",
          value_parser = clap::builder::PossibleValuesParser::new(REASONING_FIELDS))]
    pub reasoning_field: String,

    /// Length of embedding vectors.
    #[arg(long, default_value_t = 8, value_name = "N")]
    pub embedding_dimensions: usize,

    /// How many of the most recent /v1 requests the request log keeps (0 records none).
    #[arg(long, default_value_t = DEFAULT_REQUEST_LOG_LIMIT, value_name = "N")]
    pub request_log_limit: usize,

    /// Requests per minute allowed per key (IAM key id or API key; one shared bucket with
    /// --no-auth), a token bucket: bursts up to N, then N/60 per second. 0 = no limit.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub rpm: u32,

    /// Tokens per minute allowed per key (prompt characters / 4 plus max_tokens), a
    /// token bucket like --rpm. 0 = no limit.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub tpm: u32,

    /// How many seconds of the sustained rate a key's --rpm/--tpm bucket holds, 0 to
    /// 86400: 60 (the default) lets a fresh key send a minute's worth at once; 1 enforces
    /// the limit per second, as large providers do.
    #[arg(long, default_value_t = 60.0, value_name = "SECS", allow_negative_numbers = true,
          value_parser = parse_burst_secs)]
    pub rate_burst_secs: f64,

    /// Wait this long before every chat, embeddings, rerank and transcription answer, in
    /// milliseconds.
    #[arg(long, default_value_t = 0, value_name = "MS")]
    pub latency_ms: u64,

    /// The largest audio file /v1/audio/transcriptions accepts, in bytes.
    #[arg(long, default_value_t = DEFAULT_MAX_AUDIO_BYTES, value_name = "BYTES")]
    pub max_audio_bytes: usize,

    /// Refuse chat requests whose response_format is json_schema with a 400, like a
    /// server without structured output.
    #[arg(long)]
    pub refuse_json_schema: bool,

    /// Queue a fault, `TARGET=FAULT[xN]`, e.g. `chat=status:503x2`, `auth=drop`,
    /// `chat=cut-stream:3` (repeatable; N is at most 1000000).
    #[arg(long = "fault", value_name = "TARGET=FAULT[xN]")]
    pub fault: Vec<FaultSpec>,
}

/// The most `--rate-burst-secs` takes: a day.
const MAX_RATE_BURST_SECS: f64 = 86_400.0;

/// `--rate-burst-secs`: seconds from 0 to [`MAX_RATE_BURST_SECS`]. A negative, NaN or
/// infinite value is refused rather than replaced by the default.
fn parse_burst_secs(text: &str) -> Result<f64, String> {
    let range = format!("a number of seconds from 0 to {MAX_RATE_BURST_SECS}");
    let secs: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("expected {range}, got {text:?}"))?;
    if (0.0..=MAX_RATE_BURST_SECS).contains(&secs) {
        Ok(secs)
    } else {
        Err(format!("must be {range}, got {secs}"))
    }
}

impl Default for EmulatorArgs {
    fn default() -> Self {
        EmulatorArgs {
            port: 0,
            key_id: DEFAULT_KEY_ID.to_owned(),
            secret: DEFAULT_SECRET.to_owned(),
            api_key: Vec::new(),
            no_auth: false,
            token_ttl: 3600,
            word_delay_ms: 0,
            upstream: None,
            upstream_api_key: None,
            model: Vec::new(),
            reasoning_field: DEFAULT_REASONING_FIELD.to_owned(),
            embedding_dimensions: 8,
            request_log_limit: DEFAULT_REQUEST_LOG_LIMIT,
            rpm: 0,
            tpm: 0,
            rate_burst_secs: 60.0,
            latency_ms: 0,
            max_audio_bytes: DEFAULT_MAX_AUDIO_BYTES,
            refuse_json_schema: false,
            fault: Vec::new(),
        }
    }
}

impl EmulatorArgs {
    /// A builder configured from these options (faults are applied after start, with
    /// [`EmulatorArgs::apply_faults`]).
    pub fn builder(&self) -> EmulatorBuilder {
        let mut builder = EmulatorBuilder::default()
            .port(self.port)
            .credentials(self.key_id.clone(), self.secret.clone())
            .token_ttl(Duration::from_secs(self.token_ttl))
            .word_delay(Duration::from_millis(self.word_delay_ms))
            .embedding_dimensions(self.embedding_dimensions)
            .request_log_limit(self.request_log_limit)
            .reasoning_field(self.reasoning_field.clone())
            .require_auth(!self.no_auth)
            .requests_per_minute(self.rpm)
            .tokens_per_minute(self.tpm)
            // The parser keeps the value in range; a struct filled in by hand with one that
            // is no duration gets the default.
            .rate_burst(
                Duration::try_from_secs_f64(self.rate_burst_secs)
                    .unwrap_or(Duration::from_secs(60)),
            )
            .latency(Duration::from_millis(self.latency_ms))
            .max_audio_bytes(self.max_audio_bytes)
            .refuse_json_schema(self.refuse_json_schema);
        for key in &self.api_key {
            builder = builder.api_key(key.clone());
        }
        if !self.model.is_empty() {
            builder = builder.models(self.model.clone());
        }
        if let Some(upstream) = &self.upstream {
            builder = builder.upstream(upstream.clone());
        }
        if let Some(key) = &self.upstream_api_key {
            builder = builder.upstream_api_key(key.clone());
        }
        builder
    }

    /// Queues the `--fault` options on a running emulator.
    pub fn apply_faults(&self, handle: &EmulatorHandle) {
        for spec in &self.fault {
            handle.inject(spec.target, spec.fault.clone(), spec.times);
        }
    }
}
