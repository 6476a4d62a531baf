// The money path of one request: hold the worst case, then settle it the way the gateway
// does — usage row, charge and ledger transfers in one group-commit transaction on the
// store writer. Results are printed, never asserted; scripts/bench.sh runs this after the
// proxy benchmark.

#include <benchmark/benchmark.h>
#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <filesystem>
#include <mutex>

#include "ledger/bank.h"
#include "store/ledger_store.h"
#include "store/migrations.h"
#include "store/usage_store.h"
#include "store/writer.h"

namespace {

using tp::Money;
using tp::ledger::Bank;
using tp::ledger::CreditKind;

constexpr std::int64_t kAccount = 1;

std::unique_ptr<Bank> funded_bank() {
  auto bank = Bank::create();
  (void)bank->deposit(kAccount, CreditKind::kPaid, Money::usd(1'000'000), std::nullopt, 0);
  return bank;
}

tp::store::UsageRecord record(std::int64_t n) {
  tp::store::UsageRecord r;
  r.request_id = "req_" + std::to_string(n);
  r.account_id = kAccount;
  r.key_id = 1;
  r.at_ms = n;
  r.model = "bench-model";
  r.provider = "bench";
  r.input_tokens = 14;
  r.output_tokens = 10;
  r.cost = Money::from_nanos(31'337);
  r.input_cost = Money::from_nanos(2'100);
  r.output_cost = r.cost - r.input_cost;
  r.status = 200;
  return r;
}

// In memory: what a request costs the bank itself.
void BM_HoldAndSettle(benchmark::State& state) {
  auto bank = funded_bank();
  std::int64_t now = 1;
  for (auto _ : state) {
    auto h = bank->hold(kAccount, Money::from_nanos(50'000), now + 60'000, now);
    benchmark::DoNotOptimize(bank->settle(*h, Money::from_nanos(31'337), now));
    if (now % 4096 == 0) {
      (void)bank->persist([](const auto&) { return tp::Status::ok(); });
      bank->committed(true);
    }
    ++now;
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_HoldAndSettle);

constexpr auto kSettlement = tp::store::Writer::Isolation::kHandOver;

struct Store {
  std::string dir =
      (std::filesystem::temp_directory_path() / ("turnpike-bench-" + std::to_string(::getpid())))
          .string();
  std::unique_ptr<tp::store::Writer> writer;
  Store() {
    std::filesystem::create_directories(dir);
    auto db = tp::store::open_sqlite(dir + "/bench.db").value();
    (void)tp::store::migrate(*db);
    writer = std::make_unique<tp::store::Writer>(std::move(db));
  }
  std::shared_ptr<tp::store::UsageBuffer> usage = std::make_shared<tp::store::UsageBuffer>();
  // As the gateway wires it: each batch stores its usage rows and the bank's new transfers
  // before it commits.
  void attach(const std::shared_ptr<Bank>& bank) {
    tp::store::store_settlements_with_batches(
        *writer, {bank, usage, std::make_shared<tp::store::AnswerBuffer>(),
                  std::make_shared<tp::store::NoticeRecorder>(),
                  std::make_shared<tp::ledger::Freeze>()});
  }
  // A settlement piece, as the gateway submits it.
  tp::store::Writer::Work settle(const std::shared_ptr<Bank>& bank, const Bank::Hold& hold,
                                 std::int64_t n) {
    return [usage = usage, bank, hold, n](tp::store::Database&) {
      usage->settle(*bank, hold, record(n), n);
      return tp::Status::ok();
    };
  }
  ~Store() {
    writer.reset();
    std::filesystem::remove_all(dir);
  }
};

// Many requests in flight (as under load): each hold is taken here, each settlement is a
// writer piece; the writer groups whatever is queued into one transaction. Items are
// settlements committed.
void BM_SettleGroupCommit(benchmark::State& state) {
  Store store;
  std::shared_ptr<Bank> bank = funded_bank();
  store.attach(bank);
  std::atomic<std::int64_t> committed{0};
  std::int64_t n = 1;
  for (auto _ : state) {
    auto h = bank->hold(kAccount, Money::from_nanos(50'000), n + 60'000, n);
    store.writer->submit(
        store.settle(bank, *h, n),
        [&](const tp::Status&) { ++committed; }, kSettlement);
    ++n;
  }
  store.writer->stop();  // waits for the last commit
  state.SetItemsProcessed(committed.load());
}
BENCHMARK(BM_SettleGroupCommit)->UseRealTime()->MinTime(2.0);

// One request at a time (a single client): submit, then wait for the commit. The time is
// the commit's round trip, what a lone request waits before its final bytes.
void BM_SettleRoundTrip(benchmark::State& state) {
  Store store;
  std::shared_ptr<Bank> bank = funded_bank();
  store.attach(bank);
  std::mutex mu;
  std::condition_variable cv;
  std::int64_t n = 1;
  for (auto _ : state) {
    auto h = bank->hold(kAccount, Money::from_nanos(50'000), n + 60'000, n);
    bool done = false;
    store.writer->submit(
        store.settle(bank, *h, n),
        [&](const tp::Status&) {
          std::lock_guard lock(mu);
          done = true;
          cv.notify_one();
        },
        kSettlement);
    std::unique_lock lock(mu);
    cv.wait(lock, [&] { return done; });
    ++n;
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_SettleRoundTrip)->UseRealTime()->MinTime(2.0);

void BM_SettleRoundTripSpin(benchmark::State& state) {
  Store store;
  std::shared_ptr<Bank> bank = funded_bank();
  store.attach(bank);
  std::int64_t n = 1;
  for (auto _ : state) {
    auto h = bank->hold(kAccount, Money::from_nanos(50'000), n + 60'000, n);
    std::atomic<bool> done{false};
    store.writer->submit(
        store.settle(bank, *h, n),
        [&](const tp::Status&) { done.store(true); }, kSettlement);
    while (!done.load()) __builtin_ia32_pause();
    ++n;
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_SettleRoundTripSpin)->UseRealTime()->MinTime(2.0);

}  // namespace

BENCHMARK_MAIN();
