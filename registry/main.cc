// polis-registry: inspect a model registry root.
//
//   polis-registry list   --root DIR [--json]
//   polis-registry show   --root DIR MODEL [VERSION]
//   polis-registry verify --root DIR MODEL [VERSION]
//
// Exit codes: 0 ok, 1 a check failed or nothing found, 2 bad flags.
#include <CLI/CLI.hpp>
#include <cstdio>

#include "common/artifact/artifact.h"
#include "registry/store.h"

int main(int argc, char** argv) {
  CLI::App app{"polis-registry: inspect and verify a Polis model registry"};
  app.require_subcommand(1);
  std::string root = "registry-root", model;
  int64_t version = 0;
  bool as_json = false;
  auto* list = app.add_subcommand("list", "models and their versions");
  auto* show = app.add_subcommand("show", "metadata.json of a version (latest by default)");
  auto* verify = app.add_subcommand("verify", "re-read a version and check its checksum and shape");
  for (auto* c : {list, show, verify}) c->add_option("--root", root, "registry root")->capture_default_str();
  list->add_flag("--json", as_json, "print JSON");
  for (auto* c : {show, verify}) {
    c->add_option("model", model, "model name")->required();
    c->add_option("version", version, "version number (0 or omitted: latest)");
  }
  CLI11_PARSE(app, argc, argv);

  auto fail = [](const polis::Status& st) {
    std::fprintf(stderr, "polis-registry: %s\n", st.ToString().c_str());
    return 1;
  };
  if (*list) {
    auto models = polis::registry::ListModels(root);
    if (!models.ok()) return fail(models.status());
    nlohmann::json out = nlohmann::json::object();
    for (const auto& m : *models) {
      auto versions = polis::ListVersions(root, m);
      if (!versions.ok()) return fail(versions.status());
      out[m] = *versions;
      if (!as_json) {
        std::string vs;
        for (int64_t v : *versions) vs += (vs.empty() ? "" : ", ") + std::to_string(v);
        std::printf("%-32s versions: %s\n", m.c_str(), vs.c_str());
      }
    }
    if (as_json) std::printf("%s\n", out.dump(2).c_str());
    return 0;
  }
  if (*show) {
    auto meta = polis::registry::ReadMetadata(root, model, version);
    if (!meta.ok()) return fail(meta.status());
    std::printf("%s\n", meta->dump(2).c_str());
    return 0;
  }
  auto r = polis::registry::VerifyVersion(root, model, version);
  if (!r.ok()) return fail(r.status());
  std::printf("%s\n", r->dump(2).c_str());
  return 0;
}
