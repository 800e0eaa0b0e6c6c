//! Structured output for the scripted responder: a JSON document that fits a JSON schema,
//! built deterministically from the schema and the prompt (for `response_format`
//! `json_schema` and for forced tool calls), and the strict-mode rules OpenAI-compatible
//! servers check before they accept a schema. Pure logic, no I/O.

use serde_json::{json, Map, Value};

/// How deep the generator follows nested schemas (`$ref` hops included) before it answers
/// `null`: recursive types end there.
const MAX_DEPTH: usize = 16;

/// What a string with one of these formats is filled with.
const FORMAT_SAMPLES: &[(&str, &str)] = &[
    ("date-time", "2024-01-01T00:00:00Z"),
    ("date", "2024-01-01"),
    ("time", "00:00:00"),
    ("duration", "P1D"),
    ("email", "user@example.com"),
    ("hostname", "example.com"),
    ("ipv4", "127.0.0.1"),
    ("ipv6", "::1"),
    ("uuid", "00000000-0000-0000-0000-000000000000"),
    ("uri", "https://example.com/"),
];

/// Builds documents for one request's schema.
///
/// The rules, applied from the outside in:
/// - `$ref` (`#/…` pointers into the schema) is followed; `const` gives its value;
/// - a property the prompt mentions as `name: value` (or `name = value`, the name
///   matched as a whole word, case-insensitively, in the user messages from the last
///   one back; the value runs to the next `,`, `;` or line end) takes that value, parsed
///   for its type;
/// - `enum`: the mentioned value when it is one of them, else the first;
/// - a nullable property (`"type": [.., "null"]`, an `anyOf` branch or an `enum`
///   value that is `null`) the prompt does not mention is `null`;
/// - otherwise by type: strings are the property's name (a sample for known `format`s,
///   `"value"` without a name), integers and numbers 1 (moved into
///   `minimum`/`maximum`), booleans `true`, arrays hold one item (`minItems` many when
///   more are required, none when `maxItems` is 0), objects every property in
///   `properties`; `anyOf`/`oneOf` take their first non-null branch, `allOf` merges its
///   branches' properties.
pub(crate) struct Filler<'a> {
    root: &'a Value,
    /// The text of the user messages, newest first.
    prompts: Vec<&'a str>,
}

impl<'a> Filler<'a> {
    /// A filler for `root` (the schema `$ref`s point into) and the conversation's user
    /// messages, newest first.
    pub fn new(root: &'a Value, prompts: Vec<&'a str>) -> Self {
        Filler { root, prompts }
    }

    /// The document for the whole schema.
    pub fn document(&self) -> Value {
        self.value(self.root, None, 0)
    }

    /// The document with the first required property left out (or, when the document is
    /// not an object with properties, a string): JSON that does not fit the schema, as a
    /// model ignoring it would write.
    pub fn off_schema(&self) -> Value {
        let mut document = self.document();
        let required = self.resolve(self.root).and_then(|s| s.get("required"));
        match document.as_object_mut() {
            Some(object) if !object.is_empty() => {
                let first_required = required
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .find(|name| object.contains_key(*name))
                    .map(str::to_owned);
                let key = first_required
                    .or_else(|| object.keys().min().cloned())
                    .unwrap_or_default();
                object.remove(&key);
                document
            }
            _ => json!("off-schema"),
        }
    }

    /// The schema a `$ref` node points at (the node itself when it is no reference).
    fn resolve<'s>(&'s self, schema: &'s Value) -> Option<&'s Value> {
        let mut node = schema;
        for _ in 0..MAX_DEPTH {
            match node.get("$ref").and_then(Value::as_str) {
                Some(reference) => node = self.pointer(reference)?,
                None => return Some(node),
            }
        }
        None
    }

