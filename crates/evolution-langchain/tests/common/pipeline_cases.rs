//! One table of what the request pipeline does with each status and
//! `Retry-After` form, run through every client that sends with it: the
//! crate's own client, the async-openai layer and the rig transport. A
//! scripted server answers each case's statuses in turn, then a chat reply,
//! and records the bearer and request id of every request it saw.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use evolution_langchain::{AccessToken, TokenSource};

pub use super::scripted::{Reply, Scripted};

/// The chat reply the server sends once a case's script is done.
pub const ANSWER: &str = "scripted answer";

const CHAT_JSON: &str = r#"{"id":"c1","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"finish_reason":"stop","message":{"role":"assistant","content":"scripted answer"}}],"usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3}}"#;

/// `status` with an OpenAI-style error body.
fn status(status: u16) -> Reply {
    Reply::json(
        status,
        &serde_json::json!({"error": {"message": format!("scripted {status}"), "type": "scripted"}}),
    )
}

/// `status` with one header.
fn with_header(status: u16, name: &'static str, value: impl Into<String>) -> Reply {
    Reply {
        headers: vec![(name, value.into())],
        ..self::status(status)
    }
}

/// What every client must make of a case.
#[derive(Debug, Clone, Copy)]
pub enum Expect {
    /// The answer arrives after `requests` requests, not before `min_wait`;
    /// `new_token`: the last request carried a different bearer from the first.
    Answer {
        requests: usize,
        min_wait: Duration,
        new_token: bool,
    },
    /// The call fails with `status` after `requests` requests.
    Fails { status: u16, requests: usize },
}

/// A row of the table.
#[derive(Debug, Clone)]
pub struct Case {
    pub name: &'static str,
    pub script: Vec<Reply>,
    pub expect: Expect,
}

/// The table. Clients are built with two retries (the default).
pub fn cases() -> Vec<Case> {
    let answer = |requests, min_wait_ms, new_token| Expect::Answer {
        requests,
        min_wait: Duration::from_millis(min_wait_ms),
        new_token,
    };
    let http_date = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(2));
    vec![
        Case {
            name: "503 then an answer",
            script: vec![status(503)],
            expect: answer(2, 0, false),
        },
        Case {
            name: "408, 502 and 520 are retried",
            script: vec![status(408), status(520)],
            expect: answer(3, 0, false),
        },
        Case {
            name: "429 with Retry-After in seconds",
            script: vec![with_header(429, "retry-after", "1")],
            expect: answer(2, 1000, false),
        },
        Case {
            name: "503 with a fractional Retry-After",
            script: vec![with_header(503, "retry-after", "0.6")],
            expect: answer(2, 600, false),
        },
        Case {
            name: "429 with retry-after-ms",
            script: vec![with_header(429, "retry-after-ms", "700")],
            expect: answer(2, 700, false),
        },
        Case {
            name: "503 with an HTTP-date Retry-After",
            // A whole-second date two seconds ahead: at least one second away.
            script: vec![with_header(503, "retry-after", http_date)],
            expect: answer(2, 900, false),
        },
        Case {
            name: "a Retry-After past the cap is not waited for",
            script: vec![with_header(503, "retry-after", "86400")],
            expect: answer(2, 0, false),
        },
        Case {
            name: "500 until the retries run out",
            script: vec![status(500), status(500), status(500)],
            expect: Expect::Fails {
                status: 500,
                requests: 3,
            },
        },
        Case {
            name: "400 is not retried",
            script: vec![status(400)],
            expect: Expect::Fails {
                status: 400,
                requests: 1,
            },
        },
        Case {
            name: "501 is not retried",
            script: vec![status(501)],
            expect: Expect::Fails {
                status: 501,
                requests: 1,
            },
        },
        Case {
            name: "401 gets one new token",
            script: vec![status(401)],
            expect: answer(2, 0, true),
        },
        Case {
            name: "403 gets one new token",
            script: vec![status(403)],
            expect: answer(2, 0, true),
        },
        Case {
            name: "a second 401 stands",
            script: vec![status(401), status(401)],
            expect: Expect::Fails {
                status: 401,
                requests: 2,
            },
        },
    ]
}

/// Serves `script`, then [`CHAT_JSON`] to every further request.
pub async fn serve(script: Vec<Reply>) -> Scripted {
    let answer = serde_json::from_str(CHAT_JSON).unwrap();
    Scripted::serve(script, Reply::json(200, &answer)).await
}

/// A token source handing out `t1`, `t2`, …: a new one after each
/// invalidation, so a retry with a new token is visible to the server.
#[derive(Debug, Default)]
pub struct NumberedTokens {
    issued: AtomicUsize,
    current: Mutex<Option<String>>,
}

#[async_trait::async_trait]
impl TokenSource for NumberedTokens {
    async fn token(&self) -> evolution_langchain::Result<AccessToken> {
        let mut current = self.current.lock().unwrap();
        let token = current
            .get_or_insert_with(|| format!("t{}", self.issued.fetch_add(1, Ordering::SeqCst) + 1));
        Ok(AccessToken::new(token.clone()))
    }

    fn invalidate(&self) {
        *self.current.lock().unwrap() = None;
    }
}

/// Runs every case through one client. `call` gets the case's base URL and
/// a fresh token source, makes one chat call, and returns the answer's text
/// or the HTTP status of the failure (`None` when its error has none).
pub async fn run_all<F, Fut>(client: &str, call: F)
where
    F: Fn(String, Arc<dyn TokenSource>) -> Fut,
    Fut: Future<Output = Result<String, Option<u16>>>,
{
    for index in 0..cases().len() {
        // Made anew for each case, so a date in a header is ahead of now.
        let case = cases().swap_remove(index);
        let server = serve(case.script.clone()).await;
        let started = Instant::now();
        let outcome = call(server.base_url.clone(), Arc::new(NumberedTokens::default())).await;
        let elapsed = started.elapsed();
        let seen = server.seen.lock().unwrap().clone();
        let what = format!("{client}, {}: {outcome:?}, saw {seen:?}", case.name);
        match case.expect {
            Expect::Answer {
                requests,
                min_wait,
                new_token,
            } => {
                assert_eq!(outcome.as_deref(), Ok(ANSWER), "{what}");
                assert_eq!(seen.len(), requests, "{what}");
                assert!(elapsed >= min_wait, "{what}: answered after {elapsed:?}");
                // A cap-sized wait would take a day; backoff is well under 2 s.
                assert!(
                    elapsed < min_wait + Duration::from_secs(2),
                    "{what}: {elapsed:?}"
                );
                let changed = seen.first().unwrap().bearer != seen.last().unwrap().bearer;
                assert_eq!(changed, new_token, "{what}");
            }
            Expect::Fails { status, requests } => {
                match outcome {
                    Err(Some(got)) => assert_eq!(got, status, "{what}"),
                    Err(None) => {}
                    Ok(_) => panic!("{what}: expected a failure"),
                }
                assert_eq!(seen.len(), requests, "{what}");
            }
        }
        // Every attempt of the call carries the call's one request id.
        let first = seen[0].request_id.clone();
        assert!(first.as_deref().is_some_and(|id| !id.is_empty()), "{what}");
        assert!(seen.iter().all(|s| s.request_id == first), "{what}");
        assert!(
            seen.iter().all(|s| s
                .bearer
                .as_deref()
                .is_some_and(|b| b.starts_with("Bearer t"))),
            "{what}"
        );
    }
}
