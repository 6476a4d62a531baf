#include "sim/sim.h"

#include <fmt/format.h>
#include <simdjson.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <cstdio>
#include <deque>
#include <mutex>
#include <random>
#include <thread>

#include "core/ids.h"
#include "core/json_writer.h"
#include "core/log.h"

namespace tp::sim {
namespace {

namespace asio = boost::asio;
using http::Responder;
using http::Task;
using std::chrono::milliseconds;

constexpr std::string_view kJson = "application/json";
constexpr std::array<std::string_view, 16> kWords = {
    " the", " quick", " brown", " fox", " jumps", " over", " a", " lazy",
    " dog", " while", " turnpike", " meters", " every", " token", " it", " streams"};

enum class Api { kOpenAI, kAnthropic };

struct RecordedRequest {
  std::string method;
  std::string path;
  std::string authorization;
  std::string x_api_key;
  std::string anthropic_version;
  std::string anthropic_beta;  // every line of it, joined by ", "
  std::string body;
};

}  // namespace

class SimState {
 public:
  explicit SimState(SimOptions options) : options_(std::move(options)) {}

  const SimOptions& options() const { return options_; }
  std::uint64_t next_thread_seed() { return options_.seed + 7919 * thread_counter_++; }

  void record(RecordedRequest r) {
    ++requests_;
    std::lock_guard lock(mu_);
    log_.push_back(std::move(r));
    while (log_.size() > options_.request_log_max) log_.pop_front();
  }
  void clear() {
    std::lock_guard lock(mu_);
    log_.clear();
    requests_ = 0;
    cancelled_ = 0;
  }
  // A stream whose reader went away before its end.
  void stream_cancelled() { ++cancelled_; }
  std::string requests_json() {
    std::string out;
    json::Writer w(out);
    std::lock_guard lock(mu_);
    w.begin_object().field("count", static_cast<std::int64_t>(requests_.load()));
    w.field("cancelled", static_cast<std::int64_t>(cancelled_.load()));
    w.key("requests").begin_array();
    for (const auto& r : log_) {
      w.begin_object().field("method", r.method).field("path", r.path);
      w.field("authorization", r.authorization).field("x_api_key", r.x_api_key);
      w.field("anthropic_version", r.anthropic_version).field("anthropic_beta", r.anthropic_beta);
      w.key("body").raw(r.body.empty() ? "null" : r.body).end_object();
    }
    w.end_array().end_object();
    return out;
  }

