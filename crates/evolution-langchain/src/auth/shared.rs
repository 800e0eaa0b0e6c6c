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
//!   key (`SET NX PX`) decides which. The lock lasts as long as one IAM
//!   exchange with its retries can take, so a slow IAM does not let a second
//!   process in. While they wait, the others try to take the lock again
//!   whenever they find no token: if its holder failed (and released it) or
//!   died (and it expired), the next process exchanges at once.
//! - A token the model API rejected is not taken from Redis again; the next
//!   fetch replaces it there for everyone.
//! - When Redis cannot answer, each process goes to IAM itself (the
//!   fallback the [`RedisStore`] reports once), a process waiting for
//!   another's exchange included.

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

/// Longer than one Redis command takes: the store gives a command 500 ms.
/// The lock covers two of them besides the exchange (the holder's look for
/// a token before it and its save after it).
const COMMAND_TIME: Duration = Duration::from_secs(1);

/// The longest the exchange lock is ever taken for, whatever the settings
/// say an exchange may take (Redis refuses an expiry past its clock's
/// range; a day is far beyond any sensible exchange).
const LONGEST_LOCK: Duration = Duration::from_secs(24 * 60 * 60);

/// How often a process waiting for another's exchange looks for its token
/// (and tries the lock again).
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
    /// How long the exchange lock lasts: the longest exchange and the Redis
    /// commands around it, so it never expires while its holder is alive
    /// and still fetching.
    lock_time: Duration,
    /// How long a process waits for other processes' exchanges before it
    /// exchanges itself: enough for a holder that died to lose its lock and
    /// for the process that takes it over to make its exchange.
    wait: Duration,
    /// A hash of the last token the model API rejected (0: none).
    rejected: AtomicU64,
    release: redis::Script,
}

/// What Redis holds for this process.
#[derive(Debug)]
enum Stored {
    /// A token it may use.
    Token(IssuedToken),
    /// No usable token: none yet, too little life left, not readable with
    /// this process's key, or the one the model API rejected.
    Absent,
    /// Redis did not answer: it may hold a token, but nobody can tell.
    Unreachable,
}

/// Deletes the lock only if it is still this process's.
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
";

impl SharedToken {
    /// The shared token of `credentials` at `auth_url` in `store`; a stored
    /// token with less than `min_left` to live is not used. One exchange
    /// (IAM's answer with the retries and fallback credentials) takes at
    /// most `longest_exchange`: the exchange lock and the wait for another
    /// process's exchange are measured by it.
    pub(crate) fn new(
        store: Arc<RedisStore>,
        credentials: &Credentials,
        auth_url: &str,
        min_left: Duration,
        longest_exchange: Duration,
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
        let lock_time = longest_exchange
            .saturating_add(COMMAND_TIME * 2)
            .min(LONGEST_LOCK);
        Self {
            store,
            key: format!("{KEY_PREFIX}:token:{name}"),
            lock_key: format!("{KEY_PREFIX}:token:{name}:lock"),
            fernet: Fernet::new(&key).expect("32 bytes make a Fernet key"),
            min_left,
            lock_time,
            wait: lock_time.saturating_mul(2),
            rejected: AtomicU64::new(0),
            release: redis::Script::new(RELEASE),
        }
    }

    /// An upper bound on one [`fetch`](Self::fetch): a look for the token
    /// and a try for the lock, the whole wait for other processes, one more
    /// look and try, then this process's own exchange under the lock and
    /// the release of the lock.
    pub(crate) fn longest_fetch(&self) -> Duration {
        self.wait
            .saturating_add(POLL)
            .saturating_add(self.lock_time)
            .saturating_add(COMMAND_TIME * 5)
    }

