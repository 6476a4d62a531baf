#include "cli/cli.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <functional>
#include <thread>
#include <utility>

#include "api/admin.h"
#include "api/errors.h"
#include "api/gateway.h"
#include "api/maintenance.h"
#include "api/prober.h"
#include "api/usage_api.h"
#include "auth/directory.h"
#include "core/clock.h"
#include "core/ids.h"
#include "core/json_writer.h"
#include "core/limits.h"
#include "core/log.h"
#include "core/rfc3339.h"
#include "ledger/bank.h"
#include "ops/config.h"
#include "store/ledger_store.h"
#include "store/migrations.h"
#include "store/sqlite.h"
#include "store/usage_store.h"

namespace tp::cli {
namespace {

constexpr std::string_view kVersion = "0.1.0";

struct ServeOptions {
  std::string config_path;
  std::string listen;
  std::string data_dir = "./var";
  int threads = -1;
};

// An exclusive lock on DATA_DIR/turnpike.lock, and on STORE_FILE.lock for a SQLite store
// (another data directory's gateway may name the same file by its absolute path):
// `serve` holds them for its whole life and offline changes take them too, so nothing
// writes a store beside a live gateway (each keeps its books in memory, and both would
// append transfers). Read-only commands do not need them.
class DataDirLock {
 public:
  // `for_serve`: the refusal tells a second gateway what holds the directory, rather than
  // pointing an offline change at the admin API.
  static Result<DataDirLock> acquire(const std::string& data_dir, const std::string& store_uri,
                                     bool for_serve = false) {
    std::error_code ec;
    std::filesystem::create_directories(data_dir, ec);
    if (ec) {
      return Status{ErrorKind::kInternal,
                    fmt::format("cannot create the data directory {}: {}", data_dir, ec.message())};
    }
    DataDirLock lock;
    struct Held {
      std::string lock;  // the lock file
      std::string what;  // what it guards, as the refusal names it
      std::string own;   // what a second gateway must have of its own
    };
    std::vector<Held> paths = {{data_dir + "/turnpike.lock", data_dir, "--data-dir"}};
    if (store_uri.starts_with("sqlite:")) {
      // Named by the file's real path: a symbolic link to a live gateway's store (or a path
      // through one) must find that gateway's lock, not a lock of its own.
      const std::string file = api::sqlite_file(store_uri, data_dir);
      const std::filesystem::path real = std::filesystem::weakly_canonical(file, ec);
      paths.push_back({(ec ? file : real.string()) + ".lock", "the store " + store_uri.substr(7),
                       "store (in the config)"});
    }
    for (const auto& [path, what, own] : paths) {
      const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
      if (fd < 0) {
        return Status{ErrorKind::kInternal, fmt::format("cannot open {}: {}", path,
                                                        std::strerror(errno))};
      }
      lock.fds_.push_back(fd);
      if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
        const std::string advice =
            for_serve ? fmt::format(
                            "(another gateway, or an offline command): one gateway "
                            "serves a store; give this one its own {}",
                            own)
                      : "(serve or another offline command); change a live gateway through "
                        "the admin API";
        return Status{ErrorKind::kConflict,
                      fmt::format("{} is in use by a running turnpike {}", what, advice)};
      }
    }
    return lock;
  }
  DataDirLock(DataDirLock&& other) noexcept : fds_(std::move(other.fds_)) { other.fds_.clear(); }
  DataDirLock& operator=(DataDirLock&&) = delete;
  ~DataDirLock() {
    for (const int fd : fds_) ::close(fd);  // releases the locks
  }

