// polisctl tune: watching a hyperparameter study (docs/tuning.md) from its
// directory's study.json (written crash-safely by polis-tune; read here
// with its checksum verified).
//
//   polisctl tune status STUDY_DIR [--json]
//   polisctl tune top STUDY_DIR [--interval S] [--iterations N] [--json]
//
// Called from polisctl's main thread only.
#pragma once

#include <string>

#include <CLI/CLI.hpp>

namespace polis::ctl {

struct TuneCtlOptions {
  std::string study_dir;
  double interval_s = 2;
  int iterations = 0;  // 0: until the study is no longer running
};

// Adds "tune" and its subcommands to `app`.
CLI::App* AddTuneCommands(CLI::App& app, TuneCtlOptions* o);

// Runs the chosen subcommand; returns the exit code (0 ok, 1 unreadable
// state, 2 usage). `stop` is polled between refreshes (Ctrl-C).
int RunTune(CLI::App* tune, const TuneCtlOptions& o, bool json, const volatile bool* stop);

}  // namespace polis::ctl
