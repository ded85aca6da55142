#!/usr/bin/env bash
# Makes sure PostgreSQL, Redis and RabbitMQ answer on their standard localhost ports, starting any
# that is installed but stopped. Exits non-zero, saying exactly what to install, when one is
# missing. Usage: deploy/local/services.sh [check|start]   (default: start)
set -euo pipefail
mode=${1:-start}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && exec 3>&- 3<&-; }

wait_port() { # name port seconds
  for _ in $(seq 1 "$3"); do port_open "$2" && return 0; sleep 1; done
  echo "herald: $1 did not come up on 127.0.0.1:$2" >&2; return 1
}

missing=()

start_postgres() {
  if command -v pg_ctlcluster >/dev/null 2>&1 && ls /etc/postgresql >/dev/null 2>&1; then
    local v; v=$(ls /etc/postgresql | sort -V | tail -n1)
    pg_ctlcluster --skip-systemctl-redirect "$v" main start 2>/dev/null || pg_ctlcluster "$v" main start
  else
    missing+=("postgresql (apt-get install -y postgresql)"); return 1
  fi
}

start_redis() {
  if command -v redis-server >/dev/null 2>&1; then
    mkdir -p /var/lib/redis /var/log/redis 2>/dev/null || true
    redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
      --dir /var/lib/redis --logfile /var/log/redis/herald.log
  else
    missing+=("redis (apt-get install -y redis-server)"); return 1
  fi
}

start_rabbitmq() {
  if command -v rabbitmq-server >/dev/null 2>&1; then
    rabbitmq-server -detached
  else
    missing+=("rabbitmq (apt-get install -y rabbitmq-server)"); return 1
  fi
}

ensure() { # name port starter seconds
  if port_open "$2"; then echo "herald: $1 is up on 127.0.0.1:$2"; return 0; fi
  if [ "$mode" = check ]; then echo "herald: $1 is not answering on 127.0.0.1:$2" >&2; return 1; fi
  echo "herald: starting $1"
  "$3" || return 1
  wait_port "$1" "$2" "$4"
}

status=0
ensure postgresql 5432 start_postgres 30 || status=1
ensure redis 6379 start_redis 15 || status=1
ensure rabbitmq 5672 start_rabbitmq 90 || status=1
if [ ${#missing[@]} -gt 0 ]; then
  echo "herald: not installed: ${missing[*]}" >&2
fi
exit $status