 private:
  SimOptions options_;
  std::atomic<std::uint64_t> thread_counter_{0};
  std::atomic<std::uint64_t> requests_{0};
  std::atomic<std::uint64_t> cancelled_{0};
  std::mutex mu_;
  std::deque<RecordedRequest> log_;
};

namespace {

// Everything the simulator reads from one request.
struct Call {
  Api api = Api::kOpenAI;
  std::string model;
  bool stream = false;
  bool include_usage = false;
  bool flex = false;
  bool priority = false;   // service_tier "priority"
  bool asked_tier = false;  // the request named a service_tier
  std::int64_t max_tokens = -1;
  std::int64_t prompt_tokens = 1;
  std::string speed;          // Anthropic's speed and inference_geo, as asked ("" if not)
  std::string inference_geo;
  Knobs knobs;
};

std::int64_t estimate_tokens(std::size_t chars) {
  return std::max<std::int64_t>(1, static_cast<std::int64_t>((chars + 3) / 4));
}

void apply_knob(Knobs& k, std::string_view name, double value) {
  const auto i = static_cast<std::int64_t>(value);
  if (name == "latency_ms") k.latency_ms = i;
  else if (name == "ttft_ms") k.ttft_ms = i;
  else if (name == "tokens_per_second") k.tokens_per_second = i;
  else if (name == "output_tokens") k.output_tokens = i;
  else if (name == "cached_tokens") k.cached_tokens = i;
  else if (name == "input_tokens") k.input_tokens = i;
  else if (name == "tokens_per_chunk") k.tokens_per_chunk = std::max<std::int64_t>(1, i);
  else if (name == "error_status") { k.error_status = i; k.error_rate = 1; }
  else if (name == "error_rate") k.error_rate = value;
  else if (name == "drop_after_chunks") k.drop_after_chunks = i;
  else if (name == "stall_after_chunks") k.stall_after_chunks = i;
  else if (name == "flex_ttft_ms") k.flex_ttft_ms = i;
  else if (name == "flex_429_rate") k.flex_429_rate = value;
  else if (name == "flex_unavailable") k.flex_unavailable = i;
  else if (name == "flex_served_default")
    k.flex_served_default = i;
  else if (name == "embedding_dims") k.embedding_dims = i;
  else if (name == "continuous_usage") k.continuous_usage = i;
  else if (name == "end_after_chunks") k.end_after_chunks = i;
  else if (name == "cache_write_tokens") k.cache_write_tokens = i;
  else if (name == "cache_write_1h_tokens") k.cache_write_1h_tokens = i;
  else if (name == "web_search_requests") k.web_search_requests = i;
  else if (name == "audio_input_tokens") k.audio_input_tokens = i;
  else if (name == "audio_output_tokens") k.audio_output_tokens = i;
  else if (name == "fast_unavailable") k.fast_unavailable = i;
  else if (name == "default_geo_us") k.default_geo_us = i;
  else if (name == "default_priority") k.default_priority = i;
  else if (name == "omit_usage") k.omit_usage = i;
}

constexpr std::array<std::string_view, 27> kKnobNames = {"latency_ms",
                                                         "ttft_ms",
                                                         "tokens_per_second",
                                                         "output_tokens",
                                                         "cached_tokens",
                                                         "error_status",
                                                         "error_rate",
                                                         "drop_after_chunks",
                                                         "flex_ttft_ms",
                                                         "flex_429_rate",
                                                         "embedding_dims",
                                                         "stall_after_chunks",
                                                         "flex_unavailable",
                                                         "input_tokens",
                                                         "tokens_per_chunk",
                                                         "continuous_usage",
                                                         "end_after_chunks",
                                                         "cache_write_tokens",
                                                         "cache_write_1h_tokens",
                                                         "web_search_requests",
                                                         "audio_input_tokens",
                                                         "audio_output_tokens",
                                                         "fast_unavailable",
                                                         "default_geo_us",
                                                         "default_priority",
                                                         "omit_usage",
                                                         "flex_served_default"};

// Header knobs: x-sim-latency-ms etc. Error status first so an explicit rate wins.
void apply_header_knobs(const http::Request& req, Knobs& k) {
  for (std::string_view name : kKnobNames) {
    std::string header = "x-sim-" + std::string(name);
    std::replace(header.begin(), header.end(), '_', '-');
    const std::string_view value = req[header];
    if (value.empty()) continue;
    apply_knob(k, name, std::strtod(std::string(value).c_str(), nullptr));
  }
}

void append_sse(std::string& out, std::string_view event, std::string_view data) {
  if (!event.empty()) fmt::format_to(std::back_inserter(out), "event: {}\n", event);
  out += "data: ";
  out += data;
  out += "\n\n";
}

std::int64_t now_seconds() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

class SimHandler final : public http::Handler {
 public:
  SimHandler(asio::io_context& ioc, std::shared_ptr<SimState> state)
      : ioc_(ioc), state_(std::move(state)), rng_(state_->next_thread_seed()) {}

  Task<void> handle(http::Request& req, Responder& res) override;
  Task<void> reject(unsigned status, std::string_view message, std::string_view,
                    Responder& res) override {
    co_await send_error(res, Api::kOpenAI, status, message);
  }

