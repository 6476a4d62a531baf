#pragma once
// How other threads reach an I/O thread. The I/O event loops run without locks, so no other
// thread may post to them; instead each has an Inbox: post() queues a function under a
// mutex and wakes the loop through an eventfd, which the loop reads like any socket and
// then runs what was queued, on its own thread, in order.

#include <functional>
#include <mutex>
#include <vector>

#include <boost/asio/posix/stream_descriptor.hpp>

#include "http/asio.h"

namespace tp::http {

class Inbox {
 public:
  explicit Inbox(asio::io_context& ioc);
  ~Inbox();
  Inbox(const Inbox&) = delete;
  Inbox& operator=(const Inbox&) = delete;

  // Thread-safe. `fn` runs later on the inbox's thread.
  void post(std::function<void()> fn);
  // Runs on the inbox's thread until close(); spawn it once.
  Task<void> run();
  // From the inbox's thread: stop run(). Functions still queued are dropped.
  void close();

  // The inbox's thread's count of answers it waits for from other threads (a store
  // commit): expect() when asking, arrived() when the answer has run. While any is due the
  // thread's event loop keeps polling rather than sleeping. On the inbox's thread only.
  void expect() { ++expected_; }
  void arrived() { --expected_; }
  std::size_t expected() const { return expected_; }

 private:
  using Descriptor = asio::posix::basic_stream_descriptor<Executor>;
  int fd_;
  Descriptor wake_;
  std::mutex mu_;
  std::vector<std::function<void()>> queue_;
  std::size_t expected_ = 0;
};

}  // namespace tp::http
