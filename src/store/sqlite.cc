#include "store/sqlite.h"

#include <fmt/format.h>
#include <sqlite3.h>

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

class SqliteDatabase final : public Database {
 public:
  SqliteDatabase(sqlite3* db, std::string path) : db_(db), path_(std::move(path)) {}
  ~SqliteDatabase() override {
    drop_statements();  // finalised before their connection closes
    sqlite3_close(db_);
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
};

}  // namespace

Result<std::unique_ptr<Database>> open_sqlite(const std::string& path) {
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
  auto database = std::make_unique<SqliteDatabase>(db, path);
  sqlite3_busy_timeout(db, 5000);
  for (const char* pragma : {"PRAGMA journal_mode=WAL", "PRAGMA synchronous=NORMAL",
                             "PRAGMA foreign_keys=ON"}) {
    if (auto s = database->exec(pragma); !s) return s;
  }
  return std::unique_ptr<Database>(std::move(database));
}

}  // namespace tp::store
