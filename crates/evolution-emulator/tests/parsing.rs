//! Text forms of faults and targets, the CLI options, and `env_lines`.

mod common;

use std::time::Duration;

use clap::Parser;
use evolution_emulator::{env_lines, Emulator, EmulatorArgs, Fault, FaultSpec, Target};
use serde_json::json;

#[test]
fn faults_parse_from_their_documented_forms() {
    let cases = [
        ("status:503", Fault::Status(503)),
        ("status:429:2", Fault::StatusRetryAfter(429, 2)),
        ("delay:250ms", Fault::Delay(Duration::from_millis(250))),
        ("delay:2s", Fault::Delay(Duration::from_secs(2))),
        ("delay:1.5s", Fault::Delay(Duration::from_millis(1500))),
        ("delay:40", Fault::Delay(Duration::from_millis(40))),
        ("delay:100us", Fault::Delay(Duration::from_micros(100))),
        ("not-json", Fault::NotJson),
        ("html", Fault::Html),
        ("missing-field", Fault::MissingField),
        ("expires-in:-5", Fault::ExpiresIn(json!(-5))),
        ("expires-in:soon", Fault::ExpiresIn(json!("soon"))),
        ("expires-in:\"10\"", Fault::ExpiresIn(json!("10"))),
        ("drop", Fault::DropConnection),
        ("cut-stream:3", Fault::CutStream(3)),
        ("stream-error:3", Fault::StreamError(3)),
        (" Status:500 ", Fault::Status(500)),
        (
            "redirect:307:http://127.0.0.1:9/x?y=1",
            Fault::Redirect(307, "http://127.0.0.1:9/x?y=1".into()),
        ),
        ("stall-body:500", Fault::StallBody(500)),
        ("oversize:1048576", Fault::Oversize(1_048_576)),
        ("access-token:abc", Fault::AccessToken("abc".into())),
        ("access-token:\"a\\nb\"", Fault::AccessToken("a\nb".into())),
        (
            "access-token-newline",
            Fault::AccessToken(Fault::NEWLINE_ACCESS_TOKEN.into()),
        ),
        ("content-null", Fault::ContentNull),
        ("trickle:200ms", Fault::Trickle(Duration::from_millis(200))),
        ("refuse-json-schema", Fault::RefuseJsonSchema),
        ("off-schema", Fault::OffSchema),
    ];
    for (text, fault) in cases {
        assert_eq!(text.parse::<Fault>().unwrap(), fault, "{text}");
        // Display is the inverse of FromStr.
        assert_eq!(
            fault.to_string().parse::<Fault>().unwrap(),
            fault,
            "{fault}"
        );
    }
}

#[test]
fn bad_fault_strings_are_errors_not_panics() {
    for text in [
        "",
        "status",
        "status:",
        "status:abc",
        "status:99",
        "status:600",
        "status:70000",
        "status:429:x",
        "delay:fast",
        "delay:5h",
        "delay:-1ms",
        "cut-stream",
        "cut-stream:-1",
        "stream-error:x",
        "html:1",
        "drop:now",
        "explode",
        "expires-in:",
        "redirect",
        "redirect:307",
        "redirect:307:",
        "redirect:200:http://x",
        "redirect:abc:http://x",
        "stall-body",
        "stall-body:99",
        "oversize:-1",
        "oversize:lots",
        "access-token",
        "access-token-newline:1",
        "content-null:1",
        "trickle",
        "trickle:fast",
        "refuse-json-schema:1",
        "off-schema:yes",
    ] {
        let err = text.parse::<Fault>().expect_err(text);
        assert!(!err.to_string().is_empty());
    }
}

#[test]
fn targets_parse() {
    for (text, target) in [
        ("auth", Target::Auth),
        ("chat", Target::Chat),
        ("models", Target::Models),
        ("embeddings", Target::Embeddings),
        ("rerank", Target::Rerank),
        ("api", Target::Api),
        ("CHAT", Target::Chat),
    ] {
        assert_eq!(text.parse::<Target>().unwrap(), target);
        assert_eq!(target.to_string().parse::<Target>().unwrap(), target);
    }
    assert!("moon".parse::<Target>().is_err());
}

#[test]
fn fault_specs_parse_with_repeat_counts() {
    let spec: FaultSpec = "chat=status:503x2".parse().unwrap();
    assert_eq!(
        spec,
        FaultSpec {
            target: Target::Chat,
            fault: Fault::Status(503),
            times: 2
        }
    );
    assert_eq!(spec.to_string(), "chat=status:503x2");
    let spec: FaultSpec = "auth=drop".parse().unwrap();
    assert_eq!(
        (spec.target, spec.fault, spec.times),
        (Target::Auth, Fault::DropConnection, 1)
    );
    let spec: FaultSpec = "embeddings=delay:20msx3".parse().unwrap();
    assert_eq!(spec.fault, Fault::Delay(Duration::from_millis(20)));
    assert_eq!(spec.times, 3);
    for bad in [
        "chat",
        "chat=",
        "=drop",
        "chat=dropx0",
        "moon=drop",
        "chat=boom",
    ] {
        assert!(bad.parse::<FaultSpec>().is_err(), "{bad}");
    }
}

