//! The runtime behind every blocking facade, and the wait on it.

use std::future::Future;
use std::sync::OnceLock;

use crate::error::{Error, Result};

/// The runtime behind every facade, started on first use and kept for the
/// life of the process (one idle thread).
pub(super) fn runtime() -> Result<&'static tokio::runtime::Runtime> {
    static RUNTIME: OnceLock<std::result::Result<tokio::runtime::Runtime, String>> =
        OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("evolution-blocking")
                .enable_all()
                .build()
                .map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| Error::Runtime {
            message: format!("the blocking facade's runtime could not be started: {e}"),
        })
}

/// Runs `future` on the facades' runtime and blocks this thread until it is
/// done. The wait is a plain thread park, not a Tokio `block_on`, so it is
/// allowed on every thread (Tokio forbids nesting its own).
pub(super) fn wait<F>(future: F) -> Result<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let task = runtime()?.spawn(future);
    futures::executor::block_on(task).map_err(|e| Error::Runtime {
        message: format!("a blocking call did not finish: {e}"),
    })
}

/// Runs `$body` on the facades' runtime with a clone of the facade's async
/// client bound to `$client`, and waits for it: the one way every blocking
/// method calls its async original.
macro_rules! call {
    ($self:ident, |$client:ident| $body:expr) => {{
        let $client = $self.inner.clone();
        wait(async move { $body.await })?
    }};
}
pub(crate) use call;
