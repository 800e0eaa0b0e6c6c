//! Structured output: answers as Rust types (or as JSON of a schema).
//!
//! [`EvolutionInference::extract`] sends the JSON schema of a type as a
//! strict `response_format` `json_schema`, reads the answer and hands back a
//! value of the type. One code path serves three entry points: `extract`
//! (a type), [`extract_prompt`](EvolutionInference::extract_prompt) (a type,
//! one user message) and [`extract_with_schema`](EvolutionInference::extract_with_schema)
//! (an [`OutputSchema`] made from a JSON schema document, answering
//! [`serde_json::Value`]).
//!
//! What happens on each call:
//!
//! 1. The schema ([`OutputSchema`]) is the type's (schemars, JSON Schema
//!    2020-12) adjusted to what strict structured-output decoding accepts.
//! 2. It goes as `response_format: {"type": "json_schema", "json_schema":
//!    {"name", "schema", "strict"}}`; or, when the server has refused
//!    `json_schema` for this model before (a `400`/`422` saying that
//!    `json_schema`, or the `response_format` type, is not supported; a
//!    complaint about the schema's content is no refusal), as a forced call
//!    of one function whose parameters are the schema. A refusal is
//!    remembered per model by the client and its clones, so later calls go
//!    straight to the tool form.
//! 3. The answer (the first choice's content, or the call's arguments; a
//!    reasoning model's thinking is never read) is parsed: surrounding
//!    whitespace and one Markdown code fence (` ```json ` or ` ``` `) are
//!    tolerated, nothing looser. It must be JSON, valid against the schema,
//!    and (for `extract`) deserialize into the type.
//! 4. If not, one repair round: the conversation, the model's answer (not
//!    when it has no text) and a user message stating what is wrong and
//!    asking for JSON matching the schema (in the tool form: for a call of
//!    the function with arguments matching it). If that answer fails too:
//!    [`Error::Extraction`] with the raw text and the reason.

use std::borrow::{Borrow, Cow};
use std::collections::{BTreeMap, HashSet};
use std::sync::PoisonError;

use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde_json::{json, Map, Value};

use super::client::EvolutionInference;
use super::options::ChatOptions;
use super::wire::{
    ChatMessage, ChatResponse, RequestBody, ResponseFormat, Tool, ToolCall, ToolChoice, Usage,
};
use crate::error::{Error, Result};

/// Keywords strict structured-output servers refuse (OpenAI's strict mode
/// and what vLLM / llama.cpp grammars cannot honour), removed everywhere.
const STRIPPED_KEYWORDS: &[&str] = &[
    "$schema",
    "$id",
    "$comment",
    "default",
    "examples",
    "example",
    "deprecated",
    "readOnly",
    "writeOnly",
    "nullable",
    "minLength",
    "maxLength",
    "uniqueItems",
    "minProperties",
    "maxProperties",
    "patternProperties",
    "propertyNames",
    "unevaluatedProperties",
    "unevaluatedItems",
    "contains",
    "minContains",
    "maxContains",
    "dependentRequired",
    "dependentSchemas",
    "if",
    "then",
    "else",
    "not",
    "contentEncoding",
    "contentMediaType",
    "contentSchema",
];

/// The `format`s strict mode knows; others (schemars' `uint32`, `double`, …)
/// are removed, the bounds beside them stay.
const SUPPORTED_FORMATS: &[&str] = &[
    "date-time",
    "time",
    "date",
    "duration",
    "email",
    "hostname",
    "ipv4",
    "ipv6",
    "uuid",
];

/// The property a schema whose root is not an object is wrapped in
/// (strict mode wants an object at the root).
const WRAPPER_PROPERTY: &str = "value";

/// Most mismatches named in one reason.
const MAX_REPORTED: usize = 3;

/// Deepest chain of `$ref`s followed without descending into the value.
const MAX_REF_HOPS: u32 = 32;

/// The answer's shape: a JSON schema adjusted for strict structured output,
/// with its name, and what it takes to read an answer back.
///
/// Made from a Rust type with [`OutputSchema::of`] (what
/// [`EvolutionInference::extract`] does) or from a JSON schema document with
/// [`OutputSchema::from_value`] (for schemas that are files, not types).
/// The adjustments, applied to every subschema:
///
/// - every object lists all its properties in `required` and has
///   `additionalProperties: false`; a property that was optional becomes
///   nullable (`"type": [.., "null"]`, or an `anyOf` with `{"type": "null"}`),
///   and a `null` answered for it is dropped before the value is handed
///   back, so serde's defaults and the original schema's optional
///   properties see it absent;
/// - `oneOf` becomes `anyOf`; keywords strict mode refuses are removed
///   (`default`, `examples`, `minLength`, `maxLength`, `uniqueItems`,
///   `patternProperties`, `if`/`then`/`else`, `not`, … and `$schema`);
///   `format` stays when strict mode knows it (`date-time`, `date`, `time`,
///   `duration`, `email`, `hostname`, `ipv4`, `ipv6`, `uuid`), else goes;
///   `minimum`, `maximum`, `pattern`, `enum`, `const`, `minItems`,
///   `maxItems`, titles and descriptions stay;
/// - `$ref`s into `$defs` stay references (recursive types work); a `$ref`
///   with sibling keywords (a field's doc comment) is inlined with them,
///   unless that would recurse;
/// - a root that is not an object (an enum, a list, a number) is wrapped as
///   `{"value": …}` and unwrapped from the answer.
///
/// What strict mode cannot express (a map with arbitrary keys, a
/// `serde_json::Value` field) is kept as it is and the schema is sent with
/// `"strict": false` ([`is_strict`](Self::is_strict)).
///
/// Models write the properties in the order the schema lists them. Without
/// serde_json's `preserve_order` feature (the default) JSON objects, and so
/// the schema, are in alphabetical order; with it on in your build (e.g.
/// `schemars = { version = "1", features = ["preserve_order"] }`), in the
/// order the fields are declared.
///
/// ```
/// use evolution_langchain::OutputSchema;
/// use serde_json::json;
///
/// let schema = OutputSchema::from_value(
///     "city",
///     json!({
///         "type": "object",
///         "properties": {"name": {"type": "string"}, "population": {"type": "integer", "default": 0}},
///         "required": ["name"]
///     }),
/// )?;
/// assert_eq!(
///     schema.schema(),
///     &json!({
///         "type": "object",
///         "properties": {
///             "name": {"type": "string"},
///             "population": {"type": ["integer", "null"]}
///         },
///         "required": ["name", "population"],
///         "additionalProperties": false
///     })
/// );
/// // A null for the optional property is dropped: the answer fits the original schema.
/// assert_eq!(schema.parse(r#"{"name": "Paris", "population": null}"#), Ok(json!({"name": "Paris"})));
/// assert!(schema.parse(r#"{"name": 7, "population": null}"#).unwrap_err().contains("expected string"));
/// # Ok::<(), evolution_langchain::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct OutputSchema {
    name: String,
    schema: Value,
    strict: bool,
    /// Whether the root was wrapped in `{"value": …}`.
    wrapped: bool,
    /// Schema pointer of an object → its properties that were optional
    /// and were made nullable.
    nullable: BTreeMap<String, Vec<String>>,
}