#[derive(Debug, Parser)]
struct Cli {
    #[command(flatten)]
    emulator: EmulatorArgs,
}

#[test]
fn emulator_args_parse() {
    let cli = Cli::try_parse_from([
        "x",
        "--port",
        "0",
        "--key-id",
        "k",
        "--secret",
        "s",
        "--token-ttl",
        "60",
        "--word-delay-ms",
        "5",
        "--model",
        "a",
        "--model",
        "b",
        "--fault",
        "chat=status:503x2",
        "--fault",
        "auth=drop",
    ])
    .unwrap();
    let args = cli.emulator;
    assert_eq!((args.key_id.as_str(), args.secret.as_str()), ("k", "s"));
    assert_eq!(args.token_ttl, 60);
    assert_eq!(args.word_delay_ms, 5);
    assert_eq!(args.model, ["a", "b"]);
    assert_eq!(args.fault.len(), 2);
    assert_eq!(args.upstream, None);

    let defaults = Cli::try_parse_from(["x"]).unwrap().emulator;
    assert_eq!(defaults, EmulatorArgs::default());
    assert_eq!(defaults.key_id, "emulator-key-id");
    assert_eq!(defaults.token_ttl, 3600);

    let err = Cli::try_parse_from(["x", "--fault", "chat=boom"]).unwrap_err();
    assert!(err.to_string().contains("boom"), "{err}");
}

#[test]
fn fault_spec_repeat_counts_are_capped() {
    let spec: FaultSpec = "chat=status:500x1000000".parse().unwrap();
    assert_eq!(spec.times, 1_000_000);
    for bad in [
        "chat=status:500x1000001",
        "chat=status:500x10000000000",
        "chat=status:500x18446744073709551615",
        "chat=status:500x99999999999999999999999999",
    ] {
        let err = bad.parse::<FaultSpec>().expect_err(bad).to_string();
        assert!(
            err.contains("repeat count") && err.contains("1000000"),
            "{bad}: {err}"
        );
    }
    // On the command line that is a usage error, not a panic or an allocation abort.
    let err =
        Cli::try_parse_from(["x", "--fault", "chat=status:500x18446744073709551615"]).unwrap_err();
    assert!(err.to_string().contains("repeat count"), "{err}");
}

#[test]
fn token_ttl_flag_takes_one_second_to_366_days() {
    assert!(Cli::try_parse_from(["x", "--token-ttl", "-1"]).is_err());
    for bad in ["0", "31622401", "18446744073709551615"] {
        let err = Cli::try_parse_from(["x", "--token-ttl", bad]).expect_err(bad);
        assert!(err.to_string().contains("--token-ttl"), "{bad}: {err}");
    }
    for (good, secs) in [("1", 1), ("31622400", 31_622_400)] {
        let args = Cli::try_parse_from(["x", "--token-ttl", good])
            .unwrap()
            .emulator;
        assert_eq!(args.token_ttl, secs);
    }
}

#[tokio::test]
async fn args_build_and_fault_a_running_emulator() {
    let cli = Cli::try_parse_from([
        "x",
        "--key-id",
        "cli-id",
        "--secret",
        "cli-secret",
        "--token-ttl",
        "90",
        "--model",
        "cli/model",
        "--fault",
        "models=status:503x2",
    ])
    .unwrap();
    let emu = cli.emulator.builder().start().await.unwrap();
    cli.emulator.apply_faults(&emu);
    assert_eq!(emu.key_id(), "cli-id");
    let reply = common::token_reply(&emu.auth_url(), "cli-id", "cli-secret").await;
    assert_eq!(reply["expires_in"], 90);
    let token = reply["access_token"].as_str().unwrap();
    let models = |_: ()| {
        common::client()
            .get(format!("{}/models", emu.base_url()))
            .bearer_auth(token)
            .send()
    };
    assert_eq!(models(()).await.unwrap().status(), 503);
    assert_eq!(models(()).await.unwrap().status(), 503);
    let body: serde_json::Value = models(()).await.unwrap().json().await.unwrap();
    assert_eq!(body["data"][0]["id"], "cli/model");

    let lines = env_lines(&emu);
    assert!(lines.contains("EVOLUTION_KEY_ID=cli-id\n"));
    assert!(lines.contains("EVOLUTION_SECRET=cli-secret\n"));
    assert!(lines.contains(&format!("EVOLUTION_BASE_URL={}\n", emu.base_url())));
    assert!(lines.contains(&format!("EVOLUTION_TOKEN_URL={}\n", emu.auth_url())));
    assert!(lines.contains("EVOLUTION_MODEL=cli/model\n"));
    emu.shutdown().await;
}

#[tokio::test]
async fn zero_embedding_dimensions_are_refused() {
    let err = Emulator::builder()
        .embedding_dimensions(0)
        .start()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
}
