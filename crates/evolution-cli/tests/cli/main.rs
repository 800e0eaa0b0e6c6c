//! The `evolution` binary end to end, against an emulator in the test
//! process: output, exit codes, and what reaches the server. One test
//! binary with a module per command, as each binary links the whole world.

#[path = "../common/mod.rs"]
mod common;

mod api_key;
mod batch;
mod chat;
mod config;
mod edges;
mod rate_limits;
mod reasoning;
mod rerank;
mod resume;
mod schema;
mod token;
mod transcribe;
