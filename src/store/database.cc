#include "store/database.h"

#include <algorithm>

namespace tp::store {

Result<Statement::Step> Statement::step() {
  auto row = backend_->step();
  if (!row) return row.status();
  return *row ? Step::kRow : Step::kDone;
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

Result<Statement*> Database::cached(std::string_view sql) {
  if (auto it = cache_.find(sql); it != cache_.end()) return &it->second;
  auto prepared = prepare(sql);
  if (!prepared) return prepared.status();
  return &cache_.emplace(std::string(sql), std::move(prepared.value())).first->second;
}

Status insert_rows(Database& db, std::string_view head, int columns, std::size_t rows,
                   const BindRow& bind) {
  std::string one_row = "(";
  for (int c = 0; c < columns; ++c) one_row += c == 0 ? "?" : ", ?";
  one_row += ')';
  std::string sql;
  for (std::size_t done = 0; done < rows;) {
    const std::size_t n = std::min(rows - done, kInsertRowsMax);
    sql.assign(head);
    sql += " VALUES ";
    for (std::size_t r = 0; r < n; ++r) {
      if (r > 0) sql += ", ";
      sql += one_row;
    }
    auto cached = db.cached(sql);
    if (!cached) return cached.status();
    Statement& insert = **cached;
    for (std::size_t r = 0; r < n; ++r) bind(insert, static_cast<int>(r) * columns + 1, done + r);
    if (Status s = insert.run(); !s) return s;
    done += n;
  }
  return Status::ok();
}

}  // namespace tp::store
