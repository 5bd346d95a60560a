#!/usr/bin/env python3
"""Memory of idle kept-alive FastCGI connections (benches/fastcgi.sh).

    fcgi_conns.py ADDRESS PID [COUNT=1000] [PATH=/echo]

ADDRESS is portico's FastCGI listener (unix:/path or host:port), PID its process.
Prints VmRSS of PID (kB) at three points, one "key value" line each:

    rss_before    before any connection
    rss_idle      COUNT connections open, nothing sent on them
    rss_kept      the same connections after one complete request each with
                  FCGI_KEEP_CONN (BEGIN_REQUEST, PARAMS, empty PARAMS, empty STDIN),
                  its response read to FCGI_END_REQUEST, the connection kept open
    complete      how many of those requests ended with FCGI_END_REQUEST and
                  protocolStatus FCGI_REQUEST_COMPLETE
    refused       ... with another protocolStatus (e.g. FCGI_OVERLOADED)
    unanswered    ... without an FCGI_END_REQUEST within 30 s
    still_open    connections the server had not closed when measured
    rss_closed    after closing them all (and a short pause)
"""

import select
import socket
import struct
import sys
import time

BEGIN_REQUEST, END_REQUEST, PARAMS, STDIN, STDOUT, STDERR = 1, 3, 4, 5, 6, 7
RESPONDER, KEEP_CONN = 1, 1


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def record(kind, req_id, content=b""):
    pad = (8 - len(content) % 8) % 8
    return struct.pack(">BBHHBx", 1, kind, req_id, len(content), pad) + content + b"\0" * pad


def nv(name, value):
    def length(n):
        return struct.pack(">B", n) if n < 128 else struct.pack(">I", n | 0x80000000)

    return length(len(name)) + length(len(value)) + name + value


def request(path):
    params = b"".join(
        nv(k.encode(), v.encode())
        for k, v in [
            ("REQUEST_METHOD", "GET"),
            ("SCRIPT_NAME", path),
            ("REQUEST_URI", path),
            ("QUERY_STRING", ""),
            ("SERVER_PROTOCOL", "HTTP/1.1"),
            ("SERVER_NAME", "localhost"),
            ("SERVER_PORT", "80"),
            ("REMOTE_ADDR", "127.0.0.1"),
            ("GATEWAY_INTERFACE", "CGI/1.1"),
        ]
    )
    return (
        record(BEGIN_REQUEST, 1, struct.pack(">HB5x", RESPONDER, KEEP_CONN))
        + record(PARAMS, 1, params)
        + record(PARAMS, 1)
        + record(STDIN, 1)
    )


def connect(address):
    if address.startswith("unix:"):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(address[5:])
    else:
        host, port = address.rsplit(":", 1)
        s = socket.create_connection((host, int(port)))
    return s


def read_until_end(s, deadline):
    """Reads records until END_REQUEST; its protocolStatus, or None if it never came."""
    buf = b""
    while time.monotonic() < deadline:
        while len(buf) >= 8:
            _, kind, _, clen, pad = struct.unpack(">BBHHBx", buf[:8])
            if len(buf) < 8 + clen + pad:
                break
            body = buf[8 : 8 + clen]
            buf = buf[8 + clen + pad :]
            if kind == END_REQUEST:
                return body[4] if len(body) >= 5 else -1
        r, _, _ = select.select([s], [], [], max(0.0, deadline - time.monotonic()))
        if not r:
            return None
        chunk = s.recv(65536)
        if not chunk:
            return None
        buf += chunk
    return None


def still_open(socks):
    """Connections the peer has not closed (no EOF pending)."""
    n = 0
    for s in socks:
        r, _, _ = select.select([s], [], [], 0)
        if not r:
            n += 1
            continue
        try:
            if s.recv(1, socket.MSG_PEEK):
                n += 1
        except OSError:
            pass
    return n


def main():
    address, pid = sys.argv[1], int(sys.argv[2])
    count = int(sys.argv[3]) if len(sys.argv) > 3 else 1000
    path = sys.argv[4] if len(sys.argv) > 4 else "/echo"
    print("rss_before", rss_kb(pid), flush=True)
    socks = [connect(address) for _ in range(count)]
    time.sleep(1.0)
    print("rss_idle", rss_kb(pid), flush=True)
    req = request(path)
    for s in socks:
        s.sendall(req)
    deadline = time.monotonic() + 30
    statuses = [read_until_end(s, deadline) for s in socks]
    time.sleep(1.0)
    print("rss_kept", rss_kb(pid), flush=True)
    print("complete", sum(st == 0 for st in statuses), flush=True)
    print("refused", sum(st is not None and st != 0 for st in statuses), flush=True)
    print("unanswered", sum(st is None for st in statuses), flush=True)
    print("still_open", still_open(socks), flush=True)
    for s in socks:
        s.close()
    time.sleep(1.0)
    print("rss_closed", rss_kb(pid), flush=True)


if __name__ == "__main__":
    main()
