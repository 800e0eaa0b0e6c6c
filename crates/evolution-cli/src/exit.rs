//! Exit codes and the one error type every subcommand returns.
//!
//! A failure ends the process with a one-line message on stderr and one of
//! the codes below, so scripts can tell "fix your key" from "try again later"
//! without parsing text. The same table is printed by `evolution --help`.

use std::fmt;
use std::process::ExitCode;

use evolution_langchain::{AuthError, Error};

/// Why the process ended. The discriminant is the exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Everything worked.
    Ok = 0,
    /// Some batch lines failed, or an error that fits no class below.
    Failure = 1,
    /// Bad usage or configuration: an invalid flag, a missing setting, an
    /// unreadable input file, a `--schema` file that is not a JSON schema,
    /// an audio file over `--max-upload-size`. Nothing was sent.
    Usage = 2,
    /// The credentials were rejected (401): IAM refused the key id or secret,
    /// or the model API refused a freshly issued token twice.
    BadCredentials = 3,
    /// The key is valid but has no rights (403, from IAM or the model API).
    Forbidden = 4,
    /// The service could not be reached, or did not answer in time (a
    /// stream that stalls past `--timeout` included).
    Network = 5,
    /// The service answered with an error: a rejected request (a 413 for an
    /// upload included), 429/5xx after the retries, a malformed reply, a
    /// stream that broke, an answer that does not fit `--schema` even after
    /// the repair round.
    Api = 6,
    /// Stopped by Ctrl-C (SIGINT) or SIGTERM; 128 + SIGINT, as shells report it.
    Interrupted = 130,
}

/// The exit-code table shown at the end of `evolution --help`.
pub const EXIT_CODES_HELP: &str = "\
Exit codes:
  0    success
  1    some batch lines failed (see the summary), or another error
  2    usage or configuration error (bad flag, missing credentials, unreadable
       file, a --schema file that is not a JSON schema, an audio file over
       --max-upload-size): nothing was sent
  3    bad credentials (401): IAM rejected the key id or secret, or the model API
       rejected a freshly issued token
  4    forbidden (403): the key has no rights (IAM or the model API)
  5    network or timeout: the service could not be reached, or did not answer
       (or stopped mid-answer) within --timeout
  6    API error: the service refused the request (a 413 for an upload included)
       or answered badly, or the answer did not fit --schema even after the
       repair round
  130  interrupted (Ctrl-C)";

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> Self {
        ExitCode::from(exit as u8)
    }
}

/// A failure: what to tell the user and which exit code to end with.
#[derive(Debug, Clone)]
pub struct CliError {
    /// The exit code.
    pub exit: Exit,
    /// One line, no secrets; printed after `evolution: `.
    pub message: String,
}

impl CliError {
    /// An error with the given code.
    pub fn new(exit: Exit, message: impl Into<String>) -> Self {
        Self {
            exit,
            message: message.into(),
        }
    }

    /// A usage or configuration error (exit code 2).
    pub fn usage(message: impl Into<String>) -> Self {
        Self::new(Exit::Usage, message)
    }

    /// A generic failure (exit code 1).
    pub fn failure(message: impl Into<String>) -> Self {
        Self::new(Exit::Failure, message)
    }

