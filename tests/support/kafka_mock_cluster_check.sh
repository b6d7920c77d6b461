#!/usr/bin/env bash
# Check of tests/support/kafka_mock_cluster (the librdkafka mock cluster helper of the
# outputs.kafka tests): starts it, drives every command of its stdin protocol and checks the
# answers, producing with kcat (librdkafka's command-line client). Hermetic: everything runs on
# 127.0.0.1 with ephemeral ports, in a temporary directory that is removed at the end.
#
#   tests/support/kafka_mock_cluster_check.sh [path/to/kafka_mock_cluster]
#
# Without an argument it compiles kafka_mock_cluster.cpp (next to this script) with g++ into the
# temporary directory. Exit status: 0 = all checks passed, 1 = a check failed, 77 = kcat or g++
# missing (skip).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/kafka_mock_check.XXXXXX")
mock_pid=""
failures=0

cleanup() {
    if [[ -n "$mock_pid" ]] && kill -0 "$mock_pid" 2>/dev/null; then
        kill "$mock_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

note() { printf '%s\n' "$*"; }
pass() { printf 'PASS %s\n' "$*"; }
fail() {
    printf 'FAIL %s\n' "$*"
    failures=$((failures + 1))
}
die() {
    printf 'FAIL %s\n' "$*"
    if [[ -s "$work/mock.err" ]]; then
        note "--- stderr of kafka_mock_cluster (last 20 lines):"
        tail -n 20 "$work/mock.err"
    fi
    exit 1
}

command -v kcat >/dev/null || { note "SKIP: kcat not found"; exit 77; }

bin=${1:-}
if [[ -z "$bin" ]]; then
    command -v g++ >/dev/null || { note "SKIP: g++ not found"; exit 77; }
    bin="$work/kafka_mock_cluster"
    g++ -std=c++20 -Wall -Wextra -Wpedantic -Werror -O1 "$here/kafka_mock_cluster.cpp" -lrdkafka -o "$bin"
fi
[[ -x "$bin" ]] || die "no executable $bin"

now() { date +%s%N; }
elapsed_ms() { echo $((($(now) - $1) / 1000000)); }

# --- helpers around one running instance -------------------------------------------------------
# start_mock ARGS...: starts the helper as a coprocess; sets mock_pid and BOOTSTRAPS.
start_mock() {
    coproc MOCK { exec "$bin" "$@" 2>>"$work/mock.err"; }
    # shellcheck disable=SC2153  # MOCK_PID is set by coproc
    mock_pid=$MOCK_PID
    # Own copies of the descriptors (bash drops MOCK[] once the coprocess has exited), and the
    # originals closed, so that closing mock_in is the helper's EOF.
    exec {mock_out}<&"${MOCK[0]}" {mock_in}>&"${MOCK[1]}"
    eval "exec ${MOCK[0]}<&- ${MOCK[1]}>&-"
    local first=""
    read -r -t 20 -u "$mock_out" first || die "no first line from kafka_mock_cluster"
    [[ "$first" == bootstraps=* ]] || die "first line is '$first', want bootstraps=..."
    BOOTSTRAPS=${first#bootstraps=}
}

# cmd LINE: sends one command; REPLY = its answer line, LINES = the lines before it (dump).
cmd() {
    printf '%s\n' "$1" >&"$mock_in"
    LINES=()
    REPLY=""
    local line
    while read -r -t 60 -u "$mock_out" line; do
        if [[ "$line" == ok || "$line" == "ok "* || "$line" == "error: "* ]]; then
            REPLY=$line
            return 0
        fi
        LINES+=("$line")
    done
    die "no answer to '$1'"
}

expect() {  # expect COMMAND WANTED_ANSWER (a bash pattern)
    cmd "$1"
    # shellcheck disable=SC2053  # $2 is a pattern on purpose
    if [[ "$REPLY" == $2 ]]; then pass "'$1' -> '$REPLY'"; else fail "'$1' -> '$REPLY', want '$2'"; fi
}

hex() { printf '%s' "$1" | od -An -v -tx1 | tr -d ' \n'; }

# produce LINES ARGS...: kcat producer of the lines (key:value) to topic t; sets KCAT_RC, KCAT_MS.
produce() {
    local input=$1 t0
    shift
    t0=$(now)
    set +e
    printf '%s\n' "$input" | timeout 60 kcat -P -b "$BOOTSTRAPS" -t t -K: -X reconnect.backoff.max.ms=500 "$@" 2>"$work/kcat.last"
    KCAT_RC=$?
    set -e
    cat "$work/kcat.last" >>"$work/kcat.err"
    KCAT_MS=$(elapsed_ms "$t0")
}

# --- 1. start-up -------------------------------------------------------------------------------
start_mock --brokers 3 --topic t:3:3 --topic other:1:1 --scan-timeout-ms 3000
note "bootstraps=$BOOTSTRAPS (pid $mock_pid)"
IFS=, read -r -a addresses <<<"$BOOTSTRAPS"
if [[ ${#addresses[@]} -eq 3 ]] && ! printf '%s\n' "${addresses[@]}" | grep -vq '^127\.0\.0\.1:[0-9]\+$'; then
    pass "3 bootstrap addresses, all 127.0.0.1"
else
    fail "bootstrap addresses: $BOOTSTRAPS"
fi
if command -v ss >/dev/null; then
    listeners=$(ss -Hltnp 2>/dev/null | grep "pid=$mock_pid," | awk '{print $4}' | sort)
    if [[ $(wc -l <<<"$listeners") -eq 3 ]] && ! grep -vq '^127\.0\.0\.1:' <<<"$listeners"; then
        pass "ss: the process listens on 127.0.0.1 only: $(tr '\n' ' ' <<<"$listeners")"
    else
        fail "ss: listeners of pid $mock_pid: $listeners"
    fi
fi

# --- 2. protocol errors --------------------------------------------------------------------------
expect "" "error: empty command"
expect "frobnicate" "error: unknown command *"
expect "broker_down 9" "error: no broker 9 *"
expect "rtt 1" "error: usage: *"
expect "produce_errors 2 NO_SUCH_ERROR" "error: unknown error name *"
expect "produce_errors 3 REQUEST_TIMED_OUT NOT_ENOUGH_REPLICAS" "error: produce_errors wants *"
expect "leader t 7 1" "error: UNKNOWN_TOPIC_OR_PART*"
expect "count nosuch" "error: unknown topic nosuch"
expect "count other" "ok 0 0:0"
expect "count t" "ok 0 0:0 1:0 2:0"

# --- 3. 20 messages with headers, then dump ---------------------------------------------------------
produce "$(for i in $(seq 1 20); do echo "key-$i:value-$i"; done)" -H a=b -H 'odd name=x y;z'
if [[ $KCAT_RC -eq 0 ]]; then pass "kcat produced 20 messages"; else fail "kcat produce rc=$KCAT_RC"; fi
expect "count t" "ok 20 0:* 1:* 2:*"
cmd "dump t"
if [[ "$REPLY" == "ok 20" && ${#LINES[@]} -eq 20 ]]; then pass "dump t -> 20 msg lines, ok 20"; else fail "dump t -> ${#LINES[@]} lines, '$REPLY'"; fi
want_headers="a=$(hex b);odd%20name=$(hex 'x y;z')"
bad=0
declare -A seen=()
for line in "${LINES[@]}"; do
    if [[ "$line" =~ ^msg\ ([0-2])\ ([0-9]+)\ key=([0-9a-f]+)\ headers=([^ ]+)\ value=([0-9a-f]+)$ ]]; then
        key_hex=${BASH_REMATCH[3]}
        [[ "${BASH_REMATCH[4]}" == "$want_headers" ]] || { bad=1; note "  headers: $line"; }
        seen[$key_hex]=${BASH_REMATCH[5]}
    else
        bad=1
        note "  bad line: $line"
    fi
done
for i in $(seq 1 20); do
    [[ "${seen[$(hex "key-$i")]:-}" == "$(hex "value-$i")" ]] || { bad=1; note "  key-$i missing or wrong value"; }
done
if [[ $bad -eq 0 ]]; then pass "every key-N/value-N once, headers=$want_headers"; else fail "dump t content"; fi
note "  e.g. ${LINES[0]}"
# Partitions ascending, offsets ascending and contiguous from 0 within each partition.
order=$(printf '%s\n' "${LINES[@]}" | awk 'NR == 1 { bad = ($3 != 0); p = $2; o = $3; next } { if ($2 < p || ($2 == p && $3 != o + 1) || ($2 > p && $3 != 0)) bad = 1; p = $2; o = $3 } END { print bad + 0 }')
if [[ $order -eq 0 ]]; then pass "dump order: partition, then offset"; else fail "dump order"; fi

# A message with a null key and no headers (kcat without -K).
printf 'nokey\n' | timeout 60 kcat -P -b "$BOOTSTRAPS" -t other 2>>"$work/kcat.err"
cmd "dump other"
if [[ "$REPLY" == "ok 1" && "${LINES[0]:-}" == "msg 0 0 key=- headers=- value=$(hex nokey)" ]]; then
    pass "null key and no headers: ${LINES[0]}"
else
    fail "dump other -> ${LINES[*]:-} / $REPLY"
fi

# --- 4. injected Produce errors ------------------------------------------------------------------
expect "produce_errors 1 MSG_SIZE_TOO_LARGE" "ok"
produce "big:refused"
if [[ $KCAT_RC -ne 0 ]] && grep -q "Message size too large" "$work/kcat.last"; then
    pass "after produce_errors 1 MSG_SIZE_TOO_LARGE kcat fails (rc=$KCAT_RC, 'Message size too large')"
else
    fail "kcat after MSG_SIZE_TOO_LARGE: rc=$KCAT_RC"
fi
produce "after:ok"
if [[ $KCAT_RC -eq 0 ]]; then pass "the next produce succeeds (the error was used up)"; else fail "produce after the injected error: rc=$KCAT_RC"; fi
expect "produce_errors 3 NOT_LEADER_OR_FOLLOWER" "ok"
produce "retried:ok"
if [[ $KCAT_RC -eq 0 ]]; then pass "3 x NOT_LEADER_FOR_PARTITION: kcat retries and succeeds (${KCAT_MS} ms)"; else fail "retriable errors: rc=$KCAT_RC"; fi
expect "produce_errors 2 REQUEST_TIMED_OUT" "ok"
expect "clear_produce_errors" "ok"
produce "clear:ok"
if [[ $KCAT_RC -eq 0 ]]; then pass "clear_produce_errors drops unused errors"; else fail "after clear: rc=$KCAT_RC"; fi
expect "count t" "ok 23 *"

# --- 5. rtt ----------------------------------------------------------------------------------------
expect "rtt 2 600" "ok"
produce "slow:p1" -p 1
if [[ $KCAT_RC -eq 0 && $KCAT_MS -ge 600 ]]; then pass "rtt 2 600: produce to partition 1 (leader 2) took ${KCAT_MS} ms"; else fail "rtt: rc=$KCAT_RC ${KCAT_MS} ms"; fi
expect "rtt 2 0" "ok"

# --- 6. broker down, leadership --------------------------------------------------------------------
# Leaders at start: partition p -> broker p % 3 + 1, so broker 1 leads t[0].
expect "broker_down 1" "ok"
produce "down:p1" -p 1
if [[ $KCAT_RC -eq 0 ]]; then pass "broker 1 down: produce to t[1] (leader 2) succeeds (${KCAT_MS} ms)"; else fail "broker down, t[1]: rc=$KCAT_RC"; fi
produce "down:p0" -p 0 -X message.timeout.ms=3000
if [[ $KCAT_RC -ne 0 ]] && grep -q "Message timed out" "$work/kcat.last"; then
    pass "broker 1 down: produce to t[0] (leader still 1) times out after ${KCAT_MS} ms (leaders do not move by themselves)"
else
    fail "broker down, t[0]: rc=$KCAT_RC, want a message timeout"
fi
expect "count t" "error: timed out after 3000 ms before the end of partition(s) 0*"
expect "leader t 0 2" "ok"
produce "moved:p0" -p 0 -X message.timeout.ms=10000
if [[ $KCAT_RC -eq 0 ]]; then pass "leader t 0 2: produce to t[0] succeeds with broker 1 still down (${KCAT_MS} ms)"; else fail "after leader move: rc=$KCAT_RC"; fi
produce "$(for i in $(seq 1 6); do echo "keyed-$i:v"; done)" -X message.timeout.ms=10000
if [[ $KCAT_RC -eq 0 ]]; then pass "keyed messages over all partitions succeed while broker 1 is down"; else fail "keyed while down: rc=$KCAT_RC"; fi
expect "count t" "ok 32 *"
expect "broker_up 1" "ok"
expect "leader t 0 1" "ok"
produce "back:p0" -p 0 -X message.timeout.ms=10000
if [[ $KCAT_RC -eq 0 ]]; then pass "broker 1 up and leader again: produce to t[0] succeeds (${KCAT_MS} ms)"; else fail "after broker_up: rc=$KCAT_RC"; fi
expect "count t" "ok 33 *"

# --- 7. quit ----------------------------------------------------------------------------------------
expect "quit" "ok"
rc=0
wait "$mock_pid" || rc=$?
if [[ $rc -eq 0 ]]; then pass "quit: exit status 0"; else fail "quit: exit status $rc"; fi
exec {mock_in}>&- {mock_out}<&-
mock_pid=""

# --- 8. EOF on stdin ---------------------------------------------------------------------------------
start_mock --brokers 1 --topic t:1:1
exec {mock_in}>&-   # the only write end: the helper sees EOF
rc=0
t0=$(now)
for _ in $(seq 1 100); do kill -0 "$mock_pid" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$mock_pid" 2>/dev/null; then
    fail "still running 10 s after its stdin was closed"
else
    wait "$mock_pid" || rc=$?
    if [[ $rc -eq 0 ]]; then pass "EOF on stdin: exit status 0 after $(elapsed_ms "$t0") ms"; else fail "EOF on stdin: exit status $rc"; fi
fi
exec {mock_out}<&-
mock_pid=""

# --- 9. bad arguments ----------------------------------------------------------------------------------
set +e
out=$("$bin" --brokers 2 --topic t:3:3 2>/dev/null </dev/null)
rc=$?
set -e
if [[ $rc -eq 2 && "$out" == "error: topic t: replication 3 > 2 brokers" ]]; then pass "bad arguments: '$out', exit 2"; else fail "bad arguments: '$out', exit $rc"; fi

if [[ $failures -gt 0 ]]; then
    note "$failures check(s) failed"
    if [[ -s "$work/mock.err" ]]; then note "--- stderr of kafka_mock_cluster (last 20 lines):"; tail -n 20 "$work/mock.err"; fi
    exit 1
fi
note "all checks passed"
