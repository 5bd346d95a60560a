#!/usr/bin/env bash
# The conformance matrix: runs `portico probe` against real FastCGI and SCGI
# implementations (Debian and PyPI packages) and portico's own listeners, and
# `portico probe --serve` behind real web servers, then writes docs/conformance.md: a
# table of implementations x verdict counts and, per implementation, every non-PASS
# line.
#
#   benches/conformance.sh              # writes docs/conformance.md
#   OUT=/tmp/c.md benches/conformance.sh
#   KEEP_TMP=1 benches/conformance.sh   # keep configs and every peer's log
#
# Every peer is started by this script on 127.0.0.1 (free ports) from one temp dir,
# and stopped by the PID it recorded (its process group), never by name.
#
# Exit status: 1 if portico's own listeners get any FAIL (or could not be probed), or a
# required peer (php-fpm, fcgiwrap) is missing or cannot be probed; 0 otherwise. An
# optional peer that is not installed is marked "not installed" in the table.
#
# Needs (Debian): php8.2-fpm php8.2-cgi fcgiwrap spawn-fcgi libfcgi-dev gcc nginx-light
# apache2 lighttpd curl python3; (PyPI): flup. Knobs: PORTICO (the binary),
# CHECK_TIMEOUT (probe --check-timeout, 2s), PHP_FPM, OUT, KEEP_TMP,
# ALLOW_MISSING_PROBE=1 (tolerate a probe mode the binary does not implement yet).

set -uo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
OUT=${OUT:-$ROOT/docs/conformance.md}
CHECK_TIMEOUT=${CHECK_TIMEOUT:-2s}
PHP_FPM=${PHP_FPM:-$(command -v php-fpm8.2 || ls /usr/sbin/php-fpm* 2>/dev/null | head -1 || true)}
APACHE=${APACHE:-/usr/sbin/apache2}
APACHE_MODULES=${APACHE_MODULES:-/usr/lib/apache2/modules}

PIDS=()
TMP=$(mktemp -d "${TMPDIR:-/tmp}/portico-conformance.XXXXXX")

log() { echo "conformance: $*" >&2; }

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

cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do stop_pid "$pid"; done
    PIDS=()
    if [ -n "${KEEP_TMP:-}" ]; then log "temp dir kept: $TMP"; else rm -rf "$TMP"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# start_bg NAME CMD...: CMD in the background as a process-group leader, its output in
# $TMP/NAME.log; sets STARTED.
start_bg() {
    local name=$1
    shift
    setsid "$@" >"$TMP/$name.log" 2>&1 </dev/null &
    STARTED=$!
    PIDS+=("$STARTED")
}

# stop PID: stops one server started with start_bg.
stop() {
    local pid=$1 keep=() p
    stop_pid "$pid"
    for p in "${PIDS[@]}"; do [ "$p" = "$pid" ] || keep+=("$p"); done
    PIDS=("${keep[@]}")
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# wait_port PORT PID: until 127.0.0.1:PORT accepts (10 s); fails if PID died.
wait_port() {
    local port=$1 pid=$2 i
    for i in $(seq 100); do
        if python3 -c 'import socket,sys; socket.create_connection(("127.0.0.1", int(sys.argv[1])), 0.2).close()' "$port" 2>/dev/null; then
            return 0
        fi
        kill -0 "$pid" 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
}

# ---------------------------------------------------------------------- the binary
# The release or the debug build, whichever exists (the newer if both do).
if [ -z "${PORTICO:-}" ]; then
    for cand in "${CARGO_TARGET_DIR:-$ROOT/target}/release/portico" "${CARGO_TARGET_DIR:-$ROOT/target}/debug/portico"; do
        if [ -x "$cand" ] && { [ -z "${PORTICO:-}" ] || [ "$cand" -nt "$PORTICO" ]; }; then PORTICO=$cand; fi
    done
fi
if [ -z "${PORTICO:-}" ]; then
    log "building portico (cargo build --release)…"
    (cd "$ROOT" && cargo build --release --quiet) || exit 1
    PORTICO="${CARGO_TARGET_DIR:-$ROOT/target}/release/portico"
fi
log "using $PORTICO"

# ---------------------------------------------------------------------- bookkeeping
ROWS=()          # row ids in table order
declare -A NAME PROTO VERSION STATUS COUNTS REPORT REQUIRED
EXIT=0

# add_row ID NAME PROTOCOL VERSION REQUIRED(yes/no/own)
add_row() {
    ROWS+=("$1")
    NAME[$1]=$2
    PROTO[$1]=$3
    VERSION[$1]=$4
    REQUIRED[$1]=$5
    STATUS[$1]=""
    COUNTS[$1]=""
    REPORT[$1]=""
}

# missing ID WHY: the peer cannot be run.
missing() {
    STATUS[$1]=$2
    case ${REQUIRED[$1]} in
    yes | own)
        log "${NAME[$1]}: $2 (required)"
        EXIT=1
        ;;
    *) log "${NAME[$1]}: $2" ;;
    esac
}