impl OutputSchema {
    /// The schema of `T` (schemars, JSON Schema 2020-12, as `T` is
    /// deserialized), adjusted, named after `T`.
    pub fn of<T: JsonSchema + ?Sized>() -> Self {
        let generator = schemars::generate::SchemaSettings::draft2020_12()
            .with(|settings| settings.meta_schema = None)
            .for_deserialize()
            .into_generator();
        let schema = generator.into_root_schema_for::<T>();
        Self::adjusted(&T::schema_name(), schema.to_value())
    }

    /// A JSON schema document of yours, adjusted like a type's, named `name`
    /// (sanitised: characters outside `[a-zA-Z0-9_-]` become `_`, at most 64
    /// of them, `output` when nothing is left). An [`Error::InvalidRequest`]
    /// when `schema` is not a JSON object.
    pub fn from_value(name: &str, schema: Value) -> Result<Self> {
        if !schema.is_object() {
            return Err(Error::invalid_request(
                "schema",
                "must be a JSON schema object, e.g. {\"type\": \"object\", \"properties\": {…}}",
            ));
        }
        Ok(Self::adjusted(name, schema))
    }

    fn adjusted(name: &str, mut schema: Value) -> Self {
        if let Value::Object(map) = &mut schema {
            map.remove("$schema");
        }
        let snapshot = schema.clone();
        inline_ref_siblings(&mut schema, &snapshot, &mut Vec::new());
        let wrapped = needs_wrapper(&schema);
        if wrapped {
            schema = wrap(schema);
        }
        let mut adjust = Adjust {
            nullable: BTreeMap::new(),
            strict: true,
        };
        adjust.node(&mut schema, "");
        OutputSchema {
            name: sanitize_name(name),
            schema,
            strict: adjust.strict,
            wrapped,
            nullable: adjust.nullable,
        }
    }

    /// The name sent with the schema (`[a-zA-Z0-9_-]{1,64}`), also the
    /// function's name in the tool-call form.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The schema as sent.
    pub fn schema(&self) -> &Value {
        &self.schema
    }

    /// Whether the schema meets strict mode's rules, and is sent with
    /// `"strict": true` (false when it holds maps with arbitrary keys or
    /// values of any shape, which strict mode cannot express).
    pub fn is_strict(&self) -> bool {
        self.strict
    }

    /// `response_format` `{"type": "json_schema", "json_schema": {"name",
    /// "schema", "strict"}}`.
    pub fn response_format(&self) -> ResponseFormat {
        ResponseFormat::JsonSchema(json!({
            "name": self.name,
            "schema": self.schema,
            "strict": self.strict,
        }))
    }

    /// The function the tool-call form forces: named like the schema, the
    /// schema as its parameters.
    pub fn tool(&self) -> Tool {
        let description = self
            .schema
            .get("description")
            .or_else(|| self.schema.pointer("/properties/value/description").filter(|_| self.wrapped))
            .and_then(Value::as_str)
            .unwrap_or("Records the answer as structured data: call it with arguments matching its JSON schema.");
        Tool::function(&self.name, description, self.schema.clone())
    }

    /// Reads an answer: trims it, takes it out of one Markdown code fence
    /// (` ```json ` or ` ``` `) if it is in one, parses it as JSON, checks it
    /// against the schema, drops the `null`s of properties that were
    /// optional and unwraps a wrapped root. `Err` says what is wrong, and
    /// where (a JSON pointer into the answer).
    pub fn parse(&self, answer: &str) -> std::result::Result<Value, String> {
        let text = unfence(answer);
        if text.is_empty() {
            return Err("the answer is empty, not a JSON document".into());
        }
        let mut value: Value = serde_json::from_str(text)
            .map_err(|e| format!("the answer is not valid JSON ({e})"))?;
        let mut checker = Checker::new(&self.schema);
        if !checker.check(&self.schema, &value, "", 0) {
            return Err(format!(
                "the JSON does not match the schema: {}",
                checker.errors.join("; ")
            ));
        }
        self.tidy(&self.schema, "", &mut value, 0);
        if self.wrapped {
            value = value
                .get_mut(WRAPPER_PROPERTY)
                .map(Value::take)
                .unwrap_or_default();
        }
        Ok(value)
    }

    /// Drops the `null`s of properties that were optional before the
    /// adjustment, following the schema down the value.
    fn tidy(&self, schema: &Value, pointer: &str, value: &mut Value, hops: u32) {
        let Value::Object(map) = schema else {
            return;
        };
        if let Some(reference) = map.get("$ref").and_then(Value::as_str) {
            if let (Some(target), true) = (resolve(&self.schema, reference), hops < MAX_REF_HOPS) {
                let target_pointer = reference.trim_start_matches('#');
                self.tidy(target, target_pointer, value, hops + 1);
            }
        }
        for keyword in ["anyOf", "oneOf"] {
            if let Some(Value::Array(branches)) = map.get(keyword) {
                let fits = branches
                    .iter()
                    .position(|b| Checker::new(&self.schema).check(b, value, "", hops));
                if let Some(i) = fits {
                    self.tidy(
                        &branches[i],
                        &format!("{pointer}/{keyword}/{i}"),
                        value,
                        hops,
                    );
                }
            }
        }
        if let Some(Value::Array(branches)) = map.get("allOf") {
            for (i, branch) in branches.iter().enumerate() {
                self.tidy(branch, &format!("{pointer}/allOf/{i}"), value, hops);
            }
        }
        match value {
            Value::Object(object) => {
                if let Some(names) = self.nullable.get(pointer) {
                    for name in names {
                        if object.get(name).is_some_and(Value::is_null) {
                            object.remove(name);
                        }
                    }
                }
                let properties = map.get("properties").and_then(Value::as_object);
                for (name, item) in object.iter_mut() {
                    match properties.and_then(|p| p.get(name)) {
                        Some(property) => {
                            let at = format!("{pointer}/properties/{}", escape(name));
                            self.tidy(property, &at, item, 0);
                        }
                        None => {
                            if let Some(extra @ Value::Object(_)) = map.get("additionalProperties")
                            {
                                let at = format!("{pointer}/additionalProperties");
                                self.tidy(extra, &at, item, 0);
                            }
                        }
                    }
                }
            }
            Value::Array(items) => {
                let prefix = map.get("prefixItems").and_then(Value::as_array);
                for (i, item) in items.iter_mut().enumerate() {
                    match prefix.and_then(|p| p.get(i)) {
                        Some(schema) => {
                            self.tidy(schema, &format!("{pointer}/prefixItems/{i}"), item, 0)
                        }
                        None => {
                            if let Some(schema) = map.get("items") {
                                self.tidy(schema, &format!("{pointer}/items"), item, 0);
                            }
                        }
                    }
                }
            }
            _ => {}
        }
    }
}

