//! Redis, for a fleet of processes calling with one key (feature `redis`):
//! the connection, how a failing Redis is survived, and the limiter's GCRA
//! as atomic scripts on the server's clock (so processes on machines whose
//! clocks disagree still share one bucket).
//!
//! Redis is a help, never a dependency of a call: when it cannot be
//! reached or fails mid-run, calls go on with this process's own limiter
//! and token cache, one warning says so, and Redis is tried again after a
//! few seconds (one more line says when it is back).

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use sha2::{Digest, Sha256};
use tokio::sync::OnceCell;
use tokio::time::Instant;

use super::throttle::{Limits, BURST};
use crate::error::{Error, Result};

/// How long a connection attempt or a command may take: Redis on the same
/// network answers in a millisecond; a call must not wait for a dead one.
const TIMEOUT: Duration = Duration::from_millis(500);

/// How long Redis is left alone after it failed.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(5);

/// The prefix of every key this crate writes.
pub(crate) const KEY_PREFIX: &str = "evolution";

/// A Redis server, connected on first use.
pub(crate) struct RedisStore {
    client: redis::Client,
    /// `host:port/db`, for messages (never a password).
    shown: String,
    connection: OnceCell<ConnectionManager>,
    /// No Redis command before this, after a failure.
    down_until: Mutex<Option<Instant>>,
    /// Whether the current outage was reported.
    warned: AtomicBool,
}

impl RedisStore {
    /// A store for `url` (`redis://[:password@]host:port[/db]`, or
    /// `rediss://` for TLS); nothing is connected yet. A URL that is not
    /// one is a configuration error that does not show it (it may hold a
    /// password).
    pub(crate) fn open(url: &str) -> Result<Self> {
        let client = redis::Client::open(url.trim()).map_err(|e| {
            Error::config(
                "redis_url",
                format!(
                    "is not a Redis URL ({}): expected redis://host:port or rediss://host:port",
                    e.kind_text()
                ),
            )
        })?;
        let info = client.get_connection_info();
        let shown = format!("{}/{}", info.addr(), info.redis_settings().db());
        Ok(Self {
            client,
            shown,
            connection: OnceCell::new(),
            down_until: Mutex::new(None),
            warned: AtomicBool::new(false),
        })
    }

    /// Runs `command` on the connection. `None` when Redis is down or the
    /// command failed: the caller goes on without Redis.
    pub(crate) async fn run<T, F, Fut>(&self, command: F) -> Option<T>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let resting = self
            .down_until
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some_and(|until| Instant::now() < until);
        if resting {
            return None;
        }
        let outcome = async {
            let connection = self
                .connection
                .get_or_try_init(|| async {
                    let config = ConnectionManagerConfig::new()
                        .set_connection_timeout(Some(TIMEOUT))
                        .set_response_timeout(Some(TIMEOUT))
                        .set_number_of_retries(1);
                    self.client.get_connection_manager_with_config(config).await
                })
                .await?;
            command(connection.clone()).await
        }
        .await;
        match outcome {
            Ok(value) => {
                if self.warned.swap(false, Ordering::Relaxed) {
                    tracing::info!(redis = %self.shown, "Redis answers again; the fleet shares its limits and token again");
                }
                Some(value)
            }
            Err(error) => {
                *self.down_until.lock().unwrap_or_else(|e| e.into_inner()) =
                    Some(Instant::now() + RETRY_AFTER_FAILURE);
                if !self.warned.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        redis = %self.shown,
                        error = %error.kind_text(),
                        "Redis failed; going on with this process's own rate limiter and token cache"
                    );
                }
                None
            }
        }
    }
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("redis", &self.shown)
            .finish_non_exhaustive()
    }
}

/// What a Redis error was, in words that never include a password.
trait KindText {
    fn kind_text(&self) -> String;
}

impl KindText for redis::RedisError {
    fn kind_text(&self) -> String {
        if self.is_timeout() {
            "timed out".into()
        } else if self.is_connection_refusal() {
            "connection refused".into()
        } else if self.is_io_error() {
            "connection failed".into()
        } else {
            format!("{:?}", self.kind())
        }
    }
}

