#include "api/admin.h"

#include <fmt/format.h>
#include <openssl/crypto.h>
#include <simdjson.h>

#include <charconv>
#include <chrono>
#include <ctime>
#include <optional>

#include "api/errors.h"
#include "core/clock.h"
#include "core/json_writer.h"
#include "core/log.h"

namespace tp::api {
namespace {

using http::Responder;
using http::Task;

constexpr std::string_view kJson = "application/json";
constexpr std::size_t kNameBytesMax = 200;
constexpr std::size_t kModelsMax = 100;

std::string rfc3339(std::int64_t ms) {
  const std::time_t secs = static_cast<std::time_t>(ms / 1000);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  return fmt::format("{:04d}-{:02d}-{:02d}T{:02d}:{:02d}:{:02d}Z", tm.tm_year + 1900,
                     tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
}

// "acct_12" (or "12") → 12.
std::optional<std::int64_t> parse_id(std::string_view text, std::string_view prefix) {
  if (text.starts_with(prefix)) text.remove_prefix(prefix.size());
  std::int64_t id = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), id);
  if (ec != std::errc{} || end != text.data() + text.size() || id <= 0) return std::nullopt;
  return id;
}

void write_account(json::Writer& w, const auth::Account& a) {
  w.field("id", fmt::format("acct_{}", a.id)).field("name", a.name).field("kind", a.kind);
  w.field("plan", a.plan).field("created_at", rfc3339(a.created_ms));
  w.field("standing", a.suspended ? "suspended" : "active");
}

std::string account_json(const auth::Account& a, const std::vector<auth::ApiKey>* keys) {
  std::string out;
  json::Writer w(out);
  w.begin_object();
  write_account(w, a);
  if (keys != nullptr) {
    w.key("keys").begin_array();
    for (const auth::ApiKey& k : *keys) {
      w.begin_object().field("id", fmt::format("key_{}", k.id)).field("name", k.name);
      w.field("last4", k.last4).key("models").begin_array();
      for (const auto& m : k.models) w.value(m);
      w.end_array().field("created_at", rfc3339(k.created_ms));
      w.key("expires_at");
      if (k.expires_ms) w.value(rfc3339(*k.expires_ms)); else w.null();
      w.field("revoked", k.revoked_ms.has_value()).end_object();
    }
    w.end_array();
  }
  w.end_object();
  return out;
}

Task<void> send_error(Responder& res, unsigned status, std::string_view message) {
  co_await res.send(status, kJson, error_body(Surface::kOpenAI, status, message));
}

std::int64_t now_ms() { return SystemClock::instance().unix_millis(); }

}  // namespace

template <typename T>
Task<Result<T>> AdminApi::in_store(std::function<Result<T>(store::Database&)> work) {
  http::Timer wake(ioc_.get_executor(), std::chrono::steady_clock::time_point::max());
  std::optional<Result<T>> result;
  Status committed;
  services_.writer->submit(
      [&](store::Database& db) {
        result.emplace(work(db));
        return result->is_ok() ? Status::ok() : result->status();
      },
      [&](const Status& s) {
        // On the writer thread: hand the outcome back to this I/O thread.
        inbox_.post([&, s] {
          committed = s;
          wake.cancel();
        });
      });
  co_await wake.async_wait(http::use_nothrow);
  if (!committed) co_return committed;
  co_return std::move(*result);
}

Task<void> AdminApi::handle(http::Request& req, Responder& res) {
  const std::string_view key = req["authorization"];
  if (services_.admin_key.empty()) {
    co_await send_error(res, 403, "the admin API is disabled: set TURNPIKE_ADMIN_KEY");
    co_return;
  }
  const std::string expected = "Bearer " + services_.admin_key;
  if (key.size() != expected.size() ||
      CRYPTO_memcmp(key.data(), expected.data(), expected.size()) != 0) {
    co_await send_error(res, 401, "missing or wrong admin key");
    co_return;
  }

  const std::string_view target = req.target();
  std::string_view path = target.substr(0, target.find('?'));
  path.remove_prefix(std::string_view("/admin/v1").size());
  const std::string_view method = req.method();

  if (path == "/accounts" && method == "POST") {
    co_await create_account(req, res);
    co_return;
  }
  if (path.starts_with("/accounts/")) {
    std::string_view rest = path.substr(10);
    const std::string_view id_text = rest.substr(0, rest.find('/'));
    const std::string_view action =
        rest.find('/') == std::string_view::npos ? "" : rest.substr(rest.find('/'));
    const auto id = parse_id(id_text, "acct_");
    if (!id || !services_.directory->account(*id)) {
      co_await send_error(res, 404, fmt::format("no account '{}'", id_text.substr(0, 40)));
      co_return;
    }
    if (action.empty() && method == "GET") {
      const auto keys = services_.directory->keys_of(*id);
      co_await res.send(200, kJson, account_json(*services_.directory->account(*id), &keys));
      co_return;
    }
    if (action == "/keys" && method == "POST") {
      co_await create_key(*id, req, res);
      co_return;
    }
    if ((action == "/suspend" || action == "/unsuspend") && method == "POST") {
      const bool suspend = action == "/suspend";
      auto account = co_await in_store<auth::Account>(
          [&](store::Database& db) { return services_.directory->set_suspended(db, *id, suspend); });
      if (!account) {
        co_await send_error(res, http_status(account.status().kind()), account.status().message());
        co_return;
      }
      log::info(suspend ? "account suspended" : "account unsuspended", {{"account", *id}});
      co_await res.send(200, kJson, account_json(*account, nullptr));
      co_return;
    }
  }
  if (path.starts_with("/keys/") && method == "DELETE") {
    const auto id = parse_id(path.substr(6), "key_");
    if (!id) {
      co_await send_error(res, 404, "no such key");
      co_return;
    }
    auto revoked = co_await in_store<bool>([&](store::Database& db) -> Result<bool> {
      if (Status s = services_.directory->revoke_key(db, *id, now_ms()); !s) return s;
      return true;
    });
    if (!revoked) {
      co_await send_error(res, http_status(revoked.status().kind()), revoked.status().message());
      co_return;
    }
    co_await res.send(204, "", "");
    co_return;
  }
  co_await send_error(res, 404, fmt::format("unknown admin call: {} {}", method,
                                            target.substr(0, 200)));
}