/// `name` as a schema or function name: `[a-zA-Z0-9_-]{1,64}`.
fn sanitize_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        let c = if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
            c
        } else {
            '_'
        };
        if !(c == '_' && out.ends_with('_')) {
            out.push(c);
        }
    }
    let trimmed = out.trim_matches('_');
    if trimmed.is_empty() {
        return "output".into();
    }
    trimmed.chars().take(64).collect()
}

/// `~` and `/` escaped, for a JSON pointer segment.
fn escape(segment: &str) -> String {
    segment.replace('~', "~0").replace('/', "~1")
}

/// The schema a `#…` reference points at within `root`.
fn resolve<'a>(root: &'a Value, reference: &str) -> Option<&'a Value> {
    let pointer = reference.strip_prefix('#')?;
    if pointer.is_empty() {
        Some(root)
    } else {
        root.pointer(pointer)
    }
}

/// The schemas directly below a schema node, with the pointer suffix of each.
fn children_mut(map: &mut Map<String, Value>) -> Vec<(String, &mut Value)> {
    let mut children = Vec::new();
    for (key, value) in map.iter_mut() {
        match key.as_str() {
            "properties" | "$defs" | "definitions" => {
                if let Value::Object(named) = value {
                    for (name, child) in named.iter_mut() {
                        children.push((format!("/{key}/{}", escape(name)), child));
                    }
                }
            }
            "items" | "additionalProperties" if value.is_object() => {
                children.push((format!("/{key}"), value));
            }
            "prefixItems" | "anyOf" | "oneOf" | "allOf" => {
                if let Value::Array(list) = value {
                    for (i, child) in list.iter_mut().enumerate() {
                        children.push((format!("/{key}/{i}"), child));
                    }
                }
            }
            _ => {}
        }
    }
    children
}

/// Replaces every `$ref` that has sibling keywords with the schema it points
/// at, the siblings laid over it (a recursive one keeps the bare reference).
fn inline_ref_siblings(node: &mut Value, snapshot: &Value, stack: &mut Vec<String>) {
    let Value::Object(map) = node else {
        return;
    };
    let reference = map.get("$ref").and_then(Value::as_str).map(str::to_owned);
    let mut pushed = false;
    if let Some(reference) = reference.filter(|_| map.len() > 1) {
        match resolve(snapshot, &reference) {
            Some(Value::Object(target)) if !stack.contains(&reference) => {
                let mut merged = target.clone();
                for key in ["$defs", "definitions", "$schema", "$id"] {
                    merged.remove(key);
                }
                map.remove("$ref");
                merged.extend(std::mem::take(map));
                *map = merged;
                stack.push(reference);
                pushed = true;
            }
            _ => map.retain(|key, _| key == "$ref"),
        }
    }
    for (suffix, child) in children_mut(map) {
        // Inside a definition, a reference to itself is a recursion.
        let definition = (suffix.starts_with("/$defs/") || suffix.starts_with("/definitions/"))
            .then(|| format!("#{suffix}"));
        if let Some(definition) = &definition {
            stack.push(definition.clone());
        }
        inline_ref_siblings(child, snapshot, stack);
        if definition.is_some() {
            stack.pop();
        }
    }
    if pushed {
        stack.pop();
    }
}

/// Whether strict mode wants the root wrapped: it must be a plain object.
fn needs_wrapper(root: &Value) -> bool {
    let Value::Object(map) = root else {
        return true;
    };
    map.get("type") != Some(&json!("object"))
        || ["anyOf", "oneOf", "allOf", "enum", "const", "$ref"]
            .iter()
            .any(|k| map.contains_key(*k))
}

/// `{"type": "object", "properties": {"value": root}, …}`, the definitions
/// moved up so that references still resolve.
fn wrap(mut root: Value) -> Value {
    let mut wrapper = json!({
        "type": "object",
        "properties": {},
        "required": [WRAPPER_PROPERTY],
        "additionalProperties": false,
    });
    if let Value::Object(map) = &mut root {
        for key in ["$defs", "definitions"] {
            if let Some(defs) = map.remove(key) {
                wrapper[key] = defs;
            }
        }
    }
    wrapper["properties"][WRAPPER_PROPERTY] = root;
    wrapper
}

/// The types a schema node names.
fn types_of(map: &Map<String, Value>) -> Vec<&str> {
    match map.get("type") {
        Some(Value::String(t)) => vec![t.as_str()],
        Some(Value::Array(list)) => list.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    }
}

/// Whether a node constrains its value at all.
fn constrains(map: &Map<String, Value>) -> bool {
    [
        "type",
        "$ref",
        "anyOf",
        "oneOf",
        "allOf",
        "enum",
        "const",
        "properties",
        "items",
    ]
    .iter()
    .any(|k| map.contains_key(*k))
}

/// Whether `null` is a valid value for the schema (as far as can be told
/// without following references).
fn accepts_null(schema: &Value) -> bool {
    match schema {
        Value::Bool(accepts) => *accepts,
        Value::Object(map) => {
            types_of(map).contains(&"null")
                || map.get("const") == Some(&Value::Null)
                || map
                    .get("enum")
                    .and_then(Value::as_array)
                    .is_some_and(|values| values.contains(&Value::Null))
                || ["anyOf", "oneOf"].iter().any(|k| {
                    map.get(*k)
                        .and_then(Value::as_array)
                        .is_some_and(|branches| branches.iter().any(accepts_null))
                })
                || !constrains(map)
        }
        _ => false,
    }
}

