#!/usr/bin/env bash
# Proxy benchmark: in one run, the same wrk load against
# (BENCH_IO_SPIN_US sets turnpike's limits.io_spin_us, default 50; 0 never polls)
#   direct  - a fixed-response upstream (nginx `return 200` with a chat-completion body)
#   nginx   - nginx proxy_pass with upstream keepalive, 1 worker, in front of it
#   turnpike- turnpike serve with 1 I/O thread in front of it
# and a streaming run through nginx and turnpike against turnpike-sim.
# Prints throughput at 64 connections (BENCH_ROUNDS interleaved rounds, default 3; the ratio
# is the median of the rounds' ratios) and added latency at 1 connection, as ratios to nginx,
# and p99 at 64 connections.
# Results are printed (and saved under bench/results/), never asserted.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

duration=${BENCH_DURATION:-10}
rounds=${BENCH_ROUNDS:-3}
"$root/scripts/deps.sh" --bench
if [[ ! -x build/bin/turnpike || "${BENCH_REBUILD:-1}" == 1 ]]; then
  cmake --preset release >/dev/null
  ninja -C build turnpike turnpike-sim ledger_bench >/dev/null
fi

work=$(mktemp -d /tmp/turnpike-bench.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() {
  for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.05; done
  echo "bench: nothing listening on port $1" >&2; return 1
}

up_port=$(free_port); ngx_port=$(free_port); tp_port=$(free_port); sim_port=$(free_port)
ngx_sim_port=$(free_port)
body='{"id":"chatcmpl-bench","object":"chat.completion","created":1700000000,"model":"bench-model","choices":[{"index":0,"message":{"role":"assistant","content":"Hello there! How can I help you today?"},"finish_reason":"stop"}],"usage":{"prompt_tokens":14,"completion_tokens":10,"total_tokens":24}}'

# Two nginx instances, one worker each: the fixed-response upstream, and the proxy under
# test, so the proxy's worker does nothing but proxying (as turnpike's thread does).
nginx_conf() { # name servers...
  cat <<NGINX
worker_processes 1;
daemon off;
pid $work/$1.pid;
error_log $work/$1-error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $work/$1-body;
  proxy_temp_path $work/$1-proxy;
  fastcgi_temp_path $work/$1-fastcgi;
  uwsgi_temp_path $work/$1-uwsgi;
  scgi_temp_path $work/$1-scgi;
  keepalive_requests 1000000;
  $2
}
NGINX
}
nginx_conf upstream "server { listen 127.0.0.1:$up_port; location / { default_type application/json; return 200 '$body'; } }" >"$work/upstream.conf"
proxy_location='proxy_http_version 1.1; proxy_set_header Connection ""; proxy_buffering off;'
nginx_conf proxy "
  upstream fixed { server 127.0.0.1:$up_port; keepalive 128; keepalive_requests 1000000; }
  upstream sim { server 127.0.0.1:$sim_port; keepalive 128; keepalive_requests 1000000; }
  server { listen 127.0.0.1:$ngx_port; location / { proxy_pass http://fixed; $proxy_location } }
  server { listen 127.0.0.1:$ngx_sim_port; location / { proxy_pass http://sim; $proxy_location } }
" >"$work/proxy.conf"
/usr/sbin/nginx -c "$work/upstream.conf" -p "$work" 2>>"$work/upstream-error.log" & pids+=($!)
/usr/sbin/nginx -c "$work/proxy.conf" -p "$work" 2>>"$work/proxy-error.log" & pids+=($!)
ngx_proxy_pid=$!

cat >"$work/turnpike.yaml" <<YAML
listen: "127.0.0.1:$tp_port"
log: { level: warn, access: false }
limits: { io_spin_us: ${BENCH_IO_SPIN_US:-50} }
providers:
  - name: fixed
    api: openai
    base_url: "http://127.0.0.1:$up_port/v1"
  - name: sim
    api: openai
    base_url: "http://127.0.0.1:$sim_port/v1"
models:
  - name: bench-model
    routes:
      - { provider: fixed, upstream_model: bench-model, input_per_mtok: "0.15", output_per_mtok: "0.60" }
  - name: bench-stream
    routes:
      - { provider: sim, upstream_model: bench-model, input_per_mtok: "0.15", output_per_mtok: "0.60" }
  - name: bench-ten
    routes:
$(for i in 0 1 2 3 4 5 6 7 8 9; do
  echo "      - { provider: fixed, upstream_model: bench-model-$i, input_per_mtok: \"0.1$i\", output_per_mtok: \"0.6$i\", ttfb_ms: $((100 + 10 * i)) }"
done)
YAML
build/bin/turnpike-sim --listen "127.0.0.1:$sim_port" --output-tokens 16 2>"$work/sim.log" & pids+=($!)
export TURNPIKE_ADMIN_KEY=bench-admin-key
build/bin/turnpike serve --config "$work/turnpike.yaml" --threads 1 --data-dir "$work/var" 2>"$work/turnpike.log" & pids+=($!)
tp_pid=$!
for p in $up_port $ngx_port $tp_port $sim_port $ngx_sim_port; do wait_port "$p"; done

# Every turnpike request carries a real key, checked as in production.
admin=(-H "Authorization: Bearer $TURNPIKE_ADMIN_KEY" -H 'Content-Type: application/json')
account=$(curl -sf "${admin[@]}" -d '{"name":"bench"}' "http://127.0.0.1:$tp_port/admin/v1/accounts" |
  sed -n 's/.*"id":"\([^"]*\)".*/\1/p')
TURNPIKE_BENCH_KEY=$(curl -sf "${admin[@]}" -d '{}' \
  "http://127.0.0.1:$tp_port/admin/v1/accounts/$account/keys" | sed -n 's/.*"key":"\([^"]*\)".*/\1/p')
export TURNPIKE_BENCH_KEY
# Enough credit that billing never refuses a benchmark request.
curl -sf "${admin[@]}" -d '{"amount_usd":"100000","kind":"paid","idempotency_key":"bench"}' \
  "http://127.0.0.1:$tp_port/admin/v1/accounts/$account/credits" >/dev/null

# wrk prints "Requests/sec:" and, with --latency, the 50% / 99% lines.
run_wrk() { # conns url script
  wrk -t1 -c"$1" -d"${duration}s" --latency -s "bench/$3" "$2" 2>&1
}
rps() { awk '/Requests\/sec/ {print $2}'; }
pct() { # percentile line → microseconds
  awk -v p="$1" '$1==p {v=$2; if (v ~ /us$/) {sub(/us/,"",v); print v} else if (v ~ /ms$/) {sub(/ms/,"",v); print v*1000} else if (v ~ /s$/) {sub(/s/,"",v); print v*1000000}}'
}

url_direct="http://127.0.0.1:$up_port/v1/chat/completions"
url_nginx="http://127.0.0.1:$ngx_port/v1/chat/completions"
url_tp="http://127.0.0.1:$tp_port/v1/chat/completions"

echo "warming up..." >&2
for u in "$url_direct" "$url_nginx" "$url_tp"; do wrk -t1 -c8 -d2s -s bench/chat.lua "$u" >/dev/null; done

# CPU time of each thread of a process and of its children (nginx's worker), in clock
# ticks, as "name ticks" lines: throughput on shared cores is noisy, CPU per request less so.
thread_ticks() { # pid
  local p t
  for p in "$1" $(pgrep -P "$1"); do
    for t in /proc/"$p"/task/*; do
      [[ -r $t/stat ]] && echo "$(tr ' ' _ <"$t/comm") $(awk '{print $14 + $15}' "$t/stat")"
    done
  done | awk '{sum[$1] += $2} END {for (k in sum) print k, sum[k]}' | sort
}
hz=$(getconf CLK_TCK)
requests() { awk '/requests in/ {print $1}'; }

# Throughput: nginx, turnpike and turnpike with 10 candidate routes take turns, round after
# round, so that a slow spell of the shared host falls on all of them; the ratios reported
# are the medians of each round's ratio.
declare -A P50 P99 TICKS REQS
declare -a RPS_NGINX RPS_TP RPS_TEN P99_NGINX P99_TP
add_ticks() { # key before after requests
  TICKS[$1]=$(join <(echo "$2") <(echo "$3") | awk '{print $1, $3 - $2}' |
    join -a1 -a2 -e0 -o 0,1.2,2.2 - <(echo "${TICKS[$1]:-}") | awk '{print $1, $2 + $3}')
  REQS[$1]=$(( ${REQS[$1]:-0} + $4 ))
}
RPS_DIRECT=$(run_wrk 64 "$url_direct" chat.lua | rps)
for round in $(seq "$rounds"); do
  for name in nginx turnpike ten; do
    url=$url_tp; pid=$tp_pid; model=bench-model
    [[ $name == nginx ]] && url=$url_nginx && pid=$ngx_proxy_pid
    [[ $name == ten ]] && model=bench-ten
    before=$(thread_ticks "$pid")
    out=$(TURNPIKE_BENCH_MODEL=$model run_wrk 64 "$url" chat.lua)
    case $name in
      nginx) RPS_NGINX+=("$(rps <<<"$out")"); P99_NGINX+=("$(pct 99% <<<"$out")") ;;
      turnpike) RPS_TP+=("$(rps <<<"$out")"); P99_TP+=("$(pct 99% <<<"$out")") ;;
      ten) RPS_TEN+=("$(rps <<<"$out")") ;;
    esac
    [[ $name != ten ]] && add_ticks "$name" "$before" "$(thread_ticks "$pid")" "$(requests <<<"$out")"
  done
  echo "round $round of $rounds: nginx ${RPS_NGINX[-1]}, turnpike ${RPS_TP[-1]}, 10 routes ${RPS_TEN[-1]} req/s" >&2
done
for name in direct nginx turnpike; do
  var="url_$name"; [[ $name == turnpike ]] && var=url_tp
  out=$(run_wrk 1 "${!var}" chat.lua); P50[$name]=$(pct 50% <<<"$out"); P99[$name]=$(pct 99% <<<"$out")
done
cpu_lines() { # key -> "name µs" per busy thread, busiest first
  echo "${TICKS[$1]}" | awk -v n="${REQS[$1]}" -v hz="$hz" '$2 > 0 {printf "%s %.1f\n", $1, $2 * 1e6 / hz / n}' |
    sort -k2 -rn
}

# Streaming: time to first byte through each proxy, one connection, against turnpike-sim.
ttfb() { # url model -> the median of 51 requests, in µs (a mean would be one outlier's)
  for _ in $(seq 51); do
    curl -s -o /dev/null -w '%{time_starttransfer}\n' -H "Authorization: Bearer $TURNPIKE_BENCH_KEY" \
      -H 'Content-Type: application/json' \
      -d "{\"model\":\"$2\",\"stream\":true,\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}" "$1"
  done | sort -n | awk '{t[NR] = $1} END {printf "%d\n", t[int((NR + 1) / 2)] * 1e6}'
}
ttfb_direct=$(ttfb "http://127.0.0.1:$sim_port/v1/chat/completions" bench-model)
ttfb_nginx=$(ttfb "http://127.0.0.1:$ngx_sim_port/v1/chat/completions" bench-model)
ttfb_tp=$(ttfb "$url_tp" bench-stream)

mkdir -p bench/results
python3 - "$work" <<PY | tee "bench/results/proxy-$(date +%Y%m%d-%H%M%S).txt"
from statistics import median
rounds = {"nginx": [${RPS_NGINX[*]/%/,}], "turnpike": [${RPS_TP[*]/%/,}], "ten": [${RPS_TEN[*]/%/,}]}
rps = {"direct": $RPS_DIRECT, **{k: median(v) for k, v in rounds.items()}}
p50 = {"direct": ${P50[direct]}, "nginx": ${P50[nginx]}, "turnpike": ${P50[turnpike]}}
p99 = {"direct": ${P99[direct]}, "nginx": ${P99[nginx]}, "turnpike": ${P99[turnpike]}}
tt = {"direct": $ttfb_direct, "nginx": $ttfb_nginx, "turnpike": $ttfb_tp}
print(f"turnpike proxy benchmark ({${duration}}s per run, {${rounds}} rounds, wrk -t1, 1 I/O thread / 1 nginx worker)")
print(f"{'':10}{'req/s @64':>12}{'p50 @1 (us)':>14}{'p99 @1 (us)':>14}{'stream TTFB (us)':>18}")
for k in ("direct", "nginx", "turnpike"):
    print(f"{k:10}{rps[k]:>12.0f}{p50[k]:>14.0f}{p99[k]:>14.0f}{tt[k]:>18.0f}")
print("(req/s @64 of nginx and turnpike: the median of the rounds)")
add = lambda d, k: d[k] - d["direct"]
def ratio(a, b):
    # An added latency at or below zero means the direct run was the noisier one.
    return f"{a / b:.2f}x" if a > 0 and b > 0 else "n/a"
def round_ratio(k):  # the median of each round's ratio to that round's nginx run
    return median(t / n for t, n in zip(rounds[k], rounds["nginx"]))
print()
print(f"throughput ratio turnpike/nginx:       {round_ratio('turnpike'):.2f}x  (target >= 1.00; rounds: "
      + ", ".join(f"{t / n:.2f}" for t, n in zip(rounds["turnpike"], rounds["nginx"])) + ")")
print(f"added p50 latency turnpike/nginx:      {ratio(add(p50,'turnpike'), add(p50,'nginx'))}  (target <= 1.00; {add(p50,'turnpike'):.0f} us vs {add(p50,'nginx'):.0f} us)")
print(f"added p99 latency turnpike/nginx:      {ratio(add(p99,'turnpike'), add(p99,'nginx'))}  ({add(p99,'turnpike'):.0f} us vs {add(p99,'nginx'):.0f} us)")
print(f"added stream TTFB turnpike/nginx:      {ratio(add(tt,'turnpike'), add(tt,'nginx'))}  ({add(tt,'turnpike'):.0f} us vs {add(tt,'nginx'):.0f} us)")
print(f"throughput with 10 candidate routes:   {round_ratio('ten'):.2f}x of nginx  ({rps['ten']:.0f} req/s; {ratio(rps['ten'], rps['turnpike'])} of one route)")
p99_64 = {"nginx": median([${P99_NGINX[*]/%/,}]), "turnpike": median([${P99_TP[*]/%/,}])}
print(f"p99 latency at 64 connections:         turnpike {p99_64['turnpike']:.0f} us, nginx {p99_64['nginx']:.0f} us (medians of the rounds)")
cpu = {"nginx": """$(cpu_lines nginx)""", "turnpike": """$(cpu_lines turnpike)"""}
print()
print("CPU per request at 64 connections (us, from /proc, over all rounds; per thread):")
for k in ("nginx", "turnpike"):
    threads = [line.split() for line in cpu[k].splitlines() if line.strip()]
    total = sum(float(us) for _, us in threads)
    print(f"  {k:9} {total:6.1f}  (" + ", ".join(f"{name} {us}" for name, us in threads) + ")")
PY

echo
echo "ledger path (Google Benchmark): hold + post in memory, and with group commit to SQLite"
build/bin/ledger_bench --benchmark_counters_tabular=true 2>/dev/null | tee -a "$(ls -t bench/results/proxy-*.txt | head -1)"
