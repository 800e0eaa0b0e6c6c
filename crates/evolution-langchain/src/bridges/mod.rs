//! Bridges to other Rust LLM libraries: our token management plugged into
//! their own extension points, so programs written against them reach
//! Cloud.ru with a key id and secret as easily as with an API key.
//!
//! - `async_openai` (feature `async-openai`): a `Config` and a tower
//!   layer for async-openai's client.
//! - `rig` (feature `rig`): completion and embedding models and agents
//!   for rig (rig-core / rig-agent 0.44).

#[cfg(feature = "async-openai")]
pub mod async_openai;
#[cfg(feature = "rig")]
pub mod rig;