/// Makes `null` a valid value of the schema.
fn make_nullable(schema: &mut Value) {
    let Value::Object(map) = schema else {
        return;
    };
    if !map.contains_key("anyOf") {
        if let Some(branches) = map.remove("oneOf") {
            map.insert("anyOf".into(), branches);
        }
    }
    if let Some(Value::Array(branches)) = map.get_mut("anyOf") {
        branches.push(json!({"type": "null"}));
        return;
    }
    let simple =
        !map.contains_key("$ref") && !map.contains_key("allOf") && !map.contains_key("const");
    let single_type = match map.get("type") {
        Some(Value::String(t)) if simple => Some(Some(t.clone())),
        Some(Value::Array(_)) if simple => Some(None),
        None if simple && map.contains_key("enum") => Some(None),
        _ => None,
    };
    match single_type {
        Some(Some(t)) => {
            map.insert("type".into(), json!([t, "null"]));
        }
        Some(None) => {
            if let Some(Value::Array(list)) = map.get_mut("type") {
                list.push(json!("null"));
            }
        }
        None => {
            let inner = std::mem::take(schema);
            *schema = json!({"anyOf": [inner, {"type": "null"}]});
            return;
        }
    }
    if let Some(Value::Array(values)) = map.get_mut("enum") {
        values.push(Value::Null);
    }
}

/// The adjustment walk: what it changed and whether the result is strict.
struct Adjust {
    nullable: BTreeMap<String, Vec<String>>,
    strict: bool,
}

impl Adjust {
    fn node(&mut self, node: &mut Value, pointer: &str) {
        let Value::Object(map) = node else {
            if *node == Value::Bool(true) {
                self.strict = false;
            }
            return;
        };
        for keyword in STRIPPED_KEYWORDS {
            map.remove(*keyword);
        }
        let known_format = map
            .get("format")
            .and_then(Value::as_str)
            .is_some_and(|f| SUPPORTED_FORMATS.contains(&f));
        if !known_format {
            map.remove("format");
        }
        if !map.contains_key("anyOf") {
            if let Some(branches) = map.remove("oneOf") {
                map.insert("anyOf".into(), branches);
            }
        }
        let is_object = types_of(map).contains(&"object")
            || (map.get("type").is_none() && map.contains_key("properties"));
        if is_object {
            self.object(map, pointer);
        }
        if !constrains(map) || map.contains_key("oneOf") || map.contains_key("allOf") {
            self.strict = false;
        }
        for (suffix, child) in children_mut(map) {
            self.node(child, &format!("{pointer}{suffix}"));
        }
    }

    fn object(&mut self, map: &mut Map<String, Value>, pointer: &str) {
        let is_map = match map.get("additionalProperties") {
            None | Some(Value::Bool(false)) => false,
            Some(Value::Object(schema)) if !schema.is_empty() => true,
            Some(_) => {
                // `true` or `{}`: any value under any key.
                map.insert("additionalProperties".into(), json!(true));
                true
            }
        };
        if is_map {
            self.strict = false;
        } else {
            map.insert("additionalProperties".into(), json!(false));
        }
        let was_required: HashSet<String> = map
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect();
        if !map.contains_key("properties") && is_map {
            return;
        }
        let properties = map
            .entry("properties")
            .or_insert_with(|| json!({}))
            .as_object_mut();
        let Some(properties) = properties else {
            return;
        };
        let mut made_nullable = Vec::new();
        for (name, property) in properties.iter_mut() {
            if !was_required.contains(name) && !accepts_null(property) {
                make_nullable(property);
                made_nullable.push(name.clone());
            }
        }
        let required: Vec<Value> = properties.keys().map(|k| json!(k)).collect();
        map.insert("required".into(), Value::Array(required));
        if !made_nullable.is_empty() {
            self.nullable.insert(pointer.to_owned(), made_nullable);
        }
    }
}

/// Checks a value against a schema, collecting what does not fit.
struct Checker<'a> {
    root: &'a Value,
    errors: Vec<String>,
}

/// Where in the answer, for a message.
fn at(path: &str) -> String {
    if path.is_empty() {
        "at the top level".into()
    } else {
        format!("at `{path}`")
    }
}

/// A value, shortly, for a message.
fn describe(value: &Value) -> String {
    match value {
        Value::Null => "null".into(),
        Value::Bool(b) => format!("boolean {b}"),
        Value::Number(n) => format!("number {n}"),
        Value::String(s) => {
            let short: String = s.chars().take(40).collect();
            let ellipsis = if short.len() < s.len() { "…" } else { "" };
            format!("string {:?}", format!("{short}{ellipsis}"))
        }
        Value::Array(_) => "an array".into(),
        Value::Object(_) => "an object".into(),
    }
}

fn type_matches(kind: &str, value: &Value) -> bool {
    match (kind, value) {
        ("null", Value::Null)
        | ("boolean", Value::Bool(_))
        | ("number", Value::Number(_))
        | ("string", Value::String(_))
        | ("array", Value::Array(_))
        | ("object", Value::Object(_)) => true,
        ("integer", Value::Number(n)) => {
            n.is_i64() || n.is_u64() || n.as_f64().is_some_and(|f| f.fract() == 0.0)
        }
        _ => false,
    }
}

/// JSON equality, numbers compared by value (`1` equals `1.0`).
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

impl<'a> Checker<'a> {
    fn new(root: &'a Value) -> Self {
        Checker {
            root,
            errors: Vec::new(),
        }
    }

    fn fail(&mut self, message: String) -> bool {
        if self.errors.len() < MAX_REPORTED {
            self.errors.push(message);
        }
        false
    }

    /// Whether `value` fits without recording why not.
    fn fits(&self, schema: &Value, value: &Value, path: &str, hops: u32) -> bool {
        Checker::new(self.root).check(schema, value, path, hops)
    }

    fn check(&mut self, schema: &Value, value: &Value, path: &str, hops: u32) -> bool {
        let map = match schema {
            Value::Object(map) => map,
            Value::Bool(false) => return self.fail(format!("no value is allowed {}", at(path))),
            _ => return true,
        };
        let mut ok = true;
        if let Some(reference) = map.get("$ref").and_then(Value::as_str) {
            if let (Some(target), true) = (resolve(self.root, reference), hops < MAX_REF_HOPS) {
                ok &= self.check(target, value, path, hops + 1);
            }
        }
        let types = types_of(map);
        if !types.is_empty() && !types.iter().any(|t| type_matches(t, value)) {
            return self.fail(format!(
                "expected {}, got {} {}",
                types.join(" or "),
                describe(value),
                at(path)
            ));
        }
        if let Some(Value::Array(allowed)) = map.get("enum") {
            if !allowed.iter().any(|a| same(a, value)) {
                let list: Vec<String> = allowed.iter().map(Value::to_string).collect();
                ok = self.fail(format!(
                    "{} is not one of {} {}",
                    describe(value),
                    list.join(", "),
                    at(path)
                ));
            }
        }
        if let Some(expected) = map.get("const") {
            if !same(expected, value) {
                ok = self.fail(format!(
                    "expected {expected}, got {} {}",
                    describe(value),
                    at(path)
                ));
            }
        }
        for keyword in ["anyOf", "oneOf"] {
            if let Some(Value::Array(branches)) = map.get(keyword) {
                if !branches.iter().any(|b| self.fits(b, value, path, hops)) {
                    let candidates: Vec<&Value> =
                        branches.iter().filter(|b| !accepts_null(b)).collect();
                    ok = match candidates.as_slice() {
                        // One real alternative (an Option of something): its own reasons.
                        [only] => self.check(only, value, path, hops),
                        _ => self.fail(format!(
                            "{} matches none of the allowed alternatives {}",
                            describe(value),
                            at(path)
                        )),
                    };
                }
            }
        }
        if let Some(Value::Array(branches)) = map.get("allOf") {
            for branch in branches {
                ok &= self.check(branch, value, path, hops);
            }
        }
        match value {
            Value::Object(object) => ok &= self.check_object(map, object, path),
            Value::Array(items) => ok &= self.check_array(map, items, path),
            Value::Number(n) => ok &= self.check_number(map, n.as_f64().unwrap_or(0.0), path),
            _ => {}
        }
        ok
    }

