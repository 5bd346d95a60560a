#!/usr/bin/env bash
# Legacy CGI hosting: the same tiny CGI program (compiled C, and /bin/sh) served by
# portico (HTTP listener, cgi route), lighttpd mod_cgi, and nginx + fcgiwrap; the
# machine's spawn floor (posix_spawn + wait, 2 workers, no server; and with vfork, the
# cheapest spawn, which bounds every server that execs per request); portico's in-process
# echo handler against nginx returning a fixed body; portico's idle RSS.
#
#   benches/cgi.sh                 # ~2 minutes with the defaults
#   DURATION=3s benches/cgi.sh     # shorter runs (also THREADS, CONNS, ROUNDS, WARMUP,
#                                  # SPAWN_SECONDS, FCGIWRAP_CHILDREN, NGINX_WORKERS;
#                                  # CGI_OPTS adds keys to the cgi route)
#
# Everything runs on loopback, from a temp dir, with configs written here; see
# benches/README.md.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

SPAWN_SECONDS=${SPAWN_SECONDS:-5}
FCGIWRAP_CHILDREN=${FCGIWRAP_CHILDREN:-4}
NGINX_WORKERS=${NGINX_WORKERS:-2}

need wrk nginx lighttpd fcgiwrap cc curl python3 setsid
setup
echo "building the tiny programs in $TMP" >&2

# --- the programs -------------------------------------------------------------------
mkdir -p "$TMP/www/cgi-bin" "$TMP/nginx"
cc -O2 -o "$TMP/www/cgi-bin/tiny" "$BENCH_DIR/src/tiny.c"
printf '#!/bin/sh\nprintf '"'"'Content-Type: text/plain\\r\\n\\r\\nhello\\n'"'"'\n' \
    >"$TMP/www/cgi-bin/tiny.sh"
chmod 755 "$TMP/www/cgi-bin/tiny" "$TMP/www/cgi-bin/tiny.sh"
cc -O2 -pthread -o "$TMP/spawnfloor" "$BENCH_DIR/src/spawnfloor.c"

# --- portico ------------------------------------------------------------------------
P_PORT=$(free_port)
cat >"$TMP/portico.toml" <<EOF
[server]
access_log = "off"

[[listen]]
protocol = "http"
address = "127.0.0.1:$P_PORT"

[[route]]
prefix = "/cgi-bin/"
cgi = { root = "$TMP/www/cgi-bin", timeout = "30s", max_concurrent = 64${CGI_OPTS:+, $CGI_OPTS} }

[[route]]
exact = "/echo"
handler = "echo"
EOF
# Idle RSS: as soon as it says it listens, before any request.
start_portico "$TMP/portico.toml" "$TMP/portico.log"
wait_http "http://127.0.0.1:$P_PORT/echo" "$PORTICO_PID" "$TMP/portico.log"

# --- lighttpd mod_cgi ---------------------------------------------------------------
L_PORT=$(free_port)
cat >"$TMP/lighttpd.conf" <<EOF
server.document-root = "$TMP/www"
server.port = $L_PORT
server.bind = "127.0.0.1"
server.errorlog = "$TMP/lighttpd.error.log"
server.modules = ("mod_cgi")
server.max-keep-alive-requests = 100000
\$HTTP["url"] =~ "^/cgi-bin/" {
    cgi.assign = ( "" => "" )
}
EOF
start_bg "$TMP/lighttpd.log" lighttpd -D -f "$TMP/lighttpd.conf"
LIGHTTPD_PID=$STARTED
wait_http "http://127.0.0.1:$L_PORT/cgi-bin/tiny" "$LIGHTTPD_PID" "$TMP/lighttpd.log"

# --- nginx + fcgiwrap ---------------------------------------------------------------
start_bg "$TMP/fcgiwrap.log" fcgiwrap -c "$FCGIWRAP_CHILDREN" -s "unix:$TMP/fcgiwrap.sock"
FCGIWRAP_PID=$STARTED
wait_socket "$TMP/fcgiwrap.sock"
N_PORT=$(free_port)
{ nginx_preamble 4096; cat <<EOF; } >"$TMP/nginx.conf"
    server {
        listen 127.0.0.1:$N_PORT;
        location /cgi-bin/ {
            include /etc/nginx/fastcgi_params;
            fastcgi_param SCRIPT_FILENAME $TMP/www\$fastcgi_script_name;
            fastcgi_pass unix:$TMP/fcgiwrap.sock;
        }
        location /fixed {
            default_type text/plain;
            return 200 "hello\n";
        }
    }
}
EOF
start_bg "$TMP/nginx.log" nginx -p "$TMP/nginx" -c "$TMP/nginx.conf"
NGINX_PID=$STARTED
wait_http "http://127.0.0.1:$N_PORT/fixed" "$NGINX_PID" "$TMP/nginx.log"

