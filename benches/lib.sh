# Shared helpers of benches/cgi.sh and benches/fastcgi.sh (sourced, not run).
#
# Every server is started by the scripts themselves, in a temp dir, on loopback ports
# found free at start; each is stopped by the PIDs recorded here (its process group,
# as every server is started as a group leader with setsid), never by name.

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$BENCH_DIR/.." && pwd)
PORTICO=${PORTICO:-$ROOT/target/release/portico}
DURATION=${DURATION:-10s}     # wrk duration of each measured run
THREADS=${THREADS:-2}         # wrk threads
CONNS=${CONNS:-16}            # wrk connections (kept alive)
ROUNDS=${ROUNDS:-1}           # interleaved rounds; the median (by req/s) is reported
WARMUP=${WARMUP:-1s}          # unmeasured wrk run of each target before the rounds

PIDS=()        # process-group leaders to stop on exit
TMP=""

need() {
    local missing=()
    for tool in "$@"; do command -v "$tool" >/dev/null 2>&1 || missing+=("$tool"); done
    if ((${#missing[@]})); then
        echo "missing tools: ${missing[*]} (.ci/run installs them)" >&2
        exit 2
    fi
}

setup() {
    TMP=$(mktemp -d "${TMPDIR:-/tmp}/portico-bench.XXXXXX")
    trap cleanup EXIT
    trap 'exit 130' INT TERM
    if [ ! -x "$PORTICO" ]; then
        echo "building portico (cargo build --release)…" >&2
        (cd "$ROOT" && cargo build --release --quiet)
    fi
}

# Stops every server started here: SIGTERM to each recorded PID's process group (or to
# the PID when it leads none), all at once; SIGKILL after 5 s for what is left.
# KILL_PIDS (processes that only act on SIGTERM between requests, like libfcgi apps
# blocked in accept) get SIGKILL at once.
KILL_PIDS=()
cleanup() {
    local pid i alive
    for pid in "${KILL_PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do
        kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    done
    for i in $(seq 50); do
        alive=0
        for pid in "${PIDS[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
        [ "$alive" = 0 ] && break
        sleep 0.1
    done
    for pid in "${PIDS[@]}"; do
        kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    PIDS=()
    KILL_PIDS=()
    if [ -n "$TMP" ] && [ -z "${KEEP_TMP:-}" ]; then rm -rf "$TMP"; fi
}

stop_pid() {
    local pid=$1 i
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || return 0
    for i in $(seq 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

# Stops one server started with start_bg and forgets it.
stop() {
    local pid=$1 keep=() p
    stop_pid "$pid"
    for p in "${PIDS[@]}"; do [ "$p" = "$pid" ] || keep+=("$p"); done
    PIDS=("${keep[@]}")
}

# start_bg LOG CMD...: runs CMD in the background as the leader of a new process group;
# sets STARTED to its PID.
start_bg() {
    local log=$1
    shift
    setsid "$@" >"$log" 2>&1 </dev/null &
    STARTED=$!
    PIDS+=("$STARTED")
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# wait_http URL PID LOG: waits (10 s at most) until URL answers; fails if PID died.
wait_http() {
    local url=$1 pid=$2 log=$3 i
    for i in $(seq 100); do
        if curl -s -o /dev/null --max-time 1 "$url"; then return 0; fi
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "server for $url died; its log ($log):" >&2
            cat "$log" >&2
            exit 1
        fi
        sleep 0.1
    done
    echo "timed out waiting for $url; log ($log):" >&2
    cat "$log" >&2
    exit 1
}

# wait_socket PATH: waits (10 s at most) for a Unix socket to appear.
wait_socket() {
    local i
    for i in $(seq 100); do
        [ -S "$1" ] && return 0
        sleep 0.1
    done
    echo "timed out waiting for socket $1" >&2
    exit 1
}

# rss_kb PID: VmRSS of a process in kB.
rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }

# start_portico CONFIG LOG: starts portico on CONFIG and waits until it says it listens;
# sets PORTICO_PID, and IDLE_RSS (kB) as measured then, before any request.
start_portico() {
    local config=$1 log=$2 i
    start_bg "$log" "$PORTICO" serve --config "$config"
    PORTICO_PID=$STARTED
    for i in $(seq 100); do
        grep -q "listening on" "$log" 2>/dev/null && break
        kill -0 "$PORTICO_PID" 2>/dev/null || { cat "$log" >&2; exit 1; }
        sleep 0.05
    done
    IDLE_RSS=$(rss_kb "$PORTICO_PID")
}

# nginx_preamble WORKER_CONNECTIONS: the start of an nginx.conf for a server run from
# $TMP/nginx (foreground, as this user, no access log, its temp paths there, keep-alive
# without a request limit), up to the open `http {` block the caller fills and closes.
nginx_preamble() {
    cat <<EOF
daemon off;
user $(id -un) $(id -gn);
worker_processes $NGINX_WORKERS;
pid $TMP/nginx/nginx.pid;
error_log $TMP/nginx/error.log warn;
events { worker_connections $1; }
http {
    access_log off;
    client_body_temp_path $TMP/nginx/client_body;
    fastcgi_temp_path $TMP/nginx/fastcgi_temp;
    scgi_temp_path $TMP/nginx/scgi_temp;
    proxy_temp_path $TMP/nginx/proxy_temp;
    uwsgi_temp_path $TMP/nginx/uwsgi_temp;
    keepalive_requests 1000000;
EOF
}

# check_body URL WANT: one request; fails loudly unless the body is WANT.
check_body() {
    local got
    got=$(curl -s --max-time 5 "$1") || true
    if [ "$got" != "$2" ]; then
        echo "sanity check failed for $1: got $(printf %q "$got"), want $(printf %q "$2")" >&2
        exit 1
    fi
}

# target ID LABEL URL      : a wrk target
# target_cmd ID LABEL CMD...: a command printing "RATE P99_MS ERRORS" (the spawn floor)
# run_targets               : a warm-up of each wrk target, then ROUNDS rounds, each
#                             running every target once in the order given (interleaved,
#                             so slow drifts of the background load hit all alike);
#                             records RPS[ID], P99[ID] (ms), ERRS[ID] (non-2xx + socket
#                             errors) of the median round by rate. IDs: [a-z0-9_].
declare -A RPS P99 ERRS LABEL URL CMD RESULTS
TARGETS=()
target() { TARGETS+=("$1"); LABEL[$1]=$2; URL[$1]=$3; }
target_cmd() {
    local id=$1 label=$2
    shift 2
    TARGETS+=("$id"); LABEL[$id]=$label; CMD[$id]=$(printf '%q ' "$@")
}

# cpu_ticks: "BUSY IDLE STEAL" clock ticks of all CPUs since boot (/proc/stat): busy is
# user, nice, system, irq and softirq; idle counts iowait. Steal is time the hypervisor
# gave to other guests while this one had work: on a shared VM it is the noise behind a
# slow round, so each round prints its share (and benches/cpu.sh its per-request split).
cpu_ticks() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8, $5 + $6, $9 }' /proc/stat; }
STEALS=()

run_targets() {
    local id r out res pick rps p99 errs b0 i0 s0 b1 i1 s1 steal
    if [ -n "$WARMUP" ] && [ "$WARMUP" != 0 ]; then
        for id in "${TARGETS[@]}"; do
            [ -n "${URL[$id]:-}" ] || continue
            wrk -t"$THREADS" -c"$CONNS" -d"$WARMUP" "${URL[$id]}" >/dev/null 2>&1 || true
        done
    fi
    for r in $(seq "$ROUNDS"); do
        for id in "${TARGETS[@]}"; do
            read -r b0 i0 s0 < <(cpu_ticks)
            if [ -n "${URL[$id]:-}" ]; then
                out=$(wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" --latency "${URL[$id]}" 2>&1) || {
                    echo "wrk failed for ${URL[$id]}:" >&2
                    echo "$out" >&2
                    exit 1
                }
                echo "$out" >"$TMP/wrk.$id.$r.txt"
                res=$(parse_wrk <<<"$out")
            else
                res=$(eval "${CMD[$id]}")
            fi
            read -r b1 i1 s1 < <(cpu_ticks)
            steal=$(awk -v t=$((b1 - b0 + i1 - i0 + s1 - s0)) -v s=$((s1 - s0)) \
                'BEGIN { printf "%.0f", (t > 0) ? 100 * s / t : 0 }')
            STEALS+=("$steal")
            RESULTS[$id]+="$res"$'\n'
            read -r rps p99 errs <<<"$res"
            printf '  round %s  %-44s %10.0f /s   p99 %8.2f ms   errors %s   steal %s%%\n' \
                "$r" "${LABEL[$id]}" "$rps" "$p99" "$errs" "$steal" >&2
        done
    done
    for id in "${TARGETS[@]}"; do
        pick=$(printf '%s' "${RESULTS[$id]}" | sort -n -k1,1 | sed -n "$(((ROUNDS + 1) / 2))p")
        read -r rps p99 errs <<<"$pick"
        RPS[$id]=$rps
        P99[$id]=$p99
        ERRS[$id]=$errs
    done
}

# round_ratios A B [C]: the rate of A over that of B (or the better of B and C) in each
# round, which ran them minutes apart at most: "r1 r2 ... (median m)". On a shared VM
# whose speed drifts between rounds, these paired ratios spread less than the ratio of
# the medians that the verdicts use; printed beside them, not instead.
round_ratios() {
    local a=$1 b=$2 c=${3:-} r out=() x y z
    for r in $(seq "$ROUNDS"); do
        x=$(printf '%s' "${RESULTS[$a]}" | sed -n "${r}p" | awk '{print $1}')
        y=$(printf '%s' "${RESULTS[$b]}" | sed -n "${r}p" | awk '{print $1}')
        if [ -n "$c" ]; then
            z=$(printf '%s' "${RESULTS[$c]}" | sed -n "${r}p" | awk '{print $1}')
            y=$(awk -v y="$y" -v z="$z" 'BEGIN { print (y >= z) ? y : z }')
        fi
        out+=("$(ratio "$x" "$y")")
    done
    printf '%s ' "${out[@]}"
    # Rounds without a ratio (a rate of 0: "n/a") are left out of the median.
    printf '%s\n' "${out[@]}" | sort -n | awk '$1 ~ /^[0-9.]+$/ { v[++n] = $1 } END {
        if (n == 0) { printf "(median n/a)"; exit }
        m = (n % 2) ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
        printf "(median %.2f)", m }'
}

# wrk output -> "RPS P99_MS ERRORS".
parse_wrk() {
    awk '
        function ms(v) {
            if (v ~ /us$/) { sub(/us$/, "", v); return v / 1000 }
            if (v ~ /ms$/) { sub(/ms$/, "", v); return v + 0 }
            if (v ~ /m$/)  { sub(/m$/, "", v);  return v * 60000 }
            if (v ~ /s$/)  { sub(/s$/, "", v);  return v * 1000 }
            return v + 0
        }
        $1 == "99%" { p99 = ms($2) }
        /^Requests\/sec:/ { rps = $2 }
        /Non-2xx or 3xx responses:/ { errs += $NF }
        /Socket errors:/ {
            line = $0; sub(/.*Socket errors: */, "", line)
            n = split(line, parts, /, */)
            for (i = 1; i <= n; i++) { split(parts[i], kv, " "); errs += kv[2] }
        }
        END { printf "%s %s %d\n", rps + 0, p99 + 0, errs + 0 }
    '
}

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }

# verdict OK?: "met" / "MISSED"
verdict() { if [ "$1" = 1 ]; then echo "met"; else echo "MISSED"; fi; }
ge() { awk -v a="$1" -v b="$2" 'BEGIN { print (a >= b) ? 1 : 0 }'; }
le() { awk -v a="$1" -v b="$2" 'BEGIN { print (a <= b) ? 1 : 0 }'; }

row() {
    local name=$1 note=${2:-}
    printf '| %-44s | %9.0f | %8.2f | %6s | %s\n' "${LABEL[$name]}" "${RPS[$name]}" "${P99[$name]}" \
        "${ERRS[$name]}" "$note"
}

header() {
    printf '| %-44s | %9s | %8s | %6s | %s\n' "target" "req/s" "p99 ms" "errors" "notes"
    printf '|%s|%s|%s|%s|%s\n' "----------------------------------------------" "-----------" \
        "----------" "--------" "------"
}

environment() {
    echo "machine: $(nproc) cores; load: $(uptime | sed 's/.*load average/load average/')"
    if ((${#STEALS[@]} > 0)); then
        echo "steal (CPU the hypervisor gave to other guests) over the measured runs: $(printf '%s\n' "${STEALS[@]}" |
            sort -n | awk '{ v[NR] = $1 } END { printf "median %s%%, max %s%%", v[int((NR + 1) / 2)], v[NR] }')"
    fi
    echo "wrk: -t$THREADS -c$CONNS -d$DURATION --latency (keep-alive), warm-up $WARMUP, rounds $ROUNDS (interleaved; median by req/s)"
    echo "portico: $PORTICO ($(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo '?'))"
}
