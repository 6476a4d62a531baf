#include "api/notifier.h"

#include <fmt/format.h>

#include "core/clock.h"
#include "core/json_writer.h"
#include "core/log.h"
#include "core/rfc3339.h"
#include "store/notice_store.h"

namespace tp::api {
namespace {

constexpr std::uint32_t kRetryMaxMs = 60'000;
constexpr std::size_t kResponseBytesMax = 64 * 1024;
// How long a stop waits for the attempt in flight. A receiver that took the notice answers
// within this as a rule; one cut off sees the notice again after the restart.
constexpr std::chrono::milliseconds kStopGrace{5000};

}  // namespace

std::string notice_json(const ledger::LowBalanceNotice& n) {
  const std::string account = ledger::customer_name(n.account);
  std::string out;
  json::Writer w(out);
  w.begin_object();
  // The zero threshold fires on reaching 0 (an account with nothing left), the others on
  // going below.
  w.field("text", fmt::format("Turnpike: the balance of {} {} {} USD (now {} USD)", account,
                              n.threshold.is_zero() ? "fell to" : "fell below",
                              n.threshold.to_string(), n.balance.to_string()));
  w.field("event", "low_balance").field("account", account);
  w.field("threshold_usd", n.threshold.to_string()).field("balance_usd", n.balance.to_string());
  w.field("at", format_rfc3339(n.at_ms, true)).end_object();
  return out;
}

Notifier::Notifier(NotifierOptions options, std::shared_ptr<store::Writer> writer)
    : options_(std::move(options)), writer_(std::move(writer)) {}

Result<std::unique_ptr<Notifier>> Notifier::start(NotifierOptions options,
                                                  std::shared_ptr<store::Writer> writer) {
  auto url = http::parse_base_url(options.url);
  if (!url) return Status{ErrorKind::kInvalidRequest,
                          fmt::format("low-balance webhook: {}", url.status().message())};
  std::unique_ptr<Notifier> n(new Notifier(std::move(options), std::move(writer)));
  n->endpoint_ = http::UpstreamEndpoint{"low-balance webhook", std::move(url.value()), 0, nullptr,
                                        nullptr};
  n->endpoint_.addresses = n->resolver_.add(n->endpoint_.url.host, n->endpoint_.url.port);
  if (n->endpoint_.url.tls) {
    auto tls = http::make_tls_client_context(n->options_.ca_file);
    if (!tls) return tls.status();
    n->endpoint_.tls = std::move(tls.value());
  }
  n->pool_ = std::make_unique<http::UpstreamPool>(n->loop_.ioc(), 1);
  n->wake_ = std::make_unique<http::Timer>(n->loop_.ioc().get_executor());
  n->backoff_ = std::make_unique<http::Timer>(n->loop_.ioc().get_executor());
  n->loop_.start("tp-notify", n->run());
  n->started_ = true;
  return n;
}

Notifier::~Notifier() { stop(); }

void Notifier::stop() {
  if (started_ && !loop_.stopped()) {
    // Ends a wait for work or for the next attempt at once; an attempt in flight runs on,
    // and run() returns after it, once its outcome is handed to the writer.
    loop_.inbox().post([this] {
      stopping_ = true;
      wake_->cancel();
      backoff_->cancel();
    });
    (void)ended_future_.wait_for(kStopGrace);
  }
  loop_.stop();
}

bool Notifier::deliver(std::int64_t id, const ledger::LowBalanceNotice& notice) {
  if (loop_.stopped()) return false;
  if (pending_.fetch_add(1) >= kNoticeQueueMax) {
    pending_.fetch_sub(1);
    if (options_.counts) ++options_.counts->dropped;
    return false;
  }
  loop_.inbox().post([this, item = Item{id, notice}] {
    queue_.push_back(item);
    wake_->cancel();
  });
  return true;
}

http::Task<Status> Notifier::post(const std::string& body) {
  const http::Url& url = endpoint_.url;
  const std::string head = fmt::format(
      "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: "
      "{}\r\nUser-Agent: turnpike\r\n\r\n",
      url.path.empty() ? "/" : url.path, url.host_header, body.size());
  // The whole attempt ends within 20 s, answer body included: a receiver that trickles its
  // answer cannot hold the one delivery thread (every other notice waits behind it).
  http::UpstreamTimeouts timeouts{5'000, 10'000, 10'000};
  timeouts.cutoff = std::make_shared<const http::CoarseClock::time_point>(
      http::CoarseClock::now() + std::chrono::seconds(20));
  // Each attempt posts once: a receiver that took the notice and closed without a word
  // would otherwise get it twice per attempt.
  auto sent = co_await pool_->send(endpoint_, head, body, timeouts, /*resend=*/false);
  if (!sent) co_return sent.status();
  http::UpstreamResponse& response = *sent.value();
  const unsigned status = response.status();
  (void)co_await response.read_all(kResponseBytesMax);
  if (status < 200 || status >= 300) {
    co_return Status{ErrorKind::kUpstreamFailed, fmt::format("the webhook answered HTTP {}", status)};
  }
  co_return Status::ok();
}

http::Task<void> Notifier::run() {
  while (!stopping_) {
    if (queue_.empty()) {
      wake_->expires_at(std::chrono::steady_clock::time_point::max());
      co_await wake_->async_wait(http::use_nothrow);
      continue;
    }
    const Item item = queue_.front();
    queue_.pop_front();
    const std::string body = notice_json(item.notice);
    Status outcome;
    int attempts = 0;
    std::uint32_t backoff = std::min(options_.first_retry_ms, kRetryMaxMs);  // every wait
    for (;;) {
      ++attempts;
      outcome = co_await post(body);
      if (outcome || attempts >= options_.attempts_max || stopping_) break;
      backoff_->expires_after(std::chrono::milliseconds(backoff));
      co_await backoff_->async_wait(http::use_nothrow);
      if (stopping_) break;
      backoff = std::min(backoff * 2, kRetryMaxMs);
    }
    pending_.fetch_sub(1);
    if (!outcome && attempts < options_.attempts_max) {
      // Stopped with attempts left: the row keeps no outcome, so that the next start sends
      // the notice again rather than give it up.
      log::info("low-balance notice left for delivery after the restart",
                {{"account", item.notice.account}, {"attempts", attempts}});
      break;
    }
    const std::optional<std::int64_t> delivered =
        outcome ? std::optional<std::int64_t>(SystemClock::instance().unix_millis())
                : std::nullopt;
    if (options_.counts) ++(outcome ? options_.counts->delivered : options_.counts->failed);
    if (outcome) {
      log::info("low-balance notice delivered", {{"account", item.notice.account},
                                                 {"attempts", attempts}});
    } else {
      log::warn("low-balance notice not delivered", {{"account", item.notice.account},
                                                     {"attempts", attempts},
                                                     {"error", outcome.message()}});
    }
    writer_->submit([id = item.id, attempts, delivered,
                     error = outcome ? std::string() : outcome.message()](store::Database& db) {
      return store::finish_notice(db, id, attempts, delivered, error);
    });
  }
  ended_.set_value();
}

}  // namespace tp::api
