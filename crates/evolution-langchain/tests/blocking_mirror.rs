//! The blocking facade mirrors the async API name for name: every public
//! method of an async client has a blocking twin, found by reading the
//! sources, so a method added to one and not the other fails here. (The
//! builders need no check: async and blocking share one builder type,
//! `ClientBuilder<S, M>` / `TokenManagerBuilder<M>`, and its setters.)
#![cfg(feature = "blocking")]

use std::collections::BTreeSet;
use std::path::Path;

/// The public methods in `impl {type_name} {` blocks of the `.rs` files
/// under `dir` (recursively), skipping `skip_dir`.
fn public_methods(dir: &Path, type_name: &str, skip_dir: Option<&Path>) -> BTreeSet<String> {
    let mut methods = BTreeSet::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if Some(path.as_path()) == skip_dir {
                continue;
            }
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                collect(&text, type_name, &mut methods);
            }
        }
    }
    methods
}

fn collect(text: &str, type_name: &str, methods: &mut BTreeSet<String>) {
    let opening = format!("impl {type_name} {{");
    let mut inside = false;
    for line in text.lines() {
        if line.starts_with(&opening) {
            inside = true;
        } else if inside && line == "}" {
            inside = false;
        } else if inside {
            let line = line.trim_start();
            let rest = line
                .strip_prefix("pub async fn ")
                .or_else(|| line.strip_prefix("pub fn "));
            if let Some(rest) = rest {
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                methods.insert(name);
            }
        }
    }
}

fn check(type_name: &str, blocking_only: &[&str]) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let blocking_dir = src.join("blocking");
    let async_methods = public_methods(&src, type_name, Some(&blocking_dir));
    let mut blocking_methods = public_methods(&blocking_dir, type_name, None);
    assert!(
        !async_methods.is_empty(),
        "no methods found for {type_name}"
    );
    for extra in blocking_only {
        assert!(
            blocking_methods.remove(*extra),
            "{type_name}: no blocking {extra}"
        );
    }
    let missing: Vec<_> = async_methods.difference(&blocking_methods).collect();
    let unknown: Vec<_> = blocking_methods.difference(&async_methods).collect();
    assert!(
        missing.is_empty() && unknown.is_empty(),
        "{type_name}: async methods without a blocking twin: {missing:?}; \
         blocking methods with no async original: {unknown:?}"
    );
}

/// What only the facade has: the way to and from the async client.
const FACADE: [&str; 2] = ["from_async", "as_async"];

#[test]
fn the_chat_client_is_mirrored() {
    check("EvolutionInference", &FACADE);
}

#[test]
fn the_embeddings_client_is_mirrored() {
    check("EvolutionEmbeddings", &FACADE);
}

#[test]
fn the_rerank_client_is_mirrored() {
    check("EvolutionRerank", &FACADE);
}

#[test]
fn the_token_manager_is_mirrored() {
    check("TokenManager", &FACADE);
}

#[test]
fn the_audio_client_is_mirrored() {
    check("EvolutionAudio", &FACADE);
}
