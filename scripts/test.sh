#!/usr/bin/env bash
# The whole test suite, as CI runs it:
#   1. unit, integration and doc tests of every crate (emulator on loopback);
#   2. the end-to-end suite against a real model: llama.cpp serving SmolLM2
#      behind the emulator (built into ~/.cache/evolution-langchain on first use).
# Set EVOLUTION_SKIP_E2E=1 to run only steps 1 and 2 (it says so loudly).
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "cargo test --workspace (unit, integration, doc tests)"
cargo test --workspace

# rig 0.46 declares rust-version 1.97.1; it builds and passes on older
# toolchains (CI's is 1.95), so builds with every feature skip that check.
all_features=(--all-features --ignore-rust-version)

step "the bridges, OpenTelemetry and the Redis fleet (every feature, one build)"
cargo test -p evolution-langchain "${all_features[@]}" \
  --test async_openai --test rig --test genai --test otel --test telemetry --test redis
cargo test -p evolution-langchain "${all_features[@]}" --doc

step "https through native-tls (the workspace build above used rustls, the default)"
cargo test -p evolution-langchain --no-default-features --features native-tls --test tls

step "the feature examples, against the embedded emulator"
run_example() { # EXAMPLE TEXT-EXPECTED-ON-STDOUT
  local out
  out=$(env -u EVOLUTION_KEY_ID -u EVOLUTION_API_KEY -u CLOUD_RU_FOUNDATION_MODELS_API_KEY \
    cargo run -q -p evolution-langchain "${all_features[@]}" --example "$1") || {
    echo "error: example $1 failed" >&2
    exit 1
  }
  if ! grep -qF -- "$2" <<<"$out"; then
    printf 'error: example %s did not print %q:\n%s\n' "$1" "$2" "$out" >&2
    exit 1
  fi
  echo "example $1: ok"
}
run_example async_openai_chat "capital of France"
run_example rig_agent "HELLO"
run_example otel_traces "gen_ai.client.operation.duration"

if [ "${EVOLUTION_SKIP_E2E:-0}" = "1" ]; then
  echo "!!! EVOLUTION_SKIP_E2E=1: the end-to-end suite against a real model was NOT run"
  exit 0
fi

step "local model: install (cached after the first run)"
if ! scripts/local-model.sh install; then
  echo "error: installing the local model failed (see the step above); the end-to-end suite cannot run" >&2
  exit 1
fi

step "local model: start"
started=$(scripts/local-model.sh start) || {
  echo "error: the local model server did not start; the end-to-end suite cannot run" >&2
  exit 1
}
echo "$started"
trap 'scripts/local-model.sh stop >/dev/null 2>&1 || true' EXIT
LOCAL_MODEL_URL=$(printf '%s\n' "$started" | sed -n 's/^LOCAL_MODEL_URL=//p' | tail -n 1)
if [ -z "$LOCAL_MODEL_URL" ]; then
  echo "error: local-model.sh start did not print LOCAL_MODEL_URL" >&2
  exit 1
fi
export LOCAL_MODEL_URL

step "end-to-end suite against $LOCAL_MODEL_URL"
cargo build -p evolution-cli
cargo test -p evolution-langchain --test e2e_local_model -- --ignored --test-threads 1
