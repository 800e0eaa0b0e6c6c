//! `POST /v1/audio/transcriptions`: OpenAI's multipart upload, as Cloud.ru serves
//! Whisper (`openai/whisper-large-v3`). The upload is read first (so that the request log
//! and the rate limiter know it), then the gate runs as for every `/v1` route, then the
//! form is checked and the scripted transcript is answered in the requested format.
//! Upstream mode does not forward this route: the emulator always answers it.

use std::sync::Arc;

use axum::extract::{Request, State as AxumState};
use axum::http::StatusCode;
use axum::response::Response;

use crate::fault::Target;
use crate::gate::{self, Admission, ParsedBody};
use crate::reply::{self, ExtraHeaders};
use crate::state::{Counter, InFlightGuard, State};
use crate::transcript::{self, Format, Options};
use crate::upload::{self, Upload};
use crate::util;

/// The `response_format` values, for error messages.
const FORMATS: &str = "json, text, verbose_json, srt, vtt";

/// The language `verbose_json` reports when the request names none.
const DEFAULT_LANGUAGE: &str = "en";

/// A form field at fault: the message of the `400` and the field it names.
struct Invalid {
    message: String,
    param: &'static str,
}

fn invalid(message: impl Into<String>, param: &'static str) -> Invalid {
    Invalid {
        message: message.into(),
        param,
    }
}

impl Invalid {
    fn response(self) -> Response {
        reply::field_error(
            StatusCode::BAD_REQUEST,
            self.message,
            "invalid_request",
            Some(self.param),
        )
    }
}

/// The form's options, or the `400` naming the field at fault.
fn options(upload: &Upload) -> Result<Options, Invalid> {
    if upload.file.is_none() {
        return Err(if upload.field("file").is_some() {
            invalid(
                "'file' must be a file upload (a form part with a filename)",
                "file",
            )
        } else {
            invalid("missing required field 'file'", "file")
        });
    }
    if upload.extra_files > 0 {
        return Err(invalid("only one 'file' part is allowed", "file"));
    }
    if upload.field("model").is_none_or(|m| m.trim().is_empty()) {
        return Err(invalid("missing required field 'model'", "model"));
    }
    let format = match upload.field("response_format") {
        None => Format::Json,
        Some(f) => f.trim().parse().map_err(|()| {
            invalid(
                format!("'response_format' must be one of {FORMATS}, got {f:?}"),
                "response_format",
            )
        })?,
    };
    let temperature = match upload.field("temperature") {
        None => 0.0,
        Some(t) => t
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|t| (0.0..=1.0).contains(t))
            .ok_or_else(|| {
                invalid(
                    format!("'temperature' must be a number between 0 and 1, got {t:?}"),
                    "temperature",
                )
            })?,
    };
    let mut words = false;
    let mut granularities = 0;
    for name in ["timestamp_granularities[]", "timestamp_granularities"] {
        for value in upload.all(name) {
            granularities += 1;
            match value.trim() {
                "word" => words = true,
                "segment" => {}
                other => {
                    return Err(invalid(
                        format!(
                            "'timestamp_granularities[]' values must be \"segment\" or \"word\", \
                             got {other:?}"
                        ),
                        "timestamp_granularities[]",
                    ))
                }
            }
        }
    }
    if granularities > 0 && format != Format::VerboseJson {
        return Err(invalid(
            "'timestamp_granularities[]' needs response_format verbose_json",
            "timestamp_granularities[]",
        ));
    }
    let language = upload
        .field("language")
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .unwrap_or(DEFAULT_LANGUAGE)
        .to_owned();
    Ok(Options {
        format,
        language,
        temperature,
        words,
    })
}

pub(crate) async fn transcriptions(
    AxumState(state): AxumState<Arc<State>>,
    req: Request,
) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let headers = req.headers().clone();
    let extra_headers = req.extensions().get::<ExtraHeaders>().cloned();
    let (upload, problem) = upload::read(req, state.config.max_audio_bytes).await;

    let guard = InFlightGuard::new(&state);
    let transcript = match (&upload.file, &problem) {
        (Some(file), None) => Some(transcript::transcript(&file.bytes)),
        _ => None,
    };
    let body = ParsedBody {
        value: upload.record(),
        error: None,
    };
    let model = upload
        .field("model")
        .map(str::trim)
        .filter(|m| !m.is_empty())
        .unwrap_or(state.config.default_model())
        .to_owned();
    let admission = Admission {
        target: Target::Audio,
        counters: &[Counter::TranscriptionRequests],
        method: &method,
        path: &path,
        headers: &headers,
        body: &body,
        model: &model,
        stream: false,
        // The transcript's words: two per modelled second of audio.
        cost: state
            .limiter
            .enabled()
            .then(|| transcript.as_deref().map_or(0, util::word_count) as u64),
        extra_headers: extra_headers.as_ref(),
    };
    let shape = match gate::admit(&state, admission).await {
        Ok(shape) => shape,
        Err(response) => return response,
    };
    state.answer_latency().await;

    if let Some(problem) = problem {
        return problem.response();
    }
    let options = match options(&upload) {
        Ok(options) => options,
        Err(invalid) => return invalid.response(),
    };
    let text = transcript.unwrap_or_default();
    let (content_type, bytes) = transcript::render(&text, &options);
    let response = reply::body_answer(content_type, bytes, shape.as_ref());
    drop(guard);
    response
}
