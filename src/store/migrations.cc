#include "store/migrations.h"

#include <fmt/format.h>

#include <array>
#include <string_view>

namespace tp::store {
namespace {

// Append only: a released migration never changes.
constexpr std::array<std::string_view, 16> kMigrations = {
    // 1: the ledger journal.
    R"sql(
CREATE TABLE ledger_accounts (
  id INTEGER PRIMARY KEY,        -- the Ledger's AccountId
  name TEXT NOT NULL UNIQUE,
  floor INTEGER NOT NULL         -- 0: non-negative, 1: unbounded
);
CREATE TABLE transfers (
  id INTEGER PRIMARY KEY,        -- the Ledger's TransferId, dense from 1
  debit INTEGER NOT NULL REFERENCES ledger_accounts(id),
  credit INTEGER NOT NULL REFERENCES ledger_accounts(id),
  amount_nanos INTEGER NOT NULL CHECK (amount_nanos > 0),
  kind INTEGER NOT NULL,
  hold INTEGER NOT NULL DEFAULT 0,
  at_ms INTEGER NOT NULL
);
CREATE INDEX transfers_by_hold ON transfers(hold) WHERE hold != 0;
)sql",
    // 2: customer and operator accounts, and their API keys (digests only).
    R"sql(
CREATE TABLE accounts (
  id INTEGER PRIMARY KEY,
  name TEXT NOT NULL,
  kind TEXT NOT NULL CHECK (kind IN ('customer', 'operator')),
  plan TEXT NOT NULL DEFAULT '',
  created_ms INTEGER NOT NULL,
  suspended INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE api_keys (
  id INTEGER PRIMARY KEY,
  account_id INTEGER NOT NULL REFERENCES accounts(id),
  name TEXT NOT NULL DEFAULT '',
  digest TEXT NOT NULL UNIQUE,   -- hex HMAC-SHA-256 of the key under the server secret
  last4 TEXT NOT NULL,
  models TEXT NOT NULL DEFAULT '',  -- comma-separated allowlist, empty: all
  created_ms INTEGER NOT NULL,
  expires_ms INTEGER,            -- NULL: never
  revoked_ms INTEGER             -- NULL: active
);
CREATE INDEX api_keys_by_account ON api_keys(account_id);
)sql",
    // 3: idempotency keys of money-moving admin calls: the first answer, replayed.
    R"sql(
CREATE TABLE idempotency (
  key TEXT PRIMARY KEY,
  request TEXT NOT NULL,         -- what was asked (call and canonical body)
  status INTEGER NOT NULL,
  response TEXT NOT NULL
);
)sql",
    // 4: one row per billed request, written in the transaction that settles it. Metadata
    // only: never prompt or completion text.
    R"sql(
CREATE TABLE usage_log (
  id INTEGER PRIMARY KEY,        -- commit order; the cursor of GET /api/usage
  request_id TEXT NOT NULL,
  account_id INTEGER NOT NULL,
  key_id INTEGER NOT NULL,
  at_ms INTEGER NOT NULL,        -- when the request arrived
  model TEXT NOT NULL,
  provider TEXT NOT NULL,
  node TEXT,                     -- the peer operator node that served it, if any
  input_tokens INTEGER NOT NULL, -- uncached input
  cached_tokens INTEGER NOT NULL,
  output_tokens INTEGER NOT NULL,
  cost_nanos INTEGER NOT NULL,
  input_cost_nanos INTEGER NOT NULL,
  output_cost_nanos INTEGER NOT NULL,
  latency_ms INTEGER NOT NULL,
  status INTEGER NOT NULL,       -- HTTP status the client got; 499 when it went away
  hold INTEGER NOT NULL          -- the ledger hold it settled (transfers.hold)
);
CREATE INDEX usage_log_by_account ON usage_log(account_id, id);
)sql",
    // 5: billing freezes: set when reconciliation fails, cleared by an admin.
    R"sql(
CREATE TABLE billing_freezes (
  id INTEGER PRIMARY KEY,
  frozen_ms INTEGER NOT NULL,
  reason TEXT NOT NULL,
  cleared_ms INTEGER,            -- NULL: still frozen
  cleared_note TEXT
);
)sql",
    // 6: low-balance notices and their webhook delivery.
    R"sql(
CREATE TABLE low_balance_notices (
  id INTEGER PRIMARY KEY,
  account_id INTEGER NOT NULL,
  threshold_nanos INTEGER NOT NULL,
  balance_nanos INTEGER NOT NULL,
  at_ms INTEGER NOT NULL,
  attempts INTEGER NOT NULL DEFAULT 0,
  delivered_ms INTEGER,          -- NULL: not (yet) delivered
  last_error TEXT
);
)sql",
    // 7: nothing looks transfers up by hold (restart recovery replays the journal in
    // memory); the index only cost every settlement three more B-tree inserts.
    R"sql(
DROP INDEX transfers_by_hold;
)sql",
    // 8: the flex race. A flex request is charged at the route's flex prices; what the same
    // usage costs at its standard prices is kept beside, so the saving can be computed.
    R"sql(
