//! `evolution rerank` end to end against the embedded emulator.

use std::io::Write;

use evolution_emulator::{Emulator, Fault, Target};
use serde_json::Value;

use crate::common::{evolution, run, Emu};

const DOCUMENTS: &str = "cats sleep all day\n\nthe capital of France is Paris\n   \nParis is lovely in spring\ncapital gains tax in France\n";

fn documents_file() -> tempfile::NamedTempFile {
    let mut file = tempfile::NamedTempFile::new().expect("temp file");
    file.write_all(DOCUMENTS.as_bytes()).expect("write");
    file
}

#[test]
fn rerank_prints_index_score_and_document_best_first() {
    let file = documents_file();
    let out = run(
        evolution()
            .args(["--emulator", "rerank", "--query", "capital of France"])
            .arg(file.path()),
        None,
    );
    let lines: Vec<Vec<String>> = out
        .ok()
        .lines()
        .map(|l| l.split('\t').map(str::to_string).collect())
        .collect();
    // Blank lines are no documents: four, indexed as the non-blank lines.
    assert_eq!(lines.len(), 4, "{out:#?}");
    assert_eq!(lines[0], ["1", "1.0000", "the capital of France is Paris"]);
    assert_eq!(lines[1], ["3", "0.6667", "capital gains tax in France"]);
    let scores: Vec<f64> = lines.iter().map(|l| l[1].parse().unwrap()).collect();
    assert!(scores.windows(2).all(|w| w[0] >= w[1]), "{scores:?}");
}

#[test]
fn rerank_from_stdin_with_top_n_and_json() {
    let out = run(
        evolution().args(["--emulator", "rerank", "-q", "Paris", "--top-n", "1", "-"]),
        Some(DOCUMENTS),
    );
    assert_eq!(out.ok(), "1\t1.0000\tthe capital of France is Paris\n");

    let out = run(
        evolution().args(["--emulator", "rerank", "-q", "spring", "--json", "-"]),
        Some(DOCUMENTS),
    );
    let reply: Value = serde_json::from_str(out.ok()).expect("JSON");
    assert_eq!(reply["results"][0]["index"], 2);
    assert_eq!(reply["results"][0]["relevance_score"], 1.0);
    assert_eq!(
        reply["results"][0]["document"]["text"],
        "Paris is lovely in spring"
    );
    assert_eq!(reply["results"].as_array().unwrap().len(), 4);
    assert!(reply["usage"]["prompt_tokens"].as_u64().unwrap() > 0);
}

#[test]
fn rerank_refuses_empty_input_and_bad_flags() {
    let empty = run(
        evolution().args(["--emulator", "rerank", "-q", "x", "-"]),
        Some("\n  \n"),
    );
    assert!(empty.fails_with(2).contains("no documents"), "{empty:?}");
    let zero = run(
        evolution().args(["--emulator", "rerank", "-q", "x", "--top-n", "0", "-"]),
        Some("a\n"),
    );
    assert_eq!(zero.code, Some(2), "{zero:?}");
    let missing = run(
        evolution().args(["--emulator", "rerank", "-q", "x", "/nonexistent/docs.txt"]),
        None,
    );
    assert!(missing.fails_with(2).contains("cannot read"), "{missing:?}");
}

#[test]
fn rerank_recovers_and_retries_like_chat() {
    let emu = Emu::start(Emulator::builder());
    emu.handle.inject(Target::Rerank, Fault::Status(401), 1);
    emu.handle.inject(Target::Rerank, Fault::Status(503), 1);
    let out = run(
        emu.command()
            .args(["rerank", "-q", "Paris", "--model", "my/reranker", "-"]),
        Some(DOCUMENTS),
    );
    assert!(out.ok().starts_with("1\t1.0000\t"), "{out:#?}");
    let counters = emu.handle.counters();
    assert_eq!(counters.rerank_requests, 3);
    assert_eq!(counters.auth_requests, 2, "one refresh after the 401");
    let body = emu.handle.last_request().unwrap().body;
    assert_eq!(body["model"], "my/reranker");
    assert_eq!(body["query"], "Paris");

    emu.handle.inject(Target::Rerank, Fault::Status(400), 1);
    let refused = run(emu.command().args(["rerank", "-q", "x", "-"]), Some("a\n"));
    assert!(refused.fails_with(6).contains("400"), "{refused:?}");
}
