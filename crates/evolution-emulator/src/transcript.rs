//! The scripted transcriber: a transcript determined by the uploaded bytes, cut into
//! segments with deterministic timings, written in each of Whisper's response formats.

use std::fmt::Write as _;
use std::str::FromStr;

use bytes::Bytes;
use serde_json::{json, Value};

use crate::util;

/// How long each word "lasts": word `i` spans `[i × 0.5 s, (i + 1) × 0.5 s)`.
pub(crate) const SECONDS_PER_WORD: f64 = 0.5;

/// A segment ends after a word ending a sentence (`.`, `!`, `?`) or after this many words.
pub(crate) const SEGMENT_WORDS: usize = 12;

/// The transcript of an upload: the bytes themselves, trimmed, when they are UTF-8
/// text (so a test can upload a `.txt` "recording" and know the answer); otherwise
/// `audio of N bytes, fingerprint XXXXXXXX` (the first 8 hex digits of the bytes'
/// FNV-1a hash).
pub(crate) fn transcript(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(text) => text.trim().to_owned(),
        Err(_) => format!(
            "audio of {} bytes, fingerprint {:08x}",
            bytes.len(),
            util::fnv1a64(bytes) >> 32
        ),
    }
}

/// The modelled length of a transcript: its whitespace words × [`SECONDS_PER_WORD`].
pub(crate) fn duration(text: &str) -> f64 {
    util::word_count(text) as f64 * SECONDS_PER_WORD
}

/// One segment: a run of the transcript's words and when it is spoken, in seconds.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Segment {
    pub start: f64,
    pub end: f64,
    /// The segment's words joined by single spaces.
    pub text: String,
}

fn ends_sentence(word: &str) -> bool {
    word.trim_end_matches(['"', '\'', ')', ']', '»', '”'])
        .ends_with(['.', '!', '?', '…'])
}

/// The transcript's segments, in order: joined with single spaces they give its words.
pub(crate) fn segments(text: &str) -> Vec<Segment> {
    let mut segments = Vec::new();
    let mut current: Vec<&str> = Vec::new();
    let mut first = 0usize;
    for (i, word) in text.split_whitespace().enumerate() {
        if current.is_empty() {
            first = i;
        }
        current.push(word);
        if ends_sentence(word) || current.len() == SEGMENT_WORDS {
            segments.push(Segment {
                start: first as f64 * SECONDS_PER_WORD,
                end: (i + 1) as f64 * SECONDS_PER_WORD,
                text: current.join(" "),
            });
            current.clear();
        }
    }
    if !current.is_empty() {
        segments.push(Segment {
            start: first as f64 * SECONDS_PER_WORD,
            end: (first + current.len()) as f64 * SECONDS_PER_WORD,
            text: current.join(" "),
        });
    }
    segments
}

/// Whisper's `response_format` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    Json,
    Text,
    VerboseJson,
    Srt,
    Vtt,
}

impl FromStr for Format {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "json" => Ok(Format::Json),
            "text" => Ok(Format::Text),
            "verbose_json" => Ok(Format::VerboseJson),
            "srt" => Ok(Format::Srt),
            "vtt" => Ok(Format::Vtt),
            _ => Err(()),
        }
    }
}

/// What shapes an answer besides the transcript.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Options {
    pub format: Format,
    /// Reported by `verbose_json`.
    pub language: String,
    /// Reported in each `verbose_json` segment.
    pub temperature: f64,
    /// Whether `verbose_json` carries `words` (word granularity asked for).
    pub words: bool,
}

/// OpenAI's `usage` for audio: the duration in whole seconds, rounded up.
fn usage(text: &str) -> Value {
    json!({"type": "duration", "seconds": duration(text).ceil() as u64})
}

/// `HH:MM:SS<sep>mmm`, as SRT (`,`) and WebVTT (`.`) write times.
fn clock(seconds: f64, separator: char) -> String {
    let ms = (seconds * 1000.0).round() as u64;
    format!(
        "{:02}:{:02}:{:02}{separator}{:03}",
        ms / 3_600_000,
        ms / 60_000 % 60,
        ms / 1000 % 60,
        ms % 1000
    )
}

