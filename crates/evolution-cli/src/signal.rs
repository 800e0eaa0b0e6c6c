//! Ctrl-C and SIGTERM as futures, so a command can stop what it is doing
//! (an answer, a batch) and still tidy up, instead of dying mid-write.

use std::io;

/// Takes over SIGINT for the rest of the process.
///
/// Until a handler is registered the default action kills the process, and
/// tokio registers its handler lazily, on the first poll of a listener. An
/// interactive session must survive a Ctrl-C at any moment, including one
/// pressed between two answers, so it registers once, up front. Commands
/// that are not listening all the time must not call this: their Ctrl-C
/// would be swallowed. Must run inside the runtime.
pub fn install() -> io::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        // Dropping the listener keeps the handler: tokio never unregisters.
        drop(signal(SignalKind::interrupt())?);
    }
    Ok(())
}

/// Completes at the next Ctrl-C. Signals received before the call are not
/// seen, so a stray Ctrl-C between two answers does not cancel the next one.
pub async fn ctrl_c() {
    if tokio::signal::ctrl_c().await.is_err() {
        // No signal handling on this platform: never fire.
        std::future::pending::<()>().await;
    }
}

/// Completes at the next Ctrl-C or SIGTERM (service managers and `timeout`
/// send the latter), for commands that should stop cleanly on either.
pub async fn ctrl_c_or_term() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    ctrl_c().await;
}
