//! Fault injection vocabulary: what can go wrong ([`Fault`]), where ([`Target`]),
//! and the text forms used by the CLI and the admin API.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// The route family a queued [`Fault`] applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Target {
    /// `POST /api/v1/auth/token`.
    Auth,
    /// `POST /v1/chat/completions`.
    Chat,
    /// `GET /v1/models` (and `GET /v1/models/{id}`).
    Models,
    /// `POST /v1/embeddings`.
    Embeddings,
    /// `POST /v1/rerank`.
    Rerank,
    /// `POST /v1/audio/transcriptions`.
    Audio,
    /// Any `/v1/*` route; consulted after the route's own queue is empty.
    Api,
}

impl Target {
    /// The lower-case name accepted by [`FromStr`].
    pub fn as_str(self) -> &'static str {
        match self {
            Target::Auth => "auth",
            Target::Chat => "chat",
            Target::Models => "models",
            Target::Embeddings => "embeddings",
            Target::Rerank => "rerank",
            Target::Audio => "audio",
            Target::Api => "api",
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Target {
    type Err = ParseFaultError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auth" | "iam" => Ok(Target::Auth),
            "chat" => Ok(Target::Chat),
            "models" => Ok(Target::Models),
            "embeddings" => Ok(Target::Embeddings),
            "rerank" => Ok(Target::Rerank),
            "audio" | "transcription" | "transcriptions" => Ok(Target::Audio),
            "api" => Ok(Target::Api),
            other => Err(ParseFaultError(format!(
                "unknown target {other:?} (expected auth, chat, models, embeddings, rerank, \
                 audio or api)"
            ))),
        }
    }
}

/// One misbehaviour, served instead of (or on top of) the normal answer.
///
/// Faults that only make sense for some routes are harmless elsewhere: for example
/// [`Fault::ExpiresIn`] on a `/v1` route is consumed and the request is answered normally.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// Answer with this HTTP status and an OpenAI-style JSON error body.
    Status(u16),
    /// Like [`Fault::Status`], plus a `Retry-After` header (seconds).
    StatusRetryAfter(u16, u64),
    /// Wait this long, then answer normally.
    Delay(Duration),
    /// `200` with a `text/plain` body that is not JSON.
    NotJson,
    /// `200` with a `text/html` page, as a misconfigured proxy would send.
    Html,
    /// `200` JSON without the essential field: `access_token` (auth), `choices` (chat),
    /// `data` (models, embeddings), `results` (rerank), `text` (audio).
    MissingField,
    /// Auth only: `200` with a real token but this `expires_in` value (e.g. `-5`, `"soon"`).
    ExpiresIn(serde_json::Value),
    /// Close the TCP connection without sending any response.
    DropConnection,
    /// Streaming: send this many SSE events, then abort the connection without `[DONE]`.
    /// A non-streamed answer is cut in the middle of its JSON instead.
    CutStream(usize),
    /// Streaming: send this many SSE events, then `data: {"error":{...}}` and end without
    /// `[DONE]`. A non-streamed answer becomes a `200` whose body is that error object.
    StreamError(usize),
    /// Any target: answer with this status (meant for 3xx), `Location: <URL>` and an
    /// empty body.
    Redirect(u16, String),
    /// Send the response head with this status (JSON content type, or
    /// `text/event-stream` when the request asked to stream) and then never send or
    /// finish the body; the connection stays open until the client goes away or the
    /// emulator shuts down.
    StallBody(u16),
    /// A `200` whose body is valid JSON of the route's shape and longer than this many
    /// bytes, streamed in pieces (no `Content-Length`). A streaming chat request gets one
    /// SSE `data:` line of exactly this many bytes with no newline, then the body ends.
    Oversize(usize),
    /// Auth only: a successful reply `{"access_token": <this>, "expires_in": 3600}`.
    /// [`Fault::NEWLINE_ACCESS_TOKEN`] is the text form `access-token-newline`.
    AccessToken(String),
    /// Chat only: a `200` whose one choice has `content: null` and `finish_reason: null`;
    /// streamed, the role chunk, one chunk with an empty delta and no finish reason, then
    /// `[DONE]`.
    ContentNull,
    /// Streaming chat only: the role chunk, then an SSE comment `: keep-alive` every
    /// interval (at least 1 ms) and never an answer, until the client goes away or the
    /// emulator shuts down.
    Trickle(Duration),
    /// Chat only: a request with `response_format` `json_schema` is refused `400`
    /// `{"error":{"message":"response_format json_schema is not supported","type":
    /// "invalid_request_error","code":"invalid_request","param":"response_format"}}`, as
    /// servers without structured output answer; other requests are answered normally.
    /// [`EmulatorBuilder::refuse_json_schema`](crate::EmulatorBuilder::refuse_json_schema)
    /// refuses every such request.
    RefuseJsonSchema,
    /// Chat only: the answer to a `json_schema` request, or the arguments of a forced tool
    /// call, is JSON that does not fit the schema (the generated document without its first
    /// required property; a string when it has none); other requests are answered normally.
    OffSchema,
}

