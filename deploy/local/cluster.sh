#!/usr/bin/env bash
# A three-node RabbitMQ cluster on this one machine, for the broker-cluster fault tests
# (tests/chaos/cluster.rs) and for trying Herald against a cluster by hand.
#
#   deploy/local/cluster.sh start          start hc1..hc3 (AMQP 5681..5683) and join them
#   deploy/local/cluster.sh stop [N]       stop every node, or node N (1..3) gracefully
#   deploy/local/cluster.sh kill N         kill -9 node N's Erlang VM
#   deploy/local/cluster.sh restart N      start node N again (it rejoins with its data)
#   deploy/local/cluster.sh status         cluster status as node 1 sees it
#   deploy/local/cluster.sh urls           the HERALD_AMQP_URL value for the three nodes
#   deploy/local/cluster.sh destroy        stop everything and delete the data directory
#
# Each node has its own node name (hcN@localhost), AMQP port (568N), distribution port
# (2568N), data and log directories under $HERALD_CLUSTER_DIR (default /tmp/herald-cluster)
# and no plugins, so nothing clashes with the machine's own broker on 5672. They share an
# Erlang cookie kept in that directory. The script runs the nodes as the user who calls it.
set -euo pipefail

DIR="${HERALD_CLUSTER_DIR:-/tmp/herald-cluster}"
NODES=(1 2 3)
SBIN="$(dirname "$(readlink -f "$(command -v rabbitmq-server || echo /usr/lib/rabbitmq/bin/rabbitmq-server)")")"
[ -x "$SBIN/rabbitmq-server" ] || SBIN=/usr/lib/rabbitmq/bin

die() { echo "cluster: $*" >&2; exit 1; }

node_env() {
  local n=$1 d="$DIR/hc$n"
  mkdir -p "$d/data" "$d/log"
  [ -f "$DIR/.erlang.cookie" ] || { head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$DIR/.erlang.cookie"; chmod 400 "$DIR/.erlang.cookie"; }
  printf 'listeners.tcp.default = 127.0.0.1:568%s\nloopback_users = none\n' "$n" >"$d/rabbitmq.conf"
  echo '[].' >"$d/enabled_plugins"
  : >"$d/env.conf"
  export HOME="$DIR"
  export RABBITMQ_NODENAME="hc$n@localhost"
  export RABBITMQ_NODE_PORT="568$n"
  export RABBITMQ_DIST_PORT="2568$n"
  export RABBITMQ_CONF_ENV_FILE="$d/env.conf"
  export RABBITMQ_CONFIG_FILE="$d/rabbitmq.conf"
  export RABBITMQ_ENABLED_PLUGINS_FILE="$d/enabled_plugins"
  export RABBITMQ_MNESIA_BASE="$d/data"
  export RABBITMQ_LOG_BASE="$d/log"
  export RABBITMQ_PID_FILE="$d/pid"
  export ERL_EPMD_ADDRESS=127.0.0.1
  export ERL_FLAGS="-kernel inet_dist_use_interface {127,0,0,1}"
}

# The CLI is an Erlang node of its own: it gets the cookie and epmd, not the node's ports.
ctl() { local n=$1; shift; HOME="$DIR" ERL_EPMD_ADDRESS=127.0.0.1 "$SBIN/rabbitmqctl" -n "hc$n@localhost" "$@"; }

start_node() {
  local n=$1
  ( node_env "$n"; "$SBIN/rabbitmq-server" -detached ) >/dev/null 2>&1 || true
  timeout 90 bash -c "until [ -s '$DIR/hc$n/pid' ]; do sleep 0.2; done" || die "node hc$n wrote no pid file"
  ctl "$n" wait --timeout 90 "$DIR/hc$n/pid" >/dev/null 2>&1 \
    || die "node hc$n did not start (logs: $DIR/hc$n/log)"
}

joined() { ctl 1 cluster_status --formatter json 2>/dev/null | grep -q "\"hc$1@localhost\""; }

start() {
  for n in "${NODES[@]}"; do start_node "$n"; done
  for n in 2 3; do
    joined "$n" && ctl 1 cluster_status --formatter json | grep -o '"running_nodes":\[[^]]*\]' | grep -q "hc$n@" && continue
    ctl "$n" stop_app >/dev/null
    ctl "$n" join_cluster hc1@localhost >/dev/null
    ctl "$n" start_app >/dev/null
  done
  echo "cluster: hc1, hc2, hc3 running; HERALD_AMQP_URL=$(urls)"
}

stop_node() {
  local n=$1
  [ -f "$DIR/hc$n/pid" ] || return 0
  ctl "$n" stop >/dev/null 2>&1 || true
  rm -f "$DIR/hc$n/pid"
}

kill_node() {
  local n=$1 pid
  pid="$(cat "$DIR/hc$n/pid" 2>/dev/null || true)"
  [ -n "$pid" ] || die "node hc$n is not running"
  kill -9 "$pid"
  rm -f "$DIR/hc$n/pid"
}

urls() {
  local out=""
  for n in "${NODES[@]}"; do out+="${out:+,}amqp://guest:guest@127.0.0.1:568$n/%2f"; done
  echo "$out"
}

case "${1:-}" in
  start) start ;;
  stop) if [ -n "${2:-}" ]; then stop_node "$2"; else for n in 3 2 1; do stop_node "$n"; done; fi ;;
  kill) kill_node "${2:?node number}" ;;
  restart) start_node "${2:?node number}" ;;
  status) ctl 1 cluster_status ;;
  urls) urls ;;
  destroy) for n in 3 2 1; do stop_node "$n"; done; rm -rf "$DIR" ;;
  *) die "usage: $0 start|stop [N]|kill N|restart N|status|urls|destroy" ;;
esac