 private:
  DataDirLock() = default;
  std::vector<int> fds_;
};

// The routing rules of `config` that match an account `directory` does not hold: each
// matches no request until that account is created (a mistyped id fails open).
std::vector<std::string> unknown_rule_accounts(const ops::Config& config,
                                               const auth::Directory& directory) {
  std::vector<std::string> warnings;
  for (const router::Rule& rule : config.rules) {
    if (rule.account && !directory.account(*rule.account)) {
      warnings.push_back(
          fmt::format("routing rule '{}' matches account acct_{}, which does not "
                      "exist: it applies to no request until that account is "
                      "created",
                      rule.name, *rule.account));
    }
  }
  return warnings;
}

// The settings a reload leaves at their start-up values (see routing.md, Reload) that the
// file `fresh` now gives otherwise than `started` did.
std::vector<std::string_view> kept_until_restart(const ops::Config& started,
                                                 const ops::Config& fresh) {
  std::vector<std::string_view> kept;
  if (started.listen_host != fresh.listen_host || started.listen_port != fresh.listen_port) {
    kept.push_back("listen");
  }
  if (started.threads != fresh.threads) kept.push_back("threads");
  if (started.store != fresh.store) kept.push_back("store");
  if (started.redis != fresh.redis) kept.push_back("redis");
  if (started.log_level != fresh.log_level || started.access_log != fresh.access_log) {
    kept.push_back("log");
  }
  if (!(started.server == fresh.server)) kept.push_back("limits");
  if (started.cors_origins != fresh.cors_origins) kept.push_back("cors");
  if (started.upstream_idle_connections_max != fresh.upstream_idle_connections_max) {
    kept.push_back("upstream.idle_connections_max");
  }
  ops::Billing billing = started.billing;
  billing.hold_timeout_ms = fresh.billing.hold_timeout_ms;  // reloaded
  if (!(billing == fresh.billing)) kept.push_back("billing (all but hold_timeout_ms)");
  return kept;
}

// What a config must pass besides loading for serve to start on it: its CA files read, its
// store one this build has. check-config and a reload ask the same.
Status check_beyond_load(const ops::Config& config) {
  if (Status s = api::check_trust_stores(config); !s) return s;
  return api::check_store_uri(config.store);
}

// Below this many characters the admin key is warned of at start.
constexpr std::size_t kAdminKeyAdvisedMin = 16;

int serve(const ServeOptions& opts) {
  // Until the server takes them (http::Server::run), SIGTERM, SIGINT and SIGHUP wait: one
  // that comes during start-up is acted on once serving, rather than ending the process by
  // its default action. Every thread started from here inherits the mask.
  http::Server::hold_signals();
  auto loaded = ops::load_config(opts.config_path);
  if (!loaded) {
    std::fprintf(stderr, "turnpike: config error: %s\n", loaded.status().message().c_str());
    return 2;
  }
  ops::Config& config = loaded.value();
  const ops::Config from_file = config;  // before the flags override it (for reloads)
  bool level_ok = false;
  log::set_level(log::parse_level(config.log_level, &level_ok));
  auto warn = [](const std::vector<std::string>& warnings) {
    for (const std::string& w : warnings) log::warn("config", {{"warning", w}});
  };
  warn(config.warnings);
  if (!opts.listen.empty()) {
    if (auto s = ops::parse_listen(opts.listen, config.listen_host, config.listen_port); !s) {
      std::fprintf(stderr, "turnpike: --listen: %s\n", s.message().c_str());
      return 2;
    }
  }
  if (opts.threads >= 0) config.threads = opts.threads;
  const int threads = config.threads > 0
                          ? config.threads
                          : static_cast<int>(std::max(1U, std::thread::hardware_concurrency()));

  std::error_code ec;
  std::filesystem::create_directories(opts.data_dir, ec);
  if (ec) {
    std::fprintf(stderr, "turnpike: --data-dir %s: %s\n", opts.data_dir.c_str(),
                 ec.message().c_str());
    return 2;
  }
  auto data_dir_lock = DataDirLock::acquire(opts.data_dir, config.store, /*for_serve=*/true);
  if (!data_dir_lock) {
    std::fprintf(stderr, "turnpike: %s\n", data_dir_lock.status().message().c_str());
    return 2;
  }

  // limits.io_spin_us: 0 stops the writer's spin as well as the I/O threads'.
  const auto writer_spin = config.server.io_spin_us == 0 ? std::chrono::microseconds(0)
                                                         : store::kWriterSpin;
  auto services =
      api::open_services(config.store, opts.data_dir, config.billing.trial_credit, writer_spin);
  if (!services) {
    std::fprintf(stderr, "turnpike: %s\n", services.status().message().c_str());
    return 2;
  }
  const std::shared_ptr<store::Writer> writer = services->writer;
  // A rule's account can be looked up once the store is open.
  const std::shared_ptr<const auth::Directory> directory = services->directory;
  warn(unknown_rule_accounts(config, *directory));
  auto maintenance = api::Maintenance::start(services.value(), config.billing);
  if (!maintenance) {
    std::fprintf(stderr, "turnpike: %s\n", maintenance.status().message().c_str());
    return 2;
  }
  if (services->admin_key.empty()) {
    log::warn("admin API disabled: TURNPIKE_ADMIN_KEY is not set, or empty");
  } else if (services->admin_key.size() < kAdminKeyAdvisedMin) {
    // (Its length only: the key itself is never logged.)
    log::warn("TURNPIKE_ADMIN_KEY is short: whoever reaches the port could guess it; use 32 or "
              "more random characters (openssl rand -hex 24)",
              {{"length", static_cast<std::int64_t>(services->admin_key.size())}});
  }
  if (!config.redis.empty()) {
    // (The URL itself is not logged: it may carry a password.)
    log::warn("redis is configured but not used yet: key limits are per gateway process, not "
              "cluster-wide");
  }
  auto state = api::GatewayState::create(config, std::move(services.value()));
  if (!state) {
    std::fprintf(stderr, "turnpike: %s\n", state.status().message().c_str());
    return 2;
  }
  const auto hub = std::make_shared<api::StateHub>(std::move(state.value()));
  std::unique_ptr<api::Prober> prober = api::Prober::start(hub->current());
  http::Server server(config.server, api::make_gateway_factory(hub));
  // SIGHUP: providers, models and routing from the config file again, swapped in whole.
  server.on_hangup([&] {
    auto fresh = ops::load_config(opts.config_path);
    // Refused as check-config and a restart would refuse it, though the settings that fail
    // (the store, a webhook's CA file) keep their start-up values: the next restart
    // must not find a file that stops it.
    if (fresh) {
      if (Status s = check_beyond_load(*fresh); !s) fresh = s;
    }
    if (!fresh) {
      log::error("config reload failed; the running config stays",
                 {{"error", fresh.status().message()}});
      return;
    }
    // The probes stop first, so that the marks the new state carries over are their last.
    if (prober) prober->stop();
    auto next = api::reload_state(*hub->current(), *fresh);
    if (!next) {
      log::error("config reload failed; the running config stays",
                 {{"error", next.status().message()}});
      prober = api::Prober::start(hub->current());
      return;
    }
    warn(fresh->warnings);
    warn(unknown_rule_accounts(*fresh, *directory));
    hub->publish(std::move(next.value()));
    prober = api::Prober::start(hub->current());
    log::info("config reloaded: providers, models, routing, upstream timeouts and the hold "
              "timeout (other settings need a restart)",
              {{"models", fresh->catalog->models().size()},
               {"providers", fresh->catalog->providers().size()},
               {"rules", fresh->rules.size()}});
    if (const auto kept = kept_until_restart(from_file, *fresh); !kept.empty()) {
      log::warn(
          "config reload: changed settings that keep their start-up values until a "
          "restart",
          {{"settings", fmt::format("{}", fmt::join(kept, ", "))}});
    }
  });
  // A replaced state (its upstream pools, resolver thread and statistics) is freed within
  // a few seconds of its last request, not only at the next reload.
  server.every(std::chrono::seconds(2), [&] { hub->prune(); });
  if (auto s = server.listen(config.listen_host, config.listen_port, threads); !s) {
    std::fprintf(stderr, "turnpike: %s\n", s.message().c_str());
    return 1;
  }
  // Written at every log level: the port may have been picked (port 0).
  log::write_always(log::Level::kInfo, "listening",
                    {{"host", config.listen_host},
                     {"port", static_cast<int>(server.port())},
                     {"threads", threads},
                     {"models", config.catalog->models().size()},
                     {"providers", config.catalog->providers().size()},
                     {"rules", config.rules.size()},
                     {"data_dir", opts.data_dir},
                     {"store", api::sqlite_file(config.store, opts.data_dir)},
                     {"version", kVersion}});
  server.run();
  if (prober) prober->stop();
  // Every I/O thread has stopped. Maintenance stops its thread and the webhook notifier,
  // then has the writer store what waits in memory; both go before the writer, so that
  // their last writes (a delivery's outcome, what a failed commit left) still reach the
  // store. The writer then finishes what is queued before the threads' inboxes go away with
  // the server.
  (*maintenance)->stop();
  writer->stop();
  log::info("stopped");
  return 0;
}

// Opens the store of `data_dir` for an offline change: one transaction, committed on
// success. A running gateway keeps its own copy of accounts and keys in memory and sees
// offline changes only after a restart; use the admin API against a running gateway.
struct OfflineStore {
  std::unique_ptr<store::Database> db;
  std::unique_ptr<auth::Directory> directory;
  std::unique_ptr<ledger::Bank> bank;
  // Set by a change that is a refusal to keep (an idempotency key's refused call): it is
  // committed, and reported as the command's error.
  std::string refusal;
};

Result<OfflineStore> open_offline(const std::string& store_uri, const std::string& data_dir) {
  if (!store_uri.starts_with("sqlite:")) {
    return Status{ErrorKind::kInvalidRequest, "only sqlite: stores are supported offline"};
  }
  std::error_code ec;
  std::filesystem::create_directories(data_dir, ec);
  auto db = store::open_sqlite(api::sqlite_file(store_uri, data_dir));
  if (!db) return db.status();
  if (auto s = store::migrate(**db); !s) return s;
  // One snapshot for all the reads: a gateway may be committing beside a read-only tool.
  if (auto s = (*db)->exec("BEGIN"); !s) return s;
  auto directory = auth::Directory::load(**db);
  ledger::Ledger journal;
  const Status loaded = directory ? store::load_ledger(**db, journal) : directory.status();
  (void)(*db)->exec("COMMIT");
  if (!loaded) return loaded;
  auto bank = ledger::Bank::adopt(std::move(journal), SystemClock::instance().unix_millis());
  if (!bank) return bank.status();
  return OfflineStore{std::move(db.value()), std::move(directory.value()), std::move(bank.value())};
}

// The file of an existing store, for a read-only tool (which creates nothing): an error
// when it is not there, or cannot be looked at (a directory the user may not enter).
Result<std::string> existing_store_file(const std::string& store_uri, const std::string& data_dir) {
  if (!store_uri.starts_with("sqlite:")) {
    return Status{ErrorKind::kInvalidRequest, "only sqlite: stores are supported"};
  }
  const std::string path = api::sqlite_file(store_uri, data_dir);
  std::error_code ec;
  const bool there = std::filesystem::exists(path, ec);
  if (ec) {
    return Status{ErrorKind::kInternal, fmt::format("cannot read {}: {}", path, ec.message())};
  }
  if (!there) return Status{ErrorKind::kNotFound, fmt::format("no store: {} does not exist", path)};
  return path;
}

// Whether an offline change may make the store it names. Only creating an account may: a
// mistyped --data-dir must not turn into a new, empty store that later commands then find.
enum class NewStore { kRefused, kMade };

// Runs `change` in one transaction and prints its JSON answer. Exit 0, or 1 with the error;
// 2 when the store is missing and `new_store` refuses to make it.
int offline_change(const std::string& store_uri, const std::string& data_dir,
                   const std::function<Result<std::string>(OfflineStore&)>& change,
                   NewStore new_store = NewStore::kRefused) {
  // Before the lock, which makes the directory.
  if (new_store == NewStore::kRefused && store_uri.starts_with("sqlite:")) {
    if (auto file = existing_store_file(store_uri, data_dir); !file) {
      std::fprintf(stderr, "turnpike: %s (is --data-dir the gateway's?)\n",
                   file.status().message().c_str());
      return 2;
    }
  }
  auto lock = DataDirLock::acquire(data_dir, store_uri);
  if (!lock) {
    std::fprintf(stderr, "turnpike: %s\n", lock.status().message().c_str());
    return 1;
  }
  auto opened = open_offline(store_uri, data_dir);
  if (!opened) {
    std::fprintf(stderr, "turnpike: %s\n", opened.status().message().c_str());
    return 1;
  }
  OfflineStore& st = opened.value();
  if (auto s = st.db->exec("BEGIN IMMEDIATE"); !s) {
    std::fprintf(stderr, "turnpike: %s\n", s.message().c_str());
    return 1;
  }
  auto answer = change(st);
  if (answer) {
    const Status persisted = store::persist_bank(*st.db, *st.bank);
    if (!persisted) answer = persisted;
  }
  if (!answer || !st.db->exec("COMMIT")) {
    (void)st.db->exec("ROLLBACK");
    std::fprintf(stderr, "turnpike: %s\n",
                 answer ? "commit failed" : answer.status().message().c_str());
    return 1;
  }
  if (!st.refusal.empty()) {
    std::fprintf(stderr, "turnpike: %s\n", st.refusal.c_str());
    return 1;
  }
  std::printf("%s\n", answer->c_str());
  return 0;
}

std::int64_t now_ms() { return SystemClock::instance().unix_millis(); }

// Opens an existing store for a read-only tool (WAL lets it read beside a live gateway).
Result<std::unique_ptr<store::Database>> open_existing_store(const std::string& store_uri,
                                                             const std::string& data_dir) {
  auto path = existing_store_file(store_uri, data_dir);
  if (!path) return path.status();
  return store::open_sqlite(*path);
}

// Runs `read` on the store of `data_dir` and prints its JSON answer; changes nothing, so it
// may run beside a live gateway (whose holds in flight it does not see). Exit 0, 1 with the
// read's refusal (an unknown account), or 2 when the store cannot be opened or read.
int offline_read(const std::string& store_uri, const std::string& data_dir,
                 const std::function<Result<std::string>(OfflineStore&)>& read) {
  const Result<std::string> file = existing_store_file(store_uri, data_dir);
  auto opened = file ? open_offline(store_uri, data_dir) : Result<OfflineStore>(file.status());
  if (!opened) {
    std::fprintf(stderr, "turnpike: %s\n", opened.status().message().c_str());
    return 2;
  }
  auto answer = read(opened.value());
  if (!answer) {
    std::fprintf(stderr, "turnpike: %s\n", answer.status().message().c_str());
    return 1;
  }
  std::printf("%s\n", answer->c_str());
  return 0;
}

// A comma-separated option as its items ("" is none).
std::vector<std::string> split_list(std::string_view rest) {
  std::vector<std::string> out;
  if (rest.empty()) return out;
  // Empty items stay ("a,,b" has one), for the Directory's checks to refuse as the admin
  // API refuses [""]: "," must not pass for an empty list.
  for (;;) {
    const std::size_t comma = rest.find(',');
    out.emplace_back(rest.substr(0, comma));
    if (comma == std::string_view::npos) break;
    rest.remove_prefix(comma + 1);
  }
  return out;
}

// "acct_12" or "12" → 12; 0 when malformed (no record has id 0).
std::int64_t id_of(std::string_view ref, std::string_view prefix) {
  return parse_numbered_id(ref, prefix).value_or(0);
}

// The key id `ref` names ("key_12" or "12"), or kNotFound naming `ref`.
Result<std::int64_t> key_id_of(std::string_view ref) {
  if (const auto id = parse_numbered_id(ref, "key_")) return *id;
  return Status{ErrorKind::kNotFound, fmt::format("no key '{}'", ref.substr(0, 40))};
}

// The account `ref` names, or kNotFound.
Result<auth::Account> find_account(const OfflineStore& st, std::string_view ref) {
  auto account = st.directory->account(id_of(ref, "acct_"));
  if (!account) {
    return Status{ErrorKind::kNotFound, fmt::format("no account '{}'", ref.substr(0, 40))};
  }
  return *account;
}

// Options of `turnpike accounts credit|refund`.
struct MoneyOptions {
  std::string account;
  std::string amount_usd;
  std::string kind = "paid";
  std::string expires_at;
  std::string idempotency_key;
  std::string config;  // whose billing.low_balance_usd applies
};

// `accounts credit` (deposit) or `accounts refund`, idempotent like the admin API's.
int money_call(std::string store_uri, bool store_given, const std::string& data_dir,
               const MoneyOptions& o, bool refund) {
  auto amount = Money::parse(o.amount_usd);
  if (!amount || *amount <= Money()) {
    std::fprintf(stderr, "turnpike: --amount-usd must be a positive USD amount like 12.50\n");
    return 2;
  }
  if (*amount > Money::usd(limits::kMoneyCallUsdMax)) {
    std::fprintf(stderr, "turnpike: --amount-usd may be at most %lld USD per call\n",
                 static_cast<long long>(limits::kMoneyCallUsdMax));
    return 1;  // past the admin API's limit, as a refusal is
  }
  if (o.idempotency_key.empty() || o.idempotency_key.size() > 200) {
    std::fprintf(stderr, "turnpike: --idempotency-key is required (1 to 200 bytes)\n");
    return 2;
  }
  std::optional<std::int64_t> expires_ms;
  if (!o.expires_at.empty() && (refund || o.kind != "promo")) {
    std::fprintf(stderr, "turnpike: --expires-at is for promo credit only\n");
    return 2;
  }
  if (!o.expires_at.empty()) {
    expires_ms = parse_rfc3339(o.expires_at);
    if (!expires_ms) {
      std::fprintf(stderr, "turnpike: --expires-at must be RFC 3339 like 2026-12-31T23:59:59Z\n");
      return 2;
    }
  }
  // (Whether it is still in the future is the deposit's check, after the key's lookup: a
  // retry of a call that succeeded gets its answer.)
  if (!refund && o.kind == "promo" && !expires_ms) {
    std::fprintf(stderr, "turnpike: promo credit needs an --expires-at\n");
    return 2;
  }
  // A refund may take an account below a low-balance threshold, as over the admin API: the
  // notice is recorded with the change, and the gateway delivers it when it next starts.
  std::vector<Money> thresholds = ops::Billing{}.low_balance;
  if (!o.config.empty()) {
    auto config = ops::load_config(o.config);
    if (!config) {
      std::fprintf(stderr, "turnpike: config error: %s\n", config.status().message().c_str());
      return 2;
    }
    thresholds = config->billing.low_balance;
    if (!store_given) store_uri = config->store;  // the gateway's own store
  }
  return offline_change(store_uri, data_dir, [&](OfflineStore& st) -> Result<std::string> {
    auto account = find_account(st, o.account);
    if (!account) return account.status();
    const std::int64_t id = account->id;
    const ledger::CreditKind kind = o.kind == "trial"   ? ledger::CreditKind::kTrial
                                    : o.kind == "promo" ? ledger::CreditKind::kPromo
                                                        : ledger::CreditKind::kPaid;
    st.bank->set_low_balance_thresholds(thresholds);
    // Promo lots that expired while no gateway ran go first, raising their notices once, as
    // a gateway's start would: left in the books, every later change would raise the drop
    // again (a credit too).
    (void)st.bank->expire(now_ms(), SystemClock::instance().monotonic_millis());
    store::NoticeRecorder notices;
    const std::function<Result<ledger::TransferId>()> move = [&] {
      return refund ? st.bank->refund(id, *amount, now_ms())
                    : st.bank->deposit(id, kind, *amount, expires_ms, now_ms());
    };
    const std::string request = refund ? api::refund_request(id, *amount)
                                       : api::credit_request(id, o.kind, *amount, expires_ms);
    auto answer = api::idempotent_move(*st.db, nullptr, *st.bank, o.idempotency_key, request, id,
                                       move);
    if (!answer) return answer.status();
    if (Status s = notices.record(*st.db, *st.bank); !s) return s;
    if (answer->status != 200) {  // refused by the books, now or under this key before
      st.refusal = api::error_message(answer->body);
      if (st.refusal.empty()) st.refusal = "refused";
      return std::string();
    }
    return answer->body;
  });
}

// Reads the store directly (WAL allows it while a gateway runs) and prints the same answer
// as GET /admin/v1/ledger/verify. Exit 0 when the books balance, 1 when not, 2 on error.

int verify_ledger(const std::string& store_uri, const std::string& data_dir) {
  auto db = open_existing_store(store_uri, data_dir);
  if (!db) {
    std::fprintf(stderr, "turnpike: ledger verify: %s\n", db.status().message().c_str());
    return 2;
  }
  ledger::Ledger ledger;
  // One snapshot: a live gateway may commit between the reads of accounts and transfers.
  Result<std::vector<std::string>> problems = std::vector<std::string>{};
  Status loaded = (*db)->exec("BEGIN") ? store::load_ledger(**db, ledger)
                                       : Status{ErrorKind::kInternal, "cannot read"};
  if (loaded) {
    problems = store::check_books(**db);
    if (!problems) loaded = problems.status();
  }
  (void)(*db)->exec("COMMIT");
  if (!loaded && loaded.kind() == ErrorKind::kConflict) {
    // Books that cannot even be replayed: the first of the problems verify exists to find.
    problems = std::vector<std::string>{
        fmt::format("reading the stored ledger failed: {}", loaded.message())};
  } else if (!loaded) {
    std::fprintf(stderr, "turnpike: %s\n", loaded.message().c_str());
    return 2;
  }
  const ledger::VerifyReport report = loaded ? ledger.verify() : ledger::VerifyReport{};
  const bool ok = loaded && report.ok && problems->empty();
  std::string out;
  json::Writer w(out);
  w.begin_object().field("ok", ok).field("transfers", static_cast<std::int64_t>(report.transfers));
  w.field("imbalance_usd", report.imbalance.to_string()).key("problems").begin_array();
  for (const std::string& p : *problems) w.value(p);
  w.end_array().end_object();
  std::printf("%s\n", out.c_str());
  return ok ? 0 : 1;
}

// Prints one page of the usage log, as GET /api/usage answers an admin. Read-only: may run
// beside a live gateway. Exit 0, 1 on a bad query, 2 on a store error.
int print_usage_log(const std::string& store_uri, const std::string& data_dir,
                    const http::QueryParams& params) {
  auto query = api::parse_usage_query(params, std::nullopt);
  if (!query) {
    std::fprintf(stderr, "turnpike: usage: %s\n", query.status().message().c_str());
    return 1;
  }
  auto db = open_existing_store(store_uri, data_dir);
  if (!db) {
    std::fprintf(stderr, "turnpike: usage: %s\n", db.status().message().c_str());
    return 2;
  }
  const std::size_t limit = query->limit;
  query->limit = limit + 1;  // one more tells whether a next page exists
  auto page = store::query_usage(**db, *query);
  if (!page) {
    std::fprintf(stderr, "turnpike: %s\n", page.status().message().c_str());
    return 2;
  }
  std::printf("%s\n", api::usage_page_json(*page, limit).c_str());
  return 0;
}

// Refuses an empty value, for options whose code takes "" as left out: given empty
// (`--models "$MODELS"` with MODELS unset), such an option is a usage error, not its default,
// which is often the widest (every model, the built-in billing settings, the config's listen).
const CLI::Validator kNotEmpty(
    [](const std::string& value) {
      return value.empty() ? std::string("must not be empty; leave the option out for its default")
                           : std::string();
    },
    "");

// An integer option's value, before its range is checked (which would call "abc" out of
// range): digits only.
const CLI::Validator kWholeNumber(
    [](const std::string& value) {
      const bool digits = !value.empty() && std::all_of(value.begin(), value.end(), [](char c) {
        return c >= '0' && c <= '9';
      });
      return digits ? std::string() : "must be a whole number, got '" + value.substr(0, 40) + "'";
    },
    "");

}  // namespace