# record ID FILE CODE: files a probe report; counts from its summary line.
record() {
    local id=$1 file=$2 code=$3 summary
    REPORT[$id]=$file
    if grep -q "not available yet" "$file" 2>/dev/null; then
        STATUS[$id]="probe mode not implemented"
        if [ -z "${ALLOW_MISSING_PROBE:-}" ] && [ "${REQUIRED[$id]}" != no ]; then EXIT=1; fi
        return
    fi
    summary=$(grep -E ' [0-9]+ PASS, [0-9]+ INFO, [0-9]+ WARN, [0-9]+ FAIL, [0-9]+ ERROR in ' "$file" | tail -1)
    if [ -z "$summary" ]; then
        STATUS[$id]="no report (exit $code)"
        [ "${REQUIRED[$id]}" = no ] || EXIT=1
        return
    fi
    COUNTS[$id]=$(sed -E 's/.* ([0-9]+) PASS, ([0-9]+) INFO, ([0-9]+) WARN, ([0-9]+) FAIL, ([0-9]+) ERROR in ([0-9.]+s).*/\1 \2 \3 \4 \5 \6/' <<<"$summary")
    STATUS[$id]=ok
    local fail error
    read -r _ _ _ fail error _ <<<"${COUNTS[$id]}"
    if [ "${REQUIRED[$id]}" = own ] && [ "$((fail + error))" -gt 0 ]; then
        log "${NAME[$id]}: $fail FAIL, $error ERROR — portico's own listener must pass every MUST"
        EXIT=1
    fi
    log "${NAME[$id]}: ${summary##*: }"
}

# probe ID ARGS...: runs portico probe, records its report.
probe() {
    local id=$1 code
    shift
    "$PORTICO" probe --check-timeout "$CHECK_TIMEOUT" "$@" >"$TMP/$id.report" 2>"$TMP/$id.stderr"
    code=$?
    cat "$TMP/$id.stderr" >>"$TMP/$id.report"
    record "$id" "$TMP/$id.report" "$code"
}

pkg_version() { dpkg-query -W -f '${Version}' "$1" 2>/dev/null || echo "?"; }

mkdir -p "$TMP/www"
cat >"$TMP/www/hello.php" <<'PHP'
<?php
$body = file_get_contents('php://input');
header('Content-Type: text/plain; charset=utf-8');
echo 'hello ', strlen($body), "\n";
PHP
cat >"$TMP/www/hello.cgi" <<'SH'
#!/bin/sh
n=${CONTENT_LENGTH:-0}
[ "$n" -gt 0 ] 2>/dev/null && head -c "$n" >/dev/null
printf 'Content-Type: text/plain; charset=utf-8\r\n\r\nhello\n'
SH
chmod +x "$TMP/www/hello.cgi"

