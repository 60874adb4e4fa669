#!/usr/bin/env bash
# Compatibility suite: real Sentry SDKs against a real faultline server.
#
# Usage: tests/compat/run.sh [PATH_TO_FAULTLINE_BINARY]   (default: target/release/faultline)
#
# Builds nothing. Installs the clients itself (PyPI and npm) into ${COMPAT_CACHE:-/tmp/faultline-compat}
# and tests/compat/node/node_modules, starts the server on a random port with a fresh data dir and
# an admin token, creates one project per client through the management API, and runs each client
# through tests/compat/recorder.py, a transparent proxy that logs what went over the wire.
# check.py then compares the wire log and the SQLite database with what each client captured and
# prints `compat: N passed, M failed`.
#
# COMPAT_UPDATE_FIXTURES=1 also copies one decoded request per client and event kind to
# tests/fixtures/sdk/ (for the Rust tests); otherwise they are left in the work dir only.
# COMPAT_KEEP=1 keeps the work dir (server log, recorder log, database) for inspection.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
bin="${1:-$root/target/release/faultline}"
cache="${COMPAT_CACHE:-/tmp/faultline-compat}"
work="$(mktemp -d "${TMPDIR:-/tmp}/faultline-compat-run.XXXXXX")"
started=$SECONDS
server_pid=""
recorder_pid=""
checked=0

log() { echo "compat: $*" >&2; }

cleanup() {
    local rc=$?
    [[ -n "$recorder_pid" ]] && kill "$recorder_pid" 2>/dev/null || true
    if [[ -n "$server_pid" ]]; then
        # SIGTERM drains the server's queue; give it a few seconds, then make sure it is gone.
        kill "$server_pid" 2>/dev/null || true
        for _ in $(seq 1 50); do
            kill -0 "$server_pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -9 "$server_pid" 2>/dev/null || true
    fi
    if [[ $rc -ne 0 && $checked -eq 0 ]]; then
        # Failed before the checks ran (install, start-up, API): still end on the summary line.
        if [[ -f "$work/server.log" ]]; then
            log "server log (last 30 lines):"
            tail -n 30 "$work/server.log" >&2 || true
        fi
        echo "compat: 0 passed, 1 failed"
    fi
    # On failure the work dir stays (its path was logged at the start), so that the summary line
    # stays the last line printed.
    if [[ "${COMPAT_KEEP:-}" != 1 && $rc -eq 0 ]]; then
        rm -rf "$work"
    fi
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP PIPE

log "work dir $work (kept on failure or with COMPAT_KEEP=1)"
[[ -x "$bin" ]] || { log "no faultline binary at $bin (build it with cargo build --release)"; exit 1; }

# --- clients -----------------------------------------------------------------------------------
mkdir -p "$cache"
# venv NAME PIP_ARGS...: a virtualenv under the cache with those packages at their latest (or
# pinned) versions; pip only asks the index when something is missing or newer.
# A cached venv that no longer works (its python was replaced, a half-finished install) is made
# again once from scratch.
venv() {
    local name=$1
    shift
    if [[ -x "$cache/$name/bin/python" ]] &&
        "$cache/$name/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade "$@"; then
        return
    fi
    rm -rf "${cache:?}/$name"
    python3 -m venv "$cache/$name"
    "$cache/$name/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade "$@"
}
log "installing clients into $cache"
venv sdk-br sentry-sdk brotli
venv sdk-gzip sentry-sdk
# The gzip venv must not have brotli, or the SDK silently picks br again.
"$cache/sdk-gzip/bin/python" -m pip uninstall --quiet --yes brotli brotlicffi 2>/dev/null || true
# raven 6.10.0 is the last release (2018); it still runs on Python 3.11.
venv raven raven==6.10.0
(cd "$here/node" && npm ci --no-audit --no-fund --loglevel=error)
"$cache/sdk-br/bin/python" -c 'import sentry_sdk, brotli; print("compat: sentry-sdk", sentry_sdk.VERSION, "with brotli", brotli.__version__)' >&2
"$cache/sdk-gzip/bin/python" -c 'import sentry_sdk; print("compat: sentry-sdk", sentry_sdk.VERSION, "without brotli")' >&2
"$cache/raven/bin/python" -c 'import raven; print("compat: raven", raven.VERSION)' >&2
log "@sentry/node $(node -p "require('$here/node/node_modules/@sentry/node/package.json').version") on node $(node --version)"

# --- server ------------------------------------------------------------------------------------
token="glpat-compat$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')"
mkdir -p "$work/data"
FAULTLINE_LISTEN=127.0.0.1:0 \
    FAULTLINE_DATA_DIR="$work/data" \
    FAULTLINE_ADMIN_TOKEN="$token" \
    "$bin" serve >"$work/server.log" 2>&1 &
server_pid=$!

port=""
for _ in $(seq 1 300); do
    port="$(sed -n 's/.*faultline listening on 127\.0\.0\.1:\([0-9][0-9]*\).*/\1/p' "$work/server.log" 2>/dev/null | head -n 1 || true)"
    [[ -n "$port" ]] && break
    kill -0 "$server_pid" 2>/dev/null || { log "server exited during start-up"; exit 1; }
    sleep 0.1
done
[[ -n "$port" ]] || { log "server did not say where it listens within 30 s"; exit 1; }
log "server pid $server_pid on 127.0.0.1:$port, data in $work/data"

# The recorder sits between the SDKs and the server; see recorder.py.
python3 "$here/recorder.py" --upstream "127.0.0.1:$port" --log "$work/wire.jsonl" \
    --port-file "$work/recorder.port" 2>>"$work/recorder.log" &
recorder_pid=$!
for _ in $(seq 1 100); do
    [[ -s "$work/recorder.port" ]] && break
    sleep 0.1
done
[[ -s "$work/recorder.port" ]] || { log "recorder did not start"; exit 1; }
proxy_port="$(cat "$work/recorder.port")"

api="http://127.0.0.1:$port/api/v4"
# project NAME: creates a project with error tracking on; prints "ID DSN".
project() {
    local name=$1 body id dsn
    body="$(curl -fsS -X POST -H "PRIVATE-TOKEN: $token" -H 'Content-Type: application/json' \
        -d "{\"name\": \"$name\", \"namespace_path\": \"compat\"}" "$api/projects")"
    id="$(python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])' <<<"$body")"
    curl -fsS -o /dev/null -X PUT -H "PRIVATE-TOKEN: $token" \
        "$api/projects/$id/error_tracking/settings?active=true&integrated=true"
    dsn="$(curl -fsS -H "PRIVATE-TOKEN: $token" "$api/projects/$id/error_tracking/client_keys" |
        python3 -c 'import json,sys; keys=json.load(sys.stdin); print(keys[0]["sentry_dsn"])')"
    echo "$id $dsn"
}

