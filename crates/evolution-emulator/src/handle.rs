//! [`EmulatorHandle`]: what a running emulator is controlled through.

use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::fault::{Fault, Target};
use crate::state::{Counters, RecordedRequest, State};
#[cfg(doc)]
use crate::EmulatorBuilder;

pub(crate) struct HandleInner {
    pub(crate) addr: SocketAddr,
    pub(crate) state: Arc<State>,
    pub(crate) shutdown: CancellationToken,
    pub(crate) task: Mutex<Option<JoinHandle<()>>>,
}

/// Controls a running emulator. Clones share it; dropping them does not stop it,
/// [`EmulatorHandle::shutdown`] does.
#[derive(Clone)]
pub struct EmulatorHandle {
    pub(crate) inner: Arc<HandleInner>,
}

impl fmt::Debug for EmulatorHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmulatorHandle")
            .field("addr", &self.inner.addr)
            .field("upstream", &self.inner.state.config.upstream)
            .finish_non_exhaustive()
    }
}

impl EmulatorHandle {
    /// The bound address (always 127.0.0.1).
    pub fn addr(&self) -> SocketAddr {
        self.inner.addr
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.inner.addr)
    }

    /// The IAM token endpoint: `{url}/api/v1/auth/token`.
    pub fn auth_url(&self) -> String {
        format!("{}/api/v1/auth/token", self.url())
    }

    /// The OpenAI-compatible base URL: `{url}/v1`.
    pub fn base_url(&self) -> String {
        format!("{}/v1", self.url())
    }

    /// The primary valid key id.
    pub fn key_id(&self) -> &str {
        &self.inner.state.config.credentials[0].0
    }

    /// The primary valid secret.
    pub fn secret(&self) -> &str {
        &self.inner.state.config.credentials[0].1
    }

    /// The first API key configured with [`EmulatorBuilder::api_key`], if any.
    pub fn api_key(&self) -> Option<&str> {
        self.inner.state.config.api_keys.first().map(String::as_str)
    }

    /// The first configured model, used when a request names none.
    pub fn default_model(&self) -> &str {
        self.inner.state.config.default_model()
    }

    /// A snapshot of the counters.
    pub fn counters(&self) -> Counters {
        self.inner.state.counters()
    }

    /// Zeroes the counters; `in_flight` keeps counting live requests and the peak
    /// restarts from it.
    pub fn reset_counters(&self) {
        self.inner.state.reset_counters();
    }

    /// Invalidates every token issued so far: using one gets `401`.
    pub fn revoke_tokens(&self) {
        self.inner.state.revoke_tokens();
    }

    /// Queues `fault` for the next `times` requests to `target`. Requests to a `/v1`
    /// route take from their own queue first, then from [`Target::Api`]'s. The fault is
    /// stored once with its remaining count, so any `times` (even `usize::MAX`, in effect
    /// "until cleared") costs the same memory; `times == 0` queues nothing.
    pub fn inject(&self, target: Target, fault: Fault, times: usize) {
        self.inner.state.inject(target, fault, times);
    }

    /// Refills every rate-limit bucket: each key can burst up to the per-minute limits
    /// again ([`EmulatorBuilder::requests_per_minute`],
    /// [`EmulatorBuilder::tokens_per_minute`]).
    pub fn reset_rate_limits(&self) {
        self.inner.state.limiter.reset();
    }

    /// Drops every queued fault.
    pub fn clear_faults(&self) {
        self.inner.state.clear_faults();
    }

    /// The requests to `/v1/*` so far, in arrival order: the most recent
    /// [`EmulatorBuilder::request_log_limit`] of them (default 10,000).
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.inner.state.requests()
    }

    /// The most recent request to `/v1/*`.
    pub fn last_request(&self) -> Option<RecordedRequest> {
        self.inner.state.last_request()
    }

    /// Forgets the recorded requests.
    pub fn clear_requests(&self) {
        self.inner.state.clear_requests();
    }

    /// Stops accepting, lets open responses finish for up to a second, and returns when
    /// the server has stopped. Later calls return at once.
    pub async fn shutdown(&self) {
        self.inner.shutdown.cancel();
        let task = self
            .inner
            .task
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}
