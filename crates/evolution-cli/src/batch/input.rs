//! The batch input: one prompt per line, as plain text or as a JSON object.
//!
//! A JSON line is `{"id": …, "prompt": "…"}` or `{"id": …, "messages": […]}`,
//! optionally with `system` and any parameter of the library's
//! [`ChatOptions`] under its own name (`model`, `temperature`, `max_tokens`,
//! `seed`, `n`, `reasoning_effort`, `extra_body`, …), overriding the
//! command's flags for that line. Everything but the line's own four keys
//! is read by `ChatOptions` itself, so the keys are exactly the library's
//! parameters and an unknown one is an error naming the known ones: a
//! misspelt `temprature` silently ignored would cost a whole batch.
//! `stop` may be one string or a list. Blank lines are skipped, and so is
//! a UTF-8 byte order mark at the very start.
//!
//! A line's id is its own `id` when it has one, else its line number. Ids
//! given in the input must be unique among themselves; line numbers are a
//! namespace apart (a plain prompt on line 2 and `{"id": 2, …}` on line 3
//! are two different lines), so answers are joined to input lines by their
//! `line`. A line that cannot be run (a "bad line") is reported under the
//! id `null` with its line number, so its error can never be mistaken for
//! the answer of a line that has the same id, in this run or when resuming.
//!
//! Every job carries a [`Fingerprint`] of what it asks: the id it was given
//! (none for a line-numbered one), the messages and the parameters after the
//! flags and the line's own are combined, and with `--schema` a hash of the
//! schema as sent. It is written with the answer, and `--resume` keeps an answer only
//! for a line that still asks exactly that.
//!
//! With `--schema` the schema is the answer's format: a line that sets
//! `response_format`, `tools` or `tool_choice` is a bad line.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::io::{self, BufRead, Write};
use std::ops::ControlFlow;

use evolution_langchain::{ChatMessage, ChatOptions, Role};
use serde::Serialize;
use serde_json::{Map, Value};

/// One prompt to answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    /// 1-based line number in the input.
    pub line: usize,
    /// The id written with the answer: the line's own, or its line number.
    pub id: Value,
    /// Whether the id is the line number (the line gave none).
    pub numbered: bool,
    /// The conversation to send.
    pub messages: Vec<ChatMessage>,
    /// Per-line parameters (the flags, overridden by the line's own).
    pub options: ChatOptions,
    /// What is asked, written with the answer and read by `--resume`;
    /// `None` from a [`Scanner`] told to skip it
    /// ([`without_fingerprints`](Scanner::without_fingerprints)).
    pub fingerprint: Option<Fingerprint>,
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
    /// Options from the command line (already checked).
    pub options: ChatOptions,
    /// System prompt from the command line.
    pub system: Option<String>,
    /// With `--schema`: the [hash](Fingerprint::schema) of the schema as
    /// sent ([`crate::schema::sent_form`]), part of every line's fingerprint.
    pub schema: Option<u64>,
}

/// A 64-bit hash of what a line asks: its explicit id (or none), its
/// messages, its parameters and the `--schema`'s own hash (when there is
/// one; a batch without one hashes exactly what it did before `--schema`
/// existed), as the JSON this crate writes for them
/// (object keys sorted). FNV-1a, so it is the same from run to run (the
/// standard library's hashers promise no such thing); a version of the CLI
/// that writes a request differently asks such lines again, which is never
/// wrong. Never 0, which stands for "no job" in the batch's tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Fingerprint(pub u64);

