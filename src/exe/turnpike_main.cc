#include "cli/cli.h"

int main(int argc, char** argv) { return tp::cli::run_turnpike(argc, argv); }
