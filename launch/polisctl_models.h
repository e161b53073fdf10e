// polisctl models: the operator's commands for a model registry, against a
// running polis-registry (--registry http://HOST:PORT, its registry API and
// the Open Inference Protocol) or directly on a registry root (--root DIR,
// through registry/'s aliases and store code, the code the server runs).
//
//   polisctl models list|show|versions|history|promote|rollback|delete|predict ...
//
// Called from polisctl's main thread only.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

namespace polis::ctl {

struct ModelsOptions {
  std::string registry;    // http[s]://HOST:PORT of a polis-registry
  std::string ca_file;     // https: the CAs to trust ("" = the system's); polisctl's --cacert
  std::string root;        // or a registry root directory
  std::string model, ref, alias, why, who;
  int64_t version = 0;
  bool force = false;
  // predict
  std::string input_json, idx, idx_labels, csv;
  std::vector<std::string> images;  // PNG or JPEG files, one row each
  int64_t index = 0;
  int top = 5;
};

// Adds "models" and its subcommands to `app`.
CLI::App* AddModelsCommands(CLI::App& app, ModelsOptions* o);

// Runs the chosen models subcommand. `token` is what --token/--token-file
// gave ("" = none: then $POLIS_REGISTRY_TOKEN). Returns the exit code:
// 0 ok, 1 failed, 2 usage.
int RunModels(CLI::App* models, const ModelsOptions& o, bool json, const std::string& token,
              double timeout_s);

}  // namespace polis::ctl
