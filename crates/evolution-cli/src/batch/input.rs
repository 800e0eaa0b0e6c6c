//! The batch input: one prompt per line, as plain text or as a JSON object.
//!
//! A JSON line is `{"id": …, "prompt": "…"}` or `{"id": …, "messages": […]}`
//! with optional parameters (`system`, `model`, `temperature`, `max_tokens`,
//! `top_p`, `frequency_penalty`, `presence_penalty`, `stop`, `seed`) that
//! override the command's flags for that line. Unknown keys are errors: a
//! misspelt `temprature` silently ignored would cost a whole batch. A line
//! without an id gets its line number; blank lines are skipped, and so is a
//! UTF-8 byte order mark at the very start.
//!
//! A line that cannot be run (a "bad line") is reported under the id `null`
//! with its line number, so its error can never be mistaken for the answer
//! of a line that has the same id, in this run or when resuming.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::io::{self, BufRead};
use std::ops::ControlFlow;

use evolution_langchain::{ChatMessage, ChatOptions, Role};
use serde::Deserialize;
use serde_json::Value;

/// One prompt to answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    /// 1-based line number in the input.
    pub line: usize,
    /// The id written with the answer.
    pub id: Value,
    /// The conversation to send.
    pub messages: Vec<ChatMessage>,
    /// Per-line parameters (the flags, overridden by the line's own).
    pub options: ChatOptions,
}

/// A line that cannot be run, with the reason. It has no id of its own in
/// the output (see the module docs): its line number identifies it.
#[derive(Debug, Clone, PartialEq)]
pub struct BadLine {
    /// 1-based line number in the input.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

/// What the flags contribute to every line.
#[derive(Debug, Clone, Default)]
pub struct Defaults {
    /// Options from the command line.
    pub options: ChatOptions,
    /// System prompt from the command line.
    pub system: Option<String>,
}

/// How answers and lines are matched across runs (for `--resume`): the id's
/// JSON text, so `7` and `"7"` stay different ids.
pub fn id_key(id: &Value) -> String {
    id.to_string()
}

/// A JSON line's fields.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Record {
    #[serde(rename = "id")]
    _id: Option<Value>,
    prompt: Option<String>,
    messages: Option<Vec<ChatMessage>>,
    system: Option<String>,
    model: Option<String>,
    temperature: Option<f32>,
    max_tokens: Option<u32>,
    top_p: Option<f32>,
    frequency_penalty: Option<f32>,
    presence_penalty: Option<f32>,
    stop: Option<Stop>,
    seed: Option<u64>,
}

/// `stop` as OpenAI accepts it: one string or several.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Stop {
    One(String),
    Many(Vec<String>),
}

/// Parses every non-blank line of `text` (for tests: a batch reads its
/// input line by line through [`Scanner`]).
#[cfg(test)]
pub fn parse(text: &str, defaults: &Defaults) -> (Vec<Job>, Vec<BadLine>) {
    let mut scanner = Scanner::new(defaults);
    let mut jobs = Vec::new();
    let mut bad = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        match scanner.line(index + 1, raw) {
            Some(Ok(job)) => jobs.push(job),
            Some(Err(line)) => bad.push(line),
            None => {}
        }
    }
    (jobs, bad)
}

/// Turns input lines, one at a time and in order, into jobs or bad lines.
/// Duplicate ids make the later line bad: with two answers under one id,
/// `--resume` could not tell which is which. Bad lines take part in that
/// check: an id claimed by a bad line is taken.
///
/// Memory: besides the line at hand it keeps one entry per id seen (a
/// 128-bit hash of the id and its first line, about 32 bytes), never the
/// lines themselves. Two different ids sharing a 128-bit hash is as likely
/// as guessing a random UUID.
pub struct Scanner<'a> {
    defaults: &'a Defaults,
    seen: HashMap<u128, usize>,
    hashers: (RandomState, RandomState),
}

impl<'a> Scanner<'a> {
    /// A scanner for a new input.
    pub fn new(defaults: &'a Defaults) -> Self {
        Self {
            defaults,
            seen: HashMap::new(),
            hashers: (RandomState::new(), RandomState::new()),
        }
    }

    fn id_hash(&self, id: &Value) -> u128 {
        let key = id_key(id);
        (u128::from(self.hashers.0.hash_one(&key)) << 64)
            | u128::from(self.hashers.1.hash_one(&key))
    }

