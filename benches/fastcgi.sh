#!/usr/bin/env bash
# FastCGI listener: the same nginx in front of
#   (a) portico's FastCGI listener running the tiny C CGI program,
#   (b) fcgiwrap running it,
#   (c) spawn-fcgi + a libfcgi hello app in C (the FastCGI floor),
#   (d) portico's FastCGI listener answering from its in-process echo handler;
# and portico's RSS idle and with 1,000 kept-alive FastCGI connections open.
#
#   benches/fastcgi.sh              # ~1 minute with the defaults
#   DURATION=3s benches/fastcgi.sh  # shorter (also THREADS, CONNS, ROUNDS, WARMUP,
#                                   # NGINX_WORKERS, FCGIWRAP_CHILDREN, HELLO_CHILDREN,
#                                   # IDLE_CONNS; CGI_OPTS adds keys to the cgi route,
#                                   # e.g. CGI_OPTS="max_starting = 4")
#
# Everything runs on loopback (the FastCGI hops on Unix sockets), from a temp dir, with
# configs written here; see benches/README.md.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

NGINX_WORKERS=${NGINX_WORKERS:-2}
FCGIWRAP_CHILDREN=${FCGIWRAP_CHILDREN:-4}
# libfcgi serves one connection per process; with kept connections nginx holds up to
# CONNS per worker, so give each a process or requests wait for one forever.
HELLO_CHILDREN=${HELLO_CHILDREN:-$((NGINX_WORKERS * CONNS))}
IDLE_CONNS=${IDLE_CONNS:-1000}
KEEPALIVE=$CONNS   # nginx upstream keepalive (idle connections cached per worker)

need wrk nginx fcgiwrap spawn-fcgi cc curl python3 setsid
if [ ! -e /usr/include/fcgiapp.h ]; then
    echo "missing libfcgi-dev (fcgiapp.h): apt-get install libfcgi-dev" >&2
    exit 2
fi
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
if [ "$(ulimit -n)" -lt $((IDLE_CONNS + 200)) ]; then
    echo "ulimit -n is $(ulimit -n); need $((IDLE_CONNS + 200)) (IDLE_CONNS=$IDLE_CONNS)" >&2
    exit 2
fi
setup

# --- the programs -------------------------------------------------------------------
mkdir -p "$TMP/www/cgi-bin" "$TMP/nginx"
cc -O2 -o "$TMP/www/cgi-bin/tiny" "$BENCH_DIR/src/tiny.c"
chmod 755 "$TMP/www/cgi-bin/tiny"
cc -O2 -o "$TMP/fcgi_hello" "$BENCH_DIR/src/fcgi_hello.c" -lfcgi

# --- portico: FastCGI listener ------------------------------------------------------
PSOCK=$TMP/portico.sock
cat >"$TMP/portico.toml" <<EOF
[server]
access_log = "off"

[fastcgi]
max_conns = $((IDLE_CONNS + 1024))

[[listen]]
protocol = "fastcgi"
address = "unix:$PSOCK"
socket_mode = "0666"

[[route]]
prefix = "/cgi-bin/"
cgi = { root = "$TMP/www/cgi-bin", timeout = "30s", max_concurrent = 64${CGI_OPTS:+, $CGI_OPTS} }

[[route]]
exact = "/echo"
handler = "echo"
EOF
start_portico "$TMP/portico.toml" "$TMP/portico.log"
wait_socket "$PSOCK"

# --- fcgiwrap -----------------------------------------------------------------------
start_bg "$TMP/fcgiwrap.log" fcgiwrap -c "$FCGIWRAP_CHILDREN" -s "unix:$TMP/fcgiwrap.sock"
FCGIWRAP_PID=$STARTED
wait_socket "$TMP/fcgiwrap.sock"

# --- spawn-fcgi + libfcgi hello -----------------------------------------------------
# spawn-fcgi forks HELLO_CHILDREN processes and exits: run it in a group of its own and
# record the children's PIDs it prints. libfcgi only notices SIGTERM between requests
# (it restarts accept), so these are stopped with SIGKILL.
setsid spawn-fcgi -s "$TMP/hello.sock" -M 0666 -F "$HELLO_CHILDREN" -- "$TMP/fcgi_hello" \
    >"$TMP/spawn-fcgi.log" 2>&1 </dev/null