 private:
  Task<void> sleep_ms(std::int64_t ms) {
    if (ms <= 0) co_return;
    http::Timer timer(ioc_.get_executor(), milliseconds(ms));
    co_await timer.async_wait(http::use_nothrow);
  }
  // A stream that goes silent: nothing more for 10 minutes, then the connection is cut.
  Task<void> stall(Responder& res) {
    co_await sleep_ms(10 * 60'000);
    res.close_after();
  }
  bool chance(double p) { return p > 0 && std::uniform_real_distribution<>(0, 1)(rng_) < p; }
  std::string_view word() { return kWords[rng_() % kWords.size()]; }
  // The next content event's text: tokens_per_chunk words, fewer at the end of `n`.
  std::string chunk_text(const Call& call, std::int64_t sent, std::int64_t n) {
    std::string text;
    for (std::int64_t i = 0; i < std::min(call.knobs.tokens_per_chunk, n - sent); ++i) {
      text += word();
    }
    return text;
  }

  Task<void> send_error(Responder& res, Api api, unsigned status, std::string_view message);
  Result<Call> read_call(const http::Request& req, Api api, simdjson::dom::element& doc);
  Task<void> chat(const Call& call, Responder& res);
  Task<void> messages(const Call& call, Responder& res);
  Task<void> embeddings(const Call& call, simdjson::dom::element doc, Responder& res);
  std::int64_t output_length(const Call& call) const {
    std::int64_t n = std::max<std::int64_t>(0, call.knobs.output_tokens);
    if (call.max_tokens >= 0) n = std::min(n, call.max_tokens);
    return n;
  }

  asio::io_context& ioc_;
  std::shared_ptr<SimState> state_;
  std::mt19937_64 rng_;
  simdjson::dom::parser parser_;
};

Task<void> SimHandler::send_error(Responder& res, Api api, unsigned status,
                                  std::string_view message) {
  std::string body;
  json::Writer w(body);
  if (api == Api::kAnthropic) {
    const std::string_view type = status == 429   ? "rate_limit_error"
                                  : status == 401 ? "authentication_error"
                                  : status == 400 ? "invalid_request_error"
                                  : status == 529 ? "overloaded_error"
                                                  : "api_error";
    w.begin_object().field("type", "error").key("error").begin_object();
    w.field("type", type).field("message", message).end_object().end_object();
  } else {
    const std::string_view type = status == 429   ? "rate_limit_exceeded"
                                  : status == 401 ? "invalid_request_error"
                                  : status < 500  ? "invalid_request_error"
                                                  : "server_error";
    w.begin_object().key("error").begin_object().field("message", message);
    w.field("type", type).key("param").null().key("code").null().end_object().end_object();
  }
  const std::array<http::Header, 1> retry{http::Header{"retry-after", "1"}};
  co_await res.send(status, kJson, body,
                    status == 429 ? std::span<const http::Header>(retry)
                                  : std::span<const http::Header>());
}

Result<Call> SimHandler::read_call(const http::Request& req, Api api,
                                   simdjson::dom::element& doc) {
  Call call;
  call.api = api;
  call.knobs = state_->options().knobs;
  if (parser_.parse(req.body().data(), req.body().size()).get(doc) || !doc.is_object()) {
    return Status{ErrorKind::kInvalidRequest, "body is not a JSON object"};
  }
  std::string_view model;
  if (doc["model"].get_string().get(model)) {
    return Status{ErrorKind::kInvalidRequest, "'model' is required"};
  }
  call.model = std::string(model);
  bool stream = false;
  if (!doc["stream"].get_bool().get(stream)) call.stream = stream;
  bool usage = false;
  if (!doc["stream_options"]["include_usage"].get_bool().get(usage)) call.include_usage = usage;
  std::string_view tier;
  if (!doc["service_tier"].get_string().get(tier)) {
    call.flex = tier == "flex";
    call.priority = tier == "priority";
    call.asked_tier = true;
  }
  std::string_view option;
  if (!doc["speed"].get_string().get(option)) call.speed = std::string(option);
  if (!doc["inference_geo"].get_string().get(option)) call.inference_geo = std::string(option);
  std::int64_t max_tokens = -1;
  if (!doc["max_tokens"].get_int64().get(max_tokens) ||
      !doc["max_completion_tokens"].get_int64().get(max_tokens)) {
    call.max_tokens = max_tokens;
  }
  std::size_t prompt_chars = 0;
  for (const char* key : {"messages", "system", "input"}) {
    simdjson::dom::element e;
    if (!doc[key].get(e)) prompt_chars += simdjson::minify(e).size();
  }
  call.prompt_tokens = estimate_tokens(prompt_chars);
  simdjson::dom::object knobs;
  if (!doc["sim"].get_object().get(knobs)) {
    for (auto [k, v] : knobs) {
      double value = 0;
      if (!v.get_double().get(value)) apply_knob(call.knobs, k, value);
    }
  }
  apply_header_knobs(req, call.knobs);
  if (call.knobs.input_tokens >= 0) call.prompt_tokens = call.knobs.input_tokens;
  return call;
}

Task<void> SimHandler::handle(http::Request& req, Responder& res) {
  const std::string_view target = req.target();
  const std::string_view path = target.substr(0, target.find('?'));

  if (path == "/sim/requests") {
    if (req.method() == "DELETE") {
      state_->clear();
      co_await res.send(200, kJson, R"({"cleared":true})");
    } else {
      co_await res.send(200, kJson, state_->requests_json());
    }
    co_return;
  }
  if (path == "/healthz") {
    co_await res.send(200, kJson, R"({"status":"ok"})");
    co_return;
  }

  const bool count_tokens = path == "/v1/messages/count_tokens";
  const Api api = path == "/v1/messages" || count_tokens ? Api::kAnthropic : Api::kOpenAI;
  // Model calls are logged; model listings (a gateway's health probes) are not.
  if (path != "/v1/models" || req.method() != "GET") {
    std::string beta;
    for (const http::HeaderField& f : req.headers()) {
      if (!http::iequals(f.name, "anthropic-beta")) continue;
      if (!beta.empty()) beta += ", ";
      beta += f.value;
    }
    state_->record({std::string(req.method()), std::string(path),
                    std::string(req["authorization"]), std::string(req["x-api-key"]),
                    std::string(req["anthropic-version"]), std::move(beta), req.body()});
  }

  const std::string& required_key = state_->options().api_key;
  if (!required_key.empty()) {
    const std::string_view presented =
        api == Api::kAnthropic ? std::string_view(req["x-api-key"])
                               : std::string_view(req["authorization"]);
    const std::string expected = api == Api::kAnthropic ? required_key : "Bearer " + required_key;
    if (presented != expected) {
      co_await send_error(res, api, 401, "invalid api key");
      co_return;
    }
  }

  if (path == "/v1/models" && req.method() == "GET") {
    std::string body;
    json::Writer w(body);
    w.begin_object().field("object", "list").key("data").begin_array();
    w.begin_object().field("id", "sim-model").field("object", "model");
    w.field("created", now_seconds()).field("owned_by", "turnpike-sim").end_object();
    w.end_array().end_object();
    co_await res.send(200, kJson, body);
    co_return;
  }
  const bool known = path == "/v1/chat/completions" || path == "/v1/messages" ||
                     path == "/v1/embeddings" || count_tokens;
  if (!known || req.method() != "POST") {
    co_await send_error(res, api, 404, fmt::format("unknown path {}", path));
    co_return;
  }

  simdjson::dom::element doc;
  auto call = read_call(req, api, doc);
  if (!call) {
    co_await send_error(res, api, 400, call.status().message());
    co_return;
  }
  if (count_tokens) {  // the input the request would be billed: a message's prompt count
    co_await res.send(200, kJson, fmt::format(R"({{"input_tokens":{}}})", call->prompt_tokens));
    co_return;
  }
  if (api == Api::kAnthropic && call->max_tokens < 0) {
    co_await send_error(res, api, 400, "max_tokens: Field required");
    co_return;
  }
  co_await sleep_ms(call->knobs.latency_ms);
  if (chance(call->knobs.error_rate)) {
    co_await send_error(res, api, static_cast<unsigned>(call->knobs.error_status),
                        "simulated upstream error");
    co_return;
  }
  if (call->flex && call->knobs.flex_unavailable != 0) {
    co_await send_error(res, api, 400, "Flex processing is not available for this model");
    co_return;
  }
  if (call->flex && chance(call->knobs.flex_429_rate)) {
    co_await send_error(res, api, 429, "Resource unavailable for flex processing; retry later");
    co_return;
  }
  if (path == "/v1/embeddings") {
    co_await embeddings(*call, doc, res);
  } else if (api == Api::kAnthropic) {
    co_await messages(*call, res);
  } else {
    co_await chat(*call, res);
  }
}

Task<void> SimHandler::chat(const Call& call, Responder& res) {
  const std::string id = random_id("chatcmpl-", 29);
  const std::int64_t created = now_seconds();
  const std::int64_t n = output_length(call);
  const std::string_view finish = n < call.knobs.output_tokens ? "length" : "stop";
  // A request that names no tier gets the project's default (default_priority).
  const std::string_view tier =
      call.flex && call.knobs.flex_served_default == 0                          ? "flex"
      : call.priority || (call.knobs.default_priority != 0 && !call.asked_tier) ? "priority"
                                                                                : "default";
  const std::int64_t first_wait = call.knobs.ttft_ms + (call.flex ? call.knobs.flex_ttft_ms : 0);
  const std::int64_t gap_ms = call.knobs.tokens_per_second > 0 ? 1000 / call.knobs.tokens_per_second : 0;
  // OpenAI counts audio tokens in prompt_tokens and completion_tokens, and splits them out
  // in the details; the streamed text is not audio, so they come on top of it.
  const std::int64_t audio_in = std::max<std::int64_t>(0, call.knobs.audio_input_tokens);
  const std::int64_t audio_out = std::max<std::int64_t>(0, call.knobs.audio_output_tokens);
  const std::int64_t prompt = call.prompt_tokens + audio_in;

  auto usage = [&](json::Writer& w) {
    w.key("usage").begin_object();
    w.field("prompt_tokens", prompt).field("completion_tokens", n + audio_out);
    w.field("total_tokens", prompt + n + audio_out);
    w.key("prompt_tokens_details").begin_object().field("cached_tokens", call.knobs.cached_tokens);
    w.field("audio_tokens", audio_in).end_object();
    w.key("completion_tokens_details").begin_object().field("reasoning_tokens", 0);
    w.field("audio_tokens", audio_out).end_object();
    w.end_object();
  };

  if (!call.stream) {
    co_await sleep_ms(first_wait + gap_ms * std::max<std::int64_t>(0, n - 1));
    std::string text;
    for (std::int64_t i = 0; i < n; ++i) text += word();
    std::string body;
    json::Writer w(body);
    w.begin_object().field("id", id).field("object", "chat.completion");
    w.field("created", created).field("model", call.model).key("choices").begin_array();
    w.begin_object().field("index", 0).key("message").begin_object();
    w.field("role", "assistant").field("content", text).key("refusal").null().end_object();
    w.key("logprobs").null().field("finish_reason", finish).end_object().end_array();
    if (call.knobs.omit_usage == 0) usage(w);
    w.field("service_tier", tier).field("system_fingerprint", "fp_turnpike_sim").end_object();
    co_await res.send(200, kJson, body);
    co_return;
  }

  if (!co_await res.begin_stream(200, "text/event-stream; charset=utf-8")) co_return;
  std::int64_t sent = 0;  // output tokens streamed so far
  auto chunk = [&](std::string_view delta_json, std::string_view finish_reason) {
    std::string data;
    json::Writer w(data);
    w.begin_object().field("id", id).field("object", "chat.completion.chunk");
    w.field("created", created).field("model", call.model);
    w.field("service_tier", tier).field("system_fingerprint", "fp_turnpike_sim");
    w.key("choices").begin_array().begin_object().field("index", 0).key("delta").raw(delta_json);
    w.key("logprobs").null().key("finish_reason");
    if (finish_reason.empty()) w.null(); else w.value(finish_reason);
    w.end_object().end_array();
    if (call.include_usage && call.knobs.continuous_usage != 0) {
      // vLLM's continuous_usage_stats: a running count on every chunk. The audio knobs add
      // their details only when set, so the plain running count stays as vLLM sends it.
      w.key("usage").begin_object().field("prompt_tokens", prompt);
      w.field("completion_tokens", sent + audio_out);
      w.field("total_tokens", prompt + sent + audio_out);
      if (audio_in > 0) {
        w.key("prompt_tokens_details").begin_object().field("audio_tokens", audio_in).end_object();
      }
      if (audio_out > 0) {
        w.key("completion_tokens_details").begin_object().field("audio_tokens", audio_out);
        w.end_object();
      }
      w.end_object();
    } else if (call.include_usage) {
      w.key("usage").null();
    }
    w.end_object();
    std::string event;
    append_sse(event, {}, data);
    return event;
  };

  co_await sleep_ms(first_wait);
  if (!co_await res.write_chunk(chunk(R"({"role":"assistant","content":"","refusal":null})", "")))
    co_return;
  for (std::int64_t i = 0; sent < n; ++i) {
    if (i > 0) co_await sleep_ms(gap_ms * call.knobs.tokens_per_chunk);
    if (call.knobs.drop_after_chunks >= 0 && i >= call.knobs.drop_after_chunks) {
      res.close_after();  // leaves the chunked body unterminated: the peer sees a cut
      co_return;
    }
    if (call.knobs.stall_after_chunks >= 0 && i >= call.knobs.stall_after_chunks) {
      co_await stall(res);
      co_return;
    }
    if (call.knobs.end_after_chunks >= 0 && i >= call.knobs.end_after_chunks) {
      co_await res.end_stream();  // a clean end of the body, short of the answer's end
      co_return;
    }
    const std::string text = chunk_text(call, sent, n);
    sent += std::min(call.knobs.tokens_per_chunk, n - sent);
    if (!co_await res.write_chunk(chunk(fmt::format(R"({{"content":{}}})", json::quoted(text)), ""))) {
      state_->stream_cancelled();
      co_return;
    }
  }
  std::string tail = chunk("{}", finish);
  if (call.include_usage) {
    std::string data;
    json::Writer w(data);
    w.begin_object().field("id", id).field("object", "chat.completion.chunk");
    w.field("created", created).field("model", call.model);
    w.field("service_tier", tier).field("system_fingerprint", "fp_turnpike_sim");
    w.key("choices").begin_array().end_array();
    usage(w);
    w.end_object();
    append_sse(tail, {}, data);
  }
  append_sse(tail, {}, "[DONE]");
  if (!co_await res.write_chunk(tail)) co_return;
  co_await res.end_stream();
}

Task<void> SimHandler::messages(const Call& call, Responder& res) {
  const std::string id = random_id("msg_", 24);
  const std::int64_t n = output_length(call);
  const std::string_view stop = n < call.knobs.output_tokens ? "max_tokens" : "end_turn";
  const std::int64_t gap_ms = call.knobs.tokens_per_second > 0 ? 1000 / call.knobs.tokens_per_second : 0;

  // Cache writes come on top of input_tokens, as Anthropic counts them. The split and the
  // server tool counts are left out when zero so that a plain answer keeps its old shape.
  const std::int64_t cache_write_5m = std::max<std::int64_t>(0, call.knobs.cache_write_tokens);
  const std::int64_t cache_write_1h = std::max<std::int64_t>(0, call.knobs.cache_write_1h_tokens);
  const std::int64_t web_searches = std::max<std::int64_t>(0, call.knobs.web_search_requests);
  auto usage = [&](json::Writer& w, std::int64_t output, std::int64_t searches) {
    w.key("usage").begin_object().field("input_tokens", call.prompt_tokens);
    w.field("cache_creation_input_tokens", cache_write_5m + cache_write_1h);
    if (cache_write_5m + cache_write_1h > 0) {
      w.key("cache_creation").begin_object().field("ephemeral_5m_input_tokens", cache_write_5m);
      w.field("ephemeral_1h_input_tokens", cache_write_1h).end_object();
    }
    w.field("cache_read_input_tokens", call.knobs.cached_tokens);
    w.field("output_tokens", output);
    if (web_searches > 0) {
      w.key("server_tool_use").begin_object().field("web_search_requests", searches).end_object();
    }
    // What served it: the speed asked (fast falls back to standard when it is unavailable),
    // the region asked or the workspace's default.
    if (!call.speed.empty()) {
      w.field("speed",
              call.speed == "fast" && call.knobs.fast_unavailable != 0 ? "standard" : call.speed);
    }
    if (!call.inference_geo.empty()) {
      w.field("inference_geo", call.inference_geo);
    } else if (call.knobs.default_geo_us != 0) {
      w.field("inference_geo", "us");
    }
    w.end_object();
  };

  if (!call.stream) {
    co_await sleep_ms(call.knobs.ttft_ms + gap_ms * std::max<std::int64_t>(0, n - 1));
    std::string text;
    for (std::int64_t i = 0; i < n; ++i) text += word();
    std::string body;
    json::Writer w(body);
    w.begin_object().field("id", id).field("type", "message").field("role", "assistant");
    w.field("model", call.model).key("content").begin_array();
    w.begin_object().field("type", "text").field("text", text).end_object().end_array();
    w.field("stop_reason", stop).key("stop_sequence").null();
    usage(w, n, web_searches);
    w.end_object();
    co_await res.send(200, kJson, body);
    co_return;
  }

  if (!co_await res.begin_stream(200, "text/event-stream; charset=utf-8")) co_return;
  std::string events;
  {
    std::string data;
    json::Writer w(data);
    w.begin_object().field("type", "message_start").key("message").begin_object();
    w.field("id", id).field("type", "message").field("role", "assistant");
    w.field("model", call.model).key("content").begin_array().end_array();
    w.key("stop_reason").null().key("stop_sequence").null();
    usage(w, 1, 0);  // no search has run yet, as Anthropic reports it
    w.end_object().end_object();
    append_sse(events, "message_start", data);
  }
  append_sse(events, "content_block_start",
             R"({"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}})");
  append_sse(events, "ping", R"({"type":"ping"})");
  co_await sleep_ms(call.knobs.ttft_ms);
  if (!co_await res.write_chunk(events)) co_return;
  for (std::int64_t i = 0, sent = 0; sent < n; ++i) {
    if (i > 0) co_await sleep_ms(gap_ms * call.knobs.tokens_per_chunk);
    if (call.knobs.drop_after_chunks >= 0 && i >= call.knobs.drop_after_chunks) {
      res.close_after();
      co_return;
    }
    if (call.knobs.stall_after_chunks >= 0 && i >= call.knobs.stall_after_chunks) {
      co_await stall(res);
      co_return;
    }
    if (call.knobs.end_after_chunks >= 0 && i >= call.knobs.end_after_chunks) {
      co_await res.end_stream();  // a clean end of the body, short of the answer's end
      co_return;
    }
    const std::string text = chunk_text(call, sent, n);
    sent += std::min(call.knobs.tokens_per_chunk, n - sent);
    events.clear();
    append_sse(events, "content_block_delta",
               fmt::format(R"({{"type":"content_block_delta","index":0,"delta":{{"type":"text_delta","text":{}}}}})",
                           json::quoted(text)));
    if (!co_await res.write_chunk(events)) {
      state_->stream_cancelled();
      co_return;
    }
  }
  events.clear();
  append_sse(events, "content_block_stop", R"({"type":"content_block_stop","index":0})");
  {
    std::string data;
    json::Writer w(data);
    w.begin_object().field("type", "message_delta").key("delta").begin_object();
    w.field("stop_reason", stop).key("stop_sequence").null().end_object();
    usage(w, n, web_searches);  // message_delta usage is cumulative
    w.end_object();
    append_sse(events, "message_delta", data);
  }
  append_sse(events, "message_stop", R"({"type":"message_stop"})");
  if (!co_await res.write_chunk(events)) co_return;
  co_await res.end_stream();
}

// Little-endian float32 values, base64 encoded, as the OpenAI API returns them when asked
// for encoding_format "base64" (the openai SDK's default).
std::string base64_floats(const std::vector<float>& values) {
  static constexpr char kAlphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string bytes(values.size() * 4, '\0');
  std::memcpy(bytes.data(), values.data(), bytes.size());
  std::string out;
  for (std::size_t i = 0; i < bytes.size(); i += 3) {
    std::uint32_t v = static_cast<std::uint8_t>(bytes[i]) << 16;
    if (i + 1 < bytes.size()) v |= static_cast<std::uint8_t>(bytes[i + 1]) << 8;
    if (i + 2 < bytes.size()) v |= static_cast<std::uint8_t>(bytes[i + 2]);
    out.push_back(kAlphabet[(v >> 18) & 63]);
    out.push_back(kAlphabet[(v >> 12) & 63]);
    out.push_back(i + 1 < bytes.size() ? kAlphabet[(v >> 6) & 63] : '=');
    out.push_back(i + 2 < bytes.size() ? kAlphabet[v & 63] : '=');
  }
  return out;
}

Task<void> SimHandler::embeddings(const Call& call, simdjson::dom::element doc, Responder& res) {
  std::size_t inputs = 1;
  simdjson::dom::array list;
  if (!doc["input"].get_array().get(list)) {
    // An array of strings is many inputs; an array of numbers is one tokenised input.
    simdjson::dom::element first;
    if (!list.at(0).get(first) && (first.is_string() || first.is_array())) inputs = list.size();
  }
  std::int64_t dims = call.knobs.embedding_dims;
  std::int64_t requested = 0;
  if (!doc["dimensions"].get_int64().get(requested) && requested > 0) dims = requested;
  dims = std::clamp<std::int64_t>(dims, 1, 4096);
  std::string_view format = "float";
  if (doc["encoding_format"].get_string().get(format)) format = "float";

  std::string body;
  json::Writer w(body);
  w.begin_object().field("object", "list").key("data").begin_array();
  for (std::size_t i = 0; i < inputs; ++i) {
    std::vector<float> values(static_cast<std::size_t>(dims));
    for (std::int64_t d = 0; d < dims; ++d) {
      values[static_cast<std::size_t>(d)] = static_cast<float>((i + 1) * 0.01 + d * 0.001);
    }
    w.begin_object().field("object", "embedding").field("index", static_cast<std::int64_t>(i));
    w.key("embedding");
    if (format == "base64") {
      w.value(base64_floats(values));
    } else {
      w.begin_array();
      for (float v : values) w.value(static_cast<double>(v));
      w.end_array();
    }
    w.end_object();
  }
  w.end_array().field("model", call.model);
  if (call.knobs.omit_usage == 0) {
    w.key("usage").begin_object().field("prompt_tokens", call.prompt_tokens);
    w.field("total_tokens", call.prompt_tokens).end_object();
  }
  w.end_object();
  co_await res.send(200, kJson, body);
}

}  // namespace

