//! `evolution batch`: many prompts, answered concurrently, each answer saved
//! the moment it arrives, so an interrupted batch resumes where it stopped,
//! and a resumed batch answers exactly the input as it is now.
//!
//! With `--schema FILE.json` every line is answered as JSON of that schema
//! (see [`crate::schema`]): the answer line carries it as `json`, next to
//! the usual keys (`content` is the text it was read from); a line whose
//! answer does not fit even after the repair round is an error line, which
//! `--resume` asks again like any failure. The schema, as sent, is part of
//! every line's fingerprint: after the schema file changes, `--resume`
//! asks every line again.

mod input;
mod lines;
mod output;
mod progress;

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, IsTerminal, Seek};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use evolution_langchain::{
    ChatResponse, Error, EvolutionInference, Extracted, OutputSchema, ThrottleStats,
};
use futures::StreamExt;
use serde_json::Value;

use crate::config::{ConnectionArgs, Service};
use crate::emulator::EmbeddedArgs;
use crate::exit::{classify, CliError, Exit};
use crate::message::describe;
use crate::options::SamplingArgs;
use input::{
    for_each_line, BadLine, Defaults, Duplicates, Fingerprint, Found, Job, ReadError, Scanner,
};
use lines::{Asked, LineSet};
use output::{reconcile, Answer, Resumed, Sink};
use progress::Progress;

