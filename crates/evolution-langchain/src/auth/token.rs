//! `AccessToken`: a bearer token that never prints itself.

use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use secrecy::{ExposeSecret, SecretString};

/// An access token for the model API.
///
/// Cloning is a reference-count bump; the text is zeroized when the last clone
/// is dropped. `Debug` and `Display` show `AccessToken(<redacted>)`: the value
/// is reachable only through [`AccessToken::expose_secret`].
#[derive(Clone)]
pub struct AccessToken(Arc<Shared>);

/// The token text and the identity of the issued token. Aligned to a cache
/// line so that the reference counts of the per-thread copies (see
/// [`TokenStripes`]) never share one.
#[repr(align(64))]
struct Shared {
    value: SecretString,
    id: u64,
}

impl AccessToken {
    /// Wraps a token value.
    pub fn new(value: impl Into<String>) -> Self {
        static NEXT_ID: AtomicU64 = AtomicU64::new(1);
        Self(Arc::new(Shared {
            value: SecretString::from(value.into()),
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
        }))
    }

    /// The token text, for an `Authorization: Bearer …` header.
    pub fn expose_secret(&self) -> &str {
        self.0.value.expose_secret()
    }

    /// At most the first 8 characters: enough to tell tokens apart in a log,
    /// too little to use.
    pub fn prefix(&self) -> &str {
        let value = self.expose_secret();
        let end = value
            .char_indices()
            .nth(8)
            .map_or(value.len(), |(index, _)| index);
        &value[..end]
    }

    /// Whether two handles refer to the same issued token (not merely equal text).
    pub fn same_as(&self, other: &AccessToken) -> bool {
        self.0.id == other.0.id
    }
}

/// Copies of one token, one per group of threads, handed out by the token
/// cache. Cloning a single `Arc` from every thread makes its reference count
/// the one contended cache line of the hot path; with a copy per thread slot
/// each count stays in its own core's cache, and the cache scales with cores.
pub(crate) struct TokenStripes(Box<[AccessToken]>);

impl TokenStripes {
    pub(crate) fn new(token: &AccessToken) -> Self {
        static COUNT: OnceLock<usize> = OnceLock::new();
        let count = *COUNT.get_or_init(|| {
            std::thread::available_parallelism().map_or(4, |n| n.get().clamp(1, 32))
        });
        let copies = (0..count)
            .map(|_| {
                AccessToken(Arc::new(Shared {
                    value: SecretString::from(token.expose_secret().to_string()),
                    id: token.0.id,
                }))
            })
            .collect();
        Self(copies)
    }

    /// This thread's copy.
    #[inline]
    pub(crate) fn get(&self) -> &AccessToken {
        static NEXT_SLOT: AtomicUsize = AtomicUsize::new(0);
        thread_local! {
            static SLOT: usize = NEXT_SLOT.fetch_add(1, Ordering::Relaxed);
        }
        let slot = SLOT.with(|slot| *slot);
        &self.0[slot % self.0.len()]
    }
}

impl fmt::Debug for TokenStripes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TokenStripes(<redacted> x{})", self.0.len())
    }
}

impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AccessToken(<redacted>)")
    }
}

impl fmt::Display for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl PartialEq for AccessToken {
    fn eq(&self, other: &Self) -> bool {
        self.same_as(other) || self.expose_secret() == other.expose_secret()
    }
}

impl Eq for AccessToken {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_prints_its_value() {
        let token = AccessToken::new("eyJhbGciOiJSUzI1NiJ9.payload.signature");
        assert_eq!(format!("{token:?}"), "AccessToken(<redacted>)");
        assert_eq!(token.to_string(), "<redacted>");
        assert_eq!(token.prefix(), "eyJhbGci");
        assert_eq!(AccessToken::new("abc").prefix(), "abc");
    }

    #[test]
    fn clones_share_the_value() {
        let a = AccessToken::new("t-1");
        let b = a.clone();
        assert!(a.same_as(&b));
        assert!(!a.same_as(&AccessToken::new("t-1")));
        assert_eq!(a, AccessToken::new("t-1"));
    }

    #[test]
    fn stripes_are_the_same_token() {
        let token = AccessToken::new("t-2");
        let stripes = TokenStripes::new(&token);
        let mine = stripes.get().clone();
        assert!(mine.same_as(&token));
        assert_eq!(mine.expose_secret(), "t-2");
        let other = std::thread::spawn(move || stripes.get().clone())
            .join()
            .unwrap();
        assert!(other.same_as(&token));
    }
}