impl Fault {
    /// The token `access-token-newline` hands out: a line break in the middle, shaped
    /// like a header injection, which a client must refuse to put in a header.
    pub const NEWLINE_ACCESS_TOKEN: &'static str = "emulator-token\nX-Injected: yes";
}

/// `250ms`, or `1500us` when the duration is not a whole number of milliseconds.
fn fmt_duration(f: &mut fmt::Formatter<'_>, d: &Duration) -> fmt::Result {
    if d.subsec_nanos().is_multiple_of(1_000_000) {
        write!(f, "{}ms", d.as_millis())
    } else {
        write!(f, "{}us", d.as_micros())
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::Status(code) => write!(f, "status:{code}"),
            Fault::StatusRetryAfter(code, secs) => write!(f, "status:{code}:{secs}"),
            Fault::Delay(d) => {
                f.write_str("delay:")?;
                fmt_duration(f, d)
            }
            Fault::NotJson => f.write_str("not-json"),
            Fault::Html => f.write_str("html"),
            Fault::MissingField => f.write_str("missing-field"),
            Fault::ExpiresIn(v) => write!(f, "expires-in:{v}"),
            Fault::DropConnection => f.write_str("drop"),
            Fault::CutStream(n) => write!(f, "cut-stream:{n}"),
            Fault::StreamError(n) => write!(f, "stream-error:{n}"),
            Fault::Redirect(code, url) => write!(f, "redirect:{code}:{url}"),
            Fault::StallBody(code) => write!(f, "stall-body:{code}"),
            Fault::Oversize(n) => write!(f, "oversize:{n}"),
            Fault::AccessToken(token) if token == Fault::NEWLINE_ACCESS_TOKEN => {
                f.write_str("access-token-newline")
            }
            // JSON-quoted, so that any token (line breaks included) reads back the same.
            Fault::AccessToken(token) => write!(f, "access-token:{}", serde_json::json!(token)),
            Fault::ContentNull => f.write_str("content-null"),
            Fault::Trickle(d) => {
                f.write_str("trickle:")?;
                fmt_duration(f, d)
            }
            Fault::RefuseJsonSchema => f.write_str("refuse-json-schema"),
            Fault::OffSchema => f.write_str("off-schema"),
        }
    }
}

impl FromStr for Fault {
    type Err = ParseFaultError;

