#pragma once
// The embedded backend of the store interface (store/database.h): SQLite in WAL mode with
// synchronous=NORMAL.

#include <memory>
#include <string>

#include "store/database.h"

namespace tp::store {

// Opens (creating if needed) the SQLite file at `path` in WAL mode with
// synchronous=NORMAL: a committed transaction survives a crash of the process.
Result<std::unique_ptr<Database>> open_sqlite(const std::string& path);

}  // namespace tp::store
