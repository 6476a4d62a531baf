#pragma once
// An event loop on a thread of its own, for background work that speaks HTTP (health
// probes, webhooks): its io_context, the Inbox through which other threads reach it, and the
// thread. The owner spawns its coroutines, then start()s the thread; stop() runs the owner's
// last words on the loop (cancel its timers, raise its flags), stops the loop and joins.
//
// Declare it before anything bound to its io_context, so that it outlives them.

#include <atomic>
#include <functional>
#include <string>
#include <thread>

#include "http/inbox.h"

namespace tp::http {

class LoopThread {
 public:
  LoopThread();
  ~LoopThread();  // stops (without last words) if the owner did not
  LoopThread(const LoopThread&) = delete;
  LoopThread& operator=(const LoopThread&) = delete;

  asio::io_context& ioc() { return ioc_; }
  Inbox& inbox() { return inbox_; }

  // Spawns `task` and the inbox's reader on the loop and runs it on a new thread named
  // `name` (at most 15 characters). Once.
  void start(const std::string& name, Task<void> task);
  // Thread-safe and idempotent: runs `last_words` on the loop thread, then stops the loop
  // and joins it. Work still queued in the inbox is dropped.
  void stop(const std::function<void()>& last_words = {});
  bool stopped() const { return stopped_.load(); }

 private:
  asio::io_context ioc_;
  Inbox inbox_;
  std::atomic<bool> stopped_{false};
  std::thread thread_;
};

}  // namespace tp::http
