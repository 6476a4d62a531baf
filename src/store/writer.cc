#include "store/writer.h"

#include <fmt/format.h>
#include <pthread.h>
#include <sched.h>

#include "core/log.h"

namespace tp::store {

Writer::Writer(std::unique_ptr<Database> db, std::chrono::microseconds spin)
    : db_(std::move(db)), spin_(spin) {
  thread_ = std::thread([this] {
    pthread_setname_np(pthread_self(), "tp-writer");
    run();
  });
}

Writer::~Writer() { stop(); }

void Writer::stop() {
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void Writer::submit(Work work, Done done, Isolation isolation) {
  bool queued = false;
  bool wake = false;
  {
    std::lock_guard lock(mu_);
    if (!stop_) {
      queue_.push_back({std::move(work), std::move(done), isolation});
      queued_.store(queue_.size(), std::memory_order_release);
      queued = true;
      wake = queue_.size() >= wake_at_;
    }
  }
  // Outside the lock: a writer woken while the lock is still held would only block on it
  // and need a second wake-up (a second futex call, a second context switch).
  if (wake) wake_.notify_one();
  if (!queued && done) done(Status{ErrorKind::kUnavailable, "the store is shutting down"});
}

Writer::Stats Writer::stats() const {
  Stats stats;
  {
    std::lock_guard lock(mu_);
    stats = stats_;
  }
  stats.log = db_->log_stats();
  return stats;
}

void Writer::run() {
  std::deque<Piece> batch;
  std::size_t last = 0;  // pieces in the previous batch
  for (;;) {
    // At low load (one client at a time) the next piece follows within a request's round
    // trip, while waking a sleeping thread takes tens of microseconds that the client would
    // wait for: look for work a while before sleeping, yielding the core to any other
    // runnable thread meanwhile (the I/O thread or the upstream serving the next request
    // must not wait for this spin). Under load (the last batch had company) the spin would
    // only take a core from the I/O threads.
    if (last <= 1 && spin_.count() > 0) {
      const auto spin_until = std::chrono::steady_clock::now() + spin_;
      while (queued_.load(std::memory_order_acquire) == 0 &&
             std::chrono::steady_clock::now() < spin_until) {
        sched_yield();
      }
    }
    {
      std::unique_lock lock(mu_);
      wake_.wait(lock, [this] { return stop_ || !queue_.empty(); });
      if (queue_.empty()) return;  // stopping, and everything submitted is done
      // A commit writes whole pages to the WAL, so a transaction of many pieces costs
      // little more than one of a few. When pieces came in a crowd last time, more are on
      // their way: wait (briefly) for about as many before committing. At low concurrency
      // (a lone client, or a few) nothing waits.
      if (last >= kWriterLingerFrom && queue_.size() < last && !stop_) {
        wake_at_ = std::min(last, kWriterBatchMax);
        wake_.wait_for(lock, kWriterLinger,
                       [this] { return stop_ || queue_.size() >= wake_at_; });
        wake_at_ = 1;
      }
      while (!queue_.empty() && batch.size() < kWriterBatchMax) {
        batch.push_back(std::move(queue_.front()));
        queue_.pop_front();
      }
      queued_.store(queue_.size(), std::memory_order_release);
    }
    last = batch.size();
    commit(batch);
    batch.clear();
    db_->upkeep();
  }
}

Status Writer::run_cached(std::string_view sql) {
  auto st = db_->cached(sql);
  if (!st) return st.status();
  return (*st)->run();
}

void Writer::commit(std::deque<Piece>& batch) {
  std::vector<Status> results;
  results.reserve(batch.size());
  // `open` turns into an error when the transaction is gone: the rest of the batch must not
  // run in autocommit mode, where each statement would commit by itself.
  Status open = run_cached("BEGIN IMMEDIATE");
  for (Piece& piece : batch) {
    if (!open) {
      if (piece.isolation == Isolation::kHandOver) (void)piece.work(*db_);
      results.push_back(open);
      continue;
    }
    Status s;
    if (piece.isolation != Isolation::kSavepoint) {
      s = piece.work(*db_);
    } else {
      s = run_cached("SAVEPOINT piece");
      if (s) s = piece.work(*db_);
      if (s) {
        s = run_cached("RELEASE piece");
      } else if (db_->in_transaction()) {
        (void)run_cached("ROLLBACK TO piece");
        (void)run_cached("RELEASE piece");
      }
    }
    if (!s && !db_->in_transaction()) {
      open = Status{s.kind(), fmt::format("the store rolled the transaction back: {}",
                                          s.message())};
    }
    results.push_back(s);
  }
  Status committed = open;
  if (committed && before_commit_) committed = before_commit_(*db_);
  if (committed) committed = run_cached("COMMIT");
  if (!committed) {
    log::error("store commit failed", {{"error", committed.message()}});
    (void)run_cached("ROLLBACK");
  }
  last_commit_failed_.store(!committed.is_ok(), std::memory_order_release);
  if (after_commit_) after_commit_(committed.is_ok());
  {
    std::lock_guard lock(mu_);
    stats_.pieces += batch.size();
    ++stats_.commits;
  }
  for (std::size_t i = 0; i < batch.size(); ++i) {
    if (batch[i].done) batch[i].done(committed ? results[i] : committed);
  }
}

}  // namespace tp::store