    fn pointer(&self, reference: &str) -> Option<&'a Value> {
        let pointer = reference.strip_prefix('#')?;
        if pointer.is_empty() {
            Some(self.root)
        } else {
            self.root.pointer(pointer)
        }
    }

    /// What the prompt says about property `key`, if anything.
    fn mention(&self, key: &str) -> Option<String> {
        self.prompts
            .iter()
            .find_map(|prompt| mention_in(prompt, key))
    }

    fn value(&self, schema: &Value, key: Option<&str>, depth: usize) -> Value {
        let name_or = |fallback: &str| json!(key.unwrap_or(fallback));
        if depth > MAX_DEPTH {
            return Value::Null;
        }
        let Some(node) = schema.as_object() else {
            // `true` (anything) or `false` (nothing fits): a string is as good as any.
            return name_or("value");
        };
        if let Some(reference) = node.get("$ref").and_then(Value::as_str) {
            return match self.pointer(reference) {
                Some(target) => self.value(target, key, depth + 1),
                None => name_or("value"),
            };
        }
        if let Some(value) = node.get("const") {
            return value.clone();
        }
        let mention = key.and_then(|k| self.mention(k));
        // A property without a mention has nothing to say where null is allowed.
        let silent = key.is_some() && mention.is_none();

        if let Some(Value::Array(values)) = node.get("enum") {
            if let Some(said) = &mention {
                if let Some(found) = values.iter().find(|v| matches_mention(v, said)) {
                    return found.clone();
                }
            }
            if silent && values.iter().any(Value::is_null) {
                return Value::Null;
            }
            return values
                .iter()
                .find(|v| !v.is_null())
                .or(values.first())
                .cloned()
                .unwrap_or(Value::Null);
        }
        for keyword in ["anyOf", "oneOf"] {
            if let Some(Value::Array(branches)) = node.get(keyword) {
                let is_null = |b: &&Value| {
                    b.get("type") == Some(&json!("null")) || b.get("const") == Some(&Value::Null)
                };
                if silent && branches.iter().any(|b| is_null(&b)) {
                    return Value::Null;
                }
                return match branches.iter().find(|b| !is_null(b)) {
                    Some(branch) => self.value(branch, key, depth + 1),
                    None => Value::Null,
                };
            }
        }
        if let Some(Value::Array(branches)) = node.get("allOf") {
            let merged = self.merge_all_of(node, branches);
            return self.value(&merged, key, depth + 1);
        }

        let types: Vec<&str> = match node.get("type") {
            Some(Value::String(t)) => vec![t.as_str()],
            Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        if silent && types.contains(&"null") {
            return Value::Null;
        }
        let kind = types.iter().copied().find(|t| *t != "null").unwrap_or(
            if node.contains_key("properties") {
                "object"
            } else if node.contains_key("items") {
                "array"
            } else if types.contains(&"null") {
                "null"
            } else {
                "string"
            },
        );
        match kind {
            "object" => {
                let mut object = Map::new();
                if let Some(Value::Object(properties)) = node.get("properties") {
                    for (name, property) in properties {
                        object.insert(name.clone(), self.value(property, Some(name), depth + 1));
                    }
                }
                Value::Object(object)
            }
            "array" => {
                let min = node.get("minItems").and_then(Value::as_u64).unwrap_or(1);
                let max = node
                    .get("maxItems")
                    .and_then(Value::as_u64)
                    .unwrap_or(u64::MAX);
                let count = min.max(1).min(max).min(64);
                let prefix = node.get("prefixItems").and_then(Value::as_array);
                let items = node.get("items").filter(|i| i.is_object());
                (0..count)
                    .map(|i| {
                        let schema = prefix
                            .and_then(|p| p.get(i as usize))
                            .or(items)
                            .unwrap_or(&Value::Bool(true));
                        self.value(schema, key, depth + 1)
                    })
                    .collect()
            }
            "string" => {
                if let Some(said) = mention {
                    return json!(said);
                }
                let format = node.get("format").and_then(Value::as_str);
                match FORMAT_SAMPLES.iter().find(|(f, _)| Some(*f) == format) {
                    Some((_, sample)) => json!(sample),
                    None => name_or("value"),
                }
            }
            "integer" | "number" => number(node, kind == "integer", mention.as_deref()),
            "boolean" => match mention.as_deref().map(str::to_ascii_lowercase).as_deref() {
                Some("false" | "no" | "0") => json!(false),
                _ => json!(true),
            },
            _ => Value::Null,
        }
    }

    /// One object schema with the properties of every `allOf` branch (and the node's own).
    fn merge_all_of(&self, node: &Map<String, Value>, branches: &[Value]) -> Value {
        let mut properties = Map::new();
        for branch in branches {
            if let Some(Value::Object(props)) =
                self.resolve(branch).and_then(|b| b.get("properties"))
            {
                properties.extend(props.clone());
            }
        }
        if let Some(Value::Object(props)) = node.get("properties") {
            properties.extend(props.clone());
        }
        if properties.is_empty() {
            return branches.first().cloned().unwrap_or(Value::Bool(true));
        }
        json!({"type": "object", "properties": properties})
    }
}

