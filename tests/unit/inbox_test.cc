#include "http/inbox.h"

#include <gtest/gtest.h>

#include <atomic>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <thread>

namespace tp::http {
namespace {

TEST(Inbox, OtherThreadsReachALockFreeLoopInOrder) {
  asio::io_context ioc{BOOST_ASIO_CONCURRENCY_HINT_UNSAFE};
  Inbox inbox(ioc);
  asio::co_spawn(ioc.get_executor(), inbox.run(), asio::detached);
  const std::thread::id loop_thread = std::this_thread::get_id();
  std::vector<int> seen;  // touched only on the loop's thread
  std::atomic<bool> wrong_thread{false};
  std::thread producer([&] {
    for (int i = 0; i < 1000; ++i) {
      inbox.post([&, i] {
        if (std::this_thread::get_id() != loop_thread) wrong_thread = true;
        seen.push_back(i);
        if (i == 999) inbox.close();
      });
    }
  });
  ioc.run();  // returns once the inbox is closed and nothing else is pending
  producer.join();
  EXPECT_FALSE(wrong_thread);
  ASSERT_EQ(seen.size(), 1000u);
  for (int i = 0; i < 1000; ++i) EXPECT_EQ(seen[i], i);
}

}  // namespace
}  // namespace tp::http
