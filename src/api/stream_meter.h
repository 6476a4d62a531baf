#pragma once
// Watches the events of a relayed stream for what they cost, and says which events the
// client must not see yet (the final one waits for the settlement's commit) or at all (the
// usage chunk Turnpike asked for on the client's behalf).

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "api/errors.h"
#include "meter/usage.h"

namespace tp::api {

class StreamMeter {
 public:
  // `drop_usage_chunk`: an OpenAI stream whose usage chunk Turnpike asked for itself.
  // `choices`: how many the request asked for (OpenAI's `n`), each of which must finish.
  StreamMeter(Surface surface, bool drop_usage_chunk, std::int64_t choices = 1)
      : surface_(surface), drop_usage_chunk_(drop_usage_chunk), choices_(choices) {}

  enum class Verdict {
    kForward,  // pass it on
    kDrop,     // keep it from the client
    kFinal,    // the stream's terminator: `data: [DONE]` or `message_stop`
  };
  // One complete event: its "event:" name (empty if none) and its data.
  Verdict on_event(std::string_view name, std::string_view data);

  // Events that carried generated text or tool-call arguments so far.
  std::int64_t content_events() const { return content_events_; }
  // Whether the upstream has reported its final usage.
  bool reported() const;
  // How many events reported usage so far (any, final or not): a change of it may change
  // what the stream costs.
  std::int64_t usage_reports() const { return usage_reports_; }
  // Whether the upstream said its answer ended (a finish_reason for every choice, or an
  // Anthropic stop_reason): a stream closed after that, without its terminator, was whole.
  bool finished() const { return finished_; }
  // Whether the upstream reported a failure inside the stream: an OpenAI-compatible chunk
  // with an "error" object (vLLM sends one, then `[DONE]`), or an Anthropic `error` event.
  bool upstream_failed() const { return upstream_failed_; }
  // What to bill. With the final usage reported, exactly that. Otherwise whatever input
  // the upstream did report (else `input_estimate`), and as output the larger of what it
  // reported so far and `output_relayed`.
  meter::Usage usage(std::int64_t input_estimate, std::int64_t output_relayed) const;

 private:
  Verdict on_openai(std::string_view data);
  Verdict on_anthropic(std::string_view name, std::string_view data);
  // A chunk with a finish_reason: which choices it ends.
  void note_finish(std::string_view data);

  Surface surface_;
  bool drop_usage_chunk_;
  std::optional<meter::Usage> openai_;  // the latest usage reported
  bool openai_final_ = false;           // ...and it was the final one
  meter::AnthropicStreamUsage anthropic_;
  bool anthropic_final_ = false;  // its latest message_delta ended the answer, nothing after
  std::int64_t content_events_ = 0;
  std::int64_t usage_reports_ = 0;
  std::int64_t choices_;
  std::vector<bool> choice_finished_;  // by index, once n > 1 and one finished
  bool finished_ = false;
  bool upstream_failed_ = false;
};

// Appends one SSE event of an OpenAI stream to `out`, less its chunk's `usage` member (a
// null, or a running count) when it has one: the usage Turnpike asked for on a client's
// behalf puts one in every chunk, which the client did not ask for. An event without it is
// appended as it is. `raw` is the event as received, `data` its data lines joined (what
// http::SseEvents reads).
void append_without_usage(std::string& out, std::string_view raw, std::string_view data);

}  // namespace tp::api
