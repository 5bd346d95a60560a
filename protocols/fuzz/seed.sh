#!/bin/sh
# Writes small seed corpora into corpus/<target>/ (ignored by git).
# Usage: ./seed.sh   (from protocols/fuzz; uses ../../fixtures/records)
set -e
F=../../fixtures/records
mkdir -p corpus/fastcgi_record corpus/fastcgi_server corpus/fastcgi_client corpus/scgi \
  corpus/cgi_response corpus/cgi_meta corpus/cgi_env
for f in "$F"/*.bin; do
  b=$(basename "$f" .bin)
  cp "$f" corpus/fastcgi_record/"$b"
  case "$b" in
    php-fpm-*|invalid-php-fpm-*)
      { printf '\000\000\000'; cat "$f"; } > corpus/fastcgi_client/"$b"
      { printf '\003\000\000'; cat "$f"; } > corpus/fastcgi_client/"$b-lenient" ;;
    *)
      { printf '\000\000'; cat "$f"; } > corpus/fastcgi_server/"$b"
      { printf '\000\002\000\020\001\000'; cat "$f"; } > corpus/fastcgi_server/"$b-cut" ;;
  esac
done
printf '70:CONTENT_LENGTH\00027\000SCGI\0001\000REQUEST_METHOD\000POST\000REQUEST_URI\000/deepthought\000,What is the answer to life?' > corpus/scgi/spec-example
printf '24:CONTENT_LENGTH\0000\000SCGI\0001\000,' > corpus/scgi/minimal
printf 'Status: 200 OK\r\nContent-Type: text/html; charset=UTF-8\r\nSet-Cookie: a=b\r\n\r\nbody' > corpus/cgi_response/document
printf 'Location: /other?x=1\n\n' > corpus/cgi_response/local-redirect
printf 'Status: 301 Moved\nLocation: http://example.com/\nContent-Type: text/plain\n\nmoved' > corpus/cgi_response/redirect-doc
printf 'HTTP/1.1 200 OK\r\nServer: nph\r\nContent-Type: text/plain\r\n\r\nhi' > corpus/cgi_response/nph
printf '\001/cgi-bin/env.cgi/a%%20b/C\377a+b%%20c\377/srv/htdocs/\377Accept:text/html\nX-Forwarded-For:1.2.3.4\nCookie:a=b\nCookie:c=d\nProxy:evil\nX_Foo:bar' > corpus/cgi_meta/typical
printf 'GATEWAY_INTERFACE=CGI/1.1\000REQUEST_METHOD=GET\000SCRIPT_NAME=/env.cgi\000PATH_INFO=/x\000QUERY_STRING=a=b\000SERVER_NAME=localhost\000SERVER_PORT=8080\000SERVER_PROTOCOL=HTTP/1.1\000REMOTE_ADDR=127.0.0.1\000CONTENT_LENGTH=5\000CONTENT_TYPE=text/plain\000HTTP_X_FOO=bar\000HTTP_PROXY=evil\000' > corpus/cgi_env/typical