/// The answer body and its content type.
pub(crate) fn render(text: &str, options: &Options) -> (&'static str, Bytes) {
    const JSON: &str = "application/json";
    const PLAIN: &str = "text/plain; charset=utf-8";
    match options.format {
        Format::Json => {
            let body = json!({"text": text, "usage": usage(text)});
            (JSON, Bytes::from(body.to_string()))
        }
        Format::Text => (PLAIN, Bytes::from(format!("{text}\n"))),
        Format::VerboseJson => {
            let segments: Vec<Value> = segments(text)
                .iter()
                .enumerate()
                .map(|(id, s)| {
                    json!({
                        "id": id,
                        "seek": 0,
                        "start": s.start,
                        "end": s.end,
                        "text": s.text,
                        "tokens": [],
                        "temperature": options.temperature,
                        "avg_logprob": -0.25,
                        "compression_ratio": 1.0,
                        "no_speech_prob": 0.0,
                    })
                })
                .collect();
            let mut body = json!({
                "task": "transcribe",
                "language": options.language,
                "duration": duration(text),
                "text": text,
                "segments": segments,
                "usage": usage(text),
            });
            if options.words {
                let words: Vec<Value> = text
                    .split_whitespace()
                    .enumerate()
                    .map(|(i, word)| {
                        json!({
                            "word": word,
                            "start": i as f64 * SECONDS_PER_WORD,
                            "end": (i + 1) as f64 * SECONDS_PER_WORD,
                        })
                    })
                    .collect();
                body["words"] = Value::Array(words);
            }
            (JSON, Bytes::from(body.to_string()))
        }
        Format::Srt => {
            let mut out = String::new();
            for (i, s) in segments(text).iter().enumerate() {
                let _ = write!(
                    out,
                    "{}\n{} --> {}\n{}\n\n",
                    i + 1,
                    clock(s.start, ','),
                    clock(s.end, ','),
                    s.text
                );
            }
            (PLAIN, Bytes::from(out))
        }
        Format::Vtt => {
            let mut out = String::from("WEBVTT\n\n");
            for s in segments(text) {
                let _ = write!(
                    out,
                    "{} --> {}\n{}\n\n",
                    clock(s.start, '.'),
                    clock(s.end, '.'),
                    s.text
                );
            }
            (PLAIN, Bytes::from(out))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_its_own_transcript_and_bytes_get_a_fingerprint() {
        assert_eq!(transcript(b"  Hello there.\n"), "Hello there.");
        let binary = transcript(&[0xff, 0xfe, 0x00]);
        assert!(
            binary.starts_with("audio of 3 bytes, fingerprint "),
            "{binary}"
        );
        assert_eq!(binary, transcript(&[0xff, 0xfe, 0x00]));
        assert_ne!(binary, transcript(&[0xff, 0xfe, 0x01]));
    }

    #[test]
    fn segments_end_at_sentences_or_every_twelve_words() {
        let s = segments("One two. Three four! 1 2 3 4 5 6 7 8 9 10 11 12 13");
        let texts: Vec<&str> = s.iter().map(|s| s.text.as_str()).collect();
        assert_eq!(
            texts,
            [
                "One two.",
                "Three four!",
                "1 2 3 4 5 6 7 8 9 10 11 12",
                "13"
            ]
        );
        assert_eq!((s[0].start, s[0].end), (0.0, 1.0));
        assert_eq!((s[1].start, s[1].end), (1.0, 2.0));
        assert_eq!((s[3].start, s[3].end), (8.0, 8.5));
        assert!(segments("   ").is_empty());
    }

    #[test]
    fn clocks_in_srt_and_vtt_form() {
        assert_eq!(clock(0.0, ','), "00:00:00,000");
        assert_eq!(clock(3725.5, '.'), "01:02:05.500");
    }
}