/// `evolution batch` options.
#[derive(Debug, Clone, Args)]
#[command(after_help = "\
Input lines are plain prompts, or JSON objects such as
  {\"id\": \"q1\", \"prompt\": \"Hello\", \"temperature\": 0.2}
  {\"id\": 2, \"messages\": [{\"role\": \"user\", \"content\": \"Hi\"}], \"max_tokens\": 64}
A JSON line has `prompt` or `messages`, optionally `id` and `system`, and any
chat parameter of the library under its own name, overriding the flags for that
line: model, max_tokens, temperature, top_p, frequency_penalty, presence_penalty,
stop (a string or a list), n, seed, tools, tool_choice, parallel_tool_calls,
response_format, reasoning_effort, extra_body (an object of provider fields), …
An unknown key is an error that lists the known ones.

A line without an id is known by its line number; ids given in the input must
be unique, and never clash with line numbers: join answers to input lines by
`line`. Each answer is one JSON line:
  {\"id\", \"line\", \"fingerprint\", \"content\", \"finish_reason\", \"usage\", \"error\"}
(and \"choices\", every choice's text, when a line asks for n > 1; \"tool_calls\",
the calls the answer made, each {\"id\", \"type\", \"function\": {\"name\",
\"arguments\"}}, when a line offered tools and the model called some). \"fingerprint\"
is a hash of what was asked: the line's id if it has one, its messages, its
parameters after the flags, and the --schema if any. A line that cannot be run (invalid JSON, unknown
key, duplicate id, …) gets an error line with \"id\": null and its line number,
on every run (--resume included), and makes the exit code 1.

--resume keeps a saved answer only while the input still asks its question:
an answer stays with its line when the line is unchanged, follows its question
to its new line when lines were inserted or deleted above it, and is dropped
when its line was edited or deleted (or the flags change what is asked); every
line left without an answer is asked. Afterwards the output holds exactly one
line per input line, each answer with the prompt on its line now.

--schema FILE.json answers every line as JSON matching that JSON schema: each
answer line also has \"json\" (the value; \"content\" is the text it was read
from). A line whose answer does not fit the schema, even after one repair round,
is an error line (its \"content\" is the model's last answer), asked again by
--resume. The schema is part of every fingerprint: change the file, and --resume
asks every line again. With --schema a line may not set response_format, tools
or tool_choice.")]
pub struct BatchArgs {
    /// Input file, one prompt per line (plain text or JSONL); `-` for stdin.
    #[arg(value_name = "INPUT")]
    pub input: PathBuf,

    /// Output file (JSONL) [default: stdout].
    #[arg(short, long, value_name = "OUTPUT")]
    pub output: Option<PathBuf>,

    /// Requests in flight at once.
    #[arg(short, long, value_name = "N", default_value_t = 8, allow_negative_numbers = true,
          value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub concurrency: u16,

    /// Keep the answers in OUTPUT that still answer their line's prompt and
    /// ask the rest: failed, unfinished, new and edited lines (bad input
    /// lines are reported again). See below.
    #[arg(long, requires = "output")]
    pub resume: bool,

    /// Replace an OUTPUT that already has answers.
    #[arg(long, conflicts_with = "resume")]
    pub overwrite: bool,

    /// Answer every line with JSON matching the JSON schema in this file
    /// (named by its "title" or the file's stem), written as each answer's
    /// "json" field; see below.
    #[arg(long, value_name = "FILE.json")]
    pub schema: Option<PathBuf>,

    /// No progress display (the final summary is still printed).
    #[arg(short, long)]
    pub quiet: bool,

    /// How often the plain progress line is printed when stderr is not a
    /// terminal, in milliseconds (hidden: for tests and odd CI systems).
    #[arg(long, hide = true, value_name = "MS", env = "EVOLUTION_PROGRESS_INTERVAL_MS",
          default_value_t = 5000, value_parser = clap::value_parser!(u64).range(1..))]
    pub progress_interval_ms: u64,

    #[command(flatten)]
    pub sampling: SamplingArgs,
}

/// Counts for the summary.
#[derive(Debug, Default)]
struct Tally {
    lines: usize,
    bad: usize,
    skipped: usize,
}

/// What the first reading of the input found.
#[derive(Default)]
struct Survey {
    /// Non-blank lines.
    lines: usize,
    /// Lines that cannot be run.
    bad: usize,
    /// Lines with a job.
    runnable: usize,
    /// What each line asks (only kept for `--resume`).
    asked: Asked,
    /// The repeated ids.
    duplicates: Duplicates,
}

/// Runs `batch`.
///
/// The input is read line by line, never whole: once to count the work,
/// find duplicate ids and (for `--resume`) note what each line asks, once
/// more to report its bad lines if it has any, and
/// once more while answering, with only the lines in flight (and a
/// channel's worth read ahead) in memory. Besides those, a batch keeps 16
/// bytes per explicit id while it looks for duplicates (line-numbered
/// prompts need nothing), then only the duplicates; a bit per line for the
/// lines already answered; and with `--resume`, eight bytes per line for
/// the whole run (twelve while it reconciles the output when answers
/// move), to check that a line it skips still asks what its answer
/// answers. The
/// output is read as a stream too. Standard input is first copied to an
/// unnamed temporary file, so it can be read again like a file.
pub async fn run(
    args: BatchArgs,
    connection: &ConnectionArgs,
    embedded: &EmbeddedArgs,
) -> Result<(), CliError> {
    let schema = args
        .schema
        .as_deref()
        .map(crate::schema::read)
        .transpose()?;
    let defaults = Defaults {
        options: args.sampling.chat_options("batch")?,
        system: args.sampling.system.clone(),
        schema: schema
            .as_ref()
            .map(|schema| Fingerprint::schema(&crate::schema::sent_form(schema))),
    };
    Sink::check(args.output.as_deref(), args.resume, args.overwrite)?;
    let mut input = open_input(&args.input)?;
    let survey = survey(&args.input, &mut input, &defaults, args.resume)?;
    let service = Service::resolve(connection, embedded).await?;
    let llm = service
        .inference()
        .max_concurrency(usize::from(args.concurrency))
        .build()?;

    let resumed = match (&args.output, args.resume) {
        (Some(path), true) => reconcile(path, &survey.asked)?,
        _ => Resumed::default(),
    };
    if resumed.moved > 0 || resumed.stale > 0 {
        eprintln!(
            "evolution: resume: {} saved answers kept ({} moved with their prompt to its new \
             line); {} no longer match the prompt on their line and were dropped",
            resumed.kept, resumed.moved, resumed.stale
        );
    }
    let mut sink = Sink::open(args.output.as_deref(), args.resume)?;
    let tally = Tally {
        lines: survey.lines,
        bad: survey.bad,
        skipped: resumed.kept,
    };

    rewind(&args.input, &mut input)?;
    let items = read_items(
        args.input.clone(),
        input,
        defaults,
        survey.duplicates,
        Answered {
            lines: resumed.done,
            asked: survey.asked,
        },
        2 * usize::from(args.concurrency),
    );
    let runnable = survey.runnable.saturating_sub(resumed.kept);
    let mut progress = Progress::new(runnable, io::stderr().is_terminal(), args.quiet);
    let stop = answer_all(
        &llm,
        schema.as_ref(),
        items,
        usize::from(args.concurrency),
        Duration::from_millis(args.progress_interval_ms),
        &mut sink,
        &mut progress,
    )
    .await;
    progress.finish();
    let stop = stop?;
    if !matches!(stop, Stop::ReaderGone) {
        summarize(&progress, &tally, llm.throttle_stats());
    }

    let api_failed = progress.failed() as usize;
    let failed = api_failed + tally.bad;
    match stop {
        Stop::Finished if failed == 0 => Ok(()),
        Stop::Finished => {
            let mut text = format!(
                "{failed} of {} prompts failed (errors are in the output)",
                tally.lines
            );
            let resume = if args.output.is_some() {
                "--resume"
            } else {
                "--resume -o FILE"
            };
            if tally.bad > 0 {
                text.push_str(&format!(
                    "; fix the {} bad input line{} in {} and rerun with {resume}",
                    tally.bad,
                    if tally.bad == 1 { "" } else { "s" },
                    args.input.display()
                ));
                if api_failed > 0 {
                    text.push_str(" to retry the others too");
                }
            } else {
                text.push_str(&format!("; rerun with {resume} to retry them"));
            }
            Err(CliError::failure(text))
        }
        Stop::Interrupted => Err(CliError::interrupted(
            "interrupted; every finished answer is saved: rerun with --resume to complete the rest",
        )),
        // `evolution batch … | head`: the reader has what it wanted.
        Stop::ReaderGone => Ok(()),
    }
}

/// The output line for a bad input line: id `null`, so it can never pass
/// for the answer of a line with the same id.
fn bad_answer(line: &BadLine) -> Answer {
    Answer {
        id: serde_json::Value::Null,
        line: line.line,
        fingerprint: None,
        content: None,
        finish_reason: None,
        usage: None,
        error: Some(format!("input line {}: {}", line.line, line.message)),
        choices: None,
        tool_calls: Vec::new(),
        json: None,
    }
}

/// Opens the input: the file, or standard input copied to an unnamed
/// temporary file (it is read more than once).
fn open_input(path: &Path) -> Result<File, CliError> {
    if path.as_os_str() != "-" {
        return File::open(path)
            .map_err(|e| CliError::usage(format!("cannot read {}: {e}", path.display())));
    }
    let cannot = |e: io::Error| CliError::usage(format!("cannot read the input from stdin: {e}"));
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let spool = std::env::temp_dir().join(format!(
        ".evolution-batch-stdin-{}-{nanos}",
        std::process::id()
    ));
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&spool)
        .map_err(cannot)?;
    // Unlinked at once: the open file lives on until the batch ends, and
    // nothing is left behind whatever way it ends.
    let _ = fs::remove_file(&spool);
    io::copy(&mut io::stdin().lock(), &mut file).map_err(cannot)?;
    file.rewind().map_err(cannot)?;
    Ok(file)
}

fn rewind(path: &Path, input: &mut File) -> Result<(), CliError> {
    input
        .rewind()
        .map_err(|e| CliError::usage(format!("cannot read {}: {e}", path.display())))
}

fn read_error(path: &Path, error: ReadError) -> CliError {
    match error {
        ReadError::Io(e) => CliError::usage(format!("cannot read {}: {e}", path.display())),
        ReadError::NotUtf8(offset) => CliError::usage(format!(
            "{} is not UTF-8 text (first bad byte at offset {offset})",
            path.display()
        )),
    }
}

/// Reads the whole input before anything is sent or any output touched:
/// it must be UTF-8 text; the work is counted; duplicate ids are found;
/// with `resume`, what each line asks is noted; and the bad lines are
/// reported on stderr (a second reading, only when there are any, so they
/// come in line order with the duplicates among them).
fn survey(
    path: &Path,
    input: &mut File,
    defaults: &Defaults,
    resume: bool,
) -> Result<Survey, CliError> {
    let mut survey = Survey::default();
    let mut scanner = Scanner::new(defaults, Duplicates::collect());
    if !resume {
        scanner = scanner.without_fingerprints();
    }
    scan(path, input, &mut scanner, |item| {
        survey.lines += 1;
        match item {
            Ok(job) => {
                survey.runnable += 1;
                if let Some(fingerprint) = job.fingerprint {
                    survey.asked.record(job.line, fingerprint, job.numbered);
                }
            }
            Err(_) => survey.bad += 1,
        }
        ControlFlow::Continue(())
    })?;
    let Found(duplicates, lost_jobs) = scanner.finish();
    survey.runnable -= lost_jobs.len();
    survey.bad += lost_jobs.len();
    for line in lost_jobs {
        survey.asked.forget(line);
    }
    if survey.bad == 0 {
        survey.duplicates = duplicates;
        return Ok(survey);
    }
    let mut scanner = Scanner::new(defaults, duplicates).without_fingerprints();
    scan(path, input, &mut scanner, |item| {
        if let Err(line) = item {
            eprintln!("evolution: input line {}: {}", line.line, line.message);
        }
        ControlFlow::Continue(())
    })?;
    survey.duplicates = scanner.finish().0;
    Ok(survey)
}

/// Reads the input from the start through `scanner`, handing each
/// non-blank line's job (or why it cannot be run) to `each`.
fn scan(
    path: &Path,
    input: &mut File,
    scanner: &mut Scanner<'_>,
    mut each: impl FnMut(Result<Job, BadLine>) -> ControlFlow<()>,
) -> Result<(), CliError> {
    rewind(path, input)?;
    let mut too_long = false;
    for_each_line(BufReader::new(&mut *input), |number, text| {
        if !Duplicates::fits(number) {
            too_long = true;
            return ControlFlow::Break(());
        }
        match scanner.line(number, text) {
            None => ControlFlow::Continue(()),
            Some(item) => each(item),
        }
    })
    .map_err(|e| read_error(path, e))?;
    if too_long {
        return Err(CliError::usage(format!(
            "{} has more than 2^31 lines: split it",
            path.display()
        )));
    }
    Ok(())
}

/// A line of the input, as the batch loop takes it. Only a channel's and a
/// buffer's worth exist at a time, so the variants' sizes do not matter.
#[allow(clippy::large_enum_variant)]
enum Item {
    /// A prompt to answer.
    Job(Job),
    /// A line that cannot be run: its error line is written.
    Bad(BadLine),
}

/// The lines a resumed batch has answers for, and what each line asked
/// when those answers were matched to it.
struct Answered {
    lines: LineSet,
    asked: Asked,
}

/// The lines still to run and the bad lines, in input order, read lazily on
/// a thread of their own: at most `ahead` of them wait in the channel; the
/// thread stops when the input ends or the batch stops listening. Lines
/// `answered` are skipped while they still ask what they asked when their
/// answers were matched to them; one that asks something else now (the
/// input was changed in place while the batch ran) is an error that ends
/// the batch, so no answer is left beside another prompt.
fn read_items(
    path: PathBuf,
    mut input: File,
    defaults: Defaults,
    duplicates: Duplicates,
    answered: Answered,
    ahead: usize,
) -> impl futures::Stream<Item = Result<Item, CliError>> {
    let (sender, receiver) = tokio::sync::mpsc::channel(ahead.max(1));
    std::thread::spawn(move || {
        let mut scanner = Scanner::new(&defaults, duplicates);
        let scanned = scan(&path, &mut input, &mut scanner, |item| {
            let item = match item {
                Ok(job) if answered.lines.contains(job.line) => {
                    if job.fingerprint == answered.asked.fingerprint(job.line) {
                        return ControlFlow::Continue(());
                    }
                    let _ = sender.blocking_send(Err(CliError::usage(format!(
                        "line {} of {} changed while the batch ran: run it again with --resume",
                        job.line,
                        path.display()
                    ))));
                    return ControlFlow::Break(());
                }
                Ok(job) => Item::Job(job),
                Err(bad) => Item::Bad(bad),
            };
            match sender.blocking_send(Ok(item)) {
                Ok(()) => ControlFlow::Continue(()),
                Err(_) => ControlFlow::Break(()),
            }
        });
        if let Err(error) = scanned {
            let _ = sender.blocking_send(Err(error));
        }
    });
    futures::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|item| (item, receiver))
    })
}

