#include "http/resolve.h"

#include <pthread.h>

#include <boost/asio/io_context.hpp>

#include "core/log.h"

namespace tp::http {

bool ResolvedHost::refresh() {
  boost::asio::io_context ioc;
  boost::asio::ip::tcp::resolver resolver(ioc);
  boost::system::error_code ec;
  const auto results = resolver.resolve(host_, port_, ec);
  if (ec || results.empty()) {
    log::warn("cannot resolve upstream host", {{"host", host_}, {"error", ec.message()}});
    return false;
  }
  Addresses list;
  for (const auto& r : results) list.push_back(r.endpoint());
  publish(std::move(list));
  return true;
}

void ResolvedHost::publish(Addresses list) {
  if (*addresses_.load() == list) return;
  addresses_.store(std::make_shared<const Addresses>(std::move(list)));
  generation_.fetch_add(1, std::memory_order_release);
}

HostResolver::HostResolver(std::chrono::seconds refresh_interval) : interval_(refresh_interval) {
  thread_ = std::thread([this] {
    pthread_setname_np(pthread_self(), "tp-resolve");
    run();
  });
}

HostResolver::~HostResolver() {
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  wake_.notify_all();
  thread_.join();
}

std::shared_ptr<ResolvedHost> HostResolver::add(const std::string& host, const std::string& port) {
  auto resolved = std::make_shared<ResolvedHost>(host, port);
  resolved->refresh();
  boost::system::error_code ec;
  boost::asio::ip::make_address(host, ec);
  if (ec) {  // a name, not a literal: keep it fresh
    std::lock_guard lock(mu_);
    names_.push_back(resolved);
  }
  return resolved;
}

void HostResolver::run() {
  std::unique_lock lock(mu_);
  while (!stop_) {
    wake_.wait_for(lock, interval_, [this] { return stop_; });
    if (stop_) break;
    const auto names = names_;
    lock.unlock();
    for (const auto& n : names) n->refresh();
    lock.lock();
  }
}

}  // namespace tp::http
