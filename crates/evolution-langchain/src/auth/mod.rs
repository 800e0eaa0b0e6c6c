//! Everything about access tokens: credentials, the IAM protocol, the cached
//! `TokenManager`, and the `TokenSource` trait the model client depends on.

mod credentials;
mod iam;
mod source;
mod stats;
mod token;
mod token_manager;

pub use credentials::Credentials;
pub use iam::DEFAULT_AUTH_URL;
pub use source::{StaticToken, TokenSource};
pub use stats::{TokenInfo, TokenStats};
pub use token::AccessToken;
pub use token_manager::{
    TokenManager, TokenManagerBuilder, DEFAULT_AUTH_TIMEOUT, DEFAULT_REFRESH_BUFFER,
};