for base in "http://127.0.0.1:$P_PORT" "http://127.0.0.1:$L_PORT" "http://127.0.0.1:$N_PORT"; do
    check_body "$base/cgi-bin/tiny" hello
    check_body "$base/cgi-bin/tiny.sh" hello
done
check_body "http://127.0.0.1:$N_PORT/fixed" hello

# --- measurements -------------------------------------------------------------------
# The spawn floor is measured right before portico's run of the same program, so
# both see about the same background load (the vfork floor just before it).
target_cmd vfloor_c "vfork floor C (no server)" \
    sh -c "'$TMP/spawnfloor' '$TMP/www/cgi-bin/tiny' $SPAWN_SECONDS 2 vfork | awk '{print \$2, 0, 0}'"
target_cmd floor_c "spawn floor C (no server)" \
    sh -c "'$TMP/spawnfloor' '$TMP/www/cgi-bin/tiny' $SPAWN_SECONDS 2 | awk '{print \$2, 0, 0}'"
target portico_c "portico (http, cgi route)  C" "http://127.0.0.1:$P_PORT/cgi-bin/tiny"
target lighttpd_c "lighttpd mod_cgi           C" "http://127.0.0.1:$L_PORT/cgi-bin/tiny"
target fcgiwrap_c "nginx + fcgiwrap           C" "http://127.0.0.1:$N_PORT/cgi-bin/tiny"
target_cmd vfloor_sh "vfork floor sh (no server)" \
    sh -c "'$TMP/spawnfloor' '$TMP/www/cgi-bin/tiny.sh' $SPAWN_SECONDS 2 vfork | awk '{print \$2, 0, 0}'"
target_cmd floor_sh "spawn floor sh (no server)" \
    sh -c "'$TMP/spawnfloor' '$TMP/www/cgi-bin/tiny.sh' $SPAWN_SECONDS 2 | awk '{print \$2, 0, 0}'"
target portico_sh "portico (http, cgi route)  sh" "http://127.0.0.1:$P_PORT/cgi-bin/tiny.sh"
target lighttpd_sh "lighttpd mod_cgi           sh" "http://127.0.0.1:$L_PORT/cgi-bin/tiny.sh"
target fcgiwrap_sh "nginx + fcgiwrap           sh" "http://127.0.0.1:$N_PORT/cgi-bin/tiny.sh"
target portico_echo "portico echo handler (GET /echo)" "http://127.0.0.1:$P_PORT/echo"
target nginx_fixed "nginx return 200 (GET /fixed)" "http://127.0.0.1:$N_PORT/fixed"
echo "runs…" >&2
run_targets
FLOOR_C=${RPS[floor_c]}
FLOOR_SH=${RPS[floor_sh]}
VFLOOR_C=${RPS[vfloor_c]}
VFLOOR_SH=${RPS[vfloor_sh]}
AFTER_RSS=$(rss_kb "$PORTICO_PID")
ECHO_BYTES=$(curl -s "http://127.0.0.1:$P_PORT/echo" | wc -c)

# --- report -------------------------------------------------------------------------
# best_peer KIND -> id of the peer with more req/s
best_peer() {
    if awk -v a="${RPS[lighttpd_$1]}" -v b="${RPS[fcgiwrap_$1]}" 'BEGIN { exit !(a >= b) }'; then
        echo "lighttpd_$1"
    else
        echo "fcgiwrap_$1"
    fi
}

# pct A B -> A as a whole percentage of B (0 when B is not positive)
pct() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.0f", (b > 0 ? 100 * a / b : 0) }'; }

# over_floor RATE FLOOR -> microseconds per request above the floor's (1e6/rate - 1e6/floor)
over_floor() { awk -v r="$1" -v f="$2" 'BEGIN { if (r > 0 && f > 0) printf "%.0f", 1e6 / r - 1e6 / f; else print "n/a" }'; }

peer_name() { case $1 in lighttpd_*) echo "lighttpd mod_cgi" ;; *) echo "nginx + fcgiwrap" ;; esac; }