    /// Parses `status:503`, `status:429:2` (with `Retry-After: 2`), `delay:250ms`
    /// (also `us`, `s`, `m`; a bare number is milliseconds), `not-json`, `html`,
    /// `missing-field`, `expires-in:<json or text>`, `drop`, `cut-stream:3`, `stream-error:3`,
    /// `redirect:307:URL` (status 300..=399), `stall-body:500`, `oversize:N`,
    /// `access-token:<JSON string or text>`, `access-token-newline`
    /// ([`Fault::NEWLINE_ACCESS_TOKEN`]), `content-null`, `trickle:200ms`,
    /// `refuse-json-schema`, `off-schema`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let (kind, arg) = match s.split_once(':') {
            Some((k, a)) => (k.trim().to_ascii_lowercase(), Some(a.trim())),
            None => (s.to_ascii_lowercase(), None),
        };
        let no_arg = |fault: Fault| match arg {
            None => Ok(fault),
            Some(_) => Err(ParseFaultError(format!("fault {kind:?} takes no argument"))),
        };
        let need = |what: &str| {
            arg.filter(|a| !a.is_empty())
                .ok_or_else(|| ParseFaultError(format!("fault {kind:?} needs {what}")))
        };
        match kind.as_str() {
            "status" => {
                let arg = need("a status code, e.g. status:503")?;
                match arg.split_once(':') {
                    Some((code, secs)) => Ok(Fault::StatusRetryAfter(
                        parse_status(code)?,
                        parse_number(secs.trim(), "Retry-After seconds")?,
                    )),
                    None => Ok(Fault::Status(parse_status(arg)?)),
                }
            }
            "delay" => Ok(Fault::Delay(parse_duration(need(
                "a duration, e.g. delay:250ms",
            )?)?)),
            "not-json" | "notjson" => no_arg(Fault::NotJson),
            "html" => no_arg(Fault::Html),
            "missing-field" | "missingfield" => no_arg(Fault::MissingField),
            "expires-in" | "expiresin" => {
                let raw = need("a value, e.g. expires-in:-5")?;
                // Bare words are taken as strings so `expires-in:soon` needs no quoting.
                let value = serde_json::from_str(raw)
                    .unwrap_or_else(|_| serde_json::Value::String(raw.to_owned()));
                Ok(Fault::ExpiresIn(value))
            }
            "drop" | "drop-connection" => no_arg(Fault::DropConnection),
            "cut-stream" | "cutstream" => Ok(Fault::CutStream(parse_number(
                need("a chunk count, e.g. cut-stream:3")?,
                "chunk count",
            )?)),
            "stream-error" | "streamerror" => Ok(Fault::StreamError(parse_number(
                need("a chunk count, e.g. stream-error:3")?,
                "chunk count",
            )?)),
            "redirect" => {
                let arg = need("a status and a URL, e.g. redirect:307:http://127.0.0.1:1/")?;
                let (code, url) = arg.split_once(':').ok_or_else(|| {
                    ParseFaultError(format!("fault \"redirect\" needs CODE:URL, got {arg:?}"))
                })?;
                Ok(Fault::Redirect(
                    parse_redirect_status(code)?,
                    parse_location(url)?,
                ))
            }
            "stall-body" | "stallbody" => Ok(Fault::StallBody(parse_status(need(
                "a status code, e.g. stall-body:500",
            )?)?)),
            "oversize" => Ok(Fault::Oversize(parse_number(
                need("a byte count, e.g. oversize:1048576")?,
                "byte count",
            )?)),
            "access-token" | "accesstoken" => {
                let raw = need("a token, e.g. access-token:abc")?;
                // A JSON string reads as its value, so line breaks can be written `\n`.
                let token = match serde_json::from_str::<serde_json::Value>(raw) {
                    Ok(serde_json::Value::String(token)) => token,
                    _ => raw.to_owned(),
                };
                Ok(Fault::AccessToken(token))
            }
            "access-token-newline" => {
                no_arg(Fault::AccessToken(Fault::NEWLINE_ACCESS_TOKEN.to_owned()))
            }
            "content-null" | "contentnull" => no_arg(Fault::ContentNull),
            "trickle" => Ok(Fault::Trickle(parse_duration(need(
                "an interval, e.g. trickle:200ms",
            )?)?)),
            "refuse-json-schema" => no_arg(Fault::RefuseJsonSchema),
            "off-schema" | "offschema" => no_arg(Fault::OffSchema),
            _ => Err(ParseFaultError(format!(
                "unknown fault {s:?} (expected status:CODE[:RETRY_AFTER], delay:DURATION, \
                 not-json, html, missing-field, expires-in:VALUE, drop, cut-stream:N, \
                 stream-error:N, redirect:CODE:URL, stall-body:CODE, oversize:N, \
                 access-token:TOKEN, access-token-newline, content-null, trickle:INTERVAL, \
                 refuse-json-schema, off-schema)"
            ))),
        }
    }
}

fn parse_number<T: FromStr>(s: &str, what: &str) -> Result<T, ParseFaultError> {
    s.parse()
        .map_err(|_| ParseFaultError(format!("invalid {what}: {s:?}")))
}

