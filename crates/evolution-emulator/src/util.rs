//! Small self-contained helpers: ids, clocks, hashing, and base64 through the `base64`
//! crate's engines.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;

/// Seconds since the Unix epoch, as OpenAI's `created` fields use.
pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `prefix` followed by `len` random alphanumerics, like llama.cpp's `chatcmpl-…` ids.
pub(crate) fn random_id(prefix: &str, len: usize) -> String {
    let mut id = String::with_capacity(prefix.len() + len);
    id.push_str(prefix);
    id.extend(std::iter::repeat_with(fastrand::alphanumeric).take(len));
    id
}

/// FNV-1a: stable across platforms and releases, unlike `DefaultHasher`, so embeddings
/// stay identical between runs and machines.
pub(crate) fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// One step of SplitMix64, a tiny deterministic generator seeded from the text hash.
pub(crate) fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Standard padded base64 (OpenAI's `encoding_format: "base64"`).
pub(crate) fn base64_standard(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Unpadded base64url, as JWT segments use.
pub(crate) fn base64_url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Whitespace-separated words: the emulator's notion of a token.
pub(crate) fn word_count(text: &str) -> usize {
    text.split_whitespace().count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648_vectors() {
        let cases = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ];
        for (input, expected) in cases {
            assert_eq!(base64_standard(input.as_bytes()), expected);
            assert_eq!(base64_url(input.as_bytes()), expected.trim_end_matches('='));
        }
        assert_eq!(base64_url(&[0xfb, 0xff]), "-_8");
    }

    #[test]
    fn random_ids_have_prefix_and_length() {
        let id = random_id("chatcmpl-", 32);
        assert!(id.starts_with("chatcmpl-"));
        assert_eq!(id.len(), 9 + 32);
        assert_ne!(id, random_id("chatcmpl-", 32));
    }
}
