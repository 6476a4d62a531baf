#pragma once
// Host names are resolved off the request path: once when an endpoint is registered, then
// every refresh interval by a background thread. Connects read the latest address list,
// published by atomic pointer swap. (I/O threads run lock-free event loops that cannot take
// completions from a resolver thread, and getaddrinfo must never block them.)

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <boost/asio/ip/tcp.hpp>

namespace tp::http {

using Addresses = std::vector<boost::asio::ip::tcp::endpoint>;

class ResolvedHost {
 public:
  ResolvedHost(std::string host, std::string port) : host_(std::move(host)), port_(std::move(port)) {}
  const std::string& host() const { return host_; }
  const std::string& port() const { return port_; }
  // The latest addresses; empty when resolution has failed so far. Thread-safe.
  std::shared_ptr<const Addresses> addresses() const { return addresses_.load(); }
  // Moves on each time the addresses change (one atomic load: cheap enough to ask before
  // every reuse of a pooled connection). Thread-safe.
  std::uint64_t generation() const { return generation_.load(std::memory_order_acquire); }
  // Resolves now (blocking) and publishes the result; returns false on failure, keeping the
  // previous addresses.
  bool refresh();
  // Publishes `list` as the host's addresses (when it differs from the current ones).
  void publish(Addresses list);

 private:
  std::string host_;
  std::string port_;
  std::atomic<std::shared_ptr<const Addresses>> addresses_{std::make_shared<const Addresses>()};
  std::atomic<std::uint64_t> generation_{0};
};

class HostResolver {
 public:
  explicit HostResolver(std::chrono::seconds refresh_interval = std::chrono::seconds(30));
  ~HostResolver();
  HostResolver(const HostResolver&) = delete;
  HostResolver& operator=(const HostResolver&) = delete;

  // Resolves `host` once before returning; names (not IP literals) are then refreshed in
  // the background.
  std::shared_ptr<ResolvedHost> add(const std::string& host, const std::string& port);

 private:
  void run();
  std::chrono::seconds interval_;
  std::mutex mu_;
  std::condition_variable wake_;
  bool stop_ = false;
  std::vector<std::shared_ptr<ResolvedHost>> names_;
  std::thread thread_;
};

}  // namespace tp::http