/// A key's scope, hashed: what names the fleet's shared state without
/// showing what it hashes (an API key is a secret; a key id is not, but
/// the same treatment keeps keys uniform).
pub(crate) fn scope(parts: &[&str]) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update(part.as_bytes());
        hasher.update([0]);
    }
    let digest = hasher.finalize();
    digest[..16].iter().map(|b| format!("{b:02x}")).collect()
}

/// GCRA for both limits in one step, on the server's clock, in
/// microseconds. KEYS: the requests and tokens arrival times. ARGV: the
/// requests and tokens per minute (0: none), the call's tokens, the burst.
/// Returns 0 when paid, else the microseconds to wait (nothing paid).
const TAKE: &str = r"
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) * 1000000 + tonumber(now_parts[2])
local burst = tonumber(ARGV[4])
local function step(key, limit, cost)
  if limit == 0 then return nil, 0 end
  local increment = 60000000 * cost / limit
  local tat = tonumber(redis.call('GET', key) or now)
  if tat < now then tat = now end
  local new_tat = tat + increment
  local tolerance = math.max(burst, 60000000 / limit, increment)
  local ahead = new_tat - now
  if ahead <= tolerance then return new_tat, 0 end
  return nil, ahead - tolerance
end
local r_tat, r_wait = step(KEYS[1], tonumber(ARGV[1]), 1)
local t_tat, t_wait = step(KEYS[2], tonumber(ARGV[2]), tonumber(ARGV[3]))
local wait = math.max(r_wait, t_wait)
if wait > 0 then return math.ceil(wait) end
if r_tat then redis.call('SET', KEYS[1], string.format('%d', r_tat), 'PX', math.ceil((r_tat - now) / 1000) + 1000) end
if t_tat then redis.call('SET', KEYS[2], string.format('%d', t_tat), 'PX', math.ceil((t_tat - now) / 1000) + 1000) end
return 0
";

/// Moves the tokens arrival time on by `ARGV[2]` tokens of a limit of
/// `ARGV[1]` per minute.
const CHARGE: &str = r"
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) * 1000000 + tonumber(now_parts[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
tat = tat + 60000000 * tonumber(ARGV[2]) / tonumber(ARGV[1])
redis.call('SET', KEYS[1], string.format('%d', tat), 'PX', math.ceil((tat - now) / 1000) + 1000)
return 0
";

/// The limiter's state in Redis for one scope (one key's calls).
#[derive(Debug)]
pub(crate) struct RedisBuckets {
    store: std::sync::Arc<RedisStore>,
    requests_key: String,
    tokens_key: String,
    take: redis::Script,
    charge: redis::Script,
}

impl RedisBuckets {
    /// The buckets of `scope` (see [`scope`]) in `store`.
    pub(crate) fn new(store: std::sync::Arc<RedisStore>, scope: &str) -> Self {
        Self {
            store,
            requests_key: format!("{KEY_PREFIX}:rate:{scope}:requests"),
            tokens_key: format!("{KEY_PREFIX}:rate:{scope}:tokens"),
            take: redis::Script::new(TAKE),
            charge: redis::Script::new(CHARGE),
        }
    }

    /// Pays one request and `tokens` (`Some(Ok)`), or the wait before
    /// trying again (`Some(Err)`); `None` when Redis cannot say.
    pub(crate) async fn take(
        &self,
        limits: Limits,
        tokens: u32,
    ) -> Option<std::result::Result<(), Duration>> {
        let wait_micros: u64 = self
            .store
            .run(|mut connection| async move {
                self.take
                    .key(&self.requests_key)
                    .key(&self.tokens_key)
                    .arg(limits.requests_per_minute.unwrap_or(0))
                    .arg(limits.tokens_per_minute.unwrap_or(0))
                    .arg(tokens)
                    .arg(BURST.as_micros() as u64)
                    .invoke_async(&mut connection)
                    .await
            })
            .await?;
        Some(match wait_micros {
            0 => Ok(()),
            micros => Err(Duration::from_micros(micros)),
        })
    }

    /// Charges `extra` tokens; `false` when Redis could not.
    pub(crate) async fn charge(&self, limits: Limits, extra: u32) -> bool {
        let Some(tpm) = limits.tokens_per_minute else {
            return true;
        };
        self.store
            .run(|mut connection| async move {
                self.charge
                    .key(&self.tokens_key)
                    .arg(tpm)
                    .arg(extra)
                    .invoke_async::<i64>(&mut connection)
                    .await
            })
            .await
            .is_some()
    }
}
