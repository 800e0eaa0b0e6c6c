//! `ChatOptions`: the one type for every sampling and request parameter.
//!
//! The client keeps its defaults in one `ChatOptions`, a call overlays
//! another on them, and the request body embeds the result. Each parameter
//! is declared once, in [`for_each_option!`]: its field, its setter (on
//! `ChatOptions`, on both client builders), its range check and its place in
//! the request body all come from that one entry.

use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// Most choices one request may ask for (OpenAI's limit).
pub const MAX_N: u32 = 128;

/// The one list of parameters. Each entry:
/// `doc; name: Type, setter argument => conversion, wire rule, check`.
///
/// - the wire rule is `wire` (sent under its own name when set),
///   `wire_nonempty` (sent unless empty), `wire_flatten` (a map whose
///   entries are sent as top-level fields) or `local` (steers the client,
///   not sent);
/// - how a call's value is laid over the client's comes from the type
///   ([`Layer`]): replaced, except maps, merged key by key;
/// - the check returns `Err(message)` for a value out of range.
///
/// Invoked with the name of a macro that turns the list into code.
macro_rules! for_each_option {
    ($then:ident) => {
        $then! {
            /// Model name; empty or unset: the endpoint's own model.
            model: String, (model: impl Into<String>) => model.into(), wire_nonempty, no_check;
            /// Most tokens to generate (client default 512; at least 1).
            max_tokens: u32, (max_tokens: u32) => max_tokens, wire, |v: &u32| at_least(*v, 1);
            /// Sampling temperature, 0–2 (client default 1.0).
            temperature: f32, (temperature: f32) => temperature, wire, |v: &f32| in_range(*v, 0.0, 2.0);
            /// Nucleus sampling mass, 0–1 (client default 1.0).
            top_p: f32, (top_p: f32) => top_p, wire, |v: &f32| in_range(*v, 0.0, 1.0);
            /// Penalty for tokens by how often they appeared, −2–2 (client default 0).
            frequency_penalty: f32, (penalty: f32) => penalty, wire, |v: &f32| in_range(*v, -2.0, 2.0);
            /// Penalty for tokens that appeared at all, −2–2 (client default 0).
            presence_penalty: f32, (penalty: f32) => penalty, wire, |v: &f32| in_range(*v, -2.0, 2.0);
            /// Stop sequences; a call's list replaces the client's.
            stop: Vec<String>, (stop: impl IntoIterator<Item = impl Into<String>>)
                => stop.into_iter().map(Into::into).collect(), wire_nonempty, no_check;
            /// Choices per prompt, 1–128 (client default 1).
            n: u32, (n: u32) => n, wire, |v: &u32| n_in_range(*v);
            /// Seed for reproducible sampling.
            seed: u64, (seed: u64) => seed, wire, no_check;
            /// Tools the model may call; a call's list replaces the client's.
            tools: Vec<$crate::Tool>, (tools: Vec<$crate::Tool>) => tools, wire_nonempty, no_check;
            /// Whether and which tool the model must call.
            tool_choice: $crate::ToolChoice, (choice: $crate::ToolChoice) => choice, wire, no_check;
            /// Whether the model may call several tools in one answer.
            parallel_tool_calls: bool, (parallel: bool) => parallel, wire, no_check;
            /// The format the answer must take.
            response_format: $crate::ResponseFormat, (format: $crate::ResponseFormat) => format, wire, no_check;
            /// How hard a reasoning model thinks: `"low"`, `"medium"`, `"high"`, ….
            reasoning_effort: $crate::ReasoningEffort, (effort: impl Into<$crate::ReasoningEffort>)
                => effort.into(), wire, |v: &ReasoningEffort| v.check();
            /// Provider-specific request fields, written into the body next to
            /// the standard ones (e.g. vLLM's `top_k`, `repetition_penalty`,
            /// `chat_template_kwargs`). A call's map is merged key by key over
            /// the client's. A key that names a standard field (`model`,
            /// `messages`, `stream`, `stream_options` or any parameter with a
            /// setter here) is an error, never a silent override: use the setter.
            extra_body: serde_json::Map<String, serde_json::Value>,
                (extra_body: serde_json::Map<String, serde_json::Value>) => extra_body,
                wire_flatten, |v: &serde_json::Map<String, serde_json::Value>| check_extra_body(v);
            /// Stream answers even for `invoke`/`chat` (client default false).
            streaming: bool, (streaming: bool) => streaming, local, no_check;
            /// Ask for a final usage chunk in streams (client default true).
            stream_usage: bool, (stream_usage: bool) => stream_usage, local, no_check;
        }
    };
}
pub(crate) use for_each_option;