# ---------------------------------------------------------------------- php-fpm
add_row php-fpm "php-fpm" "FastCGI" "$("${PHP_FPM:-php-fpm8.2}" -v 2>/dev/null | head -1 | awk '{print $1" "$2}')" yes
if [ -n "$PHP_FPM" ] && [ -x "$PHP_FPM" ]; then
    port=$(free_port)
    cat >"$TMP/php-fpm.conf" <<CONF
[global]
error_log = $TMP/php-fpm-error.log
daemonize = no
pid = $TMP/php-fpm.pid
[www]
listen = 127.0.0.1:$port
pm = static
pm.max_children = 4
clear_env = no
catch_workers_output = yes
CONF
    start_bg php-fpm "$PHP_FPM" -F -n -y "$TMP/php-fpm.conf" -R
    if wait_port "$port" "$STARTED"; then
        probe php-fpm "fastcgi://127.0.0.1:$port" --path /hello.php \
            --param "SCRIPT_FILENAME=$TMP/www/hello.php" --param "DOCUMENT_ROOT=$TMP/www"
    else
        missing php-fpm "did not start (see its log)"
        cat "$TMP/php-fpm.log" >&2
    fi
    stop "$STARTED"
else
    missing php-fpm "not installed"
fi

# ---------------------------------------------------------------------- php-cgi -b
add_row php-cgi "php-cgi -b (FastCGI mode)" "FastCGI" "$(php-cgi -v 2>/dev/null | head -1 | awk '{print $1" "$2}')" no
if command -v php-cgi >/dev/null; then
    port=$(free_port)
    start_bg php-cgi env PHP_FCGI_CHILDREN=2 PHP_FCGI_MAX_REQUESTS=0 php-cgi -n -b "127.0.0.1:$port"
    if wait_port "$port" "$STARTED"; then
        probe php-cgi "fastcgi://127.0.0.1:$port" --path /hello.php \
            --param "SCRIPT_FILENAME=$TMP/www/hello.php" --param "DOCUMENT_ROOT=$TMP/www" \
            --param "REDIRECT_STATUS=200"
    else
        missing php-cgi "did not start"
    fi
    stop "$STARTED"
else
    missing php-cgi "not installed"
fi

# ---------------------------------------------------------------------- fcgiwrap
add_row fcgiwrap "fcgiwrap" "FastCGI" "$(pkg_version fcgiwrap)" yes
if command -v fcgiwrap >/dev/null || [ -x /usr/sbin/fcgiwrap ]; then
    port=$(free_port)
    start_bg fcgiwrap "$(command -v fcgiwrap || echo /usr/sbin/fcgiwrap)" -c 4 -s "tcp:127.0.0.1:$port"
    if wait_port "$port" "$STARTED"; then
        probe fcgiwrap "fastcgi://127.0.0.1:$port" --path /hello.cgi \
            --param "SCRIPT_FILENAME=$TMP/www/hello.cgi" --param "DOCUMENT_ROOT=$TMP/www"
    else
        missing fcgiwrap "did not start"
    fi
    stop "$STARTED"
else
    missing fcgiwrap "not installed"
fi

# ---------------------------------------------------------------------- libfcgi
add_row libfcgi "libfcgi app under spawn-fcgi" "FastCGI" "$(pkg_version libfcgi-dev)" no
if command -v spawn-fcgi >/dev/null && [ -e /usr/include/fcgiapp.h ] && command -v cc >/dev/null; then
    cat >"$TMP/fcgi_app.c" <<'C'
/* A tiny libfcgi responder: reads the body, answers with its length. */
#include <fcgiapp.h>
#include <stdlib.h>

