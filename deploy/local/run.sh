#!/usr/bin/env bash
# Runs the three Herald services in the foreground against the local PostgreSQL, Redis and
# RabbitMQ, and prints how to try them with heraldctl. Ctrl-C stops all three.
set -euo pipefail
cd "$(dirname "$0")/../.."
bin=target/debug
export HERALD_ADMIN_TOKEN=${HERALD_ADMIN_TOKEN:-herald-dev-admin-token}
# Local receivers live on loopback; production leaves this empty.
export HERALD_ALLOW_NETWORKS=${HERALD_ALLOW_NETWORKS:-127.0.0.0/8,::1/128}
export HERALD_LOG=${HERALD_LOG:-info,sqlx=warn,lapin=warn}

# Endpoint secrets are encrypted at rest: a development key, made once and kept in .herald/
# (git-ignored). Production sets HERALD_SECRET_KEY from its secret store.
if [ -z "${HERALD_SECRET_KEY:-}" ]; then
  mkdir -p .herald
  if [ ! -s .herald/dev-secret-key ]; then
    (umask 077 && "$bin/herald-ingest" secrets generate-key > .herald/dev-secret-key)
  fi
  HERALD_SECRET_KEY=$(cat .herald/dev-secret-key)
  export HERALD_SECRET_KEY
fi

"$bin/herald-ingest" migrate
pids=()
# Each service runs in a session of its own, so the terminal's Ctrl-C reaches only this script,
# which passes one SIGTERM on: the services drain and stop. Ctrl-C again passes a second one,
# on which they stop at once.
stop() {
  kill -TERM "${pids[@]}" 2>/dev/null || true
  trap 'kill -TERM "${pids[@]}" 2>/dev/null || true' INT TERM HUP
  until wait; do :; done
  exit 0
}
trap stop INT TERM HUP
setsid "$bin/herald-ingest" & pids+=($!)
setsid "$bin/herald-ledger" & pids+=($!)
setsid "$bin/herald-dispatcher" & pids+=($!)
sleep 1
cat <<MSG

Herald is running: ingest on 127.0.0.1:50051, ledger (delivery log) on 127.0.0.1:50052.
Try it in another shell (from the repository root):

  export HERALD_ADMIN_TOKEN=$HERALD_ADMIN_TOKEN
  ctl=target/debug/heraldctl
  TENANT=\$(\$ctl --get id tenant create --name acme)
  export HERALD_API_KEY=\$(\$ctl --get api_key key create --tenant "\$TENANT")
  export HERALD_WEBHOOK_SECRET=\$(\$ctl --get secret endpoint create --url http://127.0.0.1:8000/hook --event-type 'invoice.*')
  \$ctl listen --port 8000 &     # a receiver that prints and verifies (secret from the environment)
  echo '{"invoice":"in_1","amount":4200}' | \$ctl publish --type invoice.paid
  sleep 1; \$ctl deliveries list   # the log trails publishing by a moment

Ctrl-C stops all three services.
MSG
wait
