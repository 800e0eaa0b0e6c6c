//! `Reply`: a response head and its body, from reqwest or from the direct
//! hyper client alike, so that reading bodies, redirects and streams is
//! written once.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use reqwest::header::{HeaderMap, CONTENT_LENGTH};
use reqwest::StatusCode;
use tokio::time::Instant;

use super::http::describe_error;

/// A reply whose head has arrived.
pub(crate) struct Reply {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    /// Where the reply came from when that is not where the request went
    /// (a redirect was followed).
    pub(crate) came_from: Option<url::Url>,
    body: ReplyBody,
    /// When reading the body must have ended, if the backend does not
    /// bound it itself (the direct client; reqwest applies the request's
    /// own timeout).
    deadline: Option<Instant>,
}

/// The body of a [`Reply`].
enum ReplyBody {
    Reqwest(reqwest::Body),
    Direct(Incoming),
}

/// Why a request got no reply, or its body could not be read, whichever
/// client sent it.
#[derive(Debug)]
pub(crate) enum HttpError {
    /// reqwest's, sending or reading.
    Reqwest(reqwest::Error),
    /// The direct client's, sending.
    Send(hyper_util::client::legacy::Error),
    /// hyper's, reading a body the direct client received.
    Body(hyper::Error),
    /// A deadline of ours passed.
    Timeout,
    /// A request that could not be made (a redirect to something that is no
    /// URI, say), as text.
    Invalid(String),
}

impl HttpError {
    /// Whether it ran out of time: a timeout of reqwest's or ours, or the
    /// direct client's connect timeout (as reqwest reports its own).
    pub(crate) fn is_timeout(&self) -> bool {
        match self {
            HttpError::Reqwest(e) => e.is_timeout(),
            HttpError::Send(e) => {
                let mut cause = std::error::Error::source(e);
                while let Some(e) = cause {
                    let timed_out = e
                        .downcast_ref::<std::io::Error>()
                        .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut);
                    if timed_out {
                        return true;
                    }
                    cause = e.source();
                }
                false
            }
            HttpError::Body(e) => e.is_timeout(),
            HttpError::Timeout => true,
            HttpError::Invalid(_) => false,
        }
    }

    /// What happened, with its causes.
    pub(crate) fn describe(&self) -> String {
        match self {
            HttpError::Reqwest(e) => describe_error(e),
            HttpError::Send(e) => describe_error(e),
            HttpError::Body(e) => describe_error(e),
            HttpError::Timeout => "the reply did not arrive in time".to_string(),
            HttpError::Invalid(message) => message.clone(),
        }
    }
}

impl From<reqwest::Error> for HttpError {
    fn from(error: reqwest::Error) -> Self {
        HttpError::Reqwest(error)
    }
}

impl Reply {
    /// A reply reqwest received for a request to `requested`.
    pub(crate) fn from_reqwest(response: reqwest::Response, requested: &url::Url) -> Self {
        let came_from = (response.url() != requested).then(|| response.url().clone());
        let response: hyper::Response<reqwest::Body> = response.into();
        let (head, body) = response.into_parts();
        Self {
            status: head.status,
            headers: head.headers,
            came_from,
            body: ReplyBody::Reqwest(body),
            deadline: None,
        }
    }

    /// A reply the direct client received; its body must be read by
    /// `deadline` when one is given.
    pub(crate) fn from_direct(
        response: hyper::Response<Incoming>,
        came_from: Option<url::Url>,
        deadline: Option<Instant>,
    ) -> Self {
        let (head, body) = response.into_parts();
        Self {
            status: head.status,
            headers: head.headers,
            came_from,
            body: ReplyBody::Direct(body),
            deadline,
        }
    }

    /// The `Content-Length` the server announced.
    pub(crate) fn content_length(&self) -> Option<u64> {
        self.headers
            .get(CONTENT_LENGTH)?
            .to_str()
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// The next piece of the body, `None` at its end.
    pub(crate) async fn chunk(&mut self) -> Result<Option<Bytes>, HttpError> {
        match self.deadline {
            None => next_data(&mut self.body).await,
            Some(deadline) => tokio::time::timeout_at(deadline, next_data(&mut self.body))
                .await
                .unwrap_or(Err(HttpError::Timeout)),
        }
    }

    /// The body as a stream of pieces (for server-sent events, whose reader
    /// bounds the waits itself).
    pub(crate) fn into_data_stream(
        self,
    ) -> impl futures::Stream<Item = Result<Bytes, HttpError>> + Send + 'static {
        self.body.into_data_stream()
    }
}

/// The next data frame of `body` (trailers are skipped).
async fn next_data(body: &mut ReplyBody) -> Result<Option<Bytes>, HttpError> {
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            return Ok(Some(data));
        }
    }
    Ok(None)
}

impl Body for ReplyBody {
    type Data = Bytes;
    type Error = HttpError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, HttpError>>> {
        match self.get_mut() {
            ReplyBody::Reqwest(body) => Pin::new(body)
                .poll_frame(cx)
                .map(|frame| frame.map(|f| f.map_err(HttpError::Reqwest))),
            ReplyBody::Direct(body) => Pin::new(body)
                .poll_frame(cx)
                .map(|frame| frame.map(|f| f.map_err(HttpError::Body))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ReplyBody::Reqwest(body) => body.is_end_stream(),
            ReplyBody::Direct(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ReplyBody::Reqwest(body) => body.size_hint(),
            ReplyBody::Direct(body) => body.size_hint(),
        }
    }
}
