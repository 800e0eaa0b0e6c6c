//! `Deserialize` for reply types that keep unknown fields in an `extra` map.
//!
//! `#[serde(flatten)]` would do it, but it first buffers the whole object
//! into serde's generic content tree and then parses that a second time:
//! about twice the work for every reply. The visitor written by
//! [`deserialize_with_extra!`] reads each known key straight into its field
//! and only the unknown ones into `extra`. It behaves as the derive with
//! `flatten` did: unknown keys kept as JSON values, a known key twice is an
//! error, a `required` key missing is an error.

/// Marks `key` (the `index`th known key) as seen; `false` if it already was.
pub(super) fn first_time(seen: &mut u64, index: usize) -> bool {
    let bit = 1u64 << index;
    let first = *seen & bit == 0;
    *seen |= bit;
    first
}

/// The position of `key` among `keys` (always found: both come from one list).
pub(super) fn index_of(keys: &[&str], key: &str) -> usize {
    keys.iter().position(|k| *k == key).unwrap_or(0)
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
                                    if !first_time(&mut seen, index_of(KEYS, $key)) {
                                        return Err(A::Error::duplicate_field($key));
                                    }
                                    let read: $read = map.next_value()?;
                                    value.$field = deserialize_with_extra!(@convert read $(, $convert)?);
                                })*
                                _ => {
                                    let unknown: ::serde_json::Value = map.next_value()?;
                                    value.extra.insert(key.into_owned(), unknown);
                                }
                            }
                        }
                        $(
                            if first_time(&mut seen, index_of(KEYS, $required)) {
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
}