/// A number within the node's bounds: the mentioned one when it parses, else 1.
fn number(node: &Map<String, Value>, integer: bool, mention: Option<&str>) -> Value {
    let said = mention.and_then(|m| m.trim().parse::<f64>().ok().filter(|f| f.is_finite()));
    let mut value = said.unwrap_or(1.0);
    if integer {
        value = value.trunc();
    }
    let bound = |name: &str| node.get(name).and_then(Value::as_f64);
    let step = if integer { 1.0 } else { 0.5 };
    if let Some(min) = bound("minimum") {
        value = value.max(min);
    }
    if let Some(min) = bound("exclusiveMinimum") {
        if value <= min {
            value = if integer {
                min.floor() + 1.0
            } else {
                min + step
            };
        }
    }
    if let Some(max) = bound("maximum") {
        value = value.min(max);
    }
    if let Some(max) = bound("exclusiveMaximum") {
        if value >= max {
            value = if integer {
                max.ceil() - 1.0
            } else {
                max - step
            };
        }
    }
    if value.fract() == 0.0 && value.abs() < 9.0e15 {
        json!(value as i64)
    } else {
        serde_json::Number::from_f64(value).map_or(Value::Null, Value::Number)
    }
}

/// Whether an `enum` value is what the prompt said.
fn matches_mention(value: &Value, said: &str) -> bool {
    match value {
        Value::String(s) => s.eq_ignore_ascii_case(said),
        Value::Number(n) => said.trim().parse::<f64>().ok() == n.as_f64(),
        Value::Bool(b) => said
            .trim()
            .eq_ignore_ascii_case(if *b { "true" } else { "false" }),
        _ => false,
    }
}

fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// The value given to `key` in `text` as `key: value` or `key = value`: `key` a whole
/// word (case-insensitive), the value up to the next `,`, `;` or line end, trimmed, without
/// a trailing `.` or surrounding quotes; `None` when it is not there or empty.
pub(crate) fn mention_in(text: &str, key: &str) -> Option<String> {
    if key.is_empty() {
        return None;
    }
    let lower = text.to_ascii_lowercase();
    let key = key.to_ascii_lowercase();
    for (at, _) in lower.match_indices(&key) {
        let before_ok = lower[..at]
            .chars()
            .next_back()
            .is_none_or(|c| !is_word_char(c));
        let rest = &text[at + key.len()..];
        if !before_ok || rest.chars().next().is_some_and(is_word_char) {
            continue;
        }
        let rest = rest.trim_start_matches([' ', '\t']);
        let Some(rest) = rest.strip_prefix([':', '=']) else {
            continue;
        };
        let end = rest.find([',', ';', '\n']).unwrap_or(rest.len());
        let value = rest[..end].split_whitespace().collect::<Vec<_>>().join(" ");
        let value = value.strip_suffix('.').unwrap_or(&value);
        let value = value.trim_matches(|c| c == '"' || c == '\'').trim();
        if !value.is_empty() {
            return Some(value.to_owned());
        }
    }
    None
}

/// Checks OpenAI's strict-mode rules on a `json_schema` (or strict tool) schema: every
/// object with `properties` says `additionalProperties: false` and lists every property
/// in `required`. The message says where, as OpenAI's does.
pub(crate) fn check_strict(name: &str, schema: &Value) -> Result<(), String> {
    let mut path = Vec::new();
    strict_node(schema, &mut path).map_err(|(path, problem)| {
        format!("Invalid schema for response_format '{name}': In context=({path}), {problem}")
    })
}

