#include "api/admin.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <simdjson.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <charconv>
#include <chrono>
#include <ctime>
#include <optional>
#include <span>

#include "api/errors.h"
#include "api/request_body.h"
#include "core/clock.h"
#include "core/ids.h"
#include "core/json_writer.h"
#include "core/limits.h"
#include "core/log.h"
#include "core/rfc3339.h"
#include "http/query.h"
#include "store/ledger_store.h"

namespace tp::api {
namespace {

using http::Responder;
using http::Task;

constexpr std::string_view kJson = "application/json";
// GET /accounts: accounts per page, unless `limit` says otherwise, and at most.
constexpr std::size_t kAccountsPageDefault = 100;
constexpr std::size_t kAccountsPageMax = 1000;

void write_policy(json::Writer& w, const auth::RoutingPolicy& p) {
  w.field("privacy_tier", catalog::privacy_tier_name(p.privacy_tier)).key("routing_weights");
  if (p.weights) {
    w.begin_object().field("quality", p.weights->quality).field("cost", p.weights->cost);
    w.field("latency", p.weights->latency).end_object();
  } else {
    w.null();
  }
}

void write_account(json::Writer& w, const auth::Account& a) {
  w.field("id", fmt::format("acct_{}", a.id)).field("name", a.name).field("kind", a.kind);
  w.field("plan", a.plan).field("created_at", format_rfc3339(a.created_ms));
  w.field("standing", a.suspended ? "suspended" : "active");
  write_policy(w, a.policy);
  w.key("models").begin_array();
  for (const auto& m : a.models) w.value(m);
  w.end_array();
}

// A model allowlist from `doc[key]`: a list of at most kModelsMax non-empty names, no comma
// (the store keeps them comma-separated); null or [] allows every model. Absent: unchanged.
Status read_models(simdjson::dom::element doc, std::vector<std::string>& models) {
  const auto field = doc["models"];
  if (field.error() == simdjson::NO_SUCH_FIELD) return Status::ok();
  std::vector<std::string> out;
  if (!field.is_null()) {
    simdjson::dom::array list;
    // Walked only when it is an array: a default simdjson array is no empty list.
    bool ok = !field.get_array().get(list) && list.size() <= auth::kModelsMax;
    if (ok) {
      for (auto m : list) {
        std::string_view model;
        ok = ok && !m.get_string().get(model);
        if (ok) out.emplace_back(model);
      }
    }
    if (!ok) return {ErrorKind::kInvalidRequest, std::string(auth::kModelsRule)};
    if (Status s = auth::check_models(out); !s) return s;
  }
  models = std::move(out);
  return Status::ok();
}

// Reads `privacy_tier` and `routing_weights` (an object, or null to inherit) from `doc`
// over `policy`; fields absent leave it as it is. The error says what is wrong.
Status read_policy(simdjson::dom::element doc, auth::RoutingPolicy& policy) {
  if (doc["privacy_tier"].error() != simdjson::NO_SUCH_FIELD) {
    std::string_view text;
    std::optional<catalog::PrivacyTier> tier;
    if (!doc["privacy_tier"].get_string().get(text)) tier = catalog::parse_privacy_tier(text);
    if (!tier) {
      return {ErrorKind::kInvalidRequest,
              "'privacy_tier' must be confidential, cloud or community: the loosest tier its "
              "requests may use"};
    }
    policy.privacy_tier = *tier;
  }
  const auto weights = doc["routing_weights"];
  if (weights.error() == simdjson::NO_SUCH_FIELD) return Status::ok();
  if (weights.is_null()) {
    policy.weights.reset();
    return Status::ok();
  }
  const Status bad{ErrorKind::kInvalidRequest,
                   "'routing_weights' must be null or {\"quality\",\"cost\",\"latency\"}, each "
                   "a number from 0 to 1, at least one above 0"};
  simdjson::dom::object object;
  if (weights.get_object().get(object) || object.size() != 3) return bad;
  router::Weights w;
  for (auto [key, field] : {std::pair{"quality", &w.quality}, std::pair{"cost", &w.cost},
                            std::pair{"latency", &w.latency}}) {
    if (object[key].get_double().get(*field) || !(*field >= 0 && *field <= 1)) return bad;
  }
  if (w.quality + w.cost + w.latency <= 0) return bad;
  policy.weights = w;
  return Status::ok();
}

// An account's routing policy and model allowlist, as POST and PATCH take them.
Status read_account_policy(simdjson::dom::element doc, auth::RoutingPolicy& policy,
                           std::vector<std::string>& models) {
  if (Status s = read_policy(doc, policy); !s) return s;
  return read_models(doc, models);
}

Task<void> send_error(Responder& res, unsigned status, std::string_view message) {
  co_await res.send(status, kJson, error_body(Surface::kOpenAI, status, message));
}

std::int64_t now_ms() { return SystemClock::instance().unix_millis(); }

// Whether the raw text of a member's key (escapes and all) names `key`.
bool key_names(std::string_view raw, std::string_view key) {
  if (raw.find('\\') == std::string_view::npos) return raw == key;
  simdjson::dom::parser parser;
  std::string_view unescaped;
  std::string text(1, '"');
  text.append(raw).push_back('"');
  const simdjson::padded_string quoted(text);
  return !parser.parse(quoted).get_string().get(unescaped) && unescaped == key;
}

// A top-level amount given as a JSON string (its value, escapes undone) or number (the
// exact text the client sent: a parsed double would not be exact). `doc` is `body` parsed,
// every member given once.
std::optional<Money> exact_amount(std::string_view body, simdjson::dom::element doc,
                                  std::string_view key) {
  simdjson::dom::element value;
  if (doc[key].get(value)) return std::nullopt;
  if (value.is_string()) {
    auto money = Money::parse(value.get_string().value_unsafe());
    return money ? std::optional<Money>(*money) : std::nullopt;
  }
  if (!value.is_number()) return std::nullopt;
  for (const JsonMember& m : top_level_members(body)) {
    if (!key_names(m.key, key)) continue;
    auto money = Money::parse_json_number(m.value);
    return money ? std::optional<Money>(*money) : std::nullopt;
  }
  return std::nullopt;
}

// "" when every member of the object `doc` is one of `known`; else the client-facing error
// naming the first other one. A mistyped field is refused, never ignored: ignored, a
// misspelt "privacy_tier" would leave an account at the loosest tier.
// A field given twice is refused too: parsers disagree on which one counts, and a money call
// must not move money on a body another reader would take for a different one.
std::string unknown_member(simdjson::dom::element doc, std::span<const std::string_view> known) {
  simdjson::dom::object object;
  if (doc.get_object().get(object)) return "";
  for (auto it = object.begin(); it != object.end(); ++it) {
    const std::string_view key = it.key();
    if (std::find(known.begin(), known.end(), key) == known.end()) {
      if (known.empty()) return fmt::format("unknown field '{}'", json::utf8_prefix(key, 64));
      return fmt::format("unknown field '{}'; expected {}", json::utf8_prefix(key, 64),
                         fmt::join(known, ", "));
    }
    for (auto before = object.begin(); before != it; ++before) {
      if (before.key() == key) return fmt::format("field '{}' is given more than once", key);
    }
  }
  return "";
}

// The client-facing error for a body that is not a JSON object, with simdjson's reason when
// it does not parse (never a part of the body).
std::string not_an_object(simdjson::error_code error) {
  return error ? fmt::format("body must be a JSON object: {}", simdjson::error_message(error))
               : std::string("body must be a JSON object");
}

// Parses `body` into `doc`: a JSON object whose members are among `known`, each given once.
// Returns the client-facing error, or "" when it is one.
std::string read_object(simdjson::dom::parser& parser, std::string_view body,
                        std::span<const std::string_view> known, simdjson::dom::element& doc) {
  if (const auto error = parser.parse(body.data(), body.size()).get(doc); error || !doc.is_object()) {
    return not_an_object(error);
  }
  return unknown_member(doc, known);
}

// The fields every money-moving call has: a positive exact `amount_usd` and an
// `idempotency_key`, among the call's `known` fields, each given once. Returns the
// client-facing error, or "" when the body is valid.
std::string read_money_call(simdjson::dom::parser& parser, std::string_view body,
                            std::span<const std::string_view> known, simdjson::dom::element& doc,
                            Money& amount, std::string_view& idempotency_key) {
  if (std::string error = read_object(parser, body, known, doc); !error.empty()) return error;
  const std::optional<Money> parsed = exact_amount(body, doc, "amount_usd");
  if (!parsed || *parsed <= Money()) {
    return "'amount_usd' must be a positive USD amount with at most 9 decimals, as a string or "
           "number";
  }
  if (*parsed > Money::usd(limits::kMoneyCallUsdMax)) {
    return fmt::format("'amount_usd' may be at most {} USD per call", limits::kMoneyCallUsdMax);
  }
  amount = *parsed;
  if (doc["idempotency_key"].get_string().get(idempotency_key) || idempotency_key.empty() ||
      idempotency_key.size() > 200) {
    return "'idempotency_key' is required: a string of 1 to 200 bytes";
  }
  return "";
}

// A key's `rpm` and `tpm` (positive integers) and `budget_usd` (an exact positive amount),
// each absent or null for none, into `out`. Returns the client-facing error, or "".
std::string read_key_limits(std::string_view body, simdjson::dom::element doc,
                            auth::KeyLimits& out) {
  for (const std::string_view rate : {"rpm", "tpm"}) {
    if (doc[rate].error() == simdjson::NO_SUCH_FIELD || doc[rate].is_null()) continue;
    std::int64_t n = 0;
    if (doc[rate].get_int64().get(n) || n <= 0 || n > limits::kKeyRateMax) {
      return fmt::format("'{}' must be a positive integer of at most {}, or null for no limit",
                         rate, limits::kKeyRateMax);
    }
    (rate == "rpm" ? out.rpm : out.tpm) = n;
  }
  if (doc["budget_usd"].error() != simdjson::NO_SUCH_FIELD && !doc["budget_usd"].is_null()) {
    const std::optional<Money> budget = exact_amount(body, doc, "budget_usd");
    if (!budget || *budget <= Money() || *budget > Money::usd(limits::kMoneyCallUsdMax)) {
      return fmt::format("'budget_usd' must be a positive USD amount of at most {} with at most "
                         "9 decimals, as a string or number, or null for no budget",
                         limits::kMoneyCallUsdMax);
    }
    out.budget = *budget;
  }
  return "";
}

// A key as listed: by its last 4 characters, never the key. With `directory`, a budget's
// spending too.
void write_key(json::Writer& w, const auth::ApiKey& k, const auth::Directory* directory) {
  w.begin_object().field("id", fmt::format("key_{}", k.id)).field("name", k.name);
  w.field("last4", k.last4).key("models").begin_array();
  for (const auto& m : k.models) w.value(m);
  w.end_array().field("created_at", format_rfc3339(k.created_ms));
  w.key("expires_at");
  if (k.expires_ms) w.value(format_rfc3339(*k.expires_ms, /*millis=*/true)); else w.null();
  w.field("revoked", k.revoked_ms.has_value()).key("replaced_by");
  if (k.replaced_by) w.value(fmt::format("key_{}", *k.replaced_by)); else w.null();
  write_policy(w, k.policy);
  w.key("tags").begin_array();
  for (const auto& t : k.tags) w.value(t);
  w.end_array();
  const auth::KeyLimits& l = k.limits;
  w.key("rpm");
  if (l.rpm) w.value(*l.rpm); else w.null();
  w.key("tpm");
  if (l.tpm) w.value(*l.tpm); else w.null();
  w.key("budget_usd");
  if (l.budget) w.value(l.budget->to_string()); else w.null();
  if (l.budget && directory != nullptr) {
    if (const std::optional<Money> spent = directory->budget_spent(k.id)) {
      w.field("budget_spent_usd", spent->to_string());
    }
  }
  w.end_object();
}

}  // namespace

std::string account_json(const auth::Account& a, const std::vector<auth::ApiKey>* keys,
                         const auth::Directory* directory) {
  std::string out;
  json::Writer w(out);
  w.begin_object();
  write_account(w, a);
  if (keys != nullptr) {
    w.key("keys").begin_array();
    for (const auth::ApiKey& k : *keys) write_key(w, k, directory);
    w.end_array();
  }
  w.end_object();
  return out;
}

std::string keys_json(const std::vector<auth::ApiKey>& keys, const auth::Directory* directory) {
  std::string out;
  json::Writer w(out);
  w.begin_object().key("data").begin_array();
  for (const auth::ApiKey& k : keys) write_key(w, k, directory);
  w.end_array().end_object();
  return out;
}

std::string balance_json(const ledger::Balance& b) {
  std::string out;
  json::Writer w(out);
  w.begin_object().field("paid_usd", b.paid.to_string()).field("trial_usd", b.trial.to_string());
  w.field("promo_usd", b.promo.to_string()).field("held_usd", b.held.to_string());
  w.field("available_usd", b.available.to_string()).end_object();
  return out;
}

std::string credit_request(std::int64_t account, std::string_view kind, Money amount,
                           std::optional<std::int64_t> expires_ms) {
  return fmt::format("credits acct_{} {} {} {}", account, kind, amount.nanos(),
                     expires_ms.value_or(0));
}

std::string refund_request(std::int64_t account, Money amount) {
  return fmt::format("refund acct_{} {}", account, amount.nanos());
}

// What a client is told when the call took effect in memory but its commit failed: the
// change is stored with the next commit, so a retry must not make it again.
std::string failed_commit_message(const Status& commit, bool keyed) {
  return fmt::format("the store failed to commit this call ({}); it has taken effect and is "
                     "stored with the next commit: {}",
                     commit.message(),
                     keyed ? "retry with the same idempotency_key to get its answer, never with "
                             "a new one"
                           : "look before retrying, since a retry without an "
                             "idempotency_key makes it again");
}

Result<store::StoredAnswer> idempotent_move(store::Database& db, store::AnswerBuffer* pending,
                                            ledger::Bank& bank, std::string_view key,
                                            const std::string& request, std::int64_t account,
                                            const std::function<Result<ledger::TransferId>()>& move) {
  auto seen = store::find_answer(db, pending, key, request);
  if (!seen) return seen.status();
  if (*seen) return std::move(**seen);
  auto transfer = move();
  if (!transfer) {
    if (transfer.status().kind() != ErrorKind::kPaymentRequired) return transfer.status();
    // A refusal that follows from the books (too little to refund) is the key's first
    // result too: a retry under it after the books changed is refused again, never moves
    // money the first call did not.
    const unsigned status = http_status(transfer.status().kind());
    store::StoredAnswer refused{status,
                                error_body(Surface::kOpenAI, status, transfer.status().message())};
    if (Status s = store::store_answer(db, pending, key, request, refused); !s) return s;
    return refused;
  }
  auto balance = bank.balance(account, now_ms());
  if (!balance) return balance.status();
  store::StoredAnswer answer{200, {}};
  json::Writer w(answer.body);
  w.begin_object().field("transfer_id", static_cast<std::int64_t>(*transfer));
  w.key("balance").raw(balance_json(*balance)).end_object();
  // The money has moved: from here the answer stands, whatever the store does.
  if (Status s = store::store_answer(db, pending, key, request, answer); !s) return s;
  if (pending == nullptr) {
    if (Status s = store::persist_bank(db, bank); !s) return s;
  }
  return answer;
}

Task<void> AdminApi::rotate_key(std::string_view id_text, http::Request& req, Responder& res) {
  constexpr std::int64_t kGraceSecondsMax = 30LL * 24 * 3600;
  const auto id = parse_numbered_id(id_text, "key_");
  simdjson::dom::parser parser;
  simdjson::dom::element doc;
  std::int64_t grace_seconds = -1;
  if (!id) {
    co_await send_error(res, 404, "no such key");
    co_return;
  }
  static constexpr std::array<std::string_view, 1> kRotateFields = {"grace_seconds"};
  if (const std::string error = read_object(parser, req.body(), kRotateFields, doc);
      !error.empty()) {
    co_await send_error(res, 400, error);
    co_return;
  }
  if (doc["grace_seconds"].get_int64().get(grace_seconds) || grace_seconds < 0 ||
      grace_seconds > kGraceSecondsMax) {
    co_await send_error(res, 400,
                        "'grace_seconds' is required: an integer from 0 to 2592000 (30 days)");
    co_return;
  }
  std::string secret;
  std::int64_t old_expires_ms = 0;
  auto work = [&](store::Database& db) {
    return services_.directory->rotate_key(db, *services_.hasher, *id, grace_seconds * 1000,
                                           now_ms(), &secret, &old_expires_ms);
  };
  auto key = co_await link_.call<auth::ApiKey>(work);
  if (!key && !secret.empty()) {
    // Rotated in memory, stored with the next commit: the old key's grace runs, and the
    // new key works, but its secret cannot be shown (a failed call must not hand one out).
    co_await send_error(res, 503,
                        fmt::format("the store failed to commit this call ({}); the rotation has "
                                    "taken effect and is stored with the next commit: key_{} "
                                    "stops at its grace deadline, and its successor's secret "
                                    "is lost; rotate the successor (see the account's keys) "
                                    "to get a key",
                                    key.status().message(), *id));
    co_return;
  }
  if (!key) {
    co_await send_error(res, http_status(key.status().kind()), key.status().message());
    co_return;
  }
  log::info("key rotated", {{"old_key", *id}, {"key", key->id}, {"last4", key->last4}});
  std::string out;
  json::Writer w(out);
  w.begin_object().field("id", fmt::format("key_{}", key->id)).field("key", secret);
  // To the millisecond: the old key works until then, not until the second before.
  w.field("last4", key->last4)
      .field("old_key_expires_at", format_rfc3339(old_expires_ms, /*millis=*/true))
      .end_object();
  co_await res.send(200, kJson, out);
}

Task<void> AdminApi::refund(std::int64_t account, http::Request& req, Responder& res) {
  simdjson::dom::parser parser;
  simdjson::dom::element doc;
  Money amount;
  std::string_view idempotency_key;
  static constexpr std::array<std::string_view, 2> kFields = {"amount_usd", "idempotency_key"};
  if (const std::string error = read_money_call(parser, req.body(), kFields, doc, amount,
                                                idempotency_key);
      !error.empty()) {
    co_await send_error(res, 400, error);
    co_return;
  }
  // Only unused paid credit can go back: asking for more is a 402 naming what is there.
  const std::string request = refund_request(account, amount);
  const std::function<Result<ledger::TransferId>()> give_back = [&] {
    return services_.bank->refund(account, amount, now_ms());
  };
  if (co_await answer_money_call(res, idempotency_key, request, account, give_back)) {
    log::info("refund", {{"account", account}});
  }
}

Task<bool> AdminApi::answer_money_call(Responder& res, std::string_view idempotency_key,
                                       const std::string& request, std::int64_t account,
                                       const std::function<Result<ledger::TransferId>()>& move) {
  // Whether the call got as far as an answer: a failure after that is the commit's.
  auto answered = std::make_shared<bool>(false);
  // Whether this call moved the money (a replay returns the first call's answer only).
  auto moved = std::make_shared<bool>(false);
  auto work = [&, answered, moved](store::Database& db) {
    const std::function<Result<ledger::TransferId>()> counted = [&] {
      auto transfer = move();
      *moved = transfer.is_ok();
      return transfer;
    };
    auto answer = idempotent_move(db, services_.answers.get(), *services_.bank, idempotency_key,
                                  request, account, counted);
    *answered = answer.is_ok() && answer->status == 200;
    return answer;
  };
  auto answer = co_await link_.call<store::StoredAnswer>(work);
  if (!answer && *answered) {
    // The money moved in memory and goes to the store with the next commit, answer and
    // all; only the same key can tell the client so without moving it twice.
    co_await send_error(res, 503, failed_commit_message(answer.status(), true));
    co_return false;
  }
  if (!answer) {
    co_await send_error(res, http_status(answer.status().kind()), answer.status().message());
    co_return false;
  }
  co_await res.send(answer->status, kJson, answer->body);
  co_return *moved && answer->status == 200;  // a refusal (kept under its key) moved nothing
}

Task<void> AdminApi::add_credits(std::int64_t account, http::Request& req, Responder& res) {
  simdjson::dom::parser parser;
  simdjson::dom::element doc;
  Money amount;
  std::string_view idempotency_key;
  static constexpr std::array<std::string_view, 4> kFields = {"amount_usd", "kind", "expires_at",
                                                              "idempotency_key"};
  if (const std::string error = read_money_call(parser, req.body(), kFields, doc, amount,
                                                idempotency_key);
      !error.empty()) {
    co_await send_error(res, 400, error);
    co_return;
  }
  std::string_view kind_text;
  ledger::CreditKind kind;
  if (doc["kind"].get_string().get(kind_text)) kind_text = "";
  if (kind_text == "paid") kind = ledger::CreditKind::kPaid;
  else if (kind_text == "trial") kind = ledger::CreditKind::kTrial;
  else if (kind_text == "promo") kind = ledger::CreditKind::kPromo;
  else {
    co_await send_error(res, 400, "'kind' must be paid, trial or promo");
    co_return;
  }
  // Only promo credit expires (whether it is still in the future is the deposit's check,
  // after the idempotency key's lookup).
  std::optional<std::int64_t> expires_ms;
  if (const auto given = doc["expires_at"];
      given.error() != simdjson::NO_SUCH_FIELD && !given.is_null()) {
    std::string_view expires_text;
    if (kind != ledger::CreditKind::kPromo) {
      co_await send_error(res, 400, "'expires_at' is for promo credit only: paid and trial "
                                    "credit does not expire");
      co_return;
    }
    if (given.get_string().get(expires_text) || !(expires_ms = parse_rfc3339(expires_text))) {
      co_await send_error(res, 400, "'expires_at' must be RFC 3339 UTC like 2026-12-31T23:59:59Z");
      co_return;
    }
  }
  if (kind == ledger::CreditKind::kPromo && !expires_ms) {
    co_await send_error(res, 400, "promo credit needs an 'expires_at'");
    co_return;
  }
  // What the key stands for: this call with these exact values.
  const std::string request = credit_request(account, kind_text, amount, expires_ms);
  const std::function<Result<ledger::TransferId>()> deposit = [&] {
    return services_.bank->deposit(account, kind, amount, expires_ms, now_ms());
  };
  if (co_await answer_money_call(res, idempotency_key, request, account, deposit)) {
    log::info("credits added", {{"account", account}, {"kind", kind_text}});
  }
}

Task<void> AdminApi::verify_ledger(Responder& res) {
  std::shared_ptr<ledger::Bank> bank = services_.bank;
  std::shared_ptr<ledger::Freeze> freeze = services_.freeze;
  std::shared_ptr<store::UsageBuffer> usage = services_.usage;
  auto work = [bank, freeze, usage](store::Database& db) -> Result<ledger::Reconciliation> {
    return reconcile_books(db, *bank, *freeze, "admin", usage->pending());
  };
  auto r = co_await link_.call<ledger::Reconciliation>(work);
  if (!r) {
    co_await send_error(res, 503, r.status().message());
    co_return;
  }
  std::string out;
  json::Writer w(out);
  w.begin_object().field("ok", r->ok).field("transfers", static_cast<std::int64_t>(r->transfers));
  w.field("imbalance_usd", r->imbalance.to_string());
  if (!r->ok) {
    w.field("problem", r->problem).key("mismatched").begin_array();
    for (const auto& name : r->mismatched) w.value(name);
    w.end_array();
  }
  w.field("frozen", services_.freeze->frozen()).end_object();
  co_await res.send(r->ok ? 200 : 500, kJson, out);
}

Task<void> AdminApi::unfreeze(http::Request& req, Responder& res) {
  simdjson::dom::parser parser;
  simdjson::dom::element doc;
  std::string_view note;
  static constexpr std::array<std::string_view, 1> kUnfreezeFields = {"note"};
  if (const std::string error = read_object(parser, req.body(), kUnfreezeFields, doc);
      !error.empty()) {
    co_await send_error(res, 400, error);
    co_return;
  }
  if (doc["note"].get_string().get(note) || note.empty() || note.size() > 2000) {
    co_await send_error(res, 400,
                        "'note' is required: what the investigation found (1 to 2000 bytes)");
    co_return;
  }
  std::shared_ptr<ledger::Freeze> freeze = services_.freeze;
  // What the writer saw: kept apart from this coroutine, which may be gone (at shutdown)
  // when the piece runs.
  struct Seen {
    ledger::Freeze::Snapshot at;
    bool recorded = false;  // the pending freeze was recorded (and cleared) by this call
  };
  auto seen = std::make_shared<Seen>();
  auto work = [freeze, seen, note = std::string(note)](store::Database& db) -> Result<bool> {
    seen->at = freeze->snapshot();
    // A freeze the store has not recorded yet (set by a failed store) is recorded here and
    // cleared with the others: left to the batch's end, it would be recorded after the
    // clearing, uncleared, and a restart would bring it back.
    if (!seen->at.unrecorded.empty()) {
      if (Status s = store::record_freeze(db, seen->at.unrecorded, now_ms()); !s) return s;
      freeze->recorded(seen->at.generation);
      seen->recorded = true;
    }
    if (Status s = store::clear_freezes(db, note, now_ms()); !s) return s;
    return true;
  };
  // Cleared in memory whether or not a freeze was recorded (one set by a failed store).
  const std::string reason = freeze->reason();
  auto cleared = co_await link_.call<bool>(work);
  if (!cleared && cleared.status().kind() != ErrorKind::kNotFound) {
    // Not committed: a freeze it took to record waits for the next batch again, and one
    // is sent to record it.
    if (seen->recorded) {
      freeze->set(seen->at.unrecorded, /*record=*/true);
      link_.submit(store::write_nothing);
    }
    co_await send_error(res, 503, cleared.status().message());
    co_return;
  }
  if (!freeze->frozen() && !cleared) {
    co_await send_error(res, 409, "billing is not frozen");
    co_return;
  }
  // A freeze set while the clearing was being stored (another failed settlement) stands.
  if (!freeze->clear_unless_set_since(seen->at.sets)) {
    co_await send_error(res, 409,
                        fmt::format("billing was frozen again meanwhile: {}; investigate that "
                                    "and clear it",
                                    freeze->reason()));
    co_return;
  }
  log::warn("billing freeze cleared", {{"reason", reason}, {"note", note}});
  co_await res.send(200, kJson, R"({"frozen":false})");
}

namespace {

// The methods a known admin path takes, as an Allow header lists them ("" for an unknown
// path): a known path called with another method is 405, not 404.
std::string_view admin_methods(std::string_view path) {
  if (path == "/accounts") return "GET, HEAD, POST";
  if (path.starts_with("/accounts/")) {
    const std::string_view rest = path.substr(10);
    const std::size_t slash = rest.find('/');
    if (slash == std::string_view::npos) return "GET, HEAD, PATCH";
    const std::string_view action = rest.substr(slash);
    if (action == "/balance") return "GET, HEAD";
    if (action == "/keys" || action == "/credits" || action == "/refunds" ||
        action == "/suspend" || action == "/unsuspend") {
      return "POST";
    }
    return "";
  }
  if (path == "/routes" || path == "/ledger/verify") return "GET, HEAD";
  if (path == "/ledger/unfreeze") return "POST";
  if (path.starts_with("/keys/")) {
    const std::string_view rest = path.substr(6);
    const std::size_t slash = rest.find('/');
    if (slash == std::string_view::npos) return "DELETE";
    return rest.substr(slash) == "/rotate" ? "POST" : "";
  }
  return "";
}

}  // namespace

Task<void> AdminApi::handle(http::Request& req, Responder& res) {
  const std::string_view key = req["authorization"];
  if (services_.admin_key.empty()) {
    co_await send_error(res, 403, "the admin API is disabled: set TURNPIKE_ADMIN_KEY");
    co_return;
  }
  if (const std::string_view token = http::bearer_token(key);
      token.empty() || !is_admin_key(token, services_)) {
    co_await send_error(res, 401, "missing or wrong admin key");
    co_return;
  }

  const std::string_view target = req.target();
  std::string_view path = target.substr(0, target.find('?'));
  path.remove_prefix(std::string_view("/admin/v1").size());
  // HEAD is answered as GET is, without the body (the Responder drops it).
  const std::string_view method = req.method() == "HEAD" ? "GET" : req.method();

  if (path == "/accounts" && method == "POST") {
    co_await create_account(req, res);
    co_return;
  }
  if (path == "/accounts" && method == "GET") {
    co_await list_accounts(target, res);
    co_return;
  }
  if (path.starts_with("/accounts/")) {
    std::string_view rest = path.substr(10);
    const std::string_view id_text = rest.substr(0, rest.find('/'));
    const std::string_view action =
        rest.find('/') == std::string_view::npos ? "" : rest.substr(rest.find('/'));
    const auto id = parse_numbered_id(id_text, "acct_");
    if (!id || !services_.directory->account(*id)) {
      co_await send_error(res, 404, fmt::format("no account '{}'", id_text.substr(0, 40)));
      co_return;
    }
    if (action.empty() && method == "GET") {
      const auto keys = services_.directory->keys_of(*id);
      co_await res.send(200, kJson, account_json(*services_.directory->account(*id), &keys,
                                                 services_.directory.get()));
      co_return;
    }
    if (action.empty() && method == "PATCH") {
      co_await set_policy(*id, req, res);
      co_return;
    }
    if (action == "/keys" && method == "POST") {
      co_await create_key(*id, req, res);
      co_return;
    }
    if (action == "/credits" && method == "POST") {
      co_await add_credits(*id, req, res);
      co_return;
    }
    if (action == "/refunds" && method == "POST") {
      co_await refund(*id, req, res);
      co_return;
    }
    if (action == "/balance" && method == "GET") {
      auto balance = services_.bank->balance(*id, now_ms());
      if (!balance) {
        co_await send_error(res, 404, balance.status().message());
        co_return;
      }
      co_await res.send(200, kJson, balance_json(*balance));
      co_return;
    }
    if ((action == "/suspend" || action == "/unsuspend") && method == "POST") {
      const bool suspend = action == "/suspend";
      simdjson::dom::parser parser;
      simdjson::dom::element doc;
      if (!req.body().empty()) {
        if (const std::string error = read_object(parser, req.body(), {}, doc); !error.empty()) {
          co_await send_error(res, 400, fmt::format("{} takes no fields: {}", action.substr(1),
                                                    error));
          co_return;
        }
      }
      auto work = [&](store::Database& db) { return services_.directory->set_suspended(db, *id, suspend); };
      auto account = co_await link_.call<auth::Account>(work);
      if (!account) {
        co_await send_error(res, http_status(account.status().kind()), account.status().message());
        co_return;
      }
      log::info(suspend ? "account suspended" : "account unsuspended", {{"account", *id}});
      co_await res.send(200, kJson, account_json(*account, nullptr));
      co_return;
    }
  }
  if (path == "/routes" && method == "GET") {
    co_await res.send(200, kJson, routes_report_());
    co_return;
  }
  if (path == "/ledger/verify" && method == "GET") {
    co_await verify_ledger(res);
    co_return;
  }
  if (path == "/ledger/unfreeze" && method == "POST") {
    co_await unfreeze(req, res);
    co_return;
  }
  if (path.starts_with("/keys/") && path.ends_with("/rotate") && method == "POST") {
    co_await rotate_key(path.substr(6, path.size() - 6 - 7), req, res);
    co_return;
  }
  if (path.starts_with("/keys/") && path.find('/', 6) == std::string_view::npos &&
      method == "DELETE") {
    const auto id = parse_numbered_id(path.substr(6), "key_");
    if (!id) {
      co_await send_error(res, 404, "no such key");
      co_return;
    }
    auto work = [&](store::Database& db) -> Result<bool> {
      if (Status s = services_.directory->revoke_key(db, *id, now_ms()); !s) return s;
      return true;
    };
    auto revoked = co_await link_.call<bool>(work);
    if (!revoked) {
      co_await send_error(res, http_status(revoked.status().kind()), revoked.status().message());
      co_return;
    }
    log::info("key revoked", {{"key", *id}});
    co_await res.send(204, "", "");
    co_return;
  }
  if (const std::string_view allowed = admin_methods(path); !allowed.empty()) {
    res.add_header("allow", allowed);
    co_await send_error(res, 405, fmt::format("{} accepts {} only", target.substr(0, 200),
                                              allowed));
    co_return;
  }
  co_await send_error(res, 404, fmt::format("unknown admin call: {} {}", method,
                                            target.substr(0, 200)));
}

Task<void> AdminApi::list_accounts(std::string_view target, Responder& res) {
  auto params = http::parse_query(target);
  if (!params) {
    co_await send_error(res, 400, params.status().message());
    co_return;
  }
  std::size_t limit = kAccountsPageDefault;
  std::int64_t after = 0;
  for (std::size_t i = 0; i < params->size(); ++i) {
    const auto& [name, value] = (*params)[i];
    for (std::size_t j = 0; j < i; ++j) {
      if ((*params)[j].first == name) {
        co_await send_error(res, 400,
                            fmt::format("query parameter '{}' is given more than once",
                                        json::utf8_prefix(name, 64)));
        co_return;
      }
    }
    if (name == "limit") {
      std::size_t n = 0;
      const auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), n);
      if (ec != std::errc() || end != value.data() + value.size() || n < 1 ||
          n > kAccountsPageMax) {
        co_await send_error(res, 400,
                            fmt::format("'limit' must be between 1 and {}", kAccountsPageMax));
        co_return;
      }
      limit = n;
    } else if (name == "after") {
      const auto id = parse_numbered_id(value, "acct_");
      if (!id) {
        co_await send_error(res, 400, "'after' must be an account id (acct_N)");
        co_return;
      }
      after = *id;
    } else {
      co_await send_error(res, 400,
                          fmt::format("unknown query parameter '{}'; expected limit, after",
                                      json::utf8_prefix(name, 64)));
      co_return;
    }
  }
  const std::vector<auth::Account> accounts = services_.directory->accounts();  // by id
  auto from = std::upper_bound(accounts.begin(), accounts.end(), after,
                               [](std::int64_t id, const auth::Account& a) { return id < a.id; });
  const std::size_t left = static_cast<std::size_t>(accounts.end() - from);
  const std::size_t shown = std::min(left, limit);
  std::string out = R"({"object":"list","data":[)";
  for (auto it = from; it != from + static_cast<std::ptrdiff_t>(shown); ++it) {
    if (it != from) out += ',';
    out += account_json(*it, nullptr);
  }
  auto id_or_null = [&](std::size_t i) {
    return shown > 0 ? fmt::format(R"("acct_{}")", (from + static_cast<std::ptrdiff_t>(i))->id)
                     : std::string("null");
  };
  fmt::format_to(std::back_inserter(out), R"(],"first_id":{},"last_id":{},"has_more":{}}})",
                 id_or_null(0), id_or_null(shown - 1), left > shown);
  co_await res.send(200, kJson, out);
}