while read -r pid; do KILL_PIDS+=("$pid"); done < <(grep -o 'PID: [0-9]*' "$TMP/spawn-fcgi.log" | awk '{print $2}')
wait_socket "$TMP/hello.sock"

# --- nginx in front of all four -----------------------------------------------------
PORT_A=$(free_port) PORT_B=$(free_port) PORT_C=$(free_port) PORT_D=$(free_port)
{ nginx_preamble 8192; cat <<EOF; } >"$TMP/nginx.conf"

    upstream portico { server unix:$PSOCK; keepalive $KEEPALIVE; keepalive_requests 1000000; }
    upstream hello   { server unix:$TMP/hello.sock; keepalive $KEEPALIVE; keepalive_requests 1000000; }

    # (a) portico runs the CGI program; kept FastCGI connections.
    server {
        listen 127.0.0.1:$PORT_A;
        location / {
            include /etc/nginx/fastcgi_params;
            fastcgi_pass portico;
            fastcgi_keep_conn on;
        }
    }
    # (b) fcgiwrap runs it; one FastCGI connection per request.
    server {
        listen 127.0.0.1:$PORT_B;
        location / {
            include /etc/nginx/fastcgi_params;
            fastcgi_param SCRIPT_FILENAME $TMP/www\$fastcgi_script_name;
            fastcgi_pass unix:$TMP/fcgiwrap.sock;
        }
    }
    # (c) libfcgi hello; kept FastCGI connections.
    server {
        listen 127.0.0.1:$PORT_C;
        location / {
            include /etc/nginx/fastcgi_params;
            fastcgi_pass hello;
            fastcgi_keep_conn on;
        }
    }
    # (d) portico's echo handler; kept FastCGI connections.
    server {
        listen 127.0.0.1:$PORT_D;
        location / {
            include /etc/nginx/fastcgi_params;
            fastcgi_pass portico;
            fastcgi_keep_conn on;
        }
    }
}
EOF
start_bg "$TMP/nginx.log" nginx -p "$TMP/nginx" -c "$TMP/nginx.conf"
NGINX_PID=$STARTED
wait_http "http://127.0.0.1:$PORT_C/" "$NGINX_PID" "$TMP/nginx.log"

check_body "http://127.0.0.1:$PORT_A/cgi-bin/tiny" hello
check_body "http://127.0.0.1:$PORT_B/cgi-bin/tiny" hello
check_body "http://127.0.0.1:$PORT_C/hello" hello
curl -sf -o /dev/null "http://127.0.0.1:$PORT_D/echo" || { echo "echo via nginx failed" >&2; exit 1; }

# --- measurements -------------------------------------------------------------------
echo "wrk runs…" >&2
target a_portico_cgi "(a) nginx > portico fastcgi > CGI C" "http://127.0.0.1:$PORT_A/cgi-bin/tiny"
target b_fcgiwrap "(b) nginx > fcgiwrap > CGI C" "http://127.0.0.1:$PORT_B/cgi-bin/tiny"
target c_libfcgi "(c) nginx > libfcgi hello (floor)" "http://127.0.0.1:$PORT_C/hello"
target d_portico_echo "(d) nginx > portico fastcgi > echo" "http://127.0.0.1:$PORT_D/echo"
run_targets
ECHO_BYTES=$(curl -s "http://127.0.0.1:$PORT_D/echo" | wc -c)
LOADED_RSS=$(rss_kb "$PORTICO_PID")

# Memory of kept-alive connections. nginx stays up but idle: its cached connections
# (at most NGINX_WORKERS x KEEPALIVE) count against portico as well.
echo "opening $IDLE_CONNS FastCGI connections to portico…" >&2
python3 "$BENCH_DIR/fcgi_conns.py" "unix:$PSOCK" "$PORTICO_PID" "$IDLE_CONNS" /echo >"$TMP/conns.txt"
declare -A CONN
while read -r k v; do CONN[$k]=$v; done <"$TMP/conns.txt"

