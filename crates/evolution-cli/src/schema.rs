//! `--schema FILE.json` of `chat` and `batch`: answers as JSON matching a
//! JSON schema, through the library's structured output
//! ([`EvolutionInference::extract_with_schema`](evolution_langchain::EvolutionInference::extract_with_schema)).
//!
//! The file holds one JSON schema object (`{"type": "object", "properties":
//! {…}, "required": […]}`). It is sent named after its `title`, or else the
//! file's stem (the library keeps `[a-zA-Z0-9_-]`), adjusted for strict
//! structured output (every property required, optional ones made nullable
//! and their `null`s dropped from the answer). The model answers through
//! `response_format` `json_schema`, or through a forced tool call where the
//! server refuses that; an answer that does not fit gets one repair round,
//! then fails with the reason (exit code 6).

use std::path::Path;

use evolution_langchain::{Extracted, ExtractionMode, OutputSchema};
use serde_json::Value;

use crate::exit::CliError;

/// Reads `path` as a JSON schema: a usage error naming the file when it
/// cannot be read, is not JSON, or is not a JSON object.
pub fn read(path: &Path) -> Result<OutputSchema, CliError> {
    let shown = path.display();
    let text = std::fs::read_to_string(path)
        .map_err(|e| CliError::usage(format!("cannot read the schema file {shown}: {e}")))?;
    let value: Value = serde_json::from_str(&text)
        .map_err(|e| CliError::usage(format!("the schema file {shown} is not JSON: {e}")))?;
    if !value.is_object() {
        return Err(CliError::usage(format!(
            "the schema file {shown} is not a JSON schema: expected an object such as \
             {{\"type\": \"object\", \"properties\": {{…}}, \"required\": […]}}, found {}",
            kind(&value)
        )));
    }
    let name = name(path, &value);
    OutputSchema::from_value(&name, value)
        .map_err(|e| CliError::usage(format!("the schema file {shown}: {e}")))
}

/// The schema's name: its `title`, else the file's stem.
fn name(path: &Path, schema: &Value) -> String {
    schema
        .get("title")
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|title| !title.is_empty())
        .map(str::to_string)
        .or_else(|| {
            path.file_stem()
                .map(|stem| stem.to_string_lossy().into_owned())
        })
        .unwrap_or_default()
}

/// What a JSON value is, for an error message.
fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// How the schema went, as `--json` and `-v` name it: `json_schema` or
/// `tool_call`.
pub fn mode_name(mode: ExtractionMode) -> &'static str {
    match mode {
        ExtractionMode::ToolCall => "tool_call",
        // `ExtractionMode` is non-exhaustive; JsonSchema and any later mode
        // keep the answer in the message's content.
        _ => "json_schema",
    }
}

/// The text the value was read from: the message's content, or in the
/// tool-call form the arguments of the call to the schema's function.
pub fn raw_answer(extracted: &Extracted<Value>, schema: &OutputSchema) -> String {
    if extracted.mode == ExtractionMode::ToolCall {
        if let Some(call) = extracted
            .response
            .tool_calls()
            .iter()
            .find(|call| call.function.name == schema.name())
        {
            return call.function.arguments.clone();
        }
    }
    extracted.response.content().to_string()
}

/// What the schema adds to what a batch line asks: its `response_format`
/// as sent (name, adjusted schema, strictness), as JSON. Part of each
/// line's fingerprint, so a changed schema asks every line again.
pub fn sent_form(schema: &OutputSchema) -> String {
    serde_json::to_string(&schema.response_format()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn named_by_title_or_file_stem() {
        let dir = tempfile::tempdir().unwrap();
        let titled = file(
            dir.path(),
            "a.json",
            r#"{"title": "Support ticket", "type": "object", "properties": {"x": {"type": "string"}}}"#,
        );
        assert_eq!(read(&titled).unwrap().name(), "Support_ticket");
        let untitled = file(dir.path(), "city.schema.json", r#"{"type": "object"}"#);
        assert_eq!(read(&untitled).unwrap().name(), "city_schema");
    }

    #[test]
    fn bad_files_are_usage_errors_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.json");
        let not_json = file(dir.path(), "b.json", "{type: object");
        let array = file(dir.path(), "c.json", "[1, 2]");
        for (path, words) in [
            (missing, "cannot read the schema file"),
            (not_json, "is not JSON"),
            (array, "is not a JSON schema: expected an object"),
        ] {
            let error = read(&path).unwrap_err();
            assert_eq!(error.exit, crate::exit::Exit::Usage);
            assert!(error.message.contains(words), "{}", error.message);
            assert!(
                error.message.contains(&path.display().to_string()),
                "{}",
                error.message
            );
        }
    }

    #[test]
    fn the_sent_form_follows_the_schema() {
        let dir = tempfile::tempdir().unwrap();
        let a = read(&file(dir.path(), "s.json", r#"{"type": "object"}"#)).unwrap();
        let b = read(&file(
            dir.path(),
            "s.json",
            r#"{"type": "object", "properties": {"x": {"type": "string"}}}"#,
        ))
        .unwrap();
        assert_ne!(sent_form(&a), sent_form(&b));
        assert!(sent_form(&a).contains("json_schema"), "{}", sent_form(&a));
    }
}
