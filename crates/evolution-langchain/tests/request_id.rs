//! `X-Request-ID`: one fresh id per call, the same on its retries and on the
//! retry after a token refresh, and in every error the call ends with.

mod common;

use std::time::Duration;

use evolution_emulator::{EmulatorHandle, Fault, Target};
use evolution_langchain::{ChatMessage, ChatOptions, Error, EvolutionEmbeddings};
use futures::StreamExt;

use common::{client, emulator};

fn ids(emu: &EmulatorHandle) -> Vec<String> {
    emu.requests()
        .into_iter()
        .map(|r| r.request_id.expect("every request carries an id"))
        .collect()
}

fn looks_fresh(id: &str) {
    assert_eq!(id.len(), 32, "{id}");
    assert!(id.bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
}

#[tokio::test]
async fn one_id_per_call_kept_across_retries() {
    let emu = emulator().await;
    let llm = client(&emu).build().unwrap();
    emu.inject(Target::Chat, Fault::Status(503), 1);
    llm.invoke("first").await.unwrap();
    let first = ids(&emu);
    assert_eq!(first.len(), 2, "one retry");
    assert_eq!(first[0], first[1], "a retry keeps the call's id");
    looks_fresh(&first[0]);

    emu.clear_requests();
    llm.invoke("second").await.unwrap();
    let second = ids(&emu);
    assert_eq!(second.len(), 1);
    assert_ne!(second[0], first[0], "each call has its own id");

    // The retry after a rejected token keeps it too.
    emu.clear_requests();
    emu.revoke_tokens();
    llm.invoke("third").await.unwrap();
    let third = ids(&emu);
    assert_eq!(third.len(), 2);
    assert_eq!(third[0], third[1]);
    assert_eq!(emu.counters().auth_requests, 2);

    // Streams: retried before the first chunk, under one id.
    emu.clear_requests();
    emu.inject(Target::Chat, Fault::Status(502), 1);
    let stream = llm.stream("fourth").await.unwrap();
    assert_eq!(stream.request_id().unwrap().sent(), ids(&emu)[0]);
    stream.collect_response().await.unwrap();
    let fourth = ids(&emu);
    assert_eq!(fourth.len(), 2);
    assert_eq!(fourth[0], fourth[1]);
}

#[tokio::test]
async fn every_kind_of_call_sends_one() {
    let emu = emulator().await;
    let llm = client(&emu).build().unwrap();
    llm.list_models().await.unwrap();
    let embeddings = EvolutionEmbeddings::builder()
        .model("emulator/embed")
        .key_id(emu.key_id())
        .secret(emu.secret())
        .base_url(emu.base_url())
        .auth_url(emu.auth_url())
        .build()
        .unwrap();
    embeddings.embed("x").await.unwrap();
    let sent = ids(&emu);
    assert_eq!(sent.len(), 2);
    assert_ne!(sent[0], sent[1]);
    sent.iter().for_each(|id| looks_fresh(id));
}

#[tokio::test]
async fn errors_carry_the_id() {
    let emu = emulator().await;
    let llm = client(&emu)
        .max_retries(1)
        .request_timeout(Duration::from_millis(500))
        .build()
        .unwrap();

    // A refused request.
    emu.inject(Target::Chat, Fault::Status(400), 1);
    let err = llm.invoke("x").await.unwrap_err();
    let sent = ids(&emu).pop().unwrap();
    let id = err.request_id().expect("the error has the id");
    assert_eq!(id.sent(), sent);
    // The emulator echoes it as its own.
    assert_eq!(id.server(), Some(sent.as_str()));
    assert!(
        err.to_string().contains(&format!("request id {sent}")),
        "{err}"
    );
    assert_eq!(err.to_string().lines().count(), 1);

    // Retries that ran out: the id of the call, sent on both attempts.
    emu.clear_requests();
    emu.inject(Target::Chat, Fault::Status(503), 2);
    let err = llm.invoke("x").await.unwrap_err();
    let sent = ids(&emu);
    assert_eq!(sent.len(), 2);
    assert!(
        matches!(err, Error::Unavailable { attempts: 2, .. }),
        "{err:?}"
    );
    assert_eq!(err.request_id().unwrap().sent(), sent[0]);

    // A dropped connection: no server id, ours still.
    emu.clear_requests();
    emu.inject(Target::Chat, Fault::DropConnection, 2);
    let err = llm.invoke("x").await.unwrap_err();
    let id = err.request_id().expect("connection errors have it");
    assert_eq!(id.sent(), ids(&emu)[0]);
    assert_eq!(id.server(), None);

    // An invalid reply, and a stream that broke midway.
    emu.clear_requests();
    emu.inject(Target::Chat, Fault::ContentNull, 1);
    let err = llm.invoke("x").await.unwrap_err();
    assert!(matches!(err, Error::InvalidResponse { .. }), "{err:?}");
    assert_eq!(err.request_id().unwrap().sent(), ids(&emu)[0]);

    emu.clear_requests();
    emu.inject(Target::Chat, Fault::StreamError(1), 1);
    let mut stream = llm
        .stream_chat(&[ChatMessage::user("a b c")], ChatOptions::default())
        .await
        .unwrap();
    let mut last = None;
    while let Some(item) = stream.next().await {
        last = Some(item);
    }
    let err = last.unwrap().unwrap_err();
    assert!(matches!(err, Error::Stream { .. }), "{err:?}");
    assert_eq!(err.request_id().unwrap().sent(), ids(&emu)[0]);

    // A timeout.
    emu.clear_requests();
    emu.inject(Target::Chat, Fault::Delay(Duration::from_secs(3)), 2);
    let err = llm.invoke("x").await.unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
    assert_eq!(err.request_id().unwrap().sent(), ids(&emu)[0]);
}
