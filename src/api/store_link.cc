#include "api/store_link.h"

namespace tp::api {
namespace {

// What the writer's completion and the waiting coroutine share. The completions capture
// nothing but the pointer to it, so they fit std::function's inline storage.
struct Slot {
  http::Inbox* inbox = nullptr;
  Status committed;             // written on the writer thread before the inbox post
  http::Timer* wake = nullptr;  // null once the waiting coroutine is gone
};

// Clears the slot's timer when the coroutine frame goes, however it goes.
struct Detach {
  Slot& slot;
  ~Detach() { slot.wake = nullptr; }
};

}  // namespace

http::Task<Status> StoreLink::commit(store::Writer::Work& work,
                                     store::Writer::Isolation isolation) {
  http::Timer wake(ioc_.get_executor(), std::chrono::steady_clock::time_point::max());
  auto slot = std::make_shared<Slot>();
  slot->inbox = &inbox_;
  slot->wake = &wake;
  const Detach detach{*slot};
  inbox_.expect();  // the loop polls rather than sleeps until the answer is in
  writer_.submit(std::move(work), [slot](const Status& s) {
    // On the writer thread: hand the outcome to the I/O thread.
    slot->committed = s;
    slot->inbox->post([slot] {
      slot->inbox->arrived();
      if (slot->wake != nullptr) slot->wake->cancel();
    });
  }, isolation);
  co_await wake.async_wait(http::use_nothrow);
  co_return slot->committed;
}

}  // namespace tp::api
