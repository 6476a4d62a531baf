#include "cli/cli.h"

#include <fmt/format.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <filesystem>
#include <thread>

#include "api/gateway.h"
#include "core/log.h"
#include "ops/config.h"
#include "store/ledger_store.h"
#include "store/sqlite.h"

namespace tp::cli {
namespace {

constexpr std::string_view kVersion = "0.1.0";

struct ServeOptions {
  std::string config_path;
  std::string listen;
  std::string data_dir = "./var";
  int threads = -1;
};

int serve(const ServeOptions& opts) {
  auto loaded = ops::load_config(opts.config_path);
  if (!loaded) {
    std::fprintf(stderr, "turnpike: config error: %s\n", loaded.status().message().c_str());
    return 2;
  }
  ops::Config& config = loaded.value();
  bool level_ok = false;
  log::set_level(log::parse_level(config.log_level, &level_ok));
  if (!opts.listen.empty()) {
    if (auto s = ops::parse_listen(opts.listen, config.listen_host, config.listen_port); !s) {
      std::fprintf(stderr, "turnpike: --listen: %s\n", s.message().c_str());
      return 2;
    }
  }
  if (opts.threads >= 0) config.threads = opts.threads;
  const int threads = config.threads > 0
                          ? config.threads
                          : static_cast<int>(std::max(1U, std::thread::hardware_concurrency()));

  std::error_code ec;
  std::filesystem::create_directories(opts.data_dir, ec);
  if (ec) {
    std::fprintf(stderr, "turnpike: --data-dir %s: %s\n", opts.data_dir.c_str(),
                 ec.message().c_str());
    return 2;
  }

  auto services = api::open_services(config.store, opts.data_dir, config.trial_credit);
  if (!services) {
    std::fprintf(stderr, "turnpike: store: %s\n", services.status().message().c_str());
    return 2;
  }
  const std::shared_ptr<store::Writer> writer = services->writer;
  if (services->admin_key.empty()) {
    log::warn("admin API disabled: TURNPIKE_ADMIN_KEY is not set");
  }
  auto state = api::GatewayState::create(config, std::move(services.value()));
  if (!state) {
    std::fprintf(stderr, "turnpike: %s\n", state.status().message().c_str());
    return 2;
  }
  http::Server server(config.server, api::make_gateway_factory(std::move(state.value())));
  if (auto s = server.listen(config.listen_host, config.listen_port, threads); !s) {
    std::fprintf(stderr, "turnpike: %s\n", s.message().c_str());
    return 1;
  }
  log::info("listening", {{"host", config.listen_host},
                          {"port", static_cast<int>(server.port())},
                          {"threads", threads},
                          {"models", config.catalog->models().size()},
                          {"providers", config.catalog->providers().size()},
                          {"version", kVersion}});
  server.run();
  // Every I/O thread has stopped: finish the writes already queued before the threads'
  // inboxes go away with the server.
  writer->stop();
  log::info("stopped");
  return 0;
}

// Reads the store directly (WAL allows it while a gateway runs) and prints the same answer
// as GET /admin/v1/ledger/verify. Exit 0 when the books balance, 1 when not, 2 on error.
int verify_ledger(const std::string& store_uri, const std::string& data_dir) {
  if (!store_uri.starts_with("sqlite:")) {
    std::fprintf(stderr, "turnpike: ledger verify: only sqlite: stores are supported\n");
    return 2;
  }
  const std::string file = store_uri.substr(7);
  const std::string path = file.starts_with('/') ? file : data_dir + "/" + file;
  if (!std::filesystem::exists(path)) {
    std::fprintf(stderr, "turnpike: ledger verify: %s does not exist\n", path.c_str());
    return 2;
  }
  auto db = store::Database::open(path);
  if (!db) {
    std::fprintf(stderr, "turnpike: %s\n", db.status().message().c_str());
    return 2;
  }
  ledger::Ledger ledger;
  if (auto s = store::load_ledger(**db, ledger); !s) {
    std::fprintf(stderr, "turnpike: %s\n", s.message().c_str());
    return 2;
  }
  const ledger::VerifyReport report = ledger.verify();
  std::printf("{\"ok\":%s,\"transfers\":%llu,\"imbalance_usd\":\"%s\"}\n",
              report.ok ? "true" : "false", static_cast<unsigned long long>(report.transfers),
              report.imbalance.to_string().c_str());
  return report.ok ? 0 : 1;
}

}  // namespace

int run_turnpike(int argc, char** argv) {
  CLI::App app{"Turnpike: a self-hosted LLM inference gateway.\n"
               "Serves the OpenAI and Anthropic APIs and forwards to configured providers.",
               "turnpike"};
  app.require_subcommand(1);

  ServeOptions serve_opts;
  CLI::App* serve_cmd = app.add_subcommand("serve", "Run the gateway until SIGTERM or SIGINT");
  serve_cmd->add_option("--config,-c", serve_opts.config_path, "YAML config file (docs/config.md)")
      ->required();
  serve_cmd->add_option("--listen", serve_opts.listen,
                        "HOST:PORT to listen on; overrides the config's listen (default "
                        "127.0.0.1:8080; port 0 picks a free port, logged at start)");
  serve_cmd->add_option("--data-dir", serve_opts.data_dir,
                        "Directory for the embedded store and secrets")
      ->capture_default_str();
  serve_cmd->add_option("--threads", serve_opts.threads,
                        "I/O threads; overrides the config (0: one per core)")
      ->check(CLI::Range(0, 256));

  std::string check_path;
  CLI::App* check_cmd = app.add_subcommand("check-config", "Validate a config file and exit");
  check_cmd->add_option("config", check_path, "YAML config file")->required();

  std::string ledger_data_dir = "./var";
  std::string ledger_store = "sqlite:turnpike.db";
  CLI::App* ledger_cmd = app.add_subcommand("ledger", "Ledger tools");
  CLI::App* verify_cmd = ledger_cmd->add_subcommand(
      "verify", "Recompute every balance from the stored transfers and check they sum to zero");
  verify_cmd->add_option("--data-dir", ledger_data_dir, "Data directory")->capture_default_str();
  verify_cmd->add_option("--store", ledger_store, "Store (as in the config's `store`)")
      ->capture_default_str();
  ledger_cmd->require_subcommand(1);

  app.add_subcommand("version", "Print the version");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }

  if (*serve_cmd) return serve(serve_opts);
  if (*verify_cmd) return verify_ledger(ledger_store, ledger_data_dir);
  if (*check_cmd) {
    auto loaded = ops::load_config(check_path);
    if (!loaded) {
      std::fprintf(stderr, "turnpike: config error: %s\n", loaded.status().message().c_str());
      return 2;
    }
    std::printf("%s: ok (%zu providers, %zu models)\n", check_path.c_str(),
                loaded->catalog->providers().size(), loaded->catalog->models().size());
    return 0;
  }
  std::printf("turnpike %.*s\n", static_cast<int>(kVersion.size()), kVersion.data());
  return 0;
}

}  // namespace tp::cli
