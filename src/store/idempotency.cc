#include "store/idempotency.h"

namespace tp::store {
namespace {

Status insert_answer(Database& db, std::string_view key, const std::string& request,
                     const StoredAnswer& answer) {
  auto insert = db.cached("INSERT INTO idempotency (key, request, status, response) VALUES (?, ?, ?, ?)");
  if (!insert) return insert.status();
  Statement& s = **insert;
  s.bind(1, key).bind(2, request).bind(3, std::int64_t{answer.status}).bind(4, answer.body);
  return s.run();
}

Status conflict() {
  return Status{ErrorKind::kConflict, "idempotency_key was already used for a different request"};
}

}  // namespace

void AnswerBuffer::add(std::string key, std::string request, StoredAnswer answer) {
  answers_.push_back({std::move(key), std::move(request), std::move(answer)});
}

Status AnswerBuffer::flush(Database& db) {
  for (const Entry& e : answers_) {
    if (Status s = insert_answer(db, e.key, e.request, e.answer); !s) return s;
  }
  return Status::ok();
}

Result<std::optional<StoredAnswer>> find_answer(Database& db, const AnswerBuffer* pending,
                                                std::string_view key, const std::string& request) {
  if (pending != nullptr) {
    for (const AnswerBuffer::Entry& e : pending->answers_) {
      if (e.key != key) continue;
      if (e.request != request) return conflict();
      return std::optional<StoredAnswer>(e.answer);
    }
  }
  auto seen = db.cached("SELECT request, status, response FROM idempotency WHERE key = ?");
  if (!seen) return seen.status();
  Statement& select = **seen;
  select.bind(1, key);
  auto step = select.step();
  if (!step) {
    select.reset();
    return step.status();
  }
  std::optional<StoredAnswer> answer;
  if (*step == Statement::Step::kRow) {
    if (select.column_text(0) != request) {
      select.reset();
      return conflict();
    }
    answer = StoredAnswer{static_cast<unsigned>(select.column_int(1)),
                          std::string(select.column_text(2))};
  }
  select.reset();
  return answer;
}

Status store_answer(Database& db, AnswerBuffer* pending, std::string_view key,
                    const std::string& request, const StoredAnswer& answer) {
  if (pending == nullptr) return insert_answer(db, key, request, answer);
  pending->add(std::string(key), request, answer);
  return Status::ok();
}

}  // namespace tp::store