fn parse_status(s: &str) -> Result<u16, ParseFaultError> {
    let code: u16 = parse_number(s.trim(), "status code")?;
    // 1xx would change the protocol state rather than answer the request.
    if (200..=599).contains(&code) {
        Ok(code)
    } else {
        Err(ParseFaultError(format!(
            "status code {code} is out of range (200..=599)"
        )))
    }
}

fn parse_redirect_status(s: &str) -> Result<u16, ParseFaultError> {
    let code: u16 = parse_number(s.trim(), "status code")?;
    if (300..=399).contains(&code) {
        Ok(code)
    } else {
        Err(ParseFaultError(format!(
            "redirect status {code} is out of range (300..=399)"
        )))
    }
}

/// A `Location` value: non-empty, and only characters a header value may hold.
fn parse_location(s: &str) -> Result<String, ParseFaultError> {
    let s = s.trim();
    if s.is_empty() || s.bytes().any(|b| b < 0x20 || b == 0x7f) {
        Err(ParseFaultError(format!("invalid redirect URL {s:?}")))
    } else {
        Ok(s.to_owned())
    }
}

fn parse_duration(s: &str) -> Result<Duration, ParseFaultError> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| ParseFaultError(format!("invalid duration: {s:?}")))?;
    let seconds_per_unit = match unit.trim() {
        "" | "ms" => 1e-3,
        "us" | "µs" => 1e-6,
        "s" => 1.0,
        "m" | "min" => 60.0,
        other => {
            return Err(ParseFaultError(format!(
                "invalid duration unit {other:?} in {s:?} (expected us, ms, s or m)"
            )))
        }
    };
    Duration::try_from_secs_f64(value * seconds_per_unit)
        .map_err(|_| ParseFaultError(format!("invalid duration: {s:?}")))
}

/// A fault queued against a target some number of times: the CLI form
/// `TARGET=FAULT[xN]`, e.g. `chat=status:503x2`, `auth=drop`.
#[derive(Debug, Clone, PartialEq)]
pub struct FaultSpec {
    /// Where the fault applies.
    pub target: Target,
    /// What happens.
    pub fault: Fault,
    /// How many consecutive requests get it (at least 1; the text form accepts at most
    /// [`FaultSpec::MAX_TIMES`]).
    pub times: usize,
}

impl FaultSpec {
    /// The largest repeat count the text form `xN` (and the admin route's `times`)
    /// accepts. [`EmulatorHandle::inject`](crate::EmulatorHandle::inject) takes any
    /// count: a queued fault is stored once with its remaining count, whatever that is.
    pub const MAX_TIMES: usize = 1_000_000;
}

impl fmt::Display for FaultSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.target, self.fault)?;
        if self.times != 1 {
            write!(f, "x{}", self.times)?;
        }
        Ok(())
    }
}

impl FromStr for FaultSpec {
    type Err = ParseFaultError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (target, rest) = s.split_once('=').ok_or_else(|| {
            ParseFaultError(format!(
                "invalid fault spec {s:?} (expected TARGET=FAULT[xN], e.g. chat=status:503x2)"
            ))
        })?;
        let rest = rest.trim();
        // Only a trailing `x<digits>` is a repeat count, so faults may contain an `x`.
        let (fault, times) = match rest.rsplit_once(['x', 'X']) {
            Some((fault, n)) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => {
                // All digits, so a parse failure can only mean "too large".
                let times = n
                    .parse::<usize>()
                    .ok()
                    .filter(|t| (1..=FaultSpec::MAX_TIMES).contains(t))
                    .ok_or_else(|| {
                        ParseFaultError(format!(
                            "repeat count {n} is out of range (1..={}) in {s:?}",
                            FaultSpec::MAX_TIMES
                        ))
                    })?;
                (fault, times)
            }
            _ => (rest, 1),
        };
        Ok(FaultSpec {
            target: target.parse()?,
            fault: fault.parse()?,
            times,
        })
    }
}

/// Why a [`Fault`], [`Target`] or [`FaultSpec`] string was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseFaultError(String);

impl fmt::Display for ParseFaultError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ParseFaultError {}
