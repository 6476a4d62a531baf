#include "store/writer.h"

#include <pthread.h>

#include "core/log.h"

namespace tp::store {

Writer::Writer(std::unique_ptr<Database> db) : db_(std::move(db)) {
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

void Writer::submit(Work work, Done done) {
  {
    std::lock_guard lock(mu_);
    if (!stop_) {
      queue_.push_back({std::move(work), std::move(done)});
      queued_.store(queue_.size(), std::memory_order_release);
      wake_.notify_one();
      return;
    }
  }
  if (done) done(Status{ErrorKind::kUnavailable, "the store is shutting down"});
}

Writer::Stats Writer::stats() const {
  std::lock_guard lock(mu_);
  return stats_;
}

void Writer::run() {
  std::deque<Piece> batch;
  for (;;) {
    // At low load the next piece tends to arrive within microseconds, while waking a
    // sleeping thread takes tens of them: look for work a little before sleeping.
    const auto spin_until = std::chrono::steady_clock::now() + kWriterSpin;
    while (queued_.load(std::memory_order_acquire) == 0 &&
           std::chrono::steady_clock::now() < spin_until) {
      __builtin_ia32_pause();
    }
    {
      std::unique_lock lock(mu_);
      wake_.wait(lock, [this] { return stop_ || !queue_.empty(); });
      if (queue_.empty()) return;  // stopping, and everything submitted is done
      while (!queue_.empty() && batch.size() < kWriterBatchMax) {
        batch.push_back(std::move(queue_.front()));
        queue_.pop_front();
      }
      queued_.store(queue_.size(), std::memory_order_release);
    }
    commit(batch);
    batch.clear();
  }
}

void Writer::commit(std::deque<Piece>& batch) {
  std::vector<Status> results;
  results.reserve(batch.size());
  // Prepared once: these run for every piece.
  auto run = [this](std::string_view sql) -> Status {
    auto st = db_->cached(sql);
    if (!st) return st.status();
    return (*st)->run();
  };
  Status begun = run("BEGIN IMMEDIATE");
  for (Piece& piece : batch) {
    if (!begun) {
      results.push_back(begun);
      continue;
    }
    Status s = run("SAVEPOINT piece");
    if (s) s = piece.work(*db_);
    if (s) {
      s = run("RELEASE piece");
    } else {
      (void)run("ROLLBACK TO piece");
      (void)run("RELEASE piece");
    }
    results.push_back(s);
  }
  Status committed = begun ? run("COMMIT") : begun;
  if (!committed) {
    log::error("store commit failed", {{"error", committed.message()}});
    (void)run("ROLLBACK");
  }
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