    /// The token the fleet holds, or a new one from `exchange` (one process
    /// of the fleet at a time). Without Redis, `exchange` alone.
    ///
    /// A process that finds the lock taken waits for the holder's token,
    /// and each time it finds none tries the lock again: a holder that
    /// failed released it and one that died let it expire, and this process
    /// exchanges in its place. It stops waiting when Redis stops answering,
    /// or after `wait`, and exchanges itself.
    pub(crate) async fn fetch<F, Fut>(&self, exchange: F) -> Result<IssuedToken>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<IssuedToken>>,
    {
        match self.load().await {
            Stored::Token(token) => return Ok(token),
            // Redis is down: on our own.
            Stored::Unreachable => return exchange().await,
            Stored::Absent => {}
        }
        let holder = format!("{:032x}", fastrand::u128(..));
        let deadline = tokio::time::Instant::now() + self.wait;
        loop {
            match self.lock(&holder).await {
                // Redis is down: on our own.
                None => return exchange().await,
                Some(true) => {
                    // Another process may have stored one just before the lock.
                    let outcome = match self.load().await {
                        Stored::Token(token) => Ok(token),
                        Stored::Absent | Stored::Unreachable => {
                            self.exchange_and_save(exchange).await
                        }
                    };
                    self.unlock(&holder).await;
                    return outcome;
                }
                Some(false) => {}
            }
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!(
                    waited_secs = self.wait.as_secs(),
                    "no process of the fleet delivered an access token; exchanging without the lock"
                );
                return self.exchange_and_save(exchange).await;
            }
            tokio::time::sleep(POLL).await;
            match self.load().await {
                Stored::Token(token) => return Ok(token),
                // Redis went while we waited: on our own, at once.
                Stored::Unreachable => return exchange().await,
                // Not yet; the lock is tried again.
                Stored::Absent => {}
            }
        }
    }

    /// A token from `exchange`, stored for the fleet when there is one.
    async fn exchange_and_save<F, Fut>(&self, exchange: F) -> Result<IssuedToken>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<IssuedToken>>,
    {
        let issued = exchange().await;
        if let Ok(token) = &issued {
            self.save(token).await;
        }
        issued
    }

    /// The model API rejected `token`: it is not taken from Redis again.
    pub(crate) fn rejected(&self, token: &AccessToken) {
        self.rejected
            .store(hash(token.expose_secret()), Ordering::Relaxed);
    }

    /// The stored token, when there is one with enough life left that was
    /// not rejected; [`Stored::Unreachable`] when Redis does not answer.
    async fn load(&self) -> Stored {
        let answer: Option<(Option<String>, i64)> = self
            .store
            .run(|mut connection| async move {
                redis::pipe()
                    .get(&self.key)
                    .pttl(&self.key)
                    .query_async(&mut connection)
                    .await
            })
            .await;
        match answer {
            None => Stored::Unreachable,
            Some((sealed, left_ms)) => match self.open(sealed, left_ms) {
                Some(token) => Stored::Token(token),
                None => Stored::Absent,
            },
        }
    }

    /// The token in `sealed`, stored with `left_ms` to live (Redis's PTTL:
    /// negative when the key is missing or has no expiry), if this process
    /// may use it.
    fn open(&self, sealed: Option<String>, left_ms: i64) -> Option<IssuedToken> {
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

    /// Takes the exchange lock for `lock_time`:
    /// `Some(true)` when this process has it, `Some(false)` when another
    /// does, `None` when Redis cannot say.
    async fn lock(&self, holder: &str) -> Option<bool> {
        let lock_ms = self.lock_time.as_millis().max(1) as u64;
        let taken: Option<String> = self
            .store
            .run(|mut connection| async move {
                redis::cmd("SET")
                    .arg(&self.lock_key)
                    .arg(holder)
                    .arg("NX")
                    .arg("PX")
                    .arg(lock_ms)
                    .query_async(&mut connection)
                    .await
            })
            .await?;
        Some(taken.is_some())
    }

    /// Releases the exchange lock if `holder` still has it (it may have
    /// expired and been taken by another process).
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

#[cfg(test)]
mod tests {
    //! Processes of a fleet, each a [`SharedToken`] with its own connection,
    //! against a real `redis-server` started on a free loopback port; the
    //! exchanges are stand-ins that count themselves.

    use std::net::TcpListener;
    use std::sync::atomic::AtomicUsize;

    use evolution_emulator::RedisServer;

    use super::*;
    use crate::error::{AuthError, Error};

    /// Longer than any test here takes when the fleet behaves; the old
    /// fixed lock made a waiter wait 15 s.
    const PATIENCE: Duration = Duration::from_secs(8);

    /// A plain connection, to look at keys or plant them as another
    /// process would.
    async fn connection(server: &RedisServer) -> redis::aio::MultiplexedConnection {
        redis::Client::open(server.url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    }

    /// Waits until `key` exists (some process took the lock).
    async fn wait_for(server: &RedisServer, key: &str) {
        let mut connection = connection(server).await;
        let waited = tokio::time::timeout(PATIENCE, async {
            loop {
                let exists: bool = redis::cmd("EXISTS")
                    .arg(key)
                    .query_async(&mut connection)
                    .await
                    .unwrap();
                if exists {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await;
        waited.unwrap_or_else(|_| panic!("{key} never appeared"));
    }

    /// A loopback port nothing listens on (just freed).
    fn free_port() -> u16 {
        TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    /// One process of the fleet, connected to `url` on its own, whose
    /// exchanges take at most `longest_exchange`.
    fn process(url: &str, longest_exchange: Duration) -> SharedToken {
        SharedToken::new(
            Arc::new(RedisStore::open(url).unwrap()),
            &Credentials::new("key-id", "secret"),
            "https://iam.invalid/api/v1/auth/token",
            Duration::from_secs(60),
            longest_exchange,
        )
    }

    /// A stand-in for IAM that counts the exchanges made with it.
    #[derive(Default)]
    struct Iam {
        exchanges: AtomicUsize,
    }

    impl Iam {
        /// An exchange that takes `took` and then issues `token` for an
        /// hour, or refuses the credentials when `token` is `None`.
        async fn exchange(&self, took: Duration, token: Option<&str>) -> Result<IssuedToken> {
            self.exchanges.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(took).await;
            match token {
                Some(token) => Ok(IssuedToken::new(
                    AccessToken::new(token),
                    Duration::from_secs(3600),
                )),
                None => Err(Error::Auth(AuthError::InvalidCredentials {
                    key_id: "key-id".into(),
                })),
            }
        }

        /// Exchanges made so far.
        fn count(&self) -> usize {
            self.exchanges.load(Ordering::SeqCst)
        }
    }

    /// The secret of a fetched token.
    fn secret(outcome: Result<IssuedToken>) -> String {
        outcome.unwrap().token.expose_secret().to_string()
    }

    #[tokio::test]
    async fn the_lock_lasts_as_long_as_the_longest_exchange() {
        let server = RedisServer::start();
        let fleet = process(&server.url(), Duration::from_secs(60));
        let iam = Iam::default();
        let looked = async {
            wait_for(&server, &fleet.lock_key).await;
            let mut connection = connection(&server).await;
            let left: i64 = redis::cmd("PTTL")
                .arg(&fleet.lock_key)
                .query_async(&mut connection)
                .await
                .unwrap();
            left
        };
        let (outcome, left) = tokio::join!(
            fleet.fetch(|| iam.exchange(Duration::from_millis(300), Some("t"))),
            looked
        );
        assert_eq!(secret(outcome), "t");
        // Taken for the exchange and the two Redis commands around it.
        assert!(left > 60_000, "the lock lives {left} ms");
        assert!(left <= 62_000, "the lock lives {left} ms");
        // Released once the token is stored.
        let mut connection = connection(&server).await;
        let exists: bool = redis::cmd("EXISTS")
            .arg(&fleet.lock_key)
            .query_async(&mut connection)
            .await
            .unwrap();
        assert!(!exists);
        // A waiter waits for a holder that died and for its successor.
        assert_eq!(fleet.wait, fleet.lock_time * 2);
        assert!(fleet.longest_fetch() > fleet.wait + fleet.lock_time);
    }

    #[tokio::test]
    async fn a_slow_exchange_keeps_the_lock_and_is_made_once_for_the_fleet() {
        let server = RedisServer::start();
        // Exchanges may take 3 s: the lock lasts 5 s. This one takes 2.5 s,
        // longer than the Redis commands alone would have kept the lock.
        let longest = Duration::from_secs(3);
        let (a, b, c) = (
            process(&server.url(), longest),
            process(&server.url(), longest),
            process(&server.url(), longest),
        );
        let iam = Iam::default();
        let first = a.fetch(|| iam.exchange(Duration::from_millis(2500), Some("slow")));
        let others = async {
            wait_for(&server, &a.lock_key).await;
            tokio::join!(
                b.fetch(|| iam.exchange(Duration::ZERO, Some("second"))),
                c.fetch(|| iam.exchange(Duration::ZERO, Some("third"))),
            )
        };
        let (first, (second, third)) =
            tokio::time::timeout(PATIENCE, async { tokio::join!(first, others) })
                .await
                .expect("the fleet got its token");
        assert_eq!(iam.count(), 1, "one exchange for the fleet");
        for outcome in [first, second, third] {
            assert_eq!(secret(outcome), "slow");
        }
    }

    #[tokio::test]
    async fn a_waiter_exchanges_as_soon_as_a_failed_holder_releases_the_lock() {
        let server = RedisServer::start();
        // Exchanges may take a minute: a waiter would wait for minutes.
        let longest = Duration::from_secs(60);
        let (a, b) = (
            process(&server.url(), longest),
            process(&server.url(), longest),
        );
        let iam = Iam::default();
        let failing = a.fetch(|| iam.exchange(Duration::from_millis(300), None));
        let waiting = async {
            wait_for(&server, &a.lock_key).await;
            b.fetch(|| iam.exchange(Duration::ZERO, Some("b"))).await
        };
        let (failed, waited) =
            tokio::time::timeout(PATIENCE, async { tokio::join!(failing, waiting) })
                .await
                .expect("the waiter did not wait out the lock");
        assert!(
            matches!(
                failed,
                Err(Error::Auth(AuthError::InvalidCredentials { .. }))
            ),
            "{failed:?}"
        );
        assert_eq!(secret(waited), "b");
        assert_eq!(iam.count(), 2, "the holder's exchange, then the waiter's");
        // The waiter's token is the fleet's now.
        let c = process(&server.url(), longest);
        let outcome = c.fetch(|| iam.exchange(Duration::ZERO, Some("c"))).await;
        assert_eq!(secret(outcome), "b");
        assert_eq!(iam.count(), 2);
    }

    #[tokio::test]
    async fn a_waiter_takes_over_the_lock_of_a_holder_that_died() {
        let server = RedisServer::start();
        let waiter = process(&server.url(), Duration::from_secs(60));
        // A holder that died a moment ago: its lock expires by itself.
        let mut connection = connection(&server).await;
        redis::cmd("SET")
            .arg(&waiter.lock_key)
            .arg("a process that died")
            .arg("PX")
            .arg(300)
            .query_async::<()>(&mut connection)
            .await
            .unwrap();
        let iam = Iam::default();
        let outcome = tokio::time::timeout(
            PATIENCE,
            waiter.fetch(|| iam.exchange(Duration::ZERO, Some("w"))),
        )
        .await
        .expect("the waiter took the expired lock");
        assert_eq!(secret(outcome), "w");
        assert_eq!(iam.count(), 1);
        // It exchanged under the lock and released it.
        let exists: bool = redis::cmd("EXISTS")
            .arg(&waiter.lock_key)
            .query_async(&mut connection)
            .await
            .unwrap();
        assert!(!exists);
    }

    #[tokio::test]
    async fn a_waiter_stops_waiting_when_redis_goes() {
        let mut server = RedisServer::start();
        let waiter = process(&server.url(), Duration::from_secs(60));
        // A holder that is alive and will keep the lock for a minute.
        let mut connection = connection(&server).await;
        redis::cmd("SET")
            .arg(&waiter.lock_key)
            .arg("a slow process")
            .arg("PX")
            .arg(60_000)
            .query_async::<()>(&mut connection)
            .await
            .unwrap();
        let iam = Iam::default();
        let fetch = waiter.fetch(|| iam.exchange(Duration::ZERO, Some("own")));
        let kill = async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            server.stop();
        };
        let (outcome, ()) = tokio::time::timeout(PATIENCE, async { tokio::join!(fetch, kill) })
            .await
            .expect("the waiter stopped waiting when Redis went");
        assert_eq!(secret(outcome), "own");
        assert_eq!(iam.count(), 1);
    }

    #[tokio::test]
    async fn redis_not_answering_is_told_from_no_token() {
        let server = RedisServer::start();
        let fleet = process(&server.url(), Duration::from_secs(10));
        assert!(matches!(fleet.load().await, Stored::Absent));
        let token = IssuedToken::new(AccessToken::new("stored"), Duration::from_secs(3600));
        fleet.save(&token).await;
        match fleet.load().await {
            Stored::Token(token) => assert_eq!(token.token.expose_secret(), "stored"),
            other => panic!("{other:?}"),
        }
        // A rejected token is absent, not unreachable.
        fleet.rejected(&AccessToken::new("stored"));
        assert!(matches!(fleet.load().await, Stored::Absent));

        let nowhere = process(
            &format!("redis://127.0.0.1:{}", free_port()),
            Duration::ZERO,
        );
        assert!(matches!(nowhere.load().await, Stored::Unreachable));
        // Without Redis, the process exchanges on its own, at once.
        let iam = Iam::default();
        let outcome = nowhere
            .fetch(|| iam.exchange(Duration::ZERO, Some("alone")))
            .await;
        assert_eq!(secret(outcome), "alone");
        assert_eq!(iam.count(), 1);
    }
}
