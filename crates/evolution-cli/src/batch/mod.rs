//! `evolution batch`: many prompts, answered concurrently, each answer saved
//! the moment it arrives, so an interrupted batch resumes where it stopped.

mod input;
mod output;
mod progress;

use std::io::{self, IsTerminal, Read};
use std::path::PathBuf;

use clap::Args;
use evolution_langchain::{ChatResponse, Error, EvolutionInference};
use futures::StreamExt;

use crate::config::{ConnectionArgs, Endpoint, Needs};
use crate::emulator::EmbeddedArgs;
use crate::exit::{one_line, CliError};
use crate::options::SamplingArgs;
use input::{id_key, BadLine, Defaults, Job};
use output::{Answer, Sink};
use progress::{Progress, PLAIN_INTERVAL};

/// `evolution batch` options.
#[derive(Debug, Clone, Args)]
#[command(after_help = "\
Input lines are plain prompts, or JSON objects such as
  {\"id\": \"q1\", \"prompt\": \"Hello\", \"temperature\": 0.2}
  {\"id\": 2, \"messages\": [{\"role\": \"user\", \"content\": \"Hi\"}], \"max_tokens\": 64}
(keys: id, prompt | messages, system, model, temperature, max_tokens, top_p,
frequency_penalty, presence_penalty, stop, seed). A line without an id gets its
line number. Each answer is one JSON line:
  {\"id\", \"line\", \"content\", \"finish_reason\", \"usage\", \"error\"}")]
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
    /// none (failed and unfinished ones run again).
    #[arg(long, requires = "output")]
    pub resume: bool,

    /// Replace an OUTPUT that already has answers.
    #[arg(long, conflicts_with = "resume")]
    pub overwrite: bool,

    /// No progress display (the final summary is still printed).
    #[arg(short, long)]
    pub quiet: bool,

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
pub async fn run(args: BatchArgs, embedded: &EmbeddedArgs) -> Result<(), CliError> {
    let text = read_input(&args.input)?;
    let endpoint = Endpoint::resolve(&args.connection, embedded, Needs::Api).await?;
    let llm = endpoint.inference().build()?;

    let defaults = Defaults {
        options: args.sampling.chat_options(),
        system: args.sampling.system.clone(),
    };
    let (jobs, mut bad) = input::parse(&text, &defaults);
    let (jobs, invalid) = check_parameters(&llm, jobs);
    bad.extend(invalid);
    bad.sort_by_key(|b| b.line);
    let (mut sink, done) = Sink::open(args.output.as_deref(), args.resume, args.overwrite)?;

    let mut tally = Tally {
        lines: jobs.len() + bad.len(),
        ..Tally::default()
    };
    for line in &bad {
        if done.contains(&id_key(&line.id)) {
            tally.skipped += 1;
            continue;
        }
        eprintln!("evolution: input line {}: {}", line.line, line.message);
        tally.bad += 1;
        write(
            &mut sink,
            &Answer {
                id: line.id.clone(),
                line: line.line,
                content: None,
                finish_reason: None,
                usage: None,
                error: Some(format!("input line {}: {}", line.line, line.message)),
            },
        )?;
    }
    let jobs: Vec<Job> = jobs
        .into_iter()
        .filter(|job| !done.contains(&id_key(&job.id)))
        .collect();
    tally.skipped += tally.lines - tally.bad - tally.skipped - jobs.len();

    let mut progress = Progress::new(jobs.len(), io::stderr().is_terminal(), args.quiet);
    let stop = answer_all(
        &llm,
        jobs,
        usize::from(args.concurrency),
        &mut sink,
        &mut progress,
    )
    .await;
    progress.finish();
    summarize(&progress, &tally);

    let failed = progress.failed() as usize + tally.bad;
    match stop? {
        Stop::Finished if failed == 0 => Ok(()),
        Stop::Finished => Err(CliError::failure(format!(
            "{failed} of {} prompts failed (errors are in the output); rerun with --resume{} to retry them",
            tally.lines,
            if args.output.is_some() { "" } else { " -o FILE" },
        ))),
        Stop::Interrupted => Err(CliError::interrupted(
            "interrupted; every finished answer is saved: rerun with --resume to complete the rest",
        )),
    }
}

/// Reads the whole input (a file or stdin).
fn read_input(path: &std::path::Path) -> Result<String, CliError> {
    let bytes = if path.as_os_str() == "-" {
        let mut bytes = Vec::new();
        io::stdin()
            .read_to_end(&mut bytes)
            .map_err(|e| CliError::usage(format!("cannot read the input from stdin: {e}")))?;
        bytes
    } else {
        std::fs::read(path)
            .map_err(|e| CliError::usage(format!("cannot read {}: {e}", path.display())))?
    };
    String::from_utf8(bytes).map_err(|e| {
        CliError::usage(format!(
            "{} is not UTF-8 text (first bad byte at offset {})",
            path.display(),
            e.utf8_error().valid_up_to()
        ))
    })
}

/// Checks each line's parameters (ranges, model) as the client would, so a
/// bad value is reported as a bad input line before anything is sent.
fn check_parameters(llm: &EvolutionInference, jobs: Vec<Job>) -> (Vec<Job>, Vec<BadLine>) {
    let mut good = Vec::with_capacity(jobs.len());
    let mut bad = Vec::new();
    for job in jobs {
        match llm.build_request(&job.messages, &job.options, false) {
            Ok(_) => good.push(job),
            Err(error) => bad.push(BadLine {
                line: job.line,
                id: job.id,
                message: one_line(&error.to_string()),
            }),
        }
    }
    (good, bad)
}

/// How the run ended.
enum Stop {
    /// Every prompt has an answer or an error line.
    Finished,
    /// Ctrl-C or SIGTERM: the prompts in flight were abandoned, unwritten.
    Interrupted,
}

/// Sends every job with at most `concurrency` in flight, writing each
/// outcome as it arrives. An authentication failure stops the batch: it
/// would fail every remaining line the same way, and lines not written can
/// be resumed once the credentials are fixed.
async fn answer_all(
    llm: &EvolutionInference,
    jobs: Vec<Job>,
    concurrency: usize,
    sink: &mut Sink,
    progress: &mut Progress,
) -> Result<Stop, CliError> {
    let mut outcomes = futures::stream::iter(jobs)
        .map(|job| async move {
            let outcome = llm.chat(&job.messages, &job.options).await;
            (job, outcome)
        })
        .buffer_unordered(concurrency);
    let interrupt = crate::signal::ctrl_c_or_term();
    tokio::pin!(interrupt);
    let plain = progress.wants_plain_lines();
    let mut ticker =
        tokio::time::interval_at(tokio::time::Instant::now() + PLAIN_INTERVAL, PLAIN_INTERVAL);
    loop {
        tokio::select! {
            // Checked first: after Ctrl-C, no further answer is waited for.
            biased;
            () = &mut interrupt => return Ok(Stop::Interrupted),
            next = outcomes.next() => {
                let Some((job, outcome)) = next else {
                    return Ok(Stop::Finished);
                };
                if let Err(error @ Error::Auth(_)) = &outcome {
                    return Err(CliError::from(error.clone()));
                }
                let ok = outcome.is_ok();
                write(sink, &answer(&job, outcome))?;
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

/// Writes one line; a failure to write ends the batch (answers that cannot
/// be saved are not worth paying for).
fn write(sink: &mut Sink, answer: &Answer) -> Result<(), CliError> {
    sink.write(answer)
        .map_err(|e| CliError::failure(format!("cannot write the output: {e}")))
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
