-- wrk script: a streaming chat completion request.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. (os.getenv("TURNPIKE_BENCH_KEY") or "bench")
wrk.body = '{"model":"bench-model","stream":true,"messages":[{"role":"user","content":"Say hello."}],"max_tokens":16}'
