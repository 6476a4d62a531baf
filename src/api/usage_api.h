#pragma once
// GET /api/usage: the query it takes and the page it answers.
//
//   from, to   RFC 3339; rows with from <= timestamp < to (either alone: no bound on the
//              other side; both: ordered as sent, an empty range within one millisecond)
//   limit      1..1000 rows, default 100
//   cursor     next_cursor of the previous page
//   account    admin only: one account ("acct_12"); without it, every account

#include <optional>
#include <string>
#include <vector>

#include "http/query.h"
#include "store/usage_store.h"

namespace tp::api {

inline constexpr std::size_t kUsagePageRowsMax = 1000;
inline constexpr std::size_t kUsagePageRowsDefault = 100;

// Reads the query; `account` is the caller's own account, or nullopt for an admin (who may
// then name one). kInvalidRequest names the bad parameter; kForbidden when a
// customer names an account.
Result<store::UsageQuery> parse_usage_query(const http::QueryParams& params,
                                            std::optional<std::int64_t> account);

// `page` as fetched with limit + 1: the extra row only says that another page exists (as
// does a scan that stopped short of the log's end).
std::string usage_page_json(const store::UsagePage& page, std::size_t limit);

}  // namespace tp::api
