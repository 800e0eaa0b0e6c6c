//! The batch output: one JSON line per answer, written the moment it is
//! known, and read back by `--resume`.
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

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use evolution_langchain::Usage;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::input::id_key;
use crate::exit::CliError;

/// One output line. Every key is always present; `error` is `null` for an
/// answer and `content`/`usage` are `null` for a failure.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Answer {
    /// The input line's id.
    pub id: Value,
    /// The input line number (in the run that wrote this line).
    pub line: usize,
    /// The answer's text.
    pub content: Option<String>,
    /// Why generation stopped (`stop`, `length`, …).
    pub finish_reason: Option<String>,
    /// Token counts.
    pub usage: Option<Usage>,
    /// What went wrong, for a failed line.
    pub error: Option<String>,
}

/// Where answers go.
pub enum Sink {
    /// An unbuffered append-mode file (see the module docs).
    File(File),
    /// Standard output, flushed after every line.
    Stdout,
}

/// The part of an existing output line that `--resume` needs.
#[derive(Deserialize)]
struct Written {
    id: Value,
    #[serde(default)]
    error: Option<Value>,
}

impl Sink {
    /// Opens the output. Without `--resume` an existing non-empty file is an
    /// error unless `overwrite`: re-running a batch by mistake must not throw
    /// away paid-for answers. With `resume`, returns the ids already answered.
    pub fn open(
        path: Option<&Path>,
        resume: bool,
        overwrite: bool,
    ) -> Result<(Self, HashSet<String>), CliError> {
        let Some(path) = path else {
            return Ok((Sink::Stdout, HashSet::new()));
        };
        let cannot = |what: &str, e: io::Error| {
            CliError::usage(format!("cannot {what} {}: {e}", path.display()))
        };
        if fs::metadata(path).is_ok_and(|m| m.is_dir()) {
            return Err(CliError::usage(format!(
                "{} is a directory: give the output file's path, e.g. {}",
                path.display(),
                path.join("answers.jsonl").display()
            )));
        }
        let done = if resume {
            prepare_resume(path)?
        } else {
            let occupied = fs::metadata(path).is_ok_and(|m| m.len() > 0);
            if occupied && !overwrite {
                return Err(CliError::usage(format!(
                    "{} already has answers: pass --resume to complete it or --overwrite to replace it",
                    path.display()
                )));
            }
            HashSet::new()
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
        Ok((Sink::File(file), done))
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

/// Reads an existing output for `--resume`: the ids answered successfully.
///
/// Failed answers (bad input lines included: they are written again by
/// every run), unreadable lines (a last line torn by a kill, or a line edited
/// by hand) and repeated ids are dropped by rewriting the file without
/// them, through a temporary file renamed over the original, so a crash
/// during the rewrite leaves the original intact. The prompts behind dropped
/// lines then run again, and the finished file holds exactly one line per
/// input line.
fn prepare_resume(path: &Path) -> Result<HashSet<String>, CliError> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(HashSet::new()),
        Err(e) => {
            return Err(CliError::usage(format!(
                "cannot read {} to resume: {e}",
                path.display()
            )))
        }
    };
    let text = String::from_utf8_lossy(&bytes);
    let mut done = HashSet::new();
    let mut kept = String::with_capacity(text.len());
    let mut dropped = 0usize;
    for line in text.lines() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Written>(line) {
            Ok(written)
                if written.error.as_ref().is_none_or(Value::is_null)
                    && done.insert(id_key(&written.id)) =>
            {
                kept.push_str(line);
                kept.push('\n');
            }
            _ => dropped += 1,
        }
    }
    let needs_rewrite = dropped > 0 || (!text.is_empty() && !text.ends_with('\n'));
    if needs_rewrite {
        rewrite(path, kept.as_bytes()).map_err(|e| {
            CliError::failure(format!("cannot rewrite {} to resume: {e}", path.display()))
        })?;
        tracing::info!(
            dropped,
            kept = done.len(),
            "resume: dropped failed or unreadable lines"
        );
    }
    Ok(done)
}

/// Replaces `path`'s content atomically.
fn rewrite(path: &Path, content: &[u8]) -> io::Result<()> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "output".into());
    let temp: PathBuf = path.with_file_name(format!(".{name}.resume-{}.tmp", std::process::id()));
    let result = (|| {
        let mut file = File::create(&temp)?;
        file.write_all(content)?;
        file.sync_all()?;
        fs::rename(&temp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn answer(id: Value, error: Option<&str>) -> Answer {
        Answer {
            id,
            line: 1,
            content: error.is_none().then(|| "text".to_string()),
            finish_reason: None,
            usage: None,
            error: error.map(str::to_string),
        }
    }

    #[test]
    fn refuses_to_clobber_without_resume_or_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        fs::write(&path, "{\"id\":1}\n").unwrap();
        let err = Sink::open(Some(&path), false, false).err().unwrap();
        assert!(err.message.contains("--resume"), "{}", err.message);
        let (_sink, done) = Sink::open(Some(&path), false, true).unwrap();
        assert!(done.is_empty());
        assert_eq!(fs::read_to_string(&path).unwrap(), "");
    }

    #[test]
    fn resume_keeps_answers_and_drops_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        let good = serde_json::to_string(&answer(json!(1), None)).unwrap();
        let failed = serde_json::to_string(&answer(json!(2), Some("boom"))).unwrap();
        let repeated = serde_json::to_string(&answer(json!(1), None)).unwrap();
        fs::write(
            &path,
            format!("{good}\n{failed}\n{repeated}\n{{\"id\":3,\"cont"),
        )
        .unwrap();

        let (mut sink, done) = Sink::open(Some(&path), true, false).unwrap();
        assert_eq!(done, HashSet::from(["1".to_string()]));
        assert_eq!(fs::read_to_string(&path).unwrap(), format!("{good}\n"));

        sink.write(&answer(json!(2), None)).unwrap();
        let text = fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 2);
        assert!(text.ends_with('\n'));
    }
}
