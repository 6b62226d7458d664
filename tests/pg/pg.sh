#!/usr/bin/env bash
# A throwaway PostgreSQL cluster for tests.
#   pg.sh start DIR   initdb in DIR, start on a free loopback port, create database "fleetid",
#                     write the connection URL to DIR/url and print it
#   pg.sh stop DIR    stop the cluster and remove DIR
# As root the server runs as the "postgres" user (initdb refuses root).
set -euo pipefail
cmd=$1
dir=$2
BIN=$(pg_config --bindir 2>/dev/null || true)
[[ -x $BIN/initdb ]] || BIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
as_pg() { if [[ $(id -u) -eq 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi; }

case $cmd in
  start)
    rm -rf "$dir"; mkdir -p "$dir"
    [[ $(id -u) -eq 0 ]] && chown postgres: "$dir"
    port=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
    as_pg "$BIN/initdb" -D "$dir/data" -U postgres -A trust -E UTF8 --locale=C.UTF-8 --no-sync >"$dir/initdb.log" 2>&1
    as_pg "$BIN/pg_ctl" -D "$dir/data" -l "$dir/pg.log" -w -t 30 \
      -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200 -c shared_buffers=512MB" \
      start >/dev/null
    as_pg "$BIN/psql" -h "$dir" -p "$port" -U postgres -q -c 'CREATE DATABASE fleetid' >/dev/null
    url="postgresql://postgres@127.0.0.1:$port/fleetid"
    echo "$url" >"$dir/url"
    echo "$url"
    ;;
  stop)
    if [[ -d $dir/data ]]; then
      as_pg "$BIN/pg_ctl" -D "$dir/data" -m immediate -w -t 30 stop >/dev/null 2>&1 || true
    fi
    rm -rf "$dir"
    ;;
  *)
    echo "usage: pg.sh start|stop DIR" >&2
    exit 2
    ;;
esac
