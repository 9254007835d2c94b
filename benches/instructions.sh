#!/usr/bin/env bash
# Instruction counts under callgrind: what the layer costs, without the
# timing noise of a shared machine.
#
#     bash benches/instructions.sh
#
# 1. In process: each arm of benches/overhead.rs, run OVERHEAD_CALLS times
#    (100,000) with `OVERHEAD_COUNT=<arm>`; instructions per call are the
#    inclusive count of `call_once` divided by the calls.
# 2. In a real server: each server of benches/http.rs runs under callgrind;
#    after 2,000 warm-up requests its counters are zeroed, `load` sends
#    INSITU_REQUESTS (5,000) requests one after the other on one keep-alive
#    connection, and the counters are dumped: user-space instructions per
#    request, everything the process does (hyper, axum, tokio, the layer),
#    kernel excluded. The servers' checks run once at start and then only
#    every hour (BENCH_CHECK_SECS), so the refresher's periodic work (about
#    120,000 instructions per PostgreSQL check run) is not in the window.
#
# Counts are repeatable for the same binary; they leave out what
# instructions do not show (cache misses, the clock reads' cost inside the
# vDSO, the kernel). Writes target/bench-report/instructions.md. Needs
# valgrind (Debian package `valgrind`; installed if missing) and, for the
# servers with a check, PostgreSQL at DATABASE_URL. About 1 minute after
# the build.
set -euo pipefail
cd "$(dirname "$0")/.."

export DATABASE_URL="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}"
calls="${OVERHEAD_CALLS:-100000}"
requests="${INSITU_REQUESTS:-5000}"
out=target/bench-report
mkdir -p "$out"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

source benches/need.sh
need valgrind valgrind

# callgrind_control reaches the idle server through ptrace (vgdb); where
# ptrace is restricted it would wait for the server forever.
scope=$(cat /proc/sys/kernel/yama/ptrace_scope 2>/dev/null || echo 0)
if [ "$(id -u)" != 0 ] && [ "$scope" -ge 1 ]; then
    echo "callgrind_control needs ptrace: run as root or set kernel.yama.ptrace_scope=0" >&2
    exit 1
fi

echo "== building (release)"
cargo bench --all-features --no-run 2>&1 | tee "$work/build.txt" | grep -E "Executable|error" || true
overhead=$(sed -n 's/.*Executable benches\/overhead.rs (\(.*\))/\1/p' "$work/build.txt")
http=$(sed -n 's/.*Executable benches\/http.rs (\(.*\))/\1/p' "$work/build.txt")
[ -x "$overhead" ] && [ -x "$http" ] || { echo "benchmark executables not found" >&2; exit 1; }

# Inclusive instructions of the function named $2 in callgrind output $1.
# (awk reads to the end: exiting early could kill callgrind_annotate with
# SIGPIPE, which pipefail would turn into a silent exit.)
inclusive() {
    callgrind_annotate --inclusive=yes "$1" 2>/dev/null |
        awk -v f="$2" '!done && $0 ~ f { gsub(",", "", $1); print $1; done = 1 }'
}
# All instructions in callgrind output $1.
total() {
    callgrind_annotate "$1" 2>/dev/null |
        awk '!done && /PROGRAM TOTALS/ { gsub(",", "", $1); print $1; done = 1 }'
}

declare -A per_call
echo "== in process ($calls calls per arm)"
for arm in bare bare_serialized pass_through pass_through_no_header readyz_hit readyz_hit_no_header; do
    OVERHEAD_COUNT=$arm OVERHEAD_CALLS=$calls valgrind --tool=callgrind \
        --callgrind-out-file="$work/$arm.cg" "$overhead" >"$work/$arm.log" 2>&1
    grep -q "counted $arm $calls" "$work/$arm.log" || { cat "$work/$arm.log" >&2; exit 1; }
    ir=$(inclusive "$work/$arm.cg" 'overhead::call_once')
    per_call[$arm]=$(( ir / calls ))
    echo "$arm: ${per_call[$arm]} instructions per call"
