//! A streamed answer shown as it arrives (for `chat` and the interactive
//! session), the client both build, and how an answer is shown: the text,
//! the model's thinking kept apart from it, and tool calls.

use std::io::{self, IsTerminal, Write};

use evolution_langchain::chat::StreamAccumulator;
use evolution_langchain::{
    ChatMessage, ChatOptions, ChatResponse, Error, EvolutionInference, ToolCall, Usage,
};
use futures::StreamExt;

use crate::config::{ConnectionArgs, Service};
use crate::emulator::EmbeddedArgs;
use crate::exit::{CliError, Exit};

/// The line before the model's thinking with `--show-reasoning`.
pub const THINKING_MARK: &str = "[thinking]";
/// The line between the thinking and the answer with `--show-reasoning`.
pub const ANSWER_MARK: &str = "[answer]";

/// Builds the client for `chat` (and the interactive session).
pub async fn client(
    connection: &ConnectionArgs,
    embedded: &EmbeddedArgs,
) -> Result<(Service, EvolutionInference), CliError> {
    let service = Service::resolve(connection, embedded).await?;
    let llm = service.inference().build()?;
    Ok((service, llm))
}

/// Where a reasoning model's thinking goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Thinking {
    /// Not shown.
    Hidden,
    /// On stdout before the answer, between [`THINKING_MARK`] and [`ANSWER_MARK`].
    Shown,
    /// Dimmed on stderr while it streams (stderr is a terminal).
    Dimmed,
}

impl Thinking {
    /// `--show-reasoning` puts it on stdout; without it a terminal on
    /// stderr sees it dimmed, anything else nothing.
    pub fn choose(show_reasoning: bool) -> Self {
        if show_reasoning {
            Thinking::Shown
        } else if io::stderr().is_terminal() {
            Thinking::Dimmed
        } else {
            Thinking::Hidden
        }
    }
}

/// How a streamed answer ended.
#[derive(Debug)]
pub enum Ending {
    /// The model finished.
    Complete,
    /// Ctrl-C stopped it.
    Interrupted,
    /// The request or the stream failed (after `text`, if any arrived).
    Failed(CliError),
}

/// A streamed answer: what was shown, and how it ended.
#[derive(Debug)]
pub struct Streamed {
    /// The text received (and written) before the end.
    pub text: String,
    /// Token counts, when the server sent them.
    pub usage: Option<Usage>,
    /// Why it stopped.
    pub ending: Ending,
}

/// Writes answer pieces, keeping the thinking apart from the answer.
struct Writer<'a, W: Write> {
    out: &'a mut W,
    thinking: Thinking,
    /// Whether thinking was shown on stdout (so the answer needs its mark).
    thought: bool,
    /// Whether the answer part has begun.
    answering: bool,
    /// Whether the dimmed thinking on stderr needs a closing line break.
    dimmed_open: bool,
    /// The last byte written to `out`, to end the output with a line break.
    last: Option<u8>,
}

