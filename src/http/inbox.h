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

 private:
  using Descriptor = asio::posix::basic_stream_descriptor<Executor>;
  int fd_;
  Descriptor wake_;
  std::mutex mu_;
  std::vector<std::function<void()>> queue_;
};

}  // namespace tp::http
