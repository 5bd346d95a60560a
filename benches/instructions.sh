#!/usr/bin/env bash
# Instructions per request: portico's user-space instructions for one HTTP request to its
# in-process echo handler, counted by valgrind (callgrind), for each binary given. A
# noise-free comparison of two builds on a machine whose timings move by 20% from one run
# to the next (wrk rates do; these counts repeat within 0.5% at the same SECONDS_RUN).
#
#   benches/instructions.sh                          # target/release/portico
#   benches/instructions.sh OLD_BINARY NEW_BINARY    # both, same load
#   SECONDS_RUN=3 benches/instructions.sh            # shorter wrk run (default 5)
#
# For each binary: one run serves a single request (startup and shutdown cost), one
# serves `wrk -t2 -c16` for SECONDS_RUN seconds; the difference of their totals over the
# difference of their request counts is the cost of one request. Counts, not time: a
# memcpy or memset weighs more here (valgrind runs the AVX2 versions) than on the real
# CPU, and kernel time is not counted at all; confirm a gain in time with the rate
# scripts before quoting it as one.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

SECONDS_RUN=${SECONDS_RUN:-5}
need valgrind wrk curl setsid
setup

BINS=("$@")
if ((${#BINS[@]} == 0)); then BINS=("$PORTICO"); fi

PORT=$(free_port)
cat >"$TMP/echo.toml" <<EOF
[server]
access_log = "off"
threads = 1

[[listen]]
protocol = "http"
address = "127.0.0.1:$PORT"

[[route]]
exact = "/echo"
handler = "echo"
EOF
URL="http://127.0.0.1:$PORT/echo"

# run BIN SECONDS: sets RUN_N (requests) and RUN_I (instructions); 0 seconds: one request.
run() {
    local bin=$1 secs=$2 out=$TMP/callgrind.out i
    rm -f "$out"
    start_bg "$TMP/valgrind.log" valgrind --tool=callgrind --callgrind-out-file="$out" \
        "$bin" serve --config "$TMP/echo.toml"
    local pid=$STARTED
    for i in $(seq 300); do
        curl -s -o /dev/null "$URL" && break
        sleep 0.1
    done
    RUN_N=1
    if [ "$secs" != 0 ]; then
        RUN_N=$(($(wrk -t2 -c16 -d"${secs}s" "$URL" | awk '/requests in/{print $1}') + 1))
    fi
    # portico drains and exits on SIGTERM; callgrind writes its counts at the exit. Under
    # valgrind a signal has been seen to go unnoticed once: sent again every 5 s.
    for i in $(seq 600); do
        kill -0 "$pid" 2>/dev/null || break
        if ((i % 50 == 1)); then kill -TERM "$pid" 2>/dev/null || true; fi
        sleep 0.1
    done
    wait "$pid" 2>/dev/null || true
    PIDS=()
    RUN_I=$(awk '/^summary:/{print $2}' "$out")
}

echo "== benches/instructions.sh: user-space instructions per echo request (callgrind) =="
echo "wrk -t2 -c16 -d${SECONDS_RUN}s, threads = 1; load: $(cut -d' ' -f1-3 /proc/loadavg)"
for bin in "${BINS[@]}"; do
    run "$bin" 0
    n0=$RUN_N i0=$RUN_I
    run "$bin" "$SECONDS_RUN"
    printf '%-60s %8d requests  %8d instructions/request\n' \
        "$bin" "$((RUN_N - n0))" "$(((RUN_I - i0) / (RUN_N - n0)))"
done
