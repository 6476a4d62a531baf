#pragma once
// The admin API (/admin/v1/*), authorised by TURNPIKE_ADMIN_KEY: accounts, keys, standing.
// One AdminApi per I/O thread. Every change is committed by the store writer before the
// answer goes out; the writer's completion comes back through the thread's Inbox.

#include "api/services.h"
#include "http/inbox.h"
#include "http/server.h"

namespace tp::api {

class AdminApi {
 public:
  AdminApi(const Services& services, http::Inbox& inbox, boost::asio::io_context& ioc)
      : services_(services), inbox_(inbox), ioc_(ioc) {}

  http::Task<void> handle(http::Request& req, http::Responder& res);

 private:
  // Runs `work` on the store's writer thread, in its transaction, and resumes on this
  // thread once that transaction committed (or failed).
  template <typename T>
  http::Task<Result<T>> in_store(std::function<Result<T>(store::Database&)> work);

  http::Task<void> create_account(http::Request& req, http::Responder& res);
  http::Task<void> create_key(std::int64_t account, http::Request& req, http::Responder& res);
  http::Task<void> add_credits(std::int64_t account, http::Request& req, http::Responder& res);
  // Appends the bank's new accounts and transfers; runs inside a writer transaction.
  Status persist_ledger(store::Database& db);

  const Services& services_;
  http::Inbox& inbox_;
  boost::asio::io_context& ioc_;
};

}  // namespace tp::api
