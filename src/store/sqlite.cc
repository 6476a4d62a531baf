#include "store/sqlite.h"

#include <fmt/format.h>
#include <pthread.h>
#include <sqlite3.h>

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <thread>

#include "core/log.h"

namespace tp::store {
namespace {

Status error(sqlite3* db, std::string_view what) {
  return {ErrorKind::kInternal, fmt::format("sqlite {}: {}", what, sqlite3_errmsg(db))};
}

class SqliteStatement final : public Statement::Backend {
 public:
  SqliteStatement(sqlite3* db, sqlite3_stmt* stmt) : db_(db), stmt_(stmt) {}
  ~SqliteStatement() override { sqlite3_finalize(stmt_); }
  SqliteStatement(const SqliteStatement&) = delete;
  SqliteStatement& operator=(const SqliteStatement&) = delete;

  void bind(int index, std::int64_t value) override { sqlite3_bind_int64(stmt_, index, value); }
  void bind(int index, std::string_view value) override {
    sqlite3_bind_text(stmt_, index, value.data(), static_cast<int>(value.size()),
                      SQLITE_TRANSIENT);
  }
  void bind_null(int index) override { sqlite3_bind_null(stmt_, index); }
  Result<bool> step() override {
    const int rc = sqlite3_step(stmt_);
    if (rc == SQLITE_ROW) return true;
    if (rc == SQLITE_DONE) return false;
    return error(db_, "step");
  }
  void reset() override {
    sqlite3_reset(stmt_);
    sqlite3_clear_bindings(stmt_);
  }
  std::int64_t column_int(int index) const override {
    return sqlite3_column_int64(stmt_, index);
  }
  std::string_view column_text(int index) const override {
    const auto* text = reinterpret_cast<const char*>(sqlite3_column_text(stmt_, index));
    return text == nullptr ? std::string_view{}
                           : std::string_view(text, static_cast<std::size_t>(
                                                        sqlite3_column_bytes(stmt_, index)));
  }
  bool column_is_null(int index) const override {
    return sqlite3_column_type(stmt_, index) == SQLITE_NULL;
  }

 private:
  sqlite3* db_;
  sqlite3_stmt* stmt_;
};

// Opens a connection to `path` in WAL mode with synchronous=NORMAL; the caller closes it.
Result<sqlite3*> connect(const std::string& path) {
  sqlite3* db = nullptr;
  const int rc = sqlite3_open_v2(path.c_str(), &db,
                                 SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                                 nullptr);
  if (rc != SQLITE_OK) {
    Status s{ErrorKind::kInternal,
             fmt::format("cannot open {}: {}", path, db ? sqlite3_errmsg(db) : "out of memory")};
    sqlite3_close(db);
    return s;
  }
  sqlite3_busy_timeout(db, 5000);
  for (const char* pragma : {"PRAGMA journal_mode=WAL", "PRAGMA synchronous=NORMAL",
                             "PRAGMA foreign_keys=ON"}) {
    char* message = nullptr;
    if (sqlite3_exec(db, pragma, nullptr, nullptr, &message) != SQLITE_OK) {
      Status s{ErrorKind::kInternal, fmt::format("cannot open {}: {}", path,
                                                 message != nullptr ? message : "error")};
      sqlite3_free(message);
      sqlite3_close(db);
      return s;
    }
  }
  return db;
}

// At most this many of the log's pages are left for upkeep() to copy when it finishes a
// checkpoint on the writing thread.
constexpr int kRestartTailPagesMax = 64;

// The background thread that checkpoints a connection's log while it goes on committing.
// A passive checkpoint copies what the log holds when it starts and never blocks the
// writer; SQLite keeps the two apart.
class Checkpointer {
 public:
  Checkpointer(sqlite3* db, int every_pages) : db_(db), every_pages_(every_pages) {
    thread_ = std::thread([this] {
      pthread_setname_np(pthread_self(), "tp-checkpoint");
      run();
    });
  }
  ~Checkpointer() {
    {
      std::lock_guard lock(mu_);
      stop_ = true;
    }
    wake_.notify_one();
    thread_.join();
    sqlite3_close(db_);
  }
  Checkpointer(const Checkpointer&) = delete;
  Checkpointer& operator=(const Checkpointer&) = delete;

