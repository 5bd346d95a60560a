#!/bin/sh
# The smallest CGI script: a document response (RFC 3875 6.2.1).
printf 'Content-Type: text/plain; charset=utf-8\n\n'
printf 'Hello from a shell script run by portico.\n'
printf 'You asked for %s %s%s\n' "$REQUEST_METHOD" "$SCRIPT_NAME" "$PATH_INFO"