std::shared_ptr<SimState> make_sim_state(SimOptions options) {
  return std::make_shared<SimState>(std::move(options));
}

http::HandlerFactory make_sim_factory(std::shared_ptr<SimState> state) {
  return [state](asio::io_context& ioc, http::Inbox&) -> std::unique_ptr<http::Handler> {
    return std::make_unique<SimHandler>(ioc, state);
  };
}

int run_sim(int argc, char** argv) {
  CLI::App app{"turnpike-sim: an OpenAI- and Anthropic-compatible upstream simulator for demos,\n"
               "tests and benchmarks. Every knob below is a default; a request can override it\n"
               "with a header x-sim-<knob> (dashes) or a body member \"sim\": {\"<knob>\": v}.\n"
               "See docs/sim.md.",
               "turnpike-sim"};
  std::string listen = "127.0.0.1:9000";
  int threads = 1;
  SimOptions opts;
  Knobs& k = opts.knobs;
  app.add_option("--listen", listen, "HOST:PORT (port 0 picks one, logged at start)")
      ->capture_default_str();
  app.add_option("--threads", threads, "I/O threads")->capture_default_str()->check(CLI::Range(1, 64));
  app.add_option("--api-key", opts.api_key, "Require this key (bearer or x-api-key)");
  app.add_option("--seed", opts.seed, "Seed for outputs and injected faults")->capture_default_str();
  app.add_option("--latency-ms", k.latency_ms, "Delay before response headers")->capture_default_str();
  app.add_option("--ttft-ms", k.ttft_ms, "Extra delay before the first token")->capture_default_str();
  app.add_option("--tokens-per-second", k.tokens_per_second, "Stream pacing; 0 = unpaced")
      ->capture_default_str();
  app.add_option("--output-tokens", k.output_tokens, "Completion length before max_tokens")
      ->capture_default_str();
  app.add_option("--cached-tokens", k.cached_tokens, "Prompt tokens reported as cached")
      ->capture_default_str();
  app.add_option("--input-tokens", k.input_tokens,
                 "Prompt tokens reported; -1 = a quarter of the prompt's length")
      ->capture_default_str();
  app.add_option("--tokens-per-chunk", k.tokens_per_chunk, "Tokens in each streamed content event")
      ->capture_default_str()->check(CLI::Range(1, 1000));
  app.add_option("--error-status", k.error_status, "Status of injected errors")->capture_default_str();
  app.add_option("--error-rate", k.error_rate, "Chance (0..1) of an injected error")
      ->capture_default_str()->check(CLI::Range(0.0, 1.0));
  app.add_option("--drop-after-chunks", k.drop_after_chunks,
                 "Cut streams after N tokens; -1 = never")->capture_default_str();
  app.add_option("--stall-after-chunks", k.stall_after_chunks,
                 "Streams go silent after N tokens (for 10 minutes, then cut); -1 = never")
      ->capture_default_str();
  app.add_option("--flex-ttft-ms", k.flex_ttft_ms, "Extra delay for service_tier flex")
      ->capture_default_str();
  app.add_option("--flex-unavailable", k.flex_unavailable,
                 "1: refuse every flex request with 400 (a model without a flex tier)")
      ->capture_default_str();
  app.add_option("--flex-served-default", k.flex_served_default,
                 "1: a flex request is served (and reported) at the default tier")
      ->capture_default_str()
      ->check(CLI::Range(0, 1));
  app.add_option("--flex-429-rate", k.flex_429_rate, "Chance a flex request gets 429")
      ->capture_default_str()->check(CLI::Range(0.0, 1.0));
  app.add_option("--embedding-dims", k.embedding_dims, "Embedding vector length")
      ->capture_default_str();
  app.add_option("--end-after-chunks", k.end_after_chunks,
                 "End streams cleanly after N tokens, without their end or terminator; -1 = never")
      ->capture_default_str();
  app.add_option("--continuous-usage", k.continuous_usage,
                 "1: streams asked for usage carry a running count on every chunk (vLLM's "
                 "continuous_usage_stats)")
      ->capture_default_str()->check(CLI::Range(0, 1));
  app.add_option("--cache-write-tokens", k.cache_write_tokens,
                 "Anthropic: input tokens reported as written to the cache for 5 minutes")
      ->capture_default_str();
  app.add_option("--cache-write-1h-tokens", k.cache_write_1h_tokens,
                 "Anthropic: input tokens reported as written to the cache for 1 hour")
      ->capture_default_str();
  app.add_option("--fast-unavailable", k.fast_unavailable,
                 "1: Anthropic requests with speed fast are served (and reported) at standard")
      ->capture_default_str()->check(CLI::Range(0, 1));
  app.add_option("--default-priority", k.default_priority,
                 "1: OpenAI requests without service_tier are served (and reported) at priority")
      ->capture_default_str()->check(CLI::Range(0, 1));
  app.add_option("--default-geo-us", k.default_geo_us,
                 "1: Anthropic requests without inference_geo are served (and reported) in us")
      ->capture_default_str()->check(CLI::Range(0, 1));
  app.add_option("--omit-usage", k.omit_usage,
                 "1: OpenAI whole answers and embeddings carry no usage")
      ->capture_default_str()->check(CLI::Range(0, 1));
  app.add_option("--web-search-requests", k.web_search_requests,
                 "Anthropic: web searches reported in usage.server_tool_use")
      ->capture_default_str();
  app.add_option("--audio-input-tokens", k.audio_input_tokens,
                 "OpenAI: audio tokens reported within prompt_tokens")
      ->capture_default_str();
  app.add_option("--audio-output-tokens", k.audio_output_tokens,
                 "OpenAI: audio tokens reported within completion_tokens")
      ->capture_default_str();
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  const std::size_t colon = listen.rfind(':');
  if (colon == std::string::npos) {
    std::fprintf(stderr, "turnpike-sim: --listen must be HOST:PORT\n");
    return 2;
  }
  const std::string host = listen.substr(0, colon);
  const int port = std::atoi(listen.c_str() + colon + 1);
  http::ServerLimits limits;
  limits.drain_timeout_ms = 2000;
  http::Server server(limits, make_sim_factory(make_sim_state(std::move(opts))));
  if (auto s = server.listen(host, static_cast<std::uint16_t>(port), threads); !s) {
    std::fprintf(stderr, "turnpike-sim: %s\n", s.message().c_str());
    return 1;
  }
  log::info("listening", {{"host", host}, {"port", static_cast<int>(server.port())},
                          {"threads", threads}, {"service", "turnpike-sim"}});
  server.run();
  return 0;
}

}  // namespace tp::sim
