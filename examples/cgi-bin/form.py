#!/usr/bin/env python3
"""A form that echoes what it receives, by GET (query string) or POST (body)."""
import html
import os
import sys
from urllib.parse import parse_qsl

method = os.environ.get("REQUEST_METHOD", "GET")
fields = parse_qsl(os.environ.get("QUERY_STRING", ""), keep_blank_values=True)
if method == "POST":
    length = int(os.environ.get("CONTENT_LENGTH") or 0)
    body = sys.stdin.buffer.read(length).decode("utf-8", "replace")
    if os.environ.get("CONTENT_TYPE", "").startswith("application/x-www-form-urlencoded"):
        fields += parse_qsl(body, keep_blank_values=True)
    elif body:
        fields.append(("(body)", body))

script = html.escape(os.environ.get("SCRIPT_NAME", ""), quote=True)
rows = "".join(
    "<tr><td>%s</td><td>%s</td></tr>" % (html.escape(k), html.escape(v)) for k, v in fields
)
sys.stdout.write("Content-Type: text/html; charset=utf-8\n\n")
sys.stdout.write(
    """<!doctype html>
<title>portico form echo</title>
<h1>%s request</h1>
<table border="1"><tr><th>field</th><th>value</th></tr>%s</table>
<h2>GET</h2>
<form method="get" action="%s"><input name="q" value="hello"> <button>send</button></form>
<h2>POST</h2>
<form method="post" action="%s"><input name="name" value="portico">
<textarea name="text">some text</textarea> <button>send</button></form>
""" % (html.escape(method), rows, script, script)
)