Task<void> AdminApi::create_account(http::Request& req, Responder& res) {
  simdjson::dom::parser parser;
  simdjson::dom::element doc;
  std::string_view name;
  std::string_view kind = "customer";
  std::string_view plan;
  if (parser.parse(req.body()).get(doc) || !doc.is_object()) {
    co_await send_error(res, 400, "body must be a JSON object");
    co_return;
  }
  if (doc["name"].get_string().get(name) || name.empty() || name.size() > kNameBytesMax) {
    co_await send_error(res, 400, "'name' is required: a string of 1 to 200 bytes");
    co_return;
  }
  if (doc["kind"].error() != simdjson::NO_SUCH_FIELD &&
      (doc["kind"].get_string().get(kind) || (kind != "customer" && kind != "operator"))) {
    co_await send_error(res, 400, "'kind' must be customer or operator");
    co_return;
  }
  if (doc["plan"].error() != simdjson::NO_SUCH_FIELD && doc["plan"].get_string().get(plan)) {
    co_await send_error(res, 400, "'plan' must be a string");
    co_return;
  }
  auto account = co_await in_store<auth::Account>([&](store::Database& db) {
    return services_.directory->create_account(db, std::string(name), std::string(kind),
                                               std::string(plan), now_ms());
  });
  if (!account) {
    co_await send_error(res, http_status(account.status().kind()), account.status().message());
    co_return;
  }
  log::info("account created", {{"account", account->id}, {"kind", account->kind}});
  co_await res.send(201, kJson, account_json(*account, nullptr));
}

Task<void> AdminApi::create_key(std::int64_t account, http::Request& req, Responder& res) {
  std::string name;
  std::vector<std::string> models;
  std::optional<std::int64_t> expires_ms;
  if (!req.body().empty()) {
    simdjson::dom::parser parser;
    simdjson::dom::element doc;
    if (parser.parse(req.body()).get(doc) || !doc.is_object()) {
      co_await send_error(res, 400, "body must be a JSON object");
      co_return;
    }
    std::string_view n;
    if (doc["name"].error() != simdjson::NO_SUCH_FIELD &&
        (doc["name"].get_string().get(n) || n.size() > kNameBytesMax)) {
      co_await send_error(res, 400, "'name' must be a string of at most 200 bytes");
      co_return;
    }
    name = std::string(n);
    simdjson::dom::array list;
    if (doc["models"].error() != simdjson::NO_SUCH_FIELD) {
      bool ok = !doc["models"].get_array().get(list) && list.size() <= kModelsMax;
      for (auto m : list) {
        std::string_view model;
        ok = ok && !m.get_string().get(model) && !model.empty();
        if (ok) models.emplace_back(model);
      }
      if (!ok) {
        co_await send_error(res, 400, "'models' must be a list of model names (at most 100)");
        co_return;
      }
    }
    std::int64_t seconds = 0;
    if (doc["expires_in_seconds"].error() != simdjson::NO_SUCH_FIELD) {
      if (doc["expires_in_seconds"].get_int64().get(seconds) || seconds <= 0) {
        co_await send_error(res, 400, "'expires_in_seconds' must be a positive integer");
        co_return;
      }
      expires_ms = now_ms() + seconds * 1000;
    }
  }
  std::string secret;
  auto key = co_await in_store<auth::ApiKey>([&](store::Database& db) {
    return services_.directory->create_key(db, *services_.hasher, account, name, models,
                                           expires_ms, now_ms(), &secret);
  });
  if (!key) {
    co_await send_error(res, http_status(key.status().kind()), key.status().message());
    co_return;
  }
  log::info("key created", {{"account", account}, {"key", key->id}, {"last4", key->last4}});
  std::string out;
  json::Writer w(out);
  w.begin_object().field("id", fmt::format("key_{}", key->id)).field("key", secret);
  w.field("last4", key->last4).field("account", fmt::format("acct_{}", account)).end_object();
  co_await res.send(201, kJson, out);
}

}  // namespace tp::api
