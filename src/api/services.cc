#include "api/services.h"

#include <fmt/format.h>

#include <cstdlib>

#include "core/clock.h"
#include "store/ledger_store.h"
#include "store/migrations.h"
#include "store/sqlite.h"

namespace tp::api {

Result<Services> open_services(const std::string& store_uri, const std::string& data_dir,
                               Money trial_credit) {
  if (!store_uri.starts_with("sqlite:")) {
    return Status{ErrorKind::kInvalidRequest,
                  fmt::format("store '{}': only the embedded sqlite: store is available in this "
                              "build (PostgreSQL arrives with scale-out)",
                              store_uri.substr(0, store_uri.find(':')))};
  }
  const std::string file = store_uri.substr(7);
  const std::string path = file.starts_with('/') ? file : data_dir + "/" + file;
  auto db = store::Database::open(path);
  if (!db) return db.status();
  if (auto s = store::migrate(**db); !s) return s;
  auto directory = auth::Directory::load(**db);
  if (!directory) return directory.status();
  auto secret = auth::load_or_create_server_secret(data_dir);
  if (!secret) return secret.status();
  ledger::Ledger journal;
  if (auto s = store::load_ledger(**db, journal); !s) return s;
  auto bank = ledger::Bank::adopt(std::move(journal), SystemClock::instance().unix_millis());
  if (!bank) return bank.status();
  // Holds a dead process left open were voided just now: store that before serving.
  if (auto s = (*db)->exec("BEGIN IMMEDIATE"); !s) return s;
  Status stored = (*bank)->persist([&](const ledger::Ledger& ledger, std::size_t accounts,
                                       std::size_t transfers) {
    return store::append_ledger(**db, ledger, accounts, transfers);
  });
  if (auto s = (*db)->exec(stored ? "COMMIT" : "ROLLBACK"); !s || !stored) {
    return stored ? s : stored;
  }
  if (const auto report = (*bank)->verify(); !report.ok) {
    return Status{ErrorKind::kInternal,
                  fmt::format("the stored ledger does not balance (imbalance {} USD); refusing "
                              "to start",
                              report.imbalance.to_string())};
  }

  Services services;
  services.directory = std::move(directory.value());
  services.hasher = std::make_shared<const auth::KeyHasher>(std::move(secret.value()));
  services.bank = std::move(bank.value());
  services.trial_credit = trial_credit;
  services.writer = std::make_shared<store::Writer>(std::move(db.value()));
  if (const char* admin = std::getenv("TURNPIKE_ADMIN_KEY"); admin != nullptr) {
    services.admin_key = admin;
  }
  return services;
}

}  // namespace tp::api