  // On the writing connection's thread, after each commit: the log now holds `pages`.
  void grew(int pages) {
    if (pages < asked_at_) asked_at_ = 0;  // the log started over
    if (!held_ && pages - asked_at_ >= every_pages_) ask(pages);
  }
  // Asks for a checkpoint now; on the writing connection's thread.
  void ask(int pages) {
    asked_at_ = pages;
    {
      std::lock_guard lock(mu_);
      due_ = true;
      busy_.store(true, std::memory_order_release);
    }
    wake_.notify_one();
  }
  int asked_at() const { return asked_at_; }
  // While held, growth asks for nothing: the writing thread is waiting for the background to
  // go idle so that it can checkpoint itself. On the writing connection's thread.
  void hold(bool held) { held_ = held; }
  // Whether a checkpoint is asked for or running.
  bool busy() const { return busy_.load(std::memory_order_acquire); }
  // How many of the log's `pages` pages the background has copied back: what its last
  // checkpoint reported, unless that was about an earlier log, since started over.
  int copied(int pages) {
    std::lock_guard lock(mu_);
    return last_log_ <= pages ? last_copied_ : 0;
  }
  std::uint64_t done() const { return done_.load(std::memory_order_relaxed); }

 private:
  void run() {
    for (;;) {
      {
        std::unique_lock lock(mu_);
        wake_.wait(lock, [this] { return due_ || stop_; });
        if (stop_) return;
        due_ = false;
      }
      int log_pages = 0;
      int copied = 0;
      const int rc = sqlite3_wal_checkpoint_v2(db_, nullptr, SQLITE_CHECKPOINT_PASSIVE,
                                               &log_pages, &copied);
      {
        std::lock_guard lock(mu_);
        if (rc == SQLITE_OK) {
          last_log_ = log_pages;
          last_copied_ = copied;
        }
        if (!due_) busy_.store(false, std::memory_order_release);
      }
      // Busy: another connection (a `turnpike` command) is checkpointing; the next one
      // will do.
      if (rc != SQLITE_OK && rc != SQLITE_BUSY) {
        log::warn("store checkpoint failed", {{"error", sqlite3_errmsg(db_)}});
      }
      done_.fetch_add(1, std::memory_order_relaxed);
    }
  }

  sqlite3* db_;  // its own connection
  const int every_pages_;
  int asked_at_ = 0;  // the log's size at the last request; the writing thread's
  bool held_ = false;  // likewise
  std::mutex mu_;
  std::condition_variable wake_;
  bool due_ = false;
  bool stop_ = false;
  int last_log_ = 0;  // what the last checkpoint reported: the log's pages, and copied
  int last_copied_ = 0;
  std::atomic<bool> busy_{false};
  std::atomic<std::uint64_t> done_{0};
  std::thread thread_;
};

class SqliteDatabase final : public Database {
 public:
  SqliteDatabase(sqlite3* db, std::string path) : db_(db), path_(std::move(path)) {}
  ~SqliteDatabase() override {
    checkpointer_.reset();  // its connection goes first: the last one checkpoints at close
    drop_statements();      // finalised before their connection closes
    sqlite3_close(db_);
  }

  // Hands checkpoints to a background thread (see SqliteOptions).
  void checkpoint_in_background(std::unique_ptr<Checkpointer> checkpointer, int restart_pages) {
    checkpointer_ = std::move(checkpointer);
    restart_pages_ = restart_pages;
    restart_at_ = restart_pages;
    // Replaces SQLite's own checkpoint-on-commit.
    sqlite3_wal_hook(
        db_,
        [](void* self, sqlite3*, const char*, int pages) {
          auto& db = *static_cast<SqliteDatabase*>(self);
          if (pages < db.wal_pages_) db.restart_at_ = db.restart_pages_;  // it started over
          db.wal_pages_ = pages;
          db.shown_pages_.store(pages, std::memory_order_relaxed);
          db.checkpointer_->grew(pages);
          return SQLITE_OK;
        },
        this);
  }