impl<W: Write> Writer<'_, W> {
    fn write(&mut self, text: &str) -> io::Result<()> {
        if text.is_empty() {
            return Ok(());
        }
        self.out.write_all(text.as_bytes())?;
        // Flushed per piece: the point of streaming is to see it now.
        self.out.flush()?;
        self.last = text.as_bytes().last().copied();
        Ok(())
    }

    fn thinking(&mut self, text: &str) -> io::Result<()> {
        match self.thinking {
            Thinking::Hidden => Ok(()),
            Thinking::Shown if self.answering => Ok(()),
            Thinking::Shown => {
                if !self.thought {
                    self.thought = true;
                    self.write(THINKING_MARK)?;
                    self.write("\n")?;
                }
                self.write(text)
            }
            Thinking::Dimmed => {
                self.dimmed_open = true;
                // Ignored on purpose: the thinking is a courtesy.
                let mut err = io::stderr().lock();
                let _ = write!(err, "\x1b[2m{text}\x1b[0m").and_then(|()| err.flush());
                Ok(())
            }
        }
    }

    fn answer(&mut self, text: &str) -> io::Result<()> {
        self.begin_answer()?;
        self.write(text)
    }

    fn begin_answer(&mut self) -> io::Result<()> {
        if self.answering {
            return Ok(());
        }
        self.answering = true;
        if self.dimmed_open {
            self.dimmed_open = false;
            let _ = io::stderr().write_all(b"\n");
        }
        if self.thought {
            self.end_line()?;
            self.write(ANSWER_MARK)?;
            self.write("\n")?;
        }
        Ok(())
    }

    fn end_line(&mut self) -> io::Result<()> {
        match self.last {
            Some(b'\n') | None => Ok(()),
            Some(_) => self.write("\n"),
        }
    }

    fn tool_calls(&mut self, calls: &[ToolCall]) -> io::Result<()> {
        if calls.is_empty() {
            return Ok(());
        }
        self.begin_answer()?;
        self.end_line()?;
        self.write(&tool_calls_text(calls))
    }
}

/// Tool calls as lines: `[tool call] NAME ARGUMENTS`.
pub fn tool_calls_text(calls: &[ToolCall]) -> String {
    calls
        .iter()
        .map(|call| {
            let arguments = call.function.arguments.trim();
            if arguments.is_empty() {
                format!("[tool call] {}\n", call.function.name)
            } else {
                format!("[tool call] {} {arguments}\n", call.function.name)
            }
        })
        .collect()
}

/// A whole answer as `chat --no-stream` prints it: the thinking first (only
/// with `Thinking::Shown`), then the text, then any tool calls; always
/// ending with a line break.
pub fn response_text(response: &ChatResponse, thinking: Thinking) -> String {
    let mut text = String::new();
    let reasoning = response.reasoning().filter(|_| thinking == Thinking::Shown);
    if let Some(reasoning) = reasoning {
        text.push_str(THINKING_MARK);
        text.push('\n');
        text.push_str(reasoning);
        if !reasoning.ends_with('\n') {
            text.push('\n');
        }
        text.push_str(ANSWER_MARK);
        text.push('\n');
    }
    let content = response.content();
    text.push_str(content);
    if !content.is_empty() && !content.ends_with('\n') {
        text.push('\n');
    }
    text.push_str(&tool_calls_text(response.tool_calls()));
    if text.is_empty() {
        text.push('\n');
    }
    text
}

/// Streams the answer to `messages` into `out` as it arrives, until it ends,
/// fails, or Ctrl-C is pressed: the thinking as `thinking` says, the text,
/// then the tool calls once they are complete. Ends the output with a line
/// break if anything was written. A closed `out` stops the answer like
/// Ctrl-C would, without a message. A stream that completes without any
/// answer (no text, no tool calls, no finish reason) is a failure.
pub async fn stream_answer(
    llm: &EvolutionInference,
    messages: &[ChatMessage],
    options: &ChatOptions,
    thinking: Thinking,
    out: &mut impl Write,
) -> Streamed {
    let mut text = String::new();
    let mut accumulator = StreamAccumulator::default();
    let interrupt = crate::signal::ctrl_c();
    tokio::pin!(interrupt);
    let mut writer = Writer {
        out,
        thinking,
        thought: false,
        answering: false,
        dimmed_open: false,
        last: None,
    };

    let ending = 'answer: {
        let mut stream = tokio::select! {
            opened = llm.stream_chat(messages, options) => match opened {
                Ok(stream) => stream,
                Err(error) => break 'answer Ending::Failed(error.into()),
            },
            () = &mut interrupt => break 'answer Ending::Interrupted,
        };
        loop {
            let item = tokio::select! {
                item = stream.next() => item,
                () = &mut interrupt => break 'answer Ending::Interrupted,
            };
            let chunk = match item {
                None => break 'answer Ending::Complete,
                Some(Err(error)) => break 'answer Ending::Failed(broken(error)),
                Some(Ok(chunk)) => chunk,
            };
            accumulator.push(&chunk);
            let mut written = Ok(());
            if let Some(piece) = chunk.reasoning() {
                written = writer.thinking(piece);
            }
            if let Some(piece) = chunk.content() {
                text.push_str(piece);
                written = written.and_then(|()| writer.answer(piece));
            }
            if let Err(e) = written {
                break 'answer write_failed(&e);
            }
        }
    };
    let usage = accumulator.usage();
    let response = accumulator.finish();
    let ending = match ending {
        Ending::Complete => match writer.tool_calls(response.tool_calls()) {
            Err(e) => write_failed(&e),
            Ok(()) if response.answer().is_none() => Ending::Failed(CliError::new(
                Exit::Api,
                "the model sent no answer: no text, no tool calls and no finish reason",
            )),
            Ok(()) => Ending::Complete,
        },
        other => other,
    };
    if writer.dimmed_open {
        let _ = io::stderr().write_all(b"\n");
    }
    // Ignored on purpose: the answer is over either way.
    let _ = writer.end_line();
    Streamed {
        text,
        usage,
        ending,
    }
}