    /// Stopped by the user: the message is the last thing printed.
    pub fn interrupted(message: impl Into<String>) -> Self {
        Self::new(Exit::Interrupted, message)
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// The exit code for a library error. Kept apart from the `From` impl so
/// batch can classify errors it writes into its output instead of returning.
pub fn classify(error: &Error) -> Exit {
    match error {
        Error::Config { .. } | Error::InvalidRequest { .. } => Exit::Usage,
        Error::Auth(auth) => match auth {
            // TokenRejected: the model API answered 401 to a token IAM had
            // just issued, twice; a 401 is about credentials, like IAM's.
            AuthError::InvalidCredentials { .. } | AuthError::TokenRejected { .. } => {
                Exit::BadCredentials
            }
            AuthError::Forbidden { .. } => Exit::Forbidden,
            AuthError::Timeout { .. } | AuthError::Connection { .. } => Exit::Network,
            // Variants added later go by their status; transient failures
            // (429/5xx) and an invalid IAM reply are API errors.
            _ => match error.status() {
                Some(401) => Exit::BadCredentials,
                Some(403) => Exit::Forbidden,
                _ => Exit::Api,
            },
        },
        Error::Timeout { .. } | Error::Connection { .. } => Exit::Network,
        // The model API's own 403: the key has no rights for it.
        Error::Api { status: 403, .. } => Exit::Forbidden,
        // Our own limit refused the user's file before anything was sent.
        Error::UploadTooLarge { limit: Some(_), .. } => Exit::Usage,
        // The server's 413, or an answer that did not fit the schema even
        // after the repair round: the service's side of the exchange.
        Error::Api { .. }
        | Error::Unavailable { .. }
        | Error::RateLimited { .. }
        | Error::UploadTooLarge { limit: None, .. }
        | Error::Extraction { .. }
        | Error::InvalidResponse { .. }
        | Error::Redirected { .. }
        | Error::TooLarge { .. }
        | Error::Stream { .. } => Exit::Api,
        Error::Batch { first, .. } => classify(first),
        Error::Runtime { .. } => Exit::Failure,
        // `Error` is non-exhaustive: a new variant is at least an error.
        _ => Exit::Failure,
    }
}

impl From<Error> for CliError {
    fn from(error: Error) -> Self {
        Self::new(classify(&error), crate::message::describe(&error))
    }
}

/// Joins a possibly multi-line message into one line, so every failure is a
/// single line on stderr (a server's message may contain newlines).
pub fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Renders a clap error as one line: clap's message, its tips ("a similar
/// argument exists: '--temperature'"), and a pointer to the help of the
/// command at hand. `--help` and `--version` are not errors and are printed
/// as clap formats them.
pub fn clap_error(error: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(
        error.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        // Help asked for (or a bare `evolution`): clap prints it; a failure to
        // print (closed stdout) is not worth reporting.
        let _ = error.print();
        return if error.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
            Exit::Usage.into()
        } else {
            Exit::Ok.into()
        };
    }
    eprintln!("evolution: {}", clap_message(&error.render().to_string()));
    Exit::Usage.into()
}

/// One line from clap's rendered error (see [`clap_error`]).
fn clap_message(rendered: &str) -> String {
    // The first paragraph is the message; then come tips, the usage line
    // and clap's own pointer to --help.
    let message: Vec<&str> = rendered
        .lines()
        .take_while(|line| !line.trim().is_empty())
        .map(str::trim)
        .collect();
    let message = message.join(" ");
    let mut text = message
        .strip_prefix("error: ")
        .unwrap_or(&message)
        .to_string();
    for tip in rendered
        .lines()
        .map(str::trim)
        .filter(|line| line.starts_with("tip: "))
    {
        text.push_str("; ");
        text.push_str(tip);
    }
    // "Usage: evolution chat [OPTIONS] [PROMPT]": the command is the words
    // before the first placeholder.
    let command = rendered
        .lines()
        .find_map(|line| line.trim().strip_prefix("Usage: "))
        .map(|usage| {
            usage
                .split_whitespace()
                .take_while(|word| !word.starts_with(['[', '<', '-', '{']))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .filter(|command| !command.is_empty())
        .unwrap_or_else(|| "evolution".into());
    text.push_str(&format!(" (see '{command} --help')"));
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn library_errors_map_to_documented_codes() {
        let auth = |e: AuthError| classify(&Error::Auth(e));
        assert_eq!(
            auth(AuthError::InvalidCredentials { key_id: "k".into() }),
            Exit::BadCredentials
        );
        assert_eq!(
            auth(AuthError::Forbidden { key_id: "k".into() }),
            Exit::Forbidden
        );
        assert_eq!(
            auth(AuthError::TokenRejected {
                message: "no".into(),
                request_id: None,
            }),
            Exit::BadCredentials
        );
        let forbidden = Error::Api {
            status: 403,
            message: "no rights".into(),
            error_type: None,
            code: None,
            request_id: None,
        };
        assert_eq!(classify(&forbidden), Exit::Forbidden);
        assert_eq!(
            auth(AuthError::Connection {
                auth_url: "u".into(),
                message: "refused".into(),
                attempts: 3
            }),
            Exit::Network
        );
        let api = Error::Api {
            status: 400,
            message: "bad".into(),
            error_type: None,
            code: None,
            request_id: None,
        };
        assert_eq!(classify(&api), Exit::Api);
        let config = Error::Config {
            field: "temperature".into(),
            message: "out of range".into(),
        };
        assert_eq!(classify(&config), Exit::Usage);
        // An upload over our own limit is the user's input: nothing was
        // sent. The server's 413 is a refused request.
        let ours = Error::UploadTooLarge {
            size: 30,
            limit: Some(20),
            request_id: None,
        };
        assert_eq!(classify(&ours), Exit::Usage);
        let theirs = Error::UploadTooLarge {
            size: 30,
            limit: None,
            request_id: None,
        };
        assert_eq!(classify(&theirs), Exit::Api);
        let off_schema = Error::Extraction {
            schema: "t".into(),
            reason: "missing `a`".into(),
            raw: "{}".into(),
            attempts: 2,
        };
        assert_eq!(classify(&off_schema), Exit::Api);
    }

    #[test]
    fn a_stalled_stream_is_a_timeout() {
        let stalled = Error::Timeout {
            url: "http://x/v1/chat/completions".into(),
            timeout: std::time::Duration::from_secs(1),
            attempts: 1,
            request_id: None,
        };
        assert_eq!(classify(&stalled), Exit::Network);
        let broken = Error::Stream {
            message: "cut".into(),
            request_id: None,
        };
        assert_eq!(classify(&broken), Exit::Api);
    }

    #[test]
    fn clap_errors_keep_their_tips() {
        let rendered = "error: unexpected argument '--temprature' found\n\n  \
            tip: a similar argument exists: '--temperature'\n\n\
            Usage: evolution chat --temperature <T> [PROMPT]\n\n\
            For more information, try '--help'.\n";
        assert_eq!(
            clap_message(rendered),
            "unexpected argument '--temprature' found; tip: a similar argument exists: \
             '--temperature' (see 'evolution chat --help')"
        );
    }

    #[test]
    fn messages_become_one_line() {
        assert_eq!(one_line("a\nb  c\r\n"), "a b c");
    }
}
