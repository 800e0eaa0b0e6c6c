//! `Extra`, the fields of a reply that its type does not name, and the
//! `Deserialize` written for the reply types that keep them.
//!
//! `#[serde(flatten)]` would do it, but it first buffers the whole object
//! into serde's generic content tree and then parses that a second time:
//! about twice the work for every reply. The visitor written by
//! [`deserialize_with_extra!`] reads each known key straight into its field
//! and only the unknown ones into `extra`. It behaves as the derive with
//! `flatten` did: unknown keys kept, a known key twice is an error, a
//! `required` key missing is an error.
//!
//! Most unknown fields are never looked at (llama.cpp's `timings`,
//! `system_fingerprint`, `object`), yet building them as `serde_json`
//! values and freeing them unread was a third of the cost of reading a
//! reply. So when this crate parses a reply from JSON text itself
//! ([`from_json_text`]), an unknown field's text is copied as it came, and
//! `Extra` builds its map only when first read. Any other source (a
//! `serde_json::Value`, serde's buffered content in an untagged enum, other
//! formats) gives the values straight into the map, as before.

use std::cell::Cell;
use std::fmt;
use std::ops::{Deref, DerefMut};
use std::sync::OnceLock;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

/// Fields a server sent that a reply type does not name, kept so that
/// nothing the server says is lost (serializing the reply gives them back).
///
/// It reads and changes as a [`serde_json::Map`] (through `Deref`):
/// `extra["object"]`, `extra.get("system_fingerprint")`, `extra.iter()`,
/// `extra.insert(..)`. A reply this crate received keeps the fields as the
/// JSON text that came and builds the map the first time it is read, so
/// fields nobody reads cost next to nothing.
///
/// ```
/// use evolution_langchain::inference::wire::{ChatResponse, Extra};
///
/// let reply: ChatResponse = serde_json::from_str(
///     r#"{"choices": [], "object": "chat.completion", "timings": {"prompt_n": 27}}"#,
/// )?;
/// assert_eq!(reply.extra["object"], "chat.completion");
/// assert_eq!(reply.extra["timings"]["prompt_n"], 27);
/// assert_eq!(reply.extra.len(), 2);
///
/// let mut mine = Extra::new();
/// mine.insert("note".into(), "kept".into());
/// assert_eq!(mine["note"], "kept");
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Clone, Default)]
pub struct Extra {
    /// The fields as the members of a JSON object (`"key":value`, comma
    /// separated), while `map` is not built; empty when none came, and once
    /// `map` is built.
    text: Vec<u8>,
    /// The fields, built from `text` when first read.
    map: OnceLock<Map<String, Value>>,
}

impl Extra {
    /// No fields.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether there are no fields (without building the map).
    pub fn is_empty(&self) -> bool {
        match self.map.get() {
            Some(map) => map.is_empty(),
            None => self.text.is_empty(),
        }
    }

    /// The fields as a map.
    pub fn into_map(mut self) -> Map<String, Value> {
        std::mem::take(self.fields_mut())
    }

    /// The fields, built from the text on first use.
    fn fields(&self) -> &Map<String, Value> {
        self.map.get_or_init(|| parse_members(&self.text))
    }

    /// The fields for changing: from now on the map is the truth.
    fn fields_mut(&mut self) -> &mut Map<String, Value> {
        if self.map.get().is_none() {
            self.map = OnceLock::from(parse_members(&self.text));
        }
        self.text = Vec::new();
        self.map.get_mut().expect("the map was built just above")
    }

    /// Keeps the unknown field `key` as the JSON text `value`.
    fn push_raw(&mut self, key: &str, value: &RawValue) {
        if self.map.get().is_some() {
            let value = serde_json::from_str(value.get()).unwrap_or(Value::Null);
            self.fields_mut().insert(key.to_owned(), value);
            return;
        }
        if self.text.is_empty() {
            // Room for a few fields like this one: one allocation per reply.
            self.text.reserve(4 * (key.len() + value.get().len() + 4));
        } else {
            self.text.push(b',');
        }
        if key.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
            self.text.push(b'"');
            self.text.extend_from_slice(key.as_bytes());
            self.text.push(b'"');
        } else {
            // Writing a string into a vector cannot fail.
            let _ = serde_json::to_writer(&mut self.text, key);
        }
        self.text.push(b':');
        self.text.extend_from_slice(value.get().as_bytes());
    }

    /// Reads the value of the unknown field `key` from `map`.
    pub(super) fn read_field<'de, A: serde::de::MapAccess<'de>>(
        &mut self,
        key: std::borrow::Cow<'de, str>,
        map: &mut A,
    ) -> Result<(), A::Error> {
        if RAW_TEXT.get() {
            let value: &'de RawValue = map.next_value()?;
            self.push_raw(&key, value);
        } else {
            let value: Value = map.next_value()?;
            self.fields_mut().insert(key.into_owned(), value);
        }
        Ok(())
    }
}

