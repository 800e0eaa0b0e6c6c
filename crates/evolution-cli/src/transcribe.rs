//! `evolution transcribe`: speech to text with the audio API group
//! (`POST /audio/transcriptions`, Whisper; `openai/whisper-large-v3` on
//! Cloud.ru), through the same connection flags, environment and
//! `--emulator` as the other commands.
//!
//! ```text
//! evolution transcribe FILE|- [--language L] [--format json|text|verbose_json|srt|vtt]
//!     [--prompt P] [--temperature T] [--model M] [--timestamps segment,word]
//!     [--file-name NAME] [--json] [--max-upload-size SIZE]
//! ```
//!
//! What is printed on stdout:
//!
//! | format | output |
//! |---|---|
//! | `json` (default) | the text, plain, with a final line break |
//! | `verbose_json` | the transcription as JSON (text, language, duration, segments, words, and any other field the server sent) |
//! | `text`, `srt`, `vtt` | the body as the server sent it (a final line break added if it had none) |
//! | any, with `--json` | the transcription as JSON (`{"text": body}` for text, srt and vtt) |
//!
//! `--timestamps` asks `verbose_json` for segment and/or word timings, and
//! implies `--format verbose_json`.
//!
//! The upload's file name tells the server the audio's format: a file goes
//! under its own name. Standard input (`-`) goes as `audio.EXT`, EXT
//! guessed from its first bytes (wav, mp3, ogg, flac, m4a, webm); when they
//! are none of those, `--file-name NAME.EXT` is required. `--file-name`
//! also renames a file.
//!
//! A file over `--max-upload-size` (25 MiB by default, what Cloud.ru takes)
//! is refused before anything is sent: exit code 2, like any unusable input.
//! A server that refuses the upload as too large (413) is the service
//! refusing a request: exit code 6. Both messages name the size and what to
//! do.

use std::io::Cursor;
use std::path::{Path, PathBuf};

use clap::Args;
use evolution_langchain::{
    Error, EvolutionAudio, TimestampGranularity, Transcription, TranscriptionFormat,
    TranscriptionOptions, DEFAULT_TRANSCRIPTION_MODEL, ENV_TRANSCRIPTION_MODEL,
};
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::config::{ConnectionArgs, Service};
use crate::emulator::EmbeddedArgs;
use crate::exit::{classify, CliError};
use crate::message::setting;
use crate::output::print_text;

/// How the output is chosen, shown in `transcribe --help`.
const TRANSCRIBE_HELP: &str = "\
Output on stdout: for json (the default) the text; for verbose_json the
transcription as JSON (language, duration, segments, words); for text, srt and
vtt the body as the server sent it. --json prints the transcription as JSON
whatever the format.

The file name sent tells the server the audio's format. A file goes under its
own name; standard input (-) as audio.wav, audio.mp3, audio.ogg, audio.flac,
audio.m4a or audio.webm, guessed from its first bytes, else --file-name is
required:
  ffmpeg -i talk.mkv -f mp3 - | evolution transcribe - --language en
  arecord -f S16_LE -r 16000 | evolution transcribe - --file-name mic.wav

A file over --max-upload-size is refused before anything is sent (exit code 2);
a server refusing it as too large (413) is exit code 6.";

/// `evolution transcribe` options.
#[derive(Debug, Clone, Args)]
#[command(after_help = TRANSCRIBE_HELP)]
pub struct TranscribeArgs {
    /// The audio file (mp3, wav, ogg, flac, m4a, webm, …); `-` reads stdin.
    #[arg(value_name = "FILE|-")]
    pub input: PathBuf,

    /// The spoken language, ISO-639-1 (ru, en, …) [default: detected].
    #[arg(short, long, value_name = "LANG")]
    pub language: Option<String>,

    /// The reply's format: json (prints the text), text, verbose_json (with
    /// segments and timings), srt or vtt [default: json, or verbose_json
    /// with --timestamps].
    #[arg(short, long, value_name = "FORMAT", value_parser = parse_format)]
    pub format: Option<TranscriptionFormat>,

    /// Text that guides the style or the spelling of names, or the end of
    /// the previous piece of a longer recording.
    #[arg(short, long, value_name = "TEXT")]
    pub prompt: Option<String>,

    /// Sampling temperature, 0–1 [default: the server's].
    #[arg(short, long, value_name = "T", allow_negative_numbers = true)]
    pub temperature: Option<f32>,

    /// Transcription model [default: openai/whisper-large-v3].
    #[arg(short, long, value_name = "NAME", env = ENV_TRANSCRIPTION_MODEL)]
    pub model: Option<String>,

