//! One IAM token for a fleet (feature `redis`): processes that exchange the
//! same key id at the same IAM endpoint keep the token in Redis, so the
//! fleet makes one IAM request per token lifetime, not one per process.
//!
//! - The token is stored under a key hashed from the IAM URL and the key
//!   id, with its remaining lifetime as the key's TTL, so Redis drops it
//!   when it expires.
//! - At rest it is encrypted (Fernet: AES-128-CBC and HMAC-SHA256) with a
//!   key derived from the key secret, which never leaves the processes: a
//!   reader of Redis without the secret learns nothing usable, and could
//!   not forge a token the processes would accept.
//! - One process fetches a new token while the others wait for it: a lock
//!   key (`SET NX PX`) decides which; if its holder dies, the lock expires
//!   and the others fetch themselves.
//! - A token the model API rejected is not taken from Redis again; the next
//!   fetch replaces it there for everyone.
//! - When Redis cannot answer, each process goes to IAM itself (the
//!   fallback the [`RedisStore`] reports once).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use fernet::Fernet;
use sha2::{Digest, Sha256};

use super::cache::IssuedToken;
use super::credentials::Credentials;
use super::token::AccessToken;
use crate::error::Result;
use crate::transport::redis::{scope, RedisStore, KEY_PREFIX};

/// How long the lock of one IAM exchange lasts: longer than an exchange
/// with its retries normally takes; if its holder dies, the others wait no
/// longer than this.
const LOCK_TIME: Duration = Duration::from_secs(15);

/// How often a process waiting for another's exchange looks for its token.
const POLL: Duration = Duration::from_millis(50);

/// The fleet's token for one key id at one IAM endpoint.
pub(crate) struct SharedToken {
    store: Arc<RedisStore>,
    key: String,
    lock_key: String,
    fernet: Fernet,
    /// A stored token with less left than this is treated as absent: the
    /// cache would want to refresh it at once.
    min_left: Duration,
    /// A hash of the last token the model API rejected (0: none).
    rejected: AtomicU64,
    release: redis::Script,
}

/// Deletes the lock only if it is still this process's.
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
";

impl SharedToken {
    /// The shared token of `credentials` at `auth_url` in `store`; a stored
    /// token with less than `min_left` to live is not used.
    pub(crate) fn new(
        store: Arc<RedisStore>,
        credentials: &Credentials,
        auth_url: &str,
        min_left: Duration,
    ) -> Self {
        let name = scope(&["iam-token", auth_url, credentials.key_id()]);
        // The encryption key: the secret, hashed with what the token is for.
        let mut hasher = Sha256::new();
        for part in [
            "evolution-langchain token at rest v1",
            auth_url,
            credentials.key_id(),
            credentials.expose_secret(),
        ] {
            hasher.update(part.as_bytes());
            hasher.update([0]);
        }
        let key = zeroize::Zeroizing::new(base64_url(&hasher.finalize()));
        Self {
            store,
            key: format!("{KEY_PREFIX}:token:{name}"),
            lock_key: format!("{KEY_PREFIX}:token:{name}:lock"),
            fernet: Fernet::new(&key).expect("32 bytes make a Fernet key"),
            min_left,
            rejected: AtomicU64::new(0),
            release: redis::Script::new(RELEASE),
        }
    }

    /// The token the fleet holds, or a new one from `exchange` (one process
    /// of the fleet at a time). Without Redis, `exchange` alone.
    pub(crate) async fn fetch<F, Fut>(&self, exchange: F) -> Result<IssuedToken>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<IssuedToken>>,
    {
        if let Some(token) = self.load().await {
            return Ok(token);
        }
        let holder = format!("{:032x}", fastrand::u128(..));
        match self.lock(&holder).await {
            // Redis is down: on our own.
            None => exchange().await,
            Some(true) => {
                // Another process may have stored one just before the lock.
                let outcome = match self.load().await {
                    Some(token) => Ok(token),
                    None => {
                        let issued = exchange().await;
                        if let Ok(token) = &issued {
                            self.save(token).await;
                        }
                        issued
                    }
                };
                self.unlock(&holder).await;
                outcome
            }
            Some(false) => {
                let deadline = tokio::time::Instant::now() + LOCK_TIME;
                while tokio::time::Instant::now() < deadline {
                    tokio::time::sleep(POLL).await;
                    if let Some(token) = self.load().await {
                        return Ok(token);
                    }
                }
                // The other process never delivered: fetch ourselves.
                let issued = exchange().await;
                if let Ok(token) = &issued {
                    self.save(token).await;
                }
                issued
            }
        }
    }

    /// The model API rejected `token`: it is not taken from Redis again.
    pub(crate) fn rejected(&self, token: &AccessToken) {
        self.rejected
            .store(hash(token.expose_secret()), Ordering::Relaxed);
    }

    /// The stored token, when there is one with enough life left that was
    /// not rejected.
    async fn load(&self) -> Option<IssuedToken> {
        let (sealed, left_ms): (Option<String>, i64) = self
            .store
            .run(|mut connection| async move {
                redis::pipe()
                    .get(&self.key)
                    .pttl(&self.key)
                    .query_async(&mut connection)
                    .await
            })
            .await?;
        let left = Duration::from_millis(u64::try_from(left_ms).ok()?);
        if left < self.min_left {
            return None;
        }
        // A token this key cannot open was not stored by this fleet (or was
        // tampered with): ignored, and replaced at the next save.
        let token = self.fernet.decrypt(&sealed?).ok()?;
        let token = String::from_utf8(token).ok()?;
        if hash(&token) == self.rejected.load(Ordering::Relaxed) {
            return None;
        }
        tracing::debug!(
            left_secs = left.as_secs(),
            "using the fleet's access token from Redis"
        );
        Some(IssuedToken::new(AccessToken::new(token), left))
    }

    /// Stores `token` for the fleet, for as long as it lives.
    async fn save(&self, token: &IssuedToken) {
        let sealed = self.fernet.encrypt(token.token.expose_secret().as_bytes());
        let ttl_ms = token.lifetime.as_millis().max(1) as u64;
        self.store
            .run(|mut connection| async move {
                redis::cmd("SET")
                    .arg(&self.key)
                    .arg(sealed)
                    .arg("PX")
                    .arg(ttl_ms)
                    .query_async::<()>(&mut connection)
                    .await
            })
            .await;
    }

    /// Takes the exchange lock: `Some(true)` when this process has it,
    /// `Some(false)` when another does, `None` when Redis cannot say.
    async fn lock(&self, holder: &str) -> Option<bool> {
        let taken: Option<String> = self
            .store
            .run(|mut connection| async move {
                redis::cmd("SET")
                    .arg(&self.lock_key)
                    .arg(holder)
                    .arg("NX")
                    .arg("PX")
                    .arg(LOCK_TIME.as_millis() as u64)
                    .query_async(&mut connection)
                    .await
            })
            .await?;
        Some(taken.is_some())
    }

    async fn unlock(&self, holder: &str) {
        self.store
            .run(|mut connection| async move {
                self.release
                    .key(&self.lock_key)
                    .arg(holder)
                    .invoke_async::<i64>(&mut connection)
                    .await
            })
            .await;
    }
}

impl std::fmt::Debug for SharedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedToken")
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

/// A 64-bit hash of a token, to recognise it without keeping it.
fn hash(token: &str) -> u64 {
    let digest = Sha256::digest(token.as_bytes());
    u64::from_le_bytes(digest[..8].try_into().expect("8 bytes")) | 1
}

/// URL-safe base64 with padding, as Fernet keys are written.
fn base64_url(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE.encode(bytes)
}