int run_turnpike(int argc, char** argv) {
  // The store, its log and the data directory hold the ledger and key digests: the user's
  // only.
  ::umask(077);
  CLI::App app{"Turnpike: a self-hosted LLM inference gateway.\n"
               "Serves the OpenAI and Anthropic APIs and forwards to configured providers.",
               "turnpike"};
  app.require_subcommand(1);

  ServeOptions serve_opts;
  CLI::App* serve_cmd = app.add_subcommand(
      "serve", "Run the gateway until SIGTERM or SIGINT (SIGHUP rereads the config file)");
  serve_cmd->add_option("--config,-c", serve_opts.config_path, "YAML config file (docs/config.md)")
      ->required();
  serve_cmd
      ->add_option("--listen", serve_opts.listen,
                   "HOST:PORT to listen on; overrides the config's listen (default "
                   "127.0.0.1:8080; port 0 picks a free port, logged at start)")
      ->check(kNotEmpty);
  serve_cmd->add_option("--data-dir", serve_opts.data_dir,
                        "Directory for the embedded store and secrets")
      ->capture_default_str()
      ->check(kNotEmpty);
  serve_cmd->add_option("--threads", serve_opts.threads,
                        "I/O threads; overrides the config (0: one per core)")
      ->check(kWholeNumber)
      ->check(CLI::Range(0, 256));

  std::string check_path;
  CLI::App* check_cmd = app.add_subcommand("check-config", "Validate a config file and exit");
  check_cmd->add_option("config", check_path, "YAML config file")->required();

  std::string ledger_data_dir = "./var";
  std::string ledger_store = "sqlite:turnpike.db";
  CLI::App* ledger_cmd = app.add_subcommand("ledger", "Ledger tools");
  CLI::App* verify_cmd = ledger_cmd->add_subcommand(
      "verify",
      "Recompute every balance from the stored transfers and check that they sum to zero, "
      "that no book is below its floor, and that each request's charges match its usage row");
  verify_cmd->add_option("--data-dir", ledger_data_dir, "Data directory")
      ->capture_default_str()
      ->check(kNotEmpty);
  verify_cmd->add_option("--store", ledger_store, "Store (as in the config's `store`)")
      ->capture_default_str();
  ledger_cmd->require_subcommand(1);

  // Offline account and key management on a data directory (see offline_change).
  std::string offline_dir = "./var";
  std::string offline_store = "sqlite:turnpike.db";
  std::string account_name, account_kind = "customer", trial_usd = "20", account_ref, key_name;
  std::string account_config;
  std::string key_models, key_ref, account_tier = "community", key_tier = "community", key_tags;
  auto offline_options = [&](CLI::App* cmd) {
    cmd->add_option("--data-dir", offline_dir, "Data directory")
        ->capture_default_str()
        ->check(kNotEmpty);
    cmd->add_option("--store", offline_store, "Store (as in the config's `store`)")
        ->capture_default_str();
  };
  CLI::App* accounts_cmd =
      app.add_subcommand("accounts",
                         "Accounts, offline on a data directory no gateway is running on (changes "
                         "refuse to run beside one: use the admin API to change a live gateway's; "
                         "reads work beside it)");
  CLI::App* account_create = accounts_cmd->add_subcommand("create", "Create an account");
  account_create->add_option("--name", account_name, "Account name")->required();
  account_create->add_option("--kind", account_kind, "customer or operator")
      ->check(CLI::IsMember({"customer", "operator"}))
      ->capture_default_str();
  CLI::Option* trial_option =
      account_create
          ->add_option("--trial-usd", trial_usd,
                       "Trial credit for a customer (default: the --config's billing.trial_usd, "
                       "else 20; 0 grants none)")
          ->capture_default_str();
  account_create
      ->add_option("--config", account_config,
                   "Gateway config whose billing.trial_usd applies (as the admin API's "
                   "account creation does), and whose `store` is used unless --store is given")
      ->check(kNotEmpty);
  account_create->add_option("--privacy-tier", account_tier,
                             "Loosest provider tier its requests may use (a request may only "
                             "tighten it): confidential, cloud or community")
      ->check(CLI::IsMember({"confidential", "cloud", "community"}))
      ->capture_default_str();
  offline_options(account_create);
  CLI::App* account_list = accounts_cmd->add_subcommand("list", "Every account (read-only)");
  offline_options(account_list);
  std::string account_id;
  auto account_arg = [&](CLI::App* cmd) {
    cmd->add_option("account", account_id, "Account id (acct_N)")->required();
    offline_options(cmd);
  };
  CLI::App* account_show =
      accounts_cmd->add_subcommand("show", "An account with its keys (read-only)");
  account_arg(account_show);
  CLI::App* account_balance = accounts_cmd->add_subcommand(
      "balance", "An account's balance as stored (read-only; a live gateway's holds not counted)");
  account_arg(account_balance);
  CLI::App* account_suspend = accounts_cmd->add_subcommand("suspend", "Refuse the account's keys");
  account_arg(account_suspend);
  CLI::App* account_unsuspend =
      accounts_cmd->add_subcommand("unsuspend", "Accept the account's keys again");
  account_arg(account_unsuspend);
  std::string policy_tier, policy_weights, policy_models;
  CLI::App* account_policy = accounts_cmd->add_subcommand(
      "policy", "Set the account's routing policy (docs/routing.md)");
  account_arg(account_policy);
  account_policy
      ->add_option("--privacy-tier", policy_tier,
                   "Loosest provider tier its requests may use: confidential, cloud or community")
      ->check(CLI::IsMember({"confidential", "cloud", "community"}));
  account_policy
      ->add_option("--models", policy_models,
                   "Model allowlist for every key of the account, comma-separated, or 'all'")
      ->check(kNotEmpty);
  account_policy
      ->add_option("--weights", policy_weights,
                   "Routing weights QUALITY,COST,LATENCY (each 0..1), or 'none' to "
                   "use the config's")
      ->check(kNotEmpty);
  MoneyOptions money;
  auto money_options = [&](CLI::App* cmd) {
    cmd->add_option("account", money.account, "Account id (acct_N)")->required();
    cmd->add_option("--amount-usd", money.amount_usd, "Amount in USD, e.g. 25 or 0.50")
        ->required();
    cmd->add_option("--idempotency-key", money.idempotency_key,
                    "Repeating a call with the same key and values returns the first result; "
                    "other values are refused")
        ->required();
    cmd->add_option("--config", money.config,
                    "Gateway config whose billing.low_balance_usd thresholds apply (default 5, "
                    "1 and 0 USD): a change that crosses one records a notice, delivered when "
                    "the gateway next starts (within a day); its `store` is used unless "
                    "--store is given")
        ->check(kNotEmpty);
    offline_options(cmd);
  };
  CLI::App* account_credit = accounts_cmd->add_subcommand("credit", "Add credit (idempotent)");
  money_options(account_credit);
  account_credit->add_option("--kind", money.kind, "paid, trial or promo")
      ->check(CLI::IsMember({"paid", "trial", "promo"}))
      ->capture_default_str();
  account_credit
      ->add_option("--expires-at", money.expires_at, "RFC 3339 UTC expiry (required for promo)")
      ->check(kNotEmpty);
  CLI::App* account_refund = accounts_cmd->add_subcommand(
      "refund", "Refund unused paid credit (idempotent; never trial or promo)");
  money_options(account_refund);
  accounts_cmd->require_subcommand(1);
  CLI::App* keys_cmd = app.add_subcommand("keys", "API keys, offline on a data directory");
  CLI::App* key_create = keys_cmd->add_subcommand("create", "Create a key; prints it once");
  key_create->add_option("--account", account_ref, "Account id (acct_N)")->required();
  key_create->add_option("--name", key_name, "Key name");
  key_create->add_option("--models", key_models, "Comma-separated model allowlist")
      ->check(kNotEmpty);
  key_create->add_option("--privacy-tier", key_tier,
                         "Loosest provider tier for this key; the account's applies if tighter")
      ->check(CLI::IsMember({"confidential", "cloud", "community"}))
      ->capture_default_str();
  key_create->add_option("--tags", key_tags, "Comma-separated tags (matched by routing rules)")
      ->check(kNotEmpty);
  std::int64_t key_expires_in = 0;
  key_create->add_option("--expires-in", key_expires_in,
                         "Seconds until the key expires (at most 100 years; default: never)")
      ->check(kWholeNumber)
      ->check(CLI::Range(std::int64_t{1}, api::kKeyLifetimeSecondsMax));
  std::int64_t key_rpm = 0;
  std::int64_t key_tpm = 0;
  std::string key_budget;
  key_create->add_option("--rpm", key_rpm, "Requests per minute at most (default: no limit)")
      ->check(kWholeNumber)
      ->check(CLI::Range(std::int64_t{1}, limits::kKeyRateMax));
  key_create->add_option("--tpm", key_tpm,
                         "Tokens (input and output) per minute at most (default: no limit)")
      ->check(kWholeNumber)
      ->check(CLI::Range(std::int64_t{1}, limits::kKeyRateMax));
  key_create->add_option("--budget-usd", key_budget,
                         "What the key's requests may cost over its life, e.g. 25 or 0.50 "
                         "(default: no budget)");
  offline_options(key_create);
  CLI::App* key_list =
      keys_cmd->add_subcommand("list", "An account's keys, by their last 4 characters (read-only)");
  key_list->add_option("--account", account_ref, "Account id (acct_N)")->required();
  offline_options(key_list);
  CLI::App* key_revoke = keys_cmd->add_subcommand("revoke", "Revoke a key");
  key_revoke->add_option("key", key_ref, "Key id (key_N)")->required();
  offline_options(key_revoke);
  std::int64_t grace_seconds = 0;
  CLI::App* key_rotate = keys_cmd->add_subcommand(
      "rotate", "A new key for the same account, name, models, policy and tags; prints it once");
  key_rotate->add_option("key", key_ref, "Key id (key_N)")->required();
  key_rotate->add_option("--grace-seconds", grace_seconds,
                         "How long the old key keeps working (0 to 2592000)")
      ->required()
      ->check(kWholeNumber)
      ->check(CLI::Range(0, 30 * 24 * 3600));
  offline_options(key_rotate);
  keys_cmd->require_subcommand(1);

  std::string usage_dir = "./var", usage_store = "sqlite:turnpike.db";
  CLI::App* usage_cmd = app.add_subcommand(
      "usage", "Print a page of the usage log as JSON (read-only; may run beside a gateway)");
  usage_cmd->add_option("--data-dir", usage_dir, "Data directory")
      ->capture_default_str()
      ->check(kNotEmpty);
  usage_cmd->add_option("--store", usage_store, "Store (as in the config's `store`)")
      ->capture_default_str();
  // GET /api/usage's parameters, by their names there; each is read as given.
  const auto usage_param = [&](const char* flag, const std::string& help) {
    return usage_cmd->add_option(flag, help)->type_name("TEXT");
  };
  const std::pair<const char*, CLI::Option*> usage_params[] = {
      {"account", usage_param("--account", "Only this account (acct_N); default all")},
      {"from", usage_param("--from", "From this time (RFC 3339, inclusive)")},
      {"to", usage_param("--to", "Up to this time (RFC 3339, exclusive)")},
      {"limit", usage_param("--limit", "Rows per page, 1 to 1000 (default 100)")},
      {"cursor", usage_param("--cursor", "next_cursor of the previous page")},
  };

  app.add_subcommand("version", "Print the version");
  app.set_version_flag("--version", "turnpike " + std::string(kVersion), "Print the version");

  // CONTRACT.md's subcommands that later work brings: named, so that asking for one says
  // what is missing instead of "a subcommand is required".
  std::vector<std::pair<CLI::App*, std::string_view>> not_built;
  for (const auto& [name, what] : std::vector<std::pair<const char*, std::string_view>>{
           {"mcp", "the MCP server"},
           {"audit", "the audit log (audit verify, audit export)"},
           {"config", "signed configs (config sign, config verify)"}}) {
    CLI::App* cmd = app.add_subcommand(name, std::string("Not built yet: ") + std::string(what));
    cmd->allow_extras();
    not_built.emplace_back(cmd, what);
  }

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // --help and --version end here too (exit 0).
    if (e.get_exit_code() == 0) return app.exit(e);
    std::string given = "turnpike";  // the command as far as it was understood
    for (const CLI::App* at = &app; !at->get_subcommands().empty();) {
      at = at->get_subcommands().front();
      given += " " + at->get_name();
    }
    // A mistyped command ("turnpike ledger verfy") is named, not reported as a missing one.
    if (dynamic_cast<const CLI::RequiredError*>(&e) != nullptr) {
      if (const std::vector<std::string> rest = app.remaining(true); !rest.empty()) {
        std::fprintf(stderr, "turnpike: unknown command '%s'; see %s --help\n",
                     rest.front().substr(0, 60).c_str(), given.c_str());
        return 2;
      }
    }
    // Every usage error exits 2, in one line.
    std::fprintf(stderr, "%s: %s; see %s --help\n", given.c_str(), e.what(), given.c_str());
    return 2;
  }
  for (const auto& [cmd, what] : not_built) {
    if (*cmd) {
      std::fprintf(stderr, "turnpike: %s is not built yet in this version\n",
                   std::string(what).c_str());
      return 2;
    }
  }

  if (*serve_cmd) return serve(serve_opts);
  if (*verify_cmd) return verify_ledger(ledger_store, ledger_data_dir);
  if (*usage_cmd) {
    http::QueryParams params;
    // Every option given goes to the query, empty or not, for the API's parser to refuse an
    // empty value as it refuses `?account=`: dropped, `--account "$ACCT"` with ACCT unset
    // would print every account's usage.
    for (const auto& [key, option] : usage_params) {
      if (option->count() > 0) params.emplace_back(key, option->as<std::string>());
    }
    return print_usage_log(usage_store, usage_dir, params);
  }
  if (*account_create) {
    auto trial = Money::parse(trial_usd);
    if (!trial || trial->is_negative() || *trial > Money::usd(limits::kMoneyCallUsdMax)) {
      std::fprintf(stderr, "turnpike: --trial-usd must be a non-negative amount up to %lld\n",
                   static_cast<long long>(limits::kMoneyCallUsdMax));
      return 2;
    }
    if (!account_config.empty()) {
      auto config = ops::load_config(account_config);
      if (!config) {
        std::fprintf(stderr, "turnpike: config error: %s\n", config.status().message().c_str());
        return 2;
      }
      if (trial_option->count() == 0) trial = config->billing.trial_credit;
      // The account goes where the gateway on that config looks for it.
      if (account_create->count("--store") == 0) offline_store = config->store;
    }
    return offline_change(
        offline_store, offline_dir,
        [&](OfflineStore& st) -> Result<std::string> {
          auth::RoutingPolicy policy;
          policy.privacy_tier = *catalog::parse_privacy_tier(account_tier);
          auto account = st.directory->create_account(*st.db, account_name, account_kind, "",
                                                      policy, now_ms());
          if (!account) return account.status();
          st.bank->open_wallet(account->id);
          if (account_kind == "customer" && *trial > Money()) {
            if (auto t = st.bank->deposit(account->id, ledger::CreditKind::kTrial, *trial,
                                          std::nullopt, now_ms());
                !t) {
              return t.status();
            }
          }
          return api::account_json(*account, nullptr);
        },
        NewStore::kMade);
  }
  if (*key_create) {
    auth::Directory::KeySpec spec{key_name, split_list(key_models), {}, split_list(key_tags),
                                  std::nullopt};
    spec.policy.privacy_tier = *catalog::parse_privacy_tier(key_tier);
    if (key_expires_in > 0) spec.expires_ms = now_ms() + key_expires_in * 1000;
    if (key_rpm > 0) spec.limits.rpm = key_rpm;
    if (key_tpm > 0) spec.limits.tpm = key_tpm;
    if (key_create->count("--budget-usd") > 0) {
      auto budget = Money::parse(key_budget);
      if (!budget || *budget <= Money() || *budget > Money::usd(limits::kMoneyCallUsdMax)) {
        std::fprintf(stderr,
                     "turnpike: --budget-usd must be a positive USD amount of at most %lld with "
                     "at most 9 decimals\n",
                     static_cast<long long>(limits::kMoneyCallUsdMax));
        return 2;
      }
      spec.limits.budget = *budget;
    }
    return offline_change(offline_store, offline_dir, [&](OfflineStore& st) -> Result<std::string> {
      auto secret = auth::open_server_secret(*st.db, offline_dir);
      if (!secret) return secret.status();
      const auth::KeyHasher hasher(*secret);
      auto account = find_account(st, account_ref);
      if (!account) return account.status();
      std::string full;
      auto key = st.directory->create_key(*st.db, hasher, account->id, spec, now_ms(), &full);
      if (!key) return key.status();
      return fmt::format(R"({{"id":"key_{}","key":"{}","last4":"{}","account":"acct_{}"}})",
                         key->id, full, key->last4, key->account_id);
    });
  }
  if (*key_list) {
    return offline_read(offline_store, offline_dir, [&](OfflineStore& st) -> Result<std::string> {
      auto account = find_account(st, account_ref);
      if (!account) return account.status();
      return api::keys_json(st.directory->keys_of(account->id), st.directory.get());
    });
  }
  if (*account_list) {
    return offline_read(offline_store, offline_dir, [&](OfflineStore& st) -> Result<std::string> {
      std::string out = R"({"data":[)";
      for (const auth::Account& a : st.directory->accounts()) {
        if (out.back() != '[') out += ',';
        out += api::account_json(a, nullptr);
      }
      return out + "]}";
    });
  }
  if (*account_show || *account_balance) {
    return offline_read(offline_store, offline_dir, [&](OfflineStore& st) -> Result<std::string> {
      auto account = find_account(st, account_id);
      if (!account) return account.status();
      if (*account_show) {
        const auto keys = st.directory->keys_of(account->id);
        return api::account_json(*account, &keys, st.directory.get());
      }
      auto balance = st.bank->balance(account->id, now_ms());
      if (!balance) return balance.status();
      return api::balance_json(*balance);
    });
  }
  if (*account_suspend || *account_unsuspend || *account_policy) {
    return offline_change(offline_store, offline_dir, [&](OfflineStore& st) -> Result<std::string> {
      auto account = find_account(st, account_id);
      if (!account) return account.status();
      Result<auth::Account> changed = *account;
      if (*account_policy) {
        auth::RoutingPolicy policy = account->policy;
        if (!policy_tier.empty()) policy.privacy_tier = *catalog::parse_privacy_tier(policy_tier);
        if (policy_weights == "none") {
          policy.weights.reset();
        } else if (!policy_weights.empty()) {
          double v[3];
          const char* at = policy_weights.data();
          const char* end = at + policy_weights.size();
          for (int i = 0; i < 3; ++i) {
            const auto parsed = std::from_chars(at, end, v[i]);
            const bool last = i == 2;
            if (parsed.ec != std::errc{} || !(v[i] >= 0 && v[i] <= 1) ||
                (last ? parsed.ptr != end : parsed.ptr == end || *parsed.ptr != ',')) {
              return Status{ErrorKind::kInvalidRequest,
                            "--weights must be QUALITY,COST,LATENCY, each 0 to 1, or none"};
            }
            at = parsed.ptr + 1;
          }
          if (v[0] + v[1] + v[2] <= 0) {
            return Status{ErrorKind::kInvalidRequest, "--weights: at least one must be above 0"};
          }
          policy.weights = router::Weights{v[0], v[1], v[2]};
        }
        changed = st.directory->set_policy(*st.db, account->id, policy);
        if (changed && !policy_models.empty()) {
          changed = st.directory->set_models(
              *st.db, account->id,
              policy_models == "all" ? std::vector<std::string>() : split_list(policy_models));
        }
      } else {
        changed = st.directory->set_suspended(*st.db, account->id, account_suspend->parsed());
      }
      if (!changed) return changed.status();
      return api::account_json(*changed, nullptr);
    });
  }
  if (*account_credit || *account_refund) {
    const CLI::App& cmd = *account_credit ? *account_credit : *account_refund;
    return money_call(offline_store, cmd.count("--store") > 0, offline_dir, money,
                      account_refund->parsed());
  }
  if (*key_rotate) {
    return offline_change(offline_store, offline_dir, [&](OfflineStore& st) -> Result<std::string> {
      auto secret = auth::open_server_secret(*st.db, offline_dir);
      if (!secret) return secret.status();
      const auth::KeyHasher hasher(*secret);
      std::string full;
      std::int64_t old_expires_ms = 0;
      const auto id = key_id_of(key_ref);
      if (!id) return id.status();
      auto key = st.directory->rotate_key(*st.db, hasher, *id, grace_seconds * 1000, now_ms(),
                                          &full, &old_expires_ms);
      if (!key) return key.status();
      return fmt::format(R"({{"id":"key_{}","key":"{}","last4":"{}","old_key_expires_at":"{}"}})",
                         key->id, full, key->last4,
                         format_rfc3339(old_expires_ms, /*millis=*/true));
    });
  }
  if (*key_revoke) {
    return offline_change(offline_store, offline_dir, [&](OfflineStore& st) -> Result<std::string> {
      const auto id = key_id_of(key_ref);
      if (!id) return id.status();
      if (Status s = st.directory->revoke_key(*st.db, *id, now_ms()); !s) return s;
      return std::string(R"({"revoked":true})");
    });
  }
  if (*check_cmd) {
    auto loaded = ops::load_config(check_path);
    if (!loaded) {
      std::fprintf(stderr, "turnpike: config error: %s\n", loaded.status().message().c_str());
      return 2;
    }
    if (Status s = check_beyond_load(*loaded); !s) {
      std::fprintf(stderr, "turnpike: config error: %s\n", s.message().c_str());
      return 2;
    }
    for (const std::string& w : loaded->warnings) {
      std::fprintf(stderr, "turnpike: config warning: %s\n", w.c_str());
    }
    std::printf("%s: ok (%zu providers, %zu models)\n", check_path.c_str(),
                loaded->catalog->providers().size(), loaded->catalog->models().size());
    return 0;
  }
  std::printf("turnpike %.*s\n", static_cast<int>(kVersion.size()), kVersion.data());
  return 0;
}

}  // namespace tp::cli
