//! `X-Request-ID` on `/v1` responses: the caller's own id echoed back when it is a
//! usable header value, otherwise one the emulator makes up (`emu-<n>`), so every answer
//! (success, error, stream or fault with a head) can be matched to its request.

use axum::http::{HeaderMap, HeaderName, HeaderValue};

use crate::state::State;

/// The header's name (HTTP/1 header names are case-insensitive; this is how it is sent).
pub(crate) const HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// The longest incoming id that is echoed; longer ones are replaced by a generated id.
pub(crate) const MAX_LEN: usize = 200;

/// Whether a path is answered with an `x-request-id`.
pub(crate) fn applies_to(path: &str) -> bool {
    path == "/v1" || path.starts_with("/v1/")
}

/// The id the response carries: the first incoming `X-Request-ID` if it is non-empty,
/// at most [`MAX_LEN`] bytes and printable ASCII, else `emu-<n>`.
pub(crate) fn for_request(headers: &HeaderMap, state: &State) -> HeaderValue {
    match headers.get(&HEADER) {
        Some(value) if echoable(value) => value.clone(),
        _ => generated(state.next_request_number()),
    }
}

fn echoable(value: &HeaderValue) -> bool {
    let bytes = value.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= MAX_LEN
        && value.to_str().is_ok_and(|s| {
            !s.trim().is_empty() && s.bytes().all(|b| b == b' ' || b.is_ascii_graphic())
        })
}

fn generated(n: u64) -> HeaderValue {
    HeaderValue::from_str(&format!("emu-{n}")).unwrap_or_else(|_| HeaderValue::from_static("emu"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_usable_ids_are_echoed() {
        assert!(echoable(&HeaderValue::from_static("abc-123")));
        assert!(echoable(
            &HeaderValue::from_str(&"a".repeat(MAX_LEN)).unwrap()
        ));
        assert!(!echoable(
            &HeaderValue::from_str(&"a".repeat(MAX_LEN + 1)).unwrap()
        ));
        assert!(!echoable(&HeaderValue::from_static("")));
        assert!(!echoable(&HeaderValue::from_static("   ")));
        assert!(!echoable(&HeaderValue::from_bytes(b"caf\xc3\xa9").unwrap()));
        assert!(!echoable(&HeaderValue::from_bytes(b"tab\there").unwrap()));
        assert_eq!(generated(7), "emu-7");
    }

    #[test]
    fn applies_to_v1_only() {
        assert!(applies_to("/v1"));
        assert!(applies_to("/v1/chat/completions"));
        assert!(!applies_to("/v10"));
        assert!(!applies_to("/api/v1/auth/token"));
        assert!(!applies_to("/_emulator/counters"));
    }
}
