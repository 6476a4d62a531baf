#include "http/loop_thread.h"

#include <pthread.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>

namespace tp::http {

LoopThread::LoopThread() : ioc_(BOOST_ASIO_CONCURRENCY_HINT_UNSAFE), inbox_(ioc_) {}

LoopThread::~LoopThread() { stop(); }

void LoopThread::start(const std::string& name, Task<void> task) {
  asio::co_spawn(ioc_.get_executor(), inbox_.run(), asio::detached);
  asio::co_spawn(ioc_.get_executor(), std::move(task), asio::detached);
  thread_ = std::thread([this, name] {
    pthread_setname_np(pthread_self(), name.c_str());
    ioc_.run();
  });
}

void LoopThread::stop(const std::function<void()>& last_words) {
  if (stopped_.exchange(true) || !thread_.joinable()) return;
  inbox_.post([this, last_words] {
    if (last_words) last_words();
    inbox_.close();
    ioc_.stop();
  });
  thread_.join();
}

}  // namespace tp::http
