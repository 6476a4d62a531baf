#pragma once
// The one thread that writes to the database. Work submitted from any thread is grouped:
// everything queued when the writer wakes runs in one transaction (group commit), each
// piece inside its own savepoint so one failure does not undo the others (a piece that is a
// single statement needs none: SQLite undoes a failed statement by itself). Each piece's
// completion is called, on the writer thread, only after the commit that made it durable.

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>

#include "core/status.h"
#include "store/sqlite.h"

namespace tp::store {

inline constexpr std::size_t kWriterBatchMax = 4096;
// How long the writer looks for new work before it sleeps, at low load only: about a
// request's round trip through the gateway, so that one client's next settlement finds it
// awake.
inline constexpr std::chrono::microseconds kWriterSpin{300};
// Under load, how long the writer waits for a batch to fill before committing it, and the
// size of the previous batch from which it does (below it, it commits at once).
inline constexpr std::chrono::microseconds kWriterLinger{250};
inline constexpr std::size_t kWriterLingerFrom = 4;

// A piece that writes nothing: its batch stores what waits in memory (what the
// before-commit hook writes), and may be submitted for that alone.
inline Status write_nothing(Database&) { return Status::ok(); }

class Writer {
 public:
  using Work = std::function<Status(Database&)>;
  using Done = std::function<void(const Status&)>;

  // `spin`: how long to look for work before sleeping at low load (0: never).
  explicit Writer(std::unique_ptr<Database> db, std::chrono::microseconds spin = kWriterSpin);
  // Finishes every piece already submitted, then stops the thread. Idempotent; pieces
  // submitted afterwards fail at once with kUnavailable.
  void stop();
  ~Writer();
  Writer(const Writer&) = delete;
  Writer& operator=(const Writer&) = delete;

  // How a failing piece is undone without undoing the rest of its batch.
  enum class Isolation {
    kSavepoint,        // the piece runs inside its own savepoint
    kSingleStatement,  // the piece writes with one statement at most (in-memory effects
                       // only after it succeeded): no savepoint needed
    kHandOver,         // the piece writes nothing itself: it hands what it made to what
                       // the before-commit hook stores (store::UsageBuffer). It runs even
                       // when the batch's transaction could not open or was lost, so what
                       // it hands over is there for the after-commit hook to undo and for
                       // the next batch to store; it still fails with its batch.
  };

  // Thread-safe. `done` may be empty.
  void submit(Work work, Done done = {}, Isolation isolation = Isolation::kSavepoint);

  // Runs on the writer thread after a batch's pieces, inside their transaction, once per
  // batch: what it writes commits with them. When it fails the whole transaction rolls
  // back and every piece fails. Set once, before the first submit.
  void set_before_commit(Work hook) { before_commit_ = std::move(hook); }
  // Called on the writer thread after every transaction ends, true when it committed,
  // before any piece's `done`. Set once, before the first submit.
  void set_after_commit(std::function<void(bool committed)> hook) {
    after_commit_ = std::move(hook);
  }

  struct Stats {
    std::uint64_t pieces = 0;
    std::uint64_t commits = 0;
    Database::LogStats log;
  };
  Stats stats() const;

  // Whether the last transaction failed to commit: what its batch handed over (usage rows,
  // transfers, a freeze to record) then waits in memory for the next batch that commits.
  // Thread-safe.
  bool last_commit_failed() const { return last_commit_failed_.load(std::memory_order_acquire); }

 private:
  struct Piece {
    Work work;
    Done done;
    Isolation isolation;
  };
  Status run_cached(std::string_view sql);
  void run();
  void commit(std::deque<Piece>& batch);

  std::unique_ptr<Database> db_;
  std::chrono::microseconds spin_;
  Work before_commit_;
  std::function<void(bool)> after_commit_;
  mutable std::mutex mu_;
  std::condition_variable wake_;
  std::deque<Piece> queue_;
  std::atomic<std::size_t> queued_{0};  // queue_.size(), readable without the lock
  std::size_t wake_at_ = 1;  // queue_.size() at which submit wakes the writer
  bool stop_ = false;
  std::atomic<bool> last_commit_failed_{false};
  Stats stats_;
  std::thread thread_;
};

}  // namespace tp::store