int main(void) {
    FCGX_Request req;
    char buf[4096];
    FCGX_Init();
    FCGX_InitRequest(&req, 0, 0);
    while (FCGX_Accept_r(&req) >= 0) {
        long n = 0;
        int got;
        while ((got = FCGX_GetStr(buf, sizeof buf, req.in)) > 0) n += got;
        FCGX_FPrintF(req.out, "Content-Type: text/plain; charset=utf-8\r\n\r\nhello %ld\n", n);
        FCGX_Finish_r(&req);
    }
    return 0;
}
C
    if cc -O2 -o "$TMP/fcgi_app" "$TMP/fcgi_app.c" -lfcgi 2>"$TMP/cc.log"; then
        port=$(free_port)
        start_bg libfcgi spawn-fcgi -n -a 127.0.0.1 -p "$port" -- "$TMP/fcgi_app"
        if wait_port "$port" "$STARTED"; then
            probe libfcgi "fastcgi://127.0.0.1:$port" --path /app
        else
            missing libfcgi "did not start"
        fi
        stop "$STARTED"
    else
        missing libfcgi "does not compile (libfcgi-dev?)"
    fi
else
    missing libfcgi "not installed"
fi

# ---------------------------------------------------------------------- flup
FLUP_VERSION=$(python3 -c 'import importlib.metadata as m; print(m.version("flup"))' 2>/dev/null || true)
add_row flup-fcgi "flup FastCGI (WSGIServer)" "FastCGI" "${FLUP_VERSION:-?}" no
add_row flup-scgi "flup SCGI (WSGIServer)" "SCGI" "${FLUP_VERSION:-?}" no
if [ -n "$FLUP_VERSION" ]; then
    cat >"$TMP/flup_app.py" <<'PY'
"""A tiny WSGI app on flup: reads the body, answers with its length."""
import sys

def app(environ, start_response):
    n = int(environ.get("CONTENT_LENGTH") or 0)
    body = environ["wsgi.input"].read(n) if n > 0 else b""
    start_response("200 OK", [("Content-Type", "text/plain; charset=utf-8")])
    return [b"hello %d\n" % len(body)]

kind, port = sys.argv[1], int(sys.argv[2])
if kind == "fcgi":
    from flup.server.fcgi import WSGIServer
    WSGIServer(app, bindAddress=("127.0.0.1", port)).run()
else:
    from flup.server.scgi import WSGIServer
    WSGIServer(app, scriptName="", bindAddress=("127.0.0.1", port)).run()
PY
    for kind in fcgi scgi; do
        port=$(free_port)
        start_bg "flup-$kind" python3 "$TMP/flup_app.py" "$kind" "$port"
        if wait_port "$port" "$STARTED"; then
            if [ "$kind" = fcgi ]; then
                probe flup-fcgi "fastcgi://127.0.0.1:$port" --path /app
            else
                probe flup-scgi "scgi://127.0.0.1:$port" --path /app
            fi
        else
            missing "flup-$kind" "did not start"
        fi
        stop "$STARTED"
    done
else
    missing flup-fcgi "not installed"
    missing flup-scgi "not installed"
fi

# ---------------------------------------------------------------------- portico
PORTICO_VERSION=$("$PORTICO" --version 2>/dev/null | awk '{print $2}')
add_row portico-fcgi "portico FastCGI listener" "FastCGI" "${PORTICO_VERSION:-?}" own
add_row portico-scgi "portico SCGI listener" "SCGI" "${PORTICO_VERSION:-?}" own
fport=$(free_port)
sport=$(free_port)
cat >"$TMP/portico.toml" <<TOML
[server]
access_log = "off"
[[listen]]
protocol = "fastcgi"
address = "127.0.0.1:$fport"
[[listen]]
protocol = "scgi"
address = "127.0.0.1:$sport"
[[route]]
prefix = "/"
handler = "echo"
TOML
start_bg portico "$PORTICO" serve --config "$TMP/portico.toml"
pid=$STARTED
if wait_port "$fport" "$pid" && wait_port "$sport" "$pid"; then
    probe portico-fcgi "fastcgi://127.0.0.1:$fport" --path /probe
    probe portico-scgi "scgi://127.0.0.1:$sport" --path /probe
else
    missing portico-fcgi "did not start"
    missing portico-scgi "did not start"
    cat "$TMP/portico.log" >&2