thread_local! {
    /// Set while [`from_json_text`] parses on this thread: the deserializer
    /// is serde_json's own, reading text, so unknown fields can be borrowed
    /// as raw text.
    static RAW_TEXT: Cell<bool> = const { Cell::new(false) };
}

/// Parses a reply from JSON text, keeping unknown fields as text (see the
/// module's notes). Everything this crate receives is parsed through here.
pub(crate) fn from_json_text<T: DeserializeOwned>(text: &str) -> serde_json::Result<T> {
    /// Clears the flag however parsing ends, unwinding included.
    struct Reset(bool);
    impl Drop for Reset {
        fn drop(&mut self) {
            RAW_TEXT.set(self.0);
        }
    }
    let _reset = Reset(RAW_TEXT.replace(true));
    serde_json::from_str(text)
}

/// The map of `members` (`"key":value,…`); empty for none. The text is
/// serde_json's own output and the server's raw values, so it parses; were
/// it not to, no fields is the honest answer rather than a panic.
fn parse_members(members: &[u8]) -> Map<String, Value> {
    if members.is_empty() {
        return Map::new();
    }
    let mut object = Vec::with_capacity(members.len() + 2);
    object.push(b'{');
    object.extend_from_slice(members);
    object.push(b'}');
    serde_json::from_slice(&object).unwrap_or_default()
}

impl Deref for Extra {
    type Target = Map<String, Value>;

    fn deref(&self) -> &Map<String, Value> {
        self.fields()
    }
}

impl DerefMut for Extra {
    fn deref_mut(&mut self) -> &mut Map<String, Value> {
        self.fields_mut()
    }
}

impl fmt::Debug for Extra {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.fields(), f)
    }
}

impl PartialEq for Extra {
    fn eq(&self, other: &Self) -> bool {
        (self.is_empty() && other.is_empty()) || self.fields() == other.fields()
    }
}

impl PartialEq<Map<String, Value>> for Extra {
    fn eq(&self, other: &Map<String, Value>) -> bool {
        self.fields() == other
    }
}

impl PartialEq<Extra> for Map<String, Value> {
    fn eq(&self, other: &Extra) -> bool {
        self == other.fields()
    }
}

impl Serialize for Extra {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.fields().serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Extra {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Map::deserialize(deserializer).map(Extra::from)
    }
}

impl From<Map<String, Value>> for Extra {
    fn from(map: Map<String, Value>) -> Self {
        Self {
            text: Vec::new(),
            map: OnceLock::from(map),
        }
    }
}

impl From<Extra> for Map<String, Value> {
    fn from(extra: Extra) -> Self {
        extra.into_map()
    }
}

impl FromIterator<(String, Value)> for Extra {
    fn from_iter<I: IntoIterator<Item = (String, Value)>>(fields: I) -> Self {
        Map::from_iter(fields).into()
    }
}

impl Extend<(String, Value)> for Extra {
    fn extend<I: IntoIterator<Item = (String, Value)>>(&mut self, fields: I) {
        self.fields_mut().extend(fields);
    }
}

impl IntoIterator for Extra {
    type Item = (String, Value);
    type IntoIter = serde_json::map::IntoIter;

    fn into_iter(self) -> Self::IntoIter {
        self.into_map().into_iter()
    }
}

impl<'a> IntoIterator for &'a Extra {
    type Item = (&'a String, &'a Value);
    type IntoIter = serde_json::map::Iter<'a>;

    fn into_iter(self) -> Self::IntoIter {
        self.fields().iter()
    }
}

impl<'a> IntoIterator for &'a mut Extra {
    type Item = (&'a String, &'a mut Value);
    type IntoIter = serde_json::map::IterMut<'a>;

    fn into_iter(self) -> Self::IntoIter {
        self.fields_mut().iter_mut()
    }
}

/// Marks `key` (the `index`th known key) as seen; `false` if it already was.
pub(super) fn first_time(seen: &mut u64, index: usize) -> bool {
    let bit = 1u64 << index;
    let first = *seen & bit == 0;
    *seen |= bit;
    first
}

/// The position of `key` among `keys` (always found: both come from one
/// list), worked out at compile time.
pub(super) const fn index_of(keys: &[&str], key: &str) -> usize {
    let mut index = 0;
    while index < keys.len() {
        if str_eq(keys[index], key) {
            return index;
        }
        index += 1;
    }
    0
}

