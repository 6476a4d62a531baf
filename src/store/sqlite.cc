#include "store/sqlite.h"

#include <fmt/format.h>
#include <sqlite3.h>

namespace tp::store {
namespace {

Status error(sqlite3* db, std::string_view what) {
  return {ErrorKind::kInternal, fmt::format("sqlite {}: {}", what, sqlite3_errmsg(db))};
}

}  // namespace

Statement::~Statement() {
  if (stmt_ != nullptr) sqlite3_finalize(stmt_);
}

Statement::Statement(Statement&& other) noexcept : db_(other.db_), stmt_(other.stmt_) {
  other.stmt_ = nullptr;
}

Statement& Statement::operator=(Statement&& other) noexcept {
  if (this != &other) {
    if (stmt_ != nullptr) sqlite3_finalize(stmt_);
    db_ = other.db_;
    stmt_ = other.stmt_;
    other.stmt_ = nullptr;
  }
  return *this;
}

Statement& Statement::bind(int index, std::int64_t value) {
  sqlite3_bind_int64(stmt_, index, value);
  return *this;
}

Statement& Statement::bind(int index, std::string_view value) {
  sqlite3_bind_text(stmt_, index, value.data(), static_cast<int>(value.size()), SQLITE_TRANSIENT);
  return *this;
}

Statement& Statement::bind_null(int index) {
  sqlite3_bind_null(stmt_, index);
  return *this;
}

Result<Statement::Step> Statement::step() {
  const int rc = sqlite3_step(stmt_);
  if (rc == SQLITE_ROW) return Step::kRow;
  if (rc == SQLITE_DONE) return Step::kDone;
  return error(db_, "step");
}

Status Statement::run() {
  for (;;) {
    auto s = step();
    if (!s) {
      reset();
      return s.status();
    }
    if (*s == Step::kDone) break;
  }
  reset();
  return Status::ok();
}

void Statement::reset() {
  sqlite3_reset(stmt_);
  sqlite3_clear_bindings(stmt_);
}

std::int64_t Statement::column_int(int index) const { return sqlite3_column_int64(stmt_, index); }

std::string_view Statement::column_text(int index) const {
  const auto* text = reinterpret_cast<const char*>(sqlite3_column_text(stmt_, index));
  return text == nullptr ? std::string_view{}
                         : std::string_view(text, static_cast<std::size_t>(
                                                      sqlite3_column_bytes(stmt_, index)));
}

bool Statement::column_is_null(int index) const {
  return sqlite3_column_type(stmt_, index) == SQLITE_NULL;
}

Result<std::unique_ptr<Database>> Database::open(const std::string& path) {
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
  std::unique_ptr<Database> database(new Database(db, path));
  sqlite3_busy_timeout(db, 5000);
  for (const char* pragma : {"PRAGMA journal_mode=WAL", "PRAGMA synchronous=NORMAL",
                             "PRAGMA foreign_keys=ON"}) {
    if (auto s = database->exec(pragma); !s) return s;
  }
  return database;
}

Database::~Database() {
  cache_.clear();  // statements are finalised before their connection closes
  sqlite3_close(db_);
}

Status Database::exec(std::string_view sql) {
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

Result<Statement> Database::prepare(std::string_view sql) {
  sqlite3_stmt* stmt = nullptr;
  if (sqlite3_prepare_v2(db_, sql.data(), static_cast<int>(sql.size()), &stmt, nullptr) !=
      SQLITE_OK) {
    return error(db_, "prepare");
  }
  return Statement(db_, stmt);
}

}  // namespace tp::store

namespace tp::store {

Result<Statement*> Database::cached(std::string_view sql) {
  if (auto it = cache_.find(sql); it != cache_.end()) return &it->second;
  auto prepared = prepare(sql);
  if (!prepared) return prepared.status();
  return &cache_.emplace(std::string(sql), std::move(prepared.value())).first->second;
}

}  // namespace tp::store
