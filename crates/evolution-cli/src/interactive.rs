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
  /exit    end the session (or Ctrl-D; /quit too)
A line starting with / is a command; to send one to the model, double the
slash: //etc/hosts is sent as /etc/hosts.
Ctrl-C stops an answer; on an empty line it does nothing.";

/// The commands, as listed when an unknown one is typed.
const COMMANDS: &str = "/help, /reset, /exit";

/// What a typed line is.
#[derive(Debug, PartialEq, Eq)]
enum Input<'a> {
    /// Text for the model.
    Message(&'a str),
    /// `/help`.
    Help,
    /// `/reset`.
    Reset,
    /// `/exit` or `/quit`.
    Exit,
    /// A `/word` that is no command.
    Unknown(&'a str),
}

/// Reads a typed line (already trimmed, not empty).
fn input(line: &str) -> Input<'_> {
    if let Some(text) = line.strip_prefix("//") {
        return Input::Message(line.get(1..).filter(|_| !text.is_empty()).unwrap_or(line));
    }
    let Some(command) = line.strip_prefix('/') else {
        return Input::Message(line);
    };
    match command.split_whitespace().next().unwrap_or("") {
        "help" | "?" => Input::Help,
        "reset" => Input::Reset,
        "exit" | "quit" => Input::Exit,
        _ => Input::Unknown(line.split_whitespace().next().unwrap_or(line)),
    }
}

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
    let options = sampling.chat_options("chat")?;
    let (service, llm) = runtime.block_on(async {
        // Registered inside the runtime, before the first answer: from here
        // on a Ctrl-C never kills the session.
        crate::signal::install()
            .map_err(|e| CliError::failure(format!("cannot handle Ctrl-C: {e}")))?;
        client(connection, embedded).await
    })?;
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
        .or_else(|| service.fallback_model())
        .unwrap_or_else(|| "the default model".into());
    let place = match service.emulator() {
        Some(_) => "the embedded emulator".to_string(),
        None => service.base_url().to_string(),
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
        let message = match self::input(input) {
            Input::Message(message) => message,
            Input::Exit => break,
            Input::Help => {
                eprintln!("{HELP}");
                continue;
            }
            Input::Reset => {
                conversation = system.iter().cloned().collect();
                eprintln!("(conversation cleared)");
                continue;
            }
            Input::Unknown(command) => {
                eprintln!(
                    "unknown command {command}: the commands are {COMMANDS} \
                     (to send a line starting with /, start it with //)"
                );
                continue;
            }
        };

        conversation.push(ChatMessage::user(message));
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
    fn slash_lines_are_commands_unless_doubled() {
        assert_eq!(input("hello"), Input::Message("hello"));
        assert_eq!(input("/help"), Input::Help);
        assert_eq!(input("/quit"), Input::Exit);
        assert_eq!(input("/reset now"), Input::Reset);
        assert_eq!(input("/rest please"), Input::Unknown("/rest"));
        assert_eq!(input("//etc/hosts"), Input::Message("/etc/hosts"));
        assert_eq!(input("//"), Input::Message("//"));
    }

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