/// Defines `ChatOptions` from the list.
macro_rules! define_chat_options {
    ($(
        $(#[$doc:meta])*
        $name:ident: $ty:ty, ($arg:ident: $arg_ty:ty) => $convert:expr, $wire:ident, $check:expr;
    )*) => {
        /// Every sampling and request parameter, each optional: `None` leaves
        /// the decision to whoever is below (the call to the client's
        /// defaults, the client's defaults to the server).
        ///
        /// The client holds its defaults in one ([`ChatOptions::client_defaults`]
        /// unless the builder says otherwise); a call's options are laid over
        /// them with [`overlay`](Self::overlay), and the result is the request
        /// body's parameters.
        ///
        /// With serde it reads and writes as an object of the parameters
        /// that are set, under their own names (`extra_body` as one object
        /// of its own); an unknown key is an error that names it and lists
        /// the known ones, so a typo never passes silently. Ranges are
        /// checked when the options are used (or with [`check`](Self::check)).
        ///
        /// ```
        /// use evolution_langchain::ChatOptions;
        /// let options = ChatOptions::new().temperature(0.0).stop(["\n\n"]).seed(7);
        /// assert_eq!(options.temperature, Some(0.0));
        ///
        /// let read: ChatOptions = serde_json::from_str(r#"{"temperature": 0.0, "seed": 7, "stop": ["\n\n"]}"#)?;
        /// assert_eq!(read, options);
        /// let typo = serde_json::from_str::<ChatOptions>(r#"{"temprature": 0.5}"#).unwrap_err();
        /// assert!(typo.to_string().contains("unknown field `temprature`"));
        /// # Ok::<(), serde_json::Error>(())
        /// ```
        #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
        #[serde(deny_unknown_fields)]
        #[non_exhaustive]
        pub struct ChatOptions {
            $(
                $(#[$doc])*
                #[serde(default, skip_serializing_if = "Option::is_none")]
                pub $name: Option<$ty>,
            )*
        }

        impl ChatOptions {
            /// Writes the parameters that go on the wire into `map`: the
            /// request body's own serializer uses it instead of serde's
            /// buffering `flatten`.
            pub(crate) fn serialize_entries<M: SerializeMap>(
                &self,
                map: &mut M,
            ) -> std::result::Result<(), M::Error> {
                $($wire(&self.$name, stringify!($name), map)?;)*
                Ok(())
            }
        }

        impl ChatOptions {
            $(
                #[doc = concat!("Sets `", stringify!($name), "`.")]
                pub fn $name(mut self, $arg: $arg_ty) -> Self {
                    self.$name = Some($convert);
                    self
                }
            )*

            /// These options with every parameter `other` sets replacing ours
            /// (`extra_body` merged key by key, `other`'s keys winning).
            pub fn overlay(&self, other: &ChatOptions) -> ChatOptions {
                ChatOptions {
                    $($name: Layer::layer(&self.$name, &other.$name),)*
                }
            }

            /// Moves every parameter `other` sets into `self` (as
            /// [`overlay`](Self::overlay) does).
            pub fn apply(&mut self, other: ChatOptions) {
                $(Layer::apply(&mut self.$name, other.$name);)*
            }

            /// The names the parameters go under on the wire, and the names
            /// the request body uses itself: what `extra_body` may not name.
            const STANDARD_FIELDS: &'static [&'static str] =
                &["messages", "stream", "stream_options", $(stringify!($name)),*];

            /// Checks every parameter that is set against its range. The error
            /// names the first one out of range and what is allowed.
            pub fn check(&self) -> std::result::Result<(), (&'static str, String)> {
                $(
                    if let Some(value) = &self.$name {
                        let check = $check;
                        check(value).map_err(|message| (stringify!($name), message))?;
                    }
                )*
                Ok(())
            }
        }
    };
}

for_each_option!(define_chat_options);

/// Wire rule: sent when set.
fn wire<T: Serialize, M: SerializeMap>(
    value: &Option<T>,
    name: &'static str,
    map: &mut M,
) -> std::result::Result<(), M::Error> {
    match value {
        Some(value) => map.serialize_entry(name, value),
        None => Ok(()),
    }
}

/// Wire rule: sent when set and not empty (some engines reject an empty
/// model name or an empty `tools` list).
fn wire_nonempty<T: Serialize + IsEmpty, M: SerializeMap>(
    value: &Option<T>,
    name: &'static str,
    map: &mut M,
) -> std::result::Result<(), M::Error> {
    wire(&value.as_ref().filter(|v| !v.is_empty()), name, map)
}

/// Wire rule: each entry of the map is a top-level field of the body.
fn wire_flatten<M: SerializeMap>(
    value: &Option<Map<String, Value>>,
    _name: &'static str,
    map: &mut M,
) -> std::result::Result<(), M::Error> {
    for (key, value) in value.iter().flatten() {
        map.serialize_entry(key, value)?;
    }
    Ok(())
}

/// Wire rule: never sent; it steers the client.
fn local<T, M: SerializeMap>(
    _: &Option<T>,
    _name: &'static str,
    _: &mut M,
) -> std::result::Result<(), M::Error> {
    Ok(())
}

/// How a call's value of a parameter is laid over the client's.
trait Layer: Sized + Clone {
    /// `over` if set, else `base`.
    fn layer(base: &Option<Self>, over: &Option<Self>) -> Option<Self> {
        over.clone().or_else(|| base.clone())
    }

    /// `layer` in place.
    fn apply(base: &mut Option<Self>, over: Option<Self>) {
        if over.is_some() {
            *base = over;
        }
    }
}

impl Layer for String {}
impl Layer for u32 {}
impl Layer for u64 {}
impl Layer for f32 {}
impl Layer for bool {}
impl<T: Clone> Layer for Vec<T> {}
impl Layer for crate::ToolChoice {}
impl Layer for crate::ResponseFormat {}
impl Layer for ReasoningEffort {}

/// Maps (`extra_body`) merge key by key, the call's keys winning.
impl Layer for Map<String, Value> {
    fn layer(base: &Option<Self>, over: &Option<Self>) -> Option<Self> {
        let mut merged = base.clone();
        Self::apply(&mut merged, over.clone());
        merged
    }

    fn apply(base: &mut Option<Self>, over: Option<Self>) {
        match (base.as_mut(), over) {
            (Some(base), Some(over)) => base.extend(over),
            (None, Some(over)) => *base = Some(over),
            (_, None) => {}
        }
    }
}

/// `extra_body` may add fields, not replace the standard ones.
fn check_extra_body(extra: &Map<String, Value>) -> std::result::Result<(), String> {
    match extra
        .keys()
        .find(|key| ChatOptions::STANDARD_FIELDS.contains(&key.as_str()))
    {
        Some(key) => Err(format!(
            "holds {key:?}, a field the request sets itself; use the option's own setter \
             (extra_body is for fields this crate does not name)"
        )),
        None => Ok(()),
    }
}

trait IsEmpty {
    fn is_empty(&self) -> bool;
}
impl IsEmpty for String {
    fn is_empty(&self) -> bool {
        self.trim().is_empty()
    }
}
impl<T> IsEmpty for Vec<T> {
    fn is_empty(&self) -> bool {
        Vec::is_empty(self)
    }
}

/// For entries without a range.
fn no_check<T>(_: &T) -> std::result::Result<(), String> {
    Ok(())
}

fn in_range(value: f32, min: f32, max: f32) -> std::result::Result<(), String> {
    // `contains` is false for NaN, which is what we want.
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(format!("must be between {min} and {max}, got {value}"))
    }
}

