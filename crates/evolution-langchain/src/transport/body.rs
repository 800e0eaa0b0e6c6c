//! Reading a response body within a size limit, chunk by chunk, so memory
//! stays near the limit whatever the server sends.

use bytes::{Bytes, BytesMut};

/// Why a body could not be read.
#[derive(Debug)]
pub(crate) enum BodyError {
    /// The connection failed or timed out while reading.
    Transport(reqwest::Error),
    /// More than the limit arrived (or was announced in `Content-Length`).
    TooLarge,
}

/// The whole body, or [`BodyError::TooLarge`] as soon as it passes `limit`
/// bytes. Memory use stays within about twice the limit.
pub(crate) async fn read_limited(
    mut response: reqwest::Response,
    limit: usize,
) -> Result<Bytes, BodyError> {
    let announced = response.content_length();
    if announced.is_some_and(|len| len > limit as u64) {
        return Err(BodyError::TooLarge);
    }
    let initial = announced.map_or(8 * 1024, |len| len as usize).min(limit);
    let mut buffer = BytesMut::with_capacity(initial);
    while let Some(chunk) = response.chunk().await.map_err(BodyError::Transport)? {
        if buffer.len() + chunk.len() > limit {
            return Err(BodyError::TooLarge);
        }
        buffer.extend_from_slice(&chunk);
    }
    Ok(buffer.freeze())
}

/// At most the first `limit` bytes of the body; the rest is not read (for
/// error bodies, of which only the message matters). A read error ends it:
/// a timeout is returned as such, any other error keeps what has arrived.
pub(crate) async fn read_prefix(
    mut response: reqwest::Response,
    limit: usize,
) -> Result<Bytes, reqwest::Error> {
    let mut buffer = BytesMut::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                let room = limit - buffer.len();
                if chunk.len() >= room {
                    buffer.extend_from_slice(&chunk[..room]);
                    break;
                }
                buffer.extend_from_slice(&chunk);
            }
            Ok(None) => break,
            Err(e) if e.is_timeout() => return Err(e),
            Err(_) => break,
        }
    }
    Ok(buffer.freeze())
}
