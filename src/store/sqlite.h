#pragma once
// The embedded backend of the store interface (store/database.h): SQLite in WAL mode with
// synchronous=NORMAL.

#include <memory>
#include <string>

#include "store/database.h"

namespace tp::store {

// How a connection's write-ahead log is checkpointed (its pages copied back into the
// database file, after which the log can start over).
struct SqliteOptions {
  // 0: SQLite's own way: the commit that takes the log past 1000 pages checkpoints it, and
  // that commit (and every one queued behind it) waits for the copy and its fsyncs.
  // Above 0: a background thread with a connection of its own checkpoints each time the
  // log has grown by this many pages, while commits go on; for the store writer.
  int background_checkpoint_pages = 0;
  // With background checkpoints: a log that has reached this many pages is finished by
  // the connection's own thread in upkeep(), between two transactions, so that it starts
  // over; whoever uses the connection must call upkeep(), as the store writer does. Under
  // steady writes the background copy never catches up by itself (the writer appends
  // while it copies); what is left for upkeep() is the tail it missed. A value not above
  // background_checkpoint_pages (0 included) means 16 times that.
  int restart_pages = 0;
};

// Opens (creating if needed) the SQLite file at `path` in WAL mode with
// synchronous=NORMAL: a committed transaction survives a crash of the process.
Result<std::unique_ptr<Database>> open_sqlite(const std::string& path,
                                              const SqliteOptions& options = {});

}  // namespace tp::store