fi
stop "$pid"

# ---------------------------------------------------------------------- --serve
# serve_probe ID: starts `probe --serve` on a free port (SERVE_PORT) for N requests.
SERVE_REQUESTS=3
serve_start() {
    SERVE_PORT=$(free_port)
    "$PORTICO" probe --serve "fastcgi://127.0.0.1:$SERVE_PORT" --requests "$SERVE_REQUESTS" \
        --check-timeout "$CHECK_TIMEOUT" >"$TMP/$1.report" 2>"$TMP/$1.stderr" &
    SERVE_PID=$!
    PIDS+=("$SERVE_PID")
    wait_port "$SERVE_PORT" "$SERVE_PID"
}

# serve_finish ID HTTP_PORT: the requests through the web server, then the report.
serve_finish() {
    local id=$1 url="http://127.0.0.1:$2" i code
    curl -s -o /dev/null --max-time 10 "$url/probe/index.php?a=1&b=two%20words" || true
    curl -s -o /dev/null --max-time 10 -d 'name=portico&lang=rust&n=42' "$url/probe/form.php" || true
    curl -s -o /dev/null --max-time 10 -H 'Transfer-Encoding: chunked' --data-binary 'chunked body' "$url/probe/upload.php" || true
    code="killed after 10 s"
    for i in $(seq 100); do
        if ! kill -0 "$SERVE_PID" 2>/dev/null; then
            wait "$SERVE_PID" 2>/dev/null
            code=$?
            break
        fi
        sleep 0.1
    done
    stop "$SERVE_PID"
    cat "$TMP/$id.stderr" >>"$TMP/$id.report"
    record "$id" "$TMP/$id.report" "$code"
}

add_row nginx "nginx fastcgi_pass (--serve)" "FastCGI ws" "$(nginx -v 2>&1 | sed 's/.*version: //')" no
if command -v nginx >/dev/null; then
    if serve_start nginx; then
        hport=$(free_port)
        mkdir -p "$TMP/nginx"
        cat >"$TMP/nginx/nginx.conf" <<CONF
daemon off;
master_process off;
worker_processes 1;
pid $TMP/nginx/nginx.pid;
error_log $TMP/nginx/error.log warn;
events { worker_connections 64; }
http {
    access_log off;
    client_body_temp_path $TMP/nginx/body;
    fastcgi_temp_path $TMP/nginx/fastcgi;
    scgi_temp_path $TMP/nginx/scgi;
    proxy_temp_path $TMP/nginx/proxy;
    uwsgi_temp_path $TMP/nginx/uwsgi;
    server {
        listen 127.0.0.1:$hport;
        location /probe/ {
            include /etc/nginx/fastcgi_params;
            fastcgi_param SCRIPT_FILENAME $TMP/www\$fastcgi_script_name;
            fastcgi_pass 127.0.0.1:$SERVE_PORT;
        }
    }
}
CONF
        start_bg nginx nginx -p "$TMP/nginx" -c "$TMP/nginx/nginx.conf"
        npid=$STARTED
        if wait_port "$hport" "$npid"; then serve_finish nginx "$hport"; else missing nginx "did not start"; fi
        stop "$npid"
    else
        stop "$SERVE_PID"
        cat "$TMP/nginx.stderr" >>"$TMP/nginx.report"
        record nginx "$TMP/nginx.report" "did not listen"
    fi
else
    missing nginx "not installed"
fi

add_row apache "Apache mod_proxy_fcgi (--serve)" "FastCGI ws" "$("$APACHE" -v 2>/dev/null | sed -n 's/^Server version: //p')" no
if [ -x "$APACHE" ] && [ -e "$APACHE_MODULES/mod_proxy_fcgi.so" ]; then
    if serve_start apache; then
        hport=$(free_port)
        mkdir -p "$TMP/apache/run"
        apache_user=www-data
        id -u "$apache_user" >/dev/null 2>&1 || apache_user=nobody
        builtin=$("$APACHE" -l)
        mods=""
        for m in mpm_event authz_core unixd proxy proxy_fcgi; do
            grep -q "mod_$m.c" <<<"$builtin" || mods+="LoadModule ${m}_module $APACHE_MODULES/mod_$m.so"$'\n'
        done
        cat >"$TMP/apache/httpd.conf" <<CONF
