#!/bin/sh
# GET / (busybox httpd runs /cgi-bin/index.cgi for a directory without an
# index.html): counts the request and answers the count as JSON. httpd runs
# one process per request, so the count lives in a file, /tmp/requests; a
# MicroVM's files are saved with its memory when it is suspended, so the count
# goes on after a resume. The mkdir lock serialises concurrent requests.
until mkdir /tmp/requests.lock 2>/dev/null; do usleep 10000; done
n=$(( $(cat /tmp/requests 2>/dev/null || echo 0) + 1 ))
echo "$n" > /tmp/requests
rmdir /tmp/requests.lock
body="{\"app\":\"busybox\",\"requests\":$n,\"bootedAt\":$(cat /tmp/booted)}"
printf 'Content-Type: application/json\r\nContent-Length: %s\r\n\r\n%s\n' "$((${#body} + 1))" "$body"