fn at_least(value: u32, min: u32) -> std::result::Result<(), String> {
    if value >= min {
        Ok(())
    } else {
        Err(format!("must be at least {min}, got {value}"))
    }
}

fn n_in_range(n: u32) -> std::result::Result<(), String> {
    if (1..=MAX_N).contains(&n) {
        Ok(())
    } else {
        Err(format!("must be between 1 and {MAX_N}, got {n}"))
    }
}

impl ChatOptions {
    /// No parameters set.
    pub fn new() -> Self {
        Self::default()
    }

    /// What a client sends unless told otherwise (the original client's
    /// defaults): `max_tokens` 512, `temperature` 1.0, `top_p` 1.0, both
    /// penalties 0, `n` 1, not streaming, usage requested in streams.
    pub fn client_defaults() -> Self {
        Self {
            max_tokens: Some(512),
            temperature: Some(1.0),
            top_p: Some(1.0),
            frequency_penalty: Some(0.0),
            presence_penalty: Some(0.0),
            n: Some(1),
            streaming: Some(false),
            stream_usage: Some(true),
            ..Self::default()
        }
    }

    /// Adds one provider-specific field to [`extra_body`](Self::extra_body)
    /// (e.g. `.extra("top_k", 20)`), keeping the others.
    pub fn extra(mut self, key: impl Into<String>, value: impl Into<Value>) -> Self {
        self.extra_body
            .get_or_insert_with(Map::new)
            .insert(key.into(), value.into());
        self
    }

