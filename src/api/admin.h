#pragma once
// The admin API (/admin/v1/*), authorised by TURNPIKE_ADMIN_KEY: accounts, keys, standing.
// One AdminApi per I/O thread. Every change is committed by the store writer before the
// answer goes out; the writer's completion comes back through the thread's Inbox.

#include <functional>
#include <string>

#include "api/services.h"
#include "api/store_link.h"
#include "http/inbox.h"
#include "http/server.h"

namespace tp::api {

class AdminApi {
 public:
  // `routes_report` answers GET /admin/v1/routes (the router's per-route statistics).
  AdminApi(const Services& services, http::Inbox& inbox, boost::asio::io_context& ioc,
           std::function<std::string()> routes_report)
      : services_(services),
        link_(*services.writer, inbox, ioc),
        routes_report_(std::move(routes_report)) {}

  http::Task<void> handle(http::Request& req, http::Responder& res);

 private:
  http::Task<void> create_account(http::Request& req, http::Responder& res);
  // GET /accounts?limit=N&after=acct_N: a page of accounts, by id.
  http::Task<void> list_accounts(std::string_view target, http::Responder& res);
  http::Task<void> create_key(std::int64_t account, http::Request& req, http::Responder& res);
  // PATCH /accounts/{id} {"privacy_tier"?, "routing_weights"?}: the account's routing policy.
  http::Task<void> set_policy(std::int64_t account, http::Request& req, http::Responder& res);
  http::Task<void> add_credits(std::int64_t account, http::Request& req, http::Responder& res);
  http::Task<void> refund(std::int64_t account, http::Request& req, http::Responder& res);
  http::Task<void> rotate_key(std::string_view id, http::Request& req, http::Responder& res);
  // GET /ledger/verify: a reconciliation now, on the writer; a failure freezes billing.
  http::Task<void> verify_ledger(http::Responder& res);
  // POST /ledger/unfreeze {"note"}: lifts a freeze after investigation.
  http::Task<void> unfreeze(http::Request& req, http::Responder& res);

  // Runs idempotent_move on the writer and answers with its result (or its error).
  // True when this call moved the money: a success the first time, not a replay of one.
  http::Task<bool> answer_money_call(http::Responder& res, std::string_view idempotency_key,
                                     const std::string& request, std::int64_t account,
                                     const std::function<Result<ledger::TransferId>()>& move);

  const Services& services_;
  StoreLink link_;
  std::function<std::string()> routes_report_;
};

// The admin API's JSON for an account (with its keys when given) and a balance; the CLI
// prints the same.
std::string account_json(const auth::Account& a, const std::vector<auth::ApiKey>* keys,
                         const auth::Directory* directory = nullptr);
// {"data":[keys]}, each as account_json lists it (last 4 characters only).
std::string keys_json(const std::vector<auth::ApiKey>& keys,
                      const auth::Directory* directory = nullptr);
// A key's lifetime, when it has one (expires_in_seconds, --expires-in): at most 100 years.
inline constexpr std::int64_t kKeyLifetimeSecondsMax = 100LL * 365 * 24 * 3600;
std::string balance_json(const ledger::Balance& b);

// What an idempotency key stands for: a money-moving call with these exact values. The
// admin API and the CLI describe a call the same way, so a key means one thing to both.
std::string credit_request(std::int64_t account, std::string_view kind, Money amount,
                           std::optional<std::int64_t> expires_ms);
std::string refund_request(std::int64_t account, Money amount);

// A money-moving call under an idempotency key, inside the caller's store transaction: the
// first time, runs `move` and keeps the answer (a refusal by the books, kPaymentRequired,
// too: a 402 answer with its error body); with the same key and request again, the kept
// answer; with the same key and a different request, kConflict. With `pending` (the
// writer's AnswerBuffer), the answer and the ledger are stored by the batch's commit hook;
// without (a command-line tool), here.
Result<store::StoredAnswer> idempotent_move(store::Database& db, store::AnswerBuffer* pending,
                                            ledger::Bank& bank, std::string_view key,
                                            const std::string& request, std::int64_t account,
                                            const std::function<Result<ledger::TransferId>()>& move);

}  // namespace tp::api