ServerRoot "$TMP/apache"
ServerName localhost
Listen 127.0.0.1:$hport
PidFile $TMP/apache/httpd.pid
DefaultRuntimeDir $TMP/apache/run
ErrorLog $TMP/apache/error.log
LogLevel warn
$mods
User $apache_user
Group $(id -gn "$apache_user")
ProxyPass /probe/ fcgi://127.0.0.1:$SERVE_PORT/probe/ disablereuse=on
CONF
        start_bg apache env -i PATH=/usr/sbin:/usr/bin:/bin "$APACHE" -X -d "$TMP/apache" -f "$TMP/apache/httpd.conf"
        apid=$STARTED
        if wait_port "$hport" "$apid"; then serve_finish apache "$hport"; else missing apache "did not start"; fi
        stop "$apid"
    else
        stop "$SERVE_PID"
        cat "$TMP/apache.stderr" >>"$TMP/apache.report"
        record apache "$TMP/apache.report" "did not listen"
    fi
else
    missing apache "not installed"
fi

add_row lighttpd "lighttpd mod_fastcgi (--serve)" "FastCGI ws" "$(lighttpd -v 2>/dev/null | head -1 | awk '{print $1}')" no
if command -v lighttpd >/dev/null; then
    if serve_start lighttpd; then
        hport=$(free_port)
        mkdir -p "$TMP/lighttpd"
        cat >"$TMP/lighttpd/lighttpd.conf" <<CONF
server.document-root = "$TMP/www"
server.port = $hport
server.bind = "127.0.0.1"
server.pid-file = "$TMP/lighttpd/lighttpd.pid"
server.errorlog = "$TMP/lighttpd/error.log"
server.modules = ("mod_fastcgi")
fastcgi.server = (
    "/probe/" => ((
        "host" => "127.0.0.1",
        "port" => $SERVE_PORT,
        "check-local" => "disable"
    ))
)
CONF
        start_bg lighttpd lighttpd -D -f "$TMP/lighttpd/lighttpd.conf"
        lpid=$STARTED
        if wait_port "$hport" "$lpid"; then serve_finish lighttpd "$hport"; else missing lighttpd "did not start"; fi
        stop "$lpid"
    else
        stop "$SERVE_PID"
        cat "$TMP/lighttpd.stderr" >>"$TMP/lighttpd.report"
        record lighttpd "$TMP/lighttpd.report" "did not listen"
    fi
else
    missing lighttpd "not installed"
fi

# ---------------------------------------------------------------------- portico as client
# portico's own FastCGI and SCGI clients (its backends) checked by `probe --serve`
# (FCGI-T-18, SCGI-T-13, T-16): portico serves HTTP and forwards /probe/ to the probe.
portico_client() {
    local id=$1 kind=$2 hport pid
    hport=$(free_port)
    cat >"$TMP/$id.toml" <<CONF
[server]
access_log = "off"
[[listen]]
address = "127.0.0.1:$hport"
[[route]]
prefix = "/probe/"
$kind = { upstreams = ["127.0.0.1:$SERVE_PORT"], read_timeout = "10s" }
CONF
    start_bg "$id-gw" "$PORTICO" serve --config "$TMP/$id.toml"
    pid=$STARTED
    if wait_port "$hport" "$pid"; then serve_finish "$id" "$hport"; else missing "$id" "did not start"; fi
    stop "$pid"
}

add_row portico-fcgi-client "portico FastCGI client (--serve)" "FastCGI ws" "$PORTICO_VERSION" own
if serve_start portico-fcgi-client; then
    portico_client portico-fcgi-client fastcgi
