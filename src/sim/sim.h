#pragma once
// turnpike-sim: an upstream that speaks the OpenAI and Anthropic APIs faithfully enough for
// the demo, the tests and the benchmarks, with knobs for latency, pacing, output length,
// errors, dropped connections and flex behaviour. See docs/sim.md.

#include <cstdint>
#include <memory>
#include <string>

#include "http/server.h"

namespace tp::sim {

// Every knob, settable by flag (defaults for all requests) and per request by header
// `x-sim-<name with dashes>` or body member `"sim": {"<name>": value}`.
struct Knobs {
  std::int64_t latency_ms = 0;          // before the response headers
  std::int64_t ttft_ms = 0;             // headers → first token (streams); added to latency
  std::int64_t tokens_per_second = 0;   // 0: as fast as possible
  std::int64_t output_tokens = 16;      // before max_tokens caps it
  std::int64_t cached_tokens = 0;       // reported as cached prompt tokens
  std::int64_t input_tokens = -1;       // reported prompt tokens; -1: a quarter of its length
  std::int64_t tokens_per_chunk = 1;    // streams: tokens in each content event
  std::int64_t error_status = 500;      // status used when an error is injected
  double error_rate = 0;                // chance of answering error_status instead
  std::int64_t drop_after_chunks = -1;  // streams: cut the connection after N tokens
  std::int64_t stall_after_chunks = -1;  // streams: after N tokens send nothing more (10 min)
  std::int64_t flex_ttft_ms = 1000;     // extra wait for service_tier "flex"
  double flex_429_rate = 0.2;           // chance a flex request is refused with 429
  std::int64_t flex_unavailable = 0;    // 1: every flex request is refused with 400
  std::int64_t flex_served_default = 0;  // 1: a flex request is served (and reported) at default
  std::int64_t embedding_dims = 8;
  std::int64_t continuous_usage = 0;    // 1: streams' chunks carry a running usage count
  std::int64_t end_after_chunks = -1;   // streams: end the body cleanly after N tokens
  std::int64_t cache_write_tokens = 0;  // Anthropic: input written to the cache for 5 minutes
  std::int64_t cache_write_1h_tokens = 0;  // Anthropic: ... for 1 hour
  std::int64_t web_search_requests = 0;    // Anthropic: reported in usage.server_tool_use
  std::int64_t audio_input_tokens = 0;     // OpenAI: audio tokens, counted in prompt_tokens
  std::int64_t audio_output_tokens = 0;    // OpenAI: audio tokens, counted in completion_tokens
  std::int64_t fast_unavailable = 0;    // 1: Anthropic speed "fast" served at "standard"
  std::int64_t default_geo_us = 0;      // 1: Anthropic without inference_geo served in "us"
  std::int64_t default_priority = 0;    // 1: OpenAI without service_tier served at "priority"
  std::int64_t omit_usage = 0;          // 1: OpenAI whole answers and embeddings carry no usage
};

struct SimOptions {
  Knobs knobs;
  std::string api_key;      // when set, requests must carry it
  std::uint64_t seed = 42;  // makes outputs and injected faults repeatable
  std::size_t request_log_max = 200;
};

// Shared by every I/O thread of one simulator.
class SimState;
std::shared_ptr<SimState> make_sim_state(SimOptions options);
http::HandlerFactory make_sim_factory(std::shared_ptr<SimState> state);

// The turnpike-sim executable's main.
int run_sim(int argc, char** argv);

}  // namespace tp::sim
