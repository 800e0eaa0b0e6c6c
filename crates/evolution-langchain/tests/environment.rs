//! Configuration from the environment and from `.env`: API keys under both
//! names, the conflict with a key id/secret, and the default base URL.
//!
//! The environment is global to the process and `.env` is loaded once per
//! process, so everything here runs in one test, in order, in a binary of
//! its own.

use evolution_emulator::Emulator;
use evolution_langchain::config::{ENV_API_KEY, ENV_CLOUD_RU_API_KEY, ENV_KEY_ID, ENV_SECRET};
use evolution_langchain::{Error, EvolutionEmbeddings, EvolutionInference, DEFAULT_BASE_URL};

const VARIABLES: [&str; 8] = [
    "EVOLUTION_API_KEY",
    "CLOUD_RU_FOUNDATION_MODELS_API_KEY",
    "EVOLUTION_KEY_ID",
    "EVOLUTION_SECRET",
    "EVOLUTION_BASE_URL",
    "EVOLUTION_TOKEN_URL",
    "EVOLUTION_MODEL",
    "EVOLUTION_PROJECT_ID",
];

fn clear() {
    for name in VARIABLES {
        std::env::remove_var(name);
    }
}

#[test]
fn api_keys_from_the_environment_and_dotenv() {
    clear();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let emu = runtime
        .block_on(
            Emulator::builder()
                .api_key("key-from-dotenv")
                .api_key("key-from-evolution-var")
                .api_key("key-from-cloud-ru-var")
                .start(),
        )
        .unwrap();
    let bearer_of_last = || emu.last_request().unwrap().bearer;

    // 1. `.env` in the current directory, read on the first `from_env`.
    let dir = std::env::temp_dir().join(format!("evolution-env-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join(".env"),
        format!(
            "# written by the test\n{ENV_CLOUD_RU_API_KEY}=key-from-dotenv\nEVOLUTION_BASE_URL={}\n",
            emu.base_url()
        ),
    )
    .unwrap();
    std::env::set_current_dir(&dir).unwrap();
    let llm = EvolutionInference::from_env().unwrap();
    assert_eq!(llm.base_url(), emu.base_url());
    assert!(llm.token_manager().is_none());
    assert_eq!(runtime.block_on(llm.invoke("dotenv")).unwrap(), "dotenv");
    assert_eq!(bearer_of_last().as_deref(), Some("key-from-dotenv"));
    assert_eq!(emu.counters().auth_requests, 0);
    // Loaded once: removing the variables is not undone by the file.
    clear();
    std::fs::remove_dir_all(&dir).unwrap();

    // 2. Cloud.ru's own variable name.
    std::env::set_var(ENV_CLOUD_RU_API_KEY, "key-from-cloud-ru-var");
    std::env::set_var("EVOLUTION_BASE_URL", emu.base_url());
    let llm = EvolutionInference::from_env().unwrap();
    runtime.block_on(llm.invoke("cloud ru name")).unwrap();
    assert_eq!(bearer_of_last().as_deref(), Some("key-from-cloud-ru-var"));

    // 3. EVOLUTION_API_KEY, which wins over the second name.
    std::env::set_var(ENV_API_KEY, "key-from-evolution-var");
    let llm = EvolutionInference::from_env().unwrap();
    runtime.block_on(llm.invoke("evolution name")).unwrap();
    assert_eq!(bearer_of_last().as_deref(), Some("key-from-evolution-var"));
    let embeddings = EvolutionEmbeddings::from_env().unwrap();
    runtime.block_on(embeddings.embed("v")).unwrap();
    assert_eq!(bearer_of_last().as_deref(), Some("key-from-evolution-var"));
    assert_eq!(emu.counters().auth_requests, 0, "no IAM request at all");

    // 4. An API key and a key id/secret: the error names the variables.
    std::env::set_var(ENV_KEY_ID, "some-id");
    std::env::set_var(ENV_SECRET, "some-secret-value");
    let err = EvolutionInference::from_env().unwrap_err();
    assert!(matches!(err, Error::Config { .. }), "{err:?}");
    let text = err.to_string();
    for name in [ENV_API_KEY, ENV_KEY_ID, ENV_SECRET] {
        assert!(text.contains(name), "{name} not named: {text}");
    }
    assert!(!text.contains("key-from-evolution-var"), "{text}");
    assert!(!text.contains("some-secret-value"), "{text}");
    std::env::remove_var(ENV_API_KEY);
    let err = EvolutionInference::from_env().unwrap_err();
    assert!(err.to_string().contains(ENV_CLOUD_RU_API_KEY), "{err}");

    // 5. Code that chose a way wins over the environment without conflict.
    let llm = EvolutionInference::builder()
        .api_key("key-from-evolution-var")
        .from_env()
        .unwrap()
        .build()
        .unwrap();
    runtime.block_on(llm.invoke("code wins")).unwrap();
    assert_eq!(bearer_of_last().as_deref(), Some("key-from-evolution-var"));

    // 6. No base URL anywhere: the public endpoint (nothing is sent).
    clear();
    std::env::set_var(ENV_API_KEY, "k");
    let llm = EvolutionInference::from_env().unwrap();
    assert_eq!(llm.base_url(), DEFAULT_BASE_URL);

    // 7. Nothing configured: the error says what to set.
    clear();
    let err = EvolutionInference::from_env().unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains(ENV_API_KEY) && text.contains(ENV_KEY_ID),
        "{text}"
    );
    runtime.block_on(emu.shutdown());
}