    /// Timings to return: segment, word, or both (segment,word); implies
    /// --format verbose_json.
    #[arg(long, value_name = "segment,word", value_delimiter = ',',
          value_parser = parse_granularity)]
    pub timestamps: Vec<TimestampGranularity>,

    /// The file name sent with the upload, whose extension tells the server
    /// the format [default: FILE's own name; for stdin audio.EXT, EXT
    /// guessed from the first bytes].
    #[arg(long, value_name = "NAME")]
    pub file_name: Option<String>,

    /// Print the transcription as JSON (text, and with verbose_json the
    /// language, duration, segments, words and the server's other fields),
    /// whatever the format.
    #[arg(long)]
    pub json: bool,

    /// Largest upload sent, in bytes or with a unit (KB, MB, GB, KiB, MiB,
    /// GiB); a larger file is refused before anything is sent.
    #[arg(long, value_name = "SIZE", default_value = "25MiB", value_parser = parse_size)]
    pub max_upload_size: u64,
}

/// `--format`'s values, as the library reads them.
fn parse_format(text: &str) -> Result<TranscriptionFormat, String> {
    text.parse()
}

/// `--timestamps`' values.
fn parse_granularity(text: &str) -> Result<TimestampGranularity, String> {
    match text.trim().to_ascii_lowercase().as_str() {
        "segment" | "segments" => Ok(TimestampGranularity::Segment),
        "word" | "words" => Ok(TimestampGranularity::Word),
        other => Err(format!("expected segment or word, got {other:?}")),
    }
}

/// A size: bytes, or a number with a unit (`KB`/`MB`/`GB` are powers of
/// 1000, `KiB`/`MiB`/`GiB` of 1024; `K`/`M`/`G` alone mean the latter).
fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().map_err(|_| {
        format!("expected a number of bytes such as 26214400 or 25MiB, got {text:?}")
    })?;
    let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1000,
        "mb" => 1000 * 1000,
        "gb" => 1000 * 1000 * 1000,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        other => {
            return Err(format!(
                "unknown unit {other:?}: use B, KB, MB, GB, KiB, MiB or GiB"
            ))
        }
    };
    match number.checked_mul(factor) {
        Some(0) => Err("must be at least 1 byte".into()),
        Some(bytes) => Ok(bytes),
        None => Err(format!("{text} is too large")),
    }
}

impl TranscribeArgs {
    /// The request's options, checked by the library
    /// ([`TranscriptionOptions::check`]): what it refuses is a usage error
    /// naming the flag.
    fn options(&self) -> Result<TranscriptionOptions, CliError> {
        // --timestamps without --format asks for the one format that has them.
        let format = match self.format {
            Some(format) => format,
            None if !self.timestamps.is_empty() => TranscriptionFormat::VerboseJson,
            None => TranscriptionFormat::default(),
        };
        let mut options = TranscriptionOptions::new().response_format(format);
        for granularity in &self.timestamps {
            options = options.timestamp_granularity(*granularity);
        }
        if let Some(language) = &self.language {
            options = options.language(language.trim());
        }
        if let Some(prompt) = self.prompt.as_deref().filter(|p| !p.trim().is_empty()) {
            options = options.prompt(prompt);
        }
        if let Some(temperature) = self.temperature {
            options = options.temperature(temperature);
        }
        options.check().map_err(|(field, message)| {
            CliError::usage(match field {
                // The library names the format by its field; the flag is --format.
                "timestamp_granularities" => format!(
                    "{} needs --format verbose_json (or no --format), not {}",
                    setting(field),
                    format.as_str()
                ),
                // "is empty: …"
                "language" => format!("{} {message}", setting(field)),
                _ => format!(
                    "invalid value for {}: {message} (see 'evolution transcribe --help')",
                    setting(field)
                ),
            })
        })?;
        Ok(options)
    }

    /// The transcription model.
    fn model(&self) -> String {
        self.model
            .as_deref()
            .map(str::trim)
            .filter(|m| !m.is_empty())
            .unwrap_or(DEFAULT_TRANSCRIPTION_MODEL)
            .to_string()
    }
}

/// Runs `transcribe`.
pub async fn run(
    args: TranscribeArgs,
    connection: &ConnectionArgs,
    embedded: &EmbeddedArgs,
) -> Result<(), CliError> {
    let options = args.options()?;
    let format = options.response_format;
    let stdin = args.input.as_os_str() == "-";
    let what = if stdin {
        "standard input".to_string()
    } else {
        args.input.display().to_string()
    };
    let upload = if stdin {
        Upload::Stdin(stdin_upload(args.file_name.clone()).await?)
    } else {
        check_file(&args.input, args.max_upload_size)?;
        Upload::File
    };
    let service = Service::resolve(connection, embedded).await?;
    let audio = service
        .connect(EvolutionAudio::builder())
        .model(args.model())
        .max_upload_size(args.max_upload_size)
        .build()?;
    let call = async {
        match upload {
            Upload::Stdin((name, reader)) => audio.transcribe_reader(&name, reader, options).await,
            Upload::File => match &args.file_name {
                None => audio.transcribe_file(&args.input, options).await,
                Some(name) => {
                    let file = tokio::fs::File::open(&args.input)
                        .await
                        .map_err(|e| cannot_read(&what, &e))?;
                    audio.transcribe_reader(name, file, options).await
                }
            },
        }
    };
    let transcription = tokio::select! {
        outcome = call => outcome.map_err(|error| failed(&what, error))?,
        () = crate::signal::ctrl_c() => return Err(CliError::interrupted("interrupted")),
    };
    print_text(&shown(&transcription, format, args.json)?)
}

