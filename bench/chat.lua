-- wrk script: a small non-streaming chat completion request.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. (os.getenv("TURNPIKE_BENCH_KEY") or "bench")
-- TURNPIKE_BENCH_MODEL picks the model (default bench-model: one route).
local model = os.getenv("TURNPIKE_BENCH_MODEL") or "bench-model"
wrk.body = '{"model":"' .. model .. '","messages":[{"role":"user","content":"Say hello in one short sentence."}],"max_tokens":32}'