ALTER TABLE usage_log ADD COLUMN service_tier TEXT NOT NULL DEFAULT 'standard';
ALTER TABLE usage_log ADD COLUMN standard_cost_nanos INTEGER;  -- NULL: equal to cost_nanos
)sql",
    // 9: routing policies of accounts and keys (the loosest privacy tier their requests may
    // use; weights "quality,cost,latency" or '' for the next level's), and key tags.
    R"sql(
ALTER TABLE accounts ADD COLUMN privacy_tier TEXT NOT NULL DEFAULT 'community';
ALTER TABLE accounts ADD COLUMN routing_weights TEXT NOT NULL DEFAULT '';
ALTER TABLE api_keys ADD COLUMN privacy_tier TEXT NOT NULL DEFAULT 'community';
ALTER TABLE api_keys ADD COLUMN routing_weights TEXT NOT NULL DEFAULT '';
ALTER TABLE api_keys ADD COLUMN tags TEXT NOT NULL DEFAULT '';  -- comma-separated
)sql",
    // 10: an account's model allowlist, applied to every key of it with the key's own.
    R"sql(
ALTER TABLE accounts ADD COLUMN models TEXT NOT NULL DEFAULT '';  -- comma-separated, '': all
)sql",
    // 11: the key a rotation made in a key's place (a key is rotated once: its successor
    // keeps its own expiry, never the grace deadline a rotation gave it).
    R"sql(
ALTER TABLE api_keys ADD COLUMN replaced_by INTEGER;
)sql",
    // 12: a check of the server secret the keys are hashed with, HMAC(secret, a fixed text):
    // a store started with another secret (a lost secret.key made again, a different
    // TURNPIKE_SECRET) is refused rather than failing every key.
    R"sql(
CREATE TABLE server_secret_check (check_hex TEXT NOT NULL);
)sql",
    // 13: usage priced apart from text tokens: audio tokens (part of the input and output
    // counts) at a route's audio prices, and server-side web searches at a fee each.
    R"sql(
ALTER TABLE usage_log ADD COLUMN audio_input_tokens INTEGER NOT NULL DEFAULT 0;
ALTER TABLE usage_log ADD COLUMN audio_output_tokens INTEGER NOT NULL DEFAULT 0;
ALTER TABLE usage_log ADD COLUMN web_searches INTEGER NOT NULL DEFAULT 0;
)sql",
    // 14: the multiplier of every token price that a request's price-changing options
    // (fast mode, a region) cost, in ten-thousandths, so that its row explains its cost.
    R"sql(
ALTER TABLE usage_log ADD COLUMN price_multiplier_e4 INTEGER NOT NULL DEFAULT 10000;
)sql",
    // 15: a key's own limits (NULL: none): requests and tokens per minute, and a budget
    // its requests may cost over its life; and the first key of its rotation line, whose
    // limits every key of the line shares (NULL: itself).
    R"sql(
ALTER TABLE api_keys ADD COLUMN rpm INTEGER;
ALTER TABLE api_keys ADD COLUMN tpm INTEGER;
ALTER TABLE api_keys ADD COLUMN budget_nanos INTEGER;
ALTER TABLE api_keys ADD COLUMN holder INTEGER;
)sql",
    // 16: how many times a gateway started on this store. Hold ids begin each start past
    // every earlier start's (see Bank::continue_holds_after): a hold that moved no money
    // left no transfer to continue after, and its id came again in a later usage row.
    R"sql(
CREATE TABLE gateway_starts (starts INTEGER NOT NULL);
INSERT INTO gateway_starts (starts) VALUES (0);
)sql",
};

}  // namespace

int latest_schema_version() { return static_cast<int>(kMigrations.size()); }

Result<int> schema_version(Database& db) {
  if (auto s = db.exec("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)");
      !s) {
    return s;
  }
  auto select = db.prepare("SELECT version FROM schema_version");
  if (!select) return select.status();
  auto step = select->step();
  if (!step) return step.status();
  return *step == Statement::Step::kRow ? static_cast<int>(select->column_int(0)) : 0;
}

Status migrate(Database& db) {
  auto version = schema_version(db);
  if (!version) return version.status();
  if (*version > latest_schema_version()) {
    return {ErrorKind::kInternal,
            fmt::format("{} has schema version {}, newer than this turnpike knows ({})",
                        db.path(), *version, latest_schema_version())};
  }
  for (int v = *version; v < latest_schema_version(); ++v) {
    if (auto s = db.exec("BEGIN IMMEDIATE"); !s) return s;
    Status s = db.exec(kMigrations[static_cast<std::size_t>(v)]);
    if (s) {
      s = db.exec(v == 0 ? "INSERT INTO schema_version (version) VALUES (1)"
                         : fmt::format("UPDATE schema_version SET version = {}", v + 1));
    }
    if (!s) {
      (void)db.exec("ROLLBACK");
      return {ErrorKind::kInternal, fmt::format("migration {}: {}", v + 1, s.message())};
    }
    if (auto c = db.exec("COMMIT"); !c) return c;
  }
  return Status::ok();
}

}  // namespace tp::store
