//! The batch output: one JSON line per answer, written the moment it is
//! known, and reconciled with the input by `--resume`.
//!
//! Each line is serialized whole and handed to an unbuffered append-mode
//! file in one `write_all`, then the next line waits for it (standard output
//! is flushed after every line). So every line that was written completes
//! before the next starts, and none is held back in a buffer: whether the
//! process ends normally or on Ctrl-C, the file holds only complete lines.
//! `write_all` may take several `write` calls, so a kill (`kill -9`, a
//! crash, a full disk) in the middle of one can leave the last line torn;
//! that can only ever be the last line, and `--resume` drops it (the prompt
//! behind it runs again).
//!
//! # Resume
//!
//! Every answer carries the [`Fingerprint`] of what was asked. `--resume`
//! keeps a saved answer only where the input still asks exactly that, so
//! the finished file holds one answer per input line, each the answer to
//! the prompt on its line *now*:
//!
//! - an answer whose line still has the same fingerprint is kept as it is;
//! - an answer whose line changed, but whose fingerprint belongs to another
//!   line still without an answer (the input had lines inserted or deleted
//!   above it), is kept and moved there: its `line` (and, for a line known
//!   by its number, its `id`) is rewritten;
//! - every other answer (the line was edited or deleted, the flags changed
//!   what is asked), failures, bad-line reports, unreadable lines and
//!   answers without a fingerprint are dropped, and the lines without an
//!   answer run again.
//!
//! The file is rewritten through a temporary file renamed over it
//! ([`replace_file`]), so a crash during the rewrite leaves the original
//! intact.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::path::Path;

use evolution_langchain::{ToolCall, Usage};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::input::Fingerprint;
use super::lines::{Asked, LineSet};
use crate::exit::CliError;
use crate::output::replace_file;

/// One output line. Every key but `choices`, `tool_calls` and `json` is
/// always present: `error` is `null` for an answer, `content`/`usage` are
/// `null` for a failure, and `fingerprint` is `null` for a bad input line.
/// An answer that called tools has `tool_calls` (its `content` is then
/// usually `""` and its `finish_reason` `tool_calls`). With
/// `--schema`, an answer also has `json` (the value, valid against the
/// schema) and `content` is the text it was read from; a line whose answer
/// did not fit even after the repair round is a failure whose `content` is
/// the model's last answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Answer {
    /// The input line's id (its own, or its line number).
    pub id: Value,
    /// The input line number.
    pub line: usize,
    /// What was asked ([`Fingerprint::to_hex`]).
    #[serde(default)]
    pub fingerprint: Option<String>,
    /// The answer's text (the first choice's).
    pub content: Option<String>,
    /// Why generation stopped (`stop`, `length`, …).
    pub finish_reason: Option<String>,
    /// Token counts.
    pub usage: Option<Usage>,
    /// What went wrong, for a failed line.
    pub error: Option<String>,
    /// Every choice's text, when the line asked for more than one (`n`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub choices: Option<Vec<String>>,
    /// The tool calls the answer (its first choice) made, in OpenAI's
    /// shape: `id`, `type` and `function` (`name`, `arguments`); left out
    /// when it made none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    /// With `--schema`: the answer as JSON of the schema (`null` included,
    /// should the schema allow it).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub json: Option<Value>,
}

/// A key that is present holds a value, `null` included (serde's `Option`
/// would read `"json": null` as absent).
fn present<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(deserializer).map(Some)
}

/// Where answers go.
pub enum Sink {
    /// An unbuffered append-mode file (see the module docs).
    File(File),
    /// Standard output, flushed after every line.
    Stdout,
}

/// The part of a saved line that `--resume` reads.
#[derive(Deserialize)]
struct Saved {
    line: usize,
    #[serde(default)]
    fingerprint: Option<String>,
    #[serde(default)]
    error: Option<Value>,
}

/// What `--resume` kept of a saved output.
#[derive(Debug, Default)]
pub struct Resumed {
    /// The lines that have their answer.
    pub done: LineSet,
    /// Answers kept.
    pub kept: usize,
    /// Of those, answers moved to the line that now asks their question.
    pub moved: usize,
    /// Answers dropped because their line now asks something else (or is gone).
    pub stale: usize,
}

impl Sink {
    /// Checks, before anything is read or sent, that `path` can take the
    /// output: not a directory, and without `--resume` not a file with
    /// answers unless `overwrite` (re-running a batch by mistake must not
    /// throw away paid-for answers).
    pub fn check(path: Option<&Path>, resume: bool, overwrite: bool) -> Result<(), CliError> {
        let Some(path) = path else { return Ok(()) };
        if fs::metadata(path).is_ok_and(|m| m.is_dir()) {
            return Err(CliError::usage(format!(
                "{} is a directory: give the output file's path, e.g. {}",
                path.display(),
                path.join("answers.jsonl").display()
            )));
        }
        let occupied = fs::metadata(path).is_ok_and(|m| m.len() > 0);
        if occupied && !resume && !overwrite {
            return Err(CliError::usage(format!(
                "{} already has answers: pass --resume to complete it or --overwrite to replace it",
                path.display()
            )));
        }
        Ok(())
    }

