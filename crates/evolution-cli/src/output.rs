//! Writing results to stdout without panicking when the reader goes away.

use std::io::{self, Write};

use crate::exit::CliError;

/// Writes `text` to stdout and flushes. A reader that went away (`| head`)
/// got what it wanted: that is not an error worth a message.
pub fn print_text(text: &str) -> Result<(), CliError> {
    let mut stdout = io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(CliError::failure(format!("cannot write to stdout: {e}"))),
    }
}
