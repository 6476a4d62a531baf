#pragma once
// The schema, as an ordered list of migrations applied at start. Version N is the number of
// migrations applied; each runs in its own transaction together with the version bump. The
// list is in SQLite's dialect (INTEGER PRIMARY KEY row ids); a PostgreSQL backend brings its
// own list with the same versions and tables.

#include "core/status.h"
#include "store/database.h"

namespace tp::store {

// Applies every migration newer than the database's version. Fails (without applying
// anything further) when the database is newer than this binary.
Status migrate(Database& db);
Result<int> schema_version(Database& db);
int latest_schema_version();

}  // namespace tp::store