echo
echo "== benches/cgi.sh: legacy CGI hosting =="
environment
echo "nginx: $NGINX_WORKERS workers; fcgiwrap: -c $FCGIWRAP_CHILDREN on a Unix socket, one FastCGI connection per request (nginx default); lighttpd: 1 process (mod_cgi)"
echo
header
row portico_c
row lighttpd_c
row fcgiwrap_c
row portico_sh
row lighttpd_sh
row fcgiwrap_sh
row portico_echo "body $ECHO_BYTES bytes (method, target, headers)"
row nginx_fixed "body 6 bytes"
echo
echo "ratios (target in brackets):"
for kind in c sh; do
    best=$(best_peer "$kind")
    r=$(ratio "${RPS[portico_$kind]}" "${RPS[$best]}")
    ok_r=$(ge "$r" 1.3)
    ok_p=$(le "${P99[portico_$kind]}" "${P99[$best]}")
    printf '  %-3s portico / best peer (%s): %sx  [>= 1.3x: %s]; p99 %.2f vs %.2f ms [no worse: %s]\n' \
        "$kind" "$(peer_name "$best")" "$r" "$(verdict "$ok_r")" "${P99[portico_$kind]}" \
        "${P99[$best]}" "$(verdict "$ok_p")"
done
for kind in c sh; do
    printf '  %-3s portico / better peer, round by round: %s\n' "$kind" \
        "$(round_ratios "portico_$kind" "lighttpd_$kind" "fcgiwrap_$kind")"
done
for kind in c sh; do
    if [ "$kind" = c ]; then floor=$FLOOR_C; else floor=$FLOOR_SH; fi
    f=$(ratio "${RPS[portico_$kind]}" "$floor")
    pct=$(awk -v f="$f" 'BEGIN { printf "%.0f", f * 100 }')
    printf '  %-3s spawn floor %s spawns/s (posix_spawn+read+waitpid, 2 threads); portico = %s%% of it  [>= 70%%: %s]\n' \
        "$kind" "$floor" "$pct" "$(verdict "$(ge "$f" 0.7)")"
done
# How far the ratio target can be reached at all here: the vfork floor is spawn + read +
# wait with about the cheapest spawn and the machine to itself (no wrk, no HTTP), an
# estimate of the most a server that execs per request can do (an estimate: a server
# with more children in flight may keep the CPUs a little busier, and load drifts
# between runs). A target rate near it is out of practical reach on this machine; that
# happens where starting the program costs far more than serving a request (a VM where
# each CPUID the dynamic loader runs traps to the hypervisor, say).
for kind in c sh; do
    if [ "$kind" = c ]; then vfloor=$VFLOOR_C; else vfloor=$VFLOOR_SH; fi
    best=$(best_peer "$kind")
    need=$(awk -v b="${RPS[$best]}" 'BEGIN { printf "%.0f", b * 1.3 }')
    printf '  %-3s vfork floor %s spawns/s; 1.3x the best peer is %s req/s = %s%% of it, portico is at %s%%\n' \
        "$kind" "$vfloor" "$need" \
        "$(pct "$need" "$vfloor")" "$(pct "${RPS[portico_$kind]}" "$vfloor")"
    # What each server adds to a request on top of the bare spawn, in wall-clock time
    # per request at its rate (the machine's two CPUs shared by all): 1/rate - 1/floor.
    printf '  %-3s time per request above the vfork floor: portico %s us, %s %s us (peer / portico: %s)\n' \
        "$kind" "$(over_floor "${RPS[portico_$kind]}" "$vfloor")" "$(peer_name "$best")" \
        "$(over_floor "${RPS[$best]}" "$vfloor")" \
        "$(awk -v p="${RPS[portico_$kind]}" -v b="${RPS[$best]}" -v f="$vfloor" 'BEGIN {
            if (p > 0 && b > 0 && f > 0 && 1 / p > 1 / f) printf "%.2f", (1 / b - 1 / f) / (1 / p - 1 / f)
            else print "n/a" }')"
done
printf '  echo / nginx, round by round: %s\n' "$(round_ratios portico_echo nginx_fixed)"
r=$(ratio "${RPS[portico_echo]}" "${RPS[nginx_fixed]}")
printf '  echo handler / nginx fixed body: %sx  [>= 0.8x: %s]; p99 %.2f vs %.2f ms\n' \
    "$r" "$(verdict "$(ge "$r" 0.8)")" "${P99[portico_echo]}" "${P99[nginx_fixed]}"
printf '  portico idle RSS right after start: %.1f MB  [< 10 MB: %s]; after the runs: %.1f MB\n' \
    "$(awk -v k="$IDLE_RSS" 'BEGIN { print k / 1024 }')" \
    "$(verdict "$(awk -v k="$IDLE_RSS" 'BEGIN { print (k < 10240) ? 1 : 0 }')")" \
    "$(awk -v k="$AFTER_RSS" 'BEGIN { print k / 1024 }')"
other=$(grep -vc "listening on" "$TMP/portico.log" || true)
echo "  portico stderr: $other lines besides \"listening on\"$( [ "$other" = 0 ] || echo ", first: $(grep -v "listening on" "$TMP/portico.log" | head -1 | head -c 200)")"
