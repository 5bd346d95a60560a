#!/usr/bin/env bash
# PHP: the same hello.php (`<?php echo "hello\n";`) served over FastCGI by
#   group A, php-fpm (pm = static, N children, Unix socket) behind
#     portico      [[route]] suffix = ".php", fastcgi = { upstreams = [unix:…], max_conns = N }
#     nginx        fastcgi_pass to an upstream with keepalive, fastcgi_keep_conn on
#     lighttpd     mod_fastcgi, "socket" => …, check-local disable
#   group B, php-cgi × N (no php-fpm) behind
#     portico      managed children: fastcgi = { command = ["php-cgi"], processes = N }
#     nginx        spawn-fcgi -C N php-cgi (PHP_FCGI_CHILDREN: N workers on one socket)
# and prints requests/s, p99 and the ratio portico / best front in each group; and, as the
# ceiling of group A, the FastCGI client alone (fastcgi-client as portico builds it, and
# the portico-protocols client) against the same php-fpm with N kept connections and no
# HTTP in front (benches/src/fcgi_client_floor.rs).
#
#   benches/php.sh               # ~1.5 minutes with the defaults
#   DURATION=3s benches/php.sh   # shorter (also THREADS, CONNS, ROUNDS, WARMUP, PHP_N,
#                                # NGINX_WORKERS, NGINX_KEEPALIVE, NGINX_B_KEEP_CONN)
#
# Each front gets its own php-fpm (same config, same N): nginx's kept FastCGI connections
# pin php-fpm workers (a worker serves one connection until it is closed), so a shared
# pool would let one front starve the next. Everything runs on loopback, from a temp dir,
# with configs written here; see benches/README.md.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

PHP_N=${PHP_N:-4}                 # php-fpm pm.max_children, php-cgi processes
NGINX_WORKERS=${NGINX_WORKERS:-2}
# Idle kept connections cached per nginx worker (group A); the total stays at N so kept
# connections never hold more php-fpm workers than there are.
NGINX_KEEPALIVE=${NGINX_KEEPALIVE:-$(((PHP_N + NGINX_WORKERS - 1) / NGINX_WORKERS))}
# Group B: nginx → spawn-fcgi php-cgi. "off" (default, spawn-fcgi's usual setup): one
# FastCGI connection per request; "on": kept connections like group A.
NGINX_B_KEEP_CONN=${NGINX_B_KEEP_CONN:-off}
FPM=${FPM:-/usr/sbin/php-fpm8.2}
PHP_CGI=${PHP_CGI:-/usr/bin/php-cgi}

need wrk nginx lighttpd spawn-fcgi curl python3 setsid "$FPM" "$PHP_CGI"
setup

mkdir -p "$TMP/www" "$TMP/nginx"
cp "$BENCH_DIR/src/hello.php" "$TMP/www/hello.php"

# --- php-fpm, one per front of group A ------------------------------------------------
# start_fpm NAME: php-fpm on $TMP/fpm-NAME.sock; sets STARTED.
start_fpm() {
    local name=$1
    cat >"$TMP/fpm-$name.conf" <<EOF
[global]
pid = $TMP/fpm-$name.pid
error_log = $TMP/fpm-$name.error.log
daemonize = no

[www]
listen = $TMP/fpm-$name.sock
listen.mode = 0666
pm = static
pm.max_children = $PHP_N
pm.max_requests = 0
clear_env = no
catch_workers_output = no
EOF
    start_bg "$TMP/fpm-$name.log" "$FPM" -F -R -y "$TMP/fpm-$name.conf"
    wait_socket "$TMP/fpm-$name.sock"
}
start_fpm portico
start_fpm nginx
start_fpm lighttpd
start_fpm floor

# The client floor (no HTTP, no routing): benches/src/fcgi_client_floor.rs.
FLOOR=$ROOT/target/release/examples/fcgi_client_floor
(cd "$ROOT" && cargo build --release --quiet --example fcgi_client_floor)
FLOOR_SECS=${DURATION%s}

# --- group A: portico → php-fpm -----------------------------------------------------
PA_PORT=$(free_port)
cat >"$TMP/portico-a.toml" <<EOF
[server]
access_log = "off"

[[listen]]
protocol = "http"
address = "127.0.0.1:$PA_PORT"

[[route]]
suffix = ".php"
fastcgi = { upstreams = ["unix:$TMP/fpm-portico.sock"], document_root = "$TMP/www", max_conns = $PHP_N }
EOF
start_bg "$TMP/portico-a.log" "$PORTICO" serve --config "$TMP/portico-a.toml"
PORTICO_A_PID=$STARTED
wait_http "http://127.0.0.1:$PA_PORT/hello.php" "$PORTICO_A_PID" "$TMP/portico-a.log"