/// A line done with: asked (and how that went), or bad.
#[allow(clippy::large_enum_variant)]
enum Finished {
    Asked(Job, Result<Reply, Error>),
    Bad(BadLine),
}

/// An answer: a chat reply, or with `--schema` the value and how it came.
#[allow(clippy::large_enum_variant)]
enum Reply {
    Chat(ChatResponse),
    Extracted(Extracted<Value>),
}

/// How the run ended.
enum Stop {
    /// Every prompt has an answer or an error line.
    Finished,
    /// Ctrl-C or SIGTERM: the prompts in flight were abandoned, unwritten.
    Interrupted,
    /// Standard output was closed by its reader (`| head`): nobody reads
    /// further answers, so none are asked for.
    ReaderGone,
}

/// Sends every job with at most `concurrency` in flight, writing each
/// outcome (and each bad line's error) as it arrives. An error that
/// [`stops_the_batch`] ends it with that error's exit code: it would fail
/// every remaining line the same way, and lines not written can be resumed
/// once the credentials or rights are fixed.
async fn answer_all(
    llm: &EvolutionInference,
    schema: Option<&OutputSchema>,
    items: impl futures::Stream<Item = Result<Item, CliError>>,
    concurrency: usize,
    plain_interval: Duration,
    sink: &mut Sink,
    progress: &mut Progress,
) -> Result<Stop, CliError> {
    let mut outcomes = std::pin::pin!(items
        .map(|item| async move {
            Ok::<_, CliError>(match item? {
                Item::Job(job) => {
                    // The concurrency is the ceiling; the library's window
                    // shrinks it while the service shows overload.
                    let _place = llm.batch_permit().await;
                    let outcome = match schema {
                        Some(schema) => llm
                            .extract_with_schema(&job.messages, &job.options, schema)
                            .await
                            .map(Reply::Extracted),
                        None => llm.chat(&job.messages, &job.options).await.map(Reply::Chat),
                    };
                    Finished::Asked(job, outcome)
                }
                Item::Bad(bad) => Finished::Bad(bad),
            })
        })
        .buffer_unordered(concurrency));
    let interrupt = crate::signal::ctrl_c_or_term();
    tokio::pin!(interrupt);
    let plain = progress.wants_plain_lines();
    let mut ticker =
        tokio::time::interval_at(tokio::time::Instant::now() + plain_interval, plain_interval);
    loop {
        tokio::select! {
            // Checked first: after Ctrl-C, no further answer is waited for.
            biased;
            () = &mut interrupt => return Ok(Stop::Interrupted),
            next = outcomes.next() => {
                let Some(next) = next else {
                    return Ok(Stop::Finished);
                };
                let (line, ok) = match next? {
                    Finished::Asked(_, Err(error)) if stops_the_batch(&error) => {
                        return Err(CliError::from(error))
                    }
                    Finished::Asked(job, outcome) => {
                        let ok = outcome.is_ok();
                        (answer(&job, outcome, schema), Some(ok))
                    }
                    Finished::Bad(bad) => (bad_answer(&bad), None),
                };
                if write(sink, &line)?.is_break() {
                    return Ok(Stop::ReaderGone);
                }
                if let Some(ok) = ok {
                    progress.record(ok, llm.throttle_stats());
                }
            }
            _ = ticker.tick(), if plain => progress.print_plain(llm.throttle_stats()),
        }
    }
}

