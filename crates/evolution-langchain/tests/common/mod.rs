//! Setup shared by the integration tests: an emulator on loopback and
//! clients pointed at it.

#![allow(dead_code)] // each test file uses its own share of these

pub mod pipeline_cases;
pub mod scripted;
pub mod tls_front;

use std::time::Duration;

use evolution_emulator::{Emulator, EmulatorHandle};
use evolution_langchain::{
    EvolutionInference, EvolutionInferenceBuilder, RetryPolicy, TokenManager, TokenManagerBuilder,
};
use serde_json::Value;

/// An emulator with every default.
pub async fn emulator() -> EmulatorHandle {
    Emulator::start().await.expect("emulator starts")
}

/// A client builder for `emu`: its model, key id and secret, base and IAM URLs.
pub fn client(emu: &EmulatorHandle) -> EvolutionInferenceBuilder {
    EvolutionInference::builder()
        .model(emu.default_model())
        .key_id(emu.key_id())
        .secret(emu.secret())
        .base_url(emu.base_url())
        .auth_url(emu.auth_url())
}

/// A built client for `emu`.
pub fn llm(emu: &EmulatorHandle) -> EvolutionInference {
    client(emu).build().expect("valid settings")
}

/// A token manager builder for `emu`, with short retry pauses so failure
/// tests stay fast.
pub fn manager_for(emu: &EmulatorHandle) -> TokenManagerBuilder {
    TokenManager::builder()
        .key_id(emu.key_id())
        .secret(emu.secret())
        .auth_url(emu.auth_url())
        .retry(RetryPolicy {
            initial_backoff: Duration::from_millis(10),
            ..RetryPolicy::default()
        })
}

/// The body of the newest request the emulator received.
pub fn last_body(emu: &EmulatorHandle) -> Value {
    emu.last_request().expect("a request was recorded").body
}

/// The bodies of the chat requests, in order.
pub fn chat_bodies(emu: &EmulatorHandle) -> Vec<Value> {
    emu.requests()
        .into_iter()
        .filter(|r| r.path.ends_with("/chat/completions"))
        .map(|r| r.body)
        .collect()
}

/// Everything tracing writes, at every level.
#[derive(Clone, Default)]
pub struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl Captured {
    /// What was written so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Installs (once per test binary) a global TRACE subscriber writing into a
/// buffer. Global rather than scoped: tracing caches per-callsite interest
/// across threads, so a scoped subscriber can miss events that another test
/// thread hit first.
pub fn captured_logs() -> Captured {
    static CAPTURED: std::sync::OnceLock<Captured> = std::sync::OnceLock::new();
    CAPTURED
        .get_or_init(|| {
            let captured = Captured::default();
            let writer = captured.clone();
            let subscriber = tracing_subscriber::fmt()
                .with_max_level(tracing::Level::TRACE)
                .with_writer(move || writer.clone())
                .with_ansi(false)
                .finish();
            tracing::subscriber::set_global_default(subscriber).expect("first subscriber");
            captured
        })
        .clone()
}
