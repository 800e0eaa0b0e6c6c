//! `evolution batch`: many prompts, answered concurrently, each answer saved
//! the moment it arrives, so an interrupted batch resumes where it stopped.

mod input;
mod output;
mod progress;

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, IsTerminal, Seek};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use evolution_langchain::{ChatResponse, Error, EvolutionInference};
use futures::StreamExt;

use crate::config::{ConnectionArgs, Endpoint};
use crate::emulator::EmbeddedArgs;
use crate::exit::{one_line, CliError};
use crate::options::SamplingArgs;
use input::{for_each_line, id_key, BadLine, Defaults, Job, ReadError, Scanner};
use output::{Answer, Sink};
use progress::Progress;

/// `evolution batch` options.
#[derive(Debug, Clone, Args)]
#[command(after_help = "\
Input lines are plain prompts, or JSON objects such as
  {\"id\": \"q1\", \"prompt\": \"Hello\", \"temperature\": 0.2}
  {\"id\": 2, \"messages\": [{\"role\": \"user\", \"content\": \"Hi\"}], \"max_tokens\": 64}
(keys: id, prompt | messages, system, model, temperature, max_tokens, top_p,
frequency_penalty, presence_penalty, stop, seed). A line without an id gets its
line number. Each answer is one JSON line:
  {\"id\", \"line\", \"content\", \"finish_reason\", \"usage\", \"error\"}
A line that cannot be run (invalid JSON, unknown key, duplicate id, …) gets an
error line with \"id\": null and its line number, on every run (--resume
included), and makes the exit code 1.")]
pub struct BatchArgs {
    /// Input file, one prompt per line (plain text or JSONL); `-` for stdin.
    #[arg(value_name = "INPUT")]
    pub input: PathBuf,

    /// Output file (JSONL) [default: stdout].
    #[arg(short, long, value_name = "OUTPUT")]
    pub output: Option<PathBuf>,

    /// Requests in flight at once.
    #[arg(short, long, value_name = "N", default_value_t = 8,
          value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub concurrency: u16,

    /// Keep the answers already in OUTPUT and run only the prompts that have
    /// none (failed and unfinished ones run again; bad input lines are
    /// reported again).
    #[arg(long, requires = "output")]
    pub resume: bool,

    /// Replace an OUTPUT that already has answers.
    #[arg(long, conflicts_with = "resume")]
    pub overwrite: bool,

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

    #[command(flatten)]
    pub connection: ConnectionArgs,
}

/// Counts for the summary.
#[derive(Debug, Default)]
struct Tally {
    lines: usize,
    bad: usize,
    skipped: usize,
}

/// Runs `batch`.
///
/// The input is read line by line, never whole: once to check that it is
/// text, once to report its bad lines and count the work, and once more
/// while answering, with only the lines in flight (and a channel's worth
/// read ahead) in memory. Besides those, a batch keeps one small entry per
/// id (for duplicates) and, with `--resume`, the set of finished ids.
/// Standard input is first copied to an unnamed temporary file, so it can be
/// read again like a file.
pub async fn run(args: BatchArgs, embedded: &EmbeddedArgs) -> Result<(), CliError> {
    let mut input = open_input(&args.input)?;
    check_text(&args.input, &mut input)?;
    let endpoint = Endpoint::resolve(&args.connection, embedded).await?;
    let llm = endpoint.inference().build()?;

    let defaults = Defaults {
        options: args.sampling.chat_options(),
        system: args.sampling.system.clone(),
    };
    let (mut sink, done) = Sink::open(args.output.as_deref(), args.resume, args.overwrite)?;

    // Bad lines are worked out from the input on every run and never count
    // as answered: `--resume` dropped their old error lines, and they are
    // written (and reported) again, before any answer.
    let mut tally = Tally::default();
    let mut runnable = 0usize;
    let mut write_failure = None;
    let mut reader_gone = false;
    let scanned = scan(&args.input, &mut input, &llm, &defaults, |item| {
        tally.lines += 1;
        match item {
            Ok(job) if done.contains(&id_key(&job.id)) => tally.skipped += 1,
            Ok(_) => runnable += 1,
            Err(line) => {
                tally.bad += 1;
                eprintln!("evolution: input line {}: {}", line.line, line.message);
                match write(&mut sink, &bad_answer(&line)) {
                    Ok(ControlFlow::Continue(())) => {}
                    Ok(ControlFlow::Break(())) => {
                        reader_gone = true;
                        return ControlFlow::Break(());
                    }
                    Err(e) => {
                        write_failure = Some(e);
                        return ControlFlow::Break(());
                    }
                }
            }
        }
        ControlFlow::Continue(())
    });
    if let Some(error) = write_failure {
        return Err(error);
    }
    scanned?;
    if reader_gone {
        return Ok(());
    }

    rewind(&args.input, &mut input)?;
    let jobs = read_jobs(
        args.input.clone(),
        input,
        llm.clone(),
        defaults,
        done,
        2 * usize::from(args.concurrency),
    );
    let mut progress = Progress::new(runnable, io::stderr().is_terminal(), args.quiet);
    let stop = answer_all(
        &llm,
        jobs,
        usize::from(args.concurrency),
        Duration::from_millis(args.progress_interval_ms),
        &mut sink,
        &mut progress,
    )
    .await;
    progress.finish();
    let stop = stop?;
    if !matches!(stop, Stop::ReaderGone) {
        summarize(&progress, &tally);
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
        content: None,
        finish_reason: None,
        usage: None,
        error: Some(format!("input line {}: {}", line.line, line.message)),
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

/// Checks that the whole input is UTF-8 text before anything is sent or
/// any output touched.
fn check_text(path: &Path, input: &mut File) -> Result<(), CliError> {
    for_each_line(
        BufReader::new(&mut *input),
        |_, _| ControlFlow::Continue(()),
    )
    .map_err(|e| read_error(path, e))?;
    rewind(path, input)
}

/// Reads the input from the start, handing each non-blank line's job (or
/// why it cannot be run) to `each`. A line whose parameters the client
/// would refuse (ranges, model) is a bad line, so it is reported before
/// anything is sent.
fn scan(
    path: &Path,
    input: &mut File,
    llm: &EvolutionInference,
    defaults: &Defaults,
    mut each: impl FnMut(Result<Job, BadLine>) -> ControlFlow<()>,
) -> Result<(), CliError> {
    rewind(path, input)?;
    let mut scanner = Scanner::new(defaults);
    for_each_line(BufReader::new(&mut *input), |number, text| {
        match scanner.line(number, text) {
            None => ControlFlow::Continue(()),
            Some(Ok(job)) => match llm.build_request(&job.messages, &job.options, false) {
                Ok(_) => each(Ok(job)),
                Err(error) => each(Err(BadLine {
                    line: job.line,
                    message: one_line(&error.to_string()),
                })),
            },
            Some(Err(bad)) => each(Err(bad)),
        }
    })
    .map_err(|e| read_error(path, e))
}

/// The jobs still to run, read lazily on a thread of their own: at most
/// `ahead` of them wait in the channel; the thread stops when the input
/// ends or the batch stops listening.
fn read_jobs(
    path: PathBuf,
    mut input: File,
    llm: EvolutionInference,
    defaults: Defaults,
    done: HashSet<String>,
    ahead: usize,
) -> impl futures::Stream<Item = Result<Job, CliError>> {
    let (sender, receiver) = tokio::sync::mpsc::channel(ahead.max(1));
    std::thread::spawn(move || {
        let scanned = scan(&path, &mut input, &llm, &defaults, |item| match item {
            Ok(job) if !done.contains(&id_key(&job.id)) => match sender.blocking_send(Ok(job)) {
                Ok(()) => ControlFlow::Continue(()),
                Err(_) => ControlFlow::Break(()),
            },
            _ => ControlFlow::Continue(()),
        });
        if let Err(error) = scanned {
            let _ = sender.blocking_send(Err(error));
        }
    });
    futures::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|item| (item, receiver))
    })
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
/// outcome as it arrives. An authentication failure stops the batch: it
/// would fail every remaining line the same way, and lines not written can
/// be resumed once the credentials are fixed.
async fn answer_all(
    llm: &EvolutionInference,
    jobs: impl futures::Stream<Item = Result<Job, CliError>>,
    concurrency: usize,
    plain_interval: Duration,
    sink: &mut Sink,
    progress: &mut Progress,
) -> Result<Stop, CliError> {
    let mut outcomes = std::pin::pin!(jobs
        .map(|job| async move {
            let job = job?;
            let outcome = llm.chat(&job.messages, &job.options).await;
            Ok::<_, CliError>((job, outcome))
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
                let (job, outcome) = next?;
                if let Err(error @ Error::Auth(_)) = &outcome {
                    return Err(CliError::from(error.clone()));
                }
                let ok = outcome.is_ok();
                if write(sink, &answer(&job, outcome))?.is_break() {
                    return Ok(Stop::ReaderGone);
                }
                progress.record(ok);
            }
            _ = ticker.tick(), if plain => progress.print_plain(),
        }
    }
}

/// The output line for a finished job.
fn answer(job: &Job, outcome: Result<ChatResponse, Error>) -> Answer {
    match outcome {
        Ok(response) => Answer {
            id: job.id.clone(),
            line: job.line,
            content: Some(response.content().to_string()),
            finish_reason: response.finish_reason().map(str::to_string),
            usage: response.usage,
            error: None,
        },
        Err(error) => Answer {
            id: job.id.clone(),
            line: job.line,
            content: None,
            finish_reason: None,
            usage: None,
            error: Some(one_line(&error.to_string())),
        },
    }
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
fn summarize(progress: &Progress, tally: &Tally) {
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
    eprintln!("{text}");
}