# run_client NAME COMMAND...: makes a project for NAME and runs the command, with @DSN@ replaced
# by the project's DSN pointed at the recorder and @RESULT@ by the path of the client's result
# JSON; records the exit code in the manifest for check.py.
manifest="$work/manifest"
: >"$manifest"
run_client() {
    local name=$1 out id dsn proxied rc=0
    shift
    # A client whose project cannot be set up is recorded as failed (exit code 99), and the
    # others still run.
    if ! out="$(project "$name")"; then
        log "$name: creating its project through the API failed"
        echo "$name 0 99 $work/$name.json" >>"$manifest"
        return
    fi
    read -r id dsn <<<"$out"
    case "$dsn" in
        "http://"*"@127.0.0.1:$port/errortracking/api/v1/projects/$id") ;;
        *)
            log "$name: the API gave DSN '$dsn', not one for 127.0.0.1:$port and project $id"
            echo "$name ${id:-0} 99 $work/$name.json" >>"$manifest"
            return
            ;;
    esac
    proxied="${dsn/@127.0.0.1:$port\//@127.0.0.1:$proxy_port/}"
    log "$name: project $id, DSN $proxied"
    local args=()
    for a in "$@"; do
        a="${a//@DSN@/$proxied}"
        args+=("${a//@RESULT@/$work/$name.json}")
    done
    "${args[@]}" >"$work/$name.out" 2>&1 || rc=$?
    if [[ $rc -ne 0 ]]; then
        log "$name: exited $rc; its output:"
        sed 's/^/    /' "$work/$name.out" >&2
    fi
    echo "$name $id $rc $work/$name.json" >>"$manifest"
}

run_client python-br "$cache/sdk-br/bin/python" "$here/python_sdk.py" @DSN@ @RESULT@ br
run_client python-gzip "$cache/sdk-gzip/bin/python" "$here/python_sdk.py" @DSN@ @RESULT@ gzip
run_client raven "$cache/raven/bin/python" "$here/raven_client.py" @DSN@ @RESULT@
run_client raven-base64 "$cache/raven/bin/python" "$here/raven_client.py" @DSN@ @RESULT@ --base64
run_client node node "$here/node/node_sdk.mjs" @DSN@ @RESULT@

# --- checks ------------------------------------------------------------------------------------
log "clients done in $((SECONDS - started)) s"
fixtures="$work/fixtures"
if [[ "${COMPAT_UPDATE_FIXTURES:-}" == 1 ]]; then
    fixtures="$root/tests/fixtures/sdk"
    log "writing fixtures to tests/fixtures/sdk/"
fi
# Error counts wait in the writer's memory for up to 100 ms, and every read API request has them
# written first (README, "What a 200 means"); so each project's errors are read through the API,
# as GitLab would, before check.py reads the database file.
while read -r _ pid _; do
    curl -fsS -o /dev/null -H "PRIVATE-TOKEN: $token" \
        "http://127.0.0.1:$port/errortracking/api/v1/projects/$pid/errors"
done <"$manifest"
checked=1
# The brotli venv's python, so that check.py can decode the br bodies it checks. Its last line is
# the summary; nothing is printed after it.
"$cache/sdk-br/bin/python" "$here/check.py" --db "$work/data/faultline.db" --log "$work/wire.jsonl" \
    --manifest "$manifest" --fixtures "$fixtures"
