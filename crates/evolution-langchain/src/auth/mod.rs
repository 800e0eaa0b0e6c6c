//! Everything about access tokens: credentials, the IAM protocol, the token
//! cache and its fetchers, the `TokenManager` built from them, and the
//! `TokenSource` trait the model clients depend on.
//!
//! - [`TokenCache`] keeps a valid token from any [`TokenFetcher`]
//!   (single flight, refresh-ahead), knowing nothing of IAM;
//! - the IAM fetcher (retries, fallback credentials, statistics) is one
//!   such fetcher;
//! - [`TokenManager`] is the cache around the IAM fetcher;
//! - [`StaticToken`] is a fixed API key.

mod builder;
mod cache;
mod credentials;
mod iam;
mod iam_fetcher;
#[cfg(feature = "redis")]
mod shared;
mod source;
mod stats;
mod token;
mod token_manager;

pub use builder::TokenManagerBuilder;
pub use cache::{CacheSettings, CacheState, IssuedToken, TokenCache, TokenFetcher};
pub use credentials::Credentials;
pub use iam::{DEFAULT_AUTH_URL, DEFAULT_MAX_AUTH_RESPONSE_SIZE};
pub use source::{StaticToken, TokenSource};
pub use stats::{TokenInfo, TokenStats};
pub use token::AccessToken;
pub use token_manager::{TokenManager, DEFAULT_AUTH_TIMEOUT, DEFAULT_REFRESH_BUFFER};