/// Whether `error` would fail every line alike, so the batch stops at it
/// rather than writing it as each line's failure: an authentication
/// failure, or anything the exit codes class as bad credentials or
/// forbidden (the model API's own `403`, after the token refresh, is an
/// [`Error::Api`]).
fn stops_the_batch(error: &Error) -> bool {
    matches!(error, Error::Auth(_))
        || matches!(classify(error), Exit::BadCredentials | Exit::Forbidden)
}

/// The output line for a finished job.
fn answer(job: &Job, outcome: Result<Reply, Error>, schema: Option<&OutputSchema>) -> Answer {
    let mut answer = Answer {
        id: job.id.clone(),
        line: job.line,
        fingerprint: job.fingerprint.map(Fingerprint::to_hex),
        content: None,
        finish_reason: None,
        usage: None,
        error: None,
        choices: None,
        tool_calls: Vec::new(),
        json: None,
    };
    match outcome {
        Ok(Reply::Chat(response)) => {
            // The library decides what counts as an answer's text (a
            // reply the library accepted always has one, "" for a choice
            // that only called tools).
            answer.content = Some(response.answer().unwrap_or_default().to_string());
            answer.tool_calls = response.tool_calls().to_vec();
            answer.finish_reason = response.finish_reason().map(str::to_string);
            answer.usage = response.usage;
            if response.choices.len() > 1 {
                answer.choices = Some(
                    response
                        .choices
                        .iter()
                        .map(|c| c.answer().unwrap_or_default().to_string())
                        .collect(),
                );
            }
        }
        Ok(Reply::Extracted(extracted)) => {
            if let Some(schema) = schema {
                answer.content = Some(crate::schema::raw_answer(&extracted, schema));
            }
            answer.finish_reason = extracted.response.finish_reason().map(str::to_string);
            answer.usage = extracted.usage;
            answer.json = Some(extracted.value);
        }
        Err(error) => {
            if let Error::Extraction { raw, .. } = &error {
                answer.content = Some(raw.clone());
            }
            answer.error = Some(describe(&error));
        }
    }
    answer
}