impl Fingerprint {
    /// The fingerprint of a job with `id` (`None` for a line-numbered one),
    /// answered in the form of the schema whose [hash](Self::schema) is
    /// `schema` ([`Defaults::schema`]) if given.
    pub fn of(
        id: Option<&Value>,
        messages: &[ChatMessage],
        options: &ChatOptions,
        schema: Option<u64>,
    ) -> Self {
        #[derive(Serialize)]
        struct Asked<'a> {
            id: Option<&'a Value>,
            messages: &'a [ChatMessage],
            options: &'a ChatOptions,
            #[serde(skip_serializing_if = "Option::is_none")]
            schema: Option<u64>,
        }
        let mut hasher = Fnv1a::new();
        // Writing into a hasher cannot fail, nor can serializing these types.
        let _ = serde_json::to_writer(
            &mut hasher,
            &Asked {
                id,
                messages,
                options,
                schema,
            },
        );
        Fingerprint(hasher.0.max(1))
    }

    /// The hash a `--schema` enters every line's fingerprint as: FNV-1a of
    /// its sent form ([`crate::schema::sent_form`]), computed once per batch
    /// rather than the whole schema hashed again for every line.
    pub fn schema(sent_form: &str) -> u64 {
        let mut hasher = Fnv1a::new();
        // Writing into a hasher cannot fail.
        let _ = hasher.write_all(sent_form.as_bytes());
        hasher.0
    }

    /// As written in the output: 16 hex digits.
    pub fn to_hex(self) -> String {
        format!("{:016x}", self.0)
    }

    /// Reads [`to_hex`](Self::to_hex)'s form.
    pub fn from_hex(text: &str) -> Option<Self> {
        if text.len() != 16 {
            return None;
        }
        u64::from_str_radix(text, 16)
            .ok()
            .filter(|&v| v != 0)
            .map(Fingerprint)
    }
}

/// FNV-1a over the bytes written.
struct Fnv1a(u64);

impl Fnv1a {
    /// Nothing written yet: the offset basis.
    fn new() -> Self {
        Fnv1a(0xcbf2_9ce4_8422_2325)
    }
}