/// `a == b`, in a `const fn`.
const fn str_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// Writes `impl Deserialize` for `$ty` (which has `Default` and an
/// `extra: Extra` field): each entry names a JSON key, the field it fills,
/// the type read, and optionally a function turning that into the field's
/// value.
macro_rules! deserialize_with_extra {
    (
        $ty:ident, $expecting:literal, required = [$($required:literal),*],
        { $($key:literal => $field:ident: $read:ty $(=> $convert:path)?),* $(,)? }
    ) => {
        impl<'de> ::serde::Deserialize<'de> for $ty {
            fn deserialize<D: ::serde::Deserializer<'de>>(
                deserializer: D,
            ) -> ::std::result::Result<Self, D::Error> {
                struct Visitor;
                impl<'de> ::serde::de::Visitor<'de> for Visitor {
                    type Value = $ty;

                    fn expecting(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                        f.write_str($expecting)
                    }

                    fn visit_map<A: ::serde::de::MapAccess<'de>>(
                        self,
                        mut map: A,
                    ) -> ::std::result::Result<$ty, A::Error> {
                        use ::serde::de::Error as _;
                        use super::extra::{first_time, index_of};
                        const KEYS: &[&str] = &[$($key),*];
                        let mut value = <$ty>::default();
                        let mut seen = 0u64;
                        while let Some(key) = map.next_key::<::std::borrow::Cow<'de, str>>()? {
                            match key.as_ref() {
                                $($key => {
                                    if !first_time(&mut seen, const { index_of(KEYS, $key) }) {
                                        return Err(A::Error::duplicate_field($key));
                                    }
                                    let read: $read = map.next_value()?;
                                    value.$field = deserialize_with_extra!(@convert read $(, $convert)?);
                                })*
                                _ => value.extra.read_field(key, &mut map)?,
                            }
                        }
                        $(
                            if first_time(&mut seen, const { index_of(KEYS, $required) }) {
                                return Err(A::Error::missing_field($required));
                            }
                        )*
                        Ok(value)
                    }
                }
                deserializer.deserialize_map(Visitor)
            }
        }
    };
    (@convert $read:ident) => { $read };
    (@convert $read:ident, $convert:path) => { $convert($read) };
}

