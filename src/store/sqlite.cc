#include "store/sqlite.h"

#include <fmt/format.h>
#include <pthread.h>
#include <sqlite3.h>

#include <algorithm>
#include <atomic>
#include <limits>
#include <condition_variable>
#include <mutex>
#include <thread>

#include "core/log.h"

namespace tp::store {
namespace {

Status error(sqlite3* db, std::string_view what) {
  return {ErrorKind::kInternal, fmt::format("sqlite {}: {}", what, sqlite3_errmsg(db))};
}

// Runs one or more statements without rows.
Status run_sql(sqlite3* db, std::string_view sql) {
  char* message = nullptr;
  const std::string text(sql);
  if (sqlite3_exec(db, text.c_str(), nullptr, nullptr, &message) != SQLITE_OK) {
    Status s{ErrorKind::kInternal,
             fmt::format("sqlite: {}", message != nullptr ? message : "error")};
    sqlite3_free(message);
    return s;
  }
  return Status::ok();
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
    if (Status s = run_sql(db, pragma); !s) {
      sqlite3_close(db);
      return Status{ErrorKind::kInternal, fmt::format("cannot open {}: {}", path, s.message())};
    }
  }
  return db;
}

// The background thread that checkpoints a connection's log while that connection goes on
// committing. A passive checkpoint copies the frames the log holds when it starts (as far as
// readers allow) and never blocks the writer; SQLite keeps the two apart. The log's
// "generation" counts its restarts, so that a result about an earlier log is not taken for
// one about the current log.
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

  int every_pages() const { return every_pages_; }

  // The writing connection's thread's side: after each commit, the log of `generation` holds
  // `pages` pages.
  void grew(int pages, std::uint64_t generation) {
    if (generation != generation_) {  // the log started over
      generation_ = generation;
      asked_at_ = 0;
      held_ = false;
    }
    if (!held_ && pages - asked_at_ >= every_pages_) ask(pages);
  }
  // Asks for a checkpoint now.
  void ask(int pages) {
    asked_at_ = pages;
    {
      std::lock_guard lock(mu_);
      due_ = true;
      asked_generation_ = generation_;
      busy_.store(true, std::memory_order_release);
    }
    wake_.notify_one();
  }
  int asked_at() const { return asked_at_; }
  // While held, growth asks for nothing: the writing thread waits for the background to go
  // idle so that it can finish the checkpoint itself.
  void hold(bool held) { held_ = held; }
  // Whether a checkpoint is asked for or running; any thread.
  bool busy() const { return busy_.load(std::memory_order_acquire); }
  // How many of the current log's pages have been copied back, as far as the background's
  // last checkpoint of this log saw (0 when it saw none).
  int copied(std::uint64_t generation) {
    std::lock_guard lock(mu_);
    return done_generation_ == generation ? done_copied_ : 0;
  }
  // Checkpoints that copied something; any thread.
  std::uint64_t done() const { return done_.load(std::memory_order_relaxed); }

 private:
  void run() {
    for (;;) {
      std::uint64_t generation = 0;
      {
        std::unique_lock lock(mu_);
        wake_.wait(lock, [this] { return due_ || stop_; });
        if (stop_) return;
        due_ = false;
        generation = asked_generation_;
      }
      int log_pages = 0;
      int copied = 0;
      const int rc = sqlite3_wal_checkpoint_v2(db_, nullptr, SQLITE_CHECKPOINT_PASSIVE,
                                               &log_pages, &copied);
      bool progress = false;
      {
        std::lock_guard lock(mu_);
        if (rc == SQLITE_OK) {
          progress = generation != done_generation_ || copied > done_copied_;
          done_generation_ = generation;
          done_copied_ = copied;
        }
        if (!due_) busy_.store(false, std::memory_order_release);
      }
      if (progress) done_.fetch_add(1, std::memory_order_relaxed);
      // Busy: another connection (a `turnpike` command) is checkpointing; a later run will.
      if (rc != SQLITE_OK && rc != SQLITE_BUSY) {
        log::warn("store checkpoint failed", {{"error", sqlite3_errmsg(db_)}});
      }
    }
  }

  sqlite3* db_;  // its own connection
  const int every_pages_;
  // The writing thread's.
  std::uint64_t generation_ = 0;
  int asked_at_ = 0;  // the log's size at the last request
  bool held_ = false;
  // Shared, under mu_.
  std::mutex mu_;
  std::condition_variable wake_;
  bool due_ = false;
  bool stop_ = false;
  std::uint64_t asked_generation_ = 0;
  std::uint64_t done_generation_ = 0;  // the log the last checkpoint was about
  int done_copied_ = 0;                // and how many of its pages were copied back then
  std::atomic<bool> busy_{false};
  std::atomic<std::uint64_t> done_{0};
  std::thread thread_;
};

// How many of the log's pages the writing thread copies itself when it finishes a
// checkpoint (each delays the next batch; the two fsyncs come on top), by how far the log
// has grown past the size at which it should start over: a short tail at first; up to one
// background interval once the log is twice that size (the background is falling behind:
// a long reader held it back, or the log is written faster than it copies); everything at
// four times, where the writer stops asking the background and waits for it to go idle.
int writer_share(int over, int restart_pages, int every_pages) {
  constexpr int kTailPages = 64;
  if (over < restart_pages) return kTailPages;
  if (over < 3 * restart_pages) return every_pages;
  return std::numeric_limits<int>::max();
}

class SqliteDatabase final : public Database {
 public:
  SqliteDatabase(sqlite3* db, std::string path) : db_(db), path_(std::move(path)) {}
  ~SqliteDatabase() override {
    checkpointer_.reset();  // its connection goes first: the last one checkpoints at close
    drop_statements();      // finalised before their connection closes
    sqlite3_close(db_);
  }

