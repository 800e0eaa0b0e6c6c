//! A server-sent events decoder: bytes in, events out.
//!
//! It follows the WHATWG event-stream rules that matter for model APIs:
//! `\n`, `\r\n` and `\r` line ends (also when a `\r\n` pair is split across
//! reads), `:` comment lines, `data` fields spread over several lines (joined
//! with `\n`), `event`/`id` fields, a space after the colon being optional,
//! and an event ending at a blank line. Input may be cut at any byte; the
//! decoder keeps the unfinished line and continues with the next read.
//!
//! A line, or an event's data, longer than the decoder's limit
//! ([`SseDecoder::with_max_event_size`]) stops it: it keeps no more than
//! the limit in memory, drops the rest of the input, and reports
//! [`is_over_limit`](SseDecoder::is_over_limit).

use std::collections::VecDeque;

/// One dispatched event.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event` field; `None` means the default type, "message".
    pub event: Option<String>,
    /// The `data` lines joined with `\n`.
    pub data: String,
    /// The `id` field, if the event had one.
    pub id: Option<String>,
}

/// Incremental decoder. Feed it reads with [`push`](Self::push), take
/// events with [`next_event`](Self::next_event).
#[derive(Debug)]
pub struct SseDecoder {
    /// Longest line, and longest event data, accepted.
    max_event_size: usize,
    /// A line or an event passed the limit; input is ignored from then on.
    over_limit: bool,
    /// Bytes of the line being read (no line end yet).
    line: Vec<u8>,
    /// The previous read ended in `\r`: a leading `\n` now is part of that line end.
    after_cr: bool,
    /// Fields of the event being assembled; the data stays bytes until the
    /// event is complete and is checked to be UTF-8 once, then.
    data: Vec<u8>,
    has_data: bool,
    event: Option<String>,
    id: Option<String>,
    ready: VecDeque<SseEvent>,
}

impl Default for SseDecoder {
    fn default() -> Self {
        Self::with_max_event_size(crate::transport::connection::DEFAULT_MAX_EVENT_SIZE)
    }
}

impl SseDecoder {
    /// An empty decoder with the default limit,
    /// [`DEFAULT_MAX_EVENT_SIZE`](crate::DEFAULT_MAX_EVENT_SIZE).
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty decoder that accepts lines and events of up to `max` bytes.
    pub fn with_max_event_size(max: usize) -> Self {
        Self {
            max_event_size: max,
            over_limit: false,
            line: Vec::new(),
            after_cr: false,
            data: Vec::new(),
            has_data: false,
            event: None,
            id: None,
            ready: VecDeque::new(),
        }
    }

    /// Whether a line or an event's data passed the limit. Events completed
    /// before it can still be taken; later input is ignored.
    pub fn is_over_limit(&self) -> bool {
        self.over_limit
    }

    fn exceed(&mut self) {
        self.over_limit = true;
        self.line = Vec::new();
        self.data = Vec::new();
        self.has_data = false;
    }

    /// Consumes one read of the body.
    pub fn push(&mut self, mut bytes: &[u8]) {
        if self.over_limit {
            return;
        }
        if bytes.is_empty() {
            // An empty read must not forget a pending `\r`.
            return;
        }
        if self.after_cr {
            self.after_cr = false;
            if let Some(rest) = bytes.strip_prefix(b"\n") {
                bytes = rest;
            }
        }
        while let Some(end) = memchr::memchr2(b'\n', b'\r', bytes) {
            if self.line.len() + end > self.max_event_size {
                return self.exceed();
            }
            if self.line.is_empty() {
                self.process_line(&bytes[..end]);
            } else {
                self.line.extend_from_slice(&bytes[..end]);
                let line = std::mem::take(&mut self.line);
                self.process_line(&line);
                // Keep the allocation for the next partial line.
                self.line = line;
                self.line.clear();
            }
            if bytes[end] == b'\r' {
                match bytes.get(end + 1) {
                    Some(b'\n') => bytes = &bytes[end + 2..],
                    Some(_) => bytes = &bytes[end + 1..],
                    None => {
                        self.after_cr = true;
                        bytes = &[];
                    }
                }
            } else {
                bytes = &bytes[end + 1..];
            }
            if self.over_limit {
                return;
            }
        }
        if self.line.len() + bytes.len() > self.max_event_size {
            return self.exceed();
        }
        self.line.extend_from_slice(bytes);
    }

    /// The next complete event, if one is ready.
    pub fn next_event(&mut self) -> Option<SseEvent> {
        self.ready.pop_front()
    }

    /// Whether input ended in the middle of an event (a partial line or
    /// fields without the closing blank line).
    pub fn has_partial_event(&self) -> bool {
        !self.line.is_empty() || self.has_data
    }

    /// Ends the input. Per the standard, an event without its closing blank
    /// line is discarded; this returns it instead so the caller can decide.
    pub fn finish(&mut self) -> Option<SseEvent> {
        if !self.line.is_empty() {
            let line = std::mem::take(&mut self.line);
            self.process_line(&line);
        }
        if self.has_data {
            self.dispatch();
        }
        self.ready.pop_front()
    }