# --- group A: lighttpd → php-fpm ----------------------------------------------------
L_PORT=$(free_port)
cat >"$TMP/lighttpd.conf" <<EOF
server.document-root = "$TMP/www"
server.port = $L_PORT
server.bind = "127.0.0.1"
server.errorlog = "$TMP/lighttpd.error.log"
server.modules = ("mod_fastcgi")
server.max-keep-alive-requests = 100000
fastcgi.server = ( ".php" => ((
    "socket" => "$TMP/fpm-lighttpd.sock",
    "check-local" => "disable"
)) )
EOF
start_bg "$TMP/lighttpd.log" lighttpd -D -f "$TMP/lighttpd.conf"
LIGHTTPD_PID=$STARTED
wait_http "http://127.0.0.1:$L_PORT/hello.php" "$LIGHTTPD_PID" "$TMP/lighttpd.log"

# --- group B: php-cgi × N under spawn-fcgi (for nginx) --------------------------------
# -n: spawn-fcgi execs php-cgi in place, so the recorded PID is php-cgi's parent (it
# forks PHP_FCGI_CHILDREN workers in its process group and stops them on SIGTERM).
start_bg "$TMP/spawn-fcgi.log" env PHP_FCGI_MAX_REQUESTS=0 \
    spawn-fcgi -n -s "$TMP/php-cgi.sock" -M 0666 -C "$PHP_N" -- "$PHP_CGI"
SPAWN_PID=$STARTED
wait_socket "$TMP/php-cgi.sock"

# --- group B: portico managed php-cgi children ----------------------------------------
PB_PORT=$(free_port)
cat >"$TMP/portico-b.toml" <<EOF
[server]
access_log = "off"

[[listen]]
protocol = "http"
address = "127.0.0.1:$PB_PORT"

[[route]]
suffix = ".php"
fastcgi = { command = ["$PHP_CGI"], mode = "static", processes = $PHP_N, max_requests = 0,
            document_root = "$TMP/www", env = { PHP_FCGI_MAX_REQUESTS = "0" } }
EOF
start_bg "$TMP/portico-b.log" "$PORTICO" serve --config "$TMP/portico-b.toml"
PORTICO_B_PID=$STARTED
wait_http "http://127.0.0.1:$PB_PORT/hello.php" "$PORTICO_B_PID" "$TMP/portico-b.log"

# --- nginx: group A (port NA) and group B (port NB) ---------------------------------
NA_PORT=$(free_port) NB_PORT=$(free_port)
if [ "$NGINX_B_KEEP_CONN" = on ]; then
    B_UPSTREAM="upstream phpcgi { server unix:$TMP/php-cgi.sock; keepalive $NGINX_KEEPALIVE; keepalive_requests 1000000; }"
    B_PASS="fastcgi_pass phpcgi; fastcgi_keep_conn on;"
else
    B_UPSTREAM=""
    B_PASS="fastcgi_pass unix:$TMP/php-cgi.sock;"
fi
{ nginx_preamble 4096; cat <<EOF; } >"$TMP/nginx.conf"

    upstream fpm { server unix:$TMP/fpm-nginx.sock; keepalive $NGINX_KEEPALIVE; keepalive_requests 1000000; }
    $B_UPSTREAM

    # Group A: php-fpm, kept FastCGI connections. try_files: the usual guard, which
    # portico's suffix route does too (the script must exist under document_root).
    server {
        listen 127.0.0.1:$NA_PORT;
        root $TMP/www;
        location ~ \.php\$ {
            try_files \$uri =404;
            include /etc/nginx/fastcgi_params;
            fastcgi_param SCRIPT_FILENAME \$document_root\$fastcgi_script_name;
            fastcgi_pass fpm;
            fastcgi_keep_conn on;
        }
    }
    # Group B: spawn-fcgi php-cgi.
    server {
        listen 127.0.0.1:$NB_PORT;
        root $TMP/www;
        location ~ \.php\$ {
            try_files \$uri =404;
            include /etc/nginx/fastcgi_params;
            fastcgi_param SCRIPT_FILENAME \$document_root\$fastcgi_script_name;
            $B_PASS
        }
    }
}
EOF
start_bg "$TMP/nginx.log" nginx -p "$TMP/nginx" -c "$TMP/nginx.conf"
NGINX_PID=$STARTED
wait_http "http://127.0.0.1:$NA_PORT/hello.php" "$NGINX_PID" "$TMP/nginx.log"

