#!/usr/bin/env bash
# Builds Turnpike and starts it with turnpike-sim as the upstream, on examples/demo.yaml.
# Ctrl-C stops both. Ports: TURNPIKE_DEMO_PORT (8080) and TURNPIKE_DEMO_SIM_PORT (9000).
set -euo pipefail
cd "$(dirname "$0")/.."

port=${TURNPIKE_DEMO_PORT:-8080}
sim_port=${TURNPIKE_DEMO_SIM_PORT:-9000}

scripts/deps.sh
cmake --preset release >/dev/null
cmake --build --preset release --target turnpike turnpike-sim

mkdir -p var
config=var/demo.yaml
sed -e "s/127.0.0.1:9000/127.0.0.1:$sim_port/g" -e "s/127.0.0.1:8080/127.0.0.1:$port/" \
  examples/demo.yaml >"$config"

pids=()
stop() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap stop EXIT
trap 'exit 0' INT TERM

build/bin/turnpike-sim --listen "127.0.0.1:$sim_port" --tokens-per-second 50 2>var/sim.log &
pids+=($!)
# A fresh admin key for this run unless one is given; it is printed, never written down.
export TURNPIKE_ADMIN_KEY=${TURNPIKE_ADMIN_KEY:-$(openssl rand -hex 24)}
build/bin/turnpike serve --config "$config" --data-dir var 2> >(tee -a var/turnpike.log >&2) &
pids+=($!)

for _ in $(seq 100); do
  curl -sf "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break
  sleep 0.1
done

# A demo account and a key for it, through the admin API.
admin=(-H "Authorization: Bearer $TURNPIKE_ADMIN_KEY" -H 'Content-Type: application/json')
account=$(curl -sf "${admin[@]}" -d '{"name":"demo"}' "http://127.0.0.1:$port/admin/v1/accounts" |
  sed -n 's/.*"id":"\([^"]*\)".*/\1/p')
key=$(curl -sf "${admin[@]}" -d '{"name":"demo"}' \
  "http://127.0.0.1:$port/admin/v1/accounts/$account/keys" | sed -n 's/.*"key":"\([^"]*\)".*/\1/p')

cat <<MSG

Turnpike is running.
  base URL:  http://127.0.0.1:$port/v1
  API key:   $key   (account $account)
  admin key: $TURNPIKE_ADMIN_KEY   (for /admin/v1, see docs/api.md; new each run)
  models:    gpt-4o-mini, text-embedding-3-small (OpenAI API), claude-sonnet (Anthropic API)
  upstream:  turnpike-sim on 127.0.0.1:$sim_port

Try it:
  curl http://127.0.0.1:$port/v1/chat/completions \\
    -H 'Authorization: Bearer $key' -H 'Content-Type: application/json' \\
    -d '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Hello"}]}'

Logs: var/turnpike.log, var/sim.log. Ctrl-C stops everything.
MSG
wait
