//! Where the limiter's state lives: in this process, or (feature `redis`)
//! in Redis, shared by every process that calls with the same key, with
//! this process's own state as the fallback while Redis cannot answer.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use super::throttle::{Gcra, Limits};

/// The limiter's state.
#[derive(Debug)]
pub(crate) enum Buckets {
    /// In this process.
    Local(Mutex<Gcra>),
    /// In Redis; `fallback` serves while Redis cannot.
    #[cfg(feature = "redis")]
    Shared {
        redis: super::redis::RedisBuckets,
        fallback: Mutex<Gcra>,
    },
}

impl Buckets {
    /// State in this process.
    pub(crate) fn local() -> Self {
        Buckets::Local(Mutex::new(Gcra::default()))
    }

    /// State in Redis, with a local fallback.
    #[cfg(feature = "redis")]
    pub(crate) fn shared(redis: super::redis::RedisBuckets) -> Self {
        Buckets::Shared {
            redis,
            fallback: Mutex::new(Gcra::default()),
        }
    }

    /// Pays one request and `tokens`, or says how long to wait first.
    pub(crate) async fn take(&self, limits: Limits, tokens: u32) -> Result<(), Duration> {
        match self {
            Buckets::Local(gcra) => lock(gcra).take(limits, tokens, Instant::now()),
            #[cfg(feature = "redis")]
            Buckets::Shared { redis, fallback } => match redis.take(limits, tokens).await {
                Some(outcome) => outcome,
                None => lock(fallback).take(limits, tokens, Instant::now()),
            },
        }
    }

    /// Charges the tokens limit `extra` more tokens.
    pub(crate) async fn charge(&self, limits: Limits, extra: u32) {
        match self {
            Buckets::Local(gcra) => lock(gcra).charge(limits, extra, Instant::now()),
            #[cfg(feature = "redis")]
            Buckets::Shared { redis, fallback } => {
                if !redis.charge(limits, extra).await {
                    lock(fallback).charge(limits, extra, Instant::now());
                }
            }
        }
    }
}

fn lock(gcra: &Mutex<Gcra>) -> std::sync::MutexGuard<'_, Gcra> {
    gcra.lock().unwrap_or_else(|e| e.into_inner())
}