  // Hands checkpoints to a background thread (see SqliteOptions).
  Status checkpoint_in_background(std::unique_ptr<Checkpointer> checkpointer,
                                  int restart_pages) {
    checkpointer_ = std::move(checkpointer);
    restart_pages_ = restart_pages;
    restart_at_ = restart_pages;
    // A restart reuses the file; a log that grew past this (a reader held it) is cut back.
    auto page = prepare("PRAGMA page_size");
    if (!page) return page.status();
    auto step = page->step();
    if (!step) return step.status();
    const std::int64_t limit = std::int64_t{restart_pages} * page->column_int(0);
    if (auto s = exec(fmt::format("PRAGMA journal_size_limit={}", limit)); !s) return s;
    // Replaces SQLite's own checkpoint-on-commit.
    sqlite3_wal_hook(
        db_,
        [](void* self, sqlite3*, const char*, int pages) {
          static_cast<SqliteDatabase*>(self)->committed(pages);
          return SQLITE_OK;
        },
        this);
    return Status::ok();
  }

  void upkeep() override {
    if (!checkpointer_ || wal_pages_ < restart_at_) return;
    const int share = writer_share(wal_pages_ - restart_at_, restart_pages_,
                                   checkpointer_->every_pages());
    const bool everything = share == std::numeric_limits<int>::max();
    checkpointer_->hold(everything);
    if (checkpointer_->busy()) return;
    const int copied = checkpointer_->copied(generation_);
    if (wal_pages_ - copied > share) {
      if (asked_copied_ >= 0 && copied <= asked_copied_) {
        // The last run copied nothing more: a reader holds the log. Try again once it has
        // grown as much again, instead of after every batch.
        restart_at_ = wal_pages_ + restart_pages_;
        asked_copied_ = -1;
      } else if (wal_pages_ - checkpointer_->asked_at() > kTailPagesAsk) {
        asked_copied_ = copied;
        checkpointer_->ask(wal_pages_);
      }
      return;
    }
    // Nothing is appended while this runs: it copies what the background left, and (unless
    // a reader still needs the log) the next transaction starts the log over.
    int log_pages = 0;
    int done = 0;
    const int rc = sqlite3_wal_checkpoint_v2(db_, nullptr, SQLITE_CHECKPOINT_PASSIVE,
                                             &log_pages, &done);
    checkpointer_->hold(false);
    asked_copied_ = -1;
    if (rc == SQLITE_OK) {
      writer_checkpoints_.fetch_add(1, std::memory_order_relaxed);
      writer_pages_.fetch_add(static_cast<std::uint64_t>(std::max(0, done - copied)),
                              std::memory_order_relaxed);
    } else if (rc != SQLITE_BUSY) {
      log::warn("store checkpoint failed", {{"error", sqlite3_errmsg(db_)}});
    }
    // When the log starts over, committed() moves this back; if it does not (a reader),
    // the next try waits until the log has grown as much again.
    restart_at_ = wal_pages_ + restart_pages_;
  }

  LogStats log_stats() const override {
    if (!checkpointer_) return {};
    return {.background_checkpoints = checkpointer_->done(),
            .writer_checkpoints = writer_checkpoints_.load(std::memory_order_relaxed),
            .writer_pages = writer_pages_.load(std::memory_order_relaxed),
            .restarts = restarts_.load(std::memory_order_relaxed),
            .pages = shown_pages_.load(std::memory_order_relaxed)};
  }
  SqliteDatabase(const SqliteDatabase&) = delete;
  SqliteDatabase& operator=(const SqliteDatabase&) = delete;

  Status exec(std::string_view sql) override { return run_sql(db_, sql); }

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
  // After each commit, from the WAL hook: the log holds `pages` pages. A log shorter than
  // after the last commit has started over. (A first transaction after a restart larger
  // than the whole previous log would go unnoticed; the gateway writes none that large.)
  void committed(int pages) {
    if (pages < wal_pages_) {
      ++generation_;
      restarts_.fetch_add(1, std::memory_order_relaxed);
      restart_at_ = restart_pages_;
      asked_copied_ = -1;
    }
    wal_pages_ = pages;
    shown_pages_.store(pages, std::memory_order_relaxed);
    checkpointer_->grew(pages, generation_);
  }

  // How much the log must grow before upkeep() asks the background again for its tail.
  static constexpr int kTailPagesAsk = 64;

  sqlite3* db_;
  std::string path_;
  std::unique_ptr<Checkpointer> checkpointer_;  // null: SQLite checkpoints on commit
  // The writing thread's.
  int restart_pages_ = 0;
  int restart_at_ = 0;         // the log's size at which upkeep() next tries to finish
  int wal_pages_ = 0;          // after the last commit
  std::uint64_t generation_ = 0;  // restarts of the log seen
  int asked_copied_ = -1;      // what was copied when upkeep() last asked; -1: not asked
  // For log_stats(), from any thread.
  std::atomic<std::int64_t> shown_pages_{0};
  std::atomic<std::uint64_t> restarts_{0};
  std::atomic<std::uint64_t> writer_checkpoints_{0};
  std::atomic<std::uint64_t> writer_pages_{0};
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
    const Status s = database->checkpoint_in_background(
        std::make_unique<Checkpointer>(*second, every),
        options.restart_pages > every ? options.restart_pages : 16 * every);
    if (!s) return s;
  }
  return std::unique_ptr<Database>(std::move(database));
}

}  // namespace tp::store
