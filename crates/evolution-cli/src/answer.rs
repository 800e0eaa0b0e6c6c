//! A streamed answer shown as it arrives (for `chat` and the interactive
//! session), and the client both build.

use std::io::{self, Write};

use evolution_langchain::{ChatMessage, ChatOptions, EvolutionInference, Usage};
use futures::StreamExt;

use crate::config::{ConnectionArgs, Endpoint};
use crate::emulator::EmbeddedArgs;
use crate::exit::{CliError, Exit};

/// Builds the client for `chat` (and the interactive session).
pub async fn client(
    connection: &ConnectionArgs,
    embedded: &EmbeddedArgs,
) -> Result<(Endpoint, EvolutionInference), CliError> {
    let endpoint = Endpoint::resolve(connection, embedded).await?;
    let llm = endpoint.inference().build()?;
    Ok((endpoint, llm))
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

/// Streams the answer to `messages` into `out` as it arrives, until it ends,
/// fails, or Ctrl-C is pressed. Ends the output with a line break if any
/// text was written. A closed `out` stops the answer like Ctrl-C would,
/// without a message.
pub async fn stream_answer(
    llm: &EvolutionInference,
    messages: &[ChatMessage],
    options: &ChatOptions,
    out: &mut impl Write,
) -> Streamed {
    let mut text = String::new();
    let mut usage = None;
    let interrupt = crate::signal::ctrl_c();
    tokio::pin!(interrupt);

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
            match item {
                None => break 'answer Ending::Complete,
                Some(Err(error)) => break 'answer Ending::Failed(error.into()),
                Some(Ok(chunk)) => {
                    if chunk.usage.is_some() {
                        usage = chunk.usage;
                    }
                    let Some(piece) = chunk.content() else {
                        continue;
                    };
                    text.push_str(piece);
                    // Flushed per piece: the point of streaming is to see it now.
                    let written = out.write_all(piece.as_bytes()).and_then(|()| out.flush());
                    if let Err(e) = written {
                        break 'answer if e.kind() == io::ErrorKind::BrokenPipe {
                            Ending::Complete
                        } else {
                            Ending::Failed(CliError::new(
                                Exit::Failure,
                                format!("cannot write the answer: {e}"),
                            ))
                        };
                    }
                }
            }
        }
    };
    if !text.is_empty() && !text.ends_with('\n') {
        // Ignored on purpose: the answer is over either way.
        let _ = out.write_all(b"\n").and_then(|()| out.flush());
    }
    Streamed {
        text,
        usage,
        ending,
    }
}