Task<void> AdminApi::create_account(http::Request& req, Responder& res) {
  simdjson::dom::parser parser;
  simdjson::dom::element doc;
  std::string_view name;
  std::string_view kind = "customer";
  std::string_view plan;
  static constexpr std::array<std::string_view, 7> kFields = {
      "name", "kind", "plan", "privacy_tier", "routing_weights", "models", "idempotency_key"};
  if (const std::string error = read_object(parser, req.body(), kFields, doc); !error.empty()) {
    co_await send_error(res, 400, error);
    co_return;
  }
  if (doc["name"].get_string().get(name) || !auth::check_name(name, true)) {
    co_await send_error(res, 400, auth::kAccountNameRule);
    co_return;
  }
  // An optional member given as null is absent.
  auto given = [&](const char* key) {
    return doc[key].error() != simdjson::NO_SUCH_FIELD && !doc[key].is_null();
  };
  if (given("kind") &&
      (doc["kind"].get_string().get(kind) || (kind != "customer" && kind != "operator"))) {
    co_await send_error(res, 400, "'kind' must be customer or operator");
    co_return;
  }
  if (given("plan") && (doc["plan"].get_string().get(plan) || !auth::check_plan(plan))) {
    co_await send_error(res, 400, auth::kPlanRule);
    co_return;
  }
  auth::RoutingPolicy policy;
  std::vector<std::string> models;
  if (Status s = read_account_policy(doc, policy, models); !s) {
    co_await send_error(res, 400, s.message());
    co_return;
  }
  // Creating a customer account deposits its trial credit, so a retried call may name an
  // idempotency key: the same key with the same values answers the first account.
  std::string_view idempotency_key;
  if (given("idempotency_key") &&
      (doc["idempotency_key"].get_string().get(idempotency_key) || idempotency_key.empty() ||
       idempotency_key.size() > 200)) {
    co_await send_error(res, 400, "'idempotency_key' must be a string of 1 to 200 bytes");
    co_return;
  }
  // What the key stands for, as JSON so that no value can pass for another.
  std::string request;
  json::Writer r(request);
  r.begin_object().field("call", "create_account").field("name", name).field("kind", kind);
  r.field("plan", plan).field("privacy_tier", catalog::privacy_tier_name(policy.privacy_tier));
  r.key("models").begin_array();
  for (const std::string& m : models) r.value(m);
  r.end_array().key("weights");
  if (policy.weights) {
    r.begin_array().value(policy.weights->quality).value(policy.weights->cost);
    r.value(policy.weights->latency).end_array();
  } else {
    r.null();
  }
  r.end_object();
  auto answered = std::make_shared<bool>(false);
  auto create = [&](store::Database& db) -> Result<std::string> {
    if (!idempotency_key.empty()) {
      auto seen = store::find_answer(db, services_.answers.get(), idempotency_key, request);
      if (!seen) return seen.status();
      if (*seen) return std::move((*seen)->body);
    }
    // Its trial credit must fit before the account is made: a refusal after would leave the
    // account in memory (and stored with the next batch) though the call failed.
    const bool trial = kind == "customer" && services_.trial_credit > Money();
    if (trial) {
      if (Status s = services_.bank->check_deposit(services_.trial_credit); !s) return s;
    }
    // One write: an account must never stand, even for a moment, without its allowlist.
    auto created = services_.directory->create_account(db, std::string(name), std::string(kind),
                                                       std::string(plan), policy, now_ms(),
                                                       models);
    if (!created) return created.status();
    services_.bank->open_wallet(created->id);
    if (trial) {
      auto deposited = services_.bank->deposit(created->id, ledger::CreditKind::kTrial,
                                               services_.trial_credit, std::nullopt, now_ms());
      if (!deposited) return deposited.status();
    }
    std::string body = account_json(*created, nullptr);
    if (!idempotency_key.empty()) {
      if (Status s = store::store_answer(db, services_.answers.get(), idempotency_key, request,
                                         {201, body});
          !s) {
        return s;
      }
    }
    log::info("account created", {{"account", created->id}, {"kind", created->kind}});
    return body;
  };
  auto work = [&, answered](store::Database& db) {
    auto body = create(db);
    *answered = body.is_ok();
    return body;
  };
  auto answer = co_await link_.call<std::string>(work);
  if (!answer && *answered) {
    co_await send_error(res, 503, failed_commit_message(answer.status(), !idempotency_key.empty()));
    co_return;
  }
  if (!answer) {
    co_await send_error(res, http_status(answer.status().kind()), answer.status().message());
    co_return;
  }
  co_await res.send(201, kJson, *answer);
}