  void upkeep() override {
    if (!checkpointer_ || wal_pages_ < restart_at_) return;
    // Whatever is left to copy here delays the next batch: leave all but a short tail to
    // the background. Unless the log reached twice its size that way: written faster than
    // the background copies it, it would never start over. Then the writer stops asking
    // for more background work and finishes the checkpoint itself once that is idle.
    const bool overdue = wal_pages_ >= restart_at_ + restart_pages_;
    checkpointer_->hold(overdue);
    if (checkpointer_->busy()) return;
    if (!overdue && wal_pages_ - checkpointer_->copied(wal_pages_) > kRestartTailPagesMax) {
      // Asked again only once the log grew as much (a reader can hold the copy back).
      if (wal_pages_ - checkpointer_->asked_at() > kRestartTailPagesMax) {
        checkpointer_->ask(wal_pages_);
      }
      return;
    }
    // Nothing is appended while this runs: it copies the tail the background missed, and
    // the next transaction starts the log over.
    int log_pages = 0;
    int copied = 0;
    const int rc = sqlite3_wal_checkpoint_v2(db_, nullptr, SQLITE_CHECKPOINT_PASSIVE,
                                             &log_pages, &copied);
    checkpointer_->hold(false);
    if (rc == SQLITE_OK && copied == log_pages) {
      restarts_.fetch_add(1, std::memory_order_relaxed);
      restart_at_ = restart_pages_;
    } else if (rc == SQLITE_OK || rc == SQLITE_BUSY) {
      // A reader still needs part of the log (or another connection is checkpointing it):
      // try again once the log has grown as much again, not after every transaction.
      restart_at_ = wal_pages_ + restart_pages_;
    } else {
      log::warn("store checkpoint failed", {{"error", sqlite3_errmsg(db_)}});
      restart_at_ = wal_pages_ + restart_pages_;
    }
  }

  LogStats log_stats() const override {
    if (!checkpointer_) return {};
    return {.background_checkpoints = checkpointer_->done(),
            .restarts = restarts_.load(std::memory_order_relaxed),
            .pages = shown_pages_.load(std::memory_order_relaxed)};
  }
  SqliteDatabase(const SqliteDatabase&) = delete;
  SqliteDatabase& operator=(const SqliteDatabase&) = delete;

  Status exec(std::string_view sql) override {
    char* message = nullptr;
    const std::string text(sql);
    if (sqlite3_exec(db_, text.c_str(), nullptr, nullptr, &message) != SQLITE_OK) {
      Status s{ErrorKind::kInternal,
               fmt::format("sqlite: {}", message != nullptr ? message : "error")};
      sqlite3_free(message);
      return s;
    }
    return Status::ok();
  }

  bool in_transaction() const override { return sqlite3_get_autocommit(db_) == 0; }

  Result<Statement> prepare(std::string_view sql) override {
    sqlite3_stmt* stmt = nullptr;
    if (sqlite3_prepare_v2(db_, sql.data(), static_cast<int>(sql.size()), &stmt, nullptr) !=
        SQLITE_OK) {
      return error(db_, "prepare");
    }
    return Statement(std::make_unique<SqliteStatement>(db_, stmt));
  }

  const std::string& path() const override { return path_; }

 private:
  sqlite3* db_;
  std::string path_;
  std::unique_ptr<Checkpointer> checkpointer_;  // null: SQLite checkpoints on commit
  int restart_pages_ = 0;
  int restart_at_ = 0;  // the log's size at which upkeep() next finishes a checkpoint
  int wal_pages_ = 0;
  std::atomic<int> shown_pages_{0};  // wal_pages_, for log_stats() on other threads
  std::atomic<std::uint64_t> restarts_{0};
};

}  // namespace

Result<std::unique_ptr<Database>> open_sqlite(const std::string& path,
                                              const SqliteOptions& options) {
  auto db = connect(path);
  if (!db) return db.status();
  auto database = std::make_unique<SqliteDatabase>(*db, path);
  if (options.background_checkpoint_pages > 0) {
    auto second = connect(path);
    if (!second) return second.status();
    const int every = options.background_checkpoint_pages;
    database->checkpoint_in_background(std::make_unique<Checkpointer>(*second, every),
                                       options.restart_pages > every ? options.restart_pages
                                                                     : 16 * every);
  }
  return std::unique_ptr<Database>(std::move(database));
}

}  // namespace tp::store