done

declare -A per_request
servers=(hello:/readyz health:/readyz axum:/api/items/42 axum-health:/api/items/42
    axum-router-layer:/api/items/42 axum-health-no-header:/api/items/42
    axum-no-pool:/api/items/42)
echo "== in a server ($requests sequential requests each)"
for entry in "${servers[@]}"; do
    mode=${entry%%:*}
    path=${entry#*:}
    log="$work/$mode.log"
    # The server exits when its stdin closes: keep it open with a fifo. An
    # hour between checks keeps the refresher's runs out of the window.
    mkfifo "$work/$mode.in"
    BENCH_CHECK_SECS=3600 valgrind --tool=callgrind --callgrind-out-file="$work/$mode.cg" \
        "$http" serve "$mode" <"$work/$mode.in" >"$log" 2>"$work/$mode.err" &
    pid=$!
    exec 3>"$work/$mode.in"
    for _ in $(seq 1 240); do
        grep -q "^listening " "$log" 2>/dev/null && break
        kill -0 "$pid" 2>/dev/null || { cat "$work/$mode.err" >&2; exit 1; }
        sleep 0.25
    done
    addr=$(sed -n 's/^listening //p' "$log")
    [ -n "$addr" ] || { echo "$mode did not start" >&2; exit 1; }
    # Ready first: B's /readyz answers 503 until its first check has run,
    # which under valgrind can take a moment.
    for _ in $(seq 1 120); do
        "$http" load "$addr" "$path" 1 >/dev/null 2>&1 && break
        sleep 0.5
    done
    "$http" load "$addr" "$path" 2000 >/dev/null
    timeout 60 callgrind_control -z "$pid" >/dev/null
    "$http" load "$addr" "$path" "$requests" >"$work/$mode.load"
    timeout 60 callgrind_control -d "$pid" >/dev/null
    exec 3>&-
    wait "$pid" || true
    dump=$(ls -t "$work/$mode.cg".* | head -1)
    ir=$(total "$dump")
    per_request[$mode]=$(( ir / requests ))
    echo "$mode $path: ${per_request[$mode]} instructions per request ($(cat "$work/$mode.load"))"
done

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", a / b }'; }
added() { echo $(( $1 - $2 )); }
{
    echo "### Instructions (callgrind)"
    echo
    echo "- command: \`bash benches/instructions.sh\`; date: $(date -u '+%Y-%m-%d %H:%M UTC'); commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
    echo "- $(rustc --version); $(valgrind --version)"
    echo
    echo "In process, per call (\`benches/overhead.rs\`, $calls calls per arm):"
    echo
    echo "| arm | instructions | ratio to bare | added |"
    echo "|---|---:|---:|---:|"
    for arm in bare bare_serialized pass_through pass_through_no_header readyz_hit readyz_hit_no_header; do
        echo "| \`$arm\` | ${per_call[$arm]} | $(ratio "${per_call[$arm]}" "${per_call[bare]}") | $(added "${per_call[$arm]}" "${per_call[bare]}") |"
    done
    echo
    echo "In a server, user-space instructions per request (\`benches/http.rs\` servers, $requests sequential keep-alive requests after 2,000 warm-up ones; kernel not counted):"
    echo
    echo "| server | path | instructions | ratio | added |"
    echo "|---|---|---:|---:|---:|"
    for entry in "${servers[@]}"; do
        mode=${entry%%:*}
        path=${entry#*:}
        case $mode in
            hello | axum) base=$mode ;;
            health) base=hello ;;
            *) base=axum ;;
        esac
        echo "| \`$mode\` | \`$path\` | ${per_request[$mode]} | $(ratio "${per_request[$mode]}" "${per_request[$base]}") to \`$base\` | $(added "${per_request[$mode]}" "${per_request[$base]}") |"
    done
} >"$out/instructions.md"
echo
cat "$out/instructions.md"