    fn check_object(
        &mut self,
        map: &Map<String, Value>,
        object: &Map<String, Value>,
        path: &str,
    ) -> bool {
        let mut ok = true;
        let properties = map.get("properties").and_then(Value::as_object);
        for name in map
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(name) = name.as_str() {
                if !object.contains_key(name) {
                    ok = self.fail(format!("missing required property `{name}` {}", at(path)));
                }
            }
        }
        for (name, item) in object {
            let item_path = format!("{path}/{}", escape(name));
            match (
                properties.and_then(|p| p.get(name)),
                map.get("additionalProperties"),
            ) {
                (Some(schema), _) => ok &= self.check(schema, item, &item_path, 0),
                (None, Some(Value::Bool(false))) => {
                    ok = self.fail(format!(
                        "unexpected property `{name}` {} (the schema allows no others)",
                        at(path)
                    ));
                }
                (None, Some(schema)) => ok &= self.check(schema, item, &item_path, 0),
                (None, None) => {}
            }
        }
        ok
    }

    fn check_array(&mut self, map: &Map<String, Value>, items: &[Value], path: &str) -> bool {
        let mut ok = true;
        let count = items.len() as u64;
        if let Some(min) = map.get("minItems").and_then(Value::as_u64) {
            if count < min {
                ok = self.fail(format!(
                    "{count} item(s), at least {min} expected {}",
                    at(path)
                ));
            }
        }
        if let Some(max) = map.get("maxItems").and_then(Value::as_u64) {
            if count > max {
                ok = self.fail(format!(
                    "{count} item(s), at most {max} expected {}",
                    at(path)
                ));
            }
        }
        let prefix = map.get("prefixItems").and_then(Value::as_array);
        for (i, item) in items.iter().enumerate() {
            let item_path = format!("{path}/{i}");
            if let Some(schema) = prefix.and_then(|p| p.get(i)).or_else(|| map.get("items")) {
                ok &= self.check(schema, item, &item_path, 0);
            }
        }
        ok
    }

    fn check_number(&mut self, map: &Map<String, Value>, number: f64, path: &str) -> bool {
        let bound = |name: &str| map.get(name).and_then(Value::as_f64);
        let mut ok = true;
        if let Some(min) = bound("minimum").filter(|min| number < *min) {
            ok = self.fail(format!("{number} is below the minimum {min} {}", at(path)));
        }
        if let Some(max) = bound("maximum").filter(|max| number > *max) {
            ok = self.fail(format!("{number} is above the maximum {max} {}", at(path)));
        }
        if let Some(min) = bound("exclusiveMinimum").filter(|min| number <= *min) {
            ok = self.fail(format!("{number} is not above {min} {}", at(path)));
        }
        if let Some(max) = bound("exclusiveMaximum").filter(|max| number >= *max) {
            ok = self.fail(format!("{number} is not below {max} {}", at(path)));
        }
        ok
    }
}

/// The answer inside one Markdown code fence (` ```json ` or ` ``` `), or
/// the trimmed answer when it is not fenced.
fn unfence(answer: &str) -> &str {
    let text = answer.trim();
    let Some(rest) = text.strip_prefix("```") else {
        return text;
    };
    let Some((tag, body)) = rest.split_once('\n') else {
        return text;
    };
    let tag = tag.trim();
    if !(tag.is_empty() || tag.eq_ignore_ascii_case("json")) {
        return text;
    }
    match body.trim_end().strip_suffix("```") {
        Some(inner) => inner.trim(),
        None => text,
    }
}

/// How the schema went to the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ExtractionMode {
    /// As `response_format` `{"type": "json_schema", …}`; the answer is the
    /// message's content.
    JsonSchema,
    /// As the parameters of a function the model was made to call
    /// (`tools` + `tool_choice`), because the server refused `json_schema`;
    /// the answer is the call's arguments.
    ToolCall,
}

/// The outcome of [`EvolutionInference::extract_with_schema`]: the value,
/// and how it was obtained.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Extracted<T> {
    /// The answer, valid against the schema.
    pub value: T,
    /// How the last request carried the schema.
    pub mode: ExtractionMode,
    /// How many answers were read: 1, or 2 when the repair round was needed.
    pub attempts: u32,
    /// Token counts summed over the calls, when the server reported them.
    pub usage: Option<Usage>,
    /// The last reply as it came.
    pub response: ChatResponse,
}

/// Whether an error is a server's refusal of `json_schema` itself: a `400`
/// (or `422`) whose message or code names `response_format` or
/// `json_schema`, unless the message places the complaint inside the schema
/// ([`ABOUT_CONTENT`]).
///
/// What OpenAI-compatible servers that do not know `json_schema` say, all
/// refusals: OpenAI's `'response_format' of type 'json_schema' is not
/// supported with this model`; llama.cpp's `response_format type must be
/// one of "text" or "json_object"`; text-generation-inference's `422`
/// `response_format: unknown variant `json_schema``; vLLM's validation
/// error located at `('body', 'response_format', 'type')`. A complaint
/// about the schema's content is not a refusal (OpenAI's `Invalid schema
/// for response_format …`, `unsupported keyword`, xgrammar's `features not
/// supported`, a required field missing inside the `json_schema`): another
/// schema may well be accepted, so the model is not switched to the tool
/// form for the life of the client over one schema, and the error is
/// returned as it came.
fn refuses_json_schema(error: &Error) -> bool {
    let names_it = |text: &str| {
        let text = text.to_ascii_lowercase();
        ["response_format", "response format", "json_schema"]
            .iter()
            .any(|name| text.contains(name))
    };
    let about_content = |text: &str| {
        let text = text.to_ascii_lowercase();
        ABOUT_CONTENT.iter().any(|word| text.contains(word))
    };
    match error {
        Error::Api {
            status: 400 | 422,
            message,
            code,
            ..
        } => {
            (names_it(message) || code.as_deref().is_some_and(names_it)) && !about_content(message)
        }
        _ => false,
    }
}