# --- report -------------------------------------------------------------------------
mb() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }

echo
echo "== benches/fastcgi.sh: FastCGI listener behind nginx =="
environment
echo "nginx: $NGINX_WORKERS workers, FastCGI upstreams on Unix sockets"
echo "  (a),(d) portico:  fastcgi_keep_conn on + upstream keepalive $KEEPALIVE (portico honours FCGI_KEEP_CONN)"
echo "  (b)     fcgiwrap: -c $FCGIWRAP_CHILDREN, one connection per request (fastcgi_keep_conn off, the usual setup)"
echo "  (c)     libfcgi:  spawn-fcgi -F $HELLO_CHILDREN, fastcgi_keep_conn on + upstream keepalive $KEEPALIVE (one kept connection per process)"
echo
header
row a_portico_cgi
row b_fcgiwrap
row c_libfcgi "body 6 bytes"
row d_portico_echo "body $ECHO_BYTES bytes (method, target, headers)"
echo
echo "ratios (target in brackets):"
r=$(ratio "${RPS[a_portico_cgi]}" "${RPS[b_fcgiwrap]}")
printf '  (a)/(b) portico / fcgiwrap, CGI:        %sx  [>= 1.3x: %s]; p99 %.2f vs %.2f ms [no worse: %s]\n' \
    "$r" "$(verdict "$(ge "$r" 1.3)")" "${P99[a_portico_cgi]}" "${P99[b_fcgiwrap]}" \
    "$(verdict "$(le "${P99[a_portico_cgi]}" "${P99[b_fcgiwrap]}")")"
printf '  (a)/(b) round by round: %s\n' "$(round_ratios a_portico_cgi b_fcgiwrap)"
r=$(ratio "${RPS[d_portico_echo]}" "${RPS[c_libfcgi]}")
printf '  (d)/(c) portico echo / libfcgi floor:   %sx  [>= 0.9x: %s]; p99 %.2f vs %.2f ms\n' \
    "$r" "$(verdict "$(ge "$r" 0.9)")" "${P99[d_portico_echo]}" "${P99[c_libfcgi]}"
echo
echo "portico memory (VmRSS):"
printf '  idle, right after start:                 %s MB  [< 10 MB: %s]\n' "$(mb "$IDLE_RSS")" \
    "$(verdict "$(awk -v k="$IDLE_RSS" 'BEGIN { print (k < 10240) ? 1 : 0 }')")"
printf '  after the wrk runs:                      %s MB\n' "$(mb "$LOADED_RSS")"
growth_idle=$((CONN[rss_idle] - CONN[rss_before]))
growth_kept=$((CONN[rss_kept] - CONN[rss_before]))
printf '  before opening %s connections:         %s MB\n' "$IDLE_CONNS" "$(mb "${CONN[rss_before]}")"
printf '  %s idle connections (nothing sent):    %s MB  (growth %s MB)\n' "$IDLE_CONNS" \
    "$(mb "${CONN[rss_idle]}")" "$(mb "$growth_idle")"
printf '  after one KEEP_CONN request on each:     %s MB  (growth %s MB) [growth < 32 MB: %s]\n' \
    "$(mb "${CONN[rss_kept]}")" "$(mb "$growth_kept")" \
    "$(verdict "$(awk -v k="$growth_kept" 'BEGIN { print (k < 32768) ? 1 : 0 }')")"
printf '    of the %s requests: %s complete, %s refused (FCGI_OVERLOADED or other status), %s unanswered; %s connections still open\n' \
    "$IDLE_CONNS" "${CONN[complete]}" "${CONN[refused]}" "${CONN[unanswered]}" "${CONN[still_open]}"
printf '  after closing them:                      %s MB\n' "$(mb "${CONN[rss_closed]}")"
other=$(grep -vc "listening on" "$TMP/portico.log" || true)
echo "  portico stderr: $other lines besides \"listening on\"$( [ "$other" = 0 ] || echo ", first: $(grep -v "listening on" "$TMP/portico.log" | head -1 | head -c 200)")"
