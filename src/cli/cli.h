#pragma once
// The `turnpike` command line: parses arguments and runs one subcommand.

namespace tp::cli {

// Returns the process exit code.
int run_turnpike(int argc, char** argv);

}  // namespace tp::cli