else
    record portico-fcgi-client "$TMP/portico-fcgi-client.report" "did not listen"
fi

# ---------------------------------------------------------------------- --serve scgi
# serve_start_scgi ID: as serve_start, with `probe --serve scgi://…` (SCGI-T-13, T-16).
serve_start_scgi() {
    SERVE_PORT=$(free_port)
    "$PORTICO" probe --serve "scgi://127.0.0.1:$SERVE_PORT" --requests "$SERVE_REQUESTS" \
        --check-timeout "$CHECK_TIMEOUT" >"$TMP/$1.report" 2>"$TMP/$1.stderr" &
    SERVE_PID=$!
    PIDS+=("$SERVE_PID")
    wait_port "$SERVE_PORT" "$SERVE_PID"
}

add_row nginx-scgi "nginx scgi_pass (--serve)" "SCGI ws" "$(nginx -v 2>&1 | sed 's/.*version: //')" no
if command -v nginx >/dev/null; then
    if serve_start_scgi nginx-scgi; then
        hport=$(free_port)
        mkdir -p "$TMP/nginx-scgi"
        cat >"$TMP/nginx-scgi/nginx.conf" <<CONF
daemon off;
master_process off;
worker_processes 1;
pid $TMP/nginx-scgi/nginx.pid;
error_log $TMP/nginx-scgi/error.log warn;
events { worker_connections 64; }
http {
    access_log off;
    client_body_temp_path $TMP/nginx-scgi/body;
    fastcgi_temp_path $TMP/nginx-scgi/fastcgi;
    scgi_temp_path $TMP/nginx-scgi/scgi;
    proxy_temp_path $TMP/nginx-scgi/proxy;
    uwsgi_temp_path $TMP/nginx-scgi/uwsgi;
    server {
        listen 127.0.0.1:$hport;
        location /probe/ {
            include /etc/nginx/scgi_params;
            scgi_pass 127.0.0.1:$SERVE_PORT;
        }
    }
}
CONF
        start_bg nginx-scgi nginx -p "$TMP/nginx-scgi" -c "$TMP/nginx-scgi/nginx.conf"
        npid=$STARTED
        if wait_port "$hport" "$npid"; then serve_finish nginx-scgi "$hport"; else missing nginx-scgi "did not start"; fi
        stop "$npid"
    else
        stop "$SERVE_PID"
        cat "$TMP/nginx-scgi.stderr" >>"$TMP/nginx-scgi.report"
        record nginx-scgi "$TMP/nginx-scgi.report" "did not listen"
    fi
else
    missing nginx-scgi "not installed"
fi

add_row apache-scgi "Apache mod_proxy_scgi (--serve)" "SCGI ws" "$("$APACHE" -v 2>/dev/null | sed -n 's/^Server version: //p')" no
if [ -x "$APACHE" ] && [ -e "$APACHE_MODULES/mod_proxy_scgi.so" ]; then
    if serve_start_scgi apache-scgi; then
        hport=$(free_port)
        mkdir -p "$TMP/apache-scgi/run"
        apache_user=www-data
        id -u "$apache_user" >/dev/null 2>&1 || apache_user=nobody
        builtin=$("$APACHE" -l)
        mods=""
        for m in mpm_event authz_core unixd proxy proxy_scgi; do
            grep -q "mod_$m.c" <<<"$builtin" || mods+="LoadModule ${m}_module $APACHE_MODULES/mod_$m.so"$'\n'
        done
        cat >"$TMP/apache-scgi/httpd.conf" <<CONF