Task<void> AdminApi::set_policy(std::int64_t account, http::Request& req, Responder& res) {
  simdjson::dom::parser parser;
  simdjson::dom::element doc;
  simdjson::dom::object fields;
  if (const auto error = parser.parse(req.body()).get(doc); error || doc.get_object().get(fields)) {
    co_await send_error(res, 400, not_an_object(error));
    co_return;
  }
  for (const auto field : fields) {
    const std::string_view key = field.key;
    if (key != "privacy_tier" && key != "routing_weights" && key != "models") {
      co_await send_error(res, 400,
                          fmt::format("'{}' cannot be changed here: send privacy_tier, "
                                      "routing_weights and/or models",
                                      json::utf8_prefix(key, 60)));
      co_return;
    }
  }
  static constexpr std::array<std::string_view, 3> kFields = {"privacy_tier", "routing_weights",
                                                              "models"};
  if (const std::string repeated = unknown_member(doc, kFields); !repeated.empty()) {
    co_await send_error(res, 400, repeated);
    co_return;
  }
  // Validated here; applied on the writer to the account as it is then, so that two
  // PATCHes of different fields both take effect.
  auth::RoutingPolicy given;
  std::vector<std::string> models;
  if (Status s = read_account_policy(doc, given, models); !s) {
    co_await send_error(res, 400, s.message());
    co_return;
  }
  const bool tier_given = doc["privacy_tier"].error() != simdjson::NO_SUCH_FIELD;
  const bool weights_given = doc["routing_weights"].error() != simdjson::NO_SUCH_FIELD;
  const bool models_given = doc["models"].error() != simdjson::NO_SUCH_FIELD;
  auth::Directory& directory = *services_.directory;
  auto work = [&directory, account, given, models, tier_given, weights_given,
               models_given](store::Database& db) -> Result<auth::Account> {
    auto current = directory.account(account);
    if (!current) return Status{ErrorKind::kNotFound, fmt::format("no account acct_{}", account)};
    auth::RoutingPolicy policy = current->policy;
    if (tier_given) policy.privacy_tier = given.privacy_tier;
    if (weights_given) policy.weights = given.weights;
    auto changed = directory.set_policy(db, account, policy);
    if (!changed || !models_given) return changed;
    return directory.set_models(db, account, models);
  };
  auto changed = co_await link_.call<auth::Account>(work);
  if (!changed) {
    co_await send_error(res, http_status(changed.status().kind()), changed.status().message());
    co_return;
  }
  log::info("account routing policy changed",
            {{"account", account},
             {"privacy_tier", catalog::privacy_tier_name(changed->policy.privacy_tier)}});
  co_await res.send(200, kJson, account_json(*changed, nullptr));
}