/// What is sent: standard input (its name and the stream), or the file
/// (checked).
enum Upload<R> {
    Stdin((String, R)),
    File,
}

/// Whether a file can be sent: readable, not a directory, not empty, within
/// `limit` (nothing is sent otherwise; a larger file gets the library's
/// error for it, with the file named).
fn check_file(path: &Path, limit: u64) -> Result<(), CliError> {
    let shown = path.display();
    let metadata = std::fs::metadata(path)
        .map_err(|e| CliError::usage(format!("cannot read {shown}: {e}")))?;
    if metadata.is_dir() {
        return Err(CliError::usage(format!(
            "{shown} is a directory, not an audio file"
        )));
    }
    if metadata.len() == 0 {
        return Err(CliError::usage(format!(
            "{shown} is empty: there is no audio to transcribe"
        )));
    }
    if metadata.len() > limit {
        return Err(failed(
            &shown.to_string(),
            Error::UploadTooLarge {
                size: metadata.len(),
                limit: Some(limit),
                request_id: None,
            },
        ));
    }
    Ok(())
}

/// Standard input, with the first bytes read to name it: `file_name`, or
/// `audio.EXT` with EXT guessed from them.
async fn stdin_upload(
    file_name: Option<String>,
) -> Result<(String, impl AsyncRead + Unpin + Send), CliError> {
    let mut stdin = tokio::io::stdin();
    let mut head = vec![0u8; 16];
    let mut filled = 0;
    while filled < head.len() {
        match stdin.read(&mut head[filled..]).await {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) => {
                return Err(CliError::usage(format!(
                    "cannot read the audio from standard input: {e}"
                )))
            }
        }
    }
    head.truncate(filled);
    if head.is_empty() {
        return Err(CliError::usage(
            "standard input is empty: there is no audio to transcribe",
        ));
    }
    let name = match file_name.filter(|n| !n.trim().is_empty()) {
        Some(name) => name,
        None => match sniff(&head) {
            Some(extension) => format!("audio.{extension}"),
            None => {
                return Err(CliError::usage(
                    "cannot tell the audio format of standard input from its first bytes: \
                     pass --file-name NAME.EXT (e.g. --file-name speech.mp3)",
                ))
            }
        },
    };
    Ok((name, Cursor::new(head).chain(stdin)))
}

/// The extension of the audio format `head` (a file's first bytes) starts,
/// when it is one servers take.
fn sniff(head: &[u8]) -> Option<&'static str> {
    match head {
        [b'R', b'I', b'F', b'F', _, _, _, _, b'W', b'A', b'V', b'E', ..] => Some("wav"),
        [b'I', b'D', b'3', ..] => Some("mp3"),
        // An MPEG audio frame: 11 sync bits, then a layer other than 00
        // (00 is AAC's ADTS, which servers do not take).
        [0xff, second, ..] if second & 0xe0 == 0xe0 && second & 0x06 != 0 => Some("mp3"),
        [b'O', b'g', b'g', b'S', ..] => Some("ogg"),
        [b'f', b'L', b'a', b'C', ..] => Some("flac"),
        [_, _, _, _, b'f', b't', b'y', b'p', ..] => Some("m4a"),
        [0x1a, 0x45, 0xdf, 0xa3, ..] => Some("webm"),
        _ => None,
    }
}

fn cannot_read(what: &str, error: &std::io::Error) -> Error {
    Error::InvalidRequest {
        field: "file".into(),
        message: format!("cannot read {what}: {error}"),
    }
}

/// A library error, with the upload named as the user gave it.
fn failed(what: &str, error: Error) -> CliError {
    let exit = classify(&error);
    match error {
        Error::UploadTooLarge {
            size,
            limit,
            request_id,
        } => CliError::new(
            exit,
            crate::message::upload_too_large(what, size, limit, request_id.as_ref()),
        ),
        Error::InvalidRequest { field, message } if field == "file" => {
            CliError::new(exit, format!("{what}: {message}"))
        }
        other => other.into(),
    }
}

