#include "sim/sim.h"

int main(int argc, char** argv) { return tp::sim::run_sim(argc, argv); }