fn strict_node(node: &Value, path: &mut Vec<String>) -> Result<(), (String, String)> {
    let Some(map) = node.as_object() else {
        return Ok(());
    };
    let context = |path: &[String]| {
        path.iter()
            .map(|p| format!("'{p}'"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    if let Some(Value::Object(properties)) = map.get("properties") {
        if map.get("additionalProperties") != Some(&Value::Bool(false)) {
            return Err((
                context(path),
                "'additionalProperties' is required to be supplied and to be false.".into(),
            ));
        }
        let required: Vec<&str> = map
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        if let Some(missing) = properties.keys().find(|k| !required.contains(&k.as_str())) {
            return Err((
                context(path),
                format!(
                    "'required' is required to be supplied and to be an array including every \
                     key in properties. Missing '{missing}'."
                ),
            ));
        }
        for (key, property) in properties {
            path.extend(["properties".to_owned(), key.clone()]);
            strict_node(property, path)?;
            path.truncate(path.len() - 2);
        }
    }
    for keyword in ["$defs", "definitions"] {
        if let Some(Value::Object(defs)) = map.get(keyword) {
            for (key, def) in defs {
                path.extend([keyword.to_owned(), key.clone()]);
                strict_node(def, path)?;
                path.truncate(path.len() - 2);
            }
        }
    }
    for keyword in ["anyOf", "oneOf", "allOf", "prefixItems"] {
        if let Some(Value::Array(branches)) = map.get(keyword) {
            for (i, branch) in branches.iter().enumerate() {
                path.extend([keyword.to_owned(), i.to_string()]);
                strict_node(branch, path)?;
                path.truncate(path.len() - 2);
            }
        }
    }
    for keyword in ["items", "additionalProperties"] {
        if let Some(child @ Value::Object(_)) = map.get(keyword) {
            path.push(keyword.to_owned());
            strict_node(child, path)?;
            path.pop();
        }
    }
    Ok(())
}

/// Whether `name` is a valid `json_schema` name: `[a-zA-Z0-9_-]{1,64}`.
pub(crate) fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fill(schema: Value, prompt: &str) -> Value {
        Filler::new(&schema, vec![prompt]).document()
    }

    #[test]
    fn mentions_are_found_as_whole_words() {
        assert_eq!(
            mention_in("name: Ada Lovelace, city = London.", "name").as_deref(),
            Some("Ada Lovelace")
        );
        assert_eq!(
            mention_in("name: Ada, city = London.", "city").as_deref(),
            Some("London")
        );
        assert_eq!(mention_in("surname: X", "name"), None);
        assert_eq!(mention_in("the name is X", "name"), None);
        assert_eq!(mention_in("Age: 37; x", "age").as_deref(), Some("37"));
        assert_eq!(
            mention_in("title: \"Dune\"", "title").as_deref(),
            Some("Dune")
        );
        assert_eq!(mention_in("name:   ,", "name"), None);
    }

    #[test]
    fn documents_follow_the_schema() {
        let schema = json!({
            "type": "object",
            "properties": {
                "name": {"type": "string"},
                "age": {"type": "integer", "minimum": 18},
                "score": {"type": "number"},
                "ok": {"type": "boolean"},
                "nick": {"type": ["string", "null"]},
                "tags": {"type": "array", "items": {"type": "string"}},
                "kind": {"type": "string", "enum": ["a", "b"]},
                "home": {"$ref": "#/$defs/Address"},
                "work": {"anyOf": [{"$ref": "#/$defs/Address"}, {"type": "null"}]},
                "when": {"type": "string", "format": "date"}
            },
            "$defs": {"Address": {"type": "object", "properties": {"zip": {"type": "integer"}}}}
        });
        assert_eq!(
            fill(schema.clone(), "name: Ada, kind: B, zip: 75001, ok: no"),
            json!({"name": "Ada", "age": 18, "score": 1, "ok": false, "nick": null,
                   "tags": ["tags"], "kind": "b", "home": {"zip": 75001}, "work": null,
                   "when": "2024-01-01"})
        );
        // A mention fills a nullable property; a nested one, a nullable object.
        let document = fill(schema, "nick: Countess; work: yes; score: 2.5");
        assert_eq!(document["nick"], "Countess");
        assert_eq!(document["work"], json!({"zip": 1}));
        assert_eq!(document["score"], 2.5);
    }

    #[test]
    fn roots_of_every_kind() {
        assert_eq!(fill(json!({"type": "string"}), "x"), "value");
        assert_eq!(fill(json!({"enum": ["x", "y"]}), "x"), "x");
        assert_eq!(
            fill(
                json!({"type": "array", "items": {"type": "integer"}, "minItems": 2}),
                ""
            ),
            json!([1, 1])
        );
        assert_eq!(fill(json!({"type": "array", "maxItems": 0}), ""), json!([]));
        // Recursion ends in null.
        let list = json!({"$defs": {"Node": {"type": "object", "properties": {
            "next": {"$ref": "#/$defs/Node"}}}}, "$ref": "#/$defs/Node"});
        let document = fill(list, "");
        assert!(document["next"]["next"].is_object());
    }

    #[test]
    fn off_schema_drops_the_first_required_property() {
        let schema = json!({"type": "object", "properties": {
            "a": {"type": "string"}, "b": {"type": "string"}}, "required": ["b", "a"]});
        assert_eq!(Filler::new(&schema, vec![]).off_schema(), json!({"a": "a"}));
        assert_eq!(
            Filler::new(&json!({"type": "string"}), vec![]).off_schema(),
            json!("off-schema")
        );
    }

    #[test]
    fn strict_rules() {
        let ok = json!({"type": "object", "additionalProperties": false, "required": ["a"],
            "properties": {"a": {"type": "object", "additionalProperties": false,
                "required": [], "properties": {}}}});
        assert_eq!(check_strict("n", &ok), Ok(()));
        let open = json!({"type": "object", "required": ["a"], "properties": {"a": {}}});
        assert!(check_strict("n", &open)
            .unwrap_err()
            .contains("'additionalProperties' is required"));
        let nested = json!({"type": "object", "additionalProperties": false, "required": ["a"],
            "properties": {"a": {"type": "object", "additionalProperties": false,
                "required": [], "properties": {"b": {"type": "string"}}}}});
        let message = check_strict("n", &nested).unwrap_err();
        assert!(message.contains("context=('properties', 'a')"), "{message}");
        assert!(message.contains("Missing 'b'"), "{message}");
        assert!(valid_name("Person_2-x") && !valid_name("a b") && !valid_name(""));
    }
}
