#include "api/prober.h"

#include <fmt/format.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>

#include "api/gateway.h"
#include "core/clock.h"
#include "core/log.h"

namespace tp::api {
namespace {

constexpr std::size_t kProbeBodyBytesMax = 1024 * 1024;

}  // namespace

bool ProviderHealth::record(std::size_t provider, bool answered,
                            std::uint32_t failures_to_mark_down, std::int64_t now_ms) {
  probes_.fetch_add(1, std::memory_order_relaxed);
  Provider& p = providers_[provider];
  if (answered) {
    p.failures.store(0, std::memory_order_relaxed);
    return p.down_since_ms.exchange(0, std::memory_order_relaxed) != 0;
  }
  const std::uint32_t failures = p.failures.load(std::memory_order_relaxed) + 1;
  p.failures.store(failures, std::memory_order_relaxed);
  if (failures < failures_to_mark_down || p.down_since_ms.load(std::memory_order_relaxed) != 0) {
    return false;
  }
  p.down_since_ms.store(now_ms, std::memory_order_relaxed);
  return true;
}

void ProviderHealth::carry(std::size_t provider, const ProviderHealth& from,
                           std::size_t from_provider) {
  const Provider& a = from.providers_[from_provider];
  Provider& b = providers_[provider];
  b.down_since_ms.store(a.down_since_ms.load(std::memory_order_relaxed), std::memory_order_relaxed);
  b.failures.store(a.failures.load(std::memory_order_relaxed), std::memory_order_relaxed);
}

Prober::Prober(std::shared_ptr<const GatewayState> state) : state_(std::move(state)) {}

std::unique_ptr<Prober> Prober::start(std::shared_ptr<const GatewayState> state) {
  if (state->config().probe.interval_ms == 0) return nullptr;
  std::unique_ptr<Prober> p(new Prober(std::move(state)));
  p->pool_ = std::make_unique<http::UpstreamPool>(p->loop_.ioc(), p->state_->provider_count());
  for (std::size_t i = 0; i < p->state_->provider_count(); ++i) {
    p->sleeps_.push_back(std::make_unique<http::Timer>(p->loop_.ioc().get_executor()));
  }
  p->loop_.start("tp-probe", p->run());
  return p;
}

Prober::~Prober() { stop(); }

void Prober::stop() {
  loop_.stop([this] {
    stopping_ = true;
    for (auto& sleep : sleeps_) sleep->cancel();
  });
}

http::Task<Status> Prober::probe(std::size_t provider) {
  const http::UpstreamEndpoint& endpoint = state_->endpoint(provider);
  const catalog::Provider& p = state_->catalog().providers()[provider];
  std::string head = fmt::format("GET {}/models HTTP/1.1\r\n", endpoint.url.path);
  head += state_->head_lines(provider);
  if (p.api == catalog::Api::kAnthropic) head += "anthropic-version: 2023-06-01\r\n";
  head += "User-Agent: turnpike-probe\r\n\r\n";
  // Connecting gets what a real request gets, within the probe's own timeout: a provider
  // whose handshake is slow but in time for requests is not marked down.
  const std::uint32_t connect_ms =
      std::min(state_->config().upstream.connect_timeout_ms, state_->config().probe.timeout_ms);
  const http::UpstreamTimeouts timeouts{connect_ms, state_->config().probe.timeout_ms,
                                        state_->config().probe.timeout_ms};
  auto sent = co_await pool_->send(endpoint, head, {}, timeouts);
  if (!sent) co_return sent.status();
  const unsigned status = (*sent)->status();
  (void)co_await (*sent)->read_all(kProbeBodyBytesMax);
  if (status >= 500) {
    co_return Status{ErrorKind::kUpstreamFailed, fmt::format("answered HTTP {}", status)};
  }
  co_return Status::ok();
}

http::Task<void> Prober::run() {
  // Each provider on a schedule of its own: one that hangs delays no other's probes.
  for (std::size_t i = 1; i < state_->provider_count(); ++i) {
    boost::asio::co_spawn(loop_.ioc(), watch(i), boost::asio::detached);
  }
  co_await watch(0);
}

http::Task<void> Prober::watch(std::size_t i) {
  ProviderHealth& health = state_->provider_health();
  const ops::Probe& settings = state_->config().probe;
  const std::string& name = state_->catalog().providers()[i].name;
  while (!stopping_) {
    const Status outcome = co_await probe(i);
    if (stopping_) break;
    const bool answered = outcome.is_ok();
    if (!answered && health.failures(i) == 0) {
      // The first failure of a run; the rest are counted, not logged.
      log::warn("provider probe failed", {{"provider", name}, {"error", outcome.message()}});
    }
    if (health.record(i, answered, settings.failures, SystemClock::instance().unix_millis())) {
      if (answered) {
        log::info("provider up: a health probe answered", {{"provider", name}});
      } else {
        log::warn("provider down: its routes are skipped until a probe answers",
                  {{"provider", name}, {"failed_probes", health.failures(i)}});
      }
    }
    sleeps_[i]->expires_after(std::chrono::milliseconds(settings.interval_ms));
    co_await sleeps_[i]->async_wait(http::use_nothrow);
  }
}

}  // namespace tp::api
