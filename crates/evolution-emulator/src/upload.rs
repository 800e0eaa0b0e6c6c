//! Reading the `multipart/form-data` upload of `POST /v1/audio/transcriptions`: the
//! `file` part's bytes (up to the configured limit), the other fields as text, and what
//! went wrong, without letting an oversized upload into memory.
//!
//! An upload over the limit is still read to its end (up to
//! [`drain_limit`]) and discarded, so the client has sent its whole request when the
//! `413` comes and reads that answer instead of a connection reset.

use axum::extract::{FromRequest, Multipart, Request};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use serde_json::{json, Map, Value};

use crate::gate::ParsedBody;
use crate::reply;

/// How many bytes the non-file fields may take in total (model, language, prompt, …).
pub(crate) const FORM_FIELDS_LIMIT: usize = 1024 * 1024;

/// A body that is not multipart is read (for the request log) up to this size.
const OTHER_BODY_LIMIT: usize = 32 * 1024 * 1024;

/// The most the emulator reads of an upload: twice the file limit plus the fields.
/// Anything up to this is drained before the `413`; beyond it the answer comes at once
/// and the connection is closed.
pub(crate) fn drain_limit(max_file: usize) -> usize {
    max_file.saturating_mul(2).saturating_add(FORM_FIELDS_LIMIT)
}

/// The uploaded file.
#[derive(Debug, Clone)]
pub(crate) struct FilePart {
    pub filename: String,
    pub content_type: Option<String>,
    pub bytes: Bytes,
}

/// What a multipart upload held, as far as it could be read.
#[derive(Debug, Default)]
pub(crate) struct Upload {
    /// Text fields in arrival order (file parts other than `file` are not kept).
    pub fields: Vec<(String, String)>,
    /// The first `file` part that carried a file name.
    pub file: Option<FilePart>,
    /// How many more `file` parts with a file name came after the first.
    pub extra_files: usize,
    /// Other file parts: name, file name and size, for the request log.
    pub other_files: Vec<(String, String, usize)>,
    /// What the request log records for a body that is not multipart.
    pub raw: Option<Value>,
}

impl Upload {
    /// The first value of text field `name`.
    pub fn field(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of text field `name`, in order.
    pub fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.fields
            .iter()
            .filter(move |(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// What the request log keeps: the text fields (a repeated field as an array) and,
    /// for each file, its name, content type and size, never its bytes.
    pub fn record(&self) -> Value {
        if let Some(raw) = &self.raw {
            return raw.clone();
        }
        let mut map = Map::new();
        for (name, value) in &self.fields {
            match map.get_mut(name) {
                None => {
                    map.insert(name.clone(), Value::String(value.clone()));
                }
                Some(Value::Array(values)) => values.push(Value::String(value.clone())),
                Some(first) => *first = json!([first.clone(), value]),
            }
        }
        if let Some(file) = &self.file {
            map.insert(
                "file".into(),
                json!({
                    "filename": file.filename,
                    "content_type": file.content_type,
                    "bytes": file.bytes.len(),
                }),
            );
        }
        for (name, filename, bytes) in &self.other_files {
            map.entry(name.clone())
                .or_insert_with(|| json!({"filename": filename, "bytes": bytes}));
        }
        Value::Object(map)
    }
}

/// Why an upload cannot be served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum UploadError {
    /// The body is not `multipart/form-data` with a boundary.
    NotMultipart(String),
    /// The multipart framing is broken.
    Malformed(String),
    /// The `file` part is larger than the limit; `size` is its full size when the whole
    /// upload was read, else what was seen.
    FileTooLarge {
        size: usize,
        limit: usize,
        complete: bool,
    },
    /// The text fields together are larger than [`FORM_FIELDS_LIMIT`].
    FieldsTooLarge,
    /// The body is larger than [`drain_limit`] (declared or seen).
    BodyTooLarge { limit: usize },
}

impl UploadError {
    /// The answer: `413` for sizes, `400` otherwise, each with an OpenAI-style body.
    pub fn response(&self) -> Response {
        match self {
            UploadError::NotMultipart(why) => reply::field_error(
                StatusCode::BAD_REQUEST,
                format!("request body must be multipart/form-data: {why}"),
                "invalid_request",
                None,
            ),
            UploadError::Malformed(why) => reply::field_error(
                StatusCode::BAD_REQUEST,
                format!("malformed multipart body: {why}"),
                "invalid_request",
                None,
            ),
            UploadError::FileTooLarge {
                size,
                limit,
                complete,
            } => {
                let size = if *complete {
                    format!("{size} bytes")
                } else {
                    format!("more than {size} bytes")
                };
                reply::field_error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("'file' is {size}, over the limit of {limit} bytes"),
                    "payload_too_large",
                    Some("file"),
                )
            }
            UploadError::FieldsTooLarge => reply::field_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the form fields other than 'file' exceed {FORM_FIELDS_LIMIT} bytes"),
                "payload_too_large",
                None,
            ),
            UploadError::BodyTooLarge { limit } => reply::field_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("request body exceeds {limit} bytes"),
                "payload_too_large",
                None,
            ),
        }
    }
}