impl Write for Fnv1a {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        for &byte in bytes {
            self.0 = (self.0 ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A line's own keys, apart from the parameters.
const OWN_KEYS: [&str; 4] = ["id", "prompt", "messages", "system"];

/// Parses every non-blank line of `text` (for tests: a batch reads its
/// input line by line through [`Scanner`]), finding duplicate ids as a
/// batch does: one reading to collect the ids, another with them known.
#[cfg(test)]
pub fn parse(text: &str, defaults: &Defaults) -> (Vec<Job>, Vec<BadLine>) {
    let mut collect = Scanner::new(defaults, Duplicates::collect());
    for (index, raw) in text.lines().enumerate() {
        collect.line(index + 1, raw);
    }
    let duplicates = collect.finish().0;
    let mut scanner = Scanner::new(defaults, duplicates);
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

/// Repeated explicit ids. With two answers under one id the output could
/// not be joined by id, so every use of an id after its first makes its
/// line bad; a bad line's id counts too (an id claimed by a bad line is
/// taken). Line-numbered prompts cannot repeat and take no part.
///
/// Found in two steps, to keep memory to 16 bytes per explicit id: the
/// first reading of the input collects a 96-bit hash of each id with its
/// line ([`Duplicates::collect`]); sorting them then finds the repeats, and
/// only those are kept (line → the id's first line) for the readings that
/// follow. Two different ids sharing a 96-bit hash is about as likely, in a
/// batch of a million ids, as guessing a 64-bit key on the first try.
pub enum Duplicates {
    /// Collecting: one entry per explicit id seen.
    Collect {
        /// (hash, hash, line with the high bit set when the line had a job).
        ids: Vec<(u64, u32, u32)>,
        /// Seeds the hashes (ids never leave the process).
        hashers: (RandomState, RandomState),
    },
    /// Known: each line whose id was used before, with the id's first line.
    Known(HashMap<usize, usize>),
}

impl Default for Duplicates {
    /// None known.
    fn default() -> Self {
        Duplicates::Known(HashMap::new())
    }
}

/// The bit of a collected line number that says the line had a job.
const HAD_JOB: u32 = 1 << 31;

/// What collecting found: the duplicates, and the lines among them that
/// had a job (and now do not).
pub struct Found(pub Duplicates, pub Vec<usize>);

impl Duplicates {
    /// Ready to collect ids.
    pub fn collect() -> Self {
        Duplicates::Collect {
            ids: Vec::new(),
            hashers: (RandomState::new(), RandomState::new()),
        }
    }

    /// Whether a line number fits the collected form (below 2^31).
    pub fn fits(line: usize) -> bool {
        line < HAD_JOB as usize
    }
}

/// Turns input lines, one at a time and in order, into jobs or bad lines
/// (duplicate ids among them once they are [known](Duplicates::Known)).
///
/// Memory: besides the line at hand, what [`Duplicates`] holds; never the
/// lines themselves.
pub struct Scanner<'a> {
    defaults: &'a Defaults,
    duplicates: Duplicates,
    /// Whether jobs get their [`Fingerprint`].
    fingerprints: bool,
}

impl<'a> Scanner<'a> {
    /// A scanner for a new reading of the input; its jobs have their
    /// fingerprint.
    pub fn new(defaults: &'a Defaults, duplicates: Duplicates) -> Self {
        Self {
            defaults,
            duplicates,
            fingerprints: true,
        }
    }

    /// This scanner, for a reading that has no use for fingerprints (they
    /// cost a serialization of the whole request per line): its jobs have
    /// `None`.
    pub fn without_fingerprints(mut self) -> Self {
        self.fingerprints = false;
        self
    }

    /// After collecting: the repeated ids, and which of their lines had a
    /// job (they are bad lines now).
    pub fn finish(self) -> Found {
        let ids = match self.duplicates {
            Duplicates::Collect { ids, .. } => ids,
            known @ Duplicates::Known(_) => return Found(known, Vec::new()),
        };
        let mut ids = ids;
        ids.sort_unstable_by_key(|&(a, b, line)| (a, b, line & !HAD_JOB));
        let mut repeated = HashMap::new();
        let mut lost_jobs = Vec::new();
        let mut first = 0;
        for (index, &(a, b, line)) in ids.iter().enumerate() {
            if (a, b) != (ids[first].0, ids[first].1) {
                first = index;
                continue;
            }
            if index == first {
                continue;
            }
            let line = line & !HAD_JOB;
            repeated.insert(line as usize, (ids[first].2 & !HAD_JOB) as usize);
            if ids[index].2 & HAD_JOB != 0 {
                lost_jobs.push(line as usize);
            }
        }
        Found(Duplicates::Known(repeated), lost_jobs)
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
        if !raw.starts_with('{') {
            return Some(Ok(self.fingerprinted(plain(line, raw, defaults))));
        }
        let (id, parsed) = parse_json(line, raw, defaults);
        let parsed = parsed.map(|job| self.fingerprinted(job));
        if let Some(id) = id {
            match &mut self.duplicates {
                Duplicates::Collect { ids, hashers } => {
                    let text = id.to_string();
                    let had_job = if parsed.is_ok() { HAD_JOB } else { 0 };
                    // Callers check `fits` first; a larger number is not collected.
                    if let Ok(number) = u32::try_from(line).map(|l| l & !HAD_JOB) {
                        ids.push((
                            hashers.0.hash_one(&text),
                            hashers.1.hash_one(&text) as u32,
                            number | had_job,
                        ));
                    }
                }
                Duplicates::Known(repeated) => {
                    if let Some(first) = repeated.get(&line) {
                        return Some(Err(BadLine {
                            line,
                            message: format!("duplicate id {id} (first used on line {first})"),
                        }));
                    }
                }
            }
        }
        Some(parsed.map_err(|message| BadLine { line, message }))
    }

    /// `job` with its fingerprint, unless this scanner skips them.
    fn fingerprinted(&self, mut job: Job) -> Job {
        if self.fingerprints {
            let id = (!job.numbered).then_some(&job.id);
            job.fingerprint = Some(Fingerprint::of(
                id,
                &job.messages,
                &job.options,
                self.defaults.schema,
            ));
        }
        job
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
    let messages = with_system(vec![ChatMessage::user(prompt)], defaults.system.as_deref());
    let options = defaults.options.clone();
    Job {
        line,
        id: Value::from(line),
        numbered: true,
        fingerprint: None,
        messages,
        options,
    }
}

/// Parses a JSON line: its explicit id, when it has a usable one (even if
/// the line is bad otherwise), and the job or what is wrong with the line.
fn parse_json(line: usize, raw: &str, defaults: &Defaults) -> (Option<Value>, Result<Job, String>) {
    let mut object: Map<String, Value> = match serde_json::from_str(raw) {
        Ok(object) => object,
        Err(e) => return (None, Err(format!("invalid JSON: {e}"))),
    };
    let id = match object.remove("id") {
        None | Some(Value::Null) => None,
        Some(id @ Value::String(_)) if id.as_str().is_some_and(|s| !s.is_empty()) => Some(id),
        Some(id @ Value::Number(_)) if id.is_i64() || id.is_u64() => Some(id),
        Some(_) => {
            return (
                None,
                Err("`id` must be a non-empty string or an integer".into()),
            )
        }
    };
    let job = job_from_json(line, id.clone(), object, defaults);
    (id, job)
}

/// The job a JSON line stands for; `object` is the line without its `id`.
fn job_from_json(
    line: usize,
    id: Option<Value>,
    mut object: Map<String, Value>,
    defaults: &Defaults,
) -> Result<Job, String> {
    let text = |key: &str, value: Value| match value {
        Value::Null => Ok(None),
        Value::String(text) => Ok(Some(text)),
        _ => Err(format!("`{key}` must be text")),
    };
    let prompt = object
        .remove("prompt")
        .map_or(Ok(None), |v| text("prompt", v))?;
    let system = object
        .remove("system")
        .map_or(Ok(None), |v| text("system", v))?;
    let messages: Option<Vec<ChatMessage>> = match object.remove("messages") {
        None | Some(Value::Null) => None,
        Some(value) => Some(
            serde_json::from_value(value)
                .map_err(|e| format!("`messages` is not a list of chat messages: {e}"))?,
        ),
    };
    let messages = match (prompt, messages) {
        (Some(prompt), None) if !prompt.trim().is_empty() => vec![ChatMessage::user(prompt)],
        (None, Some(messages)) if !messages.is_empty() => messages,
        (Some(_), Some(_)) => return Err("give either `prompt` or `messages`, not both".into()),
        _ => return Err("needs a non-empty `prompt` (text) or `messages` (array)".into()),
    };
    let options = line_options(object)?;
    let mut merged = defaults.options.clone();
    merged.apply(options);
    merged
        .check()
        .map_err(|(field, message)| format!("`{field}` {message}"))?;
    if defaults.schema.is_some() {
        schema_conflict(&merged)?;
    }
    let system = system.or_else(|| defaults.system.clone());
    let messages = with_system(messages, system.as_deref());
    Ok(Job {
        line,
        fingerprint: None,
        numbered: id.is_none(),
        id: id.unwrap_or_else(|| Value::from(line)),
        messages,
        options: merged,
    })
}

/// With `--schema`, the answer's format is the schema's: a line may not
/// ask for another, nor offer tools (the schema may go as a forced tool call).
fn schema_conflict(options: &ChatOptions) -> Result<(), String> {
    let key = if options.response_format.is_some() {
        "response_format"
    } else if options.tools.as_ref().is_some_and(|t| !t.is_empty()) {
        "tools"
    } else if options.tool_choice.is_some() {
        "tool_choice"
    } else {
        return Ok(());
    };
    Err(format!(
        "`{key}` cannot be used with --schema: the schema is the answer's format \
         (drop `{key}` from the line, or run it without --schema)"
    ))
}

/// The parameters of a line: every key but its own four, read by
/// `ChatOptions` (a single `stop` string becomes a list of one).
fn line_options(mut object: Map<String, Value>) -> Result<ChatOptions, String> {
    if let Some(Value::String(stop)) = object.get("stop") {
        let one = Value::from(vec![stop.clone()]);
        object.insert("stop".into(), one);
    }
    serde_json::from_value(Value::Object(object)).map_err(|e| {
        let message = e.to_string();
        if message.starts_with("unknown field") {
            format!(
                "{message}, or a line's own {}",
                OWN_KEYS.map(|k| format!("`{k}`")).join(", ")
            )
        } else {
            message
        }
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
        assert_eq!(
            (jobs[0].line, &jobs[0].id, jobs[0].numbered),
            (1, &json!(1), true)
        );
        assert_eq!((&jobs[1].id, jobs[1].numbered), (&json!("a"), false));
        assert_eq!(jobs[1].options.temperature, Some(0.5));
        assert_eq!((&jobs[2].id, jobs[2].numbered), (&json!(4), true));
        assert_eq!(jobs[2].options.stop, Some(vec!["x".to_string()]));
    }

    #[test]
    fn every_library_parameter_is_a_line_key() {
        let (jobs, bad) = run(
            "{\"prompt\":\"q\",\"seed\":7,\"n\":2,\"reasoning_effort\":\"high\",\
             \"frequency_penalty\":0.5,\"extra_body\":{\"top_k\":20},\"stop\":[\"a\",\"b\"]}\n",
        );
        assert!(bad.is_empty(), "{bad:?}");
        let options = &jobs[0].options;
        assert_eq!(options.seed, Some(7));
        assert_eq!(options.n, Some(2));
        assert_eq!(options.reasoning_effort, Some("high".into()));
        assert_eq!(options.frequency_penalty, Some(0.5));
        assert_eq!(
            options.extra_body.as_ref().unwrap().get("top_k"),
            Some(&json!(20))
        );
        assert_eq!(options.stop, Some(vec!["a".to_string(), "b".to_string()]));
    }

    #[test]
    fn a_line_overrides_the_flags_and_the_library_checks_the_result() {
        let defaults = Defaults {
            options: ChatOptions::new().temperature(0.2).seed(1),
            ..Defaults::default()
        };
        let (jobs, bad) = parse(
            "{\"prompt\":\"q\",\"seed\":2}\n{\"prompt\":\"q\",\"n\":0}\n\
             {\"prompt\":\"q\",\"extra_body\":{\"model\":\"x\"}}\n",
            &defaults,
        );
        assert_eq!(jobs.len(), 1);
        assert_eq!(jobs[0].options.temperature, Some(0.2));
        assert_eq!(jobs[0].options.seed, Some(2));
        assert!(
            bad[0].message.starts_with("`n` must be between 1 and"),
            "{bad:?}"
        );
        assert!(bad[1].message.starts_with("`extra_body`"), "{bad:?}");
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
        // serde names the unknown key and the known ones; the line's own
        // keys are listed too.
        let unknown = &bad[1].message;
        for part in [
            "unknown field `temprature`",
            "`temperature`",
            "`reasoning_effort`",
            "`prompt`",
        ] {
            assert!(unknown.contains(part), "{part}: {unknown}");
        }
        assert!(
            bad[2].message.contains("duplicate id 1"),
            "{}",
            bad[2].message
        );
        assert!(bad[3].message.contains("`id`"), "{}", bad[3].message);
        assert!(bad[4].message.contains("prompt"), "{}", bad[4].message);
    }

    #[test]
    fn line_numbers_and_explicit_ids_never_collide() {
        let (jobs, bad) = run(
            "plain\n{\"id\":1,\"prompt\":\"explicit one\"}\n{\"prompt\":\"numbered\"}\n\
             {\"id\":3,\"prompt\":\"explicit three\"}\n",
        );
        assert!(bad.is_empty(), "{bad:?}");
        let ids: Vec<(Value, bool)> = jobs.iter().map(|j| (j.id.clone(), j.numbered)).collect();
        assert_eq!(
            ids,
            [
                (json!(1), true),
                (json!(1), false),
                (json!(3), true),
                (json!(3), false)
            ]
        );
        // The same prompt, numbered or with an id, asks different things.
        assert_ne!(
            Fingerprint::of(None, &jobs[0].messages, &jobs[0].options, None),
            Fingerprint::of(Some(&json!(1)), &jobs[0].messages, &jobs[0].options, None)
        );
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
    fn the_schema_is_part_of_what_is_asked_and_owns_the_format() {
        let with = |schema: &str| Defaults {
            schema: Some(Fingerprint::schema(schema)),
            ..Defaults::default()
        };
        let (plain, _) = run("alpha\n");
        let (a, _) = parse("alpha\n", &with("{\"a\":1}"));
        let (b, _) = parse("alpha\n", &with("{\"b\":1}"));
        assert_ne!(plain[0].fingerprint, a[0].fingerprint);
        assert_ne!(a[0].fingerprint, b[0].fingerprint);
        // Without a schema, what is hashed has no `schema` key at all:
        // answers saved before --schema existed still match.
        #[derive(Serialize)]
        struct Before<'a> {
            id: Option<&'a Value>,
            messages: &'a [ChatMessage],
            options: &'a ChatOptions,
        }
        let mut hasher = Fnv1a::new();
        serde_json::to_writer(
            &mut hasher,
            &Before {
                id: None,
                messages: &plain[0].messages,
                options: &plain[0].options,
            },
        )
        .unwrap();
        assert_eq!(plain[0].fingerprint, Some(Fingerprint(hasher.0.max(1))));

        let (jobs, bad) = parse(
            "{\"prompt\":\"q\",\"response_format\":{\"type\":\"json_object\"}}\n\
             {\"prompt\":\"q\",\"tool_choice\":\"auto\"}\n{\"prompt\":\"q\",\"seed\":1}\n",
            &with("{}"),
        );
        assert_eq!(jobs.len(), 1);
        assert_eq!(bad.len(), 2);
        assert!(
            bad[0]
                .message
                .starts_with("`response_format` cannot be used with --schema"),
            "{bad:?}"
        );
        assert!(bad[1].message.starts_with("`tool_choice`"), "{bad:?}");
        // Without --schema the same lines are fine.
        let (jobs, bad) =
            run("{\"prompt\":\"q\",\"response_format\":{\"type\":\"json_object\"}}\n");
        assert_eq!((jobs.len(), bad.len()), (1, 0));
    }

    #[test]
    fn a_scanner_computes_fingerprints_only_when_asked_to() {
        let defaults = Defaults::default();
        let text = "alpha\n{\"id\":\"b\",\"prompt\":\"beta\"}\n";
        let read = |mut scanner: Scanner<'_>| -> Vec<Job> {
            text.lines()
                .enumerate()
                .filter_map(|(index, raw)| scanner.line(index + 1, raw))
                .map(Result::unwrap)
                .collect()
        };
        let with = read(Scanner::new(&defaults, Duplicates::default()));
        let without = read(Scanner::new(&defaults, Duplicates::default()).without_fingerprints());
        assert_eq!(
            with[0].fingerprint,
            Some(Fingerprint::of(
                None,
                &with[0].messages,
                &with[0].options,
                None
            ))
        );
        assert_eq!(
            with[1].fingerprint,
            Some(Fingerprint::of(
                Some(&json!("b")),
                &with[1].messages,
                &with[1].options,
                None
            ))
        );
        assert!(without.iter().all(|job| job.fingerprint.is_none()));
        // Nothing else differs.
        for (a, b) in with.into_iter().zip(without) {
            assert_eq!(
                Job {
                    fingerprint: None,
                    ..a
                },
                b
            );
        }
    }

    #[test]
    fn fingerprints_follow_what_is_asked() {
        let (a, _) = run("alpha\nalpha\nbeta\n");
        // Line-numbered prompts: the text decides, not the line.
        assert_eq!(a[0].fingerprint, a[1].fingerprint);
        assert_ne!(a[0].fingerprint, a[2].fingerprint);
        // Parameters count, from the flags or the line.
        let defaults = Defaults {
            options: ChatOptions::new().temperature(0.0),
            ..Defaults::default()
        };
        let (b, _) = parse("alpha\n", &defaults);
        assert_ne!(a[0].fingerprint, b[0].fingerprint);
        let (c, _) = run("{\"prompt\":\"alpha\",\"temperature\":0}\n");
        assert_eq!(b[0].fingerprint, c[0].fingerprint);
        // Stable across runs and builds: FNV-1a of the JSON.
        let hex = a[0].fingerprint.unwrap().to_hex();
        assert_eq!(Fingerprint::from_hex(&hex), a[0].fingerprint);
        assert_eq!(Fingerprint::from_hex("0000000000000000"), None);
        assert_eq!(Fingerprint::from_hex("xyz"), None);
        let mut hasher = Fnv1a::new();
        hasher.write_all(b"a").unwrap();
        assert_eq!(hasher.0, 0xaf63_dc4c_8601_ec8c);
        assert_eq!(Fingerprint::schema("a"), 0xaf63_dc4c_8601_ec8c);
    }
}