    fn process_line(&mut self, line: &[u8]) {
        if line.is_empty() {
            self.dispatch();
            return;
        }
        if line[0] == b':' {
            return; // comment, e.g. a keep-alive
        }
        let (field, value) = match memchr::memchr(b':', line) {
            Some(colon) => {
                let value = &line[colon + 1..];
                (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &b""[..]),
        };
        match field {
            b"data" => {
                if self.data.len() + value.len() + 1 > self.max_event_size {
                    return self.exceed();
                }
                if self.has_data {
                    self.data.push(b'\n');
                }
                self.data.extend_from_slice(value);
                self.has_data = true;
            }
            b"event" => self.event = Some(String::from_utf8_lossy(value).into_owned()),
            b"id" => self.id = Some(String::from_utf8_lossy(value).into_owned()),
            _ => {} // `retry` and unknown fields do not concern a one-shot stream
        }
    }

    fn dispatch(&mut self) {
        if !self.has_data {
            // An event with no data is not dispatched; its type is reset.
            self.event = None;
            return;
        }
        self.has_data = false;
        self.ready.push_back(SseEvent {
            event: self.event.take(),
            data: into_text(std::mem::take(&mut self.data)),
            id: self.id.clone(),
        });
    }
}

/// The bytes as text: no copy when they are UTF-8 (nearly always), with
/// replacement characters where they are not.
fn into_text(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes)
        .unwrap_or_else(|invalid| String::from_utf8_lossy(invalid.as_bytes()).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn decode_all(reads: &[&[u8]]) -> Vec<SseEvent> {
        let mut decoder = SseDecoder::new();
        let mut events = Vec::new();
        for read in reads {
            decoder.push(read);
            while let Some(event) = decoder.next_event() {
                events.push(event);
            }
        }
        events
    }

    fn data(events: &[SseEvent]) -> Vec<&str> {
        events.iter().map(|e| e.data.as_str()).collect()
    }

    #[test]
    fn line_endings_comments_and_multiline_data() {
        let input = b": keep-alive\r\ndata: one\r\n\r\ndata:two\rdata: more\r\rid: 7\nevent: error\ndata: {\"x\":1}\n\n";
        let events = decode_all(&[input]);
        assert_eq!(data(&events), vec!["one", "two\nmore", "{\"x\":1}"]);
        assert_eq!(events[2].event.as_deref(), Some("error"));
        assert_eq!(events[2].id.as_deref(), Some("7"));
    }

    #[test]
    fn crlf_split_across_reads() {
        let events = decode_all(&[b"data: a\r", b"\n\r", b"\ndata: b\r\n\r\n"]);
        assert_eq!(data(&events), vec!["a", "b"]);
    }

    #[test]
    fn empty_reads_keep_a_pending_cr() {
        let events = decode_all(&[b"data: a\r", b"", b"\ndata: b\r\n\r\n"]);
        assert_eq!(data(&events), vec!["a\nb"]);
    }

    #[test]
    fn events_without_data_are_dropped_and_partial_input_is_reported() {
        let mut decoder = SseDecoder::new();
        decoder.push(b"event: ping\n\ndata: tail");
        assert_eq!(decoder.next_event(), None);
        assert!(decoder.has_partial_event());
        let last = decoder.finish().unwrap();
        assert_eq!(last.data, "tail");
        assert_eq!(last.event, None);
    }

    #[test]
    fn utf8_split_inside_a_character() {
        let text = "data: Привет\n\n".as_bytes();
        let events = decode_all(&[&text[..8], &text[8..9], &text[9..]]);
        assert_eq!(data(&events), vec!["Привет"]);
    }

    #[test]
    fn recorded_stream_decodes() {
        let body = include_bytes!("../../tests/fixtures/llama-server.stream-short.sse");
        let events = decode_all(&[body]);
        assert_eq!(events.len(), 34);
        assert_eq!(events.last().unwrap().data, "[DONE]");
    }

    #[test]
    fn lines_and_events_over_the_limit_stop_the_decoder() {
        // A line of exactly the limit passes; one byte more does not.
        let mut decoder = SseDecoder::with_max_event_size(10);
        decoder.push(b"data: 1234\n\n");
        assert_eq!(decoder.next_event().unwrap().data, "1234");
        decoder.push(b"data: 12345\n\n");
        assert!(decoder.is_over_limit());
        assert_eq!(decoder.next_event(), None);

        // Split over reads, with no line end at all.
        let mut decoder = SseDecoder::with_max_event_size(10);
        decoder.push(b"data: 12");
        decoder.push(b"34");
        assert!(!decoder.is_over_limit());
        decoder.push(b"5");
        assert!(decoder.is_over_limit());
        decoder.push(b"\n\ndata: x\n\n");
        assert_eq!(decoder.next_event(), None);

        // Short lines adding up to a long event.
        let mut decoder = SseDecoder::with_max_event_size(12);
        decoder.push(b"data: 12345\ndata: 678\n");
        assert!(!decoder.is_over_limit());
        decoder.push(b"data: 901\n");
        assert!(decoder.is_over_limit());
    }

    proptest! {
        /// Any split of a valid stream into reads yields the same events.
        #[test]
        fn any_split_gives_the_same_events(cuts in proptest::collection::vec(0usize..2000, 0..40), crlf in any::<bool>()) {
            let mut body = String::new();
            for i in 0..20 {
                body.push_str(&format!(": comment {i}\ndata: {{\"n\":{i},\"text\":\"é{i}\"}}\ndata: second line\n\n"));
            }
            body.push_str("data: [DONE]\n\n");
            let body = if crlf { body.replace('\n', "\r\n") } else { body };
            let bytes = body.as_bytes();
            let whole = decode_all(&[bytes]);
            let mut points: Vec<usize> = cuts.into_iter().map(|c| c % (bytes.len() + 1)).collect();
            points.sort_unstable();
            let mut reads = Vec::new();
            let mut start = 0;
            for point in points {
                reads.push(&bytes[start..point]);
                start = point;
            }
            reads.push(&bytes[start..]);
            prop_assert_eq!(whole.len(), 21);
            prop_assert_eq!(decode_all(&reads), whole);
        }
    }
}