/// Words of a complaint about what is in a schema rather than about
/// `json_schema` itself.
const ABOUT_CONTENT: [&str; 4] = ["invalid schema", "keyword", "feature", "required"];

/// A call's own `response_format`, `tools` or `tool_choice`: extraction sets
/// them itself.
fn reject_conflicts(options: &ChatOptions) -> Result<()> {
    let conflict = if options.response_format.is_some() {
        Some("response_format")
    } else if options
        .tools
        .as_ref()
        .is_some_and(|tools| !tools.is_empty())
    {
        Some("tools")
    } else if options.tool_choice.is_some() {
        Some("tool_choice")
    } else {
        None
    };
    match conflict {
        Some(field) => Err(Error::invalid_request(
            field,
            "is set by extraction itself (the schema goes as response_format, or as a forced \
             tool call): leave it unset in the call's options",
        )),
        None => Ok(()),
    }
}

impl ExtractionMode {
    /// Sets the schema into `options` the way this mode sends it, clearing
    /// the other mode's fields: done once per mode, so the schema is copied
    /// into the options once per call (twice after a refusal), not once per
    /// request.
    fn apply(self, options: &mut ChatOptions, schema: &OutputSchema) {
        match self {
            ExtractionMode::JsonSchema => {
                options.response_format = Some(schema.response_format());
                options.tools = None;
                options.tool_choice = None;
            }
            ExtractionMode::ToolCall => {
                options.response_format = None;
                options.tools = Some(vec![schema.tool()]);
                options.tool_choice = Some(ToolChoice::Function(schema.name().to_owned()));
            }
        }
    }
}

/// What the model answered, in a mode: the text to parse and, in the tool
/// form, the call it made.
fn answer_of(
    mode: ExtractionMode,
    response: &ChatResponse,
    name: &str,
) -> (String, Option<ToolCall>) {
    if mode == ExtractionMode::ToolCall {
        if let Some(call) = response
            .tool_calls()
            .iter()
            .find(|c| c.function.name == name)
        {
            return (call.function.arguments.clone(), Some(call.clone()));
        }
    }
    (response.content().to_owned(), None)
}

/// The messages of the repair round: the model's answer as it was, and what
/// is wrong with it.
///
/// In the tool form, a call of the function goes back as that call with the
/// error as its result, and the user asks for the call again; a reply that
/// did not call it goes back as its text, and the user asks for the call
/// (`tool_choice` still forces it, so asking for a bare JSON document would
/// contradict the request). An answer with no text is not sent back as an
/// empty assistant message, which some servers refuse.
fn repair_messages(
    mode: ExtractionMode,
    response: &ChatResponse,
    call: Option<ToolCall>,
    raw: &str,
    schema: &OutputSchema,
    reason: &str,
) -> Vec<ChatMessage> {
    let schema_text = schema.schema().to_string();
    let name = schema.name();
    let said = (!raw.trim().is_empty()).then(|| ChatMessage::assistant(raw));
    match (mode, call) {
        (ExtractionMode::ToolCall, Some(mut call)) => {
            if call.id.is_empty() {
                call.id = "call_extract".into();
            }
            let id = call.id.clone();
            let content = response
                .choices
                .first()
                .and_then(|c| c.message.content.clone());
            vec![
                ChatMessage::assistant_tool_calls(
                    content.filter(|c| !c.trim().is_empty()),
                    vec![call],
                ),
                ChatMessage::tool(id, format!("Error: {reason}.")),
                ChatMessage::user(format!(
                    "Those arguments could not be used: {reason}. Call the function `{name}` again \
                     with arguments that are one JSON object matching its JSON schema: {schema_text}"
                )),
            ]
        }
        (ExtractionMode::ToolCall, None) => said
            .into_iter()
            .chain([ChatMessage::user(format!(
                "Your reply could not be used: {reason}. Call the function `{name}` now, with \
                 arguments that are one JSON object matching its JSON schema: {schema_text}"
            ))])
            .collect(),
        (ExtractionMode::JsonSchema, _) => said
            .into_iter()
            .chain([ChatMessage::user(format!(
                "Your answer could not be used: {reason}. Answer again with only a JSON document \
                 (no prose, no code fences) matching this JSON schema: {schema_text}"
            ))])
            .collect(),
    }
}

impl EvolutionInference {
    /// Asks for an answer of type `T` and returns it: `T`'s JSON schema
    /// (schemars) goes as a strict `response_format` `json_schema` (or as a
    /// forced tool call where the server refuses that), and the answer is
    /// parsed, checked against the schema and deserialized. An answer that
    /// does not parse or fit gets one repair round; then
    /// [`Error::Extraction`] carries the raw answer and the reason. See
    /// [`OutputSchema`] for how the schema is adjusted and the answer read.
    ///
    /// Where the server answers `json_schema` with a `400` (or `422`) whose
    /// message or code says that `json_schema`, or the `response_format`
    /// type, is not supported (not allowed, unknown, not a valid type), the
    /// same schema is sent as a forced call of one function (`tools` with
    /// that function, `tool_choice` naming it) and its arguments are the
    /// answer; a complaint about the schema's content (a keyword the server
    /// cannot honour) is returned as the [`Error::Api`] it is, and changes
    /// nothing for later calls. A refusal is remembered for the model by
    /// this client and its clones, so later calls go straight to the tool
    /// form (one request, no refusal first). The repair round applies in
    /// both forms.
    ///
    /// `options` may not set `response_format`, `tools` or `tool_choice`
    /// (an [`Error::InvalidRequest`] naming the field): extraction sets them.
    /// The client's own defaults for those three are not sent; everything
    /// else (model, temperature, `max_tokens`, …) applies as in
    /// [`chat`](Self::chat). Nothing is added to the conversation: say in it
    /// what to extract. A reasoning model's thinking is never parsed.
    ///
    /// `T` needs `schemars::JsonSchema` (schemars 1.x, re-exported as
    /// [`crate::schemars`]) and `serde::Deserialize`.
    ///
    /// ```
    /// use evolution_langchain::{ChatMessage, ChatOptions, EvolutionInference};
    /// use schemars::JsonSchema;
    /// use serde::Deserialize;
    ///
    /// /// A city, as the model saw it.
    /// #[derive(Debug, Deserialize, JsonSchema)]
    /// struct City {
    ///     name: String,
    ///     /// Inhabitants, when known.
    ///     population: Option<u64>,
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let emulator = evolution_emulator::Emulator::start().await?;
    /// let llm = EvolutionInference::builder()
    /// #   .key_id(emulator.key_id()).secret(emulator.secret())
    /// #   .base_url(emulator.base_url()).auth_url(emulator.auth_url())
    ///     .build()?; // or EvolutionInference::from_env()
    /// let city: City = llm
    ///     .extract(
    ///         &[ChatMessage::system("Extract the city."), ChatMessage::user("name: Paris")],
    ///         &ChatOptions::new().temperature(0.0),
    ///     )
    ///     .await?;
    /// assert_eq!(city.name, "Paris"); // the emulator fills what the prompt names
    /// assert_eq!(city.population, None);
    /// # Ok(()) }
    /// ```
    pub async fn extract<T>(
        &self,
        messages: impl AsRef<[ChatMessage]>,
        options: impl Borrow<ChatOptions>,
    ) -> Result<T>
    where
        T: JsonSchema + DeserializeOwned,
    {
        let schema = OutputSchema::of::<T>();
        let name = schema.name().to_owned();
        let extracted = self
            .run_extraction(messages.as_ref(), options.borrow(), &schema, |value| {
                serde_json::from_value::<T>(value)
                    .map_err(|e| format!("the JSON does not fit `{name}`: {e}"))
            })
            .await?;
        Ok(extracted.value)
    }

