#pragma once
// The stateful services behind the API, built once at start and shared by every I/O
// thread: the store writer, accounts and keys, the key hasher, the admin key.

#include <chrono>
#include <memory>
#include <span>
#include <string>

#include "api/notice_counts.h"
#include "auth/directory.h"
#include "auth/keys.h"
#include "ledger/bank.h"
#include "ledger/freeze.h"
#include "store/idempotency.h"
#include "store/usage_store.h"
#include "store/writer.h"

namespace tp::api {

struct Services {
  std::shared_ptr<store::Writer> writer;
  std::shared_ptr<auth::Directory> directory;
  std::shared_ptr<const auth::KeyHasher> hasher;
  std::shared_ptr<ledger::Bank> bank;
  std::shared_ptr<ledger::Freeze> freeze;  // set: billable traffic gets 503
  // The current writer batch's settlements; writer thread only (see UsageBuffer).
  std::shared_ptr<store::UsageBuffer> usage;
  // Idempotent admin calls' answers not yet committed; writer thread only (AnswerBuffer).
  std::shared_ptr<store::AnswerBuffer> answers;
  // Low-balance notices, recorded with the batch that raised them (NoticeRecorder).
  std::shared_ptr<store::NoticeRecorder> notices;
  // What became of the notices handed to the webhook (Notifier), for /metrics.
  std::shared_ptr<NoticeCounts> notice_counts = std::make_shared<NoticeCounts>();
  Money trial_credit;     // granted to every new customer account
  std::string admin_key;  // empty: the admin API answers 403
};

// Whether this build can open the store `store_uri` names (the embedded sqlite: one only);
// check-config asks the same as serve.
Status check_store_uri(const std::string& store_uri);

// The file of a "sqlite:FILE" store: FILE, relative to `data_dir` unless absolute.
std::string sqlite_file(const std::string& store_uri, const std::string& data_dir);

// Opens the embedded store ("sqlite:FILE", FILE relative to `data_dir`), applies the
// migrations, loads accounts and keys and the server secret. The admin key comes from
// TURNPIKE_ADMIN_KEY.
Result<Services> open_services(const std::string& store_uri, const std::string& data_dir,
                               Money trial_credit, std::chrono::microseconds writer_spin);

// Whether `presented` is the admin key, compared in constant time; never when the admin
// API is disabled (no key set).
// The admin key as TURNPIKE_ADMIN_KEY gives it: without surrounding blanks (a file's
// newline); kInvalidRequest when it has other control characters.
Result<std::string> admin_key_from(std::string_view value);
bool is_admin_key(std::string_view presented, const Services& services);

// Stores the bank's new transfers and reconciles every balance with the stored books,
// inside the caller's store transaction (the writer's, or the start-up one). A failure
// freezes billing: recorded in the store, logged, and set in `freeze`. `trigger` names who
// asked: "start", "schedule" or "admin". `pending`: the usage rows the writer's batch has
// not stored yet (their charges are in the bank), from Services::usage; writer thread only.
ledger::Reconciliation reconcile_books(store::Database& db, ledger::Bank& bank,
                                      ledger::Freeze& freeze, std::string_view trigger,
                                      std::span<const store::UsageRecord> pending = {});

}  // namespace tp::api
