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

"$bin/herald-ingest" migrate
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; wait; exit 0' INT TERM
"$bin/herald-ingest" & pids+=($!)
"$bin/herald-ledger" & pids+=($!)
"$bin/herald-dispatcher" & pids+=($!)
sleep 1
cat <<MSG

Herald is running: ingest on 127.0.0.1:50051, ledger (delivery log) on 127.0.0.1:50052.
Try it in another shell (from the repository root):

  export HERALD_ADMIN_TOKEN=$HERALD_ADMIN_TOKEN
  ctl=target/debug/heraldctl
  TENANT=\$(\$ctl --get id tenant create --name acme)
  export HERALD_API_KEY=\$(\$ctl --get api_key key create --tenant "\$TENANT")
  SECRET=\$(\$ctl --get secret endpoint create --url http://127.0.0.1:8000/hook --event-type 'invoice.*')
  \$ctl listen --port 8000 --secret "\$SECRET" &     # a receiver that prints and verifies
  echo '{"invoice":"in_1","amount":4200}' | \$ctl publish --type invoice.paid
  \$ctl deliveries list

Ctrl-C stops all three services.
MSG
wait
