//! The interactive session of `evolution chat`: a line editor with history,
//! a conversation that grows turn by turn, answers streamed as they come.
//!
//! The editor (rustyline) blocks the main thread while the user types; each
//! answer runs on the runtime with `block_on`. The embedded emulator and the
//! token manager's background refreshes keep running on the runtime's worker
//! threads in between.
//!
//! Ctrl-C while typing clears the line (the terminal is in raw mode, so it is
//! a key, not a signal); Ctrl-C during an answer is a SIGINT, caught, and
//! stops that answer only. Ctrl-D or `/exit` ends the session.

use std::io::{self, Write};
use std::path::Path;

use evolution_langchain::ChatMessage;
use rustyline::error::ReadlineError;
use rustyline::DefaultEditor;
use tokio::runtime::Runtime;

use crate::answer::{client, stream_answer, Ending, Thinking};
use crate::config::ConnectionArgs;
use crate::emulator::EmbeddedArgs;
use crate::exit::CliError;
use crate::options::SamplingArgs;

/// Shown for `/help`.
const HELP: &str = "\
Commands:
  /help    this text
  /reset   forget the conversation (the system prompt stays)
  /exit    end the session (or Ctrl-D)
Ctrl-C stops an answer; on an empty line it does nothing.";

/// The prompt shown before each user turn.
const PROMPT: &str = "you> ";

/// Runs the session until Ctrl-D or `/exit`.
pub fn run(
    runtime: &Runtime,
    connection: &ConnectionArgs,
    sampling: &SamplingArgs,
    history_file: Option<&Path>,
    thinking: Thinking,
    embedded: &EmbeddedArgs,
) -> Result<(), CliError> {
    let (endpoint, llm) = runtime.block_on(async {
        // Registered inside the runtime, before the first answer: from here
        // on a Ctrl-C never kills the session.
        crate::signal::install()
            .map_err(|e| CliError::failure(format!("cannot handle Ctrl-C: {e}")))?;
        client(connection, embedded).await
    })?;
    let options = sampling.chat_options();
    let system = sampling.system_message();

    let mut editor = DefaultEditor::new()
        .map_err(|e| CliError::failure(format!("cannot start the line editor: {e}")))?;
    if let Some(path) = history_file {
        // A missing file is the normal first run.
        let _ = editor.load_history(path);
    }

    let model = options
        .model
        .clone()
        .or_else(|| endpoint.fallback_model())
        .unwrap_or_else(|| "the default model".into());
    let place = match endpoint.emulator() {
        Some(_) => "the embedded emulator".to_string(),
        None => endpoint.base_url().to_string(),
    };
    eprintln!("Chatting with {model} at {place}. /help for commands, Ctrl-D to quit.");

    let mut conversation: Vec<ChatMessage> = system.iter().cloned().collect();
    loop {
        let line = match editor.readline(PROMPT) {
            Ok(line) => line,
            Err(ReadlineError::Interrupted) => continue,
            Err(ReadlineError::Eof) => break,
            Err(e) => return Err(CliError::failure(format!("cannot read input: {e}"))),
        };
        let input = line.trim();
        if input.is_empty() {
            continue;
        }
        // Errors here only cost the up-arrow recall of this line.
        let _ = editor.add_history_entry(input);
        match input {
            "/exit" | "/quit" => break,
            "/help" => {
                eprintln!("{HELP}");
                continue;
            }
            "/reset" => {
                conversation = system.iter().cloned().collect();
                eprintln!("(conversation cleared)");
                continue;
            }
            _ => {}
        }

        conversation.push(ChatMessage::user(input));
        let mut stdout = io::stdout();
        let streamed = runtime.block_on(stream_answer(
            &llm,
            &conversation,
            &options,
            thinking,
            &mut stdout,
        ));
        match streamed.ending {
            Ending::Complete => conversation.push(ChatMessage::assistant(streamed.text)),
            Ending::Interrupted => {
                eprintln!("(answer interrupted)");
                keep_partial(&mut conversation, streamed.text);
            }
            Ending::Failed(error) => {
                eprintln!("evolution: {error}");
                keep_partial(&mut conversation, streamed.text);
            }
        }
        let _ = stdout.flush();
    }

    if let Some(path) = history_file {
        if let Err(e) = editor.save_history(path) {
            eprintln!(
                "evolution: cannot save the history to {}: {e}",
                path.display()
            );
        }
    }
    Ok(())
}

/// After a cut-short answer: the part the user saw stays in the conversation
/// (it is what they will refer to); with nothing shown, the question is
/// dropped too, so the next turn does not carry an unanswered message.
fn keep_partial(conversation: &mut Vec<ChatMessage>, text: String) {
    if text.is_empty() {
        conversation.pop();
    } else {
        conversation.push(ChatMessage::assistant(text));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_answers_stay_and_unanswered_questions_go() {
        let mut conversation = vec![ChatMessage::user("q1")];
        keep_partial(&mut conversation, "half an".into());
        assert_eq!(conversation.len(), 2);
        conversation.push(ChatMessage::user("q2"));
        keep_partial(&mut conversation, String::new());
        assert_eq!(conversation.len(), 2);
    }
}
