#pragma once
// Idempotency keys of the admin calls that move money or create accounts: the first answer
// to a call is stored under its key and replayed to a retry of the same call; the same key
// on a different call is a conflict.

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"
#include "store/database.h"

namespace tp::store {

struct StoredAnswer {
  unsigned status = 0;
  std::string body;
};

// Answers whose calls have changed the books in memory but whose store transaction has not
// committed yet. The call's money moved at once (in the bank) and is stored by the batch
// that commits next, however many fail before it; its answer must go with it, else a retry
// after a failed commit would find no answer and move the money again. So, as with
// UsageBuffer, the writer's before-commit hook stores them (flush) and they are forgotten
// only once a transaction committed them. Writer thread only.
class AnswerBuffer {
 public:
  void add(std::string key, std::string request, StoredAnswer answer);
  Status flush(Database& db);
  void committed(bool ok) {
    if (ok) answers_.clear();
  }

 private:
  friend Result<std::optional<StoredAnswer>> find_answer(Database&, const AnswerBuffer*,
                                                         std::string_view,
                                                         const std::string&);
  struct Entry {
    std::string key, request;
    StoredAnswer answer;
  };
  std::vector<Entry> answers_;
};

// The answer stored under `key` for `request`, in `pending` (may be null) or the store:
// nullopt the first time; kConflict when the key was used for another request.
Result<std::optional<StoredAnswer>> find_answer(Database& db, const AnswerBuffer* pending,
                                                std::string_view key, const std::string& request);

// Stores the first `answer` to `request` under `key`: into `pending`, or, when it is null,
// into the caller's open transaction (a command-line tool, whose transaction is all there is).
Status store_answer(Database& db, AnswerBuffer* pending, std::string_view key,
                    const std::string& request, const StoredAnswer& answer);

}  // namespace tp::store
