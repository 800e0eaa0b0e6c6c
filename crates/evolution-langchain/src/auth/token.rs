//! `AccessToken`: a bearer token that never prints itself.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use secrecy::{ExposeSecret, SecretString};

/// An access token for the model API.
///
/// Cloning is a reference-count bump; the text is zeroized when the last clone
/// is dropped. `Debug` and `Display` show `AccessToken(<redacted>)`: the value
/// is reachable only through [`AccessToken::expose_secret`].
#[derive(Clone)]
pub struct AccessToken(Arc<Shared>);

/// The token text and the identity of the issued token.
struct Shared {
    value: SecretString,
    id: u64,
}

impl AccessToken {
    /// Wraps a token value.
    pub fn new(value: impl Into<String>) -> Self {
        Self::from_secret(SecretString::from(value.into()))
    }

    /// Wraps a token value that is already in a secret box.
    pub fn from_secret(value: SecretString) -> Self {
        static NEXT_ID: AtomicU64 = AtomicU64::new(1);
        Self(Arc::new(Shared {
            value,
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
}