    /// [`extract`](Self::extract) for one user message, with the client's
    /// options.
    pub async fn extract_prompt<T>(&self, prompt: &str) -> Result<T>
    where
        T: JsonSchema + DeserializeOwned,
    {
        self.extract(&[ChatMessage::user(prompt)], &ChatOptions::default())
            .await
    }

    /// [`extract`](Self::extract) for a schema that is a document, not a
    /// type (e.g. a `--schema FILE.json`): the answer as JSON, valid against
    /// the adjusted schema (the `null`s of properties the document made
    /// optional dropped), with how it was obtained and the tokens it took.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let emulator = evolution_emulator::Emulator::start().await?;
    /// use evolution_langchain::{ChatMessage, ChatOptions, EvolutionInference, OutputSchema};
    /// use serde_json::json;
    ///
    /// let llm = EvolutionInference::builder()
    /// #   .key_id(emulator.key_id()).secret(emulator.secret())
    /// #   .base_url(emulator.base_url()).auth_url(emulator.auth_url())
    ///     .build()?;
    /// let schema = OutputSchema::from_value(
    ///     "ticket",
    ///     json!({"type": "object", "properties": {
    ///         "title": {"type": "string"},
    ///         "priority": {"enum": ["low", "high"]}
    ///     }, "required": ["title", "priority"]}),
    /// )?;
    /// let ticket = llm
    ///     .extract_with_schema(
    ///         &[ChatMessage::user("title: Printer on fire, priority: high")],
    ///         &ChatOptions::default(),
    ///         &schema,
    ///     )
    ///     .await?;
    /// assert_eq!(ticket.value, json!({"title": "Printer on fire", "priority": "high"}));
    /// assert_eq!(ticket.attempts, 1);
    /// # Ok(()) }
    /// ```
    pub async fn extract_with_schema(
        &self,
        messages: impl AsRef<[ChatMessage]>,
        options: impl Borrow<ChatOptions>,
        schema: &OutputSchema,
    ) -> Result<Extracted<Value>> {
        self.run_extraction(messages.as_ref(), options.borrow(), schema, Ok)
            .await
    }

    /// Whether the server refused `json_schema` for `model` before.
    fn refused_json_schema(&self, model: &str) -> bool {
        self.transport
            .json_schema_refused
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(model)
    }

    fn remember_json_schema_refusal(&self, model: &str) {
        self.transport
            .json_schema_refused
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(model.to_owned());
    }

