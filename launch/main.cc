// Entry point of the `moa` executable: dispatches to the subcommands in commands.cc.
#include <string>
#include <vector>

#include "launch/commands.h"

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  return moa::launch::RunCommand(args);
}