pub(super) use deserialize_with_extra;

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::{from_json_text, Extra};
    use crate::inference::wire::{ChatChunk, ChatResponse, Choice};

    #[test]
    fn known_fields_are_read_and_unknown_ones_kept() {
        let body = json!({
            "id": "r1", "object": "chat.completion", "model": "m", "created": 7,
            "choices": [{
                "index": 0, "logprobs": null, "finish_reason": "stop",
                "message": {"role": "assistant", "content": "hi", "tool_calls": null, "refusal": null}
            }],
            "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3},
            "system_fingerprint": "fp"
        });
        let reply: ChatResponse = serde_json::from_value(body.clone()).unwrap();
        assert_eq!(reply.id.as_deref(), Some("r1"));
        assert_eq!(reply.created, Some(7));
        assert_eq!(reply.extra["object"], "chat.completion");
        assert_eq!(reply.extra["system_fingerprint"], "fp");
        let choice = &reply.choices[0];
        assert_eq!(choice.extra["logprobs"], serde_json::Value::Null);
        assert_eq!(choice.message.content.as_deref(), Some("hi"));
        assert!(choice.message.tool_calls.is_empty());
        assert_eq!(choice.message.extra["refusal"], serde_json::Value::Null);
        assert_eq!(reply.usage.unwrap().total_tokens, 3);
        // Serializing gives back what came, unknown fields included.
        let again = serde_json::to_value(&reply).unwrap();
        assert_eq!(again["system_fingerprint"], "fp");
        assert_eq!(
            again["choices"][0]["message"]["refusal"],
            serde_json::Value::Null
        );
    }

    #[test]
    fn a_known_field_twice_or_a_required_one_missing_is_an_error() {
        let twice = r#"{"choices": [], "id": "a", "id": "b"}"#;
        let error = serde_json::from_str::<ChatResponse>(twice).unwrap_err();
        assert!(
            error.to_string().contains("duplicate field `id`"),
            "{error}"
        );

        let error = serde_json::from_str::<ChatResponse>(r#"{"id": "a"}"#).unwrap_err();
        assert!(
            error.to_string().contains("missing field `choices`"),
            "{error}"
        );
        let error = serde_json::from_str::<Choice>(r#"{"index": 0}"#).unwrap_err();
        assert!(
            error.to_string().contains("missing field `message`"),
            "{error}"
        );

        let error = serde_json::from_str::<ChatResponse>(r#"["not", "an object"]"#).unwrap_err();
        assert!(
            error.to_string().contains("chat.completion object"),
            "{error}"
        );
    }

    #[test]
    fn chunks_take_null_choices_as_none() {
        let chunk: ChatChunk =
            serde_json::from_str(r#"{"choices": null, "usage": {"prompt_tokens": 2}, "x": 1}"#)
                .unwrap();
        assert!(chunk.choices.is_empty());
        assert_eq!(chunk.usage.unwrap().prompt_tokens, 2);
        assert_eq!(chunk.extra["x"], 1);
    }

    #[test]
    fn extra_reads_as_the_map_of_what_came() {
        let body = r#"{"choices": [], "object": "chat.completion", "wei\"rd\u00e9": [1, 2.5, null],
            "timings": {"prompt_ms": 159.395, "n": 27, "big": 18446744073709551615, "neg": -3,
            "s": "a\nb", "nested": {"t": true}}, "x": 1, "x": 2}"#;
        // As this crate reads replies (unknown fields kept as text) and as
        // any serde_json user does (values built at once): the same.
        let reply: ChatResponse = from_json_text(body).unwrap();
        assert!(reply.extra.map.get().is_none(), "kept as text until read");
        let direct: ChatResponse = serde_json::from_str(body).unwrap();
        assert_eq!(reply, direct);
        let expected = json!({
            "object": "chat.completion", "wei\"rd\u{e9}": [1, 2.5, null],
            "timings": {"prompt_ms": 159.395, "n": 27, "big": 18446744073709551615u64, "neg": -3,
            "s": "a\nb", "nested": {"t": true}}, "x": 2
        });
        let expected = expected.as_object().unwrap();
        assert!(!reply.extra.is_empty());
        assert_eq!(&*reply.extra, expected);
        assert_eq!(reply.extra, *expected);
        assert_eq!(*expected, reply.extra);
        assert_eq!(reply.extra.len(), 4);
        assert_eq!(reply.extra["timings"]["prompt_ms"], 159.395);
        // The same through serde_json's Value, and nested in an untagged
        // enum (serde's own buffered content): any self-describing source.
        let from_value: ChatResponse =
            serde_json::from_value(serde_json::from_str(body).unwrap()).unwrap();
        assert_eq!(from_value, reply);
        #[derive(serde::Deserialize)]
        #[serde(untagged)]
        enum Either {
            Reply(Box<ChatResponse>),
            #[allow(dead_code)]
            Other(i32),
        }
        let Either::Reply(nested) = serde_json::from_str(body).unwrap() else {
            panic!("not a reply")
        };
        assert_eq!(*nested, reply);
        // Serializing gives the fields back.
        let again = serde_json::to_value(&reply).unwrap();
        assert_eq!(again["timings"]["nested"]["t"], true);
        assert_eq!(again["x"], 2);
    }

    #[test]
    fn extra_changes_like_a_map() {
        let mut reply: ChatResponse =
            from_json_text(r#"{"choices": [], "a": 1, "b": {"c": [true]}}"#).unwrap();
        assert_eq!(reply.extra.insert("a".into(), json!("one")), Some(json!(1)));
        reply.extra.remove("b");
        reply.extra.extend([("d".to_string(), json!(4))]);
        assert_eq!(
            serde_json::Value::Object(reply.extra.clone().into_map()),
            json!({"a": "one", "d": 4})
        );
        let pairs: Vec<(&String, &serde_json::Value)> = (&reply.extra).into_iter().collect();
        assert_eq!(pairs.len(), 2);
        assert_eq!(
            format!("{:?}", reply.extra),
            r#"{"a": String("one"), "d": Number(4)}"#
        );

        let none: ChatResponse = serde_json::from_str(r#"{"choices": []}"#).unwrap();
        assert!(none.extra.is_empty());
        assert_eq!(none.extra, Extra::new());
        let built: Extra = [("k".to_string(), json!(null))].into_iter().collect();
        let parsed: ChatResponse = from_json_text(r#"{"choices": [], "k": null}"#).unwrap();
        assert_eq!(parsed.extra, built);
        assert_ne!(parsed.extra, Extra::new());
    }

    #[test]
    fn a_broken_unknown_field_fails_the_reply() {
        for (body, says) in [
            (
                r#"{"choices": [], "t": {"a": }"#,
                "expected value at line 1 column 28",
            ),
            (r#"{"choices": [], "t": [1,"#, "EOF while parsing"),
        ] {
            let error = from_json_text::<ChatResponse>(body).unwrap_err();
            assert!(error.to_string().contains(says), "{body}: {error}");
            let error = serde_json::from_str::<ChatResponse>(body).unwrap_err();
            assert!(error.to_string().contains(says), "{body}: {error}");
        }
    }
}