Task<void> AdminApi::create_key(std::int64_t account, http::Request& req, Responder& res) {
  auth::Directory::KeySpec spec;
  std::string& name = spec.name;
  std::vector<std::string>& models = spec.models;
  std::optional<std::int64_t>& expires_ms = spec.expires_ms;
  if (!req.body().empty()) {
    simdjson::dom::parser parser;
    simdjson::dom::element doc;
    // A field this call does not know is refused, not ignored: a mistyped allowlist must
    // not look accepted.
    static constexpr std::array<std::string_view, 9> kFields = {
        "name", "models", "expires_in_seconds", "privacy_tier", "routing_weights", "tags",
        "rpm", "tpm", "budget_usd"};
    if (const std::string error = read_object(parser, req.body(), kFields, doc); !error.empty()) {
      co_await send_error(res, 400, error);
      co_return;
    }
    if (const std::string error = read_key_limits(req.body(), doc, spec.limits);
        !error.empty()) {
      co_await send_error(res, 400, error);
      co_return;
    }
    // An optional member given as null is absent, as for the limits and models.
    auto given = [&](const char* key) {
      return doc[key].error() != simdjson::NO_SUCH_FIELD && !doc[key].is_null();
    };
    std::string_view n;
    if (given("name") && (doc["name"].get_string().get(n) || !auth::check_name(n, false))) {
      co_await send_error(res, 400, auth::kKeyNameRule);
      co_return;
    }
    name = std::string(n);
    if (Status s = read_models(doc, models); !s) {
      co_await send_error(res, 400, s.message());
      co_return;
    }
    simdjson::dom::array list;
    std::int64_t seconds = 0;
    if (given("expires_in_seconds")) {
      if (doc["expires_in_seconds"].get_int64().get(seconds) || seconds <= 0 ||
          seconds > kKeyLifetimeSecondsMax) {
        co_await send_error(res, 400,
                            fmt::format("'expires_in_seconds' must be an integer from 1 to {} "
                                        "(100 years)",
                                        kKeyLifetimeSecondsMax));
        co_return;
      }
      expires_ms = now_ms() + seconds * 1000;
    }
    if (given("tags")) {
      // Walked only when it is an array: a default simdjson array is no empty list.
      bool ok = !doc["tags"].get_array().get(list) && list.size() <= auth::kTagsMax;
      if (ok) {
        for (auto t : list) {
          std::string_view tag;
          ok = ok && !t.get_string().get(tag);
          if (ok) spec.tags.emplace_back(tag);
        }
      }
      if (!ok || !auth::check_tags(spec.tags)) {
        co_await send_error(res, 400, auth::kTagsRule);
        co_return;
      }
    }
    if (Status s = read_policy(doc, spec.policy); !s) {
      co_await send_error(res, 400, s.message());
      co_return;
    }
  }
  std::string secret;
  auto work = [&](store::Database& db) {
    return services_.directory->create_key(db, *services_.hasher, account, spec, now_ms(),
                                           &secret);
  };
  auto key = co_await link_.call<auth::ApiKey>(work);
  if (!key && !secret.empty()) {
    // Made in memory, stored with the next commit; its secret is not handed out by a call
    // that failed.
    co_await send_error(res, 503,
                        fmt::format("the store failed to commit this call ({}); the key has been "
                                    "made and is stored with the next commit, but its secret "
                                    "cannot be shown: revoke it (see the account's keys) and "
                                    "make another",
                                    key.status().message()));
    co_return;
  }
  if (!key) {
    co_await send_error(res, http_status(key.status().kind()), key.status().message());
    co_return;
  }
  log::info("key created", {{"account", account}, {"key", key->id}, {"last4", key->last4}});
  std::string out;
  json::Writer w(out);
  w.begin_object().field("id", fmt::format("key_{}", key->id)).field("key", secret);
  w.field("last4", key->last4).field("account", fmt::format("acct_{}", account));
  w.end_object();
  co_await res.send(201, kJson, out);
}

}  // namespace tp::api