ServerRoot "$TMP/apache-scgi"
ServerName localhost
Listen 127.0.0.1:$hport
PidFile $TMP/apache-scgi/httpd.pid
DefaultRuntimeDir $TMP/apache-scgi/run
ErrorLog $TMP/apache-scgi/error.log
LogLevel warn
$mods
User $apache_user
Group $(id -gn "$apache_user")
ProxyPass /probe/ scgi://127.0.0.1:$SERVE_PORT/
CONF
        start_bg apache-scgi env -i PATH=/usr/sbin:/usr/bin:/bin "$APACHE" -X -d "$TMP/apache-scgi" -f "$TMP/apache-scgi/httpd.conf"
        apid=$STARTED
        if wait_port "$hport" "$apid"; then serve_finish apache-scgi "$hport"; else missing apache-scgi "did not start"; fi
        stop "$apid"
    else
        stop "$SERVE_PID"
        cat "$TMP/apache-scgi.stderr" >>"$TMP/apache-scgi.report"
        record apache-scgi "$TMP/apache-scgi.report" "did not listen"
    fi
else
    missing apache-scgi "not installed"
fi

add_row portico-scgi-client "portico SCGI client (--serve scgi)" "SCGI ws" "$PORTICO_VERSION" own
if serve_start_scgi portico-scgi-client; then
    portico_client portico-scgi-client scgi
else
    record portico-scgi-client "$TMP/portico-scgi-client.report" "did not listen"
fi

# ---------------------------------------------------------------------- the document
mkdir -p "$(dirname "$OUT")"
{
    echo "# Conformance matrix"
    echo
    echo "Generated by \`benches/conformance.sh\` on $(date -u +%Y-%m-%d) with portico ${PORTICO_VERSION:-?}"
    echo "($(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo '?')). Each application was started on loopback by the script and"
    echo "checked with \`portico probe\` (\`--check-timeout $CHECK_TIMEOUT\`); each web server was put in front of"
    echo "\`portico probe --serve\` and sent $SERVE_REQUESTS requests (a GET with a query, a form POST, a chunked POST)."
    echo "Verdicts follow \`shared/specs/README.md\`: FAIL = a broken MUST, WARN = a broken SHOULD, INFO = MAY, FACT,"
    echo "AMB and RW observations (and leniency), ERROR = a check that could not run. Re-run the script to refresh."
    echo
    echo "| implementation | protocol | version | PASS | INFO | WARN | FAIL | ERROR | time |"
    echo "|---|---|---|---:|---:|---:|---:|---:|---:|"
    for id in "${ROWS[@]}"; do
        if [ "${STATUS[$id]}" = ok ]; then
            read -r p i w f e t <<<"${COUNTS[$id]}"
            echo "| ${NAME[$id]} | ${PROTO[$id]} | ${VERSION[$id]} | $p | $i | $w | $f | $e | $t |"
        else
            echo "| ${NAME[$id]} | ${PROTO[$id]} | ${VERSION[$id]} | ${STATUS[$id]:-not run} | | | | | |"
        fi
    done
    echo
    echo "portico's own listeners must have no FAIL: the script exits 1 otherwise."
    for id in "${ROWS[@]}"; do
        [ "${STATUS[$id]}" = ok ] || continue
        echo
        echo "## ${NAME[$id]}"
        echo
        local_lines=$(grep -E '^(INFO|WARN|FAIL|ERROR) ' "${REPORT[$id]}" || true)
        if [ -z "$local_lines" ]; then
            echo "Every finding is a PASS."
        else
            broken=$(grep -E '^(FAIL|WARN) ' <<<"$local_lines" | awk '{print $1" "$2}' | sort | uniq -c |
                sort -k2,2 -k1,1nr | awk '{printf "%s%s %s (%d)", (NR > 1 ? ", " : ""), $2, $3, $1}')
            [ -z "$broken" ] || echo "Broken clauses (lines): $broken."
            [ -z "$broken" ] || echo
            echo "Every finding other than PASS:"
            echo
            echo '```'
            # FAIL first, then WARN, ERROR, INFO, each in report order.
            for v in FAIL WARN ERROR INFO; do grep -E "^$v " <<<"$local_lines" || true; done
            echo '```'
        fi
    done
} >"$OUT"
log "wrote $OUT"
exit "$EXIT"