/// The text printed for `transcription` (see the module docs).
fn shown(
    transcription: &Transcription,
    format: TranscriptionFormat,
    json: bool,
) -> Result<String, CliError> {
    let mut text = if json || format == TranscriptionFormat::VerboseJson {
        serde_json::to_string_pretty(transcription)
            .map_err(|e| CliError::failure(format!("cannot encode the transcription: {e}")))?
    } else {
        transcription.text.clone()
    };
    if !text.ends_with('\n') {
        text.push('\n');
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_with_and_without_units() {
        assert_eq!(parse_size("26214400"), Ok(26_214_400));
        assert_eq!(parse_size("25MiB"), Ok(25 << 20));
        assert_eq!(parse_size("25 mib"), Ok(25 << 20));
        assert_eq!(parse_size("10MB"), Ok(10_000_000));
        assert_eq!(parse_size("2K"), Ok(2048));
        assert!(parse_size("0").unwrap_err().contains("at least 1 byte"));
        assert!(parse_size("1.5MB").is_err());
        assert!(parse_size("5 parsecs")
            .unwrap_err()
            .contains("unknown unit"));
        assert!(parse_size("99999999999GiB")
            .unwrap_err()
            .contains("too large"));
    }

    #[test]
    fn formats_are_guessed_from_the_first_bytes() {
        assert_eq!(sniff(b"RIFF\x24\x08\x00\x00WAVEfmt "), Some("wav"));
        assert_eq!(sniff(b"ID3\x04\x00"), Some("mp3"));
        assert_eq!(sniff(&[0xff, 0xfb, 0x90, 0x64]), Some("mp3"));
        assert_eq!(sniff(&[0xff, 0xf1, 0x50, 0x80]), None, "AAC ADTS");
        assert_eq!(sniff(b"OggS\x00\x02"), Some("ogg"));
        assert_eq!(sniff(b"fLaC\x00\x00"), Some("flac"));
        assert_eq!(sniff(b"\x00\x00\x00\x20ftypM4A "), Some("m4a"));
        assert_eq!(sniff(&[0x1a, 0x45, 0xdf, 0xa3, 0x01]), Some("webm"));
        assert_eq!(sniff(b"Hello"), None);
        assert_eq!(sniff(b"RIFF"), None);
    }

    fn args(format: Option<&str>, timestamps: &[TimestampGranularity]) -> TranscribeArgs {
        TranscribeArgs {
            input: "-".into(),
            language: None,
            format: format.map(|f| f.parse().unwrap()),
            prompt: None,
            temperature: None,
            model: None,
            timestamps: timestamps.to_vec(),
            file_name: None,
            json: false,
            max_upload_size: 1,
        }
    }

    #[test]
    fn timestamps_imply_verbose_json_and_refuse_other_formats() {
        let word = [TimestampGranularity::Word];
        let options = args(None, &word).options().unwrap();
        assert_eq!(options.response_format, TranscriptionFormat::VerboseJson);
        assert_eq!(options.timestamp_granularities, word);
        assert!(args(Some("verbose_json"), &word).options().is_ok());
        let error = args(Some("srt"), &word).options().unwrap_err();
        assert!(
            error.message.contains("--timestamps needs"),
            "{}",
            error.message
        );
        assert_eq!(
            args(None, &[]).options().unwrap().response_format,
            TranscriptionFormat::Json
        );
        let hot = TranscribeArgs {
            temperature: Some(1.5),
            ..args(None, &[])
        };
        let error = hot.options().unwrap_err();
        assert_eq!(error.exit, crate::exit::Exit::Usage);
        assert!(
            error
                .message
                .contains("invalid value for --temperature: must be between 0 and 1, got 1.5"),
            "{}",
            error.message
        );
        let blank = TranscribeArgs {
            language: Some("  ".into()),
            ..args(None, &[])
        };
        let error = blank.options().unwrap_err();
        assert!(
            error.message.starts_with("--language is empty"),
            "{}",
            error.message
        );
        let spaced = TranscribeArgs {
            language: Some(" ru ".into()),
            ..args(None, &[])
        };
        assert_eq!(spaced.options().unwrap().language.as_deref(), Some("ru"));
    }

    #[test]
    fn output_by_format() {
        let plain = Transcription {
            text: "Hello there.".into(),
            ..Transcription::default()
        };
        assert_eq!(
            shown(&plain, TranscriptionFormat::Json, false).unwrap(),
            "Hello there.\n"
        );
        let json: serde_json::Value =
            serde_json::from_str(&shown(&plain, TranscriptionFormat::Json, true).unwrap()).unwrap();
        assert_eq!(json, serde_json::json!({"text": "Hello there."}));
        let srt = Transcription {
            text: "1\n00:00:00,000 --> 00:00:01,000\nHello\n\n".into(),
            ..Transcription::default()
        };
        assert_eq!(
            shown(&srt, TranscriptionFormat::Srt, false).unwrap(),
            srt.text
        );
    }
}
