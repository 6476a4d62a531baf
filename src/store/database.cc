#include "store/database.h"

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

}  // namespace tp::store