    /// The one extraction path: send, read, repair once, convert.
    ///
    /// Requests are written from borrowed parts, as [`chat`](Self::chat)'s
    /// are: the caller's conversation as it is (a copy is made only for the
    /// repair round, which adds to it) and the merged options, into which
    /// the schema is set once per mode.
    async fn run_extraction<R>(
        &self,
        messages: &[ChatMessage],
        options: &ChatOptions,
        schema: &OutputSchema,
        convert: impl Fn(Value) -> std::result::Result<R, String>,
    ) -> Result<Extracted<R>> {
        reject_conflicts(options)?;
        let mut options = self.options.overlay(options);
        let model = options.model_name().to_owned();
        let mut mode = if self.refused_json_schema(&model) {
            ExtractionMode::ToolCall
        } else {
            ExtractionMode::JsonSchema
        };
        // Also drops the client's own response_format, tools and tool_choice.
        mode.apply(&mut options, schema);
        let stream = options.is_streaming();
        let mut conversation = Cow::Borrowed(messages);
        let mut usage: Option<Usage> = None;
        let mut attempts = 0;
        loop {
            let body = RequestBody::new(&conversation, &options, stream);
            let response = match self.send_body(body).await {
                Ok(response) => response,
                Err(error) if mode == ExtractionMode::JsonSchema && refuses_json_schema(&error) => {
                    tracing::info!(
                        model = %model,
                        %error,
                        "the server refuses response_format json_schema: extracting through a forced tool call from now on"
                    );
                    self.remember_json_schema_refusal(&model);
                    mode = ExtractionMode::ToolCall;
                    mode.apply(&mut options, schema);
                    continue;
                }
                Err(error) => return Err(error),
            };
            attempts += 1;
            if let Some(more) = response.usage {
                *usage.get_or_insert_with(Usage::default) += more;
            }
            let (raw, call) = answer_of(mode, &response, schema.name());
            let outcome = if mode == ExtractionMode::ToolCall && call.is_none() {
                Err(format!(
                    "the model did not call the function `{}` it was asked to call",
                    schema.name()
                ))
            } else {
                schema.parse(&raw).and_then(&convert)
            };
            let reason = match outcome {
                Ok(value) => {
                    return Ok(Extracted {
                        value,
                        mode,
                        attempts,
                        usage,
                        response,
                    })
                }
                Err(reason) if response.finish_reason() == Some("length") => {
                    format!("{reason} (the answer was cut at max_tokens: finish_reason \"length\")")
                }
                Err(reason) => reason,
            };
            tracing::debug!(schema = schema.name(), attempts, %reason, "the answer does not fit the schema");
            if attempts >= 2 {
                return Err(Error::Extraction {
                    schema: schema.name().to_owned(),
                    reason,
                    raw,
                    attempts,
                });
            }
            conversation.to_mut().extend(repair_messages(
                mode, &response, call, &raw, schema, &reason,
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_sanitised() {
        assert_eq!(sanitize_name("Person"), "Person");
        assert_eq!(sanitize_name("Wrapper<Vec<u8>>"), "Wrapper_Vec_u8");
        assert_eq!(sanitize_name("météo du jour"), "m_t_o_du_jour");
        assert_eq!(sanitize_name("<>"), "output");
        assert_eq!(sanitize_name(&"x".repeat(100)).len(), 64);
    }

    #[test]
    fn fences_and_whitespace_are_tolerated_nothing_looser() {
        assert_eq!(unfence("  {\"a\":1}\n"), "{\"a\":1}");
        assert_eq!(unfence("```json\n{\"a\":1}\n```"), "{\"a\":1}");
        assert_eq!(unfence("```JSON\n{\"a\":1}```  "), "{\"a\":1}");
        assert_eq!(unfence("```\n[1]\n```"), "[1]");
        // Prose around the JSON, or another language's fence, is not unwrapped.
        assert_eq!(unfence("Here: {\"a\":1}"), "Here: {\"a\":1}");
        assert_eq!(unfence("```python\n{}\n```"), "```python\n{}\n```");
        assert_eq!(unfence("```json\n{\"a\":1}"), "```json\n{\"a\":1}");
    }

    #[test]
    fn refusals_are_recognised() {
        let api = |status, message: &str, code: Option<&str>| Error::Api {
            status,
            message: message.into(),
            error_type: None,
            code: code.map(Into::into),
            request_id: None,
        };
        assert!(refuses_json_schema(&api(
            400,
            "response_format json_schema is not supported",
            None
        )));
        assert!(refuses_json_schema(&api(
            422,
            "[{\"loc\":[\"body\",\"response_format\"]}]",
            None
        )));
        assert!(refuses_json_schema(&api(
            400,
            "bad",
            Some("unsupported_json_schema")
        )));
        assert!(!refuses_json_schema(&api(
            400,
            "max_tokens is too large",
            None
        )));
        assert!(!refuses_json_schema(&api(404, "response_format", None)));

        // What servers that do not know json_schema say.
        for message in [
            // OpenAI
            "Invalid parameter: 'response_format' of type 'json_schema' is not supported with this model.",
            // llama.cpp before structured output
            "response_format type must be one of \"text\" or \"json_object\", but got: json_schema",
            // vLLM before structured output: the validation error, as a dict and as pydantic's text
            "1 validation error: {'type': 'literal_error', 'loc': ('body', 'response_format', 'type'), \
             'msg': \"Input should be 'text' or 'json_object'\", 'input': 'json_schema'}",
            "1 validation error for ChatCompletionRequest\nresponse_format.type\n  Input should be 'text' \
             or 'json_object' [type=literal_error, input_value='json_schema', input_type=str]",
            "response_format\n  Input tag 'json_schema' found using 'type' does not match any of the \
             expected tags: 'text', 'json_object'",
            // Others
            "This model does not support response_format json_schema",
            "Unsupported parameter: 'response_format'",
            "json_schema is not yet supported",
            "invalid type for response_format: json_schema",
        ] {
            assert!(refuses_json_schema(&api(400, message, None)), "{message}");
        }
        // text-generation-inference: a 422 from its JSON body extractor.
        assert!(refuses_json_schema(&api(
            422,
            "Failed to deserialize the JSON body into the target type: response_format: unknown variant \
             `json_schema`, expected one of `json`, `regex`, `json_object` at line 1 column 98",
            None
        )));
        assert!(refuses_json_schema(&api(
            400,
            "bad request",
            Some("response_format_not_supported")
        )));

        // Complaints about the schema's content: another schema may pass.
        for message in [
            // OpenAI's strict-mode checks, and the emulator's
            "Invalid schema for response_format 'Person': In context=(), 'minLength' is not permitted.",
            "Invalid schema for response_format 'ticket': In context=(), 'additionalProperties' is \
             required to be supplied and to be false.",
            // vLLM's grammar backends
            "The provided JSON schema contains features not supported by xgrammar.",
            "Failed to transform json schema into a grammar: unsupported keyword",
            // Others
            "schema uses an unsupported keyword 'patternProperties'",
            "response_format.json_schema.schema uses an unsupported keyword 'patternProperties'",
            "1 validation error: {'type': 'missing', 'loc': ('body', 'response_format', 'json_schema', \
             'name'), 'msg': 'Field required'}",
            "response_format: unsupported keyword `patternProperties` in the schema",
        ] {
            assert!(!refuses_json_schema(&api(400, message, None)), "{message}");
        }
        assert!(!refuses_json_schema(&api(
            400,
            "Invalid schema for response_format 'x'",
            Some("invalid_request")
        )));
    }

    #[test]
    fn the_checker_names_where_and_what() {
        let schema = OutputSchema::from_value(
            "t",
            json!({"type": "object", "properties": {
                "n": {"type": "integer", "minimum": 1},
                "tags": {"type": "array", "items": {"enum": ["a", "b"]}, "maxItems": 2},
                "inner": {"type": "object", "properties": {"x": {"type": "number"}}, "required": ["x"]}
            }, "required": ["n", "tags", "inner"]}),
        )
        .unwrap();
        let ok = schema.parse(r#"{"n": 2, "tags": ["a"], "inner": {"x": 1.5}}"#);
        assert_eq!(ok, Ok(json!({"n": 2, "tags": ["a"], "inner": {"x": 1.5}})));
        let bad = schema
            .parse(r#"{"n": 0, "tags": ["c"], "inner": {"x": "1"}}"#)
            .unwrap_err();
        assert!(bad.contains("0 is below the minimum 1 at `/n`"), "{bad}");
        assert!(
            bad.contains("string \"c\" is not one of \"a\", \"b\" at `/tags/0`"),
            "{bad}"
        );
        assert!(
            bad.contains("expected number, got string \"1\" at `/inner/x`"),
            "{bad}"
        );
        let missing = schema.parse(r#"{"tags": [], "inner": {}}"#).unwrap_err();
        assert!(
            missing.contains("missing required property `n` at the top level"),
            "{missing}"
        );
        let extra = schema
            .parse(r#"{"n": 1, "tags": [], "inner": {"x": 1}, "more": 1}"#)
            .unwrap_err();
        assert!(extra.contains("unexpected property `more`"), "{extra}");
        assert!(schema
            .parse("not json")
            .unwrap_err()
            .starts_with("the answer is not valid JSON"));
        assert!(schema.parse("  ").unwrap_err().contains("empty"));
    }
}
