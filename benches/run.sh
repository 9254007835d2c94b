#!/usr/bin/env bash
# The whole tower-health benchmark suite, one command:
#
#     bash benches/run.sh
#
# 1. builds the benchmarks in release (`cargo bench --no-run`), so build time
#    is not part of any figure;
# 2. runs benches/overhead.rs (criterion: ns per call, bare service vs the
#    layer's pass-through vs a cached /readyz);
# 3. runs benches/http.rs (wrk over loopback, servers and client on
#    different cores: interleaved rounds, probe storm, memory, outage);
# 4. runs benches/instructions.sh (instruction counts under callgrind, in
#    process and in each server: the noise-free view);
# 5. writes target/bench-report/report.md and prints it.
#
# Needs: Linux (/proc, taskset), 2+ cores, PostgreSQL at DATABASE_URL
# (default postgres://postgres@127.0.0.1:5432/test), wrk (installed from the
# Debian package if missing). All traffic stays on 127.0.0.1. Takes about
# 7 minutes after the build (about 400 to 450 s on the 2-core VMs
# measured so far). Shorter smoke run:
#
#     BENCH_QUICK=1 bash benches/run.sh
#
# Knobs (environment) are listed at the top of benches/http.rs.
set -euo pipefail
cd "$(dirname "$0")/.."

export DATABASE_URL="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}"
out=target/bench-report
mkdir -p "$out"

source benches/need.sh
need wrk wrk
command -v taskset >/dev/null 2>&1 || { echo "taskset (util-linux) is required" >&2; exit 1; }
if [ "$(nproc)" -lt 2 ]; then
    echo "note: fewer than 2 cores; server and client will share a core" >&2
    export BENCH_SERVER_CPU="${BENCH_SERVER_CPU:-0}" BENCH_CLIENT_CPU="${BENCH_CLIENT_CPU:-0}"
fi
if command -v pg_isready >/dev/null 2>&1; then
    pg_isready -d "$DATABASE_URL" >/dev/null || { echo "PostgreSQL is not reachable at $DATABASE_URL" >&2; exit 1; }
fi

criterion_args=(--warm-up-time 1 --measurement-time 3 --noplot)
# overhead.rs also times the arms in interleaved rounds and writes the table
# here; http.rs puts it in the report after criterion's.
export OVERHEAD_INTERLEAVED="$out/interleaved.md"
rm -f "$OVERHEAD_INTERLEAVED"
if [ -n "${BENCH_QUICK:-}" ]; then
    criterion_args=(--warm-up-time 0.5 --measurement-time 1 --noplot)
    export OVERHEAD_ROUNDS="${OVERHEAD_ROUNDS:-20}"
    export BENCH_ROUNDS="${BENCH_ROUNDS:-2}" BENCH_SECS="${BENCH_SECS:-1}" \
        BENCH_STORM_SECS="${BENCH_STORM_SECS:-6}" BENCH_C_STORM_SECS="${BENCH_C_STORM_SECS:-2}" \
        BENCH_PROBES="${BENCH_PROBES:-50000}" BENCH_OUTAGE_SECS="${BENCH_OUTAGE_SECS:-1}" \
        BENCH_OUTAGE_PAIRS="${BENCH_OUTAGE_PAIRS:-1}" BENCH_C_OUTAGE_SECS="${BENCH_C_OUTAGE_SECS:-3}"
fi

echo "== building (release)"
cargo bench --all-features --no-run

started=$(date -u +%s)
load_start=$(cut -d' ' -f1-3 /proc/loadavg)
echo "== in-process overhead (criterion)"
cargo bench --all-features --bench overhead -- "${criterion_args[@]}" 2>&1 | tee "$out/criterion.txt"
echo "== HTTP suite"
BENCH_REPORT="$out/http.md" cargo bench --all-features --bench http 2>&1 | tee "$out/http.txt"
echo "== instruction counts (callgrind)"
if [ -n "${BENCH_QUICK:-}" ]; then
    export OVERHEAD_CALLS="${OVERHEAD_CALLS:-10000}" INSITU_REQUESTS="${INSITU_REQUESTS:-1000}"
fi
bash benches/instructions.sh 2>&1 | tee "$out/instructions.txt"
finished=$(date -u +%s)

commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
dirty=""
if [ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ]; then
    dirty=" (with uncommitted changes)"
fi
{
    echo "# tower-health benchmark run"
    echo
    echo "- command: \`bash benches/run.sh\`${BENCH_QUICK:+ with BENCH_QUICK=1 (smoke run, not for publishing)}"
    echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC'); commit $commit$dirty"
    echo "- $(rustc --version)"
    echo "- suite wall time after the build: $(( finished - started )) s; load average before: $load_start, after: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo
    cat "$out/http.md"
    echo
    cat "$out/instructions.md"
} > "$out/report.md"
echo
echo "== report: $out/report.md"