/// Whether a `Content-Type` is `multipart/form-data` with a boundary.
fn is_multipart(headers: &HeaderMap) -> Result<(), String> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Err("no Content-Type header".into());
    };
    let text = value.to_str().unwrap_or("");
    let mut parts = text.split(';');
    let media = parts.next().unwrap_or("").trim();
    if !media.eq_ignore_ascii_case("multipart/form-data") {
        return Err(format!("Content-Type is {text:?}"));
    }
    let has_boundary = parts.any(|p| {
        p.split_once('=')
            .is_some_and(|(k, v)| k.trim().eq_ignore_ascii_case("boundary") && !v.trim().is_empty())
    });
    if has_boundary {
        Ok(())
    } else {
        Err(format!("Content-Type {text:?} has no boundary"))
    }
}

/// What reading one part's data came to.
enum PartEnd {
    /// All of it was read.
    Done,
    /// Reading failed or went past the drain limit: stop reading the upload.
    Stop(UploadError),
}

/// Reads the upload. The `Upload` holds whatever could be read; the error, if any, is
/// answered once faults and the bearer check have had their say.
pub(crate) async fn read(req: Request, max_file: usize) -> (Upload, Option<UploadError>) {
    let mut upload = Upload::default();
    if let Err(why) = is_multipart(req.headers()) {
        let bytes = axum::body::to_bytes(req.into_body(), OTHER_BODY_LIMIT)
            .await
            .unwrap_or_default();
        upload.raw = Some(ParsedBody::parse(&bytes).value);
        return (upload, Some(UploadError::NotMultipart(why)));
    }
    let limit = drain_limit(max_file);
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return (upload, Some(UploadError::BodyTooLarge { limit }));
    }
    let mut multipart = match Multipart::from_request(req, &()).await {
        Ok(multipart) => multipart,
        Err(e) => return (upload, Some(UploadError::NotMultipart(e.body_text()))),
    };

    let mut seen = 0usize;
    let mut field_bytes = 0usize;
    let mut problem: Option<UploadError> = None;
    loop {
        let mut field = match multipart.next_field().await {
            Ok(Some(field)) => field,
            Ok(None) => break,
            Err(e) => {
                problem.get_or_insert(UploadError::Malformed(e.body_text()));
                break;
            }
        };
        let name = field.name().unwrap_or("").to_owned();
        let filename = field.file_name().map(str::to_owned);
        let content_type = field.content_type().map(str::to_owned);
        let mut data: Vec<u8> = Vec::new();
        let mut size = 0usize;
        // Where this part's bytes may go: `Some(cap)` keeps up to `cap` bytes.
        let keep = match (&filename, name.as_str()) {
            (Some(_), "file") if upload.file.is_none() => Some(max_file),
            (Some(_), _) => None,
            (None, _) => Some(FORM_FIELDS_LIMIT.saturating_sub(field_bytes)),
        };
        let end = loop {
            match field.chunk().await {
                Ok(Some(chunk)) => {
                    size = size.saturating_add(chunk.len());
                    seen = seen.saturating_add(chunk.len());
                    if keep.is_some_and(|cap| size <= cap) {
                        data.extend_from_slice(&chunk);
                    }
                    if seen > limit {
                        break PartEnd::Stop(UploadError::BodyTooLarge { limit });
                    }
                }
                Ok(None) => break PartEnd::Done,
                Err(e) => break PartEnd::Stop(UploadError::Malformed(e.body_text())),
            }
        };
        let over = keep.is_some_and(|cap| size > cap);
        match (&filename, name.as_str()) {
            (Some(filename), "file") if upload.file.is_none() => {
                if over {
                    let complete = matches!(end, PartEnd::Done);
                    problem.get_or_insert(UploadError::FileTooLarge {
                        size,
                        limit: max_file,
                        complete,
                    });
                } else {
                    upload.file = Some(FilePart {
                        filename: filename.clone(),
                        content_type,
                        bytes: Bytes::from(data),
                    });
                }
            }
            (Some(_), "file") => upload.extra_files += 1,
            (Some(filename), _) => upload.other_files.push((name, filename.clone(), size)),
            (None, _) if over => {
                problem.get_or_insert(UploadError::FieldsTooLarge);
            }
            (None, _) => {
                field_bytes += size;
                upload
                    .fields
                    .push((name, String::from_utf8_lossy(&data).into_owned()));
            }
        }
        if let PartEnd::Stop(error) = end {
            // A size problem found first stays the answer; a broken body after it too.
            if !matches!(problem, Some(UploadError::FileTooLarge { .. })) {
                problem = Some(error);
            }
            break;
        }
    }
    (upload, problem)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn multipart_content_types_need_a_boundary() {
        let mut headers = HeaderMap::new();
        assert!(is_multipart(&headers).is_err());
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("Multipart/Form-Data; boundary=abc"),
        );
        assert!(is_multipart(&headers).is_ok());
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("multipart/form-data"),
        );
        assert!(is_multipart(&headers).is_err());
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        assert!(is_multipart(&headers).is_err());
    }

    #[test]
    fn records_fields_and_file_sizes_never_bytes() {
        let upload = Upload {
            fields: vec![
                ("model".into(), "m".into()),
                ("timestamp_granularities[]".into(), "word".into()),
                ("timestamp_granularities[]".into(), "segment".into()),
            ],
            file: Some(FilePart {
                filename: "a.wav".into(),
                content_type: Some("audio/wav".into()),
                bytes: Bytes::from_static(b"secret bytes"),
            }),
            ..Upload::default()
        };
        let record = upload.record();
        assert_eq!(
            record,
            json!({
                "model": "m",
                "timestamp_granularities[]": ["word", "segment"],
                "file": {"filename": "a.wav", "content_type": "audio/wav", "bytes": 12}
            })
        );
        assert!(!record.to_string().contains("secret"));
    }
}
