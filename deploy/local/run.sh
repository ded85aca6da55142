#!/usr/bin/env bash
# Runs the Herald services (ingest, ledger, dispatcher and the console) in the foreground against
# the local PostgreSQL, Redis and RabbitMQ, opens a portal link for a demo tenant, and prints how
# to try them with heraldctl. Ctrl-C stops them all.
set -euo pipefail
cd "$(dirname "$0")/../.."
bin=target/debug
export HERALD_ADMIN_TOKEN=${HERALD_ADMIN_TOKEN:-herald-dev-admin-token}
# Local receivers live on loopback; production leaves this empty.
export HERALD_ALLOW_NETWORKS=${HERALD_ALLOW_NETWORKS:-127.0.0.0/8,::1/128}
export HERALD_LOG=${HERALD_LOG:-info,sqlx=warn,lapin=warn}
# The console (herald-console): its address, and the URL ingest puts in portal links.
export HERALD_CONSOLE_ADDR=${HERALD_CONSOLE_ADDR:-127.0.0.1:8080}
export HERALD_CONSOLE_URL=${HERALD_CONSOLE_URL:-http://$HERALD_CONSOLE_ADDR}
export HERALD_CONSOLE_PUBLIC_URL=${HERALD_CONSOLE_PUBLIC_URL:-$HERALD_CONSOLE_URL}

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
# The console's CSRF key, kept in .herald/ too so forms stay valid across restarts.
if [ -z "${HERALD_CONSOLE_SECRET:-}" ]; then
  if [ ! -s .herald/dev-console-secret ]; then
    (umask 077 && head -c 32 /dev/urandom | base64 > .herald/dev-console-secret)
  fi
  HERALD_CONSOLE_SECRET=$(cat .herald/dev-console-secret)
  export HERALD_CONSOLE_SECRET
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
# The console has a metrics port of its own (the services' defaults are 9601-9603).
HERALD_METRICS_ADDR=${HERALD_CONSOLE_METRICS_ADDR:-127.0.0.1:9604} setsid "$bin/herald-console" & pids+=($!)
# Ingest answers once it has bound its port (at most 30 s).
for _ in $(seq 1 60); do (exec 3<>/dev/tcp/127.0.0.1/50051) 2>/dev/null && break; sleep 0.5; done

# A demo tenant (its id kept in .herald/demo-tenant) and a fresh single-use portal link for it.
ctl=("$bin/heraldctl")
demo_tenant() {
  local id
  id=$(cat .herald/demo-tenant 2>/dev/null || true)
  if [ -n "$id" ] && "${ctl[@]}" tenant get "$id" >/dev/null 2>&1; then echo "$id"; return; fi
  id=$("${ctl[@]}" --get id tenant create --name "Demo tenant") || return 1
  echo "$id" > .herald/demo-tenant
  echo "$id"
}
tenant=""
portal=""
if tenant=$(demo_tenant 2>/dev/null); then
  portal=$("${ctl[@]}" --get url portal link --tenant "$tenant" --ttl 43200 --name "Demo webhooks" 2>/dev/null || true)
fi
cat <<MSG

Herald is running: ingest on 127.0.0.1:50051, ledger (delivery log) on 127.0.0.1:50052.

Console:  $HERALD_CONSOLE_URL/console/   (operator token: \$HERALD_ADMIN_TOKEN = $HERALD_ADMIN_TOKEN)
Portal of the demo tenant${tenant:+ $tenant} (single use, opens within 10 minutes):
  ${portal:-not available: run  $bin/heraldctl portal link --tenant <tenant id>}
A new link:  HERALD_ADMIN_TOKEN=$HERALD_ADMIN_TOKEN $bin/heraldctl portal link --tenant ${tenant:-<tenant id>}

Try it in another shell (from the repository root):

  export HERALD_ADMIN_TOKEN=$HERALD_ADMIN_TOKEN
  ctl=target/debug/heraldctl
  TENANT=\$(\$ctl --get id tenant create --name acme)
  export HERALD_API_KEY=\$(\$ctl --get api_key key create --tenant "\$TENANT")
  export HERALD_WEBHOOK_SECRET=\$(\$ctl --get secret endpoint create --url http://127.0.0.1:8000/hook --event-type 'invoice.*')
  \$ctl listen --port 8000 &     # a receiver that prints and verifies (secret from the environment)
  echo '{"invoice":"in_1","amount":4200}' | \$ctl publish --type invoice.paid
  sleep 1; \$ctl deliveries list   # the log trails publishing by a moment

Ctrl-C stops all four services.
MSG
wait
