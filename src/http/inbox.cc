#include "http/inbox.h"

#include <sys/eventfd.h>
#include <unistd.h>

#include <cstdint>

#include "core/assert.h"

namespace tp::http {

Inbox::Inbox(asio::io_context& ioc)
    : fd_(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)), wake_(ioc.get_executor()) {
  TP_CHECK(fd_ >= 0);
  wake_.assign(fd_);
}

Inbox::~Inbox() = default;  // wake_ closes the eventfd

void Inbox::post(std::function<void()> fn) {
  bool wake = false;
  {
    std::lock_guard lock(mu_);
    // A queue that already holds work has a wake-up on its way: the loop takes everything
    // queued when it runs, this too.
    wake = queue_.empty();
    queue_.push_back(std::move(fn));
  }
  if (!wake) return;
  const std::uint64_t one = 1;
  // The counter saturating (EAGAIN) still leaves the loop woken: nothing is lost.
  [[maybe_unused]] const ssize_t n = ::write(fd_, &one, sizeof one);
}

Task<void> Inbox::run() {
  std::vector<std::function<void()>> batch;
  std::uint64_t counter = 0;
  for (;;) {
    auto [ec, n] = co_await wake_.async_read_some(asio::buffer(&counter, sizeof counter),
                                                  use_nothrow);
    if (ec == asio::error::would_block || ec == asio::error::try_again) continue;
    if (ec) co_return;  // closed
    {
      std::lock_guard lock(mu_);
      batch.swap(queue_);
    }
    for (auto& fn : batch) fn();
    batch.clear();
  }
}

void Inbox::close() {
  boost::system::error_code ignored;
  wake_.close(ignored);
}

}  // namespace tp::http