    /// The model name, "" when unset.
    pub fn model_name(&self) -> &str {
        self.model.as_deref().unwrap_or("")
    }

    /// Whether `chat` streams under the hood.
    pub fn is_streaming(&self) -> bool {
        self.streaming.unwrap_or(false)
    }

    /// [`check`](Self::check) as a client's configuration error (for the
    /// builder's defaults).
    pub(crate) fn check_config(&self) -> Result<()> {
        self.check()
            .map_err(|(field, message)| Error::config(field, message))
    }

    /// [`check`](Self::check) as a caller's mistake (for a call's options).
    pub(crate) fn check_request(&self) -> Result<()> {
        self.check()
            .map_err(|(field, message)| Error::invalid_request(field, message))
    }
}

/// How much a reasoning model may think before it answers.
///
/// Converts from text, so `.reasoning_effort("high")` works; values other
/// than the named ones are sent as they are (servers add levels over time).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReasoningEffort {
    /// `"none"`: no reasoning, where the model allows it.
    None,
    /// `"minimal"`.
    Minimal,
    /// `"low"`.
    Low,
    /// `"medium"`.
    Medium,
    /// `"high"`.
    High,
    /// Any other level the server knows, sent as written.
    Other(String),
}

impl ReasoningEffort {
    /// The value on the wire.
    pub fn as_str(&self) -> &str {
        match self {
            ReasoningEffort::None => "none",
            ReasoningEffort::Minimal => "minimal",
            ReasoningEffort::Low => "low",
            ReasoningEffort::Medium => "medium",
            ReasoningEffort::High => "high",
            ReasoningEffort::Other(level) => level,
        }
    }

    fn check(&self) -> std::result::Result<(), String> {
        let level = self.as_str();
        if level.is_empty() || !level.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!(
                "must be a level such as \"low\", \"medium\" or \"high\", got {level:?}"
            ));
        }
        Ok(())
    }
}

