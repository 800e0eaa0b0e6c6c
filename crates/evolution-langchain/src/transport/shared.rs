//! Where the limiter's state lives: in this process, or (feature `redis`)
//! in Redis, shared by every process that calls with the same key.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use super::throttle::{Gcra, Limits};

/// The limiter's state.
#[derive(Debug)]
pub(crate) enum Buckets {
    /// In this process.
    Local(Mutex<Gcra>),
}

impl Buckets {
    /// State in this process.
    pub(crate) fn local() -> Self {
        Buckets::Local(Mutex::new(Gcra::default()))
    }

    /// Pays one request and `tokens`, or says how long to wait first.
    pub(crate) async fn take(&self, limits: Limits, tokens: u32) -> Result<(), Duration> {
        match self {
            Buckets::Local(gcra) => {
                gcra.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .take(limits, tokens, Instant::now())
            }
        }
    }

    /// Charges the tokens limit `extra` more tokens.
    pub(crate) async fn charge(&self, limits: Limits, extra: u32) {
        match self {
            Buckets::Local(gcra) => {
                gcra.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .charge(limits, extra, Instant::now())
            }
        }
    }
}
