#pragma once
// The store's interface to its SQL database: a connection and prepared statements. The
// embedded SQLite backend (store/sqlite.h) implements it; a PostgreSQL backend is the
// next. Everything above (migrations, usage, ledger, notices, accounts) is written against
// this interface in SQL both accept, with `?` placeholders: a backend translates what it
// must. Errors come back as Status with the backend's message. Not thread-safe: one
// connection per thread (the store writer's, or a tool's).

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>

#include "core/status.h"

namespace tp::store {

class Statement {
 public:
  // What a backend implements for one prepared statement.
  class Backend {
   public:
    virtual ~Backend() = default;
    virtual void bind(int index, std::int64_t value) = 0;
    virtual void bind(int index, std::string_view value) = 0;
    virtual void bind_null(int index) = 0;
    virtual Result<bool> step() = 0;  // true: a row is ready; false: done
    virtual void reset() = 0;         // rewinds and clears the bindings
    virtual std::int64_t column_int(int index) const = 0;
    virtual std::string_view column_text(int index) const = 0;
    virtual bool column_is_null(int index) const = 0;
  };

  Statement() = default;
  explicit Statement(std::unique_ptr<Backend> backend) : backend_(std::move(backend)) {}

  Statement& bind(int index, std::int64_t value) {
    backend_->bind(index, value);
    return *this;
  }
  Statement& bind(int index, std::string_view value) {
    backend_->bind(index, value);
    return *this;
  }
  Statement& bind_null(int index) {
    backend_->bind_null(index);
    return *this;
  }
  // kRow when a row is ready, kDone at the end; errors as Status.
  enum class Step { kRow, kDone };
  Result<Step> step();
  Status run();  // steps to the end, for statements without rows; then resets
  void reset() { backend_->reset(); }

  std::int64_t column_int(int index) const { return backend_->column_int(index); }
  std::string_view column_text(int index) const { return backend_->column_text(index); }
  bool column_is_null(int index) const { return backend_->column_is_null(index); }

 private:
  std::unique_ptr<Backend> backend_;
};

class Database {
 public:
  virtual ~Database() = default;

  virtual Status exec(std::string_view sql) = 0;  // one or more statements, no rows
  virtual Result<Statement> prepare(std::string_view sql) = 0;
  // Where the data lives, for messages.
  virtual const std::string& path() const = 0;
  // Whether a transaction is open. A backend may roll one back by itself on some errors
  // (SQLite: disk full, I/O error, out of memory); the writer checks after a failure.
  virtual bool in_transaction() const = 0;
  // Housekeeping that must not delay a commit, run between transactions on the
  // connection's thread: the store writer calls it after each batch has been answered.
  virtual void upkeep() {}
  // The write-ahead log's upkeep so far, for metrics and tests; from any thread. A backend
  // that leaves its log to the database's own checkpoints reports zeros.
  struct LogStats {
    std::uint64_t background_checkpoints = 0;  // that copied something
    std::uint64_t writer_checkpoints = 0;      // finished by upkeep()
    std::uint64_t writer_pages = 0;            // what those copied (their cost to commits)
    std::uint64_t restarts = 0;                // times the log started over
    std::int64_t pages = 0;                    // in the log after the last commit
  };
  virtual LogStats log_stats() const { return {}; }

  // A statement prepared once per connection and kept: for what runs on every request.
  // Reset and unbound when returned; valid until the Database goes.
  Result<Statement*> cached(std::string_view sql);

 protected:
  // A backend calls this first in its destructor: statements go before their connection.
  void drop_statements() { cache_.clear(); }

 private:
  struct SqlHash {
    using is_transparent = void;
    std::size_t operator()(std::string_view sql) const { return std::hash<std::string_view>{}(sql); }
  };
  // Looked up by string_view: no allocation per lookup.
  std::unordered_map<std::string, Statement, SqlHash, std::equal_to<>> cache_;
};

// Inserts `rows` rows with multi-row INSERT statements, up to kInsertRowsMax rows each (one
// statement per row count, prepared once): one statement costs SQLite far less than that
// many single-row ones. `head` is "INSERT INTO table (col, ...)" naming `columns` columns;
// `bind(statement, first, row)` binds row `row`'s values to parameters first ..
// first + columns - 1. Inside the caller's transaction; a failing statement inserts
// nothing, the ones before it stay (the caller's transaction decides).
inline constexpr std::size_t kInsertRowsMax = 32;
using BindRow = std::function<void(Statement& statement, int first, std::size_t row)>;
Status insert_rows(Database& db, std::string_view head, int columns, std::size_t rows,
                   const BindRow& bind);

}  // namespace tp::store