    /// Line number `line` (1-based) with the text `raw`: `None` for a blank
    /// line, else its job or why it cannot be run.
    pub fn line(&mut self, line: usize, raw: &str) -> Option<Result<Job, BadLine>> {
        // Editors on Windows like to start a file with a byte order mark; left
        // in, it would turn a first JSON line into a plain-text prompt.
        let raw = if line == 1 {
            raw.strip_prefix('\u{feff}').unwrap_or(raw)
        } else {
            raw
        };
        let raw = raw.trim();
        if raw.is_empty() {
            return None;
        }
        let defaults = self.defaults;
        let (id, parsed) = if raw.starts_with('{') {
            parse_json(line, raw, defaults)
        } else {
            let job = plain(line, raw, defaults);
            (Some(job.id.clone()), Ok(job))
        };
        if let Some(id) = id {
            let hash = self.id_hash(&id);
            if let Some(first) = self.seen.get(&hash) {
                return Some(Err(BadLine {
                    line,
                    message: format!("duplicate id {id} (first used on line {first})"),
                }));
            }
            self.seen.insert(hash, line);
        }
        Some(parsed.map_err(|message| BadLine { line, message }))
    }
}

/// Why an input could not be read.
#[derive(Debug)]
pub enum ReadError {
    /// The file or pipe failed.
    Io(io::Error),
    /// Not UTF-8 text: the offset of the first bad byte.
    NotUtf8(usize),
}

/// Calls `each` with every line of `reader` (number, text without its line
/// end), reading one line at a time into one reused buffer, until the input
/// ends or `each` breaks.
pub fn for_each_line(
    mut reader: impl BufRead,
    mut each: impl FnMut(usize, &str) -> ControlFlow<()>,
) -> Result<(), ReadError> {
    let mut buffer = Vec::new();
    let mut offset = 0usize;
    let mut number = 0usize;
    loop {
        buffer.clear();
        let read = reader
            .read_until(b'\n', &mut buffer)
            .map_err(ReadError::Io)?;
        if read == 0 {
            return Ok(());
        }
        number += 1;
        let text = std::str::from_utf8(&buffer)
            .map_err(|e| ReadError::NotUtf8(offset + e.valid_up_to()))?;
        offset += read;
        let text = text.strip_suffix('\n').unwrap_or(text);
        let text = text.strip_suffix('\r').unwrap_or(text);
        if each(number, text).is_break() {
            return Ok(());
        }
    }
}

fn plain(line: usize, prompt: &str, defaults: &Defaults) -> Job {
    Job {
        line,
        id: Value::from(line),
        messages: with_system(vec![ChatMessage::user(prompt)], defaults.system.as_deref()),
        options: defaults.options.clone(),
    }
}

/// Parses a JSON line: its id, when it has a usable one (even if the line is
/// bad otherwise), and the job or what is wrong with the line.
fn parse_json(line: usize, raw: &str, defaults: &Defaults) -> (Option<Value>, Result<Job, String>) {
    let value: Value = match serde_json::from_str(raw) {
        Ok(value) => value,
        Err(e) => return (None, Err(format!("invalid JSON: {e}"))),
    };
    let id = match value.get("id") {
        None | Some(Value::Null) => Value::from(line),
        Some(id @ Value::String(s)) if !s.is_empty() => id.clone(),
        Some(id @ Value::Number(n)) if n.is_i64() || n.is_u64() => id.clone(),
        Some(_) => {
            return (
                None,
                Err("`id` must be a non-empty string or an integer".into()),
            )
        }
    };
    let job = job_from_json(line, id.clone(), value, defaults);
    (Some(id), job)
}

/// The job a JSON line (with a usable id) stands for.
fn job_from_json(line: usize, id: Value, value: Value, defaults: &Defaults) -> Result<Job, String> {
    let record: Record = serde_json::from_value(value).map_err(|e| e.to_string())?;
    let messages = match (record.prompt, record.messages) {
        (Some(prompt), None) if !prompt.trim().is_empty() => vec![ChatMessage::user(prompt)],
        (None, Some(messages)) if !messages.is_empty() => messages,
        (Some(_), Some(_)) => return Err("give either `prompt` or `messages`, not both".into()),
        _ => return Err("needs a non-empty `prompt` (text) or `messages` (array)".into()),
    };
    let system = record.system.or_else(|| defaults.system.clone());
    let mut options = defaults.options.clone();
    if let Some(model) = record.model {
        options.model = Some(model);
    }
    options.temperature = record.temperature.or(options.temperature);
    options.max_tokens = record.max_tokens.or(options.max_tokens);
    options.top_p = record.top_p.or(options.top_p);
    options.frequency_penalty = record.frequency_penalty.or(options.frequency_penalty);
    options.presence_penalty = record.presence_penalty.or(options.presence_penalty);
    options.seed = record.seed.or(options.seed);
    match record.stop {
        Some(Stop::One(stop)) => options.stop = Some(vec![stop]),
        Some(Stop::Many(stop)) => options.stop = Some(stop),
        None => {}
    }
    Ok(Job {
        line,
        messages: with_system(messages, system.as_deref()),
        options,
        id,
    })
}

