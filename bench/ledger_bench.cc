// The ledger path of one request: hold the worst case, post the actual cost, and (with the
// store) make the transfers durable through the group-commit writer. Results are printed,
// never asserted; scripts/bench.sh runs this after the proxy benchmark.

#include <benchmark/benchmark.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <mutex>

#include "ledger/wallet.h"
#include "store/ledger_store.h"
#include "store/migrations.h"
#include "store/writer.h"

namespace {

using tp::Money;
using tp::ledger::Ledger;
using tp::ledger::PlatformAccounts;
using tp::ledger::Wallet;

// In memory: what a request costs the ledger itself.
void BM_HoldAndPost(benchmark::State& state) {
  Ledger ledger;
  const auto platform = PlatformAccounts::open(ledger);
  Wallet wallet(ledger, platform, "acct_bench");
  (void)wallet.deposit_paid(Money::usd(1'000'000), 0);
  std::int64_t now = 1;
  for (auto _ : state) {
    auto h = wallet.hold(Money::from_nanos(50'000), now + 60'000, now);
    benchmark::DoNotOptimize(wallet.post(*h, Money::from_nanos(31'337), now));
    ++now;
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_HoldAndPost);

// With the embedded store: every request's transfers are appended through the writer; the
// writer groups whatever is queued into one transaction. Items are settled requests whose
// transfers were committed.
void BM_HoldPostAndCommit(benchmark::State& state) {
  const std::string dir =
      (std::filesystem::temp_directory_path() / ("turnpike-bench-" + std::to_string(::getpid())))
          .string();
  std::filesystem::create_directories(dir);
  auto db = tp::store::Database::open(dir + "/bench.db").value();
  (void)tp::store::migrate(*db);
  Ledger ledger;
  const auto platform = PlatformAccounts::open(ledger);
  Wallet wallet(ledger, platform, "acct_bench");
  (void)wallet.deposit_paid(Money::usd(1'000'000), 0);
  std::atomic<std::int64_t> committed{0};
  std::int64_t submitted = 0;
  {
    tp::store::Writer writer(std::move(db));
    // The ledger lives on this thread; the writer reads the journal under this lock.
    std::mutex journal_mu;
    std::size_t accounts_stored = 0;
    std::size_t transfers_stored = 0;
    writer.submit([&](tp::store::Database& d) {
      std::lock_guard lock(journal_mu);
      auto s = tp::store::append_ledger(d, ledger, 0, 0);
      accounts_stored = ledger.account_count();
      transfers_stored = ledger.journal().size();
      return s;
    });
    std::int64_t now = 1;
    for (auto _ : state) {
      {
        std::lock_guard lock(journal_mu);
        auto h = wallet.hold(Money::from_nanos(50'000), now + 60'000, now);
        (void)wallet.post(*h, Money::from_nanos(31'337), now);
      }
      ++submitted;
      writer.submit(
          [&](tp::store::Database& d) {
            std::lock_guard lock(journal_mu);
            auto s = tp::store::append_ledger(d, ledger, accounts_stored, transfers_stored);
            accounts_stored = ledger.account_count();
            transfers_stored = ledger.journal().size();
            return s;
          },
          [&](const tp::Status&) { ++committed; });
      ++now;
    }
  }  // waits for the last commit
  state.SetItemsProcessed(committed.load());
  std::filesystem::remove_all(dir);
}
BENCHMARK(BM_HoldPostAndCommit)->UseRealTime()->MinTime(2.0);

}  // namespace

BENCHMARK_MAIN();
