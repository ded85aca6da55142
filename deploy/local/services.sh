#!/usr/bin/env bash
# Makes sure PostgreSQL, Redis and RabbitMQ answer on their standard localhost ports, starting any
# that is stopped and installing any that is missing (Debian packages through apt-get, as root or
# through sudo). Exits non-zero, saying the exact command to run, when it cannot.
# Usage: deploy/local/services.sh [check|start]   (default: start)
#        deploy/local/services.sh install PACKAGE...   (what else `make` needs: python3-venv,
#                                                     chromium chromium-driver)
set -euo pipefail
mode=${1:-start}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && exec 3>&- 3<&-; }

wait_port() { # name port seconds
  for _ in $(seq 1 "$3"); do port_open "$2" && return 0; sleep 1; done
  echo "herald: $1 did not come up on 127.0.0.1:$2" >&2; return 1
}

missing=()

# Installs Debian packages: as root, else through sudo (which may ask for a password). Fails,
# printing the command to run, when neither works.
install() { # package...
  local as=()
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 && as=(sudo)
  fi
  if command -v apt-get >/dev/null 2>&1 && { [ "$(id -u)" -eq 0 ] || [ ${#as[@]} -gt 0 ]; }; then
    echo "herald: installing $* (apt-get)"
    local apt=("${as[@]}" env DEBIAN_FRONTEND=noninteractive apt-get)
    "${apt[@]}" install -y -q "$@" >/dev/null \
      || { "${apt[@]}" update -q >/dev/null && "${apt[@]}" install -y -q "$@" >/dev/null; } \
      && return 0
  fi
  echo "herald: could not install $*: run  sudo apt-get update && sudo apt-get install -y $*" >&2
  return 1
}

# Herald connects as `postgres` without a password over TCP: a cluster installed here trusts
# that role from localhost (an existing cluster's authentication is left alone).
trust_local_postgres() { # version
  local hba="/etc/postgresql/$1/main/pg_hba.conf"
  grep -q '^host all postgres 127.0.0.1/32 trust' "$hba" && return 0
  sed -i '1i host all postgres 127.0.0.1/32 trust\nhost all postgres ::1/128 trust' "$hba"
  echo "herald: $hba trusts the postgres role from localhost (development set-up)"
}

start_postgres() {
  local fresh=false
  if ! { command -v pg_ctlcluster >/dev/null 2>&1 && ls /etc/postgresql >/dev/null 2>&1; }; then
    install postgresql || { missing+=(postgresql); return 1; }
    fresh=true
  fi
  local v; v=$(ls /etc/postgresql | sort -V | tail -n1)
  if $fresh; then
    trust_local_postgres "$v"
    # The package may have started it already, with the old authentication.
    pg_ctlcluster "$v" main stop 2>/dev/null || true
  fi
  pg_ctlcluster --skip-systemctl-redirect "$v" main start 2>/dev/null || pg_ctlcluster "$v" main start
}

start_redis() {
  command -v redis-server >/dev/null 2>&1 || install redis-server || { missing+=(redis-server); return 1; }
  # The package may have started it already.
  port_open 6379 && return 0
  mkdir -p /var/lib/redis /var/log/redis 2>/dev/null || true
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/herald.log
}

start_rabbitmq() {
  command -v rabbitmq-server >/dev/null 2>&1 || install rabbitmq-server \
    || { missing+=(rabbitmq-server); return 1; }
  port_open 5672 && return 0
  rabbitmq-server -detached
}

ensure() { # name port starter seconds
  if port_open "$2"; then echo "herald: $1 is up on 127.0.0.1:$2"; return 0; fi
  if [ "$mode" = check ]; then echo "herald: $1 is not answering on 127.0.0.1:$2" >&2; return 1; fi
  echo "herald: starting $1"
  "$3" || return 1
  wait_port "$1" "$2" "$4"
}

if [ "$mode" = install ]; then
  shift
  install "$@"
  exit
fi

status=0
ensure postgresql 5432 start_postgres 30 || status=1
ensure redis 6379 start_redis 15 || status=1
ensure rabbitmq 5672 start_rabbitmq 90 || status=1
if [ ${#missing[@]} -gt 0 ]; then
  echo "herald: not installed: ${missing[*]}; run  sudo apt-get update && sudo apt-get install -y ${missing[*]}" >&2
fi
exit $status