fn with_system(mut messages: Vec<ChatMessage>, system: Option<&str>) -> Vec<ChatMessage> {
    let has_system = messages.first().is_some_and(|m| m.role == Role::System);
    if let Some(system) = system.filter(|s| !s.trim().is_empty()) {
        if !has_system {
            messages.insert(0, ChatMessage::system(system));
        }
    }
    messages
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(text: &str) -> (Vec<Job>, Vec<BadLine>) {
        parse(text, &Defaults::default())
    }

    #[test]
    fn plain_and_json_lines() {
        let (jobs, bad) = run(
            "Hello\n\n{\"id\":\"a\",\"prompt\":\"Hi\",\"temperature\":0.5}\n\
             {\"messages\":[{\"role\":\"user\",\"content\":\"Yo\"}],\"stop\":\"x\"}\n",
        );
        assert!(bad.is_empty(), "{bad:?}");
        assert_eq!(jobs.len(), 3);
        assert_eq!((jobs[0].line, &jobs[0].id), (1, &json!(1)));
        assert_eq!(jobs[1].id, json!("a"));
        assert_eq!(jobs[1].options.temperature, Some(0.5));
        assert_eq!(jobs[2].id, json!(4));
        assert_eq!(jobs[2].options.stop, Some(vec!["x".to_string()]));
    }

    #[test]
    fn bad_lines_carry_their_number() {
        let (jobs, bad) = run(
            "{\"id\":1,\"prompt\":\"a\"}\n{not json\n{\"id\":\"b\",\"prompt\":\"x\",\"temprature\":1}\n\
             {\"id\":1,\"prompt\":\"dup\"}\n{\"id\":[1],\"prompt\":\"x\"}\n{\"id\":\"c\"}\n",
        );
        assert_eq!(jobs.len(), 1);
        let lines: Vec<usize> = bad.iter().map(|b| b.line).collect();
        assert_eq!(lines, [2, 3, 4, 5, 6]);
        assert!(
            bad[0].message.contains("invalid JSON"),
            "{}",
            bad[0].message
        );
        assert!(bad[1].message.contains("temprature"), "{}", bad[1].message);
        assert!(
            bad[2].message.contains("duplicate id 1"),
            "{}",
            bad[2].message
        );
        assert!(bad[3].message.contains("`id`"), "{}", bad[3].message);
        assert!(bad[4].message.contains("prompt"), "{}", bad[4].message);
    }

    #[test]
    fn an_id_taken_by_a_bad_line_is_taken() {
        let (jobs, bad) = run(
            "{\"id\":\"z\",\"prompt\":\"x\",\"temprature\":1}\n{\"id\":\"z\",\"prompt\":\"y\"}\n",
        );
        assert!(jobs.is_empty(), "{jobs:?}");
        assert_eq!(bad.len(), 2);
        assert!(
            bad[1]
                .message
                .contains("duplicate id \"z\" (first used on line 1)"),
            "{}",
            bad[1].message
        );
    }

    #[test]
    fn a_byte_order_mark_is_not_part_of_the_first_line() {
        let (jobs, bad) = run("\u{feff}{\"id\":\"a\",\"prompt\":\"Hi\"}\nplain\n");
        assert!(bad.is_empty(), "{bad:?}");
        assert_eq!(jobs[0].id, json!("a"));
        assert_eq!(jobs[0].messages[0].content_text(), "Hi");
        assert_eq!(jobs[1].id, json!(2));
    }

    #[test]
    fn system_prompt_goes_first_unless_present() {
        let defaults = Defaults {
            system: Some("Be brief.".into()),
            ..Defaults::default()
        };
        let (jobs, _) = parse(
            "Hi\n{\"messages\":[{\"role\":\"system\",\"content\":\"Own\"},{\"role\":\"user\",\"content\":\"q\"}]}\n",
            &defaults,
        );
        assert_eq!(jobs[0].messages[0].role, Role::System);
        assert_eq!(jobs[0].messages.len(), 2);
        assert_eq!(jobs[1].messages.len(), 2);
        assert_eq!(jobs[1].messages[0].content_text(), "Own");
    }

    #[test]
    fn ids_of_different_types_differ() {
        assert_ne!(id_key(&json!(7)), id_key(&json!("7")));
    }
}
