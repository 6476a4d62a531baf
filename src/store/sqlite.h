#pragma once
// A thin RAII layer over the SQLite C API: a connection and prepared statements. Errors
// come back as Status with SQLite's message. Not thread-safe: one connection per thread.

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>

#include "core/status.h"

struct sqlite3;
struct sqlite3_stmt;

namespace tp::store {

class Statement {
 public:
  Statement() = default;
  Statement(sqlite3* db, sqlite3_stmt* stmt) : db_(db), stmt_(stmt) {}
  ~Statement();
  Statement(Statement&& other) noexcept;
  Statement& operator=(Statement&& other) noexcept;

  Statement& bind(int index, std::int64_t value);
  Statement& bind(int index, std::string_view value);
  Statement& bind_null(int index);
  // kRow when a row is ready, kDone at the end; errors as Status.
  enum class Step { kRow, kDone };
  Result<Step> step();
  Status run();  // steps to the end, for statements without rows
  void reset();

  std::int64_t column_int(int index) const;
  std::string_view column_text(int index) const;
  bool column_is_null(int index) const;

 private:
  sqlite3* db_ = nullptr;
  sqlite3_stmt* stmt_ = nullptr;
};

class Database {
 public:
  // Opens (creating if needed) `path` in WAL mode with synchronous=NORMAL: a committed
  // transaction survives a crash of the process.
  static Result<std::unique_ptr<Database>> open(const std::string& path);
  ~Database();

  Status exec(std::string_view sql);
  Result<Statement> prepare(std::string_view sql);
  // A statement prepared once per connection and kept: for what runs on every request.
  // Reset and unbound when returned; valid until the Database goes.
  Result<Statement*> cached(std::string_view sql);
  const std::string& path() const { return path_; }

 private:
  Database(sqlite3* db, std::string path) : db_(db), path_(std::move(path)) {}
  sqlite3* db_;
  std::string path_;
  struct SqlHash {
    using is_transparent = void;
    std::size_t operator()(std::string_view sql) const { return std::hash<std::string_view>{}(sql); }
  };
  // Looked up by string_view: no allocation per lookup.
  std::unordered_map<std::string, Statement, SqlHash, std::equal_to<>> cache_;
};

}  // namespace tp::store
