//! Emulator or environment: each example talks to Cloud.ru when
//! `EVOLUTION_KEY_ID` or `EVOLUTION_API_KEY` is set (in the environment or
//! `.env`), and to an in-process emulator otherwise, so it runs without an
//! account.

use evolution_emulator::{Emulator, EmulatorHandle};
use evolution_langchain::config::{env_var, load_dotenv, ENV_API_KEY, ENV_KEY_ID, ENV_MODEL};
use evolution_langchain::langchain_rust::tools::Tool;
use evolution_langchain::{EvolutionEmbeddings, EvolutionInference};
use serde_json::Value;

/// The error type of the examples' `main`.
pub type BoxError = Box<dyn std::error::Error>;

/// Where the examples send their requests.
pub struct Backend {
    /// Running when no credentials are configured.
    pub emulator: Option<EmulatorHandle>,
}

impl Backend {
    /// Uses `EVOLUTION_*` when set, else starts the emulator; says which.
    pub async fn connect() -> Result<Self, BoxError> {
        load_dotenv()?;
        if env_var(ENV_KEY_ID).is_some() || env_var(ENV_API_KEY).is_some() {
            println!("Using the service configured by EVOLUTION_* variables.");
            return Ok(Self { emulator: None });
        }
        let emulator = Emulator::start().await?;
        println!(
            "Neither EVOLUTION_KEY_ID nor EVOLUTION_API_KEY is set: using an in-process emulator at {} (it echoes prompts).",
            emulator.base_url()
        );
        Ok(Self {
            emulator: Some(emulator),
        })
    }

    /// The chat model.
    #[allow(dead_code)] // not every example uses our own client
    pub fn llm(&self) -> Result<EvolutionInference, BoxError> {
        Ok(match &self.emulator {
            None => EvolutionInference::from_env()?,
            Some(emu) => EvolutionInference::builder()
                .model(emu.default_model())
                .key_id(emu.key_id())
                .secret(emu.secret())
                .base_url(emu.base_url())
                .auth_url(emu.auth_url())
                .build()?,
        })
    }

    /// The embedding model (`EVOLUTION_EMBEDDINGS_MODEL`, else
    /// `EVOLUTION_MODEL`), sharing the chat model's connections and token.
    #[allow(dead_code)] // only some examples embed
    pub fn embeddings(&self, llm: &EvolutionInference) -> EvolutionEmbeddings {
        let model = match &self.emulator {
            None => env_var("EVOLUTION_EMBEDDINGS_MODEL")
                .or_else(|| env_var(ENV_MODEL))
                .unwrap_or_default(),
            Some(emu) => emu.default_model().to_string(),
        };
        EvolutionEmbeddings::from_inference(llm, model)
    }
}

/// The tool the agent examples offer: upper-cases its input.
#[allow(dead_code)] // only the agent examples use it
pub struct Uppercase;

#[async_trait::async_trait]
impl Tool for Uppercase {
    fn name(&self) -> String {
        "uppercase".into()
    }

    fn description(&self) -> String {
        "Converts text to upper case".into()
    }

    async fn run(&self, input: Value) -> Result<String, Box<dyn std::error::Error>> {
        let text = input.as_str().ok_or("the input must be text")?;
        Ok(text.to_uppercase())
    }
}
