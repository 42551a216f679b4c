#!/bin/sh
# Healthcheck of Prometheus and Alertmanager, which answer nothing without their web credentials:
#   web-ready.sh URL PASSWORD_FILE
# exits 0 when GET URL (http://host:port/path) with basic auth, user admin and the password in PASSWORD_FILE,
# answers 200. Mounted read-only into both containers by compose/docker-compose.yml.
#
# Their images have BusyBox only, whose wget takes credentials on its command line alone (in the URL or a
# --header), and `ps` on the Docker host shows every container's command lines to every local user. Here the
# password goes from the file through shell builtins (read, printf) and pipes to nc's standard input, so no
# argument of any process ever holds it.
set -eu

url=$1
password_file=$2

rest=${url#http://}
hostport=${rest%%/*}
path=/${rest#*/}
[ "$rest" != "$hostport" ] || path=/
host=${hostport%:*}
port=${hostport##*:}

read -r password < "$password_file"
auth=$(printf 'admin:%s' "$password" | base64 | tr -d '\n')
# HTTP/1.0 and Connection: close: the server closes the connection after its answer, which ends nc; -w bounds a
# server that accepts and never answers (the healthcheck's own timeout is the backstop).
status=$(printf 'GET %s HTTP/1.0\r\nHost: %s\r\nAuthorization: Basic %s\r\nConnection: close\r\n\r\n' \
  "$path" "$hostport" "$auth" | nc -w 2 "$host" "$port" | head -n 1 | tr -d '\r') || true

case $status in
  "HTTP/1."[01]" 200 "*) exit 0 ;;
esac
echo "GET $url: ${status:-no answer}" >&2
exit 1