/// A stream that failed after it started: a stall past `--timeout` is a
/// timeout like a reply that never came (exit code 5), said as what the
/// user saw; anything else as the library reports it.
fn broken(error: Error) -> CliError {
    match crate::message::stalled(&error) {
        Some(message) => CliError::new(crate::exit::classify(&error), message),
        None => error.into(),
    }
}

/// A write to stdout failed: a reader that went away got what it wanted.
fn write_failed(e: &io::Error) -> Ending {
    if e.kind() == io::ErrorKind::BrokenPipe {
        Ending::Complete
    } else {
        Ending::Failed(CliError::new(
            Exit::Failure,
            format!("cannot write the answer: {e}"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn response(message: serde_json::Value) -> ChatResponse {
        serde_json::from_value(json!({"choices": [{"message": message, "finish_reason": "stop"}]}))
            .unwrap()
    }

    #[test]
    fn thinking_is_shown_only_when_asked_and_marked() {
        let reply = response(json!({"content": "4", "reasoning": "2 and 2"}));
        assert_eq!(response_text(&reply, Thinking::Hidden), "4\n");
        assert_eq!(
            response_text(&reply, Thinking::Shown),
            "[thinking]\n2 and 2\n[answer]\n4\n"
        );
        let plain = response(json!({"content": "hi"}));
        assert_eq!(response_text(&plain, Thinking::Shown), "hi\n");
    }

    #[test]
    fn tool_calls_are_printed_instead_of_nothing() {
        let reply = response(json!({
            "content": null,
            "tool_calls": [{"id": "c1", "type": "function",
                            "function": {"name": "weather", "arguments": "{\"city\":\"Lima\"}"}}]
        }));
        assert_eq!(
            response_text(&reply, Thinking::Hidden),
            "[tool call] weather {\"city\":\"Lima\"}\n"
        );
        let empty = response(json!({"content": ""}));
        assert_eq!(response_text(&empty, Thinking::Hidden), "\n");
    }

    #[test]
    fn the_writer_separates_thinking_from_the_answer() {
        let mut out = Vec::new();
        let mut writer = Writer {
            out: &mut out,
            thinking: Thinking::Shown,
            thought: false,
            answering: false,
            dimmed_open: false,
            last: None,
        };
        writer.thinking("Thinking about").unwrap();
        writer.thinking(" it.").unwrap();
        writer.answer("The").unwrap();
        writer.answer(" answer").unwrap();
        writer.tool_calls(&[ToolCall::new("c", "f", "{}")]).unwrap();
        writer.end_line().unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "[thinking]\nThinking about it.\n[answer]\nThe answer\n[tool call] f {}\n"
        );
    }
}