/// Writes one line. A failure to write ends the batch (answers that cannot
/// be saved are not worth paying for); a closed standard output ends it too,
/// but as a success (`Break`), as it does for `chat` and `models`.
fn write(sink: &mut Sink, answer: &Answer) -> Result<ControlFlow<()>, CliError> {
    match sink.write(answer) {
        Ok(()) => Ok(ControlFlow::Continue(())),
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe && sink.is_stdout() => {
            Ok(ControlFlow::Break(()))
        }
        Err(e) => Err(CliError::failure(format!("cannot write the output: {e}"))),
    }
}

/// The closing line on stderr.
fn summarize(progress: &Progress, tally: &Tally, throttle: ThrottleStats) {
    let answered = progress.done() - progress.failed();
    let mut text = format!(
        "batch: {} lines: {answered} answered, {} failed",
        tally.lines,
        progress.failed() as usize + tally.bad
    );
    if tally.bad > 0 {
        text.push_str(&format!(" ({} bad input lines)", tally.bad));
    }
    if tally.skipped > 0 {
        text.push_str(&format!(", {} already answered", tally.skipped));
    }
    let unfinished = tally.lines - tally.skipped - tally.bad - progress.done() as usize;
    if unfinished > 0 {
        text.push_str(&format!(", {unfinished} not run"));
    }
    text.push_str(&format!(" in {:.1}s", progress.elapsed().as_secs_f64()));
    if throttle.rate_limited > 0 || !throttle.waited.is_zero() {
        text.push_str(&format!(
            "; {} rate-limited (429) answers waited out, {:.1}s spent waiting for the limit",
            throttle.rate_limited,
            throttle.waited.as_secs_f64()
        ));
    }
    eprintln!("{text}");
}