impl From<&str> for ReasoningEffort {
    fn from(level: &str) -> Self {
        match level.trim().to_ascii_lowercase().as_str() {
            "none" => ReasoningEffort::None,
            "minimal" => ReasoningEffort::Minimal,
            "low" => ReasoningEffort::Low,
            "medium" => ReasoningEffort::Medium,
            "high" => ReasoningEffort::High,
            _ => ReasoningEffort::Other(level.trim().to_string()),
        }
    }
}

impl From<String> for ReasoningEffort {
    fn from(level: String) -> Self {
        ReasoningEffort::from(level.as_str())
    }
}

impl Serialize for ReasoningEffort {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ReasoningEffort {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        String::deserialize(deserializer).map(ReasoningEffort::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The parameters as a request body carries them.
    fn wire(options: &ChatOptions) -> Value {
        struct Wire<'a>(&'a ChatOptions);
        impl Serialize for Wire<'_> {
            fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
                let mut map = s.serialize_map(None)?;
                self.0.serialize_entries(&mut map)?;
                map.end()
            }
        }
        serde_json::to_value(Wire(options)).unwrap()
    }

    #[test]
    fn serde_round_trips_every_parameter_and_names_unknown_keys() {
        let options = ChatOptions::client_defaults()
            .model("openai/gpt-oss-120b")
            .stop(["END"])
            .seed(7)
            .tools(vec![crate::Tool::function(
                "f",
                "d",
                json!({"type": "object"}),
            )])
            .tool_choice(crate::ToolChoice::Function("f".into()))
            .parallel_tool_calls(false)
            .response_format(crate::ResponseFormat::JsonSchema(
                json!({"name": "x", "schema": {}}),
            ))
            .reasoning_effort("high")
            .extra("top_k", 20)
            .streaming(true)
            .stream_usage(false);
        let text = serde_json::to_string(&options).unwrap();
        let read: ChatOptions = serde_json::from_str(&text).unwrap();
        assert_eq!(read, options);
        // Every parameter written is one the list declares.
        let written = serde_json::to_value(&options).unwrap();
        assert_eq!(
            written.as_object().unwrap().len(),
            ChatOptions::STANDARD_FIELDS.len() - 3
        );
        assert_eq!(written["extra_body"], json!({"top_k": 20}));
        let unknown = serde_json::from_value::<ChatOptions>(json!({"temprature": 1})).unwrap_err();
        let message = unknown.to_string();
        assert!(
            message.contains("unknown field `temprature`") && message.contains("temperature"),
            "{message}"
        );
        let wrong_type = serde_json::from_value::<ChatOptions>(json!({"seed": "x"})).unwrap_err();
        assert!(
            wrong_type.to_string().contains("invalid type"),
            "{wrong_type}"
        );
        for (choice, expected) in [
            (json!("auto"), crate::ToolChoice::Auto),
            (
                json!({"type": "function", "function": {"name": "g"}}),
                crate::ToolChoice::Function("g".into()),
            ),
        ] {
            let read: ChatOptions = serde_json::from_value(json!({"tool_choice": choice})).unwrap();
            assert_eq!(read.tool_choice, Some(expected));
        }
        assert!(
            serde_json::from_value::<ChatOptions>(json!({"tool_choice": "sometimes"})).is_err()
        );
        let read: ChatOptions =
            serde_json::from_value(json!({"response_format": {"type": "json_object"}})).unwrap();
        assert_eq!(
            read.response_format,
            Some(crate::ResponseFormat::JsonObject)
        );
    }

    #[test]
    fn client_defaults_match_the_original() {
        let p = ChatOptions::client_defaults();
        assert_eq!(
            (p.max_tokens, p.temperature, p.top_p, p.n),
            (Some(512), Some(1.0), Some(1.0), Some(1))
        );
        assert_eq!(
            (p.frequency_penalty, p.presence_penalty),
            (Some(0.0), Some(0.0))
        );
        assert!(!p.is_streaming() && p.stop.is_none());
    }

    #[test]
    fn ranges_are_checked() {
        let bad = [
            (ChatOptions::new().temperature(2.1), "temperature"),
            (ChatOptions::new().temperature(f32::NAN), "temperature"),
            (ChatOptions::new().top_p(-0.1), "top_p"),
            (
                ChatOptions::new().frequency_penalty(2.5),
                "frequency_penalty",
            ),
            (
                ChatOptions::new().presence_penalty(-3.0),
                "presence_penalty",
            ),
            (ChatOptions::new().max_tokens(0), "max_tokens"),
            (ChatOptions::new().n(0), "n"),
            (ChatOptions::new().n(MAX_N + 1), "n"),
            (ChatOptions::new().reasoning_effort(""), "reasoning_effort"),
            (
                ChatOptions::new().reasoning_effort("very high"),
                "reasoning_effort",
            ),
        ];
        for (options, field) in bad {
            let (at, message) = options.check().unwrap_err();
            assert_eq!(at, field, "{message}");
            assert!(!message.is_empty());
        }
        assert!(ChatOptions::new()
            .temperature(2.0)
            .top_p(0.0)
            .reasoning_effort("xhigh")
            .check()
            .is_ok());
    }

    #[test]
    fn overlay_replaces_only_what_is_set() {
        let base = ChatOptions::client_defaults().stop(["a"]).seed(1);
        let merged = base.overlay(&ChatOptions::new().temperature(0.0).stop(["b"]));
        assert_eq!(merged.temperature, Some(0.0));
        assert_eq!(merged.stop, Some(vec!["b".to_string()]));
        assert_eq!(merged.max_tokens, Some(512));
        assert_eq!(merged.seed, Some(1));
        let mut applied = base.clone();
        applied.apply(ChatOptions::new().parallel_tool_calls(false));
        assert_eq!(applied.parallel_tool_calls, Some(false));
        assert_eq!(applied.stop, base.stop);
    }

    #[test]
    fn wire_form_skips_unset_empty_and_local_fields() {
        let options = ChatOptions::client_defaults()
            .model("")
            .stop(Vec::<String>::new())
            .seed(42)
            .reasoning_effort("high")
            .parallel_tool_calls(true)
            .streaming(true);
        assert_eq!(
            wire(&options),
            json!({
                "max_tokens": 512, "temperature": 1.0, "top_p": 1.0,
                "frequency_penalty": 0.0, "presence_penalty": 0.0, "n": 1,
                "seed": 42, "reasoning_effort": "high", "parallel_tool_calls": true
            })
        );
        let named = ChatOptions::new().model("m").stop(["x"]);
        assert_eq!(wire(&named), json!({"model": "m", "stop": ["x"]}));
    }

    #[test]
    fn extra_body_is_flattened_merged_and_cannot_replace_standard_fields() {
        let client = ChatOptions::new()
            .model("m")
            .extra("top_k", 20)
            .extra("chat_template_kwargs", json!({"enable_thinking": false}));
        let call = ChatOptions::new()
            .extra("top_k", 5)
            .extra("repetition_penalty", 1.1);
        let merged = client.overlay(&call);
        assert_eq!(
            wire(&merged),
            json!({
                "model": "m", "top_k": 5, "repetition_penalty": 1.1,
                "chat_template_kwargs": {"enable_thinking": false}
            })
        );
        let mut applied = client.clone();
        applied.apply(call);
        assert_eq!(applied, merged);
        assert!(merged.check().is_ok());
        for clash in [
            "model",
            "messages",
            "stream",
            "stream_options",
            "temperature",
        ] {
            let (field, message) = ChatOptions::new().extra(clash, 1).check().unwrap_err();
            assert_eq!(field, "extra_body");
            assert!(message.contains(clash), "{message}");
        }
    }

    #[test]
    fn reasoning_effort_from_text() {
        assert_eq!(ReasoningEffort::from("High"), ReasoningEffort::High);
        assert_eq!(
            ReasoningEffort::from("xhigh"),
            ReasoningEffort::Other("xhigh".into())
        );
        assert_eq!(ReasoningEffort::Minimal.as_str(), "minimal");
    }
}
