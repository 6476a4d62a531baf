#pragma once
// Delivers low-balance notices to a Slack-compatible webhook: a JSON POST with a "text"
// line for people and the same facts as fields for machines. Deliveries are queued
// (bounded), tried in order, and retried with doubling backoff; each notice's outcome is
// written back to its row through the store writer. Runs its own thread and event loop.

#include <atomic>
#include <cstdint>
#include <deque>
#include <future>
#include <memory>
#include <string>

#include "api/notice_counts.h"
#include "http/loop_thread.h"
#include "http/upstream.h"
#include "ledger/bank.h"
#include "store/writer.h"

namespace tp::api {

inline constexpr std::size_t kNoticeQueueMax = 1000;

struct NotifierOptions {
  std::string url;                    // http or https; must not be empty
  std::string ca_file;                // extra trust anchor for https; empty: system store
  std::uint32_t first_retry_ms = 1000;  // doubles per attempt, capped at a minute
  int attempts_max = 5;
  std::shared_ptr<NoticeCounts> counts;  // may be null
};

// The webhook body for `notice`.
std::string notice_json(const ledger::LowBalanceNotice& notice);

class Notifier {
 public:
  static Result<std::unique_ptr<Notifier>> start(NotifierOptions options,
                                                 std::shared_ptr<store::Writer> writer);
  // Stops once the delivery attempt in progress, if any, has ended and its outcome is handed
  // to the writer (which must still run), waiting 5 s at most: an attempt still running
  // then is cut. Queued notices, one between two attempts and one whose attempt was cut
  // stay undelivered, their rows without an outcome, and the next start sends them again.
  // Idempotent.
  void stop();
  ~Notifier();

  // Thread-safe. False when the queue is full: the notice stays recorded as undelivered.
  bool deliver(std::int64_t id, const ledger::LowBalanceNotice& notice);

 private:
  struct Item {
    std::int64_t id;
    ledger::LowBalanceNotice notice;
  };
  Notifier(NotifierOptions options, std::shared_ptr<store::Writer> writer);
  http::Task<void> run();
  // One POST; ok on any 2xx.
  http::Task<Status> post(const std::string& body);

  NotifierOptions options_;
  std::shared_ptr<store::Writer> writer_;
  http::LoopThread loop_;
  http::HostResolver resolver_;
  http::UpstreamEndpoint endpoint_;
  std::unique_ptr<http::UpstreamPool> pool_;
  std::unique_ptr<http::Timer> wake_;     // waits for work; cancelled when some arrives
  std::unique_ptr<http::Timer> backoff_;  // waits between attempts
  std::deque<Item> queue_;             // touched on the notifier thread only
  std::atomic<std::size_t> pending_{0};
  bool stopping_ = false;  // on the notifier thread
  bool started_ = false;   // the loop runs (start() got that far)
  std::promise<void> ended_;  // run() returned: nothing is in flight any more
  std::future<void> ended_future_ = ended_.get_future();
};

}  // namespace tp::api
