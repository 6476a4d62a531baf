#pragma once
// How an I/O thread has the store writer do something and waits for it to be durable. The
// writer runs the work in its next group-commit transaction; its completion comes back
// through the thread's Inbox (the I/O loop takes no locks) and resumes the coroutine.
//
// The waiting coroutine may be destroyed while the writer still holds the work (a
// connection cut at drain timeout): work and completion share only the reference-counted
// slot, never the coroutine frame.

#include <functional>
#include <memory>
#include <optional>

#include "http/inbox.h"
#include "store/writer.h"

namespace tp::api {

class StoreLink {
 public:
  StoreLink(store::Writer& writer, http::Inbox& inbox, boost::asio::io_context& ioc)
      : writer_(writer), inbox_(inbox), ioc_(ioc) {}

  // Runs `work` on the writer and resumes once its transaction committed. Returns the
  // work's error, or the commit's. `work` is moved from.
  //
  // Callers pass named objects, never temporaries: GCC 12 may destroy a temporary in a
  // co_await full-expression twice, which is harmless for a small lambda and a double free
  // for anything owning memory.
  http::Task<Status> commit(
      store::Writer::Work& work,
      store::Writer::Isolation isolation = store::Writer::Isolation::kSavepoint);

  // As commit, handing back the work's result (`work` returns Result<T>). `work` must not
  // refer to the caller's frame once the caller may be gone; the result travels through a
  // shared slot.
  template <typename T, typename F>
  http::Task<Result<T>> call(F& work) {
    auto result = std::make_shared<std::optional<Result<T>>>();
    store::Writer::Work job = [result, work = std::move(work)](store::Database& db) {
      result->emplace(work(db));
      return (*result)->is_ok() ? Status::ok() : (*result)->status();
    };
    const Status s = co_await commit(job);
    if (!s) co_return s;
    co_return std::move(**result);
  }

  // Fire and forget: durable with the next commit; nobody waits.
  void submit(store::Writer::Work work) { writer_.submit(std::move(work)); }

 private:
  store::Writer& writer_;
  http::Inbox& inbox_;
  boost::asio::io_context& ioc_;
};

}  // namespace tp::api
