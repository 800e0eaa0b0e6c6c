//! The `evolution-emulator` binary: prints the client environment, serves, and stops on
//! a signal.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::json;

/// Kills the child if the test fails midway, so no server outlives the test.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_prints_env_lines_and_serves() {
    let mut child = Child(
        Command::new(env!("CARGO_BIN_EXE_evolution-emulator"))
            .args([
                "--key-id",
                "bin-id",
                "--secret",
                "bin-secret",
                "--fault",
                "chat=status:503",
            ])
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn the binary"),
    );
    let stdout = child.0.stdout.take().unwrap();
    let env = tokio::task::spawn_blocking(move || {
        let mut lines = BufReader::new(stdout).lines();
        let mut env = std::collections::HashMap::new();
        while env.len() < 5 {
            let line = lines.next().expect("an env line").expect("utf-8");
            let (k, v) = line.split_once('=').expect("NAME=value");
            env.insert(k.to_owned(), v.to_owned());
        }
        env
    });
    let env = tokio::time::timeout(Duration::from_secs(20), env)
        .await
        .expect("env lines in time")
        .unwrap();
    assert_eq!(env["EVOLUTION_KEY_ID"], "bin-id");
    assert_eq!(env["EVOLUTION_SECRET"], "bin-secret");
    assert!(env["EVOLUTION_BASE_URL"].starts_with("http://127.0.0.1:"));
    assert!(env["EVOLUTION_TOKEN_URL"].ends_with("/api/v1/auth/token"));

    let http = common::client();
    let reply = common::token_reply(&env["EVOLUTION_TOKEN_URL"], "bin-id", "bin-secret").await;
    let token = reply["access_token"].as_str().unwrap();
    let chat = || {
        http.post(format!("{}/chat/completions", env["EVOLUTION_BASE_URL"]))
            .bearer_auth(token)
            .json(&json!({"model": env["EVOLUTION_MODEL"], "messages": [{"role": "user", "content": "hi"}]}))
            .send()
    };
    assert_eq!(chat().await.unwrap().status(), 503, "--fault was applied");
    assert_eq!(chat().await.unwrap().status(), 200);

    #[cfg(unix)]
    {
        // SIGTERM stops it cleanly.
        let pid = child.0.id().to_string();
        let status = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(status.success());
        let exited = tokio::task::spawn_blocking(move || {
            let status = child.0.wait();
            (child, status)
        });
        let (_child, status) = tokio::time::timeout(Duration::from_secs(10), exited)
            .await
            .expect("exits after SIGTERM")
            .unwrap();
        assert!(status.unwrap().success());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_prints_the_api_key_form_on_request() {
    let mut child = Child(
        Command::new(env!("CARGO_BIN_EXE_evolution-emulator"))
            .args(["--api-key", "bin-api-key", "--print-env", "api-key"])
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn the binary"),
    );
    let stdout = child.0.stdout.take().unwrap();
    let lines = tokio::task::spawn_blocking(move || {
        let mut lines = BufReader::new(stdout).lines();
        let first = lines.next().expect("a line").expect("utf-8");
        let second = lines.next().expect("a line").expect("utf-8");
        [first, second]
    });
    let [key_line, url_line] = tokio::time::timeout(Duration::from_secs(20), lines)
        .await
        .expect("env lines in time")
        .unwrap();
    assert_eq!(key_line, "EVOLUTION_API_KEY=bin-api-key");
    let base_url = url_line
        .strip_prefix("EVOLUTION_BASE_URL=")
        .expect("the base URL line");
    let response = common::client()
        .post(format!("{base_url}/chat/completions"))
        .bearer_auth("bin-api-key")
        .json(&json!({"messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    drop(child);
}

#[test]
fn binary_refuses_the_api_key_form_without_a_key() {
    let output = Command::new(env!("CARGO_BIN_EXE_evolution-emulator"))
        .args(["--print-env", "api-key"])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .expect("run the binary");
    assert_eq!(output.status.code(), Some(2));
    assert!(output.stdout.is_empty());
    assert!(String::from_utf8_lossy(&output.stderr).contains("--api-key"));
}
