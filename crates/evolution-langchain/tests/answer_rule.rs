//! One rule for what an answer is (`Choice::answer`), whichever way the
//! reply arrives: a reply with no content, no tool calls and no finish
//! reason is an invalid response through every call, streamed or not.

use evolution_emulator::{Fault, Target};
use evolution_langchain::{ChatMessage, ChatOptions, Error};

mod common;
use common::{client, emulator};

#[tokio::test]
async fn an_answerless_reply_is_invalid_streamed_or_not() {
    let emu = emulator().await;
    for streaming in [false, true] {
        let llm = client(&emu).streaming(streaming).build().unwrap();
        emu.inject(Target::Chat, Fault::ContentNull, 1);
        let err = llm.invoke("hello").await.unwrap_err();
        assert!(
            matches!(err, Error::InvalidResponse { .. }),
            "streaming {streaming}: {err:?}"
        );
        assert!(err.to_string().contains("no content"), "{err}");

        emu.inject(Target::Chat, Fault::ContentNull, 1);
        let err = llm
            .chat([ChatMessage::user("hello")], ChatOptions::new())
            .await
            .unwrap_err();
        assert!(matches!(err, Error::InvalidResponse { .. }), "{err:?}");

        // In a batch it is that prompt's failure; the other answer stays.
        emu.inject(Target::Chat, Fault::ContentNull, 1);
        let llm = client(&emu)
            .streaming(streaming)
            .max_concurrency(1)
            .build()
            .unwrap();
        let err = llm
            .invoke_batch(&["first", "second"], ChatOptions::new())
            .await
            .unwrap_err();
        assert_eq!(err.partial.texts(), vec!["", "second"]);
        assert!(matches!(err.first().1, Error::InvalidResponse { .. }));

        // A normal answer is the same text either way.
        assert_eq!(llm.invoke("one two").await.unwrap(), "one two");
    }
}

#[cfg(feature = "langchain")]
#[tokio::test]
async fn the_langchain_llm_applies_the_same_rule() {
    use evolution_langchain::langchain::LLM;
    use evolution_langchain::langchain_rust::language_models::LLMError;
    use evolution_langchain::langchain_rust::schemas::Message;

    let emu = emulator().await;
    for streaming in [false, true] {
        let llm = client(&emu).streaming(streaming).build().unwrap();
        emu.inject(Target::Chat, Fault::ContentNull, 1);
        let err = LLM::generate(&llm, &[Message::new_human_message("hi")])
            .await
            .unwrap_err();
        assert!(matches!(err, LLMError::ParsingError(_)), "{err:?}");
        let ok = LLM::generate(&llm, &[Message::new_human_message("hi there")])
            .await
            .unwrap();
        assert_eq!(ok.generation, "hi there");
    }
}
