//! Everything about access tokens: credentials, the IAM protocol, the cached
//! `TokenManager`, and the `TokenSource` trait the model client depends on.

mod builder;
mod credentials;
mod iam;
mod source;
mod stats;
mod token;
mod token_manager;

pub use builder::TokenManagerBuilder;
pub use credentials::Credentials;
pub use iam::DEFAULT_AUTH_URL;
pub use source::{StaticToken, TokenSource};
pub use stats::{TokenInfo, TokenStats};
pub use token::AccessToken;
pub use token_manager::{TokenManager, DEFAULT_AUTH_TIMEOUT, DEFAULT_REFRESH_BUFFER};