    /// Opens the output for appending; emptied first unless `resume`.
    pub fn open(path: Option<&Path>, resume: bool) -> Result<Self, CliError> {
        let Some(path) = path else {
            return Ok(Sink::Stdout);
        };
        let cannot = |what: &str, e: io::Error| {
            CliError::usage(format!("cannot {what} {}: {e}", path.display()))
        };
        if !resume {
            // Emptied first and opened again: `append` and `truncate` cannot
            // be combined in one open.
            File::create(path).map_err(|e| cannot("create", e))?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| cannot("open", e))?;
        Ok(Sink::File(file))
    }

    /// Whether this is standard output.
    pub fn is_stdout(&self) -> bool {
        matches!(self, Sink::Stdout)
    }

    /// Writes one answer as one complete line.
    pub fn write(&mut self, answer: &Answer) -> io::Result<()> {
        let mut line = serde_json::to_vec(answer).map_err(io::Error::other)?;
        line.push(b'\n');
        match self {
            Sink::File(file) => file.write_all(&line),
            Sink::Stdout => {
                let mut stdout = io::stdout().lock();
                stdout.write_all(&line)?;
                stdout.flush()
            }
        }
    }
}

/// Reconciles the saved output at `path` with the input `asked` (see the
/// module docs), rewriting the file when anything is dropped or moved.
/// Reads the file as a stream, once: besides `asked`, memory holds the
/// lines done (a bit each) and, only when answers have to move, four bytes
/// per line (see [`Vacancies`](super::lines::Vacancies)).
pub fn reconcile(path: &Path, asked: &Asked) -> Result<Resumed, CliError> {
    let cannot = |e: io::Error| {
        CliError::failure(format!("cannot rewrite {} to resume: {e}", path.display()))
    };
    let file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Resumed::default()),
        Err(e) => {
            return Err(CliError::usage(format!(
                "cannot read {} to resume: {e}",
                path.display()
            )))
        }
    };
    replace_file(path, |out| {
        let mut resumed = Resumed::default();
        // Whether the file must be rewritten: something dropped or moved,
        // or a last line without its line break.
        let mut changed = false;
        // Lines that ask the question of an answer whose own line now asks
        // something else.
        let mut vacancies = asked.vacancies();
        let mut reader = BufReader::new(file);
        let mut buffer = Vec::new();
        loop {
            buffer.clear();
            if reader.read_until(b'\n', &mut buffer)? == 0 {
                break;
            }
            if !buffer.ends_with(b"\n") {
                changed = true;
            }
            let saved = match serde_json::from_slice::<Saved>(&buffer) {
                Ok(saved) if saved.error.as_ref().is_none_or(Value::is_null) => saved,
                // Failures, bad-line reports, torn or foreign lines.
                _ => {
                    changed |= !buffer.trim_ascii().is_empty();
                    continue;
                }
            };
            let Some(fingerprint) = saved.fingerprint.as_deref().and_then(Fingerprint::from_hex)
            else {
                changed = true;
                continue;
            };
            if asked.fingerprint(saved.line) == Some(fingerprint) && resumed.done.insert(saved.line)
            {
                out.write_all(buffer.trim_ascii_end())?;
                out.write_all(b"\n")?;
                resumed.kept += 1;
                continue;
            }
            changed = true;
            let Some(line) = vacancies.take(fingerprint, &resumed.done) else {
                resumed.stale += 1;
                continue;
            };
            let mut answer: Answer = serde_json::from_slice(&buffer)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            answer.line = line;
            if asked.numbered(line) {
                answer.id = Value::from(line);
            }
            serde_json::to_writer(&mut *out, &answer)?;
            out.write_all(b"\n")?;
            resumed.done.insert(line);
            resumed.kept += 1;
            resumed.moved += 1;
        }
        Ok((resumed, changed))
    })
    .map_err(cannot)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn answer(id: Value, line: usize, fingerprint: u64, error: Option<&str>) -> String {
        serde_json::to_string(&Answer {
            id,
            line,
            fingerprint: Some(Fingerprint(fingerprint).to_hex()),
            content: error.is_none().then(|| format!("answer {fingerprint}")),
            finish_reason: None,
            usage: None,
            error: error.map(str::to_string),
            choices: None,
            tool_calls: Vec::new(),
            json: None,
        })
        .unwrap()
    }

    fn saved(path: &Path) -> Vec<Answer> {
        fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[test]
    fn a_json_value_survives_a_move_null_included() {
        for value in [json!({"title": "x"}), Value::Null] {
            let mut line: Answer = serde_json::from_str(&answer(json!(1), 1, 11, None)).unwrap();
            line.json = Some(value.clone());
            let text = serde_json::to_string(&line).unwrap();
            assert!(text.contains("\"json\":"), "{text}");
            let back: Answer = serde_json::from_str(&text).unwrap();
            assert_eq!(back.json, Some(value));
        }
        let without: Answer = serde_json::from_str(&answer(json!(1), 1, 11, None)).unwrap();
        assert_eq!(without.json, None);
        assert!(!serde_json::to_string(&without).unwrap().contains("json"));
    }

    #[test]
    fn tool_calls_are_written_in_openais_shape_and_only_when_made() {
        let mut line: Answer = serde_json::from_str(&answer(json!(1), 1, 11, None)).unwrap();
        assert!(!serde_json::to_string(&line).unwrap().contains("tool_calls"));
        line.tool_calls = vec![ToolCall::new("call_1", "weather", "{\"city\":\"Lima\"}")];
        let text = serde_json::to_value(&line).unwrap();
        assert_eq!(
            text["tool_calls"],
            json!([{"id": "call_1", "type": "function",
                    "function": {"name": "weather", "arguments": "{\"city\":\"Lima\"}"}}])
        );
        let back: Answer = serde_json::from_value(text).unwrap();
        assert_eq!(back, line);
    }

    #[test]
    fn refuses_to_clobber_without_resume_or_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        fs::write(&path, "{\"id\":1}\n").unwrap();
        let err = Sink::check(Some(&path), false, false).err().unwrap();
        assert!(err.message.contains("--resume"), "{}", err.message);
        Sink::check(Some(&path), false, true).unwrap();
        Sink::check(Some(&path), true, false).unwrap();
        let _sink = Sink::open(Some(&path), false).unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "");
    }

    #[test]
    fn resume_keeps_matching_answers_and_drops_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        let good = answer(json!(1), 1, 11, None);
        let failed = answer(json!(2), 2, 12, Some("boom"));
        let repeated = answer(json!(1), 1, 11, None);
        let edited = answer(json!(3), 3, 99, None);
        let unfingerprinted = "{\"id\":4,\"line\":4,\"content\":\"x\",\"error\":null}";
        fs::write(
            &path,
            format!("{good}\n{failed}\n{repeated}\n{edited}\n{unfingerprinted}\n{{\"id\":3,\"cont"),
        )
        .unwrap();
        let mut asked = Asked::default();
        for line in 1..=4 {
            asked.record(line, Fingerprint(10 + line as u64), true);
        }

        let resumed = reconcile(&path, &asked).unwrap();
        assert_eq!((resumed.kept, resumed.moved, resumed.stale), (1, 0, 2));
        assert!(resumed.done.contains(1));
        assert!(!resumed.done.contains(2) && !resumed.done.contains(3));
        assert_eq!(fs::read_to_string(&path).unwrap(), format!("{good}\n"));

        // Nothing to change: the file is left alone.
        let before = fs::metadata(&path).unwrap().modified().unwrap();
        let again = reconcile(&path, &asked).unwrap();
        assert_eq!(again.kept, 1);
        assert_eq!(fs::metadata(&path).unwrap().modified().unwrap(), before);
        let leftovers: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "the temporary file was left behind");
    }

    #[test]
    fn answers_follow_their_prompt_to_its_new_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        // Saved: lines 1-3 asked A, B, A (numbered), line 4 asked X (id "x").
        let text = [
            answer(json!(1), 1, 0xA, None),
            answer(json!(2), 2, 0xB, None),
            answer(json!(3), 3, 0xA, None),
            answer(json!("x"), 4, 0xE, None),
        ]
        .join("\n");
        fs::write(&path, text + "\n").unwrap();
        // Now a new line on top: N, A, B, A, X.
        let mut asked = Asked::default();
        asked.record(1, Fingerprint(0xF), true);
        asked.record(2, Fingerprint(0xA), true);
        asked.record(3, Fingerprint(0xB), true);
        asked.record(4, Fingerprint(0xA), true);
        asked.record(5, Fingerprint(0xE), false);

        let resumed = reconcile(&path, &asked).unwrap();
        assert_eq!((resumed.kept, resumed.moved, resumed.stale), (4, 4, 0));
        assert!(!resumed.done.contains(1));
        let mut lines: Vec<(usize, Value, String)> = saved(&path)
            .into_iter()
            .map(|a| (a.line, a.id, a.fingerprint.unwrap()))
            .collect();
        lines.sort_by_key(|l| l.0);
        let hex = |f: u64| Fingerprint(f).to_hex();
        assert_eq!(
            lines,
            [
                (2, json!(2), hex(0xA)),
                (3, json!(3), hex(0xB)),
                (4, json!(4), hex(0xA)),
                (5, json!("x"), hex(0xE)),
            ]
        );
    }
}