URL_PA="http://127.0.0.1:$PA_PORT/hello.php"
URL_NA="http://127.0.0.1:$NA_PORT/hello.php"
URL_L="http://127.0.0.1:$L_PORT/hello.php"
URL_PB="http://127.0.0.1:$PB_PORT/hello.php"
URL_NB="http://127.0.0.1:$NB_PORT/hello.php"
for u in "$URL_PA" "$URL_NA" "$URL_L" "$URL_PB" "$URL_NB"; do check_body "$u" hello; done

# --- measurements -------------------------------------------------------------------
echo "wrk runs…" >&2
target a_portico "A portico > php-fpm" "$URL_PA"
target a_nginx "A nginx > php-fpm" "$URL_NA"
target a_lighttpd "A lighttpd > php-fpm" "$URL_L"
target b_portico "B portico > php-cgi (managed children)" "$URL_PB"
target b_nginx "B nginx > spawn-fcgi php-cgi" "$URL_NB"
target_cmd f_crate "A fastcgi-client alone > php-fpm (no HTTP)" \
    "$FLOOR" crate "$TMP/fpm-floor.sock" "$TMP/www/hello.php" "$PHP_N" "$FLOOR_SECS"
target_cmd f_proto "A protocols client alone > php-fpm (no HTTP)" \
    "$FLOOR" proto "$TMP/fpm-floor.sock" "$TMP/www/hello.php" "$PHP_N" "$FLOOR_SECS"
run_targets

# --- report -------------------------------------------------------------------------
echo
echo "== benches/php.sh: hello.php through php-fpm and php-cgi =="
environment
echo "php: $("$PHP_CGI" -v | head -1 | cut -d' ' -f1-2); N = $PHP_N; nginx $NGINX_WORKERS workers; lighttpd 1 process; every FastCGI hop on a Unix socket"
echo "  A: php-fpm pm=static max_children=$PHP_N max_requests=0, one php-fpm per front (same config)"
echo "     portico max_conns=$PHP_N kept connections; nginx upstream keepalive $NGINX_KEEPALIVE/worker + fastcgi_keep_conn on;"
echo "     lighttpd mod_fastcgi, one connection per request (it does not keep FastCGI connections)"
echo "  B: php-cgi PHP_FCGI_MAX_REQUESTS=0; portico: $PHP_N managed children, one socket each, kept connections;"
echo "     nginx: spawn-fcgi -C $PHP_N (one socket, $PHP_N workers), fastcgi_keep_conn $NGINX_B_KEEP_CONN"
echo
header
row a_portico
row a_nginx
row a_lighttpd
row b_portico
row b_nginx
row f_crate "$PHP_N kept connections, one request at a time each"
row f_proto "same, portico-protocols encoder and decoder"
echo
echo "ratios (target: portico >= 1.0x the best front, p99 no worse):"
if awk -v a="${RPS[a_nginx]}" -v b="${RPS[a_lighttpd]}" 'BEGIN { exit !(a >= b) }'; then
    best_a=a_nginx
else
    best_a=a_lighttpd
fi
for pair in "A a_portico $best_a" "B b_portico b_nginx"; do
    read -r g p b <<<"$pair"
    r=$(ratio "${RPS[$p]}" "${RPS[$b]}")
    printf '  %s portico / best (%s): %sx  [>= 1.0x: %s]; p99 %.2f vs %.2f ms [no worse: %s]\n' \
        "$g" "${LABEL[$b]}" "$r" "$(verdict "$(ge "$r" 1.0)")" "${P99[$p]}" "${P99[$b]}" \
        "$(verdict "$(le "${P99[$p]}" "${P99[$b]}")")"
done
printf '  A lighttpd / nginx: %sx\n' "$(ratio "${RPS[a_lighttpd]}" "${RPS[a_nginx]}")"
printf '  A nginx / fastcgi-client alone: %sx; portico / fastcgi-client alone: %sx\n' \
    "$(ratio "${RPS[a_nginx]}" "${RPS[f_crate]}")" "$(ratio "${RPS[a_portico]}" "${RPS[f_crate]}")"
for id in A:$PORTICO_A_PID B:$PORTICO_B_PID; do
    log=$TMP/portico-$(echo "${id%%:*}" | tr AB ab).log
    other=$(grep -vc "listening on\|started child" "$log" || true)
    echo "  portico ${id%%:*} stderr: $other lines besides \"listening on\"/\"started child\"$( [ "$other" = 0 ] || echo ", first: $(grep -v "listening on\|started child" "$log" | head -1 | head -c 200)")"
done
