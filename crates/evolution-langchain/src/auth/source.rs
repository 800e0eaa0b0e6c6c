//! `TokenSource`: where the inference client gets its bearer token.

use std::fmt;

use async_trait::async_trait;

use super::token::AccessToken;
use crate::error::Result;

/// Something that hands out bearer tokens for the model API.
///
/// [`TokenManager`](super::TokenManager) implements it for IAM access keys,
/// [`StaticToken`] for a fixed API key; implement it yourself to fetch tokens
/// from anywhere else. The client calls [`token`](TokenSource::token) before
/// every request and, when the API answers `401`,
/// [`invalidate_token`](TokenSource::invalidate_token) followed by one more
/// `token()`.
#[async_trait]
pub trait TokenSource: Send + Sync + fmt::Debug {
    /// A token that is valid now.
    async fn token(&self) -> Result<AccessToken>;

    /// Forgets any cached token so the next [`token`](TokenSource::token)
    /// obtains a new one.
    fn invalidate(&self);

    /// Called when the API rejected `rejected`. The default forgets the cache;
    /// a cache shared by many tasks should forget only if it still holds that
    /// very token, so a burst of `401`s does not discard the replacement.
    fn invalidate_token(&self, rejected: &AccessToken) {
        let _ = rejected;
        self.invalidate();
    }

    /// Whether a new token can replace a rejected one. When false, a `401`
    /// is final ([`AuthError::KeyRejected`](crate::AuthError::KeyRejected))
    /// instead of a cue to refresh and retry.
    fn refreshes(&self) -> bool {
        true
    }
}

/// A fixed token, e.g. an API key issued for a dedicated model endpoint.
/// It is never refreshed; a `401` with it is final.
#[derive(Clone)]
pub struct StaticToken(AccessToken);

impl StaticToken {
    /// A source that always returns `token`.
    pub fn new(token: impl Into<String>) -> Self {
        Self(AccessToken::new(token))
    }

    /// A source that always returns `token`.
    pub fn from_token(token: AccessToken) -> Self {
        Self(token)
    }
}

impl fmt::Debug for StaticToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StaticToken(<redacted>)")
    }
}

#[async_trait]
impl TokenSource for StaticToken {
    async fn token(&self) -> Result<AccessToken> {
        Ok(self.0.clone())
    }

    fn invalidate(&self) {}

    fn refreshes(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn static_token_is_returned_and_redacted() {
        let source = StaticToken::new("api-key-123456789");
        assert_eq!(
            source.token().await.unwrap().expose_secret(),
            "api-key-123456789"
        );
        source.invalidate();
        assert_eq!(
            source.token().await.unwrap().expose_secret(),
            "api-key-123456789"
        );
        assert!(!format!("{source:?}").contains("api-key"));
    }
}
