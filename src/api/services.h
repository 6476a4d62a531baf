#pragma once
// The stateful services behind the API, built once at start and shared by every I/O
// thread: the store writer, accounts and keys, the key hasher, the admin key.

#include <memory>
#include <string>

#include "auth/directory.h"
#include "auth/keys.h"
#include "ledger/bank.h"
#include "store/writer.h"

namespace tp::api {

struct Services {
  std::shared_ptr<store::Writer> writer;
  std::shared_ptr<auth::Directory> directory;
  std::shared_ptr<const auth::KeyHasher> hasher;
  std::shared_ptr<ledger::Bank> bank;
  Money trial_credit;     // granted to every new customer account
  std::string admin_key;  // empty: the admin API answers 403
};

// Opens the embedded store ("sqlite:FILE", FILE relative to `data_dir`), applies the
// migrations, loads accounts and keys and the server secret. The admin key comes from
// TURNPIKE_ADMIN_KEY.
Result<Services> open_services(const std::string& store_uri, const std::string& data_dir,
                               Money trial_credit);

}  // namespace tp::api
