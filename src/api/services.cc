#include "api/services.h"

#include <fmt/format.h>
#include <openssl/crypto.h>

#include <algorithm>
#include <cstdlib>

#include "core/clock.h"
#include "core/log.h"
#include "store/ledger_store.h"
#include "store/migrations.h"
#include "store/sqlite.h"

namespace tp::api {

namespace {

// Hold ids of one start: 2^40 of them (a million holds a second for twelve days), and
// 2^23 starts before a hold id passes what a usage row's INTEGER holds.
constexpr int kHoldIdBits = 40;

}  // namespace

Status check_store_uri(const std::string& store_uri) {
  if (!store_uri.starts_with("sqlite:")) {
    return Status{ErrorKind::kInvalidRequest,
                  fmt::format("store '{}': only the embedded sqlite: store is available in this "
                              "build (PostgreSQL arrives with scale-out)",
                              store_uri.substr(0, store_uri.find(':')))};
  }
  return Status::ok();
}

std::string sqlite_file(const std::string& store_uri, const std::string& data_dir) {
  const std::string file = store_uri.substr(std::string_view("sqlite:").size());
  return file.starts_with('/') ? file : data_dir + "/" + file;
}

Result<Services> open_services(const std::string& store_uri, const std::string& data_dir,
                               Money trial_credit, std::chrono::microseconds writer_spin) {
  if (Status s = check_store_uri(store_uri); !s) return s;
  const std::string path = sqlite_file(store_uri, data_dir);
  // No commit waits for a checkpoint: a background thread copies the log back every 250
  // pages, and the writer finishes it between two batches once it holds 16384 (64 MiB of
  // 4 KiB pages), so the log starts over. The writer's part delays the next batch by two
  // fsyncs (milliseconds here), hence the large log. A background checkpoint still slows
  // the commits it overlaps, more the more it copies: every 250 pages rather than SQLite's
  // 1000 halved p99 at one connection (and lowered it at 64) on the benchmark.
  // The store's own failures name it; the server secret's and the admin key's name theirs.
  auto in_store = [&](const Status& s) {
    return Status{s.kind(), fmt::format("store {}: {}", path, s.message())};
  };
  auto db = store::open_sqlite(path,
                               {.background_checkpoint_pages = 250, .restart_pages = 16384});
  if (!db) return db.status();  // names the file
  if (auto s = store::migrate(**db); !s) return in_store(s);
  auto directory = auth::Directory::load(**db);
  if (!directory) return in_store(directory.status());
  auto secret = auth::open_server_secret(**db, data_dir);
  if (!secret) return secret.status();
  ledger::Ledger journal;
  if (auto s = store::load_ledger(**db, journal); !s) return in_store(s);
  auto bank = ledger::Bank::adopt(std::move(journal), SystemClock::instance().unix_millis());
  if (!bank) return bank.status();
  // What older versions' holds left in `held` accounts went back just now (see adopt):
  // store that, and reconcile the books before serving. Books that do not reconcile freeze
  // billing rather than stop the gateway, so an admin can look into them through the API.
  auto freeze = std::make_shared<ledger::Freeze>();
  auto open = store::open_freeze(**db);
  if (!open) return open.status();
  if (!open->empty()) {
    freeze->set(*open);
    log::warn("billing frozen since before this start", {{"reason", *open}});
  }
  if (auto s = (*db)->exec("BEGIN IMMEDIATE"); !s) return s;
  // Each start numbers its holds from its own range of 2^40: a usage row's hold is its
  // account's and this start's alone (see migration 16).
  auto starts = store::count_start(**db);
  if (!starts) {
    (void)(*db)->exec("ROLLBACK");
    return starts.status();
  }
  (*bank)->continue_holds_after(static_cast<ledger::HoldId>(*starts) << kHoldIdBits);
  const ledger::Reconciliation r = reconcile_books(**db, **bank, *freeze, "start");
  const auto [unrecorded, generation] = freeze->pending_record();  // a freeze it just set
  if (!unrecorded.empty()) {
    if (auto s = store::record_freeze(**db, unrecorded, SystemClock::instance().unix_millis());
        !s) {
      return s;
    }
  }
  const Status started = (*db)->exec("COMMIT");
  (*bank)->committed(started.is_ok());
  if (!started) return started;
  if (!unrecorded.empty()) freeze->recorded(generation);
  if (r.store_failed) return Status{ErrorKind::kInternal, r.problem};

  Services services;
  services.directory = std::move(directory.value());
  services.hasher = std::make_shared<const auth::KeyHasher>(std::move(secret.value()));
  services.bank = std::move(bank.value());
  services.freeze = std::move(freeze);
  services.trial_credit = trial_credit;
  services.writer = std::make_shared<store::Writer>(std::move(db.value()), writer_spin);
  services.usage = std::make_shared<store::UsageBuffer>();
  services.answers = std::make_shared<store::AnswerBuffer>();
  services.notices = std::make_shared<store::NoticeRecorder>();
  std::shared_ptr<auth::Directory> accounts = services.directory;
  store::store_settlements_with_batches(
      *services.writer,
      {services.bank, services.usage, services.answers, services.notices, services.freeze,
       [accounts](store::Database& db) { return accounts->persist(db); },
       [accounts](bool committed) { accounts->committed(committed); }});
  if (const char* admin = std::getenv("TURNPIKE_ADMIN_KEY"); admin != nullptr) {
    auto key = admin_key_from(admin);
    if (!key) return key.status();
    services.admin_key = std::move(key.value());
  }
  return services;
}

Result<std::string> admin_key_from(std::string_view value) {
  // A header value's surrounding blanks never reach the comparison, so a key given with
  // them (a file's newline) is taken without them; one with other control characters could
  // never be presented. (The key itself is not shown.)
  constexpr std::string_view kBlanks = " \t\r\n";
  const std::size_t begin = value.find_first_not_of(kBlanks);
  value = begin == std::string_view::npos
              ? std::string_view()
              : value.substr(begin, value.find_last_not_of(kBlanks) - begin + 1);
  if (std::any_of(value.begin(), value.end(),
                  [](char c) { return static_cast<unsigned char>(c) < 0x20 || c == 0x7f; })) {
    return Status{ErrorKind::kInvalidRequest,
                  "TURNPIKE_ADMIN_KEY has control characters, which no request header can "
                  "carry: the admin API could never be used (its value is not shown)"};
  }
  return std::string(value);
}

bool is_admin_key(std::string_view presented, const Services& services) {
  const std::string& key = services.admin_key;
  return !key.empty() && presented.size() == key.size() &&
         CRYPTO_memcmp(presented.data(), key.data(), key.size()) == 0;
}

ledger::Reconciliation reconcile_books(store::Database& db, ledger::Bank& bank,
                                      ledger::Freeze& freeze, std::string_view trigger,
                                      std::span<const store::UsageRecord> pending) {
  ledger::Reconciliation r = bank.reconcile(
      [&](const ledger::LedgerTail& tail) {
        // A write that fails part way must leave nothing behind: the bank hands the same
        // tail over again, and whatever else this transaction holds (the freeze record)
        // still commits.
        if (Status s = db.exec("SAVEPOINT reconcile_append"); !s) return s;
        const Status appended = store::append_ledger(db, tail);
        if (!appended) (void)db.exec("ROLLBACK TO reconcile_append");
        (void)db.exec("RELEASE reconcile_append");
        return appended;
      },
      [&] { return store::read_books(db); });
  if (r.ok) {
    // Memory and store agree and balance; what the stored books must satisfy besides.
    auto problems = store::check_books(db, pending);
    if (!problems) {
      r.ok = false;
      r.store_failed = true;
      r.problem = fmt::format("checking the stored books failed: {}", problems.status().message());
    } else if (!problems->empty()) {
      r.ok = false;
      r.problem = problems->size() == 1 ? problems->front()
                                        : fmt::format("{} (and {} more)", problems->front(),
                                                      problems->size() - 1);
    }
  }
  if (r.ok) {
    log::info("ledger reconciled", {{"trigger", trigger},
                                    {"transfers", static_cast<std::int64_t>(r.transfers)}});
    return r;
  }
  // Recorded by this batch before it commits, else by the next one that does: a restart
  // must not lift it.
  freeze.set(fmt::format("reconciliation failed ({}): {}", trigger, r.problem), /*record=*/true);
  log::error("billing frozen", {{"trigger", trigger}, {"reason", r.problem}});
  return r;
}

}  // namespace tp::api
